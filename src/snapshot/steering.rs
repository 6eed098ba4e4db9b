//! Compiles the steering part of the config (regions, pools, services) into
//! the pure model of `policy`, and checks it: unknown names, empty lists,
//! bad keys, chains that can leave some client without an answer while
//! everything is up, CNAME loops. Also lists the endpoints the health
//! service is to watch, with their monitors.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use hickory_proto::rr::Name;
use ipnet::IpNet;
use rustc_hash::FxHashMap;

use super::name_key;
use crate::config::{AllDown, Config, GeoMapConfig, LatencyConfig, ServiceConfig};
use crate::diag::{line_col, Diagnostic};
use crate::health::{Check, Member, Monitor};
use crate::policy::steps::geo::{mask_v4, mask_v6};
use crate::policy::steps::{capacity, failover, first_n, healthy, nearest, weighted};
use crate::policy::{
    fnv1a, Capacity, Endpoint, GeoMap, Group, Latency, Pool, Region, Service, Stage, Step, Target,
    Topology,
};

const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// A service compiled for one zone: owner name, the service, config line.
pub struct ZoneService {
    pub name: Name,
    pub service: Service,
    pub line: usize,
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Option<std::ops::Range<usize>>, line: usize, msg: String) {
        let (l, c) = match span {
            Some(s) => line_col(self.text, s.start),
            None => (line, 0),
        };
        self.diags.push(Diagnostic::error(self.path, l, c, msg));
    }
}

fn two_letters(s: &str) -> Option<[u8; 2]> {
    let b = s.as_bytes();
    (b.len() == 2 && b.iter().all(|c| c.is_ascii_alphabetic()))
        .then(|| [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()])
}

/// The steering model compiled from a config.
pub struct Compiled {
    pub topology: Topology,
    /// Per configured zone, its services.
    pub zones: Vec<Vec<ZoneService>>,
    /// Every endpoint, as the health service watches it (topology order).
    pub members: Vec<Member>,
    /// The monitors that compiled, by name (the tier uses them too).
    pub monitors: BTreeMap<String, std::sync::Arc<Monitor>>,
}

/// Compiles regions, pools and every zone's services. Problems go to `diags`.
pub fn compile(config: &Config, diags: &mut Vec<Diagnostic>) -> Compiled {
    let mut cx = Ctx {
        path: &config.path,
        text: &config.text,
        diags,
    };
    let mut topo = Topology::default();
    let mut region_idx: BTreeMap<String, u16> = BTreeMap::new();
    for r in &config.regions {
        let [lat, lon] = *r.value.location.get_ref();
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            cx.err(
                Some(r.value.location.span()),
                r.line,
                format!(
                    "regions.{}.location: [{lat}, {lon}] is not a [latitude, longitude] in degrees",
                    r.name
                ),
            );
        }
        if let Some(c) = &r.value.continent {
            if !CONTINENTS.contains(&c.to_ascii_uppercase().as_str()) {
                cx.err(
                    None,
                    r.line,
                    format!(
                        "regions.{}.continent {c:?}: expected one of {}",
                        r.name,
                        CONTINENTS.join(", ")
                    ),
                );
            }
        }
        if let Some(c) = &r.value.country {
            if two_letters(c).is_none() {
                cx.err(
                    None,
                    r.line,
                    format!(
                        "regions.{}.country {c:?}: expected an ISO 3166-1 alpha-2 code",
                        r.name
                    ),
                );
            }
        }
        let capacity = r.value.capacity.as_ref().and_then(|c| {
            let span = c.span();
            let c = c.get_ref();
            let mut ok = true;
            for (key, v) in [("connections", c.connections), ("rps", c.rps)] {
                if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                    cx.err(
                        Some(span.clone()),
                        r.line,
                        format!(
                            "regions.{}.capacity.{key} = {v}: expected a number above 0",
                            r.name
                        ),
                    );
                    ok = false;
                }
            }
            if c.connections.is_none() && c.rps.is_none() {
                cx.err(
                    Some(span),
                    r.line,
                    format!(
                        "regions.{}.capacity: give connections = N, rps = N or both",
                        r.name
                    ),
                );
                ok = false;
            }
            ok.then_some(Capacity {
                connections: c.connections,
                rps: c.rps,
            })
        });
        region_idx.insert(r.name.clone(), topo.regions.len() as u16);
        topo.regions.push(Region {
            name: r.name.clone(),
            coords: (lat, lon),
            capacity,
        });
    }
    let mut monitors: BTreeMap<String, std::sync::Arc<Monitor>> = BTreeMap::new();
    for m in &config.monitors {
        match Monitor::compile(&m.name, &m.value) {
            Ok(mon) => {
                monitors.insert(m.name.clone(), std::sync::Arc::new(mon));
            }
            Err(msg) => cx.err(None, m.line, format!("monitors.{}: {msg}", m.name)),
        }
    }
    let mut members: Vec<Member> = Vec::new();
    let mut checks: Vec<Option<String>> = Vec::new();
    let mut pool_idx: BTreeMap<String, u16> = BTreeMap::new();
    for p in &config.pools {
        if region_idx.contains_key(&p.name) {
            cx.err(
                None,
                p.line,
                format!(
                    "pools.{}: a region has the same name; names of regions and pools must differ",
                    p.name
                ),
            );
        }
        let Some(&region) = region_idx.get(p.value.region.get_ref()) else {
            cx.err(
                Some(p.value.region.span()),
                p.line,
                format!(
                    "pools.{}.region: unknown region {:?}",
                    p.name,
                    p.value.region.get_ref()
                ),
            );
            continue;
        };
        let eps = p.value.endpoints.get_ref();
        if eps.is_empty() {
            cx.err(
                Some(p.value.endpoints.span()),
                p.line,
                format!("pools.{}: no endpoints", p.name),
            );
            continue;
        }
        let start = topo.endpoints.len() as u32;
        let mut kinds = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for (i, e) in eps.iter().enumerate() {
            let target = match (&e.address, &e.cname) {
                (Some(a), None) => Target::Addr(*a),
                (None, Some(c)) => match Name::from_ascii(c) {
                    Ok(mut n) => {
                        n.set_fqdn(true);
                        let key = name_key(&n);
                        Target::Cname(n.to_string(), key)
                    }
                    Err(err) => {
                        cx.err(
                            Some(p.value.endpoints.span()),
                            p.line,
                            format!("pools.{}.endpoints[{i}].cname {c:?}: {err}", p.name),
                        );
                        continue;
                    }
                },
                _ => {
                    cx.err(
                        Some(p.value.endpoints.span()),
                        p.line,
                        format!(
                            "pools.{}.endpoints[{i}]: give exactly one of address or cname",
                            p.name
                        ),
                    );
                    continue;
                }
            };
            kinds.insert(matches!(target, Target::Cname(..)));
            let text = match &target {
                Target::Addr(a) => a.to_string(),
                Target::Cname(t, _) => t.clone(),
            };
            if !seen.insert(text.clone()) {
                cx.err(
                    Some(p.value.endpoints.span()),
                    p.line,
                    format!("pools.{}: endpoint {text} is listed twice", p.name),
                );
                continue;
            }
            if let Some(c) = &e.check {
                if c.parse::<std::net::SocketAddr>().is_err() && c.parse::<IpAddr>().is_err() {
                    cx.err(
                        Some(p.value.endpoints.span()),
                        p.line,
                        format!("pools.{}.endpoints[{i}].check {c:?}: expected an address or address:port", p.name),
                    );
                }
            }
            let identity = format!("{}/{}", p.name, text);
            checks.push(e.check.clone());
            members.push(Member {
                identity: identity.clone(),
                source: crate::health::SOURCE_DNS,
                within: vec![p.name.clone(), p.value.region.get_ref().clone()],
                check: None,
            });
            topo.endpoints.push(Endpoint {
                pool: topo.pools.len() as u16,
                target,
                weight: e.weight,
                hash: fnv1a(&identity),
                identity,
            });
        }
        if kinds.len() > 1 {
            cx.err(
                Some(p.value.endpoints.span()),
                p.line,
                format!("pools.{}: mixes address and cname endpoints", p.name),
            );
        }
        let min_healthy = p.value.min_healthy.needed(eps.len());
        if min_healthy as usize > eps.len() {
            cx.err(
                None,
                p.line,
                format!(
                    "pools.{}.min_healthy = {min_healthy} but the pool has {} endpoints",
                    p.name,
                    eps.len()
                ),
            );
        }
        let monitor = match &p.value.monitor {
            None => None,
            Some(m) => match monitors.get(m.get_ref()) {
                Some(mon) => Some(mon.clone()),
                None => {
                    cx.err(
                        Some(m.span()),
                        p.line,
                        format!(
                            "pools.{}.monitor: unknown monitor {:?}",
                            p.name,
                            m.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        if let Some(mon) = monitor {
            let port = mon.port;
            for (i, e) in topo.endpoints.iter().enumerate().skip(start as usize) {
                let addr = match (&checks[i], &e.target) {
                    (Some(c), _) => c.parse::<SocketAddr>().ok().or_else(|| {
                        c.parse::<IpAddr>()
                            .ok()
                            .and_then(|ip| port.map(|p| SocketAddr::new(ip, p)))
                    }),
                    (None, Target::Addr(ip)) => port.map(|port| SocketAddr::new(*ip, port)),
                    (None, Target::Cname(..)) => None,
                };
                match addr {
                    Some(addr) => {
                        members[i].check = Some(Check {
                            monitor: mon.clone(),
                            addr,
                        })
                    }
                    None => cx.err(
                        Some(p.value.endpoints.span()),
                        p.line,
                        format!(
                            "pools.{}: endpoint {} needs check = \"address:port\" (or its monitor a port)",
                            p.name, e.identity
                        ),
                    ),
                }
            }
        }
        pool_idx.insert(p.name.clone(), topo.pools.len() as u16);
        topo.pools.push(Pool {
            name: p.name.clone(),
            region,
            endpoints: start..topo.endpoints.len() as u32,
            min_healthy,
        });
    }

    let mut zones = Vec::new();
    for z in &config.zones {
        let mut out = Vec::new();
        for s in &z.services {
            let name = if s.name == "@" {
                Ok(z.origin.clone())
            } else {
                Name::parse(&s.name, Some(&z.origin))
            };
            let name = match name {
                Ok(n) if z.origin.zone_of(&n) => n,
                Ok(n) => {
                    cx.err(
                        None,
                        s.line,
                        format!("service {n} is outside zone {}", z.origin),
                    );
                    continue;
                }
                Err(e) => {
                    cx.err(None, s.line, format!("service name {:?}: {e}", s.name));
                    continue;
                }
            };
            if let Some(svc) = service(
                &mut cx,
                &topo,
                &pool_idx,
                &region_idx,
                &name,
                &s.value,
                s.line,
                &config.path,
            ) {
                out.push(ZoneService {
                    name,
                    service: svc,
                    line: s.line,
                });
            }
        }
        zones.push(out);
    }
    check_cname_loops(&mut cx, &topo, &zones);
    Compiled {
        topology: topo,
        zones,
        members,
        monitors,
    }
}

#[allow(clippy::too_many_arguments)]
fn service(
    cx: &mut Ctx<'_>,
    topo: &Topology,
    pool_idx: &BTreeMap<String, u16>,
    region_idx: &BTreeMap<String, u16>,
    name: &Name,
    cfg: &ServiceConfig,
    line: usize,
    config_path: &Path,
) -> Option<Service> {
    let errors_before = cx.diags.len();
    let mut groups: Vec<Group> = Vec::new();
    let mut initial = Vec::new();
    let mut svc_pools = Vec::new();
    if cfg.pools.get_ref().is_empty() {
        cx.err(
            Some(cfg.pools.span()),
            line,
            format!("service {name}: pools is empty"),
        );
    }
    for p in cfg.pools.get_ref() {
        let Some(&pi) = pool_idx.get(p) else {
            cx.err(
                Some(cfg.pools.span()),
                line,
                format!("service {name}: unknown pool {p:?}"),
            );
            continue;
        };
        if svc_pools.contains(&pi) {
            cx.err(
                Some(cfg.pools.span()),
                line,
                format!("service {name}: pool {p:?} is listed twice"),
            );
            continue;
        }
        svc_pools.push(pi);
        let region = topo.pools[pi as usize].region;
        let rname = &topo.regions[region as usize].name;
        match groups.iter().position(|g| &g.name == rname) {
            Some(g) => groups[g].pools.push(pi),
            None => {
                initial.push(groups.len() as u16);
                groups.push(Group {
                    name: rname.clone(),
                    region,
                    pools: vec![pi],
                });
            }
        }
    }
    let cname_kinds: BTreeSet<bool> = svc_pools
        .iter()
        .flat_map(|&p| topo.pools[p as usize].endpoints.clone())
        .map(|e| matches!(topo.endpoints[e as usize].target, Target::Cname(..)))
        .collect();
    if cname_kinds.len() > 1 {
        cx.err(
            Some(cfg.pools.span()),
            line,
            format!("service {name}: mixes pools of addresses and pools of CNAMEs"),
        );
    }
    let is_cname = cname_kinds.contains(&true);

    // Resolves a list item (region or pool name) to a group of this service.
    let mut resolve = |cx: &mut Ctx<'_>,
                       item: &str,
                       span: std::ops::Range<usize>,
                       groups: &mut Vec<Group>|
     -> Option<u16> {
        if let Some(g) = groups.iter().position(|g| g.name == item) {
            return Some(g as u16);
        }
        if region_idx.contains_key(item) {
            cx.err(
                Some(span),
                line,
                format!("service {name}: region {item:?} has none of this service's pools"),
            );
            return None;
        }
        match pool_idx.get(item) {
            Some(&pi) if svc_pools.contains(&pi) => {
                groups.push(Group {
                    name: item.to_string(),
                    region: topo.pools[pi as usize].region,
                    pools: vec![pi],
                });
                Some(groups.len() as u16 - 1)
            }
            Some(_) => {
                cx.err(
                    Some(span),
                    line,
                    format!("service {name}: pool {item:?} is not in this service's pools"),
                );
                None
            }
            None => {
                cx.err(
                    Some(span),
                    line,
                    format!("service {name}: unknown region or pool {item:?}"),
                );
                None
            }
        }
    };

    let mut steps = Vec::new();
    if cfg.chain.get_ref().is_empty() {
        cx.err(
            Some(cfg.chain.span()),
            line,
            format!("service {name}: chain is empty"),
        );
    }
    let mut geo_lists: Vec<(String, Vec<u16>)> = Vec::new();
    let mut endpoint_step: Option<&str> = None;
    let mut failover_seen = false;
    for st in cfg.chain.get_ref() {
        let sname = st.get_ref().as_str();
        let span = st.span();
        // `failover` keeps one group: nothing would be left to spill to.
        failover_seen |= sname == "failover";
        if sname == "capacity" && failover_seen {
            cx.err(
                Some(span.clone()),
                line,
                format!("service {name}: step \"capacity\" must come before \"failover\", which keeps one region or pool: after it there is nowhere to spill to"),
            );
        }
        // Steps that order or choose regions/pools run before the steps that
        // pick endpoints; the other way round they could empty the answer.
        match Step::stage_of(sname) {
            Some(Stage::Endpoints) => endpoint_step = endpoint_step.or(Some(sname)),
            Some(Stage::Location | Stage::Groups) => {
                if let Some(e) = endpoint_step {
                    cx.err(
                        Some(span.clone()),
                        line,
                        format!("service {name}: step {sname:?} chooses regions or pools, so it must come before {e:?}, which picks endpoints"),
                    );
                }
            }
            _ => {}
        }
        let step = match sname {
            "healthy" => Step::Healthy(healthy::Healthy),
            "failover" => Step::Failover(failover::Failover),
            "geo" => {
                let Some(geo) = &cfg.geo else {
                    cx.err(
                        Some(span.clone()),
                        line,
                        format!("service {name}: the geo step needs a geo table"),
                    );
                    continue;
                };
                match geo_map(
                    cx,
                    geo.get_ref(),
                    geo.span(),
                    name,
                    config_path,
                    &mut groups,
                    &mut resolve,
                    &mut geo_lists,
                ) {
                    Some(m) => Step::Geo(m),
                    None => continue,
                }
            }
            "nearest" => {
                let n = cfg.nearest.clone().unwrap_or_default();
                for r in n.bias.keys() {
                    if !region_idx.contains_key(r) {
                        cx.err(
                            Some(span.clone()),
                            line,
                            format!("service {name}: nearest.bias names unknown region {r:?}"),
                        );
                    }
                }
                // Bias per group, filled after all groups exist.
                match nearest::Nearest::new(n.limit, Vec::new()) {
                    Ok(s) => Step::Nearest(s),
                    Err(e) => {
                        cx.err(Some(span.clone()), line, format!("service {name}: {e}"));
                        continue;
                    }
                }
            }
            "latency" => {
                let Some(l) = &cfg.latency else {
                    cx.err(
                        Some(span.clone()),
                        line,
                        format!("service {name}: the latency step needs a latency table"),
                    );
                    continue;
                };
                Step::Latency(latency(cx, l.get_ref(), l.span(), name, line, region_idx))
            }
            "weighted" => {
                let w = cfg.weighted.clone().unwrap_or_default();
                match weighted::Weighted::new(
                    w.mode,
                    w.count,
                    w.sticky_prefix_v4,
                    w.sticky_prefix_v6,
                ) {
                    Ok(s) => Step::Weighted(s),
                    Err(e) => {
                        cx.err(Some(span.clone()), line, format!("service {name}: {e}"));
                        continue;
                    }
                }
            }
            "capacity" => {
                let c = cfg.capacity.clone().unwrap_or_default();
                match capacity::Capacity::new(
                    c.low,
                    c.high,
                    c.max_step,
                    c.sticky_prefix_v4,
                    c.sticky_prefix_v6,
                ) {
                    Ok(s) => Step::Capacity(s),
                    Err(e) => {
                        cx.err(Some(span.clone()), line, format!("service {name}: {e}"));
                        continue;
                    }
                }
            }
            "first_n" => match cfg.first_n.map(first_n::FirstN::new) {
                Some(Ok(s)) => Step::FirstN(s),
                Some(Err(e)) => {
                    cx.err(Some(span.clone()), line, format!("service {name}: {e}"));
                    continue;
                }
                None => {
                    cx.err(
                        Some(span.clone()),
                        line,
                        format!("service {name}: the first_n step needs first_n = N"),
                    );
                    continue;
                }
            },
            other => {
                cx.err(
                    Some(span.clone()),
                    line,
                    format!(
                        "service {name}: unknown step {other:?}; steps are {}",
                        Step::NAMES.join(", ")
                    ),
                );
                continue;
            }
        };
        steps.push(step);
    }
    // Per-group values that depend on the final group list.
    for st in steps.iter_mut() {
        match st {
            Step::Capacity(c) => {
                c.group_hash = groups.iter().map(|g| fnv1a(&g.name)).collect();
            }
            Step::Nearest(nearest::Nearest { bias, .. }) => {
                let b = cfg
                    .nearest
                    .as_ref()
                    .map(|n| n.bias.clone())
                    .unwrap_or_default();
                *bias = groups
                    .iter()
                    .map(|g| {
                        b.get(&topo.regions[g.region as usize].name)
                            .copied()
                            .unwrap_or(0.0)
                    })
                    .collect();
            }
            Step::Latency(l) => {
                let table = cfg
                    .latency
                    .as_ref()
                    .map(|t| t.get_ref().clone())
                    .unwrap_or_default();
                let rows: Vec<&BTreeMap<String, f64>> = table
                    .default
                    .iter()
                    .chain(table.continent.values())
                    .chain(table.country.values())
                    .collect();
                // Rows were numbered default, continents, countries (see `latency`).
                l.rows = rows
                    .iter()
                    .map(|row| {
                        groups
                            .iter()
                            .map(|g| {
                                row.get(&topo.regions[g.region as usize].name)
                                    .copied()
                                    .unwrap_or(f64::NAN)
                            })
                            .collect()
                    })
                    .collect();
            }
            _ => {}
        }
    }
    if cfg.ttl > i32::MAX as u32 {
        cx.err(
            None,
            line,
            format!("service {name}: ttl {} exceeds 2^31-1", cfg.ttl),
        );
    }
    let all_down_cname = match &cfg.all_down {
        AllDown::Cname(c) => match Name::from_ascii(c) {
            Ok(mut n) => {
                n.set_fqdn(true);
                Some(name_key(&n))
            }
            Err(e) => {
                cx.err(
                    None,
                    line,
                    format!("service {name}: all_down.cname {c:?}: {e}"),
                );
                None
            }
        },
        AllDown::Addresses(_) if is_cname => {
            cx.err(None, line, format!("service {name}: all_down addresses for a service of CNAMEs; use all_down = {{ cname = \"...\" }}"));
            None
        }
        _ => None,
    };
    // While everything is up, every client must get an answer: each geo
    // list must hold endpoints of every address family the service serves.
    if !is_cname {
        for fam in [true, false] {
            let has = |gs: &[u16]| {
                gs.iter().any(|&g| {
                    groups[g as usize].pools.iter().any(|&p| {
                        topo.pools[p as usize]
                            .endpoints
                            .clone()
                            .any(|e| matches!(topo.endpoints[e as usize].target, Target::Addr(a) if a.is_ipv4() == fam))
                    })
                })
            };
            if !has(&initial) {
                continue;
            }
            for (key, list) in &geo_lists {
                if !has(list) {
                    let f = if fam { "IPv4 (A)" } else { "IPv6 (AAAA)" };
                    cx.err(
                        None,
                        line,
                        format!("service {name}: clients matching geo {key} would get no {f} answer while everything is up: its list has no {f} endpoints"),
                    );
                }
            }
        }
    }
    if cx.diags.len() > errors_before {
        return None;
    }
    let has_capacity = |g: &Group| topo.regions[g.region as usize].capacity.is_some();
    if steps.iter().any(|s| matches!(s, Step::Capacity(_))) && !groups.iter().any(has_capacity) {
        let (l, c) = line_col(cx.text, cfg.chain.span().start);
        cx.diags.push(Diagnostic::warning(
            cx.path,
            l,
            c,
            format!("service {name}: the capacity step has nothing to judge: none of its regions has a capacity (regions.NAME.capacity = {{ connections = N, rps = N }}), so every region keeps its place"),
        ));
    }
    Some(Service {
        name: name.to_string(),
        ttl: cfg.ttl,
        ecs: cfg.ecs,
        groups,
        initial,
        steps,
        all_down: cfg.all_down.clone(),
        all_down_cname,
        cname: is_cname,
        ttl_when_down: cfg.ttl_when_down,
        metric_id: 0,
        compiled: None,
        capacity_slot: None,
    })
}

type Resolver<'r> =
    dyn FnMut(&mut Ctx<'_>, &str, std::ops::Range<usize>, &mut Vec<Group>) -> Option<u16> + 'r;

#[allow(clippy::too_many_arguments)]
fn geo_map(
    cx: &mut Ctx<'_>,
    g: &GeoMapConfig,
    span: std::ops::Range<usize>,
    name: &Name,
    config_path: &Path,
    groups: &mut Vec<Group>,
    resolve: &mut Resolver<'_>,
    lists_out: &mut Vec<(String, Vec<u16>)>,
) -> Option<GeoMap> {
    let before = cx.diags.len();
    let mut m = GeoMap::default();
    let mut add = |cx: &mut Ctx<'_>,
                   key: String,
                   items: &[String],
                   sp: std::ops::Range<usize>,
                   groups: &mut Vec<Group>,
                   m: &mut GeoMap|
     -> Option<usize> {
        if items.is_empty() {
            cx.err(
                Some(sp),
                0,
                format!("service {name}: geo {key} has an empty list"),
            );
            return None;
        }
        let mut list = Vec::new();
        for it in items {
            if let Some(gi) = resolve(cx, it, sp.clone(), groups) {
                if !list.contains(&gi) {
                    list.push(gi);
                }
            }
        }
        lists_out.push((key, list.clone()));
        m.lists.push(list);
        Some(m.lists.len() - 1)
    };
    if let Some(d) = &g.default {
        m.default = add(cx, "default".into(), d.get_ref(), d.span(), groups, &mut m);
    }
    for (k, v) in &g.continent {
        let up = k.to_ascii_uppercase();
        match two_letters(&up).filter(|_| CONTINENTS.contains(&up.as_str())) {
            Some(code) => {
                if let Some(i) = add(
                    cx,
                    format!("continent {up}"),
                    v.get_ref(),
                    v.span(),
                    groups,
                    &mut m,
                ) {
                    m.continent.insert(code, i);
                }
            }
            None => cx.err(
                Some(v.span()),
                0,
                format!(
                    "service {name}: geo.continent key {k:?}: expected one of {}",
                    CONTINENTS.join(", ")
                ),
            ),
        }
    }
    for (k, v) in &g.country {
        match two_letters(k) {
            Some(code) => {
                if let Some(i) = add(
                    cx,
                    format!("country {}", k.to_ascii_uppercase()),
                    v.get_ref(),
                    v.span(),
                    groups,
                    &mut m,
                ) {
                    m.country.insert(code, i);
                }
            }
            None => cx.err(
                Some(v.span()),
                0,
                format!(
                    "service {name}: geo.country key {k:?}: expected an ISO 3166-1 alpha-2 code"
                ),
            ),
        }
    }
    for (k, v) in &g.subdivision {
        let up = k.to_ascii_uppercase();
        let parsed = up.split_once('-').and_then(|(c, s)| {
            let c = two_letters(c)?;
            (!s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_alphanumeric())).then(
                || {
                    let mut key = [0u8; 5];
                    key[..2].copy_from_slice(&c);
                    key[2..2 + s.len()].copy_from_slice(s.as_bytes());
                    key
                },
            )
        });
        match parsed {
            Some(key) => {
                if let Some(i) = add(
                    cx,
                    format!("subdivision {up}"),
                    v.get_ref(),
                    v.span(),
                    groups,
                    &mut m,
                ) {
                    m.subdivision.insert(key, i);
                }
            }
            None => cx.err(
                Some(v.span()),
                0,
                format!(
                    "service {name}: geo.subdivision key {k:?}: expected ISO 3166-2 like \"US-CA\""
                ),
            ),
        }
    }
    for (k, v) in &g.asn {
        let n = k.trim_start_matches(['A', 'S', 'a', 's']).parse::<u32>();
        match n {
            Ok(n) if n > 0 => {
                if let Some(i) = add(
                    cx,
                    format!("ASN {n}"),
                    v.get_ref(),
                    v.span(),
                    groups,
                    &mut m,
                ) {
                    m.asn.insert(n, i);
                }
            }
            _ => cx.err(
                Some(v.span()),
                0,
                format!("service {name}: geo.asn key {k:?}: expected an AS number like \"64500\""),
            ),
        }
    }
    let mut cidrs: Vec<(IpNet, usize)> = Vec::new();
    for (k, v) in &g.cidr {
        match k.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => {
                if let Some(i) = add(
                    cx,
                    format!("CIDR {net}"),
                    v.get_ref(),
                    v.span(),
                    groups,
                    &mut m,
                ) {
                    cidrs.push((net, i));
                }
            }
            Ok(net) => cx.err(
                Some(v.span()),
                0,
                format!(
                    "service {name}: geo.cidr key {k}: host bits set (did you mean {}?)",
                    net.trunc()
                ),
            ),
            Err(e) => cx.err(
                Some(v.span()),
                0,
                format!("service {name}: geo.cidr key {k:?}: {e}"),
            ),
        }
    }
    if let Some(f) = &g.cidr_file {
        let base = config_path.parent().unwrap_or(Path::new("."));
        let path = base.join(f.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (n, raw) in text.lines().enumerate() {
                    let l = raw.split('#').next().unwrap_or("").trim();
                    if l.is_empty() {
                        continue;
                    }
                    let mut parts = l.split_whitespace();
                    let (Some(net), Some(targets), None) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        cx.diags.push(Diagnostic::error(
                            &path,
                            n + 1,
                            0,
                            "expected: CIDR target[,target...]",
                        ));
                        continue;
                    };
                    let Ok(net) = net.parse::<IpNet>() else {
                        cx.diags.push(Diagnostic::error(
                            &path,
                            n + 1,
                            0,
                            format!("{net:?} is not a CIDR"),
                        ));
                        continue;
                    };
                    let items: Vec<String> = targets.split(',').map(str::to_string).collect();
                    let errs = cx.diags.len();
                    if let Some(i) = add(
                        cx,
                        format!("CIDR {net} ({}:{})", path.display(), n + 1),
                        &items,
                        f.span(),
                        groups,
                        &mut m,
                    ) {
                        cidrs.push((net.trunc(), i));
                    }
                    // Point unknown targets at the file line rather than the config key.
                    for d in cx.diags.iter_mut().skip(errs) {
                        d.file = path.clone();
                        d.line = n + 1;
                        d.column = 0;
                    }
                }
            }
            Err(e) => cx.err(
                Some(f.span()),
                0,
                format!("service {name}: geo.cidr_file {}: {e}", path.display()),
            ),
        }
    }
    for (net, i) in cidrs {
        match net {
            IpNet::V4(n) => {
                let p = n.prefix_len();
                insert_prefix(&mut m.cidr_v4, p, mask_v4(u32::from(n.network()), p), i);
            }
            IpNet::V6(n) => {
                let p = n.prefix_len();
                insert_prefix(&mut m.cidr_v6, p, mask_v6(u128::from(n.network()), p), i);
            }
        }
    }
    m.cidr_v4.sort_by_key(|b| std::cmp::Reverse(b.0));
    m.cidr_v6.sort_by_key(|b| std::cmp::Reverse(b.0));
    if m.lists.is_empty() && cx.diags.len() == before {
        cx.err(
            Some(span),
            0,
            format!("service {name}: the geo table has no entries"),
        );
    }
    (cx.diags.len() == before).then_some(m)
}

/// Adds `key → list` to the table of prefix length `p`.
fn insert_prefix<K: Eq + std::hash::Hash>(
    tables: &mut Vec<(u8, FxHashMap<K, usize>)>,
    p: u8,
    key: K,
    list: usize,
) {
    match tables.iter_mut().find(|(pp, _)| *pp == p) {
        Some((_, t)) => {
            t.insert(key, list);
        }
        None => {
            let mut t = FxHashMap::default();
            t.insert(key, list);
            tables.push((p, t));
        }
    }
}

fn latency(
    cx: &mut Ctx<'_>,
    t: &LatencyConfig,
    span: std::ops::Range<usize>,
    name: &Name,
    line: usize,
    region_idx: &BTreeMap<String, u16>,
) -> Latency {
    let mut l = Latency::default();
    let mut row = 0usize;
    let check = |cx: &mut Ctx<'_>, key: &str, r: &BTreeMap<String, f64>| {
        for (region, ms) in r {
            if !region_idx.contains_key(region) {
                cx.err(
                    Some(span.clone()),
                    line,
                    format!("service {name}: latency {key} names unknown region {region:?}"),
                );
            }
            if !ms.is_finite() || *ms < 0.0 {
                cx.err(
                    Some(span.clone()),
                    line,
                    format!(
                        "service {name}: latency {key}.{region} = {ms}: expected milliseconds ≥ 0"
                    ),
                );
            }
        }
    };
    if let Some(d) = &t.default {
        check(cx, "default", d);
        l.default = Some(row);
        row += 1;
    }
    for (k, r) in &t.continent {
        check(cx, k, r);
        match two_letters(k).filter(|_| CONTINENTS.contains(&k.to_ascii_uppercase().as_str())) {
            Some(c) => {
                l.continent.insert(c, row);
            }
            None => cx.err(
                Some(span.clone()),
                line,
                format!("service {name}: latency.continent key {k:?} is not a continent code"),
            ),
        }
        row += 1;
    }
    for (k, r) in &t.country {
        check(cx, k, r);
        match two_letters(k) {
            Some(c) => {
                l.country.insert(c, row);
            }
            None => cx.err(
                Some(span.clone()),
                line,
                format!("service {name}: latency.country key {k:?} is not a country code"),
            ),
        }
        row += 1;
    }
    l.probes = t.probes;
    if row == 0 && !t.probes {
        cx.err(
            Some(span),
            line,
            format!("service {name}: the latency table is empty (add rows, or probes = true)"),
        );
    }
    l
}

/// Services whose CNAME endpoints (or all-down CNAME) lead back to themselves.
fn check_cname_loops(cx: &mut Ctx<'_>, topo: &Topology, zones: &[Vec<ZoneService>]) {
    /// Service name, its config line, and the names its CNAMEs point at.
    type Edges = (String, usize, Vec<Box<[u8]>>);
    let mut nodes: BTreeMap<Box<[u8]>, Edges> = BTreeMap::new();
    for s in zones.iter().flatten() {
        let mut targets: Vec<Box<[u8]>> = s
            .service
            .groups
            .iter()
            .flat_map(|g| g.pools.iter())
            .flat_map(|&p| topo.pools[p as usize].endpoints.clone())
            .filter_map(|e| match &topo.endpoints[e as usize].target {
                Target::Cname(_, key) => Some(key.clone()),
                Target::Addr(_) => None,
            })
            .collect();
        targets.extend(s.service.all_down_cname.clone());
        nodes.insert(name_key(&s.name), (s.name.to_string(), s.line, targets));
    }
    let mut reported = BTreeSet::new();
    for start in nodes.keys() {
        // Depth-first walk with an explicit path.
        let mut stack: Vec<(Box<[u8]>, usize)> = vec![(start.clone(), 0)];
        let mut path: Vec<Box<[u8]>> = vec![start.clone()];
        while let Some((node, i)) = stack.pop() {
            let next = nodes.get(&node).and_then(|n| n.2.get(i)).cloned();
            match next {
                None => {
                    path.pop();
                }
                Some(t) => {
                    stack.push((node, i + 1));
                    if t == *start {
                        let (label, line, _) = &nodes[start];
                        if reported.insert(start.clone()) {
                            let names: Vec<String> =
                                path.iter().map(|k| nodes[k].0.clone()).collect();
                            cx.err(
                                None,
                                *line,
                                format!(
                                    "service {label}: CNAME loop {} -> {label}",
                                    names.join(" -> ")
                                ),
                            );
                        }
                    } else if nodes.contains_key(&t) && !path.contains(&t) {
                        path.push(t.clone());
                        stack.push((t, 0));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

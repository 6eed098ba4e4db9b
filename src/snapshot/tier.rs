//! Compiles the tier part of the config (`[node]`, `[tier]`,
//! `[listeners]`, `[groups]`) into a [`Plan`], and checks it with the rest
//! of the config: unknown regions, groups, monitors and algorithms, empty
//! groups, a backend listed twice, two listeners on one address are errors;
//! a listener on an address no pool of its region hands out is a warning
//! (DNS will never send anyone there).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::balance::{self, Algorithm, EjectionSettings};
use crate::config::{Config, EjectionConfig, MinHealthy, PersistenceConfig};
use crate::config::{GroupConfig, ListenerConfig, ListenerTlsConfig};
use crate::diag::{line_col, Diagnostic};
use crate::health::{Check, HealthState, Member, Monitor};
use crate::policy::{Target, Topology};
use crate::tier::plan::{
    Action, BackendPlan, CookiePlan, ForwardedFor, GroupPlan, HashOn, Http1Engine, HttpPlan,
    ListenerPlan, Mode, Persistence, Plan, ProxyVersion, Rate, RateLimitPlan, RulePlan, Transport,
};
use crate::tier::tls::{self, ClientTls, ServerTls, Trust};

struct Cx<'a> {
    config: &'a Config,
    diags: &'a mut Vec<Diagnostic>,
}

impl Cx<'_> {
    fn at(&self, span: Option<std::ops::Range<usize>>, line: usize) -> (usize, usize) {
        match span {
            Some(s) => line_col(&self.config.text, s.start),
            None => (line, 0),
        }
    }
    fn err(&mut self, span: Option<std::ops::Range<usize>>, line: usize, msg: String) {
        let (l, c) = self.at(span, line);
        self.diags
            .push(Diagnostic::error(&self.config.path, l, c, msg));
    }
    fn warn(&mut self, span: Option<std::ops::Range<usize>>, line: usize, msg: String) {
        let (l, c) = self.at(span, line);
        self.diags
            .push(Diagnostic::warning(&self.config.path, l, c, msg));
    }
}

fn ejection(e: &EjectionConfig) -> EjectionSettings {
    EjectionSettings {
        failures: e.failures,
        window: e.window,
        base: e.base_time,
        max: e.max_time,
        max_percent: e.max_percent,
        success_rate: e.success_rate.as_ref().map(|sr| balance::SuccessRate {
            interval: sr.interval,
            min_requests: sr.min_requests,
            min_hosts: sr.min_hosts,
            // Out of range (negative, NaN, huge) becomes 0: refused by the
            // balancer's settings check with the reason.
            stdev_factor_milli: if sr.stdev_factor.is_finite() && sr.stdev_factor > 0.0 {
                (sr.stdev_factor * 1000.0).round().min(f64::from(u32::MAX)) as u32
            } else {
                0
            },
        }),
    }
}

/// The address to check a backend on: `check` as address:port or as a
/// port, else the monitor's port, else the backend's own address.
fn check_addr(addr: SocketAddr, check: Option<&str>, monitor: &Monitor) -> Option<SocketAddr> {
    match check {
        Some(c) => c
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| c.parse::<u16>().ok().map(|p| SocketAddr::new(addr.ip(), p))),
        None => Some(monitor.port.map_or(addr, |p| SocketAddr::new(addr.ip(), p))),
    }
}

/// A group's `persistence` table as a plan, or what is wrong with it.
fn persistence(p: &PersistenceConfig, algorithm: Algorithm) -> Result<Persistence, String> {
    let only = |keys: &[(&str, bool)]| -> Result<(), String> {
        match keys.iter().find(|(_, set)| *set) {
            Some((k, _)) => Err(format!("{k} does not apply to mode = {:?}", p.mode)),
            None => Ok(()),
        }
    };
    let cookie_keys = [
        ("cookie", p.cookie.is_some()),
        ("max_age", p.max_age.is_some()),
        ("same_site", p.same_site.is_some()),
        ("secure", p.secure),
    ];
    let source_keys = [
        ("timeout", p.timeout.is_some()),
        ("max_entries", p.max_entries.is_some()),
    ];
    let hash_keys = [("on", p.on.is_some())];
    match p.mode.as_str() {
        "cookie" => {
            only(&source_keys)?;
            only(&hash_keys)?;
            let name = p.cookie.clone().unwrap_or_else(|| "GEOLB".into());
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return Err(format!(
                    "cookie {name:?} is not a cookie name (RFC 6265 token)"
                ));
            }
            let mut attributes = "; Path=/".to_string();
            if let Some(a) = p.max_age {
                attributes.push_str(&format!("; Max-Age={}", a.as_secs().max(1)));
            }
            if p.http_only {
                attributes.push_str("; HttpOnly");
            }
            let same_site = match p.same_site.as_deref().map(str::to_ascii_lowercase) {
                None => None,
                Some(s) if s == "lax" => Some("Lax"),
                Some(s) if s == "strict" => Some("Strict"),
                Some(s) if s == "none" => Some("None"),
                Some(s) => {
                    return Err(format!(
                        "same_site {s:?}: expected \"lax\", \"strict\" or \"none\""
                    ))
                }
            };
            if same_site == Some("None") && !p.secure {
                return Err(
                    "same_site = \"none\" needs secure = true (browsers refuse it otherwise)"
                        .into(),
                );
            }
            if p.secure {
                attributes.push_str("; Secure");
            }
            if let Some(s) = same_site {
                attributes.push_str("; SameSite=");
                attributes.push_str(s);
            }
            Ok(Persistence::Cookie(CookiePlan { name, attributes }))
        }
        "source" => {
            only(&cookie_keys)?;
            only(&hash_keys)?;
            let max_entries = p.max_entries.unwrap_or(100_000);
            if max_entries == 0 {
                return Err("max_entries must be above 0".into());
            }
            Ok(Persistence::Source {
                timeout: p.timeout.unwrap_or(Duration::from_secs(1800)),
                max_entries: max_entries as usize,
            })
        }
        "hash" => {
            only(&cookie_keys)?;
            only(&source_keys)?;
            if !matches!(algorithm, Algorithm::Consistent | Algorithm::SourceHash) {
                return Err(format!(
                    "mode = \"hash\" needs algorithm = \"consistent\" (or \"source_hash\"), not {:?}",
                    algorithm.name()
                ));
            }
            let on = p.on.as_deref().unwrap_or("");
            let hash_on = match on.split_once(':') {
                Some(("header", h)) if http::HeaderName::from_bytes(h.as_bytes()).is_ok() => {
                    HashOn::Header(h.to_ascii_lowercase())
                }
                Some(("cookie", c)) if !c.is_empty() => HashOn::Cookie(c.to_string()),
                None if on == "path" => HashOn::Path,
                _ => {
                    return Err(format!(
                        "on = {on:?}: expected \"header:NAME\", \"cookie:NAME\" or \"path\""
                    ))
                }
            };
            Ok(Persistence::Hash(hash_on))
        }
        other => Err(format!(
            "mode {other:?}: expected \"cookie\", \"source\" or \"hash\""
        )),
    }
}

/// Compiles the tier. Problems go to `diags`; what is wrong is left out of
/// the plan (the load fails anyway when there is an error).
pub fn compile(
    config: &Config,
    monitors: &BTreeMap<String, Arc<Monitor>>,
    diags: &mut Vec<Diagnostic>,
) -> Plan {
    let mut cx = Cx { config, diags };
    let regions: BTreeSet<&str> = config.regions.iter().map(|r| r.name.as_str()).collect();
    let pools: BTreeSet<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
    // Addresses each region's pools hand out.
    let mut handed: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
    for p in &config.pools {
        let set = handed.entry(p.value.region.get_ref().as_str()).or_default();
        set.extend(p.value.endpoints.get_ref().iter().filter_map(|e| e.address));
    }
    if let Some(rs) = &config.node.regions {
        for r in rs {
            if !regions.contains(r.as_str()) {
                cx.err(
                    None,
                    1,
                    format!("node.regions (or --region): no region is named {r:?}"),
                );
            }
        }
    }
    let d = &config.tier;
    let mut plan = Plan::default();
    if let Some(a) = &d.access_log {
        let base = config.path.parent().unwrap_or(std::path::Path::new("."));
        let v = a.get_ref();
        let json = match v.format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                cx.err(
                    Some(a.span()),
                    1,
                    format!("tier.access_log.format {other:?}: expected \"text\" or \"json\""),
                );
                false
            }
        };
        let path = if v.path.as_os_str() == "-" {
            v.path.clone()
        } else {
            base.join(&v.path)
        };
        if path.as_os_str() != "-"
            && !path
                .parent()
                .is_some_and(|p| p.as_os_str().is_empty() || p.is_dir())
        {
            cx.err(
                Some(a.span()),
                1,
                format!(
                    "tier.access_log.path {}: its directory does not exist",
                    path.display()
                ),
            );
        }
        plan.access_log = Some(crate::tier::access::AccessLogPlan {
            path,
            json,
            queue: v.queue.unwrap_or(65_536),
        });
    }
    if let Some(f) = &d.cookie_secret_file {
        let base = config.path.parent().unwrap_or(std::path::Path::new("."));
        let path = base.join(f);
        match std::fs::read(&path) {
            Ok(b) if b.trim_ascii().len() >= 16 => plan.cookie_secret = Some(b.trim_ascii().to_vec()),
            Ok(_) => cx.err(
                None,
                1,
                format!("tier.cookie_secret_file {}: needs at least 16 bytes (e.g. `head -c 32 /dev/urandom | base64 > FILE`)", path.display()),
            ),
            Err(e) => cx.err(
                None,
                1,
                format!("tier.cookie_secret_file {}: {e}", path.display()),
            ),
        }
    }
    // The system's root certificates, read once if a group needs them.
    let mut roots = None;
    for g in &config.groups {
        let v = &g.value;
        let name = &g.name;
        let mut ok = true;
        if !regions.contains(v.region.get_ref().as_str()) {
            cx.err(
                Some(v.region.span()),
                g.line,
                format!(
                    "groups.{name}.region: no region is named {:?}",
                    v.region.get_ref()
                ),
            );
            ok = false;
        }
        if pools.contains(name.as_str()) || regions.contains(name.as_str()) {
            cx.err(
                None,
                g.line,
                format!("groups.{name}: a pool or region has the same name; names of groups, pools and regions must differ (drain targets name them)"),
            );
            ok = false;
        }
        let hashed = v
            .persistence
            .as_ref()
            .is_some_and(|p| p.get_ref().mode == "hash");
        let algorithm = match &v.algorithm {
            None if hashed => Algorithm::Consistent,
            None => Algorithm::RoundRobin,
            Some(a) => match a.get_ref().parse::<Algorithm>() {
                Ok(a) => a,
                Err(e) => {
                    cx.err(
                        Some(a.span()),
                        g.line,
                        format!("groups.{name}.algorithm: {e}"),
                    );
                    ok = false;
                    Algorithm::RoundRobin
                }
            },
        };
        let monitor = match &v.monitor {
            None => None,
            Some(m) => match monitors.get(m.get_ref()) {
                Some(mon) => Some(mon.clone()),
                None => {
                    cx.err(
                        Some(m.span()),
                        g.line,
                        format!("groups.{name}.monitor: unknown monitor {:?}", m.get_ref()),
                    );
                    ok = false;
                    None
                }
            },
        };
        let send_proxy = match v.send_proxy.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "none")) => None,
            Some((_, "v1")) => Some(ProxyVersion::V1),
            Some((_, "v2")) => Some(ProxyVersion::V2),
            Some((s, other)) => {
                cx.err(
                    Some(s.span()),
                    g.line,
                    format!(
                        "groups.{name}.send_proxy {other:?}: expected \"v1\", \"v2\" or \"none\""
                    ),
                );
                ok = false;
                None
            }
        };
        let members = v.members.get_ref();
        if members.is_empty() {
            cx.err(
                Some(v.members.span()),
                g.line,
                format!("groups.{name}.members: a group needs at least one member"),
            );
            ok = false;
        }
        let region = v.region.get_ref().clone();
        let mut seen = BTreeSet::new();
        let mut backends = Vec::new();
        for m in members {
            if !seen.insert(m.address) {
                cx.err(
                    Some(v.members.span()),
                    g.line,
                    format!("groups.{name}.members: {} is listed twice", m.address),
                );
                ok = false;
                continue;
            }
            let id = format!("{name}/{}", m.address);
            let check = match &monitor {
                None => {
                    if m.check.is_some() {
                        cx.warn(
                            Some(v.members.span()),
                            g.line,
                            format!("groups.{name}: member {} has check = {:?} but the group has no monitor; it is not checked", m.address, m.check.as_deref().unwrap_or_default()),
                        );
                    }
                    None
                }
                Some(mon) => match check_addr(m.address, m.check.as_deref(), mon) {
                    Some(addr) => Some(Check {
                        monitor: mon.clone(),
                        addr,
                    }),
                    None => {
                        cx.err(
                            Some(v.members.span()),
                            g.line,
                            format!("groups.{name}: member {}: check {:?} is neither address:port nor a port", m.address, m.check.as_deref().unwrap_or_default()),
                        );
                        ok = false;
                        None
                    }
                },
            };
            plan.members.push(Member {
                identity: id.clone(),
                source: crate::tier::SOURCE,
                within: vec![
                    name.clone(),
                    format!("{region}/{}", m.address),
                    region.clone(),
                ],
                check,
            });
            backends.push(BackendPlan {
                id,
                addr: m.address,
                weight: m.weight,
                backup: m.backup,
                max_connections: (m.max_connections > 0).then_some(m.max_connections),
            });
        }
        let settings = balance::Settings {
            algorithm,
            slow_start: v.slow_start.unwrap_or_default(),
            min_primaries_up: v.min_primaries_up.map_or(1, |n| n as usize),
            panic_threshold: v.panic_threshold.unwrap_or(0),
            ejection: ejection(&v.ejection.clone().unwrap_or_default()),
            hash_balance_factor: v.hash_balance_factor.unwrap_or(0),
            ..balance::Settings::default()
        };
        if let Err(e) = balance::Balancer::new(settings.clone(), &[]) {
            cx.err(None, g.line, format!("groups.{name}: {e}"));
            ok = false;
        }
        let (persistence, drain_sticky) = match &v.persistence {
            None => (Persistence::None, false),
            Some(p) => match persistence(p.get_ref(), algorithm) {
                Ok(x) => (x, p.get_ref().drain_sticky),
                Err(msg) => {
                    cx.err(
                        Some(p.span()),
                        g.line,
                        format!("groups.{name}.persistence: {msg}"),
                    );
                    ok = false;
                    (Persistence::None, false)
                }
            },
        };
        let transport = transport(&mut cx, name, g.line, v, &mut roots).unwrap_or_else(|| {
            ok = false;
            Transport::default()
        });
        if ok {
            plan.groups.push(GroupPlan {
                name: name.clone(),
                region,
                settings,
                backends,
                send_proxy,
                drain_timeout: v.drain_timeout.unwrap_or(d.drain_timeout),
                retry_budget: v.retry_budget.unwrap_or(20),
                persistence,
                drain_sticky,
                transport,
            });
        }
    }
    let mut binds: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for l in &config.listeners {
        let v = &l.value;
        let name = &l.name;
        let mut ok = true;
        let region = v.region.get_ref();
        if !regions.contains(region.as_str()) {
            cx.err(
                Some(v.region.span()),
                l.line,
                format!("listeners.{name}.region: no region is named {region:?}"),
            );
            ok = false;
        }
        let mode = match v.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
            None | Some((_, "tcp")) => {
                if !v.routes.is_empty()
                    || v.forwarded_for.is_some()
                    || v.request_id.is_some()
                    || v.tls.is_some()
                    || v.http1_engine.is_some()
                {
                    cx.err(
                        None,
                        l.line,
                        format!("listeners.{name}: routes, forwarded_for, request_id, tls and http1_engine need mode = \"http\""),
                    );
                    ok = false;
                }
                Mode::Tcp
            }
            Some((_, "http")) => match http_plan(&mut cx, name, l.line, v, config) {
                Some(h) => Mode::Http(Box::new(h)),
                None => {
                    ok = false;
                    Mode::Tcp
                }
            },
            Some((m, other)) => {
                cx.err(
                    Some(m.span()),
                    l.line,
                    format!("listeners.{name}.mode {other:?}: expected \"tcp\" or \"http\""),
                );
                ok = false;
                Mode::Tcp
            }
        };
        let bind = *v.bind.get_ref();
        let wildcard = |a: &SocketAddr| a.ip().is_unspecified() && a.port() == bind.port();
        if let Some(other) = binds.get(&bind).or_else(|| {
            binds
                .iter()
                .find(|(a, _)| {
                    a.port() == bind.port() && (wildcard(a) || bind.ip().is_unspecified())
                })
                .map(|(_, n)| n)
        }) {
            cx.err(
                Some(v.bind.span()),
                l.line,
                format!("listeners.{name}.bind {bind}: listener {other} already binds it"),
            );
            ok = false;
        }
        binds.entry(bind).or_insert_with(|| name.clone());
        match config.groups.iter().find(|g| &g.name == v.group.get_ref()) {
            None => {
                cx.err(
                    Some(v.group.span()),
                    l.line,
                    format!("listeners.{name}.group: no group is named {:?}", v.group.get_ref()),
                );
                ok = false;
            }
            Some(g) if g.value.region.get_ref() != region => cx.warn(
                Some(v.group.span()),
                l.line,
                format!(
                    "listeners.{name}: its group {} is in region {}, not {region}: connections would cross regions",
                    g.name,
                    g.value.region.get_ref()
                ),
            ),
            Some(_) => {}
        }
        let http_only = config
            .groups
            .iter()
            .find(|g| &g.name == v.group.get_ref())
            .and_then(|g| g.value.persistence.as_ref())
            .map(|p| p.get_ref().mode.as_str())
            .filter(|m| *m == "cookie" || *m == "hash");
        if let (Mode::Tcp, Some(m)) = (&mode, http_only) {
            cx.warn(
                Some(v.group.span()),
                l.line,
                format!("listeners.{name}: its group's persistence mode = {m:?} applies to HTTP listeners only; TCP connections are balanced without it"),
            );
        }
        if ok
            && !bind.ip().is_unspecified()
            && !handed
                .get(region.as_str())
                .is_some_and(|s| s.contains(&bind.ip()))
        {
            cx.warn(
                Some(v.bind.span()),
                l.line,
                format!("listeners.{name}.bind {bind}: no pool of region {region} hands out {}; DNS will not send clients here", bind.ip()),
            );
        }
        let max = v.max_connections.unwrap_or(d.max_connections);
        let attempts = v.connect_attempts.unwrap_or(d.connect_attempts);
        if max == 0 || attempts == 0 {
            cx.err(
                None,
                l.line,
                format!(
                    "listeners.{name}: max_connections and connect_attempts must be at least 1"
                ),
            );
            ok = false;
        }
        if ok {
            plan.listeners.push(ListenerPlan {
                name: name.clone(),
                mode,
                region: region.clone(),
                bind,
                group: v.group.get_ref().clone(),
                max_connections: max,
                connect_timeout: v.connect_timeout.unwrap_or(d.connect_timeout),
                idle_timeout: v.idle_timeout.unwrap_or(d.idle_timeout),
                connect_attempts: attempts,
                accept_proxy_from: v.accept_proxy_from.clone(),
                proxy_header_timeout: d.proxy_header_timeout,
            });
        }
    }
    if d.connect_timeout.is_zero() || d.idle_timeout.is_zero() {
        cx.err(
            None,
            1,
            "tier.connect_timeout and tier.idle_timeout must be more than 0".into(),
        );
    }
    plan
}

/// An HTTP listener's settings, checked; None after reporting an error.
fn http_plan(
    cx: &mut Cx<'_>,
    name: &str,
    line: usize,
    v: &ListenerConfig,
    config: &Config,
) -> Option<HttpPlan> {
    let mut ok = true;
    let mut err = |cx: &mut Cx<'_>, msg: String| {
        cx.err(None, line, format!("listeners.{name}: {msg}"));
        ok = false;
    };
    let mut rules = Vec::new();
    for (i, r) in v.routes.iter().enumerate() {
        let n = i + 1;
        let action = match (&r.group, &r.respond) {
            (Some(g), None) => {
                if !config.groups.iter().any(|x| &x.name == g) {
                    err(cx, format!("route {n}: no group is named {g:?}"));
                }
                Action::Group(g.clone())
            }
            (None, Some(f)) => {
                if !(200..=599).contains(&f.status) {
                    err(
                        cx,
                        format!(
                            "route {n}: status {} is not a final HTTP status (200 to 599)",
                            f.status
                        ),
                    );
                }
                for (k, val) in &f.headers {
                    if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                        || http::HeaderValue::from_str(val).is_err()
                    {
                        err(
                            cx,
                            format!("route {n}: header {k:?}: {val:?} is not a valid header"),
                        );
                    }
                }
                Action::Respond {
                    status: f.status,
                    headers: f
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    body: f.body.clone(),
                }
            }
            _ => {
                err(
                    cx,
                    format!("route {n}: give exactly one of group or respond"),
                );
                continue;
            }
        };
        let host = r
            .host
            .as_ref()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        if let Some(h) = &host {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            if bare.is_empty() || bare.contains('*') || bare.contains(':') || bare.contains('/') {
                err(
                    cx,
                    format!("route {n}: host {h:?}: a name, or *.name for every name under it"),
                );
            }
        }
        if let Some(p) = &r.path_prefix {
            if !p.starts_with('/') {
                err(
                    cx,
                    format!("route {n}: path_prefix {p:?} must start with /"),
                );
            }
        }
        let header = match &r.header {
            Some(hm) => {
                if http::HeaderName::from_bytes(hm.name.as_bytes()).is_err() {
                    err(cx, format!("route {n}: {:?} is not a header name", hm.name));
                }
                Some((hm.name.to_ascii_lowercase(), hm.value.clone()))
            }
            None => None,
        };
        rules.push(RulePlan {
            name: r.name.clone(),
            host,
            path_prefix: r.path_prefix.clone(),
            header,
            action,
        });
    }
    let forwarded_for = match v.forwarded_for.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("append") => ForwardedFor::Append,
        Some("replace") => ForwardedFor::Replace,
        Some("off") => ForwardedFor::Off,
        Some(other) => {
            err(
                cx,
                format!("forwarded_for {other:?}: expected \"append\", \"replace\" or \"off\""),
            );
            ForwardedFor::Append
        }
    };
    if let Some(h) = &v.request_id {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            err(cx, format!("request_id {h:?} is not a header name"));
        }
    }
    let retry_on = v.retry_on.clone().unwrap_or_else(|| vec![502, 503, 504]);
    if let Some(bad) = retry_on.iter().find(|s| !(100..=599).contains(*s)) {
        err(cx, format!("retry_on: {bad} is not an HTTP status"));
    }
    let engine = match v.http1_engine.as_deref() {
        None | Some("native") => Http1Engine::Native,
        Some("hyper") => Http1Engine::Hyper,
        Some(other) => {
            err(
                cx,
                format!("http1_engine {other:?}: expected \"native\" or \"hyper\""),
            );
            Http1Engine::Native
        }
    };
    let tls = v.tls.as_ref().map(|t| server_tls(cx, name, line, t));
    let tls_failed = matches!(tls, Some(None));
    let tls = tls.flatten();
    let plan = HttpPlan {
        rules,
        forwarded_for,
        trusted_proxies: v.trusted_proxies.clone(),
        forwarded: v.forwarded,
        via: v.via,
        request_id: v.request_id.as_ref().map(|h| h.to_ascii_lowercase()),
        header_timeout: v.header_timeout.unwrap_or(Duration::from_secs(10)),
        response_timeout: v.response_timeout.unwrap_or(Duration::from_secs(30)),
        body_timeout: v.body_timeout.unwrap_or(Duration::from_secs(60)),
        drain_window: v.drain_window.unwrap_or(Duration::from_secs(5)),
        retries: v.retries.unwrap_or(2),
        retry_on,
        rate_limit: None,
        tls,
        engine,
    };
    let rate_limit = v.rate_limit.as_ref().map(|r| {
        let r = r.get_ref();
        let rate = |what: &str, per: Option<u32>, burst: Option<u32>| match per {
            None => Ok(None),
            Some(per_second) => {
                let burst = burst.unwrap_or(per_second);
                if per_second == 0 || burst == 0 {
                    Err(format!("rate_limit.{what}: rates and bursts must be above 0 (leave it out for no limit)"))
                } else {
                    Ok(Some(Rate { per_second, burst }))
                }
            }
        };
        if r.burst.is_some() && r.per_client.is_none() {
            err(cx, "rate_limit.burst needs per_client".into());
        }
        if r.listener_burst.is_some() && r.listener.is_none() {
            err(cx, "rate_limit.listener_burst needs listener".into());
        }
        let per_client = rate("per_client", r.per_client, r.burst).unwrap_or_else(|e| {
            err(cx, e);
            None
        });
        let listener = rate("listener", r.listener, r.listener_burst).unwrap_or_else(|e| {
            err(cx, e);
            None
        });
        if per_client.is_none() && listener.is_none() {
            cx.warn(
                None,
                line,
                format!("listeners.{name}.rate_limit: neither per_client nor listener is set; nothing is limited"),
            );
        }
        RateLimitPlan {
            per_client,
            listener,
            exempt: r.exempt.clone(),
        }
    });
    let plan = HttpPlan { rate_limit, ..plan };
    (ok && !tls_failed).then_some(plan)
}

/// A listener's TLS, loaded and checked; None after reporting an error.
fn server_tls(
    cx: &mut Cx<'_>,
    name: &str,
    line: usize,
    t: &toml::Spanned<ListenerTlsConfig>,
) -> Option<ServerTls> {
    let at = t.span();
    let t = t.get_ref();
    let mut ok = true;
    if t.certificates.is_empty() {
        cx.err(
            Some(at.clone()),
            line,
            format!("listeners.{name}.tls.certificates: at least one certificate is needed"),
        );
        ok = false;
    }
    let mut certs = Vec::new();
    for (i, c) in t.certificates.iter().enumerate() {
        match tls::load_certified(c.cert.get_ref(), c.key.get_ref()) {
            Ok(x) => {
                if i > 0 && x.names.is_empty() {
                    cx.warn(
                        Some(c.cert.span()),
                        line,
                        format!("listeners.{name}.tls: certificate {} names no DNS name, so no server name chooses it (only the first serves clients whose name no certificate has)", i + 1),
                    );
                }
                certs.push(x);
            }
            Err(e) => {
                let span = if e.is_about_key() {
                    c.key.span()
                } else {
                    c.cert.span()
                };
                cx.err(Some(span), line, format!("listeners.{name}.tls: {e}"));
                ok = false;
            }
        }
    }
    let default_alpn = ["h2".to_string(), "http/1.1".to_string()];
    let alpn = match tls::alpn(t.alpn.as_deref().unwrap_or(&default_alpn)) {
        Ok(a) => a,
        Err(e) => {
            cx.err(Some(at.clone()), line, format!("listeners.{name}.tls: {e}"));
            ok = false;
            Vec::new()
        }
    };
    let min = match t.min_version.as_deref().map(str::parse).transpose() {
        Ok(m) => m.unwrap_or(tls::MinVersion::Tls12),
        Err(e) => {
            cx.err(Some(at.clone()), line, format!("listeners.{name}.tls: {e}"));
            ok = false;
            tls::MinVersion::Tls12
        }
    };
    if !ok {
        return None;
    }
    match ServerTls::new(certs, alpn, min) {
        Ok(s) => Some(s),
        Err(e) => {
            cx.err(Some(at), line, format!("listeners.{name}.tls: {e}"));
            None
        }
    }
}

/// How a group's backends are spoken to, checked; None after reporting an
/// error. `roots` holds the system roots once a group needed them.
fn transport(
    cx: &mut Cx<'_>,
    name: &str,
    line: usize,
    v: &GroupConfig,
    roots: &mut Option<Arc<rustls::RootCertStore>>,
) -> Option<Transport> {
    let h2 = match v.protocol.as_ref().map(|p| (p, p.get_ref().as_str())) {
        None | Some((_, "http1")) => false,
        Some((_, "h2")) => true,
        Some((p, other)) => {
            cx.err(
                Some(p.span()),
                line,
                format!("groups.{name}.protocol {other:?}: expected \"http1\" or \"h2\""),
            );
            return None;
        }
    };
    let tls = match &v.tls {
        None => None,
        Some(t) => {
            let trust = match (&t.ca, t.verify) {
                (_, false) => {
                    cx.warn(
                        None,
                        line,
                        format!("groups.{name}.tls: verify = false: the backends' certificates are not checked, so anyone on the way to them can read and change the traffic"),
                    );
                    Trust::None
                }
                (Some(ca), true) => Trust::Ca(ca.get_ref()),
                (None, true) => {
                    let r = match roots {
                        Some(r) => r.clone(),
                        None => {
                            let (r, why) = tls::system_roots();
                            if let Some(why) = why {
                                cx.warn(
                                    None,
                                    line,
                                    format!("groups.{name}.tls: {why}: every backend will fail verification; give ca = \"file.pem\""),
                                );
                            }
                            roots.insert(r).clone()
                        }
                    };
                    Trust::System(r)
                }
            };
            match ClientTls::new(trust, t.server_name.as_deref()) {
                Ok(c) => Some(c),
                Err(e) => {
                    cx.err(
                        t.ca.as_ref().map(|c| c.span()),
                        line,
                        format!("groups.{name}.tls: {e}"),
                    );
                    return None;
                }
            }
        }
    };
    Some(Transport {
        h2,
        tls,
        connect_timeout: cx.config.tier.connect_timeout,
    })
}

/// A pool endpoint that is a tier VIP, and what its health needs from the
/// tier behind it: enough healthy backends in the groups of the region's
/// listeners on that address.
#[derive(Debug, Clone, PartialEq)]
pub struct TierGate {
    /// The endpoint's topology index.
    pub endpoint: u32,
    /// Backend identities and weights behind it.
    pub backends: Vec<(String, u32)>,
    pub need: MinHealthy,
}

impl TierGate {
    /// Whether the backends up in `state` meet the need: a count of
    /// backends, or a share of their total weight.
    pub fn holds(&self, state: &HealthState) -> bool {
        let up = self.backends.iter().filter(|(id, _)| state.get(id).up());
        match self.need {
            MinHealthy::Count(n) => up.count() as u64 >= u64::from(n),
            MinHealthy::Percent(p) => {
                let total: u64 = self.backends.iter().map(|(_, w)| u64::from(*w)).sum();
                let healthy: u64 = up.map(|(_, w)| u64::from(*w)).sum();
                total > 0 && healthy as f64 * 100.0 >= p * total as f64
            }
        }
    }
}

/// The gates of the pools that set `min_healthy_tier`.
pub fn gates(
    config: &Config,
    topo: &Topology,
    plan: &Plan,
    diags: &mut Vec<Diagnostic>,
) -> Vec<TierGate> {
    let mut cx = Cx { config, diags };
    let mut out = Vec::new();
    for p in &config.pools {
        let Some(need) = p.value.min_healthy_tier else {
            continue;
        };
        let Some(pool) = topo.pools.iter().find(|x| x.name == p.name) else {
            continue;
        };
        let region = p.value.region.get_ref();
        let mut any = false;
        for i in pool.endpoints.clone() {
            let Some(Target::Addr(ip)) = topo.endpoints.get(i as usize).map(|e| &e.target) else {
                continue;
            };
            let mut backends: Vec<(String, u32)> = Vec::new();
            for l in plan
                .listeners
                .iter()
                .filter(|l| &l.region == region && l.bind.ip() == *ip)
            {
                for b in plan.group(&l.group).into_iter().flat_map(|g| &g.backends) {
                    if !backends.iter().any(|(id, _)| *id == b.id) {
                        backends.push((b.id.clone(), b.weight));
                    }
                }
            }
            if backends.is_empty() {
                continue;
            }
            any = true;
            out.push(TierGate {
                endpoint: i,
                backends,
                need,
            });
        }
        if !any {
            cx.err(
                None,
                p.line,
                format!("pools.{}.min_healthy_tier: no tier listener of region {region} binds any address of this pool", p.name),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(extra: &str) -> (Plan, Vec<Diagnostic>) {
        let dir = tempfile::tempdir().expect("tempdir");
        compile_in(&dir, extra)
    }

    fn compile_in(dir: &tempfile::TempDir, extra: &str) -> (Plan, Vec<Diagnostic>) {
        std::fs::write(dir.path().join("a.zone"), "").expect("write");
        let text = format!(
            "[zones.\"example.com\"]\nfile = \"a.zone\"\n[regions.eu]\nlocation = [50.0, 8.0]\n[pools.eu-web]\nregion = \"eu\"\nendpoints = [{{ address = \"127.0.1.1\" }}]\n[monitors.tcp]\nkind = \"tcp\"\n{extra}"
        );
        let path = dir.path().join("geolb.toml");
        std::fs::write(&path, &text).expect("write");
        let (config, mut diags) = Config::read(&path, &text).expect("parses");
        let c = super::super::steering::compile(&config, &mut diags);
        let plan = compile(&config, &c.monitors, &mut diags);
        (plan, diags)
    }

    fn errors(d: &[Diagnostic]) -> Vec<String> {
        d.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn a_listener_in_front_of_a_group_compiles_with_health_members_drainable_by_region_address() {
        let (plan, diags) = compile_text(
            "[groups.eu-app]\nregion = \"eu\"\nmonitor = \"tcp\"\nalgorithm = \"least_conn\"\nmembers = [{ address = \"127.0.1.11:9001\", weight = 2 }, { address = \"127.0.1.12:9001\", backup = true, check = \"9101\" }]\n[listeners.eu-tcp]\nregion = \"eu\"\nbind = \"127.0.1.1:9000\"\ngroup = \"eu-app\"\n",
        );
        assert!(diags.is_empty(), "{:?}", errors(&diags));
        assert_eq!(plan.listeners.len(), 1);
        let g = plan.group("eu-app").expect("group");
        assert_eq!(g.settings.algorithm, Algorithm::LeastConn);
        assert_eq!(g.backends[0].id, "eu-app/127.0.1.11:9001");
        assert!(g.backends[1].backup);
        let m = &plan.members[1];
        assert_eq!(m.within, ["eu-app", "eu/127.0.1.12:9001", "eu"]);
        assert_eq!(
            m.check.as_ref().map(|c| c.addr.to_string()).as_deref(),
            Some("127.0.1.12:9101")
        );
    }

    #[test]
    fn persistence_and_rate_limit_mistakes_are_errors_with_their_line() {
        let cases = [
            ("persistence = { mode = \"sticky\" }", "mode \"sticky\""),
            (
                "algorithm = \"round_robin\"\npersistence = { mode = \"hash\", on = \"path\" }",
                "needs algorithm = \"consistent\"",
            ),
            (
                "persistence = { mode = \"hash\", on = \"query\" }",
                "on = \"query\"",
            ),
            (
                "persistence = { mode = \"cookie\", same_site = \"none\" }",
                "needs secure = true",
            ),
            (
                "persistence = { mode = \"cookie\", cookie = \"a b\" }",
                "not a cookie name",
            ),
            (
                "persistence = { mode = \"source\", cookie = \"X\" }",
                "cookie does not apply",
            ),
            (
                "persistence = { mode = \"source\", max_entries = 0 }",
                "max_entries",
            ),
        ];
        for (extra, want) in cases {
            let (_, diags) = compile_text(&format!(
                "[groups.g]\nregion = \"eu\"\n{extra}\nmembers = [{{ address = \"127.0.1.11:1\" }}]\n"
            ));
            let e = errors(&diags);
            assert!(
                e.iter().any(|d| d.contains("geolb.toml:")
                    && d.contains("groups.g.persistence")
                    && d.contains(want)),
                "{extra}: {e:?}"
            );
        }
        // hash without an algorithm is consistent hashing.
        let (plan, diags) = compile_text(
            "[groups.g]\nregion = \"eu\"\npersistence = { mode = \"hash\", on = \"cookie:sid\" }\nmembers = [{ address = \"127.0.1.11:1\" }]\n",
        );
        assert!(diags.is_empty(), "{:?}", errors(&diags));
        let g = plan.group("g").expect("g");
        assert_eq!(g.settings.algorithm, Algorithm::Consistent);
        assert_eq!(
            g.persistence,
            Persistence::Hash(HashOn::Cookie("sid".into()))
        );
        let (_, diags) = compile_text(
            "[groups.g]\nregion = \"eu\"\nmembers = [{ address = \"127.0.1.11:1\" }]\n[listeners.h]\nregion = \"eu\"\nbind = \"127.0.1.1:80\"\nmode = \"http\"\ngroup = \"g\"\nrate_limit = { per_client = 0 }\n",
        );
        assert!(
            errors(&diags)
                .iter()
                .any(|d| d.contains("rate_limit.per_client")),
            "{:?}",
            errors(&diags)
        );
        let (_, diags) = compile_text("[tier]\ncookie_secret_file = \"missing.key\"\n");
        assert!(
            errors(&diags)
                .iter()
                .any(|d| d.contains("cookie_secret_file")),
            "{:?}",
            errors(&diags)
        );
    }

    #[test]
    fn tier_mistakes_are_errors_with_their_line_and_an_unannounced_vip_is_a_warning() {
        let (_, diags) = compile_text(
            "[groups.empty]\nregion = \"eu\"\nmembers = []\n[groups.bad]\nregion = \"mars\"\nalgorithm = \"fastest\"\nmonitor = \"nope\"\nmembers = [{ address = \"127.0.1.11:1\" }, { address = \"127.0.1.11:1\" }]\n[groups.ok]\nregion = \"eu\"\nmembers = [{ address = \"127.0.1.11:1\" }]\n[listeners.a]\nregion = \"eu\"\nbind = \"127.0.1.9:9000\"\ngroup = \"ok\"\n[listeners.b]\nregion = \"eu\"\nbind = \"127.0.1.9:9000\"\ngroup = \"missing\"\n",
        );
        let all = errors(&diags);
        let has = |s: &str| all.iter().any(|m| m.contains(s));
        assert!(
            has("groups.empty.members: a group needs at least one member"),
            "{all:?}"
        );
        assert!(has("no region is named \"mars\""), "{all:?}");
        assert!(has("unknown algorithm") || has("fastest"), "{all:?}");
        assert!(has("unknown monitor \"nope\""), "{all:?}");
        assert!(has("127.0.1.11:1 is listed twice"), "{all:?}");
        assert!(has("listener a already binds it"), "{all:?}");
        assert!(has("no group is named \"missing\""), "{all:?}");
        let warn = diags
            .iter()
            .find(|d| !d.is_error())
            .map(|d| d.to_string())
            .unwrap_or_default();
        assert!(
            warn.contains("no pool of region eu hands out 127.0.1.9"),
            "{all:?}"
        );
        // Every error names a line.
        assert!(diags.iter().all(|d| d.line > 0), "{all:?}");
    }

    #[test]
    fn a_fixed_response_needs_a_final_status() {
        for (status, ok) in [(103, false), (200, true), (599, true), (600, false)] {
            let (_, diags) = compile_text(&format!(
                "{GROUP}[listeners.h]\nregion = \"eu\"\nbind = \"127.0.1.9:8080\"\nmode = \"http\"\ngroup = \"g\"\nroutes = [{{ path_prefix = \"/x\", respond = {{ status = {status} }} }}]\n"
            ));
            let all = errors(&diags);
            let refused = all
                .iter()
                .any(|m| m.contains(&format!("status {status} is not a final HTTP status")));
            assert_eq!(refused, !ok, "{status}: {all:?}");
        }
    }

    /// Writes `NAME.pem` and `NAME.key`: a self-signed certificate for `names`.
    fn cert(dir: &tempfile::TempDir, name: &str, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
        std::fs::write(dir.path().join(format!("{name}.pem")), c.cert.pem()).expect("w");
        std::fs::write(
            dir.path().join(format!("{name}.key")),
            c.signing_key.serialize_pem(),
        )
        .expect("w");
    }

    const GROUP: &str = "[groups.g]\nregion = \"eu\"\nmembers = [{ address = \"127.0.1.11:1\" }]\n";

    #[test]
    fn listener_tls_loads_certificates_relative_to_the_config_with_their_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("certs")).expect("mkdir");
        cert(&dir, "certs/a", &["app.example.test", "*.example.test"]);
        cert(&dir, "certs/b", &["api.example.test"]);
        let (plan, diags) = compile_in(
            &dir,
            &format!("{GROUP}[listeners.h]\nregion = \"eu\"\nbind = \"127.0.1.1:8443\"\nmode = \"http\"\ngroup = \"g\"\ntls = {{ certificates = [\n  {{ cert = \"certs/a.pem\", key = \"certs/a.key\" }},\n  {{ cert = \"certs/b.pem\", key = \"certs/b.key\" }},\n], min_version = \"1.3\" }}\n"),
        );
        assert!(diags.is_empty(), "{:?}", errors(&diags));
        let Mode::Http(h) = &plan.listeners[0].mode else {
            panic!("an HTTP listener");
        };
        let tls = h.tls.as_ref().expect("tls");
        assert_eq!(
            tls.names,
            [
                vec!["app.example.test".to_string(), "*.example.test".to_string()],
                vec!["api.example.test".to_string()]
            ]
        );
        assert_eq!(
            tls.config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn tls_mistakes_are_errors_at_their_line_and_unverified_backends_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        cert(&dir, "a", &["a.test"]);
        cert(&dir, "b", &["b.test"]);
        std::fs::write(dir.path().join("empty.pem"), "").expect("w");
        let listener = |name: &str, port: u16, tls: &str| {
            format!("[listeners.{name}]\nregion = \"eu\"\nbind = \"127.0.1.1:{port}\"\nmode = \"http\"\ngroup = \"g\"\ntls = {tls}\n")
        };
        let (plan, diags) = compile_in(
            &dir,
            &format!(
                "{GROUP}[groups.v]\nregion = \"eu\"\nmembers = [{{ address = \"127.0.1.12:1\" }}]\ntls = {{ verify = false }}\n[groups.p]\nregion = \"eu\"\nprotocol = \"spdy\"\nmembers = [{{ address = \"127.0.1.13:1\" }}]\n[groups.c]\nregion = \"eu\"\ntls = {{ ca = \"missing-ca.pem\" }}\nmembers = [{{ address = \"127.0.1.14:1\" }}]\n{}{}{}{}{}{}[listeners.t]\nregion = \"eu\"\nbind = \"127.0.1.1:9\"\ngroup = \"g\"\ntls = {{ certificates = [{{ cert = \"a.pem\", key = \"a.key\" }}] }}\n",
                listener("mismatch", 1, "{ certificates = [{ cert = \"a.pem\", key = \"b.key\" }] }"),
                listener("empty", 2, "{ certificates = [{ cert = \"empty.pem\", key = \"a.key\" }] }"),
                listener("missing", 3, "{ certificates = [{ cert = \"a.pem\", key = \"nope.key\" }] }"),
                listener("none", 4, "{ certificates = [] }"),
                listener("alpn", 5, "{ certificates = [{ cert = \"a.pem\", key = \"a.key\" }], alpn = [\"spdy/3\"] }"),
                listener("version", 6, "{ certificates = [{ cert = \"a.pem\", key = \"a.key\" }], min_version = \"1.1\" }"),
            ),
        );
        let all = errors(&diags);
        let text = std::fs::read_to_string(dir.path().join("geolb.toml")).expect("read");
        let line_of = |needle: &str| {
            text.lines()
                .position(|l| l.contains(needle))
                .map(|i| i + 1)
                .expect("in the config")
        };
        let find = |s: &str| {
            diags
                .iter()
                .find(|d| d.to_string().contains(s))
                .unwrap_or_else(|| panic!("{s}: {all:?}"))
        };
        let d = find("listeners.mismatch.tls: the key");
        assert!(
            d.is_error() && d.to_string().contains("does not belong"),
            "{d}"
        );
        assert_eq!(d.line, line_of("b.key"));
        assert!(find("listeners.empty.tls")
            .to_string()
            .contains("no certificate in the file"));
        let d = find("listeners.missing.tls: cannot read");
        assert_eq!(d.line, line_of("nope.key"));
        find("listeners.none.tls.certificates: at least one certificate");
        find("alpn \"spdy/3\"");
        find("min_version \"1.1\"");
        find("listeners.t: routes, forwarded_for, request_id, tls and http1_engine need mode = \"http\"");
        find("groups.p.protocol \"spdy\"");
        let d = find("groups.c.tls: cannot read");
        assert_eq!(d.line, line_of("missing-ca.pem"));
        let w = find("groups.v.tls: verify = false");
        assert!(!w.is_error(), "{w}");
        // Only the unverified group compiles among those with TLS mistakes.
        assert!(plan.group("v").is_some_and(|g| g
            .transport
            .tls
            .as_ref()
            .is_some_and(|t| !t.verify)));
        assert!(plan.group("p").is_none() && plan.group("c").is_none());
        assert!(plan.listeners.is_empty(), "{:?}", plan.listeners);
    }
}

//! Compiles a validated [`Config`] and its zones into an immutable
//! [`Snapshot`]: the only structure the query path reads.
//!
//! Everything the answer path needs is decided and encoded here, once:
//! names are lower-cased wire-format keys in a compact table (`names`),
//! empty non-terminals exist as nodes (so NODATA vs NXDOMAIN and the closest
//! encloser fall out of one walk down the name), delegation points are
//! flagged, and every record is pre-encoded as TYPE/CLASS/TTL/RDLENGTH/RDATA
//! ready to be copied.

use std::sync::Arc;
use std::time::SystemTime;

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use ipnet::IpNet;
use rustc_hash::FxHashMap;

use crate::config::Config;
use crate::diag::{Diagnostic, LoadError};
use crate::geo::{Db, FileStamp, GeoDb};
use crate::health::{HealthState, Member};
use crate::policy::{EndpointHealth, HealthView, RegionLoad, Service, Step, Topology, VantageRtt};
use crate::wire::{self, MAX_LABELS};
use crate::zone::{self, ZoneData};

/// A name or record in wire format.
type Wire = Box<[u8]>;

pub mod capacity;
pub mod counters;
pub mod guard;
pub mod names;
pub mod resolvers;
pub mod source;
pub mod steering;
pub mod tier;

pub use source::Source;
pub use steering::ZoneService;

use names::{Names, NodeBuild, SetBuild};
pub use names::{NodeRef, SetRef};

/// A served zone, compiled.
#[derive(Debug)]
pub struct Zone {
    pub origin: Name,
    /// Lower-cased wire-format apex name.
    pub apex: Box<[u8]>,
    /// Labels in the apex name, counting the root.
    pub apex_labels: usize,
    pub nodes: Names,
    /// The apex owner name as written (SOA and negative answers' owner).
    pub apex_owner: Box<[u8]>,
    /// Node keys in canonical order (zone transfers walk this).
    pub order: Vec<Box<[u8]>>,
    pub has_cuts: bool,
    pub has_wildcards: bool,
    /// The SOA record, encoded, with its own TTL.
    pub soa: Box<[u8]>,
    /// The SOA record with TTL = min(SOA TTL, MINIMUM) for negative answers
    /// (RFC 2308 §3).
    pub neg_soa: Box<[u8]>,
    /// `neg_soa` pre-compressed against the apex (every negative answer).
    pub neg_soa_c: Option<wire::ApexSoa>,
    pub allow_transfer: Vec<IpNet>,
    pub data: ZoneData,
    /// Dynamic names answered by a steering chain.
    pub services: Vec<Service>,
}

impl Zone {
    pub fn serial(&self) -> u32 {
        self.data.serial().unwrap_or(0)
    }
}

/// Served zones, indexed by apex.
#[derive(Debug, Default)]
pub struct ZoneTable {
    index: FxHashMap<Box<[u8]>, usize>,
    pub zones: Vec<Zone>,
}

impl ZoneTable {
    /// The most specific zone containing the name whose labels start at
    /// `offsets[..labels]` in `name`.
    pub fn find(&self, name: &[u8], offsets: &[u8], labels: usize) -> Option<&Zone> {
        for &off in offsets.iter().take(labels) {
            if let Some(&i) = self.index.get(&name[off as usize..]) {
                return self.zones.get(i);
            }
        }
        None
    }
    /// Like [`find`](Self::find), with the zone's index.
    pub fn find_idx(&self, name: &[u8], offsets: &[u8], labels: usize) -> Option<(usize, &Zone)> {
        for &off in offsets.iter().take(labels) {
            if let Some(&i) = self.index.get(&name[off as usize..]) {
                return self.zones.get(i).map(|z| (i, z));
            }
        }
        None
    }

    pub fn find_name(&self, name: &[u8]) -> Option<&Zone> {
        let mut offs = [0u8; MAX_LABELS];
        let n = wire::label_offsets(name, &mut offs);
        self.find(name, &offs, n)
    }
}

/// Everything the query path reads, immutable; replaced whole on reload.
///
/// Cloning is cheap (shared parts are `Arc`s): a GeoIP database swap or a
/// health change makes a new snapshot that shares the rest, so the query
/// path always sees one consistent set behind one `ArcSwap`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub config: Arc<Config>,
    pub zones: Arc<ZoneTable>,
    pub topology: Arc<Topology>,
    /// The topology's endpoints as the health service watches them.
    pub members: Arc<Vec<Member>>,
    pub geo: Arc<GeoDb>,
    /// Health mapped onto the topology's endpoints; `health.epoch` is the
    /// health service's epoch it was made from. Set with
    /// [`set_health`](Snapshot::set_health), which keeps `nsid` in step.
    pub health: Arc<HealthView>,
    /// Query and answer counters (see `metrics`).
    pub counters: Arc<counters::Counters>,
    /// Resolver telemetry for drills (shared by every snapshot), and the
    /// tags of this snapshot's services and regions in it.
    pub resolvers: Arc<resolvers::Tracker>,
    pub resolver_tags: Arc<resolvers::Tags>,
    /// Geo decisions compiled per address range (see `geo::index`).
    pub geo_index: Option<Arc<CompiledGeo>>,
    /// The regional tier as configured (every region's listeners and groups).
    pub tier: Arc<crate::tier::plan::Plan>,
    /// Pool endpoints whose health also needs enough healthy tier backends.
    pub tier_gates: Arc<Vec<tier::TierGate>>,
    pub udp_payload: u16,
    /// This server's name (`server.nsid`, the host name for `""`).
    pub node_name: Option<Arc<str>>,
    /// The NSID option's data (RFC 5001): the name and, with
    /// `server.nsid_epoch`, the health epoch of this snapshot — built once
    /// per health change, so answering it costs nothing.
    pub nsid: Option<Box<[u8]>>,
    /// Response rate limiting and DNS cookies (`[rrl]`, `[cookies]`).
    pub guard: Arc<crate::guard::Guard>,
    /// `[dnstap]` as checked.
    pub dnstap_plan: Option<Arc<crate::dnstap::writer::TapPlan>>,
    /// The running dnstap log, attached by the server (startup, reload)
    /// with [`crate::dnstap::writer::renew`]: the answer path's hook.
    pub dnstap: Option<Arc<crate::dnstap::writer::Tap>>,
}

impl Snapshot {
    /// This snapshot with `state`'s health, unless it already has that
    /// epoch or a newer one (subscribers may hear of epochs out of order).
    pub fn with_health(&self, state: &HealthState) -> Option<Snapshot> {
        if state.epoch.seq <= self.health.epoch.seq {
            return None;
        }
        let mut next = self.clone();
        let mut view = health_view(&self.topology, &self.tier_gates, state, Some(&self.health));
        // New load samples move the capacity shares at once.
        let now = crate::health::unix(SystemTime::now());
        if let Some(shares) = capacity::advance(&self.zones, &view, now) {
            view.shares = shares;
        }
        next.set_health(view);
        Some(next)
    }

    /// Replaces the health view, and the NSID that names its epoch.
    pub fn set_health(&mut self, view: HealthView) {
        self.health = Arc::new(view);
        self.nsid = nsid(
            self.node_name.as_deref(),
            self.config.server.nsid_epoch,
            &self.health,
        );
    }
}

/// The NSID payload: `name`, then ` epoch=` and the consensus id once a
/// health state has been mapped (`seq` > 0) and `with_epoch` is on.
fn nsid(name: Option<&str>, with_epoch: bool, health: &HealthView) -> Option<Box<[u8]>> {
    let name = name?;
    let mut v = name.as_bytes().to_vec();
    if with_epoch && health.epoch.seq > 0 {
        if !v.is_empty() {
            v.push(b' ');
        }
        v.extend_from_slice(b"epoch=");
        v.extend_from_slice(health.epoch.hex().as_bytes());
    }
    (!v.is_empty()).then(|| v.into_boxed_slice())
}

/// `server.nsid` as served: `""` is the host name (as in Knot), read from
/// the kernel; None (with a warning) when it cannot be read.
pub fn node_name(configured: Option<&str>) -> Option<Arc<str>> {
    match configured? {
        "" => match std::fs::read_to_string("/proc/sys/kernel/hostname") {
            Ok(h) if !h.trim().is_empty() => Some(Arc::from(h.trim())),
            Ok(_) => {
                tracing::warn!("server.nsid = \"\": the host name is empty; no NSID");
                None
            }
            Err(e) => {
                tracing::warn!("server.nsid = \"\": cannot read the host name ({e}); no NSID");
                None
            }
        },
        name => Some(Arc::from(name)),
    }
}

/// Maps health, published by identity, onto a topology's endpoint indices.
/// An endpoint the state does not know (a reload is replacing this
/// topology) keeps its health from `prev`, the view being replaced, and so
/// do the capacity shares (a reload carries them by name instead:
/// [`capacity::carry`]).
pub fn health_view(
    topo: &Topology,
    gates: &[tier::TierGate],
    state: &HealthState,
    prev: Option<&HealthView>,
) -> HealthView {
    let mut endpoints: Vec<EndpointHealth> = topo
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| match state.endpoints.get(&e.identity) {
            Some(h) => *h,
            None => prev.map_or_else(EndpointHealth::default, |p| p.get(i as u32)),
        })
        .collect();
    for g in gates {
        if let Some(h) = endpoints.get_mut(g.endpoint as usize) {
            h.capacity_low = !g.holds(state);
        }
    }
    let rtt = state
        .rtt
        .iter()
        .map(|v| VantageRtt {
            name: v.name.clone(),
            coords: v.coords,
            rtt_ms: topo
                .endpoints
                .iter()
                .map(|e| v.rtt_ms.get(&e.identity).copied().unwrap_or(f64::NAN))
                .collect(),
        })
        .collect();
    let load = topo
        .regions
        .iter()
        .map(|r| {
            state.load.get(&r.name).map(|s| RegionLoad {
                connections: s.connections,
                rps: s.rps,
                reporters: s.reporters.len() as u32,
                at: s.at,
                fraction: r.capacity.and_then(|c| c.fraction(s.connections, s.rps)),
            })
        })
        .collect();
    HealthView {
        endpoints,
        rtt,
        epoch: state.epoch,
        load,
        shares: prev.map(|p| p.shares.clone()).unwrap_or_default(),
    }
}

/// Wire format of a name, case kept.
pub fn name_wire(name: &Name) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        v.push(label.len() as u8);
        v.extend_from_slice(label);
    }
    v.push(0);
    v
}

/// Wire format of a name, lower-cased.
pub fn name_key(name: &Name) -> Box<[u8]> {
    let mut v = name_wire(name);
    // Length bytes are < 64, never ASCII letters: lower-casing the whole
    // buffer only touches label text.
    v.make_ascii_lowercase();
    v.into_boxed_slice()
}

/// Encodes TYPE, CLASS IN, TTL, RDLENGTH and RDATA (names uncompressed).
pub fn encode_rr(rtype: RecordType, ttl: u32, rdata: &RData) -> Result<Box<[u8]>, String> {
    let mut rd = Vec::with_capacity(64);
    {
        let mut enc = BinEncoder::new(&mut rd);
        enc.set_name_encoding(NameEncoding::Uncompressed);
        rdata
            .emit(&mut enc)
            .map_err(|e| format!("cannot encode {rtype} data: {e}"))?;
    }
    if rd.len() > u16::MAX as usize {
        return Err(format!("{rtype} data is larger than 65535 bytes"));
    }
    let mut out = Vec::with_capacity(10 + rd.len());
    out.extend_from_slice(&u16::from(rtype).to_be_bytes());
    out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rd.len() as u16).to_be_bytes());
    out.extend_from_slice(&rd);
    Ok(out.into_boxed_slice())
}

fn targets(rdata: &RData) -> Option<&Name> {
    match rdata {
        RData::CNAME(c) => Some(&c.0),
        RData::NS(ns) => Some(&ns.0),
        RData::MX(mx) => Some(&mx.exchange),
        RData::SRV(srv) => Some(&srv.target),
        _ => None,
    }
}

/// Compiles one validated zone.
pub fn compile_zone(
    data: ZoneData,
    allow_transfer: Vec<IpNet>,
    services: Vec<ZoneService>,
    config_path: &std::path::Path,
) -> Result<Zone, Vec<Diagnostic>> {
    let apex = name_key(&data.origin);
    let apex_labels = data.origin.num_labels() as usize + 1;
    let mut diags = Vec::new();
    let mut nodes: FxHashMap<Wire, (Wire, Vec<SetBuild>)> = FxHashMap::default();
    let mut soa = None;
    let mut neg_soa = None;
    for ((lname, rtype), set) in &data.rrsets {
        let key = name_key(&Name::from(lname.clone()));
        let mut rrs = Vec::with_capacity(set.rdatas.len());
        let mut tg = Vec::new();
        for rd in &set.rdatas {
            match encode_rr(*rtype, set.ttl, rd) {
                Ok(b) => rrs.push(b),
                Err(e) => diags.push(set.loc.error(e)),
            }
            if let Some(t) = targets(rd) {
                tg.push(name_key(t));
            }
            if let RData::SOA(s) = rd {
                soa = encode_rr(*rtype, set.ttl, rd).ok();
                neg_soa = encode_rr(*rtype, set.ttl.min(s.minimum), rd).ok();
            }
        }
        let entry = nodes
            .entry(key)
            .or_insert_with(|| (name_wire(&set.name).into_boxed_slice(), Vec::new()));
        entry.1.push(SetBuild {
            rtype: u16::from(*rtype),
            rrs,
            targets: tg,
        });
    }
    let (Some(soa), Some(neg_soa)) = (soa, neg_soa) else {
        diags.push(Diagnostic::error(
            &data.file,
            0,
            0,
            "zone has no usable SOA",
        ));
        return Err(diags);
    };
    if !diags.is_empty() {
        return Err(diags);
    }
    // Service names exist as nodes, even without static data.
    let mut service_at: FxHashMap<Wire, u16> = FxHashMap::default();
    let mut svcs = Vec::with_capacity(services.len());
    for (i, zs) in services.into_iter().enumerate() {
        let key = name_key(&zs.name);
        let statics: Vec<u16> = nodes
            .get(&key)
            .map_or(Vec::new(), |n| n.1.iter().map(|s| s.rtype).collect());
        let at = |msg: String| Diagnostic::error(config_path, zs.line, 0, msg);
        if zs.service.cname {
            if *key == *apex {
                diags.push(at(format!(
                    "service {}: the zone apex cannot be a CNAME (pools of cname endpoints)",
                    zs.name
                )));
            } else if !statics.is_empty() {
                diags.push(at(format!(
                    "service {} answers with a CNAME, so the zone file cannot have other records at that name",
                    zs.name
                )));
            }
        } else if statics.contains(&wire::TYPE_CNAME) {
            diags.push(at(format!(
                "service {}: the zone file has a CNAME at that name",
                zs.name
            )));
        } else if statics
            .iter()
            .any(|&t| t == wire::TYPE_A || t == wire::TYPE_AAAA)
        {
            diags.push(at(format!(
                "service {}: the zone file has A/AAAA records at that name; the service answers those",
                zs.name
            )));
        }
        nodes
            .entry(key.clone())
            .or_insert_with(|| (name_wire(&zs.name).into_boxed_slice(), Vec::new()));
        service_at.insert(key, i as u16);
        svcs.push(zs.service);
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    // Empty non-terminals: every name between an owner and the apex exists.
    let owners: Vec<(Wire, Wire)> = nodes
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (key, orig) in owners {
        let mut offs = [0u8; MAX_LABELS];
        let n = wire::label_offsets(&key, &mut offs);
        for &off in offs.iter().take(n.saturating_sub(apex_labels)).skip(1) {
            let off = off as usize;
            nodes
                .entry(key[off..].into())
                .or_insert_with(|| (orig[off..].into(), Vec::new()));
        }
    }
    let mut has_cuts = false;
    let mut has_wildcards = false;
    let mut out: FxHashMap<Box<[u8]>, NodeBuild> = FxHashMap::default();
    for (key, (orig, mut sets)) in nodes {
        sets.sort_by_key(|s| s.rtype);
        let cut = *key != *apex && sets.iter().any(|s| s.rtype == wire::TYPE_NS);
        has_cuts |= cut;
        has_wildcards |= key.starts_with(b"\x01*");
        let service = service_at.get(&key).copied();
        out.insert(
            key.clone(),
            NodeBuild {
                key,
                name: orig,
                sets,
                cut,
                service,
            },
        );
    }
    // A service at or below a delegation point would never be answered.
    for (key, &i) in &service_at {
        let mut offs = [0u8; MAX_LABELS];
        let n = wire::label_offsets(key, &mut offs);
        let below_cut = offs
            .iter()
            .take(n.saturating_sub(apex_labels))
            .any(|&o| out.get(&key[o as usize..]).is_some_and(|node| node.cut));
        if below_cut {
            diags.push(Diagnostic::error(
                config_path,
                0,
                0,
                format!(
                    "service {} is at or below a delegation point and would never be answered",
                    svcs[i as usize].name
                ),
            ));
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    let mut order: Vec<(Name, Box<[u8]>)> =
        out.keys().map(|k| (wire_to_name(k), k.clone())).collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let apex_owner = out
        .get(&apex)
        .map_or_else(|| apex.clone(), |n| n.name.clone());
    let neg_soa_c = wire::ApexSoa::new(&apex, &neg_soa);
    let nodes = match Names::build(out.into_values().collect()) {
        Ok(n) => n,
        Err(e) => {
            diags.push(Diagnostic::error(&data.file, 0, 0, e.to_string()));
            return Err(diags);
        }
    };
    Ok(Zone {
        origin: data.origin.clone(),
        apex,
        apex_labels,
        apex_owner,
        nodes,
        order: order.into_iter().map(|(_, k)| k).collect(),
        has_cuts,
        has_wildcards,
        soa,
        neg_soa_c,
        neg_soa,
        allow_transfer,
        data,
        services: svcs,
    })
}

/// Name from an uncompressed wire name (for ordering; never fails on names
/// this module encoded).
fn wire_to_name(w: &[u8]) -> Name {
    let mut labels = Vec::new();
    let mut at = 0;
    while at < w.len() && w[at] != 0 {
        let l = w[at] as usize;
        labels.push(&w[at + 1..at + 1 + l]);
        at += 1 + l;
    }
    Name::from_labels(labels).unwrap_or_else(|_| Name::root())
}

/// Location decisions of every compiled service, per address range.
#[derive(Debug)]
pub struct CompiledGeo {
    pub index: crate::geo::index::GeoIndexes,
    /// Per compiled service slot: its distinct group orders.
    pub decisions: Vec<Vec<Vec<u16>>>,
    /// What it was compiled from (reused while all of it is unchanged): the
    /// City database, the ASN database if it was walked, and the services.
    city: Arc<Db>,
    asn: Option<Arc<Db>>,
    fingerprint: String,
}

impl CompiledGeo {
    /// The group order for service `slot` and the ECS scope, for `ip`.
    #[inline]
    pub fn order(&self, slot: u32, ip: std::net::IpAddr) -> Option<(&[u16], u8)> {
        let hit = self.index.services.get(slot as usize)?.lookup(ip)?;
        let order = self
            .decisions
            .get(slot as usize)?
            .get(hit.decision as usize)?;
        Some((order, hit.scope))
    }

    /// The address range around `ip` that shares service `slot`'s decision.
    pub fn range(
        &self,
        slot: u32,
        ip: std::net::IpAddr,
    ) -> Option<(std::net::IpAddr, std::net::IpAddr)> {
        self.index.services.get(slot as usize)?.range(ip)
    }
}

/// The AS numbers and CIDR blocks the `geo` tables of `svcs` have entries
/// for: the compiled walk cuts the address space at their boundaries.
pub fn geo_keys(svcs: &[&Service]) -> crate::geo::index::Keys {
    let mut keys = crate::geo::index::Keys::default();
    for m in svcs
        .iter()
        .flat_map(|s| s.steps.iter())
        .filter_map(|s| match s {
            Step::Geo(m) => Some(m),
            _ => None,
        })
    {
        keys.asns.extend(m.asn.keys().copied());
        for (p, nets) in &m.cidr_v4 {
            keys.v4.extend(nets.keys().map(|&n| (n, *p)));
        }
        for (p, nets) in &m.cidr_v6 {
            keys.v6.extend(nets.keys().map(|&n| (n, *p)));
        }
    }
    keys
}

/// Compiles (or reuses from `prev`) the location decisions of every service
/// marked compilable, over the City database, the ASN database (when a
/// service has `asn` entries) and the services' CIDR entries. `None` when
/// there is nothing to compile or compiling failed (the answer path then
/// locates per query).
pub fn compile_geo(
    zones: &ZoneTable,
    topo: &Topology,
    geo: &GeoDb,
    prev: Option<&Snapshot>,
) -> Option<Arc<CompiledGeo>> {
    let city = geo.city.as_ref()?;
    let mut svcs: Vec<&Service> = zones
        .zones
        .iter()
        .flat_map(|z| z.services.iter())
        .filter(|s| s.compiled.is_some())
        .collect();
    if svcs.is_empty() {
        return None;
    }
    svcs.sort_by_key(|s| s.compiled);
    let keys = geo_keys(&svcs);
    // Numbers no database can give never match: the ASN walk is skipped.
    let asn = geo.asn.as_ref().filter(|_| !keys.asns.is_empty());
    let mut fingerprint = String::new();
    for s in &svcs {
        fingerprint.push_str(&format!("{}|{:?}|{:?};", s.name, s.groups, s.steps));
    }
    for r in &topo.regions {
        fingerprint.push_str(&format!("{}:{:?};", r.name, r.coords));
    }
    if let Some(p) = prev.and_then(|p| p.geo_index.as_ref()) {
        let same_asn = match (&p.asn, asn) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if Arc::ptr_eq(&p.city, city) && same_asn && p.fingerprint == fingerprint {
            return Some(p.clone());
        }
    }
    let started = std::time::Instant::now();
    let mut decisions: Vec<Vec<Vec<u16>>> = vec![Vec::new(); svcs.len()];
    let mut interned: Vec<FxHashMap<Vec<u16>, u32>> = vec![FxHashMap::default(); svcs.len()];
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::geo::index::build(geo, svcs.len(), &keys, |loc, addr| {
            svcs.iter()
                .enumerate()
                .map(|(slot, s)| {
                    let order = crate::policy::location_order(topo, s, addr, loc);
                    let next = decisions[slot].len() as u32;
                    *interned[slot].entry(order.clone()).or_insert_with(|| {
                        decisions[slot].push(order);
                        next
                    })
                })
                .collect()
        })
    }));
    match built {
        Ok(Ok(index)) => {
            // The walk paged the whole files in; the answer path no longer
            // needs them for these services.
            city.release_pages();
            if let Some(a) = asn {
                a.release_pages();
            }
            tracing::info!(
                networks = index.networks,
                asn_networks = index.asn_networks,
                records = index.records,
                locations = index.locations,
                inputs = index.inputs,
                ranges = index.services.iter().map(|i| i.ranges()).sum::<usize>(),
                uniform_16s = index
                    .services
                    .iter()
                    .map(|i| i.uniform_16s())
                    .sum::<usize>(),
                decisions = decisions.iter().map(|d| d.len()).sum::<usize>(),
                services = svcs.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "geo decisions compiled"
            );
            Some(Arc::new(CompiledGeo {
                index,
                decisions,
                city: city.clone(),
                asn: asn.cloned(),
                fingerprint,
            }))
        }
        Ok(Err(e)) => {
            tracing::warn!("cannot compile geo decisions ({e}); locating per query instead");
            None
        }
        Err(_) => {
            tracing::warn!("compiling geo decisions failed; locating per query instead");
            None
        }
    }
}

/// Opens the configured GeoIP databases, reusing `prev`'s readers for files
/// that have not changed on disk.
pub fn open_geo(config: &Config, prev: Option<&GeoDb>) -> Result<GeoDb, Vec<Diagnostic>> {
    let Some(g) = &config.geoip else {
        return Ok(GeoDb::default());
    };
    let mut diags = Vec::new();
    let mut open = |path: &std::path::Path,
                    span: std::ops::Range<usize>,
                    old: Option<&Arc<Db>>,
                    opener: fn(&std::path::Path) -> Result<Db, crate::geo::GeoError>|
     -> Option<Arc<Db>> {
        if let Some(old) = old {
            if old.path == path && old.stamp.is_some() && old.stamp == FileStamp::of(path) {
                return Some(old.clone());
            }
        }
        match opener(path) {
            Ok(db) => Some(Arc::new(db)),
            Err(e) => {
                let (l, c) = crate::diag::line_col(&config.text, span.start);
                diags.push(Diagnostic::error(&config.path, l, c, format!("geoip: {e}")));
                None
            }
        }
    };
    let city = open(
        g.city.get_ref(),
        g.city.span(),
        prev.and_then(|p| p.city.as_ref()),
        Db::open,
    );
    let asn = g.asn.as_ref().and_then(|a| {
        let old = prev.and_then(|p| p.asn.as_ref());
        open(a.get_ref(), a.span(), old, Db::open_asn)
    });
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(GeoDb { city, asn })
}

/// Loads every zone of `config` and compiles a snapshot, reusing `prev`'s
/// GeoIP readers, compiled geo decisions and counters where unchanged.
/// Returns warnings alongside; any error fails the whole load.
pub fn build(
    config: Config,
    generation: u64,
    prev: Option<&Snapshot>,
) -> Result<(Snapshot, Vec<Diagnostic>), LoadError> {
    build_with(config, generation, prev, true)
}

/// Like [`build`]; without `compile_geo` the geo decisions are not
/// compiled (`geo_index` is `None`: answers locate per query), for tools
/// that walk the databases themselves (`geolb simulate`).
pub fn build_with(
    config: Config,
    generation: u64,
    prev: Option<&Snapshot>,
    compile_geo: bool,
) -> Result<(Snapshot, Vec<Diagnostic>), LoadError> {
    let mut diags = Vec::new();
    let steering::Compiled {
        topology,
        zones: mut services,
        members,
        monitors,
    } = steering::compile(&config, &mut diags);
    let mut tier = tier::compile(&config, &monitors, &mut diags);
    tier.capacity = topology
        .regions
        .iter()
        .filter_map(|r| r.capacity.map(|c| (r.name.clone(), c)))
        .collect();
    let tier_gates = tier::gates(&config, &topology, &tier, &mut diags);
    let mut table = ZoneTable::default();
    for (zi, spec) in config.zones.iter().enumerate() {
        let mut zd = Vec::new();
        let data = zone::load_zone(&spec.origin, &spec.file, &mut zd);
        let failed = zd.iter().any(Diagnostic::is_error);
        diags.extend(zd);
        if failed {
            continue;
        }
        let svcs = std::mem::take(&mut services[zi]);
        match compile_zone(data, spec.allow_transfer.clone(), svcs, &config.path) {
            Ok(z) => {
                table.index.insert(z.apex.clone(), table.zones.len());
                table.zones.push(z);
            }
            Err(d) => diags.extend(d),
        }
    }
    let geo = match open_geo(&config, prev.map(|p| &*p.geo)) {
        Ok(g) => g,
        Err(d) => {
            diags.extend(d);
            GeoDb::default()
        }
    };
    let uses_geo = table
        .zones
        .iter()
        .flat_map(|z| z.services.iter())
        .any(Service::uses_location);
    if uses_geo && config.geoip.is_none() {
        diags.push(Diagnostic::warning(
            &config.path,
            0,
            0,
            "services use geo, nearest or latency steps but no [geoip] database is configured: only CIDR and ASN-free rules can match, everyone else gets the defaults",
        ));
    }
    let dnstap_plan =
        config
            .dnstap
            .as_ref()
            .and_then(|c| match crate::dnstap::writer::TapPlan::new(c) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    diags.push(Diagnostic::error(&config.path, 0, 0, e));
                    None
                }
            });
    if diags.iter().any(Diagnostic::is_error) {
        return Err(LoadError(diags));
    }
    // All up: a running server replaces this with the health service's
    // view (which carries state across reloads by endpoint identity).
    let mut health = HealthView::all_up(topology.endpoints.len());
    health.shares = capacity::assign_slots(&mut table);
    // Counter slots: one per UDP worker thread, one for TCP.
    let workers = match config.server.udp_workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let slots = workers * config.server.dns.len().max(1) + 1;
    let mut services = Vec::new();
    let mut compiled = 0u32;
    for z in table.zones.iter_mut() {
        for s in z.services.iter_mut() {
            s.metric_id = services.len();
            services.push(s.name.clone());
            if geo.city.is_some() && s.compilable() {
                s.compiled = Some(compiled);
                compiled += 1;
            }
        }
    }
    let geo_index = if compile_geo {
        self::compile_geo(&table, &topology, &geo, prev)
    } else {
        None
    };
    let tracker = prev.map_or_else(Default::default, |p| p.resolvers.clone());
    let resolver_tags = tracker.tags(
        services.iter().map(String::as_str),
        topology.regions.iter().map(|r| r.name.as_str()),
    );
    let retained = prev.map_or_else(Default::default, |p| p.counters.retained());
    let counters = counters::Counters::new(
        slots,
        table.zones.iter().map(|z| z.origin.to_string()).collect(),
        services,
        topology.regions.iter().map(|r| r.name.clone()).collect(),
        retained,
    );
    let guard = self::guard::compile(&config, prev.map(|p| &*p.guard), slots, &mut diags);
    let name = node_name(config.server.nsid.as_deref());
    let snap = Snapshot {
        guard: Arc::new(guard),
        dnstap_plan,
        dnstap: None,
        geo_index,
        counters: Arc::new(counters),
        resolvers: tracker,
        resolver_tags: Arc::new(resolver_tags),
        generation,
        loaded_at: SystemTime::now(),
        udp_payload: config.server.udp_payload,
        nsid: nsid(name.as_deref(), config.server.nsid_epoch, &health),
        node_name: name,
        config: Arc::new(config),
        zones: Arc::new(table),
        topology: Arc::new(topology),
        members: Arc::new(members),
        geo: Arc::new(geo),
        health: Arc::new(health),
        tier: Arc::new(tier),
        tier_gates: Arc::new(tier_gates),
    };
    Ok((snap, diags))
}

/// Loads a config file (with command-line overrides) and builds a
/// snapshot from it: what startup, `check` and every reload run. Every
/// problem of every part is reported together — the config's own sections,
/// zone files, services and GeoIP — not only the first part's.
pub fn load(
    path: &std::path::Path,
    overrides: &crate::config::Overrides,
    generation: u64,
    prev: Option<&Snapshot>,
) -> Result<(Snapshot, Vec<Diagnostic>), LoadError> {
    load_with(path, overrides, generation, prev, true)
}

/// Like [`load`], compiling geo decisions only with `compile_geo` (see
/// [`build_with`]).
pub fn load_with(
    path: &std::path::Path,
    overrides: &crate::config::Overrides,
    generation: u64,
    prev: Option<&Snapshot>,
    compile_geo: bool,
) -> Result<(Snapshot, Vec<Diagnostic>), LoadError> {
    let (config, mut diags) = Config::read_with(path, overrides)?;
    let config_failed = diags.iter().any(Diagnostic::is_error);
    match build_with(config, generation, prev, compile_geo) {
        Ok((snap, warnings)) => {
            diags.extend(warnings);
            if config_failed {
                Err(LoadError(diags))
            } else {
                Ok((snap, diags))
            }
        }
        Err(LoadError(more)) => {
            diags.extend(more);
            Err(LoadError(diags))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AdminState;

    #[test]
    fn a_snapshot_takes_newer_health_epochs_only_and_keeps_unknown_endpoints_as_they_were() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("z.zone"),
            "$ORIGIN example.com.\n@ 60 SOA ns h 1 2 3 4 5\n@ 60 NS ns\nns 60 A 192.0.2.1\n",
        )
        .expect("zone");
        let cfg = "[server]\nnsid = \"dns1\"\n[regions.r]\nlocation = [0.0, 0.0]\n[pools.p]\nregion = \"r\"\n\
                   endpoints = [{ address = \"10.0.0.1\" }, { address = \"10.0.0.2\" }]\n\
                   [zones.\"example.com\"]\nfile = \"z.zone\"\n";
        let c = Config::parse(&dir.path().join("g.toml"), cfg).expect("config");
        let (snap, _) = build(c, 1, None).expect("snapshot");
        assert_eq!(snap.nsid.as_deref(), Some(&b"dns1"[..]), "no health yet");
        let state = |seq, drained: &[&str]| HealthState {
            epoch: crate::policy::Epoch {
                seq,
                id: 0x1a2b_3c4d_5e6f_7788 + seq,
                ..Default::default()
            },
            endpoints: drained
                .iter()
                .map(|id| {
                    (
                        id.to_string(),
                        EndpointHealth {
                            checked_up: true,
                            admin: AdminState::Drain,
                            capacity_low: false,
                            partial: 0,
                        },
                    )
                })
                .collect(),
            rtt: Vec::new(),
            load: Default::default(),
        };
        let s5 = snap.with_health(&state(5, &["p/10.0.0.1"])).expect("newer");
        assert!(!s5.health.up(0), "known and drained");
        assert!(s5.health.up(1), "unknown to the state: as it was (up)");
        assert_eq!(s5.health.epoch.seq, 5);
        assert!(
            s5.with_health(&state(4, &[])).is_none(),
            "older epoch ignored"
        );
        assert!(
            s5.with_health(&state(5, &[])).is_none(),
            "same epoch ignored"
        );
        // p/10.0.0.1 is unknown to epoch 6: it keeps its drained state.
        let s6 = s5.with_health(&state(6, &["p/10.0.0.2"])).expect("newer");
        assert!(!s6.health.up(0) && !s6.health.up(1));
        // The NSID names the epoch each snapshot answers under.
        assert_eq!(
            s5.nsid.as_deref(),
            Some(&b"dns1 epoch=1a2b3c4d5e6f778d"[..])
        );
        assert_eq!(
            s6.nsid.as_deref(),
            Some(&b"dns1 epoch=1a2b3c4d5e6f778e"[..])
        );
    }

    #[test]
    fn nsid_is_the_name_alone_without_the_epoch_or_before_one_and_empty_means_the_host_name() {
        let mut view = HealthView::default();
        assert_eq!(
            nsid(Some("dns1"), true, &view).as_deref(),
            Some(&b"dns1"[..])
        );
        view.epoch.seq = 3;
        view.epoch.id = 0xff;
        assert_eq!(
            nsid(Some("dns1"), false, &view).as_deref(),
            Some(&b"dns1"[..])
        );
        assert_eq!(
            nsid(Some("dns1"), true, &view).as_deref(),
            Some(&b"dns1 epoch=00000000000000ff"[..])
        );
        assert_eq!(nsid(None, true, &view), None, "no NSID unless configured");
        let host = node_name(Some("")).expect("the host name");
        assert!(!host.is_empty() && !host.contains(char::is_whitespace));
        assert_eq!(node_name(Some("ns1")).as_deref(), Some("ns1"));
        assert_eq!(node_name(None), None);
    }
}

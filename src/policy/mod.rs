//! Steering: regions, pools and endpoints, and the chain of small steps that
//! turns (candidates, client, health) into the endpoints a service answers.
//!
//! Every step is a pure function of its inputs; when a [`Trace`] is passed it
//! also records why each candidate was kept or dropped, so `explain` runs the
//! very code that answers queries. On the query path no trace is kept and
//! all working memory lives in a reusable [`Scratch`]: deciding allocates
//! nothing.

use std::net::IpAddr;
use std::ops::Range;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::config::{AllDown, WeightedMode};
use crate::geo::{distance_km, Location};

pub mod compile;
pub use compile::compile;

/// A place where pools live.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub coords: (f64, f64),
}

/// What an endpoint hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Addr(IpAddr),
    /// A name (CNAME target): display text and lower-cased wire format.
    Cname(String, Box<[u8]>),
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub pool: u16,
    pub target: Target,
    pub weight: u32,
    /// Where to health-check, when not the handed-out address.
    pub check: Option<String>,
    /// The pool's monitor, if any.
    pub monitor: Option<u16>,
    /// The address:port the monitor checks.
    pub check_addr: Option<std::net::SocketAddr>,
    /// Stable identity ("pool/address"): health and admin state follow it
    /// across reloads.
    pub identity: String,
    /// Hash of the identity, for rendezvous hashing.
    pub hash: u64,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub region: u16,
    pub endpoints: Range<u32>,
    pub min_healthy: u32,
}

/// Regions, pools and endpoints shared by every service.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub regions: Vec<Region>,
    pub pools: Vec<Pool>,
    pub endpoints: Vec<Endpoint>,
    pub monitors: Vec<crate::health::Monitor>,
}

/// A candidate group of a service: a region (the service's pools there) or
/// one pool named directly.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub region: u16,
    pub pools: Vec<u16>,
}

/// Geo map, compiled: each entry points at an ordered group list.
#[derive(Debug, Clone, Default)]
pub struct GeoMap {
    pub lists: Vec<Vec<u16>>,
    pub default: Option<usize>,
    pub continent: FxHashMap<[u8; 2], usize>,
    pub country: FxHashMap<[u8; 2], usize>,
    /// Keyed by country + subdivision code ("US" + "CA\0").
    pub subdivision: FxHashMap<[u8; 5], usize>,
    pub asn: FxHashMap<u32, usize>,
    /// (prefix length, masked network → list), longest prefix first.
    pub cidr_v4: Vec<(u8, FxHashMap<u32, usize>)>,
    pub cidr_v6: Vec<(u8, FxHashMap<u128, usize>)>,
}

impl GeoMap {
    /// How much of the client address a lookup that ended with `how`
    /// depended on: every stage tried up to the match counts (a CIDR table
    /// is only as coarse as its longest entry; the ASN and City databases
    /// by the network that matched).
    pub fn scope(&self, addr: IpAddr, how: GeoMatch, loc: &Location) -> u8 {
        let cidr = match addr {
            IpAddr::V4(_) => self.cidr_v4.first().map_or(0, |(p, _)| *p),
            IpAddr::V6(_) => self.cidr_v6.first().map_or(0, |(p, _)| *p),
        };
        let asn = if self.asn.is_empty() {
            0
        } else {
            loc.asn_prefix
        };
        match how {
            GeoMatch::Cidr(_) => cidr,
            GeoMatch::Asn(_) => cidr.max(asn),
            _ => cidr.max(asn).max(loc.prefix),
        }
    }
}

/// Why a geo list was chosen, and how much of the address decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoMatch {
    Cidr(u8),
    Asn(u32),
    Subdivision,
    Country,
    Continent,
    Default,
}

fn mask_v4(ip: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        ip & (u32::MAX << (32 - prefix as u32))
    }
}
fn mask_v6(ip: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        ip & (u128::MAX << (128 - prefix as u32))
    }
}

impl GeoMap {
    /// The most specific entry for this client: CIDR, ASN, subdivision,
    /// country, continent, then default.
    pub fn lookup(&self, addr: IpAddr, loc: &Location) -> Option<(usize, GeoMatch)> {
        match addr {
            IpAddr::V4(v4) => {
                let ip = u32::from(v4);
                for (p, m) in &self.cidr_v4 {
                    if let Some(&i) = m.get(&mask_v4(ip, *p)) {
                        return Some((i, GeoMatch::Cidr(*p)));
                    }
                }
            }
            IpAddr::V6(v6) => {
                let ip = u128::from(v6);
                for (p, m) in &self.cidr_v6 {
                    if let Some(&i) = m.get(&mask_v6(ip, *p)) {
                        return Some((i, GeoMatch::Cidr(*p)));
                    }
                }
            }
        }
        if loc.asn != 0 {
            if let Some(&i) = self.asn.get(&loc.asn) {
                return Some((i, GeoMatch::Asn(loc.asn)));
            }
        }
        if loc.subdivision[0] != 0 {
            let mut k = [0u8; 5];
            k[..2].copy_from_slice(&loc.country);
            k[2..].copy_from_slice(&loc.subdivision);
            if let Some(&i) = self.subdivision.get(&k) {
                return Some((i, GeoMatch::Subdivision));
            }
        }
        if loc.country[0] != 0 {
            if let Some(&i) = self.country.get(&loc.country) {
                return Some((i, GeoMatch::Country));
            }
        }
        if loc.continent[0] != 0 {
            if let Some(&i) = self.continent.get(&loc.continent) {
                return Some((i, GeoMatch::Continent));
            }
        }
        self.default.map(|i| (i, GeoMatch::Default))
    }
}

/// Latency table, compiled: rows of per-group milliseconds (NaN: unknown).
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Order by measured RTT from the vantage nearest the client first.
    pub probes: bool,
    pub rows: Vec<Vec<f64>>,
    pub default: Option<usize>,
    pub continent: FxHashMap<[u8; 2], usize>,
    pub country: FxHashMap<[u8; 2], usize>,
}

impl Latency {
    fn row(&self, loc: &Location) -> Option<(usize, &'static str)> {
        if let Some(&r) = self.country.get(&loc.country) {
            return Some((r, "country"));
        }
        if let Some(&r) = self.continent.get(&loc.continent) {
            return Some((r, "continent"));
        }
        self.default.map(|r| (r, "default"))
    }
}

/// One step of a chain.
#[derive(Debug, Clone)]
pub enum Step {
    Healthy,
    Geo(GeoMap),
    Nearest {
        limit: Option<usize>,
        bias: Vec<f64>,
    },
    Latency(Latency),
    Failover,
    Weighted {
        mode: WeightedMode,
        count: usize,
        prefix_v4: u8,
        prefix_v6: u8,
    },
    FirstN(usize),
}

impl Step {
    /// Steps that only reorder or choose groups by the client's location.
    pub fn is_location(&self) -> bool {
        matches!(self, Step::Geo(_) | Step::Nearest { .. } | Step::Latency(_))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Step::Healthy => "healthy",
            Step::Geo(_) => "geo",
            Step::Nearest { .. } => "nearest",
            Step::Latency(_) => "latency",
            Step::Failover => "failover",
            Step::Weighted { .. } => "weighted",
            Step::FirstN(_) => "first_n",
        }
    }
}

/// A dynamic name and how it is answered.
#[derive(Debug, Clone)]
pub struct Service {
    /// Owner name (display).
    pub name: String,
    pub ttl: u32,
    pub ecs: bool,
    pub groups: Vec<Group>,
    /// Candidate order before any step runs.
    pub initial: Vec<u16>,
    pub steps: Vec<Step>,
    pub all_down: AllDown,
    /// The fallback CNAME of `all_down`, lower-cased wire format.
    pub all_down_cname: Option<Box<[u8]>>,
    /// Endpoints are CNAME targets rather than addresses.
    pub cname: bool,
    /// TTL while any candidate endpoint is down (health-aware TTL).
    pub ttl_when_down: Option<u32>,
    /// Index of this service in the snapshot's answer counters.
    pub metric_id: usize,
    /// Slot of this service in the compiled geo decisions, if compiled.
    pub compiled: Option<u32>,
}

/// Admin override of an endpoint's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    #[default]
    None,
    Drain,
    ForceUp,
    ForceDown,
}

/// What is known of one endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointHealth {
    /// Result of health checking (true until a monitor says otherwise).
    pub checked_up: bool,
    pub admin: AdminState,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            checked_up: true,
            admin: AdminState::None,
        }
    }
}

impl EndpointHealth {
    pub fn up(&self) -> bool {
        match self.admin {
            AdminState::ForceUp => true,
            AdminState::Drain | AdminState::ForceDown => false,
            AdminState::None => self.checked_up,
        }
    }
    pub fn reason(&self) -> &'static str {
        match (self.admin, self.checked_up) {
            (AdminState::ForceUp, _) => "forced up by an operator",
            (AdminState::Drain, _) => "drained by an operator",
            (AdminState::ForceDown, _) => "forced down by an operator",
            (AdminState::None, true) => "up",
            (AdminState::None, false) => "down (health checks)",
        }
    }
}

/// Smoothed round-trip times measured from one vantage.
#[derive(Debug, Clone, Default)]
pub struct VantageRtt {
    pub name: String,
    pub coords: Option<(f64, f64)>,
    /// Per endpoint (topology index), milliseconds; NaN when unknown.
    pub rtt_ms: Vec<f64>,
}

impl PartialEq for VantageRtt {
    /// Bitwise on the RTTs, so unknown (NaN) equals unknown and an unchanged
    /// view is not republished.
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name
            && self.coords == o.coords
            && self.rtt_ms.len() == o.rtt_ms.len()
            && self
                .rtt_ms
                .iter()
                .zip(&o.rtt_ms)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

/// Health of every endpoint of a topology, indexed like its endpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthView {
    pub endpoints: Vec<EndpointHealth>,
    /// Measured RTTs per vantage (this node first), for `latency`.
    pub rtt: Vec<VantageRtt>,
}

impl HealthView {
    pub fn all_up(n: usize) -> HealthView {
        HealthView {
            endpoints: vec![EndpointHealth::default(); n],
            rtt: Vec::new(),
        }
    }
    pub fn up(&self, ep: u32) -> bool {
        self.endpoints.get(ep as usize).is_none_or(|h| h.up())
    }
    pub fn get(&self, ep: u32) -> EndpointHealth {
        self.endpoints.get(ep as usize).copied().unwrap_or_default()
    }
}

/// Which endpoints a query can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    /// CNAME services, ANY, explain without a type.
    Any,
}

impl Family {
    /// Whether an address of this family may be answered.
    pub fn admits_addr(self, a: IpAddr) -> bool {
        match self {
            Family::Any => true,
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
        }
    }
    fn admits(self, t: &Target) -> bool {
        match (self, t) {
            (_, Target::Cname(..)) | (Family::Any, _) => true,
            (Family::V4, Target::Addr(a)) => a.is_ipv4(),
            (Family::V6, Target::Addr(a)) => a.is_ipv6(),
        }
    }
}

/// The client a decision is for.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The address that locates the client (ECS address or query source).
    pub addr: IpAddr,
    pub loc: Location,
}

/// Reusable working memory for [`decide`].
#[derive(Debug)]
pub struct Scratch {
    groups: Vec<u16>,
    keyed: Vec<(f64, u16)>,
    cand: Vec<(f64, u32)>,
    /// The decided endpoints (indexes into the topology).
    pub out: Vec<u32>,
    rng: fastrand::Rng,
    /// This worker's counter slot (TCP uses the last one).
    pub slot: usize,
    /// Evaluate the location steps against the database for every query
    /// instead of reading the compiled range table: the reference path the
    /// compiled one is checked against (tests, benchmarks). The ECS scope is
    /// the same either way: the widest block around the client that the
    /// compiled table shows gets this decision.
    pub reference: bool,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            groups: Vec::with_capacity(64),
            keyed: Vec::with_capacity(64),
            cand: Vec::with_capacity(256),
            out: Vec::with_capacity(64),
            rng: fastrand::Rng::new(),
            slot: usize::MAX,
            reference: false,
        }
    }
}

impl Scratch {
    /// The scratch of UDP worker `slot`.
    pub fn for_slot(slot: usize) -> Scratch {
        Scratch {
            slot,
            ..Scratch::default()
        }
    }

    /// A scratch with a fixed random seed (tests, benchmarks).
    pub fn seeded(seed: u64) -> Scratch {
        Scratch {
            rng: fastrand::Rng::with_seed(seed),
            ..Scratch::default()
        }
    }
}

/// A candidate dropped by a step, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub candidate: String,
    pub why: String,
}

/// What one step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepTrace {
    pub step: String,
    pub detail: String,
    pub kept: Vec<String>,
    pub dropped: Vec<Dropped>,
}

/// The record of a decision, for `explain`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Trace {
    pub steps: Vec<StepTrace>,
    pub notes: Vec<String>,
}

/// What a decision answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The endpoints in `Scratch::out`.
    Endpoints,
    /// No records of the asked family (NODATA).
    Nodata,
    /// Every candidate is down: the configured fallback addresses.
    FallbackAddresses,
    /// Every candidate is down: the configured fallback CNAME.
    FallbackCname,
}

/// A decision: the answer and the client-address prefix it depended on
/// (the ECS scope before clamping to the source prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub answer: Answer,
    pub scope: u8,
    /// The part of `scope` owed to steps other than the location steps
    /// (sticky weighting): what still holds when the location decision
    /// comes from the compiled range table, which has its own scope.
    pub scope_without_location: u8,
}

impl Decision {
    fn of(answer: Answer, scopes: Scopes) -> Decision {
        Decision {
            answer,
            scope: scopes.all,
            scope_without_location: scopes.without_location,
        }
    }
}

/// The scopes one run of the chain depended on.
#[derive(Clone, Copy)]
struct Scopes {
    all: u8,
    without_location: u8,
}

struct Run<'a> {
    topo: &'a Topology,
    svc: &'a Service,
    client: &'a Client,
    family: Family,
    health: &'a HealthView,
    ignore_health: bool,
    /// Group order already decided from the client's location (compiled
    /// geo): location steps are then skipped.
    pre: Option<&'a [u16]>,
}

impl Run<'_> {
    fn alive(&self, ep: u32) -> bool {
        self.ignore_health || self.health.up(ep)
    }
    fn admits(&self, ep: u32) -> bool {
        self.topo
            .endpoints
            .get(ep as usize)
            .is_some_and(|e| self.family.admits(&e.target))
    }
    fn group_eps(&self, g: u16) -> impl Iterator<Item = u32> + '_ {
        self.svc.groups[g as usize]
            .pools
            .iter()
            .flat_map(move |&p| self.topo.pools[p as usize].endpoints.clone())
    }
    fn ep_label(&self, ep: u32) -> String {
        self.topo.endpoints[ep as usize].identity.clone()
    }
    fn group_label(&self, g: u16) -> String {
        self.svc.groups[g as usize].name.clone()
    }
    fn group_coords(&self, g: u16) -> (f64, f64) {
        self.topo.regions[self.svc.groups[g as usize].region as usize].coords
    }
    /// A group can take traffic: some pool in it has at least its
    /// `min_healthy` endpoints up (of the asked family).
    fn group_up(&self, g: u16) -> (bool, u32, u32) {
        let mut best = (false, 0, 0);
        for &p in &self.svc.groups[g as usize].pools {
            let pool = &self.topo.pools[p as usize];
            let up = pool
                .endpoints
                .clone()
                .filter(|&e| self.admits(e) && self.alive(e))
                .count() as u32;
            let need = pool.min_healthy.max(1);
            if up >= need {
                return (true, up, need);
            }
            if up > best.1 || best.2 == 0 {
                best = (false, up, need);
            }
        }
        best
    }
}

fn sort_groups(groups: &mut Vec<u16>, keyed: &mut Vec<(f64, u16)>, key: impl Fn(u16) -> f64) {
    keyed.clear();
    keyed.extend(groups.iter().map(|&g| (key(g), g)));
    // Insertion sort: stable, in place, no allocation; lists are short.
    for i in 1..keyed.len() {
        let mut j = i;
        while j > 0 && keyed[j - 1].0.total_cmp(&keyed[j].0).is_gt() {
            keyed.swap(j - 1, j);
            j -= 1;
        }
    }
    groups.clear();
    groups.extend(keyed.iter().map(|&(_, g)| g));
}

/// A stable 64-bit mix (splitmix64 finaliser).
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a of a string: stable across builds and platforms.
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn subnet_key(addr: IpAddr, p4: u8, p6: u8) -> (u64, u8) {
    match addr {
        IpAddr::V4(v4) => {
            let p = p4.min(32);
            (mask_v4(u32::from(v4), p) as u64 ^ 0x4444, p)
        }
        IpAddr::V6(v6) => {
            let p = p6.min(128);
            let m = mask_v6(u128::from(v6), p);
            ((m >> 64) as u64 ^ mix64(m as u64), p)
        }
    }
}

fn geo_match_text(m: GeoMatch, loc: &Location) -> String {
    match m {
        GeoMatch::Cidr(p) => format!("client CIDR /{p}"),
        GeoMatch::Asn(a) => format!("ASN {a}"),
        GeoMatch::Subdivision => format!("subdivision {}-{}", loc.country(), loc.subdivision()),
        GeoMatch::Country => format!("country {}", loc.country()),
        GeoMatch::Continent => format!("continent {}", loc.continent()),
        GeoMatch::Default => "default (no more specific entry)".to_string(),
    }
}

/// Runs the chain once; leaves the endpoints in `sc.out`; returns the scopes.
fn run(r: &Run<'_>, sc: &mut Scratch, mut trace: Option<&mut Trace>) -> Scopes {
    let svc = r.svc;
    let loc = &r.client.loc;
    sc.groups.clear();
    sc.groups.extend_from_slice(r.pre.unwrap_or(&svc.initial));
    sc.out.clear();
    let mut explicit = false;
    let mut healthy = false;
    let mut scope = 0u8;
    let mut without_location = 0u8;
    for step in &svc.steps {
        if r.pre.is_some() && step.is_location() {
            continue;
        }
        let before: Vec<u16> = if trace.is_some() {
            sc.groups.clone()
        } else {
            Vec::new()
        };
        let mut detail = String::new();
        let mut dropped: Vec<Dropped> = Vec::new();
        match step {
            Step::Healthy => {
                healthy = true;
                if explicit {
                    sc.out.retain(|&e| r.alive(e));
                }
                if trace.is_some() {
                    for &g in &sc.groups {
                        for e in r.group_eps(g) {
                            if r.admits(e) && !r.alive(e) {
                                dropped.push(Dropped {
                                    candidate: r.ep_label(e),
                                    why: r.health.get(e).reason().to_string(),
                                });
                            }
                        }
                    }
                    detail = "endpoints that are down are no longer candidates".into();
                }
            }
            Step::Geo(map) => match map.lookup(r.client.addr, loc) {
                Some((list, how)) => {
                    scope = scope.max(map.scope(r.client.addr, how, loc));
                    sc.groups.clear();
                    sc.groups.extend_from_slice(&map.lists[list]);
                    if trace.is_some() {
                        detail = format!("matched {}", geo_match_text(how, loc));
                    }
                }
                None => {
                    scope = scope.max(map.scope(r.client.addr, GeoMatch::Default, loc));
                    if trace.is_some() {
                        detail = "no entry matches and there is no default; order unchanged".into();
                    }
                }
            },
            Step::Nearest { limit, bias } => {
                if let Some(c) = loc.coords {
                    scope = scope.max(loc.prefix);
                    let key = |g: u16| distance_km(c, r.group_coords(g)) - bias[g as usize];
                    sort_groups(&mut sc.groups, &mut sc.keyed, key);
                    if let Some(n) = limit {
                        if trace.is_some() {
                            for &g in sc.groups.iter().skip(*n) {
                                dropped.push(Dropped {
                                    candidate: r.group_label(g),
                                    why: format!("beyond the nearest {n}"),
                                });
                            }
                        }
                        sc.groups.truncate(*n);
                    }
                    if trace.is_some() {
                        let d: Vec<String> = sc
                            .groups
                            .iter()
                            .map(|&g| {
                                format!(
                                    "{} {:.0} km",
                                    r.group_label(g),
                                    distance_km(c, r.group_coords(g))
                                )
                            })
                            .collect();
                        detail = format!(
                            "client at ({:.2}, {:.2}); by distance: {}",
                            c.0,
                            c.1,
                            d.join(", ")
                        );
                    }
                } else {
                    // Unlocated is a property of the client's block too: a
                    // neighbour with coordinates may be ordered otherwise.
                    scope = scope.max(loc.prefix);
                    if trace.is_some() {
                        detail = "client has no coordinates; order unchanged".into();
                    }
                }
            }
            Step::Latency(t)
                if t.probes && probe_order(r, sc, loc, trace.is_some(), &mut detail) =>
            {
                scope = scope.max(loc.prefix);
            }
            Step::Latency(t) => match t.row(loc) {
                Some((row, how)) => {
                    scope = scope.max(loc.prefix);
                    let ms = &t.rows[row];
                    let key = |g: u16| {
                        let v = ms[g as usize];
                        if v.is_nan() {
                            f64::INFINITY
                        } else {
                            v
                        }
                    };
                    sort_groups(&mut sc.groups, &mut sc.keyed, key);
                    if trace.is_some() {
                        let d: Vec<String> = sc
                            .groups
                            .iter()
                            .map(|&g| {
                                let v = ms[g as usize];
                                if v.is_nan() {
                                    format!("{} ?", r.group_label(g))
                                } else {
                                    format!("{} {v} ms", r.group_label(g))
                                }
                            })
                            .collect();
                        detail = format!("table row for {how}: {}", d.join(", "));
                    }
                }
                None => {
                    scope = scope.max(loc.prefix);
                    if trace.is_some() {
                        detail = "no latency row for this client; order unchanged".into();
                    }
                }
            },
            Step::Failover => {
                let mut chosen = None;
                for (i, &g) in sc.groups.iter().enumerate() {
                    let (ok, up, need) = r.group_up(g);
                    if ok {
                        chosen = Some(i);
                        if trace.is_some() {
                            detail = format!("{} has {up} up (needs {need})", r.group_label(g));
                        }
                        break;
                    } else if trace.is_some() {
                        dropped.push(Dropped {
                            candidate: r.group_label(g),
                            why: format!("only {up} up, needs {need}"),
                        });
                    }
                }
                match chosen {
                    Some(i) => {
                        if trace.is_some() {
                            for &g in sc.groups.iter().skip(i + 1) {
                                dropped.push(Dropped {
                                    candidate: r.group_label(g),
                                    why: "lower priority".into(),
                                });
                            }
                        }
                        let g = sc.groups[i];
                        sc.groups.clear();
                        sc.groups.push(g);
                    }
                    None => {
                        sc.groups.clear();
                        if trace.is_some() {
                            detail = "no candidate has enough endpoints up".into();
                        }
                    }
                }
                if explicit {
                    sc.out
                        .retain(|&e| sc.groups.iter().any(|&g| r.group_eps(g).any(|x| x == e)));
                }
            }
            Step::Weighted {
                mode,
                count,
                prefix_v4,
                prefix_v6,
            } => {
                sc.cand.clear();
                if explicit {
                    sc.cand.extend(sc.out.iter().map(|&e| (0.0, e)));
                } else {
                    for &g in &sc.groups {
                        for e in r.group_eps(g) {
                            if r.admits(e)
                                && (!healthy || r.alive(e))
                                && !sc.cand.iter().any(|c| c.1 == e)
                            {
                                sc.cand.push((0.0, e));
                            }
                        }
                    }
                }
                let n = (*count).min(sc.cand.len());
                sc.out.clear();
                match mode {
                    WeightedMode::Random => {
                        for _ in 0..n {
                            let total: u64 = sc
                                .cand
                                .iter()
                                .map(|&(_, e)| r.topo.endpoints[e as usize].weight as u64)
                                .sum();
                            let pick = if total == 0 {
                                sc.rng.usize(0..sc.cand.len())
                            } else {
                                let mut x = sc.rng.u64(0..total);
                                let mut idx = 0;
                                for (i, &(_, e)) in sc.cand.iter().enumerate() {
                                    let w = r.topo.endpoints[e as usize].weight as u64;
                                    if x < w {
                                        idx = i;
                                        break;
                                    }
                                    x -= w;
                                }
                                idx
                            };
                            let (_, e) = sc.cand.swap_remove(pick);
                            sc.out.push(e);
                        }
                        if trace.is_some() {
                            detail = format!("{n} chosen at random in proportion to weight");
                        }
                    }
                    WeightedMode::Sticky => {
                        let (key, p) = subnet_key(r.client.addr, *prefix_v4, *prefix_v6);
                        scope = scope.max(p);
                        without_location = without_location.max(p);
                        for c in sc.cand.iter_mut() {
                            let ep = &r.topo.endpoints[c.1 as usize];
                            let h = mix64(key ^ ep.hash);
                            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                            c.0 = if ep.weight == 0 {
                                f64::INFINITY
                            } else {
                                -u.ln() / ep.weight as f64
                            };
                        }
                        for _ in 0..n {
                            let mut best = 0;
                            for i in 1..sc.cand.len() {
                                if sc.cand[i].0 < sc.cand[best].0 {
                                    best = i;
                                }
                            }
                            let (_, e) = sc.cand.swap_remove(best);
                            sc.out.push(e);
                        }
                        if trace.is_some() {
                            detail = format!(
                                "{n} chosen by weighted rendezvous hash of the client's /{p}"
                            );
                        }
                    }
                }
                if trace.is_some() {
                    for &(_, e) in &sc.cand {
                        dropped.push(Dropped {
                            candidate: r.ep_label(e),
                            why: "not chosen".into(),
                        });
                    }
                }
                explicit = true;
            }
            Step::FirstN(n) => {
                if !explicit {
                    flatten(r, sc, healthy);
                    explicit = true;
                }
                if trace.is_some() {
                    for &e in sc.out.iter().skip(*n) {
                        dropped.push(Dropped {
                            candidate: r.ep_label(e),
                            why: format!("beyond the first {n}"),
                        });
                    }
                    detail = format!("at most {n} endpoints");
                }
                sc.out.truncate(*n);
            }
        }
        if let Some(t) = trace.as_deref_mut() {
            let kept: Vec<String> = if explicit {
                sc.out.iter().map(|&e| r.ep_label(e)).collect()
            } else {
                sc.groups.iter().map(|&g| r.group_label(g)).collect()
            };
            if matches!(step, Step::Geo(_) | Step::Latency(_)) {
                for g in before.iter().filter(|g| !sc.groups.contains(g)) {
                    dropped.push(Dropped {
                        candidate: r.group_label(*g),
                        why: "not in the chosen list".into(),
                    });
                }
            }
            t.steps.push(StepTrace {
                step: step.name().to_string(),
                detail,
                kept,
                dropped,
            });
        }
    }
    if !explicit {
        flatten(r, sc, healthy);
    }
    Scopes {
        all: scope,
        without_location,
    }
}

/// The group order the location steps of `svc` give a client at `loc`
/// (what compiled geo stores per address range).
pub fn location_order(topo: &Topology, svc: &Service, addr: IpAddr, loc: &Location) -> Vec<u16> {
    let client = Client { addr, loc: *loc };
    let health = HealthView::default();
    let r = Run {
        topo,
        svc,
        client: &client,
        family: Family::Any,
        health: &health,
        ignore_health: true,
        pre: None,
    };
    let mut sc = Scratch::seeded(0);
    sc.groups.clear();
    sc.groups.extend_from_slice(&svc.initial);
    for step in svc.steps.iter().filter(|s| s.is_location()) {
        let mut sink = String::new();
        match step {
            Step::Geo(map) => {
                if let Some((list, _)) = map.lookup(addr, loc) {
                    sc.groups.clear();
                    sc.groups.extend_from_slice(&map.lists[list]);
                }
            }
            Step::Nearest { limit, bias } => {
                if let Some(c) = loc.coords {
                    let key = |g: u16| distance_km(c, r.group_coords(g)) - bias[g as usize];
                    sort_groups(&mut sc.groups, &mut sc.keyed, key);
                    if let Some(n) = limit {
                        sc.groups.truncate(*n);
                    }
                }
            }
            Step::Latency(t) => {
                if t.probes && probe_order(&r, &mut sc, loc, false, &mut sink) {
                    continue;
                }
                if let Some((row, _)) = t.row(loc) {
                    let ms = &t.rows[row];
                    let key = |g: u16| {
                        if ms[g as usize].is_nan() {
                            f64::INFINITY
                        } else {
                            ms[g as usize]
                        }
                    };
                    sort_groups(&mut sc.groups, &mut sc.keyed, key);
                }
            }
            _ => {}
        }
    }
    sc.groups
}

impl Service {
    /// Whether this service's location-dependent part depends only on City
    /// data and can be compiled per address range: it has location steps,
    /// none of them after `failover`, no ASN or CIDR geo keys, and no
    /// latency by live probes.
    pub fn compilable(&self) -> bool {
        let mut seen_failover = false;
        let mut any = false;
        for s in &self.steps {
            match s {
                Step::Failover => seen_failover = true,
                Step::Geo(m) => {
                    if seen_failover
                        || !m.asn.is_empty()
                        || !m.cidr_v4.is_empty()
                        || !m.cidr_v6.is_empty()
                    {
                        return false;
                    }
                    any = true;
                }
                Step::Nearest { .. } => {
                    if seen_failover {
                        return false;
                    }
                    any = true;
                }
                Step::Latency(l) => {
                    if seen_failover || l.probes {
                        return false;
                    }
                    any = true;
                }
                _ => {}
            }
        }
        any
    }
}

/// Orders groups by the RTT measured from the vantage nearest the client
/// (lowest endpoint RTT in each group). False when there is nothing to go
/// on (no client coordinates, no vantage location, no measurement).
fn probe_order(
    r: &Run<'_>,
    sc: &mut Scratch,
    loc: &Location,
    explain: bool,
    detail: &mut String,
) -> bool {
    let Some(c) = loc.coords else { return false };
    let mut best: Option<(&VantageRtt, f64)> = None;
    for v in &r.health.rtt {
        let Some(vc) = v.coords else { continue };
        if !v.rtt_ms.iter().any(|x| !x.is_nan()) {
            continue;
        }
        let d = distance_km(c, vc);
        if best.is_none_or(|(_, bd)| d < bd) {
            best = Some((v, d));
        }
    }
    let Some((v, d)) = best else { return false };
    let group_rtt = |g: u16| {
        r.group_eps(g)
            .filter_map(|e| v.rtt_ms.get(e as usize).copied())
            .filter(|x| !x.is_nan())
            .fold(f64::INFINITY, f64::min)
    };
    sort_groups(&mut sc.groups, &mut sc.keyed, group_rtt);
    if explain {
        let parts: Vec<String> = sc
            .groups
            .iter()
            .map(|&g| {
                let ms = group_rtt(g);
                if ms.is_finite() {
                    format!("{} {ms:.1} ms", r.group_label(g))
                } else {
                    format!("{} ?", r.group_label(g))
                }
            })
            .collect();
        *detail = format!(
            "measured from vantage {} ({d:.0} km from the client): {}",
            v.name,
            parts.join(", ")
        );
    }
    true
}

fn flatten(r: &Run<'_>, sc: &mut Scratch, healthy: bool) {
    sc.out.clear();
    for &g in &sc.groups {
        for e in r.group_eps(g) {
            if r.admits(e) && (!healthy || r.alive(e)) && !sc.out.contains(&e) {
                sc.out.push(e);
            }
        }
    }
}

/// Decides what `svc` answers for `client` and `family`. The endpoints end
/// up in `sc.out`.
pub fn decide(
    topo: &Topology,
    svc: &Service,
    client: &Client,
    family: Family,
    health: &HealthView,
    sc: &mut Scratch,
    trace: Option<&mut Trace>,
) -> Decision {
    decide_from(topo, svc, client, None, family, health, sc, trace)
}

/// Like [`decide`], starting from a group order already decided from the
/// client's location (compiled geo); the location steps are skipped.
#[allow(clippy::too_many_arguments)]
pub fn decide_from(
    topo: &Topology,
    svc: &Service,
    client: &Client,
    pre: Option<&[u16]>,
    family: Family,
    health: &HealthView,
    sc: &mut Scratch,
    mut trace: Option<&mut Trace>,
) -> Decision {
    let mut r = Run {
        topo,
        svc,
        client,
        family,
        health,
        ignore_health: false,
        pre,
    };
    let scope = run(&r, sc, trace.as_deref_mut());
    if !sc.out.is_empty() {
        return Decision::of(Answer::Endpoints, scope);
    }
    // Empty: because of health, or because nothing has this family?
    let any_down = svc
        .groups
        .iter()
        .flat_map(|g| g.pools.iter())
        .flat_map(|&p| topo.pools[p as usize].endpoints.clone())
        .any(|e| r.admits(e) && !health.up(e));
    if !any_down {
        if let Some(t) = trace {
            t.notes
                .push("no endpoint of the asked address family: NODATA".into());
        }
        return Decision::of(Answer::Nodata, scope);
    }
    match &svc.all_down {
        AllDown::FailOpen => {
            r.ignore_health = true;
            if let Some(t) = trace.as_deref_mut() {
                t.notes.push(
                    "every candidate is down: failing open (answering as if all were up)".into(),
                );
            }
            let scope2 = run(&r, sc, trace);
            let answer = if sc.out.is_empty() {
                Answer::Nodata
            } else {
                Answer::Endpoints
            };
            Decision::of(
                answer,
                Scopes {
                    all: scope.all.max(scope2.all),
                    without_location: scope.without_location.max(scope2.without_location),
                },
            )
        }
        AllDown::Nodata => {
            if let Some(t) = trace {
                t.notes
                    .push("every candidate is down: NODATA (all_down = \"nodata\")".into());
            }
            Decision::of(Answer::Nodata, scope)
        }
        AllDown::Addresses(_) => {
            if let Some(t) = trace {
                t.notes
                    .push("every candidate is down: answering the all_down addresses".into());
            }
            Decision::of(Answer::FallbackAddresses, scope)
        }
        AllDown::Cname(_) => {
            if let Some(t) = trace {
                t.notes
                    .push("every candidate is down: answering the all_down CNAME".into());
            }
            Decision::of(Answer::FallbackCname, scope)
        }
    }
}

#[cfg(test)]
mod tests;

//! `simulate`: the answer every client of the world gets, under the health
//! state given or any hypothetical one, computed offline with the code that
//! answers queries.
//!
//! The address space is walked once as the compiled geo table walks it
//! (`geo::index::walk`: the City database's networks, the ASN database's
//! when a service names AS numbers, and the CIDR entries of the `geo`
//! tables, merged in address order). Each piece of the walk has one
//! distinct input (City location, AS number, innermost CIDR entry); for a
//! service, each input leads to one *decision key* — the group order its
//! location steps give (the snapshot's compiled table where it has one,
//! else `policy::location_order`, the function that table is compiled
//! with), or the client itself for what a query decides per client
//! (services whose location is read per query, `weighted` in `sticky`
//! mode). `geolb simulate` loads without compiling, so the databases are
//! walked once. A health scenario then runs `policy::decide_from` once per key,
//! not per network, and the shares are sums over inputs weighted by the
//! address space their pieces cover. Every scenario of a resilience check
//! reuses the one walk.
//!
//! Address space is counted in addresses: IPv4 exactly, IPv6 as
//! 2^(128 − prefix) per piece in floating point. Space no database lists
//! (and no CIDR entry or named AS number covers) is not counted; neither is
//! the IPv4-mapped IPv6 block (those clients are IPv4 clients).

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use crate::geo::index::{Walk, WalkInput};
use crate::geo::Location;
use crate::health::HealthState;
use crate::policy::steps::weighted::Weighted;
use crate::policy::{
    decide_from, location_order, AdminState, Answer, Client, Family, HealthView, Scratch, Service,
    Step, Target, WeightedMode,
};
use crate::snapshot::{health_view, Snapshot};

pub mod map;
pub mod replay;
pub mod report;

pub use report::{
    Change, Move, NetworkAnswer, Place, Report, Resilience, ScenarioFailure, ServiceFailure,
    ServiceSim, Share, Shares, Timings, COUNTING,
};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("no City database is configured ([geoip] city): there are no networks to simulate")]
    NoCity,
    #[error("cannot walk the GeoIP databases: {0}")]
    Walk(String),
    #[error("{0:?} is not a region, pool or endpoint (pool/address) of this config")]
    UnknownTarget(String),
    #[error("no service named {0:?}")]
    UnknownService(String),
    #[error("record type {0:?}: simulate answers A or AAAA")]
    BadType(String),
    #[error("cannot read the query log: {0}")]
    Log(#[source] std::io::Error),
    #[error("map width {width}: give {min} to {max} pixels")]
    MapWidth { width: u32, min: u32, max: u32 },
    #[error("cannot draw the map: {0}")]
    Draw(String),
}

/// Which record type the simulated queries ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
}

impl QType {
    pub fn parse(s: &str) -> Result<QType, SimError> {
        match s.to_ascii_uppercase().as_str() {
            "A" => Ok(QType::A),
            "AAAA" => Ok(QType::Aaaa),
            _ => Err(SimError::BadType(s.to_string())),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            QType::A => "A",
            QType::Aaaa => "AAAA",
        }
    }
    fn family(self) -> Family {
        match self {
            QType::A => Family::V4,
            QType::Aaaa => Family::V6,
        }
    }
}

/// A health state to simulate: targets named as the drain API names them
/// (a region, a pool, or an endpoint `pool/address`), down by health checks
/// or drained by an operator; everything else up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    pub down: Vec<String>,
    pub drain: Vec<String>,
    /// Partial drains: (target, share of client subnets in ten-thousandths,
    /// as `EndpointHealth::partial`). Simulate them with a model made by
    /// [`Model::with_keys`] `per_input`: each input (a City network, cut
    /// where a CIDR entry or AS network begins or ends) moves as a whole,
    /// as its first address's /24 or /56 decides.
    pub partial: Vec<(String, u16)>,
}

impl Scenario {
    /// Adds what a running node's `GET /v1/health` shows: endpoints its
    /// checks hold down (unless an operator forced them up), drains and
    /// forced-down targets. Returns how many targets were added.
    pub fn add_live(&mut self, health: &serde_json::Value) -> usize {
        let before = self.down.len() + self.drain.len() + self.partial.len();
        let empty = Vec::new();
        for o in health["overrides"].as_array().unwrap_or(&empty) {
            let Some(target) = o["target"].as_str() else {
                continue;
            };
            let fraction = o["fraction"].as_f64().filter(|f| *f < 1.0);
            match (o["state"].as_str(), fraction) {
                (Some("drain"), Some(f)) => self
                    .partial
                    .push((target.to_string(), crate::policy::health::partial_units(f))),
                (Some("drain"), None) => self.drain.push(target.to_string()),
                (Some("force_down"), _) => self.down.push(target.to_string()),
                _ => {}
            }
        }
        for e in health["endpoints"].as_array().unwrap_or(&empty) {
            let forced_up = e["override"]["state"] == "force_up";
            if e["checked_up"] == false && !forced_up {
                if let Some(id) = e["endpoint"].as_str() {
                    self.down.push(id.to_string());
                }
            }
        }
        self.down.sort();
        self.down.dedup();
        self.drain.sort();
        self.drain.dedup();
        self.partial.sort();
        self.partial.dedup_by(|a, b| a.0 == b.0);
        self.down.len() + self.drain.len() + self.partial.len() - before
    }

    pub fn is_all_up(&self) -> bool {
        self.down.is_empty() && self.drain.is_empty() && self.partial.is_empty()
    }

    /// "all up", or "down: a, b; drained: c".
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if !self.down.is_empty() {
            parts.push(format!("down: {}", self.down.join(", ")));
        }
        if !self.drain.is_empty() {
            parts.push(format!("drained: {}", self.drain.join(", ")));
        }
        if !self.partial.is_empty() {
            let p: Vec<String> = self
                .partial
                .iter()
                .map(|(t, u)| format!("{t} {:.0} %", f64::from(*u) / 100.0))
                .collect();
            parts.push(format!("partially drained: {}", p.join(", ")));
        }
        if parts.is_empty() {
            "all up".to_string()
        } else {
            parts.join("; ")
        }
    }

    /// The health view this scenario gives `snap`'s endpoints, mapped as a
    /// running server maps the health service's state (tier gates too).
    pub fn health(&self, snap: &Snapshot) -> Result<HealthView, SimError> {
        let mut state = HealthState {
            epoch: crate::policy::Epoch {
                seq: 1,
                ..Default::default()
            },
            ..HealthState::default()
        };
        let partial: Vec<String> = self.partial.iter().map(|(t, _)| t.clone()).collect();
        for (targets, how) in [(&self.down, 0), (&self.drain, 1), (&partial, 2)] {
            for (i, t) in targets.iter().enumerate() {
                let mut any = false;
                for m in snap
                    .members
                    .iter()
                    .filter(|m| m.identity == *t || m.within.iter().any(|w| w == t))
                {
                    any = true;
                    let h = state.endpoints.entry(m.identity.clone()).or_default();
                    match how {
                        0 => h.checked_up = false,
                        1 => h.admin = AdminState::Drain,
                        _ => h.partial = self.partial[i].1,
                    }
                }
                if !any {
                    return Err(SimError::UnknownTarget(t.clone()));
                }
            }
        }
        Ok(health_view(&snap.topology, &snap.tier_gates, &state, None))
    }
}

/// What the address space of one input amounts to.
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    v4: f64,
    v6: f64,
    nets4: u64,
    nets6: u64,
}

/// What a decision is made from, per service: the client (its address
/// and location) and the group order already decided from its location.
struct Key {
    client: Client,
    pre: Option<Vec<u16>>,
    /// Decided from the client address itself (`weighted` in `sticky` mode,
    /// a location read per query): the input's first address stands for
    /// every address of it.
    per_client: bool,
}

struct SvcModel {
    name: String,
    /// The service: its zone's number and its number in that zone.
    at: (usize, usize),
    family: Family,
    /// Per input: its decision key.
    key_of: Vec<u32>,
    keys: Vec<Key>,
}

/// One config's world: the walk, the weight of each input, and per service
/// the decision keys; over a borrowed snapshot ([`Model`]) or one it holds
/// (`ModelOf<Arc<Snapshot>>`, kept by the admin API's map across health
/// changes: the walk depends on the snapshot's generation and databases,
/// not on health).
pub struct ModelOf<S> {
    snap: S,
    walk: Walk,
    weight: Vec<Weight>,
    services: Vec<SvcModel>,
    qtype: QType,
}

/// A model over a borrowed snapshot.
pub type Model<'s> = ModelOf<&'s Snapshot>;

/// How a decision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// Endpoints, at least one of them up.
    Answer,
    /// Every candidate down: answered as if all were up.
    FailOpen,
    /// Every candidate down: the configured fallback addresses or CNAME.
    Fallback,
    /// No records (NODATA).
    Nodata,
}

/// A decision's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Outcome {
    kind: Kind,
    endpoints: Vec<u32>,
}

/// The outcome of every key of every service under one health state.
struct Evaluated {
    /// Per service, per key.
    outcome: Vec<Vec<Outcome>>,
}

/// What answers a client: a region (its number in the topology, which is
/// config order), or none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Answered {
    Region(u16),
    /// Every candidate down: answered as if all were up.
    FailOpen,
    /// Every candidate down: the configured fallback.
    Fallback,
    /// No records.
    Nodata,
}

/// The address space some pieces cover: IPv4 addresses, and IPv6 ones
/// (2^(128 − prefix) per piece, in floating point).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Space {
    pub v4: f64,
    pub v6: f64,
}

/// Bucket names for what is not an answer from a region.
pub const FAIL_OPEN: &str = "(all down: fail open)";
pub const FALLBACK: &str = "(all down: fallback)";
pub const NODATA: &str = "(no answer: NODATA)";

impl<S: std::ops::Deref<Target = Snapshot>> ModelOf<S> {
    /// Walks `snap`'s databases and prepares the decision keys of the
    /// services named in `only` (all when empty).
    pub fn new(snap: S, only: &[String], qtype: QType) -> Result<ModelOf<S>, SimError> {
        ModelOf::with_keys(snap, only, qtype, false)
    }

    /// Like [`ModelOf::new`], deciding every input for its own first
    /// address when `per_input`: what a partial drain needs, since it
    /// decides by the client's /24 or /56 rather than by its location alone.
    pub fn with_keys(
        snap: S,
        only: &[String],
        qtype: QType,
        per_input: bool,
    ) -> Result<ModelOf<S>, SimError> {
        let (walk, weight, services) = {
            let snap: &Snapshot = &snap;
            if snap.geo.city.is_none() {
                return Err(SimError::NoCity);
            }
            let svcs = all_services(snap);
            for name in only {
                if !svcs.iter().any(|(_, s)| same_name(&s.name, name)) {
                    return Err(SimError::UnknownService(name.clone()));
                }
            }
            let chosen: Vec<((usize, usize), &Service)> = svcs
                .into_iter()
                .filter(|(_, s)| only.is_empty() || only.iter().any(|n| same_name(&s.name, n)))
                .collect();
            let refs: Vec<&Service> = chosen.iter().map(|(_, s)| *s).collect();
            let keys = crate::snapshot::geo_keys(&refs);
            let walk = crate::geo::index::walk(&snap.geo, &keys).map_err(SimError::Walk)?;
            let weight = weights(&walk);
            let mut located: Vec<Option<Location>> = vec![None; walk.inputs.len()];
            let services: Vec<SvcModel> = chosen
                .into_iter()
                .map(|(at, svc)| {
                    service_model(snap, svc, at, qtype, &walk, &mut located, per_input)
                })
                .collect();
            (walk, weight, services)
        };
        Ok(ModelOf {
            snap,
            walk,
            weight,
            services,
            qtype,
        })
    }

    pub fn networks(&self) -> usize {
        self.walk.networks
    }

    /// The snapshot modelled.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// The record type the model decides for.
    pub fn qtype(&self) -> QType {
        self.qtype
    }

    /// Decides every key of every service under `health`.
    fn evaluate(&self, health: &HealthView) -> Evaluated {
        let outcome = self
            .services
            .iter()
            .map(|m| self.evaluate_one(m, health))
            .collect();
        Evaluated { outcome }
    }

    /// The service `m` models.
    fn svc(&self, m: &SvcModel) -> &Service {
        &self.snap.zones.zones[m.at.0].services[m.at.1]
    }

    /// Decides every key of `m` under `health`.
    fn evaluate_one(&self, m: &SvcModel, health: &HealthView) -> Vec<Outcome> {
        let mut sc = Scratch::seeded(0);
        m.keys
            .iter()
            .enumerate()
            .map(|(k, key)| self.outcome(m, k, &key.client, m.family, health, &mut sc))
            .collect()
    }

    /// How key `k` of `m` is decided for `client` under `health`.
    fn outcome(
        &self,
        m: &SvcModel,
        k: usize,
        client: &Client,
        family: Family,
        health: &HealthView,
        sc: &mut Scratch,
    ) -> Outcome {
        // One fixed draw per key for `weighted` at random.
        sc.rng = fastrand::Rng::with_seed(k as u64);
        let pre = m.keys.get(k).and_then(|key| key.pre.as_deref());
        let d = decide_from(
            &self.snap.topology,
            self.svc(m),
            client,
            pre,
            family,
            health,
            sc,
            None,
        );
        let kind = match d.answer {
            Answer::Endpoints if sc.out.iter().any(|&e| health.up(e)) => Kind::Answer,
            Answer::Endpoints => Kind::FailOpen,
            Answer::Nodata => Kind::Nodata,
            Answer::FallbackAddresses | Answer::FallbackCname => Kind::Fallback,
        };
        Outcome {
            kind,
            endpoints: if kind == Kind::Nodata {
                Vec::new()
            } else {
                sc.out.clone()
            },
        }
    }

    /// The input of the walk piece holding `addr` (IPv4-mapped addresses
    /// as IPv4).
    fn input_of(&self, addr: IpAddr) -> Option<u32> {
        match addr.to_canonical() {
            IpAddr::V4(a) => {
                let x = u32::from(a);
                let i = self.walk.v4.partition_point(|p| p.0 <= x);
                self.walk.v4.get(i.checked_sub(1)?).map(|p| p.1)
            }
            IpAddr::V6(a) => {
                let x = u128::from(a);
                let i = self.walk.v6.partition_point(|p| p.0 <= x);
                self.walk.v6.get(i.checked_sub(1)?).map(|p| p.1)
            }
        }
    }

    /// The pool of an outcome's first endpoint and its region's number.
    fn first_pool(&self, o: &Outcome) -> Option<(&crate::policy::Pool, u16)> {
        let topo = &self.snap.topology;
        let e = topo.endpoints.get(*o.endpoints.first()? as usize)?;
        let pool = topo.pools.get(e.pool as usize)?;
        topo.regions.get(pool.region as usize)?;
        Some((pool, pool.region))
    }

    /// What answers an outcome, as a map colours it.
    fn answered(&self, o: &Outcome) -> Answered {
        match o.kind {
            Kind::Answer => self
                .first_pool(o)
                .map_or(Answered::Nodata, |(_, r)| Answered::Region(r)),
            Kind::FailOpen => Answered::FailOpen,
            Kind::Fallback => Answered::Fallback,
            Kind::Nodata => Answered::Nodata,
        }
    }

    /// The region bucket and the pool of an outcome.
    fn bucket(&self, o: &Outcome) -> (String, String) {
        let topo = &self.snap.topology;
        match o.kind {
            Kind::Answer => {
                let first = self.first_pool(o).and_then(|(pool, r)| {
                    let region = topo.regions.get(r as usize)?;
                    Some((region.name.clone(), pool.name.clone()))
                });
                first.unwrap_or_else(|| (NODATA.to_string(), NODATA.to_string()))
            }
            Kind::FailOpen => (FAIL_OPEN.to_string(), FAIL_OPEN.to_string()),
            Kind::Fallback => (FALLBACK.to_string(), FALLBACK.to_string()),
            Kind::Nodata => (NODATA.to_string(), NODATA.to_string()),
        }
    }

    /// Per service: the region bucket of each input under `ev`.
    fn region_of_inputs(&self, ev: &Evaluated) -> Vec<Vec<String>> {
        self.services
            .iter()
            .zip(&ev.outcome)
            .map(|(m, outs)| {
                let names: Vec<String> = outs.iter().map(|o| self.bucket(o).0).collect();
                m.key_of
                    .iter()
                    .map(|&k| names[k as usize].clone())
                    .collect()
            })
            .collect()
    }

    fn shares(&self, m: &SvcModel, outs: &[Outcome]) -> (Shares, Shares) {
        let buckets: Vec<(String, String)> = outs.iter().map(|o| self.bucket(o)).collect();
        let mut regions: FxHashMap<&str, Weight> = FxHashMap::default();
        let mut pools: FxHashMap<&str, Weight> = FxHashMap::default();
        let mut total = Weight::default();
        for (i, w) in self.weight.iter().enumerate() {
            let (r, p) = &buckets[m.key_of[i] as usize];
            add(regions.entry(r).or_default(), w);
            add(pools.entry(p).or_default(), w);
            add(&mut total, w);
        }
        (
            report::shares(&regions, &pools, &total, false),
            report::shares(&regions, &pools, &total, true),
        )
    }

    /// Shares, and with `base` the change from it, for every service under
    /// `scenario`.
    pub fn simulate(
        &self,
        scenario: &Scenario,
        base: Option<(&ModelOf<S>, &Scenario, String)>,
        per_network: bool,
    ) -> Result<Vec<ServiceSim>, SimError> {
        let health = scenario.health(&self.snap)?;
        let ev = self.evaluate(&health);
        let change = match base {
            Some((other, other_scenario, label)) => {
                let oev = other.evaluate(&other_scenario.health(&other.snap)?);
                Some((other, other.region_of_inputs(&oev), label))
            }
            None => None,
        };
        let mine = self.region_of_inputs(&ev);
        let mut out = Vec::new();
        for (si, m) in self.services.iter().enumerate() {
            let (v4, v6) = self.shares(m, &ev.outcome[si]);
            let change = change.as_ref().and_then(|(other, regions, label)| {
                let oi = other
                    .services
                    .iter()
                    .position(|o| same_name(&o.name, &m.name))?;
                Some(report::change(
                    label,
                    (&other.walk, &regions[oi][..]),
                    (&self.walk, &mine[si][..]),
                ))
            });
            let networks = if per_network {
                self.per_network(m, &ev.outcome[si])
            } else {
                Vec::new()
            };
            out.push(ServiceSim {
                service: m.name.clone(),
                qtype: if m.family == Family::Any {
                    "CNAME"
                } else {
                    self.qtype.name()
                },
                v4,
                v6,
                change,
                networks,
            });
        }
        Ok(out)
    }

    /// Every listed piece with its answer.
    fn per_network(&self, m: &SvcModel, outs: &[Outcome]) -> Vec<NetworkAnswer> {
        let topo = &self.snap.topology;
        let mut list = Vec::new();
        let mut each = |first: IpAddr, last: IpAddr, input: u32| {
            let Some(inp) = self.walk.inputs.get(input as usize) else {
                return;
            };
            if !inp.listed() || is_mapped(first) {
                return;
            }
            let o = &outs[m.key_of[input as usize] as usize];
            let (region, pool) = self.bucket(o);
            list.push(NetworkAnswer {
                first,
                last,
                place: place(inp),
                region,
                pool,
                answer: o
                    .endpoints
                    .iter()
                    .filter_map(|&e| topo.endpoints.get(e as usize))
                    .map(|e| match &e.target {
                        Target::Addr(a) => a.to_string(),
                        Target::Cname(n, _) => n.clone(),
                    })
                    .collect(),
            });
        };
        for (i, &(start, input)) in self.walk.v4.iter().enumerate() {
            let end = self.walk.v4.get(i + 1).map_or(u32::MAX, |n| n.0 - 1);
            each(
                IpAddr::from(start.to_be_bytes()),
                IpAddr::from(end.to_be_bytes()),
                input,
            );
        }
        for (i, &(start, input)) in self.walk.v6.iter().enumerate() {
            let end = self.walk.v6.get(i + 1).map_or(u128::MAX, |n| n.0 - 1);
            each(
                IpAddr::from(start.to_be_bytes()),
                IpAddr::from(end.to_be_bytes()),
                input,
            );
        }
        list
    }

    /// What service number `service` answers the client at `addr` under
    /// `scenario`: the location of the input holding it, its own address
    /// for everything decided per client (a partial drain's /24 or /56).
    /// The region's name, or one of the bucket names.
    pub fn decide_for(
        &self,
        service: usize,
        addr: IpAddr,
        scenario: &Scenario,
    ) -> Result<String, SimError> {
        let Some(m) = self.services.get(service) else {
            return Err(SimError::UnknownService(format!("#{service}")));
        };
        let health = scenario.health(&self.snap)?;
        let mut sc = Scratch::seeded(0);
        let key = self
            .input_of(addr)
            .and_then(|i| m.key_of.get(i as usize))
            .map_or(0, |&k| k as usize);
        let loc = m
            .keys
            .get(key)
            .map_or_else(Location::default, |k| k.client.loc);
        let client = Client { addr, loc };
        let o = self.outcome(m, key, &client, m.family, &health, &mut sc);
        Ok(self.bucket(&o).0)
    }

    /// The services modelled, by name, in config order.
    pub fn services(&self) -> Vec<&str> {
        self.services.iter().map(|m| m.name.as_str()).collect()
    }

    /// Every input of the walk a database lists (a City network, a CIDR
    /// entry or an AS number some service names), once, with the address
    /// space its pieces cover and what answers it for service number
    /// `service` (of [`Model::services`]) under each of `scenarios`, in
    /// order: the view a map draws.
    pub fn each_answer(
        &self,
        service: usize,
        scenarios: &[Scenario],
        f: impl FnMut(&WalkInput, Space, &[Answered]),
    ) -> Result<(), SimError> {
        let views = scenarios
            .iter()
            .map(|s| s.health(&self.snap))
            .collect::<Result<Vec<HealthView>, SimError>>()?;
        let views: Vec<&HealthView> = views.iter().collect();
        self.each_answer_under(service, &views, f)
    }

    /// [`each_answer`](Self::each_answer) under health views given as they
    /// are (a running node's own, say), one per panel.
    pub fn each_answer_under(
        &self,
        service: usize,
        views: &[&HealthView],
        mut f: impl FnMut(&WalkInput, Space, &[Answered]),
    ) -> Result<(), SimError> {
        let Some(m) = self.services.get(service) else {
            return Err(SimError::UnknownService(format!("#{service}")));
        };
        let mut per_key: Vec<Vec<Answered>> = Vec::with_capacity(views.len());
        for h in views {
            let ev = self.evaluate_one(m, h);
            per_key.push(ev.iter().map(|o| self.answered(o)).collect());
        }
        let mut answered = vec![Answered::Nodata; views.len()];
        for (i, w) in self.weight.iter().enumerate() {
            if w.nets4 + w.nets6 == 0 {
                continue;
            }
            let k = m.key_of[i] as usize;
            for (a, keys) in answered.iter_mut().zip(&per_key) {
                *a = keys[k];
            }
            let space = Space { v4: w.v4, v6: w.v6 };
            f(&self.walk.inputs[i], space, &answered);
        }
        Ok(())
    }

    /// The regions of the topology, for a resilience check.
    pub fn regions(&self) -> Vec<String> {
        self.snap
            .topology
            .regions
            .iter()
            .map(|r| r.name.clone())
            .collect()
    }

    /// Runs every combination of 1 to `k` regions down (on top of `base`)
    /// and lists, per scenario and service, the places that lose their
    /// answer (NODATA, or every endpoint down while they had an answer with
    /// `base` alone), the `top` largest by network count.
    pub fn resilience(
        &self,
        base: &Scenario,
        k: usize,
        top: usize,
    ) -> Result<Resilience, SimError> {
        let before = self.evaluate(&base.health(&self.snap)?);
        // Regions the base already takes down are not taken down again.
        let regions: Vec<String> = self
            .regions()
            .into_iter()
            .filter(|r| !base.down.contains(r) && !base.drain.contains(r))
            .collect();
        let mut scenarios = 0;
        let mut failing = Vec::new();
        for combo in combinations(regions.len(), k) {
            scenarios += 1;
            let down: Vec<String> = combo.iter().map(|&i| regions[i].clone()).collect();
            let mut s = base.clone();
            s.down.extend(down.iter().cloned());
            let ev = self.evaluate(&s.health(&self.snap)?);
            let mut services = Vec::new();
            for (si, m) in self.services.iter().enumerate() {
                let lost: Vec<bool> = ev.outcome[si]
                    .iter()
                    .zip(&before.outcome[si])
                    .map(|(now, was)| {
                        was.kind == Kind::Answer
                            && matches!(now.kind, Kind::FailOpen | Kind::Nodata)
                    })
                    .collect();
                if !lost.iter().any(|&l| l) {
                    continue;
                }
                let mut places: FxHashMap<String, Weight> = FxHashMap::default();
                let mut total = Weight::default();
                let mut all = Weight::default();
                for (i, w) in self.weight.iter().enumerate() {
                    add(&mut all, w);
                    if lost[m.key_of[i] as usize] && (w.nets4 + w.nets6) > 0 {
                        add(places.entry(place(&self.walk.inputs[i])).or_default(), w);
                        add(&mut total, w);
                    }
                }
                if total.nets4 + total.nets6 == 0 {
                    continue;
                }
                services.push(report::failure(&m.name, places, &total, &all, top));
            }
            if !services.is_empty() {
                failing.push(ScenarioFailure { down, services });
            }
        }
        Ok(Resilience {
            k,
            base: base.label(),
            scenarios,
            ok: failing.is_empty(),
            failing,
        })
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Services to simulate (all when empty).
    pub services: Vec<String>,
    pub scenario: Scenario,
    pub qtype: QType,
    /// Check every combination of up to this many regions down.
    pub resilience: Option<usize>,
    /// Places listed per failing scenario and service.
    pub top: usize,
    pub per_network: bool,
}

/// Simulates `snap` (the config at `label`) under `opts`, compared with
/// `against` (another config's snapshot and its label) when given, else
/// with everything up when the scenario takes something down.
pub fn run(
    snap: &Snapshot,
    label: &str,
    against: Option<(&Snapshot, &str)>,
    opts: &Options,
) -> Result<Report, SimError> {
    let started = std::time::Instant::now();
    let per_input = !opts.scenario.partial.is_empty();
    let model = Model::with_keys(snap, &opts.services, opts.qtype, per_input)?;
    let other = match against {
        Some((o, l)) => Some((
            Model::with_keys(o, &opts.services, opts.qtype, per_input)?,
            l,
        )),
        None => None,
    };
    let walked = std::time::Instant::now();
    let all_up = Scenario::default();
    let base = match &other {
        Some((m, l)) => Some((
            m,
            &opts.scenario,
            format!("{l} ({})", opts.scenario.label()),
        )),
        None if !opts.scenario.is_all_up() => Some((&model, &all_up, "all up".to_string())),
        None => None,
    };
    let services = model.simulate(&opts.scenario, base, opts.per_network)?;
    let simulated = std::time::Instant::now();
    let resilience = opts
        .resilience
        .map(|k| model.resilience(&opts.scenario, k, opts.top))
        .transpose()?;
    let ms = |a: std::time::Instant, b: std::time::Instant| (b - a).as_millis() as u64;
    Ok(Report {
        config: label.to_string(),
        health: opts.scenario.label(),
        qtype: opts.qtype.name(),
        networks: model.networks(),
        counting: COUNTING,
        services,
        resilience,
        timings_ms: Timings {
            load: 0,
            walk: ms(started, walked),
            simulate: ms(walked, simulated),
            resilience: ms(simulated, std::time::Instant::now()),
        },
    })
}

/// Every service of `snap`'s zones, in config order, with its zone's
/// number and its number in that zone.
fn all_services(snap: &Snapshot) -> Vec<((usize, usize), &Service)> {
    snap.zones
        .zones
        .iter()
        .enumerate()
        .flat_map(|(z, zone)| {
            zone.services
                .iter()
                .enumerate()
                .map(move |(i, s)| ((z, i), s))
        })
        .collect()
}

/// The names of every service of `snap`, in config order.
pub fn service_names(snap: &Snapshot) -> Vec<String> {
    all_services(snap)
        .iter()
        .map(|(_, s)| s.name.clone())
        .collect()
}

fn add(to: &mut Weight, w: &Weight) {
    to.v4 += w.v4;
    to.v6 += w.v6;
    to.nets4 += w.nets4;
    to.nets6 += w.nets6;
}

/// Service names compare without the trailing dot and case.
fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// The IPv4-mapped block ::ffff:0:0/96.
fn is_mapped(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// The address space each input's listed pieces cover.
fn weights(walk: &Walk) -> Vec<Weight> {
    let mut w = vec![Weight::default(); walk.inputs.len()];
    let listed: Vec<bool> = walk.inputs.iter().map(WalkInput::listed).collect();
    for (i, &(start, input)) in walk.v4.iter().enumerate() {
        let end = walk.v4.get(i + 1).map_or(u32::MAX, |n| n.0 - 1);
        if listed[input as usize] {
            let x = &mut w[input as usize];
            x.v4 += (end - start) as f64 + 1.0;
            x.nets4 += 1;
        }
    }
    for (i, &(start, input)) in walk.v6.iter().enumerate() {
        let end = walk.v6.get(i + 1).map_or(u128::MAX, |n| n.0 - 1);
        if listed[input as usize] && !is_mapped(IpAddr::from(start.to_be_bytes())) {
            let x = &mut w[input as usize];
            x.v6 += (end - start) as f64 + 1.0;
            x.nets6 += 1;
        }
    }
    w
}

/// A service's decision keys: one per distinct group order its location
/// steps give, or one per input where a query decides from the client
/// itself.
fn service_model(
    snap: &Snapshot,
    svc: &Service,
    at: (usize, usize),
    qtype: QType,
    walk: &Walk,
    located: &mut [Option<Location>],
    per_input: bool,
) -> SvcModel {
    let sticky = svc.steps.iter().any(|s| {
        matches!(
            s,
            Step::Weighted(Weighted {
                mode: WeightedMode::Sticky,
                ..
            })
        )
    });
    let compiled = svc.compiled.and_then(|slot| {
        let cg = snap.geo_index.as_ref()?;
        Some((slot, cg))
    });
    let mut keys: Vec<Key> = Vec::new();
    let mut by_order: FxHashMap<Option<Vec<u16>>, u32> = FxHashMap::default();
    let mut key_of = Vec::with_capacity(walk.inputs.len());
    for (i, inp) in walk.inputs.iter().enumerate() {
        let addr = inp.addr;
        let special = crate::geo::is_special(addr);
        // As the answer path does: the compiled table's order where it
        // applies, else the location read for the query.
        let pre: Option<Vec<u16>> = if !svc.uses_location() || special || svc.compiled.is_none() {
            None
        } else if let Some((slot, cg)) = compiled {
            cg.order(slot, addr).map(|(o, _)| o.to_vec())
        } else {
            Some(location_order(&snap.topology, svc, addr, &inp.location))
        };
        let per_client = per_input || sticky || (svc.uses_location() && pre.is_none());
        let make = |located: &mut [Option<Location>]| {
            let loc = if pre.is_some() || !svc.uses_location() {
                Location::default()
            } else {
                *located[i].get_or_insert_with(|| snap.geo.locate(addr))
            };
            Key {
                client: Client { addr, loc },
                pre: pre.clone(),
                per_client,
            }
        };
        let k = if per_client {
            keys.push(make(located));
            keys.len() as u32 - 1
        } else {
            match by_order.get(&pre) {
                Some(&k) => k,
                None => {
                    keys.push(make(located));
                    let k = keys.len() as u32 - 1;
                    by_order.insert(pre.clone(), k);
                    k
                }
            }
        };
        key_of.push(k);
    }
    SvcModel {
        name: svc.name.clone(),
        at,
        family: if svc.cname {
            Family::Any
        } else {
            qtype.family()
        },
        key_of,
        keys,
    }
}

/// A readable place for an input: country-subdivision, country or
/// continent; a CIDR entry; an AS number.
fn place(i: &WalkInput) -> String {
    let text =
        |b: &[u8]| String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(&[])).into_owned();
    let l = &i.location;
    let located = if !i.city {
        String::new()
    } else if l.country != [0, 0] {
        let (c, s) = (text(&l.country), text(&l.subdivision));
        if s.is_empty() {
            c
        } else {
            format!("{c}-{s}")
        }
    } else if l.continent != [0, 0] {
        text(&l.continent)
    } else {
        "(unknown place)".to_string()
    };
    match (i.cidr, located.is_empty()) {
        (Some((a, p)), true) => format!("{a}/{p}"),
        (Some((a, p)), false) => format!("{a}/{p} in {located}"),
        (None, false) => located,
        (None, true) if l.asn != 0 => format!("AS{}", l.asn),
        (None, true) => "(not located)".to_string(),
    }
}

/// Every set of 1 to `k` of `n` items, smallest first.
fn combinations(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    fn rec(start: usize, n: usize, size: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == size {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            rec(i + 1, n, size, cur, out);
            cur.pop();
        }
    }
    for size in 1..=k.min(n) {
        rec(0, n, size, &mut cur, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_live_health_document_becomes_downs_and_drains() {
        let v = serde_json::json!({
            "overrides": [
                {"target": "eu", "state": "drain"},
                {"target": "us-web/10.2.0.2", "state": "force_down"},
                {"target": "ap-web/10.3.0.1", "state": "force_up"}
            ],
            "endpoints": [
                {"endpoint": "us-web/10.2.0.1", "checked_up": false, "override": null},
                {"endpoint": "ap-web/10.3.0.1", "checked_up": false,
                 "override": {"target": "ap-web/10.3.0.1", "state": "force_up"}},
                {"endpoint": "eu-web/10.1.0.1", "checked_up": true, "override": null}
            ]
        });
        let mut s = Scenario::default();
        assert_eq!(s.add_live(&v), 3);
        assert_eq!(s.drain, ["eu"]);
        assert_eq!(s.down, ["us-web/10.2.0.1", "us-web/10.2.0.2"]);
    }

    use super::*;

    #[test]
    fn combinations_of_up_to_k_regions() {
        assert_eq!(combinations(3, 1), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(combinations(6, 2).len(), 6 + 15);
        assert_eq!(combinations(2, 5).len(), 3);
        assert!(combinations(4, 0).is_empty());
    }
}

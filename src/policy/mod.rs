//! The steering core: regions, pools and endpoints, and the chain of small
//! steps that turns (candidates, client, health) into the endpoints a
//! service answers.
//!
//! This module is pure: it reads no config, opens no socket, spawns no task
//! and knows nothing of the server around it (a test reads its `use` lines
//! to keep it so). The config is compiled into these types by
//! `snapshot::steering`; health reaches it as a [`HealthView`] indexed like
//! the topology's endpoints.
//!
//! Every step is a pure function of its inputs, defined in one file of
//! [`steps`]; when a [`Trace`] is passed it also records why each candidate
//! was kept or dropped, so `explain` runs the very code that answers
//! queries. On the query path no trace is kept and all working memory lives
//! in a reusable [`Scratch`]: deciding allocates nothing.

use std::net::IpAddr;
use std::ops::Range;

use serde::{Deserialize, Deserializer};

pub mod health;
pub mod run;
pub mod steps;
pub mod trace;

pub use health::{AdminState, EndpointHealth, HealthView, VantageRtt};
pub use run::{decide, decide_from, fnv1a, location_order, mix64, Scratch};
pub use steps::geo::{GeoMap, GeoMatch};
pub use steps::latency::Latency;
pub use steps::{Stage, Step};
pub use trace::{Dropped, StepTrace, Trace};

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
}

/// A candidate group of a service: a region (the service's pools there) or
/// one pool named directly.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub region: u16,
    pub pools: Vec<u16>,
}

/// How `weighted` picks among candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightedMode {
    #[default]
    Random,
    Sticky,
}

/// What a service answers when every candidate is down.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum AllDown {
    /// Answer as if everything were up (Route 53's behaviour).
    #[default]
    FailOpen,
    /// NOERROR with no address records.
    Nodata,
    /// These addresses.
    Addresses(Vec<IpAddr>),
    /// This name, as a CNAME.
    Cname(String),
}

impl<'de> Deserialize<'de> for AllDown {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fallback {
            #[serde(default)]
            addresses: Option<Vec<IpAddr>>,
            #[serde(default)]
            cname: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Table(Fallback),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) => match w.as_str() {
                "fail_open" => Ok(AllDown::FailOpen),
                "nodata" => Ok(AllDown::Nodata),
                other => Err(serde::de::Error::custom(format!(
                    "all_down = {other:?}: expected \"fail_open\", \"nodata\", {{ addresses = [...] }} or {{ cname = \"...\" }}"
                ))),
            },
            Raw::Table(Fallback {
                addresses: Some(a),
                cname: None,
            }) if !a.is_empty() => Ok(AllDown::Addresses(a)),
            Raw::Table(Fallback {
                addresses: None,
                cname: Some(c),
            }) => Ok(AllDown::Cname(c)),
            Raw::Table(_) => Err(serde::de::Error::custom(
                "all_down table needs exactly one of: addresses = [...] (non-empty), cname = \"...\"",
            )),
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

impl Service {
    /// Whether this service's location-dependent part depends only on City
    /// data and can be compiled per address range: it has location steps,
    /// none of them after a step that chooses groups by health, and every
    /// one of them decides from the City record alone.
    pub fn compilable(&self) -> bool {
        let mut seen_groups = false;
        let mut any = false;
        for s in &self.steps {
            match s.stage() {
                Stage::Groups => seen_groups = true,
                Stage::Location => {
                    if seen_groups || !s.city_only() {
                        return false;
                    }
                    any = true;
                }
                Stage::Filter | Stage::Endpoints => {}
            }
        }
        any
    }

    /// Whether any step orders or chooses by the client's location.
    pub fn uses_location(&self) -> bool {
        self.steps.iter().any(|s| s.stage() == Stage::Location)
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
    pub loc: crate::geo::Location,
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

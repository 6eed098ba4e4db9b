//! A service: a dynamic name, its candidate groups and its chain of steps,
//! what it answers when everything is down, and what a decision returns.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

use super::steps::{Stage, Step};
use super::topology::Group;

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
    /// Slot of this service's shares in `HealthView::shares`, if its chain
    /// has a `capacity` step.
    pub capacity_slot: Option<u32>,
}

impl Service {
    /// Whether this service's location-dependent part can be compiled per
    /// address range: it has location steps, none of them after a step that
    /// chooses groups by health, and every one of them decides from the
    /// client's address, City record and AS number alone (see
    /// [`Step::compilable`]).
    pub fn compilable(&self) -> bool {
        let mut seen_groups = false;
        let mut any = false;
        for s in &self.steps {
            match s.stage() {
                Stage::Groups => seen_groups = true,
                Stage::Location => {
                    if seen_groups || !s.compilable() {
                        return false;
                    }
                    any = true;
                }
                Stage::Filter | Stage::Endpoints => {}
            }
        }
        any
    }

    /// The service's `capacity` step, if its chain has one.
    pub fn capacity(&self) -> Option<&super::steps::capacity::Capacity> {
        self.steps.iter().find_map(|s| match s {
            Step::Capacity(c) => Some(c),
            _ => None,
        })
    }

    /// Whether any step orders or chooses by the client's location.
    pub fn uses_location(&self) -> bool {
        self.steps.iter().any(|s| s.stage() == Stage::Location)
    }
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

//! The shape every service steers over: regions, pools of endpoints, the
//! groups a service's candidates form, and the client a decision is for.

use std::net::IpAddr;
use std::ops::Range;

/// A place where pools live.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub coords: (f64, f64),
    /// What the region's tier can carry (`[regions.NAME] capacity`); none:
    /// its load is never judged (the `capacity` step keeps it in place).
    pub capacity: Option<Capacity>,
}

/// What a region's tier can carry: open connections and requests per
/// second (new connections on TCP listeners, requests on HTTP ones), either
/// or both.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Capacity {
    pub connections: Option<f64>,
    pub rps: Option<f64>,
}

impl Capacity {
    /// The load as a fraction of this capacity: the larger of
    /// connections / `connections` and rate / `rps` (over the limits that
    /// are set); None when neither is.
    pub fn fraction(&self, connections: f64, rps: f64) -> Option<f64> {
        let of = |used: f64, cap: Option<f64>| cap.filter(|&c| c > 0.0).map(|c| used / c);
        match (of(connections, self.connections), of(rps, self.rps)) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0).max(b.unwrap_or(0.0))),
        }
    }
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
    pub(crate) fn admits(self, t: &Target) -> bool {
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

/// FNV-1a of a string: stable across builds and platforms (endpoint
/// identities hash with it, for rendezvous hashing).
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

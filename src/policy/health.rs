//! The health the steering steps read: one [`EndpointHealth`] per endpoint
//! of a topology, and RTTs measured from each vantage. The health service
//! publishes its view by endpoint identity; the snapshot maps it onto this
//! indexed form when it compiles.

use serde::{Deserialize, Serialize};

/// Admin override of an endpoint's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The regional tier behind this address has fewer healthy backends
    /// than its pool's `min_healthy_tier` (counts as down unless forced up).
    pub capacity_low: bool,
    /// A partial drain: the share of client subnets (in ten-thousandths,
    /// 1..=9999; 0: none) for which the endpoint is taken as down. Which
    /// subnets is fixed by [`partial_position`], so a client does not flap
    /// and a rising share only adds subnets to those already moved.
    pub partial: u16,
}

/// The client prefixes a partial drain decides by (and the ECS scope an
/// answer it touches is given).
pub const PARTIAL_PREFIX_V4: u8 = 24;
pub const PARTIAL_PREFIX_V6: u8 = 56;

/// A partial drain's share as stored in [`EndpointHealth::partial`]:
/// `fraction` in (0, 1) rounded to ten-thousandths, at least 1 and at
/// most 9999 (a whole drain is `AdminState::Drain`).
pub fn partial_units(fraction: f64) -> u16 {
    (fraction * 10_000.0).round().clamp(1.0, 9_999.0) as u16
}

/// Where the client `addr` stands for partial drains, in [0, 1): a stable
/// hash of its /24 (IPv4) or /56 (IPv6). A partial drain of share `f`
/// moves the clients below `f`, the same ones on every node.
pub fn partial_position(addr: std::net::IpAddr) -> f64 {
    use super::hash::{mix64, subnet_key};
    let (key, _) = subnet_key(addr, PARTIAL_PREFIX_V4, PARTIAL_PREFIX_V6);
    let h = mix64(key ^ 0x7061_7274_6961_6c64);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            checked_up: true,
            admin: AdminState::None,
            capacity_low: false,
            partial: 0,
        }
    }
}

impl EndpointHealth {
    pub fn up(&self) -> bool {
        match self.admin {
            AdminState::ForceUp => true,
            AdminState::Drain | AdminState::ForceDown => false,
            AdminState::None => self.checked_up && !self.capacity_low,
        }
    }
    /// The share of client subnets a partial drain moves (0: none).
    pub fn partial_share(&self) -> f64 {
        f64::from(self.partial) / 10_000.0
    }

    /// Whether the endpoint is down for the client at `addr`: down for
    /// everyone, or partially drained and the client's subnet below the
    /// share.
    pub fn up_for(&self, addr: std::net::IpAddr) -> bool {
        self.up()
            && (self.partial == 0
                || self.admin == AdminState::ForceUp
                || partial_position(addr) >= self.partial_share())
    }

    pub fn reason(&self) -> &'static str {
        match (self.admin, self.checked_up) {
            (AdminState::ForceUp, _) => "forced up by an operator",
            (AdminState::Drain, _) => "drained by an operator",
            (AdminState::ForceDown, _) => "forced down by an operator",
            (AdminState::None, true) if self.capacity_low => {
                "down (its tier has too few healthy backends: min_healthy_tier)"
            }
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

/// Which health state this is. `seq` orders the states one node
/// publishes; `id` names the state itself, so that two nodes that decided
/// from the same observations show the same id (`health::epoch` computes
/// it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Epoch {
    /// +1 at every state this node publishes (RTT changes included); 0
    /// before the first. Comparable inside one process only.
    pub seq: u64,
    /// The consensus id: a fixed-key hash of every endpoint's verdict and
    /// the remote vantages' votes it was decided from.
    pub id: u64,
    /// The newest time a counted remote vote changed, by the clock of the
    /// vantage that changed (unix seconds): of two ids, the one with the
    /// later `since` is the newer. None when no remote vote counts.
    pub since: Option<f64>,
    /// When this node's `id` last changed (its own clock, unix seconds).
    pub changed_at: f64,
    /// How often `id` changed since this node started.
    pub changes: u64,
}

impl Epoch {
    /// The id as written everywhere (status, metrics, NSID, explain):
    /// 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.id)
    }
}

/// A region's tier load as this node knows it: the sum of the fresh
/// reports of the tier nodes that run the region.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegionLoad {
    /// Open connections (smoothed by each tier node over a few seconds).
    pub connections: f64,
    /// Requests per second (smoothed likewise).
    pub rps: f64,
    /// Tier nodes whose fresh reports were summed.
    pub reporters: u32,
    /// When the newest of them was received (unix seconds): a new value is
    /// a new sample for the `capacity` step.
    pub at: f64,
    /// The load as a fraction of the region's capacity (see
    /// [`Capacity::fraction`](super::topology::Capacity::fraction)); None
    /// when the region has none.
    pub fraction: Option<f64>,
}

/// Why a share is where it is going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShareWhy {
    /// No fresh load report (or no capacity): back to the full share.
    #[default]
    NoLoad,
    /// Load below `low`: rising toward what fills the band.
    Below,
    /// Load below `low` and the region shed to nothing: probing back.
    Probe,
    /// Load within the band: holding.
    Hold,
    /// Load above `high`: falling toward what empties the band's excess.
    Above,
}

impl ShareWhy {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareWhy::NoLoad => "no load known",
            ShareWhy::Below => "below low",
            ShareWhy::Probe => "shed, probing back",
            ShareWhy::Hold => "within the band",
            ShareWhy::Above => "above high",
        }
    }
}

/// One group's share for the `capacity` step, and how it is moving
/// (`steps::capacity` moves it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share {
    /// The fraction of client subnets that keep the group in its place.
    pub share: f64,
    /// Where the share is going (at most `max_step` per TTL).
    pub target: f64,
    /// The share as resolvers act on it: `share` followed over one TTL.
    pub seen: f64,
    /// `RegionLoad::at` of the sample the target came from (0: none).
    pub sample: f64,
    /// When `share` and `seen` were last moved (unix seconds; 0: never).
    pub at: f64,
    pub why: ShareWhy,
}

impl Default for Share {
    fn default() -> Self {
        Share {
            share: 1.0,
            target: 1.0,
            seen: 1.0,
            sample: 0.0,
            at: 0.0,
            why: ShareWhy::NoLoad,
        }
    }
}

impl Share {
    /// Nothing left to move: the share is at its target and resolvers act
    /// on it.
    pub fn at_rest(&self) -> bool {
        self.share == self.target && self.seen == self.share
    }

    /// The same state, whenever it was last moved.
    pub fn same(&self, o: &Share) -> bool {
        Share { at: 0.0, ..*self } == Share { at: 0.0, ..*o }
    }
}

/// Health of every endpoint of a topology, indexed like its endpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthView {
    pub endpoints: Vec<EndpointHealth>,
    /// Measured RTTs per vantage (this node first), for `latency`.
    pub rtt: Vec<VantageRtt>,
    /// The health epoch this view was made from (`seq` 0: before any).
    pub epoch: Epoch,
    /// Tier load per region (topology index); None: no fresh report.
    pub load: Vec<Option<RegionLoad>>,
    /// The `capacity` step's shares: per service slot
    /// (`Service::capacity_slot`), one per group of the service. Moved off
    /// the answer path (`snapshot::Snapshot::advance_capacity`); an empty
    /// or missing list keeps every group in place.
    pub shares: Vec<Vec<Share>>,
}

impl HealthView {
    pub fn all_up(n: usize) -> HealthView {
        HealthView {
            endpoints: vec![EndpointHealth::default(); n],
            ..HealthView::default()
        }
    }

    /// The load of region `r`, if a fresh report has it.
    pub fn region_load(&self, r: u16) -> Option<&RegionLoad> {
        self.load.get(r as usize).and_then(Option::as_ref)
    }
    pub fn up(&self, ep: u32) -> bool {
        self.endpoints.get(ep as usize).is_none_or(|h| h.up())
    }
    pub fn get(&self, ep: u32) -> EndpointHealth {
        self.endpoints.get(ep as usize).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn a_partial_drain_position_is_stable_per_subnet_and_spreads_evenly() {
        let at = |s: &str| partial_position(s.parse::<IpAddr>().expect("addr"));
        assert_eq!(at("192.0.2.1"), at("192.0.2.254"), "one /24, one position");
        assert_ne!(at("192.0.2.1"), at("192.0.3.1"));
        assert_eq!(at("2001:db8:0:ff::1"), at("2001:db8:0:0::9"), "one /56");
        assert_ne!(at("2001:db8:0:100::1"), at("2001:db8::1"));
        let n = 20_000u32;
        for share in [0.1, 0.5, 0.9] {
            let below = (0..n)
                .filter(|i| partial_position(IpAddr::from((i << 8).to_be_bytes())) < share)
                .count() as f64;
            assert!(
                (below / f64::from(n) - share).abs() < 0.02,
                "{share}: {below}"
            );
        }
    }

    #[test]
    fn a_partial_drain_takes_the_endpoint_down_for_the_subnets_below_its_share() {
        assert_eq!(partial_units(0.1), 1000);
        assert_eq!(partial_units(0.00001), 1, "never 0: that is no drain");
        assert_eq!(partial_units(0.99999), 9999, "never whole: that is a drain");
        let h = EndpointHealth {
            partial: partial_units(0.5),
            ..EndpointHealth::default()
        };
        assert!(h.up(), "up for everyone else");
        let (mut kept, mut moved) = (0, 0);
        for i in 0..1000u32 {
            let a = IpAddr::from((i << 8).to_be_bytes());
            if h.up_for(a) {
                kept += 1;
                assert!(partial_position(a) >= 0.5);
            } else {
                moved += 1;
            }
        }
        assert!(kept > 400 && moved > 400, "{kept} {moved}");
        let down = EndpointHealth {
            checked_up: false,
            ..h
        };
        assert!(!down.up_for(IpAddr::from([0, 0, 0, 0])));
    }
}

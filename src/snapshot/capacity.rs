//! The `capacity` step's shares in a snapshot: one per group of every
//! service whose chain has the step, kept in the health view (what the
//! answer path reads) and moved off the answer path — when a new health
//! state brings new load samples ([`Snapshot::with_health`]) and on a timer
//! while a share is still moving ([`Snapshot::advance_capacity`]). A reload
//! carries them over by service and group name.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::{Snapshot, ZoneTable};
use crate::health::HealthState;
use crate::policy::{HealthView, Service, Share};

fn services(zones: &ZoneTable) -> impl Iterator<Item = &Service> {
    zones.zones.iter().flat_map(|z| z.services.iter())
}

/// Gives every service with a `capacity` step its slot (in zone order)
/// and returns the full shares each starts with.
pub fn assign_slots(zones: &mut ZoneTable) -> Vec<Vec<Share>> {
    let mut shares = Vec::new();
    for svc in zones.zones.iter_mut().flat_map(|z| z.services.iter_mut()) {
        svc.capacity_slot = svc.capacity().map(|_| {
            shares.push(vec![Share::default(); svc.groups.len()]);
            shares.len() as u32 - 1
        });
    }
    shares
}

/// The shares of `zones` taken from `old` (a snapshot being replaced) by
/// service and group name; new services and groups start full.
pub fn carry(zones: &ZoneTable, old: &Snapshot) -> Vec<Vec<Share>> {
    let mut by_name: BTreeMap<(&str, &str), Share> = BTreeMap::new();
    for svc in services(&old.zones) {
        let Some(list) = svc
            .capacity_slot
            .and_then(|s| old.health.shares.get(s as usize))
        else {
            continue;
        };
        for (g, sh) in svc.groups.iter().zip(list) {
            by_name.insert((svc.name.as_str(), g.name.as_str()), *sh);
        }
    }
    let mut out = Vec::new();
    for svc in services(zones).filter(|s| s.capacity_slot.is_some()) {
        out.push(
            svc.groups
                .iter()
                .map(|g| {
                    by_name
                        .get(&(svc.name.as_str(), g.name.as_str()))
                        .copied()
                        .unwrap_or_default()
                })
                .collect(),
        );
    }
    out
}

/// The shares of `view` moved to `now` against its load; None when none
/// of them changed (apart from the time they were looked at).
pub fn advance(zones: &ZoneTable, view: &HealthView, now: f64) -> Option<Vec<Vec<Share>>> {
    let mut next = view.shares.clone();
    let mut changed = false;
    for svc in services(zones) {
        let (Some(slot), Some(step)) = (svc.capacity_slot, svc.capacity()) else {
            continue;
        };
        let Some(list) = next.get_mut(slot as usize) else {
            continue;
        };
        list.resize(svc.groups.len(), Share::default());
        for (g, sh) in svc.groups.iter().zip(list.iter_mut()) {
            let load = view
                .region_load(g.region)
                .and_then(|l| l.fraction.map(|f| (f, l.at)));
            let moved = step.advance(sh, load, now, f64::from(svc.ttl), crate::tier::load::TAU);
            if !moved.same(sh) {
                *sh = moved;
                changed = true;
            }
        }
    }
    changed.then_some(next)
}

impl Snapshot {
    /// This snapshot with its capacity shares moved to `now` (unix
    /// seconds), or None when nothing moved: the timer that keeps shares
    /// ramping between load samples.
    pub fn advance_capacity(&self, now: f64) -> Option<Snapshot> {
        let shares = advance(&self.zones, &self.health, now)?;
        let mut view = (*self.health).clone();
        view.shares = shares;
        let mut next = self.clone();
        next.health = Arc::new(view);
        Some(next)
    }

    /// Whether any service steers by capacity.
    pub fn steers_by_capacity(&self) -> bool {
        !self.health.shares.is_empty()
    }
}

/// A region's capacity and load, as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct RegionCapacity {
    pub region: String,
    /// What the region's tier can carry (None: not configured).
    pub capacity_connections: Option<f64>,
    pub capacity_rps: Option<f64>,
    /// What it carries now, summed over the fresh reports (None: no fresh
    /// report).
    pub connections: Option<f64>,
    pub rps: Option<f64>,
    /// The load as a fraction of the capacity.
    pub load: Option<f64>,
    /// Who reported it.
    pub reporters: Vec<String>,
    /// Seconds since the newest report was received.
    pub age_s: Option<f64>,
}

/// One group's share, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupShare {
    pub group: String,
    pub region: String,
    pub share: f64,
    pub target: f64,
    /// The share resolvers still act on (followed over one TTL).
    pub seen: f64,
    pub why: &'static str,
    /// When the share was last moved (unix seconds; null: never).
    pub moved_at: Option<f64>,
}

/// A service's `capacity` step and its shares.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceShares {
    pub service: String,
    pub ttl: u32,
    pub low: f64,
    pub high: f64,
    pub max_step: f64,
    pub groups: Vec<GroupShare>,
}

/// Capacity and load of every region, and every share.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityStatus {
    pub regions: Vec<RegionCapacity>,
    pub services: Vec<ServiceShares>,
}

/// What the admin API shows of capacity: the snapshot's regions and
/// shares, with the reporters `state` summed.
pub fn status(snap: &Snapshot, state: &HealthState, now: f64) -> CapacityStatus {
    let topo = &snap.topology;
    let regions = topo
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let load = snap.health.region_load(i as u16);
            RegionCapacity {
                region: r.name.clone(),
                capacity_connections: r.capacity.and_then(|c| c.connections),
                capacity_rps: r.capacity.and_then(|c| c.rps),
                connections: load.map(|l| l.connections),
                rps: load.map(|l| l.rps),
                load: load.and_then(|l| l.fraction),
                reporters: state
                    .load
                    .get(&r.name)
                    .map(|s| s.reporters.clone())
                    .unwrap_or_default(),
                age_s: load.map(|l| (now - l.at).max(0.0)),
            }
        })
        .collect();
    let services = services(&snap.zones)
        .filter_map(|svc| {
            let step = svc.capacity()?;
            let list = svc
                .capacity_slot
                .and_then(|s| snap.health.shares.get(s as usize));
            Some(ServiceShares {
                service: svc.name.clone(),
                ttl: svc.ttl,
                low: step.low,
                high: step.high,
                max_step: step.max_step,
                groups: svc
                    .groups
                    .iter()
                    .enumerate()
                    .map(|(i, g)| {
                        let sh = list.and_then(|l| l.get(i)).copied().unwrap_or_default();
                        GroupShare {
                            group: g.name.clone(),
                            region: topo.regions[g.region as usize].name.clone(),
                            share: sh.share,
                            target: sh.target,
                            seen: sh.seen,
                            why: sh.why.as_str(),
                            moved_at: (sh.at > 0.0).then_some(sh.at),
                        }
                    })
                    .collect(),
            })
        })
        .collect();
    CapacityStatus { regions, services }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::health::RegionLoadSum;

    const CFG: &str = "[regions.eu]\nlocation = [50.0, 8.0]\ncapacity = { connections = 100 }\n\
        [regions.us]\nlocation = [39.0, -77.0]\n\
        [pools.eu-p]\nregion = \"eu\"\nendpoints = [{ address = \"10.1.0.1\" }]\n\
        [pools.us-p]\nregion = \"us\"\nendpoints = [{ address = \"10.2.0.1\" }]\n\
        [zones.\"example.com\"]\nfile = \"z.zone\"\n\
        [zones.\"example.com\".services.www]\nttl = 10\npools = [\"eu-p\", \"us-p\"]\n\
        chain = [\"capacity\", \"failover\"]\n";

    fn snapshot(dir: &std::path::Path, extra: &str) -> Snapshot {
        std::fs::write(
            dir.join("z.zone"),
            "$ORIGIN example.com.\n@ 60 SOA ns h 1 2 3 4 5\n@ 60 NS ns\nns 60 A 192.0.2.1\n",
        )
        .expect("zone");
        let c = Config::parse(&dir.join("g.toml"), &format!("{CFG}{extra}")).expect("config");
        super::super::build(c, 1, None).expect("snapshot").0
    }

    fn state(seq: u64, connections: f64, at: f64) -> HealthState {
        let mut s = HealthState::default();
        s.epoch.seq = seq;
        s.load.insert(
            "eu".into(),
            RegionLoadSum {
                connections,
                rps: 0.0,
                reporters: vec!["tier".into()],
                at,
            },
        );
        s
    }

    #[test]
    fn load_samples_move_shares_off_the_answer_path_and_a_reload_carries_them_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = snapshot(dir.path(), "");
        assert_eq!(snap.health.shares, vec![vec![Share::default(); 2]]);
        assert!(
            snap.advance_capacity(1.0).is_none(),
            "at rest: nothing stored"
        );
        // eu at twice its capacity: a target below 1, and us (no capacity)
        // keeps its full share.
        let s1 = snap.with_health(&state(1, 200.0, 50.0)).expect("newer");
        let eu = s1.health.shares[0][0];
        assert!(
            eu.target < 1.0 && eu.why == crate::policy::ShareWhy::Above,
            "{eu:?}"
        );
        assert_eq!(s1.health.shares[0][1].target, 1.0);
        assert_eq!(s1.health.region_load(0).and_then(|l| l.fraction), Some(2.0));
        assert_eq!(s1.health.region_load(1).and_then(|l| l.fraction), None);
        // The timer moves it: max_step (0.2) per TTL (10 s).
        let at = eu.at;
        let s2 = s1.advance_capacity(at + 5.0).expect("moving");
        assert!((s2.health.shares[0][0].share - 0.9).abs() < 1e-9);
        // A reload with another group order and a new service: shares
        // follow names; the new service starts full.
        let next = snapshot(
            dir.path(),
            "[zones.\"example.com\".services.api]\npools = [\"us-p\", \"eu-p\"]\nchain = [\"capacity\", \"failover\"]\n",
        );
        let carried = carry(&next.zones, &s2);
        let slot = |name: &str| {
            services(&next.zones)
                .find(|s| s.name.starts_with(name))
                .and_then(|s| s.capacity_slot)
                .expect("slot") as usize
        };
        assert_eq!(carried[slot("www")], s2.health.shares[0]);
        assert_eq!(carried[slot("api")], vec![Share::default(); 2]);
        let st = status(&s2, &state(1, 200.0, 50.0), 60.0);
        assert_eq!(st.regions[0].load, Some(2.0));
        assert_eq!(st.regions[0].reporters, ["tier"]);
        assert_eq!(st.regions[0].age_s, Some(10.0));
        assert_eq!(st.services[0].groups[0].why, "above high");
    }
}

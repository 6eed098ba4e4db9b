//! The working memory of a chain ([`Scratch`], reused across queries so
//! deciding allocates nothing) and the read-only context every step sees
//! ([`Run`]).

use super::health::{HealthView, Share};
use super::topology::{Client, Family, Group, Topology};
use crate::geo::Location;

/// Reusable working memory for [`decide`], and the state of the chain
/// being run.
#[derive(Debug)]
pub struct Scratch {
    pub(crate) groups: Vec<u16>,
    pub(crate) keyed: Vec<(f64, u16)>,
    pub(crate) cand: Vec<(f64, u32)>,
    /// The decided endpoints (indexes into the topology).
    pub out: Vec<u32>,
    pub(crate) rng: fastrand::Rng,
    /// Endpoints have been chosen: `out` is the candidate list from now on.
    pub(crate) explicit: bool,
    /// `healthy` ran: endpoints that are down are no longer candidates.
    pub(crate) healthy: bool,
    /// The client prefix the steps so far depended on.
    pub(crate) scope: u8,
    /// The part of `scope` owed to steps other than the location steps.
    pub(crate) without_location: u8,
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
            explicit: false,
            healthy: false,
            scope: 0,
            without_location: 0,
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

    /// Sorts the candidate groups by `key`, stably, without allocating.
    pub(crate) fn sort_groups(&mut self, key: impl Fn(u16) -> f64) {
        self.keyed.clear();
        self.keyed.extend(self.groups.iter().map(|&g| (key(g), g)));
        // Insertion sort: stable, in place, no allocation; lists are short.
        for i in 1..self.keyed.len() {
            let mut j = i;
            while j > 0 && self.keyed[j - 1].0.total_cmp(&self.keyed[j].0).is_gt() {
                self.keyed.swap(j - 1, j);
                j -= 1;
            }
        }
        self.groups.clear();
        self.groups.extend(self.keyed.iter().map(|&(_, g)| g));
    }

    /// Turns the candidate groups into candidate endpoints (of the asked
    /// family; only those up once `healthy` ran), in group order.
    pub(crate) fn flatten(&mut self, r: &Run<'_>) {
        self.out.clear();
        for i in 0..self.groups.len() {
            let g = self.groups[i];
            for e in r.group_eps(g) {
                if r.admits(e) && (!self.healthy || r.alive(e)) && !self.out.contains(&e) {
                    self.out.push(e);
                }
            }
        }
        self.explicit = true;
    }

    /// Resets the chain state for a run starting from `initial`.
    pub(crate) fn start(&mut self, initial: &[u16]) {
        self.groups.clear();
        self.groups.extend_from_slice(initial);
        self.out.clear();
        self.explicit = false;
        self.healthy = false;
        self.scope = 0;
        self.without_location = 0;
    }
}

/// What every step of one run reads.
pub struct Run<'a> {
    pub topo: &'a Topology,
    /// The service's candidate groups.
    pub groups: &'a [Group],
    pub client: &'a Client,
    pub family: Family,
    pub health: &'a HealthView,
    /// Answer as if every endpoint were up (fail open, compiled orders).
    pub ignore_health: bool,
    /// Group order already decided from the client's location (compiled
    /// geo): location steps are then skipped.
    pub pre: Option<&'a [u16]>,
    /// The service's `capacity` shares, one per group (empty: every group
    /// keeps its place).
    pub shares: &'a [Share],
}

impl Run<'_> {
    /// Whether endpoint `ep` can take this client: up, and not moved away
    /// from it by a partial drain.
    pub fn alive(&self, ep: u32) -> bool {
        self.ignore_health || self.health.get(ep).up_for(self.client.addr)
    }
    /// Why `ep` does not take this client (see [`alive`](Self::alive)).
    pub fn why_down(&self, ep: u32) -> String {
        let h = self.health.get(ep);
        if h.up() && h.partial > 0 {
            format!(
                "partially drained by an operator ({:.0} % of client subnets): this client's subnet is at {:.3}, below {:.2}",
                h.partial_share() * 100.0,
                super::health::partial_position(self.client.addr),
                h.partial_share()
            )
        } else {
            h.reason().to_string()
        }
    }
    /// Whether a partial drain covers any endpoint of the service: the
    /// answer then depends on the client's /24 or /56.
    pub fn partial_drain(&self) -> bool {
        !self.ignore_health
            && self
                .groups
                .iter()
                .flat_map(|g| g.pools.iter())
                .flat_map(|&p| self.topo.pools[p as usize].endpoints.clone())
                .any(|e| self.health.get(e).partial > 0)
    }
    pub fn admits(&self, ep: u32) -> bool {
        self.topo
            .endpoints
            .get(ep as usize)
            .is_some_and(|e| self.family.admits(&e.target))
    }
    pub fn group_eps(&self, g: u16) -> impl Iterator<Item = u32> + '_ {
        self.groups[g as usize]
            .pools
            .iter()
            .flat_map(move |&p| self.topo.pools[p as usize].endpoints.clone())
    }
    pub fn ep_label(&self, ep: u32) -> String {
        self.topo.endpoints[ep as usize].identity.clone()
    }
    pub fn group_label(&self, g: u16) -> String {
        self.groups[g as usize].name.clone()
    }
    pub fn group_coords(&self, g: u16) -> (f64, f64) {
        self.topo.regions[self.groups[g as usize].region as usize].coords
    }
    pub fn loc(&self) -> &Location {
        &self.client.loc
    }
}

//! Running a chain: the working memory ([`Scratch`]), the read-only context
//! every step sees ([`Run`]), [`decide`] (a service's answer for a client,
//! with the all-down fallbacks) and [`location_order`] (what the location
//! steps alone decide, which compiled geo stores per address range). Both
//! run the steps' own code; nothing here knows what a particular step does.

use std::net::IpAddr;

use super::health::HealthView;
use super::steps::Stage;
use super::trace::{Note, StepTrace, Trace};
use super::{Answer, Client, Decision, Family, Service, Topology};
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

    fn start(&mut self, initial: &[u16]) {
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
    pub svc: &'a Service,
    pub client: &'a Client,
    pub family: Family,
    pub health: &'a HealthView,
    /// Answer as if every endpoint were up (fail open, compiled orders).
    pub ignore_health: bool,
    /// Group order already decided from the client's location (compiled
    /// geo): location steps are then skipped.
    pub pre: Option<&'a [u16]>,
}

impl Run<'_> {
    pub fn alive(&self, ep: u32) -> bool {
        self.ignore_health || self.health.up(ep)
    }
    pub fn admits(&self, ep: u32) -> bool {
        self.topo
            .endpoints
            .get(ep as usize)
            .is_some_and(|e| self.family.admits(&e.target))
    }
    pub fn group_eps(&self, g: u16) -> impl Iterator<Item = u32> + '_ {
        self.svc.groups[g as usize]
            .pools
            .iter()
            .flat_map(move |&p| self.topo.pools[p as usize].endpoints.clone())
    }
    pub fn ep_label(&self, ep: u32) -> String {
        self.topo.endpoints[ep as usize].identity.clone()
    }
    pub fn group_label(&self, g: u16) -> String {
        self.svc.groups[g as usize].name.clone()
    }
    pub fn group_coords(&self, g: u16) -> (f64, f64) {
        self.topo.regions[self.svc.groups[g as usize].region as usize].coords
    }
    pub fn loc(&self) -> &Location {
        &self.client.loc
    }
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

/// Runs the chain once; leaves the endpoints in `sc.out` and the scopes in
/// `sc.scope` / `sc.without_location`.
fn run(r: &Run<'_>, sc: &mut Scratch, mut trace: Option<&mut Trace>) {
    sc.start(r.pre.unwrap_or(&r.svc.initial));
    for step in &r.svc.steps {
        let location = step.stage() == Stage::Location;
        if r.pre.is_some() && location {
            continue;
        }
        let Some(t) = trace.as_deref_mut() else {
            step.run(r, sc, None);
            continue;
        };
        let before = sc.groups.clone();
        let mut note = Note::default();
        step.run(r, sc, Some(&mut note));
        let kept: Vec<String> = if sc.explicit {
            sc.out.iter().map(|&e| r.ep_label(e)).collect()
        } else {
            sc.groups.iter().map(|&g| r.group_label(g)).collect()
        };
        if location {
            for &g in before.iter().filter(|g| !sc.groups.contains(g)) {
                let label = r.group_label(g);
                if !note.dropped.iter().any(|d| d.candidate == label) {
                    note.drop(label, "not in the chosen list");
                }
            }
        }
        t.steps.push(StepTrace {
            step: step.name().to_string(),
            detail: note.detail,
            kept,
            dropped: note.dropped,
        });
    }
    if !sc.explicit {
        sc.flatten(r);
    }
}

/// The group order the location steps of `svc` give a client at `loc`
/// (what compiled geo stores per address range): the same step code as a
/// query runs, with every endpoint taken as up.
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
    sc.start(&svc.initial);
    for step in svc.steps.iter().filter(|s| s.stage() == Stage::Location) {
        step.run(&r, &mut sc, None);
    }
    sc.groups
}

fn decision(answer: Answer, sc: &Scratch) -> Decision {
    Decision {
        answer,
        scope: sc.scope,
        scope_without_location: sc.without_location,
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
    run(&r, sc, trace.as_deref_mut());
    if !sc.out.is_empty() {
        return decision(Answer::Endpoints, sc);
    }
    // Empty: because of health, or because nothing has this family?
    let any_down = svc
        .groups
        .iter()
        .flat_map(|g| g.pools.iter())
        .flat_map(|&p| topo.pools[p as usize].endpoints.clone())
        .any(|e| r.admits(e) && !health.up(e));
    let note = |trace: Option<&mut Trace>, text: &str| {
        if let Some(t) = trace {
            t.notes.push(text.to_string());
        }
    };
    if !any_down {
        note(trace, "no endpoint of the asked address family: NODATA");
        return decision(Answer::Nodata, sc);
    }
    match &svc.all_down {
        super::AllDown::FailOpen => {
            note(
                trace.as_deref_mut(),
                "every candidate is down: failing open (answering as if all were up)",
            );
            let (scope, without_location) = (sc.scope, sc.without_location);
            r.ignore_health = true;
            run(&r, sc, trace);
            sc.scope = sc.scope.max(scope);
            sc.without_location = sc.without_location.max(without_location);
            let answer = if sc.out.is_empty() {
                Answer::Nodata
            } else {
                Answer::Endpoints
            };
            decision(answer, sc)
        }
        super::AllDown::Nodata => {
            note(
                trace,
                "every candidate is down: NODATA (all_down = \"nodata\")",
            );
            decision(Answer::Nodata, sc)
        }
        super::AllDown::Addresses(_) => {
            note(
                trace,
                "every candidate is down: answering the all_down addresses",
            );
            decision(Answer::FallbackAddresses, sc)
        }
        super::AllDown::Cname(_) => {
            note(
                trace,
                "every candidate is down: answering the all_down CNAME",
            );
            decision(Answer::FallbackCname, sc)
        }
    }
}

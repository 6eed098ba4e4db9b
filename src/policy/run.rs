//! Running a chain: [`decide`] (a service's answer for a client, with the
//! all-down fallbacks) and [`location_order`] (what the location steps
//! alone decide, which compiled geo stores per address range). Both run
//! the steps' own code; nothing here knows what a particular step does.

use std::net::IpAddr;

use super::health::HealthView;
use super::scratch::{Run, Scratch};
use super::service::{AllDown, Answer, Decision, Service};
use super::steps::Stage;
use super::topology::{Client, Family, Topology};
use super::trace::{Note, StepTrace, Trace};
use crate::geo::Location;

/// Runs the chain once; leaves the endpoints in `sc.out` and the scopes in
/// `sc.scope` / `sc.without_location`.
fn run(r: &Run<'_>, svc: &Service, sc: &mut Scratch, mut trace: Option<&mut Trace>) {
    sc.start(r.pre.unwrap_or(&svc.initial));
    for step in &svc.steps {
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
    if r.partial_drain() {
        // A partial drain decides by the client's /24 or /56: an answer
        // cached for a wider block would move (or keep) other clients.
        let p = match r.client.addr {
            std::net::IpAddr::V4(_) => super::health::PARTIAL_PREFIX_V4,
            std::net::IpAddr::V6(_) => super::health::PARTIAL_PREFIX_V6,
        };
        sc.scope = sc.scope.max(p);
        sc.without_location = sc.without_location.max(p);
        if let Some(t) = trace {
            t.notes.push(format!(
                "a partial drain covers this service: the answer depends on the client's /{p}"
            ));
        }
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
        groups: &svc.groups,
        client: &client,
        family: Family::Any,
        health: &health,
        ignore_health: true,
        pre: None,
        shares: &[],
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
        groups: &svc.groups,
        client,
        family,
        health,
        ignore_health: false,
        pre,
        shares: svc
            .capacity_slot
            .and_then(|s| health.shares.get(s as usize))
            .map_or(&[], Vec::as_slice),
    };
    run(&r, svc, sc, trace.as_deref_mut());
    if !sc.out.is_empty() {
        return decision(Answer::Endpoints, sc);
    }
    // Empty: because of health, or because nothing has this family?
    let any_down = svc
        .groups
        .iter()
        .flat_map(|g| g.pools.iter())
        .flat_map(|&p| topo.pools[p as usize].endpoints.clone())
        .any(|e| r.admits(e) && !r.alive(e));
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
        AllDown::FailOpen => {
            note(
                trace.as_deref_mut(),
                "every candidate is down: failing open (answering as if all were up)",
            );
            let (scope, without_location) = (sc.scope, sc.without_location);
            r.ignore_health = true;
            run(&r, svc, sc, trace);
            sc.scope = sc.scope.max(scope);
            sc.without_location = sc.without_location.max(without_location);
            let answer = if sc.out.is_empty() {
                Answer::Nodata
            } else {
                Answer::Endpoints
            };
            decision(answer, sc)
        }
        AllDown::Nodata => {
            note(
                trace,
                "every candidate is down: NODATA (all_down = \"nodata\")",
            );
            decision(Answer::Nodata, sc)
        }
        AllDown::Addresses(_) => {
            note(
                trace,
                "every candidate is down: answering the all_down addresses",
            );
            decision(Answer::FallbackAddresses, sc)
        }
        AllDown::Cname(_) => {
            note(
                trace,
                "every candidate is down: answering the all_down CNAME",
            );
            decision(Answer::FallbackCname, sc)
        }
    }
}

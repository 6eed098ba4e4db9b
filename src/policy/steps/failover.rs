//! `failover`: the first group (in the order the steps before it left)
//! that can take traffic — some pool of it has at least `min_healthy`
//! endpoints up — is the only one kept.

use super::{Stage, StepKind};
use crate::policy::scratch::{Run, Scratch};
use crate::policy::trace::Note;

#[derive(Debug, Clone)]
pub struct Failover;

/// Whether group `g` can take traffic, how many endpoints (of the asked
/// family) are up in its best pool, and how many that pool needs.
fn group_up(r: &Run<'_>, g: u16) -> (bool, u32, u32) {
    let mut best = (false, 0, 0);
    for &p in &r.groups[g as usize].pools {
        let pool = &r.topo.pools[p as usize];
        let up = pool
            .endpoints
            .clone()
            .filter(|&e| r.admits(e) && r.alive(e))
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

impl StepKind for Failover {
    const NAME: &'static str = "failover";
    const STAGE: Stage = Stage::Groups;

    fn run(&self, r: &Run<'_>, sc: &mut Scratch, mut note: Option<&mut Note>) {
        let mut chosen = None;
        for (i, &g) in sc.groups.iter().enumerate() {
            let (ok, up, need) = group_up(r, g);
            if ok {
                chosen = Some(i);
                if let Some(n) = note.as_deref_mut() {
                    n.detail = format!("{} has {up} up (needs {need})", r.group_label(g));
                }
                break;
            } else if let Some(n) = note.as_deref_mut() {
                n.drop(r.group_label(g), format!("only {up} up, needs {need}"));
            }
        }
        match chosen {
            Some(i) => {
                if let Some(n) = note.as_deref_mut() {
                    for &g in sc.groups.iter().skip(i + 1) {
                        n.drop(r.group_label(g), "lower priority");
                    }
                }
                let g = sc.groups[i];
                sc.groups.clear();
                sc.groups.push(g);
            }
            None => {
                sc.groups.clear();
                if let Some(n) = note {
                    n.detail = "no candidate has enough endpoints up".into();
                }
            }
        }
        if sc.explicit {
            let groups = &sc.groups;
            sc.out
                .retain(|&e| groups.iter().any(|&g| r.group_eps(g).any(|x| x == e)));
        }
    }
}

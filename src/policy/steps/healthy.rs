//! `healthy`: endpoints that are down (by health checks, quorum or an
//! operator's drain) are no longer candidates for the steps after it.

use super::{Stage, StepKind};
use crate::policy::scratch::{Run, Scratch};
use crate::policy::trace::Note;

#[derive(Debug, Clone)]
pub struct Healthy;

impl StepKind for Healthy {
    const NAME: &'static str = "healthy";
    const STAGE: Stage = Stage::Filter;

    fn run(&self, r: &Run<'_>, sc: &mut Scratch, note: Option<&mut Note>) {
        sc.healthy = true;
        if sc.explicit {
            sc.out.retain(|&e| r.alive(e));
        }
        if let Some(n) = note {
            for &g in &sc.groups {
                for e in r.group_eps(g) {
                    if r.admits(e) && !r.alive(e) {
                        n.drop(r.ep_label(e), r.why_down(e));
                    }
                }
            }
            n.detail = "endpoints that are down are no longer candidates".into();
        }
    }
}

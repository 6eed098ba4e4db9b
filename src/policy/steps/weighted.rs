//! `weighted`: picks `count` endpoints in proportion to their weights —
//! at random per query, or `sticky`: by a weighted rendezvous hash of the
//! client's subnet, so a client keeps its endpoints while they are up and
//! only clients of a removed endpoint move.

use serde::Deserialize;

pub use crate::policy::hash::mix64;
pub(crate) use crate::policy::hash::subnet_key;

use super::{Stage, StepKind};
use crate::policy::scratch::{Run, Scratch};
use crate::policy::trace::Note;

/// How `weighted` picks among candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightedMode {
    #[default]
    Random,
    Sticky,
}

#[derive(Debug, Clone)]
pub struct Weighted {
    pub mode: WeightedMode,
    pub count: usize,
    pub prefix_v4: u8,
    pub prefix_v6: u8,
}

impl Weighted {
    pub fn new(
        mode: WeightedMode,
        count: usize,
        prefix_v4: u8,
        prefix_v6: u8,
    ) -> Result<Weighted, String> {
        if count == 0 {
            return Err("weighted.count must be at least 1".into());
        }
        if prefix_v4 > 32 || prefix_v6 > 128 {
            return Err("weighted sticky prefixes must be at most 32 (IPv4) and 128 (IPv6)".into());
        }
        Ok(Weighted {
            mode,
            count,
            prefix_v4,
            prefix_v6,
        })
    }
}

impl StepKind for Weighted {
    const NAME: &'static str = "weighted";
    const STAGE: Stage = Stage::Endpoints;

    fn run(&self, r: &Run<'_>, sc: &mut Scratch, mut note: Option<&mut Note>) {
        sc.cand.clear();
        if sc.explicit {
            sc.cand.extend(sc.out.iter().map(|&e| (0.0, e)));
        } else {
            for &g in &sc.groups {
                for e in r.group_eps(g) {
                    if r.admits(e)
                        && (!sc.healthy || r.alive(e))
                        && !sc.cand.iter().any(|c| c.1 == e)
                    {
                        sc.cand.push((0.0, e));
                    }
                }
            }
        }
        let n = self.count.min(sc.cand.len());
        sc.out.clear();
        let weight = |e: u32| r.topo.endpoints[e as usize].weight as u64;
        match self.mode {
            WeightedMode::Random => {
                for _ in 0..n {
                    let total: u64 = sc.cand.iter().map(|&(_, e)| weight(e)).sum();
                    let pick = if total == 0 {
                        sc.rng.usize(0..sc.cand.len())
                    } else {
                        let mut x = sc.rng.u64(0..total);
                        let mut idx = 0;
                        for (i, &(_, e)) in sc.cand.iter().enumerate() {
                            if x < weight(e) {
                                idx = i;
                                break;
                            }
                            x -= weight(e);
                        }
                        idx
                    };
                    let (_, e) = sc.cand.swap_remove(pick);
                    sc.out.push(e);
                }
                if let Some(note) = note.as_deref_mut() {
                    note.detail = format!("{n} chosen at random in proportion to weight");
                }
            }
            WeightedMode::Sticky => {
                let (key, p) = subnet_key(r.client.addr, self.prefix_v4, self.prefix_v6);
                sc.scope = sc.scope.max(p);
                sc.without_location = sc.without_location.max(p);
                for c in sc.cand.iter_mut() {
                    let ep = &r.topo.endpoints[c.1 as usize];
                    let h = mix64(key ^ ep.hash);
                    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                    c.0 = if ep.weight == 0 {
                        f64::INFINITY
                    } else {
                        -u.ln() / ep.weight as f64
                    };
                }
                for _ in 0..n {
                    let mut best = 0;
                    for i in 1..sc.cand.len() {
                        if sc.cand[i].0 < sc.cand[best].0 {
                            best = i;
                        }
                    }
                    let (_, e) = sc.cand.swap_remove(best);
                    sc.out.push(e);
                }
                if let Some(note) = note.as_deref_mut() {
                    note.detail =
                        format!("{n} chosen by weighted rendezvous hash of the client's /{p}");
                }
            }
        }
        if let Some(note) = note {
            for &(_, e) in &sc.cand {
                note.drop(r.ep_label(e), "not chosen");
            }
        }
        sc.explicit = true;
    }
}

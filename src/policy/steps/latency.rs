//! `latency`: orders groups by round-trip time — measured by the probes
//! from the vantage nearest the client (`probes = true`), else from a
//! static table row for the client's country, continent or the default.

use super::{Stage, StepKind};
use crate::geo::{distance_km, Location};
use crate::policy::health::VantageRtt;
use crate::policy::scratch::{Run, Scratch};
use crate::policy::trace::Note;
use rustc_hash::FxHashMap;

/// Latency table, compiled: rows of per-group milliseconds (NaN: unknown).
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Order by measured RTT from the vantage nearest the client first.
    pub probes: bool,
    pub rows: Vec<Vec<f64>>,
    pub default: Option<usize>,
    pub continent: FxHashMap<[u8; 2], usize>,
    pub country: FxHashMap<[u8; 2], usize>,
}

impl Latency {
    fn row(&self, loc: &Location) -> Option<(usize, &'static str)> {
        if let Some(&r) = self.country.get(&loc.country) {
            return Some((r, "country"));
        }
        if let Some(&r) = self.continent.get(&loc.continent) {
            return Some((r, "continent"));
        }
        self.default.map(|r| (r, "default"))
    }
}

impl StepKind for Latency {
    const NAME: &'static str = "latency";
    const STAGE: Stage = Stage::Location;

    fn order(&self, r: &Run<'_>, sc: &mut Scratch, mut note: Option<&mut Note>) -> u8 {
        let loc = r.loc();
        if self.probes && probe_order(r, sc, note.as_deref_mut()) {
            return loc.prefix;
        }
        let Some((row, how)) = self.row(loc) else {
            if let Some(n) = note {
                n.detail = "no latency row for this client; order unchanged".into();
            }
            return loc.prefix;
        };
        let ms = &self.rows[row];
        let at = |g: u16| ms.get(g as usize).copied().unwrap_or(f64::NAN);
        sc.sort_groups(|g| {
            let v = at(g);
            if v.is_nan() {
                f64::INFINITY
            } else {
                v
            }
        });
        if let Some(n) = note {
            let d: Vec<String> = sc
                .groups
                .iter()
                .map(|&g| {
                    let v = at(g);
                    if v.is_nan() {
                        format!("{} ?", r.group_label(g))
                    } else {
                        format!("{} {v} ms", r.group_label(g))
                    }
                })
                .collect();
            n.detail = format!("table row for {how}: {}", d.join(", "));
        }
        loc.prefix
    }

    /// Live probe RTTs change by the second: never compiled.
    fn compilable(&self) -> bool {
        !self.probes
    }
}

/// Orders groups by the RTT measured from the vantage nearest the client
/// (lowest endpoint RTT in each group). False when there is nothing to go
/// on (no client coordinates, no vantage location, no measurement).
fn probe_order(r: &Run<'_>, sc: &mut Scratch, note: Option<&mut Note>) -> bool {
    let Some(c) = r.loc().coords else {
        return false;
    };
    let mut best: Option<(&VantageRtt, f64)> = None;
    for v in &r.health.rtt {
        let Some(vc) = v.coords else { continue };
        if !v.rtt_ms.iter().any(|x| !x.is_nan()) {
            continue;
        }
        let d = distance_km(c, vc);
        if best.is_none_or(|(_, bd)| d < bd) {
            best = Some((v, d));
        }
    }
    let Some((v, d)) = best else { return false };
    let group_rtt = |g: u16| {
        r.group_eps(g)
            .filter_map(|e| v.rtt_ms.get(e as usize).copied())
            .filter(|x| !x.is_nan())
            .fold(f64::INFINITY, f64::min)
    };
    sc.sort_groups(group_rtt);
    if let Some(n) = note {
        let parts: Vec<String> = sc
            .groups
            .iter()
            .map(|&g| {
                let ms = group_rtt(g);
                if ms.is_finite() {
                    format!("{} {ms:.1} ms", r.group_label(g))
                } else {
                    format!("{} ?", r.group_label(g))
                }
            })
            .collect();
        n.detail = format!(
            "measured from vantage {} ({d:.0} km from the client): {}",
            v.name,
            parts.join(", ")
        );
    }
    true
}

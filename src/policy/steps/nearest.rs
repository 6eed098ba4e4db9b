//! `nearest`: orders groups by great-circle distance from the client (less
//! each region's bias in km), optionally keeping only the nearest N.

use super::{Stage, StepKind};
use crate::geo::distance_km;
use crate::policy::scratch::{Run, Scratch};
use crate::policy::trace::Note;

#[derive(Debug, Clone)]
pub struct Nearest {
    pub limit: Option<usize>,
    /// Per group of the service, km subtracted from its distance.
    pub bias: Vec<f64>,
}

impl Nearest {
    pub fn new(limit: Option<usize>, bias: Vec<f64>) -> Result<Nearest, String> {
        if limit == Some(0) {
            return Err("nearest.limit must be at least 1".into());
        }
        if let Some(b) = bias.iter().find(|b| !b.is_finite()) {
            return Err(format!("nearest.bias {b} is not a number of km"));
        }
        Ok(Nearest { limit, bias })
    }
}

impl StepKind for Nearest {
    const NAME: &'static str = "nearest";
    const STAGE: Stage = Stage::Location;

    fn order(&self, r: &Run<'_>, sc: &mut Scratch, note: Option<&mut Note>) -> u8 {
        let loc = r.loc();
        // Unlocated is a property of the client's block too: a neighbour
        // with coordinates may be ordered otherwise. Either way the scope
        // is the located network.
        let Some(c) = loc.coords else {
            if let Some(n) = note {
                n.detail = "client has no coordinates; order unchanged".into();
            }
            return loc.prefix;
        };
        let bias = |g: u16| self.bias.get(g as usize).copied().unwrap_or(0.0);
        sc.sort_groups(|g| distance_km(c, r.group_coords(g)) - bias(g));
        let mut note = note;
        if let Some(limit) = self.limit {
            if let Some(n) = note.as_deref_mut() {
                for &g in sc.groups.iter().skip(limit) {
                    n.drop(r.group_label(g), format!("beyond the nearest {limit}"));
                }
            }
            sc.groups.truncate(limit);
        }
        if let Some(n) = note {
            describe(r, sc, c, n);
        }
        loc.prefix
    }
}

fn describe(r: &Run<'_>, sc: &Scratch, c: (f64, f64), n: &mut Note) {
    let d: Vec<String> = sc
        .groups
        .iter()
        .map(|&g| {
            format!(
                "{} {:.0} km",
                r.group_label(g),
                distance_km(c, r.group_coords(g))
            )
        })
        .collect();
    n.detail = format!(
        "client at ({:.2}, {:.2}); by distance: {}",
        c.0,
        c.1,
        d.join(", ")
    );
}

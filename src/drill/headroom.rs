//! The drill's headroom pre-check: whether the load the target's regions
//! carry now fits into the spare capacity of the other regions, from what
//! a DNS node shows of capacity and load (`/v1/status`, `health.capacity`:
//! each region's configured capacity and its tier's load summed over the
//! fresh reports). Pure: a JSON view in, a verdict with its figures out.

use std::collections::BTreeSet;

use serde_json::Value;

/// The verdict: whether the drill may go on, and why, with the figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Headroom {
    pub ok: bool,
    pub detail: String,
}

/// One measure (connections, requests per second) of a region.
#[derive(Debug, Clone, Copy)]
struct Measure {
    capacity: Option<f64>,
    used: Option<f64>,
}

struct Region {
    name: String,
    connections: Measure,
    rps: Measure,
}

fn regions(capacity: &Value) -> Vec<Region> {
    let empty = Vec::new();
    capacity["regions"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|r| Region {
            name: r["region"].as_str().unwrap_or("?").to_string(),
            connections: Measure {
                capacity: r["capacity_connections"].as_f64(),
                used: r["connections"].as_f64(),
            },
            rps: Measure {
                capacity: r["capacity_rps"].as_f64(),
                used: r["rps"].as_f64(),
            },
        })
        .collect()
}

/// Checks one measure: the target's load of it against the others' spare.
/// None when no other region has a capacity for it.
fn fits(
    what: &str,
    unit: &str,
    target: &[&Region],
    others: &[&Region],
    pick: fn(&Region) -> Measure,
) -> Option<(bool, String)> {
    let with_cap: Vec<(&Region, f64)> = others
        .iter()
        .filter_map(|r| pick(r).capacity.map(|c| (*r, c)))
        .collect();
    if with_cap.is_empty() {
        return None;
    }
    let need: f64 = target.iter().filter_map(|r| pick(r).used).sum();
    let mut spare = 0.0;
    let mut parts = Vec::new();
    for (r, cap) in with_cap {
        match pick(r).used {
            Some(used) => {
                let free = (cap - used).max(0.0);
                spare += free;
                parts.push(format!("{} {free:.0} of {cap:.0} free", r.name));
            }
            None => parts.push(format!("{} no fresh load report, counted as full", r.name)),
        }
    }
    let ok = need <= spare;
    Some((
        ok,
        format!(
            "{what}: {need:.0}{unit} to move, {spare:.0}{unit} spare ({})",
            parts.join(", ")
        ),
    ))
}

/// Whether the load of the regions the target covers wholly (`covered`)
/// fits into the spare capacity of the other regions, in every measure
/// some other region has a capacity for. Not checked only when no region
/// has a capacity at all, or when the target covers no whole region (load
/// is known per region).
pub fn check(capacity: &Value, covered: &BTreeSet<String>) -> Headroom {
    let all = regions(capacity);
    let configured = all
        .iter()
        .any(|r| r.connections.capacity.is_some() || r.rps.capacity.is_some());
    if !configured {
        return Headroom {
            ok: true,
            detail: "not checked: no region has a capacity configured (regions.NAME.capacity)"
                .into(),
        };
    }
    if covered.is_empty() {
        return Headroom {
            ok: true,
            detail: "not checked: the target covers no whole region, and load is known per region"
                .into(),
        };
    }
    let (target, others): (Vec<&Region>, Vec<&Region>) =
        all.iter().partition(|r| covered.contains(&r.name));
    let unknown: Vec<&str> = target
        .iter()
        .filter(|r| r.connections.used.is_none() && r.rps.used.is_none())
        .map(|r| r.name.as_str())
        .collect();
    if !unknown.is_empty() {
        return Headroom {
            ok: false,
            detail: format!(
                "the load of {} is unknown (no fresh report from its tier), so whether the other regions can take it cannot be told",
                unknown.join(", ")
            ),
        };
    }
    let checks: Vec<(bool, String)> = [
        fits("connections", "", &target, &others, |r| r.connections),
        fits("requests", " req/s", &target, &others, |r| r.rps),
    ]
    .into_iter()
    .flatten()
    .collect();
    let names = target
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if checks.is_empty() {
        return Headroom {
            ok: false,
            detail: format!(
                "no region other than {names} has a capacity configured: nothing says the rest can take its load"
            ),
        };
    }
    let ok = checks.iter().all(|c| c.0);
    let figures = checks
        .into_iter()
        .map(|c| c.1)
        .collect::<Vec<_>>()
        .join("; ");
    Headroom {
        ok,
        detail: if ok {
            format!("the other regions can take {names}'s load: {figures}")
        } else {
            format!("the other regions cannot take {names}'s load: {figures}")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn covered(r: &[&str]) -> BTreeSet<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    fn region(name: &str, cap: Option<f64>, used: Option<f64>) -> Value {
        json!({"region": name, "capacity_connections": cap, "capacity_rps": null,
               "connections": used, "rps": used.map(|_| 1.0)})
    }

    #[test]
    fn without_any_capacity_the_check_is_not_made() {
        let c = json!({"regions": [region("eu", None, Some(5.0)), region("us", None, None)]});
        let h = check(&c, &covered(&["eu"]));
        assert!(h.ok && h.detail.starts_with("not checked"), "{h:?}");
    }

    #[test]
    fn a_target_whose_load_does_not_fit_the_others_spare_is_refused_with_the_figures() {
        let c = json!({"regions": [
            region("eu", Some(1000.0), Some(900.0)),
            region("us", Some(1000.0), Some(600.0)),
            region("ap", Some(500.0), Some(100.0)),
        ]});
        let h = check(&c, &covered(&["eu"]));
        assert!(!h.ok, "{h:?}");
        assert_eq!(
            h.detail,
            "the other regions cannot take eu's load: connections: 900 to move, 800 spare (us 400 of 1000 free, ap 400 of 500 free)"
        );
        let c = json!({"regions": [
            region("eu", Some(1000.0), Some(700.0)),
            region("us", Some(1000.0), Some(600.0)),
            region("ap", Some(500.0), Some(100.0)),
        ]});
        let h = check(&c, &covered(&["eu"]));
        assert!(h.ok, "{h:?}");
        assert!(h.detail.contains("700 to move, 800 spare"), "{h:?}");
    }

    #[test]
    fn unknown_load_is_refused_and_a_silent_region_has_no_spare() {
        let c = json!({"regions": [
            region("eu", Some(1000.0), None),
            region("us", Some(1000.0), Some(0.0)),
        ]});
        let h = check(&c, &covered(&["eu"]));
        assert!(!h.ok && h.detail.contains("load of eu is unknown"), "{h:?}");
        let c = json!({"regions": [
            region("eu", Some(1000.0), Some(10.0)),
            region("us", Some(1000.0), None),
        ]});
        let h = check(&c, &covered(&["eu"]));
        assert!(
            !h.ok && h.detail.contains("us no fresh load report"),
            "{h:?}"
        );
    }

    #[test]
    fn a_target_smaller_than_a_region_is_not_checked() {
        let c = json!({"regions": [region("eu", Some(10.0), Some(9.0))]});
        let h = check(&c, &covered(&[]));
        assert!(h.ok && h.detail.contains("no whole region"), "{h:?}");
    }
}

//! Shadow mode: what a drill WOULD change, computed from each node's live
//! health and the action with the simulation (`sim`, the code that answers
//! queries), and nothing set on any node. Per node and service: the share
//! of the address space each region answers now and under each step of the
//! action (a partial step of share f: f of every network's /24s take the
//! whole action's answer, the partial drain's hash being uniform); and
//! which tracked resolvers would move, each resolver's own address run
//! through the model under the last step.

use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use super::scenario::Action;
use crate::policy::health::partial_units;
use crate::sim::{Model, QType, Scenario as Health, ServiceSim};

/// A region's share of one family's address space (percent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionShare {
    pub region: String,
    pub v4_percent: f64,
    pub v6_percent: f64,
}

/// One service under one step of the action, on one node's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowStep {
    /// The share of the target withdrawn (1: the whole action).
    pub fraction: f64,
    /// The health simulated ("drained: eu", "partially drained: eu 10 %").
    pub health: String,
    pub regions: Vec<RegionShare>,
    /// The share of the address space whose answer would change region.
    pub moved_v4_percent: f64,
    pub moved_v6_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowService {
    pub node: String,
    pub service: String,
    /// The node's live health, as simulated ("all up", "down: ...").
    pub live: String,
    pub before: Vec<RegionShare>,
    pub steps: Vec<ShadowStep>,
}

/// A tracked resolver through the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowResolver {
    pub node: String,
    pub resolver: IpAddr,
    /// The region the node last answered it (its telemetry).
    pub answered: Option<String>,
    /// What the model gives its address now and under the whole action.
    pub now: String,
    pub after: String,
    pub would_move: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowReport {
    pub config: String,
    pub services: Vec<ShadowService>,
    pub resolvers: Vec<ShadowResolver>,
    /// Why resolvers are missing, when they are.
    pub resolver_notes: Vec<String>,
}

fn regions(s: &ServiceSim) -> Vec<RegionShare> {
    let mut out: Vec<RegionShare> = Vec::new();
    for (v6, shares) in [(false, &s.v4), (true, &s.v6)] {
        for r in &shares.regions {
            let i = match out.iter().position(|o| o.region == r.name) {
                Some(i) => i,
                None => {
                    out.push(RegionShare {
                        region: r.name.clone(),
                        v4_percent: 0.0,
                        v6_percent: 0.0,
                    });
                    out.len() - 1
                }
            };
            if v6 {
                out[i].v6_percent = r.percent;
            } else {
                out[i].v4_percent = r.percent;
            }
        }
    }
    out.sort_by(|a, b| a.region.cmp(&b.region));
    out
}

/// The shares when a share `f` of every network takes its answer under
/// the whole action (`all`) and the rest keeps today's (`now`).
fn mix(now: &[RegionShare], all: &[RegionShare], f: f64) -> Vec<RegionShare> {
    if f >= 1.0 {
        return all.to_vec();
    }
    let mut out: Vec<RegionShare> = Vec::new();
    for (list, w) in [(now, 1.0 - f), (all, f)] {
        for r in list {
            let i = match out.iter().position(|o| o.region == r.region) {
                Some(i) => i,
                None => {
                    out.push(RegionShare {
                        region: r.region.clone(),
                        v4_percent: 0.0,
                        v6_percent: 0.0,
                    });
                    out.len() - 1
                }
            };
            out[i].v4_percent += w * r.v4_percent;
            out[i].v6_percent += w * r.v6_percent;
        }
    }
    out.sort_by(|a, b| a.region.cmp(&b.region));
    out
}

/// The live health of a node plus the action at share `fraction`.
fn with_action(live: &Health, action: &Action, fraction: f64) -> Health {
    let mut h = live.clone();
    let target = action.target().to_string();
    match action {
        Action::Drain(_) if fraction < 1.0 => h.partial.push((target, partial_units(fraction))),
        Action::Drain(_) => h.drain.push(target),
        // A forced-down target, or a command that stops it: down.
        Action::ForceDown(_) | Action::Command { .. } => h.down.push(target),
    }
    h
}

/// One node's live health and tracked resolvers, as read from its admin
/// API.
pub struct NodeView {
    pub node: String,
    /// `GET /v1/health` (or the `health` of `/v1/status`).
    pub health: serde_json::Value,
    /// `GET /v1/resolvers?service=...` lines, or why there are none.
    pub resolvers: Result<Vec<crate::snapshot::resolvers::Line>, String>,
}

/// Simulates `steps` of `action` (one step of 1 when empty) on every
/// node's live health with the config at `config`.
pub fn simulate(
    config: &Path,
    nodes: &[NodeView],
    action: &Action,
    steps: &[f64],
    qtype: QType,
) -> Result<ShadowReport, String> {
    let (snap, _) = crate::snapshot::load_with(config, &Default::default(), 0, None, false)
        .map_err(|e| format!("cannot load {}: {e}", config.display()))?;
    let steps: Vec<f64> = if steps.is_empty() {
        vec![1.0]
    } else {
        steps.to_vec()
    };
    let model = Model::new(&snap, &[], qtype).map_err(|e| e.to_string())?;
    let mut report = ShadowReport {
        config: config.display().to_string(),
        services: Vec::new(),
        resolvers: Vec::new(),
        resolver_notes: Vec::new(),
    };
    for n in nodes {
        let mut live = Health::default();
        live.add_live(&n.health);
        let before = model
            .simulate(&live, None, false)
            .map_err(|e| e.to_string())?;
        // The whole action, simulated; a partial step moves its share of
        // every network's /24s (or /56s) to exactly what the whole action
        // answers them, the hash being uniform: its shares are the mix.
        let whole = with_action(&live, action, 1.0);
        let full = model
            .simulate(&whole, Some((&model, &live, "now".to_string())), false)
            .map_err(|e| format!("{}: {e}", n.node))?;
        for (b, w) in before.iter().zip(&full) {
            let (now, all) = (regions(b), regions(w));
            let moved = |v6: bool| {
                w.change.as_ref().map_or(0.0, |c| {
                    if v6 {
                        c.moved_v6_percent
                    } else {
                        c.moved_v4_percent
                    }
                })
            };
            report.services.push(ShadowService {
                node: n.node.clone(),
                service: b.service.clone(),
                live: live.label(),
                steps: steps
                    .iter()
                    .map(|&f| ShadowStep {
                        fraction: f,
                        health: with_action(&live, action, f).label(),
                        regions: mix(&now, &all, f),
                        moved_v4_percent: moved(false) * f,
                        moved_v6_percent: moved(true) * f,
                    })
                    .collect(),
                before: now,
            });
        }
        let lines = match &n.resolvers {
            Ok(l) if l.is_empty() => {
                report.resolver_notes.push(format!(
                    "{}: resolver telemetry has no resolver for this service (arm it with POST /v1/resolvers/track to see who would move)",
                    n.node
                ));
                continue;
            }
            Ok(l) => l,
            Err(e) => {
                report.resolver_notes.push(format!("{}: {e}", n.node));
                continue;
            }
        };
        let last = steps.last().copied().unwrap_or(1.0);
        let after = with_action(&live, action, last);
        let services = model.services();
        for l in lines {
            let Some(si) = services
                .iter()
                .position(|s| s.trim_end_matches('.') == l.service.trim_end_matches('.'))
            else {
                continue;
            };
            let now = model
                .decide_for(si, l.resolver, &live)
                .map_err(|e| e.to_string())?;
            let then = model
                .decide_for(si, l.resolver, &after)
                .map_err(|e| e.to_string())?;
            report.resolvers.push(ShadowResolver {
                node: n.node.clone(),
                resolver: l.resolver,
                answered: l.region.clone(),
                would_move: now != then,
                now,
                after: then,
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_step_mixes_todays_shares_with_the_whole_actions() {
        let r = |region: &str, v4, v6| RegionShare {
            region: region.into(),
            v4_percent: v4,
            v6_percent: v6,
        };
        let now = [r("eu", 80.0, 100.0), r("us", 20.0, 0.0)];
        let all = [r("us", 100.0, 100.0)];
        assert_eq!(
            mix(&now, &all, 0.25),
            [r("eu", 60.0, 75.0), r("us", 40.0, 25.0)]
        );
        assert_eq!(mix(&now, &all, 1.0), all);
    }

    #[test]
    fn the_action_is_added_to_the_live_health_as_a_drain_a_partial_drain_or_down() {
        let live = Health {
            down: vec!["us-web/10.2.0.1".into()],
            ..Health::default()
        };
        let d = Action::Drain("eu".into());
        assert_eq!(with_action(&live, &d, 1.0).drain, ["eu"]);
        let p = with_action(&live, &d, 0.1);
        assert_eq!(p.partial, [("eu".to_string(), 1000)]);
        assert!(p.drain.is_empty());
        assert_eq!(p.down, ["us-web/10.2.0.1"], "the live state is kept");
        let c = Action::Command {
            argv: vec!["true".into()],
            target: "eu".into(),
        };
        assert_eq!(with_action(&live, &c, 1.0).down, ["us-web/10.2.0.1", "eu"]);
    }
}

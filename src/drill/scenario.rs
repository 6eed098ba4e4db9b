//! A drill scenario: the nodes, the action, what to observe, and the
//! outcome check, read from TOML and validated before anything is touched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Longest a drill action may stay in force (AWS ARC's limit for practice
/// runs): the drain is set with this expiry, so the nodes revert by
/// themselves even if the drill process dies.
pub const MAX_EXPIRY: Duration = Duration::from_secs(72 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    #[serde(default)]
    expiry: Option<String>,
    #[serde(default)]
    hold: Option<String>,
    #[serde(default)]
    grace: Option<String>,
    #[serde(default)]
    baseline: Option<String>,
    /// Compute what would change, change nothing.
    #[serde(default)]
    shadow: bool,
    /// The config the nodes run (for shadow mode's simulation).
    #[serde(default)]
    config: Option<PathBuf>,
    #[serde(rename = "node")]
    nodes: Vec<RawNode>,
    #[serde(default, rename = "tier")]
    tiers: Vec<RawTier>,
    action: RawAction,
    observe: RawObserve,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Option<String>,
    admin: String,
    dns: SocketAddr,
    #[serde(default)]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    name: Option<String>,
    admin: String,
    #[serde(default)]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(default)]
    drain: Option<String>,
    #[serde(default)]
    force_down: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    /// With `command`: the target whose answers should move (a region,
    /// pool or endpoint), for the observation.
    #[serde(default)]
    target: Option<String>,
    /// With `drain`: gradual steps, the share of the target's client
    /// subnets withdrawn at each, e.g. [0.1, 0.5, 1.0].
    #[serde(default)]
    steps: Option<Vec<f64>>,
    /// How long each step but the last is held (the last: `hold`).
    #[serde(default)]
    step_hold: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObserve {
    name: String,
    #[serde(default = "default_type", rename = "type")]
    qtype: String,
    #[serde(default)]
    subnets: Vec<String>,
    #[serde(default)]
    interval: Option<String>,
}

fn default_type() -> String {
    "A".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    #[serde(default)]
    converge_within: Option<String>,
}

/// One DNS node the drill acts on and watches.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    /// Base URL of its admin API.
    pub admin: String,
    pub dns: SocketAddr,
    pub token: Option<String>,
}

/// A tier node whose listeners' new-connection rate the drill follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    /// Base URL of its admin API.
    pub admin: String,
    pub token: Option<String>,
}

/// What the drill does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Drain(String),
    ForceDown(String),
    /// A command run here (e.g. stopping a region's backends); `target` is
    /// what should stop being answered.
    Command {
        argv: Vec<String>,
        target: String,
    },
}

impl Action {
    /// The region, pool or endpoint whose answers should move.
    pub fn target(&self) -> &str {
        match self {
            Action::Drain(t) | Action::ForceDown(t) => t,
            Action::Command { target, .. } => target,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub expiry: Duration,
    pub hold: Duration,
    pub grace: Duration,
    /// Telemetry armed and probes running this long before the action, so
    /// every active resolver is seen holding the old answer (at least the
    /// service's TTL).
    pub baseline: Duration,
    pub nodes: Vec<Node>,
    pub action: Action,
    pub qname: String,
    pub qtype: hickory_proto::rr::RecordType,
    /// Client subnets asked with ECS; none: the plain query alone.
    pub subnets: Vec<ipnet::IpNet>,
    pub interval: Duration,
    pub converge_within: Duration,
    /// Gradual steps of a drain: the share of the target's client subnets
    /// withdrawn at each, increasing, in (0, 1]; empty: the action at once.
    pub steps: Vec<f64>,
    /// How long each step but the last is held.
    pub step_hold: Duration,
    /// Compute and report what would change; set nothing on any node.
    pub shadow: bool,
    /// The config the nodes run: shadow mode simulates it.
    pub config: Option<PathBuf>,
    /// Tier nodes whose listeners' new-connection rate is followed.
    pub tiers: Vec<Tier>,
}

/// Checks gradual steps: at least one, each a share in (0, 1], increasing.
pub fn check_steps(steps: &[f64]) -> Result<(), String> {
    if steps.is_empty() {
        return Err(
            "action.steps is empty: give the shares to withdraw, e.g. [0.1, 0.5, 1.0]".into(),
        );
    }
    for (i, &f) in steps.iter().enumerate() {
        if !(f.is_finite() && f > 0.0 && f <= 1.0) {
            return Err(format!(
                "action.steps[{i}] = {f}: a share of the target's client subnets, in (0, 1]"
            ));
        }
        if i > 0 && f <= steps[i - 1] {
            return Err(format!(
                "action.steps[{i}] = {f}: steps must increase ({} before it)",
                steps[i - 1]
            ));
        }
    }
    Ok(())
}

fn read_token(path: &Path, f: &Path, what: &str) -> Result<String, ScenarioError> {
    let f = if f.is_relative() {
        path.parent().unwrap_or(Path::new(".")).join(f)
    } else {
        f.to_path_buf()
    };
    let t = std::fs::read_to_string(&f).map_err(|e| ScenarioError::Invalid {
        path: path.to_path_buf(),
        msg: format!("{what}: token_file {}: {e}", f.display()),
    })?;
    Ok(t.lines().next().unwrap_or("").trim().to_string())
}

fn duration(
    path: &Path,
    key: &str,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration, ScenarioError> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|e| ScenarioError::Invalid {
            path: path.to_path_buf(),
            msg: format!("{key} = {s:?}: {e}"),
        }),
    }
}

impl Scenario {
    pub fn read(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScenarioError::Read(path.to_path_buf(), e))?;
        Scenario::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let invalid = |msg: String| ScenarioError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        let expiry = duration(
            path,
            "expiry",
            raw.expiry.as_deref(),
            Duration::from_secs(3600),
        )?;
        if expiry.is_zero() || expiry > MAX_EXPIRY {
            return Err(invalid(format!(
                "expiry = {:?}: must be within (0, 72h]",
                raw.expiry.unwrap_or_default()
            )));
        }
        let hold = duration(path, "hold", raw.hold.as_deref(), Duration::from_secs(120))?;
        let grace = duration(path, "grace", raw.grace.as_deref(), Duration::from_secs(2))?;
        let baseline = duration(
            path,
            "baseline",
            raw.baseline.as_deref(),
            Duration::from_secs(60),
        )?;
        let interval = duration(
            path,
            "observe.interval",
            raw.observe.interval.as_deref(),
            Duration::from_secs(1),
        )?;
        if interval.is_zero() {
            return Err(invalid("observe.interval must be above zero".into()));
        }
        if hold + baseline >= expiry {
            return Err(invalid(format!(
                "baseline + hold ({}) must end before the expiry ({})",
                humantime::format_duration(hold + baseline),
                humantime::format_duration(expiry)
            )));
        }
        let step_hold = duration(
            path,
            "action.step_hold",
            raw.action.step_hold.as_deref(),
            Duration::from_secs(30),
        )?;
        let steps = raw.action.steps.clone().unwrap_or_default();
        if raw.action.steps.is_some() {
            check_steps(&steps).map_err(&invalid)?;
            if raw.action.drain.is_none() {
                return Err(invalid(
                    "action.steps: only a drain can be gradual (a partial drain per step)".into(),
                ));
            }
        } else if raw.action.step_hold.is_some() {
            return Err(invalid("action.step_hold without action.steps".into()));
        }
        let stepping = step_hold * steps.len().saturating_sub(1) as u32;
        if hold + baseline + stepping >= expiry {
            return Err(invalid(format!(
                "baseline + steps + hold ({}) must end before the expiry ({})",
                humantime::format_duration(hold + baseline + stepping),
                humantime::format_duration(expiry)
            )));
        }
        let converge_within = duration(
            path,
            "expect.converge_within",
            raw.expect.converge_within.as_deref(),
            hold,
        )?;
        if raw.nodes.is_empty() {
            return Err(invalid("at least one [[node]] is needed".into()));
        }
        let mut nodes = Vec::new();
        for (i, n) in raw.nodes.into_iter().enumerate() {
            let token = match &n.token_file {
                None => None,
                Some(f) => Some(read_token(path, f, &format!("node {}", i + 1))?),
            };
            let admin = crate::admin::client::base_url(&n.admin);
            nodes.push(Node {
                name: n.name.unwrap_or_else(|| format!("node{}", i + 1)),
                admin,
                dns: n.dns,
                token,
            });
        }
        let mut tiers = Vec::new();
        for (i, t) in raw.tiers.into_iter().enumerate() {
            let token = match &t.token_file {
                None => None,
                Some(f) => Some(read_token(path, f, &format!("tier {}", i + 1))?),
            };
            tiers.push(Tier {
                name: t.name.unwrap_or_else(|| format!("tier{}", i + 1)),
                admin: crate::admin::client::base_url(&t.admin),
                token,
            });
        }
        let config = raw.config.map(|c| {
            if c.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(c)
            } else {
                c
            }
        });
        let a = raw.action;
        let action = match (a.drain, a.force_down, a.command) {
            (Some(t), None, None) => Action::Drain(t),
            (None, Some(t), None) => Action::ForceDown(t),
            (None, None, Some(argv)) => {
                if argv.is_empty() {
                    return Err(invalid("action.command is empty".into()));
                }
                let Some(target) = a.target else {
                    return Err(invalid(
                        "action.command needs action.target: the region, pool or endpoint whose answers should move".into(),
                    ));
                };
                Action::Command { argv, target }
            }
            _ => {
                return Err(invalid(
                    "[action] takes exactly one of drain, force_down or command".into(),
                ))
            }
        };
        let qtype = raw
            .observe
            .qtype
            .to_ascii_uppercase()
            .parse::<hickory_proto::rr::RecordType>()
            .map_err(|e| invalid(format!("observe.type = {:?}: {e}", raw.observe.qtype)))?;
        let mut subnets = Vec::new();
        for s in &raw.observe.subnets {
            let net = s
                .parse::<ipnet::IpNet>()
                .map_err(|e| invalid(format!("observe.subnets: {s:?}: {e}")))?;
            subnets.push(net.trunc());
        }
        let mut qname = raw.observe.name.clone();
        if !qname.ends_with('.') {
            qname.push('.');
        }
        Ok(Scenario {
            name: raw.name,
            expiry,
            hold,
            grace,
            baseline,
            nodes,
            action,
            qname,
            qtype,
            subnets,
            interval,
            converge_within,
            steps,
            step_hold,
            shadow: raw.shadow,
            config,
            tiers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "evacuate eu"
expiry = "1h"
hold = "30s"
[[node]]
admin = "127.0.0.1:8053"
dns = "127.0.0.1:5353"
[[node]]
name = "dns2"
admin = "http://127.0.0.1:8054/"
dns = "127.0.0.1:5354"
[action]
drain = "eu"
[observe]
name = "www.example.com"
subnets = ["192.0.2.7/24", "2001:db8::/48"]
"#;

    #[test]
    fn a_scenario_reads_with_its_defaults() {
        let s = Scenario::parse(Path::new("d.toml"), OK).expect("valid");
        assert_eq!(s.action, Action::Drain("eu".into()));
        assert_eq!(s.nodes[0].name, "node1");
        assert_eq!(s.nodes[0].admin, "http://127.0.0.1:8053");
        assert_eq!(s.nodes[1].admin, "http://127.0.0.1:8054");
        assert_eq!(s.qname, "www.example.com.");
        assert_eq!(s.subnets[0].to_string(), "192.0.2.0/24");
        assert_eq!(s.converge_within, Duration::from_secs(30));
        assert_eq!(s.interval, Duration::from_secs(1));
        assert!(s.steps.is_empty() && !s.shadow && s.tiers.is_empty());
    }

    #[test]
    fn gradual_steps_shadow_and_tier_nodes_read() {
        let text = OK
            .replace(
                "drain = \"eu\"",
                "drain = \"eu\"\nsteps = [0.1, 0.5, 1.0]\nstep_hold = \"5s\"",
            )
            .replace(
                "hold = \"30s\"",
                "hold = \"30s\"\nshadow = true\nconfig = \"geolb.toml\"\n[[tier]]\nadmin = \"127.0.1.9:8080\"",
            );
        let s = Scenario::parse(Path::new("lab/d.toml"), &text).expect("valid");
        assert_eq!(s.steps, [0.1, 0.5, 1.0]);
        assert_eq!(s.step_hold, Duration::from_secs(5));
        assert!(s.shadow);
        assert_eq!(s.config.as_deref(), Some(Path::new("lab/geolb.toml")));
        assert_eq!(s.tiers[0].admin, "http://127.0.1.9:8080");
        assert_eq!(s.tiers[0].name, "tier1");
    }

    #[test]
    fn bad_scenarios_are_refused_with_the_reason() {
        for (edit, why) in [
            (("expiry = \"1h\"", "expiry = \"100h\""), "72h"),
            (("hold = \"30s\"", "hold = \"2h\""), "before the expiry"),
            (
                ("drain = \"eu\"", "drain = \"eu\"\nforce_down = \"eu\""),
                "exactly one",
            ),
            (("drain = \"eu\"", "command = [\"true\"]"), "action.target"),
            (
                ("\"192.0.2.7/24\"", "\"192.0.2.300/24\""),
                "observe.subnets",
            ),
            (
                ("name = \"evacuate eu\"", "name = \"x\"\nbogus = 1"),
                "bogus",
            ),
            (
                ("drain = \"eu\"", "drain = \"eu\"\nsteps = [0.5, 0.1]"),
                "must increase",
            ),
            (
                ("drain = \"eu\"", "drain = \"eu\"\nsteps = [0.5, 0.5]"),
                "must increase",
            ),
            (
                ("drain = \"eu\"", "drain = \"eu\"\nsteps = [0, 1.0]"),
                "(0, 1]",
            ),
            (
                ("drain = \"eu\"", "drain = \"eu\"\nsteps = [0.5, 1.5]"),
                "(0, 1]",
            ),
            (("drain = \"eu\"", "drain = \"eu\"\nsteps = []"), "is empty"),
            (
                ("drain = \"eu\"", "force_down = \"eu\"\nsteps = [0.5, 1.0]"),
                "only a drain",
            ),
            (
                ("drain = \"eu\"", "drain = \"eu\"\nstep_hold = \"5s\""),
                "without action.steps",
            ),
            (
                (
                    "drain = \"eu\"",
                    "drain = \"eu\"\nsteps = [0.1, 0.5, 1.0]\nstep_hold = \"40m\"",
                ),
                "before the expiry",
            ),
        ] {
            let text = OK.replacen(edit.0, edit.1, 1);
            let e = Scenario::parse(Path::new("d.toml"), &text)
                .expect_err(why)
                .to_string();
            assert!(e.contains(why) && e.starts_with("d.toml"), "{why}: {e}");
        }
    }
}

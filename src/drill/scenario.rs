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
    #[serde(rename = "node")]
    nodes: Vec<RawNode>,
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
                Some(f) => {
                    let f = if f.is_relative() {
                        path.parent().unwrap_or(Path::new(".")).join(f)
                    } else {
                        f.clone()
                    };
                    let t = std::fs::read_to_string(&f).map_err(|e| {
                        invalid(format!("node {}: token_file {}: {e}", i + 1, f.display()))
                    })?;
                    Some(t.lines().next().unwrap_or("").trim().to_string())
                }
            };
            let admin = crate::admin::client::base_url(&n.admin);
            nodes.push(Node {
                name: n.name.unwrap_or_else(|| format!("node{}", i + 1)),
                admin,
                dns: n.dns,
                token,
            });
        }
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
        ] {
            let text = OK.replacen(edit.0, edit.1, 1);
            let e = Scenario::parse(Path::new("d.toml"), &text)
                .expect_err(why)
                .to_string();
            assert!(e.contains(why) && e.starts_with("d.toml"), "{why}: {e}");
        }
    }
}

//! Config schema for health: `[monitors.*]` and `[health]` (vantages,
//! quorum, state file).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{de_duration, yes};

fn get() -> String {
    "GET".into()
}
fn slash() -> String {
    "/".into()
}
fn max_body() -> usize {
    64 * 1024
}
fn interval() -> Duration {
    Duration::from_secs(2)
}
fn timeout() -> Duration {
    Duration::from_secs(1)
}
fn jitter() -> f64 {
    0.1
}
fn rise() -> u32 {
    2
}
fn fall() -> u32 {
    3
}

/// An expected HTTP status: a code (200) or a range ("200-299").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRange(pub u16, pub u16);

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Code(u16),
            Text(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!(
                "expect {s:?}: a status code (200) or range (\"200-299\")"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Code(c) if (100..=599).contains(&c) => Ok(StatusRange(c, c)),
            Raw::Code(c) => Err(bad(&c.to_string())),
            Raw::Text(t) => {
                let (a, b) = t.split_once('-').unwrap_or((t.as_str(), t.as_str()));
                match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                    (Ok(a), Ok(b))
                        if a <= b && (100..=599).contains(&a) && (100..=599).contains(&b) =>
                    {
                        Ok(StatusRange(a, b))
                    }
                    _ => Err(bad(&t)),
                }
            }
        }
    }
}

/// What state an endpoint starts in before its first checks complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialState {
    /// Serve it until `fall` checks fail (no outage at startup).
    #[default]
    Up,
    /// Hold it back until `rise` checks pass.
    Down,
}

/// `[monitors.NAME]`: how an endpoint is checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// "tcp" (connect), "http" or "https".
    pub kind: Spanned<String>,
    /// Port to check when the endpoint gives no `check = "addr:port"`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "get")]
    pub method: String,
    #[serde(default = "slash")]
    pub path: String,
    /// Host header (default: the checked address).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Expected status codes or ranges (default 200-399).
    #[serde(default)]
    pub expect: Vec<StatusRange>,
    /// The body must contain this text...
    #[serde(default)]
    pub body: Option<String>,
    /// ...or match this regular expression.
    #[serde(default)]
    pub body_regex: Option<Spanned<String>>,
    /// Bytes of body read at most.
    #[serde(default = "max_body")]
    pub max_body: usize,
    /// https: verify the certificate chain and name.
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// https: server name sent in SNI and verified (default: host, else address).
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default = "interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(default = "timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Random spread of the interval, as a fraction (0.1 = ±10 %).
    #[serde(default = "jitter")]
    pub jitter: f64,
    /// Consecutive successes to go up.
    #[serde(default = "rise")]
    pub rise: u32,
    /// Consecutive failures to go down.
    #[serde(default = "fall")]
    pub fall: u32,
    #[serde(default)]
    pub initial: InitialState,
}

/// A remote prober this node reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VantageConfig {
    /// Base URL of the prober's admin listener (its /v1/observations is read).
    pub url: String,
    /// Bearer token the prober requires.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding `token` (its first line).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// [latitude, longitude]; used to pick the vantage nearest a client.
    #[serde(default)]
    pub location: Option<[f64; 2]>,
    /// Whether its endpoint observations vote. `false`: it is read for
    /// the load its tier reports only (a tier node), and counts in no
    /// quorum.
    #[serde(default = "yes")]
    pub votes: bool,
}

fn local() -> String {
    "local".into()
}
fn fresh() -> Duration {
    Duration::from_secs(10)
}
fn poll() -> Duration {
    Duration::from_secs(2)
}

/// `[health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// This node's vantage name (as seen in votes and observations).
    #[serde(default = "local")]
    pub vantage: String,
    /// Where drains and overrides are kept across restarts.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// Votes (of fresh vantages, this node included unless `local_checks`
    /// is off) needed to take an endpoint down. Default: a majority of the
    /// vantages.
    #[serde(default)]
    pub quorum: Option<usize>,
    /// Whether this node checks the endpoints itself and votes. Off, it
    /// runs no checks and decides from the fresh remote vantages alone
    /// (DNS and tier nodes that read probers: the load on the endpoints
    /// then stays flat as nodes are added). `geolb probe` always checks.
    #[serde(default = "yes")]
    pub local_checks: bool,
    /// A vantage whose data is older than this is left out of the vote.
    #[serde(default = "fresh", deserialize_with = "de_duration")]
    pub fresh_for: Duration,
    /// How often remote vantages are read.
    #[serde(default = "poll", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// Bearer token `geolb probe` requires on /v1/observations.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding `token` (its first line).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Remote probers.
    #[serde(default)]
    pub vantages: BTreeMap<String, VantageConfig>,
    /// This node's [latitude, longitude], for latency steering by probes.
    #[serde(default)]
    pub location: Option<[f64; 2]>,
}

impl HealthConfig {
    /// Down votes needed: the configured quorum, or a majority of all
    /// vantages — this node included when it checks locally, the remote
    /// vantages alone when `local_checks` is off.
    pub fn quorum_needed(&self) -> usize {
        let remote = self.vantages.values().filter(|v| v.votes).count();
        let voters = remote + usize::from(self.local_checks);
        self.quorum.unwrap_or(voters / 2 + 1).max(1)
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            vantage: local(),
            state_file: None,
            quorum: None,
            local_checks: true,
            fresh_for: fresh(),
            poll_interval: poll(),
            token: None,
            token_file: None,
            vantages: BTreeMap::new(),
            location: None,
        }
    }
}

/// `min_healthy`: a count (2) or a share of the pool ("50%").
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinHealthy {
    Count(u32),
    Percent(f64),
}

impl Default for MinHealthy {
    fn default() -> Self {
        MinHealthy::Count(1)
    }
}

impl<'de> Deserialize<'de> for MinHealthy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(c) => Ok(MinHealthy::Count(c)),
            Raw::Text(t) => match t.trim().strip_suffix('%').map(|p| p.trim().parse::<f64>()) {
                Some(Ok(p)) if (0.0..=100.0).contains(&p) => Ok(MinHealthy::Percent(p)),
                _ => Err(serde::de::Error::custom(format!(
                    "min_healthy {t:?}: a count (2) or a percentage (\"50%\")"
                ))),
            },
        }
    }
}

impl MinHealthy {
    /// Endpoints needed out of `n` (at least 1).
    pub fn needed(&self, n: usize) -> u32 {
        match *self {
            MinHealthy::Count(c) => c.max(1),
            MinHealthy::Percent(p) => ((p / 100.0 * n as f64).ceil() as u32).max(1),
        }
    }
}

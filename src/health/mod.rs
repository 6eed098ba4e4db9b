//! Health: monitors produce observations; a rise/fall [`Machine`] per
//! endpoint and vantage turns them into states; a quorum over the fresh
//! vantages (this node, unless it runs no checks of its own, and remote
//! probers) and the operators' overrides turn those into a versioned
//! [`HealthState`].
//!
//! Health knows endpoints only as [`Member`]s: an identity (`pool/address`
//! for DNS endpoints), the names of what contains it (pool, region: the
//! targets an override can name), and how to check it. Whoever hands out
//! or forwards to endpoints registers its members with the one
//! [`HealthService`] and reads the state it publishes; the DNS snapshot maps
//! identities onto its own indices when it compiles.
//!
//! The [`HealthTable`] is the source of truth, keyed by identity, so state
//! survives reloads for every endpoint that still exists. Overrides (drain,
//! force up/down, with an optional expiry) are kept in a state file and
//! survive restarts.

pub mod epoch;
pub mod events;
pub mod machine;
pub mod monitor;
pub mod service;
mod vantage;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

pub use machine::Machine;
pub use monitor::{unix, Kind, Monitor, Observation};
pub use service::{FirstRound, HealthService, OverrideError};

use crate::config::HealthConfig;
use crate::policy::{AdminState, EndpointHealth, Epoch};

/// How an endpoint is checked: a monitor, against an address.
#[derive(Debug, Clone)]
pub struct Check {
    pub monitor: Arc<Monitor>,
    pub addr: SocketAddr,
}

/// The source name of the DNS answers' endpoints.
pub const SOURCE_DNS: &str = "dns";

/// An endpoint as health knows it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Stable identity (`pool/address`): state follows it across reloads.
    pub identity: String,
    /// Who registered it: [`SOURCE_DNS`] or the tier's source. An override
    /// given `only` a source covers that source's members alone.
    pub source: &'static str,
    /// What contains it, most specific first (pool, region): an override
    /// of any of these covers it.
    pub within: Vec<String>,
    /// None: not monitored (up unless an operator says otherwise).
    pub check: Option<Check>,
}

/// Smoothed RTTs measured from one vantage, by identity.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VantageRtts {
    pub name: String,
    pub coords: Option<(f64, f64)>,
    /// Milliseconds, for endpoints with a fresh measurement only.
    pub rtt_ms: FxHashMap<String, f64>,
}

/// One region's load as a tier node reports it: what its listeners of
/// that region carry now, smoothed over a few seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub region: String,
    /// Open connections.
    pub connections: f64,
    /// Requests per second (requests on HTTP listeners, new connections
    /// on TCP ones).
    pub rps: f64,
}

/// What one reporter (a vantage, or this node's own tier) last said about
/// the load of its regions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSource {
    /// When this node received it (unix seconds).
    pub received: f64,
    pub regions: Vec<LoadReport>,
}

/// A region's load summed over the fresh reports that have it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RegionLoadSum {
    pub connections: f64,
    pub rps: f64,
    /// Who reported it (vantage names; this node's own tier as
    /// [`LOCAL_LOAD`]).
    pub reporters: Vec<String>,
    /// When the newest of those reports was received (unix seconds).
    pub at: f64,
}

/// The reporter name of this node's own tier.
pub const LOCAL_LOAD: &str = "(this node)";

/// The health every subscriber reads: immutable, replaced whole, with an
/// epoch: a sequence number that increases with every change, and the
/// consensus id of the verdicts and votes (see [`epoch`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthState {
    pub epoch: Epoch,
    pub endpoints: FxHashMap<String, EndpointHealth>,
    /// This node first, then each remote vantage.
    pub rtt: Vec<VantageRtts>,
    /// Tier load by region, from the fresh reports (this node's own tier
    /// and the vantages that report one). Not part of the epoch id: it
    /// moves every round without changing a verdict.
    pub load: BTreeMap<String, RegionLoadSum>,
}

impl HealthState {
    /// Health of the endpoint with this identity (up when unknown).
    pub fn get(&self, identity: &str) -> EndpointHealth {
        self.endpoints.get(identity).copied().unwrap_or_default()
    }
    fn same_as(&self, o: &HealthState) -> bool {
        self.epoch.id == o.epoch.id
            && self.epoch.since == o.epoch.since
            && self.endpoints == o.endpoints
            && self.load == o.load
            && self.rtt.len() == o.rtt.len()
            && self.rtt.iter().zip(&o.rtt).all(|(a, b)| {
                a.name == b.name
                    && a.coords == b.coords
                    && a.rtt_ms.len() == b.rtt_ms.len()
                    && a.rtt_ms
                        .iter()
                        .all(|(k, v)| b.rtt_ms.get(k).is_some_and(|w| w.to_bits() == v.to_bits()))
            })
    }
}

/// An operator's override of an endpoint, pool or region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    pub target: String,
    pub state: AdminState,
    /// Unix seconds after which it reverts by itself.
    #[serde(default)]
    pub until: Option<f64>,
    pub set_at: f64,
    /// Only the members of this source (`dns`: DNS answers; `tier`: the
    /// tier's backends); none: every source. The first phase of a
    /// two-phase drain is a drain of `dns` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<String>,
    /// A partial drain (`state` drain): the share of client subnets, in
    /// (0, 1), whose DNS answers leave the target; none: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
}

impl Override {
    /// The state and partial-drain share it gives the endpoints it covers.
    pub fn admin(&self) -> (AdminState, u16) {
        match (self.state, self.fraction) {
            (AdminState::Drain, Some(f)) if f < 1.0 => {
                (AdminState::None, crate::policy::health::partial_units(f))
            }
            (s, _) => (s, 0),
        }
    }

    /// "drain", "drain 50 %", "force_down"...
    pub fn describe(&self) -> String {
        let state = format!("{:?}", self.state).to_lowercase();
        match self.fraction {
            Some(f) if self.state == AdminState::Drain && f < 1.0 => {
                format!("partial drain {:.0} %", f * 100.0)
            }
            _ => state,
        }
    }
}

/// What a remote vantage last said of an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemoteVote {
    pub up: bool,
    /// When this node received it (unix seconds).
    pub received: f64,
    pub error: Option<String>,
    pub rtt_ms: Option<f64>,
    /// When the vantage's state for the endpoint last changed, by the
    /// vantage's clock (unix seconds; None from a vantage that does not say).
    pub since: Option<f64>,
}

/// Everything known about one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    pub monitored: bool,
    /// The monitor's name and the address it checks.
    pub monitor: Option<String>,
    pub check: Option<String>,
    pub local: Machine,
    /// When `local` last changed (or the entry was made), unix seconds.
    pub local_since: f64,
    pub last: Option<Observation>,
    pub rtt_ewma_ms: Option<f64>,
    pub remote: BTreeMap<String, RemoteVote>,
    /// Result of the vote (before overrides).
    pub checked_up: bool,
    pub reason: String,
    /// Unix seconds of the last change of the effective state.
    pub last_change: f64,
    pub effective_up: bool,
    /// Local checks that passed / failed since start.
    pub probes_ok: u64,
    pub probes_fail: u64,
    /// Check durations: counts per `PROBE_BUCKETS` bound (+Inf last), and their sum in seconds.
    #[serde(skip)]
    pub rtt_buckets: [u64; 11],
    #[serde(skip)]
    pub rtt_sum: f64,
}

/// Reachability of a remote vantage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VantageStatus {
    pub url: String,
    pub last_ok: Option<f64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<f64>,
}

/// Health of every endpoint, by identity.
#[derive(Debug, Default)]
pub struct HealthTable {
    pub endpoints: BTreeMap<String, EndpointStatus>,
    pub overrides: Vec<Override>,
    pub vantages: BTreeMap<String, VantageStatus>,
    pub state_file: Option<PathBuf>,
    /// The state file could not be read at start (kept for the life of
    /// the process); shown in `/v1/status`.
    pub state_load_error: Option<String>,
    /// The last write of the state file failed (until one succeeds).
    pub state_error: Option<String>,
    /// Tier load reported by each remote vantage that reports one.
    pub load: BTreeMap<String, LoadSource>,
    /// This node's own tier's load (pushed by the tier every second).
    pub local_load: Option<LoadSource>,
}

/// Installs the TLS crypto provider (ring) that HTTP clients need; safe to
/// call any number of times, from anywhere.
pub fn ensure_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An error with its chain of causes ("connect: ...: connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

/// Latency histogram buckets for probes, in seconds.
pub const PROBE_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// EWMA weight of a new RTT sample.
const EWMA: f64 = 0.3;

#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    overrides: Vec<Override>,
}

impl HealthTable {
    /// Adds entries for new members (in their monitor's initial state) and
    /// drops entries of endpoints that are no longer members.
    pub fn sync(&mut self, members: &[Member], now: f64) {
        let mut keep = std::collections::BTreeSet::new();
        for m in members {
            keep.insert(m.identity.as_str());
            let mon = m.check.as_ref().map(|c| &c.monitor);
            let entry =
                self.endpoints
                    .entry(m.identity.clone())
                    .or_insert_with(|| EndpointStatus {
                        monitored: mon.is_some(),
                        monitor: None,
                        check: None,
                        local: Machine::new(
                            mon.map_or(crate::config::InitialState::Up, |m| m.initial),
                        ),
                        local_since: now,
                        last: None,
                        rtt_ewma_ms: None,
                        remote: BTreeMap::new(),
                        // A node without local checks keeps its last
                        // verdict while no vantage is fresh: the first one
                        // is the monitor's initial state (up by default).
                        checked_up: mon
                            .is_none_or(|m| m.initial == crate::config::InitialState::Up),
                        reason: String::new(),
                        last_change: now,
                        effective_up: true,
                        probes_ok: 0,
                        probes_fail: 0,
                        rtt_buckets: [0; 11],
                        rtt_sum: 0.0,
                    });
            if entry.monitored != mon.is_some() {
                entry.monitored = mon.is_some();
                if let Some(m) = mon {
                    entry.local = Machine::new(m.initial);
                    entry.local_since = now;
                    entry.checked_up = m.initial == crate::config::InitialState::Up;
                }
            }
            entry.monitor = mon.map(|m| m.name.clone());
            entry.check = m.check.as_ref().map(|c| c.addr.to_string());
        }
        self.endpoints.retain(|k, _| keep.contains(k.as_str()));
    }

    /// Forgets what the local checks saw: every monitored member back to
    /// its monitor's initial state, with no last result or RTT (local
    /// checks were turned on or off).
    pub fn reset_local(&mut self, members: &[Member], now: f64) {
        for m in members {
            let (Some(c), Some(st)) = (&m.check, self.endpoints.get_mut(&m.identity)) else {
                continue;
            };
            st.local = Machine::new(c.monitor.initial);
            st.local_since = now;
            st.last = None;
            st.rtt_ewma_ms = None;
        }
    }

    /// Records a local check result; returns whether the local state changed.
    pub fn observe(&mut self, identity: &str, obs: Observation, rise: u32, fall: u32) -> bool {
        let Some(st) = self.endpoints.get_mut(identity) else {
            return false;
        };
        let changed = st.local.observe(obs.ok, rise, fall);
        if changed {
            st.local_since = obs.at;
        }
        if obs.ok {
            st.probes_ok += 1;
        } else {
            st.probes_fail += 1;
        }
        let secs = obs.rtt_ms / 1000.0;
        let b = PROBE_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(PROBE_BUCKETS.len());
        st.rtt_buckets[b] += 1;
        st.rtt_sum += secs;
        if obs.ok {
            st.rtt_ewma_ms = Some(match st.rtt_ewma_ms {
                Some(prev) => prev + EWMA * (obs.rtt_ms - prev),
                None => obs.rtt_ms,
            });
        }
        st.last = Some(obs);
        changed
    }

    /// The override that applies to a member: the most specific target
    /// (its identity, then what contains it: pool, then region).
    pub fn override_for(&self, m: &Member) -> Option<&Override> {
        std::iter::once(&m.identity).chain(&m.within).find_map(|t| {
            self.overrides
                .iter()
                .find(|o| &o.target == t && o.only.as_deref().is_none_or(|s| s == m.source))
        })
    }

    /// Removes expired overrides and returns them.
    pub fn expire(&mut self, now: f64) -> Vec<Override> {
        let (expired, kept): (Vec<Override>, Vec<Override>) = std::mem::take(&mut self.overrides)
            .into_iter()
            .partition(|o| o.until.is_some_and(|u| u <= now));
        self.overrides = kept;
        for o in &expired {
            tracing::info!(target = %o.target, state = ?o.state, "an operator override expired and was reverted");
        }
        expired
    }

    /// Votes, quorum and overrides → the state subscribers read, with its
    /// consensus id and ordering hint (the service numbers it: `seq` 0).
    /// Also updates each endpoint's effective state and reason.
    pub fn evaluate(&mut self, members: &[Member], cfg: &HealthConfig, now: f64) -> HealthState {
        let quorum = cfg.quorum_needed();
        let fresh_for = cfg.fresh_for.as_secs_f64();
        let mut state = HealthState::default();
        let mut entries: BTreeMap<&str, epoch::Entry<'_>> = BTreeMap::new();
        let mut since: Option<f64> = None;
        for m in members {
            let (admin, partial) = self
                .override_for(m)
                .map_or((AdminState::None, 0), Override::admin);
            let Some(st) = self.endpoints.get_mut(&m.identity) else {
                continue;
            };
            let mut votes = Vec::new();
            let (checked_up, reason) = if !st.monitored {
                (true, "no monitor".to_string())
            } else {
                // Named by the config's key (not the table's), so the
                // id's borrow is of the config, not of the table.
                let fresh: Vec<(&String, &RemoteVote)> = st
                    .remote
                    .iter()
                    .filter_map(|(v, r)| {
                        let (name, _) = cfg.vantages.get_key_value(v)?;
                        (now - r.received <= fresh_for).then_some((name, r))
                    })
                    .collect();
                for (v, r) in &fresh {
                    votes.push((v.as_str(), r.up));
                    if let Some(t) = r.since {
                        since = Some(since.map_or(t, |s| s.max(t)));
                    }
                }
                if !cfg.local_checks {
                    remote_verdict(st.checked_up, !st.remote.is_empty(), &fresh, quorum)
                } else if fresh.is_empty() {
                    let why = if cfg.vantages.is_empty() {
                        "local checks"
                    } else {
                        "local checks (no remote vantage is fresh)"
                    };
                    (st.local.up, why.to_string())
                } else {
                    let votes = 1 + fresh.len();
                    let down =
                        usize::from(!st.local.up) + fresh.iter().filter(|(_, r)| !r.up).count();
                    let needed = quorum.min(votes);
                    (
                        down < needed,
                        format!("{down} of {votes} fresh vantages say down, {needed} needed"),
                    )
                }
            };
            let h = EndpointHealth {
                checked_up,
                admin,
                capacity_low: false,
                partial,
            };
            let eff = h.up();
            if eff != st.effective_up {
                st.last_change = now;
                tracing::info!(endpoint = %m.identity, up = eff, reason = %reason, admin = ?admin, "endpoint state changed");
            }
            st.checked_up = checked_up;
            st.reason = reason;
            st.effective_up = eff;
            state.endpoints.insert(m.identity.clone(), h);
            entries.insert(m.identity.as_str(), epoch::Entry { health: h, votes });
        }
        // Smoothed RTTs per vantage, this node first.
        let coords = |c: Option<[f64; 2]>| c.map(|[a, b]| (a, b));
        let mut local = VantageRtts {
            name: cfg.vantage.clone(),
            coords: coords(cfg.location),
            rtt_ms: FxHashMap::default(),
        };
        let mut remotes: Vec<VantageRtts> = cfg
            .vantages
            .iter()
            .map(|(n, v)| VantageRtts {
                name: n.clone(),
                coords: coords(v.location),
                rtt_ms: FxHashMap::default(),
            })
            .collect();
        for m in members {
            let Some(st) = self.endpoints.get(&m.identity) else {
                continue;
            };
            if let Some(ms) = st.rtt_ewma_ms.filter(|_| cfg.local_checks && st.local.up) {
                local.rtt_ms.insert(m.identity.clone(), ms);
            }
            for v in remotes.iter_mut() {
                if let Some(r) = st
                    .remote
                    .get(&v.name)
                    .filter(|r| r.up && now - r.received <= fresh_for)
                {
                    v.rtt_ms
                        .insert(m.identity.clone(), r.rtt_ms.unwrap_or(f64::NAN));
                }
            }
        }
        state.rtt.push(local);
        state.rtt.extend(remotes);
        state.load = self.load_sums(cfg, now);
        state.epoch.id = epoch::consensus_id(&entries);
        state.epoch.since = since;
        state
    }

    /// Each region's load summed over the fresh reports: this node's own
    /// tier's and those of the configured vantages (older than
    /// `fresh_for`, a report no longer counts, as a stale vote does not).
    pub fn load_sums(&self, cfg: &HealthConfig, now: f64) -> BTreeMap<String, RegionLoadSum> {
        let fresh_for = cfg.fresh_for.as_secs_f64();
        let remote = self
            .load
            .iter()
            .filter(|(name, _)| cfg.vantages.contains_key(*name))
            .map(|(name, src)| (name.as_str(), src));
        let mut out: BTreeMap<String, RegionLoadSum> = BTreeMap::new();
        for (name, src) in self
            .local_load
            .iter()
            .map(|l| (LOCAL_LOAD, l))
            .chain(remote)
            .filter(|(_, src)| now - src.received <= fresh_for)
        {
            for r in &src.regions {
                let sum = out.entry(r.region.clone()).or_default();
                sum.connections += r.connections;
                sum.rps += r.rps;
                sum.reporters.push(name.to_string());
                sum.at = sum.at.max(src.received);
            }
        }
        out
    }

    /// Reads overrides from the state file. A missing file is an empty
    /// state; an unreadable one is moved aside (never silently dropped).
    pub fn load_state(&mut self, path: &Path) -> Result<(), String> {
        self.state_file = Some(path.to_path_buf());
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                let e = format!("{}: {e}", path.display());
                self.state_load_error = Some(e.clone());
                return Err(e);
            }
        };
        match serde_json::from_str::<StateFile>(&text) {
            Ok(s) => {
                self.overrides = s.overrides;
                Ok(())
            }
            Err(e) => {
                let aside =
                    path.with_extension(format!("corrupt-{}", unix(SystemTime::now()) as u64));
                let _ = std::fs::rename(path, &aside);
                let e = format!(
                    "{}: unreadable ({e}); moved to {} and starting without overrides",
                    path.display(),
                    aside.display()
                );
                self.state_load_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Writes overrides to the state file (atomically: temp file + rename).
    pub fn save_state(&mut self) -> Result<(), String> {
        let r = self.write_state();
        match &r {
            Ok(()) => self.state_error = None,
            Err(e) => self.state_error = Some(e.clone()),
        }
        r
    }

    fn write_state(&self) -> Result<(), String> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let body = serde_json::to_string_pretty(&StateFile {
            version: 1,
            overrides: self.overrides.clone(),
        })
        .map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The verdict of a node that runs no checks of its own
/// (`local_checks = false`): a quorum of the fresh remote votes alone, or,
/// with none fresh, the last verdict kept (fail static, as in a partition;
/// before any vote arrived that is the monitor's initial state, up unless
/// it says otherwise).
fn remote_verdict(
    last: bool,
    ever_heard: bool,
    fresh: &[(&String, &RemoteVote)],
    quorum: usize,
) -> (bool, String) {
    let word = |up: bool| if up { "up" } else { "down" };
    if fresh.is_empty() {
        let why = if ever_heard {
            format!(
                "no local checks and no fresh vantage: last verdict kept ({})",
                word(last)
            )
        } else {
            format!(
                "no local checks and no vantage heard yet: {} until the vantages vote",
                word(last)
            )
        };
        return (last, why);
    }
    let votes = fresh.len();
    let down = fresh.iter().filter(|(_, r)| !r.up).count();
    let needed = quorum.min(votes);
    (
        down < needed,
        format!("{down} of {votes} fresh vantages say down, {needed} needed (no local vote)"),
    )
}

/// What `GET /v1/observations` serves (and what nodes read from probers).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Observations {
    pub vantage: String,
    pub generated_at: f64,
    pub endpoints: Vec<ObservedEndpoint>,
    /// The load of this node's own tier, per region it runs (only when a
    /// region has a capacity configured; never relayed from elsewhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load: Vec<LoadReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObservedEndpoint {
    pub endpoint: String,
    pub up: bool,
    /// When `up` last changed, by this vantage's clock (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<f64>,
    pub last: Option<Observation>,
    pub rtt_ewma_ms: Option<f64>,
}

impl HealthTable {
    /// This vantage's own view, for remote readers.
    pub fn observations(&self, vantage: &str, now: f64) -> Observations {
        Observations {
            vantage: vantage.to_string(),
            generated_at: now,
            endpoints: self
                .endpoints
                .iter()
                .filter(|(_, s)| s.monitored)
                .map(|(k, s)| ObservedEndpoint {
                    endpoint: k.clone(),
                    up: s.local.up,
                    since: Some(s.local_since),
                    last: s.last.clone(),
                    rtt_ewma_ms: s.rtt_ewma_ms,
                })
                .collect(),
            load: Vec::new(),
        }
    }

    /// Records what a remote vantage reported: its votes (unless it does
    /// not vote) and the load of its tier.
    pub fn remote(&mut self, vantage: &str, obs: &Observations, now: f64, votes: bool) {
        if obs.load.is_empty() {
            self.load.remove(vantage);
        } else {
            self.load.insert(
                vantage.to_string(),
                LoadSource {
                    received: now,
                    regions: obs.load.clone(),
                },
            );
        }
        for e in obs.endpoints.iter().filter(|_| votes) {
            if let Some(st) = self.endpoints.get_mut(&e.endpoint) {
                st.remote.insert(
                    vantage.to_string(),
                    RemoteVote {
                        up: e.up,
                        received: now,
                        error: e.last.as_ref().and_then(|l| l.error.clone()),
                        rtt_ms: e.rtt_ewma_ms,
                        since: e.since,
                    },
                );
            }
        }
        let v = self.vantages.entry(vantage.to_string()).or_default();
        v.last_ok = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn topo(vantages: &str) -> (Vec<Member>, HealthConfig) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("z.zone"), "").expect("w");
        let cfg = format!(
            "[monitors.m]\nkind = \"tcp\"\nport = 80\n\
             [zones.\"example.com\"]\nfile = \"z.zone\"\n{vantages}"
        );
        let c = Config::parse(&dir.path().join("g.toml"), &cfg).expect("config");
        let mon = Arc::new(Monitor::compile("m", &c.monitors[0].value).expect("monitor"));
        let members = ["10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|a| Member {
                identity: format!("p/{a}"),
                source: SOURCE_DNS,
                within: vec!["p".into(), "r".into()],
                check: Some(Check {
                    monitor: mon.clone(),
                    addr: SocketAddr::new(a.parse().expect("ip"), 80),
                }),
            })
            .collect();
        (members, c.health)
    }

    const A: &str = "p/10.0.0.1";
    const B: &str = "p/10.0.0.2";

    fn obs(ok: bool) -> Observation {
        Observation {
            vantage: "local".into(),
            at: 0.0,
            ok,
            error: (!ok).then(|| "refused".into()),
            rtt_ms: 1.0,
        }
    }

    fn report(up: bool) -> Observations {
        Observations {
            vantage: "x".into(),
            generated_at: 0.0,
            endpoints: vec![ObservedEndpoint {
                endpoint: "p/10.0.0.1".into(),
                up,
                since: Some(if up { 10.0 } else { 20.0 }),
                last: None,
                rtt_ewma_ms: None,
            }],
            load: Vec::new(),
        }
    }

    #[test]
    fn local_checks_decide_without_remote_vantages() {
        let (t, cfg) = topo("");
        let mut h = HealthTable::default();
        h.sync(&t, 0.0);
        for _ in 0..3 {
            h.observe("p/10.0.0.1", obs(false), 2, 3);
        }
        let v = h.evaluate(&t, &cfg, 1.0);
        assert!(!v.get(A).up() && v.get(B).up());
    }

    #[test]
    fn a_quorum_of_fresh_vantages_is_needed_and_one_partitioned_prober_cannot_take_an_endpoint_down(
    ) {
        let (t, cfg) = topo(
            "[health]\nquorum = 2\nfresh_for = \"10s\"\n[health.vantages.a]\nurl = \"http://127.0.0.1:1\"\n[health.vantages.b]\nurl = \"http://127.0.0.1:2\"\n",
        );
        let mut h = HealthTable::default();
        h.sync(&t, 0.0);
        // b is partitioned from the endpoint and says down; we and a say up.
        h.remote("a", &report(true), 100.0, true);
        h.remote("b", &report(false), 100.0, true);
        assert!(h.evaluate(&t, &cfg, 101.0).get(A).up());
        // a agrees with b: two votes, down.
        h.remote("a", &report(false), 102.0, true);
        assert!(!h.evaluate(&t, &cfg, 103.0).get(A).up());
        // Both remote reports go stale: back to local checks (up).
        assert!(h.evaluate(&t, &cfg, 120.0).get(A).up());
        // Only b fresh and down, we say up: 1 of 2, quorum 2 → up.
        h.remote("b", &report(false), 130.0, true);
        assert!(h.evaluate(&t, &cfg, 131.0).get(A).up());
    }

    fn three_probers() -> (Vec<Member>, HealthConfig) {
        topo(
            "[health]\nfresh_for = \"10s\"\n[health.vantages.a]\nurl = \"http://127.0.0.1:1\"\n\
             [health.vantages.b]\nurl = \"http://127.0.0.1:2\"\n[health.vantages.c]\nurl = \"http://127.0.0.1:3\"\n",
        )
    }

    #[test]
    fn two_nodes_that_saw_the_same_votes_agree_on_the_epoch_id_whenever_and_in_whatever_order_they_polled(
    ) {
        let (t, cfg) = three_probers();
        // Node 1 polls a, b, c early; node 2 polls c, b, a later, and its
        // own checks have seen failures that did not tip its local vote.
        let mut n1 = HealthTable::default();
        n1.sync(&t, 0.0);
        for v in ["a", "b", "c"] {
            n1.remote(v, &report(false), 100.0, true);
        }
        let mut n2 = HealthTable::default();
        n2.sync(&t, 50.0);
        n2.observe(A, obs(false), 2, 3);
        for v in ["c", "b", "a"] {
            n2.remote(v, &report(false), 104.0, true);
        }
        let s1 = n1.evaluate(&t, &cfg, 101.0);
        let s2 = n2.evaluate(&t, &cfg, 105.0);
        assert!(!s1.get(A).up() && !s2.get(A).up());
        assert_eq!(s1.epoch.id, s2.epoch.id);
        assert_eq!(s1.epoch.since, Some(20.0), "the probers' own change time");
        assert_eq!(s1.epoch.since, s2.epoch.since);
        // Not a constant: all up is another id, and so is one prober's
        // change of mind that does not change the verdict.
        let mut n3 = HealthTable::default();
        n3.sync(&t, 0.0);
        for v in ["a", "b", "c"] {
            n3.remote(v, &report(true), 100.0, true);
        }
        let s3 = n3.evaluate(&t, &cfg, 101.0);
        assert!(s3.get(A).up());
        assert_ne!(s3.epoch.id, s1.epoch.id);
        n3.remote("c", &report(false), 102.0, true);
        let s4 = n3.evaluate(&t, &cfg, 103.0);
        assert!(s4.get(A).up(), "1 of 4 says down");
        assert_ne!(s4.epoch.id, s3.epoch.id);
        assert_eq!(s4.epoch.since, Some(20.0));
        // A vote that went stale leaves the id.
        let s5 = n1.evaluate(&t, &cfg, 200.0);
        assert_ne!(s5.epoch.id, s1.epoch.id);
        assert_eq!(s5.epoch.since, None);
    }

    fn three_probers_no_local_checks() -> (Vec<Member>, HealthConfig) {
        topo(
            "[health]\nlocal_checks = false\nfresh_for = \"10s\"\n[health.vantages.a]\nurl = \"http://127.0.0.1:1\"\n\
             [health.vantages.b]\nurl = \"http://127.0.0.1:2\"\n[health.vantages.c]\nurl = \"http://127.0.0.1:3\"\n",
        )
    }

    #[test]
    fn without_local_checks_a_quorum_of_the_fresh_remote_votes_alone_decides() {
        let (t, cfg) = three_probers_no_local_checks();
        assert_eq!(cfg.quorum_needed(), 2, "a majority of the three probers");
        let mut h = HealthTable::default();
        h.sync(&t, 0.0);
        // This node's own machine says down; it does not vote.
        for _ in 0..3 {
            h.observe(A, obs(false), 2, 3);
        }
        assert!(!h.endpoints[A].local.up);
        h.remote("a", &report(true), 100.0, true);
        h.remote("b", &report(true), 100.0, true);
        h.remote("c", &report(false), 100.0, true);
        let s = h.evaluate(&t, &cfg, 101.0);
        assert!(s.get(A).up(), "1 of 3 says down, 2 needed");
        assert_eq!(
            h.endpoints[A].reason,
            "1 of 3 fresh vantages say down, 2 needed (no local vote)"
        );
        h.remote("b", &report(false), 102.0, true);
        assert!(!h.evaluate(&t, &cfg, 103.0).get(A).up(), "2 of 3");
        // Only a and c fresh: needed = min(quorum, votes) = 2; c alone
        // says down → up.
        h.remote("a", &report(true), 110.0, true);
        h.remote("c", &report(false), 110.0, true);
        assert!(h.evaluate(&t, &cfg, 113.0).get(A).up(), "1 of 2 fresh");
        // Only c fresh, down: one vote, one needed → down.
        h.remote("c", &report(false), 125.0, true);
        let s = h.evaluate(&t, &cfg, 126.0);
        assert!(!s.get(A).up(), "{}", h.endpoints[A].reason);
        assert_eq!(
            h.endpoints[A].reason,
            "1 of 1 fresh vantages say down, 1 needed (no local vote)"
        );
        // The same votes give the same verdict and id whatever this node's
        // own machine says (it has no vote to give).
        let mut other = HealthTable::default();
        other.sync(&t, 0.0);
        other.remote("c", &report(false), 125.5, true);
        for v in ["a", "b"] {
            other.remote(v, &report(true), 100.0, true);
        }
        let o = other.evaluate(&t, &cfg, 126.0);
        assert_eq!(o.endpoints, s.endpoints);
        assert_eq!(o.epoch.id, s.epoch.id);
    }

    #[test]
    fn without_local_checks_and_no_fresh_vantage_the_last_verdict_is_kept_starting_up() {
        let (t, cfg) = three_probers_no_local_checks();
        let mut h = HealthTable::default();
        h.sync(&t, 0.0);
        for _ in 0..3 {
            h.observe(A, obs(false), 2, 3);
        }
        // Nothing heard yet: up (fail open), and the reason says why.
        let s0 = h.evaluate(&t, &cfg, 1.0);
        assert!(s0.get(A).up() && s0.get(B).up());
        assert!(
            h.endpoints[A].reason.contains("no vantage heard yet: up"),
            "{}",
            h.endpoints[A].reason
        );
        assert_eq!(s0.epoch.since, None);
        // The probers take A down; then every one of them goes stale.
        for v in ["a", "b", "c"] {
            h.remote(v, &report(false), 100.0, true);
        }
        let down = h.evaluate(&t, &cfg, 101.0);
        assert!(!down.get(A).up());
        let stale = h.evaluate(&t, &cfg, 200.0);
        assert!(!stale.get(A).up(), "fail static: still down");
        assert!(stale.get(B).up());
        assert_eq!(
            h.endpoints[A].reason,
            "no local checks and no fresh vantage: last verdict kept (down)"
        );
        // The id names the verdicts with no vote behind them: not the
        // voted one, the same on every later round, and the same as a node
        // that kept the same verdicts.
        assert_ne!(stale.epoch.id, down.epoch.id);
        assert_eq!(stale.epoch.since, None);
        assert_eq!(h.evaluate(&t, &cfg, 300.0).epoch.id, stale.epoch.id);
        let kept = epoch::consensus_id(
            &[(A, false), (B, true)]
                .into_iter()
                .map(|(id, up)| {
                    let health = EndpointHealth {
                        checked_up: up,
                        ..EndpointHealth::default()
                    };
                    (
                        id,
                        epoch::Entry {
                            health,
                            votes: Vec::new(),
                        },
                    )
                })
                .collect(),
        );
        assert_eq!(stale.epoch.id, kept);
        // A fresh vote again decides.
        h.remote("a", &report(true), 400.0, true);
        assert!(h.evaluate(&t, &cfg, 401.0).get(A).up(), "0 of 1 says down");
    }

    #[test]
    fn without_local_checks_a_monitor_that_starts_down_holds_until_the_vantages_vote() {
        let (mut t, cfg) = three_probers_no_local_checks();
        let mut mc = (*t[0].check.as_ref().expect("check").monitor).clone();
        mc.initial = crate::config::InitialState::Down;
        for m in &mut t {
            if let Some(c) = m.check.as_mut() {
                c.monitor = Arc::new(mc.clone());
            }
        }
        let mut h = HealthTable::default();
        h.sync(&t, 0.0);
        assert!(!h.evaluate(&t, &cfg, 1.0).get(A).up());
        for v in ["a", "b", "c"] {
            h.remote(v, &report(true), 2.0, true);
        }
        assert!(h.evaluate(&t, &cfg, 3.0).get(A).up());
    }

    fn load(region: &str, connections: f64) -> Observations {
        Observations {
            load: vec![LoadReport {
                region: region.into(),
                connections,
                rps: 2.0,
            }],
            ..report(false)
        }
    }

    #[test]
    fn tier_load_is_summed_over_fresh_reports_and_a_stale_one_no_longer_counts() {
        let (t, cfg) = topo(
            "[health]\nfresh_for = \"10s\"\n[health.vantages.a]\nurl = \"http://127.0.0.1:1\"\n\
             [health.vantages.tier-eu]\nurl = \"http://127.0.0.1:2\"\nvotes = false\n",
        );
        assert_eq!(
            cfg.quorum_needed(),
            2,
            "this node and a: tier-eu does not vote"
        );
        let mut h = HealthTable::default();
        h.sync(&t, 0.0);
        // The tier node's "down" for A is not a vote; its load counts.
        h.remote("tier-eu", &load("eu", 30.0), 100.0, false);
        h.local_load = Some(LoadSource {
            received: 104.0,
            regions: vec![LoadReport {
                region: "eu".into(),
                connections: 10.0,
                rps: 1.0,
            }],
        });
        let s = h.evaluate(&t, &cfg, 105.0);
        assert!(s.get(A).up());
        assert!(h.endpoints[A].remote.is_empty(), "no vote recorded");
        let eu = &s.load["eu"];
        assert_eq!((eu.connections, eu.rps, eu.at), (40.0, 3.0, 104.0));
        assert_eq!(eu.reporters, [LOCAL_LOAD, "tier-eu"]);
        // The tier node's report goes stale: only this node's own counts.
        let s = h.evaluate(&t, &cfg, 111.0);
        assert_eq!(s.load["eu"].connections, 10.0);
        // Both stale: no load known.
        assert!(h.evaluate(&t, &cfg, 115.0).load.is_empty());
        // A report without load forgets the vantage's last one.
        h.remote("tier-eu", &load("eu", 30.0), 120.0, false);
        h.remote("tier-eu", &report(true), 121.0, false);
        assert!(h.evaluate(&t, &cfg, 121.0).load.is_empty());
        // A vantage no longer configured does not count.
        h.remote("gone", &load("eu", 5.0), 122.0, true);
        assert!(h.evaluate(&t, &cfg, 122.0).load.is_empty());
    }

    #[test]
    fn the_same_drain_set_at_other_times_gives_the_same_epoch_id() {
        let (t, cfg) = topo("");
        let drain = |set_at: f64, until: Option<f64>| {
            let mut h = HealthTable::default();
            h.sync(&t, 0.0);
            h.overrides.push(Override {
                target: "p".into(),
                state: AdminState::Drain,
                until,
                set_at,
                only: None,
                fraction: None,
            });
            h.evaluate(&t, &cfg, 1.0).epoch.id
        };
        assert_eq!(drain(0.0, Some(600.0)), drain(0.5, Some(601.0)));
        let mut none = HealthTable::default();
        none.sync(&t, 0.0);
        assert_ne!(drain(0.0, None), none.evaluate(&t, &cfg, 1.0).epoch.id);
    }

    #[test]
    fn overrides_apply_most_specific_first_and_expire() {
        let (t, cfg) = topo("");
        let mut h = HealthTable::default();
        h.sync(&t, 0.0);
        h.overrides.push(Override {
            target: "r".into(),
            state: AdminState::Drain,
            until: Some(50.0),
            set_at: 0.0,
            only: None,
            fraction: None,
        });
        h.overrides.push(Override {
            target: "p/10.0.0.2".into(),
            state: AdminState::ForceUp,
            until: None,
            set_at: 0.0,
            only: None,
            fraction: None,
        });
        let v = h.evaluate(&t, &cfg, 1.0);
        assert!(!v.get(A).up(), "region drain");
        assert!(v.get(B).up(), "endpoint force-up beats the region drain");
        assert_eq!(h.expire(60.0).len(), 1);
        assert!(h.evaluate(&t, &cfg, 60.0).get(A).up());
    }

    #[test]
    fn a_partial_drain_keeps_the_endpoints_up_with_its_share_and_expires() {
        let (t, cfg) = topo("");
        let mut h = HealthTable::default();
        h.sync(&t, 0.0);
        let plain = h.evaluate(&t, &cfg, 1.0).epoch.id;
        h.overrides.push(Override {
            target: "r".into(),
            state: AdminState::Drain,
            until: Some(50.0),
            set_at: 0.0,
            only: None,
            fraction: Some(0.25),
        });
        let v = h.evaluate(&t, &cfg, 1.0);
        assert!(v.get(A).up() && v.get(B).up(), "up for the other subnets");
        assert_eq!(v.get(A).partial, 2500);
        assert_ne!(v.epoch.id, plain, "a partial drain is part of the epoch");
        assert_eq!(h.overrides[0].describe(), "partial drain 25 %");
        assert_eq!(h.expire(60.0).len(), 1);
        assert_eq!(h.evaluate(&t, &cfg, 60.0).get(A).partial, 0);
        assert_eq!(h.evaluate(&t, &cfg, 60.0).epoch.id, plain);
    }

    #[test]
    fn state_file_round_trips_and_a_corrupt_one_is_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/geolb.json");
        let mut h = HealthTable {
            state_file: Some(path.clone()),
            ..HealthTable::default()
        };
        h.overrides.push(Override {
            target: "eu".into(),
            state: AdminState::Drain,
            until: None,
            set_at: 1.0,
            only: None,
            fraction: None,
        });
        h.save_state().expect("save");
        let mut back = HealthTable::default();
        back.load_state(&path).expect("load");
        assert_eq!(back.overrides, h.overrides);
        std::fs::write(&path, "{ not json").expect("w");
        let mut bad = HealthTable::default();
        let err = bad.load_state(&path).expect_err("corrupt");
        assert!(err.contains("moved to"));
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(path.parent().expect("dir"))
                .expect("ls")
                .count(),
            1
        );
    }
}

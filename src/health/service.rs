//! The health service: the one place health lives for the whole process.
//! It owns the [`HealthTable`], one check task per monitored member (none
//! when `[health] local_checks = false`: the remote vantages decide), the
//! polling of remote vantages and the operators' overrides with their state
//! file, and publishes an immutable [`HealthState`] with an epoch: a
//! sequence number that increases with every change, and the consensus id
//! of the verdicts and votes (see [`super::epoch`]), with when it last
//! changed.
//!
//! Members come from whoever hands out or forwards to endpoints, each under
//! a source name (the DNS snapshot registers `dns`); readers take
//! [`current`](HealthService::current) (one atomic load) or
//! [`subscribe`](HealthService::subscribe) to hear of every new epoch.
//! Subscribers are called after the table's lock is released, and always
//! with the newest state, so a slow or re-entrant subscriber cannot wedge
//! health or see states out of order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::events::{self, Event, Events};
use super::{
    unix, HealthState, HealthTable, LoadReport, LoadSource, Member, Observation, Observations,
    Override,
};
use crate::config::HealthConfig;
use crate::policy::AdminState;

/// Why an override could not be set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    #[error("no endpoint, pool or region is named {0:?}")]
    UnknownTarget(String),
    #[error("not saved, so not applied: {0}")]
    Persist(String),
    #[error("fraction = {0}: expected the share of client subnets to drain, in (0, 1]")]
    Fraction(f64),
    #[error("fraction: only a drain can be partial")]
    FractionNeedsDrain,
}

type Subscriber = Box<dyn Fn(&Arc<HealthState>) + Send + Sync>;

/// How far health is through its first round: what readiness waits for.
/// A node that checks locally waits for a result of every monitored
/// member; one that does not (`local_checks = false`) waits for the first
/// poll of every vantage (read or failed), or `fresh_for` since start,
/// whichever comes first, so it never waits forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirstRound {
    pub local_checks: bool,
    /// Monitored endpoints and backends, and how many have no local
    /// result yet (none are waited for without local checks).
    pub monitored: usize,
    pub unchecked: usize,
    /// Remote vantages, and how many were neither read nor failed yet
    /// (only waited for without local checks).
    pub vantages: usize,
    pub unpolled: usize,
    /// `fresh_for` has passed since start: no longer waiting for vantages.
    pub waited_out: bool,
}

impl FirstRound {
    /// Whether the first round is over.
    pub fn done(&self) -> bool {
        if self.local_checks {
            self.unchecked == 0
        } else {
            self.unpolled == 0 || self.waited_out
        }
    }
}

/// What the table's lock guards besides the table.
struct Inner {
    table: HealthTable,
    config: HealthConfig,
    /// Members by source ("dns", a tier region, ...).
    members: BTreeMap<String, Vec<Member>>,
    /// Every source's members, flattened (what the table is evaluated over).
    all: Vec<Member>,
    /// The last published state's sequence number.
    seq: u64,
    /// What changed lately (see [`super::events`]).
    events: Events,
}

/// See the module documentation.
pub struct HealthService {
    inner: Mutex<Inner>,
    current: ArcSwap<HealthState>,
    subscribers: Mutex<Vec<Subscriber>>,
    monitors: Mutex<BTreeMap<String, Vec<tokio::task::AbortHandle>>>,
    rt: tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
    me: Weak<HealthService>,
    started: std::time::Instant,
}

impl HealthService {
    /// A service with no members yet; operators' overrides are restored
    /// from the state file (a corrupt file is moved aside and reported).
    /// Background work (checks, vantage polling, expiry) runs on `rt` until
    /// `shutdown` turns true, once [`start`](Self::start) is called.
    pub fn new(
        config: HealthConfig,
        rt: tokio::runtime::Handle,
        shutdown: watch::Receiver<bool>,
    ) -> Arc<HealthService> {
        let mut table = HealthTable::default();
        if let Some(path) = &config.state_file {
            match table.load_state(path) {
                Ok(()) if !table.overrides.is_empty() => {
                    tracing::info!(overrides = table.overrides.len(), path = %path.display(), "operator overrides restored")
                }
                Ok(()) => {}
                Err(e) => tracing::error!("state file: {e}"),
            }
        }
        Arc::new_cyclic(|me| HealthService {
            inner: Mutex::new(Inner {
                table,
                config,
                members: BTreeMap::new(),
                all: Vec::new(),
                seq: 0,
                events: Events::default(),
            }),
            current: ArcSwap::from_pointee(HealthState::default()),
            subscribers: Mutex::new(Vec::new()),
            monitors: Mutex::new(BTreeMap::new()),
            rt,
            shutdown,
            me: me.clone(),
            started: std::time::Instant::now(),
        })
    }

    /// Starts expiring overrides, re-evaluating stale votes and (unless
    /// this node is itself a prober) polling remote vantages. Call once.
    pub fn start(&self, poll_vantages: bool) {
        let me = self.me.clone();
        let mut stop = self.shutdown.clone();
        self.rt.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    _ = stop.changed() => return,
                }
                let Some(s) = me.upgrade() else { return };
                s.maintain();
            }
        });
        if poll_vantages {
            self.rt
                .spawn(super::vantage::poll(self.me.clone(), self.shutdown.clone()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest state (one atomic load).
    pub fn current(&self) -> Arc<HealthState> {
        self.current.load_full()
    }

    /// Calls `f` with every new state from now on (and once now).
    pub fn subscribe(&self, f: impl Fn(&Arc<HealthState>) + Send + Sync + 'static) {
        f(&self.current());
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// The health settings now in force.
    pub fn config(&self) -> HealthConfig {
        self.lock().config.clone()
    }

    /// Reads the table (status pages, metrics, observations).
    pub fn with_table<T>(&self, f: impl FnOnce(&HealthTable, &HealthConfig) -> T) -> T {
        let inner = self.lock();
        f(&inner.table, &inner.config)
    }

    /// The recent changes, oldest first (at most [`events::CAPACITY`]).
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.list()
    }

    /// Where the first round stands (see [`FirstRound`]); readiness waits
    /// for it.
    pub fn first_round(&self) -> FirstRound {
        let inner = self.lock();
        let cfg = &inner.config;
        let monitored = inner.table.endpoints.values().filter(|s| s.monitored);
        let (unchecked, monitored) = monitored.fold((0, 0), |(pending, all), s| {
            (pending + usize::from(s.last.is_none()), all + 1)
        });
        // Vantages read for their tier's load only do not hold readiness.
        let voting = cfg.vantages.iter().filter(|(_, v)| v.votes);
        let vantages = voting.clone().count();
        let unpolled = voting
            .map(|(name, _)| name)
            .filter(|name| {
                inner
                    .table
                    .vantages
                    .get(*name)
                    .is_none_or(|v| v.last_ok.is_none() && v.last_error_at.is_none())
            })
            .count();
        FirstRound {
            local_checks: cfg.local_checks,
            monitored,
            unchecked: if cfg.local_checks { unchecked } else { 0 },
            vantages,
            unpolled: if cfg.local_checks { 0 } else { unpolled },
            waited_out: self.started.elapsed() >= cfg.fresh_for,
        }
    }

    /// New health settings (a reload). The state file (a new one, or the
    /// same one, which may have been damaged or removed under us) is
    /// written at once from the overrides in force: the running process is
    /// the authority on them, and a restart after this reload restores them.
    ///
    /// Turning `local_checks` on or off starts or stops every source's
    /// checks, and forgets what the local checks saw before (a vote from
    /// the last time they ran would be stale).
    pub fn set_config(&self, config: HealthConfig) {
        let mut inner = self.lock();
        inner.table.state_file = config.state_file.clone();
        if let Err(e) = inner.table.save_state() {
            tracing::error!("cannot write the state file: {e}");
        }
        let switched = inner.config.local_checks != config.local_checks;
        if switched {
            tracing::info!(
                local_checks = config.local_checks,
                "local checks turned {}",
                if config.local_checks { "on" } else { "off" }
            );
            let Inner { table, all, .. } = &mut *inner;
            table.reset_local(all, unix(SystemTime::now()));
        }
        inner.config = config;
        let restart = if switched {
            inner.members.clone()
        } else {
            BTreeMap::new()
        };
        self.publish(inner);
        for (source, members) in &restart {
            self.restart_monitors(source, members);
        }
    }

    /// Replaces the members of `source`: state is kept for identities that
    /// remain, new ones start in their monitor's initial state, and the
    /// source's checks restart.
    pub fn set_members(&self, source: &str, members: Vec<Member>) {
        let mut inner = self.lock();
        inner.members.insert(source.to_string(), members.clone());
        let all: Vec<Member> = inner.members.values().flatten().cloned().collect();
        let now = unix(SystemTime::now());
        inner.table.sync(&all, now);
        inner.all = all;
        self.publish(inner);
        self.restart_monitors(source, &members);
    }

    /// Numbers and publishes the table's state if it changed, then tells
    /// the subscribers (after the lock is released).
    fn publish(&self, mut inner: std::sync::MutexGuard<'_, Inner>) {
        let Inner {
            table,
            config,
            all,
            seq,
            events,
            ..
        } = &mut *inner;
        let now = unix(SystemTime::now());
        let mut next = table.evaluate(all, config, now);
        let cur = self.current.load();
        if next.same_as(&cur) && *seq > 0 {
            events.stamp(*seq);
            return;
        }
        *seq += 1;
        next.epoch.seq = *seq;
        events.stamp(*seq);
        (next.epoch.changed_at, next.epoch.changes) = if *seq == 1 {
            (now, 0)
        } else if next.epoch.id != cur.epoch.id {
            tracing::info!(epoch = %next.epoch.hex(), previous = %cur.epoch.hex(), "health epoch changed");
            let change = events::epoch_change(
                next.epoch.hex(),
                cur.epoch.hex(),
                |id| cur.get(id),
                |id| next.get(id),
                cur.endpoints
                    .keys()
                    .chain(next.endpoints.keys())
                    .map(String::as_str),
            );
            events.push(now, *seq, change);
            (now, cur.epoch.changes + 1)
        } else {
            (cur.epoch.changed_at, cur.epoch.changes)
        };
        self.current.store(Arc::new(next));
        drop(cur);
        drop(inner);
        let newest = self.current();
        for f in self
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            f(&newest);
        }
    }

    /// Sets an operator override on an endpoint (its identity), a pool or a
    /// region, optionally until a time; `AdminState::None` removes it. The
    /// override is saved to the state file before it takes effect. Returns
    /// how many endpoints it covers.
    pub fn set_override(
        &self,
        target: &str,
        state: AdminState,
        until: Option<SystemTime>,
    ) -> Result<usize, OverrideError> {
        self.set_override_for(target, state, until, None, None)
    }

    /// [`set_override`](Self::set_override) for the members of one source
    /// only (`only`: `dns` or `tier`), e.g. the first phase of a two-phase
    /// drain; it replaces any override of the same target. A drain with a
    /// `fraction` in (0, 1) is a partial drain: that share of client
    /// subnets leaves the target's DNS answers (1 is the whole drain).
    pub fn set_override_for(
        &self,
        target: &str,
        state: AdminState,
        until: Option<SystemTime>,
        only: Option<&str>,
        fraction: Option<f64>,
    ) -> Result<usize, OverrideError> {
        let fraction = match fraction {
            Some(f) if !(f.is_finite() && f > 0.0 && f <= 1.0) => {
                return Err(OverrideError::Fraction(f));
            }
            Some(_) if state != AdminState::Drain => {
                return Err(OverrideError::FractionNeedsDrain);
            }
            Some(f) if f < 1.0 => Some(f),
            _ => None,
        };
        let mut inner = self.lock();
        let matching = inner
            .all
            .iter()
            .filter(|m| only.is_none_or(|s| s == m.source))
            .filter(|m| m.identity == target || m.within.iter().any(|w| w == target))
            .count();
        if matching == 0 {
            return Err(OverrideError::UnknownTarget(target.to_string()));
        }
        let Inner { table, events, .. } = &mut *inner;
        let before = table.overrides.clone();
        table.overrides.retain(|o| o.target != target);
        let now = unix(SystemTime::now());
        if state != AdminState::None {
            table.overrides.push(Override {
                target: target.to_string(),
                state,
                until: until.map(unix),
                set_at: now,
                only: only.map(str::to_string),
                fraction,
            });
        }
        if let Err(e) = table.save_state() {
            table.overrides = before;
            return Err(OverrideError::Persist(e));
        }
        let what = if state != AdminState::None {
            Some(events::What::OverrideSet {
                target: target.to_string(),
                state,
                until: until.map(unix),
                only: only.map(str::to_string),
            })
        } else {
            before
                .iter()
                .find(|o| o.target == target)
                .map(|o| events::ended(o, false))
        };
        if let Some(what) = what {
            events.push(now, 0, what);
        }
        tracing::info!(
            target,
            ?state,
            ?fraction,
            ?until,
            endpoints = matching,
            "operator override set"
        );
        self.publish(inner);
        Ok(matching)
    }

    /// Records a local check result and republishes if the state changed.
    /// A result that lands after local checks were turned off is dropped.
    pub fn record(&self, identity: &str, obs: Observation, rise: u32, fall: u32) {
        let mut inner = self.lock();
        if !inner.config.local_checks {
            return;
        }
        let ok = obs.ok;
        let err = obs.error.clone();
        if inner.table.observe(identity, obs, rise, fall) {
            tracing::info!(endpoint = identity, ok, error = ?err, "local check state changed");
            self.publish(inner);
        }
    }

    /// Records what a remote vantage reported, or why it could not be read.
    pub(super) fn remote(&self, name: &str, url: String, result: Result<Observations, String>) {
        let mut inner = self.lock();
        let now = unix(SystemTime::now());
        match result {
            Ok(obs) => {
                let votes = inner.config.vantages.get(name).is_none_or(|v| v.votes);
                inner.table.remote(name, &obs, now, votes);
                if let Some(st) = inner.table.vantages.get_mut(name) {
                    st.url = url;
                }
                self.publish(inner);
            }
            Err(e) => {
                let st = inner.table.vantages.entry(name.to_string()).or_default();
                if st.last_error.as_deref() != Some(&e) {
                    tracing::warn!(vantage = %name, "cannot read vantage: {e}");
                }
                st.url = url;
                st.last_error = Some(e);
                st.last_error_at = Some(now);
            }
        }
    }

    /// Expires overrides and re-evaluates votes (remote data goes stale).
    pub fn maintain(&self) {
        let mut inner = self.lock();
        let now = unix(SystemTime::now());
        let expired = inner.table.expire(now);
        if !expired.is_empty() {
            if let Err(e) = inner.table.save_state() {
                tracing::error!("cannot write the state file: {e}");
            }
            for o in &expired {
                inner.events.push(now, 0, events::ended(o, true));
            }
        }
        self.publish(inner);
    }

    /// This vantage's observations (served at /v1/observations); None
    /// when this node runs no checks of its own (`local_checks = false`):
    /// it has nothing of its own to report.
    pub fn observations(&self) -> Option<Observations> {
        self.observations_with(Vec::new())
    }

    /// This node's observations with its own tier's `load`: its checks'
    /// results (none without local checks) and the load. None when it has
    /// neither to report.
    pub fn observations_with(&self, load: Vec<LoadReport>) -> Option<Observations> {
        let inner = self.lock();
        let now = unix(SystemTime::now());
        let mut obs = if inner.config.local_checks {
            inner.table.observations(&inner.config.vantage, now)
        } else if !load.is_empty() {
            Observations {
                vantage: inner.config.vantage.clone(),
                generated_at: now,
                endpoints: Vec::new(),
                load: Vec::new(),
            }
        } else {
            return None;
        };
        obs.load = load;
        Some(obs)
    }

    /// The load of this node's own tier (empty: it reports none), counted
    /// with the vantages' reports; republishes.
    pub fn set_local_load(&self, regions: Vec<LoadReport>) {
        let mut inner = self.lock();
        let next = (!regions.is_empty()).then(|| LoadSource {
            received: unix(SystemTime::now()),
            regions,
        });
        if next.is_none() && inner.table.local_load.is_none() {
            return;
        }
        inner.table.local_load = next;
        self.publish(inner);
    }

    /// (Re)starts one check loop per monitored member of `source` (none
    /// when local checks are off).
    fn restart_monitors(&self, source: &str, members: &[Member]) {
        let mut all = self.monitors.lock().unwrap_or_else(|p| p.into_inner());
        let tasks = all.entry(source.to_string()).or_default();
        for t in tasks.drain(..) {
            t.abort();
        }
        let (vantage, local_checks) = {
            let inner = self.lock();
            (inner.config.vantage.clone(), inner.config.local_checks)
        };
        if !local_checks {
            return;
        }
        for m in members {
            let Some(check) = m.check.clone() else {
                continue;
            };
            let me = self.me.clone();
            let identity = m.identity.clone();
            let vantage = vantage.clone();
            let mut stop = self.shutdown.clone();
            let h = self.rt.spawn(async move {
                let mon = check.monitor;
                let http = match mon.client(check.addr) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(endpoint = %identity, "monitor cannot run: {e}");
                        return;
                    }
                };
                // Spread the first checks so they do not all start together.
                let first = mon
                    .interval
                    .mul_f64(fastrand::f64() * 0.5)
                    .min(std::time::Duration::from_millis(500));
                tokio::select! {
                    _ = tokio::time::sleep(first) => {}
                    _ = stop.changed() => return,
                }
                loop {
                    let (ok, error, rtt) = mon.check(check.addr, http.as_ref()).await;
                    let Some(service) = me.upgrade() else { return };
                    service.record(
                        &identity,
                        Observation {
                            vantage: vantage.clone(),
                            at: unix(SystemTime::now()),
                            ok,
                            error,
                            rtt_ms: rtt.as_secs_f64() * 1000.0,
                        },
                        mon.rise,
                        mon.fall,
                    );
                    drop(service);
                    let spread = 1.0 + mon.jitter * (2.0 * fastrand::f64() - 1.0);
                    tokio::select! {
                        _ = tokio::time::sleep(mon.interval.mul_f64(spread)) => {}
                        _ = stop.changed() => return,
                    }
                }
            });
            tasks.push(h.abort_handle());
        }
    }
}

impl Drop for HealthService {
    fn drop(&mut self) {
        let all = self.monitors.get_mut().unwrap_or_else(|p| p.into_inner());
        for t in all.values().flatten() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn member(identity: &str, within: &[&str]) -> Member {
        Member {
            identity: identity.into(),
            source: super::super::SOURCE_DNS,
            within: within.iter().map(|s| s.to_string()).collect(),
            check: None,
        }
    }

    #[tokio::test]
    async fn one_override_reaches_every_source_and_every_subscriber_with_a_new_epoch() {
        let (_tx, rx) = watch::channel(false);
        let h = HealthService::new(
            HealthConfig::default(),
            tokio::runtime::Handle::current(),
            rx,
        );
        h.set_members("dns", vec![member("web/10.0.0.1", &["web", "eu"])]);
        h.set_members(
            "tier",
            vec![member("tier-web/10.0.1.1:8080", &["tier-web", "eu"])],
        );
        let seen: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
        for s in &seen {
            let s = s.clone();
            h.subscribe(move |st| {
                s.fetch_max(st.epoch.seq, Ordering::SeqCst);
            });
        }
        let before = h.current().epoch.seq;
        let id_before = h.current().epoch.id;
        let changes_before = h.current().epoch.changes;
        assert!(before > 0);
        assert!(seen.iter().all(|s| s.load(Ordering::SeqCst) == before));

        // A region drain covers the DNS endpoint and the tier backend.
        assert_eq!(
            h.set_override("eu", AdminState::Drain, None).expect("eu"),
            2
        );
        let st = h.current();
        assert!(st.epoch.seq > before);
        assert_ne!(st.epoch.id, id_before, "a drain is a new consensus id");
        assert_eq!(st.epoch.changes, changes_before + 1);
        assert!(!st.get("web/10.0.0.1").up());
        assert!(!st.get("tier-web/10.0.1.1:8080").up());
        assert!(seen
            .iter()
            .all(|s| s.load(Ordering::SeqCst) == st.epoch.seq));

        // Nothing changed: no new epoch.
        h.maintain();
        assert_eq!(h.current().epoch, st.epoch);

        // A source's new members keep the others' state; unknown targets
        // are refused without a change.
        h.set_members("tier", Vec::new());
        assert!(!h.current().get("web/10.0.0.1").up());
        assert!(matches!(
            h.set_override("tier-web", AdminState::Drain, None),
            Err(OverrideError::UnknownTarget(_))
        ));
        h.set_override("eu", AdminState::None, None)
            .expect("undrain");
        assert!(h.current().get("web/10.0.0.1").up());
        // The members are not the same as before the drain (the tier's
        // are gone), so neither is the id.
        assert_ne!(h.current().epoch.id, id_before);
        assert_eq!(h.current().epoch.changes, changes_before + 3);
    }

    #[tokio::test]
    async fn events_record_an_override_its_epoch_and_its_expiry_in_order() {
        let (_tx, rx) = watch::channel(false);
        let h = HealthService::new(
            HealthConfig::default(),
            tokio::runtime::Handle::current(),
            rx,
        );
        h.set_members(
            "dns",
            vec![
                member("web/10.0.0.1", &["web", "eu"]),
                member("api/10.0.0.2", &["api", "us"]),
            ],
        );
        assert!(h.events().is_empty(), "the first state is no change");
        let start = h.current().epoch;
        // A drain that is already due: the next round expires it.
        let until = SystemTime::now() - std::time::Duration::from_secs(1);
        h.set_override("eu", AdminState::Drain, Some(until))
            .expect("drain");
        let drained = h.current().epoch;
        h.maintain();
        let back = h.current().epoch;
        // And one removed by hand.
        h.set_override("api", AdminState::ForceDown, None)
            .expect("force");
        h.set_override("api", AdminState::None, None).expect("undo");
        let ev = h.events();
        let kinds: Vec<String> = ev
            .iter()
            .map(|e| {
                serde_json::to_value(e).unwrap_or_default()["kind"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "override_set",
                "epoch",
                "override_expired",
                "epoch",
                "override_set",
                "epoch",
                "override_removed",
                "epoch"
            ]
        );
        assert!(ev
            .windows(2)
            .all(|w| w[1].n == w[0].n + 1 && w[1].seq >= w[0].seq));
        assert_eq!(ev[0].seq, drained.seq, "stamped with the state it made");
        match &ev[1].what {
            events::What::Epoch {
                id,
                previous,
                down,
                up,
                ..
            } => {
                assert_eq!((id, previous), (&drained.hex(), &start.hex()));
                assert_eq!(down, &["web/10.0.0.1"]);
                assert!(up.is_empty());
            }
            other => panic!("{other:?}"),
        }
        match &ev[3].what {
            events::What::Epoch { id, up, .. } => {
                assert_eq!(id, &back.hex());
                assert_eq!(up, &["web/10.0.0.1"]);
            }
            other => panic!("{other:?}"),
        }
        match &ev[2].what {
            events::What::OverrideExpired {
                target, until: u, ..
            } => {
                assert_eq!(target, "eu");
                assert_eq!(*u, Some(unix(until)));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Local check results so far, of every endpoint.
    fn local_results(h: &HealthService) -> u64 {
        h.with_table(|t, _| {
            t.endpoints
                .values()
                .map(|e| e.probes_ok + e.probes_fail)
                .sum()
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn turning_local_checks_off_stops_every_check_and_on_starts_them_afresh() {
        // A TCP check of a closed loopback port every 100 ms.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let mc: crate::config::MonitorConfig =
            toml::from_str("kind = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"50ms\"")
                .expect("monitor");
        let monitor = Arc::new(super::super::Monitor::compile("m", &mc).expect("compile"));
        let member = |id: &str| Member {
            identity: id.into(),
            source: super::super::SOURCE_DNS,
            within: vec!["p".into()],
            check: Some(super::super::Check {
                monitor: monitor.clone(),
                addr,
            }),
        };
        let mut off: HealthConfig = toml::from_str(
            "local_checks = false\nfresh_for = \"1h\"\n[vantages.a]\nurl = \"http://127.0.0.1:1\"\n",
        )
        .expect("health");
        let (_tx, rx) = watch::channel(false);
        let h = HealthService::new(off.clone(), tokio::runtime::Handle::current(), rx);
        h.set_members("dns", vec![member("p/10.0.0.1")]);
        h.set_members("tier", vec![member("g/10.0.1.1:80")]);
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(400));
        settle().await;
        assert_eq!(local_results(&h), 0, "no check ran");
        assert!(h.observations().is_none(), "nothing of its own to serve");
        let round = h.first_round();
        assert_eq!((round.monitored, round.unchecked), (2, 0));
        assert_eq!((round.vantages, round.unpolled), (1, 1));
        assert!(!round.done(), "waits for the vantage's first poll");
        assert!(h.current().get("p/10.0.0.1").checked_up, "fail open");

        // A reload turns them on: both sources' checks start.
        off.local_checks = true;
        h.set_config(off.clone());
        settle().await;
        let seen = h.with_table(|t, _| {
            t.endpoints
                .values()
                .filter(|e| e.probes_fail > 0 && e.last.is_some())
                .count()
        });
        assert_eq!(seen, 2, "the dns and tier members are checked");
        assert!(h.first_round().done());
        assert!(h.observations().is_some_and(|o| o.endpoints.len() == 2));

        // And off again: they stop, and what they saw is forgotten.
        off.local_checks = false;
        h.set_config(off);
        let before = local_results(&h);
        settle().await;
        assert!(
            local_results(&h) <= before + 2,
            "checks went on: {before} → {}",
            local_results(&h)
        );
        assert!(h.with_table(|t, _| t.endpoints.values().all(|e| e.last.is_none())));
    }
}

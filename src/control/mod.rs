//! Control: the jobs that change what the answer path reads, apart from
//! binding and serving. A reload (config and zones validated off to the
//! side, swapped in whole or not at all), the GeoIP watcher (a changed
//! database is opened, checked and compiled, then swapped in), and the
//! subscription that carries each new health epoch into the DNS snapshot.
//! Every one of them builds the next snapshot from the current one under
//! the [`Source`]'s store lock, so none overwrites another's change.

pub mod background;
pub mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use background::{
    demote_allocator_threads, in_background, retire, return_freed_tables, trim_freed_memory,
    BackgroundError,
};

use crate::config::Overrides;
use crate::diag::{Diagnostic, LoadError};
use crate::geo::FileStamp;
use crate::health::{FirstRound, HealthService, OverrideError};
use crate::policy::AdminState;
use crate::snapshot::{self, Snapshot, Source};
use crate::tier::Tier;

/// Outcome of the last reload attempt, as shown by the status API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub ok: bool,
    pub at: SystemTime,
    /// The generation now serving (the new one on success).
    pub generation: u64,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

/// What the GeoIP watcher last did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GeoStatus {
    /// When a changed database was last swapped in.
    pub last_swap: Option<SystemTime>,
    /// The last failure to open a changed database (the old one serves on).
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// Since when a changed database is being opened and compiled (the old
    /// one serves meanwhile; under full load this runs on idle CPU only).
    pub building_since: Option<SystemTime>,
    #[serde(skip)]
    failed_stamps: Option<Vec<Option<FileStamp>>>,
}

/// The jobs that change the served state, and what they last did.
pub struct Control {
    pub source: Arc<Source>,
    pub health: Arc<HealthService>,
    /// The regional tier (empty on a node that runs no tier region).
    pub tier: Arc<Tier>,
    /// The config file reloads read (none when started from values).
    pub config_path: Option<PathBuf>,
    pub overrides: Overrides,
    pub started_at: SystemTime,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    last_reload: Mutex<Option<ReloadReport>>,
    geo_status: Mutex<GeoStatus>,
    /// One build at a time (a reload or a GeoIP rebuild).
    build: Mutex<()>,
    /// The watched config files as the last load found them.
    config_stamp: Mutex<Option<watch::Stamp>>,
    /// Set once every monitored member has been checked once.
    first_round_done: AtomicBool,
}

/// Whether the node is ready to take traffic (`GET /v1/ready`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not (empty when ready).
    pub reason: String,
    /// The generation serving.
    pub generation: u64,
    /// Monitored endpoints and backends, and how many are not checked yet
    /// (by this node; 0 when it runs no checks of its own).
    pub monitored: usize,
    pub unchecked: usize,
    /// Whether this node checks locally; when it does not, readiness waits
    /// for the first poll of the vantages instead of its own checks.
    pub local_checks: bool,
    /// Remote vantages, and how many were neither read nor failed yet
    /// (waited for only without local checks, and at most `fresh_for`).
    pub vantages: usize,
    pub unpolled: usize,
}

impl Control {
    /// Ties the DNS snapshot to the health service: the snapshot's
    /// endpoints become the service's `dns` members, and every new health
    /// epoch is mapped onto the current snapshot.
    pub fn new(
        source: Arc<Source>,
        health: Arc<HealthService>,
        tier: Arc<Tier>,
        config_path: Option<PathBuf>,
        overrides: Overrides,
    ) -> Arc<Control> {
        let first = source.load_full();
        health.set_config(first.config.health.clone());
        health.set_members("dns", first.members.to_vec());
        let stamp = config_path
            .as_ref()
            .map(|_| watch::Stamp::of(&first.config));
        let s = source.clone();
        health.subscribe(move |state| {
            // The replaced snapshot differs only in its health view; the
            // big tables are shared with the new one, so it is dropped here.
            drop(s.update(|cur| cur.with_health(state)));
        });
        Arc::new(Control {
            source,
            health,
            tier,
            config_path,
            overrides,
            started_at: SystemTime::now(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload: Mutex::new(None),
            geo_status: Mutex::new(GeoStatus::default()),
            build: Mutex::new(()),
            config_stamp: Mutex::new(stamp),
            first_round_done: AtomicBool::new(false),
        })
    }

    /// Starts the GeoIP watcher, the config watcher and the memory
    /// trimmer; they run until
    /// `shutdown` turns true.
    pub fn spawn_jobs(
        self: &Arc<Self>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(watch_geo(self.clone(), shutdown.clone())),
            tokio::spawn(watch::run(self.clone(), shutdown.clone())),
            tokio::spawn(advance_capacity(self.source.clone(), shutdown.clone())),
            tokio::spawn(sample_resolvers(self.source.clone(), shutdown.clone())),
            tokio::spawn(trim_after_releases(self.tier.clone(), shutdown)),
        ]
    }

    /// The watched config files as the last load (startup or a reload,
    /// successful or not) found them.
    pub fn config_stamp(&self) -> Option<watch::Stamp> {
        self.config_stamp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ready once a snapshot serves (the admin API starts only after the
    /// first one is built) and the health service is through its first
    /// round: every monitored endpoint and backend checked once, or, on a
    /// node without local checks, every vantage polled once (read or
    /// failed) or `fresh_for` gone by since start. It stays ready after
    /// that (members a reload adds do not take a serving node out).
    pub fn readiness(&self) -> Readiness {
        let generation = self.source.load().generation;
        let round = self.health.first_round();
        let done = self.first_round_done.load(Ordering::Relaxed) || round.done();
        if done {
            self.first_round_done.store(true, Ordering::Relaxed);
        }
        let FirstRound {
            local_checks,
            monitored,
            unchecked,
            vantages,
            unpolled,
            ..
        } = round;
        Readiness {
            ready: done,
            reason: match (done, local_checks) {
                (true, _) => String::new(),
                (false, true) => format!("health: {unchecked} of {monitored} monitored endpoints and backends not checked yet"),
                (false, false) => format!("health: {unpolled} of {vantages} vantages not polled yet (no local checks)"),
            },
            generation,
            monitored,
            unchecked,
            local_checks,
            vantages,
            unpolled,
        }
    }

    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn geo_status(&self) -> GeoStatus {
        self.geo_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sets (or, with `AdminState::None`, removes) an operator override on
    /// an endpoint, a pool or a region; see [`HealthService::set_override`].
    pub fn set_admin_state(&self, target: &str, state: AdminState) -> Result<usize, OverrideError> {
        self.health.set_override(target, state, None)
    }

    /// Re-reads the config and zones; swaps the new snapshot in only if all
    /// of it is valid. On error the current snapshot keeps serving. The
    /// server runs it through [`in_background`].
    pub fn reload(&self) -> Result<ReloadReport, ReloadReport> {
        let _one = self.build.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.source.load_full();
        let next_gen = current.generation + 1;
        // The files as they are before reading them: a change from here on
        // is seen by the config watcher and loaded by the next reload.
        if self.config_path.is_some() {
            let stamp = watch::Stamp::of(&current.config);
            *self.config_stamp.lock().unwrap_or_else(|p| p.into_inner()) = Some(stamp);
        }
        let result = match &self.config_path {
            Some(path) => snapshot::load(path, &self.overrides, next_gen, Some(&current)),
            None => Err(LoadError(vec![Diagnostic::error(
                std::path::Path::new(""),
                0,
                0,
                "this server was started without a config file; there is nothing to reload",
            )])),
        };
        // The tier binds its new listeners before anything is swapped: a
        // listener that cannot be bound fails the reload like a bad zone.
        let result = result.and_then(|(snap, warnings)| {
            if self.overrides.probe_only {
                return Ok((snap, warnings));
            }
            let mut snap = snap;
            // The dnstap log: the running one reopened (rotation) or a new
            // one; a file that cannot be opened fails the reload.
            match crate::dnstap::writer::renew(current.dnstap.as_ref(), snap.dnstap_plan.as_deref())
            {
                Ok(tap) => snap.dnstap = tap,
                Err(e) => {
                    let mut diags = warnings;
                    diags.push(Diagnostic::error(&snap.config.path, 0, 0, e.to_string()));
                    return Err(LoadError(diags));
                }
            }
            match self.tier.apply(&snap.tier, &snap.config.node) {
                Ok(()) => Ok((snap, warnings)),
                Err(errors) => {
                    let mut diags = warnings;
                    diags.extend(
                        errors
                            .iter()
                            .map(|e| Diagnostic::error(&snap.config.path, 0, 0, e.to_string())),
                    );
                    Err(LoadError(diags))
                }
            }
        });
        let report = match result {
            Ok((snap, warnings)) => {
                for w in &warnings {
                    tracing::warn!("{w}");
                }
                let (old, new) = (&current.config.server, &snap.config.server);
                if new.dns != old.dns || new.admin != old.admin {
                    tracing::warn!("listen addresses changed in the config; they take effect at the next restart");
                }
                if new.udp_workers != old.udp_workers
                    || new.udp_cpu_affinity != old.udp_cpu_affinity
                {
                    tracing::warn!("udp_workers or udp_cpu_affinity changed in the config; they take effect at the next restart");
                }
                let zones = snap.zones.zones.len();
                if watch::Stamp::dirs(&snap.config) != watch::Stamp::dirs(&current.config) {
                    let stamp = watch::Stamp::of(&snap.config);
                    *self.config_stamp.lock().unwrap_or_else(|p| p.into_inner()) = Some(stamp);
                }
                self.health.set_config(snap.config.health.clone());
                self.health.set_members("dns", snap.members.to_vec());
                if self.overrides.probe_only {
                    // A prober runs no tier, but checks its backends too,
                    // for the nodes that read it.
                    self.health
                        .set_members(crate::tier::SOURCE, snap.tier.members.clone());
                }
                let health = self.health.clone();
                let retired = self.source.update(move |cur| {
                    let mut snap = snap;
                    let mut view = snapshot::health_view(
                        &snap.topology,
                        &snap.tier_gates,
                        &health.current(),
                        None,
                    );
                    view.shares = snapshot::capacity::carry(&snap.zones, cur);
                    snap.set_health(view);
                    Some(snap)
                });
                tracing::info!(generation = next_gen, zones, "reload succeeded");
                drop(current);
                if let Some(old) = retired {
                    retire(old);
                }
                Ok(ReloadReport {
                    ok: true,
                    at: SystemTime::now(),
                    generation: next_gen,
                    errors: Vec::new(),
                    warnings,
                })
            }
            Err(LoadError(diags)) => {
                for d in &diags {
                    if d.is_error() {
                        tracing::error!("{d}");
                    } else {
                        tracing::warn!("{d}");
                    }
                }
                tracing::error!(
                    generation = current.generation,
                    "reload failed; still serving the previous configuration"
                );
                let (errors, warnings) = diags.into_iter().partition(Diagnostic::is_error);
                Err(ReloadReport {
                    ok: false,
                    at: SystemTime::now(),
                    generation: current.generation,
                    errors,
                    warnings,
                })
            }
        };
        let counter = if report.is_ok() {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let stored = match &report {
            Ok(r) | Err(r) => r.clone(),
        };
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(stored);
        report
    }

    /// Reopens GeoIP databases whose files changed on disk. A database that
    /// fails to open or to answer a test lookup is reported once and the
    /// old one keeps serving. Returns whether anything was swapped.
    pub fn check_geo(&self) -> bool {
        let _one = self.build.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.source.load_full();
        let Some(g) = &cur.config.geoip else {
            return false;
        };
        let mut files = vec![(
            g.city.get_ref().clone(),
            cur.geo.city.as_ref().and_then(|d| d.stamp),
        )];
        if let Some(a) = &g.asn {
            files.push((
                a.get_ref().clone(),
                cur.geo.asn.as_ref().and_then(|d| d.stamp),
            ));
        }
        let now: Vec<Option<FileStamp>> = files.iter().map(|(p, _)| FileStamp::of(p)).collect();
        let changed = files.iter().zip(&now).any(|((_, old), new)| old != new);
        if !changed {
            return false;
        }
        // The status lock is held only to read and record, never while
        // building (which can take a minute on a saturated core): status
        // requests must not wait for a build.
        {
            let mut st = self.geo_status.lock().unwrap_or_else(|p| p.into_inner());
            if st.failed_stamps.as_ref() == Some(&now) {
                return false;
            }
            st.building_since = Some(SystemTime::now());
        }
        let built = snapshot::open_geo(&cur.config, Some(&cur.geo)).map(|geo| {
            let index = snapshot::compile_geo(&cur.zones, &cur.topology, &geo, Some(&cur));
            (geo, index)
        });
        drop(cur);
        let mut st = self.geo_status.lock().unwrap_or_else(|p| p.into_inner());
        st.building_since = None;
        match built {
            Ok((geo, index)) => {
                let geo = Arc::new(geo);
                for d in geo.city.iter().chain(geo.asn.iter()) {
                    tracing::info!(path = %d.path.display(), database_type = %d.database_type, build_epoch = d.build_epoch, "GeoIP database reloaded");
                }
                let old = self.source.update(|cur| {
                    let mut next: Snapshot = cur.clone();
                    next.geo = geo;
                    next.geo_index = index;
                    Some(next)
                });
                st.last_swap = Some(SystemTime::now());
                st.last_error = None;
                st.failed_stamps = None;
                drop(st);
                if let Some(old) = old {
                    retire(old);
                }
                true
            }
            Err(diags) => {
                let msg = diags
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::error!(
                    "GeoIP database change rejected, the previous database keeps serving: {msg}"
                );
                st.last_error = Some(msg);
                st.last_error_at = Some(SystemTime::now());
                st.failed_stamps = Some(now);
                false
            }
        }
    }
}

async fn watch_geo(control: Arc<Control>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let every = control
            .source
            .load()
            .config
            .geoip
            .as_ref()
            .map_or(std::time::Duration::from_secs(5), |g| g.watch_interval)
            .max(std::time::Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let c = control.clone();
        if let Err(e) = in_background("geolb-geoip", move || c.check_geo()).await {
            tracing::error!("GeoIP check: {e}");
        }
    }
}

/// Every 250 ms, while a service steers by capacity: capacity shares that
/// are still moving toward their target (or whose load report went stale)
/// move on. Nothing is stored while every share is at rest.
async fn advance_capacity(source: Arc<Source>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if !source.load().steers_by_capacity() {
            continue;
        }
        let now = crate::health::unix(SystemTime::now());
        if let Some(old) = source.update(|cur| cur.advance_capacity(now)) {
            // The replaced snapshot shares everything but its health view.
            drop(old);
        }
    }
}

/// While resolver tracking is armed: its counts per service and region
/// every `SAMPLE_EVERY`, kept for the status page's timeline (one pass over
/// the tracked resolvers, off the runtime's threads).
async fn sample_resolvers(source: Arc<Source>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(crate::snapshot::resolvers::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let tracker = source.load().resolvers.clone();
        if !tracker.armed(SystemTime::now()) {
            continue;
        }
        let _ = tokio::task::spawn_blocking(move || tracker.sample(SystemTime::now())).await;
    }
}

/// Once a second: when idle HTTP connections have given back enough
/// buffers since the last look (64 or more, a megabyte or so), the freed
/// memory is returned to the system; and the allocator's own threads are
/// put at the lowest priority as they appear (`demote_allocator_threads`).
async fn trim_after_releases(tier: Arc<Tier>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    const AT_LEAST: u64 = 64;
    let mut seen = tier.idle_releases();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut demoted = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let mut d = std::mem::take(&mut demoted);
        demoted = tokio::task::spawn_blocking(move || {
            demote_allocator_threads(&mut d);
            d
        })
        .await
        .unwrap_or_default();
        let now = tier.idle_releases();
        if now.saturating_sub(seen) >= AT_LEAST {
            seen = now;
            let _ = tokio::task::spawn_blocking(trim_freed_memory).await;
        }
    }
}

//! The running server: the one `ArcSwap<Snapshot>` the data plane reads,
//! listeners, reload (validated off to the side, swapped in whole or not at
//! all) and graceful shutdown.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::diag::{Diagnostic, LoadError};
use crate::dns::{tcp, udp};
use crate::geo::FileStamp;
use crate::health::{unix, HealthTable, Observation, Override};
use crate::policy::AdminState;
use crate::snapshot::{self, Snapshot};

pub use crate::config::Overrides;

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

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: io::Error,
    },
    #[error("no DNS listener could be bound")]
    NoListener,
}

/// State shared by listeners, the admin API and signal handlers.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub config_path: PathBuf,
    pub overrides: Overrides,
    pub started_at: SystemTime,
    pub last_reload: Mutex<Option<ReloadReport>>,
    reload_lock: Mutex<()>,
    pub udp_stats: Mutex<Vec<Arc<udp::WorkerStats>>>,
    pub tcp_stats: tcp::TcpStats,
    pub dns_addrs: Mutex<Vec<SocketAddr>>,
    pub geo_status: Mutex<GeoStatus>,
    /// Health of every endpoint; its lock also orders every snapshot store.
    pub health: Mutex<HealthTable>,
    pub reloads_ok: std::sync::atomic::AtomicU64,
    pub reloads_failed: std::sync::atomic::AtomicU64,
    monitor_tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    rt: tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
    me: std::sync::OnceLock<std::sync::Weak<Shared>>,
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

impl Shared {
    /// Re-reads the config and zones; swaps the new snapshot in only if all
    /// of it is valid. On error the current snapshot keeps serving. The
    /// server runs it through [`in_background`].
    pub fn reload(&self) -> Result<ReloadReport, ReloadReport> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot.load_full();
        let next_gen = current.generation + 1;
        let result = Config::load_with(&self.config_path, &self.overrides)
            .and_then(|c| snapshot::build(c, next_gen, Some(&current)));
        let mut retired = None;
        let report = match result {
            Ok((snap, warnings)) => {
                for w in &warnings {
                    tracing::warn!("{w}");
                }
                if snap.config.server.dns != current.config.server.dns
                    || snap.config.server.admin != current.config.server.admin
                {
                    tracing::warn!("listen addresses changed in the config; they take effect at the next restart");
                }
                if snap.config.server.udp_workers != current.config.server.udp_workers
                    || snap.config.server.udp_cpu_affinity != current.config.server.udp_cpu_affinity
                {
                    tracing::warn!("udp_workers or udp_cpu_affinity changed in the config; they take effect at the next restart");
                }
                let zones = snap.zones.zones.len();
                {
                    let mut table = self.health.lock().unwrap_or_else(|p| p.into_inner());
                    let mut snap = snap;
                    if snap.config.health.state_file != table.state_file {
                        table.state_file = snap.config.health.state_file.clone();
                        if let Err(e) = table.save_state() {
                            tracing::error!("cannot write the state file: {e}");
                        }
                    }
                    table.sync(&snap.topology, unix(SystemTime::now()));
                    snap.health = Arc::new(table.evaluate(
                        &snap.topology,
                        &snap.config.health,
                        unix(SystemTime::now()),
                    ));
                    retired = Some(self.snapshot.swap(Arc::new(snap)));
                }
                self.restart_monitors();
                tracing::info!(generation = next_gen, zones, "reload succeeded");
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
        drop(current);
        if let Some(old) = retired {
            retire(old);
        }
        report
    }
}

impl Shared {
    /// Reopens GeoIP databases whose files changed on disk. A database that
    /// fails to open or to answer a test lookup is reported once and the
    /// old one keeps serving. Returns whether anything was swapped.
    pub fn check_geo(&self) -> bool {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.snapshot.load_full();
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
        let mut st = self.geo_status.lock().unwrap_or_else(|p| p.into_inner());
        st.building_since = None;
        match built {
            Ok((geo, index)) => {
                let _table = self.health.lock().unwrap_or_else(|p| p.into_inner());
                let mut next = (*self.snapshot.load_full()).clone();
                next.geo = Arc::new(geo);
                next.geo_index = index;
                for d in next.geo.city.iter().chain(next.geo.asn.iter()) {
                    tracing::info!(path = %d.path.display(), database_type = %d.database_type, build_epoch = d.build_epoch, "GeoIP database reloaded");
                }
                let old = self.snapshot.swap(Arc::new(next));
                st.last_swap = Some(SystemTime::now());
                st.last_error = None;
                st.failed_stamps = None;
                drop((st, _table, cur));
                retire(old);
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

impl Shared {
    /// Recomputes the health view from the table and swaps it in if it
    /// changed. The caller holds the table lock.
    fn publish(&self, table: &mut HealthTable) {
        let cur = self.snapshot.load_full();
        let view = table.evaluate(&cur.topology, &cur.config.health, unix(SystemTime::now()));
        if view != *cur.health {
            let mut next = (*cur).clone();
            next.health = Arc::new(view);
            self.snapshot.store(Arc::new(next));
        }
    }

    /// Sets an operator override on an endpoint ("pool/address"), a pool or
    /// a region, optionally until a time; `AdminState::None` removes it.
    /// The override is saved to the state file before it takes effect.
    /// Returns how many endpoints it covers, or `None` if nothing matches.
    pub fn set_admin_state(&self, target: &str, state: AdminState) -> Option<usize> {
        self.set_override(target, state, None).ok()
    }

    /// Like [`set_admin_state`](Self::set_admin_state), with an expiry.
    pub fn set_override(
        &self,
        target: &str,
        state: AdminState,
        until: Option<SystemTime>,
    ) -> Result<usize, OverrideError> {
        let mut table = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.snapshot.load_full();
        let topo = &cur.topology;
        let matching = topo
            .endpoints
            .iter()
            .filter(|e| {
                let pool = &topo.pools[e.pool as usize];
                e.identity == target
                    || pool.name == target
                    || topo.regions[pool.region as usize].name == target
            })
            .count();
        if matching == 0 {
            return Err(OverrideError::UnknownTarget(target.to_string()));
        }
        let before = table.overrides.clone();
        table.overrides.retain(|o| o.target != target);
        if state != AdminState::None {
            table.overrides.push(Override {
                target: target.to_string(),
                state,
                until: until.map(unix),
                set_at: unix(SystemTime::now()),
            });
        }
        if let Err(e) = table.save_state() {
            table.overrides = before;
            return Err(OverrideError::Persist(e));
        }
        self.publish(&mut table);
        tracing::info!(
            target,
            ?state,
            ?until,
            endpoints = matching,
            "operator override set"
        );
        Ok(matching)
    }

    /// Records a local check result and republishes if the state changed.
    pub fn record(&self, identity: &str, obs: Observation, rise: u32, fall: u32) {
        let mut table = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let ok = obs.ok;
        let err = obs.error.clone();
        if table.observe(identity, obs, rise, fall) {
            tracing::info!(endpoint = identity, ok, error = ?err, "local check state changed");
            self.publish(&mut table);
        }
    }

    /// Expires overrides and re-evaluates votes (remote data goes stale).
    fn maintain(&self) {
        let mut table = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if table.expire(unix(SystemTime::now())) {
            if let Err(e) = table.save_state() {
                tracing::error!("cannot write the state file: {e}");
            }
        }
        self.publish(&mut table);
    }

    /// (Re)starts one check loop per monitored endpoint of the current
    /// snapshot; state is kept in the table across restarts.
    pub fn restart_monitors(&self) {
        let mut tasks = self.monitor_tasks.lock().unwrap_or_else(|p| p.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
        let snap = self.snapshot.load_full();
        let vantage = snap.config.health.vantage.clone();
        for e in &snap.topology.endpoints {
            let (Some(m), Some(addr)) = (e.monitor, e.check_addr) else {
                continue;
            };
            let mon = Arc::new(snap.topology.monitors[m as usize].clone());
            let me = self.weak();
            let identity = e.identity.clone();
            let vantage = vantage.clone();
            let mut stop = self.shutdown.clone();
            let h = self.rt.spawn(async move {
                let http = match mon.client(addr) {
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
                    let (ok, error, rtt) = mon.check(addr, http.as_ref()).await;
                    let Some(shared) = me.upgrade() else { return };
                    shared.record(
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
                    drop(shared);
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

    fn weak(&self) -> std::sync::Weak<Shared> {
        self.me.get().cloned().unwrap_or_default()
    }

    /// This vantage's observations (served at /v1/observations).
    pub fn observations(&self) -> crate::health::Observations {
        let vantage = self.snapshot.load().config.health.vantage.clone();
        let table = self.health.lock().unwrap_or_else(|p| p.into_inner());
        table.observations(&vantage, unix(SystemTime::now()))
    }
}

/// Why an override could not be set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OverrideError {
    #[error("no endpoint, pool or region is named {0:?}")]
    UnknownTarget(String),
    #[error("not saved, so not applied: {0}")]
    Persist(String),
}

async fn maintain(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        shared.maintain();
    }
}

/// Reads one remote vantage's observations.
async fn fetch_vantage(
    client: reqwest::Client,
    v: crate::config::VantageConfig,
) -> Result<crate::health::Observations, String> {
    let url = format!("{}/v1/observations", v.url.trim_end_matches('/'));
    let mut req = client.get(&url);
    if let Some(t) = &v.token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => match r.bytes().await {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| format!("bad observations from {url}: {e}"))
            }
            Err(e) => Err(format!("{url}: {}", crate::health::error_chain(&e))),
        },
        Ok(r) => Err(format!("{url}: HTTP {}", r.status())),
        Err(e) => Err(format!("{url}: {}", crate::health::error_chain(&e))),
    }
}

/// Reads every remote vantage's observations, all at once every
/// `poll_interval`, so one hanging prober delays no other.
async fn poll_vantages(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let cfg = shared.snapshot.load().config.health.clone();
        let timeout = cfg
            .poll_interval
            .max(std::time::Duration::from_millis(200))
            .min(std::time::Duration::from_secs(5));
        crate::health::ensure_tls_provider();
        let client = match reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot build the vantage client: {e}");
                return;
            }
        };
        let mut round = tokio::task::JoinSet::new();
        for (name, v) in &cfg.vantages {
            let (name, v, client) = (name.clone(), v.clone(), client.clone());
            round.spawn(async move {
                let r = fetch_vantage(client, v.clone()).await;
                (name, v.url, r)
            });
        }
        while let Some(done) = round.join_next().await {
            let Ok((name, url, result)) = done else {
                continue;
            };
            let mut table = shared.health.lock().unwrap_or_else(|p| p.into_inner());
            let now = unix(SystemTime::now());
            match result {
                Ok(obs) => {
                    table.remote(&name, &obs, now);
                    if let Some(st) = table.vantages.get_mut(&name) {
                        st.url = url;
                    }
                    shared.publish(&mut table);
                }
                Err(e) => {
                    let st = table.vantages.entry(name.clone()).or_default();
                    if st.last_error.as_deref() != Some(&e) {
                        tracing::warn!(vantage = %name, "cannot read vantage: {e}");
                    }
                    st.url = url;
                    st.last_error = Some(e);
                    st.last_error_at = Some(now);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.poll_interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn watch_geo(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let every = shared
            .snapshot
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
        let s = shared.clone();
        if let Err(e) = in_background("geolb-geoip", move || s.check_geo()).await {
            tracing::error!("GeoIP check: {e}");
        }
    }
}

/// Frees a replaced snapshot on the calling (build) thread rather than on
/// whichever thread lets go of it last, which can be an answering thread
/// that loaded it just before the swap: the old GeoIP tables and mapping
/// are unmapped here, never on the answer path. A swap means no new reader
/// can get `old`, so its count only falls; readers hold it for one batch.
/// Gives up after a second (the last reader then frees it).
fn retire(old: Arc<Snapshot>) {
    retire_within(old, std::time::Duration::from_secs(1));
}

fn retire_within<T>(old: Arc<T>, limit: std::time::Duration) {
    let until = std::time::Instant::now() + limit;
    while Arc::strong_count(&old) > 1 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(old);
}

/// Why [`in_background`] did not return a result.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("cannot start a build thread: {0}")]
    Spawn(std::io::Error),
    #[error("the build thread panicked")]
    Panicked,
}

/// Runs `f` (a reload, a GeoIP rebuild) on a thread of its own at the lowest
/// CPU priority and waits for it without blocking the runtime. A fresh
/// thread each time: raising a thread's priority back can be refused
/// without privileges, so the runtime's blocking pool, which also serves
/// the admin API (metrics, health, overrides), is never lowered.
pub async fn in_background<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackgroundError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lowest_priority();
            let _ = tx.send(f());
        })
        .map_err(BackgroundError::Spawn)?;
    rx.await.map_err(|_| BackgroundError::Panicked)
}

/// Makes large allocations (the transient tables of a snapshot or GeoIP
/// build, tens of MB) go back to the system when freed. glibc raises its
/// mmap threshold each time such a block is freed, so the next build's
/// tables come from the heap of the build thread's arena and stay resident
/// after the build: RSS grew from 14 to 23–69 MB after GeoIP swaps. A fixed
/// threshold keeps it at the size of what is live. Process-wide; call once
/// before any thread starts. Other allocators already return freed memory.
pub fn return_freed_tables() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc parameter; called before other
    // threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Puts the calling thread at the lowest CPU priority (nice 19), so building
/// a snapshot (zone files, compiling geo decisions) takes CPU only when the
/// answer path does not need it. Only for threads of [`in_background`],
/// which end with their build: the priority is never raised back.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority on this thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// A running server.
pub struct Server {
    pub shared: Arc<Shared>,
    /// Bound DNS addresses (UDP and TCP share each).
    pub dns_addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    shutdown_tx: watch::Sender<bool>,
    udp_threads: Vec<JoinHandle<()>>,
    udp_sockets: Vec<Arc<std::net::UdpSocket>>,
    tcp_slots: Arc<Semaphore>,
    tcp_max: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn bindable_v6_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::AddrNotAvailable) || e.raw_os_error() == Some(97)
}

impl Server {
    /// Loads the config, binds every listener and starts serving. Must be
    /// called inside a Tokio runtime.
    pub async fn start(config_path: PathBuf, overrides: Overrides) -> Result<Server, StartError> {
        crate::health::ensure_tls_provider();
        let path = config_path.clone();
        let ov = overrides.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Config::load_with(&path, &ov).and_then(|c| snapshot::build(c, 1, None))
        })
        .await
        .map_err(|e| {
            StartError::Load(LoadError(vec![Diagnostic::error(
                &config_path,
                0,
                0,
                format!("loader failed: {e}"),
            )]))
        })??;
        let (mut snap, warnings) = loaded;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        // Operators' overrides from the state file, then the first view.
        let mut table = HealthTable::default();
        if let Some(path) = &snap.config.health.state_file {
            match table.load_state(path) {
                Ok(()) if !table.overrides.is_empty() => {
                    tracing::info!(overrides = table.overrides.len(), path = %path.display(), "operator overrides restored")
                }
                Ok(()) => {}
                Err(e) => tracing::error!("state file: {e}"),
            }
        }
        table.sync(&snap.topology, unix(SystemTime::now()));
        snap.health =
            Arc::new(table.evaluate(&snap.topology, &snap.config.health, unix(SystemTime::now())));
        let server_cfg = snap.config.server.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snap),
            config_path,
            overrides: overrides.clone(),
            started_at: SystemTime::now(),
            last_reload: Mutex::new(None),
            reload_lock: Mutex::new(()),
            udp_stats: Mutex::new(Vec::new()),
            tcp_stats: tcp::TcpStats::default(),
            dns_addrs: Mutex::new(Vec::new()),
            geo_status: Mutex::new(GeoStatus::default()),
            health: Mutex::new(table),
            reloads_ok: Default::default(),
            reloads_failed: Default::default(),
            monitor_tasks: Mutex::new(Vec::new()),
            rt: tokio::runtime::Handle::current(),
            shutdown: shutdown_rx.clone(),
            me: std::sync::OnceLock::new(),
        });
        let _ = shared.me.set(Arc::downgrade(&shared));
        let workers = match server_cfg.udp_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let placement = server_cfg
            .udp_cpu_affinity
            .then(|| crate::dns::affinity::for_process(workers))
            .flatten();
        let tcp_max = server_cfg.tcp_max_connections;
        let tcp_slots = Arc::new(Semaphore::new(tcp_max));
        let mut udp_threads = Vec::new();
        let mut udp_sockets: Vec<Arc<std::net::UdpSocket>> = Vec::new();
        let mut tasks = Vec::new();
        let mut dns_addrs = Vec::new();
        let mut all_stats = Vec::new();
        let mut bind_all = || -> Result<(), StartError> {
            for addr in &server_cfg.dns {
                if addr.ip().is_unspecified() {
                    tracing::warn!(%addr, "UDP replies on a wildcard address leave from the address the kernel routes by; on hosts with several addresses, list each address instead");
                }
                // UDP first: with port 0 it picks the port TCP then shares;
                // if that port is taken for TCP, pick another.
                let mut attempt = 0;
                let (bound, sockets, listener) = loop {
                    attempt += 1;
                    let (bound, sockets) = match udp::bind_group(*addr, workers) {
                        Ok(x) => x,
                        Err(e)
                            if addr.is_ipv6()
                                && addr.ip().is_loopback()
                                && bindable_v6_absent(&e) =>
                        {
                            tracing::warn!(%addr, error = %e, "IPv6 loopback is not available; not listening on it");
                            break (*addr, Vec::new(), None);
                        }
                        Err(source) => {
                            return Err(StartError::Bind {
                                addr: *addr,
                                proto: "udp",
                                source,
                            })
                        }
                    };
                    match tcp::bind(bound) {
                        Ok(l) => break (bound, sockets, Some(l)),
                        Err(e)
                            if addr.port() == 0
                                && e.kind() == io::ErrorKind::AddrInUse
                                && attempt < 20 =>
                        {
                            continue
                        }
                        Err(source) => {
                            return Err(StartError::Bind {
                                addr: bound,
                                proto: "tcp",
                                source,
                            })
                        }
                    }
                };
                let Some(listener) = listener else { continue };
                let l = udp::spawn(
                    bound,
                    sockets,
                    shared.clone(),
                    stop.clone(),
                    all_stats.len(),
                    placement.as_ref(),
                )
                .map_err(|source| StartError::Bind {
                    addr: bound,
                    proto: "udp",
                    source,
                })?;
                if let Some(p) = &placement {
                    tracing::info!(addr = %bound, cpus = ?p.cpus, steered = l.steered, "UDP workers pinned to CPUs");
                }
                udp_threads.extend(l.threads);
                udp_sockets.extend(l.sockets);
                all_stats.extend(l.stats);
                tasks.push(tokio::spawn(tcp::serve(
                    listener,
                    shared.clone(),
                    tcp_slots.clone(),
                    tcp_max,
                    shutdown_rx.clone(),
                )));
                dns_addrs.push(bound);
            }
            Ok(())
        };
        if overrides.probe_only {
            // A prober serves its observations, not DNS.
        } else if let Err(e) = bind_all() {
            stop.store(true, Ordering::Relaxed);
            udp_sockets.iter().for_each(|s| udp::wake(s));
            let _ = shutdown_tx.send(true);
            return Err(e);
        }
        if dns_addrs.is_empty() && !overrides.probe_only {
            stop.store(true, Ordering::Relaxed);
            udp_sockets.iter().for_each(|s| udp::wake(s));
            let _ = shutdown_tx.send(true);
            return Err(StartError::NoListener);
        }
        *shared.udp_stats.lock().unwrap_or_else(|p| p.into_inner()) = all_stats;
        *shared.dns_addrs.lock().unwrap_or_else(|p| p.into_inner()) = dns_addrs.clone();
        tasks.push(tokio::spawn(watch_geo(shared.clone(), shutdown_rx.clone())));
        tasks.push(tokio::spawn(maintain(shared.clone(), shutdown_rx.clone())));
        if !shared.snapshot.load().config.health.vantages.is_empty() && !overrides.probe_only {
            tasks.push(tokio::spawn(poll_vantages(
                shared.clone(),
                shutdown_rx.clone(),
            )));
        }
        shared.restart_monitors();
        let mut admin_addr = None;
        if let (true, Some(addr)) = (server_cfg.admin_enabled, server_cfg.admin) {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(source) => {
                    stop.store(true, Ordering::Relaxed);
                    udp_sockets.iter().for_each(|s| udp::wake(s));
                    let _ = shutdown_tx.send(true);
                    return Err(StartError::Bind {
                        addr,
                        proto: "admin http",
                        source,
                    });
                }
            };
            admin_addr = listener.local_addr().ok();
            tasks.push(tokio::spawn(crate::admin::serve(
                listener,
                shared.clone(),
                shutdown_rx.clone(),
            )));
        }
        Ok(Server {
            shared,
            dns_addrs,
            admin_addr,
            stop,
            shutdown_tx,
            udp_threads,
            udp_sockets,
            tcp_slots,
            tcp_max,
            tasks,
        })
    }

    /// Stops accepting, lets in-flight TCP queries finish (up to the
    /// configured shutdown timeout), and stops the UDP workers.
    pub async fn shutdown(self) {
        let deadline = self.shared.snapshot.load().config.server.shutdown_timeout;
        let _ = self.shutdown_tx.send(true);
        let all = u32::try_from(self.tcp_max).unwrap_or(u32::MAX);
        match tokio::time::timeout(deadline, self.tcp_slots.acquire_many(all)).await {
            Ok(_) => {}
            Err(_) => tracing::warn!(
                ?deadline,
                "shutdown deadline reached with TCP connections still open"
            ),
        }
        for t in self.tasks {
            t.abort();
        }
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.udp_sockets {
            udp::wake(s);
        }
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_snapshot_is_freed_by_the_retiring_thread_once_readers_let_go() {
        struct Freed(Arc<Mutex<Option<std::thread::ThreadId>>>);
        impl Drop for Freed {
            fn drop(&mut self) {
                *self.0.lock().unwrap() = Some(std::thread::current().id());
            }
        }
        let by = Arc::new(Mutex::new(None));
        let old = Arc::new(Freed(by.clone()));
        // A reader that loaded it just before the swap and holds it a while.
        let reader = {
            let r = old.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                drop(r);
            })
        };
        retire_within(old, std::time::Duration::from_secs(10));
        assert_eq!(*by.lock().unwrap(), Some(std::thread::current().id()));
        reader.join().unwrap();

        // A reader that never lets go: retiring gives up, the reader frees it.
        let by = Arc::new(Mutex::new(None));
        let old = Arc::new(Freed(by.clone()));
        let held = old.clone();
        retire_within(old, std::time::Duration::from_millis(20));
        assert_eq!(*by.lock().unwrap(), None);
        drop(held);
        assert!(by.lock().unwrap().is_some());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn background_work_runs_niced_on_its_own_thread_and_leaves_callers_alone() {
        fn nice() -> i32 {
            // SAFETY: gettid has no preconditions; getpriority on this thread.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::getpriority(libc::PRIO_PROCESS, tid)
            }
        }
        let (name, got) = in_background("geolb-test-build", || {
            let name = std::thread::current().name().map(str::to_string);
            (name, nice())
        })
        .await
        .expect("runs");
        assert_eq!(name.as_deref(), Some("geolb-test-build"));
        assert_eq!(got, 19);
        // The runtime's blocking pool, which serves the admin API, keeps
        // its priority.
        let pool = tokio::task::spawn_blocking(nice).await.expect("runs");
        assert_eq!(pool, nice());
        // A build that panics is an error, not a hang.
        let e = in_background("geolb-test-panic", || -> u8 { panic!("build failed") }).await;
        assert!(matches!(e, Err(BackgroundError::Panicked)));
    }
}

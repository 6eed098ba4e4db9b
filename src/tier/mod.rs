//! The regional tier: TCP listeners on a region's VIPs in front of backend
//! groups, from the same config as DNS and on the same health service.
//!
//! - [`plan`]: what to run, compiled from the config by `snapshot::tier`.
//! - [`Tier`]: the running listeners and groups. Each group's backend
//!   choice is a [`Balancer`](crate::balance::Balancer) (the pure balancing
//!   core) fed with the health service's verdicts, connect outcomes
//!   (passive ejection) and connect latencies.
//! - `relay`: the byte copy; `proxy`: PROXY protocol in and out.
//!
//! The tier registers its backends with the health service under the
//! source `tier` (identity `group/address`, drainable by group,
//! `region/address` or region), so one override drains a region in DNS and
//! in the tier at once. A drained or forced-down backend gets no new
//! connections; the ones it has run on until the group's drain timeout,
//! then are closed. A reload updates groups in place (per-backend state and
//! counters follow identity), rebinds nothing that stays, binds new
//! listeners before anything changes (a bind failure fails the reload and
//! the old tier serves on), and never touches established connections.

pub mod access;
pub mod explain;
pub mod h1;
pub mod hpack;
pub mod http;
pub mod http2;
pub mod limit;
pub mod load;
pub mod native;
pub mod parked;
pub mod plain;
pub mod plan;
pub mod proxy;
pub mod relay;
pub mod stats;
pub mod sticky;
pub mod tls;
pub mod upstream;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::balance::{self, Balancer, Context, FailureOutcome};
use crate::config::NodeConfig;
use crate::health::{HealthService, HealthState};
use crate::policy::AdminState;
use plan::{GroupPlan, ListenerPlan, Mode, Persistence, Plan};
use relay::End;
use stats::{add, BackendStats, ListenerStats};

/// The health service source name of the tier's backends.
pub const SOURCE: &str = "tier";

/// Why a plan could not be applied (nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("listener {name}: cannot listen on {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error(transparent)]
    AccessLog(#[from] access::OpenError),
}

/// One backend at run time: its address, counters and drain state.
#[derive(Debug)]
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    /// `addr` as a URI authority (HTTP requests to it).
    pub authority: ::http::uri::Authority,
    pub stats: BackendStats,
    /// Bumped to close the backend's connections (drain deadline).
    kill: watch::Sender<u64>,
    drain: Mutex<Option<Drain>>,
    /// Idle keep-alive HTTP/1.1 connections to it (cleartext).
    pub idle: Arc<upstream::Idle<http::UpBody>>,
    /// The same for the native engine (plain sockets).
    pub raw: upstream::RawIdle,
}

impl Backend {
    pub fn new(id: &str, addr: SocketAddr) -> Self {
        Backend {
            id: id.to_string(),
            addr,
            authority: ::http::uri::Authority::try_from(addr.to_string().as_str())
                .unwrap_or_else(|_| ::http::uri::Authority::from_static("invalid.")),
            stats: BackendStats::default(),
            kill: watch::channel(0).0,
            drain: Mutex::new(None),
            idle: Arc::default(),
            raw: upstream::RawIdle::default(),
        }
    }

    /// Drained by an operator (not forced down), still passing its checks,
    /// and before its drain deadline: it may take requests stuck to it when
    /// its group has `drain_sticky`.
    fn takes_sticky(&self) -> bool {
        self.drain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|d| d.sticky_ok && !d.closed)
    }
}

/// A drain in progress.
#[derive(Debug, Clone, Copy)]
struct Drain {
    since_ms: u64,
    deadline_ms: u64,
    closed: bool,
    /// A drain (not a forced down) of a backend whose checks pass.
    sticky_ok: bool,
}

struct GroupState {
    plan: GroupPlan,
    balancer: Balancer,
    backends: FxHashMap<String, Arc<Backend>>,
    budget: Budget,
    /// Persistence: the cookie table (mode cookie) and the client table
    /// (mode source; kept across reloads).
    cookies: sticky::Cookies,
    source: Option<sticky::SourceTable>,
}

impl GroupState {
    /// Success-rate outlier detection, when its interval is over: counts
    /// and logs the backends it ejects.
    fn check_outliers(&mut self, now: u64) {
        for (id, info) in self.balancer.success_rate_outliers(now) {
            if let Some(b) = self.backends.get(&id) {
                add(&b.stats.ejections, 1);
            }
            if let balance::EjectionReason::SuccessRate {
                rate_permille,
                threshold_permille,
                requests,
            } = info.reason
            {
                tracing::warn!(
                    backend = %id,
                    for_s = info.until_ms.saturating_sub(now) / 1000,
                    success = rate_permille as f64 / 10.0,
                    threshold = threshold_permille as f64 / 10.0,
                    requests,
                    "backend ejected: its success rate (%) is an outlier in its group"
                );
            }
        }
    }

    /// Rebuilds the persistence tables for the current plan and backends;
    /// the client table is kept (with new limits) while the mode stays.
    fn set_persistence(&mut self, key: &sticky::CookieKey) {
        self.cookies = match &self.plan.persistence {
            Persistence::Cookie(c) => sticky::Cookies::build(
                key,
                &c.name,
                &c.attributes,
                self.plan.backends.iter().map(|b| b.id.as_str()),
            ),
            _ => sticky::Cookies::default(),
        };
        match &self.plan.persistence {
            Persistence::Source {
                timeout,
                max_entries,
            } => {
                let t = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                match &mut self.source {
                    Some(s) => s.set_limits(t, *max_entries),
                    None => self.source = Some(sticky::SourceTable::new(t, *max_entries)),
                }
            }
            _ => self.source = None,
        }
    }

    /// The member index of `backend` if it may take a request stuck to it
    /// now: serving, or drained with `drain_sticky`.
    fn sticky_ok(&self, backend: &Backend, now: u64, tried: &[usize]) -> Option<usize> {
        let drained = self.plan.drain_sticky && backend.takes_sticky();
        let i = self.balancer.admits(&backend.id, now, drained)?;
        (!tried.contains(&i)).then_some(i)
    }
}

/// HTTP retries allowed in a 10 s window: 30, plus `retry_budget` percent
/// of the window's requests (Finagle's and Envoy's retry budgets).
#[derive(Debug, Default)]
struct Budget {
    window_start: u64,
    requests: u64,
    retries: u64,
}

impl Budget {
    const WINDOW_MS: u64 = 10_000;

    fn roll(&mut self, now: u64) {
        if now.saturating_sub(self.window_start) >= Self::WINDOW_MS {
            *self = Budget {
                window_start: now,
                ..Budget::default()
            };
        }
    }
    fn request(&mut self, now: u64) {
        self.roll(now);
        self.requests += 1;
    }
    /// Takes a retry from the budget if there is one.
    fn retry(&mut self, now: u64, percent: u8) -> bool {
        self.roll(now);
        let allowed = 30 + self.requests * u64::from(percent) / 100;
        if self.retries < allowed {
            self.retries += 1;
            true
        } else {
            false
        }
    }
}

/// One backend group at run time.
pub struct Group {
    pub name: String,
    state: Mutex<GroupState>,
    /// HTTP: the group's own pool when it speaks TLS or h2 to its
    /// backends (else requests use the listener's).
    upstream: arc_swap::ArcSwapOption<http::GroupPool>,
    /// Backend connections opened by that pool.
    connects: Arc<std::sync::atomic::AtomicU64>,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a listener forwards to (replaced whole by a reload).
pub struct Route {
    plan: ListenerPlan,
    group: Arc<Group>,
    /// HTTP: the group of each rule (None for fixed responses).
    rule_groups: Vec<Option<Arc<Group>>>,
    /// HTTP: the listener's keep-alive pools (kept across reloads).
    http: http::Pool,
    /// HTTP: rate limits (kept across reloads while unchanged).
    limits: Option<Arc<limit::Limits>>,
    /// HTTP: each rule's counters, then the default route's.
    route_stats: Vec<Arc<stats::RouteStats>>,
    /// HTTP: the access log.
    access: Option<Arc<access::AccessLog>>,
}

struct Listener {
    route: Arc<ArcSwap<Route>>,
    stats: Arc<ListenerStats>,
    local: SocketAddr,
    task: tokio::task::AbortHandle,
    /// The listening socket (a second descriptor of it), for what a reload
    /// changes in place: whether accepting waits for data.
    sock: Option<std::net::TcpListener>,
}

/// How long accepting a connection may wait for its first data: HTTP
/// listeners' clients speak first (`header_timeout`, at least a second);
/// a TCP listener's backend may speak first, so it does not wait.
fn defer_secs(mode: &Mode) -> u32 {
    match mode {
        Mode::Http(h) => u32::try_from(h.header_timeout.as_secs().clamp(1, 60)).unwrap_or(1),
        Mode::Tcp => 0,
    }
}

#[derive(Default)]
struct Running {
    listeners: BTreeMap<SocketAddr, Listener>,
    groups: BTreeMap<String, Arc<Group>>,
    /// Every backend ever seen, by identity (counters survive reloads).
    backends: FxHashMap<String, Arc<Backend>>,
}

/// The running tier; see the module documentation.
pub struct Tier {
    health: Arc<HealthService>,
    /// The runtime listeners and connections run on (reloads come from
    /// other threads).
    rt: tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
    t0: Instant,
    inner: Mutex<Running>,
    /// One apply at a time.
    applying: Mutex<()>,
    /// The HTTP access log, if one is configured.
    access: Mutex<Option<Arc<access::AccessLog>>>,
    /// The persistence cookie key and the secret it came from (None: random).
    cookie_key: Mutex<(Option<Vec<u8>>, Arc<sticky::CookieKey>)>,
    /// Idle HTTP connections that gave their buffers back, ever.
    released: std::sync::atomic::AtomicU64,
    /// The load of each region this node runs listeners of.
    meter: Mutex<load::Meter>,
    /// Every region's capacity (`[regions.NAME] capacity`), from the plan.
    capacity: Mutex<BTreeMap<String, crate::policy::Capacity>>,
    me: Weak<Tier>,
}

fn ip_in(ip: IpAddr, nets: &[ipnet::IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

impl Tier {
    /// How many times an idle HTTP connection has given its buffers back
    /// (for the job that returns freed memory to the system).
    pub fn idle_releases(&self) -> u64 {
        stats::get(&self.released)
    }

    /// A tier with nothing running; it follows `health` from now on. Must
    /// be called inside the Tokio runtime the tier is to run on.
    pub fn new(health: Arc<HealthService>, shutdown: watch::Receiver<bool>) -> Arc<Tier> {
        let tier = Arc::new_cyclic(|me| Tier {
            health: health.clone(),
            rt: tokio::runtime::Handle::current(),
            shutdown,
            t0: Instant::now(),
            inner: Mutex::new(Running::default()),
            applying: Mutex::new(()),
            cookie_key: Mutex::new((None, Arc::new(sticky::CookieKey::random()))),
            access: Mutex::new(None),
            released: std::sync::atomic::AtomicU64::new(0),
            meter: Mutex::new(load::Meter::default()),
            capacity: Mutex::new(BTreeMap::new()),
            me: me.clone(),
        });
        let weak = Arc::downgrade(&tier);
        health.subscribe(move |state| {
            if let Some(t) = weak.upgrade() {
                t.on_health(state);
            }
        });
        tier
    }

    /// Milliseconds since the tier started (the balancers' clock).
    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `t` on the balancers' clock (a request's clock read, reused).
    pub fn ms_at(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.t0).as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Running> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the drain-deadline watcher and the load meter (a sample
    /// every 200 ms, reported to this node's health service every second).
    /// Call once, inside the runtime.
    pub fn spawn_jobs(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::downgrade(self);
        let mut stop = self.shutdown.clone();
        self.rt.spawn(async move {
            for tick in 1u64.. {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => return,
                }
                let Some(t) = me.upgrade() else { return };
                t.sweep_parked();
                t.enforce_drains();
                t.measure_load();
                if tick % 5 == 0 {
                    t.health.set_local_load(t.load_report());
                }
                if tick % 25 == 0 {
                    t.sweep();
                }
            }
        })
    }

    /// Samples every listener's open connections and requests into the
    /// load meter.
    fn measure_load(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut names: Vec<String> = Vec::new();
        let samples: Vec<(SocketAddr, load::Sample)> = {
            let run = self.lock();
            run.listeners
                .iter()
                .map(|(bind, l)| {
                    let r = l.route.load();
                    let region_index = match names.iter().position(|n| *n == r.plan.region) {
                        Some(i) => i,
                        None => {
                            names.push(r.plan.region.clone());
                            names.len() - 1
                        }
                    };
                    let total = match r.plan.mode {
                        Mode::Tcp => stats::get(&l.stats.accepted),
                        Mode::Http(_) => stats::get(&l.stats.requests),
                    };
                    let sample = load::Sample {
                        region_index,
                        active: u64::from(l.stats.active.load(Relaxed)),
                        total,
                    };
                    (*bind, sample)
                })
                .collect()
        };
        let at = self.t0.elapsed().as_secs_f64();
        self.meter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sample(at, &names, &samples);
    }

    /// The load of each region this node runs listeners of, smoothed —
    /// when any region has a capacity configured (nobody reads it
    /// otherwise); empty else.
    pub fn load_report(&self) -> Vec<crate::health::LoadReport> {
        if self
            .capacity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return Vec::new();
        }
        self.meter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .report()
    }

    /// Makes the tier run `plan`'s listeners of the regions `node` names:
    /// binds new listeners first (any failure: nothing changes), then
    /// updates groups in place, re-routes kept listeners, closes removed
    /// ones and registers the backends with the health service.
    pub fn apply(&self, plan: &Plan, node: &NodeConfig) -> Result<(), Vec<ApplyError>> {
        let _one = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        let here = |region: &str| {
            node.regions
                .as_ref()
                .is_none_or(|r| r.iter().any(|x| x == region))
        };
        let wanted: Vec<&ListenerPlan> =
            plan.listeners.iter().filter(|l| here(&l.region)).collect();
        // 1. Bind what is new.
        let mut fresh: BTreeMap<SocketAddr, std::net::TcpListener> = BTreeMap::new();
        let mut errors = Vec::new();
        {
            let run = self.lock();
            for l in &wanted {
                if run.listeners.contains_key(&l.bind) {
                    continue;
                }
                match crate::sock::listen_tcp(l.bind, l.max_connections) {
                    Ok(s) => {
                        fresh.insert(l.bind, s);
                    }
                    Err(source) => errors.push(ApplyError::Bind {
                        name: l.name.clone(),
                        addr: l.bind,
                        source,
                    }),
                }
            }
        }
        // The access log: the same one reopened (rotation), or a new one.
        let access = {
            let cur = self
                .access
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match (&plan.access_log, cur) {
                (None, _) => None,
                (Some(want), Some(cur)) if &cur.plan == want => {
                    cur.reopen();
                    Some(cur)
                }
                (Some(want), _) => match access::AccessLog::start(want) {
                    Ok(l) => Some(Arc::new(l)),
                    Err(e) => {
                        errors.push(e.into());
                        None
                    }
                },
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        *self.access.lock().unwrap_or_else(|p| p.into_inner()) = access.clone();
        let now = self.now_ms();
        let health = self.health.current();
        let _rt = self.rt.enter();
        let mut run = self.lock();
        let key = {
            let mut k = self.cookie_key.lock().unwrap_or_else(|p| p.into_inner());
            if plan.cookie_secret != k.0 {
                *k = (
                    plan.cookie_secret.clone(),
                    Arc::new(match &plan.cookie_secret {
                        Some(s) => sticky::CookieKey::new(s),
                        None => sticky::CookieKey::random(),
                    }),
                );
            }
            k.1.clone()
        };
        // 2. Groups, in place.
        let mut groups = BTreeMap::new();
        for g in &plan.groups {
            let members = g.members();
            let mut backends = FxHashMap::default();
            for b in &g.backends {
                let be = run
                    .backends
                    .entry(b.id.clone())
                    .or_insert_with(|| Arc::new(Backend::new(&b.id, b.addr)))
                    .clone();
                backends.insert(b.id.clone(), be);
            }
            let group = match run.groups.get(&g.name) {
                Some(existing) => {
                    let mut st = existing.lock();
                    // Settings were checked when the plan was compiled.
                    if let Err(e) = st.balancer.set_settings(g.settings.clone()) {
                        tracing::error!(group = %g.name, "settings not applied: {e}");
                    }
                    if let Err(e) = st.balancer.update(&members, now) {
                        tracing::error!(group = %g.name, "members not applied: {e}");
                    }
                    if st.plan.transport != g.transport {
                        existing.upstream.store(
                            http::group_pool(&g.transport, existing.connects.clone()).map(Arc::new),
                        );
                    }
                    st.plan = g.clone();
                    st.backends = backends;
                    st.set_persistence(&key);
                    drop(st);
                    existing.clone()
                }
                None => {
                    let balancer = match Balancer::new(g.settings.clone(), &members) {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::error!(group = %g.name, "group not started: {e}");
                            continue;
                        }
                    };
                    let mut st = GroupState {
                        plan: g.clone(),
                        balancer,
                        backends,
                        budget: Budget::default(),
                        cookies: sticky::Cookies::default(),
                        source: None,
                    };
                    st.set_persistence(&key);
                    let connects = Arc::new(std::sync::atomic::AtomicU64::new(0));
                    Arc::new(Group {
                        name: g.name.clone(),
                        state: Mutex::new(st),
                        upstream: arc_swap::ArcSwapOption::new(
                            http::group_pool(&g.transport, connects.clone()).map(Arc::new),
                        ),
                        connects,
                    })
                }
            };
            apply_health(&group, &health, now);
            groups.insert(g.name.clone(), group);
        }
        run.groups = groups;
        let ids: BTreeSet<&str> = plan
            .groups
            .iter()
            .flat_map(|g| g.backends.iter().map(|b| b.id.as_str()))
            .collect();
        // Forget backends that are gone and idle (live connections keep
        // their own reference).
        run.backends
            .retain(|id, b| ids.contains(id.as_str()) || Arc::strong_count(b) > 1);
        // 3. Listeners.
        let keep: BTreeSet<SocketAddr> = wanted.iter().map(|l| l.bind).collect();
        let gone: Vec<SocketAddr> = run
            .listeners
            .keys()
            .filter(|a| !keep.contains(a))
            .copied()
            .collect();
        for a in gone {
            if let Some(l) = run.listeners.remove(&a) {
                l.task.abort();
                l.stats.close();
                tracing::info!(bind = %a, "tier listener closed (removed from the config); its HTTP connections close within the drain window");
            }
        }
        for l in wanted {
            let Some(group) = run.groups.get(&l.group).cloned() else {
                continue;
            };
            let rule_groups = match &l.mode {
                Mode::Http(h) => h
                    .rules
                    .iter()
                    .map(|r| match &r.action {
                        plan::Action::Group(g) => run.groups.get(g).cloned(),
                        plan::Action::Respond { .. } => None,
                    })
                    .collect(),
                Mode::Tcp => Vec::new(),
            };
            let old = run.listeners.get(&l.bind).map(|x| x.route.load_full());
            let stats = run
                .listeners
                .get(&l.bind)
                .map_or_else(|| Arc::new(ListenerStats::default()), |x| x.stats.clone());
            let pool = http::pool(l.connect_timeout, stats.backend_connects.clone());
            let limits = match &l.mode {
                Mode::Http(h) => h.rate_limit.as_ref().map(|want| {
                    match old.as_ref().and_then(|o| o.limits.clone()) {
                        Some(same) if &same.plan == want => same,
                        _ => Arc::new(limit::Limits::new(want)),
                    }
                }),
                Mode::Tcp => None,
            };
            let mut plan = l.clone();
            if let (Mode::Http(new), Some(Mode::Http(old))) =
                (&mut plan.mode, old.as_ref().map(|r| &r.plan.mode))
            {
                // Unchanged certificates: keep the running config (and its
                // session cache); changed ones serve new connections.
                if new.tls == old.tls {
                    new.tls.clone_from(&old.tls);
                }
            }
            let route_stats = match &l.mode {
                Mode::Http(h) => {
                    let labels: Vec<String> = h
                        .rules
                        .iter()
                        .map(plan::RulePlan::label)
                        .chain(std::iter::once("default".to_string()))
                        .collect();
                    let mut m = stats.routes.lock().unwrap_or_else(|p| p.into_inner());
                    m.retain(|k, _| labels.contains(k));
                    labels
                        .iter()
                        .map(|k| m.entry(k.clone()).or_default().clone())
                        .collect()
                }
                Mode::Tcp => Vec::new(),
            };
            let route = Route {
                plan,
                group,
                rule_groups,
                http: pool,
                limits,
                route_stats,
                access: access.clone(),
            };
            if let Some(existing) = run.listeners.get(&l.bind) {
                // (The mode may have changed: HTTP waits for data, TCP not.)
                if let Some(sock) = &existing.sock {
                    if let Err(e) = crate::sock::defer_accept(sock, defer_secs(&l.mode)) {
                        tracing::debug!(bind = %l.bind, "TCP_DEFER_ACCEPT: {e}");
                    }
                }
                existing.route.store(Arc::new(route));
                continue;
            }
            let Some(std_listener) = fresh.remove(&l.bind) else {
                continue;
            };
            if let Err(e) = crate::sock::defer_accept(&std_listener, defer_secs(&l.mode)) {
                tracing::debug!(bind = %l.bind, "TCP_DEFER_ACCEPT: {e}");
            }
            let sock = std_listener.try_clone().ok();
            let local = std_listener.local_addr().unwrap_or(l.bind);
            let listener = match TcpListener::from_std(std_listener) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(bind = %l.bind, "cannot register the listener: {e}");
                    continue;
                }
            };
            let route = Arc::new(ArcSwap::from_pointee(route));
            let task = self.rt.spawn(accept_loop(
                self.me.clone(),
                listener,
                route.clone(),
                stats.clone(),
                local,
                self.shutdown.clone(),
            ));
            tracing::info!(listener = %l.name, region = %l.region, bind = %local, group = %l.group, "tier listening");
            run.listeners.insert(
                l.bind,
                Listener {
                    route,
                    stats,
                    local,
                    task: task.abort_handle(),
                    sock,
                },
            );
        }
        drop(run);
        *self.capacity.lock().unwrap_or_else(|p| p.into_inner()) = plan.capacity.clone();
        self.health.set_members(SOURCE, plan.members.clone());
        Ok(())
    }

    /// The bound address of each listener, by name (port 0 binds).
    pub fn local_addrs(&self) -> BTreeMap<String, SocketAddr> {
        self.lock()
            .listeners
            .values()
            .map(|l| (l.route.load().plan.name.clone(), l.local))
            .collect()
    }

    /// Connections open through the tier's listeners now.
    pub fn active(&self) -> u64 {
        self.lock()
            .listeners
            .values()
            .map(|l| u64::from(l.stats.active.load(std::sync::atomic::Ordering::Relaxed)))
            .sum()
    }

    fn on_health(&self, state: &HealthState) {
        let groups: Vec<Arc<Group>> = self.lock().groups.values().cloned().collect();
        let now = self.now_ms();
        for g in groups {
            apply_health(&g, state, now);
        }
    }

    /// Forgets expired persistence entries and rate-limit clients back at
    /// full allowance (every 5 s).
    fn sweep(&self) {
        let now = self.now_ms();
        let (groups, routes): (Vec<Arc<Group>>, Vec<Arc<Route>>) = {
            let run = self.lock();
            (
                run.groups.values().cloned().collect(),
                run.listeners
                    .values()
                    .map(|l| l.route.load_full())
                    .collect(),
            )
        };
        for g in groups {
            if let Some(t) = g.lock().source.as_mut() {
                t.sweep(now);
            }
        }
        for r in routes {
            if let Some(l) = &r.limits {
                l.sweep();
            }
        }
    }

    /// Sends away the parked HTTP connections past their keep-alive idle
    /// time (`header_timeout`), every listener's.
    fn sweep_parked(&self) {
        let stats: Vec<Arc<ListenerStats>> = self
            .lock()
            .listeners
            .values()
            .map(|l| l.stats.clone())
            .collect();
        let now = Instant::now();
        for s in stats {
            let n = s.parked_set.sweep(now);
            add(&s.idle_closed, n as u64);
        }
    }

    /// Closes the connections of backends whose drain deadline passed.
    fn enforce_drains(&self) {
        let groups: Vec<Arc<Group>> = self.lock().groups.values().cloned().collect();
        let now = self.now_ms();
        for g in groups {
            let st = g.lock();
            for (id, b) in &st.backends {
                let mut d = b.drain.lock().unwrap_or_else(|p| p.into_inner());
                let Some(drain) = d.as_mut() else { continue };
                if drain.closed || now < drain.deadline_ms {
                    continue;
                }
                drain.closed = true;
                let active = st.balancer.active(id).unwrap_or(0);
                if active > 0 {
                    tracing::info!(backend = %id, connections = active, "drain deadline reached; closing the backend's remaining connections");
                    b.kill.send_modify(|v| *v += 1);
                }
                b.raw.clear();
            }
        }
    }

    /// Everything the API and the metrics show.
    pub fn status(&self) -> TierStatus {
        let now = self.now_ms();
        let health = self.health.current();
        let run = self.lock();
        let listeners = run
            .listeners
            .values()
            .map(|l| {
                let r = l.route.load();
                let s = &l.stats;
                use std::sync::atomic::Ordering::Relaxed;
                ListenerStatus {
                    mode: match r.plan.mode {
                        Mode::Tcp => "tcp",
                        Mode::Http(_) => "http",
                    },
                    http1_engine: match &r.plan.mode {
                        Mode::Tcp => None,
                        Mode::Http(h) => Some(match h.engine {
                            plan::Http1Engine::Native => "native",
                            plan::Http1Engine::Hyper => "hyper",
                        }),
                    },
                    requests: stats::get(&s.requests),
                    responses: std::array::from_fn(|i| stats::get(&s.responses[i])),
                    name: r.plan.name.clone(),
                    region: r.plan.region.clone(),
                    bind: l.local,
                    group: r.plan.group.clone(),
                    max_connections: r.plan.max_connections,
                    active: s.active.load(Relaxed),
                    parked: s.parked.load(Relaxed),
                    accepted: stats::get(&s.accepted),
                    refused_max: stats::get(&s.refused_max),
                    no_backend: stats::get(&s.no_backend),
                    proxy_untrusted: stats::get(&s.proxy_untrusted),
                    proxy_invalid: stats::get(&s.proxy_invalid),
                    retries: stats::get(&s.retries),
                    idle_closed: stats::get(&s.idle_closed),
                    drain_closed: stats::get(&s.drain_closed),
                    errors: stats::get(&s.errors),
                    rate_limited_client: stats::get(&s.rate_limited_client),
                    rate_limited_listener: stats::get(&s.rate_limited_listener),
                    rate_limit_clients: r.limits.as_ref().map_or(0, |l| l.clients()),
                    upgrades: stats::get(&s.upgrades),
                    body_timeouts: stats::get(&s.body_timeouts),
                    header_timeouts: stats::get(&s.header_timeouts),
                    goaway: stats::get(&s.goaway),
                    h2_streams: stats::get(&s.h2_streams),
                    h2_refused: stats::get(&s.h2_refused),
                    h2_stream_errors: stats::get(&s.h2_stream_errors),
                    h2_connection_errors: stats::get(&s.h2_connection_errors),
                    backend_connections: stats::get(&s.backend_connects),
                    routes: s
                        .routes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|(label, rs)| RouteStatus::of(label, rs))
                        .collect(),
                    tls_certificates: match &r.plan.mode {
                        Mode::Http(h) => h.tls.as_ref().map(|t| t.names.clone()),
                        Mode::Tcp => None,
                    },
                    tls_handshakes: stats::get(&s.tls_handshakes),
                    tls_handshake_errors: stats::get(&s.tls_handshake_errors),
                }
            })
            .collect();
        let groups = run
            .groups
            .values()
            .map(|g| {
                let st = g.lock();
                let views = st.balancer.view(now);
                let backends = views
                    .into_iter()
                    .filter_map(|v| {
                        let b = st.backends.get(&v.id)?;
                        let h = health.get(&v.id);
                        let drain = b.drain.lock().unwrap_or_else(|p| p.into_inner()).map(|d| {
                            DrainStatus {
                                since_s: now.saturating_sub(d.since_ms) as f64 / 1000.0,
                                deadline_in_s: d.deadline_ms.saturating_sub(now) as f64 / 1000.0,
                                remaining: v.active,
                            }
                        });
                        let s = &b.stats;
                        Some(BackendStatus {
                            ejection_ends_in_s: v
                                .ejection
                                .map(|e| e.until_ms.saturating_sub(now) as f64 / 1000.0),
                            address: b.addr,
                            health: h.reason().to_string(),
                            admin: h.admin,
                            drain,
                            total: stats::get(&s.total),
                            connect_errors: stats::get(&s.connect_errors),
                            ejections: stats::get(&s.ejections),
                            bytes_up: stats::get(&s.bytes_up),
                            bytes_down: stats::get(&s.bytes_down),
                            drain_closed: stats::get(&s.drain_closed),
                            http_responses: std::array::from_fn(|i| {
                                stats::get(&s.http_responses[i])
                            }),
                            http_errors: stats::get(&s.http_errors),
                            http_timeouts: stats::get(&s.http_timeouts),
                            idle_connections: b.idle.count() + b.raw.count(),
                            view: v,
                        })
                    })
                    .collect();
                GroupStatus {
                    name: g.name.clone(),
                    region: st.plan.region.clone(),
                    algorithm: st.plan.settings.algorithm.name().to_string(),
                    slow_start_s: st.plan.settings.slow_start.as_secs_f64(),
                    send_proxy: st.plan.send_proxy,
                    persistence: st.plan.persistence.name(),
                    drain_sticky: st.plan.drain_sticky,
                    backend_connections: stats::get(&g.connects),
                    sticky_clients: st.source.as_ref().map_or(0, |t| t.len()),
                    protocol: if st.plan.transport.h2 { "h2" } else { "http1" },
                    tls: st.plan.transport.tls.as_ref().map(|t| t.verify),
                    backends,
                }
            })
            .collect();
        drop(run);
        let regions = load::status(
            &self
                .meter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .report(),
            &self.capacity.lock().unwrap_or_else(|p| p.into_inner()),
        );
        TierStatus {
            listeners,
            groups,
            regions,
        }
    }

    /// The access log's lines written and dropped (None: no log).
    pub fn access_log_counts(&self) -> Option<(u64, u64)> {
        self.access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| {
                (
                    l.written.load(std::sync::atomic::Ordering::Relaxed),
                    l.dropped.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
    }

    /// Each HTTP route's counters: (listener, region, label, counters).
    pub fn route_stats(&self) -> Vec<(String, String, String, Arc<stats::RouteStats>)> {
        let run = self.lock();
        run.listeners
            .values()
            .flat_map(|l| {
                let r = l.route.load();
                let m = l.stats.routes.lock().unwrap_or_else(|p| p.into_inner());
                m.iter()
                    .map(|(k, v)| {
                        (
                            r.plan.name.clone(),
                            r.plan.region.clone(),
                            k.clone(),
                            v.clone(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A backend's counters by identity (metrics).
    pub fn backend_stats(&self) -> Vec<(String, String, Arc<Backend>)> {
        let run = self.lock();
        run.groups
            .values()
            .flat_map(|g| {
                let st = g.lock();
                st.backends
                    .values()
                    .map(|b| (g.name.clone(), st.plan.region.clone(), b.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Carries a health state into a group: up/down per backend, and the
/// start or end of drains.
fn apply_health(group: &Group, state: &HealthState, now: u64) {
    let mut st = group.lock();
    let timeout = u64::try_from(st.plan.drain_timeout.as_millis()).unwrap_or(u64::MAX);
    let ids: Vec<String> = st.plan.backends.iter().map(|b| b.id.clone()).collect();
    for id in ids {
        let h = state.get(&id);
        if st.balancer.set_up(&id, h.up(), now) {
            tracing::info!(backend = %id, up = h.up(), reason = h.reason(), "tier backend state changed");
        }
        let Some(b) = st.backends.get(&id) else {
            continue;
        };
        let mut d = b.drain.lock().unwrap_or_else(|p| p.into_inner());
        let draining = matches!(h.admin, AdminState::Drain | AdminState::ForceDown);
        let sticky_ok = h.admin == AdminState::Drain && h.checked_up;
        match (draining, d.as_mut()) {
            (true, None) => {
                *d = Some(Drain {
                    since_ms: now,
                    deadline_ms: now.saturating_add(timeout),
                    closed: false,
                    sticky_ok,
                })
            }
            (true, Some(d)) => d.sticky_ok = sticky_ok,
            (false, Some(_)) => *d = None,
            (false, None) => {}
        }
    }
}

async fn accept_loop(
    tier: Weak<Tier>,
    listener: TcpListener,
    route: Arc<ArcSwap<Route>>,
    stats: Arc<ListenerStats>,
    local: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut last_err: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => {
                // The node stops: its connections close as when the
                // listener is removed.
                stats.close();
                return;
            }
        };
        let (client, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: say so (at most every
                // 10 s) and give the system a moment.
                if last_err.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::error!(bind = %local, "accept failed: {e}");
                    last_err = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        add(&stats.accepted, 1);
        let r = route.load_full();
        if stats.active.fetch_add(1, Relaxed) >= r.plan.max_connections {
            stats.active.fetch_sub(1, Relaxed);
            add(&stats.refused_max, 1);
            drop(client);
            continue;
        }
        let Some(t) = tier.upgrade() else { return };
        let active = Active(stats.clone());
        let s = stats.clone();
        // Cleartext HTTP from a client that sends no PROXY header: the
        // connection's task is `serve_plain` itself, with nothing else held
        // across its awaits (what a parked keep-alive connection keeps).
        let plain = matches!(&r.plan.mode, Mode::Http(h) if h.tls.is_none())
            && !takes_proxy_header(&r, peer);
        if plain {
            let _ = client.set_nodelay(true);
            tokio::spawn(async move {
                let _active = active;
                plain::serve_plain(t, r, s, http::Prefixed::new(Vec::new(), client), peer).await;
            });
        } else {
            tokio::spawn(async move {
                let _active = active;
                connection(t, r, s, client, peer, local).await;
            });
        }
    }
}

/// Whether `peer` is one the listener takes a PROXY header from.
fn takes_proxy_header(route: &Route, peer: SocketAddr) -> bool {
    !route.plan.accept_proxy_from.is_empty() && ip_in(peer.ip(), &route.plan.accept_proxy_from)
}

/// Counts a connection in its listener's `active` while it lives.
struct Active(Arc<ListenerStats>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Picks a backend (never the same twice) and connects, up to the
/// listener's attempts. Returns the stream and the backend.
async fn connect(
    tier: &Tier,
    route: &Route,
    stats: &ListenerStats,
    client: IpAddr,
) -> Option<(TcpStream, Arc<Backend>)> {
    let mut tried: Vec<usize> = Vec::new();
    for attempt in 0..route.plan.connect_attempts {
        let now = tier.now_ms();
        let backend = {
            let mut st = route.group.lock();
            // Source persistence: the client's last backend, while it serves.
            let stuck = match (attempt, &st.source) {
                (0, Some(t)) => t
                    .get(client, now)
                    .cloned()
                    .and_then(|b| st.sticky_ok(&b, now, &tried)),
                _ => None,
            };
            let idx = match stuck.map_or_else(
                || {
                    st.balancer
                        .pick(&Context::at(now).client(client).exclude(&tried))
                },
                Ok,
            ) {
                Ok(i) => i,
                Err(e) => {
                    tracing::debug!(group = %route.group.name, "no backend: {e}");
                    return None;
                }
            };
            tried.push(idx);
            let id = st.balancer.id(idx).unwrap_or_default().to_string();
            let Some(b) = st.backends.get(&id).cloned() else {
                continue;
            };
            st.balancer.acquire(&id);
            if let Some(t) = st.source.as_mut() {
                t.put(client, &b, now);
            }
            b
        };
        if attempt > 0 {
            add(&stats.retries, 1);
        }
        let started = Instant::now();
        let result =
            tokio::time::timeout(route.plan.connect_timeout, TcpStream::connect(backend.addr))
                .await;
        let now = tier.now_ms();
        match result {
            Ok(Ok(stream)) => {
                let took = started.elapsed();
                backend.stats.connected(took);
                let mut st = route.group.lock();
                st.balancer.record_success(&backend.id, now);
                st.balancer.record_latency(&backend.id, took, now);
                st.check_outliers(now);
                return Some((stream, backend));
            }
            Ok(Err(e)) => fail(route, &backend, now, &e.to_string()),
            Err(_) => fail(
                route,
                &backend,
                now,
                &format!("no answer within {:?}", route.plan.connect_timeout),
            ),
        }
    }
    None
}

/// A failed connect: counted, released, and told to passive ejection.
fn fail(route: &Route, backend: &Backend, now: u64, why: &str) {
    add(&backend.stats.connect_errors, 1);
    let mut st = route.group.lock();
    st.balancer.release(&backend.id);
    note_failure(&mut st.balancer, backend, now, why);
}

/// Tells passive ejection of a failure (a connect error, a 5xx, a timeout).
fn note_failure(balancer: &mut Balancer, backend: &Backend, now: u64, why: &str) {
    match balancer.record_failure(&backend.id, now) {
        FailureOutcome::Ejected { until_ms } => {
            add(&backend.stats.ejections, 1);
            tracing::warn!(backend = %backend.id, for_s = until_ms.saturating_sub(now) / 1000, last = why, "backend ejected after repeated failures");
        }
        FailureOutcome::Capped => {
            tracing::warn!(backend = %backend.id, last = why, "backend fails repeatedly but the group is at its ejection cap; it stays in");
        }
        _ => {}
    }
    tracing::debug!(backend = %backend.id, "failure: {why}");
}

/// One client connection, start to end.
async fn connection(
    tier_arc: Arc<Tier>,
    route_arc: Arc<Route>,
    stats_arc: Arc<ListenerStats>,
    mut client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let (tier, route, stats) = (&*tier_arc, &*route_arc, &*stats_arc);
    let trusted = takes_proxy_header(route, peer);
    let (src, dst, rest) = if trusted {
        let read = Box::pin(proxy::read(&mut client, route.plan.proxy_header_timeout));
        match read.await {
            Ok(r) => {
                let (s, d) = r.addrs.unwrap_or((peer, local));
                (s, d, r.rest)
            }
            Err(e) => {
                add(&stats.proxy_invalid, 1);
                tracing::debug!(%peer, "PROXY header refused: {e}");
                return;
            }
        }
    } else {
        (peer, local, Vec::new())
    };
    let _ = client.set_nodelay(true);
    if let Mode::Http(h) = &route.plan.mode {
        let io = http::Prefixed::new(rest, client);
        let (t, r, s) = (tier_arc.clone(), route_arc.clone(), stats_arc.clone());
        // Each kind of connection runs in its own allocation, so the
        // task's own future stays small (an idle HTTP connection holds
        // little more than it). The boxes are made in statements of their
        // own: a future built in the statement that awaits it keeps its
        // full size in this one's state (a moved-from temporary's storage
        // lives to the end of the statement).
        match &h.tls {
            // Not boxed: what a parked connection keeps is this task (a
            // plain client's task is `serve_plain` alone; see accept_loop).
            None => plain::serve_plain(t, r, s, io, src).await,
            Some(tls) => {
                let f = Box::pin(async move {
                    match tls::handshake(tls, io, h.header_timeout, &s).await {
                        // HTTP/1.1 (by ALPN, or none) on the native engine.
                        Ok(io)
                            if h.engine == plan::Http1Engine::Native
                                && io.get_ref().1.alpn_protocol() != Some(b"h2") =>
                        {
                            plain::serve_tls(t, r, s, io, src).await
                        }
                        // h2 by ALPN: the native HTTP/2 server, unless a
                        // group needs hyper's client.
                        Ok(io) if h.engine == plan::Http1Engine::Native && http2::serves(&r) => {
                            let io = http::Prefixed::new(Vec::new(), io);
                            http2::serve(t, r, s, io, src).await
                        }
                        Ok(io) => http::serve(t, r, s, io, src).await,
                        Err(e) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    }
                });
                f.await
            }
        }
        return;
    }
    let f = Box::pin(tcp(
        route,
        stats,
        tier,
        client,
        peer,
        (src, dst),
        rest,
        trusted,
    ));
    f.await;
}

/// A TCP (`mode = "tcp"`) connection: a backend, then bytes both ways.
#[allow(clippy::too_many_arguments)]
async fn tcp(
    route: &Route,
    stats: &ListenerStats,
    tier: &Tier,
    client: TcpStream,
    peer: SocketAddr,
    (src, dst): (SocketAddr, SocketAddr),
    rest: Vec<u8>,
    trusted: bool,
) {
    let Some((mut backend, b)) = connect(tier, route, stats, src.ip()).await else {
        add(&stats.no_backend, 1);
        return;
    };
    let _ = backend.set_nodelay(true);
    add(&b.stats.total, 1);
    let send_proxy = route.group.lock().plan.send_proxy;
    let mut hello = match send_proxy {
        Some(v) => proxy::encode(v, src, dst),
        None => Vec::new(),
    };
    hello.extend_from_slice(&rest);
    let mut kill = b.kill.subscribe();
    let ended = if !hello.is_empty() && backend.write_all(&hello).await.is_err() {
        End::Error
    } else {
        let clock = || tier.now_ms();
        let r = relay::relay(
            &client,
            &backend,
            route.plan.idle_timeout,
            &mut kill,
            &clock,
            !trusted,
        )
        .await;
        add(&b.stats.bytes_up, r.up);
        add(&b.stats.bytes_down, r.down);
        r.end
    };
    match ended {
        End::Done => {}
        End::Idle => add(&stats.idle_closed, 1),
        End::Killed => {
            add(&stats.drain_closed, 1);
            add(&b.stats.drain_closed, 1);
        }
        End::Error => add(&stats.errors, 1),
        End::ProxyHeader => {
            add(&stats.proxy_untrusted, 1);
            tracing::debug!(%peer, "PROXY header from an untrusted peer; connection closed");
        }
    }
    route.group.lock().balancer.release(&b.id);
}

/// A listener as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub mode: &'static str,
    /// HTTP: what serves cleartext HTTP/1.1 clients ("native" or "hyper").
    pub http1_engine: Option<&'static str>,
    /// HTTP: requests, and responses by status class (1xx..5xx).
    pub requests: u64,
    pub responses: [u64; 5],
    pub region: String,
    pub bind: SocketAddr,
    pub group: String,
    pub max_connections: u32,
    pub active: u32,
    /// HTTP: idle keep-alive connections holding no buffers now.
    pub parked: u32,
    pub accepted: u64,
    pub refused_max: u64,
    pub no_backend: u64,
    pub proxy_untrusted: u64,
    pub proxy_invalid: u64,
    pub retries: u64,
    pub idle_closed: u64,
    pub drain_closed: u64,
    pub errors: u64,
    /// HTTP: requests answered 429 by the per-client and listener limits.
    pub rate_limited_client: u64,
    pub rate_limited_listener: u64,
    /// Clients the per-client limit remembers now.
    pub rate_limit_clients: usize,
    /// HTTP: connections switched to another protocol (WebSocket...).
    pub upgrades: u64,
    /// HTTP: requests whose body did not arrive within `body_timeout`.
    pub body_timeouts: u64,
    /// HTTP: request heads not received within `header_timeout` (408).
    pub header_timeouts: u64,
    /// HTTP: connections told to close as the listener went away.
    pub goaway: u64,
    /// HTTP/2 on the native server: streams opened, refused, reset for an
    /// error; connections ended by a protocol error.
    pub h2_streams: u64,
    pub h2_refused: u64,
    pub h2_stream_errors: u64,
    pub h2_connection_errors: u64,
    /// HTTP: backend connections its pool opened (requests over this is
    /// the pool's reuse).
    pub backend_connections: u64,
    /// HTTP: each route (rule label, or "default").
    pub routes: Vec<RouteStatus>,
    /// HTTPS: each certificate's DNS names (the first is the default).
    pub tls_certificates: Option<Vec<Vec<String>>>,
    /// HTTPS: handshakes completed, and failed (bad client hello, no
    /// common version or cipher, timeout, closed midway).
    pub tls_handshakes: u64,
    pub tls_handshake_errors: u64,
}

/// An HTTP route's counters as the API shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteStatus {
    pub route: String,
    pub requests: u64,
    /// Responses by status class (1xx..5xx).
    pub responses: [u64; 5],
    pub active: u32,
    pub retries: u64,
    /// Mean time from request to response headers.
    pub mean_latency_ms: Option<f64>,
}

impl RouteStatus {
    fn of(label: &str, s: &stats::RouteStats) -> Self {
        let done: u64 = s.responses.iter().map(stats::get).sum();
        RouteStatus {
            route: label.to_string(),
            requests: stats::get(&s.requests),
            responses: std::array::from_fn(|i| stats::get(&s.responses[i])),
            active: s.active.load(std::sync::atomic::Ordering::Relaxed),
            retries: stats::get(&s.retries),
            mean_latency_ms: (done > 0)
                .then(|| stats::get(&s.latency_sum_us) as f64 / done as f64 / 1000.0),
        }
    }
}

/// A drain in progress, as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainStatus {
    pub since_s: f64,
    /// Seconds until the remaining connections are closed (0: done).
    pub deadline_in_s: f64,
    pub remaining: u32,
}

/// A backend as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendStatus {
    pub address: SocketAddr,
    /// The health verdict, in words.
    pub health: String,
    pub admin: AdminState,
    pub drain: Option<DrainStatus>,
    /// Seconds until a passive ejection ends (see `ejection` for why).
    pub ejection_ends_in_s: Option<f64>,
    pub total: u64,
    pub connect_errors: u64,
    pub ejections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub drain_closed: u64,
    /// HTTP: responses by status class (1xx..5xx), requests with no
    /// response (connect failure, reset), response timeouts.
    pub http_responses: [u64; 5],
    pub http_errors: u64,
    pub http_timeouts: u64,
    /// HTTP: idle keep-alive connections to it in its pool now.
    pub idle_connections: usize,
    /// The balancer's view: up, eligible, active, effective weight (slow
    /// start), latency, ejection with reason and expiry.
    #[serde(flatten)]
    pub view: balance::BackendView,
}

/// A group as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub region: String,
    pub algorithm: String,
    pub slow_start_s: f64,
    pub send_proxy: Option<plan::ProxyVersion>,
    /// none, cookie, source or hash.
    pub persistence: &'static str,
    pub drain_sticky: bool,
    /// `source` persistence: clients remembered now.
    pub sticky_clients: usize,
    /// HTTP over the group's own pool (TLS or h2): connections opened.
    pub backend_connections: u64,
    /// HTTP to the backends: "http1" or "h2".
    pub protocol: &'static str,
    /// TLS to the backends: None (cleartext), or whether certificates are
    /// verified.
    pub tls: Option<bool>,
    pub backends: Vec<BackendStatus>,
}

/// The tier as the API shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TierStatus {
    pub listeners: Vec<ListenerStatus>,
    pub groups: Vec<GroupStatus>,
    /// Each region this node runs listeners of: its smoothed load, and
    /// against its capacity when one is configured.
    pub regions: Vec<load::RegionLoadStatus>,
}

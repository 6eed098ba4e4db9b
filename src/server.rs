//! The running server: binds the listeners, wires them to the snapshot
//! source, the health service and the control jobs, watches the UDP
//! workers, and shuts everything down gracefully.
//!
//! [`Server::start`] loads a config file; [`Server::run`] starts from
//! values (a snapshot built however the caller likes, and the settings of
//! [`Run`]), which is what tests use to start a server without files.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{watch, Semaphore};

use crate::control::Control;
use crate::diag::{Diagnostic, LoadError};
use crate::dns::{tcp, udp, DnsStats};
use crate::health::HealthService;
use crate::snapshot::{self, Snapshot, Source};
use crate::tier::Tier;

pub use crate::config::Overrides;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    // Transparent: the diagnostics are the message; a source as well would
    // print them twice in an error chain.
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: io::Error,
    },
    #[error("no DNS listener could be bound")]
    NoListener,
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Tier(Vec<crate::tier::ApplyError>),
    #[error(transparent)]
    Dnstap(#[from] crate::dnstap::writer::OpenError),
}

/// How to run, besides the snapshot.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The file reloads read (none: reloads are refused).
    pub config_path: Option<PathBuf>,
    /// Command-line settings that win over the file at every reload.
    pub overrides: Overrides,
}

/// A running server.
pub struct Server {
    /// The jobs that change what is served, and their state.
    pub control: Arc<Control>,
    /// The DNS listeners' addresses and counters.
    pub dns: Arc<DnsStats>,
    /// The regional tier's listeners and groups.
    pub tier: Arc<Tier>,
    /// Bound DNS addresses (UDP and TCP share each).
    pub dns_addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    shutdown_tx: watch::Sender<bool>,
    udp_threads: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    udp_sockets: Vec<Arc<std::net::UdpSocket>>,
    tcp_slots: Arc<Semaphore>,
    tcp_max: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn bindable_v6_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::AddrNotAvailable) || e.raw_os_error() == Some(97)
}

/// The DNS listeners bound so far (dropped on failure: workers stop).
#[derive(Default)]
struct Bound {
    addrs: Vec<SocketAddr>,
    udp_threads: Vec<JoinHandle<()>>,
    udp_sockets: Vec<Arc<std::net::UdpSocket>>,
    udp_stats: Vec<Arc<udp::WorkerStats>>,
    tcp: Vec<tokio::net::TcpListener>,
}

impl Server {
    /// Loads the config, binds every listener and starts serving. Must be
    /// called inside a Tokio runtime.
    pub async fn start(config_path: PathBuf, overrides: Overrides) -> Result<Server, StartError> {
        let path = config_path.clone();
        let ov = overrides.clone();
        let (snap, warnings) =
            tokio::task::spawn_blocking(move || snapshot::load(&path, &ov, 1, None))
                .await
                .map_err(|e| {
                    StartError::Load(LoadError(vec![Diagnostic::error(
                        &config_path,
                        0,
                        0,
                        format!("loader failed: {e}"),
                    )]))
                })??;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Server::run(
            snap,
            Run {
                config_path: Some(config_path),
                overrides,
            },
        )
        .await
    }

    /// Serves `snap`: binds its DNS and admin listeners, starts the health
    /// service and the control jobs. Must be called inside a Tokio runtime.
    pub async fn run(mut snap: Snapshot, run: Run) -> Result<Server, StartError> {
        crate::health::ensure_tls_provider();
        if !run.overrides.probe_only {
            snap.dnstap = crate::dnstap::writer::renew(None, snap.dnstap_plan.as_deref())?;
        }
        let server_cfg = snap.config.server.clone();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let stop = Arc::new(AtomicBool::new(false));
        let source = Arc::new(Source::new(snap));
        let probe_only = run.overrides.probe_only;
        let node = source.load().config.node.clone();
        // A prober serves its observations, not DNS; `[node] dns = false`
        // (or --no-dns) makes a tier-only node.
        let serve_dns = node.dns && !probe_only;

        let workers = match server_cfg.udp_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut bound = Bound::default();
        let fail = |bound: Bound, e: StartError| {
            stop.store(true, Ordering::Relaxed);
            bound.udp_sockets.iter().for_each(|s| udp::wake(s));
            let _ = shutdown_tx.send(true);
            Err(e)
        };
        if serve_dns {
            if let Err(e) = bind_dns(&server_cfg, workers, &source, &stop, &mut bound) {
                return fail(bound, e);
            }
            if bound.addrs.is_empty() {
                return fail(bound, StartError::NoListener);
            }
        }
        let dns = Arc::new(DnsStats {
            addrs: bound.addrs.clone(),
            udp: std::mem::take(&mut bound.udp_stats),
            tcp: Arc::new(tcp::TcpStats::default()),
        });
        let tcp_max = server_cfg.tcp_max_connections;
        let tcp_slots = Arc::new(Semaphore::new(tcp_max));
        let mut tasks = Vec::new();
        for listener in std::mem::take(&mut bound.tcp) {
            tasks.push(tokio::spawn(tcp::serve(
                listener,
                source.clone(),
                dns.tcp.clone(),
                tcp_slots.clone(),
                tcp_max,
                shutdown_rx.clone(),
            )));
        }

        let health = HealthService::new(
            source.load().config.health.clone(),
            tokio::runtime::Handle::current(),
            shutdown_rx.clone(),
        );
        let tier = Tier::new(health.clone(), shutdown_rx.clone());
        let control = Control::new(
            source.clone(),
            health.clone(),
            tier.clone(),
            run.config_path.clone(),
            run.overrides.clone(),
        );
        health.start(!probe_only);
        tasks.extend(control.spawn_jobs(shutdown_rx.clone()));
        if !probe_only {
            let plan = source.load().tier.clone();
            if let Err(errors) = tier.apply(&plan, &node) {
                for t in &tasks {
                    t.abort();
                }
                return fail(bound, StartError::Tier(errors));
            }
            tasks.push(tier.spawn_jobs());
        } else {
            // A prober serves no tier, but checks its backends (every
            // group's members, as DNS nodes register them) so that nodes
            // without local checks have votes on them.
            let members = source.load().tier.members.clone();
            health.set_members(crate::tier::SOURCE, members);
        }

        let udp_threads = Arc::new(std::sync::Mutex::new(std::mem::take(
            &mut bound.udp_threads,
        )));
        tasks.push(tokio::spawn(watch_workers(
            udp_threads.clone(),
            stop.clone(),
            shutdown_rx.clone(),
        )));

        let mut admin_addr = None;
        if let (true, Some(addr)) = (server_cfg.admin_enabled, server_cfg.admin) {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(source) => {
                    for t in &tasks {
                        t.abort();
                    }
                    return fail(
                        bound,
                        StartError::Bind {
                            addr,
                            proto: "admin http",
                            source,
                        },
                    );
                }
            };
            admin_addr = listener.local_addr().ok();
            let handles = Arc::new(crate::admin::Handles::new(control.clone(), dns.clone()));
            tasks.push(tokio::spawn(crate::admin::serve(
                listener,
                handles,
                shutdown_rx.clone(),
            )));
        }
        Ok(Server {
            control,
            dns_addrs: dns.addrs.clone(),
            dns,
            tier,
            admin_addr,
            stop,
            shutdown_tx,
            udp_threads,
            udp_sockets: bound.udp_sockets,
            tcp_slots,
            tcp_max,
            tasks,
        })
    }

    /// Stops accepting, lets in-flight TCP queries and proxied tier
    /// connections finish (up to the configured shutdown timeout), and
    /// stops the UDP workers.
    pub async fn shutdown(self) {
        let deadline = self.control.source.load().config.server.shutdown_timeout;
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.shutdown_tx.send(true);
        let all = u32::try_from(self.tcp_max).unwrap_or(u32::MAX);
        let tier = self.tier.clone();
        let drained = async move {
            let _ = self.tcp_slots.acquire_many(all).await;
            while tier.active() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        match tokio::time::timeout(deadline, drained).await {
            Ok(_) => {}
            Err(_) => tracing::warn!(
                ?deadline,
                "shutdown deadline reached with TCP connections still open"
            ),
        }
        for t in self.tasks {
            t.abort();
        }
        for s in &self.udp_sockets {
            udp::wake(s);
        }
        let threads =
            std::mem::take(&mut *self.udp_threads.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Binds UDP (one socket per worker) and TCP on every configured DNS
/// address, and starts the UDP workers.
fn bind_dns(
    server_cfg: &crate::config::ServerConfig,
    workers: usize,
    source: &Arc<Source>,
    stop: &Arc<AtomicBool>,
    out: &mut Bound,
) -> Result<(), StartError> {
    let placement = server_cfg
        .udp_cpu_affinity
        .then(|| crate::dns::affinity::for_process(workers))
        .flatten();
    for addr in &server_cfg.dns {
        if addr.ip().is_unspecified() {
            tracing::warn!(%addr, "UDP replies on a wildcard address leave from the address the kernel routes by; on hosts with several addresses, list each address instead");
        }
        // UDP first: with port 0 it picks the port TCP then shares; if that
        // port is taken for TCP, pick another.
        let mut attempt = 0;
        let (bound, sockets, listener) = loop {
            attempt += 1;
            let (bound, sockets) = match udp::bind_group(*addr, workers) {
                Ok(x) => x,
                Err(e) if addr.is_ipv6() && addr.ip().is_loopback() && bindable_v6_absent(&e) => {
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
                    if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse && attempt < 20 =>
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
            source.clone(),
            stop.clone(),
            out.udp_stats.len(),
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
        out.udp_threads.extend(l.threads);
        out.udp_sockets.extend(l.sockets);
        out.udp_stats.extend(l.stats);
        out.tcp.push(listener);
        out.addrs.push(bound);
    }
    Ok(())
}

/// A UDP worker thread that ends while the server is not stopping leaves a
/// socket in the reuseport group that nobody reads: part of the traffic
/// would be dropped silently. Workers restart their own loop on a panic,
/// so this only happens if something worse went wrong; the process then
/// stops with a clear line, for its supervisor (systemd, Kubernetes) to
/// restart it whole.
async fn watch_workers(
    threads: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    stop: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let dead = threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|t| t.is_finished())
            .map(|t| t.thread().name().unwrap_or("udp worker").to_string());
        if let Some(name) = dead {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            tracing::error!(
                worker = %name,
                "a UDP worker thread ended while serving; its socket would drop its share of queries, so the process exits for its supervisor to restart it"
            );
            std::process::exit(70);
        }
    }
}

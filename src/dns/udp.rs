//! UDP listeners: one socket per worker thread, all bound to the same
//! address with `SO_REUSEPORT` so the kernel spreads queries across them.
//! Each worker is a plain OS thread with its own buffers: no task, channel
//! or lock per packet; it loads the current snapshot once per query.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::dns::answer::{handle, Outcome, Transport};
use crate::policy::Scratch;
use crate::server::Shared;

/// How often an idle worker wakes to check for shutdown.
const POLL: Duration = Duration::from_millis(200);

/// Counters of one worker (written by that worker only).
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub queries: AtomicU64,
    pub replies: AtomicU64,
    pub dropped: AtomicU64,
}

/// Binds one UDP socket with `SO_REUSEPORT` (and IPv6-only for v6).
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(POLL))?;
    Ok(s.into())
}

/// The worker threads serving one address.
pub struct Listener {
    pub addr: SocketAddr,
    pub threads: Vec<JoinHandle<()>>,
    pub stats: Vec<Arc<WorkerStats>>,
}

/// Binds `workers` sockets to `addr`. Port 0 is resolved by the first
/// socket and reused by the others.
pub fn bind_group(addr: SocketAddr, workers: usize) -> io::Result<(SocketAddr, Vec<UdpSocket>)> {
    let first = bind(addr)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(bind(bound)?);
    }
    Ok((bound, sockets))
}

/// Starts one worker thread per socket.
pub fn spawn(
    bound: SocketAddr,
    sockets: Vec<UdpSocket>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    first_slot: usize,
) -> io::Result<Listener> {
    let mut handles = Vec::new();
    let mut stats = Vec::new();
    for (i, sock) in sockets.into_iter().enumerate() {
        let st = Arc::new(WorkerStats::default());
        stats.push(st.clone());
        let shared = shared.clone();
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .name(format!("udp-{bound}-{i}"))
            .spawn(move || worker(sock, shared, stop, st, first_slot + i))?;
        handles.push(h);
    }
    Ok(Listener {
        addr: bound,
        threads: handles,
        stats,
    })
}

fn worker(
    sock: UdpSocket,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    st: Arc<WorkerStats>,
    slot: usize,
) {
    let mut rbuf = vec![0u8; 65535];
    let mut out: Vec<u8> = Vec::with_capacity(65535);
    let mut scratch = Scratch::for_slot(slot);
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut rbuf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        st.queries.fetch_add(1, Ordering::Relaxed);
        if peer.port() == 0 {
            st.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let snap = shared.snapshot.load();
        let client = peer.ip().to_canonical();
        match handle(
            &snap,
            &rbuf[..n],
            client,
            Transport::Udp,
            &mut out,
            &mut scratch,
        ) {
            Outcome::Reply => {
                if let Err(e) = sock.send_to(&out, peer) {
                    tracing::debug!(error = %e, %peer, "udp send failed");
                } else {
                    st.replies.fetch_add(1, Ordering::Relaxed);
                }
            }
            Outcome::Drop | Outcome::Transfer(_) => {
                st.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

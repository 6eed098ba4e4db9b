//! TCP listeners (RFC 7766): 2-byte length framing, pipelined queries
//! answered in order, an idle timeout, an I/O timeout, caps on concurrent
//! connections (all together and per client prefix), and graceful shutdown
//! (a query being answered is finished; idle connections are closed).
//!
//! A connection reads its next query only once the previous reply is
//! written, so a client that sends and never reads holds at most one query
//! and one reply (each at most 64 KiB) in the server: when the kernel's
//! buffers are full the write waits, and after `tcp_io_timeout` the
//! connection is closed (`write_timeouts`).
//!
//! A connection holds little while idle: its query and reply buffers are
//! sized by what the messages need (most queries are under 512 bytes) and
//! released once a large one has been answered, and the policy scratch
//! space is one per runtime thread, not one per connection.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::dns::answer::{handle, Outcome, Transfer, Transport};
use crate::policy::Scratch;
use crate::snapshot::Source;

/// Connection counters for all TCP listeners.
#[derive(Debug, Default)]
pub struct TcpStats {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    /// Connections closed at once: their client prefix had
    /// `tcp_max_connections_per_client` open already.
    pub refused_per_client: AtomicU64,
    pub queries: AtomicU64,
    /// Connections closed because a query did not arrive in full, or a
    /// reply could not be written, within `tcp_io_timeout`.
    pub io_timeouts: AtomicU64,
    /// Unix seconds of the last "limit reached" log line (rate limit).
    last_limit_log: AtomicU64,
    /// Open connections per client prefix (an entry lives while one of its
    /// connections does, so the map never holds more entries than there
    /// are connections). Touched on accept and close only.
    per_client: Mutex<FxHashMap<(u8, u128), usize>>,
}

/// A connection's place in its prefix's count, given back when dropped.
struct ClientSlot {
    stats: Arc<TcpStats>,
    key: (u8, u128),
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = self
            .stats
            .per_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

use crate::guard::client_prefix as prefix_key;

impl TcpStats {
    /// Takes a slot for a connection from `ip`, unless its prefix has
    /// `max` connections open.
    fn client_slot(self: &Arc<Self>, ip: IpAddr, v4: u8, v6: u8, max: usize) -> Option<ClientSlot> {
        let key = prefix_key(ip, v4, v6);
        let mut m = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            stats: self.clone(),
            key,
        })
    }

    /// Client prefixes with a connection open.
    pub fn clients(&self) -> usize {
        self.per_client.lock().map_or(0, |m| m.len())
    }
}

/// Capacity a connection's query or reply buffer may keep between queries;
/// a buffer grown past it for one message is freed once that is answered.
const KEEP: usize = 1024;

thread_local! {
    /// The policy scratch space of TCP answers on this runtime thread:
    /// `handle` runs to completion without awaiting, so one serves every
    /// connection the thread polls (~5.5 KB saved per connection).
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Frees `buf` if it grew past [`KEEP`].
fn trim(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP {
        *buf = Vec::new();
    }
}

/// Binds a TCP listener (SO_REUSEADDR so restarts do not wait on TIME_WAIT).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(crate::sock::listen_tcp(addr, 1024)?)
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    source: Arc<Source>,
    stats: Arc<TcpStats>,
    slots: Arc<Semaphore>,
    max: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let now = unix_now();
            let last = stats.last_limit_log.load(Ordering::Relaxed);
            if now >= last + 10
                && stats
                    .last_limit_log
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    limit = max,
                    %peer,
                    refused_total = stats.refused.load(Ordering::Relaxed),
                    "tcp connection limit reached; closing new connections (server.tcp_max_connections)"
                );
            }
            drop(stream);
            continue;
        };
        let (v4, v6, per_client) = {
            let snap = source.load();
            let s = &snap.config.server;
            (
                s.tcp_client_ipv4_prefix,
                s.tcp_client_ipv6_prefix,
                s.tcp_max_connections_per_client,
            )
        };
        let admitted = stats.client_slot(peer.ip(), v4, v6, per_client);
        let Some(slot) = admitted else {
            stats.refused_per_client.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let source = source.clone();
        let stats = stats.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            connection(stream, peer, &source, &stats, shutdown).await;
            drop(slot);
            drop(permit);
        });
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    source: &Source,
    stats: &TcpStats,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (idle, io) = {
        let snap = source.load();
        (
            snap.config.server.tcp_idle_timeout,
            snap.config.server.tcp_io_timeout,
        )
    };
    let client = peer.ip().to_canonical();
    // Nothing is allocated until a query arrives, then only what it needs.
    let mut msg: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    if *shutdown.borrow() {
        return;
    }
    loop {
        let len = tokio::select! {
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Ok(Ok(l)) => l as usize,
                _ => return,
            },
            _ = shutdown.changed() => return,
        };
        if len == 0 {
            return;
        }
        msg.clear();
        msg.resize(len, 0);
        // Once a query has started arriving, it is read and answered even
        // if shutdown begins meanwhile (bounded by the I/O timeout).
        match tokio::time::timeout(io, stream.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                stats.io_timeouts.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        stats.queries.fetch_add(1, Ordering::Relaxed);
        let snap = source.load_full();
        let outcome = SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut scratch) => handle(&snap, &msg, client, Transport::Tcp, &mut out, &mut scratch),
            Err(_) => handle(
                &snap,
                &msg,
                client,
                Transport::Tcp,
                &mut out,
                &mut Scratch::default(),
            ),
        });
        match outcome {
            Outcome::Drop => {}
            Outcome::Reply => {
                if let Some(tap) = &snap.dnstap {
                    let server = || stream.local_addr().unwrap_or(peer);
                    tap.log(true, peer, server, &msg, &out);
                }
                // The length prefix goes in front of the reply: one buffer,
                // one write.
                let prefix = (out.len() as u16).to_be_bytes();
                out.splice(0..0, prefix);
                if write(&mut stream, &out, io, stats).await.is_err() {
                    return;
                }
            }
            Outcome::Transfer(zone) => {
                // One message at a time: each is written before the next is
                // built, so memory stays at one message whatever the zone's
                // size, and a client that stops reading is cut by the I/O
                // timeout.
                let started = Instant::now();
                let mut xfr = Transfer::new(zone);
                while xfr.next_message(&snap, &msg, &mut out) {
                    let prefix = (out.len() as u16).to_be_bytes();
                    out.splice(0..0, prefix);
                    if write(&mut stream, &out, io, stats).await.is_err() {
                        return;
                    }
                }
                let zname = snap
                    .zones
                    .zones
                    .get(zone)
                    .map(|z| z.origin.to_string())
                    .unwrap_or_default();
                tracing::info!(zone = %zname, %peer, messages = xfr.messages(), elapsed_ms = started.elapsed().as_millis() as u64, "zone transfer sent");
            }
        }
        trim(&mut msg);
        trim(&mut out);
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Writes `data` within `limit`; a client that does not take it in time
/// is counted and its connection closed by the caller.
async fn write(
    stream: &mut TcpStream,
    data: &[u8],
    limit: Duration,
    stats: &TcpStats,
) -> Result<(), ()> {
    match tokio::time::timeout(limit, stream.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            stats.io_timeouts.fetch_add(1, Ordering::Relaxed);
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_gets_its_cap_and_gives_slots_back() {
        let stats = Arc::new(TcpStats::default());
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let a = stats
            .client_slot(ip("192.0.2.1"), 24, 64, 2)
            .expect("first");
        let b = stats
            .client_slot(ip("192.0.2.200"), 24, 64, 2)
            .expect("same /24");
        assert!(
            stats.client_slot(ip("192.0.2.9"), 24, 64, 2).is_none(),
            "cap"
        );
        let other = stats
            .client_slot(ip("192.0.3.1"), 24, 64, 2)
            .expect("another /24");
        // ::ffff:192.0.2.1 is the same client as 192.0.2.1.
        assert!(stats
            .client_slot(ip("::ffff:192.0.2.1"), 24, 64, 2)
            .is_none());
        assert!(stats.client_slot(ip("2001:db8::1"), 24, 64, 2).is_some());
        drop(a);
        assert!(stats.client_slot(ip("192.0.2.9"), 24, 64, 2).is_some());
        drop((b, other));
        assert_eq!(stats.clients(), 0, "entries go with their last connection");
    }

    #[test]
    fn the_families_never_share_a_key() {
        let v4 = prefix_key("0.0.0.0".parse().expect("ip"), 32, 128);
        let v6 = prefix_key("::".parse().expect("ip"), 32, 128);
        assert_ne!(v4, v6);
    }
}

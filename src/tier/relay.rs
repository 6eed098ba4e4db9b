//! Moves bytes both ways between a client and a backend.
//!
//! Each direction waits for readiness, then borrows a buffer only while it
//! has bytes to move, so an idle proxied connection holds no buffer at all
//! (10 000 idle connections cost their sockets and tasks, not 10 000 × 2
//! buffers). At most one buffer per direction is in flight: a slow reader
//! on one side stops the reads on the other (backpressure), nothing queues.
//! An end of stream is passed on as a half-close (`shutdown(Write)`), and
//! the other direction runs on until it ends too.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Size of the buffers a direction borrows.
const BUF: usize = 16 * 1024;
/// Buffers kept per thread for reuse.
const POOL: usize = 64;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_buf() -> Box<[u8]> {
    BUFFERS
        .with(|b| b.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF].into_boxed_slice())
}

fn give_buf(buf: Box<[u8]>) {
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < POOL {
            b.push(buf);
        }
    });
}

/// A buffer borrowed from the pool, returned when dropped.
struct Lease(Option<Box<[u8]>>);

impl Lease {
    fn new() -> Self {
        Lease(Some(take_buf()))
    }
    fn get(&mut self) -> &mut [u8] {
        self.0.get_or_insert_with(take_buf)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            give_buf(b);
        }
    }
}

/// Why a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their halves.
    Done,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// Closed from outside (drain deadline, shutdown).
    Killed,
    /// A read or write failed (reset, ...).
    Error,
    /// An untrusted client started with a PROXY header.
    ProxyHeader,
}

/// Bytes moved each way, and why it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    pub up: u64,
    pub down: u64,
    pub end: End,
}

/// The PROXY v2 signature.
pub const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Whether a client's first bytes are (or begin) a PROXY header.
pub fn looks_like_proxy(first: &[u8]) -> bool {
    if first.len() >= 6 && first.starts_with(b"PROXY ") {
        return true;
    }
    let n = first.len().min(V2_SIG.len());
    n >= 4 && first[..n] == V2_SIG[..n]
}

enum Stop {
    Eof,
    Proxy,
}

/// One read from `from`. A short read (fewer bytes than `buf` holds)
/// emptied the socket's receive queue, so it also clears `from`'s read
/// readiness, as a read that would block does: the next `readable()` then
/// waits for new bytes instead of returning at once for a `recv` that
/// fails with `EAGAIN` (one system call per direction and connection).
/// Tokio clears only the readiness seen before the read (an event that
/// arrived since survives) and never an end of stream.
fn read_drained(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    let cap = buf.len();
    let r = from.try_io(Interest::READABLE, || match from.try_read(buf) {
        Ok(n) if n > 0 && n < cap => {
            got = n;
            Err(io::ErrorKind::WouldBlock.into())
        }
        other => other,
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        r => r,
    }
}

/// Copies `from` → `to` until end of stream (then half-closes `to`).
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    moved: &AtomicU64,
    last: &AtomicU64,
    clock: &(dyn Fn() -> u64 + Sync),
    check_first: bool,
) -> io::Result<Stop> {
    let mut first = check_first;
    loop {
        from.readable().await?;
        let mut lease = Lease::new();
        loop {
            let buf = lease.get();
            let n = match read_drained(from, buf) {
                Ok(0) => {
                    // Pass the end on; the peer may already be gone.
                    let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                    return Ok(Stop::Eof);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            if first {
                first = false;
                if looks_like_proxy(&buf[..n]) {
                    return Ok(Stop::Proxy);
                }
            }
            let mut off = 0;
            while off < n {
                to.writable().await?;
                match to.try_write(&lease.get()[off..n]) {
                    Ok(w) => off += w,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            moved.fetch_add(n as u64, Ordering::Relaxed);
            last.store(clock(), Ordering::Relaxed);
            if n < BUF {
                // Drained (and readiness cleared): wait for more.
                break;
            }
        }
    }
}

/// Relays until both directions end, one fails, nothing moves for `idle`,
/// or `kill` changes. `clock` is a monotonic millisecond clock.
/// `check_first`: refuse a client whose first bytes are a PROXY header.
pub async fn relay(
    client: &TcpStream,
    backend: &TcpStream,
    idle: Duration,
    kill: &mut watch::Receiver<u64>,
    clock: &(dyn Fn() -> u64 + Sync),
    check_first: bool,
) -> Relayed {
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let last = AtomicU64::new(clock());
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let a = pump(client, backend, &up, &last, clock, check_first);
    let b = pump(backend, client, &down, &last, clock, false);
    tokio::pin!(a, b);
    let (mut a_done, mut b_done, mut kill_live) = (false, false, true);
    let end = loop {
        let wait = (last.load(Ordering::Relaxed) + idle_ms).saturating_sub(clock());
        tokio::select! {
            r = &mut a, if !a_done => match r {
                Ok(Stop::Eof) => a_done = true,
                Ok(Stop::Proxy) => break End::ProxyHeader,
                Err(_) => break End::Error,
            },
            r = &mut b, if !b_done => match r {
                Ok(_) => b_done = true,
                Err(_) => break End::Error,
            },
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {
                if clock().saturating_sub(last.load(Ordering::Relaxed)) >= idle_ms {
                    break End::Idle;
                }
            }
            r = kill.changed(), if kill_live => {
                if r.is_ok() {
                    break End::Killed;
                }
                // The sender is gone: nobody can kill any more; go on.
                kill_live = false;
            }
        }
        if a_done && b_done {
            break End::Done;
        }
    };
    Relayed {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers_are_recognised_from_their_first_bytes() {
        assert!(looks_like_proxy(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"));
        assert!(looks_like_proxy(V2_SIG));
        assert!(looks_like_proxy(&V2_SIG[..5]));
        assert!(!looks_like_proxy(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_proxy(b"\r\n"));
        assert!(!looks_like_proxy(b"PROX"));
    }
}

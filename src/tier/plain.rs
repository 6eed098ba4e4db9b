//! Cleartext HTTP listener connections (`serve_plain`): h2c when a
//! connection opens with the HTTP/2 preface (hyper's HTTP/2 server), else
//! HTTP/1.1 by the listener's engine — the native request loop
//! (`native::session`), which hands what it does not take to hyper, or
//! hyper's HTTP/1 server in sessions (`http::http1_session`) — and between
//! requests the socket parked holding no buffer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;

use super::http::{http1_session, run_to_end, service, Prefixed};
use super::stats::add;
use super::{ListenerStats, Route, Tier};

/// Counts a connection as parked while it lives.
struct Parked<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> Parked<'a> {
    fn new(n: &'a std::sync::atomic::AtomicU32) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Parked(n)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one cleartext client connection until it closes: h2c when it
/// opens with the HTTP/2 preface, else HTTP/1.1 that gives its buffers back
/// while idle — after `PARK_AFTER` with nothing to read, the session (the
/// native loop's or hyper's buffers) is taken apart and the socket waits
/// for the next request holding no buffer; the next request's first byte
/// starts a fresh one.
///
/// This future is the connection task's own (not boxed) and holds only the
/// parked wait; everything a session needs is boxed per session
/// (`session`). An idle keep-alive connection then costs its task and its
/// socket's registration (`examples/http_allocs.rs --idle`).
pub async fn serve_plain(
    tier: Arc<Tier>,
    route: Arc<Route>,
    stats: Arc<ListenerStats>,
    mut io: Prefixed<tokio::net::TcpStream>,
    client: SocketAddr,
) {
    let (header_timeout, native) = match &route.plan.mode {
        super::Mode::Http(plan) => (
            plan.header_timeout,
            plan.engine == super::plan::Http1Engine::Native,
        ),
        _ => return,
    };
    let mut fresh = true;
    loop {
        // (A new connection on the native engine reads its first request
        // at once: `native::session`.)
        if io.is_empty() && !(fresh && native) {
            // Idle: no buffer held; keep-alive idle is `header_timeout`.
            let _parked = Parked::new(&stats.parked);
            if !park(&stats, &io, header_timeout).await {
                return;
            }
        }
        let once = Box::pin(session(
            &tier,
            &route,
            &stats,
            io,
            client,
            std::mem::take(&mut fresh),
        ));
        match once.await {
            Some(next) => {
                // Its buffers went back to the pool or were freed:
                // counted, so the trim job returns freed heap too.
                add(&tier.released, 1);
                io = next;
            }
            None => return,
        }
    }
}

/// An HTTPS client connection speaking HTTP/1.1 (by ALPN, or with none)
/// on the native engine: its requests by the native loop, parked between
/// them as cleartext ones are (the TLS session's state stays; the loop's
/// buffers go back). What the native loop hands on (upgrades and the
/// like) is served by hyper for the rest of the connection.
pub async fn serve_tls(
    tier: Arc<Tier>,
    route: Arc<Route>,
    stats: Arc<ListenerStats>,
    io: TlsClient,
    client: SocketAddr,
) {
    let header_timeout = match &route.plan.mode {
        super::Mode::Http(plan) => plan.header_timeout,
        _ => return,
    };
    let mut io = Prefixed::new(Vec::new(), io);
    // The first request right after the handshake: read at once.
    let mut fresh = true;
    loop {
        if io.is_empty() && !fresh {
            let _parked = Parked::new(&stats.parked);
            if !park_tls(&stats, io.get_mut(), header_timeout).await {
                return;
            }
        }
        let once = Box::pin(super::native::session(
            &tier,
            &route,
            &stats,
            io,
            client,
            std::mem::take(&mut fresh),
        ));
        match once.await {
            super::native::Next::Park(next) => {
                add(&tier.released, 1);
                io = next;
            }
            // Hyper's for the rest of the connection (HTTP/2 by prior
            // knowledge included: its preface without ALPN h2).
            super::native::Next::H2(next) if super::http2::serves(&route) => {
                let rest = Box::pin(super::http2::serve(tier, route, stats, next, client));
                rest.await;
                return;
            }
            super::native::Next::Hyper(next) | super::native::Next::H2(next) => {
                let rest = Box::pin(super::http::serve(tier, route, stats, next, client));
                rest.await;
                return;
            }
            super::native::Next::Closed => return,
        }
    }
}

/// A TLS client connection (over the socket and any PROXY-header bytes
/// read past the header).
pub type TlsClient = tokio_rustls::server::TlsStream<Prefixed<tokio::net::TcpStream>>;

/// `park` for a TLS connection: its records already read first.
async fn park_tls(stats: &ListenerStats, io: &mut TlsClient, within: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let fd = io.get_ref().0.get_ref().as_raw_fd();
    park_on(stats, fd, within, super::native::Client::ready(io)).await
}

/// Waits, holding no buffer, timer or waiter, for the socket to be
/// readable: false when the listener's parked set sent it away (past
/// `within`, or the listener closed).
async fn park(
    stats: &ListenerStats,
    io: &Prefixed<tokio::net::TcpStream>,
    within: Duration,
) -> bool {
    use std::os::fd::AsRawFd;
    let sock = io.get_ref();
    // The socket's own reader slot holds the waker.
    let readable = std::future::poll_fn(|cx| sock.poll_read_ready(cx));
    park_on(stats, sock.as_raw_fd(), within, readable).await
}

/// Parks socket `fd` in the listener's set until `ready`: whether it may
/// go on (not sent away, no error).
async fn park_on(
    stats: &ListenerStats,
    fd: std::os::fd::RawFd,
    within: Duration,
    ready: impl std::future::Future<Output = std::io::Result<()>>,
) -> bool {
    let Some(place) = stats
        .parked_set
        .park(fd, std::time::Instant::now() + within)
    else {
        return false;
    };
    let ready = ready.await;
    !place.leave() && ready.is_ok()
}

/// One session, from the first byte of a request to the next park (the
/// socket back, holding no buffer) or the connection's end (None).
async fn session(
    tier: &Arc<Tier>,
    route: &Arc<Route>,
    stats: &Arc<ListenerStats>,
    mut io: Prefixed<tokio::net::TcpStream>,
    client: SocketAddr,
    fresh: bool,
) -> Option<Prefixed<tokio::net::TcpStream>> {
    let super::Mode::Http(plan) = &route.plan.mode else {
        return None;
    };
    let (header_timeout, drain_window) = (plan.header_timeout, plan.drain_window);
    let native = plan.engine == super::plan::Http1Engine::Native;
    // h2c by its preface: sniffed here for hyper's HTTP/1 engine; the
    // native engine spots it in its own buffer (one read, no copy).
    let mut h2 = false;
    if fresh && !native {
        h2 = sniff_h2(&mut io, header_timeout).await?;
    }
    if native && !h2 {
        match super::native::session(tier, route, stats, io, client, fresh).await {
            super::native::Next::Park(next) => return Some(next),
            super::native::Next::Hyper(next) => io = next,
            super::native::Next::H2(next) => {
                io = next;
                h2 = true;
            }
            super::native::Next::Closed => return None,
        }
    }
    if h2 && super::http2::serves(route) {
        let conn = Box::pin(super::http2::serve(
            tier.clone(),
            route.clone(),
            stats.clone(),
            io,
            client,
        ));
        conn.await;
        return None;
    }
    if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(
                TokioIo::new(io),
                service(tier.clone(), route.clone(), stats.clone(), client, None),
            );
        let conn = Box::pin(conn);
        run_to_end(conn, stats, tier.shutdown.clone(), drain_window, client).await;
        return None;
    }
    http1_session(tier, route, stats, io, client, header_timeout, drain_window).await
}

/// Reads up to the length of the HTTP/2 preface (less when the bytes stop
/// matching it) and puts what it read back: whether the client speaks h2c
/// by prior knowledge, None when it went away or sent nothing in time.
async fn sniff_h2(io: &mut Prefixed<tokio::net::TcpStream>, within: Duration) -> Option<bool> {
    let mut got = [0u8; 24];
    let mut n = 0;
    let read = tokio::time::timeout(within, async {
        while n < got.len() {
            let k = io.read(&mut got[n..]).await.ok()?;
            if k == 0 {
                return None;
            }
            n += k;
            if got[..n] != H2_PREFACE[..n] {
                break;
            }
        }
        Some(())
    })
    .await;
    io.put_back(&got[..n]);
    match read {
        Ok(Some(())) => Some(n == got.len() && got == *H2_PREFACE),
        _ => None,
    }
}

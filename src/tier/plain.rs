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
/// while idle — after `PARK_AFTER` with nothing to read, hyper's
/// connection (its read and write buffers) is taken apart and the socket
/// waits for the next request holding no buffer; the next request's first
/// byte starts a fresh one. An idle keep-alive connection then costs its
/// socket and a small task, not hyper's buffers.
pub async fn serve_plain(
    tier: Arc<Tier>,
    route: Arc<Route>,
    stats: Arc<ListenerStats>,
    mut io: Prefixed<tokio::net::TcpStream>,
    client: SocketAddr,
) {
    let super::Mode::Http(plan) = &route.plan.mode else {
        return;
    };
    let (header_timeout, drain_window) = (plan.header_timeout, plan.drain_window);
    let mut closing = stats.closing.subscribe();
    let mut stop = tier.shutdown.clone();
    let native = plan.engine == super::plan::Http1Engine::Native;
    let mut first = true;
    loop {
        if io.is_empty() {
            // Idle: no buffer held; keep-alive idle is `header_timeout`.
            let _parked = Parked::new(&stats.parked);
            let ready = tokio::select! {
                r = tokio::time::timeout(header_timeout, io.get_ref().readable()) => matches!(r, Ok(Ok(()))),
                _ = closing.wait_for(|c| *c) => false,
                _ = stop.wait_for(|s| *s) => false,
            };
            if !ready {
                return;
            }
        }
        let fresh = std::mem::take(&mut first);
        // h2c by its preface: sniffed here for hyper's HTTP/1 engine; the
        // native engine spots it in its own buffer (one read, no copy).
        let mut h2 = false;
        if fresh && !native {
            let sniff = Box::pin(sniff_h2(&mut io, header_timeout));
            match sniff.await {
                Some(h) => h2 = h,
                None => return,
            }
        }
        if native && !h2 {
            let session = Box::pin(super::native::session(
                &tier, &route, &stats, io, client, fresh,
            ));
            match session.await {
                super::native::Next::Park(next) => {
                    // Its buffers went back to the pool or were freed:
                    // counted, so the trim job returns freed heap too.
                    add(&tier.released, 1);
                    io = next;
                    continue;
                }
                super::native::Next::Hyper(next) => io = next,
                super::native::Next::H2(next) => {
                    io = next;
                    h2 = true;
                }
                super::native::Next::Closed => return,
            }
        }
        if h2 {
            let conn = Box::pin(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .serve_connection(
                        TokioIo::new(io),
                        service(tier.clone(), route.clone(), stats.clone(), client, None),
                    ),
            );
            let run = Box::pin(run_to_end(conn, &stats, stop, drain_window, client));
            run.await;
            return;
        }
        let session = Box::pin(http1_session(
            &tier,
            &route,
            &stats,
            io,
            client,
            header_timeout,
            drain_window,
        ));
        match session.await {
            Some(next) => {
                add(&tier.released, 1);
                io = next;
            }
            None => return,
        }
    }
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

//! The native HTTP/1.1 engine: the request loop of a cleartext client
//! connection, for the common case — HTTP/1.1 from the client, HTTP/1.1 to
//! a cleartext backend — written by hand because hyper's per-request
//! machinery (dispatcher, body channels, header maps built and cloned, a
//! read buffer per request, boxed timers) was most of the tier's cost per
//! request (see ARCHITECTURE.md).
//!
//! Per request: the head is parsed in the connection's buffer (`h1`), the
//! backend's head is written straight from the parsed fields, the
//! backend's response head is rewritten the same way, and bodies pass
//! through as they are (Content-Length, chunked — validated on the way —
//! or until close), through bounded buffers taken from a per-thread pool
//! and given back while the connection waits for its next request. The
//! backend connections are kept per backend (`upstream::RawIdle`).
//! Routing, forwarding fields, retries and their budget, passive health,
//! persistence, rate limits, timeouts (408, 502, 503, 504), the access
//! log, counters and draining behave as on the hyper engine
//! (`http::handle`), which serves anything this loop does not take:
//! upgrades, `Expect`, HTTP/1.0, targets not in origin form, transfer
//! codings other than chunked, Content-Length beside Transfer-Encoding.
//! Those requests go to hyper with the bytes already read (`Next::Hyper`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::h1::{self, Framing, Verdict};
use super::http::{choose, Prefixed, Release, Sticky, Unchosen};
use super::limit::{retry_after, Limited};
use super::plan::{Action, HttpPlan};
use super::stats::add;
use super::{Backend, Group, ListenerStats, Route, Tier};

/// Size of a read buffer (a whole request or response head must fit).
const CAP: usize = h1::MAX_HEAD;
/// Free buffers kept per thread.
const POOLED: usize = 64;
/// How the HTTP/2 connection preface begins (RFC 9113 §3.4); a request
/// line cannot.
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Tries per request at most (the first and its retries).
const MAX_ATTEMPTS: usize = 8;

thread_local! {
    static BUFS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static OUTS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer from the thread's pool (back to it when dropped).
struct Buf {
    b: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        let b = BUFS
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| vec![0; CAP]);
        Buf {
            b,
            start: 0,
            end: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.b[self.start..self.end]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Appends `bytes`; false when they do not fit.
    fn append(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.b.len() - self.len() {
            return false;
        }
        self.compact();
        self.b[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        true
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.b.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Reads what `s` has (0: it closed). A full buffer is an error.
    async fn fill<R: AsyncRead + Unpin>(&mut self, s: &mut R) -> std::io::Result<usize> {
        if self.end == self.b.len() {
            self.compact();
            if self.end == self.b.len() {
                return Err(std::io::Error::other("buffer full"));
            }
        }
        let n = s.read(&mut self.b[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let b = std::mem::take(&mut self.b);
        BUFS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOLED {
                p.push(b);
            }
        });
    }
}

/// An output buffer from the thread's pool, empty when taken.
struct Out(Vec<u8>);

impl Out {
    fn new() -> Out {
        Out(OUTS
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| Vec::with_capacity(4096)))
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        let mut b = std::mem::take(&mut self.0);
        if b.capacity() > 4 * CAP {
            return;
        }
        b.clear();
        OUTS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOLED {
                p.push(b);
            }
        });
    }
}

/// Where a native session stopped.
pub enum Next<S> {
    /// Idle for `PARK_AFTER` with nothing read of a next request: the
    /// socket, holding no buffer.
    Park(Prefixed<S>),
    /// A request for hyper, with the bytes read of it in front.
    Hyper(Prefixed<S>),
    /// The HTTP/2 preface (h2c by prior knowledge), with what was read.
    H2(Prefixed<S>),
    /// The connection is done.
    Closed,
}

/// A client connection the native loop serves: cleartext TCP, or TLS over
/// it (HTTP/1.1 by ALPN, or no ALPN).
pub trait Client: AsyncRead + AsyncWrite + Unpin + Send {
    /// Waits until a read would find something (or the end, or an error).
    fn ready(&mut self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;

    /// The last write before the connection closes comes next: it is held
    /// (TCP_CORK) so that the FIN goes out in the same segment as the
    /// response's last bytes (one segment fewer per closed connection).
    fn last_write(&self);

    /// One stream of a multiplexed connection (HTTP/2): the connection
    /// drains itself (GOAWAY), so a request here is never told to close
    /// it.
    fn multiplexed(&self) -> bool {
        false
    }

    /// The response was broken off after its head went out (the backend
    /// failed, stalled or was killed mid-body): the client must not take
    /// what it got for the whole response. An HTTP/2 stream is reset; a
    /// connection of its own closes, which a body with a length or chunks
    /// already tells apart from its end.
    fn abort(&mut self) {}
}

impl Client for TcpStream {
    async fn ready(&mut self) -> std::io::Result<()> {
        self.readable().await
    }

    fn last_write(&self) {
        let _ = socket2::SockRef::from(self).set_cork(true);
    }
}

impl Client for tokio_rustls::server::TlsStream<Prefixed<TcpStream>> {
    async fn ready(&mut self) -> std::io::Result<()> {
        let (io, tls) = self.get_mut();
        if !io.is_empty() {
            return Ok(());
        }
        // Records already read may hold a request (or an alert, or the
        // end): a read finds them without the socket being readable.
        match tls.process_new_packets() {
            Ok(s) if s.plaintext_bytes_to_read() == 0 && !s.peer_has_closed() => {}
            _ => return Ok(()),
        }
        io.get_ref().readable().await
    }

    fn last_write(&self) {
        // The close_notify alert and the FIN then follow the response in
        // one segment.
        let _ = socket2::SockRef::from(self.get_ref().0.get_ref()).set_cork(true);
    }
}

/// Polls `f` once, without a waker to call: its output if it had one at
/// once.
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Writes all of `b` to the client (TLS: out of the session's buffer too).
async fn send<S: Client>(sock: &mut S, b: &[u8]) -> std::io::Result<()> {
    sock.write_all(b).await?;
    sock.flush().await
}

/// The end of the blank line that ends a head in `b`, if there is one
/// (CRLF or bare LF line ends, as httparse reads them).
fn head_complete(b: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = b[i..].iter().position(|&c| c == b'\n') {
        let at = i + p;
        match b.get(at + 1) {
            Some(b'\n') => return true,
            Some(b'\r') if b.get(at + 2) == Some(&b'\n') => return true,
            _ => {}
        }
        i = at + 1;
    }
    false
}

/// What one connection's requests share.
struct Cx<'a> {
    tier: &'a Tier,
    route: &'a Route,
    stats: &'a ListenerStats,
    plan: &'a HttpPlan,
    client: SocketAddr,
    /// The client's protocol, for the access log.
    version: &'static str,
    /// `client`'s address as text, formatted once per connection.
    client_text: ([u8; 48], usize),
}

/// A request's answer.
enum Answer {
    /// The tier's own short text (`small` on the hyper engine).
    Small(u16, Cow<'static, str>),
    /// A backend's response, its head read.
    Up(UpResp),
}

struct UpResp {
    conn: TcpStream,
    buf: Buf,
    head: h1::ResponseHead,
    /// The head the client gets, written when the backend's was parsed.
    head_out: Out,
    /// That head says `Connection: close`.
    close: bool,
    guard: Release,
    /// The backend's kill generation when the connection was taken.
    gen: u64,
    /// The connection is not reused (a drained backend).
    draining: bool,
    /// The latest clock read: when the head arrived, then when the body
    /// last had to be waited for.
    at: Instant,
}

enum Try {
    Done(Answer),
    Again(Answer),
    Stale(Answer),
}

/// What became of a request (its route's counters and the access log).
///
/// The clock is read once when the request's head is in (`started`) and
/// once when the response's head is (`answered`); the balancers, the
/// backend's latency, the pool's idle stamps and the next request's park
/// deadline reuse those reads (a read costs about as much as parsing a
/// request's head).
struct Outcome {
    started: Instant,
    answered: Option<Instant>,
    /// The last read, once the response went out whole.
    idle_from: Option<Instant>,
    route: Option<usize>,
    retries: u32,
    backend: Option<SocketAddr>,
    /// Method, target and host for the access log (when there is one).
    seen: Option<(String, String, Option<String>)>,
}

/// A request ready to go to a group.
struct Req {
    group: Arc<Group>,
    sticky: Sticky,
    replay: bool,
    framing: Framing,
    is_head: bool,
    /// The client connection closes after this exchange.
    close: bool,
    /// When its head was read (the body's time counts from there).
    started: Instant,
    /// The request body still to read from the client (bytes; chunked
    /// bodies: until `chunked` is done).
    body_left: u64,
    chunked: Option<h1::Chunked>,
}

/// Serves requests on a cleartext HTTP/1.1 client connection until it is
/// idle (`Next::Park`), closes, or sends what hyper must serve.
pub async fn session<S: Client>(
    tier: &Tier,
    route: &Route,
    stats: &ListenerStats,
    io: Prefixed<S>,
    client: SocketAddr,
    fresh: bool,
) -> Next<S> {
    let super::Mode::Http(plan) = &route.plan.mode else {
        return Next::Closed;
    };
    let cx = Cx {
        tier,
        route,
        stats,
        plan,
        client,
        version: if io.get_ref().multiplexed() {
            "HTTP/2.0"
        } else {
            "HTTP/1.1"
        },
        client_text: {
            let mut b = [0u8; 48];
            let n = h1::ip_text(client.ip(), &mut b);
            (b, n)
        },
    };
    let (prefix, mut sock) = io.into_parts();
    let mut buf = Some(Buf::new());
    if let Some(b) = buf.as_mut() {
        if !b.append(&prefix) {
            return Next::Hyper(Prefixed::new(prefix, sock));
        }
    }
    drop(prefix);
    let mut up = Out::new();
    let mut down = Out::new();
    let mut drain_at: Option<Instant> = None;
    // The first request of a connection may be the HTTP/2 preface.
    let mut preface = fresh;
    // A new connection's first request is usually there already: read
    // before waiting for readiness (a round through the poller saved).
    // Not between requests: the next one is rarely there yet, and the
    // read would be a syscall for nothing.
    let mut speculate = fresh;
    // The previous request's last clock read.
    let mut idle_from: Option<Instant> = None;
    loop {
        let mut b = match buf.take() {
            Some(b) if !b.is_empty() => b,
            held => {
                let mut got = None;
                if std::mem::take(&mut speculate) {
                    let mut b = held.unwrap_or_else(Buf::new);
                    match poll_once(b.fill(&mut sock)) {
                        Some(Ok(n)) if n > 0 => got = Some(b),
                        Some(_) => return Next::Closed,
                        None => {}
                    }
                }
                match got {
                    Some(b) => b,
                    None => {
                        // Between requests: the buffer goes back to the
                        // pool; after PARK_AFTER with nothing to read the
                        // connection parks.
                        // (Counted from the last request's clock read.)
                        let since = idle_from.take().unwrap_or_else(Instant::now);
                        let by = tokio::time::Instant::from_std(since + super::http::PARK_AFTER);
                        match tokio::time::timeout_at(by, sock.ready()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return Next::Closed,
                            Err(_) => return Next::Park(Prefixed::new(Vec::new(), sock)),
                        }
                        // Readable is usually the whole head: read at once,
                        // before a deadline is needed for it.
                        let mut b = Buf::new();
                        if let Some(Ok(0) | Err(_)) = poll_once(b.fill(&mut sock)) {
                            return Next::Closed;
                        }
                        b
                    }
                }
            }
        };
        // The head, within header_timeout once it began.
        // (The head's deadline, and when to park again if nothing of it
        // came: one clock read.)
        let mut deadline: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
        while !head_complete(b.data()) && b.len() < h1::MAX_HEAD {
            let (d, park_by) = *deadline.get_or_insert_with(|| {
                let now = tokio::time::Instant::now();
                (now + plan.header_timeout, now + super::http::PARK_AFTER)
            });
            // Nothing of a request read yet (the readiness was of TLS
            // records with no request in them, or stale): parks again
            // after PARK_AFTER rather than holding the buffers.
            let until = if b.is_empty() { d.min(park_by) } else { d };
            match tokio::time::timeout_at(until, b.fill(&mut sock)).await {
                Err(_) if b.is_empty() && until < d => {
                    return Next::Park(Prefixed::new(Vec::new(), sock));
                }
                Err(_) => {
                    if !b.is_empty() {
                        request_timeout(&cx, &mut sock).await;
                    }
                    return Next::Closed;
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Next::Closed,
                Ok(Ok(_)) => {}
            }
        }
        if std::mem::take(&mut preface) && b.data().starts_with(H2_PREFACE_START) {
            return Next::H2(Prefixed::new(b.data().to_vec(), sock));
        }
        let closing = !sock.multiplexed() && (*stats.closing.borrow() || *tier.shutdown.borrow());
        if closing && drain_at.is_none() {
            drain_at = Some(Instant::now() + plan.drain_window.mul_f64(fastrand::f64()));
        }
        let drain_close = drain_at.is_some_and(|t| Instant::now() >= t);
        up.0.clear();
        down.0.clear();
        let mut out = Outcome {
            started: Instant::now(),
            answered: None,
            idle_from: None,
            route: None,
            retries: 0,
            backend: None,
            seen: None,
        };
        let prepared = {
            let mut fields = h1::fields();
            match h1::parse_request(b.data(), &mut fields) {
                Err(Verdict::Hyper) => {
                    return Next::Hyper(Prefixed::new(b.data().to_vec(), sock));
                }
                Err(Verdict::Partial) => Err((400, "malformed request head")),
                Err(Verdict::Refuse(code, why)) => Err((code, why)),
                Ok(head) => {
                    match prepare(&cx, &head, drain_close, &mut out, &mut up.0, &mut down.0) {
                        Prepared::Hyper => {
                            return Next::Hyper(Prefixed::new(b.data().to_vec(), sock));
                        }
                        p => Ok(p),
                    }
                }
            }
        };
        add(&stats.requests, 1);
        let (mut req, len) = match prepared {
            Err((code, why)) => {
                h1::write_small(code, why, &[], true, SystemTime::now(), &mut down.0);
                sock.last_write();
                let _ = send(&mut sock, &down.0).await;
                finish(&cx, &mut out, code);
                let _ = tokio::time::timeout(Duration::from_secs(1), sock.shutdown()).await;
                return Next::Closed;
            }
            Ok(Prepared::Respond {
                status,
                len,
                close,
                unread,
            }) => {
                b.consume(len);
                finish(&cx, &mut out, status);
                if close {
                    sock.last_write();
                }
                if send(&mut sock, &down.0).await.is_err() {
                    return Next::Closed;
                }
                if close {
                    let _ = tokio::time::timeout(Duration::from_secs(1), sock.shutdown()).await;
                    if unread && !sock.multiplexed() {
                        linger(&mut sock).await;
                    }
                    return Next::Closed;
                }
                idle_from = out.answered;
                buf = Some(b);
                continue;
            }
            Ok(Prepared::Forward(req, len)) => (req, len),
            // (Returned above, with the bytes read.)
            Ok(Prepared::Hyper) => return Next::Closed,
        };
        b.consume(len);
        if drain_close {
            add(&stats.goaway, 1);
        }
        let keep = forward(
            &cx,
            &mut sock,
            &mut b,
            &mut req,
            &mut up.0,
            &mut down.0,
            &mut out,
        )
        .await;
        if !keep {
            let _ = tokio::time::timeout(Duration::from_secs(1), sock.shutdown()).await;
            let unread = match &req.chunked {
                Some(c) => !c.is_done(),
                None => req.body_left > 0,
            };
            // (An HTTP/2 stream is reset instead, RFC 9113 §8.1.)
            if unread && !sock.multiplexed() {
                linger(&mut sock).await;
            }
            return Next::Closed;
        }
        idle_from = out.idle_from.or(out.answered);
        buf = Some(b);
    }
}

/// After answering a client whose request body was left unread, reads
/// and drops what it still sends until it closes (at most 2 s between
/// reads and 5 s in all): closing with unread bytes would reset the
/// connection, and the reset can destroy the answer before the client has
/// read it (RFC 9112 §9.6; NGINX's lingering close).
async fn linger<S: Client>(sock: &mut S) {
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(2), sock.read(&mut scratch)).await
        {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// A request head that did not arrive in time: 408 (RFC 9110 §15.5.9).
async fn request_timeout<S: Client>(cx: &Cx<'_>, sock: &mut S) {
    add(&cx.stats.header_timeouts, 1);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        send(sock, super::http::REQUEST_TIMEOUT).await?;
        sock.shutdown().await
    })
    .await;
    if let Some(log) = &cx.route.access {
        log.log(super::access::Entry {
            time: std::time::SystemTime::now(),
            listener: cx.route.plan.name.clone(),
            client: cx.client,
            method: "-".into(),
            host: None,
            target: "-".into(),
            version: cx.version.into(),
            status: 408,
            route: None,
            backend: None,
            retries: 0,
            ms: cx.plan.header_timeout.as_secs_f64() * 1000.0,
        });
    }
}

enum Prepared {
    /// Answered here (`down` holds it, keep-alive); the head's length.
    Respond {
        status: u16,
        len: usize,
        close: bool,
        /// The request has a body, left unread.
        unread: bool,
    },
    Forward(Req, usize),
    /// The route's group speaks TLS or HTTP/2 to its backends (its own
    /// pool, hyper's): the request is hyper's, nothing counted yet.
    Hyper,
}

/// Everything a request needs from its head, while the head is borrowed
/// from the connection's buffer: rate limit, routing, persistence, and the
/// head the backend gets (into `up`).
fn prepare(
    cx: &Cx<'_>,
    head: &h1::RequestHead<'_, '_>,
    drain_close: bool,
    out: &mut Outcome,
    up: &mut Vec<u8>,
    down: &mut Vec<u8>,
) -> Prepared {
    let (route, plan) = (cx.route, cx.plan);
    let host = h1::routing_host(head.host);
    let rule = super::http::route_by(plan, host.as_deref(), head.path(), |n, v| head.has(n, v));
    let target = match rule {
        Some(i) => match &plan.rules[i].action {
            Action::Group(_) => route.rule_groups.get(i).and_then(Option::as_ref),
            Action::Respond { .. } => None,
        },
        None => Some(&route.group),
    };
    if target.is_some_and(|g| g.upstream.load().is_some()) {
        return Prepared::Hyper;
    }
    if route.access.is_some() {
        out.seen = Some((
            head.method.to_string(),
            head.target.to_string(),
            host.as_deref().map(str::to_string),
        ));
    }
    // A body left unread closes the connection after a local answer.
    let has_body = !matches!(head.framing, Framing::None | Framing::Length(0));
    let close = head.framing != Framing::None || head.close || drain_close;
    if let Some(Err((which, wait))) = route.limits.as_ref().map(|l| l.check(cx.client.ip())) {
        add(
            match which {
                Limited::Client => &cx.stats.rate_limited_client,
                Limited::Listener => &cx.stats.rate_limited_listener,
            },
            1,
        );
        let ra = retry_after(wait).to_string();
        h1::write_small(
            429,
            "too many requests",
            &[("retry-after", ra.as_bytes())],
            close,
            SystemTime::now(),
            down,
        );
        return Prepared::Respond {
            status: 429,
            len: head.len,
            close,
            unread: has_body,
        };
    }
    let idx = rule.unwrap_or(plan.rules.len());
    if let Some(rs) = route.route_stats.get(idx) {
        add(&rs.requests, 1);
        rs.active.fetch_add(1, Relaxed);
        out.route = Some(idx);
    }
    let group = match rule {
        Some(i) => match (
            &plan.rules[i].action,
            route.rule_groups.get(i).cloned().flatten(),
        ) {
            (
                Action::Respond {
                    status,
                    headers,
                    body,
                },
                _,
            ) => {
                let fields: Vec<(&str, &[u8])> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_bytes()))
                    .collect();
                let status = if (100..=999).contains(status) {
                    *status
                } else {
                    200
                };
                h1::write_response(
                    status,
                    &fields,
                    body.as_bytes(),
                    close,
                    SystemTime::now(),
                    down,
                );
                return Prepared::Respond {
                    status,
                    len: head.len,
                    close,
                    unread: has_body,
                };
            }
            (Action::Group(_), Some(g)) => g,
            (Action::Group(g), None) => {
                h1::write_small(
                    503,
                    &format!("group {g} is not running here"),
                    &[],
                    close,
                    SystemTime::now(),
                    down,
                );
                return Prepared::Respond {
                    status: 503,
                    len: head.len,
                    close,
                    unread: has_body,
                };
            }
        },
        None => route.group.clone(),
    };
    let sticky = Sticky::read_by(
        &group,
        |n| head.cookie(n),
        |n| head.header(n),
        head.path(),
        cx.client.ip(),
        cx.tier.ms_at(out.started),
    );
    h1::write_backend_head(
        head,
        &h1::Forward {
            plan,
            client: cx.client,
            client_text: &cx.client_text.0[..cx.client_text.1],
            host: host.as_deref(),
            strip_cookie: sticky.cookie_name.as_deref(),
        },
        up,
    );
    let req = Req {
        group,
        sticky,
        replay: head.replayable(),
        framing: head.framing,
        is_head: head.method == "HEAD",
        close: head.close || drain_close,
        started: out.started,
        body_left: match head.framing {
            Framing::Length(n) => n,
            _ => 0,
        },
        chunked: (head.framing == Framing::Chunked).then(h1::Chunked::default),
    };
    Prepared::Forward(req, head.len)
}

/// The request's counters and access log line, at its response head.
fn finish(cx: &Cx<'_>, out: &mut Outcome, status: u16) {
    let took = out
        .answered
        .get_or_insert_with(Instant::now)
        .saturating_duration_since(out.started);
    if let Some(rs) = out.route.and_then(|i| cx.route.route_stats.get(i)) {
        rs.active.fetch_sub(1, Relaxed);
        rs.done(status, took, out.retries);
    }
    if let (Some(log), Some((method, target, host))) = (&cx.route.access, out.seen.take()) {
        let rule = out.route.map(|i| {
            cx.plan
                .rules
                .get(i)
                .map_or_else(|| "default".to_string(), |r| r.label())
        });
        log.log(super::access::Entry {
            time: std::time::SystemTime::now(),
            listener: cx.route.plan.name.clone(),
            client: cx.client,
            method,
            host,
            target,
            version: cx.version.into(),
            status,
            route: rule,
            backend: out.backend,
            retries: out.retries,
            ms: took.as_secs_f64() * 1000.0,
        });
    }
    let class = usize::from(status / 100).clamp(1, 5) - 1;
    add(&cx.stats.responses[class], 1);
}

/// Sends a request to its group's backends (retrying as the hyper engine
/// does) and the answer to the client: whether the client connection
/// stays open.
async fn forward<S: Client>(
    cx: &Cx<'_>,
    sock: &mut S,
    buf: &mut Buf,
    req: &mut Req,
    up: &mut Vec<u8>,
    down: &mut Vec<u8>,
    out: &mut Outcome,
) -> bool {
    let (tier, plan) = (cx.tier, cx.plan);
    let group = req.group.clone();
    let mut tried_at = [0usize; MAX_ATTEMPTS];
    let mut n_tried = 0;
    let attempts = if req.replay {
        (1 + plan.retries).min(MAX_ATTEMPTS as u32)
    } else {
        1
    };
    let mut last: Option<Answer> = None;
    let mut last_cookie = None;
    group.lock().budget.request(tier.ms_at(req.started));
    let mut budget = attempts;
    let mut next = 0;
    while next < budget {
        let attempt = next;
        next += 1;
        // (The first try goes out on the request's own clock read.)
        let at = if attempt == 0 {
            req.started
        } else {
            Instant::now()
        };
        let now = tier.ms_at(at);
        let (backend, set_cookie) = match choose(
            &group,
            attempt,
            now,
            cx.client.ip(),
            &req.sticky,
            &mut tried_at,
            &mut n_tried,
        ) {
            Ok(chosen) => chosen,
            Err(Unchosen::Vanished) => continue,
            Err(Unchosen::BudgetSpent) => break,
            Err(Unchosen::NoBackend(e)) => {
                if attempt == 0 {
                    last = Some(Answer::Small(503, Cow::Owned(format!("no backend: {e}"))));
                }
                break;
            }
        };
        let draining = backend
            .drain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        add(&backend.stats.total, 1);
        out.retries = attempt;
        out.backend = Some(backend.addr);
        let tried = one_try(
            cx,
            sock,
            buf,
            req,
            (&group, backend),
            up,
            draining,
            set_cookie.as_ref(),
            at,
        );
        match tried.await {
            Try::Done(a) => {
                return answer(cx, sock, req, a, set_cookie, down, out).await;
            }
            Try::Again(a) => {
                last = Some(a);
                last_cookie = set_cookie;
            }
            Try::Stale(a) => {
                last = Some(a);
                last_cookie = set_cookie;
                if req.replay && budget == attempts {
                    budget += 1;
                    n_tried = n_tried.saturating_sub(1);
                }
            }
        }
    }
    let last = last.unwrap_or(Answer::Small(503, Cow::Borrowed("no backend is available")));
    answer(cx, sock, req, last, last_cookie, down, out).await
}

/// The backend did not take the request: counted, released, and told to
/// passive ejection.
fn fail(cx: &Cx<'_>, group: &Group, backend: &Backend, why: &str) {
    let now = cx.tier.now_ms();
    let mut st = group.lock();
    st.balancer.release(&backend.id);
    super::note_failure(&mut st.balancer, backend, now, why);
}

const UNREACHABLE: &str = "the backend could not be reached or broke the connection";

/// Why a body could not be passed on.
enum BodyError {
    /// The sender was too slow (client: body_timeout; backend: a pause
    /// over response_timeout).
    Timeout,
    /// The sender closed or broke the connection.
    Broken,
    /// Chunked framing the sender got wrong.
    Framing,
    /// The receiver went away.
    Write,
    /// The backend stopped taking the request body (for response_timeout).
    Stalled,
    /// The backend's drain deadline closed the connection.
    Killed,
    /// The backend answered before the request body was all sent.
    Answered,
}

/// Passes the client's request body to the backend, within `deadline`.
async fn send_body<S: Client>(
    sock: &mut S,
    buf: &mut Buf,
    req: &mut Req,
    conn: &mut TcpStream,
    deadline: tokio::time::Instant,
    backend_deadline: tokio::time::Instant,
) -> Result<(), BodyError> {
    let (mut rd, mut wr) = conn.split();
    // Whether an answer from the backend ends the sending: until it sends
    // an interim (1xx) response, which is read after the body.
    let mut watch = true;
    let mut probe = [0u8; 12];
    loop {
        let done = match &req.chunked {
            Some(c) => c.is_done(),
            None => req.body_left == 0,
        };
        if done {
            return Ok(());
        }
        if buf.is_empty() {
            tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, buf.fill(sock)) => match r {
                    Err(_) => return Err(BodyError::Timeout),
                    Ok(Ok(0)) | Ok(Err(_)) => return Err(BodyError::Broken),
                    Ok(Ok(_)) => {}
                },
                p = rd.peek(&mut probe), if watch => {
                    if final_or_gone(&p, &probe) {
                        return Err(BodyError::Answered);
                    }
                    watch = false;
                    continue;
                }
            }
        }
        let n = match req.chunked.as_mut() {
            Some(c) => c.feed(buf.data()).map_err(|_| BodyError::Framing)?,
            None => {
                let n = usize::try_from(req.body_left)
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                req.body_left -= n as u64;
                n
            }
        };
        // Written a piece at a time, so that an answer arriving meanwhile
        // stops it between pieces (a write not yet taken writes nothing).
        let mut off = 0;
        while off < n {
            tokio::select! {
                biased;
                w = tokio::time::timeout_at(backend_deadline, wr.write(&buf.data()[off..n])) => {
                    match w {
                        Err(_) => return Err(BodyError::Stalled),
                        Ok(Ok(0)) | Ok(Err(_)) => return Err(BodyError::Write),
                        Ok(Ok(k)) => off += k,
                    }
                }
                p = rd.peek(&mut probe), if watch => {
                    if final_or_gone(&p, &probe) {
                        return Err(BodyError::Answered);
                    }
                    watch = false;
                }
            }
        }
        buf.consume(n);
    }
}

/// Whether a backend that broke the connection while the request body went
/// out had sent something first (its answer, read next).
fn answered_already(conn: &TcpStream) -> bool {
    // (Asked of the socket itself: the poller may not have seen it yet.)
    let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(conn).peek(&mut b), Ok(n) if n > 0)
}

/// What the backend sent while the request body was going out ends the
/// sending: a final response (RFC 9110 §15.2: anything but a 1xx), or the
/// connection's end or an error (the response head's read reports it).
fn final_or_gone(peeked: &std::io::Result<usize>, probe: &[u8; 12]) -> bool {
    match peeked {
        Ok(n) if *n >= probe.len() => !(probe.starts_with(b"HTTP/1.") && probe[9] == b'1'),
        _ => true,
    }
}

/// Interim (1xx) responses passed on before a final one, at most.
const MAX_INTERIM: u32 = 16;

/// One try on `backend`: the request out, the response head in.
#[allow(clippy::too_many_arguments)]
async fn one_try<S: Client>(
    cx: &Cx<'_>,
    sock: &mut S,
    buf: &mut Buf,
    req: &mut Req,
    (group, backend): (&Arc<Group>, Arc<Backend>),
    up: &mut Vec<u8>,
    draining: bool,
    set_cookie: Option<&http::HeaderValue>,
    started: Instant,
) -> Try {
    let (tier, plan) = (cx.tier, cx.plan);
    let deadline = tokio::time::Instant::from_std(started + plan.response_timeout);
    let gen = *backend.kill.borrow();
    let (mut conn, reused) = match backend.raw.take(gen, started) {
        Some(c) => (c, true),
        None => {
            let connect_by = tokio::time::Instant::now() + cx.route.http.connect_timeout;
            let r =
                tokio::time::timeout_at(deadline.min(connect_by), TcpStream::connect(backend.addr))
                    .await;
            match r {
                Ok(Ok(c)) => {
                    let _ = c.set_nodelay(true);
                    add(&cx.route.http.opened, 1);
                    (c, false)
                }
                Ok(Err(e)) => {
                    add(&backend.stats.connect_errors, 1);
                    fail(
                        cx,
                        group,
                        &backend,
                        &format!("connect to {}: {e}", backend.addr),
                    );
                    add(&backend.stats.http_errors, 1);
                    return Try::Again(Answer::Small(502, Cow::Borrowed(UNREACHABLE)));
                }
                Err(_) if deadline < connect_by => {
                    // response_timeout ran out first (it covers the connect).
                    fail(cx, group, &backend, "no response headers in time");
                    add(&backend.stats.http_timeouts, 1);
                    return Try::Done(Answer::Small(
                        504,
                        Cow::Borrowed("the backend did not answer in time"),
                    ));
                }
                Err(_) => {
                    add(&backend.stats.connect_errors, 1);
                    fail(cx, group, &backend, "connect timed out");
                    add(&backend.stats.http_errors, 1);
                    return Try::Again(Answer::Small(502, Cow::Borrowed(UNREACHABLE)));
                }
            }
        }
    };
    // The head (and a body already read, when small) in one write.
    let base = up.len();
    if draining {
        up.extend_from_slice(b"connection: close\r\n");
    }
    up.extend_from_slice(b"\r\n");
    if req.chunked.is_none() && req.body_left > 0 && req.body_left <= buf.len() as u64 {
        let n = req.body_left as usize;
        if n <= 8192 {
            up.extend_from_slice(&buf.data()[..n]);
            buf.consume(n);
            req.body_left = 0;
        }
    }
    let wrote = match tokio::time::timeout_at(deadline, conn.write_all(up)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    };
    up.truncate(base);
    if wrote.is_err() {
        if reused {
            group.lock().balancer.release(&backend.id);
            return Try::Stale(Answer::Small(
                502,
                Cow::Borrowed("the backend closed the connection the request went out on"),
            ));
        }
        fail(cx, group, &backend, "request not sent");
        add(&backend.stats.http_errors, 1);
        return Try::Again(Answer::Small(502, Cow::Borrowed(UNREACHABLE)));
    }
    let mut early = false;
    if req.framing != Framing::None {
        let until = tokio::time::Instant::from_std(req.started + plan.body_timeout);
        match send_body(sock, buf, req, &mut conn, until, deadline).await {
            Ok(()) => {}
            // The backend answered before the body was all sent (an early
            // 401, 413, ...): its answer goes to the client, which closes
            // after it with the rest of its body unread, as HAProxy and
            // NGINX do; the connection is not used again.
            Err(BodyError::Answered) => {
                req.close = true;
                early = true;
            }
            Err(BodyError::Write) if answered_already(&conn) => {
                req.close = true;
                early = true;
            }
            Err(BodyError::Stalled) => {
                req.close = true;
                fail(
                    cx,
                    group,
                    &backend,
                    "the request body was not taken in time",
                );
                add(&backend.stats.http_timeouts, 1);
                return Try::Done(Answer::Small(
                    504,
                    Cow::Borrowed("the backend did not answer in time"),
                ));
            }
            Err(BodyError::Write) => {
                req.close = true;
                fail(cx, group, &backend, "the backend broke the connection");
                add(&backend.stats.http_errors, 1);
                return Try::Again(Answer::Small(502, Cow::Borrowed(UNREACHABLE)));
            }
            Err(e) => {
                // The client's fault: the backend is not blamed.
                req.close = true;
                group.lock().balancer.release(&backend.id);
                let timeout = matches!(e, BodyError::Timeout);
                add(&cx.stats.body_timeouts, u64::from(timeout));
                return Try::Done(if timeout {
                    Answer::Small(
                        408,
                        Cow::Borrowed("the request body was not received in time"),
                    )
                } else if matches!(e, BodyError::Framing) {
                    Answer::Small(400, Cow::Borrowed("malformed chunked request body"))
                } else {
                    Answer::Small(400, Cow::Borrowed("the request body was broken off"))
                });
            }
        }
    }
    // The response head, within response_timeout.
    let method = if req.is_head { "HEAD" } else { "GET" };
    let mut rbuf = Buf::new();
    let mut head_out = Out::new();
    let mut interim = 0;
    let head = loop {
        if !rbuf.is_empty() {
            let back = |h: &h1::ResponseHead| h1::Back {
                via: plan.via,
                set_cookie: set_cookie.map(http::HeaderValue::as_bytes),
                close: req.close || h.framing == Framing::Close,
                clock: Some(SystemTime::now),
            };
            match h1::parse_response_into(rbuf.data(), method, back, &mut head_out.0) {
                Ok(h) if h.status != 101 && (100..200).contains(&h.status) => {
                    // Interim responses (103 Early Hints, ...) go on to the
                    // client as they come (RFC 9110 §15.2), without what
                    // only a final head gets; a few of them at most.
                    interim += 1;
                    if interim > MAX_INTERIM {
                        fail(cx, group, &backend, "interim responses without end");
                        add(&backend.stats.http_errors, 1);
                        return Try::Again(Answer::Small(502, Cow::Borrowed(UNREACHABLE)));
                    }
                    head_out.0.clear();
                    let only = h1::Back {
                        via: plan.via,
                        set_cookie: None,
                        close: false,
                        clock: None,
                    };
                    h1::write_client_head(&rbuf.data()[..h.len], &h, &only, &mut head_out.0);
                    rbuf.consume(h.len);
                    // (Within the response's deadline: a client that does
                    // not read must not hold the backend.)
                    let sent = tokio::time::timeout_at(deadline, send(sock, &head_out.0)).await;
                    head_out.0.clear();
                    if !matches!(sent, Ok(Ok(()))) {
                        req.close = true;
                        group.lock().balancer.release(&backend.id);
                        return Try::Done(Answer::Small(
                            502,
                            Cow::Borrowed("the client did not take the interim response"),
                        ));
                    }
                    continue;
                }
                Ok(h) => break h,
                Err(h1::BadResponse::Partial) => {}
                Err(h1::BadResponse::Malformed(why)) => {
                    fail(cx, group, &backend, why);
                    add(&backend.stats.http_errors, 1);
                    return Try::Again(Answer::Small(502, Cow::Borrowed(UNREACHABLE)));
                }
            }
        }
        match tokio::time::timeout_at(deadline, rbuf.fill(&mut conn)).await {
            Err(_) => {
                fail(cx, group, &backend, "no response headers in time");
                add(&backend.stats.http_timeouts, 1);
                return Try::Done(Answer::Small(
                    504,
                    Cow::Borrowed("the backend did not answer in time"),
                ));
            }
            // (A backend that sent an interim response took the request.)
            Ok(Ok(0)) | Ok(Err(_)) if reused && rbuf.is_empty() && interim == 0 => {
                group.lock().balancer.release(&backend.id);
                tracing::debug!(backend = %backend.id, "reused connection closed");
                return Try::Stale(Answer::Small(
                    502,
                    Cow::Borrowed("the backend closed the connection the request went out on"),
                ));
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                fail(cx, group, &backend, "connection closed before a response");
                add(&backend.stats.http_errors, 1);
                return Try::Again(Answer::Small(502, Cow::Borrowed(UNREACHABLE)));
            }
            Ok(Ok(_)) => {}
        }
    };
    let answered = Instant::now();
    let now = tier.ms_at(answered);
    let status = head.status;
    let class = usize::from(status / 100).clamp(1, 5) - 1;
    add(&backend.stats.http_responses[class], 1);
    {
        let mut st = group.lock();
        st.balancer.record_latency(
            &backend.id,
            answered.saturating_duration_since(started),
            now,
        );
        if status >= 500 {
            super::note_failure(&mut st.balancer, &backend, now, &format!("status {status}"));
        } else {
            st.balancer.record_success(&backend.id, now);
        }
        st.check_outliers(now);
    }
    let guard = Release {
        group: group.clone(),
        backend,
        done: false,
        t0: tier.t0,
    };
    if status == 101 {
        return Try::Done(Answer::Small(
            502,
            Cow::Borrowed("the backend switched protocols without being asked"),
        ));
    }
    let close = req.close || head.framing == Framing::Close;
    let r = Answer::Up(UpResp {
        conn,
        buf: rbuf,
        head,
        head_out,
        close,
        guard,
        gen,
        draining: draining || early,
        at: answered,
    });
    if plan.retry_on.contains(&status) {
        Try::Again(r)
    } else {
        Try::Done(r)
    }
}

/// Writes the answer to the client (a backend's response: its head, then
/// its body as it comes): whether the client connection stays open.
async fn answer<S: Client>(
    cx: &Cx<'_>,
    sock: &mut S,
    req: &mut Req,
    a: Answer,
    set_cookie: Option<http::HeaderValue>,
    down: &mut Vec<u8>,
    out: &mut Outcome,
) -> bool {
    // A body not read to its end: the connection cannot carry another
    // request.
    let unread = match &req.chunked {
        Some(c) => !c.is_done(),
        None => req.body_left > 0,
    };
    if unread {
        req.close = true;
    }
    down.clear();
    match a {
        Answer::Small(code, msg) => {
            let extra: &[(&str, &[u8])] = match &set_cookie {
                Some(v) => &[("set-cookie", v.as_bytes())],
                None => &[],
            };
            h1::write_small(code, &msg, extra, req.close, SystemTime::now(), down);
            finish(cx, out, code);
            if req.close {
                sock.last_write();
            }
            send(sock, down).await.is_ok() && !req.close
        }
        Answer::Up(mut u) => {
            let close = u.close || req.close;
            if close && !u.close {
                // Closing after all: the head again, saying so.
                u.head_out.0.clear();
                h1::write_client_head(
                    &u.buf.data()[..u.head.len],
                    &u.head,
                    &h1::Back {
                        via: cx.plan.via,
                        set_cookie: set_cookie.as_ref().map(http::HeaderValue::as_bytes),
                        close,
                        clock: Some(SystemTime::now),
                    },
                    &mut u.head_out.0,
                );
            }
            std::mem::swap(down, &mut u.head_out.0);
            u.buf.consume(u.head.len);
            out.answered = Some(u.at);
            finish(cx, out, u.head.status);
            match relay_body(cx, sock, &mut u, down, close).await {
                Ok(()) => {
                    u.guard.release();
                    let UpResp {
                        conn,
                        buf,
                        head,
                        head_out: _,
                        close: _,
                        guard,
                        gen,
                        draining,
                        at,
                    } = u;
                    // The head's clock read, unless the body had to be
                    // waited for (then the time after it).
                    let idle_since = if out.answered == Some(at) {
                        at
                    } else {
                        Instant::now()
                    };
                    if head.keep_alive
                        && !draining
                        && buf.is_empty()
                        && *guard.backend.kill.borrow() == gen
                    {
                        guard.backend.raw.put(conn, gen, idle_since);
                    }
                    out.idle_from = Some(idle_since);
                    !close
                }
                Err(BodyError::Write) => false,
                Err(BodyError::Killed) => {
                    sock.abort();
                    add(&cx.stats.drain_closed, 1);
                    add(&u.guard.backend.stats.drain_closed, 1);
                    false
                }
                Err(BodyError::Timeout) => {
                    sock.abort();
                    add(&u.guard.backend.stats.http_timeouts, 1);
                    u.guard.failed("response body stalled");
                    false
                }
                Err(BodyError::Broken)
                | Err(BodyError::Framing)
                | Err(BodyError::Stalled)
                | Err(BodyError::Answered) => {
                    sock.abort();
                    add(&u.guard.backend.stats.http_errors, 1);
                    u.guard.failed("response body broken off");
                    false
                }
            }
        }
    }
}

/// Passes a backend's response body to the client (`down` holds the head
/// not yet written), pausing at most `response_timeout` between reads.
async fn relay_body<S: Client>(
    cx: &Cx<'_>,
    sock: &mut S,
    u: &mut UpResp,
    down: &mut Vec<u8>,
    last: bool,
) -> Result<(), BodyError> {
    let idle = cx.plan.response_timeout;
    let mut left = match u.head.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunked = (u.head.framing == Framing::Chunked).then(h1::Chunked::default);
    let until_close = u.head.framing == Framing::Close;
    let backend = u.guard.backend.clone();
    let stats = &backend.stats;
    let mut first = true;
    let mut kill: Option<tokio::sync::watch::Receiver<u64>> = None;
    loop {
        let done = match &chunked {
            Some(c) => c.is_done(),
            None => !until_close && left == 0,
        };
        if done || u.head.framing == Framing::None {
            if first {
                if last {
                    sock.last_write();
                }
                send(sock, down).await.map_err(|_| BodyError::Write)?;
            }
            return Ok(());
        }
        if u.buf.is_empty() {
            if first && !down.is_empty() {
                // The head goes out before waiting for the body.
                send(sock, down).await.map_err(|_| BodyError::Write)?;
                down.clear();
            }
            // The backend's drain deadline closes its connections, this
            // one too while the body is still coming.
            let kill = kill.get_or_insert_with(|| u.guard.backend.kill.subscribe());
            if *kill.borrow() != u.gen {
                return Err(BodyError::Killed);
            }
            u.at = Instant::now();
            let by = tokio::time::Instant::from_std(u.at + idle);
            let read = tokio::select! {
                r = tokio::time::timeout_at(by, u.buf.fill(&mut u.conn)) => r,
                _ = kill.changed() => return Err(BodyError::Killed),
            };
            match read {
                Err(_) => return Err(BodyError::Timeout),
                Ok(Ok(0)) if until_close => {
                    if first && !down.is_empty() {
                        send(sock, down).await.map_err(|_| BodyError::Write)?;
                    }
                    return Ok(());
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Err(BodyError::Broken),
                Ok(Ok(_)) => {}
            }
        }
        let n = match chunked.as_mut() {
            Some(c) => c.feed(u.buf.data()).map_err(|_| BodyError::Framing)?,
            None if until_close => u.buf.len(),
            None => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(u.buf.len());
                left -= n as u64;
                n
            }
        };
        add(&stats.bytes_down, n as u64);
        if first && down.len() + n <= 2 * CAP {
            // Head and the first body bytes in one write (the whole
            // response, often).
            let whole = match &chunked {
                Some(c) => c.is_done(),
                None => !until_close && left == 0,
            };
            if last && whole {
                sock.last_write();
            }
            down.extend_from_slice(&u.buf.data()[..n]);
            send(sock, down).await.map_err(|_| BodyError::Write)?;
        } else {
            if first {
                send(sock, down).await.map_err(|_| BodyError::Write)?;
            }
            send(sock, &u.buf.data()[..n])
                .await
                .map_err(|_| BodyError::Write)?;
        }
        first = false;
        down.clear();
        u.buf.consume(n);
    }
}

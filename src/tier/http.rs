//! HTTP listeners (`mode = "http"`): HTTP/1.1 and h2c from clients (h2c by
//! its preface; over TLS, hyper's automatic detection after ALPN). A
//! cleartext HTTP/1.1 connection idle for `PARK_AFTER` gives hyper's
//! buffers back and waits for its next request holding none
//! (`plain::serve_plain`). Requests are routed by host, path prefix and header to
//! a group or a fixed response, proxied over keep-alive connection pools
//! to the group's backends: cleartext HTTP/1.1 over each backend's own pool
//! of keep-alive connections (`upstream`), TLS and HTTP/2 over hyper-util's
//! pooled client (one per group).
//!
//! Per request: the rule that matches (first wins, else the listener's
//! group) → the group's `Balancer` picks a backend (never one already tried
//! for this request) → forwarding headers set, hop-by-hop headers removed
//! (RFC 9110 §7.6.1) → the backend's response headers within
//! `response_timeout` → the response streams back, and the backend counts
//! as busy until its body is done. Connect failures and the statuses of
//! `retry_on` are tried again on another backend when the request can be
//! replayed (no body, idempotent method) and the group's retry budget
//! allows; every 5xx, gateway error and timeout is a failure for passive
//! ejection, anything else a success.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::limit::{retry_after, Limited};
use super::plan::{Action, ForwardedFor, HttpPlan};
use super::stats::add;
use super::{Backend, Group, ListenerStats, Route, Tier};
use crate::balance::Context;

/// The body sent to a backend: the client's, or nothing (a replayable
/// request, sent again on a retry).
pub type UpBody = Either<ClientBody, Empty<Bytes>>;
/// The body sent to a client: a backend's, or one we made.
pub type DownBody = Either<Tracked, Full<Bytes>>;

/// hyper-util's pooled client over plain TCP (HTTP/2 in cleartext).
pub type Legacy = Client<Counted<HttpConnector>, UpBody>;

/// How a listener reaches cleartext HTTP/1.1 backends: their own pools
/// (`upstream`), connections opened within `connect_timeout` and counted.
#[derive(Clone)]
pub struct Pool {
    pub(super) connect_timeout: Duration,
    pub(super) opened: Arc<std::sync::atomic::AtomicU64>,
}

/// A connector that counts the backend connections it opens (the pool's
/// reuse is requests over connections).
#[derive(Clone)]
pub struct Counted<C> {
    inner: C,
    opened: Arc<std::sync::atomic::AtomicU64>,
}

impl<C: tower_service::Service<Uri>> tower_service::Service<Uri> for Counted<C> {
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut TaskCx<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        add(&self.opened, 1);
        self.inner.call(uri)
    }
}

fn connector(connect_timeout: Duration) -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_connect_timeout(Some(connect_timeout));
    c.set_nodelay(true);
    c.enforce_http(true);
    c
}

fn client_builder(h2: bool) -> hyper_util::client::legacy::Builder {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .pool_timer(TokioTimer::new())
        .http2_only(h2);
    if h2 {
        b.timer(TokioTimer::new());
    }
    b
}

/// A listener's way to its backends: keep-alive connections per backend,
/// each one opened counted in `opened`.
pub fn pool(connect_timeout: Duration, opened: Arc<std::sync::atomic::AtomicU64>) -> Pool {
    Pool {
        connect_timeout,
        opened,
    }
}

/// A group's own pool: TLS to its backends, or HTTP/2 in cleartext.
pub enum GroupPool {
    Tls(Client<Counted<hyper_rustls::HttpsConnector<HttpConnector>>, UpBody>),
    H2c(Legacy),
}

impl GroupPool {
    fn scheme(&self) -> &'static str {
        match self {
            GroupPool::Tls(_) => "https",
            GroupPool::H2c(_) => "http",
        }
    }
}

/// Where a request goes: its group's own pool, else the listener's.
#[derive(Clone, Copy)]
struct Upstream<'a>(&'a Pool, Option<&'a GroupPool>);

/// Why a backend gave no response.
#[derive(Debug, thiserror::Error)]
enum UpError {
    #[error("{0}")]
    Pooled(#[from] hyper_util::client::legacy::Error),
    #[error("{0}")]
    Own(#[from] super::upstream::SendError),
}

impl UpError {
    fn is_stale(&self) -> bool {
        matches!(self, UpError::Own(super::upstream::SendError::Stale(_)))
    }

    fn is_connect(&self) -> bool {
        match self {
            UpError::Pooled(e) => e.is_connect(),
            UpError::Own(e) => e.is_connect(),
        }
    }
}

impl Upstream<'_> {
    /// The response, and the connection to give back when its body is
    /// read (own pools only).
    async fn request(
        self,
        backend: &Arc<Backend>,
        up: Request<UpBody>,
    ) -> Result<(Response<Incoming>, Option<super::upstream::Lease<UpBody>>), UpError> {
        let pooled = |f: ResponseFuture| async move { Ok((f.await?, None)) };
        match self.1 {
            Some(GroupPool::Tls(c)) => pooled(c.request(up)).await,
            Some(GroupPool::H2c(c)) => pooled(c.request(up)).await,
            None => {
                let p = self.0;
                let target = super::upstream::Target {
                    addr: backend.addr,
                    idle: &backend.idle,
                    kill: &backend.kill,
                };
                let (r, lease) =
                    super::upstream::send(target, up, p.connect_timeout, &p.opened).await?;
                Ok((r, Some(lease)))
            }
        }
    }
}

/// The group's own pool for `t`, or None when the listener's serves it.
pub fn group_pool(
    t: &super::plan::Transport,
    opened: Arc<std::sync::atomic::AtomicU64>,
) -> Option<GroupPool> {
    let http = connector(t.connect_timeout);
    match &t.tls {
        Some(tls) => Some(GroupPool::Tls(client_builder(t.h2).build(Counted {
            inner: tls.connector(http, t.h2),
            opened,
        }))),
        None if t.h2 => Some(GroupPool::H2c(client_builder(true).build(Counted {
            inner: http,
            opened,
        }))),
        None => None,
    }
}

/// A byte stream with bytes already read from it put back in front (what
/// followed a PROXY header).
pub struct Prefixed<T> {
    prefix: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Vec<u8>, inner: T) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }

    /// The bytes still waiting in front, and the stream.
    pub fn into_parts(mut self) -> (Vec<u8>, T) {
        if self.at > 0 {
            self.prefix.drain(..self.at);
        }
        (self.prefix, self.inner)
    }

    /// No bytes are waiting in front of the stream.
    pub fn is_empty(&self) -> bool {
        self.at >= self.prefix.len()
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Puts bytes read from the front back in front.
    pub fn put_back(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut p = Vec::with_capacity(bytes.len() + self.prefix.len() - self.at);
        p.extend_from_slice(bytes);
        p.extend_from_slice(&self.prefix[self.at..]);
        self.prefix = p;
        self.at = 0;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A client's request body on its way to a backend, within the listener's
/// `body_timeout` (whole body). A failure (the deadline, the client going
/// away) is marked so it is answered as the client's fault (408), not
/// counted against the backend.
pub struct ClientBody {
    body: Incoming,
    until: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: Arc<std::sync::atomic::AtomicU8>,
}

/// `ClientBody::failed` values.
const BODY_OK: u8 = 0;
const BODY_TIMEOUT: u8 = 1;
const BODY_ERROR: u8 = 2;

impl Body for ClientBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        use std::sync::atomic::Ordering::Relaxed;
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.failed.store(BODY_ERROR, Relaxed);
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Pending => {
                let until = self.until;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.failed.store(BODY_TIMEOUT, Relaxed);
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request body not received in time",
                    ))));
                }
                Poll::Pending
            }
            r => r.map_err(std::io::Error::other),
        }
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A backend's response body on its way to the client: releases the
/// backend's active count when done (or dropped: the client went away). A
/// backend that breaks the body off, or sends nothing for
/// `response_timeout`, aborts the client's response (its headers are gone
/// already) and counts as a failure of the backend.
pub struct Tracked {
    body: Incoming,
    guard: Release,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The backend connection, reused once the body is read to the end.
    lease: Option<super::upstream::Lease<UpBody>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A body hyper never had to read (HEAD, 204, 304, length 0).
        if self.body.is_end_stream() {
            if let Some(l) = self.lease.take() {
                l.finish();
            }
        }
    }
}

pub(super) struct Release {
    pub(super) group: Arc<Group>,
    pub(super) backend: Arc<Backend>,
    pub(super) done: bool,
    /// The tier's clock origin (for failures noted on the body).
    pub(super) t0: Instant,
}

impl Release {
    pub(super) fn release(&mut self) {
        if !self.done {
            self.done = true;
            self.group.lock().balancer.release(&self.backend.id);
        }
    }

    /// The body failed: counted, told to passive ejection, released.
    pub(super) fn failed(&mut self, why: &str) {
        if self.done {
            return;
        }
        let now = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        {
            let mut st = self.group.lock();
            super::note_failure(&mut st.balancer, &self.backend, now, why);
        }
        self.release();
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.release();
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let me = &mut *self;
        match Pin::new(&mut me.body).poll_frame(cx) {
            Poll::Ready(None) => {
                me.guard.release();
                if let Some(l) = me.lease.take() {
                    l.finish();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                add(&me.guard.backend.stats.http_errors, 1);
                me.guard.failed(&format!("response body broken off: {e}"));
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    add(&me.guard.backend.stats.bytes_down, d.len() as u64);
                }
                if let Some(t) = me.timer.as_mut() {
                    t.as_mut().reset(tokio::time::Instant::now() + me.idle);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Pending => {
                let idle = me.idle;
                let t = me
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if t.as_mut().poll(cx).is_ready() {
                    add(&me.guard.backend.stats.http_timeouts, 1);
                    me.guard.failed("response body stalled");
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the backend stopped sending the response body",
                    ))));
                }
                Poll::Pending
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn small(status: StatusCode, msg: &str) -> Response<DownBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "{} {}\n{msg}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The request's host, lower case, without port.
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let raw: &str = match req.uri().authority() {
        Some(a) => a.host(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    let h = if raw.starts_with('[') {
        // An IPv6 literal keeps its brackets, without the port.
        &raw[..raw.find(']').map_or(raw.len(), |i| i + 1)]
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    Some(h.trim_end_matches('.').to_ascii_lowercase())
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern == host,
    }
}

/// The first rule that matches: its index, or None for the default group.
pub fn route_for(
    plan: &HttpPlan,
    host: Option<&str>,
    path: &str,
    headers: &HeaderMap,
) -> Option<usize> {
    route_by(plan, host, path, |n, v| {
        headers.get_all(n).iter().any(|x| x.as_bytes() == v)
    })
}

/// `route_for` with the headers asked through `has(name, value)`: whether
/// a field `name` (lower case) has exactly `value`.
pub fn route_by(
    plan: &HttpPlan,
    host: Option<&str>,
    path: &str,
    has: impl Fn(&str, &[u8]) -> bool,
) -> Option<usize> {
    plan.rules.iter().position(|r| {
        r.host
            .as_deref()
            .is_none_or(|p| host.is_some_and(|h| host_matches(p, h)))
            && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            && r.header
                .as_ref()
                .is_none_or(|(n, v)| has(n.as_str(), v.as_bytes()))
    })
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), and
/// whatever `Connection` names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// Requests no backend gets: HTTP/1.1 without exactly one Host, or a Host
/// that is not `host[:port]` (RFC 9112 §3.2: 400 for an invalid value, so
/// nothing but a host reaches the `Forwarded` element and the backend's
/// Host); more than one Content-Length, one that is not digits, or one
/// beside Transfer-Encoding (RFC 9112 §6.1, §6.3: framing two hops could
/// read apart). hyper's parser already refuses or repairs most of these;
/// the tier does not rely on it.
fn well_formed<B>(req: &Request<B>) -> Result<(), &'static str> {
    let h = req.headers();
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    if let Some(v) = lengths.next() {
        if lengths.next().is_some() {
            return Err("more than one Content-Length header");
        }
        if v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit) {
            return Err("the Content-Length header is not a number");
        }
        if h.contains_key(header::TRANSFER_ENCODING) {
            return Err("Content-Length beside Transfer-Encoding");
        }
    }
    let hosts = h.get_all(header::HOST).iter().count();
    if req.version() == Version::HTTP_11 && hosts != 1 {
        return Err("an HTTP/1.1 request needs exactly one Host header");
    }
    if hosts > 1 {
        return Err("more than one Host header");
    }
    if let Some(v) = h.get(header::HOST) {
        // Empty is allowed: a request target without an authority.
        if !v.is_empty() && !super::h1::host_and_port(v.as_bytes()) {
            return Err("the Host header is not a host and port");
        }
    }
    Ok(())
}

/// Whether a request may go to a backend (see `well_formed`), and the host
/// it is routed by: lower case, without port or trailing dot; the target's
/// authority when it has one, else the Host header.
pub fn admit<B>(req: &Request<B>) -> Result<Option<String>, &'static str> {
    well_formed(req)?;
    Ok(host_of(req))
}

/// The head a backend gets, rewritten in place: hop-by-hop fields removed,
/// forwarding headers set, and one Host. A target with an authority (the
/// absolute form, or HTTP/2's `:authority`) sets the Host, whatever the
/// client's Host header said (RFC 9112 §3.2.2: a proxy replaces it), so the
/// backend sees the host the request was routed by; otherwise the client's
/// Host is kept, or `host` given when there was none.
pub fn forward_head(
    plan: &HttpPlan,
    parts: &mut http::request::Parts,
    client: SocketAddr,
    host: Option<&str>,
) {
    strip_hop_by_hop(&mut parts.headers);
    let target = parts.uri.authority().and_then(|a| {
        let v = match a.port_u16() {
            Some(p) => format!("{}:{p}", a.host()),
            None => a.host().to_string(),
        };
        owned_value(v)
    });
    if let Some(v) = target {
        parts.headers.insert(header::HOST, v);
    } else if !parts.headers.contains_key(header::HOST) {
        if let Some(v) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
            parts.headers.insert(header::HOST, v);
        }
    }
    forwarding(plan, &mut parts.headers, client, host, parts.version);
}

fn replayable(req: &Request<Incoming>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::DELETE | Method::PUT
    ) && req.body().is_end_stream()
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The client address as header text (an IPv4-mapped address as IPv4),
/// in one allocation.
fn ip_bytes(ip: IpAddr) -> Bytes {
    let mut buf = [0u8; 48];
    let n = super::h1::ip_text(ip, &mut buf);
    Bytes::copy_from_slice(buf.get(..n).unwrap_or_default())
}

/// A header value that takes `s` over (no copy), if `s` is valid.
fn owned_value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(s)).ok()
}

/// Sets the forwarding headers of a request about to go to a backend.
fn forwarding(
    plan: &HttpPlan,
    h: &mut HeaderMap,
    client: SocketAddr,
    host: Option<&str>,
    version: Version,
) {
    let ip_b = ip_bytes(client.ip());
    let ip = std::str::from_utf8(&ip_b).unwrap_or_default();
    // What an untrusted client says about earlier hops is dropped.
    let trusted =
        plan.trusted_proxies.is_empty() || super::ip_in(client.ip(), &plan.trusted_proxies);
    if !trusted {
        h.remove(header::FORWARDED);
    }
    let mode = match plan.forwarded_for {
        ForwardedFor::Append if !trusted => ForwardedFor::Replace,
        m => m,
    };
    match mode {
        ForwardedFor::Off => {}
        ForwardedFor::Replace => {
            if let Ok(v) = HeaderValue::from_maybe_shared(ip_b.clone()) {
                h.insert(X_FORWARDED_FOR, v);
            }
        }
        ForwardedFor::Append => {
            let mut prior = h
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .peekable();
            let v = if prior.peek().is_none() {
                HeaderValue::from_maybe_shared(ip_b.clone()).ok()
            } else {
                let mut list = String::with_capacity(64);
                for p in prior {
                    list.push_str(p);
                    list.push_str(", ");
                }
                list.push_str(ip);
                owned_value(list)
            };
            if let Some(v) = v {
                h.insert(X_FORWARDED_FOR, v);
            }
        }
    }
    let proto = if plan.tls.is_some() { "https" } else { "http" };
    if plan.forwarded_for != ForwardedFor::Off {
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        // The Host the backend gets, port and all (shared, not copied).
        let v = h
            .get(header::HOST)
            .cloned()
            .or_else(|| host.and_then(|x| HeaderValue::from_str(x).ok()));
        if let Some(v) = v {
            h.insert(X_FORWARDED_HOST, v);
        }
    }
    if plan.forwarded {
        let node = if client.ip().to_canonical().is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        let mut el = format!("for={node};proto={proto}");
        if let Some(hst) = host {
            el.push_str(&format!(";host=\"{hst}\""));
        }
        let all = match h.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {el}"),
            None => el,
        };
        if let Some(v) = owned_value(all) {
            h.insert(header::FORWARDED, v);
        }
    }
    if plan.via {
        let me = match version {
            Version::HTTP_2 => "2 geolb",
            Version::HTTP_10 => "1.0 geolb",
            _ => "1.1 geolb",
        };
        let v = match h.get(header::VIA).and_then(|v| v.to_str().ok()) {
            Some(prev) => owned_value(format!("{prev}, {me}")),
            None => Some(HeaderValue::from_static(me)),
        };
        if let Some(v) = v {
            h.insert(header::VIA, v);
        }
    }
    if let Some(name) = &plan.request_id {
        if !h.contains_key(name.as_str()) {
            let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
            if let (Ok(n), Some(v)) = (HeaderName::from_bytes(name.as_bytes()), owned_value(id)) {
                h.insert(n, v);
            }
        }
    }
}

/// A request being handled (boxed: hyper's HTTP/1 connection is taken
/// apart when idle, which needs an `Unpin` future).
type Handling = Pin<Box<dyn Future<Output = Result<Response<Finished>, Infallible>> + Send>>;

/// The request handler of one client connection. With `idle` (cleartext
/// HTTP/1 connections), each request and its response body are counted on
/// it, so the connection knows when it is idle.
pub(super) fn service(
    tier: Arc<Tier>,
    route: Arc<Route>,
    stats: Arc<ListenerStats>,
    client: SocketAddr,
    idle: Option<Arc<Idle>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Finished>,
    Error = Infallible,
    Future = Handling,
> + Clone
       + Unpin {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let (tier, route, stats, idle) = (tier.clone(), route.clone(), stats.clone(), idle.clone());
        if let Some(i) = &idle {
            i.request_began();
        }
        let fut: Handling = Box::pin(async move {
            add(&stats.requests, 1);
            let started = Instant::now();
            // What the access log needs from the request, taken only when
            // there is one.
            let seen = route.access.as_ref().map(|_| {
                (
                    req.method().to_string(),
                    req.uri()
                        .path_and_query()
                        .map_or_else(|| req.uri().to_string(), |p| p.as_str().to_string()),
                    format!("{:?}", req.version()),
                    host_of(&req),
                )
            });
            let mut out = Outcome::default();
            let resp = match route.limits.as_ref().map(|l| l.check(client.ip())) {
                Some(Err((which, wait))) => {
                    add(
                        match which {
                            Limited::Client => &stats.rate_limited_client,
                            Limited::Listener => &stats.rate_limited_listener,
                        },
                        1,
                    );
                    let mut r = small(StatusCode::TOO_MANY_REQUESTS, "too many requests");
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after(wait)));
                    r
                }
                _ => {
                    let r =
                        handle(&tier, &route, &stats, req, client, &mut out, idle.as_ref()).await;
                    if let Some(rs) = out.route.and_then(|i| route.route_stats.get(i)) {
                        rs.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        rs.done(r.status().as_u16(), out.started.elapsed(), out.retries);
                    }
                    r
                }
            };
            if let (Some(log), Some((method, target, version, host))) = (&route.access, seen) {
                let rule = match (&route.plan.mode, out.route) {
                    (super::Mode::Http(p), Some(i)) => Some(
                        p.rules
                            .get(i)
                            .map_or_else(|| "default".to_string(), |r| r.label()),
                    ),
                    _ => None,
                };
                log.log(super::access::Entry {
                    time: std::time::SystemTime::now(),
                    listener: route.plan.name.clone(),
                    client,
                    method,
                    host,
                    target,
                    version,
                    status: resp.status().as_u16(),
                    route: rule,
                    backend: out.backend,
                    retries: out.retries,
                    ms: started.elapsed().as_secs_f64() * 1000.0,
                });
            }
            let class = usize::from(resp.status().as_u16() / 100).clamp(1, 5) - 1;
            add(&stats.responses[class], 1);
            Ok::<_, Infallible>(resp.map(|body| Finished { body, idle }))
        });
        fut
    })
}

/// A connection hyper serves that can be told to finish gracefully.
pub(super) trait Graceful {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful
    for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, TokioExecutor>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Runs a connection to its end; when the listener goes away (removed by a
/// reload, or the node stops) the connection is told at a random moment
/// within the drain window, so clients do not all come back at once —
/// `Connection: close` on HTTP/1's next response (an idle one is closed),
/// GOAWAY on HTTP/2 — then given the window again to finish what is in
/// flight.
pub(super) async fn run_to_end<C, E, P>(
    mut conn: Pin<P>,
    stats: &ListenerStats,
    mut stop: tokio::sync::watch::Receiver<bool>,
    drain_window: Duration,
    client: SocketAddr,
) where
    P: std::ops::DerefMut<Target = C>,
    C: Graceful + Future<Output = Result<(), E>> + ?Sized,
    E: std::fmt::Display,
{
    let mut closing = stats.closing.subscribe();
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = closing.wait_for(|c| *c) => None,
        _ = stop.wait_for(|s| *s) => None,
    };
    let r = match ended {
        Some(r) => r,
        None => {
            let at = drain_window.mul_f64(fastrand::f64());
            let told = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = tokio::time::sleep(at) => None,
            };
            match told {
                Some(r) => r,
                None => {
                    add(&stats.goaway, 1);
                    conn.as_mut().graceful();
                    match tokio::time::timeout(
                        drain_window.max(Duration::from_secs(1)),
                        conn.as_mut(),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::debug!(%client, "HTTP connection closed at the end of the drain window");
                            return;
                        }
                    }
                }
            }
        }
    };
    if let Err(e) = r {
        tracing::debug!(%client, "HTTP connection ended: {e}");
    }
}

/// Serves one client connection (HTTPS: HTTP/1.1 or h2 by ALPN) until it
/// closes.
pub async fn serve<I>(
    tier: Arc<Tier>,
    route: Arc<Route>,
    stats: Arc<ListenerStats>,
    io: I,
    client: SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let super::Mode::Http(plan) = &route.plan.mode else {
        return;
    };
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(plan.header_timeout)
        .keep_alive(true);
    b.http2().timer(TokioTimer::new());
    let drain_window = plan.drain_window;
    let stop = tier.shutdown.clone();
    let svc = service(tier, route.clone(), stats.clone(), client, None);
    let conn = b.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    run_to_end(conn, &stats, stop, drain_window, client).await;
}

/// How long a cleartext HTTP/1 connection stays idle with its buffers
/// before it gives them back and waits for its next request with none.
pub(super) const PARK_AFTER: Duration = Duration::from_millis(100);

/// What a cleartext HTTP/1 connection's socket wrapper (`IdleProbe`) and
/// its requests tell each other, so the connection knows when hyper is idle
/// (waiting for a request with nothing read of it) and can be taken apart.
#[derive(Default)]
pub struct Idle {
    /// Requests whose response body has not been dropped yet.
    in_flight: std::sync::atomic::AtomicU32,
    /// Bytes read while no request was in flight, since the last request
    /// began (a request head on its way).
    head_bytes: std::sync::atomic::AtomicU64,
    /// The last read found nothing to read.
    waiting: std::sync::atomic::AtomicBool,
    /// Written since the last completed flush.
    unflushed: std::sync::atomic::AtomicBool,
    /// A switched (upgraded) connection's client side is handed over here
    /// once hyper has let go of the socket.
    upgrade:
        std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Prefixed<tokio::net::TcpStream>>>>,
}

impl Idle {
    fn request_began(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.in_flight.fetch_add(1, Relaxed);
        self.head_bytes.store(0, Relaxed);
    }

    fn is_idle(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.in_flight.load(Relaxed) == 0
            && self.head_bytes.load(Relaxed) == 0
            && self.waiting.load(Relaxed)
            && !self.unflushed.load(Relaxed)
    }
}

/// The socket of a cleartext HTTP/1 connection as hyper sees it: notes
/// reads and flushes on `Idle`.
pub struct IdleProbe<T> {
    io: T,
    idle: Arc<Idle>,
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleProbe<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        use std::sync::atomic::Ordering::Relaxed;
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        match &r {
            Poll::Pending => self.idle.waiting.store(true, Relaxed),
            Poll::Ready(_) => {
                self.idle.waiting.store(false, Relaxed);
                let n = (buf.filled().len() - before) as u64;
                if self.idle.in_flight.load(Relaxed) == 0 {
                    self.idle.head_bytes.fetch_add(n, Relaxed);
                }
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleProbe<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.idle
            .unflushed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.idle
                .unflushed
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.idle
            .unflushed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A response body that tells the connection's `Idle` when it is done.
pub struct Finished {
    body: DownBody,
    idle: Option<Arc<Idle>>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        if let Some(i) = &self.idle {
            i.in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Body for Finished {
    type Data = Bytes;
    type Error = <DownBody as Body>::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// One hyper HTTP/1 connection on the socket, until it goes idle (the
/// socket is given back, with any bytes hyper read ahead put in front),
/// closes, times out waiting for a request head (408), or switches
/// protocols (the socket goes to the tunnel).
pub(super) async fn http1_session(
    tier: &Arc<Tier>,
    route: &Arc<Route>,
    stats: &Arc<ListenerStats>,
    io: Prefixed<tokio::net::TcpStream>,
    client: SocketAddr,
    header_timeout: Duration,
    drain_window: Duration,
) -> Option<Prefixed<tokio::net::TcpStream>> {
    use std::future::poll_fn;
    let idle = Arc::new(Idle::default());
    let svc = service(
        tier.clone(),
        route.clone(),
        stats.clone(),
        client,
        Some(idle.clone()),
    );
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(IdleProbe {
                io,
                idle: idle.clone(),
            }),
            svc,
        );
    let mut closing = stats.closing.subscribe();
    let mut stop = tier.shutdown.clone();
    let mut park = Box::pin(tokio::time::sleep(PARK_AFTER));
    let mut idle_since: Option<tokio::time::Instant> = None;
    let step = {
        let serving = poll_fn(|cx| {
            if let Poll::Ready(r) = conn.poll_without_shutdown(cx) {
                return Poll::Ready(Step::Ended(r));
            }
            if !idle.is_idle() {
                idle_since = None;
                return Poll::Pending;
            }
            let due = *idle_since.get_or_insert_with(tokio::time::Instant::now) + PARK_AFTER;
            // The timer is moved only when it fires early: at most once
            // per PARK_AFTER, not once per request.
            while park.as_mut().poll(cx).is_ready() {
                if tokio::time::Instant::now() >= due {
                    return Poll::Ready(Step::Idle);
                }
                park.as_mut().reset(due);
            }
            Poll::Pending
        });
        tokio::select! {
            s = serving => s,
            _ = closing.wait_for(|c| *c) => Step::Closing,
            _ = stop.wait_for(|s| *s) => Step::Closing,
        }
    };
    match step {
        Step::Idle => {
            Pin::new(&mut conn).graceful_shutdown();
            match poll_fn(|cx| Poll::Ready(conn.poll_without_shutdown(cx))).await {
                Poll::Ready(Ok(())) => {
                    let parts = conn.into_parts();
                    let mut io = parts.io.into_inner().io;
                    io.put_back(&parts.read_buf);
                    Some(io)
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(%client, "HTTP connection ended: {e}");
                    None
                }
                Poll::Pending => {
                    // Busy after all: what is in flight finishes (its
                    // response says close), then the connection closes.
                    if let Err(e) = poll_fn(|cx| conn.poll_without_shutdown(cx)).await {
                        tracing::debug!(%client, "HTTP connection ended: {e}");
                    }
                    None
                }
            }
        }
        Step::Ended(Ok(())) => {
            let parts = conn.into_parts();
            let mut io = parts.io.into_inner().io;
            let tunnel = idle
                .upgrade
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            match tunnel {
                Some(tx) => {
                    io.put_back(&parts.read_buf);
                    let _ = tx.send(io);
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                }
            }
            None
        }
        Step::Ended(Err(e)) if e.is_timeout() => {
            // The request head did not arrive within header_timeout: 408
            // (RFC 9110 §15.5.9), then the connection closes.
            add(&stats.header_timeouts, 1);
            let mut io = conn.into_parts().io.into_inner().io;
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                io.write_all(REQUEST_TIMEOUT).await?;
                io.shutdown().await
            })
            .await;
            if let Some(log) = &route.access {
                log.log(super::access::Entry {
                    time: std::time::SystemTime::now(),
                    listener: route.plan.name.clone(),
                    client,
                    method: "-".into(),
                    host: None,
                    target: "-".into(),
                    version: "HTTP/1.1".into(),
                    status: 408,
                    route: None,
                    backend: None,
                    retries: 0,
                    ms: header_timeout.as_secs_f64() * 1000.0,
                });
            }
            None
        }
        Step::Ended(Err(e)) => {
            tracing::debug!(%client, "HTTP connection ended: {e}");
            None
        }
        Step::Closing => {
            run_to_end(Pin::new(&mut conn), stats, stop, drain_window, client).await;
            None
        }
    }
}

/// Where an HTTP/1 session stopped.
enum Step {
    Ended(Result<(), hyper::Error>),
    Idle,
    Closing,
}

pub(super) const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 16\r\nconnection: close\r\n\r\nrequest timeout\n";

impl<I, S, B> Graceful for hyper::server::conn::http1::Connection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// What became of a request (for its route's counters and the access log).
struct Outcome {
    started: Instant,
    /// Index into the route's `route_stats` once routed.
    route: Option<usize>,
    retries: u32,
    backend: Option<SocketAddr>,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            started: Instant::now(),
            route: None,
            retries: 0,
            backend: None,
        }
    }
}

/// Tries per request at most (the first and its retries).
const MAX_ATTEMPTS: usize = 8;

/// Why [`choose`] gave no backend for a try.
pub(super) enum Unchosen {
    /// The group's retry budget is spent: no more tries.
    BudgetSpent,
    /// No backend is eligible (all down, ejected or tried).
    NoBackend(crate::balance::NoPick),
    /// The backend picked left the group meanwhile: try the next.
    Vanished,
}

/// The backend for try `attempt` of a request to `group`, as both HTTP
/// engines choose it: the retry budget for a retry, the sticky backend
/// on the first try while it admits the client, else the balancer's pick
/// excluding the backends tried; the pick is recorded in `tried_at`, the
/// backend acquired, source affinity updated, and the persistence cookie
/// to set (when the client's differs) returned with it.
pub(super) fn choose(
    group: &Group,
    attempt: u32,
    now: u64,
    client: IpAddr,
    sticky: &Sticky,
    tried_at: &mut [usize],
    n_tried: &mut usize,
) -> Result<(Arc<Backend>, Option<HeaderValue>), Unchosen> {
    let mut st = group.lock();
    let percent = st.plan.retry_budget;
    if attempt > 0 && !st.budget.retry(now, percent) {
        tracing::debug!(group = %group.name, "retry budget spent; not retrying");
        return Err(Unchosen::BudgetSpent);
    }
    let stuck = match (attempt, &sticky.to) {
        (0, Some(b)) => st.sticky_ok(b, now, &tried_at[..*n_tried]),
        _ => None,
    };
    let idx = match stuck {
        Some(i) => i,
        None => {
            let mut ctx = Context::at(now)
                .client(client)
                .exclude(&tried_at[..*n_tried]);
            if let Some(k) = &sticky.key {
                ctx = ctx.key(k);
            }
            st.balancer.pick(&ctx).map_err(Unchosen::NoBackend)?
        }
    };
    if let Some(slot) = tried_at.get_mut(*n_tried) {
        *slot = idx;
        *n_tried += 1;
    }
    let b = st
        .balancer
        .id(idx)
        .and_then(|id| st.backends.get(id))
        .cloned()
        .ok_or(Unchosen::Vanished)?;
    st.balancer.acquire(&b.id);
    if let Some(t) = st.source.as_mut() {
        t.put(client, &b, now);
    }
    let set = st.cookies.set_cookie(&b.id, sticky.had.as_deref());
    Ok((b, set))
}

/// Outcome of one try.
enum Try {
    Done(Response<DownBody>),
    /// Failed in a way another backend may fix; the response to give if
    /// no other try is made.
    Again(Response<DownBody>),
    /// A reused keep-alive connection the backend had closed took the
    /// request and broke: not the backend's failure; a replayable request
    /// gets one more try, which may go to the same backend (NGINX gives a
    /// cached connection's failure an extra try the same way).
    Stale(Response<DownBody>),
}

async fn handle(
    tier: &Tier,
    route: &Route,
    stats: &Arc<ListenerStats>,
    mut req: Request<Incoming>,
    client: SocketAddr,
    out: &mut Outcome,
    idle: Option<&Arc<Idle>>,
) -> Response<DownBody> {
    let super::Mode::Http(plan) = &route.plan.mode else {
        return small(StatusCode::INTERNAL_SERVER_ERROR, "not an HTTP listener");
    };
    let started = out.started;
    let host = match admit(&req) {
        Ok(h) => h,
        Err(why) => return small(StatusCode::BAD_REQUEST, why),
    };
    let rule = route_for(plan, host.as_deref(), req.uri().path(), req.headers());
    let idx = rule.unwrap_or(plan.rules.len());
    if let Some(rs) = route.route_stats.get(idx) {
        add(&rs.requests, 1);
        rs.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        out.route = Some(idx);
    }
    let (group, _rule) = match rule {
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
                let mut r = Response::new(Either::Right(Full::new(Bytes::from(body.clone()))));
                *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
                for (k, v) in headers {
                    if let (Ok(k), Ok(v)) = (
                        HeaderName::from_bytes(k.as_bytes()),
                        HeaderValue::from_str(v),
                    ) {
                        r.headers_mut().append(k, v);
                    }
                }
                return r;
            }
            (Action::Group(_), Some(g)) => (g, Some(i)),
            (Action::Group(g), None) => {
                return small(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("group {g} is not running here"),
                );
            }
        },
        None => (route.group.clone(), None),
    };
    let replay = replayable(&req);
    // An HTTP/1.1 `Upgrade` (WebSocket and others): the backend sees the
    // request's Upgrade and `Connection: upgrade`; on its 101 the two
    // connections are joined.
    let mut upgrade = upgrade_of(&req).map(|proto| {
        let side = match idle {
            Some(i) => ClientSide::Parked(i.clone()),
            None => ClientSide::Hyper(hyper::upgrade::on(&mut req)),
        };
        (proto, side)
    });
    let (mut parts, body) = req.into_parts();
    let sticky = Sticky::read(
        &group,
        &parts.headers,
        parts.uri.path(),
        client.ip(),
        tier.now_ms(),
    );
    if let Some(name) = &sticky.cookie_name {
        super::sticky::strip_cookie(&mut parts.headers, name);
    }
    forward_head(plan, &mut parts, client, host.as_deref());
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut body = Some(body);
    let own = group.upstream.load_full();
    // Backends tried so far (no allocation: attempts are capped).
    let mut tried_at = [0usize; MAX_ATTEMPTS];
    let mut n_tried = 0;
    let attempts = if replay {
        (1 + plan.retries).min(MAX_ATTEMPTS as u32)
    } else {
        1
    };
    let mut last: Option<Response<DownBody>> = None;
    let mut last_cookie = None;
    {
        let mut st = group.lock();
        st.budget.request(tier.now_ms());
    }
    let mut budget = attempts;
    let mut next = 0;
    while next < budget {
        let attempt = next;
        next += 1;
        let now = tier.now_ms();
        let (backend, set_cookie) = match choose(
            &group,
            attempt,
            now,
            client.ip(),
            &sticky,
            &mut tried_at,
            &mut n_tried,
        ) {
            Ok(chosen) => chosen,
            Err(Unchosen::Vanished) => continue,
            Err(Unchosen::BudgetSpent) => break,
            Err(Unchosen::NoBackend(e)) => {
                if attempt == 0 {
                    last = Some(small(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("no backend: {e}"),
                    ));
                }
                break;
            }
        };
        // A drained backend (a sticky client with drain_sticky): its
        // connection is not put back in the pool after this request.
        let draining = backend
            .drain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        // The own pools send origin-form (RFC 9112 §3.2.1); hyper-util's
        // client takes the absolute form and picks its pool by it.
        let uri = match own.as_ref().map(|p| p.scheme()) {
            None => Ok(Uri::from(pq.clone())),
            Some(scheme) => Uri::builder()
                .scheme(if scheme == "https" {
                    http::uri::Scheme::HTTPS
                } else {
                    http::uri::Scheme::HTTP
                })
                .authority(backend.authority.clone())
                .path_and_query(pq.clone())
                .build(),
        };
        let uri: Uri = match uri {
            Ok(u) => u,
            Err(_) => {
                group.lock().balancer.release(&backend.id);
                return small(
                    StatusCode::BAD_REQUEST,
                    "request target cannot be forwarded",
                );
            }
        };
        let mut client_body = None;
        let mut up = Request::new(match body.take() {
            Some(b) if !replay => {
                let failed = Arc::new(std::sync::atomic::AtomicU8::new(BODY_OK));
                client_body = Some(failed.clone());
                Either::Left(ClientBody {
                    body: b,
                    until: tokio::time::Instant::from_std(started + plan.body_timeout),
                    timer: None,
                    failed,
                })
            }
            _ => Either::Right(Empty::new()),
        });
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.headers_mut() = parts.headers.clone();
        *up.version_mut() = Version::HTTP_11;
        if let Some((proto, _)) = &upgrade {
            let h = up.headers_mut();
            h.insert(header::UPGRADE, proto.clone());
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        } else if draining {
            up.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        add(&backend.stats.total, 1);
        out.retries = attempt;
        out.backend = Some(backend.addr);
        let tunnel = Tunnel {
            client: &mut upgrade,
            tier,
            stats,
            client_body,
        };
        let pool = Upstream(&route.http, own.as_deref());
        match one_try(tier, plan, pool, &group, backend, up, tunnel).await {
            Try::Done(r) => return with_cookie(r, set_cookie),
            Try::Again(r) => {
                last = Some(r);
                last_cookie = set_cookie;
            }
            Try::Stale(r) => {
                last = Some(r);
                last_cookie = set_cookie;
                if replay && budget == attempts {
                    budget += 1;
                    // The backend may be picked again.
                    n_tried = n_tried.saturating_sub(1);
                }
            }
        }
    }
    let last =
        last.unwrap_or_else(|| small(StatusCode::SERVICE_UNAVAILABLE, "no backend is available"));
    with_cookie(last, last_cookie)
}

/// Adds the persistence cookie to a response from a backend.
fn with_cookie(mut r: Response<DownBody>, set: Option<HeaderValue>) -> Response<DownBody> {
    if let Some(v) = set {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// What a request says about the backend it is stuck to.
#[derive(Default)]
pub(super) struct Sticky {
    /// The backend its cookie or address is stuck to.
    pub to: Option<Arc<Backend>>,
    /// Its persistence cookie's value (to tell whether to set it again).
    pub had: Option<String>,
    /// The group's persistence cookie name (removed before forwarding).
    pub cookie_name: Option<String>,
    /// `hash` persistence: the bytes to hash.
    pub key: Option<Vec<u8>>,
}

impl Sticky {
    pub(super) fn read(
        group: &Group,
        h: &HeaderMap,
        path: &str,
        client: IpAddr,
        now: u64,
    ) -> Sticky {
        Sticky::read_by(
            group,
            |name| super::sticky::cookie(h, name),
            |name| h.get(name).map(HeaderValue::as_bytes),
            path,
            client,
            now,
        )
    }

    /// `read` with the request's cookies and first field values asked
    /// through `cookie(name)` and `header(name)`.
    pub(super) fn read_by<'h>(
        group: &Group,
        cookie: impl Fn(&str) -> Option<&'h str>,
        header: impl Fn(&str) -> Option<&'h [u8]>,
        path: &str,
        client: IpAddr,
        now: u64,
    ) -> Sticky {
        use super::plan::{HashOn, Persistence};
        let st = group.lock();
        match &st.plan.persistence {
            Persistence::None => Sticky::default(),
            Persistence::Cookie(c) => {
                let had = cookie(&c.name);
                Sticky {
                    to: had
                        .and_then(|v| st.cookies.backend(v))
                        .and_then(|id| st.backends.get(id).cloned()),
                    had: had.map(str::to_string),
                    cookie_name: Some(c.name.clone()),
                    key: None,
                }
            }
            Persistence::Source { .. } => Sticky {
                to: st.source.as_ref().and_then(|t| t.get(client, now)).cloned(),
                ..Sticky::default()
            },
            Persistence::Hash(on) => Sticky {
                key: match on {
                    HashOn::Header(name) => header(name.as_str()).map(<[u8]>::to_vec),
                    HashOn::Cookie(name) => cookie(name).map(|v| v.as_bytes().to_vec()),
                    HashOn::Path => Some(path.as_bytes().to_vec()),
                },
                ..Sticky::default()
            },
        }
    }
}

/// The `Upgrade` protocol a request asks for (HTTP/1.1 only: h2 has no
/// Upgrade), if `Connection` names it.
fn upgrade_of(req: &Request<Incoming>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// What a 101 from the backend needs to join the two connections.
struct Tunnel<'a> {
    client: &'a mut Option<(HeaderValue, ClientSide)>,
    tier: &'a Tier,
    stats: &'a Arc<ListenerStats>,
    /// How the client's body went (a request with a body).
    client_body: Option<Arc<std::sync::atomic::AtomicU8>>,
}

/// Where the client's side of a switched connection comes from: hyper's
/// upgrade (HTTPS, where hyper keeps the connection), or the cleartext
/// HTTP/1 session that hands its socket over once hyper lets go of it.
enum ClientSide {
    Hyper(hyper::upgrade::OnUpgrade),
    Parked(Arc<Idle>),
}

/// The client's side of a switched connection, once ready.
enum ClientReady {
    Hyper(hyper::upgrade::OnUpgrade),
    Parked(tokio::sync::oneshot::Receiver<Prefixed<tokio::net::TcpStream>>),
}

impl ClientSide {
    fn ready(self) -> ClientReady {
        match self {
            ClientSide::Hyper(u) => ClientReady::Hyper(u),
            ClientSide::Parked(idle) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                *idle.upgrade.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
                ClientReady::Parked(rx)
            }
        }
    }
}

/// Joins an upgraded client connection with the backend's until either
/// ends, the backend's drain deadline closes it, or the tier stops. Counts
/// as an open connection of the listener and of the backend meanwhile.
async fn join(
    client: ClientReady,
    backend: hyper::upgrade::OnUpgrade,
    mut release: Release,
    stats: Arc<ListenerStats>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    stats.active.fetch_add(1, Relaxed);
    add(&stats.upgrades, 1);
    match client {
        ClientReady::Hyper(c) => {
            if let (Ok(c), Ok(b)) = tokio::join!(c, backend) {
                pipe(TokioIo::new(c), TokioIo::new(b), &release, &stats, stop).await;
            }
        }
        ClientReady::Parked(c) => {
            if let (Ok(c), Ok(b)) = tokio::join!(c, backend) {
                pipe(c, TokioIo::new(b), &release, &stats, stop).await;
            }
        }
    }
    release.release();
    stats.active.fetch_sub(1, Relaxed);
}

/// Copies both ways between a switched client connection and the backend's.
async fn pipe<C, B>(
    mut c: C,
    mut b: B,
    release: &Release,
    stats: &ListenerStats,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut kill = release.backend.kill.subscribe();
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut c, &mut b) => {
            if let Ok((up, down)) = r {
                add(&release.backend.stats.bytes_up, up);
                add(&release.backend.stats.bytes_down, down);
            }
        }
        _ = kill.changed() => {
            add(&stats.drain_closed, 1);
            add(&release.backend.stats.drain_closed, 1);
        }
        _ = stop.wait_for(|s| *s) => {}
    }
}

async fn one_try(
    tier: &Tier,
    plan: &HttpPlan,
    pool: Upstream<'_>,
    group: &Arc<Group>,
    backend: Arc<Backend>,
    up: Request<UpBody>,
    tunnel: Tunnel<'_>,
) -> Try {
    let started = Instant::now();
    let fail = |why: &str| {
        let now = tier.now_ms();
        let mut st = group.lock();
        st.balancer.release(&backend.id);
        super::note_failure(&mut st.balancer, &backend, now, why);
    };
    match tokio::time::timeout(plan.response_timeout, pool.request(&backend, up)).await {
        Err(_) => {
            fail("no response headers in time");
            add(&backend.stats.http_timeouts, 1);
            Try::Done(small(
                StatusCode::GATEWAY_TIMEOUT,
                "the backend did not answer in time",
            ))
        }
        Ok(Err(e)) => {
            let body = tunnel
                .client_body
                .as_ref()
                .map_or(BODY_OK, |f| f.load(std::sync::atomic::Ordering::Relaxed));
            if body != BODY_OK {
                // The client's fault: the backend is not blamed.
                group.lock().balancer.release(&backend.id);
                add(&tunnel.stats.body_timeouts, u64::from(body == BODY_TIMEOUT));
                return Try::Done(if body == BODY_TIMEOUT {
                    small(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request body was not received in time",
                    )
                } else {
                    small(StatusCode::BAD_REQUEST, "the request body was broken off")
                });
            }
            if e.is_stale() {
                group.lock().balancer.release(&backend.id);
                tracing::debug!(backend = %backend.id, "{e}");
                return Try::Stale(small(
                    StatusCode::BAD_GATEWAY,
                    "the backend closed the connection the request went out on",
                ));
            }
            add(&backend.stats.connect_errors, u64::from(e.is_connect()));
            fail(&e.to_string());
            add(&backend.stats.http_errors, 1);
            Try::Again(small(
                StatusCode::BAD_GATEWAY,
                "the backend could not be reached or broke the connection",
            ))
        }
        Ok(Ok((mut resp, lease))) => {
            let now = tier.now_ms();
            let status = resp.status().as_u16();
            let class = usize::from(status / 100).clamp(1, 5) - 1;
            add(&backend.stats.http_responses[class], 1);
            {
                let mut st = group.lock();
                st.balancer
                    .record_latency(&backend.id, started.elapsed(), now);
                if status >= 500 {
                    super::note_failure(
                        &mut st.balancer,
                        &backend,
                        now,
                        &format!("status {status}"),
                    );
                } else {
                    st.balancer.record_success(&backend.id, now);
                }
                st.check_outliers(now);
            }
            let switched_to = resp.headers().get(header::UPGRADE).cloned();
            strip_hop_by_hop(resp.headers_mut());
            if plan.via {
                let all = match resp
                    .headers()
                    .get(header::VIA)
                    .and_then(|v| v.to_str().ok())
                {
                    Some(prev) => format!("{prev}, 1.1 geolb"),
                    None => "1.1 geolb".to_string(),
                };
                if let Ok(v) = HeaderValue::from_str(&all) {
                    resp.headers_mut().insert(header::VIA, v);
                }
            }
            let guard = Release {
                group: group.clone(),
                backend,
                done: false,
                t0: tier.t0,
            };
            if status == 101 {
                // Switching protocols: join the connections in a task that
                // holds the backend's active count; the client gets the 101.
                let Some((_, client_up)) = tunnel.client.take() else {
                    return Try::Done(small(
                        StatusCode::BAD_GATEWAY,
                        "the backend switched protocols without being asked",
                    ));
                };
                let backend_up = hyper::upgrade::on(&mut resp);
                let (mut parts, _) = resp.into_parts();
                // Upgrade and Connection were stripped as hop-by-hop: a 101
                // needs them back (RFC 9110 §7.8).
                if let Some(p) = switched_to {
                    parts.headers.insert(header::UPGRADE, p);
                }
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                tokio::spawn(join(
                    client_up.ready(),
                    backend_up,
                    guard,
                    tunnel.stats.clone(),
                    tunnel.tier.shutdown.clone(),
                ));
                return Try::Done(Response::from_parts(
                    parts,
                    Either::Right(Full::new(Bytes::new())),
                ));
            }
            let (parts, body) = resp.into_parts();
            let tracked = Tracked {
                body,
                guard,
                idle: plan.response_timeout,
                timer: None,
                lease,
            };
            let r = Response::from_parts(parts, Either::Left(tracked));
            if plan.retry_on.contains(&status) {
                Try::Again(r)
            } else {
                Try::Done(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::plan::RulePlan;

    fn plan(rules: Vec<RulePlan>) -> HttpPlan {
        HttpPlan {
            rules,
            forwarded_for: ForwardedFor::Append,
            trusted_proxies: Vec::new(),
            forwarded: true,
            via: true,
            request_id: Some("x-request-id".into()),
            header_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            drain_window: Duration::from_secs(1),
            retries: 1,
            retry_on: vec![503],
            rate_limit: None,
            tls: None,
            engine: crate::tier::plan::Http1Engine::Native,
        }
    }

    fn rule(host: Option<&str>, path: Option<&str>, header: Option<(&str, &str)>) -> RulePlan {
        RulePlan {
            name: None,
            host: host.map(str::to_string),
            path_prefix: path.map(str::to_string),
            header: header.map(|(a, b)| (a.to_string(), b.to_string())),
            action: Action::Group("g".into()),
        }
    }

    #[test]
    fn rules_match_in_order_on_host_wildcard_path_prefix_and_header() {
        let p = plan(vec![
            rule(Some("api.example.com"), Some("/v2"), None),
            rule(Some("*.example.com"), None, Some(("x-canary", "1"))),
            rule(Some("*.example.com"), None, None),
        ]);
        let none = HeaderMap::new();
        let mut canary = HeaderMap::new();
        canary.insert("x-canary", HeaderValue::from_static("1"));
        assert_eq!(
            route_for(&p, Some("api.example.com"), "/v2/x", &none),
            Some(0)
        );
        assert_eq!(
            route_for(&p, Some("api.example.com"), "/v1", &canary),
            Some(1)
        );
        assert_eq!(route_for(&p, Some("www.example.com"), "/", &none), Some(2));
        // The wildcard covers names under the suffix, not the suffix itself.
        assert_eq!(route_for(&p, Some("example.com"), "/", &none), None);
        assert_eq!(route_for(&p, Some("badexample.com"), "/", &none), None);
        assert_eq!(route_for(&p, None, "/", &none), None);
    }

    /// RFC 9110 §7.6.1: Connection and the fields it names, and the other
    /// hop-by-hop fields, are not forwarded.
    #[test]
    fn rfc9110_7_2_the_host_is_the_authority_or_host_header_without_port_lower_case() {
        let host = |uri: &str, h: Option<&str>| {
            let mut b = Request::builder().uri(uri);
            if let Some(h) = h {
                b = b.header(header::HOST, h);
            }
            host_of(&b.body(()).expect("request"))
        };
        assert_eq!(
            host("/", Some("WWW.Example.com:8080")).as_deref(),
            Some("www.example.com")
        );
        assert_eq!(
            host("/", Some("example.com.")).as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host("/", Some("[2001:DB8::1]:443")).as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(
            host("http://api.example.com:81/x", Some("other")).as_deref(),
            Some("api.example.com")
        );
        assert_eq!(host("/", None), None);
    }

    /// RFC 9112 §3.2: an invalid Host value is a 400, so a quote or a
    /// parameter never reaches the `Forwarded` element.
    #[test]
    fn rfc9112_3_2_a_host_that_is_not_host_and_port_is_refused() {
        let req = |h: &'static [u8]| {
            Request::builder()
                .uri("/")
                .header(header::HOST, HeaderValue::from_bytes(h).expect("value"))
                .body(())
                .expect("request")
        };
        for bad in [
            &b"a\";for=1.2.3.4"[..],
            b"user@www.example.com",
            b"www.example.com:80:80",
            b"a b",
            b"www.example.com:port",
        ] {
            assert!(
                admit(&req(bad)).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [&b"www.example.com:8080"[..], b"[2001:db8::1]:443", b""] {
            assert!(
                admit(&req(good)).is_ok(),
                "{}",
                String::from_utf8_lossy(good)
            );
        }
    }

    /// RFC 9112 §6.1, §6.3: body framing the next hop could read another
    /// way is refused rather than forwarded.
    #[test]
    fn rfc9112_6_3_content_length_twice_not_digits_or_beside_transfer_encoding_is_refused() {
        let req = |fields: &[(&str, &str)]| {
            let mut b = Request::builder()
                .uri("/")
                .header(header::HOST, "a.example");
            for (n, v) in fields {
                b = b.header(*n, *v);
            }
            admit(&b.body(()).expect("request"))
        };
        assert!(req(&[("content-length", "5")]).is_ok());
        assert!(req(&[("transfer-encoding", "chunked")]).is_ok());
        for bad in [
            &[("content-length", "5"), ("content-length", "5")][..],
            &[("content-length", "")][..],
            &[("content-length", "+5")][..],
            &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
        ] {
            assert!(req(bad).is_err(), "{bad:?}");
        }
    }

    /// RFC 9112 §3.2.2: a proxy replaces the Host of an absolute-form
    /// request with the target's authority (the host it was routed by).
    #[test]
    fn rfc9112_3_2_2_the_target_authority_replaces_the_host_header() {
        let p = plan(Vec::new());
        let client: SocketAddr = "192.0.2.7:1".parse().expect("addr");
        let head = |uri: &str, host: Option<&str>| {
            let version = match host {
                Some(_) => Version::HTTP_11,
                None => Version::HTTP_2,
            };
            let mut b = Request::builder().uri(uri).version(version);
            if let Some(h) = host {
                b = b.header(header::HOST, h);
            }
            let req = b.body(()).expect("request");
            let routed = admit(&req).expect("admitted");
            let (mut parts, ()) = req.into_parts();
            forward_head(&p, &mut parts, client, routed.as_deref());
            parts.headers
        };
        let h = head("http://api.example.com:81/x", Some("admin.internal"));
        assert_eq!(h.get_all(header::HOST).iter().count(), 1);
        assert_eq!(h[header::HOST], "api.example.com:81");
        assert_eq!(h["x-forwarded-host"], "api.example.com:81");
        let h = head("http://user@api.example.com/x", None);
        assert_eq!(h[header::HOST], "api.example.com");
        // Origin form: the client's Host, port and case kept.
        let h = head("/x", Some("WWW.example.com:8080"));
        assert_eq!(h[header::HOST], "WWW.example.com:8080");
    }

    #[test]
    fn rfc9110_7_6_1_hop_by_hop_fields_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarding_headers_append_or_replace_and_rfc7239_quotes_ipv6() {
        let mut p = plan(Vec::new());
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let v6: SocketAddr = "[2001:db8::7]:5000".parse().expect("addr");
        forwarding(&p, &mut h, v6, Some("www.example.com"), Version::HTTP_11);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 2001:db8::7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "www.example.com");
        assert_eq!(
            h[header::FORWARDED],
            "for=\"[2001:db8::7]\";proto=http;host=\"www.example.com\""
        );
        assert_eq!(h[header::VIA], "1.1 geolb");
        assert_eq!(h["x-request-id"].len(), 32);
        p.forwarded_for = ForwardedFor::Replace;
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        let v4: SocketAddr = "192.0.2.7:1".parse().expect("addr");
        forwarding(&p, &mut h, v4, None, Version::HTTP_11);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-request-id"], "abc");
        // Append, but only from trusted proxies: anyone else's list and
        // Forwarded are replaced.
        p.forwarded_for = ForwardedFor::Append;
        p.trusted_proxies = vec!["10.9.0.0/16".parse().expect("net")];
        let spoofed = || {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
            h.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
            h
        };
        let mut h = spoofed();
        forwarding(&p, &mut h, v4, None, Version::HTTP_11);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h[header::FORWARDED], "for=192.0.2.7;proto=http");
        let proxy: SocketAddr = "[::ffff:10.9.1.1]:1".parse().expect("addr");
        let mut h = spoofed();
        forwarding(&p, &mut h, proxy, None, Version::HTTP_11);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.9.1.1");
        assert_eq!(h[header::FORWARDED], "for=1.2.3.4, for=10.9.1.1;proto=http");
    }
}

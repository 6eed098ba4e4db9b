//! The native HTTP/2 server (RFC 9113) for client connections to HTTP
//! listeners on the native engine: h2c by prior knowledge and h2 by ALPN.
//!
//! One task per connection holds the socket, the frame reader, the HPACK
//! decoder (`tier::hpack`), the streams and both directions' flow control.
//! Each stream is one request, served by the native HTTP/1.1 loop
//! (`native::session`) as if it had come on a connection of its own: the
//! stream's request is written as an HTTP/1.1 head (pseudo-headers to the
//! request line and `Host`, `Cookie` fields joined, a body of unknown length
//! chunked) into the stream's pipe (`StreamIo`), and the HTTP/1.1 response
//! the loop writes back is turned into HEADERS and DATA frames (the body
//! de-chunked). Routing, limits, persistence, retries, timeouts, passive
//! health and the access log are the native loop's, so HTTP/1.1 and
//! HTTP/2 clients get the same answers. The streams' futures are polled by
//! the connection's task (no task, channel or lock shared between tasks
//! per request).
//!
//! Bounds: at most `MAX_STREAMS` streams at once, streams reset by the
//! client included until their requests end (a rapid reset cannot start
//! more backend requests than that); request bodies by a 64 KiB window per
//! stream and 1 MiB per connection; header blocks by `MAX_BLOCK`; output by
//! reading no more from a client that does not read its answers
//! (`OUT_HIGH`), and a connection that cannot send for `response_timeout`
//! is closed.
//!
//! Trailers go both ways: a request's, after a body of unknown length, as
//! the chunked body's trailer section; a chunked response's as a HEADERS
//! frame ending the stream (framing, routing and control fields dropped,
//! RFC 9110 §6.5.1). A response the loop breaks off (the backend failed
//! mid-body) resets its stream, so that a body without a length does not
//! look whole.
//!
//! Not here: server push, RFC 8441 extended CONNECT, priorities (PRIORITY
//! frames are read and ignored, as RFC 9113 §5.3.2 allows). Listeners whose groups speak TLS or HTTP/2 to their
//! backends use hyper's server (`plain`, `accept_loop`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::hpack;
use super::http::Prefixed;
use super::stats::add;
use super::{ListenerStats, Route, Tier};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
const MAX_STREAMS: usize = 100;
/// The largest frame payload we take (the default SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;
/// A stream's receive window (the default; not changed by our SETTINGS).
const STREAM_WINDOW: i64 = 65_535;
/// The connection's receive window.
const CONN_WINDOW: i64 = 1 << 20;
/// A header block (HEADERS and CONTINUATION) larger than this ends the
/// connection (ENHANCE_YOUR_CALM).
const MAX_BLOCK: usize = 64 * 1024;
/// Decoded header list size (SETTINGS_MAX_HEADER_LIST_SIZE): above it the
/// request gets 431.
const MAX_LIST: usize = 32 * 1024;
/// Decoded header list size past which a connection is ended (the block
/// is decoded whole below it, so the dynamic table stays in step).
const DECODE_LIMIT: usize = 256 * 1024;
/// Output waiting for the client above which no more is read from it.
const OUT_HIGH: usize = 256 * 1024;
/// A stream's response bytes held for the client (flow control) above
/// which its writer waits.
const PIPE_OUT_MAX: usize = 64 * 1024;
/// Streams refused for the concurrency limit after which a client that
/// keeps opening them is told to go away (ENHANCE_YOUR_CALM).
const MAX_REFUSED: u32 = 1000;
/// Request trailer lines passed on to a backend, in bytes.
const MAX_TRAILER_LINES: usize = 8 * 1024;

// Frame types (RFC 9113 §6).
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

// Error codes (RFC 9113 §7).
const NO_ERROR: u32 = 0;
const PROTOCOL_ERROR: u32 = 1;
const INTERNAL_ERROR: u32 = 2;
const FLOW_CONTROL_ERROR: u32 = 3;
const STREAM_CLOSED: u32 = 5;
const FRAME_SIZE_ERROR: u32 = 6;
const REFUSED_STREAM: u32 = 7;
const CANCEL: u32 = 8;
const COMPRESSION_ERROR: u32 = 9;
const ENHANCE_YOUR_CALM: u32 = 11;

/// Whether a listener's HTTP/2 clients are served here: the native engine,
/// and no group it sends to speaks TLS or HTTP/2 to its backends (those
/// go through hyper's client, which hyper's server feeds).
pub fn serves(route: &Route) -> bool {
    let super::Mode::Http(plan) = &route.plan.mode else {
        return false;
    };
    plan.engine == super::plan::Http1Engine::Native
        && !std::iter::once(&route.group)
            .chain(route.rule_groups.iter().flatten())
            .any(|g| g.upstream.load().is_some())
}

/// What a stream's request and its response pass through: the connection
/// on one side, the native HTTP/1.1 loop on the other.
#[derive(Default)]
struct Pipe {
    /// Request bytes (the head, then the body) the loop has not read.
    inb: Vec<u8>,
    at: usize,
    /// The request has ended (END_STREAM).
    eof: bool,
    /// Response bytes the loop wrote, not yet framed.
    outb: Vec<u8>,
    /// The loop shut its side (the response ends with it).
    shut: bool,
    /// The loop broke the response off: the stream is reset.
    aborted: bool,
    /// The stream is gone (reset, or the connection ended): reads end and
    /// writes fail.
    gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn unread(&self) -> usize {
        self.inb.len() - self.at
    }
}

fn lock(p: &Mutex<Pipe>) -> std::sync::MutexGuard<'_, Pipe> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

fn wake(w: &mut Option<Waker>) {
    if let Some(w) = w.take() {
        w.wake();
    }
}

fn keep_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// A stream as the native HTTP/1.1 loop sees it: a client connection that
/// sends one request.
pub struct StreamIo(Arc<Mutex<Pipe>>);

impl AsyncRead for StreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut p = lock(&self.0);
        if p.gone {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        let avail = p.unread();
        if avail > 0 {
            let n = avail.min(buf.remaining());
            let at = p.at;
            buf.put_slice(&p.inb[at..at + n]);
            p.at += n;
            if p.at == p.inb.len() {
                p.inb.clear();
                p.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if p.eof {
            return Poll::Ready(Ok(()));
        }
        keep_waker(&mut p.reader, cx);
        Poll::Pending
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut p = lock(&self.0);
        if p.gone {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        let room = PIPE_OUT_MAX.saturating_sub(p.outb.len());
        if room == 0 {
            keep_waker(&mut p.writer, cx);
            return Poll::Pending;
        }
        let n = room.min(b.len());
        p.outb.extend_from_slice(&b[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        lock(&self.0).shut = true;
        Poll::Ready(Ok(()))
    }
}

impl super::native::Client for StreamIo {
    async fn ready(&mut self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| {
            let mut p = lock(&self.0);
            if p.unread() > 0 || p.eof || p.gone {
                Poll::Ready(Ok(()))
            } else {
                keep_waker(&mut p.reader, cx);
                Poll::Pending
            }
        })
        .await
    }

    fn last_write(&self) {}

    fn multiplexed(&self) -> bool {
        true
    }

    fn abort(&mut self) {
        // (Read by the connection's task, which polls this stream.)
        lock(&self.0).aborted = true;
    }
}

/// How much of a response body is left to frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Content-Length bytes.
    Length(u64),
    /// Chunked: de-chunked here.
    Chunked(Dechunk),
    /// Until the loop shuts its side.
    Close,
}

/// De-chunking state (the loop has checked the framing already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dechunk {
    /// A chunk-size line next.
    Size,
    /// Chunk data bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines, to the empty line.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resp {
    /// The response head has not come yet.
    Head,
    Body(Body),
    /// END_STREAM sent (or the stream reset).
    Done,
}

struct Stream {
    id: u32,
    pipe: Arc<Mutex<Pipe>>,
    /// What we may still send (the client's window for the stream).
    send_window: i64,
    /// What the client may still send us on the stream.
    recv_window: i64,
    /// Body bytes received and not yet credited back.
    owed: i64,
    /// END_STREAM received.
    req_done: bool,
    /// The request body goes to the loop chunked.
    chunked_req: bool,
    /// Content-Length bytes still to come.
    cl_left: Option<u64>,
    /// Body bytes read from DATA frames, passed to the pipe after the read.
    staged: Vec<u8>,
    is_head: bool,
    resp: Resp,
    /// The stream's future ended.
    fut_done: bool,
    /// RST_STREAM sent or received.
    reset: bool,
    /// RST_STREAM received: more frames on it are a stream error.
    peer_reset: bool,
    /// Since when the stream has had response bytes its window holds
    /// back (reset after `response_timeout`).
    blocked_since: Option<Instant>,
}

impl Stream {
    /// The stream is reset (or its connection gone): its request's reads
    /// end and its writes fail, so the request runs out.
    fn cut(&mut self) {
        self.reset = true;
        self.resp = Resp::Done;
        let mut p = lock(&self.pipe);
        p.gone = true;
        wake(&mut p.reader);
        wake(&mut p.writer);
    }
}

/// A header block being read (HEADERS, then CONTINUATION frames).
struct Block {
    stream: u32,
    /// The stream depends on itself (RFC 9113 §5.3.1): reset once the block
    /// is decoded.
    bad: bool,
    end_stream: bool,
    bytes: Vec<u8>,
    since: Instant,
}

/// What the deadlines did.
enum Timers {
    Idle,
    Did,
    /// The connection ends now.
    End,
}

/// One stream's request, served by the native HTTP/1.1 loop: the stream
/// id, and whether the loop handed it to hyper.
async fn stream_request(
    tier: Arc<Tier>,
    route: Arc<Route>,
    stats: Arc<ListenerStats>,
    client: SocketAddr,
    pipe: Arc<Mutex<Pipe>>,
    id: u32,
) -> (u32, bool) {
    let io = Prefixed::new(Vec::new(), StreamIo(pipe));
    let next = super::native::session(&tier, &route, &stats, io, client, true).await;
    (id, matches!(next, super::native::Next::Hyper(_)))
}

/// `stream_request` as a function pointer: its future's type (unnamed) is
/// the connection's type parameter, so the futures live unboxed in their
/// `FuturesUnordered` nodes (one allocation per stream).
type MakeStream<F> =
    fn(Arc<Tier>, Arc<Route>, Arc<ListenerStats>, SocketAddr, Arc<Mutex<Pipe>>, u32) -> F;

struct Conn<S, F> {
    tier: Arc<Tier>,
    route: Arc<Route>,
    stats: Arc<ListenerStats>,
    client: SocketAddr,
    header_timeout: Duration,
    response_timeout: Duration,
    drain_window: Duration,
    sock: S,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    out: Vec<u8>,
    out_at: usize,
    /// Whether `out` got bytes the socket has not been flushed of (TLS).
    unflushed: bool,
    preface_left: usize,
    settings_seen: bool,
    dec: hpack::Decoder,
    block: Option<Block>,
    fields_out: Vec<u8>,
    fields: Vec<hpack::Field>,
    /// Buffers reused from request to request: a header block's bytes,
    /// an HTTP/1.1 head, a response's HPACK block, finished streams'
    /// pipes (no allocation for them per request).
    block_spare: Vec<u8>,
    head_spare: Vec<u8>,
    hpack_spare: Vec<u8>,
    spare_pipes: Vec<Arc<Mutex<Pipe>>>,
    streams: Vec<Stream>,
    futs: FuturesUnordered<F>,
    make: MakeStream<F>,
    last_id: u32,
    conn_send: i64,
    init_send: i64,
    peer_max_frame: usize,
    conn_recv: i64,
    conn_owed: i64,
    refused: u32,
    /// Streams we reset or ended before their request did, most recent
    /// last: the client may still send on them (ignored), while HEADERS on
    /// any other closed stream is a connection error.
    cut: std::collections::VecDeque<u32>,
    /// Streams that ended (the last 64): HEADERS on one is STREAM_CLOSED
    /// (RFC 9113 §5.1), on a stream never opened PROTOCOL_ERROR (§5.1.1).
    closed: std::collections::VecDeque<u32>,
    /// Read end reached, or a connection error: no more frames are read.
    read_closed: bool,
    /// A connection error was sent: the connection ends once `out` is out.
    dead: bool,
    /// GOAWAY received: no new streams from the client.
    goaway_recv: bool,
    /// GOAWAY sent (drain): no new streams taken.
    goaway_sent: bool,
    last_active: Instant,
    /// When the node or listener started closing: GOAWAY at `drain_at`,
    /// the connection closed at `drain_end`.
    drain_at: Option<Instant>,
    drain_end: Option<Instant>,
    stalled_since: Option<Instant>,
    /// When the connection was opened (its SETTINGS are due within
    /// `header_timeout`).
    opened: Instant,
    /// When the connection error was sent (its GOAWAY gets a second to go
    /// out).
    dead_since: Option<Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_at: Option<Instant>,
    stop: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

/// Serves an HTTP/2 client connection (`io` holds what was read of it,
/// the preface first) until it closes.
pub async fn serve<S>(
    tier: Arc<Tier>,
    route: Arc<Route>,
    stats: Arc<ListenerStats>,
    io: Prefixed<S>,
    client: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let super::Mode::Http(plan) = &route.plan.mode else {
        return;
    };
    let (header_timeout, response_timeout, drain_window) = (
        plan.header_timeout,
        plan.response_timeout,
        plan.drain_window,
    );
    let (prefix, sock) = io.into_parts();
    let mut rbuf = vec![0u8; 2 * (MAX_FRAME + 9)];
    let take = prefix.len().min(rbuf.len());
    rbuf[..take].copy_from_slice(&prefix[..take]);
    if take < prefix.len() {
        return;
    }
    let stop = {
        let mut closing = stats.closing.subscribe();
        let mut shutdown = tier.shutdown.clone();
        Box::pin(async move {
            tokio::select! {
                _ = closing.wait_for(|c| *c) => {}
                _ = shutdown.wait_for(|s| *s) => {}
            }
        })
    };
    let now = Instant::now();
    let mut c = Conn {
        tier,
        route,
        stats,
        client,
        header_timeout,
        response_timeout,
        drain_window,
        sock,
        rbuf,
        rstart: 0,
        rend: take,
        out: Vec::with_capacity(4096),
        out_at: 0,
        unflushed: false,
        preface_left: PREFACE.len(),
        settings_seen: false,
        dec: hpack::Decoder::new(4096),
        block: None,
        fields_out: Vec::new(),
        fields: Vec::new(),
        block_spare: Vec::new(),
        head_spare: Vec::new(),
        hpack_spare: Vec::new(),
        spare_pipes: Vec::new(),
        streams: Vec::new(),
        futs: FuturesUnordered::new(),
        make: stream_request,
        last_id: 0,
        conn_send: 65_535,
        init_send: 65_535,
        peer_max_frame: MAX_FRAME,
        conn_recv: CONN_WINDOW,
        conn_owed: 0,
        refused: 0,
        cut: std::collections::VecDeque::new(),
        closed: std::collections::VecDeque::new(),
        read_closed: false,
        dead: false,
        goaway_recv: false,
        goaway_sent: false,
        last_active: now,
        drain_at: None,
        drain_end: None,
        stalled_since: None,
        opened: now,
        dead_since: None,
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        timer_at: None,
        stop: Some(stop),
    };
    // Our SETTINGS (RFC 9113 §3.4), and the connection window raised.
    let mut settings = [0u8; 12];
    settings[..2].copy_from_slice(&3u16.to_be_bytes());
    settings[2..6].copy_from_slice(&(MAX_STREAMS as u32).to_be_bytes());
    settings[6..8].copy_from_slice(&6u16.to_be_bytes());
    settings[8..].copy_from_slice(&(MAX_LIST as u32).to_be_bytes());
    c.frame(SETTINGS, 0, 0, &settings);
    c.window_update(0, (CONN_WINDOW - 65_535) as u32);
    std::future::poll_fn(|cx| c.poll_drive(cx)).await;
    // A lingering close: what the client sent and we did not read would
    // make the kernel reset the connection, and a reset can destroy the
    // GOAWAY before the client reads it.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = c.sock.shutdown().await;
        while let Ok(1..) = c.sock.read(&mut c.rbuf).await {}
    })
    .await;
    // Streams still running learn that the client is gone, and run out
    // (their counters and their backend connections settle as on a
    // closed HTTP/1.1 connection).
    for s in &mut c.streams {
        s.cut();
    }
    if !c.futs.is_empty() {
        let mut futs = std::mem::take(&mut c.futs);
        drop(c);
        tokio::spawn(async move { while futs.next().await.is_some() {} });
    }
}

fn put_head(out: &mut Vec<u8>, len: usize, ty: u8, flags: u8, id: u32) {
    let l = (len as u32).to_be_bytes();
    out.extend_from_slice(&[l[1], l[2], l[3], ty, flags]);
    out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
}

fn be32(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// Connection-specific fields an HTTP/2 request must not carry (RFC 9113
/// §8.2.2), and ones a response loses on the way to HTTP/2.
fn connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

/// A field name as RFC 9113 §8.2.1 takes it: lower case token characters.
fn good_name(n: &[u8]) -> bool {
    !n.is_empty()
        && n.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&c)
        })
}

/// A field value as RFC 9113 §8.2.1 takes it: no NUL, CR or LF, no
/// leading or trailing white space.
fn good_value(v: &[u8]) -> bool {
    !v.iter().any(|&c| c == 0 || c == b'\r' || c == b'\n')
        && !matches!(v.first(), Some(b' ' | b'\t'))
        && !matches!(v.last(), Some(b' ' | b'\t'))
}

/// Why a request's HEADERS did not make a request.
enum Refusal {
    /// Malformed (RFC 9113 §8.1.1): the stream is reset.
    Malformed,
    /// Answered here with this status and text.
    Answer(u16, &'static str),
}

/// A request as the native loop reads it.
struct H1Request {
    is_head: bool,
    cl: Option<u64>,
    chunked: bool,
    continue_100: bool,
}

/// The HTTP/1.1 head a decoded request header block becomes, or None when
/// the request is malformed or answered without a backend (for the fuzz
/// target: whatever comes out must parse as exactly one request head).
pub fn request_head(decoded: &[u8], fields: &[hpack::Field], end_stream: bool) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    to_h1(decoded, fields, end_stream, &mut head).ok()?;
    Some(head)
}

/// A request's trailer fields (decoded from a HEADERS frame that ends the
/// stream) as the trailer lines of a chunked body, without the fields no
/// trailer may carry, values with control characters HTTP/1.1 does not
/// take, and fields past `MAX_TRAILER_LINES` bytes (the backend side takes
/// twice that).
pub fn trailer_lines(decoded: &[u8], fields: &[hpack::Field], lines: &mut Vec<u8>) {
    let start = lines.len();
    for f in fields {
        let (n, v) = (f.name(decoded), f.value(decoded));
        let fits = lines.len() - start + n.len() + v.len() + 4 <= MAX_TRAILER_LINES;
        let plain = v.iter().all(|&c| (c >= 0x20 && c != 0x7f) || c == b'\t');
        if fits && plain && trailer_allowed(n) && good_value(v) {
            lines.extend_from_slice(n);
            lines.extend_from_slice(b": ");
            lines.extend_from_slice(v);
            lines.extend_from_slice(b"\r\n");
        }
    }
}

/// Writes a stream's request as an HTTP/1.1 head.
fn to_h1(
    out: &[u8],
    fields: &[hpack::Field],
    end_stream: bool,
    head: &mut Vec<u8>,
) -> Result<H1Request, Refusal> {
    head.clear();
    let (mut method, mut scheme, mut path, mut authority) = (None, None, None, None);
    let mut host: Option<&[u8]> = None;
    let mut regular = false;
    let mut cl: Option<u64> = None;
    let mut continue_100 = false;
    let mut size = 0usize;
    for f in fields {
        let (n, v) = (f.name(out), f.value(out));
        if let Some(p) = n.strip_prefix(b":") {
            if regular {
                return Err(Refusal::Malformed);
            }
            let slot = match p {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"path" => &mut path,
                b"authority" => &mut authority,
                _ => return Err(Refusal::Malformed),
            };
            if slot.replace(v).is_some() || !good_value(v) {
                return Err(Refusal::Malformed);
            }
            continue;
        }
        regular = true;
        if !good_name(n) || !good_value(v) || connection_specific(n) {
            return Err(Refusal::Malformed);
        }
        match n {
            b"te" if v != b"trailers" => return Err(Refusal::Malformed),
            b"host" if host.replace(v).is_some() => return Err(Refusal::Malformed),
            b"content-length" => {
                let n = std::str::from_utf8(v)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(Refusal::Malformed)?;
                if cl.is_some_and(|c| c != n) {
                    return Err(Refusal::Malformed);
                }
                cl = Some(n);
            }
            b"expect" => continue_100 |= v.eq_ignore_ascii_case(b"100-continue"),
            _ => {}
        }
        size += n.len() + v.len() + 4;
    }
    let method = method.ok_or(Refusal::Malformed)?;
    if method == b"CONNECT" {
        return Err(Refusal::Answer(501, "CONNECT is not served here\n"));
    }
    if path == Some(b"*") {
        // (The HTTP/1.1 loop hands `*` to hyper, which this connection
        // cannot reach.)
        return Err(Refusal::Answer(501, "OPTIONS * is not served here\n"));
    }
    let path = path.filter(|p| !p.is_empty()).ok_or(Refusal::Malformed)?;
    if scheme.is_none() || !(path.starts_with(b"/") || (path == b"*" && method == b"OPTIONS")) {
        return Err(Refusal::Malformed);
    }
    if let (Some(a), Some(h)) = (authority, host) {
        if !a.eq_ignore_ascii_case(h) {
            return Err(Refusal::Malformed);
        }
    }
    if end_stream && cl.is_some_and(|n| n > 0) {
        return Err(Refusal::Malformed);
    }
    let host = authority.or(host);
    if size + path.len() + host.map_or(0, <[u8]>::len) + 64 > super::h1::MAX_HEAD {
        return Err(Refusal::Answer(431, "request header fields too large\n"));
    }
    head.extend_from_slice(method);
    head.push(b' ');
    head.extend_from_slice(path);
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(h) = host {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(h);
        head.extend_from_slice(b"\r\n");
    }
    let mut cookies = 0;
    for f in fields {
        let (n, v) = (f.name(out), f.value(out));
        if n.starts_with(b":") || matches!(n, b"host" | b"expect" | b"te") {
            continue;
        }
        if n == b"cookie" {
            cookies += 1;
            continue;
        }
        head.extend_from_slice(n);
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    if cookies > 0 {
        // One Cookie field, as HTTP/1.1 has it (RFC 9113 §8.2.3).
        head.extend_from_slice(b"cookie: ");
        let mut first = true;
        for f in fields {
            if f.name(out) == b"cookie" {
                if !first {
                    head.extend_from_slice(b"; ");
                }
                first = false;
                head.extend_from_slice(f.value(out));
            }
        }
        head.extend_from_slice(b"\r\n");
    }
    let chunked = cl.is_none() && !end_stream;
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(H1Request {
        is_head: method == b"HEAD",
        cl,
        chunked,
        continue_100,
    })
}

impl<S, F> Conn<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = (u32, bool)>,
{
    fn frame(&mut self, ty: u8, flags: u8, id: u32, payload: &[u8]) {
        put_head(&mut self.out, payload.len(), ty, flags, id);
        self.out.extend_from_slice(payload);
    }

    fn window_update(&mut self, id: u32, n: u32) {
        self.frame(WINDOW_UPDATE, 0, id, &n.to_be_bytes());
    }

    fn pending_out(&self) -> usize {
        self.out.len() - self.out_at
    }

    /// A connection error (RFC 9113 §5.4.1): GOAWAY, then the end.
    fn conn_error(&mut self, code: u32, why: &str) {
        if self.dead {
            return;
        }
        tracing::debug!(client = %self.client, code, "HTTP/2 connection error: {why}");
        if code != NO_ERROR {
            add(&self.stats.h2_connection_errors, 1);
        }
        let mut p = [0u8; 8];
        p[..4].copy_from_slice(&self.last_id.to_be_bytes());
        p[4..].copy_from_slice(&code.to_be_bytes());
        self.frame(GOAWAY, 0, 0, &p);
        self.dead = true;
        self.dead_since = Some(Instant::now());
        self.read_closed = true;
        for s in &mut self.streams {
            s.cut();
        }
    }

    /// A stream error (RFC 9113 §5.4.2): RST_STREAM; the stream's request
    /// runs out (the loop sees the client gone).
    fn reset(&mut self, id: u32, code: u32) {
        self.frame(RST_STREAM, 0, id, &code.to_be_bytes());
        match code {
            REFUSED_STREAM => add(&self.stats.h2_refused, 1),
            NO_ERROR => {}
            _ => add(&self.stats.h2_stream_errors, 1),
        }
        self.cut_short(id);
        if let Some(s) = self.streams.iter_mut().find(|s| s.id == id) {
            s.cut();
        }
    }

    /// Remembers a stream the client may still send on (the last 256).
    fn cut_short(&mut self, id: u32) {
        if self.cut.len() == 256 {
            self.cut.pop_front();
        }
        self.cut.push_back(id);
    }

    fn goaway(&mut self, code: u32) {
        let mut p = [0u8; 8];
        p[..4].copy_from_slice(&self.last_id.to_be_bytes());
        p[4..].copy_from_slice(&code.to_be_bytes());
        self.frame(GOAWAY, 0, 0, &p);
        self.goaway_sent = true;
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut again = false;
            // The node or the listener closing: GOAWAY at a random moment
            // within the drain window.
            if let Some(stop) = self.stop.as_mut() {
                if stop.as_mut().poll(cx).is_ready() {
                    self.stop = None;
                    let at = Instant::now() + self.drain_window.mul_f64(fastrand::f64());
                    self.drain_at = Some(at);
                    again = true;
                }
            }
            // Held back while the client does not take its output: reading
            // (and framing more) resumes once the writes make room.
            let mut held = self.pending_out() >= OUT_HIGH;
            if !self.read_closed && !held {
                if self.rend == self.rbuf.len() {
                    self.rbuf.copy_within(self.rstart..self.rend, 0);
                    self.rend -= self.rstart;
                    self.rstart = 0;
                }
                let mut rb = ReadBuf::new(&mut self.rbuf[self.rend..]);
                match Pin::new(&mut self.sock).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_closed = true;
                        } else {
                            self.rend += n;
                            self.process();
                        }
                        again = true;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            while let Poll::Ready(Some((id, hyper))) = self.futs.poll_next_unpin(cx) {
                if let Some(s) = self.streams.iter_mut().find(|s| s.id == id) {
                    s.fut_done = true;
                }
                if hyper && !self.dead {
                    // The request's group speaks TLS or HTTP/2 to its
                    // backends since a reload: the client retries it on a
                    // new connection, which hyper serves.
                    self.reset(id, REFUSED_STREAM);
                    if !self.goaway_sent {
                        self.goaway(NO_ERROR);
                    }
                }
                again = true;
            }
            if self.bridge() {
                again = true;
            }
            held |= self.pending_out() >= OUT_HIGH;
            // Write what is waiting.
            while self.out_at < self.out.len() {
                match Pin::new(&mut self.sock).poll_write(cx, &self.out[self.out_at..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(n)) => {
                        self.out_at += n;
                        self.unflushed = true;
                        self.stalled_since = None;
                    }
                    Poll::Pending => break,
                }
            }
            if self.out_at == self.out.len() {
                self.out.clear();
                self.out_at = 0;
                if self.out.capacity() > 64 * 1024 {
                    self.out.shrink_to(4096);
                }
            }
            if self.unflushed {
                match Pin::new(&mut self.sock).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if held && self.pending_out() < OUT_HIGH {
                again = true;
            }
            let flushed = self.out.is_empty() && !self.unflushed;
            if self.dead && flushed {
                return Poll::Ready(());
            }
            if self.streams.is_empty()
                && flushed
                && (self.read_closed || self.goaway_recv || self.goaway_sent)
            {
                return Poll::Ready(());
            }
            match self.timers(cx) {
                Timers::Idle => {}
                Timers::Did => again = true,
                Timers::End => return Poll::Ready(()),
            }
            if !again {
                return Poll::Pending;
            }
        }
    }

    /// Deadlines: the drain, an idle connection, a header block or a
    /// preface that does not finish, output the client does not take (on
    /// the socket: the connection; held back by a stream's window: that
    /// stream), a GOAWAY that cannot go out.
    fn timers(&mut self, cx: &mut Context<'_>) -> Timers {
        let now = Instant::now();
        if self
            .dead_since
            .is_some_and(|t| now >= t + Duration::from_secs(1))
        {
            return Timers::End;
        }
        if !self.dead {
            if self.drain_at.is_some_and(|t| now >= t) && self.drain_end.is_none() {
                if !self.goaway_sent {
                    add(&self.stats.goaway, 1);
                    self.goaway(NO_ERROR);
                }
                self.drain_end = Some(now + self.drain_window.max(Duration::from_secs(1)));
                return Timers::Did;
            }
            if self.drain_end.is_some_and(|t| now >= t) {
                tracing::debug!(client = %self.client, "HTTP/2 connection closed at the end of the drain window");
                self.conn_error(NO_ERROR, "drain window over");
                return Timers::Did;
            }
            // Output the socket does not take.
            if self.pending_out() > 0 {
                let since = *self.stalled_since.get_or_insert(now);
                if now >= since + self.response_timeout {
                    self.conn_error(NO_ERROR, "the client took no output in time");
                    return Timers::Did;
                }
            } else {
                self.stalled_since = None;
            }
            // A stream whose window stays shut.
            let rt = self.response_timeout;
            if let Some(id) = self
                .streams
                .iter()
                .find(|s| !s.reset && s.blocked_since.is_some_and(|t| now >= t + rt))
                .map(|s| s.id)
            {
                tracing::debug!(client = %self.client, id, "HTTP/2 stream's window shut past response_timeout");
                self.reset(id, CANCEL);
                return Timers::Did;
            }
            if let Some(b) = &self.block {
                if now >= b.since + self.header_timeout {
                    add(&self.stats.header_timeouts, 1);
                    self.conn_error(PROTOCOL_ERROR, "header block not finished in time");
                    return Timers::Did;
                }
            }
            if !self.settings_seen && now >= self.opened + self.header_timeout {
                add(&self.stats.header_timeouts, 1);
                self.conn_error(PROTOCOL_ERROR, "no SETTINGS in time");
                return Timers::Did;
            }
            if self.idle() && now >= self.last_active + self.header_timeout {
                add(&self.stats.idle_closed, 1);
                self.goaway(NO_ERROR);
                self.read_closed = true;
                return Timers::Did;
            }
        }
        // The next deadline: each one armed only while its action is still
        // to come (a deadline past that does nothing would spin).
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some(t) = self.dead_since {
            at(t + Duration::from_secs(1));
        } else {
            if let Some(t) = self.drain_at.filter(|_| self.drain_end.is_none()) {
                at(t);
            }
            if let Some(t) = self.drain_end {
                at(t);
            }
            if let Some(s) = self.stalled_since {
                at(s + self.response_timeout);
            }
            for s in &self.streams {
                if let Some(t) = s.blocked_since.filter(|_| !s.reset) {
                    at(t + self.response_timeout);
                }
            }
            if let Some(b) = &self.block {
                at(b.since + self.header_timeout);
            }
            if !self.settings_seen {
                at(self.opened + self.header_timeout);
            }
            if self.idle() {
                at(self.last_active + self.header_timeout);
            }
        }
        let Some(t) = next else {
            return Timers::Idle;
        };
        // Reset only for an earlier deadline: a later one is re-armed when
        // the earlier fires (one timer reset per read saved).
        if self.timer_at.is_none_or(|a| t < a) {
            self.timer_at = Some(t);
            self.timer.as_mut().reset(tokio::time::Instant::from_std(t));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.timer_at = None;
            return Timers::Did;
        }
        Timers::Idle
    }

    /// No stream, no header block: the idle timeout runs.
    fn idle(&self) -> bool {
        self.streams.is_empty() && self.block.is_none() && !self.goaway_sent
    }

    /// Handles the complete frames read.
    fn process(&mut self) {
        if self.preface_left > 0 {
            let have = self.rend - self.rstart;
            let at = PREFACE.len() - self.preface_left;
            let n = have.min(self.preface_left);
            if self.rbuf[self.rstart..self.rstart + n] != PREFACE[at..at + n] {
                self.conn_error(PROTOCOL_ERROR, "no connection preface");
                return;
            }
            self.rstart += n;
            self.preface_left -= n;
            if self.preface_left > 0 {
                return;
            }
        }
        let mut frames = false;
        while !self.dead && self.rend - self.rstart >= 9 {
            let h = &self.rbuf[self.rstart..self.rstart + 9];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (ty, flags) = (h[3], h[4]);
            let id = be32(&h[5..9]) & 0x7fff_ffff;
            if len > MAX_FRAME {
                self.conn_error(
                    FRAME_SIZE_ERROR,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                );
                return;
            }
            if self.rend - self.rstart < 9 + len {
                break;
            }
            let start = self.rstart + 9;
            self.rstart += 9 + len;
            // (The payload is copied out only where it is kept.)
            let payload = start..start + len;
            frames = true;
            if !self.settings_seen && ty != SETTINGS {
                self.conn_error(PROTOCOL_ERROR, "the first frame is not SETTINGS");
                return;
            }
            if self.block.is_some() && ty != CONTINUATION {
                self.conn_error(PROTOCOL_ERROR, "a header block interrupted");
                return;
            }
            // A client's streams are odd; an even one is one we never
            // opened (no push): idle (RFC 9113 §5.1.1).
            if id % 2 == 0
                && id != 0
                && matches!(
                    ty,
                    DATA | HEADERS | RST_STREAM | WINDOW_UPDATE | CONTINUATION
                )
            {
                self.conn_error(PROTOCOL_ERROR, "a frame on an even stream");
                return;
            }
            match ty {
                DATA => self.on_data(flags, id, payload),
                HEADERS => self.on_headers(flags, id, payload),
                PRIORITY => {
                    if id == 0 {
                        self.conn_error(PROTOCOL_ERROR, "PRIORITY on stream 0");
                    } else if len != 5 {
                        self.reset(id, FRAME_SIZE_ERROR);
                    } else if be32(&self.rbuf[payload]) & 0x7fff_ffff == id {
                        // A stream cannot depend on itself (RFC 9113 §5.3.1).
                        self.reset(id, PROTOCOL_ERROR);
                    }
                }
                RST_STREAM => self.on_rst(id, payload),
                SETTINGS => self.on_settings(flags, id, payload),
                PUSH_PROMISE => self.conn_error(PROTOCOL_ERROR, "PUSH_PROMISE from a client"),
                PING => {
                    if id != 0 {
                        self.conn_error(PROTOCOL_ERROR, "PING on a stream");
                    } else if len != 8 {
                        self.conn_error(FRAME_SIZE_ERROR, "PING of a wrong size");
                    } else if flags & ACK == 0 {
                        let mut p = [0u8; 8];
                        p.copy_from_slice(&self.rbuf[payload]);
                        self.frame(PING, ACK, 0, &p);
                    }
                }
                GOAWAY => {
                    if id != 0 {
                        self.conn_error(PROTOCOL_ERROR, "GOAWAY on a stream");
                    } else if len < 8 {
                        self.conn_error(FRAME_SIZE_ERROR, "GOAWAY too short");
                    } else {
                        self.goaway_recv = true;
                    }
                }
                WINDOW_UPDATE => self.on_window_update(id, payload),
                CONTINUATION => self.on_continuation(flags, id, payload),
                _ => {} // Unknown types are ignored (RFC 9113 §4.1).
            }
        }
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        }
        if frames {
            // (Idle counts from the last whole frame: a byte at a time
            // does not keep a connection.)
            self.last_active = Instant::now();
        }
        self.deliver();
    }

    /// The payload of a frame without its padding (PADDED), or None when
    /// the padding is longer than the frame (PROTOCOL_ERROR).
    fn unpad(&self, flags: u8, p: std::ops::Range<usize>) -> Option<std::ops::Range<usize>> {
        if flags & PADDED == 0 {
            return Some(p);
        }
        let pad = usize::from(*self.rbuf[p.clone()].first()?);
        let body = p.start + 1..p.end;
        (pad <= body.len()).then(|| body.start..body.end - pad)
    }

    fn on_data(&mut self, flags: u8, id: u32, payload: std::ops::Range<usize>) {
        let len = payload.len() as i64;
        if id == 0 {
            self.conn_error(PROTOCOL_ERROR, "DATA on stream 0");
            return;
        }
        self.conn_recv -= len;
        if self.conn_recv < 0 {
            self.conn_error(FLOW_CONTROL_ERROR, "DATA past the connection window");
            return;
        }
        let Some(body) = self.unpad(flags, payload) else {
            self.conn_error(PROTOCOL_ERROR, "padding longer than the frame");
            return;
        };
        let Some(i) = self.streams.iter().position(|s| s.id == id) else {
            // A stream closed: its bytes are credited back. One we cut
            // short may still get some (ignored); on any other closed
            // stream it is a stream error (RFC 9113 §6.1).
            self.conn_owed += len;
            if id > self.last_id {
                self.conn_error(PROTOCOL_ERROR, "DATA on an idle stream");
            } else if !self.cut.contains(&id) {
                self.reset(id, STREAM_CLOSED);
            }
            return;
        };
        let s = &self.streams[i];
        if s.req_done || s.reset {
            // Half-closed (remote), or reset by the client: STREAM_CLOSED;
            // reset by us: ignored.
            let ours = s.reset && !s.peer_reset;
            self.conn_owed += len;
            if !ours {
                self.reset(id, STREAM_CLOSED);
            }
            return;
        }
        let s = &mut self.streams[i];
        s.recv_window -= len;
        if s.recv_window < 0 {
            self.conn_owed += len;
            self.reset(id, FLOW_CONTROL_ERROR);
            return;
        }
        // Padding is credited back with the data, to the stream and the
        // connection alike (the client counts it against both windows).
        s.owed += len;
        let n = body.len() as u64;
        if let Some(left) = s.cl_left.as_mut() {
            if n > *left {
                self.reset(id, PROTOCOL_ERROR);
                return;
            }
            *left -= n;
        }
        s.staged.extend_from_slice(&self.rbuf[body]);
        if flags & END_STREAM != 0 {
            if s.cl_left.is_some_and(|l| l > 0) {
                self.reset(id, PROTOCOL_ERROR);
                return;
            }
            self.end_request(i, &[]);
        }
    }

    /// END_STREAM on the request: the staged body, the chunked body's end.
    /// The request's end (with trailer lines for a chunked body).
    fn end_request(&mut self, i: usize, trailers: &[u8]) {
        let s = &mut self.streams[i];
        s.req_done = true;
        let mut p = lock(&s.pipe);
        pass_body(&mut p, &mut s.staged, s.chunked_req);
        if s.chunked_req {
            p.inb.extend_from_slice(b"0\r\n");
            p.inb.extend_from_slice(trailers);
            p.inb.extend_from_slice(b"\r\n");
        }
        p.eof = true;
        wake(&mut p.reader);
    }

    /// Passes the staged request bodies to their pipes.
    fn deliver(&mut self) {
        for s in &mut self.streams {
            if !s.staged.is_empty() && !s.reset {
                let mut p = lock(&s.pipe);
                pass_body(&mut p, &mut s.staged, s.chunked_req);
                wake(&mut p.reader);
            }
        }
    }

    fn on_headers(&mut self, flags: u8, id: u32, payload: std::ops::Range<usize>) {
        if id == 0 {
            self.conn_error(PROTOCOL_ERROR, "HEADERS on stream 0");
            return;
        }
        let Some(mut body) = self.unpad(flags, payload) else {
            self.conn_error(PROTOCOL_ERROR, "padding longer than the frame");
            return;
        };
        let mut bad = false;
        if flags & PRIORITY_FLAG != 0 {
            if body.len() < 5 {
                self.conn_error(FRAME_SIZE_ERROR, "HEADERS too short for its priority");
                return;
            }
            bad = be32(&self.rbuf[body.start..]) & 0x7fff_ffff == id;
            body.start += 5;
        }
        let mut bytes = std::mem::take(&mut self.block_spare);
        bytes.clear();
        bytes.extend_from_slice(&self.rbuf[body]);
        let block = Block {
            stream: id,
            bad,
            end_stream: flags & END_STREAM != 0,
            bytes,
            since: Instant::now(),
        };
        if flags & END_HEADERS != 0 {
            self.whole_block(block);
        } else {
            self.block = Some(block);
        }
    }

    /// A header block complete: handled, its buffer kept for the next.
    fn whole_block(&mut self, block: Block) {
        self.on_block(&block);
        if block.bytes.capacity() <= MAX_BLOCK {
            self.block_spare = block.bytes;
        }
    }

    fn on_continuation(&mut self, flags: u8, id: u32, payload: std::ops::Range<usize>) {
        let Some(mut block) = self.block.take() else {
            self.conn_error(PROTOCOL_ERROR, "CONTINUATION without HEADERS");
            return;
        };
        if block.stream != id {
            self.conn_error(PROTOCOL_ERROR, "CONTINUATION on another stream");
            return;
        }
        if block.bytes.len() + payload.len() > MAX_BLOCK {
            self.conn_error(ENHANCE_YOUR_CALM, "header block too large");
            return;
        }
        block.bytes.extend_from_slice(&self.rbuf[payload]);
        if flags & END_HEADERS != 0 {
            self.whole_block(block);
        } else {
            self.block = Some(block);
        }
    }

    /// A whole header block: a new request, or trailers.
    fn on_block(&mut self, block: &Block) {
        if self.fields_out.capacity() > 64 * 1024 {
            self.fields_out = Vec::new();
        }
        self.fields_out.clear();
        self.fields.clear();
        // Decoded whole (up to DECODE_LIMIT) even when over MAX_LIST, so
        // the dynamic table stays in step with the client's and the
        // request can get its 431.
        let decoded = self.dec.decode(
            &block.bytes,
            DECODE_LIMIT,
            &mut self.fields_out,
            &mut self.fields,
        );
        match decoded {
            Ok(()) => {}
            Err(hpack::Error::TooLarge) => {
                self.conn_error(ENHANCE_YOUR_CALM, "header list past any limit");
                return;
            }
            Err(e) => {
                self.conn_error(COMPRESSION_ERROR, &e.to_string());
                return;
            }
        }
        let list: usize = self
            .fields
            .iter()
            .map(|f| f.name.1 as usize + f.value.1 as usize + 32)
            .sum();
        let too_large = list > MAX_LIST;
        let id = block.stream;
        if let Some(i) = self.streams.iter().position(|s| s.id == id) {
            // Trailers: the request's end (their fields are dropped).
            let s = &self.streams[i];
            if s.reset && !s.peer_reset {
                return;
            }
            if s.req_done || s.peer_reset {
                self.reset(id, STREAM_CLOSED);
                return;
            }
            let pseudo = self
                .fields
                .iter()
                .any(|f| f.name(&self.fields_out).starts_with(b":"));
            if !block.end_stream || pseudo || s.cl_left.is_some_and(|l| l > 0) {
                self.reset(id, PROTOCOL_ERROR);
                return;
            }
            // A chunked body carries them on (a body of known length has
            // no place for them: dropped, as RFC 9110 §6.5.1 allows).
            let mut trailers = Vec::new();
            if s.chunked_req && !too_large {
                trailer_lines(&self.fields_out, &self.fields, &mut trailers);
            }
            self.end_request(i, &trailers);
            return;
        }
        if id <= self.last_id {
            // A stream we cut short: its trailers, decoded (the table) and
            // dropped. One that ended: STREAM_CLOSED (RFC 9113 §5.1). Any
            // other: a stream going backwards (§5.1.1).
            if self.cut.contains(&id) {
                return;
            }
            if self.closed.contains(&id) {
                self.conn_error(STREAM_CLOSED, "HEADERS on a closed stream");
            } else {
                self.conn_error(PROTOCOL_ERROR, "HEADERS on a stream never opened");
            }
            return;
        }
        self.last_id = id;
        if block.bad {
            self.reset(id, PROTOCOL_ERROR);
            return;
        }
        if self.goaway_sent || self.goaway_recv || self.dead {
            self.reset(id, REFUSED_STREAM);
            return;
        }
        if self.streams.len() >= MAX_STREAMS {
            self.refused += 1;
            self.reset(id, REFUSED_STREAM);
            if self.refused > MAX_REFUSED {
                self.conn_error(ENHANCE_YOUR_CALM, "too many streams refused");
            }
            return;
        }
        let req = if too_large {
            Err(Refusal::Answer(431, "request header fields too large\n"))
        } else {
            to_h1(
                &self.fields_out,
                &self.fields,
                block.end_stream,
                &mut self.head_spare,
            )
        };
        let req = match req {
            Ok(r) => r,
            Err(Refusal::Malformed) => {
                add(&self.stats.requests, 1);
                add(&self.stats.responses[3], 1);
                self.reset(id, PROTOCOL_ERROR);
                return;
            }
            Err(Refusal::Answer(status, text)) => {
                add(&self.stats.requests, 1);
                add(
                    &self.stats.responses[usize::from(status / 100).clamp(1, 5) - 1],
                    1,
                );
                self.answer_here(id, status, text, block.end_stream);
                return;
            }
        };
        if req.continue_100 && !block.end_stream {
            let mut b = Vec::with_capacity(4);
            hpack::encode_status(100, &mut b);
            self.frame(HEADERS, END_HEADERS, id, &b);
        }
        add(&self.stats.h2_streams, 1);
        let pipe = self.spare_pipes.pop().unwrap_or_default();
        {
            let mut p = lock(&pipe);
            p.inb.clear();
            p.inb.extend_from_slice(&self.head_spare);
            p.at = 0;
            p.eof = block.end_stream;
            p.outb.clear();
            p.shut = false;
            p.aborted = false;
            p.gone = false;
            p.reader = None;
            p.writer = None;
        }
        self.streams.push(Stream {
            id,
            pipe: pipe.clone(),
            send_window: self.init_send,
            recv_window: STREAM_WINDOW,
            owed: 0,
            req_done: block.end_stream,
            chunked_req: req.chunked,
            cl_left: req.cl,
            staged: Vec::new(),
            is_head: req.is_head,
            resp: Resp::Head,
            fut_done: false,
            reset: false,
            peer_reset: false,
            blocked_since: None,
        });
        let f = (self.make)(
            self.tier.clone(),
            self.route.clone(),
            self.stats.clone(),
            self.client,
            pipe,
            id,
        );
        self.futs.push(f);
    }

    /// A response made here (no stream kept).
    fn answer_here(&mut self, id: u32, status: u16, text: &str, req_done: bool) {
        let mut b = Vec::with_capacity(64);
        hpack::encode_status(status, &mut b);
        hpack::encode_field(b"content-type", b"text/plain", &mut b);
        // The text within the windows, else the head alone.
        let len = text.len() as i64;
        if len <= self.conn_send.min(self.init_send) {
            hpack::encode_field(b"content-length", text.len().to_string().as_bytes(), &mut b);
            self.frame(HEADERS, END_HEADERS, id, &b);
            self.frame(DATA, END_STREAM, id, text.as_bytes());
            self.conn_send -= len;
        } else {
            self.frame(HEADERS, END_HEADERS | END_STREAM, id, &b);
        }
        if !req_done {
            self.frame(RST_STREAM, 0, id, &NO_ERROR.to_be_bytes());
            self.cut_short(id);
        }
    }

    fn on_rst(&mut self, id: u32, payload: std::ops::Range<usize>) {
        if id == 0 {
            self.conn_error(PROTOCOL_ERROR, "RST_STREAM on stream 0");
        } else if payload.len() != 4 {
            self.conn_error(FRAME_SIZE_ERROR, "RST_STREAM of a wrong size");
        } else if id > self.last_id {
            self.conn_error(PROTOCOL_ERROR, "RST_STREAM on an idle stream");
        } else if let Some(s) = self.streams.iter_mut().find(|s| s.id == id) {
            s.cut();
            s.peer_reset = true;
        }
    }

    fn on_settings(&mut self, flags: u8, id: u32, payload: std::ops::Range<usize>) {
        if id != 0 {
            self.conn_error(PROTOCOL_ERROR, "SETTINGS on a stream");
            return;
        }
        if flags & ACK != 0 {
            if !payload.is_empty() {
                self.conn_error(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
            }
            return;
        }
        if payload.len() % 6 != 0 {
            self.conn_error(FRAME_SIZE_ERROR, "SETTINGS of a wrong size");
            return;
        }
        self.settings_seen = true;
        let mut at = payload.start;
        while at < payload.end {
            let key = u16::from_be_bytes([self.rbuf[at], self.rbuf[at + 1]]);
            let v = be32(&self.rbuf[at + 2..]);
            at += 6;
            match key {
                // ENABLE_PUSH
                2 if v > 1 => {
                    self.conn_error(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1");
                    return;
                }
                // INITIAL_WINDOW_SIZE: the change applies to open streams.
                4 => {
                    if v > 0x7fff_ffff {
                        self.conn_error(
                            FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        );
                        return;
                    }
                    let delta = i64::from(v) - self.init_send;
                    self.init_send = i64::from(v);
                    for s in &mut self.streams {
                        s.send_window += delta;
                        if s.send_window > 0x7fff_ffff {
                            self.conn_error(FLOW_CONTROL_ERROR, "a stream window past 2^31-1");
                            return;
                        }
                    }
                }
                // MAX_FRAME_SIZE
                5 => {
                    if !(16_384..=16_777_215).contains(&v) {
                        self.conn_error(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range");
                        return;
                    }
                    self.peer_max_frame = (v as usize).min(64 * 1024);
                }
                // HEADER_TABLE_SIZE (our encoder keeps no table),
                // MAX_CONCURRENT_STREAMS (no push), MAX_HEADER_LIST_SIZE
                // (advisory), unknown settings: nothing to do.
                _ => {}
            }
        }
        self.frame(SETTINGS, ACK, 0, &[]);
    }

    fn on_window_update(&mut self, id: u32, payload: std::ops::Range<usize>) {
        if payload.len() != 4 {
            self.conn_error(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong size");
            return;
        }
        let inc = i64::from(be32(&self.rbuf[payload]) & 0x7fff_ffff);
        if id == 0 {
            if inc == 0 {
                self.conn_error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
                return;
            }
            self.conn_send += inc;
            if self.conn_send > 0x7fff_ffff {
                self.conn_error(FLOW_CONTROL_ERROR, "connection window past 2^31-1");
            }
            return;
        }
        if id > self.last_id {
            self.conn_error(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
            return;
        }
        let Some(s) = self.streams.iter_mut().find(|s| s.id == id) else {
            return;
        };
        if inc == 0 {
            self.reset(id, PROTOCOL_ERROR);
            return;
        }
        s.send_window += inc;
        if s.send_window > 0x7fff_ffff {
            self.reset(id, FLOW_CONTROL_ERROR);
        }
    }

    /// Moves the streams' responses into frames, credits request bodies
    /// back, and lets finished streams go: whether anything was done.
    fn bridge(&mut self) -> bool {
        let mut did = false;
        let mut i = 0;
        while i < self.streams.len() {
            if self.bridge_one(i) {
                did = true;
            }
            let s = &self.streams[i];
            let over = s.fut_done && (s.resp == Resp::Done || s.reset);
            if over {
                if !s.req_done && !s.reset {
                    // Answered before the body ended: the client may stop
                    // sending it (RFC 9113 §8.1).
                    let id = s.id;
                    self.frame(RST_STREAM, 0, id, &NO_ERROR.to_be_bytes());
                    self.cut_short(id);
                }
                let s = self.streams.swap_remove(i);
                if self.closed.len() == 64 {
                    self.closed.pop_front();
                }
                self.closed.push_back(s.id);
                // Bytes it held uncredited go back to the connection.
                self.conn_owed += s.owed;
                // Its pipe serves another stream (unless it grew large).
                if Arc::strong_count(&s.pipe) == 1 && self.spare_pipes.len() < 32 {
                    let small = {
                        let p = lock(&s.pipe);
                        p.inb.capacity() <= 4096 && p.outb.capacity() <= 16 * 1024
                    };
                    if small {
                        self.spare_pipes.push(s.pipe);
                    }
                }
                if self.streams.is_empty() {
                    // Idle from now.
                    self.last_active = Instant::now();
                }
                did = true;
                continue;
            }
            i += 1;
        }
        // The connection's window shared out in turn: the stream first in
        // line goes last next time.
        if self.conn_send <= 0 && self.streams.len() > 1 {
            self.streams.rotate_left(1);
        }
        // The connection window.
        if self.conn_owed >= CONN_WINDOW / 4 || (self.conn_owed > 0 && self.streams.is_empty()) {
            let n = self.conn_owed;
            self.conn_owed = 0;
            self.conn_recv += n;
            if !self.dead {
                self.window_update(0, n as u32);
            }
        }
        did
    }

    fn bridge_one(&mut self, i: usize) -> bool {
        let mut did = false;
        let s = &mut self.streams[i];
        if s.reset {
            return false;
        }
        let pipe = s.pipe.clone();
        let mut p = lock(&pipe);
        // Request body credit: the loop keeps up with the client. Once the
        // request has ended, what the stream holds goes back to the
        // connection at once (its own window no longer matters).
        if s.req_done && s.owed > 0 {
            self.conn_owed += s.owed;
            s.owed = 0;
        }
        let unread = p.unread();
        if !s.req_done
            && s.owed > 0
            && unread <= STREAM_WINDOW as usize / 2
            && (s.owed >= 8192 || unread == 0)
        {
            let n = s.owed;
            s.owed = 0;
            s.recv_window += n;
            self.conn_owed += n;
            let id = s.id;
            self.frame(WINDOW_UPDATE, 0, id, &(n as u32).to_be_bytes());
            did = true;
        }
        let mut at = 0;
        while self.streams[i].resp == Resp::Head {
            let s = &mut self.streams[i];
            // (The loop may add via, set-cookie and connection to a
            // backend's MAX_HEADERS fields.)
            let mut hs = [httparse::EMPTY_HEADER; super::h1::MAX_HEADERS + 8];
            let mut r = httparse::Response::new(&mut hs);
            match r.parse(&p.outb[at..]) {
                Ok(httparse::Status::Complete(len)) => {
                    // (101 cannot be sent over HTTP/2, RFC 9113 §8.6.)
                    let status = r.code.filter(|c| *c >= 100 && *c != 101).unwrap_or(502);
                    // An interim response (103 Early Hints, ...): a
                    // HEADERS frame of its own, the final head next.
                    let interim = status < 200;
                    let mut block = std::mem::take(&mut self.hpack_spare);
                    block.clear();
                    hpack::encode_status(status, &mut block);
                    let mut cl: Option<u64> = None;
                    let mut chunked = false;
                    let mut lower = [0u8; 64];
                    let mut long = Vec::new();
                    for h in r.headers.iter() {
                        let n = h.name.as_bytes();
                        let name: &[u8] = if n.len() <= lower.len() {
                            let l = &mut lower[..n.len()];
                            l.copy_from_slice(n);
                            l.make_ascii_lowercase();
                            l
                        } else {
                            long.clear();
                            long.extend(n.iter().map(u8::to_ascii_lowercase));
                            &long
                        };
                        match name {
                            b"transfer-encoding" => {
                                chunked = h.value.rsplit(|&c| c == b',').next().is_some_and(|v| {
                                    v.trim_ascii().eq_ignore_ascii_case(b"chunked")
                                });
                                continue;
                            }
                            b"content-length" => {
                                cl = std::str::from_utf8(h.value)
                                    .ok()
                                    .and_then(|v| v.trim().parse().ok());
                            }
                            _ => {}
                        }
                        if connection_specific(name) {
                            continue;
                        }
                        if name == b"set-cookie" {
                            hpack::encode_never_indexed(name, h.value, &mut block);
                        } else {
                            hpack::encode_field(name, h.value, &mut block);
                        }
                    }
                    if interim {
                        at += len;
                        let id = s.id;
                        self.headers_frames(id, 0, &block);
                        if block.capacity() <= 64 * 1024 {
                            self.hpack_spare = block;
                        }
                        did = true;
                        continue;
                    }
                    let body = if s.is_head || status == 204 || status == 304 {
                        None
                    } else if chunked {
                        Some(Body::Chunked(Dechunk::Size))
                    } else if let Some(n) = cl {
                        (n > 0).then_some(Body::Length(n))
                    } else {
                        Some(Body::Close)
                    };
                    // With no body to send, whatever follows the head is
                    // dropped (the writer must not wait on it).
                    at = if body.is_none() {
                        p.outb.len()
                    } else {
                        at + len
                    };
                    let id = s.id;
                    s.resp = body.map_or(Resp::Done, Resp::Body);
                    let end = if body.is_none() { END_STREAM } else { 0 };
                    self.headers_frames(id, end, &block);
                    if block.capacity() <= 64 * 1024 {
                        self.hpack_spare = block;
                    }
                    did = true;
                }
                Ok(httparse::Status::Partial) => {
                    if p.outb.len() >= PIPE_OUT_MAX {
                        let id = s.id;
                        drop(p);
                        self.reset(id, INTERNAL_ERROR);
                        return true;
                    }
                    break;
                }
                Err(_) => {
                    let id = s.id;
                    drop(p);
                    self.reset(id, INTERNAL_ERROR);
                    return true;
                }
            }
        }
        let s = &mut self.streams[i];
        let fut_done = s.fut_done;
        if let Resp::Body(mut body) = s.resp {
            let id = s.id;
            loop {
                let avail = p.outb.len() - at;
                let window = self.conn_send.min(self.streams[i].send_window).max(0) as usize;
                // (Not more than the socket takes, either.)
                let room = OUT_HIGH.saturating_sub(self.pending_out());
                let max = window.min(self.peer_max_frame).min(room);
                match &mut body {
                    Body::Length(left) => {
                        let n = piece(avail, max, *left);
                        if n == 0 {
                            break;
                        }
                        *left -= n as u64;
                        let end = if *left == 0 { END_STREAM } else { 0 };
                        self.data(i, end, &p.outb[at..at + n]);
                        at += n;
                        did = true;
                        if *left == 0 {
                            self.streams[i].resp = Resp::Done;
                            break;
                        }
                    }
                    Body::Close => {
                        let n = avail.min(max);
                        if n == 0 {
                            if avail == 0 && p.aborted {
                                drop(p);
                                self.reset(id, INTERNAL_ERROR);
                                return true;
                            }
                            if avail == 0 && (p.shut || fut_done) {
                                self.data(i, END_STREAM, &[]);
                                self.streams[i].resp = Resp::Done;
                                did = true;
                            }
                            break;
                        }
                        self.data(i, 0, &p.outb[at..at + n]);
                        at += n;
                        did = true;
                    }
                    Body::Chunked(dc) => {
                        let rest = &p.outb[at..];
                        match dc {
                            Dechunk::Size => {
                                let Some(nl) = rest.iter().position(|&c| c == b'\n') else {
                                    break;
                                };
                                let line = &rest[..nl];
                                let hex = line
                                    .split(|&c| c == b';' || c == b'\r')
                                    .next()
                                    .unwrap_or_default()
                                    .trim_ascii();
                                let size = std::str::from_utf8(hex)
                                    .ok()
                                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                                let Some(size) = size else {
                                    drop(p);
                                    self.reset(id, INTERNAL_ERROR);
                                    return true;
                                };
                                at += nl + 1;
                                *dc = if size == 0 {
                                    Dechunk::Trailers
                                } else {
                                    Dechunk::Data(size)
                                };
                            }
                            Dechunk::Data(left) => {
                                let n = piece(avail, max, *left);
                                if n == 0 {
                                    break;
                                }
                                *left -= n as u64;
                                let done = *left == 0;
                                self.data(i, 0, &p.outb[at..at + n]);
                                at += n;
                                did = true;
                                if done {
                                    *dc = Dechunk::DataEnd;
                                }
                            }
                            Dechunk::DataEnd => {
                                let skip = if rest.starts_with(b"\r\n") {
                                    2
                                } else if rest.starts_with(b"\n") {
                                    1
                                } else if rest.len() < 2 {
                                    break;
                                } else {
                                    drop(p);
                                    self.reset(id, INTERNAL_ERROR);
                                    return true;
                                };
                                at += skip;
                                *dc = Dechunk::Size;
                            }
                            Dechunk::Trailers => {
                                // The whole trailer section (the loop
                                // bounds it at 16 KiB): a HEADERS frame
                                // ending the stream, or an empty DATA one.
                                let mut hs = [httparse::EMPTY_HEADER; 64];
                                let mut block = std::mem::take(&mut self.hpack_spare);
                                block.clear();
                                let len = match httparse::parse_headers(rest, &mut hs) {
                                    Ok(httparse::Status::Complete((len, fields))) => {
                                        trailer_block(fields, &mut block);
                                        len
                                    }
                                    Ok(httparse::Status::Partial) => break,
                                    // (More fields than a trailer section
                                    // has any need of: dropped.)
                                    Err(_) => match section_end(rest) {
                                        Some(len) => len,
                                        None => break,
                                    },
                                };
                                at += len;
                                if block.is_empty() {
                                    self.data(i, END_STREAM, &[]);
                                } else {
                                    self.headers_frames(id, END_STREAM, &block);
                                }
                                if block.capacity() <= 64 * 1024 {
                                    self.hpack_spare = block;
                                }
                                self.streams[i].resp = Resp::Done;
                                did = true;
                                break;
                            }
                        }
                    }
                }
            }
            if let Resp::Body(_) = self.streams[i].resp {
                self.streams[i].resp = Resp::Body(body);
            }
        }
        // A stream whose response has ended takes nothing more from the
        // loop (whatever it writes is dropped, so that it never waits on
        // a pipe no one drains).
        if self.streams[i].resp == Resp::Done {
            at = p.outb.len();
        }
        if at > 0 {
            p.outb.drain(..at);
            wake(&mut p.writer);
        }
        // Response bytes the windows hold back: since when.
        let window_open = self.conn_send.min(self.streams[i].send_window) > 0;
        let s = &mut self.streams[i];
        if matches!(s.resp, Resp::Body(_)) && !p.outb.is_empty() && !window_open {
            s.blocked_since.get_or_insert_with(Instant::now);
        } else {
            s.blocked_since = None;
        }
        // The loop ended with the response unfinished (and nothing more
        // can come): the stream is reset.
        let could_send = window_open && self.pending_out() < OUT_HIGH;
        let s = &self.streams[i];
        if s.fut_done && s.resp != Resp::Done && !s.reset && !did {
            let stuck = match s.resp {
                Resp::Head => true,
                Resp::Body(Body::Close) => false,
                _ => p.outb.is_empty() || could_send,
            };
            if stuck {
                let id = s.id;
                drop(p);
                self.reset(id, INTERNAL_ERROR);
                return true;
            }
        }
        did
    }

    fn data(&mut self, i: usize, flags: u8, b: &[u8]) {
        let id = self.streams[i].id;
        self.conn_send -= b.len() as i64;
        self.streams[i].send_window -= b.len() as i64;
        self.frame(DATA, flags, id, b);
    }

    /// A header block as HEADERS and CONTINUATION frames.
    fn headers_frames(&mut self, id: u32, end_stream: u8, block: &[u8]) {
        let max = self.peer_max_frame;
        let mut chunks = block.chunks(max.max(1));
        let first = chunks.next().unwrap_or_default();
        let last = block.len() <= max;
        self.frame(
            HEADERS,
            end_stream | if last { END_HEADERS } else { 0 },
            id,
            first,
        );
        let mut rest = chunks.peekable();
        while let Some(c) = rest.next() {
            let end = if rest.peek().is_none() {
                END_HEADERS
            } else {
                0
            };
            self.frame(CONTINUATION, end, id, c);
        }
    }
}

/// The next DATA frame's size: what is there, what the windows and the
/// socket take, what is left of the body (or of the chunk).
fn piece(avail: usize, max: usize, left: u64) -> usize {
    avail
        .min(max)
        .min(usize::try_from(left).unwrap_or(usize::MAX))
}

/// A trailer section's fields as an HPACK block: names in lower case,
/// without the fields a trailer must not carry (RFC 9110 §6.5.1: framing,
/// routing) or HTTP/2 forbids (connection-specific ones).
fn trailer_block(fields: &[httparse::Header<'_>], block: &mut Vec<u8>) {
    let mut lower = [0u8; 64];
    for f in fields {
        let n = f.name.as_bytes();
        if n.len() > lower.len() {
            continue;
        }
        let name = &mut lower[..n.len()];
        name.copy_from_slice(n);
        name.make_ascii_lowercase();
        if !trailer_allowed(name) || !good_value(f.value) {
            continue;
        }
        hpack::encode_field(name, f.value, block);
    }
}

/// Whether a field may travel as a trailer (RFC 9110 §6.5.1: not framing,
/// routing, authentication or control fields; not connection-specific).
fn trailer_allowed(name: &[u8]) -> bool {
    good_name(name)
        && !connection_specific(name)
        && !matches!(
            name,
            b"content-length"
                | b"content-type"
                | b"content-encoding"
                | b"content-range"
                | b"host"
                | b"te"
                | b"trailer"
                | b"authorization"
                | b"set-cookie"
                | b"cookie"
                | b"cache-control"
                | b"expect"
                | b"max-forwards"
                | b"pragma"
                | b"range"
        )
}

/// The length of a field section up to and with its empty line.
fn section_end(b: &[u8]) -> Option<usize> {
    if b.starts_with(b"\r\n") {
        return Some(2);
    }
    if b.starts_with(b"\n") {
        return Some(1);
    }
    let mut i = 0;
    while let Some(nl) = b[i..].iter().position(|&c| c == b'\n') {
        let after = i + nl + 1;
        if b[after..].starts_with(b"\r\n") {
            return Some(after + 2);
        }
        if b[after..].starts_with(b"\n") {
            return Some(after + 1);
        }
        i = after;
    }
    None
}

/// Appends staged body bytes to a pipe (as one chunk when the body goes on
/// chunked).
fn pass_body(p: &mut Pipe, staged: &mut Vec<u8>, chunked: bool) {
    if staged.is_empty() {
        return;
    }
    if chunked {
        let mut hex = [0u8; 18];
        let n = {
            use std::io::Write;
            let mut w = &mut hex[..];
            let _ = write!(w, "{:x}\r\n", staged.len());
            18 - w.len()
        };
        p.inb.extend_from_slice(&hex[..n]);
        p.inb.extend_from_slice(staged);
        p.inb.extend_from_slice(b"\r\n");
    } else {
        p.inb.extend_from_slice(staged);
    }
    staged.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_section_ends_at_its_empty_line() {
        assert_eq!(section_end(b"\r\nrest"), Some(2));
        assert_eq!(section_end(b"\n"), Some(1));
        assert_eq!(section_end(b"a: 1\r\nb: 2\r\n\r\nnext"), Some(14));
        assert_eq!(section_end(b"a: 1\nb: 2\n\n"), Some(11));
        assert_eq!(section_end(b"a: 1\r\nb: 2\r\n"), None);
        assert_eq!(section_end(b""), None);
    }

    #[test]
    fn request_trailer_lines_end_a_chunked_body_exactly() {
        let mut b = Vec::new();
        for (n, v) in [
            (&b"x-sum"[..], &b"42"[..]),
            (b"host", b"elsewhere"),
            (b"x-bell", b"a\x07b"),
            (b"x-big", &[b'y'; 9000][..]),
            (b"x-tab", b"a\tb"),
        ] {
            hpack::encode_field(n, v, &mut b);
        }
        let (mut out, mut fields) = (Vec::new(), Vec::new());
        hpack::Decoder::new(4096)
            .decode(&b, 1 << 16, &mut out, &mut fields)
            .expect("our own block");
        let mut end = b"0\r\n".to_vec();
        trailer_lines(&out, &fields, &mut end);
        end.extend_from_slice(b"\r\n");
        assert_eq!(end, b"0\r\nx-sum: 42\r\nx-tab: a\tb\r\n\r\n");
        let mut c = super::super::h1::Chunked::default();
        assert_eq!(c.feed(&end), Ok(end.len()));
        assert!(c.is_done());
    }

    #[test]
    fn rfc9110_6_5_1_trailers_lose_framing_routing_and_connection_fields() {
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let b = b"Grpc-Status: 0\r\nContent-Length: 5\r\nHost: x\r\nConnection: close\r\nX-Sum: 9\r\n\r\n";
        let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(b, &mut fields)
        else {
            panic!("a field section");
        };
        let mut block = Vec::new();
        trailer_block(fields, &mut block);
        let (mut out, mut got) = (Vec::new(), Vec::new());
        hpack::Decoder::new(4096)
            .decode(&block, 1 << 16, &mut out, &mut got)
            .expect("our own block");
        let names: Vec<_> = got.iter().map(|f| f.name(&out).to_vec()).collect();
        assert_eq!(names, [b"grpc-status".to_vec(), b"x-sum".to_vec()]);
    }
}

//! The server's own dnstap log: sampled queries and responses, off the
//! answer path.
//!
//! The answer path calls [`Tap::log`] once per reply. Unsampled, that is a
//! thread-local add and compare: no lock, no allocation. Sampled, the query
//! and the reply are copied into one buffer and handed to a bounded queue
//! with `try_send` (std's bounded channel: lock-free); when the queue is
//! full the message is dropped and counted, so the answer path never
//! waits. One thread per log encodes the protobuf and writes the frames
//! through a buffer (flushed whenever the queue is empty), to a file —
//! reopened on reload, for rotation, like the tier's access log — or to a
//! Unix socket with the bidirectional Frame Streams handshake, reconnecting
//! with backoff (messages that arrive while it is down are counted lost).

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::encode::{put_frame, Record};
use super::fstrm::{self, Control};
use super::proto::MessageType;
use crate::config::DnstapConfig;

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Socket(PathBuf),
}

/// A checked `[dnstap]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TapPlan {
    pub target: Target,
    pub sample: f64,
    pub queries: bool,
    pub responses: bool,
    pub identity: String,
    pub version: String,
    pub queue: usize,
}

impl TapPlan {
    /// Checks a `[dnstap]` section.
    pub fn new(c: &DnstapConfig) -> Result<TapPlan, String> {
        let target = match (&c.path, &c.socket) {
            (Some(p), None) => {
                if !p
                    .parent()
                    .is_some_and(|d| d.as_os_str().is_empty() || d.is_dir())
                {
                    return Err(format!(
                        "dnstap.path {}: its directory does not exist",
                        p.display()
                    ));
                }
                Target::File(p.clone())
            }
            (None, Some(s)) => Target::Socket(s.clone()),
            _ => return Err("dnstap: set one of path (a file) or socket (a Unix socket)".into()),
        };
        if !(c.sample > 0.0 && c.sample <= 1.0) {
            return Err(format!(
                "dnstap.sample {}: expected more than 0, at most 1",
                c.sample
            ));
        }
        if !c.queries && !c.responses {
            return Err(
                "dnstap: queries and responses are both off; remove [dnstap] to log nothing".into(),
            );
        }
        if c.queue == 0 || c.queue > 1_000_000 {
            return Err(format!("dnstap.queue {}: expected 1 to 1000000", c.queue));
        }
        Ok(TapPlan {
            target,
            sample: c.sample,
            queries: c.queries,
            responses: c.responses,
            identity: c.identity.clone().unwrap_or_default(),
            version: c
                .version
                .clone()
                .unwrap_or_else(|| format!("geolb {}", env!("CARGO_PKG_VERSION"))),
            queue: c.queue,
        })
    }
}

/// A sampled exchange, queued for the writer.
struct Sampled {
    tcp: bool,
    client: SocketAddr,
    server: SocketAddr,
    time: SystemTime,
    /// The query, then the response.
    bytes: Vec<u8>,
    query_len: usize,
}

enum Msg {
    Exchange(Box<Sampled>),
    /// Reopen the file (rotation), with the reloaded settings.
    Reopen(Box<TapPlan>),
}

/// The log's counters.
#[derive(Debug, Default)]
pub struct TapStats {
    /// Messages (queries and responses) written.
    pub written: AtomicU64,
    /// Sampled exchanges dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Messages lost to write or connection errors.
    pub errors: AtomicU64,
}

/// The counters as the status API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct TapStatus {
    pub target: String,
    pub sample: f64,
    pub written: u64,
    pub dropped: u64,
    pub errors: u64,
}

/// A running dnstap log. Dropping the last handle ends the stream (STOP)
/// and the writer thread.
pub struct Tap {
    /// Where it writes: fixed for the writer's life.
    pub target: Target,
    /// `sample` as a fraction of 2^32 (changed by a reload).
    step: AtomicU64,
    sample: std::sync::Mutex<f64>,
    tx: SyncSender<Msg>,
    pub stats: Arc<TapStats>,
}

thread_local! {
    /// Per thread: the sampling accumulator (in 2^-32 units).
    static ACC: Cell<u64> = const { Cell::new(0) };
}

/// Why the log cannot start.
#[derive(Debug, thiserror::Error)]
#[error("dnstap log {path}: {source}")]
pub struct OpenError {
    path: String,
    source: io::Error,
}

impl Tap {
    /// Opens the file (a socket is connected by the writer thread) and
    /// starts the writer.
    pub fn start(plan: &TapPlan) -> Result<Tap, OpenError> {
        let err = |source| OpenError {
            path: match &plan.target {
                Target::File(p) | Target::Socket(p) => p.display().to_string(),
            },
            source,
        };
        let file = match &plan.target {
            Target::File(p) => Some(open_file(p).map_err(err)?),
            Target::Socket(_) => None,
        };
        let (tx, rx) = sync_channel(plan.queue);
        let stats = Arc::new(TapStats::default());
        let (p, s) = (plan.clone(), stats.clone());
        std::thread::Builder::new()
            .name("geolb-dnstap".into())
            .spawn(move || Writer::new(p, s).run(file, rx))
            .map_err(err)?;
        Ok(Tap {
            target: plan.target.clone(),
            step: AtomicU64::new(step(plan.sample)),
            sample: std::sync::Mutex::new(plan.sample),
            tx,
            stats,
        })
    }

    /// The answer path's hook, once per reply: when this exchange is
    /// sampled, copies it onto the queue (or counts it dropped).
    #[inline]
    /// `server` (the address the query came to) is asked for only when
    /// the exchange is sampled.
    pub fn log(
        &self,
        tcp: bool,
        client: SocketAddr,
        server: impl FnOnce() -> SocketAddr,
        query: &[u8],
        reply: &[u8],
    ) {
        let step = self.step.load(Ordering::Relaxed);
        let sampled = ACC.with(|a| {
            let v = a.get() + step;
            if v >= 1 << 32 {
                a.set(v - (1 << 32));
                true
            } else {
                a.set(v);
                false
            }
        });
        if sampled {
            self.queue(tcp, client, server(), query, reply);
        }
    }

    #[cold]
    fn queue(&self, tcp: bool, client: SocketAddr, server: SocketAddr, query: &[u8], reply: &[u8]) {
        let mut bytes = Vec::with_capacity(query.len() + reply.len());
        bytes.extend_from_slice(query);
        bytes.extend_from_slice(reply);
        let s = Sampled {
            tcp,
            client,
            server,
            time: SystemTime::now(),
            bytes,
            query_len: query.len(),
        };
        match self.tx.try_send(Msg::Exchange(Box::new(s))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes a reloaded plan for the same target (its queue size stays)
    /// and reopens the file (after a rotation); a socket stays connected.
    pub fn reopen(&self, plan: &TapPlan) {
        self.step.store(step(plan.sample), Ordering::Relaxed);
        *self.sample.lock().unwrap_or_else(|p| p.into_inner()) = plan.sample;
        let _ = self.tx.try_send(Msg::Reopen(Box::new(plan.clone())));
    }

    pub fn status(&self) -> TapStatus {
        TapStatus {
            target: match &self.target {
                Target::File(p) => p.display().to_string(),
                Target::Socket(p) => format!("unix:{}", p.display()),
            },
            sample: *self.sample.lock().unwrap_or_else(|p| p.into_inner()),
            written: self.stats.written.load(Ordering::Relaxed),
            dropped: self.stats.dropped.load(Ordering::Relaxed),
            errors: self.stats.errors.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("target", &self.target).finish()
    }
}

fn step(sample: f64) -> u64 {
    (sample * 4_294_967_296.0) as u64
}

/// The log a reload serves with: the running one while `[dnstap]` names
/// the same file or socket (taking the new settings; the file reopened:
/// rotation), a new one for another target, none when it is gone. One
/// writer per target, so two never append to the same file.
pub fn renew(
    current: Option<&Arc<Tap>>,
    plan: Option<&TapPlan>,
) -> Result<Option<Arc<Tap>>, OpenError> {
    match (plan, current) {
        (None, _) => Ok(None),
        (Some(want), Some(cur)) if cur.target == want.target => {
            cur.reopen(want);
            Ok(Some(cur.clone()))
        }
        (Some(want), _) => Tap::start(want).map(|t| Some(Arc::new(t))),
    }
}

fn open_file(p: &PathBuf) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
}

/// Where the frames go: a buffered file or a connected socket.
enum Sink {
    File(io::BufWriter<std::fs::File>),
    Socket(io::BufWriter<UnixStream>),
    /// The socket is down; reconnect at this instant.
    Down(Instant, Duration),
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

struct Writer {
    plan: TapPlan,
    stats: Arc<TapStats>,
    frame: Vec<u8>,
}

impl Writer {
    fn new(plan: TapPlan, stats: Arc<TapStats>) -> Writer {
        Writer {
            plan,
            stats,
            frame: Vec::with_capacity(1024),
        }
    }

    fn start_file(&mut self, f: std::fs::File) -> Sink {
        let mut w = io::BufWriter::with_capacity(64 * 1024, f);
        self.frame.clear();
        fstrm::put_control(&mut self.frame, Control::Start, Some(fstrm::CONTENT_TYPE));
        if w.write_all(&self.frame).is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        Sink::File(w)
    }

    /// Connects and runs the handshake: READY → ACCEPT → START.
    fn connect(&mut self, path: &PathBuf) -> io::Result<Sink> {
        let mut s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        self.frame.clear();
        fstrm::put_control(&mut self.frame, Control::Ready, Some(fstrm::CONTENT_TYPE));
        s.write_all(&self.frame)?;
        let mut esc = [0u8; 4];
        s.read_exact(&mut esc)?;
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        if esc != [0; 4] {
            return Err(bad(
                "the collector did not answer READY with a control frame".into(),
            ));
        }
        let (kind, types) = fstrm::read_control(&mut s).map_err(|e| bad(e.to_string()))?;
        if kind != Control::Accept || !types.iter().any(|t| t == fstrm::CONTENT_TYPE) {
            return Err(bad(format!(
                "the collector answered {kind:?} without accepting dnstap"
            )));
        }
        self.frame.clear();
        fstrm::put_control(&mut self.frame, Control::Start, Some(fstrm::CONTENT_TYPE));
        s.write_all(&self.frame)?;
        Ok(Sink::Socket(io::BufWriter::with_capacity(64 * 1024, s)))
    }

    fn reconnect(&mut self, path: &PathBuf, backoff: Duration) -> Sink {
        match self.connect(path) {
            Ok(s) => {
                tracing::info!(socket = %path.display(), "dnstap: connected");
                s
            }
            Err(e) => {
                if backoff == BACKOFF_MIN {
                    tracing::warn!(socket = %path.display(), error = %e, "dnstap: cannot connect; retrying with backoff");
                }
                Sink::Down(Instant::now() + backoff, (backoff * 2).min(BACKOFF_MAX))
            }
        }
    }

    fn run(mut self, file: Option<std::fs::File>, rx: Receiver<Msg>) {
        let mut sink = match (file, self.plan.target.clone()) {
            (Some(f), _) => self.start_file(f),
            (None, Target::Socket(p)) => self.reconnect(&p, BACKOFF_MIN),
            (None, Target::File(_)) => return,
        };
        loop {
            if let (Sink::Down(at, backoff), Target::Socket(p)) = (&sink, &self.plan.target) {
                if Instant::now() >= *at {
                    let (b, p) = (*backoff, p.clone());
                    sink = self.reconnect(&p, b);
                }
            }
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(_) => {
                    // Nothing queued: what was written goes out now.
                    if let Err(e) = flush(&mut sink) {
                        sink = self.lost(sink, e);
                    }
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            match msg {
                Msg::Exchange(s) => {
                    let n = self.encode(&s);
                    if n == 0 {
                        continue;
                    }
                    let r = match &mut sink {
                        Sink::File(w) => w.write_all(&self.frame),
                        Sink::Socket(w) => w.write_all(&self.frame),
                        Sink::Down(..) => {
                            self.stats.errors.fetch_add(n, Ordering::Relaxed);
                            continue;
                        }
                    };
                    match r {
                        Ok(()) => {
                            self.stats.written.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            self.stats.errors.fetch_add(n, Ordering::Relaxed);
                            sink = self.lost(sink, e);
                        }
                    }
                }
                Msg::Reopen(plan) => {
                    self.plan = *plan;
                    if let (Sink::File(_), Target::File(p)) = (&sink, &self.plan.target) {
                        let p = p.clone();
                        self.finish(&mut sink);
                        match open_file(&p) {
                            Ok(f) => sink = self.start_file(f),
                            Err(e) => {
                                tracing::error!(path = %p.display(), "dnstap log not reopened: {e}")
                            }
                        }
                    }
                }
            }
        }
        self.finish(&mut sink);
    }

    /// Encodes an exchange's messages into `self.frame`; returns how many.
    fn encode(&mut self, s: &Sampled) -> u64 {
        self.frame.clear();
        let (query, reply) = s.bytes.split_at(s.query_len.min(s.bytes.len()));
        let (id, ver) = (self.plan.identity.as_bytes(), self.plan.version.as_bytes());
        let mut n = 0;
        let record = |kind, message| Record {
            kind,
            tcp: s.tcp,
            client: s.client,
            server: s.server,
            query_time: s.time,
            response_time: (kind == MessageType::AuthResponse).then_some(s.time),
            message,
        };
        if self.plan.queries {
            put_frame(
                &mut self.frame,
                id,
                ver,
                &record(MessageType::AuthQuery, query),
            );
            n += 1;
        }
        if self.plan.responses {
            put_frame(
                &mut self.frame,
                id,
                ver,
                &record(MessageType::AuthResponse, reply),
            );
            n += 1;
        }
        n
    }

    /// A write failed: a file keeps going (the next write may succeed), a
    /// socket is reconnected.
    fn lost(&mut self, sink: Sink, e: io::Error) -> Sink {
        match sink {
            Sink::Socket(_) => {
                tracing::warn!(error = %e, "dnstap: the collector's socket failed; reconnecting");
                Sink::Down(Instant::now() + BACKOFF_MIN, BACKOFF_MIN)
            }
            other => {
                tracing::warn!(error = %e, "dnstap: write failed");
                other
            }
        }
    }

    /// Ends the stream: STOP (and, over a socket, FINISH awaited).
    fn finish(&mut self, sink: &mut Sink) {
        self.frame.clear();
        fstrm::put_control(&mut self.frame, Control::Stop, None);
        match sink {
            Sink::File(w) => {
                let _ = w.write_all(&self.frame).and_then(|()| w.flush());
            }
            Sink::Socket(w) => {
                if w.write_all(&self.frame).and_then(|()| w.flush()).is_ok() {
                    let mut esc = [0u8; 4];
                    if w.get_mut().read_exact(&mut esc).is_ok() {
                        let _ = fstrm::read_control(w.get_mut());
                    }
                }
            }
            Sink::Down(..) => {}
        }
    }
}

fn flush(sink: &mut Sink) -> io::Result<()> {
    match sink {
        Sink::File(w) => w.flush(),
        Sink::Socket(w) => w.flush(),
        Sink::Down(..) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnstap::fstrm::{FrameReader, Next};
    use crate::dnstap::reader::{Decoder, Direction, Frame};

    fn plan(target: Target, sample: f64, queue: usize) -> TapPlan {
        TapPlan {
            target,
            sample,
            queries: true,
            responses: true,
            identity: "ns1".into(),
            version: "geolb".into(),
            queue,
        }
    }

    const QUERY: &[u8] =
        b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x00\x00\x01\x00\x01";

    fn wait(f: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !f() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn frames(bytes: &[u8]) -> Vec<Direction> {
        let mut r = FrameReader::start(bytes).expect("start");
        let (mut buf, mut d, mut out) = (Vec::new(), Decoder::default(), Vec::new());
        loop {
            match r.next(&mut buf).expect("frame") {
                Next::Data => match d.decode(&buf).expect("decode") {
                    Frame::Query(l) => out.push(l.direction),
                    Frame::Other => panic!("other"),
                },
                Next::Restart => {}
                Next::TooLong(_) => panic!("too long"),
                Next::Stop => return out,
            }
        }
    }

    #[test]
    fn a_quarter_sampled_is_every_fourth_exchange_and_a_rotation_starts_a_new_stream() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tap.fstrm");
        let p = plan(Target::File(path.clone()), 0.25, 1000);
        let tap = Tap::start(&p).expect("start");
        let (c, s): (SocketAddr, SocketAddr) = (
            "192.0.2.1:5300".parse().expect("a"),
            "127.0.0.1:53".parse().expect("a"),
        );
        let mut reply = QUERY.to_vec();
        reply[2] = 0x84;
        for _ in 0..100 {
            tap.log(false, c, || s, QUERY, &reply);
        }
        wait(|| tap.stats.written.load(Ordering::Relaxed) == 50);
        assert_eq!(tap.status().written, 50);
        // Rotation: the file moved away, then reopened.
        let moved = dir.path().join("tap.fstrm.1");
        std::fs::rename(&path, &moved).expect("mv");
        tap.reopen(&p);
        for _ in 0..4 {
            tap.log(true, c, || s, QUERY, &reply);
        }
        wait(|| tap.stats.written.load(Ordering::Relaxed) == 52);
        drop(tap);
        wait(|| std::fs::read(&path).is_ok_and(|b| b.ends_with(&[0, 0, 0, 4, 0, 0, 0, 3])));
        let old = frames(&std::fs::read(&moved).expect("old"));
        assert_eq!(old.len(), 50);
        assert_eq!(old[..2], [Direction::Query, Direction::Response]);
        assert_eq!(frames(&std::fs::read(&path).expect("new")).len(), 2);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_never_waits() {
        let dir = tempfile::tempdir().expect("dir");
        let tap = Tap::start(&plan(Target::File(dir.path().join("t")), 1.0, 1)).expect("start");
        let c: SocketAddr = "192.0.2.1:5300".parse().expect("a");
        for _ in 0..10_000 {
            tap.log(false, c, || c, QUERY, QUERY);
        }
        let st = &tap.stats;
        wait(|| {
            st.written.load(Ordering::Relaxed) / 2 + st.dropped.load(Ordering::Relaxed) == 10_000
        });
        assert!(
            st.dropped.load(Ordering::Relaxed) > 0,
            "a queue of one overflows"
        );
    }

    #[test]
    fn a_socket_gets_the_bidirectional_handshake_and_is_reconnected() {
        use std::os::unix::net::UnixListener;
        let dir = tempfile::tempdir().expect("dir");
        let sock = dir.path().join("tap.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        let tap = Tap::start(&plan(Target::Socket(sock.clone()), 1.0, 100)).expect("start");
        // The collector: READY in, ACCEPT out, START in, then frames.
        let collect = |listener: &UnixListener| {
            let (mut s, _) = listener.accept().expect("accept");
            let mut esc = [0u8; 4];
            s.read_exact(&mut esc).expect("escape");
            let (kind, types) = fstrm::read_control(&mut s).expect("ready");
            assert_eq!(
                (kind, types),
                (Control::Ready, vec![fstrm::CONTENT_TYPE.to_vec()])
            );
            let mut accept = Vec::new();
            fstrm::put_control(&mut accept, Control::Accept, Some(fstrm::CONTENT_TYPE));
            s.write_all(&accept).expect("accept");
            s
        };
        let mut s = collect(&listener);
        let c: SocketAddr = "192.0.2.1:5300".parse().expect("a");
        tap.log(true, c, || c, QUERY, QUERY);
        {
            let mut r = FrameReader::start(&mut s).expect("START");
            let mut buf = Vec::new();
            assert_eq!(r.next(&mut buf).expect("query"), Next::Data);
            assert_eq!(r.next(&mut buf).expect("response"), Next::Data);
        }
        // The collector goes away and comes back: the writer reconnects.
        drop(s);
        let mut s2 = None;
        for _ in 0..50 {
            tap.log(true, c, || c, QUERY, QUERY);
            listener.set_nonblocking(true).expect("nb");
            if let Ok((x, _)) = listener.accept() {
                x.set_nonblocking(false).expect("blocking");
                s2 = Some(x);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut s = s2.expect("reconnected");
        let mut esc = [0u8; 4];
        s.read_exact(&mut esc).expect("escape");
        assert_eq!(
            fstrm::read_control(&mut s).expect("ready").0,
            Control::Ready
        );
        assert!(tap.stats.errors.load(Ordering::Relaxed) > 0);
    }
}

//! The HTTP access log: one line per request (text or JSON), off unless
//! `[tier] access_log` is set. Requests never wait for it: each line goes
//! into a bounded queue (`try_send`) and a thread of its own formats and
//! writes through a buffer, flushed whenever the queue is empty; when the
//! queue is full the line is dropped and counted. A reload reopens the file
//! (log rotation: move it, then `kill -HUP`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Where and how the log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogPlan {
    /// A file (appended to), or `-` for standard output.
    pub path: PathBuf,
    pub json: bool,
    /// Lines queued at most before new ones are dropped.
    pub queue: usize,
}

/// One request.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub listener: String,
    pub client: SocketAddr,
    pub method: String,
    pub host: Option<String>,
    pub target: String,
    pub version: String,
    pub status: u16,
    pub route: Option<String>,
    pub backend: Option<SocketAddr>,
    pub retries: u32,
    /// Request in to response headers out.
    pub ms: f64,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

impl Entry {
    fn text(&self, out: &mut Vec<u8>) {
        let _ = writeln!(
            out,
            "{} {} {} \"{} {} {}\" {} host={} route={} backend={} retries={} ms={:.3}",
            humantime::format_rfc3339_millis(self.time),
            self.listener,
            self.client,
            self.method,
            self.target,
            self.version,
            self.status,
            self.host.as_deref().unwrap_or("-"),
            self.route.as_deref().unwrap_or("-").replace(' ', "_"),
            self.backend.map_or("-".to_string(), |b| b.to_string()),
            self.retries,
            self.ms
        );
    }
}

enum Msg {
    Line(Box<Entry>),
    Reopen,
}

/// A running access log.
pub struct AccessLog {
    pub plan: AccessLogPlan,
    tx: SyncSender<Msg>,
    pub written: Arc<AtomicU64>,
    pub dropped: AtomicU64,
}

/// Why the access log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("access log {path}: {source}")]
pub struct OpenError {
    path: String,
    source: std::io::Error,
}

fn open(path: &PathBuf) -> std::io::Result<Box<dyn Write + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdout()));
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Box::new(f))
}

impl AccessLog {
    /// Opens the file and starts the writer thread.
    pub fn start(plan: &AccessLogPlan) -> Result<AccessLog, OpenError> {
        let file = open(&plan.path).map_err(|source| OpenError {
            path: plan.path.display().to_string(),
            source,
        })?;
        let (tx, rx) = sync_channel(plan.queue.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let (p, w) = (plan.clone(), written.clone());
        std::thread::Builder::new()
            .name("geolb-access-log".into())
            .spawn(move || writer(p, file, rx, w))
            .map_err(|source| OpenError {
                path: plan.path.display().to_string(),
                source,
            })?;
        Ok(AccessLog {
            plan: plan.clone(),
            tx,
            written,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues a line; drops (and counts) it when the queue is full.
    pub fn log(&self, e: Entry) {
        match self.tx.try_send(Msg::Line(Box::new(e))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reopens the file (after a rotation).
    pub fn reopen(&self) {
        let _ = self.tx.try_send(Msg::Reopen);
    }
}

fn writer(
    plan: AccessLogPlan,
    file: Box<dyn Write + Send>,
    rx: Receiver<Msg>,
    written: Arc<AtomicU64>,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    let mut line = Vec::with_capacity(512);
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(_) => {
                // Nothing queued: what was written goes out now.
                let _ = out.flush();
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        match msg {
            Msg::Line(e) => {
                line.clear();
                if plan.json {
                    if serde_json::to_writer(&mut line, &*e).is_ok() {
                        line.push(b'\n');
                    }
                } else {
                    e.text(&mut line);
                }
                if out.write_all(&line).is_ok() {
                    written.fetch_add(1, Ordering::Relaxed);
                }
            }
            Msg::Reopen => {
                let _ = out.flush();
                match open(&plan.path) {
                    Ok(f) => out = std::io::BufWriter::with_capacity(64 * 1024, f),
                    Err(e) => {
                        tracing::error!(path = %plan.path.display(), "access log not reopened: {e}")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16) -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_000_000_123),
            listener: "eu-http".into(),
            client: "198.51.100.7:5342".parse().expect("addr"),
            method: "GET".into(),
            host: Some("www.example.com".into()),
            target: "/a?b=1".into(),
            version: "HTTP/1.1".into(),
            status,
            route: Some("path prefix /a".into()),
            backend: Some("127.0.1.11:9001".parse().expect("addr")),
            retries: 1,
            ms: 1.5,
        }
    }

    #[test]
    fn lines_are_written_as_text_or_json_and_a_full_queue_drops_and_counts() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("access.log");
        let log = AccessLog::start(&AccessLogPlan {
            path: path.clone(),
            json: false,
            queue: 1024,
        })
        .expect("open");
        log.log(entry(200));
        let wait = |n: u64| {
            let t0 = std::time::Instant::now();
            while log.written.load(Ordering::Relaxed) < n && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait(1);
        std::thread::sleep(Duration::from_millis(50));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "2026-11-30T00:53:20.123Z eu-http 198.51.100.7:5342 \"GET /a?b=1 HTTP/1.1\" 200 host=www.example.com route=path_prefix_/a backend=127.0.1.11:9001 retries=1 ms=1.500\n"
        );
        let jpath = dir.path().join("access.json");
        let jlog = AccessLog::start(&AccessLogPlan {
            path: jpath.clone(),
            json: true,
            queue: 1,
        })
        .expect("open");
        for _ in 0..10_000 {
            jlog.log(entry(503));
        }
        let t0 = std::time::Instant::now();
        while jlog.written.load(Ordering::Relaxed) + jlog.dropped.load(Ordering::Relaxed) < 10_000
            && t0.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            jlog.dropped.load(Ordering::Relaxed) > 0,
            "a queue of 1 overflows"
        );
        drop(jlog);
        std::thread::sleep(Duration::from_millis(100));
        let first = std::fs::read_to_string(&jpath).expect("read");
        let v: serde_json::Value =
            serde_json::from_str(first.lines().next().expect("a line")).expect("json");
        assert_eq!(v["status"], 503);
        assert_eq!(v["time"], "2026-11-30T00:53:20.123Z");
        assert_eq!(v["backend"], "127.0.1.11:9001");
    }
}

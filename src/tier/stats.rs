//! Counters of listeners and backends: atomics written by connections,
//! read by the API and the metrics. A backend's counters are kept by
//! identity, so they survive reloads.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the connect-latency histogram.
pub const CONNECT_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Upper bounds (seconds) of the HTTP latency histogram (request in to
/// response headers out).
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One HTTP route's counters (a rule of a listener, or its default),
/// kept across reloads by the route's label.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub requests: AtomicU64,
    /// Responses by status class (1xx..5xx).
    pub responses: [AtomicU64; 5],
    /// Requests between arrival and response headers now.
    pub active: AtomicU32,
    /// Tries beyond the first.
    pub retries: AtomicU64,
    /// Latencies per `LATENCY_BUCKETS` bound (+Inf last), and their sum.
    pub latency: [AtomicU64; 14],
    pub latency_sum_us: AtomicU64,
}

impl RouteStats {
    pub fn done(&self, status: u16, took: Duration, retries: u32) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        add(&self.responses[class], 1);
        add(&self.retries, u64::from(retries));
        let s = took.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        add(&self.latency[i], 1);
        add(
            &self.latency_sum_us,
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
    }
}

/// A listener's counters.
#[derive(Debug, Default)]
pub struct ListenerStats {
    pub active: AtomicU32,
    /// HTTP: idle keep-alive connections holding no buffers now (waiting
    /// for their next request).
    pub parked: AtomicU32,
    pub accepted: AtomicU64,
    /// Closed at once: the listener was at its max connections.
    pub refused_max: AtomicU64,
    /// Closed: no backend could take it (all down, at max, or failing).
    pub no_backend: AtomicU64,
    /// Closed: a PROXY header from a peer not in `accept_proxy_from`.
    pub proxy_untrusted: AtomicU64,
    /// Closed: a trusted peer sent no valid PROXY header in time.
    pub proxy_invalid: AtomicU64,
    /// Connect attempts beyond the first.
    pub retries: AtomicU64,
    /// How connections ended (idle timeout, drain deadline, error).
    pub idle_closed: AtomicU64,
    pub drain_closed: AtomicU64,
    pub errors: AtomicU64,
    /// HTTP: requests, and responses by status class (1xx..5xx).
    pub requests: AtomicU64,
    pub responses: [AtomicU64; 5],
    /// HTTP: requests answered 429 (per-client and listener limits).
    pub rate_limited_client: AtomicU64,
    pub rate_limited_listener: AtomicU64,
    /// HTTP: connections switched to another protocol (WebSocket...).
    pub upgrades: AtomicU64,
    /// HTTP: requests whose body did not arrive within `body_timeout` (408).
    pub body_timeouts: AtomicU64,
    /// HTTP: connections whose request head did not arrive within
    /// `header_timeout` once it began (408, then closed).
    pub header_timeouts: AtomicU64,
    /// HTTP: connections told to close (Connection: close / GOAWAY) because
    /// the listener is going away.
    pub goaway: AtomicU64,
    /// HTTP/2 (native server): streams opened.
    pub h2_streams: AtomicU64,
    /// HTTP/2: streams refused (REFUSED_STREAM: past the stream limit, or
    /// after GOAWAY).
    pub h2_refused: AtomicU64,
    /// HTTP/2: streams reset for an error (malformed, flow control, a
    /// window shut too long).
    pub h2_stream_errors: AtomicU64,
    /// HTTP/2: connections ended by a protocol error (GOAWAY with an error
    /// code).
    pub h2_connection_errors: AtomicU64,
    /// Set when the listener is removed: its HTTP connections close within
    /// the drain window.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// HTTP: the parked connections (their deadlines, their closing).
    pub parked_set: super::parked::ParkedSet,
    /// HTTP: backend connections the listener's pool opened.
    pub backend_connects: std::sync::Arc<AtomicU64>,
    /// HTTP: each route's counters by label (read at reloads and by the API).
    pub routes: std::sync::Mutex<std::collections::BTreeMap<String, std::sync::Arc<RouteStats>>>,
    /// HTTPS: handshakes completed and failed.
    pub tls_handshakes: AtomicU64,
    pub tls_handshake_errors: AtomicU64,
}

/// A backend's counters.
#[derive(Debug, Default)]
pub struct BackendStats {
    pub total: AtomicU64,
    pub connect_errors: AtomicU64,
    pub ejections: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Connections closed by the drain deadline.
    pub drain_closed: AtomicU64,
    /// Successful connects per `CONNECT_BUCKETS` bound (+Inf last).
    pub connect_buckets: [AtomicU64; 11],
    pub connect_sum_us: AtomicU64,
    /// HTTP: backend responses by status class (1xx..5xx), requests that
    /// got no response (connect failure, reset) and response timeouts.
    pub http_responses: [AtomicU64; 5],
    pub http_errors: AtomicU64,
    pub http_timeouts: AtomicU64,
}

impl BackendStats {
    pub fn connected(&self, took: Duration) {
        let s = took.as_secs_f64();
        let i = CONNECT_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(CONNECT_BUCKETS.len());
        self.connect_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.connect_sum_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl ListenerStats {
    /// The listener closes (removed, or the node stops): its connections
    /// close within the drain window, the parked ones now.
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.parked_set.close();
    }
}

pub fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

pub fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

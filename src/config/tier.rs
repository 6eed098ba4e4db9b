//! The regional tier's part of the config: `[node]` (which roles this
//! process runs), `[tier]` (defaults), `[listeners.NAME]` (a VIP:port in a
//! region, in front of a group) and `[groups.NAME]` (backends, how they are
//! balanced and checked). Cross-references (regions, monitors, groups) are
//! checked where the tier is compiled (`snapshot::tier`), with the rest of
//! the config, so `geolb check` reports every problem in one pass.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::{de_duration, yes};

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// `[node]`: the roles of this process.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Answer DNS (default true).
    #[serde(default = "yes")]
    pub dns: bool,
    /// Regions whose tier listeners this node runs; absent = every region
    /// that has listeners, `[]` = none (a DNS-only node).
    #[serde(default)]
    pub regions: Option<Vec<String>>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            dns: true,
            regions: None,
        }
    }
}

fn d_connect() -> Duration {
    Duration::from_secs(2)
}
fn d_idle() -> Duration {
    Duration::from_secs(600)
}
fn d_drain() -> Duration {
    Duration::from_secs(30)
}
fn d_max_conns() -> u32 {
    10_000
}
fn d_attempts() -> u32 {
    3
}
fn d_header() -> Duration {
    Duration::from_secs(3)
}

/// `[tier]`: defaults every listener and group starts from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierDefaults {
    /// Time to establish a backend connection before trying another.
    #[serde(default = "d_connect", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// A proxied connection with no bytes either way for this long is closed.
    #[serde(default = "d_idle", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// How long connections to a drained or forced-down backend may run on.
    #[serde(default = "d_drain", deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
    /// Concurrent client connections per listener.
    #[serde(default = "d_max_conns")]
    pub max_connections: u32,
    /// Backends tried per client connection (each at most once).
    #[serde(default = "d_attempts")]
    pub connect_attempts: u32,
    /// Time a trusted peer has to send its PROXY header.
    #[serde(default = "d_header", deserialize_with = "de_duration")]
    pub proxy_header_timeout: Duration,
    /// File whose contents (at least 16 bytes) key the persistence cookies;
    /// give every node behind the same VIP the same file. Absent: a random
    /// key per process start (kept across reloads).
    #[serde(default)]
    pub cookie_secret_file: Option<std::path::PathBuf>,
    /// HTTP access log (off when absent).
    #[serde(default)]
    pub access_log: Option<Spanned<AccessLogConfig>>,
}

/// `[tier] access_log = { path = "/var/log/geolb/access.log", format = "json" }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// A file (appended to; relative to the config), or "-" for standard output.
    pub path: std::path::PathBuf,
    /// "text" (default) or "json".
    #[serde(default)]
    pub format: Option<String>,
    /// Lines queued at most before new ones are dropped (default 65536).
    #[serde(default)]
    pub queue: Option<usize>,
}

impl Default for TierDefaults {
    fn default() -> Self {
        TierDefaults {
            connect_timeout: d_connect(),
            idle_timeout: d_idle(),
            drain_timeout: d_drain(),
            max_connections: d_max_conns(),
            connect_attempts: d_attempts(),
            proxy_header_timeout: d_header(),
            cookie_secret_file: None,
            access_log: None,
        }
    }
}

/// `[listeners.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub region: Spanned<String>,
    /// VIP:port to accept on (a VIP a pool hands out).
    pub bind: Spanned<SocketAddr>,
    /// `tcp` (layer 4).
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// The backend group connections go to.
    pub group: Spanned<String>,
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub idle_timeout: Option<Duration>,
    #[serde(default)]
    pub connect_attempts: Option<u32>,
    /// Peers allowed (and required) to send a PROXY v1/v2 header first; a
    /// PROXY header from any other peer closes the connection.
    #[serde(default)]
    pub accept_proxy_from: Vec<IpNet>,
    // --- mode = "http" ---
    /// Routing rules, in order; the first match wins, else `group`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// `append` (default), `replace` or `off`: the client's X-Forwarded-For.
    #[serde(default)]
    pub forwarded_for: Option<Spanned<String>>,
    /// With `forwarded_for = "append"`: only these peers' X-Forwarded-For
    /// and Forwarded are kept and appended to; anyone else's are replaced
    /// (empty: everyone's are kept).
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Add an RFC 7239 `Forwarded` header.
    #[serde(default)]
    pub forwarded: bool,
    /// Add `Via`.
    #[serde(default)]
    pub via: bool,
    /// Request id header (passed through, or generated): e.g. "x-request-id".
    #[serde(default)]
    pub request_id: Option<String>,
    /// Time a client has for a request's headers, and the longest a
    /// keep-alive connection may sit idle between requests (default 10s).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub header_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub response_timeout: Option<Duration>,
    /// Time a client has to send a whole request body (default 60s; 408).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub body_timeout: Option<Duration>,
    /// When the listener is removed or the node stops, its connections
    /// are told to close (Connection: close / GOAWAY) at random within this
    /// window, then have it again to finish (default 5s).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub drain_window: Option<Duration>,
    /// Extra attempts for replayable requests (default 2).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Backend statuses retried on another backend (default 502, 503, 504).
    #[serde(default)]
    pub retry_on: Option<Vec<u16>>,
    /// Terminate TLS (HTTPS) with these certificates.
    #[serde(default)]
    pub tls: Option<Spanned<ListenerTlsConfig>>,
    /// Requests per second per client address and per listener.
    #[serde(default)]
    pub rate_limit: Option<Spanned<RateLimitConfig>>,
    /// What serves cleartext HTTP/1.1 clients: "native" (default; the
    /// tier's own request loop) or "hyper".
    #[serde(default)]
    pub http1_engine: Option<String>,
}

/// `rate_limit = { per_client = 100, burst = 200, listener = 10000, exempt = [...] }`
/// (requests per second; GCRA, so `burst` requests may come at once).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default)]
    pub per_client: Option<u32>,
    /// Per client (default: one second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
    /// The whole listener.
    #[serde(default)]
    pub listener: Option<u32>,
    #[serde(default)]
    pub listener_burst: Option<u32>,
    /// Clients never limited (monitoring, internal callers).
    #[serde(default)]
    pub exempt: Vec<IpNet>,
}

/// `tls = { certificates = [...], alpn = [...], min_version = "1.2" }` on
/// an HTTP listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificate chains and keys; chosen by SNI, the first is the
    /// default.
    pub certificates: Vec<CertificateConfig>,
    /// ALPN protocols offered, in order (default "h2", "http/1.1").
    #[serde(default)]
    pub alpn: Option<Vec<String>>,
    /// "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: Option<String>,
}

/// A certificate chain (PEM, end-entity first) and its private key (PEM);
/// paths relative to the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    pub cert: Spanned<PathBuf>,
    pub key: Spanned<PathBuf>,
}

/// `tls = true` or `tls = { ca = "...", server_name = "...", verify = true }`
/// on a group: TLS to its backends.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackendTlsConfig {
    /// CA certificates (PEM) to verify the backends against; default the
    /// system roots.
    pub ca: Option<Spanned<PathBuf>>,
    /// The name verified (and sent as SNI); default the backend's address.
    pub server_name: Option<String>,
    /// Verify the backends' certificates (default true).
    pub verify: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendTlsTable {
    #[serde(default)]
    ca: Option<Spanned<PathBuf>>,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default = "yes")]
    verify: bool,
}

/// `true` (system roots), `false` (none) or a table.
fn de_backend_tls<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BackendTlsConfig>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<BackendTlsConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("true, false or a table { ca, server_name, verify }")
        }
        fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<Self::Value, E> {
            Ok(on.then(|| BackendTlsConfig {
                verify: true,
                ..BackendTlsConfig::default()
            }))
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, m: M) -> Result<Self::Value, M::Error> {
            let t = BackendTlsTable::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
            Ok(Some(BackendTlsConfig {
                ca: t.ca,
                server_name: t.server_name,
                verify: t.verify,
            }))
        }
    }
    d.deserialize_any(V)
}

/// One HTTP routing rule: every condition given must match.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Its label in metrics (default: its conditions).
    #[serde(default)]
    pub name: Option<String>,
    /// "api.example.com" or "*.example.com".
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// { name = "x-canary", value = "1" }
    #[serde(default)]
    pub header: Option<HeaderMatch>,
    /// Proxy to this group...
    #[serde(default)]
    pub group: Option<String>,
    /// ...or answer directly.
    #[serde(default)]
    pub respond: Option<RespondConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

/// A fixed response.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// One backend of a group.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: SocketAddr,
    #[serde(default = "one")]
    pub weight: u32,
    /// Serves only when too few primaries are up.
    #[serde(default)]
    pub backup: bool,
    /// Concurrent connections at which it is no longer chosen (0 = no limit).
    #[serde(default)]
    pub max_connections: u32,
    /// Address:port (or a port) to health-check instead of `address`.
    #[serde(default)]
    pub check: Option<String>,
}

fn one() -> u32 {
    1
}

/// Passive ejection of a group's backends.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EjectionConfig {
    /// Consecutive connect failures that eject (0 = off).
    #[serde(default = "d_failures")]
    pub failures: u32,
    #[serde(default = "d_window", deserialize_with = "de_duration")]
    pub window: Duration,
    /// First ejection lasts this long, the n-th n times as long...
    #[serde(default = "d_base", deserialize_with = "de_duration")]
    pub base_time: Duration,
    /// ...up to this.
    #[serde(default = "d_max_time", deserialize_with = "de_duration")]
    pub max_time: Duration,
    /// At most this share of the group is ejected at once (percent).
    #[serde(default = "d_percent")]
    pub max_percent: u8,
    /// Outlier detection by success rate (off unless given).
    #[serde(default)]
    pub success_rate: Option<SuccessRateConfig>,
}

/// `ejection.success_rate`: Envoy's success-rate outlier detection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuccessRateConfig {
    #[serde(default = "d_sr_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(default = "d_sr_requests")]
    pub min_requests: u32,
    #[serde(default = "d_sr_hosts")]
    pub min_hosts: u32,
    #[serde(default = "d_sr_factor")]
    pub stdev_factor: f64,
}

fn d_sr_interval() -> Duration {
    Duration::from_secs(10)
}
fn d_sr_requests() -> u32 {
    100
}
fn d_sr_hosts() -> u32 {
    5
}
fn d_sr_factor() -> f64 {
    1.9
}

fn d_failures() -> u32 {
    5
}
fn d_window() -> Duration {
    Duration::from_secs(10)
}
fn d_base() -> Duration {
    Duration::from_secs(30)
}
fn d_max_time() -> Duration {
    Duration::from_secs(300)
}
fn d_percent() -> u8 {
    50
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            failures: d_failures(),
            window: d_window(),
            base_time: d_base(),
            max_time: d_max_time(),
            max_percent: d_percent(),
            success_rate: None,
        }
    }
}

/// `[groups.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub region: Spanned<String>,
    pub members: Spanned<Vec<BackendConfig>>,
    /// round_robin (default), smooth_wrr, least_conn, p2c, peak_ewma,
    /// random, source_hash, consistent, first.
    #[serde(default)]
    pub algorithm: Option<Spanned<String>>,
    /// Monitor checking every member (from `[monitors]`).
    #[serde(default)]
    pub monitor: Option<Spanned<String>>,
    /// Ramp a backend's weight over this long after it comes up.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub slow_start: Option<Duration>,
    /// Send a PROXY header ("v1" or "v2") to the backends.
    #[serde(default)]
    pub send_proxy: Option<Spanned<String>>,
    /// Backups serve when fewer primaries than this are up (default 1).
    #[serde(default)]
    pub min_primaries_up: Option<u32>,
    /// Percent: below this healthy share, balance over every member.
    #[serde(default)]
    pub panic_threshold: Option<u8>,
    /// `consistent`: bounded load, percent of the average (e.g. 125).
    #[serde(default)]
    pub hash_balance_factor: Option<u32>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub drain_timeout: Option<Duration>,
    #[serde(default)]
    pub ejection: Option<EjectionConfig>,
    /// HTTP retries: at most this share (percent) of recent requests.
    #[serde(default)]
    pub retry_budget: Option<u8>,
    /// HTTP: TLS to the backends (`true`, or a table).
    #[serde(default, deserialize_with = "de_backend_tls")]
    pub tls: Option<BackendTlsConfig>,
    /// HTTP: "http1" (default) or "h2" to the backends (ALPN h2 over TLS,
    /// prior knowledge in cleartext).
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    /// HTTP: keep each client on one backend (cookie, source address or a
    /// hash of part of the request).
    #[serde(default)]
    pub persistence: Option<Spanned<PersistenceConfig>>,
}

/// `persistence = { mode = "cookie" | "source" | "hash", ... }` of a group.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PersistenceConfig {
    pub mode: String,
    /// cookie: its name (default "GEOLB").
    #[serde(default)]
    pub cookie: Option<String>,
    /// cookie: `Max-Age` (absent: a session cookie).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_age: Option<Duration>,
    /// cookie: `HttpOnly` (default true).
    #[serde(default = "yes")]
    pub http_only: bool,
    /// cookie: `Secure`.
    #[serde(default)]
    pub secure: bool,
    /// cookie: `SameSite` = "lax", "strict" or "none".
    #[serde(default)]
    pub same_site: Option<String>,
    /// source: a client unseen this long loses its backend (default 30m).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// source: most clients remembered (default 100000).
    #[serde(default)]
    pub max_entries: Option<u32>,
    /// hash: "header:NAME", "cookie:NAME" or "path".
    #[serde(default)]
    pub on: Option<String>,
    /// A drained backend still takes the requests stuck to it (until the
    /// drain timeout closes it).
    #[serde(default)]
    pub drain_sticky: bool,
}

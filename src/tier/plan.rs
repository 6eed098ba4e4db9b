//! What the tier should run, compiled from the config (by
//! `snapshot::tier`): plain values, compared across reloads to see what
//! changed.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::tls::{ClientTls, ServerTls};
use crate::balance;
use crate::health::Member;

/// PROXY protocol version sent to a group's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyVersion {
    V1,
    V2,
}

/// How a listener's requests are matched to a group: host (exact, or
/// `*.suffix`), path prefix and header, all that are set must match.
#[derive(Debug, Clone, PartialEq)]
pub struct RulePlan {
    /// The operator's name for it (`name = ...`), else its conditions.
    pub name: Option<String>,
    /// Lower-case host without port; `*.example.com` matches any name under it.
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    /// Header name (lower case) and the exact value it must have.
    pub header: Option<(String, String)>,
    pub action: Action,
}

impl RulePlan {
    /// What it matches, in words.
    pub fn conditions(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = &self.path_prefix {
            parts.push(format!("path prefix {p}"));
        }
        if let Some((n, v)) = &self.header {
            parts.push(format!("header {n}: {v}"));
        }
        if parts.is_empty() {
            "every request".into()
        } else {
            parts.join(", ")
        }
    }

    /// Its label in metrics and the API: the name, else the conditions.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.conditions())
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Proxy to this group.
    Group(String),
    /// Answer by itself (maintenance page, redirect).
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

/// What to do with a client's `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedFor {
    /// Keep the client's list and add its address (behind trusted proxies).
    Append,
    /// Drop whatever the client sent; the list is its address alone.
    Replace,
    /// Neither add nor touch.
    Off,
}

/// An HTTP listener's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpPlan {
    /// In order; the first that matches wins, else the listener's group.
    pub rules: Vec<RulePlan>,
    pub forwarded_for: ForwardedFor,
    /// Peers whose forwarding headers are kept (empty: everyone's).
    pub trusted_proxies: Vec<IpNet>,
    /// Add an RFC 7239 `Forwarded` element.
    pub forwarded: bool,
    /// Add `Via: 1.1 geolb`.
    pub via: bool,
    /// Header carrying a request id: passed through, or generated.
    pub request_id: Option<String>,
    /// Time a client has to send a request's headers (and the longest an
    /// HTTP/1 keep-alive connection waits for the next request).
    pub header_timeout: Duration,
    /// Time a client has to send a whole request body (then 408).
    pub body_timeout: Duration,
    /// When the listener goes away, its connections are told to close at
    /// random within this window, then have it again to finish.
    pub drain_window: Duration,
    /// Time a backend has to answer with its response headers, and the
    /// longest it may pause within a response body.
    pub response_timeout: Duration,
    /// Extra attempts on another backend for requests that can be
    /// replayed (idempotent, no body) or never reached a backend.
    pub retries: u32,
    /// Backend statuses that are retried (and count as failures).
    pub retry_on: Vec<u16>,
    /// TLS termination (HTTPS): the certificates, ALPN and versions.
    pub tls: Option<ServerTls>,
    pub rate_limit: Option<RateLimitPlan>,
    /// What serves cleartext HTTP/1.1 clients.
    pub engine: Http1Engine,
}

/// What serves a listener's cleartext HTTP/1.1 clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Http1Engine {
    /// The tier's own request loop (`tier::native`), handing what it does
    /// not take (upgrades, `Expect`, HTTP/1.0, ...) to hyper.
    #[default]
    Native,
    /// hyper's HTTP/1 server for every request.
    Hyper,
}

/// Requests per second allowed, GCRA with a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// An HTTP listener's rate limits: 429 with `Retry-After` past them.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitPlan {
    pub per_client: Option<Rate>,
    pub listener: Option<Rate>,
    /// Clients never limited.
    pub exempt: Vec<IpNet>,
}

/// How a group keeps a client on one backend (HTTP requests; `source`
/// also TCP connections).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Persistence {
    #[default]
    None,
    /// A cookie naming the backend by an HMAC tag of its identity.
    Cookie(CookiePlan),
    /// The client address's last backend, forgotten after `timeout` unseen.
    Source {
        timeout: Duration,
        max_entries: usize,
    },
    /// Consistent hashing on part of the request.
    Hash(HashOn),
}

impl Persistence {
    /// Its mode as the config and the API name it.
    pub fn name(&self) -> &'static str {
        match self {
            Persistence::None => "none",
            Persistence::Cookie(_) => "cookie",
            Persistence::Source { .. } => "source",
            Persistence::Hash(_) => "hash",
        }
    }
}

/// The persistence cookie.
#[derive(Debug, Clone, PartialEq)]
pub struct CookiePlan {
    pub name: String,
    /// What follows `name=value` in `Set-Cookie` (`; Path=/; Max-Age=...`).
    pub attributes: String,
}

/// What `hash` persistence hashes (absent: the client address).
#[derive(Debug, Clone, PartialEq)]
pub enum HashOn {
    /// A request header (lower-case name).
    Header(String),
    Cookie(String),
    Path,
}

/// What a listener speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Tcp,
    Http(Box<HttpPlan>),
}

/// One listener: a VIP:port in a region in front of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerPlan {
    pub name: String,
    pub mode: Mode,
    pub region: String,
    pub bind: SocketAddr,
    pub group: String,
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_attempts: u32,
    pub accept_proxy_from: Vec<IpNet>,
    pub proxy_header_timeout: Duration,
}

/// One backend of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendPlan {
    /// `group/address`: health, balancing state and counters follow it.
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    pub max_connections: Option<u32>,
}

/// One backend group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    pub name: String,
    pub region: String,
    pub settings: balance::Settings,
    pub backends: Vec<BackendPlan>,
    pub send_proxy: Option<ProxyVersion>,
    pub drain_timeout: Duration,
    /// HTTP: retries may add at most this share (percent) to the requests
    /// of the last 10 s (plus 3 per second), so they cannot multiply an
    /// outage.
    pub retry_budget: u8,
    pub persistence: Persistence,
    /// Requests stuck to a drained backend still go there.
    pub drain_sticky: bool,
    /// HTTP: how the backends are spoken to.
    pub transport: Transport,
}

/// How a group's HTTP backends are spoken to: HTTP/1.1 or HTTP/2, over
/// TLS or not. Cleartext HTTP/1.1 goes through the listener's pool; the
/// others through a pool of the group's own, rebuilt when this changes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transport {
    /// HTTP/2: by ALPN over TLS, with prior knowledge in cleartext.
    pub h2: bool,
    pub tls: Option<ClientTls>,
    /// Connect timeout of the group's own pool (the tier's).
    pub connect_timeout: Duration,
}

impl Transport {
    /// Whether the listener's cleartext HTTP/1.1 pool serves the group.
    pub fn plain(&self) -> bool {
        !self.h2 && self.tls.is_none()
    }
}

impl GroupPlan {
    /// The balancer's view of the members.
    pub fn members(&self) -> Vec<balance::Member> {
        self.backends
            .iter()
            .map(|b| balance::Member {
                id: b.id.clone(),
                weight: b.weight,
                backup: b.backup,
                max_conns: b.max_connections,
            })
            .collect()
    }
}

/// The whole tier as configured (every region; the node picks its own).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub listeners: Vec<ListenerPlan>,
    pub groups: Vec<GroupPlan>,
    /// The backends as the health service watches them (source `tier`).
    pub members: Vec<Member>,
    /// Key of persistence cookies (`[tier] cookie_secret_file`).
    pub cookie_secret: Option<Vec<u8>>,
    /// The HTTP access log (`[tier] access_log`).
    pub access_log: Option<super::access::AccessLogPlan>,
    /// Each region's capacity (`[regions.NAME] capacity`): what the tier
    /// judges its load against.
    pub capacity: std::collections::BTreeMap<String, crate::policy::Capacity>,
}

impl Plan {
    pub fn group(&self, name: &str) -> Option<&GroupPlan> {
        self.groups.iter().find(|g| g.name == name)
    }
}

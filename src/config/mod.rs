//! The TOML configuration: schema, defaults and validation.
//!
//! Unknown keys are errors everywhere. Paths inside the file resolve relative
//! to the file's directory. The same parse → validate path serves `check`,
//! startup and reload; every problem is reported with file:line:column.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::diag::{line_col, Diagnostic, LoadError};

pub mod guard;
pub mod health;
pub mod steering;
pub mod tier;
pub use guard::{CookiesConfig, RrlConfig};
pub use health::{
    HealthConfig, InitialState, MinHealthy, MonitorConfig, StatusRange, VantageConfig,
};
pub use steering::{
    AllDown, CapacityConfig, EndpointConfig, GeoMapConfig, GeoipConfig, LatencyConfig,
    NearestConfig, PoolConfig, RegionCapacityConfig, RegionConfig, ServiceConfig, WeightedConfig,
    WeightedMode,
};
pub use tier::{
    AccessLogConfig, BackendConfig, BackendTlsConfig, CertificateConfig, EjectionConfig,
    GroupConfig, HeaderMatch, ListenerConfig, ListenerTlsConfig, NodeConfig, PersistenceConfig,
    RateLimitConfig, RespondConfig, RouteConfig, TierDefaults,
};

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?} ({e}); write it like \"30s\", \"500ms\" or \"2m\""
        ))
    })
}

fn default_dns() -> Vec<SocketAddr> {
    vec![
        SocketAddr::from(([127, 0, 0, 1], 5353)),
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 5353)),
    ]
}
fn default_admin() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 8053)))
}
fn default_udp_payload() -> u16 {
    1232
}
fn default_tcp_idle() -> Duration {
    Duration::from_secs(10)
}
fn default_tcp_max() -> usize {
    1024
}
fn default_tcp_io() -> Duration {
    Duration::from_secs(5)
}
fn default_tcp_per_client() -> usize {
    64
}
fn default_tcp_v4() -> u8 {
    32
}
fn default_tcp_v6() -> u8 {
    64
}
fn default_shutdown() -> Duration {
    Duration::from_secs(5)
}

/// `[server]`: listeners and protocol limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// DNS listen addresses, each served over UDP and TCP.
    #[serde(default = "default_dns")]
    pub dns: Vec<SocketAddr>,
    /// Admin HTTP API listen address; leave out the key for the default,
    /// set `admin_enabled = false` to run without it.
    #[serde(default = "default_admin")]
    pub admin: Option<SocketAddr>,
    #[serde(default = "yes")]
    pub admin_enabled: bool,
    /// Our EDNS UDP payload size (RFC 6891 §6.2.5); replies over UDP are
    /// capped at the smaller of this and the client's.
    #[serde(default = "default_udp_payload")]
    pub udp_payload: u16,
    /// UDP worker threads per listen address; 0 means one per CPU.
    #[serde(default)]
    pub udp_workers: usize,
    /// Pin UDP worker i to the i-th CPU the process may run on and have the
    /// kernel hand each packet to the worker on the CPU that received it
    /// (Linux). Off by default: it pays where the network card spreads
    /// packets over as many CPUs as there are workers and geolb has those
    /// CPUs to itself.
    #[serde(default)]
    pub udp_cpu_affinity: bool,
    /// Close a TCP connection idle for this long.
    #[serde(default = "default_tcp_idle", deserialize_with = "de_duration")]
    pub tcp_idle_timeout: Duration,
    /// Concurrent TCP connections (all listeners together).
    #[serde(default = "default_tcp_max")]
    pub tcp_max_connections: usize,
    /// Concurrent TCP connections from one client prefix
    /// (`tcp_client_ipv4_prefix` / `tcp_client_ipv6_prefix`).
    #[serde(default = "default_tcp_per_client")]
    pub tcp_max_connections_per_client: usize,
    #[serde(default = "default_tcp_v4")]
    pub tcp_client_ipv4_prefix: u8,
    #[serde(default = "default_tcp_v6")]
    pub tcp_client_ipv6_prefix: u8,
    /// Time a TCP client has to send the rest of a query it started and to
    /// take a reply; past it the connection is closed. A client that stops
    /// reading therefore holds one reply (at most 64 KiB) for this long.
    #[serde(default = "default_tcp_io", deserialize_with = "de_duration")]
    pub tcp_io_timeout: Duration,
    /// How long shutdown waits for in-flight TCP queries.
    #[serde(default = "default_shutdown", deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// Name server identifier returned on request (RFC 5001); `""` is the
    /// host name (as Knot does). Unset: no NSID.
    #[serde(default)]
    pub nsid: Option<String>,
    /// Append the health epoch that answered to the NSID
    /// (`"dns1 epoch=1a2b3c4d5e6f7788"`).
    #[serde(default = "yes")]
    pub nsid_epoch: bool,
    /// Bearer token the admin API requires (required when it listens
    /// anywhere but loopback).
    #[serde(default)]
    pub admin_token: Option<String>,
    /// A file holding `admin_token` (its first line): a Kubernetes Secret
    /// or a systemd credential, so the token stays out of the config.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Reload by itself when the config file, a zone file or another file
    /// in their directories changes (a Kubernetes ConfigMap update swaps
    /// the directory's `..data` link): checked this often, `None` = off.
    /// `watch_config = true` checks every 2 s; `false` (the default) or
    /// leaving the key out turns it off.
    #[serde(default, deserialize_with = "de_watch")]
    pub watch_config: Option<Duration>,
}

/// Reads `KEY_file` into `KEY` (the file's first line, trimmed); both set,
/// an unreadable file or an empty token is an error.
fn read_token(
    base: &Path,
    key: &str,
    file: &Option<PathBuf>,
    token: &mut Option<String>,
    errors: &mut Vec<String>,
) {
    let Some(f) = file else { return };
    if token.is_some() {
        errors.push(format!("{key} and {key}_file are both set: keep one"));
        return;
    }
    let p = base.join(f);
    match std::fs::read_to_string(&p) {
        Ok(t) => match t.lines().next().map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => *token = Some(t.to_string()),
            None => errors.push(format!("{key}_file {}: the file is empty", p.display())),
        },
        Err(e) => errors.push(format!("{key}_file {}: {e}", p.display())),
    }
}

/// `watch_config`: `true` (every 2 s), `false`, or a duration.
fn de_watch<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Watch {
        On(bool),
        Every(String),
    }
    match Watch::deserialize(d)? {
        Watch::On(false) => Ok(None),
        Watch::On(true) => Ok(Some(Duration::from_secs(2))),
        Watch::Every(s) => match humantime::parse_duration(&s) {
            Ok(d) if d >= Duration::from_millis(100) => Ok(Some(d)),
            Ok(_) => Err(serde::de::Error::custom(format!(
                "watch_config = {s:?}: check at most every 100ms"
            ))),
            Err(e) => Err(serde::de::Error::custom(format!(
                "watch_config = {s:?} ({e}): write true, false or a duration like \"2s\""
            ))),
        },
    }
}

pub(crate) fn yes() -> bool {
    true
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            dns: default_dns(),
            admin: default_admin(),
            admin_enabled: true,
            udp_payload: default_udp_payload(),
            udp_workers: 0,
            udp_cpu_affinity: false,
            tcp_idle_timeout: default_tcp_idle(),
            tcp_max_connections: default_tcp_max(),
            tcp_max_connections_per_client: default_tcp_per_client(),
            tcp_client_ipv4_prefix: default_tcp_v4(),
            tcp_client_ipv6_prefix: default_tcp_v6(),
            tcp_io_timeout: default_tcp_io(),
            shutdown_timeout: default_shutdown(),
            nsid: None,
            nsid_epoch: true,
            admin_token: None,
            admin_token_file: None,
            watch_config: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    file: Spanned<PathBuf>,
    #[serde(default)]
    allow_transfer: Vec<IpNet>,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, ServiceConfig>,
}

/// `[dnstap]`: the server's sampled queries and responses as a dnstap log
/// (a file or a Frame Streams Unix socket); off when the section is absent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnstapConfig {
    /// A file (appended to; relative to the config).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A Unix stream socket a dnstap collector listens on (bidirectional
    /// Frame Streams).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The fraction of queries logged (0 < sample ≤ 1; default 0.01).
    #[serde(default = "d_sample")]
    pub sample: f64,
    /// Log the queries (AUTH_QUERY; default true).
    #[serde(default = "d_true")]
    pub queries: bool,
    /// Log the responses (AUTH_RESPONSE; default true).
    #[serde(default = "d_true")]
    pub responses: bool,
    /// The `identity` field (default: none).
    #[serde(default)]
    pub identity: Option<String>,
    /// The `version` field (default: "geolb VERSION").
    #[serde(default)]
    pub version: Option<String>,
    /// Messages queued at most before new ones are dropped (default 10000).
    #[serde(default = "d_dnstap_queue")]
    pub queue: usize,
}

fn d_sample() -> f64 {
    0.01
}
fn d_true() -> bool {
    true
}
fn d_dnstap_queue() -> usize {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    geoip: Option<GeoipConfig>,
    #[serde(default)]
    regions: BTreeMap<Spanned<String>, RegionConfig>,
    #[serde(default)]
    pools: BTreeMap<Spanned<String>, PoolConfig>,
    #[serde(default)]
    monitors: BTreeMap<Spanned<String>, MonitorConfig>,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default)]
    zones: BTreeMap<Spanned<String>, RawZone>,
    #[serde(default)]
    node: NodeConfig,
    #[serde(default)]
    tier: TierDefaults,
    #[serde(default)]
    dnstap: Option<DnstapConfig>,
    #[serde(default)]
    listeners: BTreeMap<Spanned<String>, ListenerConfig>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, GroupConfig>,
    #[serde(default)]
    rrl: RrlConfig,
    #[serde(default)]
    cookies: CookiesConfig,
}

fn named<T: Clone>(m: &BTreeMap<Spanned<String>, T>, text: &str) -> Vec<Named<T>> {
    m.iter()
        .map(|(k, v)| {
            let (line, column) = line_col(text, k.span().start);
            Named {
                name: k.get_ref().clone(),
                line,
                column,
                value: v.clone(),
            }
        })
        .collect()
}

/// A named table of the config and where its key is (line, column).
#[derive(Debug, Clone)]
pub struct Named<T> {
    pub name: String,
    pub line: usize,
    pub column: usize,
    pub value: T,
}

/// Settings given on the command line; they win over the config file, at
/// startup and on every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub dns: Option<Vec<SocketAddr>>,
    pub admin: Option<SocketAddr>,
    pub udp_workers: Option<usize>,
    pub udp_cpu_affinity: Option<bool>,
    /// `geolb probe`: this node's vantage name.
    pub vantage: Option<String>,
    /// `geolb probe`: run monitors only, no DNS.
    pub probe_only: bool,
    /// `--region`: the regions whose tier listeners run here (wins over
    /// `[node] regions`); empty = none.
    pub regions: Option<Vec<String>>,
    /// `--no-dns` / `--dns`: whether this node answers DNS.
    pub dns_enabled: Option<bool>,
    /// `--nsid`: this node's name in NSID (replaces `server.nsid`).
    pub nsid: Option<String>,
}

/// A zone to serve, as configured.
#[derive(Debug, Clone)]
pub struct ZoneSpec {
    pub origin: Name,
    /// Master file path, resolved against the config's directory.
    pub file: PathBuf,
    /// Clients allowed to AXFR/IXFR this zone.
    pub allow_transfer: Vec<IpNet>,
    /// Where the zone is declared in the config (line).
    pub line: usize,
    /// Dynamic names of this zone (keys relative to the zone).
    pub services: Vec<Named<ServiceConfig>>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// The config text, to turn positions into line:column.
    pub text: String,
    pub server: ServerConfig,
    pub zones: Vec<ZoneSpec>,
    pub geoip: Option<GeoipConfig>,
    pub regions: Vec<Named<RegionConfig>>,
    pub pools: Vec<Named<PoolConfig>>,
    pub monitors: Vec<Named<MonitorConfig>>,
    pub health: HealthConfig,
    pub node: NodeConfig,
    pub tier: TierDefaults,
    /// The dnstap log of the server's own queries (off when absent).
    pub dnstap: Option<DnstapConfig>,
    pub listeners: Vec<Named<ListenerConfig>>,
    pub groups: Vec<Named<GroupConfig>>,
    pub rrl: RrlConfig,
    pub cookies: CookiesConfig,
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.text == other.text
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            LoadError(vec![Diagnostic::error(
                path,
                0,
                0,
                format!("cannot read config: {e}"),
            )])
        })?;
        Config::parse(path, &text)
    }

    /// Reads a config file and applies command-line overrides.
    pub fn load_with(path: &Path, ov: &Overrides) -> Result<Config, LoadError> {
        let mut c = Config::load(path)?;
        c.apply(ov);
        Ok(c)
    }

    /// Applies command-line settings, which win over the file.
    fn apply(&mut self, ov: &Overrides) {
        let c = self;
        if let Some(dns) = &ov.dns {
            c.server.dns = dns.clone();
        }
        if let Some(admin) = ov.admin {
            c.server.admin = Some(admin);
            c.server.admin_enabled = true;
        }
        if let Some(n) = ov.udp_workers {
            c.server.udp_workers = n;
        }
        if let Some(a) = ov.udp_cpu_affinity {
            c.server.udp_cpu_affinity = a;
        }
        if let Some(v) = &ov.vantage {
            c.health.vantage = v.clone();
        }
        if ov.probe_only {
            c.health.local_checks = true;
        }
        if let Some(r) = &ov.regions {
            c.node.regions = Some(r.clone());
        }
        if let Some(d) = ov.dns_enabled {
            c.node.dns = d;
        }
        if let Some(n) = &ov.nsid {
            c.server.nsid = Some(n.clone());
        }
    }

    /// Validates config text as if read from `path`; any error fails it.
    pub fn parse(path: &Path, text: &str) -> Result<Config, LoadError> {
        let (config, diags) = Config::read(path, text)?;
        if diags.iter().any(Diagnostic::is_error) {
            return Err(LoadError(diags));
        }
        Ok(config)
    }

    /// Reads a config file and applies command-line overrides, keeping
    /// going past errors: the config as far as it could be read, and every
    /// problem found in it. Fails only when the file cannot be read or is
    /// not TOML of the expected shape.
    pub fn read_with(path: &Path, ov: &Overrides) -> Result<(Config, Vec<Diagnostic>), LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            LoadError(vec![Diagnostic::error(
                path,
                0,
                0,
                format!("cannot read config: {e}"),
            )])
        })?;
        let (mut c, mut diags) = Config::read(path, &text)?;
        if ov.probe_only && !c.health.local_checks {
            let (l, col) = local_checks_at(&text);
            diags.push(Diagnostic::warning(
                path,
                l,
                col,
                "health.local_checks = false is ignored by `geolb probe`: a prober's own checks are what it serves, so it always runs them",
            ));
        }
        c.apply(ov);
        Ok((c, diags))
    }

    /// Config text read as if from `path`: the config as far as it could be
    /// read, and every problem in it (each with its line and column).
    pub fn read(path: &Path, text: &str) -> Result<(Config, Vec<Diagnostic>), LoadError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            LoadError(vec![Diagnostic::error(
                path,
                line,
                col,
                e.message().to_string(),
            )])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut diags = Vec::new();
        let at = |span: std::ops::Range<usize>| line_col(text, span.start);
        // Where each [server] key is, for errors about its value.
        let spans: SpanOf = toml::from_str(text).unwrap_or_default();
        let server_err = |diags: &mut Vec<Diagnostic>, key: &str, msg: String| {
            let (l, c) = spans.server_key(key).map_or((0, 0), &at);
            diags.push(Diagnostic::error(path, l, c, msg));
        };

        let mut raw = raw;
        let mut token_errors = Vec::new();
        read_token(
            base,
            "server.admin_token",
            &raw.server.admin_token_file,
            &mut raw.server.admin_token,
            &mut token_errors,
        );
        read_token(
            base,
            "health.token",
            &raw.health.token_file,
            &mut raw.health.token,
            &mut token_errors,
        );
        for (name, v) in raw.health.vantages.iter_mut() {
            let key = format!("health.vantages.{name}.token");
            read_token(base, &key, &v.token_file, &mut v.token, &mut token_errors);
        }
        for msg in token_errors {
            diags.push(Diagnostic::error(path, 0, 0, msg));
        }
        let s = &raw.server;
        if s.dns.is_empty() {
            server_err(
                &mut diags,
                "dns",
                "server.dns: at least one listen address is needed".into(),
            );
        }
        if !(512..=4096).contains(&s.udp_payload) {
            server_err(
                &mut diags,
                "udp_payload",
                format!("server.udp_payload = {}: must be between 512 and 4096 (1232 avoids fragmentation)", s.udp_payload),
            );
        }
        if s.tcp_max_connections == 0 {
            server_err(
                &mut diags,
                "tcp_max_connections",
                "server.tcp_max_connections must be at least 1".into(),
            );
        }
        if let Some(n) = &s.nsid {
            if n.len() > 512 {
                server_err(
                    &mut diags,
                    "nsid",
                    "server.nsid must be at most 512 bytes (\"\" for the host name)".into(),
                );
            }
        }
        if let (true, Some(a)) = (s.admin_enabled, s.admin) {
            if !a.ip().is_loopback() && s.admin_token.as_deref().is_none_or(str::is_empty) {
                server_err(
                    &mut diags,
                    "admin",
                    format!("server.admin = {a} is not a loopback address: set server.admin_token so the API is not open to anyone"),
                );
            }
        }
        for (key, d) in [
            ("tcp_idle_timeout", s.tcp_idle_timeout),
            ("tcp_io_timeout", s.tcp_io_timeout),
        ] {
            if d.is_zero() {
                server_err(&mut diags, key, format!("server.{key} must be more than 0"));
            }
        }
        if s.tcp_max_connections_per_client == 0 {
            server_err(
                &mut diags,
                "tcp_max_connections_per_client",
                "server.tcp_max_connections_per_client must be at least 1".into(),
            );
        }
        for (key, v, max) in [
            ("tcp_client_ipv4_prefix", s.tcp_client_ipv4_prefix, 32),
            ("tcp_client_ipv6_prefix", s.tcp_client_ipv6_prefix, 128),
        ] {
            if v == 0 || v > max {
                server_err(
                    &mut diags,
                    key,
                    format!("server.{key} = {v}: must be 1 to {max}"),
                );
            }
        }

        if !raw.health.local_checks && raw.health.vantages.is_empty() {
            let (l, c) = local_checks_at(text);
            diags.push(Diagnostic::error(
                path,
                l,
                c,
                "health.local_checks = false needs [health.vantages]: with no checks of its own and no prober to read, nothing would ever check the endpoints",
            ));
        }

        let mut zones: Vec<ZoneSpec> = Vec::new();
        // Every zone declared so far, usable or not (for duplicates).
        let mut declared: Vec<(Name, usize)> = Vec::new();
        for (key, z) in &raw.zones {
            let (line, col) = at(key.span());
            let name = match Name::from_ascii(key.get_ref()) {
                Ok(mut n) => {
                    n.set_fqdn(true);
                    n
                }
                Err(e) => {
                    diags.push(Diagnostic::error(
                        path,
                        line,
                        col,
                        format!("zones.{:?}: not a domain name: {e}", key.get_ref()),
                    ));
                    continue;
                }
            };
            let file = base.join(z.file.get_ref());
            let file_ok = file.is_file();
            if !file_ok {
                let (fl, fc) = at(z.file.span());
                diags.push(Diagnostic::error(
                    path,
                    fl,
                    fc,
                    format!(
                        "zones.{:?}.file: {} does not exist or is not a file",
                        key.get_ref(),
                        file.display()
                    ),
                ));
            }
            if let Some((_, prev)) = declared.iter().find(|(n, _)| *n == name) {
                diags.push(Diagnostic::error(
                    path,
                    line,
                    col,
                    format!(
                        "zones.{:?}: zone {name} is already declared at line {}",
                        key.get_ref(),
                        prev
                    ),
                ));
                continue;
            }
            declared.push((name.clone(), line));
            if !file_ok {
                continue;
            }
            let services = named(&z.services, text);
            zones.push(ZoneSpec {
                origin: name,
                file,
                allow_transfer: z.allow_transfer.clone(),
                line,
                services,
            });
        }
        if raw.zones.is_empty() {
            diags.push(Diagnostic::error(
                path,
                1,
                1,
                "no zones are configured: add a [zones.\"example.com\"] table",
            ));
        }
        let regions = named(&raw.regions, text);
        let pools = named(&raw.pools, text);
        let monitors = named(&raw.monitors, text);
        let mut health = raw.health.clone();
        if let Some(f) = health.state_file.as_mut() {
            *f = base.join(&*f);
        }
        let mut geoip = raw.geoip.clone();
        if let Some(g) = geoip.as_mut() {
            let city = base.join(g.city.get_ref());
            *g.city.get_mut() = city;
            if let Some(a) = g.asn.as_mut() {
                let p = base.join(a.get_ref());
                *a.get_mut() = p;
            }
        }
        let mut config = Config {
            path: path.to_path_buf(),
            text: text.to_string(),
            server: raw.server,
            zones,
            geoip,
            regions,
            pools,
            monitors,
            health,
            node: raw.node.clone(),
            tier: raw.tier.clone(),
            dnstap: raw.dnstap.clone().map(|mut d| {
                d.path = d.path.map(|p| base.join(p));
                d.socket = d.socket.map(|p| base.join(p));
                d
            }),
            listeners: named(&raw.listeners, text),
            groups: named(&raw.groups, text),
            rrl: raw.rrl.clone(),
            cookies: raw.cookies.clone(),
        };
        if let Some(f) = config.cookies.secret_file.as_mut() {
            *f.get_mut() = base.join(f.get_ref());
        }
        guard::check(&config.rrl, &config.cookies, path, text, &mut diags);
        // TLS files, relative to the config file like every other path.
        for l in &mut config.listeners {
            if let Some(t) = l.value.tls.as_mut() {
                for c in &mut t.get_mut().certificates {
                    *c.cert.get_mut() = base.join(c.cert.get_ref());
                    *c.key.get_mut() = base.join(c.key.get_ref());
                }
            }
        }
        for g in &mut config.groups {
            if let Some(ca) = g.value.tls.as_mut().and_then(|t| t.ca.as_mut()) {
                *ca.get_mut() = base.join(ca.get_ref());
            }
        }
        Ok((config, diags))
    }
}

/// Where the keys of `[server]` and `[health]` are in the text (for
/// errors about values that parsed but are not allowed).
#[derive(Default, Deserialize)]
struct SpanOf {
    #[serde(default)]
    server: Option<BTreeMap<String, Spanned<toml::Value>>>,
    #[serde(default)]
    health: HealthSpans,
}

/// The `[health]` keys whose values are checked: named one by one, since
/// its sub-tables (`[health.vantages.NAME]`) give no span of their own.
#[derive(Default, Deserialize)]
struct HealthSpans {
    #[serde(default)]
    local_checks: Option<Spanned<toml::Value>>,
}

impl SpanOf {
    fn server_key(&self, key: &str) -> Option<std::ops::Range<usize>> {
        self.server.as_ref()?.get(key).map(Spanned::span)
    }
}

/// Line and column of `[health] local_checks` in `text` (0, 0 when it is
/// not there).
fn local_checks_at(text: &str) -> (usize, usize) {
    let spans: SpanOf = toml::from_str(text).unwrap_or_default();
    spans
        .health
        .local_checks
        .map_or((0, 0), |s| line_col(text, s.span().start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, LoadError> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.zone"), "").expect("write");
        Config::parse(&dir.path().join("geolb.toml"), text)
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse("[zones.\"example.com\"]\nfile = \"a.zone\"\n").expect("valid");
        assert_eq!(c.server.udp_payload, 1232);
        assert_eq!(c.server.dns.len(), 2);
        assert_eq!(c.zones[0].origin.to_string(), "example.com.");
        assert!(c.zones[0].file.ends_with("a.zone") && c.zones[0].file.is_absolute());
    }

    #[test]
    fn tokens_can_come_from_files_and_watch_config_takes_a_switch_or_a_duration() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.zone"), "").expect("write");
        std::fs::write(dir.path().join("admin-token"), "s3cret\n").expect("write");
        let path = dir.path().join("geolb.toml");
        let zone = "[zones.\"example.com\"]\nfile = \"a.zone\"\n";
        let c = Config::parse(
            &path,
            &format!("[server]\nadmin = \"0.0.0.0:8053\"\nadmin_token_file = \"admin-token\"\nwatch_config = true\n[health.vantages.a]\nurl = \"http://a\"\ntoken_file = \"admin-token\"\n{zone}"),
        )
        .expect("valid: the token is read before the non-loopback check");
        assert_eq!(c.server.admin_token.as_deref(), Some("s3cret"));
        assert_eq!(c.health.vantages["a"].token.as_deref(), Some("s3cret"));
        assert_eq!(c.server.watch_config, Some(Duration::from_secs(2)));
        let c = Config::parse(
            &path,
            &format!("[server]\nwatch_config = \"500ms\"\n{zone}"),
        )
        .expect("valid");
        assert_eq!(c.server.watch_config, Some(Duration::from_millis(500)));
        let c = Config::parse(&path, &format!("[server]\nwatch_config = false\n{zone}"))
            .expect("valid");
        assert_eq!(c.server.watch_config, None);
        let e = Config::parse(
            &path,
            &format!("[health]\ntoken = \"x\"\ntoken_file = \"nope\"\n[server]\nadmin_token_file = \"nope\"\n{zone}"),
        )
        .expect_err("invalid");
        let msgs: Vec<String> = e.errors().map(|d| d.to_string()).collect();
        assert!(msgs.iter().any(|m| m.contains("both set")), "{msgs:?}");
        assert!(
            msgs.iter()
                .any(|m| m.contains("server.admin_token_file") && m.contains("nope")),
            "{msgs:?}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let e = parse("[server]\nudp_payload = 1232\nbogus = 1\n").expect_err("invalid");
        let d = &e.0[0];
        assert_eq!((d.line, d.column), (3, 1));
        assert!(d.message.contains("unknown field"), "{}", d.message);
    }

    #[test]
    fn durations_are_human_readable() {
        let c = parse(
            "[server]\ntcp_idle_timeout = \"1m30s\"\n[zones.\"example.com\"]\nfile = \"a.zone\"\n",
        )
        .expect("valid");
        assert_eq!(c.server.tcp_idle_timeout, Duration::from_secs(90));
        let e = parse("[server]\ntcp_idle_timeout = \"soon\"\n").expect_err("invalid");
        assert!(e.0[0].message.contains("invalid duration"));
        assert_eq!(e.0[0].line, 2);
    }

    #[test]
    fn every_error_is_reported() {
        let e = parse(
            "[server]\nudp_payload = 100\n[zones.\"example.com\"]\nfile = \"missing.zone\"\n[zones.\"EXAMPLE.com.\"]\nfile = \"a.zone\"\n",
        )
        .expect_err("invalid");
        let msgs: Vec<String> = e.errors().map(|d| d.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(
            msgs.iter()
                .any(|m| m.contains(":4:8:") && m.contains("does not exist")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("already declared")),
            "{msgs:?}"
        );
    }

    #[test]
    fn local_checks_off_needs_vantages_and_a_prober_ignores_it_with_a_warning() {
        let zone = "[zones.\"example.com\"]\nfile = \"a.zone\"\n";
        let c = parse(zone).expect("valid");
        assert!(c.health.local_checks, "on by default");
        assert_eq!(c.health.quorum_needed(), 1, "this node alone");

        // Off with nothing to read: an error at the key's line.
        let e = parse(&format!(
            "[health]\nvantage = \"dns\"\nlocal_checks = false\n{zone}"
        ))
        .expect_err("invalid");
        let msgs: Vec<String> = e.errors().map(|d| d.to_string()).collect();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].contains("geolb.toml:3:") && msgs[0].contains("nothing would ever check"),
            "{msgs:?}"
        );

        // Off with probers: the quorum is a majority of the probers alone.
        let probers = "[health]\nlocal_checks = false\n\
                       [health.vantages.a]\nurl = \"http://a\"\n\
                       [health.vantages.b]\nurl = \"http://b\"\n\
                       [health.vantages.c]\nurl = \"http://c\"\n";
        let c = parse(&format!("{probers}{zone}")).expect("valid");
        assert!(!c.health.local_checks);
        assert_eq!(c.health.quorum_needed(), 2, "2 of 3 probers");
        let on = parse(&format!(
            "{}{zone}",
            probers.replace("local_checks = false", "local_checks = true")
        ))
        .expect("valid");
        assert_eq!(
            on.health.quorum_needed(),
            3,
            "3 of 4 vantages, this node included"
        );

        // The same file run as a prober: checks locally, and says so.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.zone"), "").expect("write");
        let path = dir.path().join("geolb.toml");
        std::fs::write(&path, format!("{probers}{zone}")).expect("write");
        let ov = Overrides {
            vantage: Some("p1".into()),
            probe_only: true,
            ..Overrides::default()
        };
        let (c, diags) = Config::read_with(&path, &ov).expect("readable");
        assert!(c.health.local_checks, "a prober always checks");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(!diags[0].is_error());
        assert_eq!(diags[0].line, 2);
        assert!(
            diags[0].message.contains("ignored by `geolb probe`"),
            "{diags:?}"
        );
        let (c, diags) = Config::read_with(&path, &Overrides::default()).expect("readable");
        assert!(!c.health.local_checks && diags.is_empty(), "{diags:?}");
        // [health.vantages.*] tables leave the other keys' lines alone.
        let e =
            parse(&format!("[server]\nudp_payload = 100\n{probers}{zone}")).expect_err("invalid");
        assert_eq!(e.0[0].line, 2, "{e}");
    }
}

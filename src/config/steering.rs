//! Config schema for geo steering: `[geoip]`, `[regions.*]`, `[pools.*]` and
//! the services declared under each zone. Parsed here with their source
//! positions; cross-references are checked when the policy compiles.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{de_duration, yes};
pub use crate::policy::{AllDown, WeightedMode};

fn default_watch() -> Duration {
    Duration::from_secs(5)
}

/// `[geoip]`: the databases that locate clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoipConfig {
    /// City or Country database (GeoIP2/GeoLite2 or DB-IP layout).
    pub city: Spanned<PathBuf>,
    /// Optional ASN database (GeoLite2-ASN layout).
    #[serde(default)]
    pub asn: Option<Spanned<PathBuf>>,
    /// How often the files are checked for changes.
    #[serde(default = "default_watch", deserialize_with = "de_duration")]
    pub watch_interval: Duration,
}

/// `[regions.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// [latitude, longitude] in degrees.
    pub location: Spanned<[f64; 2]>,
    #[serde(default)]
    pub continent: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    /// What the region's tier can carry: its load is this fraction of it.
    #[serde(default)]
    pub capacity: Option<Spanned<RegionCapacityConfig>>,
}

/// `[regions.NAME] capacity = { connections = N, rps = N }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionCapacityConfig {
    /// Open connections through the region's tier listeners.
    #[serde(default)]
    pub connections: Option<f64>,
    /// Requests per second: requests on HTTP listeners, new connections
    /// on TCP ones.
    #[serde(default)]
    pub rps: Option<f64>,
}

fn one() -> u32 {
    1
}

/// One endpoint of a pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Address handed out in A/AAAA answers.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// Or a name handed out as a CNAME (CDN-style pools).
    #[serde(default)]
    pub cname: Option<String>,
    #[serde(default = "one")]
    pub weight: u32,
    /// Address:port to health-check, when not the handed-out address.
    #[serde(default)]
    pub check: Option<String>,
}

/// `[pools.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub region: Spanned<String>,
    pub endpoints: Spanned<Vec<EndpointConfig>>,
    /// Endpoints that must be up for `failover` to choose this pool: a
    /// count or a percentage ("50%").
    #[serde(default)]
    pub min_healthy: super::MinHealthy,
    /// An endpoint that is a tier VIP of the pool's region counts as up
    /// only while the groups behind it have this many healthy backends (a
    /// count, or a share of their weight: "50%").
    #[serde(default)]
    pub min_healthy_tier: Option<super::MinHealthy>,
    /// Monitor checking every endpoint of the pool.
    #[serde(default)]
    pub monitor: Option<Spanned<String>>,
}

/// The `geo` step's map from client location to ordered region/pool lists.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoMapConfig {
    #[serde(default)]
    pub default: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub continent: BTreeMap<String, Spanned<Vec<String>>>,
    #[serde(default)]
    pub country: BTreeMap<String, Spanned<Vec<String>>>,
    /// ISO 3166-2, e.g. "US-CA".
    #[serde(default)]
    pub subdivision: BTreeMap<String, Spanned<Vec<String>>>,
    /// Autonomous system number (as a string key: "64500").
    #[serde(default)]
    pub asn: BTreeMap<String, Spanned<Vec<String>>>,
    /// Client CIDR → list.
    #[serde(default)]
    pub cidr: BTreeMap<String, Spanned<Vec<String>>>,
    /// File of `CIDR list,of,targets` lines, relative to the config file.
    #[serde(default)]
    pub cidr_file: Option<Spanned<PathBuf>>,
}

/// The `latency` step's table: client area → region → milliseconds. The
/// most specific area wins: country, then continent, then `default`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Use measured round-trip times: from the vantage nearest the client
    /// (EWMA of its health checks) to each region; the table below is the
    /// fallback when there is no measurement or no client location.
    #[serde(default)]
    pub probes: bool,
    #[serde(default)]
    pub default: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    pub continent: BTreeMap<String, BTreeMap<String, f64>>,
    #[serde(default)]
    pub country: BTreeMap<String, BTreeMap<String, f64>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearestConfig {
    /// Keep at most this many regions.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Per-region bias in km: positive pulls clients in, negative pushes
    /// them away (the distance used is `distance - bias`).
    #[serde(default)]
    pub bias: BTreeMap<String, f64>,
}

fn default_count() -> usize {
    1
}
fn default_v4() -> u8 {
    24
}
fn default_v6() -> u8 {
    56
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedConfig {
    #[serde(default)]
    pub mode: WeightedMode,
    /// How many endpoints to choose.
    #[serde(default = "default_count")]
    pub count: usize,
    /// `sticky`: the client subnet that keeps its answer.
    #[serde(default = "default_v4")]
    pub sticky_prefix_v4: u8,
    #[serde(default = "default_v6")]
    pub sticky_prefix_v6: u8,
}

impl Default for WeightedConfig {
    fn default() -> Self {
        WeightedConfig {
            mode: WeightedMode::Random,
            count: 1,
            sticky_prefix_v4: 24,
            sticky_prefix_v6: 56,
        }
    }
}

fn default_low() -> f64 {
    0.8
}
fn default_high() -> f64 {
    0.95
}
fn default_max_step() -> f64 {
    0.2
}

/// The `capacity` step's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// Load (fraction of the region's capacity) below which a region's
    /// share rises back.
    #[serde(default = "default_low")]
    pub low: f64,
    /// Load above which its share falls.
    #[serde(default = "default_high")]
    pub high: f64,
    /// The most a share moves per TTL of the service.
    #[serde(default = "default_max_step")]
    pub max_step: f64,
    /// The client subnet that keeps its answer.
    #[serde(default = "default_v4")]
    pub sticky_prefix_v4: u8,
    #[serde(default = "default_v6")]
    pub sticky_prefix_v6: u8,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        CapacityConfig {
            low: default_low(),
            high: default_high(),
            max_step: default_max_step(),
            sticky_prefix_v4: default_v4(),
            sticky_prefix_v6: default_v6(),
        }
    }
}

fn default_ttl() -> u32 {
    30
}
/// `[zones."Z".services.NAME]`: a dynamic name answered by a steering chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Candidate pools, in order of preference when nothing else decides.
    pub pools: Spanned<Vec<String>>,
    /// Steering steps, applied in order.
    pub chain: Spanned<Vec<Spanned<String>>>,
    /// Use the EDNS Client Subnet address to locate the client.
    #[serde(default = "yes")]
    pub ecs: bool,
    #[serde(default)]
    pub geo: Option<Spanned<GeoMapConfig>>,
    #[serde(default)]
    pub nearest: Option<NearestConfig>,
    #[serde(default)]
    pub latency: Option<Spanned<LatencyConfig>>,
    #[serde(default)]
    pub weighted: Option<WeightedConfig>,
    #[serde(default)]
    pub capacity: Option<CapacityConfig>,
    #[serde(default)]
    pub first_n: Option<usize>,
    #[serde(default)]
    pub all_down: AllDown,
    /// Health-aware TTL: answer with this TTL while any candidate endpoint
    /// is down, so clients converge faster during an incident.
    #[serde(default)]
    pub ttl_when_down: Option<u32>,
}

//! Admin HTTP API (JSON): status, health, explain, observations for remote
//! nodes, drain/undrain/force, reload, and Prometheus metrics. Bound to
//! loopback by default; a bearer token guards it when set.
//!
//! It reads state through the same handles the rest of the server uses —
//! the control jobs (snapshot source, health service, reload, GeoIP
//! watcher) and the DNS listeners' counters — and renders nothing itself
//! but JSON: the metrics text is `metrics::render`'s, and the status page
//! (`ui`) is static files whose script reads this JSON.

pub mod client;
pub mod map;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::Control;
use crate::diag::Diagnostic;
use crate::dns::DnsStats;
use crate::health::{unix, OverrideError};
use crate::policy::AdminState;

pub mod ui;

/// What the API reads and acts on.
pub struct Handles {
    pub control: Arc<Control>,
    pub dns: Arc<DnsStats>,
    /// `GET /v1/map.svg`'s model and drawings.
    pub map: Arc<map::MapCache>,
}

impl Handles {
    pub fn new(control: Arc<Control>, dns: Arc<DnsStats>) -> Handles {
        Handles {
            control,
            dns,
            map: Arc::default(),
        }
    }
}

/// Serves the API until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Handles>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(shared);
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "admin API stopped");
    }
}

/// The API (behind the token check) and, beside it, the status page.
pub fn router(shared: Arc<Handles>) -> Router {
    api(shared).merge(ui::router())
}

fn api(shared: Arc<Handles>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/ready", get(ready))
        .route("/v1/live", get(live))
        .route("/v1/reload", post(reload))
        .route("/v1/explain", get(explain))
        .route("/v1/health", get(health))
        .route("/v1/tier", get(tier))
        .route("/v1/explain-http", get(explain_http))
        .route("/v1/observations", get(observations))
        .route("/v1/drain", post(drain))
        .route("/v1/undrain", post(undrain))
        .route("/v1/force", post(force))
        .route("/v1/resolvers", get(resolvers))
        .route("/v1/resolvers/summary", get(resolvers_summary))
        .route("/v1/map.svg", get(map_svg))
        .route(
            "/v1/resolvers/track",
            post(track_resolvers).delete(untrack_resolvers),
        )
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), auth))
        .with_state(shared)
}

/// Bearer-token check: `server.admin_token` guards every endpoint when set;
/// `/v1/observations` also accepts `health.token` (what nodes send probers).
async fn auth(
    State(shared): State<Arc<Handles>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let snap = shared.control.source.load();
    let admin = snap
        .config
        .server
        .admin_token
        .as_deref()
        .filter(|t| !t.is_empty());
    let probe = snap
        .config
        .health
        .token
        .as_deref()
        .filter(|t| !t.is_empty());
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let is_obs = req.uri().path() == "/v1/observations";
    // Readiness and liveness say nothing but ready or not, and a kubelet
    // probe cannot send a token from a Secret: they are open.
    if matches!(req.uri().path(), "/v1/ready" | "/v1/live") {
        drop(snap);
        return next.run(req).await;
    }
    let accepted: Vec<&str> = admin.into_iter().chain(probe.filter(|_| is_obs)).collect();
    let ok = accepted.is_empty()
        || given.is_some_and(|g| {
            accepted
                .iter()
                .any(|a| constant_eq(a.as_bytes(), g.as_bytes()))
        });
    drop(snap);
    if ok {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "missing or wrong bearer token"})),
        )
            .into_response()
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Serialize)]
struct ZoneStatus {
    name: String,
    serial: u32,
    records: usize,
    file: String,
}

#[derive(Serialize)]
struct ReloadView {
    ok: bool,
    at: f64,
    generation: u64,
    errors: Vec<String>,
    warnings: Vec<String>,
}

fn lines(d: &[Diagnostic]) -> Vec<String> {
    d.iter().map(|d| d.to_string()).collect()
}

async fn status(State(shared): State<Arc<Handles>>) -> Response {
    let snap = shared.control.source.load_full();
    let zones: Vec<ZoneStatus> = snap
        .zones
        .zones
        .iter()
        .map(|z| ZoneStatus {
            name: z.origin.to_string(),
            serial: z.serial(),
            records: z.data.record_count(),
            file: z.data.file.display().to_string(),
        })
        .collect();
    let last_reload = shared.control.last_reload().map(|r| ReloadView {
        ok: r.ok,
        at: unix(r.at),
        generation: r.generation,
        errors: lines(&r.errors),
        warnings: lines(&r.warnings),
    });
    let udp = &shared.dns.udp;
    let sum = |f: fn(&crate::dns::udp::WorkerStats) -> u64| udp.iter().map(|s| f(s)).sum::<u64>();
    let t = &shared.dns.tcp;
    let geo_status = shared.control.geo_status();
    let db = |d: &Option<Arc<crate::geo::Db>>| {
        d.as_ref().map(|d| {
            json!({
                "path": d.path.display().to_string(),
                "database_type": d.database_type,
                "build_epoch": d.build_epoch,
                "copy": d.backing.as_str(),
                "wrong_type_records": d.bad_fields.records,
                "first_wrong_type": d.bad_fields.first,
            })
        })
    };
    let geoip = json!({
        "city": db(&snap.geo.city),
        "asn": db(&snap.geo.asn),
        "last_swap": geo_status.last_swap.map(unix),
        "last_error": geo_status.last_error,
        "last_error_at": geo_status.last_error_at.map(unix),
        "building_since": geo_status.building_since.map(unix),
    });
    let addrs: &[SocketAddr] = &shared.dns.addrs;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "nsid": snap.node_name.as_deref(),
        "now": unix(std::time::SystemTime::now()),
        "started_at": unix(shared.control.started_at),
        "config": shared.control.config_path.as_ref().map(|p| p.display().to_string()),
        "generation": snap.generation,
        "loaded_at": unix(snap.loaded_at),
        "last_reload": last_reload,
        "listeners": { "dns": addrs },
        "zones": zones,
        "services": crate::sim::service_names(&snap),
        "geoip": geoip,
        "health": health_json(&shared),
        "tier": shared.control.tier.status(),
        "rrl": rrl_json(&snap.guard),
        "cookies": cookies_json(&snap.guard),
        "dnstap": snap.dnstap.as_ref().map(|t| t.status()),
        "counters": {
            "udp_queries": sum(|s| s.queries.load(Ordering::Relaxed)),
            "udp_replies": sum(|s| s.replies.load(Ordering::Relaxed)),
            "udp_dropped": sum(|s| s.dropped.load(Ordering::Relaxed)),
            "udp_panics": sum(|s| s.panics.load(Ordering::Relaxed)),
            "udp_worker_restarts": sum(|s| s.restarts.load(Ordering::Relaxed)),
            "tcp_connections": t.connections.load(Ordering::Relaxed),
            "tcp_connections_refused": t.refused.load(Ordering::Relaxed),
            "tcp_connections_refused_per_client": t.refused_per_client.load(Ordering::Relaxed),
            "tcp_io_timeouts": t.io_timeouts.load(Ordering::Relaxed),
            "tcp_clients": t.clients(),
            "tcp_queries": t.queries.load(Ordering::Relaxed),
        },
        "udp_workers": udp.iter().enumerate().map(|(i, s)| json!({
            "worker": i,
            "listener": s.listener.map(|a| a.to_string()),
            "cpu": s.cpu,
            "queries": s.queries.load(Ordering::Relaxed),
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// 200 once the node serves a snapshot and has checked every monitored
/// endpoint and backend once; 503 with the reason before.
async fn ready(State(shared): State<Arc<Handles>>) -> Response {
    let r = shared.control.readiness();
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r)).into_response()
}

/// 200 while the process serves its admin API (liveness).
async fn live() -> Response {
    Json(json!({"live": true})).into_response()
}

/// `rrl` in `/v1/status`: the settings in force and what was limited, by
/// response class.
fn rrl_json(g: &crate::guard::Guard) -> serde_json::Value {
    use crate::guard::rrl::CLASSES;
    let t = g.rrl_stats.totals();
    let by_class = |v: &[u64; 6]| -> serde_json::Map<String, serde_json::Value> {
        CLASSES
            .iter()
            .zip(v)
            .map(|(c, n)| (c.to_string(), json!(n)))
            .collect()
    };
    json!({
        "enabled": g.rrl.is_some(),
        "settings": g.rrl.as_ref().map(|l| json!({
            "rate": l.settings.rate,
            "burst": l.settings.burst,
            "slip": l.settings.slip,
            "ipv4_prefix": l.settings.ipv4_prefix,
            "ipv6_prefix": l.settings.ipv6_prefix,
            "dry_run": l.settings.dry_run,
            "table_entries": l.entries(),
        })),
        "dropped": by_class(&t.dropped),
        "slipped": by_class(&t.slipped),
        "would_limit": by_class(&t.would),
    })
}

/// `cookies` in `/v1/status`: whether they are on and what queries carried.
fn cookies_json(g: &crate::guard::Guard) -> serde_json::Value {
    let t = g.cookie_stats.totals();
    json!({
        "enabled": g.cookies.is_some(),
        "require": g.cookies.as_ref().is_some_and(|c| c.require),
        "previous_secret": g.cookies.as_ref().is_some_and(|c| c.secrets.previous.is_some()),
        "client_only": t.client_only,
        "valid": t.valid,
        "invalid": t.invalid,
        "malformed": t.malformed,
        "badcookie_sent": t.badcookie,
    })
}

async fn reload(State(shared): State<Arc<Handles>>) -> Response {
    let s = shared.clone();
    let result = crate::control::in_background("geolb-reload", move || s.control.reload()).await;
    match result {
        Ok(Ok(r)) => (
            StatusCode::OK,
            Json(json!({"ok": true, "generation": r.generation, "warnings": lines(&r.warnings)})),
        )
            .into_response(),
        Ok(Err(r)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "ok": false,
                "generation": r.generation,
                "message": "reload failed; the previous configuration is still serving",
                "errors": lines(&r.errors),
                "warnings": lines(&r.warnings),
            })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"ok": false, "message": format!("reload task failed: {e}")})),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ExplainQuery {
    name: Option<String>,
    #[serde(rename = "type", default)]
    qtype: Option<String>,
    client: Option<String>,
    subnet: Option<String>,
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

async fn explain(
    State(shared): State<Arc<Handles>>,
    q: Result<axum::extract::Query<ExplainQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let Some(name) = q.name else {
        return bad_request(
            "name is required: /v1/explain?name=www.example.com&type=A&client=203.0.113.7".into(),
        );
    };
    let Some(client) = q.client.or(q.subnet) else {
        return bad_request("client (an address or CIDR) or subnet is required".into());
    };
    let spec = match crate::explain::ClientSpec::parse(&client) {
        Ok(s) => s,
        Err(e) => return bad_request(e.to_string()),
    };
    let snap = shared.control.source.load_full();
    match crate::explain::explain(&snap, &name, q.qtype.as_deref().unwrap_or("A"), spec) {
        Ok(mut ex) => {
            // Add what only a running node knows: the votes behind each state.
            let h = health_json(&shared);
            if let Some(svc) = ex.service.as_mut() {
                for e in svc.endpoints.iter_mut() {
                    let found = h["endpoints"]
                        .as_array()
                        .and_then(|a| a.iter().find(|x| x["endpoint"] == e.endpoint.as_str()));
                    if let Some(x) = found {
                        if let Some(v) = x["votes"].as_object() {
                            e.votes = v
                                .iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                                .collect();
                        }
                        e.last_error = x["last_error"].as_str().map(str::to_string);
                        if let Some(r) = x["reason"].as_str() {
                            e.state = r.to_string();
                        }
                    }
                }
            }
            Json(ex).into_response()
        }
        Err(e) => bad_request(e.to_string()),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideRequest {
    /// "pool/address", a pool or a region.
    target: String,
    /// "10m", "1h"...: revert by itself after this long.
    #[serde(default, rename = "for")]
    duration: Option<String>,
    /// For /v1/force: "up" or "down".
    #[serde(default)]
    state: Option<String>,
    /// Only the members of one source: "dns" (DNS answers) or "tier" (the
    /// tier's backends), e.g. the first phase of a two-phase drain.
    #[serde(default)]
    only: Option<String>,
    /// For /v1/drain: a partial drain of this share of client subnets, in
    /// (0, 1]; 1 (or none) drains them all.
    #[serde(default)]
    fraction: Option<f64>,
}

fn parse_body(body: &axum::body::Bytes) -> Result<OverrideRequest, String> {
    serde_json::from_slice::<OverrideRequest>(body).map_err(|e| {
        format!("expected JSON like {{\"target\": \"eu-central\", \"for\": \"30m\"}}: {e}")
    })
}

async fn apply(shared: Arc<Handles>, req: OverrideRequest, state: AdminState) -> Response {
    let until = match req.duration.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(std::time::SystemTime::now() + d),
        Some(Err(e)) => return bad_request(format!("for: {e}")),
    };
    if let Some(o) = req.only.as_deref() {
        if o != crate::health::SOURCE_DNS && o != crate::tier::SOURCE {
            return bad_request(format!("only: {o:?}: expected \"dns\" or \"tier\""));
        }
    }
    if req.fraction.is_some() && state != AdminState::Drain {
        return bad_request("fraction: only /v1/drain takes a fraction".into());
    }
    let target = req.target.clone();
    let only = req.only.clone();
    let fraction = req.fraction.filter(|&f| f < 1.0);
    let res = tokio::task::spawn_blocking(move || {
        shared.control.health.set_override_for(
            &req.target,
            state,
            until,
            req.only.as_deref(),
            req.fraction,
        )
    })
    .await;
    match res {
        Ok(Ok(n)) => Json(json!({
            "target": target,
            "state": state,
            "endpoints": n,
            "until": until.map(unix),
            "only": only,
            "fraction": fraction,
        }))
        .into_response(),
        Ok(Err(e @ OverrideError::UnknownTarget(_))) => {
            (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))).into_response()
        }
        Ok(Err(e @ (OverrideError::Fraction(_) | OverrideError::FractionNeedsDrain))) => {
            bad_request(e.to_string())
        }
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn drain(State(shared): State<Arc<Handles>>, body: axum::body::Bytes) -> Response {
    match parse_body(&body) {
        Ok(r) => apply(shared, r, AdminState::Drain).await,
        Err(msg) => bad_request(msg),
    }
}

async fn undrain(State(shared): State<Arc<Handles>>, body: axum::body::Bytes) -> Response {
    match parse_body(&body) {
        Ok(r) => apply(shared, r, AdminState::None).await,
        Err(msg) => bad_request(msg),
    }
}

async fn force(State(shared): State<Arc<Handles>>, body: axum::body::Bytes) -> Response {
    let r = match parse_body(&body) {
        Ok(r) => r,
        Err(msg) => return bad_request(msg),
    };
    let state = match r.state.as_deref() {
        Some("up") => AdminState::ForceUp,
        Some("down") => AdminState::ForceDown,
        Some("none") => AdminState::None,
        other => {
            return bad_request(format!(
                "state {other:?}: expected \"up\", \"down\" or \"none\""
            ))
        }
    };
    apply(shared, r, state).await
}

/// This vantage's own observations, with its own tier's load (when a
/// region has a capacity). A node without local checks and no tier load
/// has none: it answers 409 with an error rather than an empty list, so a
/// node that polls it by mistake (a DNS node listed as another's vantage)
/// shows that vantage as failing, with this message, instead of as a
/// fresh vantage that never votes.
async fn observations(State(shared): State<Arc<Handles>>) -> Response {
    let s = shared.clone();
    let load = move || {
        let load = s.control.tier.load_report();
        s.control.health.observations_with(load)
    };
    match tokio::task::spawn_blocking(load).await {
        Ok(Some(o)) => Json(o).into_response(),
        Ok(None) => (
            StatusCode::CONFLICT,
            Json(json!({"error": "this node runs no checks of its own (health.local_checks = false), so it has no observations to serve; read a `geolb probe` node instead"})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

/// The health epoch the DNS answers are given under: the consensus id
/// (what to compare between nodes, and what NSID and explain name), the
/// ordering hint, and this node's own counter and change time.
fn epoch_json(e: &crate::policy::Epoch) -> serde_json::Value {
    json!({
        "id": e.hex(),
        "since": e.since,
        "seq": e.seq,
        "changed_at": e.changed_at,
        "changes": e.changes,
    })
}

/// Per endpoint: effective state and why, votes, override, last check.
pub fn health_json(shared: &Handles) -> serde_json::Value {
    let snap = shared.control.source.load_full();
    let topo = &snap.topology;
    let v = shared.control.health.with_table(|table, cfg| {
        let now = unix(std::time::SystemTime::now());
        let fresh_for = cfg.fresh_for.as_secs_f64();
        let endpoints: Vec<serde_json::Value> = topo
        .endpoints
        .iter()
        .zip(snap.members.iter())
        .enumerate()
        .map(|(i, (e, m))| {
            let pool = &topo.pools[e.pool as usize];
            let st = table.endpoints.get(&e.identity);
            let ov = table.override_for(m);
            let mut votes = serde_json::Map::new();
            let monitored = st.filter(|s| s.monitored);
            // This node's own vote: none without local checks.
            let local_vote = monitored
                .filter(|_| cfg.local_checks)
                .map(|st| if st.local.up { "up" } else { "down" });
            if let Some(st) = monitored {
                if let Some(v) = local_vote {
                    votes.insert(cfg.vantage.clone(), json!(v));
                }
                for (name, _) in cfg.vantages.iter().filter(|(_, v)| v.votes) {
                    let v = match st.remote.get(name) {
                        Some(r) if now - r.received <= fresh_for => {
                            json!(if r.up { "up" } else { "down" })
                        }
                        Some(_) => json!("stale"),
                        None => json!("no data"),
                    };
                    votes.insert(name.clone(), v);
                }
            }
            json!({
                "endpoint": e.identity,
                "pool": pool.name,
                "region": topo.regions[pool.region as usize].name,
                "up": snap.health.up(i as u32),
                "checked_up": st.map(|s| s.checked_up),
                "reason": match ov {
                    Some(o) => format!("{} by operator ({})", o.describe(), o.target),
                    None if snap.health.get(i as u32).capacity_low => {
                        snap.health.get(i as u32).reason().to_string()
                    }
                    None => st.map_or(String::new(), |s| s.reason.clone()),
                },
                "override": ov,
                "monitor": st.and_then(|s| s.monitor.clone()),
                "check": st.and_then(|s| s.check.clone()),
                "votes": votes,
                "local_vote": local_vote,
                "last_check": st.and_then(|s| s.last.clone()),
                "last_error": st.and_then(|s| s.last.as_ref().and_then(|l| l.error.clone())),
                "last_change": st.map(|s| s.last_change),
                "rtt_ewma_ms": st.and_then(|s| s.rtt_ewma_ms),
            })
        })
        .collect();
        let pools: Vec<serde_json::Value> = topo
            .pools
            .iter()
            .map(|p| {
                let up = p.endpoints.clone().filter(|&e| snap.health.up(e)).count();
                json!({
                    "pool": p.name,
                    "region": topo.regions[p.region as usize].name,
                    "endpoints": p.endpoints.len(),
                    "up": up,
                    "min_healthy": p.min_healthy,
                    "healthy": up as u32 >= p.min_healthy,
                })
            })
            .collect();
        let vantages: Vec<serde_json::Value> = cfg
            .vantages
            .iter()
            .map(|(name, v)| {
                let st = table.vantages.get(name);
                let last_ok = st.and_then(|s| s.last_ok);
                json!({
                    "vantage": name,
                    "url": v.url,
                    "votes": v.votes,
                    "fresh": last_ok.is_some_and(|t| now - t <= fresh_for),
                    "last_ok": last_ok,
                    "last_error": st.and_then(|s| s.last_error.clone()),
                    "last_error_at": st.and_then(|s| s.last_error_at),
                })
            })
            .collect();
        json!({
            "vantage": cfg.vantage,
            "local_checks": cfg.local_checks,
            "poll_interval": cfg.poll_interval.as_secs_f64(),
            "quorum": cfg.quorum_needed(),
            "vantages": vantages,
            "pools": pools,
            "endpoints": endpoints,
            "overrides": table.overrides,
            "state_file": table.state_file,
            "state_file_error": table.state_error,
            "state_file_load_error": table.state_load_error,
            "epoch": epoch_json(&snap.health.epoch),
            "capacity": crate::snapshot::capacity::status(&snap, &shared.control.health.current(), now),
        })
    });
    let mut v = v;
    v["tier"] = serde_json::to_value(shared.control.tier.status()).unwrap_or_default();
    v["events"] = serde_json::to_value(shared.control.health.events()).unwrap_or_default();
    v
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MapQuery {
    service: Option<String>,
}

/// The world answer map under this node's live health (see `map`).
async fn map_svg(
    State(shared): State<Arc<Handles>>,
    headers: axum::http::HeaderMap,
    q: Result<axum::extract::Query<MapQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(q) => q.0,
        Err(e) => return bad_request(e.body_text()),
    };
    let out = shared
        .map
        .get(&shared.control.source, q.service.as_deref())
        .await;
    map::respond(out, &headers)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryQuery {
    /// Only the samples taken after this (unix seconds).
    since: Option<f64>,
}

/// Counts of the tracked resolvers per service and region (see
/// `snapshot::resolvers::Tracker::summary`): small and cheap enough to poll.
async fn resolvers_summary(
    State(shared): State<Arc<Handles>>,
    q: Result<axum::extract::Query<SummaryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(q) => q.0,
        Err(e) => return bad_request(e.body_text()),
    };
    let tracker = shared.control.source.load().resolvers.clone();
    let summary =
        tokio::task::spawn_blocking(move || tracker.summary(std::time::SystemTime::now(), q.since))
            .await;
    match summary {
        Ok(s) => Json(s).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ResolversQuery {
    service: Option<String>,
}

/// What each resolver was last answered, per service, while tracking is
/// armed (see `snapshot::resolvers`).
async fn resolvers(
    State(shared): State<Arc<Handles>>,
    q: Result<axum::extract::Query<ResolversQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(q) => q.0,
        Err(e) => return bad_request(e.body_text()),
    };
    let tracker = shared.control.source.load().resolvers.clone();
    let report = tokio::task::spawn_blocking(move || {
        tracker.report(q.service.as_deref(), std::time::SystemTime::now())
    })
    .await;
    match report {
        Ok(r) => Json(r).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackRequest {
    #[serde(rename = "for")]
    window: String,
    #[serde(default)]
    capacity: Option<usize>,
}

/// Arms resolver tracking for a window (mandatory, at most 72 h), starting
/// afresh.
async fn track_resolvers(State(shared): State<Arc<Handles>>, body: axum::body::Bytes) -> Response {
    use crate::snapshot::resolvers::{MAX_CAPACITY, MAX_WINDOW};
    let req = match serde_json::from_slice::<TrackRequest>(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!(
                "expected JSON like {{\"for\": \"1h\", \"capacity\": 100000}}: {e}"
            ))
        }
    };
    let window = match humantime::parse_duration(&req.window) {
        Ok(d) if d.is_zero() || d > MAX_WINDOW => {
            return bad_request(format!("for: {} is not within (0, 72h]", req.window))
        }
        Ok(d) => d,
        Err(e) => return bad_request(format!("for: {e}")),
    };
    let capacity = req.capacity.unwrap_or(100_000);
    if capacity == 0 || capacity > MAX_CAPACITY {
        return bad_request(format!(
            "capacity: {capacity} is not within 1..={MAX_CAPACITY}"
        ));
    }
    let tracker = shared.control.source.load().resolvers.clone();
    let now = std::time::SystemTime::now();
    let t = tracker.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || t.arm(window, capacity, now)).await {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response();
    }
    let r = tracker.report(Some(""), now);
    Json(json!({"armed": true, "armed_at": r.armed_at, "until": r.until, "capacity": r.capacity}))
        .into_response()
}

/// Stops resolver tracking; what was tracked stays readable.
async fn untrack_resolvers(State(shared): State<Arc<Handles>>) -> Response {
    shared.control.source.load().resolvers.disarm();
    Json(json!({"armed": false})).into_response()
}

#[derive(serde::Deserialize)]
struct ExplainHttpQuery {
    listener: Option<String>,
    method: Option<String>,
    host: Option<String>,
    path: Option<String>,
    /// "name: value"; several separated by newlines.
    header: Option<String>,
    /// A Cookie header value.
    cookie: Option<String>,
    client: Option<String>,
}

/// GET /v1/explain-http?listener=eu-http&host=…&path=/…&header=x:1&cookie=…&client=IP
async fn explain_http(
    State(shared): State<Arc<Handles>>,
    q: Result<axum::extract::Query<ExplainHttpQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let Some(listener) = q.listener else {
        return bad_request(
            "listener is required: /v1/explain-http?listener=eu-http&host=www.example.com&path=/"
                .into(),
        );
    };
    let client = match q.client.as_deref().map(str::parse::<std::net::IpAddr>) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(e)) => return bad_request(format!("client: {e}")),
    };
    let mut headers = Vec::new();
    for line in q.header.iter().flat_map(|h| h.lines()) {
        match line.split_once(':') {
            Some((k, v)) => headers.push((k.trim().to_string(), v.trim().to_string())),
            None => return bad_request(format!("header {line:?}: expected \"name: value\"")),
        }
    }
    if let Some(c) = q.cookie {
        headers.push(("cookie".into(), c));
    }
    let question = crate::tier::explain::HttpQuestion {
        listener,
        method: q.method.unwrap_or_else(|| "GET".into()),
        host: q.host,
        path: q.path.unwrap_or_else(|| "/".into()),
        headers,
        client,
    };
    match shared.control.tier.explain_http(&question) {
        Ok(x) => Json(x).into_response(),
        Err(e @ crate::tier::explain::ExplainError::NoListener(_)) => {
            (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))).into_response()
        }
        Err(e) => bad_request(e.to_string()),
    }
}

async fn tier(State(shared): State<Arc<Handles>>) -> Response {
    Json(shared.control.tier.status()).into_response()
}

async fn health(State(shared): State<Arc<Handles>>) -> Response {
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || health_json(&s)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Handles>>) -> Response {
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || {
        crate::metrics::render::render(&s.control, &s.control.health, &s.dns)
    })
    .await
    {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such endpoint; see GET / (the status page), /v1/status, /v1/ready, /v1/live, /v1/health, /v1/tier, /v1/explain, /v1/observations, /v1/map.svg, /v1/resolvers, /v1/resolvers/summary; POST /v1/reload, /v1/drain, /v1/undrain, /v1/force"})),
    )
        .into_response()
}

//! Admin HTTP API (JSON): status and reload. Bound to loopback by default.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::diag::Diagnostic;
use crate::server::Shared;

/// Serves the API until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
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

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/reload", post(reload))
        .route("/v1/explain", get(explain))
        .fallback(not_found)
        .with_state(shared)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let snap = shared.snapshot.load_full();
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
    let last_reload = shared
        .last_reload
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|r| ReloadView {
            ok: r.ok,
            at: unix(r.at),
            generation: r.generation,
            errors: lines(&r.errors),
            warnings: lines(&r.warnings),
        });
    let udp = shared
        .udp_stats
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let sum = |f: fn(&crate::dns::udp::WorkerStats) -> u64| udp.iter().map(|s| f(s)).sum::<u64>();
    let t = &shared.tcp_stats;
    let geo_status = shared
        .geo_status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let db = |d: &Option<Arc<crate::geo::Db>>| {
        d.as_ref().map(|d| {
            json!({
                "path": d.path.display().to_string(),
                "database_type": d.database_type,
                "build_epoch": d.build_epoch,
            })
        })
    };
    let geoip = json!({
        "city": db(&snap.geo.city),
        "asn": db(&snap.geo.asn),
        "last_swap": geo_status.last_swap.map(unix),
        "last_error": geo_status.last_error,
        "last_error_at": geo_status.last_error_at.map(unix),
    });
    let addrs: Vec<SocketAddr> = shared
        .dns_addrs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": unix(shared.started_at),
        "config": shared.config_path.display().to_string(),
        "generation": snap.generation,
        "loaded_at": unix(snap.loaded_at),
        "last_reload": last_reload,
        "listeners": { "dns": addrs },
        "zones": zones,
        "geoip": geoip,
        "counters": {
            "udp_queries": sum(|s| s.queries.load(Ordering::Relaxed)),
            "udp_replies": sum(|s| s.replies.load(Ordering::Relaxed)),
            "udp_dropped": sum(|s| s.dropped.load(Ordering::Relaxed)),
            "tcp_connections": t.connections.load(Ordering::Relaxed),
            "tcp_connections_refused": t.refused.load(Ordering::Relaxed),
            "tcp_queries": t.queries.load(Ordering::Relaxed),
        },
    }))
    .into_response()
}

async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    let s = shared.clone();
    let result = tokio::task::spawn_blocking(move || s.reload()).await;
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
    State(shared): State<Arc<Shared>>,
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
    let snap = shared.snapshot.load_full();
    match crate::explain::explain(&snap, &name, q.qtype.as_deref().unwrap_or("A"), spec) {
        Ok(ex) => Json(ex).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such endpoint; see GET /v1/status, GET /v1/explain, POST /v1/reload"})),
    )
        .into_response()
}

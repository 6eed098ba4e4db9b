//! `GET /v1/map.svg?service=NAME`: the world coloured by the region that
//! answers it under this node's live health — its checks' verdicts, drains
//! and forced states, capacity shares — drawn by `sim::map` from the
//! snapshot it serves from.
//!
//! Drawing walks every network of the City database, so it never runs on
//! a request's path per request, nor on the runtime's threads:
//!
//! - The walk (`sim::ModelOf`, seconds over a full GeoLite2-City) is done
//!   once per snapshot generation, GeoIP database and service, in a
//!   blocking task, and kept (one model at a time).
//! - A drawing (the decisions under the live health view, the tally, the
//!   SVG: tens of milliseconds) is kept by what decides its colours: the
//!   model, and a fingerprint of the health view's verdicts, capacity
//!   shares and — for a service with a `latency` step — RTTs. The last
//!   [`KEPT`] drawings are kept; a request for one of them costs a lookup.
//! - At most one drawing is in progress: a request that needs another
//!   waits for it (up to [`WAIT`]), then draws its own if no one else has,
//!   so requests during a flapping health state share drawings instead of
//!   queueing their own.
//! - The kept walk holds a copy of the snapshot without its counters and
//!   dnstap log ([`detached`]): a replaced generation's counters are folded
//!   into the retained totals when the serving path lets go of them, not
//!   when the map does, and no log writer is kept open. A walk of another
//!   generation, database or service replaces it (dropped first).
//! - After [`IDLE`] without a request the model and drawings are dropped.
//!
//! The response carries an ETag (a hash of the SVG): the status page polls
//! with `If-None-Match` and gets 304 until the colours change.

use std::hash::Hasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, RETRY_AFTER,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use siphasher::sip::SipHasher24;

use crate::policy::{AdminState, Service, Step};
use crate::sim::map::{draw_model, Format};
use crate::sim::{ModelOf, QType, SimError};
use crate::snapshot::Snapshot;

/// Drawings kept.
pub const KEPT: usize = 4;
/// How long a request waits for a drawing in progress.
pub const WAIT: Duration = Duration::from_secs(30);
/// Unused this long, the model and drawings are dropped.
pub const IDLE: Duration = Duration::from_secs(600);
/// The map's width in pixels (the page scales it).
pub const WIDTH: u32 = 1200;
/// Most names in the map's health label.
const LABEL_NAMES: usize = 6;

/// What a walk is valid for: the snapshot generation, the GeoIP databases
/// (a swap keeps the generation) and the service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelKey {
    generation: u64,
    geo: usize,
    service: String,
}

/// What a drawing is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    model: ModelKey,
    health: u64,
}

/// A finished drawing.
#[derive(Debug)]
pub struct Drawing {
    pub svg: axum::body::Bytes,
    pub etag: String,
    /// The health epoch it shows (consensus id) and its label.
    pub epoch: String,
    pub label: String,
    /// Whether it needed a walk of its own (no kept model served).
    pub walked: bool,
    /// Milliseconds: the walk (0 when the kept model served) and the rest.
    pub walk_ms: u64,
    pub draw_ms: u64,
}

type Outcome = Result<Arc<Drawing>, (StatusCode, String)>;

#[derive(Default)]
struct Inner {
    model: Option<(ModelKey, Arc<ModelOf<Arc<Snapshot>>>)>,
    drawn: Vec<(Key, Outcome)>,
    drawing: Option<Key>,
    last_used: Option<Instant>,
    sweeping: bool,
    /// Drawings made since start, and walks.
    draws: u64,
    walks: u64,
}

/// The cache and its single drawing slot.
#[derive(Default)]
pub struct MapCache {
    inner: Mutex<Inner>,
    done: tokio::sync::Notify,
}

/// `snap` for keeping beside the serving path: the same parts (shared), but
/// counters of its own (the serving snapshot's fold into the retained
/// totals when the serving path drops them, whatever the map keeps) and no
/// dnstap log.
pub fn detached(snap: &Snapshot) -> Snapshot {
    let mut s = snap.clone();
    s.counters = Arc::new(crate::snapshot::counters::Counters::new(
        1,
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Arc::default(),
    ));
    s.dnstap = None;
    s.dnstap_plan = None;
    s
}

/// Service names compare without the trailing dot and case.
fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

fn find_service<'a>(snap: &'a Snapshot, name: Option<&str>) -> Option<&'a Service> {
    let mut all = snap.zones.zones.iter().flat_map(|z| z.services.iter());
    match name {
        Some(n) => all.find(|s| same_name(&s.name, n)),
        None => all.next(),
    }
}

/// The fingerprint of what colours the map in `snap`'s health view (and
/// of the epoch it names).
fn health_key(snap: &Snapshot, svc: &Service) -> u64 {
    let h = &snap.health;
    let mut s = SipHasher24::new_with_keys(0, 0);
    // The consensus id moves with verdicts and counted votes, not RTTs: in
    // the key, the drawing's label and header name the epoch exactly.
    s.write_u64(h.epoch.id);
    s.write_usize(h.endpoints.len());
    for e in &h.endpoints {
        let admin = match e.admin {
            AdminState::None => 0u8,
            AdminState::Drain => 1,
            AdminState::ForceUp => 2,
            AdminState::ForceDown => 3,
        };
        s.write(&[u8::from(e.checked_up), admin, u8::from(e.capacity_low)]);
    }
    s.write_usize(h.shares.len());
    for slot in &h.shares {
        s.write_usize(slot.len());
        for x in slot {
            s.write_u64(x.share.to_bits());
        }
    }
    if svc.steps.iter().any(|st| matches!(st, Step::Latency(_))) {
        for v in &h.rtt {
            for x in &v.rtt_ms {
                s.write_u64(x.to_bits());
            }
        }
    }
    s.finish()
}

/// "live health, epoch …: all up" or with what is drained, forced down and
/// down, named as widely as is true (a region, else a pool, else the
/// endpoint), at most [`LABEL_NAMES`] names.
pub fn live_label(snap: &Snapshot) -> String {
    let topo = &snap.topology;
    let h = &snap.health;
    let class = |i: u32| -> Option<&'static str> {
        let e = h.get(i);
        match e.admin {
            AdminState::ForceUp => None,
            AdminState::Drain => Some("drained"),
            AdminState::ForceDown => Some("forced down"),
            AdminState::None if !e.up() => Some("down"),
            AdminState::None => None,
        }
    };
    let mut groups: Vec<(&'static str, Vec<String>)> = ["drained", "forced down", "down"]
        .iter()
        .map(|c| (*c, Vec::new()))
        .collect();
    let mut add = |c: &'static str, name: String| {
        if let Some(g) = groups.iter_mut().find(|g| g.0 == c) {
            g.1.push(name);
        }
    };
    for (ri, region) in topo.regions.iter().enumerate() {
        let pools: Vec<&crate::policy::Pool> = topo
            .pools
            .iter()
            .filter(|p| p.region as usize == ri)
            .collect();
        let all_eps: Vec<u32> = pools.iter().flat_map(|p| p.endpoints.clone()).collect();
        let whole = |eps: &[u32]| -> Option<&'static str> {
            let first = class(*eps.first()?)?;
            eps.iter()
                .all(|&e| class(e) == Some(first))
                .then_some(first)
        };
        if let Some(c) = whole(&all_eps) {
            add(c, region.name.clone());
            continue;
        }
        for p in pools {
            let eps: Vec<u32> = p.endpoints.clone().collect();
            if let Some(c) = whole(&eps) {
                add(c, p.name.clone());
                continue;
            }
            for e in eps {
                if let (Some(c), Some(ep)) = (class(e), topo.endpoints.get(e as usize)) {
                    add(c, ep.identity.clone());
                }
            }
        }
    }
    let mut parts = Vec::new();
    let mut left = LABEL_NAMES;
    for (c, names) in groups.iter().filter(|g| !g.1.is_empty()) {
        let shown: Vec<&str> = names.iter().take(left).map(String::as_str).collect();
        left -= shown.len();
        let more = names.len() - shown.len();
        let mut s = format!("{c}: {}", shown.join(", "));
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
        parts.push(s);
    }
    format!(
        "live health, epoch {}: {}",
        h.epoch.hex(),
        if parts.is_empty() {
            "all up".to_string()
        } else {
            parts.join("; ")
        }
    )
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": msg.into()}))).into_response()
}

impl MapCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drawings and walks made since start.
    pub fn counts(&self) -> (u64, u64) {
        let i = self.lock();
        (i.draws, i.walks)
    }

    /// The drawing of `service` (the first when None) under `source`'s
    /// health as it is now: kept, or drawn (after the drawing in progress,
    /// if any, is done). A request waits for at most two drawings — the
    /// one in progress and its own — whatever health does meanwhile.
    pub async fn get(
        self: &Arc<Self>,
        source: &crate::snapshot::Source,
        service: Option<&str>,
    ) -> Outcome {
        let deadline = tokio::time::Instant::now() + WAIT;
        let snap = source.load_full();
        if snap.geo.city.is_none() {
            return Err((
                StatusCode::CONFLICT,
                "no City database is configured ([geoip] city): the map colours the networks it lists, so there is none to draw".into(),
            ));
        }
        let Some(svc) = find_service(&snap, service) else {
            return Err((
                StatusCode::NOT_FOUND,
                match service {
                    Some(s) => format!("no service named {s:?}"),
                    None => "the config has no service".into(),
                },
            ));
        };
        let key = Key {
            model: ModelKey {
                generation: snap.generation,
                geo: Arc::as_ptr(&snap.geo) as usize,
                service: svc.name.clone(),
            },
            health: health_key(&snap, svc),
        };
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            {
                let mut inner = self.lock();
                inner.last_used = Some(Instant::now());
                if let Some((_, out)) = inner.drawn.iter().find(|(k, _)| *k == key) {
                    return out.clone();
                }
                notified.as_mut().enable();
                if inner.drawing.is_none() {
                    inner.drawing = Some(key.clone());
                    self.start(&mut inner, snap.clone(), key.clone());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the map is still being drawn; ask again shortly".into(),
                ));
            }
        }
    }

    /// Draws `key` in a blocking task; wakes every waiter when done.
    fn start(self: &Arc<Self>, inner: &mut Inner, snap: Arc<Snapshot>, key: Key) {
        // Another walk is dropped before this one is made: one at a time.
        if inner.model.as_ref().is_some_and(|(k, _)| *k != key.model) {
            inner.model = None;
        }
        let kept = inner.model.as_ref().map(|(_, m)| m.clone());
        if !inner.sweeping {
            inner.sweeping = true;
            let me = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(IDLE / 4).await;
                    let Some(me) = me.upgrade() else { return };
                    let mut i = me.lock();
                    if i.drawing.is_none() && i.last_used.is_none_or(|t| t.elapsed() >= IDLE) {
                        i.model = None;
                        i.drawn.clear();
                        i.sweeping = false;
                        return;
                    }
                }
            });
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let work = std::panic::AssertUnwindSafe(|| {
                let model = match kept {
                    Some(m) => Ok((m, false)),
                    None => ModelOf::new(
                        Arc::new(detached(&snap)),
                        std::slice::from_ref(&key.model.service),
                        QType::A,
                    )
                    .map(|m| (Arc::new(m), true)),
                };
                let walked = Instant::now();
                let out = model.and_then(|(model, fresh)| {
                    let label = live_label(&snap);
                    let drawn = draw_model(
                        &model,
                        &[(label.clone(), (*snap.health).clone())],
                        WIDTH,
                        Format::Svg,
                    )?;
                    Ok((model, fresh, label, drawn))
                });
                (walked, out)
            });
            let mut inner = me.lock();
            let (walked, out) = match std::panic::catch_unwind(work) {
                Ok(x) => x,
                Err(_) => (
                    Instant::now(),
                    Err(SimError::Draw("drawing the map panicked".into())),
                ),
            };
            let outcome: Outcome = match out {
                Ok((model, fresh, label, drawn)) => {
                    inner.draws += 1;
                    if fresh {
                        inner.walks += 1;
                    }
                    inner.model = Some((key.model.clone(), model));
                    let mut h = SipHasher24::new_with_keys(0, 0);
                    h.write(&drawn.bytes);
                    Ok(Arc::new(Drawing {
                        etag: format!("\"{:016x}\"", h.finish()),
                        svg: drawn.bytes.into(),
                        epoch: snap.health.epoch.hex(),
                        label,
                        walked: fresh,
                        walk_ms: if fresh {
                            (walked - t0).as_millis() as u64
                        } else {
                            0
                        },
                        draw_ms: walked.elapsed().as_millis() as u64,
                    }))
                }
                Err(e @ SimError::NoCity) => Err((StatusCode::CONFLICT, e.to_string())),
                Err(e @ SimError::UnknownService(_)) => Err((StatusCode::NOT_FOUND, e.to_string())),
                Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            };
            // Only the current walk's drawings are kept: a key names its
            // GeoIP databases by address, which a later set may reuse.
            inner.drawn.retain(|(k, _)| k.model == key.model);
            if inner.drawn.len() >= KEPT {
                drop(inner.drawn.remove(0));
            }
            inner.drawn.push((key, outcome));
            inner.drawing = None;
            drop(inner);
            me.done.notify_waiters();
        });
    }
}

/// The response: the SVG with its ETag, or 304 when the caller has it.
pub fn respond(out: Outcome, headers: &HeaderMap) -> Response {
    let d = match out {
        Ok(d) => d,
        Err((code, msg)) => {
            let mut r = error(code, msg);
            if code == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("2"));
            }
            return r;
        }
    };
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == d.etag));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        d.svg.clone().into_response()
    };
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&d.etag) {
        h.insert(ETAG, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    for (name, value) in [
        ("x-geolb-map-epoch", d.epoch.clone()),
        (
            "x-geolb-map-walked",
            (if d.walked { "yes" } else { "no" }).to_string(),
        ),
        ("x-geolb-map-walk-ms", d.walk_ms.to_string()),
        ("x-geolb-map-draw-ms", d.draw_ms.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::snapshot::Source;

    /// eu and us over the sample City database (DE, US, JP, FR, BR).
    fn source() -> (tempfile::TempDir, Source) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(
            root.join("geoip/sample-city.mmdb"),
            dir.path().join("city.mmdb"),
        )
        .expect("copy mmdb");
        std::fs::write(
            dir.path().join("z.zone"),
            "$TTL 60\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n",
        )
        .expect("zone");
        let cfg = r#"
[geoip]
city = "city.mmdb"
[regions]
eu = { location = [50.1, 8.7] }
us = { location = [39.0, -77.5] }
[pools]
eu-web = { region = "eu", endpoints = [{ address = "10.1.0.1" }, { address = "10.1.0.2" }] }
us-web = { region = "us", endpoints = [{ address = "10.2.0.1" }] }
[zones."example.com"]
file = "z.zone"
[zones."example.com".services.www]
pools = ["eu-web", "us-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 1
geo = { default = ["us", "eu"], continent = { EU = ["eu", "us"] } }
"#;
        let c = Config::parse(&dir.path().join("g.toml"), cfg).expect("config");
        let (snap, _) = crate::snapshot::build(c, 1, None).expect("snapshot");
        (dir, Source::new(snap))
    }

    /// Drains (or undrains, with None) the endpoints of `pool`.
    fn set_pool(source: &Source, pool: &str, admin: AdminState) {
        source.update(|cur| {
            let mut next = cur.clone();
            let mut view = (*cur.health).clone();
            if view.endpoints.len() < cur.topology.endpoints.len() {
                view.endpoints
                    .resize(cur.topology.endpoints.len(), Default::default());
            }
            for (i, e) in cur.topology.endpoints.iter().enumerate() {
                if cur.topology.pools[e.pool as usize].name == pool {
                    view.endpoints[i].admin = admin;
                }
            }
            view.epoch.seq += 1;
            next.set_health(view);
            Some(next)
        });
    }

    fn fill_of(svg: &str, cc: &str) -> String {
        let tag = format!("<path data-cc=\"{cc}\" fill=\"");
        let at = svg.find(&tag).map(|i| i + tag.len()).unwrap_or(0);
        svg[at..].split('"').next().unwrap_or("").to_string()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_share_one_walk_and_one_drawing_per_health_state() {
        let (_dir, source) = source();
        let cache = Arc::new(MapCache::default());
        // Eight requests at once: one walk, one drawing.
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let c = cache.clone();
            let snap = source.load_full();
            tasks.push(tokio::spawn(async move {
                let s = Source::new((*snap).clone());
                c.get(&s, None).await
            }));
        }
        let mut etags = Vec::new();
        for t in tasks {
            let d = t.await.expect("task").expect("drawn");
            etags.push(d.etag.clone());
        }
        assert!(etags.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(cache.counts(), (1, 1), "one drawing, one walk");
        let all_up = cache.get(&source, None).await.expect("drawn");
        assert_eq!(cache.counts(), (1, 1), "kept");
        let svg = String::from_utf8_lossy(&all_up.svg).to_string();
        assert!(all_up.label.ends_with("all up"), "{}", all_up.label);
        assert!(svg.contains("data-legend=\"eu\""), "{svg:.300}");
        let (de_up, us_up) = (fill_of(&svg, "DE"), fill_of(&svg, "US"));
        assert_ne!(de_up, us_up, "eu and us answer apart");

        // A drain: a new drawing from the kept walk, Germany in us's colour.
        set_pool(&source, "eu-web", AdminState::Drain);
        let drained = cache
            .get(&source, Some("www.example.com"))
            .await
            .expect("drawn");
        assert_eq!(cache.counts(), (2, 1), "drawn again, not walked again");
        assert_ne!(drained.etag, all_up.etag);
        assert!(drained.label.contains("drained: eu"), "{}", drained.label);
        let svg = String::from_utf8_lossy(&drained.svg).to_string();
        assert_eq!(fill_of(&svg, "DE"), us_up);

        // Undone: the first drawing again, from the cache.
        set_pool(&source, "eu-web", AdminState::None);
        let back = cache.get(&source, None).await.expect("drawn");
        assert_eq!(back.etag, all_up.etag);
        assert_eq!(cache.counts(), (2, 1));

        // The kept walk does not hold the serving snapshot's counters.
        let served = source.load_full();
        let before = Arc::strong_count(&served.counters);
        drop(cache.get(&source, None).await);
        assert_eq!(Arc::strong_count(&served.counters), before);
        if let Some((_, m)) = cache.lock().model.as_ref() {
            assert!(!Arc::ptr_eq(&m.snapshot().counters, &served.counters));
        }

        // Unknown service, and a snapshot with no City database.
        let e = cache.get(&source, Some("nope.example.com")).await;
        assert_eq!(e.err().map(|e| e.0), Some(StatusCode::NOT_FOUND));
        source.update(|cur| {
            let mut next = cur.clone();
            next.geo = Arc::new(crate::geo::GeoDb::default());
            Some(next)
        });
        let e = cache.get(&source, None).await;
        assert_eq!(e.err().map(|e| e.0), Some(StatusCode::CONFLICT));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flapping_health_costs_one_drawing_at_a_time_shared_by_its_viewers() {
        let (_dir, source) = source();
        let cache = Arc::new(MapCache::default());
        // Viewers ask while the health flips between two states: each gets
        // the drawing of the state it arrived under, and there are never
        // more drawings than distinct states.
        let mut tasks = Vec::new();
        for i in 0..24 {
            set_pool(
                &source,
                "us-web",
                if i % 2 == 0 {
                    AdminState::Drain
                } else {
                    AdminState::None
                },
            );
            // The source as the viewer's request finds it.
            let (c, s) = (cache.clone(), Source::new((*source.load_full()).clone()));
            let drained = i % 2 == 0;
            tasks.push(tokio::spawn(
                async move { (drained, c.get(&s, None).await) },
            ));
        }
        let mut etags = [None, None];
        for t in tasks {
            let (drained, out) = t.await.expect("task");
            let d = out.expect("drawn");
            assert_eq!(d.label.contains("drained: us"), drained, "{}", d.label);
            let slot = &mut etags[usize::from(drained)];
            assert!(slot.as_ref().is_none_or(|e| *e == d.etag));
            *slot = Some(d.etag.clone());
        }
        assert_eq!(cache.counts(), (2, 1), "two states, two drawings, one walk");
        assert!(cache.lock().drawing.is_none());
    }

    #[test]
    fn the_response_is_304_for_the_etag_the_caller_has() {
        let d = Arc::new(Drawing {
            svg: axum::body::Bytes::from_static(b"<svg/>"),
            etag: "\"00000000000000aa\"".into(),
            epoch: "1".into(),
            label: "l".into(),
            walked: false,
            walk_ms: 0,
            draw_ms: 1,
        });
        let mut h = HeaderMap::new();
        assert_eq!(respond(Ok(d.clone()), &h).status(), StatusCode::OK);
        h.insert(
            IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", \"00000000000000aa\""),
        );
        let r = respond(Ok(d), &h);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[ETAG], "\"00000000000000aa\"");
        let r = respond(Err((StatusCode::SERVICE_UNAVAILABLE, "busy".into())), &h);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
    }
}

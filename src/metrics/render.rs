//! Prometheus text exposition of everything the server counts. Counters
//! live with what they count (the snapshot's query counters, the
//! listeners', the control jobs', the health table); this reads them all
//! at scrape time, so nothing on the answer path takes a lock or a hash.

use std::sync::atomic::Ordering;

use super::Exposition;
use crate::control::Control;
use crate::dns::DnsStats;
use crate::health::{unix, HealthService, PROBE_BUCKETS};
use crate::tier::stats::{get, CONNECT_BUCKETS};
use crate::tier::Tier;

/// Prometheus text exposition of everything countable: the snapshot's
/// query and answer counters, the listeners', reloads and GeoIP, and health.
pub fn render(control: &Control, health: &HealthService, dns: &DnsStats) -> String {
    let snap = control.source.load_full();
    let mut e = Exposition::default();
    let totals = snap.counters.totals();
    e.family(
        "geolb_dns_queries_total",
        "counter",
        "DNS queries answered, by zone, query type and response code.",
    );
    for ((zone, qtype, rcode), n) in &totals.queries {
        e.sample(
            "geolb_dns_queries_total",
            &[("zone", zone), ("qtype", qtype), ("rcode", rcode)],
            *n as f64,
        );
    }
    e.family("geolb_answers_total", "counter", "Steered answers, by service and region of the first endpoint ((none): fallback or NODATA).");
    for ((svc, region), n) in &totals.answers {
        e.sample(
            "geolb_answers_total",
            &[("service", svc), ("region", region)],
            *n as f64,
        );
    }
    if let Some(tap) = &snap.dnstap {
        let st = tap.status();
        let name = "geolb_dnstap_messages_total";
        e.family(
            name,
            "counter",
            "dnstap messages (sampled queries and responses) written, and lost to write or connection errors.",
        );
        e.sample(name, &[("outcome", "written")], st.written as f64);
        e.sample(name, &[("outcome", "error")], st.errors as f64);
        let name = "geolb_dnstap_dropped_total";
        e.family(
            name,
            "counter",
            "Sampled exchanges not logged because the dnstap queue was full (answers never wait for the log).",
        );
        e.sample(name, &[], st.dropped as f64);
    }
    let udp = &dns.udp;
    e.family(
        "geolb_udp_packets_total",
        "counter",
        "UDP packets received, replied to, and dropped.",
    );
    for (kind, n) in [
        (
            "received",
            udp.iter()
                .map(|s| s.queries.load(Ordering::Relaxed))
                .sum::<u64>(),
        ),
        (
            "replied",
            udp.iter().map(|s| s.replies.load(Ordering::Relaxed)).sum(),
        ),
        (
            "dropped",
            udp.iter().map(|s| s.dropped.load(Ordering::Relaxed)).sum(),
        ),
        (
            "panicked",
            udp.iter().map(|s| s.panics.load(Ordering::Relaxed)).sum(),
        ),
    ] {
        e.sample("geolb_udp_packets_total", &[("result", kind)], n as f64);
    }
    e.family(
        "geolb_udp_worker_packets_total",
        "counter",
        "UDP packets received by each worker thread (listener: its address; cpu: the CPU it is pinned to with udp_cpu_affinity, else none): how the kernel spreads queries over the workers.",
    );
    for (i, s) in udp.iter().enumerate() {
        let worker = i.to_string();
        let listener = s.listener.map(|a| a.to_string()).unwrap_or_default();
        let cpu = s.cpu.map_or_else(|| "none".to_string(), |c| c.to_string());
        e.sample(
            "geolb_udp_worker_packets_total",
            &[
                ("worker", worker.as_str()),
                ("listener", listener.as_str()),
                ("cpu", cpu.as_str()),
            ],
            s.queries.load(Ordering::Relaxed) as f64,
        );
    }
    e.family(
        "geolb_udp_worker_restarts_total",
        "counter",
        "Times a UDP worker's loop was restarted after a panic outside a packet's answer.",
    );
    e.sample(
        "geolb_udp_worker_restarts_total",
        &[],
        udp.iter()
            .map(|s| s.restarts.load(Ordering::Relaxed))
            .sum::<u64>() as f64,
    );
    guard(&mut e, &snap.guard);
    let t = &dns.tcp;
    e.family(
        "geolb_tcp_connections_total",
        "counter",
        "TCP connections accepted, refused at the global limit (refused) and at the per-client-prefix limit (refused_per_client).",
    );
    for (result, n) in [
        ("accepted", &t.connections),
        ("refused", &t.refused),
        ("refused_per_client", &t.refused_per_client),
    ] {
        e.sample(
            "geolb_tcp_connections_total",
            &[("result", result)],
            n.load(Ordering::Relaxed) as f64,
        );
    }
    e.family(
        "geolb_tcp_io_timeouts_total",
        "counter",
        "TCP connections closed because a started query or a reply did not move within server.tcp_io_timeout.",
    );
    e.sample(
        "geolb_tcp_io_timeouts_total",
        &[],
        t.io_timeouts.load(Ordering::Relaxed) as f64,
    );
    e.family(
        "geolb_reloads_total",
        "counter",
        "Config reloads, by result.",
    );
    e.sample(
        "geolb_reloads_total",
        &[("result", "success")],
        control.reloads_ok.load(Ordering::Relaxed) as f64,
    );
    e.sample(
        "geolb_reloads_total",
        &[("result", "failure")],
        control.reloads_failed.load(Ordering::Relaxed) as f64,
    );
    e.family(
        "geolb_config_generation",
        "gauge",
        "Generation of the configuration being served.",
    );
    e.sample("geolb_config_generation", &[], snap.generation as f64);
    e.family(
        "geolb_reload_last_success",
        "gauge",
        "0 when the last reload failed (the previous configuration serves), else 1.",
    );
    let last_ok = control.last_reload().is_none_or(|r| r.ok);
    e.sample(
        "geolb_reload_last_success",
        &[],
        f64::from(u8::from(last_ok)),
    );
    e.family(
        "geolb_ready",
        "gauge",
        "1 once GET /v1/ready answers 200 (every monitored member checked once).",
    );
    let ready = control.readiness().ready;
    e.sample("geolb_ready", &[], f64::from(u8::from(ready)));
    e.family(
        "geolb_geoip_build_timestamp_seconds",
        "gauge",
        "Build time of each loaded GeoIP database.",
    );
    for (kind, db) in [("city", &snap.geo.city), ("asn", &snap.geo.asn)] {
        if let Some(d) = db {
            e.sample(
                "geolb_geoip_build_timestamp_seconds",
                &[("database", kind), ("path", &d.path.display().to_string())],
                d.build_epoch as f64,
            );
        }
    }
    e.family(
        "geolb_geoip_build_pending_seconds",
        "gauge",
        "How long a changed GeoIP database has been compiling (0: none); the old one serves meanwhile.",
    );
    let geo_status = control.geo_status();
    e.family(
        "geolb_geoip_watch_error",
        "gauge",
        "1 when the last changed GeoIP database was rejected (the previous one serves), else 0.",
    );
    e.sample(
        "geolb_geoip_watch_error",
        &[],
        f64::from(u8::from(geo_status.last_error.is_some())),
    );
    let building = geo_status.building_since;
    e.sample(
        "geolb_geoip_build_pending_seconds",
        &[],
        building
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    let topo = &snap.topology;
    tier(&mut e, &control.tier);
    capacity(&mut e, &snap);
    let epoch = &snap.health.epoch;
    e.family(
        "geolb_health_epoch_info",
        "gauge",
        "The health epoch the DNS answers are given under: its consensus id (equal on nodes that decided from the same votes) as a label, value 1.",
    );
    e.sample("geolb_health_epoch_info", &[("epoch", &epoch.hex())], 1.0);
    e.family(
        "geolb_health_epoch_changes_total",
        "counter",
        "Changes of the health epoch's consensus id since this node started.",
    );
    e.sample(
        "geolb_health_epoch_changes_total",
        &[],
        epoch.changes as f64,
    );
    e.family(
        "geolb_health_epoch_changed_timestamp_seconds",
        "gauge",
        "When the health epoch's consensus id last changed on this node (its clock).",
    );
    e.sample(
        "geolb_health_epoch_changed_timestamp_seconds",
        &[],
        epoch.changed_at,
    );
    health.with_table(|table, _| {
        e.family(
            "geolb_endpoint_up",
            "gauge",
            "1 when the endpoint is served (health and overrides), else 0.",
        );
        for (i, ep) in topo.endpoints.iter().enumerate() {
            let pool = &topo.pools[ep.pool as usize];
            let region = &topo.regions[pool.region as usize].name;
            e.sample(
                "geolb_endpoint_up",
                &[
                    ("endpoint", &ep.identity),
                    ("pool", &pool.name),
                    ("region", region),
                ],
                f64::from(u8::from(snap.health.up(i as u32))),
            );
        }
        e.family(
            "geolb_endpoint_partial_drain_ratio",
            "gauge",
            "The share of client subnets a partial drain moves off the endpoint (0: none; a whole drain shows in geolb_endpoint_up).",
        );
        for (i, ep) in topo.endpoints.iter().enumerate() {
            let pool = &topo.pools[ep.pool as usize];
            let region = &topo.regions[pool.region as usize].name;
            e.sample(
                "geolb_endpoint_partial_drain_ratio",
                &[
                    ("endpoint", &ep.identity),
                    ("pool", &pool.name),
                    ("region", region),
                ],
                snap.health.get(i as u32).partial_share(),
            );
        }
        let pools: Vec<(&str, &str, usize, u32)> = topo
            .pools
            .iter()
            .map(|p| {
                let up = p.endpoints.clone().filter(|&i| snap.health.up(i)).count();
                let region = topo.regions[p.region as usize].name.as_str();
                (p.name.as_str(), region, up, p.min_healthy)
            })
            .collect();
        type Pool<'a> = (&'a str, &'a str, usize, u32);
        let families: [Family<Pool, f64>; 2] = [
            (
                "geolb_pool_endpoints_up",
                "Endpoints of the pool served now.",
                |p| p.2 as f64,
            ),
            (
                "geolb_pool_min_healthy",
                "The pool's min_healthy: below it, failover passes the pool over.",
                |p| f64::from(p.3),
            ),
        ];
        for (name, help, value) in families {
            e.family(name, "gauge", help);
            for p in &pools {
                e.sample(name, &[("pool", p.0), ("region", p.1)], value(p));
            }
        }
        e.family(
            "geolb_probes_total",
            "counter",
            "Local health checks, by endpoint and result.",
        );
        for (id, st) in table.endpoints.iter().filter(|(_, s)| s.monitored) {
            e.sample(
                "geolb_probes_total",
                &[("endpoint", id), ("result", "ok")],
                st.probes_ok as f64,
            );
            e.sample(
                "geolb_probes_total",
                &[("endpoint", id), ("result", "fail")],
                st.probes_fail as f64,
            );
        }
        e.family(
            "geolb_probe_duration_seconds",
            "histogram",
            "Duration of local health checks.",
        );
        for (id, st) in table.endpoints.iter().filter(|(_, s)| s.monitored) {
            let mut acc = 0u64;
            for (i, le) in PROBE_BUCKETS.iter().enumerate() {
                acc += st.rtt_buckets[i];
                e.sample(
                    "geolb_probe_duration_seconds_bucket",
                    &[("endpoint", id), ("le", &le.to_string())],
                    acc as f64,
                );
            }
            acc += st.rtt_buckets[PROBE_BUCKETS.len()];
            e.sample(
                "geolb_probe_duration_seconds_bucket",
                &[("endpoint", id), ("le", "+Inf")],
                acc as f64,
            );
            e.sample(
                "geolb_probe_duration_seconds_sum",
                &[("endpoint", id)],
                st.rtt_sum,
            );
            e.sample(
                "geolb_probe_duration_seconds_count",
                &[("endpoint", id)],
                acc as f64,
            );
        }
        let now = unix(std::time::SystemTime::now());
        let fresh_for = snap.config.health.fresh_for.as_secs_f64();
        e.family(
            "geolb_vantage_fresh",
            "gauge",
            "1 when the remote vantage's data is fresh enough to vote.",
        );
        e.family(
            "geolb_vantage_last_ok_timestamp_seconds",
            "gauge",
            "When the remote vantage was last read.",
        );
        for name in snap.config.health.vantages.keys() {
            let last = table.vantages.get(name).and_then(|v| v.last_ok);
            e.sample(
                "geolb_vantage_fresh",
                &[("vantage", name)],
                f64::from(u8::from(last.is_some_and(|t| now - t <= fresh_for))),
            );
            e.sample(
                "geolb_vantage_last_ok_timestamp_seconds",
                &[("vantage", name)],
                last.unwrap_or(0.0),
            );
        }
        e.finish()
    })
}

/// A metric family read from each listener or backend: name, help, value.
type Family<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// HTTP routes: requests by status class, in flight, retries, latency.
/// Response rate limiting and DNS cookies.
fn guard(e: &mut Exposition, g: &crate::guard::Guard) {
    use crate::guard::rrl::CLASSES;
    let t = g.rrl_stats.totals();
    e.family(
        "geolb_rrl_limited_total",
        "counter",
        "UDP responses over the rate limit, by response class and action (dropped, or slipped: sent truncated).",
    );
    for (i, class) in CLASSES.iter().enumerate() {
        for (action, v) in [("dropped", &t.dropped), ("slipped", &t.slipped)] {
            e.sample(
                "geolb_rrl_limited_total",
                &[("class", class), ("action", action)],
                v[i] as f64,
            );
        }
    }
    e.family(
        "geolb_rrl_would_limit_total",
        "counter",
        "Dry run (rrl.dry_run): UDP responses that would have been limited, by response class.",
    );
    for (i, class) in CLASSES.iter().enumerate() {
        e.sample(
            "geolb_rrl_would_limit_total",
            &[("class", class)],
            t.would[i] as f64,
        );
    }
    let c = g.cookie_stats.totals();
    e.family(
        "geolb_dns_cookies_total",
        "counter",
        "Queries with a COOKIE option, by what it held (client_only, valid, invalid, malformed), and BADCOOKIE replies sent (badcookie).",
    );
    for (kind, n) in [
        ("client_only", c.client_only),
        ("valid", c.valid),
        ("invalid", c.invalid),
        ("malformed", c.malformed),
        ("badcookie", c.badcookie),
    ] {
        e.sample("geolb_dns_cookies_total", &[("result", kind)], n as f64);
    }
}

fn routes(e: &mut Exposition, tier: &Tier) {
    use crate::tier::stats::LATENCY_BUCKETS;
    let all = tier.route_stats();
    e.family(
        "geolb_tier_route_responses_total",
        "counter",
        "HTTP responses per route (a listener's rule, or default) by status class.",
    );
    for (l, r, route, s) in &all {
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            e.sample(
                "geolb_tier_route_responses_total",
                &[
                    ("listener", l),
                    ("region", r),
                    ("route", route),
                    ("class", class),
                ],
                get(&s.responses[i]) as f64,
            );
        }
    }
    e.family(
        "geolb_tier_route_active_requests",
        "gauge",
        "HTTP requests per route between arrival and response headers now.",
    );
    for (l, r, route, s) in &all {
        e.sample(
            "geolb_tier_route_active_requests",
            &[("listener", l), ("region", r), ("route", route)],
            f64::from(s.active.load(std::sync::atomic::Ordering::Relaxed)),
        );
    }
    e.family(
        "geolb_tier_route_retries_total",
        "counter",
        "HTTP tries beyond the first, per route.",
    );
    for (l, r, route, s) in &all {
        e.sample(
            "geolb_tier_route_retries_total",
            &[("listener", l), ("region", r), ("route", route)],
            get(&s.retries) as f64,
        );
    }
    let name = "geolb_tier_route_latency_seconds";
    e.family(
        name,
        "histogram",
        "Time from an HTTP request's arrival to its response headers, per route.",
    );
    for (l, r, route, s) in &all {
        let base = [
            ("listener", l.as_str()),
            ("region", r.as_str()),
            ("route", route.as_str()),
        ];
        histogram(
            e,
            name,
            &base,
            &LATENCY_BUCKETS,
            &s.latency,
            get(&s.latency_sum_us),
        );
    }
}

/// Samples of one histogram: cumulative buckets per bound (`counts` has
/// one more, +Inf), sum (from microseconds) and count.
fn histogram(
    e: &mut Exposition,
    name: &str,
    base: &[(&str, &str)],
    bounds: &[f64],
    counts: &[std::sync::atomic::AtomicU64],
    sum_us: u64,
) {
    let mut acc = 0u64;
    for (i, c) in counts.iter().enumerate() {
        acc += get(c);
        let le = bounds.get(i).map_or("+Inf".to_string(), f64::to_string);
        let mut l = base.to_vec();
        l.push(("le", &le));
        e.sample(&format!("{name}_bucket"), &l, acc as f64);
    }
    e.sample(&format!("{name}_sum"), base, sum_us as f64 / 1e6);
    e.sample(&format!("{name}_count"), base, acc as f64);
}

/// The tier: per listener and per backend.
/// The load DNS steers by (per region, summed over the fresh reports) and
/// each `capacity` share.
fn capacity(e: &mut Exposition, snap: &crate::snapshot::Snapshot) {
    let topo = &snap.topology;
    let loads: Vec<(&str, f64)> = topo
        .regions
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let f = snap.health.region_load(i as u16)?.fraction?;
            Some((r.name.as_str(), f))
        })
        .collect();
    if !loads.is_empty() {
        let name = "geolb_capacity_load";
        e.family(
            name,
            "gauge",
            "A region's tier load as a fraction of its capacity, summed over the fresh reports this node reads (what the capacity step judges).",
        );
        for (region, f) in loads {
            e.sample(name, &[("region", region)], f);
        }
    }
    let mut first = true;
    for svc in snap.zones.zones.iter().flat_map(|z| z.services.iter()) {
        let Some(list) = svc
            .capacity_slot
            .and_then(|s| snap.health.shares.get(s as usize))
        else {
            continue;
        };
        let name = "geolb_capacity_share";
        if std::mem::take(&mut first) {
            e.family(
                name,
                "gauge",
                "The share of client subnets a group (region, or pool named directly) keeps in its place for a service; the rest spill to the next in their order.",
            );
        }
        for (g, sh) in svc.groups.iter().zip(list) {
            e.sample(
                name,
                &[("service", &svc.name), ("group", &g.name)],
                sh.share,
            );
        }
    }
}

fn tier(e: &mut Exposition, tier: &Tier) {
    let st = tier.status();
    if !st.regions.is_empty() {
        type Region = crate::tier::load::RegionLoadStatus;
        let families: [Family<Region, Option<f64>>; 3] = [
            (
                "geolb_tier_region_connections",
                "Connections open through the region's listeners on this node, smoothed over a few seconds.",
                |r| Some(r.connections),
            ),
            (
                "geolb_tier_region_rps",
                "Requests per second (HTTP requests, TCP connections) through the region's listeners on this node, smoothed.",
                |r| Some(r.rps),
            ),
            (
                "geolb_tier_region_load",
                "This node's load of the region as a fraction of the region's capacity.",
                |r| r.load,
            ),
        ];
        for (name, help, value) in families {
            e.family(name, "gauge", help);
            for r in &st.regions {
                if let Some(v) = value(r) {
                    e.sample(name, &[("region", &r.region)], v);
                }
            }
        }
    }
    let lfam: [Family<crate::tier::ListenerStatus, u64>; 22] = [
        (
            "geolb_tier_listener_connections_total",
            "Client connections accepted.",
            |l| l.accepted,
        ),
        (
            "geolb_tier_listener_refused_total",
            "Connections closed at once: the listener was at max_connections.",
            |l| l.refused_max,
        ),
        (
            "geolb_tier_listener_no_backend_total",
            "Connections closed: no backend could take them.",
            |l| l.no_backend,
        ),
        (
            "geolb_tier_listener_proxy_untrusted_total",
            "Connections closed: a PROXY header from a peer not in accept_proxy_from.",
            |l| l.proxy_untrusted,
        ),
        (
            "geolb_tier_listener_proxy_invalid_total",
            "Connections closed: a trusted peer sent no valid PROXY header in time.",
            |l| l.proxy_invalid,
        ),
        (
            "geolb_tier_listener_retries_total",
            "Backend connect attempts beyond the first.",
            |l| l.retries,
        ),
        (
            "geolb_tier_listener_idle_closed_total",
            "Connections closed by the idle timeout.",
            |l| l.idle_closed,
        ),
        (
            "geolb_tier_listener_drain_closed_total",
            "Connections closed by a drain deadline.",
            |l| l.drain_closed,
        ),
        (
            "geolb_tier_listener_errors_total",
            "Connections ended by a read or write error.",
            |l| l.errors,
        ),
        (
            "geolb_tier_listener_rate_limited_client_total",
            "HTTP requests answered 429 by the per-client rate limit.",
            |l| l.rate_limited_client,
        ),
        (
            "geolb_tier_listener_rate_limited_listener_total",
            "HTTP requests answered 429 by the listener's rate limit.",
            |l| l.rate_limited_listener,
        ),
        (
            "geolb_tier_listener_upgrades_total",
            "HTTP connections switched to another protocol (WebSocket...) and joined to a backend.",
            |l| l.upgrades,
        ),
        (
            "geolb_tier_listener_body_timeouts_total",
            "HTTP requests answered 408: the body did not arrive within body_timeout.",
            |l| l.body_timeouts,
        ),
        (
            "geolb_tier_listener_header_timeouts_total",
            "HTTP connections answered 408: a request head began but did not arrive within header_timeout.",
            |l| l.header_timeouts,
        ),
        (
            "geolb_tier_listener_h2_streams_total",
            "HTTP/2 streams (requests) the native HTTP/2 server opened.",
            |l| l.h2_streams,
        ),
        (
            "geolb_tier_listener_h2_refused_total",
            "HTTP/2 streams refused (REFUSED_STREAM): past the stream limit, or after GOAWAY.",
            |l| l.h2_refused,
        ),
        (
            "geolb_tier_listener_h2_stream_errors_total",
            "HTTP/2 streams reset for an error: malformed requests, flow control, a window kept shut.",
            |l| l.h2_stream_errors,
        ),
        (
            "geolb_tier_listener_h2_connection_errors_total",
            "HTTP/2 connections ended by a protocol error (GOAWAY with an error code).",
            |l| l.h2_connection_errors,
        ),
        (
            "geolb_tier_listener_goaway_total",
            "HTTP connections told to close (Connection: close / GOAWAY) as the listener went away.",
            |l| l.goaway,
        ),
        (
            "geolb_tier_listener_backend_connections_opened_total",
            "HTTP: backend connections the listener's keep-alive pool opened (its reuse is requests over these).",
            |l| l.backend_connections,
        ),
        (
            "geolb_tier_listener_tls_handshakes_total",
            "HTTPS: TLS handshakes completed.",
            |l| l.tls_handshakes,
        ),
        (
            "geolb_tier_listener_tls_handshake_errors_total",
            "HTTPS: TLS handshakes that failed (bad or unsupported client hello, timeout, closed midway).",
            |l| l.tls_handshake_errors,
        ),
    ];
    e.family(
        "geolb_tier_listener_connections_active",
        "gauge",
        "Client connections open now.",
    );
    for l in &st.listeners {
        e.sample(
            "geolb_tier_listener_connections_active",
            &[("listener", &l.name), ("region", &l.region)],
            f64::from(l.active),
        );
    }
    e.family(
        "geolb_tier_listener_connections_parked",
        "gauge",
        "HTTP keep-alive connections idle without buffers now (of those open).",
    );
    for l in &st.listeners {
        e.sample(
            "geolb_tier_listener_connections_parked",
            &[("listener", &l.name), ("region", &l.region)],
            f64::from(l.parked),
        );
    }
    for (name, help, f) in lfam {
        e.family(name, "counter", help);
        for l in &st.listeners {
            e.sample(
                name,
                &[("listener", &l.name), ("region", &l.region)],
                f(l) as f64,
            );
        }
    }
    let backends: Vec<(&str, &str, &crate::tier::BackendStatus)> = st
        .groups
        .iter()
        .flat_map(|g| {
            g.backends
                .iter()
                .map(move |b| (g.name.as_str(), g.region.as_str(), b))
        })
        .collect();
    let labels = |g: &str, r: &str, b: &crate::tier::BackendStatus| {
        [
            ("group", g.to_string()),
            ("region", r.to_string()),
            ("backend", b.address.to_string()),
        ]
    };
    let gauges: [Family<crate::tier::BackendStatus, f64>; 3] = [
        (
            "geolb_tier_backend_connections_active",
            "Proxied connections open now.",
            |b| f64::from(b.view.active),
        ),
        (
            "geolb_tier_backend_up",
            "1 when the backend may take new connections (up, not ejected).",
            |b| f64::from(u8::from(b.view.eligible)),
        ),
        (
            "geolb_tier_backend_effective_weight",
            "Weight now as a share of the configured weight (below 1 during slow start).",
            |b| b.view.effective_weight,
        ),
    ];
    let counters: [Family<crate::tier::BackendStatus, u64>; 6] = [
        (
            "geolb_tier_backend_connections_total",
            "Connections proxied to the backend.",
            |b| b.total,
        ),
        (
            "geolb_tier_backend_connect_errors_total",
            "Failed connect attempts.",
            |b| b.connect_errors,
        ),
        (
            "geolb_tier_backend_ejections_total",
            "Passive ejections.",
            |b| b.ejections,
        ),
        (
            "geolb_tier_backend_bytes_up_total",
            "Bytes from clients to the backend.",
            |b| b.bytes_up,
        ),
        (
            "geolb_tier_backend_bytes_down_total",
            "Bytes from the backend to clients.",
            |b| b.bytes_down,
        ),
        (
            "geolb_tier_backend_drain_closed_total",
            "Connections closed by a drain deadline.",
            |b| b.drain_closed,
        ),
    ];
    for (name, help, f) in gauges {
        e.family(name, "gauge", help);
        for (g, r, b) in &backends {
            let l = labels(g, r, b);
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            e.sample(name, &l, f(b));
        }
    }
    for (name, help, f) in counters {
        e.family(name, "counter", help);
        for (g, r, b) in &backends {
            let l = labels(g, r, b);
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (*k, v.as_str())).collect();
            e.sample(name, &l, f(b) as f64);
        }
    }
    routes(e, tier);
    if let Some((written, dropped)) = tier.access_log_counts() {
        e.family(
            "geolb_tier_access_log_lines_total",
            "counter",
            "HTTP access log lines written.",
        );
        e.sample("geolb_tier_access_log_lines_total", &[], written as f64);
        e.family(
            "geolb_tier_access_log_dropped_total",
            "counter",
            "HTTP access log lines dropped because the writer fell behind (requests never wait for it).",
        );
        e.sample("geolb_tier_access_log_dropped_total", &[], dropped as f64);
    }
    let name = "geolb_tier_backend_connect_seconds";
    e.family(
        name,
        "histogram",
        "Time to establish backend connections (successful ones).",
    );
    for (group, region, b) in tier.backend_stats() {
        let s = &b.stats;
        let addr = b.addr.to_string();
        let base = [
            ("group", group.as_str()),
            ("region", region.as_str()),
            ("backend", addr.as_str()),
        ];
        histogram(
            e,
            name,
            &base,
            &CONNECT_BUCKETS,
            &s.connect_buckets,
            get(&s.connect_sum_us),
        );
    }
}

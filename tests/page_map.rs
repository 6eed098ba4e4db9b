//! The status page's data for its map and timeline: `GET /v1/map.svg`
//! drawn under the node's live health (recoloured by a drain, back after
//! its expiry, 304 while unchanged), the health events of that drain in
//! `/v1/health`, and `GET /v1/resolvers/summary` after tracked queries.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::backend::Backend;
use common::*;
use serde_json::Value;

/// eu and us, each a pool of one live endpoint; `www` by continent (North
/// America to us, the rest to eu); GeoIP (the geo tests' world); resolver
/// telemetry on loopback.
fn config(geoip: bool, eu: SocketAddr, us: SocketAddr) -> String {
    let geo = if geoip {
        "[geoip]\ncity = \"city.mmdb\"\n"
    } else {
        ""
    };
    format!(
        r#"[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
udp_workers = 1

{geo}
[monitors.tcp]
kind = "tcp"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1

[regions]
eu = {{ location = [50.1, 8.7] }}
us = {{ location = [39.0, -77.5] }}

[pools]
eu-web = {{ region = "eu", monitor = "tcp", endpoints = [{{ address = "127.0.1.1", check = "{eu}" }}] }}
us-web = {{ region = "us", monitor = "tcp", endpoints = [{{ address = "127.0.2.1", check = "{us}" }}] }}

[zones."example.com"]
file = "example.com.zone"

[zones."example.com".services.www]
ttl = 30
pools = ["eu-web", "us-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 1
geo = {{ default = ["eu", "us"], continent = {{ NA = ["us", "eu"] }} }}
"#
    )
}

struct Node {
    s: TestServer,
    _eu: Backend,
    _us: Backend,
}

fn start(geoip: bool) -> Node {
    let eu = Backend::start(common::backend::OK);
    let us = Backend::start(common::backend::OK);
    let dir = tempfile::tempdir().expect("tempdir");
    if geoip {
        let city = mmdb::build_city(&mmdb::world(), mmdb::Layout::GeoIp2);
        std::fs::write(dir.path().join("city.mmdb"), city).expect("write mmdb");
    }
    std::fs::write(dir.path().join("example.com.zone"), TIER_ZONE).expect("write zone");
    std::fs::write(
        dir.path().join("geolb.toml"),
        config(geoip, eu.addr, us.addr),
    )
    .expect("write config");
    let s = TestServer::start_dir(dir);
    let a = s.admin.expect("admin");
    let ready = wait_for(Duration::from_secs(10), || {
        http(a, "GET", "/v1/ready").0 == 200
    });
    assert!(ready.is_some(), "{}", http(a, "GET", "/v1/ready").1);
    Node {
        s,
        _eu: eu,
        _us: us,
    }
}

/// A GET with optional `If-None-Match`: status, head, body.
fn get(a: SocketAddr, path: &str, etag: Option<&str>) -> (u16, String, String) {
    let mut s = TcpStream::connect(a).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let cond = etag
        .map(|e| format!("If-None-Match: {e}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{cond}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (code, head.to_string(), body.to_string())
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// An attribute of the first element that has `marker`.
fn attr_after(svg: &str, marker: &str, name: &str) -> String {
    let at = svg
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the map"));
    let tag_start = svg[..at].rfind('<').unwrap_or(0);
    let tag = &svg[tag_start..];
    let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
    let key = format!("{name}=\"");
    let v = &tag[tag.find(&key).map(|i| i + key.len()).unwrap_or(0)..];
    v.split('"').next().unwrap_or("").to_string()
}

/// The map's fill of a country and of a legend entry.
fn country(svg: &str, cc: &str) -> String {
    attr_after(svg, &format!("data-cc=\"{cc}\""), "fill")
}
fn legend(svg: &str, name: &str) -> (String, String) {
    let m = format!("data-legend=\"{name}\"");
    (
        attr_after(svg, &m, "fill"),
        attr_after(svg, &m, "data-share"),
    )
}

fn events(a: SocketAddr) -> Vec<Value> {
    let h: Value = serde_json::from_str(&http(a, "GET", "/v1/health").1).unwrap_or_default();
    h["events"].as_array().cloned().unwrap_or_default()
}

fn has_event(ev: &[Value], kind: &str, key: &str, value: &str) -> bool {
    ev.iter().any(|e| {
        e["kind"] == kind
            && (e[key] == value
                || e[key]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x == value)))
    })
}

#[test]
fn the_map_is_recoloured_by_a_drain_and_back_after_its_expiry() {
    let n = start(true);
    let a = n.s.admin.expect("admin");
    let (code, head, all_up) = get(a, "/v1/map.svg", None);
    assert_eq!(code, 200, "{head}\n{all_up}");
    assert_eq!(
        header(&head, "content-type").as_deref(),
        Some("image/svg+xml; charset=utf-8")
    );
    assert_eq!(
        header(&head, "x-content-type-options").as_deref(),
        Some("nosniff")
    );
    let etag = header(&head, "etag").expect("ETag");
    assert_eq!(header(&head, "x-geolb-map-walked").as_deref(), Some("yes"));
    assert!(all_up.starts_with("<svg"), "{all_up:.100}");
    let (eu, eu_share) = legend(&all_up, "eu");
    let (us, _) = legend(&all_up, "us");
    assert_ne!(eu, us);
    assert_eq!(country(&all_up, "DE"), eu, "Germany answered by eu");
    assert_eq!(country(&all_up, "US"), us, "the US answered by us");
    assert_ne!(eu_share, "0.0000");
    // Unchanged: 304, no body.
    let (code, head, body) = get(a, "/v1/map.svg", Some(&etag));
    assert_eq!(code, 304, "{head}");
    assert!(body.is_empty());
    // The same service by name, without its trailing dot.
    let (code, head, _) = get(a, "/v1/map.svg?service=www.example.com", Some(&etag));
    assert_eq!(code, 304, "{head}");

    // Drain eu for a few seconds: Germany goes to us, eu's share to 0.
    let (code, body) = http_json(a, "/v1/drain", r#"{"target": "eu-web", "for": "3s"}"#);
    assert_eq!(code, 200, "{body}");
    let (code, head, drained) = get(a, "/v1/map.svg", Some(&etag));
    assert_eq!(code, 200, "{head}");
    assert_ne!(header(&head, "etag").as_deref(), Some(etag.as_str()));
    assert_eq!(
        header(&head, "x-geolb-map-walked").as_deref(),
        Some("no"),
        "the walk is kept across health changes: {head}"
    );
    assert_eq!(country(&drained, "DE"), us, "Germany now answered by us");
    assert_eq!(legend(&drained, "eu").1, "0.0000");
    assert_eq!(legend(&drained, "us").1, "1.0000");

    // The events: the drain with its expiry, and the epoch it made.
    let ev = events(a);
    assert!(has_event(&ev, "override_set", "target", "eu-web"), "{ev:?}");
    let set = ev
        .iter()
        .find(|e| e["kind"] == "override_set")
        .cloned()
        .unwrap_or_default();
    assert_eq!(set["state"], "drain");
    assert!(set["until"]
        .as_f64()
        .is_some_and(|u| u > set["at"].as_f64().unwrap_or(f64::MAX)));
    assert!(
        has_event(&ev, "epoch", "down", "eu-web/127.0.1.1"),
        "{ev:?}"
    );

    // It expires by itself: an event says so, and the map is the first
    // one again (the same ETag).
    let expired = wait_for(Duration::from_secs(15), || {
        let ev = events(a);
        has_event(&ev, "override_expired", "target", "eu-web")
            && has_event(&ev, "epoch", "up", "eu-web/127.0.1.1")
    });
    assert!(expired.is_some(), "{:?}", events(a));
    let ev = events(a);
    let ns: Vec<u64> = ev.iter().filter_map(|e| e["n"].as_u64()).collect();
    assert!(ns.windows(2).all(|w| w[1] == w[0] + 1), "{ns:?}");
    let (code, head, _) = get(a, "/v1/map.svg", Some(&etag));
    assert_eq!(code, 304, "back to the all-up map: {head}");
}

#[test]
fn without_a_city_database_or_service_the_map_says_why() {
    let n = start(false);
    let a = n.s.admin.expect("admin");
    let (code, _, body) = get(a, "/v1/map.svg", None);
    assert_eq!(code, 409, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON error");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("City database")),
        "{body}"
    );
    let n = start(true);
    let a = n.s.admin.expect("admin");
    let (code, _, body) = get(a, "/v1/map.svg?service=nope.example.com", None);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("nope.example.com"), "{body}");
    let (code, _, body) = get(a, "/v1/map.svg?width=9", None);
    assert_eq!(code, 400, "{body}");
}

fn summary(a: SocketAddr) -> Value {
    serde_json::from_str(&http(a, "GET", "/v1/resolvers/summary").1).unwrap_or_default()
}

fn row<'a>(s: &'a Value, region: &str) -> &'a Value {
    s["regions"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["region"] == region))
        .unwrap_or(&Value::Null)
}

#[test]
fn the_resolver_summary_counts_who_is_on_each_region_and_who_moved() {
    let n = start(true);
    let a = n.s.admin.expect("admin");
    let s = summary(a);
    assert_eq!(s["armed"], false, "{s}");
    assert_eq!(s["tracked"], 0);
    let (code, body) = http_json(a, "/v1/resolvers/track", r#"{"for": "10m"}"#);
    assert_eq!(code, 200, "{body}");
    // Two resolvers on loopback: the default order, eu.
    assert_eq!(ask_from("127.0.0.2", n.s.dns), ["127.0.1.1"]);
    assert_eq!(ask_from("127.0.0.3", n.s.dns), ["127.0.1.1"]);
    let s = summary(a);
    assert_eq!(s["armed"], true, "{s}");
    assert_eq!(s["tracked"], 2, "{s}");
    let eu = row(&s, "eu");
    assert_eq!(eu["service"], "www.example.com.", "{s}");
    assert_eq!(
        (eu["resolvers"].as_u64(), eu["holding"].as_u64()),
        (Some(2), Some(2)),
        "{s}"
    );
    // eu drained: the first asks again and moves; the second does not ask.
    let (code, body) = http_json(a, "/v1/drain", r#"{"target": "eu", "for": "10m"}"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(ask_from("127.0.0.2", n.s.dns), ["127.0.2.1"]);
    let s = summary(a);
    let (eu, us) = (row(&s, "eu"), row(&s, "us"));
    assert_eq!(eu["resolvers"], 1, "{s}");
    assert_eq!(eu["moved_away"], 1, "{s}");
    assert_eq!(
        (us["resolvers"].as_u64(), us["moved_in"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert!(
        us["last_given"].as_f64() >= eu["last_given"].as_f64(),
        "{s}"
    );
    // The node samples the counts while armed (every 5 s), for the
    // timeline's curves; `since` gives only the newer ones.
    let sampled = wait_for(Duration::from_secs(12), || {
        summary(a)["history"]
            .as_array()
            .is_some_and(|h| h.iter().any(|x| row(x, "us")["resolvers"] == 1))
    });
    assert!(sampled.is_some(), "{}", summary(a));
    let s = summary(a);
    let last = s["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|x| x["at"].as_f64())
        .expect("a sample");
    let newer: Value =
        serde_json::from_str(&http(a, "GET", &format!("/v1/resolvers/summary?since={last}")).1)
            .unwrap_or_default();
    assert!(
        newer["history"]
            .as_array()
            .is_some_and(|h| h.iter().all(|x| x["at"].as_f64() > Some(last))),
        "{newer}"
    );
}

//! Resolver telemetry through the admin API: armed for a window, it shows
//! per resolver (source address) and service which region answered last,
//! since when, and the region before — what a failover drill reads to see
//! which resolvers moved and which still hold the old answer.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

fn report(admin: SocketAddr, query: &str) -> serde_json::Value {
    let (code, body) = http(admin, "GET", &format!("/v1/resolvers{query}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn line<'a>(r: &'a serde_json::Value, resolver: &str) -> &'a serde_json::Value {
    r["resolvers"]
        .as_array()
        .expect("resolvers")
        .iter()
        .find(|l| l["resolver"] == resolver)
        .unwrap_or_else(|| panic!("no line for {resolver}: {r}"))
}

#[test]
fn tracked_resolvers_show_who_moved_off_a_drained_region_and_who_did_not_ask_again() {
    let s = TestServer::start_with(&failover_config(30), &[("example.com.zone", TIER_ZONE)]);
    let admin = s.admin.expect("admin");
    // Off: nothing is noted.
    assert_eq!(ask_from("127.0.0.2", s.dns), ["10.1.0.1"]);
    let r = report(admin, "");
    assert_eq!(
        (r["armed"].as_bool(), r["tracked"].as_u64()),
        (Some(false), Some(0))
    );

    // Bad arming requests are refused with the reason.
    for (body, why) in [
        ("{}", "for"),
        (r#"{"for": "100h"}"#, "72h"),
        (r#"{"for": "1h", "capacity": 0}"#, "capacity"),
        (r#"{"for": "soon"}"#, "for"),
    ] {
        let (code, resp) = http_json(admin, "/v1/resolvers/track", body);
        assert_eq!(code, 400, "{body}: {resp}");
        assert!(resp.contains(why), "{body}: {resp}");
    }
    let (code, resp) = http_json(
        admin,
        "/v1/resolvers/track",
        r#"{"for": "10m", "capacity": 1000}"#,
    );
    assert_eq!(code, 200, "{resp}");

    // Two resolvers get eu; then eu is drained and only one asks again.
    assert_eq!(ask_from("127.0.0.2", s.dns), ["10.1.0.1"]);
    assert_eq!(ask_from("127.0.0.3", s.dns), ["10.1.0.1"]);
    let (code, body) = http_json(admin, "/v1/drain", r#"{"target": "eu", "for": "10m"}"#);
    assert_eq!(code, 200, "{body}");
    let moved = wait_for(Duration::from_secs(10), || {
        ask_from("127.0.0.2", s.dns) == ["10.2.0.1"]
    });
    assert!(moved.is_some(), "answers follow the drain");

    let r = report(admin, "?service=www.example.com.");
    assert_eq!(r["armed"], true, "{r}");
    assert_eq!(r["tracked"], 2, "{r}");
    let a = line(&r, "127.0.0.2");
    assert_eq!(a["region"], "us", "{a}");
    assert_eq!(a["previous_region"], "eu", "{a}");
    assert_eq!(a["switches"], 1, "{a}");
    assert_eq!(a["ttl"], 30);
    assert!(a["since"].as_f64() >= a["previous_last"].as_f64(), "{a}");
    let b = line(&r, "127.0.0.3");
    assert_eq!(b["region"], "eu", "still holding the old answer: {b}");
    assert_eq!(b["switches"], 0);
    assert!(b["previous_region"].is_null());
    // Another service's filter shows nothing; the metrics-free path is
    // untouched by tracking (the answers above were right).
    assert_eq!(report(admin, "?service=nope.example.com.")["tracked"], 0);

    // Disarmed: what was tracked stays readable, nothing more is noted.
    let (code, _, _) = http_raw(admin, "DELETE", "/v1/resolvers/track", None, "");
    assert_eq!(code, 200);
    ask_from("127.0.0.4", s.dns);
    let r = report(admin, "");
    assert_eq!(
        (r["armed"].as_bool(), r["tracked"].as_u64()),
        (Some(false), Some(2))
    );
}

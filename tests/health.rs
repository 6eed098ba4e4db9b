//! Health end to end: real HTTP and TCP backends (healthy, failing,
//! hanging, wrong body, killed), the failover budget, operator overrides
//! (expiry, persistence across restarts), remote vantages with quorum, the
//! prober's observations, the admin token and health-aware TTL.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{Backend, FAIL, FLAP, HANG, OK, WRONG_BODY};
use common::*;
use hickory_proto::rr::RecordType;

const ZONE: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n";

fn a(s: &TestServer, name: &str) -> Vec<String> {
    a_of(s.dns, name)
}

fn ttl(s: &TestServer, name: &str) -> u32 {
    udp(s.dns, &query(name, RecordType::A)).answers[0].ttl
}

fn start(extra: &str) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), ZONE).expect("w");
    let cfg = format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n\
         [zones.\"example.com\"]\nfile = \"example.com.zone\"\n{extra}"
    );
    std::fs::write(dir.path().join("geolb.toml"), cfg).expect("w");
    TestServer::start_dir(dir)
}

fn health(s: &TestServer) -> serde_json::Value {
    let (code, body) = http(s.admin.expect("admin"), "GET", "/v1/health");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn endpoint<'a>(h: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    h["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["endpoint"] == id))
        .unwrap_or_else(|| panic!("no endpoint {id} in {h}"))
}

fn two_region_config(
    check_a: SocketAddr,
    check_b: SocketAddr,
    monitor: &str,
    extra_service: &str,
) -> String {
    format!(
        r#"
[monitors.web]
{monitor}

[regions.eu]
location = [50.0, 8.0]
[regions.us]
location = [39.0, -77.0]
[pools.eu-web]
region = "eu"
monitor = "web"
endpoints = [{{ address = "10.1.0.1", check = "{check_a}" }}, {{ address = "10.1.0.2", check = "{check_b}" }}]
[pools.us-web]
region = "us"
endpoints = [{{ address = "10.2.0.1" }}]

[zones."example.com".services.www]
ttl = 60
pools = ["eu-web", "us-web"]
chain = ["healthy", "failover"]
{extra_service}
"#
    )
}

#[test]
fn failover_budget_interval_1s_fall_2_removes_a_dead_backend_within_3s() {
    let mut b1 = Backend::start(OK);
    let b2 = Backend::start(OK);
    let s = start(&two_region_config(
        b1.addr,
        b2.addr,
        "kind = \"http\"\npath = \"/healthz\"\ninterval = \"1s\"\ntimeout = \"500ms\"\njitter = 0.0\nrise = 2\nfall = 2",
        "",
    ));
    assert_eq!(a(&s, "www.example.com."), ["10.1.0.1", "10.1.0.2"]);
    // Let a check or two pass, then kill the first backend.
    std::thread::sleep(Duration::from_millis(1200));
    b1.kill();
    let gone = wait_for(Duration::from_secs(5), || {
        a(&s, "www.example.com.") == ["10.1.0.2"]
    });
    let gone = gone.expect("dead backend removed from answers");
    eprintln!("failover budget: removed from answers {gone:?} after the backend died");
    assert!(
        gone <= Duration::from_secs(3),
        "removed after {gone:?}; budget is 3 s (fall 2 × interval 1 s + timeout)"
    );
    let h = health(&s);
    let e = endpoint(&h, "eu-web/10.1.0.1");
    assert_eq!(e["up"], false);
    assert!(
        e["last_error"].as_str().unwrap_or("").contains("127.0.0.1"),
        "{e}"
    );
    // Back: restored after `rise` (2) successful checks.
    b1.revive();
    let back = wait_for(Duration::from_secs(5), || {
        a(&s, "www.example.com.") == ["10.1.0.1", "10.1.0.2"]
    });
    let back = back.expect("restored");
    eprintln!("failover budget: restored {back:?} after the backend came back");
    assert!(back <= Duration::from_secs(3), "restored after {back:?}");
    // Both down: eu fails over to us.
    b1.kill();
    drop(b2);
    assert!(
        wait_for(Duration::from_secs(5), || a(&s, "www.example.com.")
            == ["10.2.0.1"])
        .is_some()
    );
}

#[test]
fn monitors_report_each_kind_of_failure() {
    let ok = Backend::start(OK);
    let failing = Backend::start(FAIL);
    let hanging = Backend::start(HANG);
    let wrong = Backend::start(WRONG_BODY);
    let mut closed = Backend::start(OK);
    closed.kill();
    let cfg = format!(
        r#"
[monitors.web]
kind = "http"
path = "/healthz"
host = "www.example.com"
headers = {{ "X-Check" = "geolb" }}
expect = [200, "204-206"]
body = "ok"
interval = "300ms"
timeout = "200ms"
rise = 1
fall = 1
initial = "down"
[monitors.tcp]
kind = "tcp"
interval = "300ms"
timeout = "200ms"
rise = 1
fall = 1
initial = "down"
[regions.r]
location = [0.0, 0.0]
[pools.http]
region = "r"
monitor = "web"
endpoints = [
  {{ address = "10.0.0.1", check = "{}" }},
  {{ address = "10.0.0.2", check = "{}" }},
  {{ address = "10.0.0.3", check = "{}" }},
  {{ address = "10.0.0.4", check = "{}" }},
]
[pools.tcp]
region = "r"
monitor = "tcp"
endpoints = [{{ address = "10.0.1.1", check = "{}" }}, {{ address = "10.0.1.2", check = "{}" }}]
[zones."example.com".services.www]
pools = ["http", "tcp"]
chain = ["healthy"]
all_down = "nodata"
"#,
        ok.addr, failing.addr, hanging.addr, wrong.addr, ok.addr, closed.addr
    );
    let s = start(&cfg);
    let ready = wait_for(Duration::from_secs(5), || {
        a(&s, "www.example.com.") == ["10.0.0.1", "10.0.1.1"]
    });
    assert!(
        ready.is_some(),
        "only the healthy HTTP and the listening TCP endpoints answer: {:?}",
        a(&s, "www.example.com.")
    );
    assert!(wait_for(Duration::from_secs(3), || {
        let h = health(&s);
        endpoint(&h, "http/10.0.0.3")["last_error"].is_string()
            && endpoint(&h, "tcp/10.0.1.2")["last_error"].is_string()
    })
    .is_some());
    let h = health(&s);
    let err = |id: &str| {
        endpoint(&h, id)["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    for (id, want) in [
        ("http/10.0.0.2", "status 500"),
        ("http/10.0.0.3", "timed out"),
        ("http/10.0.0.4", "body does not contain"),
        ("tcp/10.0.1.2", "connect"),
    ] {
        let e = err(id);
        assert!(e.contains(want), "{id}: {e}");
    }
    assert_eq!(endpoint(&h, "http/10.0.0.1")["up"], true);
    assert!(endpoint(&h, "http/10.0.0.1")["rtt_ewma_ms"].is_number());
    // A hanging backend recovers when it answers again.
    hanging.set(OK);
    assert!(
        wait_for(Duration::from_secs(3), || a(&s, "www.example.com.")
            .contains(&"10.0.0.3".to_string()))
        .is_some()
    );
}

/// eu-web/10.1.0.1 healthy, eu-web/10.1.0.2 failing (checks every 200 ms),
/// once the failing one is out of the answers.
fn one_up_one_failing() -> (TestServer, (Backend, Backend)) {
    let b1 = Backend::start(OK);
    let b2 = Backend::start(FAIL);
    let s = start(&two_region_config(
        b1.addr,
        b2.addr,
        "kind = \"http\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 2",
        "",
    ));
    let settled = wait_for(Duration::from_secs(3), || {
        a(&s, "www.example.com.") == ["10.1.0.1"]
    });
    assert!(settled.is_some());
    (s, (b1, b2))
}

#[test]
fn drain_with_a_duration_reverts_by_itself_and_force_overrides_checks() {
    let (s, _backends) = one_up_one_failing();
    let admin = s.admin.expect("admin");
    // Force the failing one up.
    let (code, body) = http_json(
        admin,
        "/v1/force",
        r#"{"target": "eu-web/10.1.0.2", "state": "up"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(a(&s, "www.example.com."), ["10.1.0.1", "10.1.0.2"]);
    // Drain the region for one second.
    let (code, body) = http_json(admin, "/v1/drain", r#"{"target": "eu", "for": "1s"}"#);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"endpoints\":2"), "{body}");
    // The endpoint-level force-up is more specific than the region drain.
    assert_eq!(a(&s, "www.example.com."), ["10.1.0.2"]);
    http_json(admin, "/v1/undrain", r#"{"target": "eu-web/10.1.0.2"}"#);
    assert_eq!(
        a(&s, "www.example.com."),
        ["10.2.0.1"],
        "eu drained: failover to us"
    );
    let back = wait_for(Duration::from_secs(4), || {
        a(&s, "www.example.com.") == ["10.1.0.1"]
    });
    assert!(back.is_some(), "the drain reverts by itself");
    // Errors are JSON.
    let (code, body) = http_json(admin, "/v1/drain", r#"{"target": "nowhere"}"#);
    assert_eq!(code, 404, "{body}");
    let (code, body) = http_json(admin, "/v1/drain", r#"{"target": "eu", "for": "soon"}"#);
    assert_eq!(code, 400, "{body}");
    let (code, _) = http_json(admin, "/v1/drain", "not json");
    assert_eq!(code, 400);
}

#[test]
fn drains_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), ZONE).expect("w");
    let cfg = format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n\
         [health]\nstate_file = \"state/geolb-state.json\"\n\
         [zones.\"example.com\"]\nfile = \"example.com.zone\"\n{}",
        two_region_config(
            "127.0.0.1:1".parse().expect("a"),
            "127.0.0.1:1".parse().expect("a"),
            "kind = \"tcp\"\ninterval = \"5s\"\ntimeout = \"1s\"",
            ""
        )
    );
    std::fs::write(dir.path().join("geolb.toml"), &cfg).expect("w");
    let path = dir.path().to_path_buf();
    let mut s = TestServer::start_dir(dir);
    let (code, body) = http_json(
        s.admin.expect("admin"),
        "/v1/drain",
        r#"{"target": "eu-web"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(a(&s, "www.example.com."), ["10.2.0.1"]);
    assert!(path.join("state/geolb-state.json").exists());
    s.stop();
    // A new process on the same config and state file.
    let copy = tempfile::tempdir().expect("tempdir");
    for f in ["geolb.toml", "example.com.zone"] {
        std::fs::copy(path.join(f), copy.path().join(f)).expect("copy");
    }
    std::fs::create_dir_all(copy.path().join("state")).expect("mkdir");
    std::fs::copy(
        path.join("state/geolb-state.json"),
        copy.path().join("state/geolb-state.json"),
    )
    .expect("copy");
    let s2 = TestServer::start_dir(copy);
    assert_eq!(
        a(&s2, "www.example.com."),
        ["10.2.0.1"],
        "the drain is still in force"
    );
    let h = health(&s2);
    assert_eq!(h["overrides"][0]["target"], "eu-web");
}

fn observations(up: bool) -> String {
    format!(
        r#"{{"vantage": "x", "generated_at": 0, "endpoints": [{{"endpoint": "eu-web/10.1.0.1", "up": {up}, "last": null, "rtt_ewma_ms": 3.0}}]}}"#
    )
}

#[test]
fn three_vantages_one_partitioned_prober_cannot_take_a_healthy_endpoint_out() {
    let b1 = Backend::start(OK);
    let b2 = Backend::start(OK);
    let va = Backend::start(OK);
    let vb = Backend::start(OK);
    va.set_body(&observations(true));
    vb.set_body(&observations(false)); // partitioned from the endpoint
    let vantages = format!(
        "[health]\nquorum = 2\nfresh_for = \"1s\"\npoll_interval = \"200ms\"\n\
         [health.vantages.a]\nurl = \"http://{}\"\n[health.vantages.b]\nurl = \"http://{}\"\ntoken = \"t\"\n",
        va.addr, vb.addr
    );
    let s = start(&format!(
        "{vantages}{}",
        two_region_config(
            b1.addr,
            b2.addr,
            "kind = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"100ms\"",
            ""
        )
    ));
    // Both remote vantages fresh; b says down, a and we say up: 1 of 3 < 2.
    assert!(wait_for(Duration::from_secs(3), || {
        let h = health(&s);
        let v = &endpoint(&h, "eu-web/10.1.0.1")["votes"];
        v["a"] == "up" && v["b"] == "down"
    })
    .is_some());
    assert_eq!(a(&s, "www.example.com."), ["10.1.0.1", "10.1.0.2"]);
    // explain shows the votes behind each endpoint's state.
    let (code, body) = http(
        s.admin.expect("admin"),
        "GET",
        "/v1/explain?name=www.example.com&client=192.0.2.1",
    );
    assert_eq!(code, 200, "{body}");
    let ex: serde_json::Value = serde_json::from_str(&body).expect("json");
    let ep = ex["service"]["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["endpoint"] == "eu-web/10.1.0.1"))
        .cloned()
        .expect("endpoint in explain");
    assert_eq!(ep["votes"]["b"], "down", "{ep}");
    assert_eq!(ep["votes"]["a"], "up", "{ep}");
    // a agrees with b: quorum of 2 → down.
    va.set_body(&observations(false));
    assert!(
        wait_for(Duration::from_secs(3), || a(&s, "www.example.com.")
            == ["10.1.0.2"])
        .is_some()
    );
    // Both probers become unreachable: stale after 1 s, and this node's own
    // checks (up) decide again.
    va.set(HANG);
    vb.set(FAIL);
    assert!(
        wait_for(Duration::from_secs(5), || a(&s, "www.example.com.")
            == ["10.1.0.1", "10.1.0.2"])
        .is_some()
    );
    let errors_seen = wait_for(Duration::from_secs(5), || {
        let h = health(&s);
        let vs = h["vantages"].as_array().cloned().unwrap_or_default();
        vs.iter().all(|x| x["fresh"] == false)
            && vs
                .iter()
                .any(|x| x["last_error"].as_str().unwrap_or("").contains("500"))
            && vs
                .iter()
                .any(|x| x["last_error"].as_str().unwrap_or("").contains("timed out"))
    });
    assert!(errors_seen.is_some(), "{}", health(&s));
    let h = health(&s);
    assert_eq!(
        endpoint(&h, "eu-web/10.1.0.1")["votes"]["a"],
        "stale",
        "{h}"
    );
}

#[test]
fn a_prober_serves_its_observations_behind_its_token() {
    let b1 = Backend::start(OK);
    let b2 = Backend::start(FAIL);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), ZONE).expect("w");
    let cfg = format!(
        "[server]\nadmin = \"127.0.0.1:0\"\n[health]\ntoken = \"probe-secret\"\n\
         [zones.\"example.com\"]\nfile = \"example.com.zone\"\n{}",
        two_region_config(
            b1.addr,
            b2.addr,
            "kind = \"http\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 2",
            ""
        )
    );
    std::fs::write(dir.path().join("geolb.toml"), cfg).expect("w");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let server = rt
        .block_on(geolb::server::Server::start(
            dir.path().join("geolb.toml"),
            geolb::config::Overrides {
                vantage: Some("ams".into()),
                probe_only: true,
                ..Default::default()
            },
        ))
        .expect("prober starts");
    assert!(server.dns_addrs.is_empty(), "a prober serves no DNS");
    let admin = server.admin_addr.expect("listener");
    let (code, _) = http(admin, "GET", "/v1/observations");
    assert_eq!(code, 401);
    let got = wait_for(Duration::from_secs(3), || {
        let (code, body) = http_auth(admin, "GET", "/v1/observations", "probe-secret");
        code == 200 && body.contains("\"vantage\":\"ams\"") && body.contains("\"up\":false")
    });
    assert!(got.is_some());
    rt.block_on(server.shutdown());
}

#[test]
fn admin_token_guards_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), ZONE).expect("w");
    std::fs::write(
        dir.path().join("geolb.toml"),
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nadmin_token = \"s3cret\"\n[zones.\"example.com\"]\nfile = \"example.com.zone\"\n",
    )
    .expect("w");
    let s = TestServer::start_dir(dir);
    let admin = s.admin.expect("admin");
    assert_eq!(http(admin, "GET", "/v1/status").0, 401);
    assert_eq!(http_auth(admin, "GET", "/v1/status", "wrong").0, 401);
    assert_eq!(http_auth(admin, "GET", "/v1/status", "s3cret").0, 200);
    // Binding the API beyond loopback without a token is refused at load.
    let e = geolb::config::Config::parse(
        &s.path("x.toml"),
        "[server]\nadmin = \"0.0.0.0:8053\"\n[zones.\"example.com\"]\nfile = \"example.com.zone\"\n",
    )
    .expect_err("needs a token");
    assert!(e.to_string().contains("admin_token"), "{e}");
}

#[test]
fn health_aware_ttl_shortens_answers_while_a_candidate_is_down() {
    let s = start(&two_region_config(
        "127.0.0.1:1".parse().expect("a"),
        "127.0.0.1:1".parse().expect("a"),
        "kind = \"tcp\"\ninterval = \"10s\"\ntimeout = \"1s\"",
        "ttl_when_down = 5",
    ));
    assert_eq!(ttl(&s, "www.example.com."), 60);
    s.shared()
        .set_admin_state("eu-web/10.1.0.2", geolb::policy::AdminState::Drain)
        .expect("exists");
    assert_eq!(ttl(&s, "www.example.com."), 5);
    s.shared()
        .set_admin_state("eu-web/10.1.0.2", geolb::policy::AdminState::None)
        .expect("exists");
    assert_eq!(ttl(&s, "www.example.com."), 60);
}

#[test]
fn min_healthy_as_a_percentage_moves_traffic_before_a_pool_is_empty() {
    let s = start(
        &two_region_config(
            "127.0.0.1:1".parse().expect("a"),
            "127.0.0.1:1".parse().expect("a"),
            "kind = \"tcp\"\ninterval = \"10s\"\ntimeout = \"1s\"",
            "",
        )
        .replace(
            "monitor = \"web\"\n",
            "monitor = \"web\"\nmin_healthy = \"100%\"\n",
        ),
    );
    assert_eq!(a(&s, "www.example.com."), ["10.1.0.1", "10.1.0.2"]);
    s.shared()
        .set_admin_state("eu-web/10.1.0.1", geolb::policy::AdminState::Drain)
        .expect("exists");
    assert_eq!(a(&s, "www.example.com."), ["10.2.0.1"]);
}

#[test]
fn bad_monitor_config_is_a_load_error_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("z.zone"), ZONE).expect("w");
    let cfg = r#"
[monitors.a]
kind = "ftp"
[monitors.b]
kind = "http"
expect = ["999"]
[monitors.c]
kind = "http"
interval = "1s"
timeout = "5s"
[monitors.d]
kind = "tcp"
[regions.r]
location = [0.0, 0.0]
[pools.p]
region = "r"
monitor = "missing"
endpoints = [{ address = "10.0.0.1" }]
[pools.q]
region = "r"
monitor = "d"
endpoints = [{ address = "10.0.0.2" }]
[zones."example.com"]
file = "z.zone"
"#;
    std::fs::write(dir.path().join("geolb.toml"), cfg).expect("w");
    let (code, text) = check(&dir.path().join("geolb.toml"));
    assert_eq!(code, Some(1));
    // The serde error comes first and alone (it stops parsing).
    assert!(
        text.contains("geolb.toml:6:10") && text.contains("999"),
        "{text}"
    );
    let cfg = cfg.replace("expect = [\"999\"]\n", "");
    std::fs::write(dir.path().join("geolb.toml"), cfg).expect("w");
    let (code, text) = check(&dir.path().join("geolb.toml"));
    assert_eq!(code, Some(1));
    for needle in [
        "geolb.toml:2: error: monitors.a: kind \"ftp\"",
        "geolb.toml:6: error: monitors.c: timeout",
        "unknown monitor \"missing\"",
        "endpoint q/10.0.0.2 needs check",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_queries_answers_probes_and_survive_reloads() {
    let (s, _backends) = one_up_one_failing();
    let admin = s.admin.expect("admin");
    for _ in 0..5 {
        a(&s, "www.example.com.");
        a(&s, "nope.example.com.");
        a(&s, "www.example.org.");
    }
    let (code, text) = http(admin, "GET", "/metrics");
    assert_eq!(code, 200);
    let q = |t: &str, l: &str| metric(t, l).unwrap_or(0.0);
    let www = r#"geolb_dns_queries_total{zone="example.com.",qtype="A",rcode="NOERROR"}"#;
    let nx = r#"geolb_dns_queries_total{zone="example.com.",qtype="A",rcode="NXDOMAIN"}"#;
    let refused = r#"geolb_dns_queries_total{zone="(none)",qtype="A",rcode="REFUSED"}"#;
    assert!(q(&text, www) >= 6.0, "{text}");
    assert_eq!(q(&text, nx), 5.0, "{text}");
    assert_eq!(q(&text, refused), 5.0, "{text}");
    assert!(
        q(
            &text,
            r#"geolb_answers_total{service="www.example.com.",region="eu"}"#
        ) >= 6.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"geolb_endpoint_up{endpoint="eu-web/10.1.0.2",pool="eu-web",region="eu"}"#
        ),
        Some(0.0)
    );
    assert!(
        q(
            &text,
            r#"geolb_probes_total{endpoint="eu-web/10.1.0.2",result="fail"}"#
        ) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains(
            r#"geolb_probe_duration_seconds_bucket{endpoint="eu-web/10.1.0.1",le="+Inf"}"#
        ),
        "{text}"
    );
    // Counts carry over a reload.
    let before = q(&text, nx);
    assert_eq!(http(admin, "POST", "/v1/reload").0, 200);
    a(&s, "nope.example.com.");
    let (_, text) = http(admin, "GET", "/metrics");
    assert_eq!(q(&text, nx), before + 1.0, "{text}");
    assert_eq!(q(&text, r#"geolb_reloads_total{result="success"}"#), 1.0);
}

#[test]
fn cli_status_drain_undrain_and_force_talk_to_the_admin_api() {
    let s = start(&two_region_config(
        "127.0.0.1:1".parse().expect("a"),
        "127.0.0.1:1".parse().expect("a"),
        "kind = \"tcp\"\ninterval = \"10s\"\ntimeout = \"1s\"",
        "",
    ));
    let admin = s.admin.expect("admin").to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
            .args(args)
            .args(["--admin", &admin])
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = cli(&["drain", "eu", "--for", "10m"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("\"endpoints\":2"), "{out}");
    assert_eq!(a(&s, "www.example.com."), ["10.2.0.1"]);
    let (code, out, err) = cli(&["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("eu-web/10.1.0.1") && out.contains("DOWN") && out.contains("drain"),
        "{out}"
    );
    let (code, _, err) = cli(&["undrain", "eu"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(a(&s, "www.example.com."), ["10.1.0.1", "10.1.0.2"]);
    let (code, _, err) = cli(&["force", "eu-web/10.1.0.1", "down"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(a(&s, "www.example.com."), ["10.1.0.2"]);
    // Errors from the API reach the operator with a non-zero exit.
    let (code, _, err) = cli(&["drain", "atlantis"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no endpoint, pool or region is named \"atlantis\""),
        "{err}"
    );
}

#[test]
fn a_flapping_backend_stays_up_under_hysteresis() {
    let flappy = Backend::start(FLAP);
    let ok = Backend::start(OK);
    let s = start(&two_region_config(
        flappy.addr,
        ok.addr,
        "kind = \"http\"\ninterval = \"300ms\"\ntimeout = \"250ms\"\njitter = 0.0\nrise = 2\nfall = 2",
        "",
    ));
    // Every other check fails, never two in a row: fall = 2 is never reached.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(a(&s, "www.example.com."), ["10.1.0.1", "10.1.0.2"]);
    }
    let h = health(&s);
    assert_eq!(endpoint(&h, "eu-web/10.1.0.1")["up"], true);
    // The failures were seen, just never two in a row.
    let (_, text) = http(s.admin.expect("admin"), "GET", "/metrics");
    let fails = metric(
        &text,
        r#"geolb_probes_total{endpoint="eu-web/10.1.0.1",result="fail"}"#,
    )
    .unwrap_or(0.0);
    assert!(fails >= 3.0, "{fails}");
}

#[test]
fn health_state_survives_a_reload() {
    let (s, _backends) = one_up_one_failing();
    let admin = s.admin.expect("admin");
    let (code, body) = http_json(admin, "/v1/drain", r#"{"target": "us-web"}"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(http(admin, "POST", "/v1/reload").0, 200);
    // Right after the reload: the failing endpoint is still down (not back
    // to its initial "up") and the operator's drain still holds.
    assert_eq!(a(&s, "www.example.com."), ["10.1.0.1"]);
    let h = health(&s);
    assert_eq!(endpoint(&h, "eu-web/10.1.0.2")["up"], false);
    assert_eq!(endpoint(&h, "us-web/10.2.0.1")["up"], false);
}

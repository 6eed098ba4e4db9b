//! `geolb drill run` against a live server on loopback: a drain of region
//! eu, two resolvers (one re-asking at every TTL, one keeping its answer
//! three times past its TTL) on their own source addresses, and the report:
//! SUCCEEDED, the answers off eu in time, the lazy resolver named as late,
//! the drain undone. A drill refused by a pre-check changes nothing.

use crate::common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_geolb");

/// A resolver at `from` that asks whenever its cached answer is `every`
/// old, until `stop`.
fn resolver(
    from: &'static str,
    dns: SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            ask_from(from, dns);
            let until = Instant::now() + every;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    })
}

fn scenario(dir: &std::path::Path, s: &TestServer) -> std::path::PathBuf {
    let text = format!(
        r#"name = "evacuate eu"
expiry = "10m"
baseline = "4500ms"
hold = "6s"
grace = "1s"
[[node]]
name = "dns1"
admin = "{}"
dns = "{}"
[action]
drain = "eu"
[observe]
name = "www.example.com"
interval = "250ms"
[expect]
converge_within = "3s"
"#,
        s.admin.expect("admin"),
        s.dns
    );
    let p = dir.join("drill.toml");
    std::fs::write(&p, text).expect("write scenario");
    p
}

#[test]
fn a_drill_reports_answers_moving_and_names_the_resolver_that_keeps_answers_past_their_ttl() {
    let s = TestServer::start_with(&failover_config(1), &[("example.com.zone", TIER_ZONE)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = scenario(dir.path(), &s);
    let stop = Arc::new(AtomicBool::new(false));
    // One resolver re-asks at every TTL (1 s), one only every 4 s.
    let good = resolver("127.0.0.2", s.dns, Duration::from_millis(900), stop.clone());
    let lazy = resolver("127.0.0.3", s.dns, Duration::from_secs(4), stop.clone());
    let out = dir.path().join("report");
    let run = Command::new(BIN)
        .args(["drill", "run"])
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run geolb drill");
    stop.store(true, Ordering::Relaxed);
    good.join().expect("resolver");
    lazy.join().expect("resolver");
    let md = String::from_utf8_lossy(&run.stdout).to_string();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{md}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("json");
    assert_eq!(report["outcome"], "SUCCEEDED", "{report}");
    let probe = &report["probes"][0];
    assert_eq!(probe["affected"], true, "{probe}");
    assert!(probe["converged_after"].as_f64().expect("converged") <= 3.0);
    let r = &report["resolvers"];
    let state_of = |addr: &str| {
        r["resolvers"]
            .as_array()
            .expect("resolvers")
            .iter()
            .find(|o| o["resolver"] == addr)
            .cloned()
            .unwrap_or_else(|| panic!("{addr} not in {r}"))
    };
    let lazy = state_of("127.0.0.3");
    let lazy_named =
        (lazy["state"] == "moved" && lazy["late"] == true) || lazy["state"] == "not_reasked";
    assert!(lazy_named, "the lazy resolver is named: {lazy}");
    let good = state_of("127.0.0.2");
    assert_eq!(good["state"], "moved", "{good}");
    assert_eq!(good["late"], false, "{good}");
    assert!(
        md.contains("127.0.0.3") && md.contains("Outcome: Succeeded"),
        "{md}"
    );
    assert!(out.join("report.md").exists());
    // The timeline picture: one lane per node and subnet, the probes that
    // saw the drained region and those that saw another, the resolver curve.
    let svg = std::fs::read_to_string(out.join("timeline.svg")).expect("timeline.svg");
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("#d7301f") && svg.contains("#2b8cbe"), "{svg}");
    assert!(svg.contains("<polyline"), "the resolver curve: {svg}");
    // Restored: the drain is gone, eu answers again, tracking is off.
    assert_eq!(ask_from("127.0.0.1", s.dns), ["10.1.0.1"]);
    let (_, st) = http(s.admin.expect("admin"), "GET", "/v1/status");
    let st: serde_json::Value = serde_json::from_str(&st).expect("json");
    assert_eq!(st["health"]["overrides"], serde_json::json!([]), "{st}");
    let (_, tr) = http(s.admin.expect("admin"), "GET", "/v1/resolvers?service=-");
    assert!(tr.contains("\"armed\":false"), "{tr}");
}

#[test]
fn a_drill_is_refused_untouched_while_a_drain_is_in_force() {
    let s = TestServer::start_with(&failover_config(1), &[("example.com.zone", TIER_ZONE)]);
    let admin = s.admin.expect("admin");
    let (code, body) = http_json(admin, "/v1/drain", r#"{"target": "us-web", "for": "10m"}"#);
    assert_eq!(code, 200, "{body}");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = scenario(dir.path(), &s);
    let run = Command::new(BIN)
        .args(["drill", "run", "--json"])
        .arg(&path)
        .output()
        .expect("run geolb drill");
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(report["outcome"], "REFUSED");
    assert!(report["reasons"].to_string().contains("us-web"), "{report}");
    // Nothing changed: eu still answers, the one drain is the operator's.
    assert_eq!(ask_from("127.0.0.1", s.dns), ["10.1.0.1"]);
    let (_, st) = http(admin, "GET", "/v1/status");
    assert!(!st.contains("\"target\":\"eu\""), "{st}");
    // A scenario that does not read: exit 2 with the reason.
    std::fs::write(&path, "name = 1\n").expect("write");
    let run = Command::new(BIN)
        .args(["drill", "run"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("drill.toml"));
}

/// `www.example.com A` for the client subnet `net` (ECS): the addresses
/// and the scope of the answer.
fn ask_for(dns: SocketAddr, net: &str) -> (Vec<String>, Option<u8>) {
    let r = reply_for(dns, net);
    let got = r.answers.iter().map(|a| a.data.to_string()).collect();
    (got, ecs_scope(&r))
}

/// The reply to `www.example.com A` for the client subnet `net` (ECS).
fn reply_for(dns: SocketAddr, net: &str) -> hickory_proto::op::Message {
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    let net: ipnet::IpNet = net.parse().expect("subnet");
    let mut q = edns_query("www.example.com.", hickory_proto::rr::RecordType::A, 1232);
    if let Some(e) = q.edns.as_mut() {
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            net.network(),
            net.prefix_len(),
            0,
        )));
    }
    udp(dns, &q)
}

#[test]
fn a_partial_drain_moves_its_share_of_client_subnets_and_shows_in_health_explain_and_metrics() {
    let s = TestServer::start_with(&failover_config(1), &[("example.com.zone", TIER_ZONE)]);
    let admin = s.admin.expect("admin");
    let nets: Vec<String> = (0..200)
        .map(|i| format!("198.{}.{i}.0/24", 18 + i % 2))
        .collect();
    let on_eu = |s: &TestServer| {
        nets.iter()
            .filter(|n| ask_for(s.dns, n).0 == ["10.1.0.1"])
            .count()
    };
    assert_eq!(on_eu(&s), 200);
    // Bad shares are refused and change nothing.
    for bad in ["0", "1.5", "-0.2"] {
        let (code, body) = http_json(
            admin,
            "/v1/drain",
            &format!(r#"{{"target": "eu", "for": "10m", "fraction": {bad}}}"#),
        );
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let (code, body) = http_json(
        admin,
        "/v1/force",
        r#"{"target": "eu", "state": "down", "fraction": 0.5}"#,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = http_json(
        admin,
        "/v1/drain",
        r#"{"target": "eu", "for": "10m", "fraction": 0.3}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"fraction\":0.3"), "{body}");
    let moved_30: Vec<bool> = nets
        .iter()
        .map(|n| ask_for(s.dns, n).0 == ["10.2.0.1"])
        .collect();
    let share = moved_30.iter().filter(|m| **m).count() as f64 / 200.0;
    assert!((share - 0.3).abs() < 0.1, "30 % asked, {share} moved");
    // The answer is scoped to the client's /24 (RFC 7871 §7.2.1).
    assert_eq!(ask_for(s.dns, &nets[0]).1, Some(24));
    // Up to 60 %: the subnets moved at 30 % stay moved.
    let (code, body) = http_json(
        admin,
        "/v1/drain",
        r#"{"target": "eu", "for": "10m", "fraction": 0.6}"#,
    );
    assert_eq!(code, 200, "{body}");
    let moved_60: Vec<bool> = nets
        .iter()
        .map(|n| ask_for(s.dns, n).0 == ["10.2.0.1"])
        .collect();
    assert!(moved_30.iter().zip(&moved_60).all(|(a, b)| !a || *b));
    let share = moved_60.iter().filter(|m| **m).count() as f64 / 200.0;
    assert!((share - 0.6).abs() < 0.1, "60 % asked, {share} moved");
    // Health, explain and metrics say so.
    let (_, h) = http(admin, "GET", "/v1/health");
    let h: serde_json::Value = serde_json::from_str(&h).expect("json");
    assert_eq!(h["overrides"][0]["fraction"], 0.6, "{h}");
    let eu = h["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["region"] == "eu")
        .expect("eu")
        .clone();
    assert_eq!(eu["up"], true, "{eu}");
    assert_eq!(eu["reason"], "partial drain 60 % by operator (eu)", "{eu}");
    let moved = nets[moved_60.iter().position(|m| *m).expect("one moved")]
        .trim_end_matches("0/24")
        .to_string()
        + "9";
    let (_, ex) = http(
        admin,
        "GET",
        &format!("/v1/explain?name=www.example.com&type=A&client={moved}"),
    );
    assert!(
        ex.contains("partially drained by an operator (60 %"),
        "{ex}"
    );
    let (_, m) = http(admin, "GET", "/metrics");
    assert!(
        m.lines()
            .any(|l| l.starts_with("geolb_endpoint_partial_drain_ratio{")
                && l.contains("region=\"eu\"")
                && l.ends_with(" 0.6")),
        "{m}"
    );
    let st = Command::new(BIN)
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .expect("geolb status");
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(st.contains("partial drain 60 %"), "{st}");
    // Undrain: every subnet back on eu.
    let (code, _) = http_json(admin, "/v1/undrain", r#"{"target": "eu"}"#);
    assert_eq!(code, 200);
    assert_eq!(on_eu(&s), 200);
}

/// Runs `geolb drill run` on a scenario text written to `dir`, with
/// `args`; (exit status, JSON report, Markdown report).
fn drill(
    dir: &std::path::Path,
    text: &str,
    args: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let path = dir.join("drill.toml");
    std::fs::write(&path, text).expect("write scenario");
    let out = dir.join("report");
    let run = Command::new(BIN)
        .args(["drill", "run"])
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .args(args)
        .output()
        .expect("run geolb drill");
    let md = String::from_utf8_lossy(&run.stdout).to_string();
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).unwrap_or_else(|e| {
            panic!(
                "report.json: {e}\n{md}\n{}",
                String::from_utf8_lossy(&run.stderr)
            )
        }),
    )
    .expect("json");
    (run.status.code(), report, md)
}

/// ECS subnets 198.51.i.0/24: `below` of them under `share` by the partial
/// drain's hash, `above` at or over it.
fn subnets_around(share: f64, below: usize, above: usize) -> Vec<String> {
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    for i in 0..=255u8 {
        let net = format!("198.51.{i}.0/24");
        let pos = geolb::policy::health::partial_position(std::net::IpAddr::from([198, 51, i, 0]));
        if pos < share && lo.len() < below {
            lo.push(net);
        } else if pos >= share && hi.len() < above {
            hi.push(net);
        }
    }
    assert_eq!((lo.len(), hi.len()), (below, above));
    lo.extend(hi);
    lo
}

#[test]
fn a_drill_in_gradual_steps_moves_the_hashed_share_of_subnets_at_each_step_then_all() {
    let s = TestServer::start_with(&failover_config(1), &[("example.com.zone", TIER_ZONE)]);
    let admin = s.admin.expect("admin");
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = subnets_around(0.3, 2, 3);
    let text = format!(
        r#"name = "evacuate eu in steps"
expiry = "10m"
baseline = "1500ms"
hold = "2s"
[[node]]
name = "dns1"
admin = "{admin}"
dns = "{}"
[action]
drain = "eu"
steps = [0.3, 1.0]
step_hold = "2s"
[observe]
name = "www.example.com"
interval = "250ms"
subnets = {nets:?}
[expect]
converge_within = "1s"
"#,
        s.dns
    );
    let (code, report, md) = drill(dir.path(), &text, &[]);
    assert_eq!(code, Some(0), "{md}");
    assert_eq!(report["outcome"], "SUCCEEDED", "{report}");
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{report}");
    // At 30 %: the two subnets below 0.3 left eu, the three above stayed.
    assert_eq!(steps[0]["fraction"], 0.3);
    assert_eq!(steps[0]["probes"], 5);
    assert_eq!(steps[0]["moved"], 2, "{}", steps[0]);
    assert_eq!(steps[0]["expected_moved"], 2);
    assert_eq!(steps[0]["unexpected"], serde_json::json!([]));
    // At 100 %: every subnet.
    assert_eq!(steps[1]["moved"], 5, "{}", steps[1]);
    assert!(steps[1]["at"].as_f64().expect("at") >= 2.0);
    assert!(
        md.contains("## Gradual steps") && md.contains("2 of 5 (40 %)"),
        "{md}"
    );
    assert!(
        report["timeline"]
            .to_string()
            .contains("step 1: drain 30 %"),
        "{report}"
    );
    // Restored: nothing left in force, every subnet back on eu.
    let (_, st) = http(admin, "GET", "/v1/status");
    let st: serde_json::Value = serde_json::from_str(&st).expect("json");
    assert_eq!(st["health"]["overrides"], serde_json::json!([]), "{st}");
    for n in &nets {
        assert_eq!(ask_for(s.dns, n).0, ["10.1.0.1"], "{n}");
    }
}

/// A node that answers `www.example.com` from eu (127.0.1.1) first, us
/// (127.0.2.1) when eu is out, and runs a TCP listener on each of those
/// VIPs in front of a backend; the listeners' ports.
fn tier_node() -> (TestServer, u16, u16) {
    let backend = |ip: &str| {
        let l = std::net::TcpListener::bind((ip, 0)).expect("bind backend");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
        addr
    };
    let (eu_b, us_b) = (backend("127.0.1.11"), backend("127.0.2.11"));
    let cfg = format!(
        r#"
[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
udp_workers = 1
[zones."example.com"]
file = "example.com.zone"
[regions.eu]
location = [50.1, 8.7]
[regions.us]
location = [39.0, -77.5]
[pools.eu-web]
region = "eu"
endpoints = [{{ address = "127.0.1.1" }}]
[pools.us-web]
region = "us"
endpoints = [{{ address = "127.0.2.1" }}]
[zones."example.com".services.www]
ttl = 1
pools = ["eu-web", "us-web"]
chain = ["healthy", "failover"]
[listeners.eu-tcp]
region = "eu"
bind = "127.0.1.1:0"
group = "eu-app"
[listeners.us-tcp]
region = "us"
bind = "127.0.2.1:0"
group = "us-app"
[groups.eu-app]
region = "eu"
members = [{{ address = "{eu_b}" }}]
[groups.us-app]
region = "us"
members = [{{ address = "{us_b}" }}]
"#
    );
    let s = TestServer::start_with(&cfg, &[("example.com.zone", TIER_ZONE)]);
    let (_, t) = http(s.admin.expect("admin"), "GET", "/v1/tier");
    let t: serde_json::Value = serde_json::from_str(&t).expect("json");
    let port = |name: &str| {
        let l = t["listeners"]
            .as_array()
            .expect("listeners")
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {t}"));
        l["bind"]
            .as_str()
            .and_then(|b| b.parse::<SocketAddr>().ok())
            .expect("bind")
            .port()
    };
    let (eu, us) = (port("eu-tcp"), port("us-tcp"));
    (s, eu, us)
}

#[test]
fn a_drill_reports_the_drained_vips_new_connection_rate_falling_to_zero_and_coming_back() {
    let (s, eu_port, us_port) = tier_node();
    let admin = s.admin.expect("admin");
    // A client that asks DNS before every connection and connects to
    // whatever it answers.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, dns) = (stop.clone(), s.dns);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(ip) = a_of(dns, "www.example.com.").first() {
                    let port = if ip == "127.0.1.1" { eu_port } else { us_port };
                    if let Ok(addr) = format!("{ip}:{port}").parse::<SocketAddr>() {
                        let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1));
                    }
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"name = "evacuate eu, watch the tier"
expiry = "10m"
baseline = "2s"
hold = "3s"
[[node]]
admin = "{admin}"
dns = "{}"
[[tier]]
name = "tier1"
admin = "{admin}"
[action]
drain = "eu"
[observe]
name = "www.example.com"
interval = "250ms"
[expect]
converge_within = "1s"
"#,
        s.dns
    );
    let (code, report, md) = drill(dir.path(), &text, &[]);
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client");
    assert_eq!(code, Some(0), "{md}");
    let tier = report["tier"].as_array().expect("tier");
    let of = |name: &str| {
        tier.iter()
            .find(|l| l["listener"] == name)
            .unwrap_or_else(|| panic!("{name} in {tier:?}"))
            .clone()
    };
    let eu = of("eu-tcp");
    assert_eq!(eu["drained"], true, "{eu}");
    assert!(eu["before"].as_f64().expect("before") > 5.0, "{eu}");
    let zero = eu["zero_after"].as_f64().unwrap_or_else(|| panic!("{eu}"));
    assert!(zero <= 1.0, "{eu}");
    assert!(
        eu["after"].as_f64().expect("after") > 5.0,
        "back after the restore: {eu}"
    );
    let us = of("us-tcp");
    assert_eq!(us["drained"], false);
    assert!(us["during"].as_f64().expect("during") > 5.0, "{us}");
    assert!(md.contains("## Tier connection drain"), "{md}");
    assert!(md.contains("after the action"), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("report/timeline.svg")).expect("svg");
    assert!(
        svg.contains("tier new conn./s") && svg.contains("eu-tcp zero"),
        "{svg}"
    );
}

#[test]
fn a_shadow_drill_simulates_each_step_and_the_resolvers_that_would_move_and_sets_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("city.mmdb"),
        common::mmdb::build_city(&common::mmdb::world(), common::mmdb::Layout::GeoIp2),
    )
    .expect("city");
    std::fs::write(dir.path().join("example.com.zone"), TIER_ZONE).expect("zone");
    let cfg = failover_config(1).replace(
        "[regions.eu]",
        "[geoip]\ncity = \"city.mmdb\"\n\n[regions.eu]",
    );
    std::fs::write(dir.path().join("geolb.toml"), &cfg).expect("config");
    let config = dir.path().join("geolb.toml");
    let s = TestServer::start_dir(dir);
    let admin = s.admin.expect("admin");
    // Telemetry saw one resolver answered from eu, then was disarmed.
    let (code, body) = http_json(admin, "/v1/resolvers/track", r#"{"for": "10m"}"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(ask_from("127.0.0.2", s.dns), ["10.1.0.1"]);
    let (code, _) = http(admin, "DELETE", "/v1/resolvers/track");
    assert_eq!(code, 200);
    let health = || http(admin, "GET", "/v1/health").1;
    let resolvers = || http(admin, "GET", "/v1/resolvers?service=-").1;
    let (h0, r0) = (health(), resolvers());
    let work = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"name = "evacuate eu (shadow)"
expiry = "10m"
baseline = "1s"
hold = "1s"
[[node]]
admin = "{admin}"
dns = "{}"
[action]
drain = "eu"
steps = [0.5, 1.0]
step_hold = "1s"
[observe]
name = "www.example.com"
"#,
        s.dns
    );
    let (code, report, md) = drill(
        work.path(),
        &text,
        &["--shadow", "--config", &config.display().to_string()],
    );
    assert_eq!(code, Some(0), "{md}");
    assert_eq!(report["outcome"], "SHADOW", "{report}");
    assert_eq!(report["action_at"], serde_json::Value::Null, "no action");
    let sh = &report["shadow"];
    let svc = &sh["services"][0];
    assert_eq!(svc["service"], "www.example.com.", "{sh}");
    let share = |regions: &serde_json::Value, name: &str| {
        regions
            .as_array()
            .expect("regions")
            .iter()
            .find(|r| r["region"] == name)
            .map_or(0.0, |r| r["v4_percent"].as_f64().expect("v4"))
    };
    assert!((share(&svc["before"], "eu") - 100.0).abs() < 1e-6, "{svc}");
    let steps = svc["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    // Half the /24s of every network: half the address space moves.
    let half = steps[0]["moved_v4_percent"].as_f64().expect("moved");
    assert!((half - 50.0).abs() < 1e-6, "{svc}");
    assert!(
        (share(&steps[0]["regions"], "us") - 50.0).abs() < 1e-6,
        "{svc}"
    );
    assert!(
        (share(&steps[1]["regions"], "us") - 100.0).abs() < 1e-6,
        "{svc}"
    );
    assert!((steps[1]["moved_v4_percent"].as_f64().expect("moved") - 100.0).abs() < 1e-6);
    let r = &sh["resolvers"][0];
    assert_eq!(r["resolver"], "127.0.0.2", "{sh}");
    assert_eq!(r["answered"], "eu");
    assert_eq!(
        (r["now"].as_str(), r["after"].as_str()),
        (Some("eu"), Some("us"))
    );
    assert_eq!(r["would_move"], true);
    assert!(
        md.contains("Outcome: Shadow") && md.contains("Shadow: what would change"),
        "{md}"
    );
    // Nothing was set: health, overrides and telemetry as before.
    assert_eq!(health(), h0);
    assert_eq!(resolvers(), r0);
    assert_eq!(ask_from("127.0.0.1", s.dns), ["10.1.0.1"]);
}

/// While a partial drain covers a service's candidates its answers are
/// short-lived: `ttl_when_down`, for the clients it moved and for those it
/// kept (the share may grow at any moment), and the full TTL again once
/// the drain is undone.
#[test]
fn a_partial_drain_answers_with_ttl_when_down_until_it_is_undone() {
    let cfg = failover_config(300).replace("ttl = 300\n", "ttl = 300\nttl_when_down = 20\n");
    let s = TestServer::start_with(&cfg, &[("example.com.zone", TIER_ZONE)]);
    let admin = s.admin.expect("admin");
    let ttl_for = |net: &str| {
        let r = reply_for(s.dns, net);
        let a = r.answers.first().expect("an answer");
        (a.data.to_string(), a.ttl)
    };
    let nets: Vec<String> = (0..40).map(|i| format!("198.18.{i}.0/24")).collect();
    assert!(nets.iter().all(|n| ttl_for(n).1 == 300));
    let (code, body) = http_json(
        admin,
        "/v1/drain",
        r#"{"target": "eu", "for": "10m", "fraction": 0.5}"#,
    );
    assert_eq!(code, 200, "{body}");
    let answers: Vec<(String, u32)> = nets.iter().map(|n| ttl_for(n)).collect();
    let moved = answers.iter().filter(|a| a.0 == "10.2.0.1").count();
    assert!(moved > 0 && moved < nets.len(), "{answers:?}");
    assert!(answers.iter().all(|a| a.1 == 20), "{answers:?}");
    let (code, body) = http_json(admin, "/v1/undrain", r#"{"target": "eu"}"#);
    assert_eq!(code, 200, "{body}");
    let answers: Vec<(String, u32)> = nets.iter().map(|n| ttl_for(n)).collect();
    assert!(
        answers.iter().all(|a| a == &("10.1.0.1".to_string(), 300)),
        "{answers:?}"
    );
}

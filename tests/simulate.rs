//! `geolb simulate` end to end: the real binary over databases built here,
//! its shares, the change a region going down makes, the resilience check's
//! verdict and exit status, and agreement with what a running server
//! answers for the same networks.

use crate::common;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::mmdb::{build_asn, build_city, CityNet, Layout};
use common::*;
use hickory_proto::op::Edns;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use serde_json::Value;

/// The geo tests' world, with more IPv6: New York's /44 and Tokyo.
fn nets() -> Vec<CityNet> {
    let mut nets = common::mmdb::world();
    nets.extend([
        common::mmdb::new_york("2001:db8:a0::/44"),
        CityNet::new(
            "2001:db8:c0::/48",
            "AS",
            "JP",
            Some("13"),
            "Tokyo",
            35.68,
            139.69,
        ),
    ]);
    nets
}

const ZONE: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n";

/// `www`: Asia has no fallback (ap only); `safe`: every list falls back;
/// `near`: the nearest two regions; AS 64500 and a CIDR entry cut networks.
fn config(eu_list: &str) -> String {
    format!(
        r#"
[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
udp_workers = 1

[geoip]
city = "city.mmdb"
asn = "asn.mmdb"

[regions.eu]
location = [50.11, 8.68]
[regions.us]
location = [39.04, -77.49]
[regions.ap]
location = [35.68, 139.69]

[pools.eu-web]
region = "eu"
endpoints = [{{ address = "10.1.0.1" }}, {{ address = "10.1.0.2" }}, {{ address = "2001:db8:1::1" }}]
[pools.us-web]
region = "us"
endpoints = [{{ address = "10.2.0.1" }}, {{ address = "2001:db8:2::1" }}]
[pools.ap-web]
region = "ap"
endpoints = [{{ address = "10.3.0.1" }}, {{ address = "2001:db8:3::1" }}]

[zones."example.com"]
file = "example.com.zone"

[zones."example.com".services.www]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 4
[zones."example.com".services.www.geo]
default = ["us", "eu"]
continent = {{ EU = {eu_list}, NA = ["us", "eu"], AS = ["ap"], SA = ["us", "eu"] }}
asn = {{ "64500" = ["ap", "eu"] }}
cidr = {{ "198.51.100.128/25" = ["eu", "us"] }}

[zones."example.com".services.safe]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 4
geo = {{ default = ["us", "eu", "ap"], continent = {{ AS = ["ap", "us"], EU = ["eu", "us"] }} }}

[zones."example.com".services.near]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["healthy", "nearest", "failover", "first_n"]
first_n = 4
"#
    )
}

fn write_dir(eu_list: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::write(p.join("geolb.toml"), config(eu_list)).expect("w");
    std::fs::write(p.join("example.com.zone"), ZONE).expect("w");
    std::fs::write(p.join("city.mmdb"), build_city(&nets(), Layout::GeoIp2)).expect("w");
    let asn = build_asn(&[("81.0.128.0/17", 64500, "Example Transit")]);
    std::fs::write(p.join("asn.mmdb"), asn).expect("w");
    dir
}

/// Runs `geolb simulate --config CONFIG ARGS…`: exit status and stdout.
fn simulate(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = run_geolb("simulate", config, args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn simulate_json(config: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out) = simulate(config, &all);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    (code, v)
}

fn service<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no service {name} in {report}"))
}

fn percent(list: &Value, name: &str) -> f64 {
    list.as_array()
        .expect("list")
        .iter()
        .find(|s| s["name"].as_str() == Some(name))
        .map_or(0.0, |s| s["percent"].as_f64().expect("percent"))
}

#[test]
fn shares_of_every_service_add_up_to_the_whole_address_space() {
    let dir = write_dir(r#"["eu", "us"]"#);
    let (code, r) = simulate_json(&dir.path().join("geolb.toml"), &[]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["health"], "all up");
    for s in r["services"].as_array().expect("services") {
        for fam in ["v4", "v6"] {
            for table in ["regions", "pools"] {
                let sum: f64 = s[fam][table]
                    .as_array()
                    .expect("shares")
                    .iter()
                    .map(|x| x["percent"].as_f64().expect("percent"))
                    .sum();
                assert!(
                    (sum - 100.0).abs() < 1e-9,
                    "{} {fam} {table}: {sum}",
                    s["service"]
                );
            }
        }
    }
    // www: the IPv4 networks (6 in the City database, 2 more where the
    // AS network and the CIDR entry cut them), weighed by size: BR's /8
    // goes to us, so us holds most of the IPv4 space.
    let www = service(&r, "www.example.com.");
    assert_eq!(www["v4"]["networks"], 8, "{www}");
    assert_eq!(www["v6"]["networks"], 3, "{www}");
    let eu = 256.0 + 32768.0 + 128.0; // DE, GB outside AS 64500, the CIDR /25
    let ap = 256.0 + 32768.0; // JP, AS 64500
    let all = 256.0 * 3.0 + 65536.0 * 2.0 + 16_777_216.0;
    let v4 = &www["v4"]["regions"];
    assert!((percent(v4, "eu") - 100.0 * eu / all).abs() < 1e-9, "{v4}");
    assert!((percent(v4, "ap") - 100.0 * ap / all).abs() < 1e-9, "{v4}");
    // IPv6 counted by addresses: the /44 is 16 times a /48.
    let v6 = &www["v6"]["regions"];
    assert!(
        (percent(v6, "us") - 100.0 * 16.0 / 18.0).abs() < 1e-9,
        "{v6}"
    );
}

#[test]
fn a_region_down_moves_its_networks_to_the_next_region_and_the_matrix_says_so() {
    let dir = write_dir(r#"["eu", "us"]"#);
    let cfg = dir.path().join("geolb.toml");
    let (_, up) = simulate_json(&cfg, &["--service", "www.example.com"]);
    let (code, down) = simulate_json(&cfg, &["--service", "www.example.com", "--down", "eu"]);
    assert_eq!(code, Some(0));
    let (before, after) = (
        service(&up, "www.example.com."),
        service(&down, "www.example.com."),
    );
    assert!(before["change"].is_null(), "no change when all is up");
    assert_eq!(percent(&after["v4"]["regions"], "eu"), 0.0);
    let eu4 = percent(&before["v4"]["regions"], "eu");
    let eu6 = percent(&before["v6"]["regions"], "eu");
    assert!(eu4 > 0.0 && eu6 > 0.0);
    // Everything eu answered moves to the next of its lists: us, except
    // AS 64500 (ap first anyway) — so the matrix has one row per family.
    let c = &after["change"];
    assert_eq!(c["from"], "all up");
    let moves = c["v4"].as_array().expect("moves");
    assert_eq!(moves.len(), 1, "{c}");
    assert_eq!(
        (moves[0]["from"].as_str(), moves[0]["to"].as_str()),
        (Some("eu"), Some("us"))
    );
    assert!((moves[0]["percent"].as_f64().expect("pct") - eu4).abs() < 1e-9);
    assert!(
        (c["moved_v6_percent"].as_f64().expect("pct") - eu6).abs() < 1e-9,
        "{c}"
    );
    assert!(
        (percent(&after["v4"]["regions"], "us") - percent(&before["v4"]["regions"], "us") - eu4)
            .abs()
            < 1e-9
    );
    // Text output: the same row.
    let (_, text) = simulate(&cfg, &["--service", "www.example.com", "--down", "eu"]);
    assert!(text.contains("change from all up"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("eu") && l.contains("→") && l.contains("us")),
        "{text}"
    );
    // A pool and an endpoint are targets too; an unknown one is an error.
    let (code, _) = simulate(&cfg, &["--drain", "eu-web,us-web/10.2.0.1"]);
    assert_eq!(code, Some(0));
    let (code, text) = simulate(&cfg, &["--down", "mars"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("mars"), "{text}");
}

#[test]
fn another_config_is_compared_network_by_network() {
    let dir = write_dir(r#"["eu", "us"]"#);
    let other = write_dir(r#"["us", "eu"]"#);
    let against = other.path().join("geolb.toml");
    let against = against.to_str().expect("utf-8 path");
    let (code, r) = simulate_json(
        &dir.path().join("geolb.toml"),
        &["--service", "www.example.com", "--against", against],
    );
    assert_eq!(code, Some(0));
    let c = &service(&r, "www.example.com.")["change"];
    assert!(
        c["from"].as_str().is_some_and(|f| f.contains("geolb.toml")),
        "{c}"
    );
    let moves = c["v4"].as_array().expect("moves");
    // The other config sends Europe to us first: from us there to eu here.
    assert!(
        moves.iter().any(|m| m["from"] == "us" && m["to"] == "eu"),
        "{c}"
    );
}

#[test]
fn resilience_fails_and_names_the_place_when_a_region_without_fallback_goes_down() {
    let dir = write_dir(r#"["eu", "us"]"#);
    let cfg = dir.path().join("geolb.toml");
    let (code, r) = simulate_json(&cfg, &["--service", "www.example.com", "--resilience", "1"]);
    assert_eq!(code, Some(1), "{r}");
    let res = &r["resilience"];
    assert_eq!(res["ok"], false);
    assert_eq!(res["scenarios"], 3);
    let failing = res["failing"].as_array().expect("failing");
    assert_eq!(failing.len(), 1, "only ap has no fallback: {res}");
    assert_eq!(failing[0]["down"], serde_json::json!(["ap"]));
    let places: Vec<&str> = failing[0]["services"][0]["places"]
        .as_array()
        .expect("places")
        .iter()
        .filter_map(|p| p["place"].as_str())
        .collect();
    assert_eq!(places, ["JP-13"], "{res}");
    assert_eq!(
        failing[0]["services"][0]["networks"], 2,
        "Tokyo in IPv4 and IPv6"
    );
    let (code, text) = simulate(&cfg, &["--service", "www.example.com", "--resilience", "1"]);
    assert_eq!(code, Some(1));
    assert!(
        text.contains("FAIL") && text.contains("down: ap") && text.contains("JP-13"),
        "{text}"
    );
    // Every list of `safe` falls back: any one region may go down.
    let (code, r) = simulate_json(
        &cfg,
        &["--service", "safe.example.com", "--resilience", "1"],
    );
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["resilience"]["ok"], true);
    // Two down: Asia's list (ap, us) and Europe's (eu, us) run out.
    let (code, r) = simulate_json(
        &cfg,
        &["--service", "safe.example.com", "--resilience", "2"],
    );
    assert_eq!(code, Some(1));
    let failing = r["resilience"]["failing"].as_array().expect("failing");
    let downs: Vec<&Value> = failing.iter().map(|f| &f["down"]).collect();
    assert_eq!(
        downs,
        [
            &serde_json::json!(["ap", "us"]),
            &serde_json::json!(["eu", "us"])
        ],
        "{r}"
    );
    let places = &failing[1]["services"][0]["places"];
    assert!(places.to_string().contains("DE-HE"), "{places}");
}

/// Queries `name` A with the client `addr` as ECS /32 or /128.
fn served(dns: std::net::SocketAddr, name: &str, addr: IpAddr) -> Vec<String> {
    let mut q = query(name, RecordType::A);
    let mut e = Edns::new();
    e.set_max_payload(1232);
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    e.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
    q.edns = Some(e);
    udp(dns, &q)
        .answers
        .iter()
        .map(|a| match &a.data {
            RData::A(x) => x.to_string(),
            RData::AAAA(x) => x.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// First, middle and last address of a network.
fn samples(n: &Value) -> Vec<IpAddr> {
    let first: IpAddr = n["first"].as_str().expect("first").parse().expect("ip");
    let last: IpAddr = n["last"].as_str().expect("last").parse().expect("ip");
    let mid = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            IpAddr::from((((u32::from(a) as u64 + u32::from(b) as u64) / 2) as u32).to_be_bytes())
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            IpAddr::from((u128::from(a) / 2 + u128::from(b) / 2).to_be_bytes())
        }
        _ => first,
    };
    vec![first, mid, last]
}

/// Compares simulate's answer for every network with the server's.
fn agree(dns: std::net::SocketAddr, cfg: &Path, args: &[&str]) -> usize {
    let mut all = vec!["--per-network"];
    all.extend_from_slice(args);
    let (code, r) = simulate_json(cfg, &all);
    assert_eq!(code, Some(0), "{r}");
    let mut compared = 0;
    for s in r["services"].as_array().expect("services") {
        let name = s["service"].as_str().expect("name");
        for n in s["networks"].as_array().expect("networks") {
            let want: Vec<String> = n["answer"]
                .as_array()
                .expect("answer")
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            for addr in samples(n) {
                assert_eq!(
                    served(dns, name, addr),
                    want,
                    "{name} {addr} ({args:?}): {n}"
                );
                compared += 1;
            }
        }
    }
    compared
}

#[test]
fn simulate_agrees_with_the_answers_served_for_every_network() {
    let dir = write_dir(r#"["eu", "us"]"#);
    let cfg = dir.path().join("geolb.toml");
    let s = TestServer::start_dir(dir);
    let compared = agree(s.dns, &cfg, &[]);
    assert!(compared >= 3 * 3 * 11, "{compared}");
    // The same with eu drained on the server and in the simulation.
    let admin = s.admin.expect("admin");
    let (code, body) = http_json(admin, "/v1/drain", r#"{"target": "eu"}"#);
    assert_eq!(code, 200, "{body}");
    let de: IpAddr = "192.0.2.7".parse().expect("ip");
    assert!(
        wait_for(Duration::from_secs(5), || served(
            s.dns,
            "www.example.com.",
            de
        ) == ["10.2.0.1"])
        .is_some(),
        "the drain reached the answers"
    );
    agree(s.dns, &cfg, &["--drain", "eu"]);
    // And from the node's live health: its drain, read through its API.
    let admin = admin.to_string();
    agree(s.dns, &cfg, &["--admin", &admin]);
    let (code, out) = simulate(&cfg, &["--admin", "127.0.0.1:1"]);
    assert_eq!(code, Some(2), "an unreachable node is an error: {out}");
}

#[test]
fn simulate_reads_a_live_partial_drain_and_agrees_with_the_server_at_each_networks_first_address() {
    let dir = write_dir(r#"["eu", "us"]"#);
    let cfg = dir.path().join("geolb.toml");
    let s = TestServer::start_dir(dir);
    let admin = s.admin.expect("admin");
    let (code, body) = http_json(admin, "/v1/drain", r#"{"target": "eu", "fraction": 0.5}"#);
    assert_eq!(code, 200, "{body}");
    let admin = admin.to_string();
    let (code, r) = simulate_json(&cfg, &["--per-network", "--admin", &admin]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["health"], "partially drained: eu 50 %", "{r}");
    // Each network moves as its first address's /24 decides: there the
    // simulation and the server agree, moved or not.
    let (mut compared, mut moved) = (0, 0);
    for svc in r["services"].as_array().expect("services") {
        let name = svc["service"].as_str().expect("name");
        for n in svc["networks"].as_array().expect("networks") {
            let first: IpAddr = n["first"].as_str().expect("first").parse().expect("ip");
            let want: Vec<String> = n["answer"]
                .as_array()
                .expect("answer")
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            assert_eq!(served(s.dns, name, first), want, "{name} {first}: {n}");
            compared += 1;
            let eu_first = geolb::policy::health::partial_position(first) < 0.5;
            moved += usize::from(eu_first);
        }
    }
    assert!(compared >= 3 * 11, "{compared}");
    assert!(moved > 0 && moved < compared, "{moved} of {compared}");
}

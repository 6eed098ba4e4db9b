//! Geo steering end to end: databases built by the tests (GeoIP2 and DB-IP
//! layouts, ASN), EDNS Client Subnet over real UDP, every steering step,
//! all-down behaviour, explain, and GeoIP hot reload.

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::mmdb::{build_asn, build_city, CityNet, Layout};
use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{RData, RecordType};

use geolb::policy::AdminState;

fn nets() -> Vec<CityNet> {
    common::mmdb::world()
}

const ZONE: &str = "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n\
                    static A 192.0.2.80\nwww TXT \"static text at a dynamic name\"\nedge.cdn A 192.0.2.200\n";

const CONFIG: &str = r#"
[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
udp_workers = 1

[geoip]
city = "city.mmdb"
asn = "asn.mmdb"
watch_interval = "100ms"

[regions.eu]
location = [50.11, 8.68]
[regions.us]
location = [39.04, -77.49]
[regions.ap]
location = [35.68, 139.69]

[pools.eu-web]
region = "eu"
endpoints = [{ address = "10.1.0.1" }, { address = "10.1.0.2" }, { address = "2001:db8:1::1" }]
[pools.us-web]
region = "us"
endpoints = [{ address = "10.2.0.1" }, { address = "10.2.0.2" }, { address = "2001:db8:2::1" }]
[pools.ap-web]
region = "ap"
endpoints = [{ address = "10.3.0.1" }, { address = "2001:db8:3::1" }]
[pools.eu-cdn]
region = "eu"
endpoints = [{ cname = "edge.cdn.example.com." }]
[pools.us-cdn]
region = "us"
endpoints = [{ cname = "us.cdn.example.net." }]

[zones."example.com"]
file = "example.com.zone"

[zones."example.com".services.www]
ttl = 30
pools = ["eu-web", "us-web", "ap-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 8
[zones."example.com".services.www.geo]
default = ["us", "eu"]
continent = { EU = ["eu", "us"], NA = ["us", "eu"], AS = ["ap", "us"] }
country = { BR = ["us"] }
subdivision = { "US-CA" = ["ap", "us"] }
asn = { "64500" = ["eu"] }
cidr = { "198.51.100.128/25" = ["ap"] }
cidr_file = "cidr.txt"

[zones."example.com".services.near]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["nearest", "failover", "first_n"]
first_n = 8
nearest = { limit = 2 }

[zones."example.com".services.biased]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["nearest", "failover", "first_n"]
first_n = 8
nearest = { bias = { us = 7000.0 } }

[zones."example.com".services.fast]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["latency", "failover", "first_n"]
first_n = 8
latency = { default = { us = 10, eu = 20 }, continent = { AS = { ap = 5, us = 90 } }, country = { GB = { us = 1, eu = 30 } } }

[zones."example.com".services.noecs]
pools = ["eu-web", "us-web"]
chain = ["geo", "failover", "first_n"]
first_n = 8
ecs = false
geo = { default = ["us"], continent = { EU = ["eu"] } }

[zones."example.com".services.sticky]
pools = ["eu-web"]
chain = ["weighted"]
weighted = { mode = "sticky", count = 1 }

[zones."example.com".services.nodata]
pools = ["ap-web"]
chain = ["healthy"]
all_down = "nodata"

[zones."example.com".services.fallback]
pools = ["ap-web"]
chain = ["healthy"]
all_down = { addresses = ["192.0.2.250"] }

[zones."example.com".services.fallbackcname]
pools = ["ap-web"]
chain = ["healthy"]
all_down = { cname = "static.example.com." }

[zones."example.com".services.failopen]
pools = ["ap-web"]
chain = ["healthy"]

[zones."example.com".services.cdn]
pools = ["eu-cdn", "us-cdn"]
chain = ["geo", "failover"]
geo = { default = ["us"], continent = { EU = ["eu"] } }

[zones."example.com".services."*.apps"]
pools = ["us-web"]
chain = ["first_n"]
first_n = 1
"#;

struct Geo {
    s: TestServer,
}

fn start_layout(layout: Layout) -> Geo {
    let asn = build_asn(&[
        ("81.0.0.0/12", 64500, "Example Transit"),
        ("203.0.113.0/24", 64501, "Other"),
    ]);
    start_files(layout, &asn)
}

fn start_files(layout: Layout, asn: &[u8]) -> Geo {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::write(p.join("geolb.toml"), CONFIG).expect("w");
    std::fs::write(p.join("example.com.zone"), ZONE).expect("w");
    std::fs::write(p.join("city.mmdb"), build_city(&nets(), layout)).expect("w");
    std::fs::write(p.join("asn.mmdb"), asn).expect("w");
    std::fs::write(p.join("cidr.txt"), "# office networks\n192.0.2.128/25 us\n").expect("w");
    Geo {
        s: TestServer::start_dir(dir),
    }
}

fn start() -> Geo {
    start_layout(Layout::GeoIp2)
}

/// Queries `name` with ECS `subnet` ("a.b.c.d/p"); returns (addresses, scope, reply).
fn ask(
    g: &Geo,
    name: &str,
    t: RecordType,
    subnet: Option<&str>,
) -> (Vec<String>, Option<u8>, Message) {
    let mut q = query(name, t);
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some(sn) = subnet {
        let (a, p) = sn.split_once('/').expect("cidr");
        let addr: IpAddr = a.parse().expect("ip");
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            addr,
            p.parse().expect("prefix"),
            0,
        )));
    }
    q.edns = Some(e);
    let r = udp(g.s.dns, &q);
    let scope = ecs_scope(&r);
    let addrs = r
        .answers
        .iter()
        .map(|a| match &a.data {
            RData::A(x) => x.to_string(),
            RData::AAAA(x) => x.to_string(),
            RData::CNAME(c) => format!("CNAME {}", c.0),
            other => format!("{other:?}"),
        })
        .collect();
    (addrs, scope, r)
}

fn a(g: &Geo, name: &str, subnet: &str) -> Vec<String> {
    ask(g, name, RecordType::A, Some(subnet)).0
}

#[test]
fn rfc7871_7_2_1_answer_follows_the_client_subnet_with_its_scope() {
    let g = start();
    let (eu, scope, r) = ask(&g, "www.example.com.", RecordType::A, Some("192.0.2.0/24"));
    assert_eq!(eu, ["10.1.0.1", "10.1.0.2"]);
    assert_eq!(scope, Some(24), "scope = the matching network's prefix");
    assert_eq!(r.answers[0].ttl, 30);
    assert_eq!(
        a(&g, "www.example.com.", "198.51.100.0/25"),
        ["10.2.0.1", "10.2.0.2"]
    );
    assert_eq!(a(&g, "www.example.com.", "203.0.113.0/24"), ["10.3.0.1"]);
    let (v6, scope, _) = ask(
        &g,
        "www.example.com.",
        RecordType::AAAA,
        Some("2001:db8:e0::/48"),
    );
    assert_eq!(v6, ["2001:db8:1::1"]);
    assert_eq!(scope, Some(48));
}

#[test]
fn rfc7871_7_2_1_scope_is_never_more_specific_than_the_source() {
    let g = start();
    // nearest: the City network 45.0.0.0/8 decides: scope 8 for a /24 source.
    let (_, scope, _) = ask(&g, "near.example.com.", RecordType::A, Some("45.1.2.0/24"));
    assert_eq!(scope, Some(8));
    // geo with CIDR entries (up to /25) elsewhere: none lies inside the /8,
    // which goes to us as a whole, so its scope is the /8 too.
    let (addrs, scope, _) = ask(&g, "www.example.com.", RecordType::A, Some("45.1.2.0/24"));
    assert_eq!(addrs, ["10.2.0.1", "10.2.0.2"], "BR → us");
    assert_eq!(scope, Some(8));
    let (_, scope, _) = ask(&g, "www.example.com.", RecordType::A, Some("45.1.0.0/16"));
    assert_eq!(scope, Some(8));
    // A /24 network, but the client only revealed /20: scope 20.
    let (_, scope, _) = ask(&g, "www.example.com.", RecordType::A, Some("192.0.0.0/20"));
    assert!(scope.is_some_and(|s| s <= 20), "{scope:?}");
}

#[test]
fn rfc7871_7_1_2_source_prefix_zero_answers_for_the_resolver_with_scope_0() {
    let g = start();
    let (addrs, scope, _) = ask(&g, "www.example.com.", RecordType::A, Some("0.0.0.0/0"));
    // The resolver (127.0.0.1) is not located: default list, us first.
    assert_eq!(addrs, ["10.2.0.1", "10.2.0.2"]);
    assert_eq!(scope, Some(0));
}

#[test]
fn rfc7871_7_1_1_malformed_client_subnet_is_formerr() {
    let g = start();
    let mut q = query("www.example.com.", RecordType::A);
    let mut e = Edns::new();
    // Family 1, source /24, but four address bytes.
    e.options_mut()
        .insert(EdnsOption::Unknown(8, vec![0, 1, 24, 0, 192, 0, 2, 0]));
    q.edns = Some(e);
    let r = udp(g.s.dns, &q);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    assert!(r.edns.is_some(), "FORMERR still carries OPT");
}

#[test]
fn rfc7871_7_2_1_static_answers_have_scope_0() {
    let g = start();
    let (addrs, scope, _) = ask(
        &g,
        "static.example.com.",
        RecordType::A,
        Some("192.0.2.0/24"),
    );
    assert_eq!(addrs, ["192.0.2.80"]);
    assert_eq!(scope, Some(0));
    // A dynamic name keeps its static records of other types.
    let (_, scope, r) = ask(
        &g,
        "www.example.com.",
        RecordType::TXT,
        Some("192.0.2.0/24"),
    );
    assert_eq!(r.answers.len(), 1);
    assert_eq!(scope, Some(0));
    // And a type neither has: NODATA with SOA.
    let (_, _, r) = ask(&g, "www.example.com.", RecordType::MX, Some("192.0.2.0/24"));
    assert!(r.answers.is_empty() && r.authorities.len() == 1);
}

#[test]
fn ecs_can_be_ignored_per_service() {
    let g = start();
    let (addrs, scope, _) = ask(
        &g,
        "noecs.example.com.",
        RecordType::A,
        Some("192.0.2.0/24"),
    );
    assert_eq!(
        addrs,
        ["10.2.0.1", "10.2.0.2"],
        "located by the source (loopback → default)"
    );
    assert_eq!(scope, Some(0));
}

#[test]
fn geo_most_specific_match_wins() {
    let g = start();
    // CIDR beats continent (198.51.100.128/25 → ap).
    let (addrs, scope, _) = ask(
        &g,
        "www.example.com.",
        RecordType::A,
        Some("198.51.100.128/25"),
    );
    assert_eq!(addrs, ["10.3.0.1"]);
    assert_eq!(scope, Some(25));
    // CIDR from cidr_file: 192.0.2.128/25 → us.
    assert_eq!(
        a(&g, "www.example.com.", "192.0.2.128/25"),
        ["10.2.0.1", "10.2.0.2"]
    );
    // ASN beats country/continent: 81.0.0.0/16 is GB/EU but AS64500 → eu only.
    let (addrs, scope, _) = ask(&g, "www.example.com.", RecordType::A, Some("81.0.1.0/24"));
    assert_eq!(addrs, ["10.1.0.1", "10.1.0.2"]);
    assert_eq!(scope, Some(12), "all of AS64500's 81.0.0.0/12 goes to eu");
    // Subdivision beats continent: US-CA → ap.
    assert_eq!(a(&g, "www.example.com.", "64.0.5.0/24"), ["10.3.0.1"]);
    // Country beats continent: BR → us.
    assert_eq!(
        a(&g, "www.example.com.", "45.9.9.0/24"),
        ["10.2.0.1", "10.2.0.2"]
    );
    // Unknown address: default.
    assert_eq!(
        a(&g, "www.example.com.", "8.8.8.0/24"),
        ["10.2.0.1", "10.2.0.2"]
    );
}

#[test]
fn dbip_layout_locates_by_country_and_continent() {
    let g = start_layout(Layout::DbIp);
    assert_eq!(
        a(&g, "www.example.com.", "192.0.2.0/24"),
        ["10.1.0.1", "10.1.0.2"]
    );
    assert_eq!(a(&g, "www.example.com.", "203.0.113.0/24"), ["10.3.0.1"]);
    assert_eq!(
        a(&g, "www.example.com.", "45.1.0.0/16"),
        ["10.2.0.1", "10.2.0.2"]
    );
    // DB-IP Lite has no subdivision codes: US-CA falls back to continent NA.
    assert_eq!(
        a(&g, "www.example.com.", "64.0.5.0/24"),
        ["10.2.0.1", "10.2.0.2"]
    );
}

#[test]
fn nearest_orders_by_distance_with_limit_and_bias() {
    let g = start();
    // Tokyo client: ap nearest.
    assert_eq!(a(&g, "near.example.com.", "203.0.113.0/24"), ["10.3.0.1"]);
    // Frankfurt client: eu.
    assert_eq!(
        a(&g, "near.example.com.", "192.0.2.0/24"),
        ["10.1.0.1", "10.1.0.2"]
    );
    // With a 7000 km bias towards us, Frankfurt (6500 km away) goes to us.
    assert_eq!(
        a(&g, "biased.example.com.", "192.0.2.0/24"),
        ["10.2.0.1", "10.2.0.2"]
    );
    // Drain eu: Frankfurt fails over to the next nearest within the limit (us).
    g.s.shared()
        .set_admin_state("eu", AdminState::Drain)
        .expect("eu exists");
    assert_eq!(
        a(&g, "near.example.com.", "192.0.2.0/24"),
        ["10.2.0.1", "10.2.0.2"]
    );
}

#[test]
fn latency_table_orders_regions_by_most_specific_row() {
    let g = start();
    assert_eq!(
        a(&g, "fast.example.com.", "203.0.113.0/24"),
        ["10.3.0.1"],
        "AS row"
    );
    assert_eq!(
        a(&g, "fast.example.com.", "81.0.1.0/24"),
        ["10.2.0.1", "10.2.0.2"],
        "GB row beats EU"
    );
    assert_eq!(
        a(&g, "fast.example.com.", "192.0.2.0/24"),
        ["10.2.0.1", "10.2.0.2"],
        "default row"
    );
}

#[test]
fn failover_moves_to_the_next_group_when_one_is_drained() {
    let g = start();
    let sh = g.s.shared();
    assert_eq!(a(&g, "www.example.com.", "203.0.113.0/24"), ["10.3.0.1"]);
    // ap-web has one IPv4 endpoint; draining it fails A over to us.
    sh.set_admin_state("ap-web/10.3.0.1", AdminState::Drain)
        .expect("exists");
    assert_eq!(
        a(&g, "www.example.com.", "203.0.113.0/24"),
        ["10.2.0.1", "10.2.0.2"]
    );
    // AAAA still has ap's IPv6 endpoint.
    let (v6, _, _) = ask(
        &g,
        "www.example.com.",
        RecordType::AAAA,
        Some("203.0.113.0/24"),
    );
    assert_eq!(v6, ["2001:db8:3::1"]);
    // The healthy step drops a drained endpoint inside a pool.
    sh.set_admin_state("us-web/10.2.0.1", AdminState::ForceDown)
        .expect("exists");
    assert_eq!(a(&g, "www.example.com.", "203.0.113.0/24"), ["10.2.0.2"]);
    sh.set_admin_state("ap-web/10.3.0.1", AdminState::None)
        .expect("exists");
    assert_eq!(a(&g, "www.example.com.", "203.0.113.0/24"), ["10.3.0.1"]);
}

#[test]
fn all_down_behaviours() {
    let g = start();
    g.s.shared()
        .set_admin_state("ap", AdminState::Drain)
        .expect("ap exists");
    // Fail open (default): answer as if everything were up.
    assert_eq!(a(&g, "failopen.example.com.", "192.0.2.0/24"), ["10.3.0.1"]);
    // NODATA: no records, SOA in authority.
    let (addrs, _, r) = ask(
        &g,
        "nodata.example.com.",
        RecordType::A,
        Some("192.0.2.0/24"),
    );
    assert!(addrs.is_empty());
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.authorities.len(), 1);
    // Fallback addresses.
    assert_eq!(
        a(&g, "fallback.example.com.", "192.0.2.0/24"),
        ["192.0.2.250"]
    );
}

#[test]
fn cname_pools_answer_a_cname_and_chase_it_inside_our_zones() {
    let g = start();
    let (eu, scope, _) = ask(&g, "cdn.example.com.", RecordType::A, Some("192.0.2.0/24"));
    assert_eq!(eu, ["CNAME edge.cdn.example.com.", "192.0.2.200"]);
    assert_eq!(scope, Some(24));
    let (us, _, _) = ask(
        &g,
        "cdn.example.com.",
        RecordType::A,
        Some("198.51.100.0/24"),
    );
    assert_eq!(us, ["CNAME us.cdn.example.net."]);
    // Any type gets the CNAME.
    let (tx, _, _) = ask(
        &g,
        "cdn.example.com.",
        RecordType::TXT,
        Some("198.51.100.0/24"),
    );
    assert_eq!(tx, ["CNAME us.cdn.example.net."]);
}

#[test]
fn wildcard_services_answer_every_name_they_cover() {
    let g = start();
    let (addrs, _, r) = ask(
        &g,
        "anything.apps.example.com.",
        RecordType::A,
        Some("192.0.2.0/24"),
    );
    assert_eq!(addrs.len(), 1);
    assert!(addrs[0].starts_with("10.2.0."));
    assert_eq!(r.answers[0].name.to_ascii(), "anything.apps.example.com.");
}

#[test]
fn sticky_weighted_keeps_a_subnet_on_one_endpoint() {
    let g = start();
    for net in ["192.0.2.0/24", "198.51.100.0/24", "45.3.0.0/24"] {
        let first = a(&g, "sticky.example.com.", net);
        assert_eq!(first.len(), 1);
        for _ in 0..10 {
            assert_eq!(a(&g, "sticky.example.com.", net), first, "{net}");
        }
    }
    // Different subnets spread over both endpoints.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..64 {
        seen.extend(a(&g, "sticky.example.com.", &format!("45.{i}.7.0/24")));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn explain_api_shows_location_steps_and_the_answer() {
    let g = start();
    let admin = g.s.admin.expect("admin");
    let (code, body) = http(
        admin,
        "GET",
        "/v1/explain?name=www.example.com&type=A&client=203.0.113.7",
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["location"]["country"], "JP");
    assert_eq!(v["location"]["subdivision"], "JP-13");
    let steps: Vec<&str> = v["trace"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(steps, ["healthy", "geo", "failover", "first_n"]);
    assert_eq!(v["trace"]["steps"][1]["detail"], "matched continent AS");
    assert!(
        v["answer"][0].as_str().unwrap_or("").contains("10.3.0.1"),
        "{body}"
    );
    // A /32 client of the City network 203.0.113.0/24, which alone goes
    // to ap (its neighbours are unknown): the scope is that network, as
    // the compiled range shows; a /25 CIDR entry elsewhere does not narrow it.
    assert_eq!(v["ecs_scope"], 24);
    assert_eq!(v["compiled_range"], "203.0.113.0 - 203.0.113.255", "{body}");
    // The compiled answer still explains which entry matched: an AS number
    // and a client CIDR, with the range that shares the decision.
    for (client, matched, range, scope) in [
        (
            "81.0.1.7",
            "matched ASN 64500",
            "81.0.0.0 - 81.15.255.255",
            12,
        ),
        (
            "198.51.100.200",
            "matched client CIDR /25",
            "198.51.100.128 - 198.51.100.255",
            25,
        ),
    ] {
        let url = format!("/v1/explain?name=www.example.com&type=A&client={client}");
        let (code, body) = http(admin, "GET", &url);
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["trace"]["steps"][1]["detail"], matched, "{body}");
        assert_eq!(v["compiled_range"], range, "{body}");
        assert_eq!(v["ecs_scope"], scope, "{body}");
    }
    // `near` is compiled: explain shows the range that shares the decision,
    // and it holds the client.
    let (code, body) = http(
        admin,
        "GET",
        "/v1/explain?name=near.example.com&type=A&client=203.0.113.7",
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let range = v["compiled_range"].as_str().expect("compiled range");
    let (lo, hi) = range.split_once(" - ").expect("lo - hi");
    let (lo, hi): (Ipv4Addr, Ipv4Addr) = (lo.parse().expect("lo"), hi.parse().expect("hi"));
    let client = Ipv4Addr::new(203, 0, 113, 7);
    assert!(lo <= client && client <= hi, "{range}");
    assert!(v["ecs_scope"].as_u64().is_some_and(|s| s <= 24), "{body}");
    let (code, body) = http(
        admin,
        "GET",
        "/v1/explain?name=www.example.com&client=not-an-ip",
    );
    assert_eq!(code, 400);
    assert!(body.contains("error"));
}

/// A GeoIP rebuild runs beside the status API, not in front of it: while a
/// changed database is being compiled, `/v1/status` answers and says so.
#[test]
fn status_answers_while_a_changed_geoip_database_is_compiled() {
    let g = start();
    let admin = g.s.admin.expect("admin");
    // A large replacement (65 536 networks of alternating cities) takes a
    // while to compile, long enough to be seen in progress.
    let mut big = nets();
    for i in 0..65_536u32 {
        let net = Ipv4Addr::from(0x2c00_0000 | (i << 8));
        let (continent, country, city, lat, lon) = if i % 2 == 0 {
            ("EU", "FR", "Paris", 48.85, 2.35)
        } else {
            ("AS", "JP", "Osaka", 34.69, 135.5)
        };
        let net = format!("{net}/24");
        big.push(CityNet::new(&net, continent, country, None, city, lat, lon));
    }
    let pending = || {
        let (code, body) = http(admin, "GET", "/metrics");
        assert_eq!(code, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix("geolb_geoip_build_pending_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("geolb_geoip_build_pending_seconds")
    };
    // Nothing pending before the file changes (after the rename the watcher
    // may pick the change up at any moment).
    assert_eq!(pending(), 0.0);
    let tmp = g.s.path("city.mmdb.new");
    std::fs::write(&tmp, build_city(&big, Layout::GeoIp2)).expect("w");
    std::fs::rename(&tmp, g.s.path("city.mmdb")).expect("rename");
    let (mut saw_building, mut saw_pending) = (false, false);
    let swapped = wait_for(Duration::from_secs(60), || {
        let (code, body) = http(admin, "GET", "/v1/status");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        saw_building |= !v["geoip"]["building_since"].is_null();
        saw_pending |= pending() > 0.0;
        !v["geoip"]["last_swap"].is_null()
    });
    assert!(swapped.is_some(), "the new database was never swapped in");
    assert!(saw_building, "status never showed the build in progress");
    assert!(saw_pending, "the metric never showed the build in progress");
    assert_eq!(pending(), 0.0, "no build pending once swapped");
    assert_eq!(a(&g, "www.example.com.", "44.0.1.0/24"), ["10.3.0.1"]);
}

#[test]
fn geoip_database_is_swapped_when_replaced_and_kept_when_corrupt() {
    let g = start();
    assert_eq!(
        a(&g, "www.example.com.", "192.0.2.0/24"),
        ["10.1.0.1", "10.1.0.2"]
    );
    // Replace by rename: 192.0.2.0/24 now in Japan.
    let mut moved = nets();
    moved[0] = CityNet::new("192.0.2.0/24", "AS", "JP", None, "Osaka", 34.69, 135.5);
    let tmp = g.s.path("city.mmdb.new");
    std::fs::write(&tmp, build_city(&moved, Layout::GeoIp2)).expect("w");
    std::fs::rename(&tmp, g.s.path("city.mmdb")).expect("rename");
    assert!(wait_for(Duration::from_secs(60), || a(
        &g,
        "www.example.com.",
        "192.0.2.0/24"
    ) == ["10.3.0.1"])
    .is_some());
    // A corrupt replacement is rejected; the last good database serves.
    std::fs::write(&tmp, b"this is not a maxmind database").expect("w");
    std::fs::rename(&tmp, g.s.path("city.mmdb")).expect("rename");
    let admin = g.s.admin.expect("admin");
    assert!(
        wait_for(Duration::from_secs(60), || http(admin, "GET", "/v1/status")
            .1
            .contains("not a usable MaxMind DB"))
        .is_some()
    );
    assert_eq!(a(&g, "www.example.com.", "192.0.2.0/24"), ["10.3.0.1"]);
    // A missing file too.
    std::fs::remove_file(g.s.path("city.mmdb")).expect("rm");
    assert!(
        wait_for(Duration::from_secs(60), || http(admin, "GET", "/v1/status")
            .1
            .contains("cannot open"))
        .is_some()
    );
    assert_eq!(a(&g, "www.example.com.", "203.0.113.0/24"), ["10.3.0.1"]);
}

/// The ASN database is part of what `www`'s decisions are compiled from: a
/// replaced one is walked again, as a replaced City database is.
#[test]
fn an_asn_database_swap_rebuilds_the_compiled_decisions() {
    let g = start();
    // 45.0.0.0/8 is in Brazil (country rule: us) and in no AS.
    let (addrs, scope, _) = ask(&g, "www.example.com.", RecordType::A, Some("45.1.2.0/24"));
    assert_eq!(addrs, ["10.2.0.1", "10.2.0.2"]);
    assert_eq!(scope, Some(8));
    // Now half of it is in AS64500, which sends it to eu.
    let asn = build_asn(&[
        ("45.0.0.0/9", 64500, "Example Transit"),
        ("203.0.113.0/24", 64501, "Other"),
    ]);
    let tmp = g.s.path("asn.mmdb.new");
    std::fs::write(&tmp, asn).expect("w");
    std::fs::rename(&tmp, g.s.path("asn.mmdb")).expect("rename");
    let moved = wait_for(Duration::from_secs(60), || {
        a(&g, "www.example.com.", "45.1.2.0/24") == ["10.1.0.1", "10.1.0.2"]
    });
    assert!(moved.is_some(), "the new ASN database was never used");
    let (_, scope, _) = ask(&g, "www.example.com.", RecordType::A, Some("45.1.2.0/24"));
    assert_eq!(scope, Some(9), "the AS64500 network");
    let (addrs, scope, _) = ask(&g, "www.example.com.", RecordType::A, Some("45.200.0.0/16"));
    assert_eq!(addrs, ["10.2.0.1", "10.2.0.2"]);
    assert_eq!(scope, Some(9));
}

#[test]
fn bad_steering_config_is_rejected_with_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::write(p.join("example.com.zone"), ZONE).expect("w");
    let cfg = r#"
[regions.eu]
location = [50.0, 8.0]
[pools.p]
region = "nowhere"
endpoints = [{ address = "10.0.0.1" }]
[pools.q]
region = "eu"
endpoints = [{ address = "10.0.0.2" }]
[zones."example.com"]
file = "example.com.zone"
[zones."example.com".services.www]
pools = ["q", "missing"]
chain = ["geo", "teleport", "first_n"]
geo = { default = [], continent = { XX = ["eu"] } }
"#;
    std::fs::write(p.join("geolb.toml"), cfg).expect("w");
    let (code, text) = check(&p.join("geolb.toml"));
    assert_eq!(code, Some(1));

    for needle in [
        "geolb.toml:5:10: error: pools.p.region: unknown region \"nowhere\"",
        "unknown pool \"missing\"",
        "unknown step \"teleport\"",
        "first_n step needs first_n",
        "geo default has an empty list",
        "geo.continent key \"XX\"",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// `cp new.mmdb city.mmdb` and `truncate` change the file the server read
/// in place. The server reads a private copy, so under query load (UDP
/// queries to a service with ASN and CIDR keys, located per query, and
/// `explain` calls) it keeps answering, reports each bad file and takes
/// the database once a complete one is in place.
#[test]
fn truncating_the_mapped_geoip_file_never_crashes_the_server() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let g = start();
    let admin = g.s.admin.expect("admin");
    let dns = g.s.dns;
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, explained) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let subnets = [
        "192.0.2.0/24",
        "81.0.7.0/24",
        "203.0.113.0/24",
        "45.1.2.0/24",
    ];
    let queries = {
        let (stop, answered) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_read_timeout(Some(Duration::from_secs(3)))
                .expect("timeout");
            let mut buf = vec![0u8; 4096];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (a, p) = subnets[i % subnets.len()].split_once('/').expect("cidr");
                let mut q = query("www.example.com.", RecordType::A);
                let mut e = Edns::new();
                e.set_max_payload(1232);
                e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                    a.parse::<IpAddr>().expect("ip"),
                    p.parse().expect("prefix"),
                    0,
                )));
                q.edns = Some(e);
                s.send_to(&q.to_vec().expect("encode"), dns).expect("send");
                let n = s.recv(&mut buf).expect("every query is answered");
                let r = Message::from_vec(&buf[..n]).expect("reply parses");
                assert_eq!(r.metadata.id, q.metadata.id);
                assert_eq!(r.metadata.response_code, ResponseCode::NoError);
                assert!(!r.answers.is_empty(), "an answer for {a}");
                answered.fetch_add(1, Ordering::Relaxed);
                i += 1;
                // Steady load, not a spin: builds run at the lowest CPU
                // priority and must still get some of a saturated machine.
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let explains = {
        let (stop, explained) = (stop.clone(), explained.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let client = subnets[i % subnets.len()].replace("0/24", "9");
                let path = format!("/v1/explain?name=www.example.com&type=A&client={client}");
                let (code, body) = http(admin, "GET", &path);
                assert_eq!(code, 200, "{body}");
                explained.fetch_add(1, Ordering::Relaxed);
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let status = || http(admin, "GET", "/v1/status").1;
    let rejected = |name: &str| {
        let name = name.to_string();
        wait_for(Duration::from_secs(60), move || {
            let v: serde_json::Value = serde_json::from_str(&status()).expect("json");
            v["geoip"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(&name))
        })
        .is_some()
    };
    let served = |n: u64| {
        let (a0, e0) = (
            answered.load(Ordering::Relaxed),
            explained.load(Ordering::Relaxed),
        );
        wait_for(Duration::from_secs(60), || {
            answered.load(Ordering::Relaxed) >= a0 + n
                && explained.load(Ordering::Relaxed) >= e0 + 2
        })
        .is_some()
    };
    assert!(served(50), "load is running");
    let city = g.s.path("city.mmdb");
    let asn = g.s.path("asn.mmdb");
    let mut moved = nets();
    moved[0] = CityNet::new("192.0.2.0/24", "AS", "JP", None, "Osaka", 34.69, 135.5);
    let new_city = build_city(&moved, Layout::GeoIp2);
    let set_len = |p: &std::path::Path, n: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .and_then(|f| f.set_len(n))
            .expect("truncate in place");
    };
    for round in 0..3 {
        // `truncate -s 0` on the file the server loaded.
        set_len(&city, 0);
        assert!(rejected("city.mmdb"), "round {round}: truncation reported");
        assert!(served(100), "round {round}: answering after truncation");
        // Half of a `cp` over it.
        std::fs::write(&city, &new_city[..new_city.len() / 2]).expect("rewrite");
        assert!(
            served(100),
            "round {round}: answering after a partial rewrite"
        );
        // The ASN database shrunk in place too.
        let asn_len = std::fs::metadata(&asn).expect("asn").len();
        set_len(&asn, asn_len / 3);
        assert!(
            rejected("asn.mmdb"),
            "round {round}: ASN truncation reported"
        );
        assert!(served(100), "round {round}: answering after ASN truncation");
        // The old answers still come from the databases loaded at start.
        assert_eq!(
            a(&g, "www.example.com.", "192.0.2.0/24"),
            ["10.1.0.1", "10.1.0.2"]
        );
        assert_eq!(
            a(&g, "www.example.com.", "81.0.7.0/24"),
            ["10.1.0.1", "10.1.0.2"]
        );
        // Put the ASN file back as it was for the next round.
        std::fs::write(
            &asn,
            build_asn(&[
                ("81.0.0.0/12", 64500, "Example Transit"),
                ("203.0.113.0/24", 64501, "Other"),
            ]),
        )
        .expect("restore asn");
        // Restore the City file unless this is the last round.
        if round < 2 {
            std::fs::write(&city, build_city(&nets(), Layout::GeoIp2)).expect("restore");
            assert!(
                wait_for(Duration::from_secs(60), || {
                    let v: serde_json::Value = serde_json::from_str(&status()).expect("json");
                    v["geoip"]["last_error"].is_null()
                })
                .is_some(),
                "round {round}: the restored files are taken: {}",
                status()
            );
        }
    }
    // A complete in-place rewrite is taken.
    std::fs::write(&city, &new_city).expect("cp over");
    assert!(
        wait_for(Duration::from_secs(60), || a(
            &g,
            "www.example.com.",
            "192.0.2.0/24"
        ) == ["10.3.0.1"])
        .is_some(),
        "the complete rewrite is swapped in: {}",
        status()
    );
    assert!(served(100));
    stop.store(true, Ordering::Relaxed);
    queries.join().expect("every query answered");
    explains.join().expect("every explain answered");
}

/// A replacement that opens and answers a test lookup but holds one damaged
/// record (one byte changed in the data section) is refused as a whole: the
/// old database keeps serving, with its answers and scopes, and the status
/// says why.
#[test]
fn a_database_with_one_corrupt_record_is_rejected_and_the_old_one_keeps_serving() {
    let g = start();
    let admin = g.s.admin.expect("admin");
    let before = ask(
        &g,
        "near.example.com.",
        RecordType::A,
        Some("198.51.100.0/24"),
    );
    assert_eq!(before.0, ["10.2.0.1", "10.2.0.2"]);
    let mut moved = nets();
    moved[4] = CityNet::new("81.0.0.0/16", "AS", "JP", None, "Osaka", 34.69, 135.5);
    let mut bad = build_city(&moved, Layout::GeoIp2);
    common::mmdb::corrupt_record(&mut bad, "198.51.100.1".parse().expect("ip"));
    // The damage is not where the test lookups look.
    let r = maxminddb::Reader::from_source(&bad[..]).expect("still opens");
    for ip in ["1.1.1.1", "8.8.8.8", "81.0.1.1"] {
        let l = r.lookup(ip.parse().expect("ip")).expect("lookup");
        assert!(l.decode::<serde_json::Value>().is_ok(), "{ip}");
    }
    let tmp = g.s.path("city.mmdb.new");
    std::fs::write(&tmp, &bad).expect("w");
    std::fs::rename(&tmp, g.s.path("city.mmdb")).expect("rename");
    let status = || {
        let (code, body) = http(admin, "GET", "/v1/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")
    };
    assert!(
        wait_for(Duration::from_secs(60), || {
            status()["geoip"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("city.mmdb") && e.contains("corrupt"))
        })
        .is_some(),
        "the damaged file is reported: {}",
        status()
    );
    assert!(status()["geoip"]["last_swap"].is_null(), "nothing swapped");
    // Same answers and scope as before, for the damaged record's addresses
    // and for the ones the new file would have moved.
    for service in ["near.example.com.", "www.example.com."] {
        let now = ask(&g, service, RecordType::A, Some("198.51.100.0/24"));
        let was = if service == "near.example.com." {
            before.clone()
        } else {
            now.clone()
        };
        assert_eq!((&now.0, now.1), (&was.0, was.1), "{service}");
        assert_eq!(now.0, ["10.2.0.1", "10.2.0.2"], "{service}");
    }
    assert_eq!(
        a(&g, "near.example.com.", "81.0.0.0/24"),
        ["10.1.0.1", "10.1.0.2"]
    );
}

/// At startup a damaged database is an error that names the file, not a
/// server that answers from half of it.
#[test]
fn a_corrupt_geoip_database_is_a_clear_error_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::write(p.join("geolb.toml"), CONFIG).expect("w");
    std::fs::write(p.join("example.com.zone"), ZONE).expect("w");
    std::fs::write(p.join("cidr.txt"), "192.0.2.128/25 us\n").expect("w");
    let mut city = build_city(&nets(), Layout::GeoIp2);
    common::mmdb::corrupt_record(&mut city, "203.0.113.9".parse().expect("ip"));
    std::fs::write(p.join("city.mmdb"), city).expect("w");
    std::fs::write(
        p.join("asn.mmdb"),
        build_asn(&[("81.0.0.0/12", 64500, "T")]),
    )
    .expect("w");
    let (code, text) = check(&p.join("geolb.toml"));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("city.mmdb: not a usable MaxMind DB: corrupt"),
        "{text}"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let started = rt.block_on(geolb::server::Server::start(
        p.join("geolb.toml"),
        geolb::config::Overrides::default(),
    ));
    let e = started.err().expect("the server refuses to start");
    assert!(format!("{e:#}").contains("city.mmdb"), "{e:#}");
}

/// Writers store an AS number in the smallest unsigned type that fits
/// (uint16 below 65 536) or in uint64; each must match the `asn` keys. A
/// record whose number has a wrong type is counted and named in the status,
/// not silently ignored.
#[test]
fn asn_stored_as_uint16_or_uint64_matches_asn_keys() {
    use common::mmdb::{build_asn_typed, AsnValue};
    let asn = build_asn_typed(&[
        ("45.0.0.0/10", AsnValue::U16(64500)),
        ("45.64.0.0/10", AsnValue::U64(64500)),
        ("45.128.0.0/10", AsnValue::U128(64500)),
        ("45.192.0.0/11", AsnValue::U32(64500)),
        ("45.224.0.0/11", AsnValue::Text("AS64500")),
        ("203.0.113.0/24", AsnValue::U64(1 << 40)),
    ]);
    let g = start_files(Layout::GeoIp2, &asn);
    // 45.0.0.0/8 is in Brazil (country rule: us); AS64500 sends it to eu.
    for (subnet, why) in [
        ("45.1.0.0/24", "uint16"),
        ("45.65.0.0/24", "uint64"),
        ("45.129.0.0/24", "uint128"),
        ("45.193.0.0/24", "uint32"),
    ] {
        assert_eq!(
            a(&g, "www.example.com.", subnet),
            ["10.1.0.1", "10.1.0.2"],
            "ASN stored as {why}"
        );
    }
    // The string is no ASN: the country rule applies.
    assert_eq!(
        a(&g, "www.example.com.", "45.225.0.0/24"),
        ["10.2.0.1", "10.2.0.2"]
    );
    let (code, body) = http(g.s.admin.expect("admin"), "GET", "/v1/status");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let db = &v["geoip"]["asn"];
    assert_eq!(db["wrong_type_records"], 2, "{body}");
    let first = db["first_wrong_type"].as_str().expect("named");
    assert!(first.starts_with("45.224.0.0/11: "), "{first}");
}

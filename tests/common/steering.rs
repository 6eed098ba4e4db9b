//! A steering setup shared by the allocation test and the benchmarks: a
//! City database, three regions, a geo + failover + weighted service and a
//! nearest + sticky one, and a query mix with many client subnets.
#![allow(dead_code)]

use super::mmdb::{build_city, CityNet, Layout};
use geolb::config::Config;
use geolb::snapshot::Snapshot;

const CONFIG: &str = r#"
[geoip]
city = "city.mmdb"
[regions.eu]
location = [50.11, 8.68]
[regions.us]
location = [39.04, -77.49]
[regions.ap]
location = [35.68, 139.69]
[pools.eu-p]
region = "eu"
endpoints = [{ address = "10.1.0.1", weight = 3 }, { address = "10.1.0.2" }]
[pools.us-p]
region = "us"
endpoints = [{ address = "10.2.0.1" }, { address = "10.2.0.2" }]
[pools.ap-p]
region = "ap"
endpoints = [{ address = "10.3.0.1" }]
[zones."example.com"]
file = "z.zone"
[zones."example.com".services.www]
pools = ["eu-p", "us-p", "ap-p"]
chain = ["healthy", "geo", "failover", "weighted", "first_n"]
weighted = { count = 2 }
first_n = 2
geo = { default = ["us", "eu"], continent = { EU = ["eu", "us"], AS = ["ap", "us"] } }
[zones."example.com".services.near]
pools = ["eu-p", "us-p", "ap-p"]
chain = ["healthy", "nearest", "failover", "weighted"]
weighted = { mode = "sticky" }
"#;

/// The snapshot (and the directory holding its files).
pub fn snapshot() -> (tempfile::TempDir, Snapshot) {
    snapshot_with("")
}

/// The snapshot of the config followed by `extra` (more tables).
pub fn snapshot_with(extra: &str) -> (tempfile::TempDir, Snapshot) {
    snapshot_with_records(extra, "")
}

/// Records of most kinds the answer path treats apart: a CNAME chain, a
/// wildcard, a delegation with glue, MX, TXT, AAAA, SRV.
pub const MORE_RECORDS: &str = "\
alias CNAME alias2\nalias2 CNAME www\nloop CNAME loop\n*.wild A 192.0.2.99\n\
sub NS ns.sub\nns.sub A 192.0.2.98\n@ MX 10 host1\n@ TXT \"v=spf1 -all\"\n\
host1 AAAA 2001:db8::1\n_sip._udp SRV 0 5 5060 host1\n";

/// The snapshot of the config followed by `extra`, its zone followed by
/// `records` (master-file lines).
pub fn snapshot_with_records(extra: &str, records: &str) -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let nets = vec![
        CityNet::new(
            "192.0.2.0/24",
            "EU",
            "DE",
            Some("HE"),
            "Frankfurt",
            50.11,
            8.68,
        ),
        CityNet::new(
            "198.51.100.0/24",
            "NA",
            "US",
            Some("VA"),
            "Ashburn",
            39.04,
            -77.49,
        ),
        CityNet::new(
            "203.0.113.0/24",
            "AS",
            "JP",
            Some("13"),
            "Tokyo",
            35.68,
            139.69,
        ),
        CityNet::new("45.0.0.0/8", "SA", "BR", None, "Sao Paulo", -23.55, -46.63),
    ];
    std::fs::write(p.join("city.mmdb"), build_city(&nets, Layout::GeoIp2)).expect("w");
    let mut zone = String::from("$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.53\n");
    for i in 0..50 {
        zone.push_str(&format!("host{i} A 192.0.2.{i}\n"));
    }
    zone.push_str(records);
    std::fs::write(p.join("z.zone"), zone).expect("w");
    let config = Config::parse(&p.join("geolb.toml"), &format!("{CONFIG}{extra}")).expect("config");
    let (snap, _) = geolb::snapshot::build(config, 1, None).expect("snapshot");
    (dir, snap)
}

/// A query with EDNS and, optionally, an IPv4 client subnet.
pub fn query(name: &[u8], qtype: u16, ecs: Option<([u8; 4], u8)>) -> Vec<u8> {
    let mut b = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    b.extend_from_slice(name);
    b.extend_from_slice(&qtype.to_be_bytes());
    b.extend_from_slice(&[0, 1, 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    match ecs {
        Some((addr, p)) => {
            let n = (p as usize).div_ceil(8);
            b.extend_from_slice(&((8 + n) as u16).to_be_bytes());
            b.extend_from_slice(&[0, 8]);
            b.extend_from_slice(&((4 + n) as u16).to_be_bytes());
            b.extend_from_slice(&[0, 1, p, 0]);
            b.extend_from_slice(&addr[..n]);
        }
        None => b.extend_from_slice(&[0, 0]),
    }
    b
}

/// `q` (a query of [`query`]) with a COOKIE option added to its OPT record:
/// the client cookie, and a server cookie when given.
pub fn with_cookie(q: &[u8], cookie: &[u8]) -> Vec<u8> {
    with_option(q, 10, cookie)
}

/// `q` (a query of [`query`]) with the EDNS option `code` added to its OPT
/// record.
pub fn with_option(q: &[u8], code: u16, data: &[u8]) -> Vec<u8> {
    let name_len = q[12..].iter().position(|&b| b == 0).expect("name") + 1;
    let rdlen_at = 12 + name_len + 4 + 9;
    let mut b = q.to_vec();
    let rdlen = u16::from_be_bytes([b[rdlen_at], b[rdlen_at + 1]]) + 4 + data.len() as u16;
    b[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    b.extend_from_slice(&code.to_be_bytes());
    b.extend_from_slice(&(data.len() as u16).to_be_bytes());
    b.extend_from_slice(data);
    b
}

pub const WWW: &[u8] = b"\x03www\x07example\x03com\x00";
pub const NEAR: &[u8] = b"\x04near\x07example\x03com\x00";

/// Geo queries for many subnets over every region, plus static ones.
pub fn queries() -> Vec<Vec<u8>> {
    let mut queries = Vec::new();
    for i in 0..=255u8 {
        for first in [192u8, 198, 203, 45, 8] {
            let addr = match first {
                192 => [192, 0, 2, i],
                198 => [198, 51, 100, i],
                203 => [203, 0, 113, i],
                45 => [45, i, 7, 0],
                _ => [8, 8, i, 0],
            };
            queries.push(query(WWW, 1, Some((addr, 24))));
            queries.push(query(NEAR, 1, Some((addr, 24))));
        }
    }
    queries.push(query(b"\x05host7\x07example\x03com\x00", 1, None));
    queries.push(query(b"\x05nope9\x07example\x03com\x00", 1, None));
    queries.push(query(WWW, 28, Some(([192, 0, 2, 0], 24))));
    queries
}

//! The compiled fast path against the reference path, on a corpus of
//! queries: the reference path evaluates every location step against the
//! City database for each query, the fast path reads the decision from the
//! compiled range table. Their replies must be byte-identical, and the ECS
//! scope they promise must hold: every address inside it gets the same
//! answer.

use crate::common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::ecs_scope;
use common::mmdb::{build_asn, build_city, CityNet, Layout};
use geolb::config::Config;
use geolb::dns::answer::{handle, Transport};
use geolb::policy::Scratch;
use geolb::snapshot::Snapshot;
use hickory_proto::op::Message;
use proptest::prelude::*;

const CONFIG: &str = r#"
[geoip]
city = "city.mmdb"
[regions.eu]
location = [50.11, 8.68]
[regions.us]
location = [39.04, -77.49]
[regions.usw]
location = [37.4, -122.1]
[regions.ap]
location = [35.68, 139.69]
[regions.sa]
location = [-23.55, -46.63]
[pools.eu-p]
region = "eu"
endpoints = [{ address = "10.1.0.1", weight = 3 }, { address = "10.1.0.2" }, { address = "2001:db8:1::1" }]
[pools.us-p]
region = "us"
endpoints = [{ address = "10.2.0.1" }, { address = "10.2.0.2", weight = 5 }, { address = "2001:db8:2::1" }]
[pools.usw-p]
region = "usw"
endpoints = [{ address = "10.4.0.1" }]
[pools.ap-p]
region = "ap"
endpoints = [{ address = "10.3.0.1" }, { address = "2001:db8:3::1" }]
[pools.sa-p]
region = "sa"
endpoints = [{ address = "10.5.0.1" }, { address = "10.5.0.2" }]
[zones."example.com"]
file = "z.zone"
[zones."example.com".services.www]
pools = ["eu-p", "us-p", "usw-p", "ap-p", "sa-p"]
chain = ["healthy", "geo", "failover", "weighted", "first_n"]
weighted = { count = 2 }
first_n = 2
geo = { default = ["us", "eu"], continent = { EU = ["eu", "us"], AS = ["ap", "usw"], SA = ["sa", "us"] }, country = { GB = ["us", "eu"], CA = ["usw", "us"] }, subdivision = { "US-CA" = ["usw", "us"] } }
[zones."example.com".services.near]
pools = ["eu-p", "us-p", "usw-p", "ap-p", "sa-p"]
chain = ["healthy", "nearest", "failover", "weighted"]
weighted = { mode = "sticky", sticky_prefix_v4 = 20 }
[zones."example.com".services.two]
pools = ["eu-p", "us-p", "usw-p", "ap-p", "sa-p"]
chain = ["healthy", "nearest", "first_n"]
nearest = { limit = 2 }
first_n = 3
[zones."example.com".services.lat]
pools = ["eu-p", "us-p", "usw-p", "ap-p", "sa-p"]
chain = ["healthy", "latency", "failover", "first_n"]
first_n = 1
latency = { default = { us = 10, eu = 20 }, continent = { AS = { ap = 5, usw = 90 }, SA = { sa = 3 } }, country = { GB = { us = 1, eu = 30 } } }
[zones."example.com".services."*.apps"]
pools = ["eu-p", "us-p", "ap-p"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 1
geo = { default = ["us"], continent = { EU = ["eu"], AS = ["ap"] } }
[zones."example.com".services.resolver]
pools = ["eu-p", "us-p", "ap-p"]
chain = ["healthy", "nearest", "failover", "first_n"]
first_n = 1
ecs = false
[zones."example.com".services.net]
pools = ["eu-p", "us-p", "ap-p"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 1
geo = { default = ["us"], continent = { EU = ["eu"] }, cidr = { "100.64.0.0/10" = ["ap"], "2a01::/16" = ["eu"] } }
"#;

/// Continent, country, subdivision, city, latitude, longitude.
type City = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    f64,
    f64,
);

const CITIES: &[City] = &[
    ("EU", "DE", Some("HE"), "Frankfurt", 50.11, 8.68),
    ("EU", "GB", Some("ENG"), "London", 51.5, -0.12),
    ("EU", "FR", None, "Paris", 48.85, 2.35),
    ("NA", "US", Some("VA"), "Ashburn", 39.04, -77.49),
    ("NA", "US", Some("CA"), "San Jose", 37.33, -121.89),
    ("NA", "US", Some("TX"), "Dallas", 32.78, -96.8),
    ("NA", "CA", Some("BC"), "Vancouver", 49.28, -123.12),
    ("AS", "JP", Some("13"), "Tokyo", 35.68, 139.69),
    ("AS", "SG", None, "Singapore", 1.35, 103.8),
    ("AS", "IN", Some("MH"), "Mumbai", 19.07, 72.88),
    ("SA", "BR", None, "Sao Paulo", -23.55, -46.63),
    ("OC", "AU", Some("NSW"), "Sydney", -33.87, 151.21),
    ("AF", "ZA", None, "Johannesburg", -26.2, 28.05),
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Networks laid end to end from `start` (with gaps), each the largest
/// aligned block the cursor allows up to `max_len` bits, in runs of one city
/// so that neighbouring networks often share a decision.
fn networks(
    rng: &mut Rng,
    start: u128,
    bits: u32,
    lens: (u32, u32),
    count: usize,
    out: &mut Vec<CityNet>,
) {
    let mut cursor = start;
    let mut city = 0usize;
    let mut len = lens.1;
    for _ in 0..count {
        if rng.below(4) == 0 {
            city = rng.below(CITIES.len() as u64) as usize;
        }
        let align = if cursor == 0 {
            0
        } else {
            bits - cursor.trailing_zeros().min(bits)
        };
        // Often the same size as the last one: equal neighbours with the
        // same city merge into wider aligned blocks.
        if rng.below(2) == 0 {
            len = lens.0 + rng.below((lens.1 - lens.0 + 1) as u64) as u32;
        }
        let len = len.max(align);
        let size = 1u128 << (bits - len);
        if rng.below(8) != 0 {
            let net = if bits == 32 {
                format!("{}/{len}", Ipv4Addr::from(cursor as u32))
            } else {
                format!("{}/{len}", Ipv6Addr::from(cursor))
            };
            let (cont, country, sub, name, lat, lon) = CITIES[city];
            out.push(CityNet::new(&net, cont, country, sub, name, lat, lon));
        }
        cursor += size;
    }
}

fn fixture(config: &str) -> (tempfile::TempDir, Snapshot, Vec<IpAddr>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut nets = Vec::new();
    networks(&mut rng, 0x0100_0000, 32, (12, 28), 2500, &mut nets);
    networks(&mut rng, 0x2a00u128 << 112, 128, (20, 64), 1500, &mut nets);
    std::fs::write(p.join("city.mmdb"), build_city(&nets, Layout::GeoIp2)).expect("w");
    let mut zone = String::from(
        "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n@ MX 10 mail\nns1 A 192.0.2.53\n\
         mail A 192.0.2.25\nwww TXT \"web\"\nalias CNAME www\n",
    );
    for i in 0..20 {
        zone.push_str(&format!(
            "host{i} A 192.0.2.{i}\nhost{i} AAAA 2001:db8::{i}\n"
        ));
    }
    std::fs::write(p.join("z.zone"), zone).expect("w");
    let config = Config::parse(&p.join("geolb.toml"), config).expect("config");
    let (snap, _) = geolb::snapshot::build(config, 1, None).expect("snapshot");
    let addrs = nets
        .iter()
        .map(|n| {
            let (a, _) = n.cidr.split_once('/').expect("cidr");
            a.parse().expect("address")
        })
        .collect();
    (dir, snap, addrs)
}

fn name(n: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in n.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

#[derive(Clone, Copy)]
enum Edns {
    None,
    Plain,
    Do,
    Ecs(IpAddr, u8),
}

fn query(id: u16, qname: &str, qtype: u16, edns: Edns) -> Vec<u8> {
    let arcount = u8::from(!matches!(edns, Edns::None));
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, arcount]);
    q.extend_from_slice(&name(qname));
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    let ttl_flags: [u8; 4] = match edns {
        Edns::Do => [0, 0, 0x80, 0],
        _ => [0, 0, 0, 0],
    };
    match edns {
        Edns::None => {}
        Edns::Plain | Edns::Do => {
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0]);
            q.extend_from_slice(&ttl_flags);
            q.extend_from_slice(&[0, 0]);
        }
        Edns::Ecs(addr, prefix) => {
            let (family, octets): (u16, Vec<u8>) = match addr {
                IpAddr::V4(a) => (1, a.octets().to_vec()),
                IpAddr::V6(a) => (2, a.octets().to_vec()),
            };
            let n = (prefix as usize).div_ceil(8);
            let mut bytes = octets[..n].to_vec();
            // RFC 7871 §6: bits beyond the source prefix are zero.
            if prefix % 8 != 0 {
                if let Some(last) = bytes.last_mut() {
                    *last &= 0xffu8 << (8 - prefix % 8);
                }
            }
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0]);
            q.extend_from_slice(&ttl_flags);
            q.extend_from_slice(&((8 + n) as u16).to_be_bytes());
            q.extend_from_slice(&[0, 8]);
            q.extend_from_slice(&((4 + n) as u16).to_be_bytes());
            q.extend_from_slice(&family.to_be_bytes());
            q.extend_from_slice(&[prefix, 0]);
            q.extend_from_slice(&bytes);
        }
    }
    q
}

/// An address inside the network that starts at `base`, varied by `r`.
fn inside(base: IpAddr, r: u64) -> IpAddr {
    match base {
        IpAddr::V4(a) => IpAddr::from(Ipv4Addr::from(u32::from(a) | (r as u32 & 0x0f))),
        IpAddr::V6(a) => IpAddr::from(Ipv6Addr::from(u128::from(a) | (r as u128 & 0xffff))),
    }
}

/// The names whose answers depend on the ECS address.
const GEO_NAMES: [&str; 7] = [
    "www.example.com",
    "near.example.com",
    "two.example.com",
    "lat.example.com",
    "x.apps.example.com",
    "a.b.apps.example.com",
    "net.example.com",
];

fn corpus(addrs: &[IpAddr]) -> Vec<(Vec<u8>, IpAddr)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut names = GEO_NAMES.to_vec();
    names.extend([
        "resolver.example.com",
        "example.com",
        "host3.example.com",
        "alias.example.com",
        "mail.example.com",
        "nope.example.com",
        "www.nope.example.com",
        "other.test",
    ]);
    let qtypes = [1u16, 28, 255, 16, 15, 5, 2, 6, 99];
    let mut out = Vec::new();
    let mut id = 0u16;
    for &name in &names {
        for qtype in qtypes {
            for _ in 0..12 {
                let a = inside(addrs[rng.below(addrs.len() as u64) as usize], rng.next());
                let resolver = inside(addrs[rng.below(addrs.len() as u64) as usize], rng.next());
                let edns = match rng.below(9) {
                    0 => Edns::None,
                    1 => Edns::Plain,
                    2 => Edns::Do,
                    3 => Edns::Ecs(a, 0),
                    4 => Edns::Ecs(a, if a.is_ipv4() { 32 } else { 128 }),
                    5 => Edns::Ecs(a, if a.is_ipv4() { 16 } else { 32 }),
                    6 => Edns::Ecs(a, if a.is_ipv4() { 20 } else { 48 }),
                    7 => Edns::Ecs(IpAddr::from([100, 64, 3, 0]), 24),
                    _ => Edns::Ecs(a, if a.is_ipv4() { 24 } else { 56 }),
                };
                id = id.wrapping_add(1);
                out.push((query(id, name, qtype, edns), resolver));
            }
        }
    }
    // The geo names again with many more clients.
    for name in names.iter().take(GEO_NAMES.len() + 1) {
        for _ in 0..400 {
            let a = inside(addrs[rng.below(addrs.len() as u64) as usize], rng.next());
            let prefix = if a.is_ipv4() { 24 } else { 56 };
            let qtype = if rng.below(3) == 0 { 28 } else { 1 };
            id = id.wrapping_add(1);
            out.push((query(id, name, qtype, Edns::Ecs(a, prefix)), a));
        }
    }
    out
}

fn answer(snap: &Snapshot, q: &[u8], client: IpAddr, seed: u64, reference: bool) -> Vec<u8> {
    answer_over(snap, q, client, seed, reference, Transport::Udp)
}

fn answer_over(
    snap: &Snapshot,
    q: &[u8],
    client: IpAddr,
    seed: u64,
    reference: bool,
    transport: Transport,
) -> Vec<u8> {
    let mut sc = Scratch::seeded(seed);
    sc.reference = reference;
    let mut out = Vec::new();
    handle(snap, q, client, transport, &mut out, &mut sc);
    out
}

/// Replies from the two paths, compared byte for byte, and the UDP reply
/// against the TCP one (the same bytes unless UDP had to truncate); returns
/// how many replies carried a nonzero ECS scope (so a corpus that never
/// reaches the geo path fails loudly).
fn compare(snap: &Snapshot, corpus: &[(Vec<u8>, IpAddr)]) -> usize {
    assert!(snap.geo_index.is_some(), "the geo services compile");
    let mut scoped = 0;
    for (i, (q, client)) in corpus.iter().enumerate() {
        let fast = answer(snap, q, *client, i as u64, false);
        let slow = answer(snap, q, *client, i as u64, true);
        assert_eq!(
            fast,
            slow,
            "query {i} from {client}: {:?}\nfast: {:?}\nreference: {:?}",
            Message::from_vec(q).map(|m| m.queries),
            Message::from_vec(&fast).map(|m| m.answers),
            Message::from_vec(&slow).map(|m| m.answers),
        );
        let tcp = answer_over(snap, q, *client, i as u64, false, Transport::Tcp);
        let truncated = fast.get(2).is_some_and(|b| b & 0x02 != 0);
        if !truncated {
            assert_eq!(
                fast, tcp,
                "query {i} from {client}: UDP and TCP replies differ"
            );
        }
        if let Ok(m) = Message::from_vec(&fast) {
            if ecs_scope(&m).is_some_and(|s| s > 0) {
                scoped += 1;
            }
        }
    }
    scoped
}

#[test]
fn compiled_and_reference_paths_answer_byte_identically() {
    let (_dir, snap, addrs) = fixture(CONFIG);
    let corpus = corpus(&addrs);
    let scoped = compare(&snap, &corpus);
    assert!(
        scoped > 2000,
        "only {scoped} of {} replies depended on the client",
        corpus.len()
    );
}

/// Checks the scope of one geo reply per network against the reference path
/// at the ends of the promised block and inside it; returns how many
/// addresses were checked and how many replies were scoped wider than the
/// City network the client is in.
fn check_scopes(snap: &Snapshot, addrs: &[IpAddr], names: &[&str]) -> (usize, usize) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut checked = 0;
    let mut wider = 0;
    for (i, a) in addrs.iter().enumerate() {
        let name = names[i % names.len()];
        let full = if a.is_ipv4() { 32u8 } else { 128 };
        let client = inside(*a, rng.next());
        let q = query(1, name, 1, Edns::Ecs(client, full));
        let reply = answer(snap, &q, client, 7, false);
        let m = Message::from_vec(&reply).expect("reply parses");
        let Some(scope) = ecs_scope(&m) else {
            panic!("{name} from {client}: no ECS option in the reply")
        };
        if scope < snap.geo.locate(client).prefix {
            wider += 1;
        }
        let bits = u32::from(full);
        let base: u128 = match client {
            IpAddr::V4(v) => u32::from(v) as u128,
            IpAddr::V6(v) => u128::from(v),
        };
        let host = if scope == 0 {
            u128::MAX >> (128 - bits)
        } else {
            (1u128 << (bits - u32::from(scope))) - 1
        };
        let lo = base & !host;
        let hi = lo | host;
        let samples = [lo, hi, lo | (rng.next() as u128 & host), lo | (host >> 1)];
        for x in samples {
            let x = if a.is_ipv4() {
                IpAddr::from(Ipv4Addr::from(x as u32))
            } else {
                IpAddr::from(Ipv6Addr::from(x))
            };
            let qx = query(1, name, 1, Edns::Ecs(x, full));
            let other = answer(snap, &qx, x, 7, true);
            let mx = Message::from_vec(&other).expect("reply parses");
            assert_eq!(
                m.answers, mx.answers,
                "{name}: {client} got scope /{scope}, but {x} inside it gets another answer"
            );
            checked += 1;
        }
    }
    (checked, wider)
}

/// RFC 7871 §7.2.1: SCOPE PREFIX-LENGTH is how many leftmost bits of the
/// address the answer covers — any address inside that block must get the
/// same answer, which the reference path (a database lookup per address)
/// checks at the block's ends and inside it.
#[test]
fn rfc7871_7_2_1_scope_covers_only_addresses_with_the_same_answer() {
    let (_dir, snap, addrs) = fixture(CONFIG);
    let (checked, _) = check_scopes(&snap, &addrs, &GEO_NAMES);
    assert!(checked > 10_000, "{checked}");
    // With one service, neighbouring networks of different cities that get
    // the same decision (Frankfurt and Paris both go to eu first) merge into
    // blocks wider than any one City network; the scope says so.
    let single = &CONFIG[..CONFIG
        .find("[zones.\"example.com\".services.near]")
        .expect("near service")];
    let (_dir, snap, addrs) = fixture(single);
    let (checked, wider) = check_scopes(&snap, &addrs, &["www.example.com"]);
    assert!(checked > 10_000, "{checked}");
    assert!(
        wider > 100,
        "{wider} replies scoped wider than their network"
    );
}

/// Each compiled service has its own ranges: the ECS scope of a reply is
/// as wide as that service's own decision allows, whatever other services
/// (deciding differently, with other boundaries) are compiled beside it.
#[test]
fn rfc7871_7_2_1_scope_of_one_service_is_not_narrowed_by_another() {
    let single_cfg = &CONFIG[..CONFIG
        .find("[zones.\"example.com\".services.near]")
        .expect("near service")];
    let (_d1, all, addrs) = fixture(CONFIG);
    let (_d2, single, addrs_single) = fixture(single_cfg);
    assert_eq!(addrs, addrs_single, "both fixtures hold the same networks");
    let mut rng = Rng(0x0bad_cafe_f00d_d00d);
    let mut wider_than_combined = 0;
    for a in &addrs {
        let full = if a.is_ipv4() { 32u8 } else { 128 };
        let client = inside(*a, rng.next());
        let q = query(1, "www.example.com", 1, Edns::Ecs(client, full));
        let with_others = Message::from_vec(&answer(&all, &q, client, 7, false)).expect("reply");
        let alone = Message::from_vec(&answer(&single, &q, client, 7, false)).expect("reply");
        assert_eq!(with_others.answers, alone.answers, "{client}");
        let (s_all, s_alone) = (ecs_scope(&with_others), ecs_scope(&alone));
        assert_eq!(
            s_all, s_alone,
            "{client}: scope {s_all:?} beside other services, {s_alone:?} alone"
        );
        // One range for all services would be the intersection of theirs:
        // its scope, the narrowest of the services' scopes for this client.
        let narrowest = ["near", "two", "lat"]
            .iter()
            .map(|n| {
                let q = query(1, &format!("{n}.example.com"), 1, Edns::Ecs(client, full));
                ecs_scope(&Message::from_vec(&answer(&all, &q, client, 7, false)).expect("reply"))
            })
            .max()
            .flatten();
        if narrowest > s_alone {
            wider_than_combined += 1;
        }
    }
    assert!(
        wider_than_combined > 100,
        "only {wider_than_combined} clients where the services' boundaries differ"
    );
}

/// The same two checks over a full GeoLite2-City database with the
/// benchmark configuration (`benches/geo.toml`); `benches/run.sh` fetches the
/// database into `geoip/`.
#[test]
#[ignore = "needs geoip/GeoLite2-City.mmdb (benches/run.sh fetches it)"]
fn geolite2_compiled_and_reference_paths_answer_byte_identically() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/geo.toml");
    let config = Config::load(std::path::Path::new(path)).expect("benches/geo.toml");
    let (snap, _) = geolb::snapshot::build(config, 1, None).expect("snapshot");
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let mut corpus = Vec::new();
    let mut sample = Vec::new();
    for i in 0..200_000u32 {
        let (a, prefix) = if i % 5 == 4 {
            // Global unicast IPv6 (2000::/4).
            let a = (rng.next() as u128) << 64 | 0x2000u128 << 112;
            let a = IpAddr::from(Ipv6Addr::from(a & !(u128::MAX >> 4) | a >> 4 << 4 >> 4));
            (a, 56)
        } else {
            let a = IpAddr::from(Ipv4Addr::from((rng.next() as u32) & 0xffff_ff00));
            (a, [24u8, 32, 16, 20][i as usize % 4])
        };
        if i % 40 == 0 {
            sample.push(a);
        }
        corpus.push((
            query(i as u16, "geo.example.com", 1, Edns::Ecs(a, prefix)),
            a,
        ));
    }
    let scoped = compare(&snap, &corpus);
    assert!(scoped > 100_000, "{scoped}");
    let (checked, wider) = check_scopes(&snap, &sample, &["geo.example.com"]);
    assert!(checked >= 4 * sample.len(), "{checked}");
    assert!(wider > sample.len() / 4, "{wider} of {}", sample.len());
}

/// Services whose `geo` tables have AS number and CIDR entries: `keyed`,
/// and beside it `plain`, keyed by continent only.
const KEYED: &str = r#"
[geoip]
city = "city.mmdb"
asn = "asn.mmdb"
[regions.eu]
location = [50.11, 8.68]
[regions.us]
location = [39.04, -77.49]
[regions.ap]
location = [35.68, 139.69]
[pools.eu-p]
region = "eu"
endpoints = [{ address = "10.1.0.1" }, { address = "2001:db8:1::1" }]
[pools.us-p]
region = "us"
endpoints = [{ address = "10.2.0.1" }, { address = "2001:db8:2::1" }]
[pools.ap-p]
region = "ap"
endpoints = [{ address = "10.3.0.1" }, { address = "2001:db8:3::1" }]
[zones."example.com"]
file = "z.zone"
[zones."example.com".services.plain]
pools = ["eu-p", "us-p", "ap-p"]
chain = ["geo"]
geo = { default = ["us"], continent = { EU = ["eu", "us"], AS = ["ap"] } }
[zones."example.com".services.keyed]
pools = ["eu-p", "us-p", "ap-p"]
chain = ["geo"]
"#;

/// Group lists CIDR entries point at.
const LISTS: [&str; 4] = [
    r#"["ap"]"#,
    r#"["eu"]"#,
    r#"["us", "ap"]"#,
    r#"["ap", "eu", "us"]"#,
];

/// A snapshot over these City networks (cidr, index into `CITIES`), ASN
/// networks (cidr, AS number) and `keyed`'s CIDR entries (cidr, index into
/// `LISTS`). `keyed` sends AS64500 to eu and AS64501 to ap first; other
/// numbers have no entry.
fn keyed_fixture(
    city: &[(String, usize)],
    asn: &[(String, u32)],
    cidr: &[(String, usize)],
) -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    let nets: Vec<CityNet> = city
        .iter()
        .map(|(net, c)| {
            let (cont, country, sub, name, lat, lon) = CITIES[*c];
            CityNet::new(net, cont, country, sub, name, lat, lon)
        })
        .collect();
    std::fs::write(p.join("city.mmdb"), build_city(&nets, Layout::GeoIp2)).expect("w");
    let asns: Vec<(&str, u32, &str)> = asn.iter().map(|(n, a)| (n.as_str(), *a, "Org")).collect();
    std::fs::write(p.join("asn.mmdb"), build_asn(&asns)).expect("w");
    std::fs::write(
        p.join("z.zone"),
        "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.53\n",
    )
    .expect("w");
    let cidr: Vec<String> = cidr
        .iter()
        .map(|(net, l)| format!("\"{net}\" = {}", LISTS[*l]))
        .collect();
    let config = format!(
        "{KEYED}geo = {{ default = [\"us\"], continent = {{ EU = [\"eu\", \"us\"], AS = [\"ap\"] }}, \
         country = {{ BR = [\"us\", \"eu\"] }}, asn = {{ \"64500\" = [\"eu\"], \"64501\" = [\"ap\", \"eu\"] }}, \
         cidr = {{ {} }} }}\n",
        cidr.join(", ")
    );
    let config = Config::parse(&p.join("geolb.toml"), &config).expect("config");
    let (snap, _) = geolb::snapshot::build(config, 1, None).expect("snapshot");
    (dir, snap)
}

/// The addresses `name` answers `client` (source prefix `source`) with, and
/// the ECS scope; from the compiled path, or the per-query one.
fn steer(
    snap: &Snapshot,
    name: &str,
    client: IpAddr,
    source: u8,
    reference: bool,
) -> (Vec<String>, Option<u8>) {
    let qtype = if client.is_ipv4() { 1 } else { 28 };
    let q = query(7, name, qtype, Edns::Ecs(client, source));
    let m = Message::from_vec(&answer(snap, &q, client, 7, reference)).expect("reply parses");
    let addrs = m.answers.iter().map(|r| r.data.to_string()).collect();
    (addrs, ecs_scope(&m))
}

/// `keyed` answers a full-length source `client` with `want` and `scope`,
/// on the compiled path and on the per-query one alike.
fn assert_keyed(snap: &Snapshot, client: &str, want: &[&str], scope: u8) {
    let a = ip(client);
    let full = if a.is_ipv4() { 32 } else { 128 };
    let fast = steer(snap, "keyed.example.com", a, full, false);
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    assert_eq!(fast, (want, Some(scope)), "{client}");
    let slow = steer(snap, "keyed.example.com", a, full, true);
    assert_eq!(fast, slow, "{client}: compiled and per-query answers");
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn owned<T: Copy>(v: &[(&str, T)]) -> Vec<(String, T)> {
    v.iter().map(|(n, x)| (n.to_string(), *x)).collect()
}

const DE: usize = 0;
const GB: usize = 1;
const FR: usize = 2;
const JP: usize = 7;
const BR: usize = 10;

fn is_compiled(snap: &Snapshot, name: &str) -> bool {
    snap.zones.zones[0]
        .services
        .iter()
        .any(|s| s.name.starts_with(name) && s.compiled.is_some())
}

#[test]
fn ecs_scope_of_an_asn_keyed_service_is_the_widest_block_with_the_same_decision() {
    // Four City networks of three countries, all in AS64500 (→ eu), which
    // covers 44.0.0.0/16; the rest of the /16 is in AS64502 (no entry).
    let city = owned(&[
        ("44.0.0.0/24", DE),
        ("44.0.1.0/24", FR),
        ("44.0.2.0/23", GB),
        ("44.0.4.0/22", JP),
        ("44.1.0.0/16", JP),
    ]);
    let asn = owned(&[("44.0.0.0/21", 64500), ("44.0.8.0/21", 64500)]);
    let (_d, snap) = keyed_fixture(&city, &asn, &[]);
    assert!(is_compiled(&snap, "keyed."), "ASN keys are compiled");
    let (eu, scope) = steer(&snap, "keyed.example.com", ip("44.0.1.9"), 32, false);
    assert_eq!(eu, ["10.1.0.1"]);
    // Both ASN networks: 44.0.0.0/20 is one block with one decision, wider
    // than any of the City networks in it (and than the ASN networks).
    assert_eq!(scope, Some(20));
    assert_eq!(
        steer(&snap, "keyed.example.com", ip("44.0.1.9"), 32, true),
        (eu, scope),
        "the per-query path agrees"
    );
    // Outside the AS, JP: ap, over the rest of 44.0.0.0/15 from 44.0.16.0.
    let (ap, scope) = steer(&snap, "keyed.example.com", ip("44.1.7.1"), 32, false);
    assert_eq!(ap, ["10.3.0.1"]);
    assert_eq!(scope, Some(16));
    // A service without ASN entries is not cut at ASN boundaries: the JP
    // /22 and the DE and FR networks are apart, and the GB /23 joins DE+FR.
    let (_, scope) = steer(&snap, "plain.example.com", ip("44.0.1.9"), 32, false);
    assert_eq!(scope, Some(22), "44.0.0.0/22: DE, FR and GB are all EU");
}

#[test]
fn a_cidr_key_elsewhere_does_not_narrow_the_scope_of_other_networks() {
    let city = owned(&[("45.0.0.0/16", BR), ("46.0.0.0/16", BR)]);
    // A /17 entry inside 46.0.0.0/16, none in 45.0.0.0/16.
    let cidr = owned(&[("46.0.128.0/17", 0)]);
    let (_d, snap) = keyed_fixture(&city, &[], &cidr);
    assert!(is_compiled(&snap, "keyed."), "CIDR keys are compiled");
    // A /24 client of 45.0.0.0/16: the whole network goes to us, eu.
    let (addrs, scope) = steer(&snap, "keyed.example.com", ip("45.0.3.0"), 24, false);
    assert_eq!(addrs, ["10.2.0.1", "10.1.0.1"]);
    assert_eq!(scope, Some(16), "not /17 for a key elsewhere");
    // Inside 46.0.0.0/16 the key splits the network at its boundaries.
    let (addrs, scope) = steer(&snap, "keyed.example.com", ip("46.0.3.0"), 24, false);
    assert_eq!(addrs, ["10.2.0.1", "10.1.0.1"]);
    assert_eq!(scope, Some(17));
    let (addrs, scope) = steer(&snap, "keyed.example.com", ip("46.0.200.0"), 24, false);
    assert_eq!(addrs, ["10.3.0.1"], "the CIDR entry");
    assert_eq!(scope, Some(17));
    for client in ["45.0.3.0", "46.0.3.0", "46.0.200.0"] {
        assert_eq!(
            steer(&snap, "keyed.example.com", ip(client), 24, true),
            steer(&snap, "keyed.example.com", ip(client), 24, false),
            "{client}"
        );
    }
}

#[test]
fn an_address_in_the_asn_database_or_a_cidr_key_but_not_in_city_gets_its_keyed_decision() {
    let city = owned(&[("47.0.0.0/16", DE)]);
    let asn = owned(&[("47.1.0.0/16", 64501), ("47.2.0.0/16", 64502)]);
    let cidr = owned(&[("47.3.0.0/20", 1)]);
    let (_d, snap) = keyed_fixture(&city, &asn, &cidr);
    for (client, want, scope) in [
        // AS64501 → ap, eu; no City record.
        ("47.1.2.3", vec!["10.3.0.1", "10.1.0.1"], 16),
        // AS64502 has no entry: unknown → default, all of 47.2.0.0/16 (the
        // /15 holds the CIDR entry below).
        ("47.2.2.3", vec!["10.2.0.1"], 16),
        // A CIDR entry (→ eu) over addresses no database knows.
        ("47.3.2.3", vec!["10.1.0.1"], 20),
    ] {
        assert_keyed(&snap, client, &want, scope);
    }
}

#[test]
fn ipv6_asn_and_cidr_keys_are_compiled_with_the_widest_scope() {
    let city = owned(&[
        ("2a00:1000::/36", DE),
        ("2a00:1000:1000::/36", FR),
        ("2a00:2000::/32", BR),
    ]);
    let asn = owned(&[("2a00:1000::/32", 64500)]);
    let cidr = owned(&[("2a00:2000:8000::/33", 0), ("2a00:3000::/48", 2)]);
    let (_d, snap) = keyed_fixture(&city, &asn, &cidr);
    for (client, want, scope) in [
        // AS64500 over two City networks → eu, the whole /32.
        ("2a00:1000:1234::1", vec!["2001:db8:1::1"], 32),
        // BR, outside the /33 entry: us, eu.
        ("2a00:2000:1::1", vec!["2001:db8:2::1", "2001:db8:1::1"], 33),
        ("2a00:2000:8001::1", vec!["2001:db8:3::1"], 33),
        // A CIDR entry where no database knows the address.
        (
            "2a00:3000:0:1::1",
            vec!["2001:db8:2::1", "2001:db8:3::1"],
            48,
        ),
    ] {
        assert_keyed(&snap, client, &want, scope);
    }
}

/// Networks laid end to end from `base` inside its /`outer` block: each
/// (length above `outer`, gap, value) is a network of at least that
/// length (longer where the cursor is not aligned), or a gap.
fn lay(base: u128, bits: u32, outer: u32, items: &[(u32, bool, usize)]) -> Vec<(String, usize)> {
    let end = base + (1u128 << (bits - outer));
    let mut cursor = base;
    let mut out = Vec::new();
    for &(extra, gap, value) in items {
        if cursor >= end {
            break;
        }
        let len = (outer + extra).max(bits - cursor.trailing_zeros().min(bits));
        if !gap {
            out.push((cidr(cursor, bits, len), value));
        }
        cursor += 1u128 << (bits - len);
    }
    out
}

fn cidr(a: u128, bits: u32, len: u32) -> String {
    if bits == 32 {
        format!("{}/{len}", Ipv4Addr::from(a as u32))
    } else {
        format!("{}/{len}", Ipv6Addr::from(a))
    }
}

/// One address family of the property test: a /`outer` block of 256
/// /`inner` blocks, inside which every network and key lies.
struct Universe {
    base: u128,
    bits: u32,
    outer: u32,
    inner: u32,
}

impl Universe {
    fn block(&self, i: usize, offset: u64) -> IpAddr {
        let size = 1u128 << (self.bits - self.inner);
        let a = self.base + i as u128 * size + (offset as u128 % size);
        if self.bits == 32 {
            IpAddr::from(Ipv4Addr::from(a as u32))
        } else {
            IpAddr::from(Ipv6Addr::from(a))
        }
    }

    /// The widest prefix around inner block `i` whose every address gets
    /// its answer, from every block's answer and the answer outside.
    fn widest(&self, answers: &[Vec<String>], outside: &[String], i: usize) -> u8 {
        if answers.iter().all(|a| a == outside) {
            return 0;
        }
        for p in self.outer..=self.inner {
            let span = 1usize << (self.inner - p);
            let lo = i / span * span;
            if answers[lo..lo + span].iter().all(|a| *a == answers[i]) {
                return p as u8;
            }
        }
        self.inner as u8
    }
}

type Layout3 = Vec<(u32, bool, usize)>;

fn layout(values: usize) -> impl Strategy<Value = Layout3> {
    prop::collection::vec((0u32..=8, (0u8..4).prop_map(|g| g == 0), 0..values), 1..40)
}

fn keys() -> impl Strategy<Value = Vec<(usize, u32, usize)>> {
    prop::collection::vec((0usize..256, 0u32..=8, 0..LISTS.len()), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random City and ASN networks and CIDR entries in 44.0.0.0/16 and
    /// 2a00:1000::/32: for a client in every /24 (/40) the compiled answer
    /// is the per-query one, and the ECS scope is exactly the widest block
    /// around the client in which every address gets that answer.
    #[test]
    fn asn_and_cidr_services_are_compiled_and_answer_like_the_per_query_path(
        city4 in layout(CITIES.len()),
        city6 in layout(CITIES.len()),
        asn4 in layout(4),
        asn6 in layout(4),
        keys4 in keys(),
        keys6 in keys(),
        offset in any::<u64>(),
    ) {
        let v4 = Universe { base: 0x2c00_0000, bits: 32, outer: 16, inner: 24 };
        let v6 = Universe { base: 0x2a00_1000u128 << 96, bits: 128, outer: 32, inner: 40 };
        let numbers = [64500u32, 64501, 64502, 64503];
        let mut city = lay(v4.base, 32, 16, &city4);
        city.extend(lay(v6.base, 128, 32, &city6));
        let asn: Vec<(String, u32)> = lay(v4.base, 32, 16, &asn4)
            .into_iter()
            .chain(lay(v6.base, 128, 32, &asn6))
            .map(|(n, i)| (n, numbers[i]))
            .collect();
        let mut cidrs: Vec<(String, usize)> = Vec::new();
        for (u, keys) in [(&v4, &keys4), (&v6, &keys6)] {
            for &(block, extra, list) in keys {
                let len = u.outer + extra;
                let host = (1u128 << (u.bits - len)) - 1;
                let start = (u.base + ((block as u128) << (u.bits - u.inner))) & !host;
                let net = cidr(start, u.bits, len);
                if !cidrs.iter().any(|(n, _)| *n == net) {
                    cidrs.push((net, list));
                }
            }
        }
        let (_d, snap) = keyed_fixture(&city, &asn, &cidrs);
        prop_assert!(is_compiled(&snap, "keyed."));
        for (u, outside) in [(&v4, ip("45.0.0.1")), (&v6, ip("2a00:4000::1"))] {
            let full = u.bits as u8;
            let outside = steer(&snap, "keyed.example.com", outside, full, true).0;
            let mut answers = Vec::new();
            let mut fast = Vec::new();
            for i in 0..256 {
                let client = u.block(i, offset.rotate_left(i as u32));
                let f = steer(&snap, "keyed.example.com", client, full, false);
                let r = steer(&snap, "keyed.example.com", client, full, true);
                prop_assert_eq!(&f.0, &r.0, "{}", client);
                answers.push(r.0);
                fast.push((client, f.1));
            }
            for (i, (client, scope)) in fast.into_iter().enumerate() {
                prop_assert_eq!(
                    scope,
                    Some(u.widest(&answers, &outside, i)),
                    "{}", client
                );
            }
        }
    }
}

//! 1 000 reloads under query load: valid ones that change every answer,
//! and broken configs, zones, GeoIP databases and state files in between.
//! Every answer belongs to one version whole (never a mix, never a version
//! whose reload failed, never older than one already seen), no query is
//! lost that the same load loses without reloads, and each failure is
//! shown in `/v1/status` while the last good version keeps serving.
//! (Its own test binary: it loads the machine.)

use crate::common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::mmdb::{build_city, world, Layout};
use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{RData, RecordType};

/// Versions of failed reloads start here; none may ever be answered.
const BROKEN: u32 = 50_000;

fn octets(k: u32) -> (u32, u32) {
    (k >> 8, k & 0xff)
}

/// Version `k` of the config: the `app` service's pools hand out
/// 10.1.K and 10.2.K.
fn config(k: u32) -> String {
    let (h, l) = octets(k);
    format!(
        r#"[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
udp_workers = 2

[geoip]
city = "city.mmdb"
watch_interval = "1h"

[health]
state_file = "state.json"

[regions.eu]
location = [50.11, 8.68]
[regions.us]
location = [39.04, -77.49]

[pools.eu-app]
region = "eu"
endpoints = [{{ address = "10.1.{h}.{l}" }}]
[pools.us-app]
region = "us"
endpoints = [{{ address = "10.2.{h}.{l}" }}]
[pools.spare]
region = "us"
endpoints = [{{ address = "10.9.9.9" }}]

[zones."example.com"]
file = "example.com.zone"

[zones."example.com".services.app]
ttl = 30
pools = ["eu-app", "us-app"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 1
[zones."example.com".services.app.geo]
default = ["us", "eu"]
continent = {{ EU = ["eu", "us"], NA = ["us", "eu"] }}
"#
    )
}

/// Version `k` of the zone: `www` has two A records, both of version K.
fn zone(k: u32) -> String {
    let (h, l) = octets(k);
    format!(
        "$TTL 300\n@ SOA ns1 hostmaster {k} 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n\
         www A 192.168.{h}.{l}\nwww A 172.16.{h}.{l}\n"
    )
}

/// The version an address of the form a.b.H.L carries.
fn version_of(ip: &str) -> u32 {
    let o: Vec<u32> = ip.split('.').map(|x| x.parse().expect("octet")).collect();
    (o[2] << 8) | o[3]
}

/// The three queries of the load: the zone's `www`, and the service `app`
/// for a client in Frankfurt (eu) and one in the US.
fn queries() -> Vec<(Vec<u8>, &'static str)> {
    let app = |subnet: &str, prefix: u8| {
        let mut q = query("app.example.com.", RecordType::A);
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            subnet.parse::<IpAddr>().expect("ip"),
            prefix,
            0,
        )));
        q.edns = Some(e);
        q.to_vec().expect("encode")
    };
    vec![
        (
            query("www.example.com.", RecordType::A)
                .to_vec()
                .expect("encode"),
            "www",
        ),
        (app("192.0.2.0", 24), "eu"),
        (app("198.51.100.0", 25), "us"),
    ]
}

/// The version a reply answers with, after checking it is whole.
fn version(kind: &str, r: &Message) -> u32 {
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r:?}");
    let ips: Vec<String> = r
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    match kind {
        "www" => {
            assert_eq!(ips.len(), 2, "{ips:?}");
            let k = version_of(&ips[0]);
            let mut want = [
                format!("192.168.{}.{}", k >> 8, k & 0xff),
                format!("172.16.{}.{}", k >> 8, k & 0xff),
            ];
            want.sort();
            let mut got = ips.clone();
            got.sort();
            assert_eq!(got, want, "a mixed answer");
            k
        }
        region => {
            assert_eq!(ips.len(), 1, "{ips:?}");
            let first = if region == "eu" { "10.1." } else { "10.2." };
            assert!(ips[0].starts_with(first), "{region} client got {ips:?}");
            version_of(&ips[0])
        }
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Clients that keep a window of queries in flight each, check every
/// reply, and count the queries left unanswered for a second.
fn start_load(dns: SocketAddr) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..2u16 {
        let (stop, answered, lost) = (stop.clone(), answered.clone(), lost.clone());
        threads.push(std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            sock.set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            let qs = queries();
            let mut seen = [0u32; 3];
            let mut id = t << 14;
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                // A window of 6 in flight; replies come back in order (one
                // socket, one worker).
                let mut sent = Vec::new();
                for n in 0..6 {
                    let which = n % 3;
                    let mut q = qs[which].0.clone();
                    id = (id + 1) & 0x3fff | (t << 14);
                    q[..2].copy_from_slice(&id.to_be_bytes());
                    sock.send_to(&q, dns).expect("send");
                    sent.push((id, which));
                }
                let mut pending = sent.as_slice();
                while !pending.is_empty() {
                    let Ok(n) = sock.recv(&mut buf) else {
                        lost.fetch_add(pending.len() as u64, Ordering::Relaxed);
                        break;
                    };
                    let r = Message::from_vec(&buf[..n]).expect("parses");
                    let Some(at) = pending.iter().position(|(i, _)| *i == r.metadata.id) else {
                        continue; // a late reply to a query counted lost
                    };
                    lost.fetch_add(at as u64, Ordering::Relaxed);
                    let which = pending[at].1;
                    pending = &pending[at + 1..];
                    let k = version(qs[which].1, &r);
                    assert!(k < BROKEN, "answered from a failed reload: version {k}");
                    assert!(k >= seen[which], "version {k} after {}", seen[which]);
                    seen[which] = k;
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                // Paced a little: reloads build at a low CPU priority, and
                // a load that takes every cycle of the test machine would
                // only measure how long they wait for one.
                std::thread::sleep(Duration::from_micros(300));
            }
        }));
    }
    Load {
        stop,
        answered,
        lost,
        threads,
    }
}

impl Load {
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a client saw a wrong answer");
        }
        (
            self.answered.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
        )
    }
}

fn status(s: &TestServer) -> serde_json::Value {
    let (code, body) = http(s.admin.expect("admin"), "GET", "/v1/status");
    assert_eq!(code, 200);
    serde_json::from_str(&body).expect("json")
}

/// POST /v1/reload, waiting as long as a loaded machine needs.
fn reload(s: &TestServer) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(s.admin.expect("admin")).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    c.write_all(b"POST /v1/reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut resp = String::new();
    c.read_to_string(&mut resp).expect("read");
    let code = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

#[test]
fn a_thousand_reloads_under_load_give_whole_answers_of_one_good_version_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().to_path_buf();
    let good_geoip = build_city(&world(), Layout::GeoIp2);
    std::fs::write(p.join("city.mmdb"), &good_geoip).expect("w");
    std::fs::write(p.join("geolb.toml"), config(1)).expect("w");
    std::fs::write(p.join("example.com.zone"), zone(1)).expect("w");
    let s = TestServer::start_dir(dir);
    let admin = s.admin.expect("admin");
    // An operator's drain, to be kept through everything below.
    let (code, body) = http_json(admin, "/v1/drain", r#"{"target": "spare"}"#);
    assert_eq!(code, 200, "{body}");

    // The same load without reloads: what it loses by itself.
    let load = start_load(s.dns);
    std::thread::sleep(Duration::from_secs(2));
    let (base_answered, base_lost) = load.finish();
    assert!(base_answered > 100, "{base_answered}");

    let load = start_load(s.dns);
    let mut k = 1u32;
    let (mut good, mut bad) = (0, 0);
    for i in 0..1000u32 {
        let broken = BROKEN + i;
        match i % 10 {
            3 => {
                // A config that does not parse, with a new zone beside it.
                let cfg = config(broken) + "\n[pools.eu-app\n";
                std::fs::write(p.join("geolb.toml"), cfg).expect("w");
                std::fs::write(p.join("example.com.zone"), zone(broken)).expect("w");
            }
            6 => {
                // A zone with an error on its last line, with a new config.
                std::fs::write(p.join("geolb.toml"), config(broken)).expect("w");
                let z = zone(broken) + "www CNAME ns1\n";
                std::fs::write(p.join("example.com.zone"), z).expect("w");
            }
            8 => {
                // A GeoIP database that is not one, with a new config and zone.
                std::fs::write(p.join("geolb.toml"), config(broken)).expect("w");
                std::fs::write(p.join("example.com.zone"), zone(broken)).expect("w");
                std::fs::write(p.join("city.mmdb"), b"not a database").expect("w");
            }
            _ => {
                if i % 10 == 9 {
                    // The state file under us turns to garbage: the
                    // overrides in force are kept, and written back whole.
                    std::fs::write(p.join("state.json"), b"{ garbage").expect("w");
                }
                k += 1;
                std::fs::write(p.join("city.mmdb"), &good_geoip).expect("w");
                std::fs::write(p.join("geolb.toml"), config(k)).expect("w");
                std::fs::write(p.join("example.com.zone"), zone(k)).expect("w");
            }
        }
        let valid = !matches!(i % 10, 3 | 6 | 8);
        let (code, body) = reload(&s);
        if valid {
            assert_eq!(code, 200, "reload {i}: {body}");
            good += 1;
        } else {
            assert_eq!(code, 422, "reload {i} must fail: {body}");
            bad += 1;
            let st = status(&s);
            assert_eq!(st["last_reload"]["ok"], false, "reload {i}: {st}");
            let why = st["last_reload"].to_string();
            let expected = match i % 10 {
                3 => "geolb.toml",
                6 => "example.com.zone",
                _ => "city.mmdb",
            };
            assert!(why.contains(expected), "reload {i}: {why}");
        }
    }
    // The last good version is what serves now.
    let settle = wait_for(Duration::from_secs(5), || {
        a_of(s.dns, "www.example.com.")
            .iter()
            .all(|ip| version_of(ip) == k)
    });
    assert!(settle.is_some());
    let (answered, lost) = load.finish();
    eprintln!(
        "{good} good and {bad} failed reloads; {answered} answers checked, {lost} lost \
         (without reloads: {base_answered} answered, {base_lost} lost)"
    );
    assert!(answered > 1000, "{answered}");
    assert!(
        lost <= base_lost,
        "{lost} lost with reloads, {base_lost} without"
    );
    // The drain survived every reload and the garbage state file, and is
    // on disk again.
    let st = status(&s);
    let overrides = st["health"]["overrides"].to_string();
    assert!(overrides.contains("spare"), "{st}");
    let state = std::fs::read_to_string(p.join("state.json")).expect("state file");
    let state: serde_json::Value = serde_json::from_str(&state).expect("whole again");
    assert!(state.to_string().contains("spare"), "{state}");
}

/// A state file that cannot be read at start is moved aside, the server
/// starts without overrides, and `/v1/status` says so.
#[test]
fn an_unreadable_state_file_at_start_is_moved_aside_and_shown_in_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().to_path_buf();
    std::fs::write(p.join("city.mmdb"), build_city(&world(), Layout::GeoIp2)).expect("w");
    std::fs::write(p.join("geolb.toml"), config(1)).expect("w");
    std::fs::write(p.join("example.com.zone"), zone(1)).expect("w");
    std::fs::write(p.join("state.json"), b"\x00\x01 not json").expect("w");
    let s = TestServer::start_dir(dir);
    let st = status(&s);
    let err = st["health"]["state_file_load_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no state_file_load_error: {st}"));
    assert!(
        err.contains("unreadable") && err.contains("moved to"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(&p)
            .expect("dir")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("corrupt")),
        "the unreadable file is kept aside"
    );
    assert_eq!(a_of(s.dns, "www.example.com.").len(), 2);
    // The next write of the overrides clears it.
    let (code, body) = http_json(
        s.admin.expect("admin"),
        "/v1/drain",
        r#"{"target": "spare"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let st = status(&s);
    assert!(st["health"]["state_file_error"].is_null(), "{st}");
    let state = std::fs::read_to_string(p.join("state.json")).expect("state file");
    assert!(state.contains("spare"), "{state}");
}

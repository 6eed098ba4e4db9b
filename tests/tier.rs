//! The regional tier end to end: a real server with TCP listeners on
//! loopback VIPs (region eu on 127.0.1.0/24), real TCP backends, real
//! clients. Balancing, half-close, drain with its deadline, connect retry
//! and passive ejection, backups, PROXY v1/v2 in and out, the connection
//! limit, idle timeout, reloads with live connections and a listener that
//! cannot be bound.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use geolb::policy::AdminState;

const ZONE: &str = TIER_ZONE;

/// A TCP backend: greets each connection with its name, then echoes what
/// it gets until the client half-closes, then half-closes too. Keeps the
/// raw bytes each connection sent.
struct Be {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl Be {
    fn start(ip: &str, name: &'static str) -> Be {
        let l = TcpListener::bind((ip, 0)).expect("bind backend");
        let addr = l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if st2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut c) = c else { continue };
                let seen = s2.clone();
                std::thread::spawn(move || {
                    let _ = c.write_all(format!("{name}\n").as_bytes());
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                got.extend_from_slice(&buf[..n]);
                                let _ = c.write_all(&buf[..n]);
                            }
                        }
                    }
                    // Recorded before the half-close the client waits for.
                    seen.lock().expect("lock").push(got);
                    let _ = c.shutdown(Shutdown::Write);
                });
            }
        });
        Be { addr, seen, stop }
    }

    fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Be {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// A port on `ip` nobody listens on (connections are refused).
fn closed_port(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    l.local_addr().expect("addr")
}

fn start(tier: &str) -> TestServer {
    start_tier(tier, &[])
}

fn config(tier: &str) -> String {
    tier_config(tier)
}

fn group(name: &str, extra: &str, members: &[String]) -> String {
    format!(
        "[groups.{name}]\nregion = \"eu\"\n{extra}\nmembers = [{}]\n",
        members.join(", ")
    )
}

fn member(b: &Be, extra: &str) -> String {
    format!("{{ address = \"{}\"{extra} }}", b.addr)
}

fn listener(name: &str, group: &str, extra: &str) -> String {
    format!(
        "[listeners.{name}]\nregion = \"eu\"\nbind = \"127.0.1.1:0\"\ngroup = \"{group}\"\n{extra}\n"
    )
}

fn vip(s: &TestServer, name: &str) -> SocketAddr {
    *s.server()
        .tier
        .local_addrs()
        .get(name)
        .unwrap_or_else(|| panic!("no listener {name}"))
}

fn dial(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = BufReader::new(c.try_clone().expect("clone"));
    (c, r)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    let _ = r.read_line(&mut s);
    s.trim_end().to_string()
}

/// Which backend greets a new connection.
fn who(addr: SocketAddr) -> String {
    let (_c, mut r) = dial(addr);
    line(&mut r)
}

fn tier_status(s: &TestServer) -> serde_json::Value {
    let (code, body) = http(s.admin.expect("admin"), "GET", "/v1/tier");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn backend_status(t: &serde_json::Value, addr: SocketAddr) -> &serde_json::Value {
    t["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["backends"].as_array().into_iter().flatten())
        .find(|b| b["address"] == addr.to_string())
        .unwrap_or_else(|| panic!("no backend {addr} in {t}"))
}

fn listener_status<'a>(t: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    t["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no listener {name} in {t}"))
}

#[test]
fn bytes_flow_both_ways_and_a_half_close_is_passed_on_in_each_direction() {
    let a = Be::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[member(&a, "")]),
        listener("l", "g", "")
    ));
    let (mut c, mut r) = dial(vip(&s, "l"));
    assert_eq!(line(&mut r), "a");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut c = c.try_clone().expect("clone");
        let big = big.clone();
        std::thread::spawn(move || {
            c.write_all(&big).expect("write");
            // Client → backend end of stream: the backend sees EOF...
            c.shutdown(Shutdown::Write).expect("half-close");
        })
    };
    let mut back = Vec::new();
    // ...and its own half-close comes back as our EOF, after every byte.
    r.read_to_end(&mut back).expect("read to EOF");
    writer.join().expect("writer");
    assert_eq!(back.len(), big.len());
    assert!(back == big, "echoed bytes differ");
    let _ = c.flush();
    let t = tier_status(&s);
    assert_eq!(backend_status(&t, a.addr)["bytes_up"], 300_000);
    assert_eq!(backend_status(&t, a.addr)["bytes_down"], 300_002);
}

#[test]
fn round_robin_spreads_new_connections_over_every_member() {
    let (a, b) = (Be::start("127.0.1.11", "a"), Be::start("127.0.1.12", "b"));
    let s = start(&format!(
        "{}{}",
        group(
            "g",
            "algorithm = \"round_robin\"",
            &[member(&a, ""), member(&b, "")]
        ),
        listener("l", "g", "")
    ));
    let got: Vec<String> = (0..6).map(|_| who(vip(&s, "l"))).collect();
    assert_eq!(got.iter().filter(|w| *w == "a").count(), 3, "{got:?}");
    assert_eq!(got.iter().filter(|w| *w == "b").count(), 3, "{got:?}");
    // Per-backend metrics.
    let (code, m) = http(s.admin.expect("admin"), "GET", "/metrics");
    assert_eq!(code, 200);
    let line = format!(
        "geolb_tier_backend_connections_total{{group=\"g\",region=\"eu\",backend=\"{}\"}} 3",
        a.addr
    );
    assert!(m.contains(&line), "{line} not in\n{m}");
    assert!(
        m.contains("geolb_tier_listener_connections_total{listener=\"l\",region=\"eu\"} 6"),
        "{m}"
    );
    assert!(
        m.contains("geolb_tier_backend_connect_seconds_bucket{group=\"g\""),
        "{m}"
    );
}

#[test]
fn a_drained_backend_gets_no_new_connections_and_its_open_ones_close_at_the_drain_deadline() {
    let (a, b) = (Be::start("127.0.1.11", "a"), Be::start("127.0.1.12", "b"));
    let s = start(&format!(
        "{}{}",
        group(
            "g",
            "algorithm = \"round_robin\"\ndrain_timeout = \"1500ms\"",
            &[member(&a, ""), member(&b, "")]
        ),
        listener("l", "g", "")
    ));
    let l = vip(&s, "l");
    // Hold one connection on b.
    let held = loop {
        let (c, mut r) = dial(l);
        if line(&mut r) == "b" {
            break (c, r);
        }
    };
    let (mut held_c, mut held_r) = held;
    s.shared()
        .set_admin_state(&format!("eu/{}", b.addr), AdminState::Drain)
        .expect("drain");
    for _ in 0..6 {
        assert_eq!(who(l), "a");
    }
    // The held connection still works meanwhile, and the API counts it.
    held_c.write_all(b"ping\n").expect("write");
    assert_eq!(line(&mut held_r), "ping");
    let t = tier_status(&s);
    let bs = backend_status(&t, b.addr);
    assert_eq!(bs["drain"]["remaining"], 1, "{bs}");
    assert_eq!(bs["admin"], "drain");
    // At the deadline it is closed.
    let closed = wait_for(Duration::from_secs(5), || {
        let mut buf = [0u8; 16];
        matches!(held_r.get_mut().read(&mut buf), Ok(0) | Err(_))
    });
    assert!(
        closed.is_some(),
        "held connection still open after the deadline"
    );
    let t = tier_status(&s);
    assert_eq!(backend_status(&t, b.addr)["drain_closed"], 1);
    assert_eq!(listener_status(&t, "l")["drain_closed"], 1);
    // Undrain: b is chosen again.
    s.shared()
        .set_admin_state(&format!("eu/{}", b.addr), AdminState::None)
        .expect("undrain");
    let got: Vec<String> = (0..4).map(|_| who(l)).collect();
    assert!(got.iter().any(|w| w == "b"), "{got:?}");
}

#[test]
fn a_connect_failure_tries_another_backend_and_repeated_failures_eject_it_with_a_reason() {
    let a = Be::start("127.0.1.11", "a");
    let dead = closed_port("127.0.1.12");
    let s = start(&format!(
        "{}{}",
        group(
            "g",
            "algorithm = \"round_robin\"\nejection = { failures = 2, base_time = \"1m\", max_percent = 50 }",
            &[member(&a, ""), format!("{{ address = \"{dead}\" }}")]
        ),
        listener("l", "g", "")
    ));
    let l = vip(&s, "l");
    // Every connection is served, by retrying on a.
    for _ in 0..6 {
        assert_eq!(who(l), "a");
    }
    let t = tier_status(&s);
    let d = backend_status(&t, dead);
    assert!(d["connect_errors"].as_u64() >= Some(2), "{d}");
    assert_eq!(d["ejections"], 1, "{d}");
    assert!(d["ejection"]["reason"].is_object(), "{d}");
    assert_eq!(
        d["ejection"]["reason"]["kind"], "consecutive_failures",
        "{d}"
    );
    assert!(d["ejection_ends_in_s"].as_f64() > Some(50.0), "{d}");
    assert_eq!(d["eligible"], false, "{d}");
    assert!(listener_status(&t, "l")["retries"].as_u64() >= Some(2));
    assert_eq!(listener_status(&t, "l")["no_backend"], 0);
}

#[test]
fn backups_serve_only_while_too_few_primaries_are_up() {
    let (a, b) = (
        Be::start("127.0.1.11", "a"),
        Be::start("127.0.1.12", "backup"),
    );
    let s = start(&format!(
        "{}{}",
        group("g", "", &[member(&a, ""), member(&b, ", backup = true")]),
        listener("l", "g", "")
    ));
    let l = vip(&s, "l");
    for _ in 0..4 {
        assert_eq!(who(l), "a");
    }
    s.shared()
        .set_admin_state(&format!("g/{}", a.addr), AdminState::ForceDown)
        .expect("force down");
    for _ in 0..4 {
        assert_eq!(who(l), "backup");
    }
    s.shared()
        .set_admin_state(&format!("g/{}", a.addr), AdminState::None)
        .expect("clear");
    assert_eq!(who(l), "a");
}

/// PROXY protocol v2 (haproxy's proxy-protocol.txt §2.2): signature,
/// version/command 0x21, family/transport 0x11 (TCP over IPv4), length 12,
/// then source address, destination address, source port, destination port.
#[test]
fn proxy_protocol_v2_header_sent_to_backends_carries_client_and_vip_byte_for_byte() {
    let a = Be::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "send_proxy = \"v2\"", &[member(&a, "")]),
        listener("l", "g", "")
    ));
    let l = vip(&s, "l");
    let (mut c, mut r) = dial(l);
    assert_eq!(line(&mut r), "a");
    let me = c.local_addr().expect("local");
    c.write_all(b"x").expect("write");
    c.shutdown(Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    let seen = a.seen();
    let got = &seen[0];
    let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    want.extend_from_slice(&[0x21, 0x11, 0, 12]);
    want.extend_from_slice(&[127, 0, 0, 1]);
    want.extend_from_slice(&[127, 0, 1, 1]);
    want.extend_from_slice(&me.port().to_be_bytes());
    want.extend_from_slice(&l.port().to_be_bytes());
    want.push(b'x');
    assert_eq!(got, &want);
}

fn dial_from(src_ip: &str, to: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let src: SocketAddr = format!("{src_ip}:0").parse().expect("addr");
    sock.bind(&src.into()).expect("bind client");
    sock.connect(&to.into()).expect("connect");
    let c: TcpStream = sock.into();
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = BufReader::new(c.try_clone().expect("clone"));
    (c, r)
}

#[test]
fn a_proxy_header_is_taken_from_trusted_peers_only_and_refused_from_anyone_else() {
    let a = Be::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "send_proxy = \"v1\"", &[member(&a, "")]),
        listener("l", "g", "accept_proxy_from = [\"127.0.0.2/32\"]")
    ));
    let l = vip(&s, "l");
    // Trusted: its header names the real client, which the backend hears.
    let (mut c, mut r) = dial_from("127.0.0.2", l);
    c.write_all(b"PROXY TCP4 192.0.2.7 127.0.1.1 40000 9000\r\nhello")
        .expect("write");
    c.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(line(&mut r), "a");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    let seen = a.seen();
    let got = String::from_utf8_lossy(&seen[0]).into_owned();
    assert!(
        got.starts_with("PROXY TCP4 192.0.2.7 127.0.1.1 40000 9000\r\nhello"),
        "{got:?}"
    );
    // Untrusted peer sending a header: closed before anything reaches the
    // backend beyond the connection itself, and counted.
    let (mut c, mut r) = dial(l);
    c.write_all(b"PROXY TCP4 10.9.9.9 127.0.1.1 1 2\r\nspoofed")
        .expect("write");
    let mut all = Vec::new();
    let _ = r.read_to_end(&mut all);
    assert!(!String::from_utf8_lossy(&all).contains("spoofed"));
    // A trusted peer without a header: refused as well.
    let (mut c2, mut r2) = dial_from("127.0.0.2", l);
    c2.write_all(b"no header here\r\n").expect("write");
    let mut none = Vec::new();
    let _ = r2.read_to_end(&mut none);
    assert!(none.is_empty(), "{none:?}");
    let t = tier_status(&s);
    assert_eq!(listener_status(&t, "l")["proxy_untrusted"], 1, "{t}");
    assert_eq!(listener_status(&t, "l")["proxy_invalid"], 1, "{t}");
    assert!(a
        .seen()
        .iter()
        .all(|b| !String::from_utf8_lossy(b).contains("spoofed")));
}

#[test]
fn connections_beyond_the_listener_limit_are_closed_at_once_and_counted() {
    let a = Be::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[member(&a, "")]),
        listener("l", "g", "max_connections = 1")
    ));
    let l = vip(&s, "l");
    let (_c1, mut r1) = dial(l);
    assert_eq!(line(&mut r1), "a");
    let (_c2, mut r2) = dial(l);
    let mut buf = Vec::new();
    let n = r2.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the second connection got {buf:?}");
    let t = tier_status(&s);
    assert_eq!(listener_status(&t, "l")["refused_max"], 1);
    assert_eq!(listener_status(&t, "l")["active"], 1);
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let a = Be::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[member(&a, "")]),
        listener("l", "g", "idle_timeout = \"300ms\"")
    ));
    let (_c, mut r) = dial(vip(&s, "l"));
    assert_eq!(line(&mut r), "a");
    let mut buf = Vec::new();
    assert_eq!(r.read_to_end(&mut buf).unwrap_or(1), 0);
    let t = tier_status(&s);
    assert_eq!(listener_status(&t, "l")["idle_closed"], 1);
}

#[test]
fn a_reload_changes_members_and_listeners_without_closing_established_connections() {
    let (a, b) = (Be::start("127.0.1.11", "a"), Be::start("127.0.1.12", "b"));
    let s = start(&format!(
        "{}{}",
        group("g", "", &[member(&a, "")]),
        listener("l", "g", "")
    ));
    let l = vip(&s, "l");
    let (mut held, mut held_r) = dial(l);
    assert_eq!(line(&mut held_r), "a");
    // b replaces a, with slow start; a second listener appears.
    std::fs::write(
        s.path("geolb.toml"),
        config(&format!(
            "{}{}{}",
            group("g", "slow_start = \"1m\"", &[member(&b, "")]),
            listener("l", "g", ""),
            "[listeners.l2]\nregion = \"eu\"\nbind = \"127.0.1.2:0\"\ngroup = \"g\"\n"
        )),
    )
    .expect("w");
    let r = s.shared().reload();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(vip(&s, "l"), l, "a kept listener keeps its socket");
    assert_eq!(who(l), "b");
    assert_eq!(who(vip(&s, "l2")), "b");
    // The connection made before the reload still flows.
    held.write_all(b"still here\n").expect("write");
    assert_eq!(line(&mut held_r), "still here");
    // A backend added by a reload ramps up (slow start), visible in the API.
    let t = tier_status(&s);
    let w = backend_status(&t, b.addr)["effective_weight"]
        .as_f64()
        .expect("weight");
    assert!(w < 0.5, "{t}");
    // Removing the second listener closes it.
    std::fs::write(
        s.path("geolb.toml"),
        config(&format!(
            "{}{}",
            group("g", "", &[member(&b, "")]),
            listener("l", "g", "")
        )),
    )
    .expect("w");
    assert!(s.shared().reload().is_ok());
    assert!(!s.server().tier.local_addrs().contains_key("l2"));
}

#[test]
fn a_listener_that_cannot_be_bound_fails_the_reload_and_the_old_tier_serves_on() {
    let a = Be::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[member(&a, "")]),
        listener("l", "g", "")
    ));
    let l = vip(&s, "l");
    let taken = TcpListener::bind("127.0.1.3:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    std::fs::write(
        s.path("geolb.toml"),
        config(&format!(
            "{}{}[listeners.l2]\nregion = \"eu\"\nbind = \"{taken_addr}\"\ngroup = \"g\"\n",
            group("g", "", &[member(&a, "")]),
            listener("l", "g", "")
        )),
    )
    .expect("w");
    let r = s.shared().reload();
    let report = r.expect_err("reload fails");
    let msg = report
        .errors
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        msg.contains(&format!("cannot listen on {taken_addr}")),
        "{msg}"
    );
    assert_eq!(who(l), "a");
    assert!(!s.server().tier.local_addrs().contains_key("l2"));
}

#[test]
fn a_pool_whose_tier_has_too_few_healthy_backends_fails_over_in_dns() {
    let (a, b) = (Be::start("127.0.1.11", "a"), Be::start("127.0.1.12", "b"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), ZONE).expect("w");
    let cfg = format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n\
         [regions.eu]\nlocation = [50.1, 8.7]\n[regions.us]\nlocation = [39.0, -77.5]\n\
         [pools.eu-web]\nregion = \"eu\"\nmin_healthy_tier = 2\nendpoints = [{{ address = \"127.0.1.1\" }}]\n\
         [pools.us-web]\nregion = \"us\"\nendpoints = [{{ address = \"127.0.2.1\" }}]\n\
         [zones.\"example.com\"]\nfile = \"example.com.zone\"\n\
         [zones.\"example.com\".services.www]\nttl = 30\npools = [\"eu-web\", \"us-web\"]\nchain = [\"healthy\", \"failover\"]\n\
         {}[listeners.l]\nregion = \"eu\"\nbind = \"127.0.1.1:0\"\ngroup = \"g\"\n",
        group("g", "", &[member(&a, ""), member(&b, "")])
    );
    std::fs::write(dir.path().join("geolb.toml"), cfg).expect("w");
    let s = TestServer::start_dir(dir);
    let answer = |s: &TestServer| a_of(s.dns, "www.example.com.");
    assert_eq!(answer(&s), ["127.0.1.1"]);
    // One of two backends down: the VIP still accepts connections, but the
    // region's tier is below its pool's min_healthy_tier, so DNS fails over.
    s.shared()
        .set_admin_state(&format!("g/{}", b.addr), AdminState::ForceDown)
        .expect("force down");
    let moved = wait_for(Duration::from_secs(5), || answer(&s) == ["127.0.2.1"]);
    assert!(moved.is_some(), "{:?}", answer(&s));
    assert_eq!(who(vip(&s, "l")), "a");
    let (code, body) = http(s.admin.expect("admin"), "GET", "/v1/health");
    assert_eq!(code, 200);
    assert!(body.contains("too few healthy backends"), "{body}");
    s.shared()
        .set_admin_state(&format!("g/{}", b.addr), AdminState::None)
        .expect("clear");
    assert!(wait_for(Duration::from_secs(5), || answer(&s) == ["127.0.1.1"]).is_some());
}

/// `geolb drain eu --two-phase`: eu leaves DNS answers first while its tier
/// still takes new connections; once the answers resolvers cached from it
/// have expired (resolver telemetry), its tier backends are drained too.
#[test]
fn a_two_phase_drain_withdraws_dns_first_and_drains_the_tier_once_cached_answers_expired() {
    let a = Be::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}[regions.us]\nlocation = [39.0, -77.5]\n\
         [pools.us-web]\nregion = \"us\"\nendpoints = [{{ address = \"127.0.2.1\" }}]\n\
         [zones.\"example.com\".services.www]\nttl = 2\npools = [\"eu-web\", \"us-web\"]\n\
         chain = [\"healthy\", \"failover\"]\n",
        group("g", "", &[member(&a, "")]),
        listener("l", "g", "")
    ));
    let l = vip(&s, "l");
    let admin = s.admin.expect("admin").to_string();
    // A resolver caches eu's answer for 2 s.
    assert_eq!(ask_from("127.0.0.2", s.dns), ["127.0.1.1"]);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args([
            "drain",
            "eu",
            "--two-phase",
            "--max-wait",
            "20s",
            "--admin",
            &admin,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("geolb drain");
    // Phase 1: DNS answers leave eu; the tier still serves new connections.
    let moved = wait_for(Duration::from_secs(10), || {
        ask_from("127.0.0.3", s.dns) == ["127.0.2.1"]
    });
    assert!(moved.is_some(), "eu left DNS answers");
    assert_eq!(
        who(l),
        "a",
        "the tier still takes new connections in phase 1"
    );
    let t = tier_status(&s);
    assert_ne!(backend_status(&t, a.addr)["admin"], "drain", "{t}");
    // Phase 2 once the cached answer expired: the tier's backend drains.
    let out = child.wait_with_output().expect("drain ends");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (p1, p2) = (text.find("phase 1 (dns)"), text.find("phase 2 (tier)"));
    assert!(p1.is_some() && p2 > p1, "phases in order: {text}");
    let t = tier_status(&s);
    assert_eq!(backend_status(&t, a.addr)["admin"], "drain", "{t}");
    let (_, st) = http(s.admin.expect("admin"), "GET", "/v1/status");
    let st: serde_json::Value = serde_json::from_str(&st).expect("json");
    let o = &st["health"]["overrides"];
    assert_eq!(o.as_array().map(Vec::len), Some(1), "{o}");
    assert!(o[0]["only"].is_null(), "phase 2 covers every source: {o}");
    // An unknown source is refused.
    let (code, body) = http_json(
        s.admin.expect("admin"),
        "/v1/drain",
        r#"{"target": "eu", "only": "dnss"}"#,
    );
    assert_eq!(code, 400, "{body}");
}

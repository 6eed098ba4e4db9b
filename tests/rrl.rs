//! Response rate limiting against the real server over UDP. The band tests
//! are Knot's own (`tests-extra/tests/modules/rrl`): limit 5/s (burst 5),
//! two seconds of sequential SOA queries from one address, each waiting
//! 150 ms for its reply; an unanswered query counts as dropped.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

const APEX: &[u8] = b"\x07example\x03com\x00";

fn start(rrl: &str) -> TestServer {
    let cfg = format!("{}\n[rrl]\nenabled = true\n{rrl}\n", config(""));
    TestServer::start_with(
        &cfg,
        &[
            ("example.com.zone", &zone_com()),
            ("example.net.zone", ZONE_NET),
        ],
    )
}

/// A SOA query for example.com with `id`, with an OPT record carrying
/// `cookie` when given.
fn soa_query(id: u16, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(cookie.is_some())]);
    b.extend_from_slice(APEX);
    b.extend_from_slice(&[0, 6, 0, 1]);
    if let Some(c) = cookie {
        b.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0]);
        b.extend_from_slice(&((4 + c.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[0, 10]);
        b.extend_from_slice(&(c.len() as u16).to_be_bytes());
        b.extend_from_slice(c);
    }
    b
}

#[derive(Debug, Default)]
struct Tally {
    replied: u32,
    slipped: u32,
    dropped: u32,
}

/// Knot's `send_queries`: sequential queries for `run`, 150 ms each to
/// answer. A slipped (TC) reply must keep AA; every reply is NOERROR.
fn send_queries(addr: SocketAddr, run: Duration) -> Tally {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(150)))
        .expect("timeout");
    let mut t = Tally::default();
    let start = Instant::now();
    let mut id = 1u16;
    let mut buf = [0u8; 4096];
    while start.elapsed() < run {
        id = id.wrapping_add(1);
        s.send_to(&soa_query(id, None), addr).expect("send");
        let deadline = Instant::now() + Duration::from_millis(150);
        let reply = loop {
            match s.recv(&mut buf) {
                // A late reply to an earlier query: not this one's.
                Ok(n) if n >= 12 && buf[..2] != id.to_be_bytes() => {
                    if Instant::now() >= deadline {
                        break None;
                    }
                }
                Ok(n) => break Some(buf[..n].to_vec()),
                Err(_) => break None,
            }
        };
        match reply {
            None => t.dropped += 1,
            Some(r) => {
                assert_eq!(r[3] & 0x0f, 0, "NOERROR");
                if r[2] & 0x02 != 0 {
                    assert!(r[2] & 0x04 != 0, "a slipped reply keeps AA");
                    assert_eq!(&r[6..8], &[0, 0], "a slipped reply has no answer");
                    t.slipped += 1;
                } else {
                    t.replied += 1;
                }
            }
        }
    }
    t
}

fn status(srv: &TestServer) -> serde_json::Value {
    let (code, body) = http(srv.admin.expect("admin"), "GET", "/v1/status");
    assert_eq!(code, 200);
    serde_json::from_str(&body).expect("json")
}

fn class_sum(v: &serde_json::Value) -> u64 {
    v.as_object()
        .expect("by class")
        .values()
        .map(|n| n.as_u64().expect("count"))
        .sum()
}

#[test]
fn knot_band_slip_0_drops_every_limited_response() {
    let srv = start("rate = 5\nslip = 0\n");
    let t = send_queries(srv.dns, Duration::from_secs(2));
    assert!(
        t.replied > 0 && t.replied < 100 && t.slipped == 0 && t.dropped >= 5,
        "{t:?}"
    );
    let st = status(&srv);
    let dropped = class_sum(&st["rrl"]["dropped"]);
    assert!(
        dropped.abs_diff(u64::from(t.dropped)) <= 1,
        "status counts {dropped} drops, the client saw {t:?}"
    );
}

#[test]
fn knot_band_slip_1_truncates_every_limited_response() {
    let srv = start("rate = 5\nslip = 1\n");
    let t = send_queries(srv.dns, Duration::from_secs(2));
    assert!(
        t.replied > 0 && t.replied < 100 && t.slipped >= 100 && t.dropped <= 3,
        "{t:?}"
    );
    let st = status(&srv);
    let slipped = st["rrl"]["slipped"]["positive"].as_u64().expect("count");
    assert!(
        slipped.abs_diff(u64::from(t.slipped)) <= 1,
        "{slipped} vs {t:?}"
    );
    // TCP is the way around the limit.
    let r = tcp(
        srv.dns,
        &query("example.com.", hickory_proto::rr::RecordType::SOA),
    );
    assert!(!r.metadata.truncation && r.answers.len() == 1);
}

#[test]
fn knot_band_slip_2_truncates_every_second_limited_response() {
    let srv = start("rate = 5\nslip = 2\n");
    let t = send_queries(srv.dns, Duration::from_secs(2));
    assert!(
        t.replied > 0 && t.replied < 100 && t.slipped >= 5 && t.dropped >= 5,
        "{t:?}"
    );
}

#[test]
fn knot_band_exempt_address_is_never_limited() {
    let srv = start("rate = 5\nslip = 0\nexempt = [\"127.0.0.1/32\"]\n");
    let t = send_queries(srv.dns, Duration::from_secs(2));
    assert!(
        t.replied >= 100 && t.slipped == 0 && t.dropped <= 3,
        "{t:?}"
    );
}

/// Dry run: nothing is limited, what would have been is counted (status
/// and metrics).
#[test]
fn dry_run_counts_and_limits_nothing() {
    let srv = start("rate = 5\nslip = 0\ndry_run = true\n");
    let t = send_queries(srv.dns, Duration::from_millis(300));
    assert!(t.replied >= 20 && t.dropped == 0 && t.slipped == 0, "{t:?}");
    let st = status(&srv);
    let would = st["rrl"]["would_limit"]["positive"]
        .as_u64()
        .expect("count");
    assert!(would >= u64::from(t.replied) - 6, "{would} vs {t:?}");
    assert_eq!(class_sum(&st["rrl"]["dropped"]), 0);
    let (_, metrics) = http(srv.admin.expect("admin"), "GET", "/metrics");
    assert!(
        metrics.contains("geolb_rrl_would_limit_total{class=\"positive\"}"),
        "{metrics}"
    );
}

/// A client that returns our server cookie has proved its address: its
/// answers are not limited.
#[test]
fn a_valid_server_cookie_is_not_limited() {
    let cfg = format!(
        "{}\n[rrl]\nenabled = true\nrate = 5\nslip = 0\n[cookies]\nenabled = true\n",
        config("")
    );
    let srv = TestServer::start_with(
        &cfg,
        &[
            ("example.com.zone", &zone_com()),
            ("example.net.zone", ZONE_NET),
        ],
    );
    let first = udp_raw(srv.dns, &soa_query(1, Some(&[7; 8]))).expect("a reply");
    let cookie = first[first.len() - 24..].to_vec();
    assert_eq!(&cookie[..8], &[7; 8], "the client cookie comes back");
    for id in 2..60u16 {
        let r = udp_raw(srv.dns, &soa_query(id, Some(&cookie))).expect("never dropped");
        assert_eq!(r[2] & 0x02, 0, "never truncated");
    }
    // Without the server cookie the same client is limited.
    assert!((100..120u16).any(|id| udp_raw(srv.dns, &soa_query(id, Some(&[7; 8]))).is_none()));
}

/// Error replies are reflection too: a flood of queries that only earn a
/// FORMERR or NOTIMP is limited in the error class, as Knot does.
#[test]
fn error_replies_are_limited_in_the_error_class() {
    let srv = start("rate = 5\nslip = 0\n");
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    for id in 0..60u16 {
        let mut q = soa_query(id, None);
        if id % 2 == 0 {
            q[2] = 2 << 3; // opcode STATUS: NOTIMP
        } else {
            q[5] = 2; // QDCOUNT 2 with one question: FORMERR
        }
        s.send_to(&q, srv.dns).expect("send");
    }
    let mut buf = [0u8; 512];
    let mut replies = 0;
    while let Ok(n) = s.recv(&mut buf) {
        assert!(n >= 12);
        assert!(matches!(buf[3] & 0x0f, 1 | 4), "FORMERR or NOTIMP");
        replies += 1;
    }
    assert!((1..=15).contains(&replies), "{replies} of 60 answered");
    let st = status(&srv);
    let dropped = st["rrl"]["dropped"]["error"].as_u64().expect("count");
    assert_eq!(dropped, 60 - replies, "{st}");
    // Good queries from elsewhere are not affected: over TCP always, and
    // the limit is per prefix.
    let r = tcp(
        srv.dns,
        &query("example.com.", hickory_proto::rr::RecordType::SOA),
    );
    assert_eq!(r.answers.len(), 1);
}

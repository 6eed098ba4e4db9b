//! DNS cookies (RFC 7873 §5.2, RFC 9018) against the real server over UDP
//! and TCP. Queries are built byte by byte so the COOKIE option can be any
//! length.

use crate::common;

use std::net::IpAddr;

use common::*;
use geolb::guard::cookie;

const APEX: &[u8] = b"\x07example\x03com\x00";
const SECRET: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";

fn start(cookies: &str, files: &[(&str, &str)]) -> TestServer {
    let cfg = format!("{}\n[cookies]\nenabled = true\n{cookies}\n", config(""));
    let zone = zone_com();
    let mut all = vec![
        ("example.com.zone", zone.as_str()),
        ("example.net.zone", ZONE_NET),
    ];
    all.extend_from_slice(files);
    TestServer::start_with(&cfg, &all)
}

/// An A query for example.com with one COOKIE option holding `cookie`.
fn cookie_query(cookie: &[u8]) -> Vec<u8> {
    let mut b = rand_id().to_be_bytes().to_vec();
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    b.extend_from_slice(APEX);
    b.extend_from_slice(&[0, 1, 0, 1]);
    b.extend_from_slice(&opt_with_cookie(cookie));
    b
}

/// A query without a question (QDCOUNT 0) whose OPT record holds one
/// COOKIE option with `cookie`, or no option at all when it is `None`.
fn question_less_query(cookie: Option<&[u8]>) -> Vec<u8> {
    let mut b = rand_id().to_be_bytes().to_vec();
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    match cookie {
        Some(c) => b.extend_from_slice(&opt_with_cookie(c)),
        None => b.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]),
    }
    b
}

/// An OPT record (payload 1232) with one COOKIE option holding `cookie`.
fn opt_with_cookie(cookie: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 41, 4, 208, 0, 0, 0, 0];
    b.extend_from_slice(&((4 + cookie.len()) as u16).to_be_bytes());
    b.extend_from_slice(&[0, 10]);
    b.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
    b.extend_from_slice(cookie);
    b
}

/// What matters of a reply: its full RCODE (header and OPT), answer
/// count, and the COOKIE option's data.
#[derive(Debug)]
struct Reply {
    rcode: u16,
    answers: u16,
    cookie: Option<Vec<u8>>,
}

fn parse(r: &[u8]) -> Reply {
    parse_after(r, 12 + APEX.len() + 4)
}

/// [`parse`] of a reply whose question ends at `q_end`.
fn parse_after(r: &[u8], q_end: usize) -> Reply {
    let answers = u16::from_be_bytes([r[6], r[7]]);
    let mut rcode = u16::from(r[3] & 0x0f);
    let mut cookie = None;
    // The OPT record is the last one: root name, TYPE 41.
    if let Some(i) = (q_end..r.len().saturating_sub(10))
        .rev()
        .find(|&i| r[i..i + 3] == [0, 0, 41])
    {
        rcode |= u16::from(r[i + 5]) << 4;
        let rdlen = u16::from_be_bytes([r[i + 9], r[i + 10]]) as usize;
        let mut o = i + 11;
        while o + 4 <= i + 11 + rdlen {
            let code = u16::from_be_bytes([r[o], r[o + 1]]);
            let len = u16::from_be_bytes([r[o + 2], r[o + 3]]) as usize;
            if code == 10 {
                cookie = Some(r[o + 4..o + 4 + len].to_vec());
            }
            o += 4 + len;
        }
    }
    Reply {
        rcode,
        answers,
        cookie,
    }
}

fn ask(srv: &TestServer, cookie: &[u8]) -> Reply {
    parse(&udp_raw(srv.dns, &cookie_query(cookie)).expect("a reply"))
}

fn status(srv: &TestServer) -> serde_json::Value {
    let (code, body) = http(srv.admin.expect("admin"), "GET", "/v1/status");
    assert_eq!(code, 200);
    serde_json::from_str(&body).expect("json")
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as u32
}

/// A reply's server cookie is an RFC 9018 one made now for this client.
fn assert_fresh(c: &[u8], client: &[u8; 8]) {
    assert_eq!(c.len(), 24, "client cookie and a 16-byte server cookie");
    assert_eq!(&c[..8], client, "the client cookie is echoed");
    assert_eq!(&c[8..12], &[1, 0, 0, 0], "version 1, reserved zero");
    let ts = u32::from_be_bytes([c[12], c[13], c[14], c[15]]);
    assert!(ts.abs_diff(now()) <= 5, "timestamp {ts} is now");
}

#[test]
fn rfc7873_5_2_3_a_client_cookie_alone_is_answered_with_a_server_cookie() {
    let srv = start("", &[]);
    let r = ask(&srv, &[1; 8]);
    assert_eq!((r.rcode, r.answers), (0, 1), "{r:?}");
    assert_fresh(&r.cookie.expect("a COOKIE option"), &[1; 8]);
}

/// A valid server cookie is accepted, and sent back as it is while it is
/// under half an hour old (RFC 9018 §4.3; the unit tests in
/// `guard::cookie` cover the reissue past that age).
#[test]
fn rfc7873_5_2_5_a_valid_server_cookie_is_accepted_and_echoed() {
    let srv = start("", &[]);
    let first = ask(&srv, &[2; 8]).cookie.expect("cookie");
    let r = ask(&srv, &first);
    assert_eq!((r.rcode, r.answers), (0, 1), "{r:?}");
    assert_eq!(r.cookie.as_deref(), Some(&first[..]), "echoed");
    let st = status(&srv);
    assert_eq!(st["cookies"]["valid"], 1, "{}", st["cookies"]);
    assert_eq!(st["cookies"]["client_only"], 1);
}

#[test]
fn rfc7873_5_2_4_an_invalid_server_cookie_is_answered_normally_with_a_new_one() {
    let srv = start("", &[]);
    let mut forged = [3u8; 24];
    forged[8..12].copy_from_slice(&[1, 0, 0, 0]);
    forged[12..16].copy_from_slice(&now().to_be_bytes());
    let r = ask(&srv, &forged);
    assert_eq!((r.rcode, r.answers), (0, 1), "{r:?}");
    let fresh = r.cookie.expect("cookie");
    assert_fresh(&fresh, &[3; 8]);
    assert_ne!(&fresh[16..], &forged[16..]);
    assert_eq!(status(&srv)["cookies"]["invalid"], 1);
    // A server cookie of another length (16 to 40 bytes in all) is not
    // ours either: answered the same way.
    let r = ask(&srv, &[4; 40]);
    assert_eq!((r.rcode, r.answers), (0, 1), "{r:?}");
    assert_fresh(&r.cookie.expect("cookie"), &[4; 8]);
}

#[test]
fn rfc7873_5_2_2_a_malformed_cookie_option_is_formerr() {
    let srv = start("", &[]);
    for len in [0, 7, 9, 15, 41] {
        let r = ask(&srv, &vec![5; len]);
        assert_eq!((r.rcode, r.answers), (1, 0), "length {len}: {r:?}");
    }
    assert_eq!(status(&srv)["cookies"]["malformed"], 5);
}

/// With `require`, a UDP query without a valid server cookie gets
/// BADCOOKIE and a fresh cookie (§5.2.3 choice 2, §5.2.4); the retry with
/// it is answered (§5.3). Over TCP no cookie is needed.
#[test]
fn rfc7873_5_2_3_a_server_that_requires_cookies_answers_badcookie_over_udp() {
    let srv = start("require = true\n", &[]);
    let r = ask(&srv, &[6; 8]);
    assert_eq!((r.rcode, r.answers), (23, 0), "BADCOOKIE: {r:?}");
    let c = r.cookie.expect("cookie");
    assert_fresh(&c, &[6; 8]);
    let r = ask(&srv, &c);
    assert_eq!((r.rcode, r.answers), (0, 1), "{r:?}");
    let mut s = tcp_connect(srv.dns);
    tcp_send(&mut s, &cookie_query(&[6; 8]));
    let r = parse(&tcp_read(&mut s).expect("a TCP reply"));
    assert_eq!((r.rcode, r.answers), (0, 1), "{r:?}");
    assert_eq!(status(&srv)["cookies"]["badcookie_sent"], 1);
}

/// RFC 9018 §4: the server cookie is SipHash-2-4 under the configured
/// secret, so every server of an anycast set given the same file makes
/// and accepts the same cookies; and a changed secret file rotates on
/// reload with the previous secret still accepted, the one before not.
#[test]
fn rfc9018_4_cookies_follow_the_secret_file_and_survive_one_rotation() {
    let mut srv = start(
        "secret_file = \"cookie.key\"\n",
        &[("cookie.key", &format!("{SECRET}\n"))],
    );
    let c = ask(&srv, &[8; 8]).cookie.expect("cookie");
    let head: [u8; 8] = c[8..16].try_into().expect("8");
    let secret: [u8; 16] = data_encoding::HEXLOWER
        .decode(SECRET.as_bytes())
        .expect("hex")
        .try_into()
        .expect("16");
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    assert_eq!(cookie::hash(&secret, &[8; 8], &head, ip), c[16..24]);

    let reload = |srv: &TestServer, key: &str| {
        std::fs::write(srv.path("cookie.key"), key).expect("write");
        let (code, body) = http(srv.admin.expect("admin"), "POST", "/v1/reload");
        assert_eq!(code, 200, "{body}");
    };
    reload(&srv, "445536bcd2513298075a5d379663c962");
    assert_eq!(ask(&srv, &c).rcode, 0);
    assert_eq!(
        status(&srv)["cookies"]["valid"],
        1,
        "the previous secret verifies"
    );
    reload(&srv, "dd3bdf9344b678b185a6f5cb60fca715");
    ask(&srv, &c);
    assert_eq!(
        status(&srv)["cookies"]["invalid"],
        1,
        "two rotations later it does not"
    );
    srv.stop();
}

/// Without `[cookies] enabled` the option is one more unknown option:
/// ignored, whatever its length (RFC 6891 §6.1.2).
#[test]
fn cookies_off_ignores_the_option() {
    let srv = TestServer::start();
    for len in [8, 7] {
        let r = ask(&srv, &vec![9; len]);
        assert_eq!((r.rcode, r.answers), (0, 1), "{r:?}");
        assert!(r.cookie.is_none());
    }
}

/// RFC 7873 §5.4: a query without a question carrying a COOKIE option asks
/// for a server cookie alone: NOERROR with one for a client cookie alone or
/// a valid server cookie, BADCOOKIE with a fresh one for an invalid server
/// cookie; no question and no records come back. Without a COOKIE option,
/// or with cookies off, it is a FORMERR (RFC 9619 §3).
#[test]
fn rfc7873_5_4_a_query_without_a_question_learns_a_server_cookie() {
    let srv = start("", &[]);
    let ask0 = |c: Option<&[u8]>| {
        let r = udp_raw(srv.dns, &question_less_query(c)).expect("a reply");
        assert_eq!(&r[4..8], &[0, 0, 0, 0], "no question, no answer");
        parse_after(&r, 12)
    };
    let r = ask0(Some(&[3; 8]));
    assert_eq!(r.rcode, 0, "{r:?}");
    let c = r.cookie.expect("a COOKIE option");
    assert_fresh(&c, &[3; 8]);
    let r = ask0(Some(&c));
    assert_eq!(
        (r.rcode, r.cookie.as_deref()),
        (0, Some(&c[..])),
        "valid: echoed"
    );
    let mut bad = c.clone();
    bad[23] ^= 1;
    let r = ask0(Some(&bad));
    assert_eq!(r.rcode, 23, "BADCOOKIE: {r:?}");
    assert_fresh(&r.cookie.expect("cookie"), &[3; 8]);
    assert_eq!(ask0(None).rcode, 1, "no COOKIE option: FORMERR");
    assert_eq!(ask0(Some(&[3; 7])).rcode, 1, "malformed: FORMERR");
    // The same over TCP.
    let mut s = tcp_connect(srv.dns);
    tcp_send(&mut s, &question_less_query(Some(&[3; 8])));
    let r = parse_after(&tcp_read(&mut s).expect("a TCP reply"), 12);
    assert_eq!(r.rcode, 0, "{r:?}");
    assert_fresh(&r.cookie.expect("cookie"), &[3; 8]);

    let off = TestServer::start();
    let r = udp_raw(off.dns, &question_less_query(Some(&[3; 8]))).expect("a reply");
    assert_eq!(r[3] & 0x0f, 1, "cookies off: FORMERR");
}

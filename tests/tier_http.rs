//! HTTP listeners end to end: a real server, real HTTP/1.1 keep-alive
//! backends on loopback (region eu on 127.0.1.0/24), raw-socket and hyper
//! clients. Routing, fixed responses, forwarding and hop-by-hop headers,
//! retries (and what is never retried), response timeouts, ejection on
//! 5xx, h2c, malformed requests.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const ZONE: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n";

/// An HTTP/1.1 keep-alive backend. `GET /status/N` answers N, `/sleep/MS`
/// waits first, `/chunked/N` answers N bytes chunked, `/trailers` a chunked
/// body with trailer fields, `/cut/N` N bytes and then a reset, `/hints` two
/// 103s before its answer, `/te-gzip` a gzip-coded body beside a wrong
/// Content-Length; every other answer's
/// body is `NAME METHOD PATH body=LEN` and then the request's header lines
/// (lower-cased names), so tests see what arrived.
pub(crate) struct HttpBe {
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<AtomicUsize>,
}

/// Request line, headers (lower-cased names), body.
type Received = (String, Vec<(String, String)>, Vec<u8>);

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0u8; n + 2];
            if n == 0 {
                // Trailer fields, as `trailer.NAME` headers.
                loop {
                    let mut t = String::new();
                    r.read_line(&mut t).ok()?;
                    let t = t.trim_end();
                    if t.is_empty() {
                        break;
                    }
                    let (k, v) = t.split_once(':')?;
                    headers.push((
                        format!("trailer.{}", k.trim().to_ascii_lowercase()),
                        v.trim().to_string(),
                    ));
                }
                break;
            }
            r.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body = vec![0u8; len];
        r.read_exact(&mut body).ok()?;
    }
    Some((line.trim_end().to_string(), headers, body))
}

impl HttpBe {
    pub(crate) fn start(ip: &str, name: &'static str) -> HttpBe {
        let l = TcpListener::bind((ip, 0)).expect("bind");
        let addr = l.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let h2 = hits.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let hits = h2.clone();
                std::thread::spawn(move || {
                    let mut w = c.try_clone().expect("clone");
                    let mut r = BufReader::new(c);
                    while let Some((line, headers, body)) = read_request(&mut r) {
                        hits.fetch_add(1, Ordering::Relaxed);
                        if std::env::var("TRACE_BE").is_ok() {
                            eprintln!("backend {name}: {line}");
                        }
                        let mut parts = line.split(' ');
                        let method = parts.next().unwrap_or("").to_string();
                        let path = parts.next().unwrap_or("").to_string();
                        let mut status = 200;
                        if let Some(n) = path.strip_prefix("/status/") {
                            status = n.parse().unwrap_or(200);
                        }
                        if let Some(ms) = path.strip_prefix("/sleep/") {
                            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
                        }
                        if path == "/hints" {
                            // Two interim responses, then the final one.
                            let resp = "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
                                        HTTP/1.1 103 Early Hints\r\nlink: </app.js>; rel=preload\r\n\r\n\
                                        HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhints";
                            if w.write_all(resp.as_bytes()).is_err() {
                                return;
                            }
                            continue;
                        }
                        if path == "/te-gzip" {
                            // A transfer coding other than chunked (the body
                            // runs to the close) beside a Content-Length that
                            // is not the body's.
                            let mut resp = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ncontent-length: 3\r\n\r\n".to_vec();
                            resp.extend(std::iter::repeat_n(b'z', 100));
                            let _ = w.write_all(&resp);
                            return;
                        }
                        if path == "/trailers" {
                            // A chunked body with trailer fields, some of
                            // which no trailer may carry.
                            let resp = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                                        5\r\nhello\r\n0\r\ngrpc-status: 0\r\n\
                                        Content-Length: 99\r\nX-Checksum: abc\r\n\r\n";
                            if w.write_all(resp.as_bytes()).is_err() {
                                return;
                            }
                            continue;
                        }
                        if let Some(n) = path.strip_prefix("/cut/") {
                            // N bytes of a body delimited by the close,
                            // then the connection reset: a body broken off.
                            let n: usize = n.parse().unwrap_or(0);
                            let mut resp = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
                            resp.extend(std::iter::repeat_n(b'x', n));
                            let _ = w.write_all(&resp);
                            let _ = w.flush();
                            std::thread::sleep(Duration::from_millis(50));
                            let _ = socket2::SockRef::from(&w).set_linger(Some(Duration::ZERO));
                            return;
                        }
                        if let Some(n) = path.strip_prefix("/chunked/") {
                            // N bytes of 'x', chunked in pieces of 1000.
                            let n: usize = n.parse().unwrap_or(0);
                            let mut resp =
                                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                            for at in (0..n).step_by(1000) {
                                let k = (n - at).min(1000);
                                resp.extend_from_slice(format!("{k:x}\r\n").as_bytes());
                                resp.extend(std::iter::repeat_n(b'x', k));
                                resp.extend_from_slice(b"\r\n");
                            }
                            resp.extend_from_slice(b"0\r\n\r\n");
                            if w.write_all(&resp).is_err() {
                                return;
                            }
                            continue;
                        }
                        let mut text = format!("{name} {method} {path} body={}\n", body.len());
                        for (k, v) in &headers {
                            text.push_str(&format!("{k}: {v}\n"));
                        }
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: keep-alive, x-hop\r\nx-hop: secret\r\n\r\n{text}",
                            text.len()
                        );
                        if w.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HttpBe { addr, hits }
    }
}

pub(crate) fn start(tier: &str) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), ZONE).expect("w");
    let cfg = format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n\
         [zones.\"example.com\"]\nfile = \"example.com.zone\"\n\
         [regions.eu]\nlocation = [50.1, 8.7]\n\
         [pools.eu-web]\nregion = \"eu\"\nendpoints = [{{ address = \"127.0.1.1\" }}]\n{tier}"
    );
    std::fs::write(dir.path().join("geolb.toml"), cfg).expect("w");
    TestServer::start_dir(dir)
}

pub(crate) fn group(name: &str, extra: &str, members: &[SocketAddr]) -> String {
    let m: Vec<String> = members
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[groups.{name}]\nregion = \"eu\"\nalgorithm = \"round_robin\"\n{extra}\nmembers = [{}]\n",
        m.join(", ")
    )
}

thread_local! {
    /// The engine the running test's listeners serve cleartext HTTP/1.1
    /// with (every test runs on both: `on_native::NAME`, `on_hyper::NAME`).
    static ENGINE: std::cell::Cell<&'static str> = const { std::cell::Cell::new("native") };
}

pub(crate) fn http_listener(group: &str, extra: &str) -> String {
    let engine = ENGINE.with(std::cell::Cell::get);
    format!(
        "[listeners.h]\nregion = \"eu\"\nbind = \"127.0.1.1:0\"\nmode = \"http\"\ngroup = \"{group}\"\nhttp1_engine = \"{engine}\"\n{extra}\n"
    )
}

/// Backends "a" (127.0.1.11) and "b" (127.0.1.12) in group `g`, with the
/// group's `extra` settings, behind listener `h` with `listener` settings.
fn two_backends(extra: &str, listener: &str) -> (HttpBe, HttpBe, TestServer) {
    let (a, b) = (
        HttpBe::start("127.0.1.11", "a"),
        HttpBe::start("127.0.1.12", "b"),
    );
    let s = start(&format!(
        "{}{}",
        group("g", extra, &[a.addr, b.addr]),
        http_listener("g", listener)
    ));
    (a, b, s)
}

pub(crate) fn vip(s: &TestServer) -> SocketAddr {
    *s.server().tier.local_addrs().get("h").expect("listener h")
}

/// One request on a new connection; returns status and body.
fn request(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(raw.as_bytes()).expect("write");
    read_response(&mut BufReader::new(c))
}

/// Reads one response (with a Content-Length body) from a connection.
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status = String::new();
    r.read_line(&mut status).expect("status line");
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    let mut head = String::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            break;
        }
        if h.trim_end().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&h);
    }
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    (code, format!("{head}\n{}", String::from_utf8_lossy(&body)))
}

fn get(addr: SocketAddr, host: &str, path: &str, extra: &str) -> (u16, String) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

pub(crate) fn tier_status(s: &TestServer) -> serde_json::Value {
    let (code, body) = http(s.admin.expect("admin"), "GET", "/v1/tier");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn requests_are_routed_by_host_path_and_header_and_fixed_responses_answer_directly() {
    let (a, b, c) = (
        HttpBe::start("127.0.1.11", "a"),
        HttpBe::start("127.0.1.12", "b"),
        HttpBe::start("127.0.1.13", "c"),
    );
    let s = start(&format!(
        "{}{}{}{}",
        group("ga", "", &[a.addr]),
        group("gb", "", &[b.addr]),
        group("gc", "", &[c.addr]),
        http_listener(
            "ga",
            "routes = [\n  { path_prefix = \"/down\", respond = { status = 503, body = \"maintenance\", headers = { \"retry-after\" = \"60\" } } },\n  { host = \"api.example.com\", path_prefix = \"/v2\", group = \"gb\" },\n  { host = \"*.example.com\", header = { name = \"x-canary\", value = \"1\" }, group = \"gc\" },\n]"
        )
    ));
    let l = vip(&s);
    assert!(get(l, "www.example.com", "/", "").1.contains("\na GET /"));
    assert!(get(l, "API.example.com:8080", "/v2/users", "")
        .1
        .contains("\nb GET /v2/users"));
    assert!(get(l, "api.example.com", "/v1", "")
        .1
        .contains("\na GET /v1"));
    assert!(get(l, "x.example.com", "/", "x-canary: 1\r\n")
        .1
        .contains("\nc GET /"));
    assert!(get(l, "example.com", "/", "x-canary: 1\r\n")
        .1
        .contains("\na GET /"));
    let (code, text) = get(l, "www.example.com", "/down/now", "");
    assert_eq!(code, 503);
    assert!(
        text.contains("retry-after: 60") && text.ends_with("maintenance"),
        "{text}"
    );
    let t = tier_status(&s);
    let lst = &t["listeners"][0];
    assert_eq!(lst["mode"], "http");
    assert_eq!(lst["http1_engine"], ENGINE.with(std::cell::Cell::get));
    assert_eq!(lst["requests"], 6);
    assert_eq!(lst["responses"][4], 1, "{lst}");
}

/// RFC 9110 §7.6.1: a proxy removes Connection, the fields it names and
/// the other hop-by-hop fields, in both directions.
fn rfc9110_7_6_1_forwarding_headers_are_set_and_hop_by_hop_fields_are_not_forwarded() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("ga", "", &[a.addr]),
        http_listener(
            "ga",
            "forwarded = true\nvia = true\nrequest_id = \"x-request-id\""
        )
    ));
    let (code, text) = get(
        vip(&s),
        "www.example.com",
        "/",
        "X-Forwarded-For: 10.9.9.9\r\nConnection: x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n",
    );
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("x-forwarded-for: 10.9.9.9, 127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("x-forwarded-proto: http"), "{text}");
    assert!(text.contains("x-forwarded-host: www.example.com"), "{text}");
    assert!(
        text.contains("forwarded: for=127.0.0.1;proto=http;host=\"www.example.com\""),
        "{text}"
    );
    assert!(text.contains("via: 1.1 geolb"), "{text}");
    assert!(text.contains("x-request-id: "), "{text}");
    assert!(!text.contains("x-secret"), "{text}");
    assert!(!text.contains("keep-alive: timeout"), "{text}");
    assert!(!text.contains("\nte: "), "{text}");
    // ...and the backend's own hop-by-hop fields do not reach the client.
    let head = text
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(!head.contains("x-hop"), "{head}");
}

fn a_dead_backend_is_retried_for_replayable_requests_and_a_post_with_a_body_is_not() {
    let a = HttpBe::start("127.0.1.11", "a");
    let dead = TcpListener::bind("127.0.1.12:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let s = start(&format!(
        "{}{}",
        group("g", "ejection = { failures = 0 }", &[dead, a.addr]),
        http_listener("g", "")
    ));
    let l = vip(&s);
    for _ in 0..4 {
        let (code, text) = get(l, "x", "/", "");
        assert_eq!(code, 200, "{text}");
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (code, _) = request(
            l,
            "POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
        statuses.push(code);
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["responses"][4], 2, "{t}");
}

fn a_backend_without_response_headers_in_time_gives_504() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "response_timeout = \"300ms\"")
    ));
    let (code, text) = get(vip(&s), "x", "/sleep/2000", "");
    assert_eq!(code, 504, "{text}");
    let t = tier_status(&s);
    let b = &t["groups"][0]["backends"][0];
    assert_eq!(b["http_timeouts"], 1, "{b}");
}

fn repeated_5xx_eject_a_backend_and_retry_on_statuses_go_to_another() {
    let (a, b, s) = two_backends(
        "ejection = { failures = 2, base_time = \"1m\", max_percent = 50 }",
        "retries = 0",
    );
    let l = vip(&s);
    // /status/500 from both: each gets failures; one is ejected (the cap
    // of a two-member group is one).
    for _ in 0..4 {
        assert_eq!(get(l, "x", "/status/500", "").0, 500);
    }
    let t = tier_status(&s);
    let ejected: Vec<&serde_json::Value> = t["groups"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .filter(|b| b["ejection"].is_object())
        .collect();
    assert_eq!(ejected.len(), 1, "{t}");
    let out = ejected[0]["address"].as_str().expect("address").to_string();
    let (other, other_name) = if out == a.addr.to_string() {
        (&b, "b")
    } else {
        (&a, "a")
    };
    let before = other.hits.load(Ordering::Relaxed);
    for _ in 0..3 {
        assert!(get(l, "x", "/", "")
            .1
            .contains(&format!("\n{other_name} GET /")));
    }
    assert_eq!(other.hits.load(Ordering::Relaxed), before + 3);
}

fn a_503_in_retry_on_is_tried_on_another_backend() {
    let (a, b) = (
        HttpBe::start("127.0.1.11", "a"),
        HttpBe::start("127.0.1.12", "b"),
    );
    let s = start(&format!(
        "{}{}",
        group("g", "ejection = { failures = 0 }", &[a.addr, b.addr]),
        http_listener("g", "retries = 1\nretry_on = [503]")
    ));
    // Every backend answers 503 for this path: one try each, then the last
    // 503 goes to the client; both backends saw it once.
    let (code, _) = get(vip(&s), "x", "/status/503", "");
    assert_eq!(code, 503);
    assert_eq!(
        a.hits.load(Ordering::Relaxed) + b.hits.load(Ordering::Relaxed),
        2
    );
}

/// A retry budget bounds retries to 30 per 10 s plus `retry_budget`
/// percent of the window's requests: when every backend fails, retries
/// cannot multiply the load on them.
fn a_retry_budget_keeps_retries_from_multiplying_an_outage() {
    let bes: Vec<HttpBe> = (11..=13)
        .map(|i| HttpBe::start(&format!("127.0.1.{i}"), "x"))
        .collect();
    let addrs: Vec<SocketAddr> = bes.iter().map(|b| b.addr).collect();
    let s = start(&format!(
        "{}{}",
        group("g", "ejection = { failures = 0 }\nretry_budget = 0", &addrs),
        http_listener("g", "retries = 2\nretry_on = [503]")
    ));
    let hits = || -> usize { bes.iter().map(|b| b.hits.load(Ordering::Relaxed)).sum() };
    // The first requests get their two retries each (the budget's floor
    // of 30), the rest none: 40 requests make 40 + 30 backend requests,
    // not 120.
    for _ in 0..40 {
        let (code, _) = get(vip(&s), "x", "/status/503", "");
        assert_eq!(code, 503);
    }
    assert_eq!(hits(), 70, "40 requests and the budget's 30 retries");
    // Requests that succeed still go through, once each.
    let (code, _) = get(vip(&s), "x", "/", "");
    assert_eq!(code, 200);
    assert_eq!(hits(), 71);
}

fn h2c_with_prior_knowledge_is_proxied_to_http1_backends() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "")
    ));
    let l = vip(&s);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let body = rt.block_on(async move {
        use http_body_util::{BodyExt, Empty};
        let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        let uri: http::Uri = format!("http://{l}/h2").parse().expect("uri");
        let resp = client.get(uri).await.expect("h2 request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let b = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    });
    assert!(body.starts_with("a GET /h2"), "{body}");
    // The backend gets HTTP/1.1 with a Host made from the :authority.
    assert!(body.contains("\nhost: 127.0.1.1"), "{body}");
}

fn malformed_and_smuggling_requests_get_400_and_never_reach_a_backend() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "")
    ));
    let l = vip(&s);
    for raw in [
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        "BAD REQUEST LINE\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let (code, _) = request(l, raw);
        assert_eq!(code, 400, "{raw:?}");
    }
    assert_eq!(a.hits.load(Ordering::Relaxed), 0);
}

/// RFC 9112 §6.3: with both Transfer-Encoding and Content-Length, the
/// chunked framing wins, Content-Length is removed before forwarding and
/// the connection is closed after the response, so bytes hidden behind a
/// disagreeing Content-Length can never become a second request.
fn rfc9112_6_3_a_content_length_transfer_encoding_conflict_cannot_smuggle_a_request() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "")
    ));
    let raw = "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c = TcpStream::connect(vip(&s)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(raw.as_bytes()).expect("write");
    let mut all = String::new();
    let _ = c.read_to_string(&mut all);
    assert!(all.contains("a POST /first body=0"), "{all}");
    assert!(!all.contains("content-length: 4"), "{all}");
    assert!(!all.contains("/smuggled"), "{all}");
    assert_eq!(a.hits.load(Ordering::Relaxed), 1);
}

/// The backend that answered (first word of the body) and the response's
/// `Set-Cookie`, if any.
fn who_and_cookie(resp: &str) -> (String, Option<String>) {
    let (head, body) = resp.split_once("\n\n").unwrap_or((resp, ""));
    let set = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("set-cookie")
            .then(|| v.trim().to_string())
    });
    let who = body.split(' ').next().unwrap_or("").to_string();
    (who, set)
}

fn set_admin(s: &TestServer, target: &str, state: geolb::policy::AdminState) {
    s.shared().set_admin_state(target, state).expect("override");
}

fn cookie_persistence_keeps_a_client_on_its_backend_fails_over_and_re_sticks() {
    use geolb::policy::AdminState;
    let (a, b, s) = two_backends("persistence = { mode = \"cookie\", cookie = \"SRV\", max_age = \"1h\", same_site = \"lax\" }", "");
    let l = vip(&s);
    let (first, set) = who_and_cookie(&get(l, "x", "/", "").1);
    let set = set.expect("a new client gets the cookie");
    let value = set
        .split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("SRV="))
        .expect("SRV=value")
        .to_string();
    assert!(
        set.ends_with("; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"),
        "{set}"
    );
    // Opaque: no address in it.
    assert!(!value.contains("127.0.1."), "{value}");
    // Round robin alone would alternate; the cookie keeps the client put,
    // without setting it again, and the backend never sees SRV.
    let cookie = format!("Cookie: theme=dark; SRV={value}\r\n");
    for _ in 0..6 {
        let (code, resp) = get(l, "x", "/", &cookie);
        assert_eq!(code, 200);
        let (w, again) = who_and_cookie(&resp);
        assert_eq!(w, first);
        assert_eq!(again, None);
        assert!(resp.contains("\ncookie: theme=dark\n"), "{resp}");
        assert!(!resp.contains("SRV="), "{resp}");
    }
    // A forged value counts as none.
    let (_, forged) =
        who_and_cookie(&get(l, "x", "/", "Cookie: SRV=00aa00aa00aa00aa00aa00aa\r\n").1);
    assert!(forged.is_some());
    // Persistence survives a reload.
    s.shared().reload().expect("reload");
    assert_eq!(who_and_cookie(&get(l, "x", "/", &cookie).1).0, first);
    // Its backend goes down: the request fails over and the client re-sticks.
    let (mine, other) = if first == "a" { (&a, "b") } else { (&b, "a") };
    set_admin(&s, &format!("g/{}", mine.addr), AdminState::ForceDown);
    let (w, moved) = who_and_cookie(&get(l, "x", "/", &cookie).1);
    assert_eq!(w, other);
    let moved = moved.expect("a new cookie for the new backend");
    let new_value = moved
        .split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("SRV="))
        .expect("SRV=value")
        .to_string();
    assert_ne!(new_value, value);
    set_admin(&s, &format!("g/{}", mine.addr), AdminState::None);
    let new_cookie = format!("Cookie: SRV={new_value}\r\n");
    for _ in 0..4 {
        assert_eq!(who_and_cookie(&get(l, "x", "/", &new_cookie).1).0, other);
    }
    assert_eq!(tier_status(&s)["groups"][0]["persistence"], "cookie");
}

fn a_drained_backend_keeps_its_sticky_clients_only_with_drain_sticky() {
    use geolb::policy::AdminState;
    let (a, b) = (
        HttpBe::start("127.0.1.11", "a"),
        HttpBe::start("127.0.1.12", "b"),
    );
    for drain_sticky in [true, false] {
        let s = start(&format!(
            "{}{}",
            group(
                "g",
                &format!("persistence = {{ mode = \"cookie\", drain_sticky = {drain_sticky} }}"),
                &[a.addr, b.addr]
            ),
            http_listener("g", "")
        ));
        let l = vip(&s);
        // A client stuck to a.
        let cookie = loop {
            let (w, set) = who_and_cookie(&get(l, "x", "/", "").1);
            if w == "a" {
                let kv = set.expect("cookie");
                break format!("Cookie: {}\r\n", kv.split(';').next().expect("kv"));
            }
        };
        set_admin(&s, &format!("g/{}", a.addr), AdminState::Drain);
        // New clients never go to a.
        for _ in 0..4 {
            assert_eq!(who_and_cookie(&get(l, "x", "/", "").1).0, "b");
        }
        let want = if drain_sticky { "a" } else { "b" };
        for _ in 0..3 {
            let resp = get(l, "x", "/", &cookie).1;
            assert_eq!(
                who_and_cookie(&resp).0,
                want,
                "drain_sticky = {drain_sticky}"
            );
            // The drained backend's connections are not reused.
            if drain_sticky {
                assert!(resp.contains("\nconnection: close\n"), "{resp}");
            }
        }
    }
}

fn source_persistence_keeps_an_address_on_its_backend_until_it_fails() {
    use geolb::policy::AdminState;
    let (a, b, s) = two_backends("persistence = { mode = \"source\", timeout = \"10m\" }", "");
    let l = vip(&s);
    let first = who_and_cookie(&get(l, "x", "/", "").1).0;
    for _ in 0..5 {
        assert_eq!(who_and_cookie(&get(l, "x", "/", "").1).0, first);
    }
    assert_eq!(tier_status(&s)["groups"][0]["sticky_clients"], 1);
    let (mine, other) = if first == "a" { (&a, "b") } else { (&b, "a") };
    set_admin(&s, &format!("g/{}", mine.addr), AdminState::ForceDown);
    assert_eq!(who_and_cookie(&get(l, "x", "/", "").1).0, other);
    set_admin(&s, &format!("g/{}", mine.addr), AdminState::None);
    // Re-stuck to where it went.
    for _ in 0..3 {
        assert_eq!(who_and_cookie(&get(l, "x", "/", "").1).0, other);
    }
}

fn hash_persistence_on_a_header_sends_each_key_to_one_backend() {
    let (a, b, c) = (
        HttpBe::start("127.0.1.11", "a"),
        HttpBe::start("127.0.1.12", "b"),
        HttpBe::start("127.0.1.13", "c"),
    );
    let s = start(&format!(
        "{}{}",
        "[groups.g]\nregion = \"eu\"\npersistence = { mode = \"hash\", on = \"header:x-user\" }\n"
            .to_string()
            + &format!(
                "members = [{{ address = \"{}\" }}, {{ address = \"{}\" }}, {{ address = \"{}\" }}]\n",
                a.addr, b.addr, c.addr
            ),
        http_listener("g", "")
    ));
    let l = vip(&s);
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..12 {
        let h = format!("X-User: u{user}\r\n");
        let first = who_and_cookie(&get(l, "x", "/", &h).1).0;
        for _ in 0..3 {
            assert_eq!(who_and_cookie(&get(l, "x", "/", &h).1).0, first, "u{user}");
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "keys spread over backends: {seen:?}");
}

fn rate_limits_answer_429_with_retry_after_and_spare_exempt_clients() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener(
            "g",
            "rate_limit = { per_client = 1, burst = 3, exempt = [\"127.0.0.2/32\"] }"
        )
    ));
    let l = vip(&s);
    // The burst of 3 passes; then, at one request a second, the next ones
    // are refused (however slow this machine, at most one more per second
    // elapsed gets through).
    let t0 = std::time::Instant::now();
    let mut ok = 0u64;
    let (code, resp) = loop {
        let (code, resp) = get(l, "x", "/", "");
        if code != 200 || ok > 20 {
            break (code, resp);
        }
        ok += 1;
    };
    assert!(
        ok >= 3 && ok <= 3 + t0.elapsed().as_secs() + 1,
        "{ok} passed in {:?}",
        t0.elapsed()
    );
    assert_eq!(code, 429, "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("retry-after: 1\r\n"),
        "{resp}"
    );
    // Only the requests let through reached the backend.
    assert_eq!(a.hits.load(Ordering::Relaxed) as u64, ok);
    // An exempt client (another loopback source address) is not limited.
    for _ in 0..6 {
        let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        c.bind(&"127.0.0.2:0".parse::<SocketAddr>().expect("addr").into())
            .expect("bind");
        c.connect(&l.into()).expect("connect");
        let mut c: TcpStream = c.into();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["rate_limited_client"], 1, "{t}");
}

/// A WebSocket echo backend (RFC 6455): answers the opening handshake with
/// the right Sec-WebSocket-Accept, then echoes each text frame unmasked.
fn ws_backend(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            std::thread::spawn(move || {
                let mut w = c.try_clone().expect("clone");
                let mut r = BufReader::new(c);
                let Some((_, headers, _)) = read_request(&mut r) else {
                    return;
                };
                let get = |n: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                assert!(get("upgrade").eq_ignore_ascii_case("websocket"));
                assert!(get("connection").to_ascii_lowercase().contains("upgrade"));
                let key = get("sec-websocket-key");
                let digest = ring::digest::digest(
                    &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                    format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
                );
                let accept = data_encoding::BASE64.encode(digest.as_ref());
                let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
                if w.write_all(resp.as_bytes()).is_err() {
                    return;
                }
                loop {
                    let mut head = [0u8; 2];
                    if r.read_exact(&mut head).is_err() {
                        return;
                    }
                    let len = usize::from(head[1] & 0x7f);
                    let mut mask = [0u8; 4];
                    let mut data = vec![0u8; len];
                    if r.read_exact(&mut mask).is_err() || r.read_exact(&mut data).is_err() {
                        return;
                    }
                    for (i, b) in data.iter_mut().enumerate() {
                        *b ^= mask[i % 4];
                    }
                    let mut frame = vec![0x81, len as u8];
                    frame.extend_from_slice(&data);
                    if w.write_all(&frame).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn rfc6455_4_websocket_upgrade_is_passed_through_and_frames_flow_both_ways() {
    let be = ws_backend("127.0.1.11");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[be]),
        http_listener("g", "")
    ));
    let l = vip(&s);
    let mut c = TcpStream::connect(l).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // The example key of RFC 6455 §1.3 and its accept value.
    c.write_all(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .expect("handshake");
    let mut r = BufReader::new(c.try_clone().expect("clone"));
    let mut head = String::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("head");
        if h.trim_end().is_empty() {
            break;
        }
        head.push_str(&h.to_ascii_lowercase());
    }
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    for msg in ["hello", "second frame"] {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | msg.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(msg.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        c.write_all(&frame).expect("frame");
        let mut back = vec![0u8; 2 + msg.len()];
        r.read_exact(&mut back).expect("echo");
        assert_eq!(&back[..2], &[0x81, msg.len() as u8]);
        assert_eq!(&back[2..], msg.as_bytes());
    }
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["upgrades"], 1, "{t}");
    assert_eq!(t["groups"][0]["backends"][0]["active"], 1, "{t}");
    // The tunnel is an open connection (once the HTTP side has let go).
    assert!(
        wait_for(Duration::from_secs(5), || tier_status(&s)["listeners"][0]
            ["active"]
            == 1)
        .is_some(),
        "{}",
        tier_status(&s)
    );
    drop(r);
    drop(c);
    assert!(wait_for(Duration::from_secs(5), || {
        let t = tier_status(&s);
        t["listeners"][0]["active"] == 0 && t["groups"][0]["backends"][0]["active"] == 0
    })
    .is_some());
}

/// A backend that reads each request's head and then does `act` with the
/// connection (sends garbage, breaks a body off, stalls...).
fn bad_backend(ip: &str, act: fn(&mut TcpStream)) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().expect("clone"));
                if read_request(&mut r).is_some() {
                    act(&mut c);
                }
            });
        }
    });
    addr
}

/// The whole response on a fresh connection, or what came before the
/// connection ended (status line and all), and whether it ended cleanly.
fn raw_exchange(addr: SocketAddr, req: &str) -> (String, bool) {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    let clean = c.read_to_end(&mut out).is_ok();
    (String::from_utf8_lossy(&out).into_owned(), clean)
}

fn backend_json(s: &TestServer) -> serde_json::Value {
    tier_status(s)["groups"][0]["backends"][0].clone()
}

fn a_backend_that_answers_garbage_gives_502_and_is_counted() {
    let be = bad_backend("127.0.1.11", |c| {
        let _ = c.write_all(b"SSH-2.0-OpenSSH_9.6\r\nthis is not http\r\n\r\n");
    });
    let s = start(&format!(
        "{}{}",
        group("g", "", &[be]),
        http_listener("g", "retries = 0")
    ));
    let (out, _) = raw_exchange(
        vip(&s),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert_eq!(backend_json(&s)["http_errors"], 1);
}

fn a_backend_that_breaks_a_body_off_aborts_the_response_and_is_counted() {
    let be = bad_backend("127.0.1.11", |c| {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly part of it");
        let _ = c.shutdown(std::net::Shutdown::Both);
    });
    let s = start(&format!(
        "{}{}",
        group("g", "", &[be]),
        http_listener("g", "retries = 0")
    ));
    let (out, _) = raw_exchange(
        vip(&s),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    // The client sees the body cut short (or, when the break comes before
    // the headers were flushed, the connection closed): never a complete
    // response.
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 200"), "{out}");
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1);
    assert!(body.len() < 1000, "{out}");
    assert!(
        wait_for(Duration::from_secs(5), || backend_json(&s)["http_errors"]
            == 1)
        .is_some(),
        "{}",
        backend_json(&s)
    );
    assert!(wait_for(Duration::from_secs(5), || backend_json(&s)["active"] == 0).is_some());
}

fn a_backend_that_stalls_mid_body_is_cut_after_response_timeout_and_counted() {
    let be = bad_backend("127.0.1.11", |c| {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nstart");
        std::thread::sleep(Duration::from_secs(30));
    });
    let s = start(&format!(
        "{}{}",
        group("g", "", &[be]),
        http_listener("g", "retries = 0\nresponse_timeout = \"500ms\"")
    ));
    let t0 = std::time::Instant::now();
    let (out, _) = raw_exchange(
        vip(&s),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "cut, not left hanging"
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("start"), "{out}");
    assert!(
        wait_for(Duration::from_secs(5), || backend_json(&s)["http_timeouts"]
            == 1)
        .is_some(),
        "{}",
        backend_json(&s)
    );
}

fn a_request_body_that_does_not_arrive_in_time_gets_408_and_does_not_blame_the_backend() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "body_timeout = \"500ms\"")
    ));
    let mut c = TcpStream::connect(vip(&s)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten..")
        .expect("write");
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["body_timeouts"], 1, "{t}");
    let b = &t["groups"][0]["backends"][0];
    assert_eq!(b["http_errors"], 0, "{b}");
    assert_eq!(b["ejection"], serde_json::Value::Null, "{b}");
    assert!(wait_for(Duration::from_secs(5), || backend_json(&s)["active"] == 0).is_some());
}

fn a_slowloris_client_is_cut_by_the_header_timeout_and_never_reaches_a_backend() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "header_timeout = \"1s\"")
    ));
    let l = vip(&s);
    // Many slow clients at once: each sends a header line now and then.
    let mut conns: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(l).expect("connect");
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            c
        })
        .collect();
    let t0 = std::time::Instant::now();
    let mut cut = 0;
    while t0.elapsed() < Duration::from_secs(6) && cut < conns.len() {
        std::thread::sleep(Duration::from_millis(200));
        cut = 0;
        for c in &mut conns {
            if c.write_all(b"X-Slow: 1\r\n").is_err() {
                cut += 1;
            }
        }
    }
    assert_eq!(
        cut,
        conns.len(),
        "every slow client is cut within the header timeout"
    );
    assert_eq!(a.hits.load(Ordering::Relaxed), 0);
    assert!(
        wait_for(Duration::from_secs(5), || tier_status(&s)["listeners"][0]
            ["active"]
            == 0)
        .is_some()
    );
}

fn a_removed_listener_sends_goaway_to_http2_and_closes_idle_http1_connections_within_its_window() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "drain_window = \"1s\"")
    ));
    let l = vip(&s);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    // An HTTP/2 connection with one request done, and an idle HTTP/1.1
    // keep-alive connection.
    let (status, h2_ended) = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(l).await.expect("connect");
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .expect("h2 handshake");
        let ended = tokio::spawn(conn);
        let req = http::Request::get(format!("http://{l}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("req");
        let resp = send.send_request(req).await.expect("h2 request");
        (resp.status(), ended)
    });
    assert_eq!(status, 200);
    let mut h1 = TcpStream::connect(l).expect("connect");
    h1.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    h1.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(h1.try_clone().expect("clone"));
    let mut status = String::new();
    r.read_line(&mut status).expect("status");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // The listener is removed by a reload.
    let cfg = std::fs::read_to_string(s.path("geolb.toml")).expect("read");
    let cut = cfg.find("[listeners.h]").expect("listener");
    std::fs::write(s.path("geolb.toml"), &cfg[..cut]).expect("write");
    let t0 = std::time::Instant::now();
    s.shared().reload().expect("reload");
    // HTTP/2: GOAWAY ends the client's connection cleanly.
    let done =
        rt.block_on(async move { tokio::time::timeout(Duration::from_secs(5), h2_ended).await });
    assert!(
        matches!(done, Ok(Ok(Ok(())))),
        "the HTTP/2 connection ended cleanly: {done:?}"
    );
    // HTTP/1.1: the idle connection is closed.
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

fn explain_http_names_the_rule_group_persistence_and_the_backend_the_next_request_gets() {
    let (a, b) = (
        HttpBe::start("127.0.1.11", "a"),
        HttpBe::start("127.0.1.12", "b"),
    );
    let s = start(&format!(
        "{}{}",
        group(
            "g",
            "persistence = { mode = \"cookie\", cookie = \"SRV\" }",
            &[a.addr, b.addr]
        ),
        http_listener(
            "g",
            "routes = [{ path_prefix = \"/down\", respond = { status = 503, body = \"later\" } }, { host = \"*.example.com\", header = { name = \"x-canary\", value = \"1\" }, group = \"g\" }]"
        )
    ));
    let admin = s.admin.expect("admin");
    let ask = |q: &str| -> serde_json::Value {
        let (code, body) = http(admin, "GET", &format!("/v1/explain-http?listener=h&{q}"));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("json")
    };
    let x = ask("path=/down/now");
    assert_eq!(x["action"], "respond");
    assert_eq!(x["rule"], 1);
    assert_eq!(x["status"], 503);
    let x = ask("host=api.example.com&path=/&header=x-canary:%201");
    assert_eq!(x["rule"], 2, "{x}");
    assert_eq!(x["rule_text"], "host *.example.com, header x-canary: 1");
    assert_eq!(x["group"], "g");
    // Asking twice changes nothing, and the next request goes where it said.
    let x = ask("path=/");
    assert_eq!(x["rule"], serde_json::Value::Null);
    let said = x["backend"].as_str().expect("backend").to_string();
    assert_eq!(ask("path=/")["backend"], said.as_str());
    let (who, set) = who_and_cookie(&get(vip(&s), "x", "/", "").1);
    let went = if who == "a" { a.addr } else { b.addr };
    assert_eq!(went.to_string(), said);
    assert!(x["persistence_outcome"]
        .as_str()
        .is_some_and(|o| o.contains("not stuck yet")));
    // With the cookie it just got: stuck to that backend.
    let kv = set.expect("cookie");
    let cookie = kv.split(';').next().expect("kv");
    let x = ask(&format!("path=/&cookie={}", cookie.replace('=', "%3D")));
    assert_eq!(x["backend"], said.as_str(), "{x}");
    assert_eq!(x["why"], "persistence");
    let (code, _) = http(admin, "GET", "/v1/explain-http?listener=nope");
    assert_eq!(code, 404);
}

fn each_route_counts_responses_by_class_retries_and_latency_across_a_reload() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener(
            "g",
            "routes = [{ name = \"api\", path_prefix = \"/s\", group = \"g\" }, { path_prefix = \"/down\", respond = { status = 503 } }]"
        )
    ));
    let l = vip(&s);
    for _ in 0..3 {
        assert_eq!(get(l, "x", "/s/x", "").0, 200);
    }
    assert_eq!(get(l, "x", "/status/404", "").0, 404);
    assert_eq!(get(l, "x", "/down", "").0, 503);
    assert_eq!(get(l, "x", "/", "").0, 200);
    s.shared().reload().expect("reload");
    assert_eq!(get(l, "x", "/s/y", "").0, 200);
    let t = tier_status(&s);
    let routes = t["listeners"][0]["routes"]
        .as_array()
        .expect("routes")
        .clone();
    let find = |name: &str| {
        routes
            .iter()
            .find(|r| r["route"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("route {name}: {routes:?}"))
    };
    let api = find("api");
    assert_eq!(api["requests"], 5, "kept across the reload: {api}");
    assert_eq!(api["responses"], serde_json::json!([0, 4, 0, 1, 0]));
    assert_eq!(api["active"], 0);
    assert_eq!(find("path prefix /down")["responses"][4], 1);
    assert_eq!(find("default")["requests"], 1);
    // Six requests reached the backend one after another: one pooled
    // connection carried them all.
    assert_eq!(t["listeners"][0]["backend_connections"], 1, "{t}");
    let m = http(s.admin.expect("admin"), "GET", "/metrics").1;
    assert!(
        m.contains("geolb_tier_route_responses_total{listener=\"h\",region=\"eu\",route=\"api\",class=\"2xx\"} 4"),
        "{m}"
    );
    assert!(
        m.contains(
            "geolb_tier_route_latency_seconds_count{listener=\"h\",region=\"eu\",route=\"api\"} 5"
        ),
        "{m}"
    );
}

fn the_access_log_has_one_line_per_request_and_is_reopened_by_a_reload() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "[tier]\naccess_log = {{ path = \"access.log\", format = \"json\" }}\n{}{}",
        group("g", "", &[a.addr]),
        http_listener(
            "g",
            "routes = [{ name = \"api\", path_prefix = \"/status\", group = \"g\" }]"
        )
    ));
    let l = vip(&s);
    assert_eq!(get(l, "x", "/", "").0, 200);
    assert_eq!(get(l, "www.example.com", "/status/404", "").0, 404);
    let lines = |path: &std::path::Path, n: usize| -> Vec<serde_json::Value> {
        let mut got = Vec::new();
        wait_for(Duration::from_secs(5), || {
            got = std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("json line"))
                .collect();
            got.len() >= n
        });
        got
    };
    let log = s.path("access.log");
    let got = lines(&log, 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["status"], 200);
    assert_eq!(got[0]["route"], "default");
    assert_eq!(got[0]["listener"], "h");
    assert_eq!(got[1]["status"], 404);
    assert_eq!(got[1]["method"], "GET");
    assert_eq!(got[1]["target"], "/status/404");
    assert_eq!(got[1]["host"], "www.example.com");
    assert_eq!(got[1]["route"], "api");
    assert_eq!(got[1]["backend"], a.addr.to_string());
    // Rotation: move the file away, reload, and new lines go to a new file.
    let rotated = s.path("access.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    s.shared().reload().expect("reload");
    assert_eq!(get(l, "x", "/after", "").0, 200);
    let fresh = lines(&log, 1);
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0]["target"], "/after");
    assert_eq!(lines(&rotated, 2).len(), 2);
    let m = http(s.admin.expect("admin"), "GET", "/metrics").1;
    assert!(m.contains("geolb_tier_access_log_lines_total 3"), "{m}");
    assert!(m.contains("geolb_tier_access_log_dropped_total 0"), "{m}");
}

fn cli_status_shows_http_counts_and_routes_and_explain_http_answers() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "persistence = { mode = \"source\" }", &[a.addr]),
        http_listener(
            "g",
            "routes = [{ name = \"api\", path_prefix = \"/status\", group = \"g\" }]"
        )
    ));
    let l = vip(&s);
    assert_eq!(get(l, "x", "/status/404", "").0, 404);
    assert_eq!(get(l, "x", "/", "").0, 200);
    let admin = s.admin.expect("admin").to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
            .args(args)
            .args(["--admin", &admin])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = cli(&["status"]);
    assert!(
        out.contains("http: requests 2  1xx 0 2xx 1 3xx 0 4xx 1 5xx 0"),
        "{out}"
    );
    assert!(out.contains("route api"), "{out}");
    assert!(out.contains("route default"), "{out}");
    assert!(out.contains("persistence source"), "{out}");
    let out = cli(&[
        "explain-http",
        "h",
        "--path",
        "/status/200",
        "--client",
        "127.0.0.1",
    ]);
    assert!(out.contains("rule 1: path prefix /status"), "{out}");
    assert!(out.contains(&format!("backend    {}", a.addr)), "{out}");
    assert!(out.contains("stuck to"), "{out}");
}

fn an_idle_keep_alive_connection_gives_its_buffers_back_and_serves_its_next_requests() {
    let (a, _b, s) = two_backends("", "header_timeout = \"1s\"");
    let l = vip(&s);
    let c = TcpStream::connect(l).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut w = c.try_clone().expect("clone");
    let mut r = BufReader::new(c);
    let one = "GET /one HTTP/1.1\r\nHost: x\r\n\r\n";
    w.write_all(one.as_bytes()).expect("write");
    assert_eq!(read_response(&mut r).0, 200);
    let parked = || tier_status(&s)["listeners"][0]["parked"] == 1;
    assert!(
        wait_for(Duration::from_secs(5), parked).is_some(),
        "the idle connection is parked"
    );
    // The same connection serves again, pipelined requests too, the second
    // split mid-head.
    w.write_all(format!("{one}GET /two HTTP/1.1\r\nHo").as_bytes())
        .expect("write");
    assert_eq!(read_response(&mut r).0, 200);
    w.write_all(b"st: x\r\n\r\n").expect("write");
    let (code, text) = read_response(&mut r);
    assert_eq!(code, 200);
    assert!(text.contains(" GET /two"), "{text}");
    assert!(wait_for(Duration::from_secs(5), parked).is_some());
    assert_eq!(
        a.hits.load(Ordering::Relaxed) + _b.hits.load(Ordering::Relaxed),
        3
    );
    // Idle past header_timeout with nothing sent: closed without a response.
    let mut rest = String::new();
    let n = r.read_line(&mut rest).expect("closed, not timed out");
    assert_eq!((n, rest.as_str()), (0, ""));
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["header_timeouts"], 0);
    // Sent away by the listener's sweep of its parked connections.
    assert_eq!(t["listeners"][0]["idle_closed"], 1, "{t}");
    assert!(
        wait_for(Duration::from_secs(5), || tier_status(&s)["listeners"][0]
            ["parked"]
            == 0)
        .is_some()
    );
}

fn rfc9110_15_5_9_a_request_head_not_complete_within_header_timeout_gets_408() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "header_timeout = \"500ms\"")
    ));
    let l = vip(&s);
    let mut c = TcpStream::connect(l).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let mut all = String::new();
    c.read_to_string(&mut all).expect("answered, then closed");
    assert!(all.starts_with("HTTP/1.1 408 "), "{all}");
    assert!(
        all.to_ascii_lowercase().contains("connection: close"),
        "{all}"
    );
    assert_eq!(a.hits.load(Ordering::Relaxed), 0);
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["header_timeouts"], 1);
    assert_eq!(
        t["listeners"][0]["responses"][3], 0,
        "not a proxied response"
    );
}

fn keep_alive_connections_to_backends_are_reused_and_one_the_backend_closed_is_not_a_failure() {
    let (a, b, s) = two_backends("", "");
    let l = vip(&s);
    for i in 0..20 {
        assert_eq!(get(l, "x", &format!("/{i}"), "").0, 200);
    }
    assert_eq!(
        a.hits.load(Ordering::Relaxed) + b.hits.load(Ordering::Relaxed),
        20
    );
    let t = tier_status(&s);
    let opened = t["listeners"][0]["backend_connections"]
        .as_u64()
        .expect("backend_connections");
    assert!(
        (1..=4).contains(&opened),
        "20 sequential requests over {opened} backend connections"
    );
    let idle: u64 = t["groups"][0]["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["idle_connections"].as_u64().expect("idle_connections"))
        .sum();
    assert_eq!(idle, opened, "every connection is back in its pool");

    // A backend that answers once per connection and closes it without
    // saying so: each next request finds the pooled connection dead and
    // goes out on a fresh one, never a 502.
    let once = bad_backend("127.0.1.13", |c| {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nonce");
        let _ = c.shutdown(std::net::Shutdown::Both);
    });
    let s = start(&format!(
        "{}{}",
        group("g", "", &[once]),
        http_listener("g", "")
    ));
    let l = vip(&s);
    for _ in 0..20 {
        let (code, text) = get(l, "x", "/", "");
        assert_eq!(code, 200, "{text}");
    }
    let t = tier_status(&s);
    assert_eq!(t["groups"][0]["backends"][0]["http_errors"], 0);
    assert_eq!(t["listeners"][0]["backend_connections"], 20);
}

static FLAKY_HITS: AtomicUsize = AtomicUsize::new(0);

fn a_backend_whose_success_rate_is_an_outlier_is_ejected_and_gets_no_more_requests() {
    let good: Vec<HttpBe> = (11..15)
        .map(|i| HttpBe::start(&format!("127.0.1.{i}"), "good"))
        .collect();
    let flaky = bad_backend("127.0.1.15", |c| {
        FLAKY_HITS.fetch_add(1, Ordering::Relaxed);
        let _ = c.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n");
    });
    let mut members: Vec<SocketAddr> = good.iter().map(|b| b.addr).collect();
    members.push(flaky);
    let s = start(&format!(
        "{}{}",
        group(
            "g",
            "ejection = { failures = 0, max_percent = 20, success_rate = { interval = \"200ms\", min_requests = 5, min_hosts = 5, stdev_factor = 1.9 } }",
            &members
        ),
        http_listener("g", "")
    ));
    let l = vip(&s);
    let flaky_json = |s: &TestServer| {
        tier_status(s)["groups"][0]["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .find(|b| b["address"] == flaky.to_string())
            .cloned()
            .expect("the flaky backend")
    };
    let ejected = wait_for(Duration::from_secs(10), || {
        for _ in 0..10 {
            get(l, "x", "/", "");
        }
        !flaky_json(&s)["ejection"].is_null()
    });
    assert!(ejected.is_some(), "{}", flaky_json(&s));
    let b = flaky_json(&s);
    assert_eq!(b["ejection"]["reason"]["kind"], "success_rate", "{b}");
    assert_eq!(b["ejection"]["reason"]["rate_permille"], 0, "{b}");
    assert_eq!(b["ejections"], 1);
    let before = FLAKY_HITS.load(Ordering::Relaxed);
    for _ in 0..20 {
        assert_eq!(get(l, "x", "/", "").0, 200);
    }
    assert_eq!(FLAKY_HITS.load(Ordering::Relaxed), before);
}

/// A keep-alive backend answering every request with a chunked body
/// ("hello world", in two chunks, one with an extension, and a trailer).
fn chunked_backend(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().expect("clone"));
                while let Some((line, _, body)) = read_request(&mut r) {
                    let first = format!("{line} body={}\n", body.len());
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n6;x=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
                        first.len()
                    );
                    if c.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads one response with a chunked or Content-Length body: status and
/// the decoded body.
fn read_any_response(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status = String::new();
    r.read_line(&mut status).expect("status line");
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (mut len, mut chunked) = (0usize, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim_end().is_empty() {
            break;
        }
        let h = h.to_ascii_lowercase();
        if let Some(v) = h.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if h.starts_with("transfer-encoding:") && h.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).expect("chunk size");
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .expect("hex");
            if n == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t).unwrap_or(0) == 0 || t.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).expect("chunk");
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body = vec![0u8; len];
        r.read_exact(&mut body).expect("body");
    }
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// RFC 9112 §7.1: chunked bodies pass through in both directions on one
/// keep-alive connection, and a request pipelined behind a chunked one is
/// the next request, not part of its body.
fn rfc9112_7_1_chunked_bodies_pass_both_ways_and_a_pipelined_request_follows() {
    let be = chunked_backend("127.0.1.11");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[be]),
        http_listener("g", "")
    ));
    let c = TcpStream::connect(vip(&s)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut w = c.try_clone().expect("clone");
    let mut r = BufReader::new(c);
    w.write_all(
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;n=v\r\nefg\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .expect("write");
    let (code, body) = read_any_response(&mut r);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "POST /up HTTP/1.1 body=7\n world", "{body}");
    let (code, body) = read_any_response(&mut r);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "GET /next HTTP/1.1 body=0\n world", "{body}");
    // A chunked request body split across writes.
    w.write_all(b"POST /split HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        .expect("write");
    std::thread::sleep(Duration::from_millis(50));
    w.write_all(b"lo\r\n0\r\n\r\n").expect("write");
    let (code, body) = read_any_response(&mut r);
    assert_eq!(
        (code, body.as_str()),
        (200, "POST /split HTTP/1.1 body=5\n world")
    );
}

/// RFC 9112 §7.1: a request body whose chunk framing is broken is a 400,
/// and the connection closes (nothing after it can be trusted).
fn rfc9112_7_1_a_request_with_broken_chunk_framing_gets_400_and_the_connection_closes() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "")
    ));
    for raw in [
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let (out, _) = raw_exchange(vip(&s), raw);
        assert!(out.starts_with("HTTP/1.1 400"), "{raw:?}: {out}");
        assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
        assert!(!out.contains("/smuggled"), "{out}");
    }
    let t = tier_status(&s);
    assert_eq!(t["groups"][0]["backends"][0]["http_errors"], 0, "{t}");
}

/// RFC 9112 §7.1: a backend that breaks its chunk framing aborts the
/// response (the client never sees it complete) and is counted.
fn rfc9112_7_1_a_backend_that_breaks_chunk_framing_aborts_the_response_and_is_counted() {
    let be = bad_backend("127.0.1.11", |c| {
        let _ = c.write_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        );
        std::thread::sleep(Duration::from_millis(300));
    });
    let s = start(&format!(
        "{}{}",
        group("g", "", &[be]),
        http_listener("g", "retries = 0")
    ));
    let (out, _) = raw_exchange(vip(&s), "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!out.ends_with("0\r\n\r\n"), "never a complete body: {out}");
    assert!(
        wait_for(Duration::from_secs(5), || backend_json(&s)["http_errors"]
            == 1)
        .is_some(),
        "{}",
        backend_json(&s)
    );
    assert!(wait_for(Duration::from_secs(5), || backend_json(&s)["active"] == 0).is_some());
}

/// RFC 9112 §5.2 and §5.1: obs-fold and whitespace before the colon are
/// refused with 400 and never reach a backend.
fn rfc9112_5_2_obs_fold_and_whitespace_before_the_colon_get_400() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "")
    ));
    for raw in [
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
        "GET / HTTP/1.1\r\nHost: x\r\n\tX-A: 1\r\n\r\n",
    ] {
        let (code, _) = request(vip(&s), raw);
        assert_eq!(code, 400, "{raw:?}");
    }
    assert_eq!(a.hits.load(Ordering::Relaxed), 0);
}

/// What the native engine leaves to hyper — an absolute-form target, an
/// `Expect: 100-continue`, HTTP/1.0 — is served on the same connection,
/// and the requests after it too.
fn requests_outside_the_common_case_are_served_on_the_same_connection() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "")
    ));
    let c = TcpStream::connect(vip(&s)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut w = c.try_clone().expect("clone");
    let mut r = BufReader::new(c);
    w.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET http://api.example.com/abs HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    assert!(read_response(&mut r).1.contains("a GET /one"));
    let (code, text) = read_response(&mut r);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("a GET /abs"), "{text}");
    assert!(text.contains("\nhost: api.example.com"), "{text}");
    w.write_all(
        b"POST /expect HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .expect("write");
    let mut cont = String::new();
    r.read_line(&mut cont).expect("interim");
    assert!(cont.starts_with("HTTP/1.1 100"), "{cont}");
    let mut blank = String::new();
    r.read_line(&mut blank).expect("blank");
    w.write_all(b"hello").expect("body");
    let (code, text) = read_response(&mut r);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("a POST /expect body=5"), "{text}");
    w.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    assert!(read_response(&mut r).1.contains("a GET /after"));
    let (code, text) = request(vip(&s), "GET /ten HTTP/1.0\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("a GET /ten"), "{text}");
}

/// RFC 9112 §2.3 (a server's limit on a request head): the native engine
/// takes heads up to 16 KiB, as HAProxy's default buffer; a larger one is
/// a 431 and never reaches a backend. (The hyper engine's limit is hyper's,
/// about 400 KB.)
#[test]
fn rfc9112_2_3_a_request_head_over_16_kib_gets_431_on_the_native_engine() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "")
    ));
    let big = "a".repeat(17 * 1024);
    let (code, _) = request(
        vip(&s),
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
    );
    assert_eq!(code, 431);
    let fine = "a".repeat(15 * 1024);
    let (code, _) = request(
        vip(&s),
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {fine}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(code, 200);
    assert_eq!(a.hits.load(Ordering::Relaxed), 1);
}

/// A response still streaming from a drained backend is cut at the
/// group's drain deadline (the backend's connections close then).
fn a_response_streaming_from_a_drained_backend_is_cut_at_the_drain_deadline() {
    use geolb::policy::AdminState;
    let be = bad_backend("127.0.1.11", |c| {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        for _ in 0..100 {
            if c.write_all(b"5\r\ntick\n\r\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let s = start(&format!(
        "{}{}",
        group("g", "drain_timeout = \"1s\"", &[be]),
        http_listener("g", "")
    ));
    let mut c = TcpStream::connect(vip(&s)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    c.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut first = [0u8; 64];
    let n = c.read(&mut first).expect("response begins");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    let t0 = std::time::Instant::now();
    set_admin(&s, &format!("g/{be}"), AdminState::Drain);
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "cut at the drain deadline, not after the whole stream: {took:?}"
    );
    assert!(!String::from_utf8_lossy(&rest).ends_with("0\r\n\r\n"));
}

/// A backend that stops reading a request body and never answers gives a
/// 504 after `response_timeout` and is counted; the client is not left
/// hanging.
fn a_backend_that_stops_reading_the_request_body_gives_504() {
    let l = TcpListener::bind(("127.0.1.11", 0)).expect("bind");
    let be = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut head = [0u8; 512];
            let _ = c.read(&mut head);
            held.push(c);
        }
    });
    let s = start(&format!(
        "{}{}",
        group("g", "", &[be]),
        http_listener("g", "retries = 0\nresponse_timeout = \"500ms\"")
    ));
    let c = TcpStream::connect(vip(&s)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let size = 64 << 20;
    let mut w = c.try_clone().expect("clone");
    let t0 = std::time::Instant::now();
    std::thread::spawn(move || {
        let head = format!("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n");
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut r = BufReader::new(c);
    let (code, text) = read_response(&mut r);
    assert_eq!(code, 504, "{text}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(
        wait_for(Duration::from_secs(5), || backend_json(&s)["http_timeouts"]
            == 1)
        .is_some(),
        "{}",
        backend_json(&s)
    );
}

/// RFC 9113 §3.4: the HTTP/2 preface is recognised however it is split
/// across packets; the server answers with its SETTINGS frame.
fn rfc9113_3_4_an_h2c_preface_split_across_writes_starts_http2() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "")
    ));
    let mut c = TcpStream::connect(vip(&s)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(b"PRI * HTTP/2.0\r\n").expect("write");
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(b"\r\nSM\r\n\r\n").expect("write");
    // An empty SETTINGS frame.
    c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).expect("write");
    let mut frame = [0u8; 9];
    c.read_exact(&mut frame).expect("a frame back");
    assert_eq!(
        frame[3], 4,
        "the server's first frame is SETTINGS: {frame:?}"
    );
}

/// RFC 9110 §15: a status code is three digits from 100; a backend that
/// answers "040" gives 502 and is counted.
fn rfc9110_15_a_backend_status_below_100_gives_502() {
    let be = bad_backend("127.0.1.11", |c| {
        let _ = c.write_all(b"HTTP/1.1 040 odd\r\ncontent-length: 0\r\n\r\n");
    });
    let s = start(&format!(
        "{}{}",
        group("g", "", &[be]),
        http_listener("g", "retries = 0")
    ));
    let (out, _) = raw_exchange(
        vip(&s),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert_eq!(backend_json(&s)["http_errors"], 1);
}

/// RFC 9110 §6.6.1: a response forwarded without a `Date` gets one (the
/// backend here sends none), one that has it keeps its own, and the tier's
/// own answers (a fixed response, an error) carry one.
fn rfc9110_6_6_1_responses_carry_a_date() {
    let dated = bad_backend("127.0.1.12", |c| {
        let _ = c.write_all(
            b"HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 2\r\n\r\nok",
        );
    });
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}{}",
        group("ga", "", &[a.addr]),
        group("gd", "", &[dated]),
        http_listener(
            "ga",
            "routes = [\n  { path_prefix = \"/down\", respond = { status = 503, body = \"maintenance\" } },\n  { path_prefix = \"/dated\", group = \"gd\" },\n]"
        )
    ));
    let date_of = |head: &str| -> Vec<String> {
        head.lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("date:"))
            .map(|l| l[5..].trim().to_string())
            .collect()
    };
    let gmt = |d: &[String]| d.len() == 1 && httpdate::parse_http_date(&d[0]).is_ok();
    let (code, resp) = get(vip(&s), "www.example.com", "/", "");
    assert_eq!(code, 200, "{resp}");
    assert!(gmt(&date_of(&resp)), "{resp}");
    let (code, resp) = get(vip(&s), "www.example.com", "/dated", "");
    assert_eq!(code, 200, "{resp}");
    assert_eq!(date_of(&resp), ["Sun, 06 Nov 1994 08:49:37 GMT"], "{resp}");
    let (code, resp) = get(vip(&s), "www.example.com", "/down", "");
    assert_eq!(code, 503, "{resp}");
    assert!(gmt(&date_of(&resp)), "{resp}");
    let (code, resp) = request(vip(&s), "GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
    assert_eq!(code, 400, "{resp}");
    assert!(gmt(&date_of(&resp)), "{resp}");
}

/// A 64 MB POST to `path`, the body sent from a thread of its own for as
/// long as the proxy takes it, while the answer is read: status and text.
fn upload(addr: SocketAddr, path: &str) -> (u16, String) {
    const LEN: usize = 64_000_000;
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
    )
    .expect("head");
    let mut w = c.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'u'; 64 * 1024];
        let mut sent = 0;
        while sent < LEN && w.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
    });
    let answer = read_response(&mut BufReader::new(c));
    let _ = sender.join();
    answer
}

/// A backend that answers a large upload before reading it (an early 413,
/// as a size or auth check does) and closes: its answer reaches the client
/// whole, the rest of the body is not waited for, and the backend is not
/// blamed (the native engine; RFC 9112 §9.6 for the close).
#[test]
fn an_early_answer_to_an_upload_reaches_the_client() {
    let l = std::net::TcpListener::bind("127.0.1.11:0").expect("bind");
    let be = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                // The head only, then the answer and the close.
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                let _ = c.write_all(
                    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 10\r\nconnection: close\r\n\r\ntoo large\n",
                );
                // Closed at once, the body unread: the kernel resets the
                // connection right behind the answer.
                let _ = c.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    let s = start(&format!(
        "{}{}",
        group("g", "", &[be]),
        http_listener("g", "")
    ));
    for _ in 0..20 {
        let started = Instant::now();
        let (code, resp) = upload(vip(&s), "/upload");
        assert_eq!(code, 413, "{resp}");
        assert!(resp.ends_with("\ntoo large\n"), "{resp}");
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{resp}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    let b = backend_json(&s);
    assert_eq!(b["http_errors"], 0, "{b}");
    assert_eq!(b["http_timeouts"], 0, "{b}");
}

/// A local answer (a fixed response) to a large upload reaches the client
/// whole without waiting for the body, and no backend sees the request
/// (the native engine; it closes with a lingering read, which loopback
/// cannot show the need of: here the answer is read before any reset).
#[test]
fn a_fixed_answer_to_an_upload_reaches_the_client_whole() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener(
            "g",
            "routes = [{ path_prefix = \"/down\", respond = { status = 503, body = \"maintenance\" } }]"
        )
    ));
    for _ in 0..20 {
        let (code, resp) = upload(vip(&s), "/down");
        assert_eq!(code, 503, "{resp}");
        assert!(resp.ends_with("maintenance"), "{resp}");
    }
    assert_eq!(a.hits.load(Ordering::Relaxed), 0);
}

/// RFC 9110 §15.2: a proxy passes interim responses on (the native
/// engine; hyper's client drops them).
#[test]
fn rfc9110_15_2_interim_responses_reach_the_client_before_the_final_one() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "")
    ));
    let (out, clean) = raw_exchange(
        vip(&s),
        "GET /hints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(clean, "{out}");
    let first = out.find("HTTP/1.1 103").expect("a 103");
    let second = out[first + 1..].find("HTTP/1.1 103").expect("two 103s") + first + 1;
    let last = out.find("HTTP/1.1 200").expect("the final answer");
    assert!(first < second && second < last, "{out}");
    assert!(
        out[..second].contains("link: </style.css>; rel=preload\r\n"),
        "{out}"
    );
    // Only the final head carries what the tier adds to one.
    assert!(
        !out[..last]
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{out}"
    );
    assert!(!out[..last].to_ascii_lowercase().contains("date:"), "{out}");
    assert!(out.ends_with("\r\n\r\nhints"), "{out}");
}

/// RFC 9112 §6.3: a response framed by a transfer coding runs to the
/// close whatever its Content-Length says; the client is not given that
/// length (it would cut the body short).
#[test]
fn rfc9112_6_3_a_backend_content_length_beside_transfer_encoding_is_not_passed_on() {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", "")
    ));
    let (out, _) = raw_exchange(vip(&s), "GET /te-gzip HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = out.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, "z".repeat(100));
}

/// Each test above, once per engine.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod on_native {
            $(
                #[test]
                fn $name() {
                    super::ENGINE.with(|e| e.set("native"));
                    super::$name();
                }
            )*
        }
        mod on_hyper {
            $(
                #[test]
                fn $name() {
                    super::ENGINE.with(|e| e.set("hyper"));
                    super::$name();
                }
            )*
        }
    };
}

on_both_engines!(
    rfc9110_6_6_1_responses_carry_a_date,
    rfc9110_15_a_backend_status_below_100_gives_502,
    rfc9113_3_4_an_h2c_preface_split_across_writes_starts_http2,
    a_backend_that_stops_reading_the_request_body_gives_504,
    a_response_streaming_from_a_drained_backend_is_cut_at_the_drain_deadline,
    rfc9112_7_1_chunked_bodies_pass_both_ways_and_a_pipelined_request_follows,
    rfc9112_7_1_a_request_with_broken_chunk_framing_gets_400_and_the_connection_closes,
    rfc9112_7_1_a_backend_that_breaks_chunk_framing_aborts_the_response_and_is_counted,
    rfc9112_5_2_obs_fold_and_whitespace_before_the_colon_get_400,
    requests_outside_the_common_case_are_served_on_the_same_connection,
    requests_are_routed_by_host_path_and_header_and_fixed_responses_answer_directly,
    rfc9110_7_6_1_forwarding_headers_are_set_and_hop_by_hop_fields_are_not_forwarded,
    a_dead_backend_is_retried_for_replayable_requests_and_a_post_with_a_body_is_not,
    a_backend_without_response_headers_in_time_gives_504,
    repeated_5xx_eject_a_backend_and_retry_on_statuses_go_to_another,
    a_503_in_retry_on_is_tried_on_another_backend,
    a_retry_budget_keeps_retries_from_multiplying_an_outage,
    h2c_with_prior_knowledge_is_proxied_to_http1_backends,
    malformed_and_smuggling_requests_get_400_and_never_reach_a_backend,
    rfc9112_6_3_a_content_length_transfer_encoding_conflict_cannot_smuggle_a_request,
    cookie_persistence_keeps_a_client_on_its_backend_fails_over_and_re_sticks,
    a_drained_backend_keeps_its_sticky_clients_only_with_drain_sticky,
    source_persistence_keeps_an_address_on_its_backend_until_it_fails,
    hash_persistence_on_a_header_sends_each_key_to_one_backend,
    rate_limits_answer_429_with_retry_after_and_spare_exempt_clients,
    rfc6455_4_websocket_upgrade_is_passed_through_and_frames_flow_both_ways,
    a_backend_that_answers_garbage_gives_502_and_is_counted,
    a_backend_that_breaks_a_body_off_aborts_the_response_and_is_counted,
    a_backend_that_stalls_mid_body_is_cut_after_response_timeout_and_counted,
    a_request_body_that_does_not_arrive_in_time_gets_408_and_does_not_blame_the_backend,
    a_slowloris_client_is_cut_by_the_header_timeout_and_never_reaches_a_backend,
    a_removed_listener_sends_goaway_to_http2_and_closes_idle_http1_connections_within_its_window,
    explain_http_names_the_rule_group_persistence_and_the_backend_the_next_request_gets,
    each_route_counts_responses_by_class_retries_and_latency_across_a_reload,
    the_access_log_has_one_line_per_request_and_is_reopened_by_a_reload,
    cli_status_shows_http_counts_and_routes_and_explain_http_answers,
    an_idle_keep_alive_connection_gives_its_buffers_back_and_serves_its_next_requests,
    rfc9110_15_5_9_a_request_head_not_complete_within_header_timeout_gets_408,
    keep_alive_connections_to_backends_are_reused_and_one_the_backend_closed_is_not_a_failure,
    a_backend_whose_success_rate_is_an_outlier_is_ejected_and_gets_no_more_requests,
);

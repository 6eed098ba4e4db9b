//! The native HTTP/2 server end to end, frame by frame: a raw HTTP/2
//! client (HPACK from `geolb::tier::hpack`) against a real server and real
//! HTTP/1.1 backends on loopback (region eu on 127.0.1.0/24). Multiplexed
//! streams, cookie fields, malformed requests, the stream limit, flow
//! control both ways, connection errors, resets, the idle timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use geolb::tier::hpack;

use crate::tier_http::{group, http_listener, start, tier_status, vip, HttpBe};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types and flags (RFC 9113 §6).
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

struct Frame {
    ty: u8,
    flags: u8,
    id: u32,
    payload: Vec<u8>,
}

/// What became of a stream.
#[derive(Debug, Default)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// RST_STREAM's error code, when the stream was reset.
    reset: Option<u32>,
}

/// A raw HTTP/2 client connection.
struct H2 {
    s: TcpStream,
    dec: hpack::Decoder,
    /// GOAWAY's error code, once one came.
    goaway: Option<u32>,
    /// Frames of streams not asked about yet.
    held: std::collections::VecDeque<Frame>,
}

impl H2 {
    fn connect(addr: SocketAddr) -> H2 {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut c = H2 {
            s,
            dec: hpack::Decoder::new(4096),
            goaway: None,
            held: Default::default(),
        };
        c.raw(PREFACE);
        c.send(SETTINGS, 0, 0, &[]);
        c
    }

    fn raw(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("write");
    }

    fn send(&mut self, ty: u8, flags: u8, id: u32, payload: &[u8]) {
        let l = (payload.len() as u32).to_be_bytes();
        let mut f = vec![l[1], l[2], l[3], ty, flags];
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(payload);
        self.raw(&f);
    }

    /// The next frame, None at the end of the connection.
    fn frame(&mut self) -> Option<Frame> {
        let mut h = [0u8; 9];
        self.s.read_exact(&mut h).ok()?;
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let mut payload = vec![0u8; len];
        self.s.read_exact(&mut payload).ok()?;
        let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        Some(Frame {
            ty: h[3],
            flags: h[4],
            id,
            payload,
        })
    }

    /// A request on stream `id`: pseudo-headers, then `fields`.
    fn request(&mut self, id: u32, method: &str, path: &str, fields: &[(&str, &str)], end: bool) {
        let mut b = Vec::new();
        for (n, v) in [
            (":method", method),
            (":scheme", "http"),
            (":path", path),
            (":authority", "www.example.com"),
        ] {
            hpack::encode_field(n.as_bytes(), v.as_bytes(), &mut b);
        }
        for (n, v) in fields {
            hpack::encode_field(n.as_bytes(), v.as_bytes(), &mut b);
        }
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        self.send(HEADERS, flags, id, &b);
    }

    fn get(&mut self, id: u32, path: &str) -> Answer {
        self.request(id, "GET", path, &[], true);
        self.answer(id)
    }

    /// Reads frames until stream `id` ends (END_STREAM or RST_STREAM),
    /// holding frames of other streams for later; connection frames are
    /// answered (SETTINGS acknowledged).
    fn answer(&mut self, id: u32) -> Answer {
        let mut a = Answer::default();
        // Frames held earlier for this stream first.
        let held = std::mem::take(&mut self.held);
        let mut mine = std::collections::VecDeque::new();
        for f in held {
            if f.id == id {
                mine.push_back(f);
            } else {
                self.held.push_back(f);
            }
        }
        loop {
            let f = match mine.pop_front() {
                Some(f) => f,
                None => match self.frame() {
                    Some(f) => f,
                    None => panic!(
                        "the connection ended before stream {id} did: {a:?}, GOAWAY {:?}",
                        self.goaway
                    ),
                },
            };
            if f.id != 0 && f.id != id {
                self.held.push_back(f);
                continue;
            }
            if self.on_frame(id, f, &mut a) {
                return a;
            }
        }
    }

    /// One frame of stream `id` or of the connection: whether the stream
    /// ended with it.
    fn on_frame(&mut self, id: u32, f: Frame, a: &mut Answer) -> bool {
        match f.ty {
            SETTINGS if f.flags & 1 == 0 => self.send(SETTINGS, 1, 0, &[]),
            GOAWAY => self.goaway = Some(be32(&f.payload[4..8])),
            HEADERS if f.id == id => {
                let (mut out, mut fields) = (Vec::new(), Vec::new());
                self.dec
                    .decode(&f.payload, 1 << 20, &mut out, &mut fields)
                    .expect("the server's HPACK");
                for fl in &fields {
                    let (n, v) = (
                        String::from_utf8_lossy(fl.name(&out)).into_owned(),
                        String::from_utf8_lossy(fl.value(&out)).into_owned(),
                    );
                    if n == ":status" {
                        a.status = v.parse().unwrap_or(0);
                    } else {
                        a.headers.push((n, v));
                    }
                }
                // (An interim 1xx is followed by the final head.)
                return f.flags & END_STREAM != 0;
            }
            DATA if f.id == id => {
                a.body.extend_from_slice(&f.payload);
                if !f.payload.is_empty() {
                    // Room for more, on the stream and the connection.
                    let n = (f.payload.len() as u32).to_be_bytes();
                    self.send(WINDOW_UPDATE, 0, id, &n);
                    self.send(WINDOW_UPDATE, 0, 0, &n);
                }
                return f.flags & END_STREAM != 0;
            }
            RST_STREAM if f.id == id => {
                a.reset = Some(be32(&f.payload));
                return true;
            }
            _ => {}
        }
        false
    }

    /// Reads until GOAWAY, then the end: GOAWAY's error code.
    fn goaway_and_end(&mut self) -> u32 {
        while let Some(f) = self.frame() {
            if f.ty == GOAWAY {
                self.goaway = Some(be32(&f.payload[4..8]));
            }
        }
        self.goaway.expect("a GOAWAY before the end")
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
    a.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn one_backend(listener: &str) -> (HttpBe, crate::common::TestServer) {
    let a = HttpBe::start("127.0.1.11", "a");
    let s = start(&format!(
        "{}{}",
        group("g", "", &[a.addr]),
        http_listener("g", listener)
    ));
    (a, s)
}

#[test]
fn rfc9113_8_2_3_streams_multiplex_and_split_cookie_fields_reach_the_backend_as_one() {
    let (a, s) = one_backend("");
    let mut c = H2::connect(vip(&s));
    // Stream 3 goes out before stream 1 is answered.
    c.request(
        1,
        "GET",
        "/one?x=1",
        &[("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2")],
        true,
    );
    c.request(3, "GET", "/three", &[], true);
    let one = c.answer(1);
    let three = c.answer(3);
    assert_eq!(one.status, 200, "{one:?}");
    let body = String::from_utf8_lossy(&one.body);
    assert!(body.starts_with("a GET /one?x=1 "), "{body}");
    assert!(body.contains("\ncookie: a=1; b=2\n"), "{body}");
    // The backend gets HTTP/1.1 with a Host made from :authority.
    assert!(body.contains("\nhost: www.example.com\n"), "{body}");
    assert!(body.contains("\nx-forwarded-proto: http\n"), "{body}");
    // Connection-specific fields do not cross into HTTP/2 (RFC 9113 §8.2.2).
    assert_eq!(header(&one, "connection"), None, "{one:?}");
    assert_eq!(header(&one, "x-hop"), None, "{one:?}");
    assert_eq!(
        header(&one, "content-length").map(str::to_string),
        Some(one.body.len().to_string())
    );
    assert!(String::from_utf8_lossy(&three.body).starts_with("a GET /three "));
    assert_eq!(a.hits.load(Ordering::Relaxed), 2);
    // HEAD: the head alone, ended on HEADERS.
    c.request(5, "HEAD", "/h", &[], true);
    let head = c.answer(5);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["requests"], 3, "{t}");
    assert_eq!(t["listeners"][0]["h2_streams"], 3, "{t}");
}

#[test]
fn rfc9113_8_1_1_malformed_requests_are_reset_and_never_reach_a_backend() {
    let (a, s) = one_backend("");
    let mut c = H2::connect(vip(&s));
    let bad: &[&[(&str, &str)]] = &[
        &[("Accept", "*/*")],                 // upper case name (§8.2.1)
        &[("connection", "keep-alive")],      // connection-specific (§8.2.2)
        &[("transfer-encoding", "chunked")],  // the same
        &[("te", "gzip")],                    // TE other than trailers
        &[("x-a", "one\r\nx-injected: 1")],   // CR LF in a value
        &[("x-a", " padded")],                // leading white space
        &[("host", "elsewhere.example.com")], // Host other than :authority
        &[("content-length", "5"), ("content-length", "6")],
    ];
    let mut id = 1;
    for fields in bad {
        c.request(id, "GET", "/", fields, true);
        let r = c.answer(id);
        assert_eq!(r.reset, Some(1), "{fields:?}: {r:?}"); // PROTOCOL_ERROR
        id += 2;
    }
    // A pseudo-header after a regular field, and one missing :path.
    let mut b = Vec::new();
    hpack::encode_field(b":method", b"GET", &mut b);
    hpack::encode_field(b":scheme", b"http", &mut b);
    hpack::encode_field(b"accept", b"*/*", &mut b);
    hpack::encode_field(b":path", b"/", &mut b);
    c.send(HEADERS, END_HEADERS | END_STREAM, id, &b);
    assert_eq!(c.answer(id).reset, Some(1));
    id += 2;
    // A path that is no HTTP/1.1 request target: 400 from the request loop.
    c.request(id, "GET", "/a b", &[], true);
    assert_eq!(c.answer(id).status, 400);
    id += 2;
    // CONNECT is not served.
    let mut b = Vec::new();
    hpack::encode_field(b":method", b"CONNECT", &mut b);
    hpack::encode_field(b":authority", b"example.com:443", &mut b);
    c.send(HEADERS, END_HEADERS | END_STREAM, id, &b);
    assert_eq!(c.answer(id).status, 501);
    id += 2;
    assert_eq!(a.hits.load(Ordering::Relaxed), 0);
    // The connection still serves.
    assert_eq!(c.get(id, "/fine").status, 200);
    assert_eq!(a.hits.load(Ordering::Relaxed), 1);
    // Counted: the nine resets, the streams that reached the request loop
    // (the bad path, the final request) and none refused.
    let t = tier_status(&s);
    let l = &t["listeners"][0];
    assert_eq!(l["h2_stream_errors"], 9, "{t}");
    assert_eq!(l["h2_streams"], 2, "{t}");
    assert_eq!(l["h2_refused"], 0, "{t}");
    assert_eq!(l["h2_connection_errors"], 0, "{t}");
}

#[test]
fn rfc9113_5_1_2_streams_past_max_concurrent_streams_are_refused() {
    let (a, s) = one_backend("");
    let mut c = H2::connect(vip(&s));
    // The server's SETTINGS say 100.
    let f = c.frame().expect("settings");
    assert_eq!(f.ty, SETTINGS);
    let max = f
        .payload
        .chunks(6)
        .find(|p| p[..2] == [0, 3])
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
        .expect("SETTINGS_MAX_CONCURRENT_STREAMS");
    assert_eq!(max, 100);
    for i in 0..=max {
        c.request(1 + 2 * i, "GET", "/sleep/300", &[], true);
    }
    // The 101st is refused at once; the others are answered.
    let over = c.answer(1 + 2 * max);
    assert_eq!(over.reset, Some(7), "{over:?}"); // REFUSED_STREAM
    for i in 0..max {
        assert_eq!(c.answer(1 + 2 * i).status, 200);
    }
    assert_eq!(a.hits.load(Ordering::Relaxed), max as usize);
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["h2_refused"], 1, "{t}");
}

#[test]
fn rfc9113_6_9_bodies_larger_than_the_windows_pass_intact_both_ways() {
    let (a, s) = one_backend("");
    let mut c = H2::connect(vip(&s));
    // A response of 300 000 bytes, chunked by the backend: de-chunked into
    // DATA frames within the client's windows (65 535 each, opened as the
    // client reads).
    let big = c.get(1, "/chunked/300000");
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 300_000);
    assert!(big.body.iter().all(|&b| b == b'x'));
    assert_eq!(header(&big, "transfer-encoding"), None);
    // A request body of 200 000 bytes with Content-Length, and one with
    // none (it goes on chunked): sent as the server's windows allow.
    for (id, cl) in [(3u32, true), (5, false)] {
        let len = 200_000;
        let fields: &[(&str, &str)] = if cl {
            &[("content-length", "200000")]
        } else {
            &[]
        };
        c.request(id, "POST", "/upload", fields, false);
        let mut sent = 0usize;
        let mut stream_window = 65_535i64;
        let mut answer = None;
        while sent < len {
            let n = (len - sent).min(16_384).min(stream_window.max(0) as usize);
            if n > 0 {
                let end = if sent + n == len { END_STREAM } else { 0 };
                c.send(DATA, end, id, &vec![b'y'; n]);
                sent += n;
                stream_window -= n as i64;
                continue;
            }
            // Wait for the server to open the window.
            let f = c.frame().expect("a frame");
            match f.ty {
                WINDOW_UPDATE if f.id == id => {
                    stream_window += i64::from(be32(&f.payload));
                }
                HEADERS | RST_STREAM if f.id == id => {
                    answer = Some(f.ty);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(answer, None, "the server answered before the body ended");
        let r = c.answer(id);
        assert_eq!(r.status, 200, "{r:?}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.starts_with("a POST /upload body=200000\n"), "{body}");
        if !cl {
            assert!(body.contains("\ntransfer-encoding: chunked\n"), "{body}");
        }
    }
    assert_eq!(a.hits.load(Ordering::Relaxed), 3);
}

#[test]
fn rfc9113_4_3_5_4_1_connection_errors_end_the_connection_with_goaway() {
    let (a, s) = one_backend("");
    let l = vip(&s);
    // PING is answered with the same payload.
    let mut c = H2::connect(l);
    c.send(PING, 0, 0, b"12345678");
    loop {
        let f = c.frame().expect("frame");
        if f.ty == PING {
            assert_eq!(f.flags, 1);
            assert_eq!(f.payload, b"12345678");
            break;
        }
    }
    // SETTINGS_ENABLE_PUSH of 2: PROTOCOL_ERROR (§6.5.2).
    let mut c = H2::connect(l);
    c.send(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2]);
    assert_eq!(c.goaway_and_end(), 1);
    // A frame above SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR (§4.2).
    let mut c = H2::connect(l);
    c.send(DATA, 0, 1, &vec![0u8; 16_385]);
    assert_eq!(c.goaway_and_end(), 6);
    // A header block HPACK cannot decode: COMPRESSION_ERROR (§4.3).
    let mut c = H2::connect(l);
    c.send(HEADERS, END_HEADERS | END_STREAM, 1, &[0x80]);
    assert_eq!(c.goaway_and_end(), 9);
    // PADDED with no room for the pad length: PROTOCOL_ERROR (§6.2), on
    // HEADERS and on DATA.
    let mut c = H2::connect(l);
    c.send(HEADERS, END_HEADERS | 0x8, 1, &[]);
    c.send(PING, 0, 0, b"12345678");
    assert_eq!(c.goaway_and_end(), 1);
    let mut c = H2::connect(l);
    c.request(1, "POST", "/", &[], false);
    c.send(DATA, 0x8, 1, &[]);
    assert_eq!(c.goaway_and_end(), 1);
    // A stream identifier going backwards: PROTOCOL_ERROR (§5.1.1).
    let mut c = H2::connect(l);
    assert_eq!(c.get(5, "/").status, 200);
    c.request(3, "GET", "/", &[], true);
    assert_eq!(c.goaway_and_end(), 1);
    // HEADERS on a stream that has ended: STREAM_CLOSED (§5.1).
    let mut c = H2::connect(l);
    assert_eq!(c.get(1, "/").status, 200);
    // (Once the server has let the stream go.)
    std::thread::sleep(Duration::from_millis(100));
    c.request(1, "GET", "/", &[], true);
    assert_eq!(c.goaway_and_end(), 5);
    // No preface: the connection is not HTTP/2 and ends.
    let mut raw = TcpStream::connect(l).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        .expect("write");
    let mut all = Vec::new();
    let _ = raw.read_to_end(&mut all);
    assert_eq!(a.hits.load(Ordering::Relaxed), 2);
    // Counted: each connection that ended with an error code.
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["h2_connection_errors"], 7, "{t}");
}

#[test]
fn a_reset_stream_leaves_the_connection_serving_its_other_streams() {
    let (a, s) = one_backend("");
    let mut c = H2::connect(vip(&s));
    // Reset at once: it never reaches a backend.
    c.request(1, "GET", "/sleep/300", &[], true);
    c.send(RST_STREAM, 0, 1, &8u32.to_be_bytes()); // CANCEL
                                                   // Reset once the backend has it: it runs out there (as a request from
                                                   // a client that went away), and its route counts it as done.
    c.request(3, "GET", "/sleep/300", &[], true);
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.hits.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    c.send(RST_STREAM, 0, 3, &8u32.to_be_bytes());
    let r = c.get(5, "/after");
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).starts_with("a GET /after "));
    // Trailers on the reset stream are dropped; the connection goes on.
    let mut b = Vec::new();
    hpack::encode_field(b"x-trailer", b"1", &mut b);
    c.send(HEADERS, END_HEADERS | END_STREAM, 3, &b);
    assert_eq!(c.get(7, "/again").status, 200);
    loop {
        let t = tier_status(&s);
        let route = &t["listeners"][0]["routes"][0];
        if route["active"] == 0 && route["requests"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.hits.load(Ordering::Relaxed), 3);
}

#[test]
fn an_idle_http2_connection_gets_goaway_after_the_header_timeout() {
    let (_a, s) = one_backend("header_timeout = \"400ms\"");
    let mut c = H2::connect(vip(&s));
    assert_eq!(c.get(1, "/").status, 200);
    let t0 = Instant::now();
    assert_eq!(c.goaway_and_end(), 0); // NO_ERROR
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    let t = tier_status(&s);
    assert_eq!(t["listeners"][0]["idle_closed"], 1, "{t}");
}

#[test]
fn rfc9113_6_5_2_a_header_list_over_the_limit_gets_431_and_the_connection_stays_in_step() {
    let (a, s) = one_backend("");
    let mut c = H2::connect(vip(&s));
    // 40 000 bytes of fields (the server allows 32 KiB), one entered in
    // the dynamic table: the block is decoded whole, answered 431 …
    let mut b = Vec::new();
    for (n, v) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/big"),
        (":authority", "www.example.com"),
    ] {
        hpack::encode_field(n.as_bytes(), v.as_bytes(), &mut b);
    }
    // A literal with incremental indexing (RFC 7541 §6.2.1), new name.
    b.extend_from_slice(&[0x40, 0x06]);
    b.extend_from_slice(b"x-seen");
    b.extend_from_slice(&[0x03]);
    b.extend_from_slice(b"yes");
    let big = "v".repeat(40_000);
    hpack::encode_field(b"x-big", big.as_bytes(), &mut b);
    let (first, rest) = b.split_at(16_000);
    c.send(HEADERS, END_STREAM, 1, first);
    let mut chunks = rest.chunks(16_000).peekable();
    while let Some(chunk) = chunks.next() {
        let end = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        c.send(9, end, 1, chunk); // CONTINUATION
    }
    assert_eq!(c.answer(1).status, 431);
    // … and the next request may refer to the entry it added (index 62).
    let mut b = Vec::new();
    for (n, v) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/after"),
        (":authority", "www.example.com"),
    ] {
        hpack::encode_field(n.as_bytes(), v.as_bytes(), &mut b);
    }
    b.push(0x80 | 62);
    c.send(HEADERS, END_HEADERS | END_STREAM, 3, &b);
    let r = c.answer(3);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("\nx-seen: yes\n"));
    assert_eq!(a.hits.load(Ordering::Relaxed), 1);
}

#[test]
fn a_client_that_stops_reading_is_held_back_and_then_gets_every_byte() {
    let (_a, s) = one_backend("");
    let mut c = H2::connect(vip(&s));
    // Windows as large as they go: only the server's own bound on output
    // waiting for the client holds the responses back.
    let mut settings = vec![0u8, 4];
    settings.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    c.send(SETTINGS, 0, 0, &settings);
    c.send(
        WINDOW_UPDATE,
        0,
        0,
        &(0x7fff_ffffu32 - 65_535).to_be_bytes(),
    );
    for id in [1, 3, 5] {
        c.request(id, "GET", "/chunked/2000000", &[], true);
    }
    // Nothing read for a while: the socket buffers fill, then the server's.
    std::thread::sleep(Duration::from_millis(500));
    for id in [1, 3, 5] {
        let r = c.answer(id);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 2_000_000, "stream {id}");
    }
    // The connection still serves.
    assert_eq!(c.get(7, "/").status, 200);
}

#[test]
fn rfc9113_8_1_trailers_pass_both_ways_and_a_body_broken_off_resets_its_stream() {
    let (_a, s) = one_backend("");
    let mut c = H2::connect(vip(&s));
    // A chunked response's trailers: a HEADERS frame that ends the stream,
    // without the fields no trailer may carry (RFC 9110 §6.5.1).
    let t = c.get(1, "/trailers");
    assert_eq!((t.status, t.reset), (200, None), "{t:?}");
    assert_eq!(t.body, b"hello");
    assert_eq!(header(&t, "grpc-status"), Some("0"), "{t:?}");
    assert_eq!(header(&t, "x-checksum"), Some("abc"), "{t:?}");
    assert_eq!(header(&t, "content-length"), None, "{t:?}");

    // A request's trailers, after a body of unknown length: the chunked
    // body's trailer section, framing and routing fields dropped.
    c.request(3, "POST", "/upload", &[], false);
    c.send(DATA, 0, 3, b"abc");
    let mut tr = Vec::new();
    hpack::encode_field(b"x-sum", b"42", &mut tr);
    hpack::encode_field(b"host", b"elsewhere.example", &mut tr);
    c.send(HEADERS, END_HEADERS | END_STREAM, 3, &tr);
    let r = c.answer(3);
    assert_eq!(r.status, 200, "{r:?}");
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.starts_with("a POST /upload body=3\n"), "{body}");
    assert!(body.contains("\ntrailer.x-sum: 42\n"), "{body}");
    assert!(!body.contains("trailer.host"), "{body}");

    // A body delimited by the backend's close and broken off by a reset:
    // the stream is reset, not ended as if whole.
    let cut = c.get(5, "/cut/1000");
    assert_eq!(cut.status, 200, "{:?}", cut.reset);
    assert_eq!(
        cut.reset,
        Some(2),
        "INTERNAL_ERROR, not an END_STREAM after {} bytes",
        cut.body.len()
    );
    assert!(cut.body.len() <= 1000, "{}", cut.body.len());

    // The connection goes on serving.
    let again = c.get(7, "/trailers");
    assert_eq!((again.status, again.reset), (200, None), "{again:?}");
}

#[test]
fn rfc9113_8_1_interim_responses_go_ahead_of_the_final_head_and_a_transfer_coded_body_runs_whole() {
    let (_a, s) = one_backend("");
    let mut c = H2::connect(vip(&s));
    // Two 103s from the backend: HEADERS frames of their own, then the
    // final head and the body.
    let h = c.get(1, "/hints");
    assert_eq!((h.status, h.reset), (200, None), "{h:?}");
    assert_eq!(h.body, b"hints");
    let links: Vec<_> = h.headers.iter().filter(|(n, _)| n == "link").collect();
    assert_eq!(links.len(), 2, "{h:?}");
    // A gzip transfer coding beside a Content-Length of 3: the body runs
    // to the backend's close, all 100 bytes, with no length given.
    let z = c.get(3, "/te-gzip");
    assert_eq!((z.status, z.reset), (200, None), "{z:?}");
    assert_eq!(z.body, vec![b'z'; 100]);
    assert_eq!(header(&z, "content-length"), None, "{z:?}");
}

#[test]
fn rfc9113_6_1_padded_data_is_credited_back_to_the_stream_window() {
    let (_a, s) = one_backend("");
    let mut c = H2::connect(vip(&s));
    // 200 000 bytes in DATA frames each padded with 255 bytes: the padding
    // counts against both windows and must come back with the data, or
    // the stream's window runs dry after a few hundred frames.
    let len = 200_000usize;
    c.request(1, "POST", "/upload", &[("content-length", "200000")], false);
    let (mut sent, mut window) = (0usize, 65_535i64);
    let mut answer = None;
    while sent < len {
        let n = (len - sent).min(512);
        let cost = (n + 256) as i64;
        if window >= cost {
            let mut payload = vec![255u8];
            payload.extend(std::iter::repeat_n(b'p', n));
            payload.extend(std::iter::repeat_n(0u8, 255));
            let end = if sent + n == len { END_STREAM } else { 0 };
            c.send(DATA, end | 0x8, 1, &payload);
            sent += n;
            window -= cost;
            continue;
        }
        let f = c.frame().expect("a frame (the window stayed shut)");
        match f.ty {
            WINDOW_UPDATE if f.id == 1 => window += i64::from(be32(&f.payload)),
            HEADERS | RST_STREAM if f.id == 1 => {
                answer = Some(f.ty);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(answer, None, "the server answered before the body ended");
    let r = c.answer(1);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.body).starts_with("a POST /upload body=200000\n"),
        "{r:?}"
    );
}

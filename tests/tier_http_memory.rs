//! What an idle keep-alive HTTP client costs the tier, in a test binary of
//! its own: RSS is per process, and other tests running beside it would
//! count.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;

const ZONE: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n";

/// A keep-alive backend answering `ok` to every request.
fn backend(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            std::thread::spawn(move || {
                let mut w = c.try_clone().expect("clone");
                let mut r = BufReader::new(c);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line.trim_end().is_empty()
                        && w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads one response (status, Content-Length body).
fn read_response(r: &mut BufReader<TcpStream>) -> u16 {
    let mut status = String::new();
    r.read_line(&mut status).expect("status line");
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim_end().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn tier_status(s: &TestServer) -> serde_json::Value {
    let (code, body) = http(s.admin.expect("admin"), "GET", "/v1/tier");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

fn vip(s: &TestServer) -> SocketAddr {
    *s.server().tier.local_addrs().get("h").expect("listener h")
}

/// A server with backends on 127.0.1.11 and .12 behind listener `h` with
/// `listener` settings.
fn two_backends(listener: &str) -> TestServer {
    let (a, b) = (backend("127.0.1.11"), backend("127.0.1.12"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), ZONE).expect("w");
    let cfg = format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n\
         [zones.\"example.com\"]\nfile = \"example.com.zone\"\n\
         [regions.eu]\nlocation = [50.1, 8.7]\n\
         [pools.eu-web]\nregion = \"eu\"\nendpoints = [{{ address = \"127.0.1.1\" }}]\n\
         [groups.g]\nregion = \"eu\"\nalgorithm = \"round_robin\"\nmembers = [{{ address = \"{a}\" }}, {{ address = \"{b}\" }}]\n\
         [listeners.h]\nregion = \"eu\"\nbind = \"127.0.1.1:0\"\nmode = \"http\"\ngroup = \"g\"\n{listener}\n"
    );
    std::fs::write(dir.path().join("geolb.toml"), cfg).expect("w");
    TestServer::start_dir(dir)
}

#[cfg(target_os = "linux")]
#[test]
fn idle_keep_alive_http_connections_cost_a_few_kib_each() {
    let s = two_backends("header_timeout = \"60s\"\nmax_connections = 2000");
    let l = vip(&s);
    let open = |n: usize| -> Vec<BufReader<TcpStream>> {
        (0..n)
            .map(|_| {
                let mut c = TcpStream::connect(l).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    .expect("write");
                let mut r = BufReader::with_capacity(512, c);
                assert_eq!(read_response(&mut r), 200);
                r
            })
            .collect()
    };
    let all_parked = |n: usize| {
        wait_for(Duration::from_secs(10), || {
            tier_status(&s)["listeners"][0]["parked"] == n
        })
        .is_some()
    };
    // Warm up: runtime threads, their allocator arenas, the pools.
    drop(open(50));
    assert!(
        wait_for(Duration::from_secs(5), || tier_status(&s)["listeners"][0]
            ["active"]
            == 0)
        .is_some()
    );
    let before = rss_kib();
    // In batches, each parked before the next: what an idle connection
    // keeps, not what a busy one borrows.
    let n = 300;
    let mut conns = Vec::new();
    while conns.len() < n {
        conns.extend(open(50));
        assert!(all_parked(conns.len()), "every idle connection is parked");
    }
    // Freed buffers go back to the system within a second or two.
    let per = || (rss_kib().saturating_sub(before)) as f64 / n as f64;
    let settled = wait_for(Duration::from_secs(5), || per() < 6.0);
    let per = per();
    drop(conns);
    // hyper's connection buffers were ~27 KB per idle keep-alive client.
    assert!(settled.is_some(), "{per:.1} KiB per idle connection");
}

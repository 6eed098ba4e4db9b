//! DNS over TCP under abuse: a per-client-prefix connection cap beside the
//! global one (RFC 7766 §6.2.2 lets a server limit connections per
//! client), and the I/O timeout that closes a client that stalls mid-query
//! or stops reading its replies (RFC 7766 §6.2.3), so it cannot pin memory.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

fn start(server: &str) -> TestServer {
    TestServer::start_with(
        &config(server),
        &[
            ("example.com.zone", &zone_com()),
            ("example.net.zone", ZONE_NET),
        ],
    )
}

fn counter(srv: &TestServer, key: &str) -> u64 {
    let (_, body) = http(srv.admin.expect("admin"), "GET", "/v1/status");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["counters"][key].as_u64().expect("a counter")
}

fn raw(name: &str) -> Vec<u8> {
    query(name, RecordType::A).to_vec().expect("encode")
}

/// Reads until the server closes the connection (or `limit` passes);
/// true when it did.
fn closed_within(c: &mut TcpStream, limit: Duration) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let t0 = Instant::now();
    let mut buf = [0u8; 65536];
    while t0.elapsed() < limit {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true, // reset
        }
    }
    false
}

#[test]
fn rfc7766_6_2_2_a_client_prefix_has_its_own_connection_cap() {
    let srv = start("tcp_max_connections = 100\ntcp_max_connections_per_client = 2");
    let mut held: Vec<_> = (0..2).map(|_| tcp_connect(srv.dns)).collect();
    for c in held.iter_mut() {
        tcp_send(c, &raw("www.example.com."));
        assert!(tcp_read(c).is_some());
    }
    let mut extra = tcp_connect(srv.dns);
    tcp_send(&mut extra, &raw("www.example.com."));
    assert!(
        tcp_read(&mut extra).is_none(),
        "a third from the same client is closed"
    );
    assert_eq!(counter(&srv, "tcp_connections_refused_per_client"), 1);
    assert_eq!(counter(&srv, "tcp_connections_refused"), 0);
    assert_eq!(counter(&srv, "tcp_clients"), 1);
    drop(held.pop());
    let reopened = wait_for(Duration::from_secs(3), || {
        let mut c = tcp_connect(srv.dns);
        tcp_send(&mut c, &raw("www.example.com."));
        tcp_read(&mut c).is_some()
    });
    assert!(
        reopened.is_some(),
        "a closed connection gives its slot back"
    );
}

#[test]
fn rfc7766_6_2_3_a_query_that_stalls_midway_is_closed_after_the_io_timeout() {
    let srv = start("tcp_idle_timeout = \"30s\"\ntcp_io_timeout = \"300ms\"");
    let mut c = tcp_connect(srv.dns);
    // A length of 100, then 10 bytes, then nothing.
    c.write_all(&[0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .expect("write");
    let t0 = Instant::now();
    assert!(closed_within(&mut c, Duration::from_secs(5)));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "not the 30 s idle timeout"
    );
    assert_eq!(counter(&srv, "tcp_io_timeouts"), 1);
}

/// A client that pipelines queries and never reads: once the kernel's
/// buffers are full the server's write waits, and after the I/O timeout
/// the connection is closed — the server holds one reply meanwhile.
#[test]
fn rfc7766_6_2_3_a_client_that_stops_reading_is_closed_after_the_io_timeout() {
    let srv = start("tcp_idle_timeout = \"30s\"\ntcp_io_timeout = \"300ms\"");
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&srv.dns.into()).expect("connect");
    let mut c: TcpStream = sock.into();
    let mut writer = c.try_clone().expect("clone");
    // About 700 bytes of reply per query: 20 000 of them are 14 MB, far
    // more than the buffers on the way hold.
    let sender = std::thread::spawn(move || {
        writer
            .set_write_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let q = raw("many.example.com.");
        let mut frame = (q.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&q);
        for _ in 0..20_000 {
            if writer.write_all(&frame).is_err() {
                break;
            }
        }
    });
    let timed_out = wait_for(Duration::from_secs(20), || {
        counter(&srv, "tcp_io_timeouts") >= 1
    });
    assert!(timed_out.is_some(), "the stuck write was given up");
    let _ = sender.join();
    assert!(
        closed_within(&mut c, Duration::from_secs(10)),
        "and the connection closed"
    );
}

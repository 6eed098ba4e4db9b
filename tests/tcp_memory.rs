//! What an open TCP connection costs the server: its buffers are sized by
//! the messages it carries and released after large ones, so idle
//! connections hold a kilobyte or two, not a 64 KiB frame buffer each.

mod common;

use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

/// Opens `n` connections, each answered once, and keeps them open.
fn open_answered(s: &TestServer, n: usize) -> Vec<std::net::TcpStream> {
    let q = query("www.example.com.", RecordType::A)
        .to_vec()
        .expect("encode");
    (0..n)
        .map(|_| {
            let mut c = tcp_connect(s.dns);
            tcp_send(&mut c, &q);
            let r = tcp_read(&mut c).expect("a reply");
            assert_eq!(Message::from_vec(&r).expect("parses").answers.len(), 1);
            c
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn idle_tcp_connections_cost_a_few_kib_each() {
    let s = TestServer::start_with(
        &config("tcp_idle_timeout = \"60s\"\ntcp_max_connections = 2000\ntcp_max_connections_per_client = 2000"),
        &[
            ("example.com.zone", &zone_com()),
            ("example.net.zone", ZONE_NET),
        ],
    );
    // Warm up: runtime threads, their allocator arenas, the listener.
    drop(open_answered(&s, 50));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = rss_kib();
    let n = 300;
    let conns = open_answered(&s, n);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let per = (rss_kib().saturating_sub(before)) as f64 / n as f64;
    drop(conns);
    // It was 72-80 KiB with a 64 KiB frame buffer per connection.
    assert!(per < 16.0, "{per:.1} KiB per idle connection");
}

#[test]
fn rfc7766_8_large_and_small_messages_share_a_connection() {
    let s = TestServer::start();
    let mut c = tcp_connect(s.dns);
    // A 3 000-byte query (EDNS padding, RFC 7830), a 700-byte answer, then
    // small ones: the buffers grow for the large and shrink back after.
    let mut big = edns_query("www.example.com.", RecordType::A, 1232);
    if let Some(e) = big.edns.as_mut() {
        e.options_mut()
            .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                12,
                vec![0; 3000],
            ));
    }
    let many = query("many.example.com.", RecordType::A);
    let small = query("www.example.com.", RecordType::A);
    for (m, answers) in [(&big, 1), (&many, 40), (&small, 1), (&big, 1), (&small, 1)] {
        tcp_send(&mut c, &m.to_vec().expect("encode"));
        let r = Message::from_vec(&tcp_read(&mut c).expect("a reply")).expect("parses");
        assert_eq!(r.metadata.id, m.metadata.id);
        assert_eq!(r.answers.len(), answers);
    }
}

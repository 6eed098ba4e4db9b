//! UDP workers cannot die silently: after garbage, a panic while answering
//! a packet, or a panic in a worker's loop, every worker still answers.
//! (Its own test binary: the fault hook is process-wide.)

use crate::common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use geolb::dns::udp::fault::{self, Fault, FAULT_ID};
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

const WORKERS: usize = 4;

/// The fault hook is process-wide: these tests take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn server() -> TestServer {
    TestServer::start_with(
        &config("").replace("udp_workers = 2", &format!("udp_workers = {WORKERS}")),
        &[
            ("example.com.zone", &zone_com()),
            ("example.net.zone", ZONE_NET),
        ],
    )
}

/// Sends one good query from each of many source ports (the kernel spreads
/// them over the workers by hash) and reads every reply; returns the
/// workers that answered at least one of them.
fn every_worker_answers(s: &TestServer) -> BTreeSet<usize> {
    let before = s.udp_replies();
    let q = query("www.example.com.", RecordType::A)
        .to_vec()
        .expect("encode");
    for _ in 0..128 {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        sock.send_to(&q, s.dns).expect("send");
        let mut buf = [0u8; 1500];
        let n = sock.recv(&mut buf).expect("every query gets a reply");
        let m = Message::from_vec(&buf[..n]).expect("parse");
        assert_eq!(m.answers.len(), 1, "{m:?}");
    }
    let after = s.udp_replies();
    (0..after.len()).filter(|&i| after[i] > before[i]).collect()
}

fn send_from_many_ports(s: &TestServer, packet: &[u8], from: usize) {
    for _ in 0..from {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let _ = sock.send_to(packet, s.dns);
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn faulty_query() -> Vec<u8> {
    let mut q = query("www.example.com.", RecordType::A);
    q.metadata.id = FAULT_ID;
    q.to_vec().expect("encode")
}

#[test]
fn garbage_leaves_every_worker_answering() {
    let _turn = turn();
    let s = server();
    assert_eq!(s.server().dns.udp.len(), WORKERS);
    let mut seed = 0x9e3779b97f4a7c15u64;
    let base = edns_query("www.example.com.", RecordType::A, 1232)
        .to_vec()
        .expect("encode");
    for i in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut b = base.clone();
        // Flip a few bytes, sometimes truncate, sometimes extend.
        for k in 0..(1 + seed % 4) {
            let at = ((seed >> (8 * k)) as usize) % b.len();
            b[at] = (seed >> (3 * k)) as u8;
        }
        if i % 3 == 0 {
            b.truncate(((seed >> 20) as usize) % b.len() + 1);
        }
        if i % 5 == 0 {
            b.extend_from_slice(&seed.to_be_bytes());
        }
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let _ = sock.send_to(&b, s.dns);
    }
    let answered = every_worker_answers(&s);
    assert_eq!(
        answered.len(),
        WORKERS,
        "workers that answered: {answered:?}"
    );
    let r = tcp(s.dns, &query("www.example.com.", RecordType::A));
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn a_panic_while_answering_is_contained_to_its_packet_and_a_panic_in_the_loop_restarts_it() {
    let _turn = turn();
    let s = server();
    let panics = |s: &TestServer| -> u64 {
        s.server()
            .dns
            .udp
            .iter()
            .map(|w| w.panics.load(Ordering::Relaxed))
            .sum()
    };
    let restarts = |s: &TestServer| -> u64 {
        s.server()
            .dns
            .udp
            .iter()
            .map(|w| w.restarts.load(Ordering::Relaxed))
            .sum()
    };

    // A panic inside the answer step, on packets reaching every worker.
    fault::arm(Fault::Answer);
    send_from_many_ports(&s, &faulty_query(), 64);
    wait_for("the injected answer panics", || panics(&s) >= 64);
    // The faulty query gets no reply (nothing half-written goes out).
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    sock.send_to(&faulty_query(), s.dns).expect("send");
    assert!(
        sock.recv(&mut [0u8; 512]).is_err(),
        "no reply to a panicked query"
    );
    fault::arm(Fault::Off);
    let answered = every_worker_answers(&s);
    assert_eq!(answered.len(), WORKERS, "after answer panics: {answered:?}");
    assert_eq!(restarts(&s), 0, "a contained panic needs no restart");

    // A panic in the loop itself, outside any packet's answer.
    fault::arm(Fault::Loop);
    send_from_many_ports(&s, &faulty_query(), 64);
    wait_for("every worker to restart its loop", || {
        s.server()
            .dns
            .udp
            .iter()
            .all(|w| w.restarts.load(Ordering::Relaxed) > 0)
    });
    fault::arm(Fault::Off);
    let answered = every_worker_answers(&s);
    assert_eq!(answered.len(), WORKERS, "after loop panics: {answered:?}");

    // Both are visible to an operator.
    let admin: SocketAddr = s.admin.expect("admin");
    let (_, metrics) = http(admin, "GET", "/metrics");
    assert!(
        metrics.contains("geolb_udp_packets_total{result=\"panicked\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("geolb_udp_worker_restarts_total"));
}

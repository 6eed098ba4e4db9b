//! Protocol behaviour of the real server over UDP and TCP, each test named
//! after the RFC clause it enforces.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};

fn names(rs: &[hickory_proto::rr::Record]) -> Vec<String> {
    rs.iter()
        .map(|r| format!("{} {}", r.name, r.record_type()))
        .collect()
}

fn srv() -> TestServer {
    TestServer::start()
}

#[test]
fn rfc1035_4_1_1_authoritative_answer_sets_aa_echoes_rd_never_ra() {
    let s = srv();
    let mut q = query("example.com.", RecordType::SOA);
    q.metadata.recursion_desired = true;
    let r = udp(s.dns, &q);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert!(r.metadata.recursion_desired);
    assert!(!r.metadata.recursion_available);
    assert_eq!(names(&r.answers), ["example.com. SOA"]);
    q.metadata.recursion_desired = false;
    let r = udp(s.dns, &q);
    assert!(!r.metadata.recursion_desired);
}

#[test]
fn rfc1035_4_1_2_question_is_echoed_with_its_case() {
    let s = srv();
    let q = query("WwW.ExAmPlE.cOm.", RecordType::A);
    let r = udp(s.dns, &q);
    assert_eq!(r.queries[0].name().to_ascii(), "WwW.ExAmPlE.cOm.");
    assert_eq!(r.answers.len(), 1);
    assert_eq!(
        r.answers[0].data,
        RData::A("192.0.2.80".parse().expect("ip"))
    );
}

#[test]
fn rfc1035_3_common_types_are_served() {
    let s = srv();
    for (name, t, n) in [
        ("example.com.", RecordType::NS, 2),
        ("example.com.", RecordType::MX, 1),
        ("example.com.", RecordType::TXT, 1),
        ("www.example.com.", RecordType::A, 1),
        ("www.example.com.", RecordType::AAAA, 1),
    ] {
        let r = udp(s.dns, &query(name, t));
        assert_eq!(r.answers.len(), n, "{name} {t}");
        assert!(r.answers.iter().all(|a| a.record_type() == t));
    }
    // Additional-section processing for NS and MX targets inside the zone.
    let r = udp(s.dns, &query("example.com.", RecordType::MX));
    assert_eq!(names(&r.additionals), ["mail.example.com. A"]);
    let r = udp(s.dns, &query("example.com.", RecordType::NS));
    assert_eq!(
        names(&r.additionals),
        ["ns1.example.com. A", "ns1.example.com. AAAA"]
    );
}

/// RFC 1035 §4.1.4 and RFC 3597 §4: names inside the RDATA of the RFC 1035
/// types (NS, CNAME, MX, SOA) are compressed — replies decode to the same
/// names and are shorter than with the names written out — and names in
/// other types' RDATA (SRV, RFC 2782) never are.
#[test]
fn rfc1035_4_1_4_rdata_names_of_rfc1035_types_are_compressed() {
    let zone = format!("{ZONE}_sip._udp IN SRV 10 5 5060 mail.example.com.\n");
    let s = TestServer::start_with(
        &config(""),
        &[("example.com.zone", &zone), ("example.net.zone", ZONE_NET)],
    );
    let cases: [(&str, RecordType, &[&str]); 5] = [
        (
            "example.com.",
            RecordType::SOA,
            &["ns1.example.com.", "hostmaster.example.com."],
        ),
        ("example.com.", RecordType::MX, &["mail.example.com."]),
        (
            "example.com.",
            RecordType::NS,
            &["ns1.example.com.", "ns2.example.net."],
        ),
        ("ftp.example.com.", RecordType::CNAME, &["www.example.com."]),
        (
            "_sip._udp.example.com.",
            RecordType::SRV,
            &["mail.example.com."],
        ),
    ];
    for (name, t, targets) in cases {
        let raw = udp_raw(s.dns, &query(name, t).to_vec().expect("encode")).expect("reply");
        let r = Message::from_vec(&raw).expect("reply decodes");
        let mut got: Vec<String> = Vec::new();
        for a in r.answers.iter().filter(|a| a.record_type() == t) {
            match &a.data {
                RData::SOA(soa) => {
                    got.push(soa.mname.to_ascii());
                    got.push(soa.rname.to_ascii());
                    assert_eq!(soa.serial, 2026112201);
                    assert_eq!(soa.minimum, 300);
                }
                RData::MX(mx) => {
                    assert_eq!(mx.preference, 10);
                    got.push(mx.exchange.to_ascii());
                }
                RData::NS(ns) => got.push(ns.0.to_ascii()),
                RData::CNAME(c) => got.push(c.0.to_ascii()),
                RData::SRV(srv) => {
                    assert_eq!((srv.priority, srv.weight, srv.port), (10, 5, 5060));
                    got.push(srv.target.to_ascii());
                }
                other => panic!("{name} {t}: unexpected {other:?}"),
            }
        }
        got.sort();
        let mut want: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{name} {t}");
        // Every target name ends in example.com or example.net; written
        // out, each costs its full length; compressed, a pointer replaces
        // the part shared with the question.
        let written_out = raw
            .windows(b"\x07example\x03com\x00".len())
            .filter(|w| w == b"\x07example\x03com\x00")
            .count();
        let expected = if t == RecordType::SRV { 2 } else { 1 };
        assert_eq!(
            written_out, expected,
            "{name} {t}: example.com written out {written_out} times"
        );
    }
}

fn soa_ttl(r: &Message) -> u32 {
    assert_eq!(r.authorities.len(), 1, "{:?}", r.authorities);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    r.authorities[0].ttl
}

#[test]
fn rfc2308_3_nxdomain_carries_soa_with_negative_ttl() {
    let s = srv();
    let r = udp(s.dns, &query("nope.example.com.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.metadata.authoritative);
    assert!(r.answers.is_empty());
    // min(SOA TTL 3600, MINIMUM 300)
    assert_eq!(soa_ttl(&r), 300);
}

#[test]
fn rfc2308_2_2_nodata_carries_soa_with_negative_ttl() {
    let s = srv();
    let r = udp(s.dns, &query("mail.example.com.", RecordType::AAAA));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative && r.answers.is_empty());
    assert_eq!(soa_ttl(&r), 300);
    // The SOA TTL itself is lower than MINIMUM in example.net: 300 vs 60.
    let r = udp(s.dns, &query("host.example.net.", RecordType::TXT));
    assert_eq!(soa_ttl(&r), 60);
}

#[test]
fn rfc1034_4_3_2_cname_is_chased_inside_served_zones() {
    let s = srv();
    let r = udp(s.dns, &query("ftp.example.com.", RecordType::A));
    assert_eq!(
        names(&r.answers),
        ["ftp.example.com. CNAME", "www.example.com. A"]
    );
    assert!(r.metadata.authoritative);
    // Into another served zone.
    let r = udp(s.dns, &query("other.example.com.", RecordType::A));
    assert_eq!(
        names(&r.answers),
        ["other.example.com. CNAME", "host.example.net. A"]
    );
    // Out of our zones: the CNAME alone.
    let r = udp(s.dns, &query("out.example.com.", RecordType::A));
    assert_eq!(names(&r.answers), ["out.example.com. CNAME"]);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    // Asking for the CNAME itself does not chase.
    let r = udp(s.dns, &query("ftp.example.com.", RecordType::CNAME));
    assert_eq!(names(&r.answers), ["ftp.example.com. CNAME"]);
}

#[test]
fn rfc6604_2_1_rcode_follows_the_last_name_of_a_cname_chain() {
    let s = srv();
    let r = udp(s.dns, &query("gone.example.com.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(names(&r.answers), ["gone.example.com. CNAME"]);
    assert_eq!(soa_ttl(&r), 300);
}

#[test]
fn rfc1034_3_6_2_cname_loops_terminate() {
    let s = srv();
    let r = udp(s.dns, &query("loop1.example.com.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(
        r.answers.len() >= 2 && r.answers.len() <= 8,
        "{:?}",
        names(&r.answers)
    );
}

#[test]
fn rfc4592_3_3_wildcards_synthesize_for_missing_names_only() {
    let s = srv();
    let r = udp(s.dns, &query("anything.apps.example.com.", RecordType::A));
    assert_eq!(names(&r.answers), ["anything.apps.example.com. A"]);
    assert!(r.metadata.authoritative);
    // Deeper names match too (the closest encloser is apps.example.com).
    let r = udp(s.dns, &query("x.y.apps.example.com.", RecordType::TXT));
    assert_eq!(names(&r.answers), ["x.y.apps.example.com. TXT"]);
    // An existing name is not wildcard-expanded.
    let r = udp(s.dns, &query("ci.apps.example.com.", RecordType::TXT));
    assert!(r.answers.is_empty());
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    // A type the wildcard lacks: NODATA with SOA.
    let r = udp(s.dns, &query("anything.apps.example.com.", RecordType::MX));
    assert!(r.answers.is_empty());
    assert_eq!(soa_ttl(&r), 300);
    // Wildcard CNAME is chased with the query name as owner.
    let r = udp(s.dns, &query("q.alias.example.com.", RecordType::A));
    assert_eq!(
        names(&r.answers),
        ["q.alias.example.com. CNAME", "www.example.com. A"]
    );
}

#[test]
fn rfc4592_2_2_2_empty_non_terminals_are_nodata_not_nxdomain() {
    let s = srv();
    let r = udp(s.dns, &query("b.example.com.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(soa_ttl(&r), 300);
    // The ENT blocks the wildcard from matching names beneath it? No: only
    // names that exist block it; x.b does not exist and no *.b exists.
    let r = udp(s.dns, &query("x.b.example.com.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn rfc1034_4_3_2_delegation_gives_referral_with_glue() {
    let s = srv();
    for name in [
        "lab.example.com.",
        "host.lab.example.com.",
        "ns.lab.example.com.",
    ] {
        let r = udp(s.dns, &query(name, RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(
            !r.metadata.authoritative,
            "{name}: referral is not authoritative"
        );
        assert!(r.answers.is_empty());
        assert_eq!(names(&r.authorities), ["lab.example.com. NS"]);
        assert_eq!(names(&r.additionals), ["ns.lab.example.com. A"]);
    }
}

#[test]
fn rfc4035_3_1_4_1_ds_at_delegation_is_answered_by_the_parent() {
    let s = srv();
    let r = udp(s.dns, &query("lab.example.com.", RecordType::DS));
    assert!(r.metadata.authoritative);
    assert_eq!(names(&r.answers), ["lab.example.com. DS"]);
}

#[test]
fn rfc1034_4_3_2_names_outside_served_zones_are_refused() {
    let s = srv();
    let r = udp(s.dns, &query("www.example.org.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(!r.metadata.authoritative);
    assert!(r.answers.is_empty() && r.authorities.is_empty());
    let r = udp(s.dns, &query(".", RecordType::NS));
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

fn raw_query(name: &str, t: RecordType) -> Vec<u8> {
    query(name, t).to_vec().expect("encode")
}

#[test]
fn rfc1035_4_1_1_unknown_opcode_is_notimp() {
    let s = srv();
    let mut b = raw_query("example.com.", RecordType::SOA);
    b[2] = (b[2] & 0x87) | (15 << 3);
    let r = Message::from_vec(&udp_raw(s.dns, &b).expect("reply")).expect("parses");
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    assert!(!r.metadata.authoritative && r.answers.is_empty());
    // NOTIFY and UPDATE are not implemented either.
    for op in [4u8, 5] {
        let mut b = raw_query("example.com.", RecordType::SOA);
        b[2] = (b[2] & 0x87) | (op << 3);
        let r = Message::from_vec(&udp_raw(s.dns, &b).expect("reply")).expect("parses");
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    }
}

#[test]
fn rfc1035_4_1_2_bad_question_count_or_name_is_formerr() {
    let s = srv();
    let mut b = raw_query("example.com.", RecordType::SOA);
    b[5] = 0; // QDCOUNT = 0
    let r = udp_raw(s.dns, &b).expect("reply");
    assert_eq!(r[3] & 0x0f, 1, "FORMERR");
    assert_eq!(&r[0..2], &b[0..2], "id echoed");
    let mut b = raw_query("example.com.", RecordType::SOA);
    b[5] = 2; // QDCOUNT = 2 with one question present
    assert_eq!(udp_raw(s.dns, &b).expect("reply")[3] & 0x0f, 1);
    // Truncated question.
    let b = raw_query("example.com.", RecordType::SOA);
    assert_eq!(udp_raw(s.dns, &b[..16]).expect("reply")[3] & 0x0f, 1);
}

#[test]
fn rfc1035_4_1_1_short_packets_and_responses_are_dropped() {
    let s = srv();
    assert!(udp_raw(s.dns, &[0x12, 0x34, 0, 0, 0]).is_none());
    let mut b = raw_query("example.com.", RecordType::SOA);
    b[2] |= 0x80; // QR=1
    assert!(udp_raw(s.dns, &b).is_none());
    // The server is still answering.
    let r = udp(s.dns, &query("example.com.", RecordType::SOA));
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn rfc6891_6_1_1_every_reply_to_an_edns_query_carries_opt() {
    let s = srv();
    for (name, t) in [
        ("example.com.", RecordType::SOA),
        ("nope.example.com.", RecordType::A),
        ("www.example.org.", RecordType::A),
        ("lab.example.com.", RecordType::A),
    ] {
        let r = udp(s.dns, &edns_query(name, t, 4096));
        let e = r.edns.as_ref().expect("OPT present");
        assert_eq!(e.version(), 0);
        assert_eq!(e.max_payload(), 1232, "our payload size is advertised");
    }
    let r = udp(s.dns, &query("example.com.", RecordType::SOA));
    assert!(r.edns.is_none(), "no OPT in reply to a query without one");
}

#[test]
fn rfc6891_6_2_5_udp_reply_is_capped_by_both_payload_sizes() {
    let s = srv();
    // ~700 bytes: fits 1232, not 512.
    let r = udp(s.dns, &edns_query("many.example.com.", RecordType::A, 4096));
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 40);
    let r = udp(s.dns, &edns_query("many.example.com.", RecordType::A, 600));
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());
    // A client payload below 512 is treated as 512.
    let r = udp(s.dns, &edns_query("www.example.com.", RecordType::A, 100));
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn rfc1035_4_2_1_truncated_udp_then_full_answer_over_tcp() {
    let s = srv();
    let q = query("many.example.com.", RecordType::A);
    let r = udp(s.dns, &q);
    assert!(r.metadata.truncation, "TC=1 over 512 bytes without EDNS");
    assert!(r.answers.is_empty());
    assert_eq!(r.queries.len(), 1);
    let r = tcp(s.dns, &q);
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 40);
}

#[test]
fn rfc6891_6_1_3_unsupported_version_gets_badvers_version_0() {
    let s = srv();
    let mut q = edns_query("example.com.", RecordType::SOA, 1232);
    if let Some(e) = q.edns.as_mut() {
        e.set_version(1);
    }
    let r = udp(s.dns, &q);
    // BADVERS and BADSIG share code 16 (RFC 6891 §9, RFC 8945).
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert_eq!(r.edns.as_ref().expect("opt").version(), 0);
    assert!(r.answers.is_empty());
}

fn with_option(mut q: Message, code: u16, data: &[u8]) -> Message {
    if let Some(e) = q.edns.as_mut() {
        e.options_mut()
            .insert(EdnsOption::Unknown(code, data.to_vec()));
    }
    q
}

#[test]
fn rfc6891_6_1_2_unknown_options_are_ignored_not_echoed() {
    let s = srv();
    let q = with_option(
        edns_query("example.com.", RecordType::SOA, 1232),
        100,
        &[1, 2, 3],
    );
    let r = udp(s.dns, &q);
    assert_eq!(r.answers.len(), 1);
    let e = r.edns.as_ref().expect("opt");
    assert!(e.option(EdnsCode::from(100)).is_none());
}

#[test]
fn rfc5001_2_3_nsid_is_returned_when_asked() {
    let s = srv();
    let q = with_option(edns_query("example.com.", RecordType::SOA, 1232), 3, &[]);
    let r = udp(s.dns, &q);
    let e = r.edns.as_ref().expect("opt");
    let id = match e.option(EdnsCode::NSID) {
        Some(EdnsOption::NSID(id)) => id.as_ref().to_vec(),
        Some(EdnsOption::Unknown(_, v)) => v.clone(),
        other => panic!("no NSID: {other:?}"),
    };
    // The server's name, then the health epoch the answer was given under:
    // the one /v1/status shows.
    let (code, body) = http(s.admin.expect("admin"), "GET", "/v1/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("json");
    let epoch = status["health"]["epoch"]["id"].as_str().expect("epoch id");
    assert_eq!(epoch.len(), 16);
    assert_eq!(
        String::from_utf8_lossy(&id),
        format!("test-node epoch={epoch}")
    );
    let r = udp(s.dns, &edns_query("example.com.", RecordType::SOA, 1232));
    assert!(r
        .edns
        .as_ref()
        .expect("opt")
        .option(EdnsCode::NSID)
        .is_none());
}

#[test]
fn rfc7766_6_2_1_pipelined_queries_on_one_connection_are_all_answered() {
    let s = srv();
    let mut c = tcp_connect(s.dns);
    let qs: Vec<Message> = ["www.example.com.", "mail.example.com.", "nope.example.com."]
        .iter()
        .map(|n| query(n, RecordType::A))
        .collect();
    let mut all = Vec::new();
    for q in &qs {
        let b = q.to_vec().expect("encode");
        all.extend_from_slice(&(b.len() as u16).to_be_bytes());
        all.extend_from_slice(&b);
    }
    std::io::Write::write_all(&mut c, &all).expect("write");
    for q in &qs {
        let r = Message::from_vec(&tcp_read(&mut c).expect("reply")).expect("parses");
        assert_eq!(r.metadata.id, q.metadata.id);
    }
}

#[test]
fn rfc7766_6_2_3_idle_tcp_connections_are_closed() {
    let s = TestServer::start_with(
        &config("tcp_idle_timeout = \"300ms\""),
        &[
            ("example.com.zone", &zone_com()),
            ("example.net.zone", ZONE_NET),
        ],
    );
    let mut c = tcp_connect(s.dns);
    tcp_send(&mut c, &raw_query("www.example.com.", RecordType::A));
    assert!(tcp_read(&mut c).is_some());
    std::thread::sleep(Duration::from_millis(800));
    let mut buf = [0u8; 1];
    let n = std::io::Read::read(&mut c, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "server closed the idle connection");
}

#[test]
fn rfc7766_6_2_2_connection_cap_closes_extra_connections() {
    let s = TestServer::start_with(
        &config("tcp_max_connections = 2"),
        &[
            ("example.com.zone", &zone_com()),
            ("example.net.zone", ZONE_NET),
        ],
    );
    let mut held: Vec<_> = (0..2).map(|_| tcp_connect(s.dns)).collect();
    for c in held.iter_mut() {
        tcp_send(c, &raw_query("www.example.com.", RecordType::A));
        assert!(tcp_read(c).is_some());
    }
    let mut extra = tcp_connect(s.dns);
    tcp_send(&mut extra, &raw_query("www.example.com.", RecordType::A));
    assert!(tcp_read(&mut extra).is_none(), "third connection is closed");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let r = tcp(s.dns, &query("www.example.com.", RecordType::A));
    assert_eq!(
        r.answers.len(),
        1,
        "slots are released when connections close"
    );
    let (_, body) = http(s.admin.expect("admin"), "GET", "/v1/status");
    assert!(body.contains("\"tcp_connections_refused\":1"), "{body}");
}

#[test]
fn rfc8482_4_1_any_gets_one_rrset_not_the_node() {
    let s = srv();
    for t in [false, true] {
        let q = query("example.com.", RecordType::ANY);
        let r = if t { tcp(s.dns, &q) } else { udp(s.dns, &q) };
        assert!(!r.answers.is_empty());
        let first = r.answers[0].record_type();
        assert!(
            r.answers.iter().all(|a| a.record_type() == first),
            "{:?}",
            names(&r.answers)
        );
    }
    let r = udp(s.dns, &query("nope.example.com.", RecordType::ANY));
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
}

fn axfr(addr: SocketAddr, zone: &str) -> Vec<Message> {
    let mut c = tcp_connect(addr);
    tcp_send(&mut c, &raw_query(zone, RecordType::AXFR));
    let mut msgs = Vec::new();
    let mut soas = 0;
    while let Some(b) = tcp_read(&mut c) {
        let m = Message::from_vec(&b).expect("parses");
        soas += m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let done = m.metadata.response_code != ResponseCode::NoError || soas >= 2;
        msgs.push(m);
        if done {
            break;
        }
    }
    msgs
}

#[test]
fn rfc5936_2_2_axfr_streams_the_zone_to_allowed_clients_over_tcp() {
    let s = srv();
    let msgs = axfr(s.dns, "example.com.");
    let recs: Vec<_> = msgs.iter().flat_map(|m| m.answers.iter()).collect();
    assert_eq!(recs.first().map(|r| r.record_type()), Some(RecordType::SOA));
    assert_eq!(recs.last().map(|r| r.record_type()), Some(RecordType::SOA));
    // 27 records in ZONE (+40 many) plus the closing SOA.
    assert!(recs.len() > 60, "{}", recs.len());
    assert!(recs
        .iter()
        .any(|r| r.name.to_ascii() == "ns.lab.example.com."));
    assert!(msgs.iter().all(|m| m.metadata.authoritative));
}

#[test]
fn rfc5936_6_axfr_is_refused_unless_allowed() {
    let s = srv();
    // example.net has no allow_transfer.
    let msgs = axfr(s.dns, "example.net.");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].metadata.response_code, ResponseCode::Refused);
    // Over UDP an allowed client is told to use TCP.
    let r = udp(s.dns, &query("example.com.", RecordType::AXFR));
    assert!(r.metadata.truncation);
    // A name that is not a zone apex.
    let msgs = axfr(s.dns, "www.example.com.");
    assert_eq!(msgs[0].metadata.response_code, ResponseCode::NotAuth);
}

#[test]
fn rfc1995_2_ixfr_over_udp_gets_the_soa() {
    let s = srv();
    let r = udp(s.dns, &query("example.com.", RecordType::IXFR));
    assert_eq!(names(&r.answers), ["example.com. SOA"]);
    let r = udp(s.dns, &query("example.net.", RecordType::IXFR));
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn rfc1035_3_2_4_other_classes_are_refused() {
    let s = srv();
    let mut b = raw_query("example.com.", RecordType::SOA);
    let n = b.len();
    b[n - 1] = 3; // CH
    let r = Message::from_vec(&udp_raw(s.dns, &b).expect("reply")).expect("parses");
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn rfc6891_7_edns_is_answered_over_tcp_too() {
    let s = srv();
    let mut q = edns_query("example.com.", RecordType::SOA, 512);
    let mut e = Edns::new();
    e.set_dnssec_ok(true);
    q.edns = Some(e);
    let r = tcp(s.dns, &q);
    let e = r.edns.as_ref().expect("opt");
    assert!(e.flags().dnssec_ok, "DO echoed (RFC 3225 §3)");
}

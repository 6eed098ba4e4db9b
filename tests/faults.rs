//! Queries that are not answered normally — other opcodes, malformed EDNS
//! options, trailing bytes, TSIG — against the real server over UDP and
//! TCP. Queries are built byte by byte so every bit can be set.

use crate::common;

use common::*;

const QNAME: &[u8] = b"\x03www\x07example\x03com\x00";
const ID: [u8; 2] = [0xab, 0xcd];

const RD: u16 = 0x0100;
const CD: u16 = 0x0010;
/// Every header flag a query can carry besides QR and the opcode.
const ALL_FLAGS: u16 = 0x0400 | 0x0200 | RD | 0x0080 | 0x0040 | 0x0020 | CD;

/// Header with `flags` and the counts, then the question (www A IN), then `rest`.
fn packet(flags: u16, qdcount: u16, arcount: u16, rest: &[u8]) -> Vec<u8> {
    let mut b = ID.to_vec();
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&qdcount.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(&arcount.to_be_bytes());
    if qdcount > 0 {
        b.extend_from_slice(QNAME);
        b.extend_from_slice(&[0, 1, 0, 1]);
    }
    b.extend_from_slice(rest);
    b
}

/// An OPT record (payload 1232, version 0) with `options` ((code, data)).
fn opt(options: &[(u16, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (code, d) in options {
        data.extend_from_slice(&code.to_be_bytes());
        data.extend_from_slice(&(d.len() as u16).to_be_bytes());
        data.extend_from_slice(d);
    }
    let mut b = vec![0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0];
    b.extend_from_slice(&(data.len() as u16).to_be_bytes());
    b.extend_from_slice(&data);
    b
}

/// A TSIG record: key `key.`, HMAC-SHA256, a 32-byte MAC, original ID 0x5555.
fn tsig() -> Vec<u8> {
    let mut rdata = b"\x0bhmac-sha256\x00".to_vec();
    rdata.extend_from_slice(&[0, 0, 0x65, 0x53, 0xf1, 0]); // time signed
    rdata.extend_from_slice(&300u16.to_be_bytes()); // fudge
    rdata.extend_from_slice(&32u16.to_be_bytes());
    rdata.extend_from_slice(&[0x11; 32]);
    rdata.extend_from_slice(&[0x55, 0x55, 0, 0, 0, 0]); // original ID, error, other len
    let mut b = b"\x03key\x00".to_vec();
    b.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]);
    b.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    b.extend_from_slice(&rdata);
    b
}

const ECS_24: &[u8] = &[0, 1, 24, 0, 192, 0, 2];

fn flags(r: &[u8]) -> u16 {
    u16::from_be_bytes([r[2], r[3]])
}
fn rcode(r: &[u8]) -> u16 {
    flags(r) & 0x0f
}
fn counts(r: &[u8]) -> [u16; 4] {
    [4, 6, 8, 10].map(|i| u16::from_be_bytes([r[i], r[i + 1]]))
}

/// The OPT record written by the server (payload 1232, no options) with the
/// high bits of `rcode`.
fn reply_opt(rcode: u16) -> Vec<u8> {
    vec![0, 0, 41, 0x04, 0xd0, (rcode >> 4) as u8, 0, 0, 0, 0, 0]
}

fn ask(s: &TestServer, q: &[u8]) -> Vec<u8> {
    let r = udp_raw(s.dns, q).expect("a UDP reply");
    assert_eq!(r[..2], ID, "id echoed");
    r
}

#[test]
fn rfc6895_2_notimp_reply_clears_rd_and_cd() {
    let s = TestServer::start();
    // Unknown opcode 15, STATUS, NOTIFY, UPDATE; every flag set; with and
    // without EDNS; with a body that parses and one that does not.
    for op in [15u16, 2, 4, 5] {
        let qflags = (op << 11) | ALL_FLAGS;
        for q in [
            packet(qflags, 1, 0, &[]),
            packet(qflags, 1, 1, &opt(&[])),
            packet(qflags, 0, 0, &[]),
            packet(qflags, 1, 0, b"trailing"),
        ] {
            let r = ask(&s, &q);
            assert_eq!(
                flags(&r),
                0x8000 | (op << 11) | 4,
                "opcode {op}: only QR, the opcode and NOTIMP ({q:02x?})"
            );
        }
    }
}

#[test]
fn rfc1035_4_1_1_replies_to_query_echo_rd_and_cd() {
    let s = TestServer::start();
    // An answer and a FORMERR (no question) to opcode QUERY keep RD and CD.
    let r = ask(&s, &packet(RD | CD, 1, 0, &[]));
    assert_eq!(flags(&r), 0x8000 | 0x0400 | RD | CD);
    let r = ask(&s, &packet(RD | CD, 0, 0, &[]));
    assert_eq!(flags(&r), 0x8000 | RD | CD | 1);
}

#[test]
fn rfc7871_6_nonzero_scope_in_query_is_formerr() {
    let s = TestServer::start();
    let q = packet(0, 1, 1, &opt(&[(8, &[0, 1, 24, 16, 192, 0, 2])]));
    let r = ask(&s, &q);
    assert_eq!(rcode(&r), 1, "FORMERR");
    assert_eq!(counts(&r), [1, 0, 0, 1], "question and OPT echoed");
    assert!(r.ends_with(&reply_opt(1)));
    // Scope 0 is answered.
    let r = ask(&s, &packet(0, 1, 1, &opt(&[(8, ECS_24)])));
    assert_eq!(rcode(&r), 0);
    assert_eq!(counts(&r)[1], 1);
}

#[test]
fn rfc6891_7_formerr_for_two_ecs_options_carries_opt() {
    let s = TestServer::start();
    let q = packet(0, 1, 1, &opt(&[(8, ECS_24), (8, ECS_24)]));
    let r = ask(&s, &q);
    assert_eq!(rcode(&r), 1, "FORMERR (RFC 7871 §7.1.1)");
    assert_eq!(counts(&r), [1, 0, 0, 1], "question and OPT echoed");
    assert_eq!(r[12..12 + QNAME.len()], *QNAME);
    assert!(r.ends_with(&reply_opt(1)));
}

#[test]
fn rfc1035_4_1_trailing_bytes_after_sections_are_formerr() {
    let s = TestServer::start();
    for q in [
        packet(RD, 1, 0, &[0]),
        packet(RD, 1, 0, b"\x01\x02\x03"),
        [packet(0, 1, 1, &opt(&[])), vec![0; 5]].concat(),
    ] {
        let r = ask(&s, &q);
        assert_eq!(rcode(&r), 1, "FORMERR for {q:02x?}");
        assert_eq!(counts(&r)[..3], [1, 0, 0], "question echoed, no answer");
        let mut c = tcp_connect(s.dns);
        tcp_send(&mut c, &q);
        assert_eq!(rcode(&tcp_read(&mut c).expect("a TCP reply")), 1);
    }
    // The EDNS query gets its OPT back.
    let q = [packet(0, 1, 1, &opt(&[])), vec![0; 5]].concat();
    assert!(ask(&s, &q).ends_with(&reply_opt(1)));
}

#[test]
fn rfc8945_5_2_unverifiable_tsig_is_notauth_badkey() {
    let s = TestServer::start();
    // NOTAUTH; the question; an unsigned TSIG (key and algorithm, time and
    // fudge, MAC size 0, the message ID as original ID, error BADKEY), last:
    // the bytes Knot sends.
    let mut want_tsig = b"\x03key\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x1d".to_vec();
    want_tsig.extend_from_slice(b"\x0bhmac-sha256\x00\x00\x00\x65\x53\xf1\x00\x01\x2c");
    want_tsig.extend_from_slice(&[0, 0, ID[0], ID[1], 0, 17, 0, 0]);
    let r = ask(&s, &packet(0, 1, 1, &tsig()));
    assert_eq!(rcode(&r), 9, "NOTAUTH");
    assert_eq!(counts(&r), [1, 0, 0, 1]);
    assert_eq!(r[12 + QNAME.len() + 4..], want_tsig[..]);
    // With EDNS: OPT, then the TSIG; over TCP too (a transfer is no exception).
    let q = packet(0, 1, 2, &[opt(&[]), tsig()].concat());
    let r = ask(&s, &q);
    assert_eq!(counts(&r), [1, 0, 0, 2]);
    assert_eq!(
        r[12 + QNAME.len() + 4..],
        [reply_opt(9), want_tsig.clone()].concat()[..]
    );
    let mut axfr = packet(0, 1, 1, &tsig());
    let qtype = 12 + QNAME.len();
    axfr[qtype..qtype + 2].copy_from_slice(&252u16.to_be_bytes());
    let mut c = tcp_connect(s.dns);
    tcp_send(&mut c, &axfr);
    let r = tcp_read(&mut c).expect("a TCP reply");
    assert_eq!(rcode(&r), 9);
    assert!(r.ends_with(&want_tsig));
}

/// A 255-byte name of `c`s (three labels of 63, one of 61).
fn longest_name(c: u8) -> Vec<u8> {
    let mut n = Vec::new();
    for len in [63usize, 63, 63, 61] {
        n.push(len as u8);
        n.extend(std::iter::repeat_n(c, len));
    }
    n.push(0);
    n
}

/// The BADKEY error TSIG echoes the key and algorithm names uncompressed:
/// with names of 255 bytes it does not fit 512 bytes, so the UDP reply is
/// truncated (NOTAUTH, no TSIG) and the client gets it whole over TCP.
#[test]
fn rfc1035_4_2_1_a_tsig_error_past_512_bytes_is_truncated_over_udp() {
    let s = TestServer::start();
    let mut rdata = longest_name(b'h');
    rdata.extend_from_slice(&[
        0, 0, 0x65, 0x53, 0xf1, 0, 1, 0x2c, 0, 0, 0x55, 0x55, 0, 0, 0, 0,
    ]);
    let mut t = longest_name(b'k');
    t.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]);
    t.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    t.extend_from_slice(&rdata);
    let q = packet(0, 1, 1, &t);
    let r = ask(&s, &q);
    assert!(r.len() <= 512, "{} bytes", r.len());
    assert_eq!(rcode(&r), 9, "NOTAUTH");
    assert_ne!(r[2] & 0x02, 0, "TC");
    assert_eq!(counts(&r), [1, 0, 0, 0]);
    let mut c = tcp_connect(s.dns);
    tcp_send(&mut c, &q);
    let r = tcp_read(&mut c).expect("a TCP reply");
    assert_eq!(rcode(&r), 9);
    assert_eq!(r[2] & 0x02, 0, "not truncated over TCP");
    assert_eq!(counts(&r), [1, 0, 0, 1]);
    assert!(r.len() > 512);
}

#[test]
fn rfc8945_5_1_tsig_not_last_or_not_alone_is_formerr() {
    let s = TestServer::start();
    for q in [
        packet(0, 1, 2, &[tsig(), opt(&[])].concat()),
        packet(0, 1, 2, &[tsig(), tsig()].concat()),
    ] {
        let r = ask(&s, &q);
        assert_eq!(rcode(&r), 1, "FORMERR");
        assert_eq!(counts(&r)[..3], [1, 0, 0]);
    }
    // A TSIG whose RDATA cannot be interpreted (RFC 8945 §5.2).
    let mut bad = tsig();
    let n = bad.len();
    bad[n - 1] = 9; // other length beyond the record
    let r = ask(&s, &packet(0, 1, 1, &bad));
    assert_eq!(rcode(&r), 1, "FORMERR");
    assert_eq!(counts(&r), [1, 0, 0, 0]);
}

//! Queries that are not answered normally — other opcodes — against the
//! real server over UDP. Queries are built byte by byte so every bit can be set.

mod common;

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

fn flags(r: &[u8]) -> u16 {
    u16::from_be_bytes([r[2], r[3]])
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

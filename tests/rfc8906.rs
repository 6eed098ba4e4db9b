//! RFC 8906 §8: the compliance battery an authoritative server must pass,
//! one test per case, against the real server over UDP (and TCP for 8.1.5).
//! Queries are built byte by byte so every header and EDNS bit can be set.

use crate::common;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const ZONE_APEX: &[u8] = b"\x07example\x03com\x00";

/// (version, flags, options, payload size) of the query's OPT record.
type Opt = (u8, u16, Vec<(u16, Vec<u8>)>, u16);

struct Q {
    flags: u16,
    qtype: u16,
    edns: Option<Opt>,
}

impl Q {
    fn new(qtype: RecordType) -> Q {
        Q {
            flags: 0, // +norec
            qtype: u16::from(qtype),
            edns: None,
        }
    }
    fn edns(mut self, version: u8, eflags: u16, opts: Vec<(u16, Vec<u8>)>) -> Q {
        self.edns = Some((version, eflags, opts, 1232));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0xab, 0xcd];
        b.extend_from_slice(&self.flags.to_be_bytes());
        b.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(self.edns.is_some())]);
        b.extend_from_slice(ZONE_APEX);
        b.extend_from_slice(&self.qtype.to_be_bytes());
        b.extend_from_slice(&[0, 1]);
        if let Some((version, eflags, opts, payload)) = &self.edns {
            b.push(0);
            b.extend_from_slice(&41u16.to_be_bytes());
            b.extend_from_slice(&payload.to_be_bytes());
            b.push(0);
            b.push(*version);
            b.extend_from_slice(&eflags.to_be_bytes());
            let rdlen: usize = opts.iter().map(|(_, d)| 4 + d.len()).sum();
            b.extend_from_slice(&(rdlen as u16).to_be_bytes());
            for (code, data) in opts {
                b.extend_from_slice(&code.to_be_bytes());
                b.extend_from_slice(&(data.len() as u16).to_be_bytes());
                b.extend_from_slice(data);
            }
        }
        b
    }
}

struct Reply {
    raw: Vec<u8>,
    msg: Message,
}

impl Reply {
    fn rcode(&self) -> u16 {
        u16::from(self.msg.metadata.response_code)
    }
    fn has_soa_answer(&self) -> bool {
        self.msg
            .answers
            .iter()
            .any(|r| r.record_type() == RecordType::SOA)
    }
    fn aa(&self) -> bool {
        self.msg.metadata.authoritative
    }
    fn z_bit(&self) -> bool {
        self.raw[3] & 0x40 != 0
    }
    /// (version, EDNS flags, option codes) of the reply's OPT, read from the wire.
    fn opt(&self) -> Option<(u8, u16, Vec<u16>)> {
        let e = self.msg.edns.as_ref()?;
        // The flags as sent, read from the OPT record's TTL field.
        let at = self.raw.windows(3).rposition(|w| w == [0, 0, 41])?;
        let flags = u16::from_be_bytes([self.raw[at + 7], self.raw[at + 8]]);
        let codes = e
            .options()
            .as_ref()
            .iter()
            .map(|(c, _)| u16::from(*c))
            .collect();
        Some((e.version(), flags, codes))
    }
}

fn ask(s: &TestServer, q: &Q) -> Reply {
    let raw = udp_raw(s.dns, &q.bytes()).expect("a reply");
    assert_eq!(&raw[0..2], &[0xab, 0xcd], "id echoed");
    let msg = Message::from_vec(&raw).expect("reply parses");
    Reply { raw, msg }
}

#[test]
fn rfc8906_8_1_1_server_is_configured_for_the_zone() {
    let s = TestServer::start();
    let r = ask(&s, &Q::new(RecordType::SOA));
    assert_eq!(r.rcode(), 0);
    assert!(r.has_soa_answer() && r.aa());
}

#[test]
fn rfc8906_8_1_2_unknown_types() {
    let s = TestServer::start();
    let r = ask(&s, &Q::new(RecordType::Unknown(1000)));
    assert_eq!(r.rcode(), 0);
    assert!(r.msg.answers.is_empty() && r.aa());
}

#[test]
fn rfc8906_8_1_3_1_cd_bit() {
    let s = TestServer::start();
    let mut q = Q::new(RecordType::SOA);
    q.flags |= 0x0010;
    let r = ask(&s, &q);
    assert_eq!(r.rcode(), 0);
    assert!(r.has_soa_answer() && r.aa());
    assert!(
        r.msg.metadata.checking_disabled,
        "CD copied (RFC 4035 §3.1.6)"
    );
}

#[test]
fn rfc8906_8_1_3_2_ad_bit() {
    let s = TestServer::start();
    let mut q = Q::new(RecordType::SOA);
    q.flags |= 0x0020;
    let r = ask(&s, &q);
    assert_eq!(r.rcode(), 0);
    assert!(r.has_soa_answer() && r.aa());
    assert!(
        !r.msg.metadata.authentic_data,
        "AD not set on unsigned data"
    );
}

#[test]
fn rfc8906_8_1_3_3_reserved_z_bit() {
    let s = TestServer::start();
    let mut q = Q::new(RecordType::SOA);
    q.flags |= 0x0040;
    let r = ask(&s, &q);
    assert_eq!(r.rcode(), 0);
    assert!(r.has_soa_answer() && r.aa());
    assert!(!r.z_bit(), "Z cleared in the reply");
}

#[test]
fn rfc8906_8_1_4_unknown_opcode() {
    let s = TestServer::start();
    let mut q = Q::new(RecordType::SOA);
    q.flags |= 15 << 11;
    let r = ask(&s, &q);
    assert_eq!(r.msg.metadata.response_code, ResponseCode::NotImp);
    assert!(!r.has_soa_answer() && !r.aa());
}

#[test]
fn rfc8906_8_1_5_tcp() {
    let s = TestServer::start();
    let mut c = tcp_connect(s.dns);
    tcp_send(&mut c, &Q::new(RecordType::SOA).bytes());
    let raw = tcp_read(&mut c).expect("reply");
    let m = Message::from_vec(&raw).expect("parses");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn rfc8906_8_2_1_minimal_edns() {
    let s = TestServer::start();
    let r = ask(&s, &Q::new(RecordType::SOA).edns(0, 0, vec![]));
    assert_eq!(r.rcode(), 0);
    assert!(r.has_soa_answer() && r.aa());
    let (v, flags, codes) = r.opt().expect("OPT");
    assert_eq!((v, flags, codes.len()), (0, 0, 0));
}

#[test]
fn rfc8906_8_2_2_edns_version_negotiation() {
    let s = TestServer::start();
    let r = ask(&s, &Q::new(RecordType::SOA).edns(1, 0, vec![]));
    assert_eq!(r.rcode(), 16, "BADVERS");
    assert!(!r.has_soa_answer());
    assert_eq!(r.opt().expect("OPT").0, 0);
}

#[test]
fn rfc8906_8_2_3_unknown_edns_options() {
    let s = TestServer::start();
    let r = ask(&s, &Q::new(RecordType::SOA).edns(0, 0, vec![(100, vec![])]));
    assert_eq!(r.rcode(), 0);
    assert!(r.has_soa_answer() && r.aa());
    let (v, _, codes) = r.opt().expect("OPT");
    assert_eq!(v, 0);
    assert!(!codes.contains(&100));
}

#[test]
fn rfc8906_8_2_4_unknown_edns_flags() {
    let s = TestServer::start();
    let r = ask(&s, &Q::new(RecordType::SOA).edns(0, 0x0080, vec![]));
    assert_eq!(r.rcode(), 0);
    assert!(r.has_soa_answer() && r.aa());
    let (v, flags, _) = r.opt().expect("OPT");
    assert_eq!((v, flags & 0x7fff), (0, 0), "unknown flag cleared");
}

#[test]
fn rfc8906_8_2_5_version_negotiation_with_unknown_flags() {
    let s = TestServer::start();
    let r = ask(&s, &Q::new(RecordType::SOA).edns(1, 0x0080, vec![]));
    assert_eq!(r.rcode(), 16);
    assert!(!r.has_soa_answer());
    let (v, flags, _) = r.opt().expect("OPT");
    assert_eq!((v, flags & 0x7fff), (0, 0));
}

#[test]
fn rfc8906_8_2_6_version_negotiation_with_unknown_options() {
    let s = TestServer::start();
    let r = ask(&s, &Q::new(RecordType::SOA).edns(1, 0, vec![(100, vec![])]));
    assert_eq!(r.rcode(), 16);
    assert!(!r.has_soa_answer());
    let (v, _, codes) = r.opt().expect("OPT");
    assert_eq!(v, 0);
    assert!(!codes.contains(&100));
}

#[test]
fn rfc8906_8_2_7_truncated_edns_responses() {
    let s = TestServer::start();
    // DNSKEY with DO=1 and a 512-byte buffer: the zone is unsigned, so NODATA
    // that fits; whatever the size, an OPT must come back.
    let mut q = Q::new(RecordType::DNSKEY).edns(0, 0x8000, vec![]);
    if let Some(e) = q.edns.as_mut() {
        e.3 = 512;
    }
    let r = ask(&s, &q);
    assert_eq!(r.rcode(), 0);
    assert!(r.opt().is_some());
    assert!(r.raw.len() <= 512);
}

#[test]
fn rfc8906_8_2_8_do_bit() {
    let s = TestServer::start();
    let r = ask(&s, &Q::new(RecordType::SOA).edns(0, 0x8000, vec![]));
    assert_eq!(r.rcode(), 0);
    assert!(r.has_soa_answer() && r.aa());
    let (_, flags, _) = r.opt().expect("OPT");
    assert_eq!(flags, 0x8000, "DO copied (RFC 3225 §3)");
}

#[test]
fn rfc8906_8_2_9_edns_version_negotiation_with_do_bit() {
    let s = TestServer::start();
    let r = ask(&s, &Q::new(RecordType::SOA).edns(1, 0x8000, vec![]));
    assert_eq!(r.rcode(), 16);
    assert!(!r.has_soa_answer());
    let (v, flags, _) = r.opt().expect("OPT");
    assert_eq!((v, flags), (0, 0x8000));
}

#[test]
fn rfc8906_8_2_10_multiple_defined_edns_options() {
    let s = TestServer::start();
    // NSID, client subnet 0.0.0.0/0, EXPIRE, COOKIE (client cookie only).
    let opts = vec![
        (3, vec![]),
        (8, vec![0, 1, 0, 0]),
        (9, vec![]),
        (10, vec![1, 2, 3, 4, 5, 6, 7, 8]),
    ];
    let r = ask(&s, &Q::new(RecordType::SOA).edns(0, 0, opts));
    assert_eq!(r.rcode(), 0);
    assert!(r.has_soa_answer() && r.aa());
    let (v, _, codes) = r.opt().expect("OPT");
    assert_eq!(v, 0);
    assert!(codes.contains(&3), "NSID answered");
    assert!(!codes.contains(&9) && !codes.contains(&100));
}

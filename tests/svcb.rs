//! SVCB/HTTPS (RFC 9460) and the character-string types (TXT, HINFO,
//! NAPTR, CAA) written in every presentation form: the zone loads and the
//! RDATA served is, byte for byte, what Knot DNS 3.2 serves for the same
//! zone file (the expected bytes below were taken from it).

use crate::common;

use common::*;

const ZONE: &str = r#"$ORIGIN t.test.
$TTL 60
@ SOA ns1 h 1 2 3 4 5
@ NS ns1
ns1 A 192.0.2.1
svc HTTPS 1 . alpn="h2,h3"
a2 HTTPS 1 . alpn="h2"
a3 HTTPS 1 . port="443"
a4 HTTPS 1 . ipv4hint="192.0.2.1"
a5 HTTPS 1 . ech="AEX+DQBBpQAgACBIYQ1ZT2NK4FQgJlpFsxXbCYX4e6ZvFaHoGzQJHdf1ZQAEAAEAAQASY2xvdWRmbGFyZS1lY2guY29tAAA="
a6 HTTPS 1 . alpn=h2,h3 port=8443 ipv4hint=192.0.2.1,192.0.2.2 ipv6hint=2001:db8::1,2001:db8::53:1
a7 SVCB 0 foo.example.com.
b5 SVCB 16 foo.example.org. ( alpn=h2,h3-19 mandatory=ipv4hint,alpn ipv4hint=192.0.2.1 )
b6 SVCB 16 foo.example.org. alpn="f\\\\oo\\,bar,h2"
b7 SVCB 16 foo.example.org. alpn=f\\\092oo\092,bar,h2
b8 HTTPS 1 svc mandatory=alpn,port alpn=h3 no-default-alpn port=443 key65000="x y"
b9 HTTPS 2 Svc.T.Test. alpn="h2" key65001
c2 HTTPS 1 . key65333="\000\255\"x"
c4 HTTPS \# 9 0001 00 0003 0002 01bb
t1 TXT "v=spf1 -all" "a;b" "quote\"in" "\065\066C" unq\ uoted
t3 CAA 0 issue "letsencrypt.org; validationmethods=dns-01"
t4 CAA 128 tbs "Unknown \"x\""
u1 NAPTR 100 10 "\065" "E2U\032sip" "" www.t.test.
t9 NAPTR 100 10 "u" "E2U+sip" "!^(.*)$!sip:\\1@example.com!" .
u2 HINFO "a\"b\\c" "\255\000"
u3 CAA 0 issue "a\"b\\c\065"
u5 TXT "\\" \\ \"
"#;

const CONFIG: &str = r#"[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
udp_workers = 1

[zones."t.test"]
file = "t.zone"
"#;

fn wire_name(name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        b.push(l.len() as u8);
        b.extend_from_slice(l.as_bytes());
    }
    b.push(0);
    b
}

fn skip_name(m: &[u8], mut at: usize) -> usize {
    loop {
        let l = m[at] as usize;
        if l & 0xc0 == 0xc0 {
            return at + 2;
        }
        at += 1 + l;
        if l == 0 {
            return at;
        }
    }
}

/// The RDATA of each answer to `name`/`qtype`, as sent.
fn rdatas(s: &TestServer, name: &str, qtype: u16) -> Vec<Vec<u8>> {
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(&wire_name(name));
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    let r = udp_raw(s.dns, &q).expect("a reply");
    assert_eq!(r[3] & 0x0f, 0, "NOERROR for {name}");
    let answers = u16::from_be_bytes([r[6], r[7]]);
    let mut at = skip_name(&r, 12) + 4;
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(&r, at);
        let rtype = u16::from_be_bytes([r[at], r[at + 1]]);
        let len = u16::from_be_bytes([r[at + 8], r[at + 9]]) as usize;
        assert_eq!(rtype, qtype);
        out.push(r[at + 10..at + 10 + len].to_vec());
        at += 10 + len;
    }
    out
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .expect("hex")
}

fn start() -> TestServer {
    TestServer::start_with(CONFIG, &[("t.zone", ZONE)])
}

/// (name, type, RDATA served by Knot DNS 3.2.6 for the line in `ZONE`).
const SVCB_KNOT: &[(&str, u16, &str)] = &[
    ("a2", 65, "00010000010003026832"),
    ("a3", 65, "0001000003000201bb"),
    ("a4", 65, "00010000040004c0000201"),
    ("a5", 65, "000100000500470045fe0d0041a50020002048610d594f634ae05420265a45b315db0985f87ba66f15a1e81b34091dd7f5650004000100010012636c6f7564666c6172652d6563682e636f6d0000"),
    ("a6", 65, "000100000100060268320268330003000220fb00040008c0000201c00002020006002020010db800000000000000000000000120010db8000000000000000000530001"),
    ("a7", 64, "000003666f6f076578616d706c6503636f6d00"),
    ("b5", 64, "001003666f6f076578616d706c65036f7267000000000400010004000100090268320568332d313900040004c0000201"),
    ("b6", 64, "001003666f6f076578616d706c65036f7267000001000c08665c6f6f2c626172026832"),
    ("b7", 64, "001003666f6f076578616d706c65036f7267000001000c08665c6f6f2c626172026832"),
    ("b8", 65, "0001037376630174047465737400000000040001000300010003026833000200000003000201bbfde800037820 79"),
    ("b9", 65, "000203537663015404546573740000010003026832fde90000"),
    ("c2", 65, "000100ff35000400ff2278"),
    ("c4", 65, "0001000003000201bb"),
];

#[test]
fn rfc9460_2_1_quoted_alpn_values_load() {
    // The record of the report: the zone passes `check` and is served.
    let s = start();
    let (code, out) = check(&s.path("geolb.toml"));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        rdatas(&s, "svc.t.test.", 65),
        vec![hex("0001 00 0001 0006 02 6832 02 6833")]
    );
}

#[test]
fn rfc9460_2_1_svcb_and_https_answers_are_byte_identical_to_knot() {
    let s = start();
    for (name, qtype, want) in SVCB_KNOT {
        let got = rdatas(&s, &format!("{name}.t.test."), *qtype);
        assert_eq!(got, vec![hex(want)], "{name}");
    }
}

#[test]
fn rfc1035_5_1_character_strings_are_byte_identical_to_knot() {
    let s = start();
    for (name, qtype, want) in [
        ("t1", 16, "0b763d73706631202d616c6c03613b620871756f746522696e0341424309756e7120756f746564"),
        ("u5", 16, "015c015c0122"),
        ("t3", 257, "000569737375656c657473656e63727970742e6f72673b2076616c69646174696f6e6d6574686f64733d646e732d3031"),
        ("t4", 257, "8003746273556e6b6e6f776e20227822"),
        ("u3", 257, "000569737375656122625c6341"),
        ("u1", 35, "0064000a0141074532552073697000037777770174047465737400"),
        ("t9", 35, "0064000a0175074532552b7369701b215e282e2a2924217369703a5c31406578616d706c652e636f6d2100"),
        ("u2", 13, "056122625c6302ff00"),
    ] {
        let got = rdatas(&s, &format!("{name}.t.test."), qtype);
        assert_eq!(got, vec![hex(want)], "{name}");
    }
}

#[test]
fn rfc9460_appendix_d3_invalid_records_are_reported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zone = "$ORIGIN t.test.\n@ 60 SOA ns1 h 1 2 3 4 5\n@ 60 NS ns1\nns1 60 A 192.0.2.1\n\
                svc 60 HTTPS 1 . alpn=\"h2\" mandatory=key123\n";
    std::fs::write(dir.path().join("t.zone"), zone).expect("zone");
    let cfg = dir.path().join("geolb.toml");
    std::fs::write(&cfg, CONFIG).expect("config");
    let (code, out) = check(&cfg);
    assert_eq!(code, Some(1));
    assert_eq!(out.matches("key123").count(), 1, "{out}");
    assert!(out.contains("t.zone:5:"), "{out}");
    // `serve` fails with the error printed once, not repeated in the line.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("run geolb serve");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert_eq!(err.matches("key123").count(), 1, "{err}");
}

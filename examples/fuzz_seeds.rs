//! Writes the fuzz targets' seed corpus (`fuzz/corpus/<target>/seed-*`):
//! DNS queries built with hickory-proto (with and without EDNS, client
//! subnets of both families, cookies, other opcodes), OPT option lists,
//! the repository's zone files and configs, and HTTP/1.x requests.
//!
//! ```sh
//! cargo run --example fuzz_seeds
//! ```

use std::net::IpAddr;
use std::path::Path;

use hickory_proto::op::{Edns, Message, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

fn query(id: u16, name: &str, t: RecordType, edns: Option<Vec<EdnsOption>>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    if let Some(opts) = edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        for o in opts {
            e.options_mut().insert(o);
        }
        m.edns = Some(e);
    }
    m.to_vec().expect("encodes")
}

fn ecs(addr: &str, prefix: u8) -> EdnsOption {
    let a: IpAddr = addr.parse().expect("ip");
    EdnsOption::Subnet(ClientSubnet::new(a, prefix, 0))
}

fn cookie(bytes: &[u8]) -> EdnsOption {
    EdnsOption::Unknown(u16::from(EdnsCode::Cookie), bytes.to_vec())
}

/// The OPT record's RDATA of an encoded query with one OPT record.
fn opt_rdata(q: &[u8]) -> Vec<u8> {
    let m = Message::from_vec(q).expect("parses");
    let mut plain = m.clone();
    plain.edns = None;
    let base = plain.to_vec().expect("encodes").len();
    // The OPT record: root name, type, class, TTL, RDLENGTH, RDATA.
    q[base + 11..].to_vec()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("fuzz/corpus");

    // dns_answer: control byte, client address, query.
    let v4 = [198, 51, 100, 7];
    let v6: [u8; 16] = "2001:db8::7"
        .parse::<std::net::Ipv6Addr>()
        .expect("ip")
        .octets();
    let client_cookie = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut with_server = client_cookie.to_vec();
    with_server.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9]);
    let mut notify = query(9, "example.com.", RecordType::SOA, None);
    notify[2] = (u8::from(OpCode::Notify) << 3) | (notify[2] & 0x87);
    let mut badvers = query(10, "www.example.com.", RecordType::A, Some(vec![]));
    let at = badvers.len() - 5;
    badvers[at] = 1; // EDNS version 1
                     // A TSIG record (RFC 8945 §4.2) the server has no key for: NOTAUTH.
    let mut tsig = query(17, "www.example.com.", RecordType::A, None);
    tsig[11] = 1;
    tsig.extend_from_slice(b"\x03key\x00\x00\xfa\x00\xff\x00\x00\x00\x00");
    let alg = b"\x0bhmac-sha256\x00";
    let rdata_len = alg.len() + 6 + 2 + 2 + 2 + 2 + 2;
    tsig.extend_from_slice(&(rdata_len as u16).to_be_bytes());
    tsig.extend_from_slice(alg);
    tsig.extend_from_slice(&[0, 0, 0x65, 0x5f, 0, 0, 1, 0x2c, 0, 0, 0, 17, 0, 0, 0, 0]);
    let dns: Vec<(&str, u8, Vec<u8>)> = vec![
        (
            "a-plain",
            0,
            query(1, "host7.example.com.", RecordType::A, None),
        ),
        (
            "geo-ecs4",
            0,
            query(
                2,
                "www.example.com.",
                RecordType::A,
                Some(vec![ecs("192.0.2.0", 24)]),
            ),
        ),
        (
            "geo-ecs6",
            8,
            query(
                3,
                "near.example.com.",
                RecordType::AAAA,
                Some(vec![ecs("2001:db8::", 56)]),
            ),
        ),
        (
            "nxdomain",
            0,
            query(4, "nope.example.com.", RecordType::A, Some(vec![])),
        ),
        (
            "cname",
            1,
            query(5, "alias.example.com.", RecordType::A, None),
        ),
        (
            "wildcard",
            0,
            query(6, "x.wild.example.com.", RecordType::TXT, None),
        ),
        (
            "referral",
            0,
            query(7, "a.sub.example.com.", RecordType::A, None),
        ),
        (
            "any-tcp",
            1,
            query(8, "example.com.", RecordType::ANY, None),
        ),
        ("notify", 0, notify),
        ("badvers", 0, badvers),
        (
            "cookie-client",
            2,
            query(
                11,
                "www.example.com.",
                RecordType::A,
                Some(vec![cookie(&client_cookie)]),
            ),
        ),
        (
            "cookie-valid",
            2 | 16,
            query(
                12,
                "www.example.com.",
                RecordType::A,
                Some(vec![cookie(&with_server), ecs("203.0.113.0", 24)]),
            ),
        ),
        (
            "cookie-required",
            4,
            query(
                13,
                "host1.example.com.",
                RecordType::MX,
                Some(vec![cookie(&client_cookie)]),
            ),
        ),
        (
            "rrl",
            6,
            query(14, "host2.example.com.", RecordType::A, None),
        ),
        (
            "srv",
            0,
            query(15, "_sip._udp.example.com.", RecordType::SRV, None),
        ),
        ("outside", 0, query(16, "example.org.", RecordType::A, None)),
        ("tsig", 0, tsig),
    ];
    for (name, ctl, q) in &dns {
        let mut b = vec![*ctl];
        if ctl & 8 != 0 {
            b.extend_from_slice(&v6);
        } else {
            b.extend_from_slice(&v4);
        }
        b.extend_from_slice(q);
        write(&corpus.join("dns_answer"), name, &b);
    }

    // edns_opt: OPT RDATA (option lists).
    let opts: Vec<(&str, Vec<EdnsOption>)> = vec![
        ("ecs4", vec![ecs("192.0.2.0", 24)]),
        ("ecs6", vec![ecs("2001:db8::", 48)]),
        ("ecs0", vec![ecs("0.0.0.0", 0)]),
        (
            "nsid",
            vec![EdnsOption::Unknown(u16::from(EdnsCode::NSID), Vec::new())],
        ),
        ("cookie8", vec![cookie(&client_cookie)]),
        ("cookie24", vec![cookie(&with_server)]),
        (
            "two-ecs",
            vec![ecs("192.0.2.0", 24), ecs("198.51.100.0", 22)],
        ),
    ];
    for (name, o) in opts {
        let q = query(1, "www.example.com.", RecordType::A, Some(o));
        write(&corpus.join("edns_opt"), name, &opt_rdata(&q));
    }

    // zone_parse and config_load: the repository's own files.
    for (dir, files) in [
        (
            "zone_parse",
            &[
                "zones/example.com.zone",
                "zones/hosts.zone",
                "benches/example.com.zone",
                "deploy/config/example.com.zone",
            ][..],
        ),
        (
            "config_load",
            &[
                "geolb.toml",
                "benches/geo.toml",
                "benches/simulate.toml",
                "benches/static.toml",
                "deploy/config/geolb.toml",
            ][..],
        ),
    ] {
        for f in files {
            let text = std::fs::read(root.join(f)).expect("repository file");
            write(&corpus.join(dir), &f.replace('/', "-"), &text);
        }
    }

    // http_request: control byte, then what a client sends.
    let http: [(&str, u8, &str); 9] = [
        ("get", 2, "GET /v2/x HTTP/1.1\r\nHost: api.example.com\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"),
        ("absolute", 6, "GET http://www.example.com:8080/ HTTP/1.1\r\nHost: admin.internal\r\nx-canary: 1\r\n\r\n"),
        ("chunked", 1, "POST /static/up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("cl-te", 2, "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("connection", 2, "GET / HTTP/1.1\r\nHost: [2001:db8::1]:443\r\nConnection: keep-alive, x-secret\r\nx-secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\r\n"),
        ("upgrade", 0, "GET /ws HTTP/1.1\r\nHost: www.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nProxy-Authorization: x\r\n\r\n"),
        ("pipelined", 6, "GET /a HTTP/1.1\r\nHost: a.example.com\r\n\r\nHEAD /b HTTP/1.1\r\nHost: b.example.com.\r\nForwarded: for=1.2.3.4\r\n\r\n"),
        ("http10", 1, "GET / HTTP/1.0\r\n\r\n"),
        ("bad-host", 2, "GET / HTTP/1.1\r\nHost: a\";for=6.6.6.6\r\n\r\n"),
    ];
    for (name, ctl, req) in http {
        let mut b = vec![ctl];
        b.extend_from_slice(req.as_bytes());
        write(&corpus.join("http_request"), name, &b);
    }
    println!("wrote the seed corpus under {}", corpus.display());
}

//! Bytes → the EDNS option parsing: the OPT record's options as the request
//! parser scans them (`wire::parse_request`), the client-subnet option
//! (`geo::ClientSubnet::parse`) and the cookie check (`guard::cookie`).
//!
//! The input is the OPT record's RDATA, put in a query for www.example.com.
//! Properties: the parser accepts exactly the option lists that are
//! well framed, and finds in them what an independent walk finds (NSID,
//! the first COOKIE, the last client subnet, FORMERR for a second one);
//! every client subnet it accepts passes `props::check_ecs`; a cookie of
//! each length gets the class RFC 7873 §5.2 gives it, and a server cookie
//! made for a client verifies for that client within the RFC 9018 §4.3
//! window and under the previous secret, and for no other client.
#![no_main]

#[path = "../../tests/common/props.rs"]
mod props;

use std::net::IpAddr;

use geolb::geo::ClientSubnet;
use geolb::guard::cookie::{self, Check, Secrets};
use geolb::wire::{self, Fault, OPT_COOKIE, OPT_ECS, OPT_NSID};
use libfuzzer_sys::fuzz_target;

const QUESTION: &[u8] = b"\x03www\x07example\x03com\x00\x00\x01\x00\x01";

/// What a plain walk of the option list finds, or None if it is not well
/// framed.
struct Walk {
    nsid: bool,
    cookie: Option<(usize, usize)>,
    ecs: Vec<(usize, usize)>,
}

fn walk(raw: &[u8], start: usize) -> Option<Walk> {
    let mut w = Walk {
        nsid: false,
        cookie: None,
        ecs: Vec::new(),
    };
    let mut at = start;
    while at < raw.len() {
        let head = raw.get(at..at + 4)?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let data = (at + 4, at + 4 + len);
        if data.1 > raw.len() {
            return None;
        }
        match code {
            OPT_NSID => w.nsid = true,
            OPT_COOKIE => {
                w.cookie.get_or_insert(data);
            }
            OPT_ECS => w.ecs.push(data),
            _ => {}
        }
        at = data.1;
    }
    Some(w)
}

fn check_cookie(data: &[u8]) {
    let secret = [7u8; 16];
    let secrets = Secrets {
        current: secret,
        previous: None,
    };
    let addr = IpAddr::from([192, 0, 2, 1]);
    let now = 1_700_000_000u32;
    let c = cookie::check(&secrets, data, addr, now);
    match data.len() {
        8 => assert_eq!(c, Check::ClientOnly),
        16..=40 => assert_ne!(c, Check::Malformed),
        _ => assert_eq!(c, Check::Malformed),
    }
    if c == Check::Valid {
        assert_eq!(data.len(), 24, "a valid server cookie is 16 bytes");
        let ts = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
        let client: [u8; 8] = data[..8].try_into().expect("8 bytes");
        assert_eq!(&cookie::make(&secret, &client, addr, ts)[..], &data[8..]);
    }
    // Made here, checked `skew` seconds later (from the input).
    let mut client = [0u8; 8];
    let n = data.len().min(8);
    client[..n].copy_from_slice(&data[..n]);
    let skew = data
        .get(8..10)
        .map_or(0, |b| i64::from(i16::from_be_bytes([b[0], b[1]])) * 4);
    let made = cookie::make(&secret, &client, addr, now);
    let mut opt = client.to_vec();
    opt.extend_from_slice(&made);
    let later = now.wrapping_add(skew as u32);
    let want = if (-300..=3600).contains(&skew) {
        Check::Valid
    } else {
        Check::Invalid
    };
    assert_eq!(
        cookie::check(&secrets, &opt, addr, later),
        want,
        "skew {skew}"
    );
    let rotated = secrets.rotate([9u8; 16]);
    assert_eq!(
        cookie::check(&rotated, &opt, addr, later),
        want,
        "previous secret"
    );
    let other = IpAddr::from([192, 0, 2, 2]);
    assert_eq!(cookie::check(&secrets, &opt, other, later), Check::Invalid);
}

fuzz_target!(|data: &[u8]| {
    let Ok(rdlen) = u16::try_from(data.len()) else {
        return;
    };
    let mut raw = vec![0xab, 0xcd, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    raw.extend_from_slice(QUESTION);
    raw.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    raw.extend_from_slice(&rdlen.to_be_bytes());
    let start = raw.len();
    raw.extend_from_slice(data);
    let parsed = wire::parse_request(&raw);
    let Some(w) = walk(&raw, start) else {
        assert!(parsed.is_err(), "badly framed options accepted");
        return;
    };
    let req = parsed.expect("well framed options refused");
    let e = req.edns.expect("the OPT record is read");
    assert_eq!((e.payload, e.version, e.dnssec_ok), (1232, 0, false));
    assert_eq!(e.nsid, w.nsid, "NSID");
    assert_eq!(e.cookie, w.cookie, "COOKIE");
    assert_eq!(e.ecs, w.ecs.last().copied(), "client subnet");
    let twice = w.ecs.len() > 1;
    assert_eq!(
        req.fault == Some(Fault::FormErr),
        twice,
        "second client subnet"
    );
    for &(a, b) in &w.ecs {
        let d = &raw[a..b];
        if let Err(err) = props::check_ecs(d, ClientSubnet::parse(d)) {
            panic!("{err}: {d:02x?}");
        }
    }
    if let Some((a, b)) = e.cookie {
        check_cookie(&raw[a..b]);
    }
});

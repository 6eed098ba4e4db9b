//! Bytes → the answer path as the listeners run it (`dns::answer::handle`)
//! over a snapshot with geo steering, ECS, a CNAME chain, a wildcard, a
//! delegation, response rate limiting and cookies.
//!
//! Input: one control byte, the client address (4 bytes, or 16 with bit 3
//! of the control byte), then the packet. Control bits: 0 TCP (else UDP);
//! 1-2 which snapshot (plain, RRL + cookies, cookies required, RRL at one
//! answer a second); 4 replace a 24-byte COOKIE's server part with a valid
//! one for this client, so the valid-cookie path is reached.
//!
//! Every reply must pass `props::check_reply` (ID and opcode echoed, QR,
//! within the size the query allows, parses, question and ECS echoed); on
//! the plain snapshot the compiled fast path and the reference path must
//! answer byte for byte alike.
#![no_main]

#[path = "../../tests/common/mmdb.rs"]
mod mmdb;
#[path = "../../tests/common/props.rs"]
mod props;
#[path = "../../tests/common/steering.rs"]
mod steering;

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::OnceLock;

use geolb::dns::answer::{handle, Outcome, Transport};
use geolb::guard::cookie;
use geolb::policy::Scratch;
use geolb::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

struct Fixture {
    _dirs: Vec<tempfile::TempDir>,
    snaps: Vec<Snapshot>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut dirs = Vec::new();
        let mut snaps = Vec::new();
        for extra in [
            "",
            "[rrl]\nenabled = true\nrate = 1000\n[cookies]\nenabled = true\n",
            "[cookies]\nenabled = true\nrequire = true\n",
            "[rrl]\nenabled = true\nrate = 1\nslip = 2\n",
        ] {
            let (d, s) = steering::snapshot_with_records(extra, steering::MORE_RECORDS);
            dirs.push(d);
            snaps.push(s);
        }
        Fixture { _dirs: dirs, snaps }
    })
}

thread_local! {
    static OUT: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(65535));
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let (client, packet): (IpAddr, &[u8]) = if ctl & 8 != 0 {
        let Some((a, p)) = rest.split_first_chunk::<16>() else {
            return;
        };
        (IpAddr::from(*a), p)
    } else {
        let Some((a, p)) = rest.split_first_chunk::<4>() else {
            return;
        };
        (IpAddr::from(*a), p)
    };
    let transport = if ctl & 1 != 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let which = usize::from((ctl >> 1) & 3);
    let snap = &fixture().snaps[which];
    let mut packet = packet.to_vec();
    if ctl & 16 != 0 {
        let range = geolb::wire::parse_request(&packet)
            .ok()
            .and_then(|r| r.edns)
            .and_then(|e| e.cookie);
        if let (Some((a, b)), Some(c)) = (range, &snap.guard.cookies) {
            if b - a == 24 {
                let mut theirs = [0u8; 8];
                theirs.copy_from_slice(&packet[a..a + 8]);
                let server = cookie::make(&c.secrets.current, &theirs, client, now());
                packet[a + 8..b].copy_from_slice(&server);
            }
        }
    }
    OUT.with(|cell| {
        let out = &mut *cell.borrow_mut();
        out.clear();
        // The same seed for both paths: weighted choices draw alike.
        let mut scratch = Scratch::seeded(7);
        let outcome = handle(snap, &packet, client, transport, out, &mut scratch);
        match outcome {
            Outcome::Drop => {}
            Outcome::Reply => {
                if let Err(e) = props::check_reply(&packet, out, transport, snap.udp_payload) {
                    panic!("{e}\nquery {packet:02x?}\nreply {out:02x?}");
                }
            }
            Outcome::Transfer(_) => {
                assert_eq!(transport, Transport::Tcp, "a transfer over UDP");
            }
        }
        if which == 0 {
            let fast = out.clone();
            let mut scratch = Scratch::seeded(7);
            scratch.reference = true;
            out.clear();
            let again = handle(snap, &packet, client, transport, out, &mut scratch);
            assert_eq!(outcome, again, "reference path decided otherwise");
            if outcome == Outcome::Reply {
                assert_eq!(&fast, out, "reference path answered otherwise");
            }
        }
    });
});

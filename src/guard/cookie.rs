//! DNS cookies (RFC 7873) with the interoperable server cookie of RFC 9018:
//! version 1, three reserved bytes, a 32-bit timestamp and an 8-byte
//! SipHash-2-4 over the client cookie, those 8 bytes and the client's
//! address, keyed by a 16-byte server secret.
//!
//! A server cookie is valid when its hash matches under the current secret
//! or the previous one and its timestamp lies between one hour in the past
//! and five minutes in the future (RFC 9018 §4.3). A reply echoes a valid
//! server cookie made under the current secret less than half an hour ago
//! and carries a freshly made one otherwise (RFC 9018 §4.3: a server
//! re-issues a cookie once it is half an hour old), so a client's cookie
//! never ages out while it keeps asking, and the usual reply costs one
//! hash, not two.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use siphasher::sip::SipHasher24;

/// Oldest accepted timestamp, seconds before now.
const PAST: i64 = 3600;
/// Newest accepted timestamp, seconds after now (clock skew).
const FUTURE: i64 = 300;
/// Age from which a valid server cookie is replaced by a fresh one.
const REISSUE: i64 = 1800;

/// What a query's COOKIE option holds (RFC 7873 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Length not 8 and not 16 to 40: FORMERR (§5.2.2).
    Malformed,
    /// A client cookie alone (§5.2.3).
    ClientOnly,
    /// A server cookie that is not ours, too old, or from the future (§5.2.4).
    Invalid,
    /// A server cookie this server made within the window (§5.2.5).
    Valid,
}

/// The server secrets: the current one makes cookies, both verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    pub current: [u8; 16],
    pub previous: Option<[u8; 16]>,
}

impl Secrets {
    /// Secrets after a change to `next`: the current one becomes the
    /// previous one (nothing changes when `next` is the current one).
    pub fn rotate(&self, next: [u8; 16]) -> Secrets {
        if next == self.current {
            return self.clone();
        }
        Secrets {
            current: next,
            previous: Some(self.current),
        }
    }
}

/// The 8-byte hash of RFC 9018 §4.4 over the client cookie, the server
/// cookie's first 8 bytes (version, reserved, timestamp) and the address.
pub fn hash(secret: &[u8; 16], client: &[u8; 8], head: &[u8; 8], addr: IpAddr) -> [u8; 8] {
    // One pass over the concatenation (whole 8-byte words, no streaming
    // state): the same bytes, so the same hash, as RFC 9018 gives.
    let mut buf = [0u8; 32];
    buf[..8].copy_from_slice(client);
    buf[8..16].copy_from_slice(head);
    let len = match addr.to_canonical() {
        IpAddr::V4(a) => {
            buf[16..20].copy_from_slice(&a.octets());
            20
        }
        IpAddr::V6(a) => {
            buf[16..].copy_from_slice(&a.octets());
            32
        }
    };
    SipHasher24::new_with_key(secret)
        .hash(&buf[..len])
        .to_le_bytes()
}

/// A new server cookie for `client` at `now` (Unix seconds).
pub fn make(secret: &[u8; 16], client: &[u8; 8], addr: IpAddr, now: u32) -> [u8; 16] {
    let mut head = [1u8, 0, 0, 0, 0, 0, 0, 0];
    head[4..].copy_from_slice(&now.to_be_bytes());
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&head);
    out[8..].copy_from_slice(&hash(secret, client, &head, addr));
    out
}

/// Classifies a COOKIE option's data from `addr`, received at `now`.
pub fn check(secrets: &Secrets, data: &[u8], addr: IpAddr, now: u32) -> Check {
    classify(secrets, data, addr, now).0
}

/// What a query's COOKIE option gets: its [`Check`] and the server cookie
/// the reply carries (meaningless when the check is `Malformed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub check: Check,
    pub server: [u8; 16],
}

/// Classifies a COOKIE option's data from `addr` at `now`, and picks the
/// server cookie of the reply: the query's own when it is valid under the
/// current secret and less than half an hour old, else a fresh one.
pub fn reply(secrets: &Secrets, data: &[u8], addr: IpAddr, now: u32) -> Reply {
    let (check, echo) = classify(secrets, data, addr, now);
    let server = match echo {
        Some(s) => s,
        None => {
            let mut client = [0u8; 8];
            if let Some(c) = data.get(..8) {
                client.copy_from_slice(c);
            }
            make(&secrets.current, &client, addr, now)
        }
    };
    Reply { check, server }
}

/// The check, and the server cookie itself when it may be sent back as it
/// is (valid under the current secret, made within the last half hour).
fn classify(secrets: &Secrets, data: &[u8], addr: IpAddr, now: u32) -> (Check, Option<[u8; 16]>) {
    match data.len() {
        8 => return (Check::ClientOnly, None),
        16..=40 => {}
        _ => return (Check::Malformed, None),
    }
    let (Ok(client), Ok(server)) = (
        <[u8; 8]>::try_from(&data[..8]),
        <[u8; 16]>::try_from(&data[8..]),
    ) else {
        // A server cookie of another length: not one of ours.
        return (Check::Invalid, None);
    };
    if server[0] != 1 {
        return (Check::Invalid, None);
    }
    let ts = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    // Serial number arithmetic (RFC 1982): how long ago it was made.
    let age = i64::from(now.wrapping_sub(ts) as i32);
    if !(-FUTURE..=PAST).contains(&age) {
        return (Check::Invalid, None);
    }
    let mut head = [0u8; 8];
    head.copy_from_slice(&server[..8]);
    let ok = |s: &[u8; 16]| constant_eq(&hash(s, &client, &head, addr), &server[8..]);
    if ok(&secrets.current) {
        (Check::Valid, (0..REISSUE).contains(&age).then_some(server))
    } else if secrets.previous.as_ref().is_some_and(ok) {
        (Check::Valid, None)
    } else {
        (Check::Invalid, None)
    }
}

/// Compares without an early exit (no timing hint at how much matched).
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Cookie counters, one set per worker slot, kept across reloads.
#[derive(Debug)]
pub struct Stats {
    slots: Box<[Slot]>,
}

#[repr(align(64))]
#[derive(Debug, Default)]
struct Slot {
    /// By [`Check`] (in its order).
    seen: [AtomicU64; 4],
    /// BADCOOKIE replies sent.
    badcookie: AtomicU64,
}

/// Cookie totals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub malformed: u64,
    pub client_only: u64,
    pub invalid: u64,
    pub valid: u64,
    pub badcookie: u64,
}

impl Stats {
    pub fn new(slots: usize) -> Stats {
        Stats {
            slots: (0..slots.max(1)).map(|_| Slot::default()).collect(),
        }
    }
    pub fn seen(&self, slot: usize, c: Check) {
        self.slots[slot % self.slots.len()].seen[c as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn badcookie(&self, slot: usize) {
        self.slots[slot % self.slots.len()]
            .badcookie
            .fetch_add(1, Ordering::Relaxed);
    }
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.slots.iter() {
            let n = |c: Check| s.seen[c as usize].load(Ordering::Relaxed);
            t.malformed += n(Check::Malformed);
            t.client_only += n(Check::ClientOnly);
            t.invalid += n(Check::Invalid);
            t.valid += n(Check::Valid);
            t.badcookie += s.badcookie.load(Ordering::Relaxed);
        }
        t
    }
}

/// The compiled `[cookies]`: secrets, policy and counters.
#[derive(Debug)]
pub struct Cookies {
    pub secrets: Secrets,
    /// BADCOOKIE over UDP to queries without a valid server cookie.
    pub require: bool,
    pub stats: std::sync::Arc<Stats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        let v = data_encoding::HEXLOWER.decode(s.as_bytes()).expect("hex");
        v.try_into().expect("length")
    }

    const SECRET: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";

    /// RFC 9018 Appendix A.1: learning a new server cookie.
    #[test]
    fn rfc9018_a_1_a_new_server_cookie() {
        let addr: IpAddr = "198.51.100.100".parse().expect("ip");
        let client = hex::<8>("2464c4abcf10c957");
        let got = make(&hex(SECRET), &client, addr, 1559731985);
        assert_eq!(got, hex::<16>("010000005cf79f111f8130c3eee29480"));
    }

    /// RFC 9018 Appendix A.2: the same client, 40 minutes later, sends the
    /// cookie of A.1 (valid) and gets a renewed one.
    #[test]
    fn rfc9018_a_2_a_renewed_server_cookie() {
        let addr: IpAddr = "198.51.100.100".parse().expect("ip");
        let secrets = Secrets {
            current: hex(SECRET),
            previous: None,
        };
        let query = hex::<24>("2464c4abcf10c957010000005cf79f111f8130c3eee29480");
        assert_eq!(check(&secrets, &query, addr, 1559734385), Check::Valid);
        let got = reply(&secrets, &query, addr, 1559734385);
        assert_eq!(got.check, Check::Valid);
        assert_eq!(got.server, hex::<16>("010000005cf7a871d4a564a1442aca77"));
    }

    /// RFC 9018 Appendix A.3: a cookie with the reserved bytes set is
    /// still valid (they are hashed as received); the reply's has them zero.
    /// The example's reply comes 1 h 52 min after the cookie was made, past
    /// the one-hour window, so validity is checked within it.
    #[test]
    fn rfc9018_a_3_reserved_bytes_are_hashed_as_received() {
        let addr: IpAddr = "203.0.113.203".parse().expect("ip");
        let secrets = Secrets {
            current: hex(SECRET),
            previous: None,
        };
        let query = hex::<24>("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5");
        assert_eq!(check(&secrets, &query, addr, 1559727985 + 60), Check::Valid);
        assert_eq!(
            check(&secrets, &query, addr, 1559734700),
            Check::Invalid,
            "older than an hour"
        );
        let got = make(&secrets.current, &hex("fc93fc62807ddb86"), addr, 1559734700);
        assert_eq!(got, hex::<16>("010000005cf7a9acf73a7810aca2381e"));
    }

    /// RFC 9018 Appendix A.4: IPv6, a cookie made under the previous secret
    /// is accepted after a rollover, and the reply's is made with the new one.
    #[test]
    fn rfc9018_a_4_ipv6_and_a_rolled_over_secret() {
        let addr: IpAddr = "2001:db8:220:1:59de:d0f4:8769:82b8".parse().expect("ip");
        let old = Secrets {
            current: hex("dd3bdf9344b678b185a6f5cb60fca715"),
            previous: None,
        };
        let secrets = old.rotate(hex("445536bcd2513298075a5d379663c962"));
        let query = hex::<24>("22681ab97d52c298010000005cf7c57926556bd0934c72f8");
        assert_eq!(check(&secrets, &query, addr, 1559741961), Check::Valid);
        // Two minutes old, but made under the previous secret: renewed.
        let got = reply(&secrets, &query, addr, 1559741961);
        assert_eq!(got.check, Check::Valid);
        assert_eq!(got.server, hex::<16>("010000005cf7c609a6bb79d16625507a"));
        // Two rotations later the old secret is gone.
        let later = secrets.rotate([7; 16]);
        assert_eq!(check(&later, &query, addr, 1559741961), Check::Invalid);
    }

    #[test]
    fn rfc7873_5_2_lengths_and_window() {
        let addr: IpAddr = "192.0.2.1".parse().expect("ip");
        let s = Secrets {
            current: [3; 16],
            previous: None,
        };
        for len in [0, 7, 9, 15, 41] {
            assert_eq!(check(&s, &vec![0; len], addr, 0), Check::Malformed, "{len}");
        }
        assert_eq!(check(&s, &[0; 8], addr, 0), Check::ClientOnly);
        assert_eq!(check(&s, &[0; 40], addr, 0), Check::Invalid);
        let now = 2_000_000_000u32;
        let mut q = [0u8; 24];
        q[..8].copy_from_slice(&[9; 8]);
        for (made, ok) in [
            (now - 3600, true),
            (now - 3601, false),
            (now + 300, true),
            (now + 301, false),
        ] {
            q[8..].copy_from_slice(&make(&s.current, &[9; 8], addr, made));
            let want = if ok { Check::Valid } else { Check::Invalid };
            assert_eq!(
                check(&s, &q, addr, now),
                want,
                "made at now{:+}",
                i64::from(made) - i64::from(now)
            );
        }
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        q[8..].copy_from_slice(&make(&s.current, &[9; 8], addr, now));
        assert_eq!(check(&s, &q, other, now), Check::Invalid, "another address");
    }

    /// RFC 9018 §4.3: a valid cookie under the current secret is sent back
    /// as it is until it is half an hour old, then replaced; a cookie from
    /// the future (clock skew) is valid but replaced at once; a client
    /// cookie alone or an invalid one gets a fresh server cookie.
    #[test]
    fn rfc9018_4_3_a_cookie_is_reissued_once_half_an_hour_old() {
        let addr: IpAddr = "192.0.2.1".parse().expect("ip");
        let s = Secrets {
            current: [3; 16],
            previous: None,
        };
        let now = 2_000_000_000u32;
        let fresh = make(&s.current, &[9; 8], addr, now);
        let mut q = [0u8; 24];
        q[..8].copy_from_slice(&[9; 8]);
        for (made, echoed) in [
            (now, true),
            (now - 1799, true),
            (now - 1800, false),
            (now - 3600, false),
            (now + 1, false),
        ] {
            q[8..].copy_from_slice(&make(&s.current, &[9; 8], addr, made));
            let got = reply(&s, &q, addr, now);
            assert_eq!(got.check, Check::Valid);
            let want = if echoed { &q[8..] } else { &fresh[..] };
            assert_eq!(
                &got.server[..],
                want,
                "made at now{:+}",
                i64::from(made) - i64::from(now)
            );
        }
        let mut other = q;
        other[8..].fill(0);
        for query in [&q[..8], &other[..]] {
            let got = reply(&s, query, addr, now);
            assert_ne!(got.check, Check::Valid);
            assert_eq!(got.server, fresh);
        }
    }
}

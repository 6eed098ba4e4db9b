//! DNS cookies (RFC 7873) with the interoperable server cookie of RFC 9018:
//! version 1, three reserved bytes, a 32-bit timestamp and an 8-byte
//! SipHash-2-4 over the client cookie, those 8 bytes and the client's
//! address, keyed by a 16-byte server secret.
//!
//! A server cookie is valid when its hash matches under the current secret
//! or the previous one and its timestamp lies between one hour in the past
//! and five minutes in the future (RFC 9018 §4.3). Every reply carries a
//! freshly made server cookie (allowed at any time, RFC 9018 §4.3), so a
//! client's cookie never ages out while it keeps asking.

use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use siphasher::sip::SipHasher24;

/// Oldest accepted timestamp, seconds before now.
const PAST: i64 = 3600;
/// Newest accepted timestamp, seconds after now (clock skew).
const FUTURE: i64 = 300;

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
    let mut h = SipHasher24::new_with_key(secret);
    h.write(client);
    h.write(head);
    match addr.to_canonical() {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => h.write(&a.octets()),
    }
    h.finish().to_le_bytes()
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
    match data.len() {
        8 => return Check::ClientOnly,
        16..=40 => {}
        _ => return Check::Malformed,
    }
    let (Ok(client), Ok(server)) = (
        <[u8; 8]>::try_from(&data[..8]),
        <[u8; 16]>::try_from(&data[8..]),
    ) else {
        // A server cookie of another length: not one of ours.
        return Check::Invalid;
    };
    if server[0] != 1 {
        return Check::Invalid;
    }
    let ts = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    // Serial number arithmetic (RFC 1982): how long ago it was made.
    let age = i64::from(now.wrapping_sub(ts) as i32);
    if !(-FUTURE..=PAST).contains(&age) {
        return Check::Invalid;
    }
    let mut head = [0u8; 8];
    head.copy_from_slice(&server[..8]);
    let ok = |s: &[u8; 16]| constant_eq(&hash(s, &client, &head, addr), &server[8..]);
    if ok(&secrets.current) || secrets.previous.as_ref().is_some_and(ok) {
        Check::Valid
    } else {
        Check::Invalid
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
        let got = make(&secrets.current, &hex("2464c4abcf10c957"), addr, 1559734385);
        assert_eq!(got, hex::<16>("010000005cf7a871d4a564a1442aca77"));
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
        let got = make(&secrets.current, &hex("22681ab97d52c298"), addr, 1559741961);
        assert_eq!(got, hex::<16>("010000005cf7c609a6bb79d16625507a"));
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
}

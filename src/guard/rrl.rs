//! Response rate limiting: how many UDP responses of one class a client
//! prefix gets per second.
//!
//! The state is one fixed table of `AtomicU64`, shared by every UDP worker
//! of the process, sized when the settings are compiled (≈ 1.4 × the
//! highest expected query rate / the rate, as Knot sizes its table); a
//! query costs one keyed hash, two loads from one cache line and one
//! compare-and-swap — no lock, no allocation, and memory that does not
//! grow with the number of clients.
//!
//! Each entry is a GCRA cell: a 24-bit tag of its key and the theoretical
//! arrival time (40 bits of microseconds since the table was made, taken
//! modulo 2^40). A key hashes to a pair of neighbouring entries: it uses the
//! one with its tag, else one whose allowance is back to full (it takes it
//! over), else it shares the less loaded one with the key already there —
//! a collision between two busy keys can limit both together, never let
//! either through more.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use siphasher::sip::SipHasher13;

use super::Now;

/// Response classes, each with its own allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    /// Records in the answer section.
    Positive = 0,
    /// The name exists, the type does not.
    Nodata = 1,
    /// Accounted per zone, so random names do not each get an allowance.
    Nxdomain = 2,
    /// A delegation, accounted per zone.
    Referral = 3,
    /// REFUSED, FORMERR, NOTIMP... accounted per prefix alone.
    Error = 4,
    /// ANY queries and answers over 1 KiB: what amplification wants.
    Large = 5,
}

/// The class names, in `Class` order (metrics labels, status keys).
pub const CLASSES: [&str; 6] = [
    "positive", "nodata", "nxdomain", "referral", "error", "large",
];

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Send it truncated (TC=1, no records): a real resolver retries over TCP.
    Slip,
    Drop,
}

/// The compiled settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub rate: u32,
    pub burst: u32,
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub exempt: Vec<IpNet>,
    pub dry_run: bool,
    pub table_size: usize,
}

/// Counters of one worker slot (written by that worker only).
#[repr(align(128))]
#[derive(Debug, Default)]
struct Slot {
    dropped: [AtomicU64; 6],
    slipped: [AtomicU64; 6],
    /// Dry run: responses that would have been limited.
    would: [AtomicU64; 6],
    /// Limited responses so far (decides which ones slip).
    seq: AtomicU64,
}

/// RRL counters, kept across reloads (whatever the settings become).
#[derive(Debug)]
pub struct Stats {
    slots: Box<[Slot]>,
    /// Unix seconds of the last dry-run log line.
    last_log: AtomicU64,
}

/// Totals per class.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub dropped: [u64; 6],
    pub slipped: [u64; 6],
    pub would: [u64; 6],
}

impl Stats {
    pub fn new(slots: usize) -> Stats {
        Stats {
            slots: (0..slots.max(1)).map(|_| Slot::default()).collect(),
            last_log: AtomicU64::new(0),
        }
    }
    fn slot(&self, i: usize) -> &Slot {
        &self.slots[i % self.slots.len()]
    }
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.slots.iter() {
            for c in 0..6 {
                t.dropped[c] += s.dropped[c].load(Ordering::Relaxed);
                t.slipped[c] += s.slipped[c].load(Ordering::Relaxed);
                t.would[c] += s.would[c].load(Ordering::Relaxed);
            }
        }
        t
    }
}

const TIME_BITS: u32 = 40;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// The rate limiter: settings and the shared table.
#[derive(Debug)]
pub struct Limiter {
    pub settings: Settings,
    table: Box<[AtomicU64]>,
    mask: usize,
    hasher: SipHasher13,
    /// [`Now::micros`] when the table was made.
    start: u64,
    /// Microseconds between two responses at the rate.
    interval: u64,
    /// How far ahead of now the arrival time may run: (burst − 1) intervals.
    tolerance: u64,
    pub stats: std::sync::Arc<Stats>,
}

impl Limiter {
    /// A limiter with an empty table; `key` keys the hash (make it random,
    /// so no one can aim keys at one entry).
    pub fn new(settings: Settings, key: (u64, u64), stats: std::sync::Arc<Stats>) -> Limiter {
        let size = settings.table_size.max(2).next_power_of_two();
        let interval = (1_000_000 / u64::from(settings.rate.max(1))).max(1);
        let tolerance = interval * u64::from(settings.burst.max(1) - 1);
        Limiter {
            table: (0..size).map(|_| AtomicU64::new(0)).collect(),
            mask: size - 1,
            hasher: SipHasher13::new_with_keys(key.0, key.1),
            start: Now::read().micros,
            interval,
            tolerance,
            settings,
            stats,
        }
    }

    /// Table entries (8 bytes each).
    pub fn entries(&self) -> usize {
        self.table.len()
    }

    /// The keyed hash of the account: family, class, client prefix and
    /// (but for errors) the name, hashed in one pass over a stack buffer
    /// (whole 8-byte words, no streaming state).
    fn hash(&self, client: IpAddr, class: Class, name: &[u8]) -> u64 {
        let (family, prefix) =
            super::client_prefix(client, self.settings.ipv4_prefix, self.settings.ipv6_prefix);
        let name = if class == Class::Error { &[][..] } else { name };
        let mut buf = [0u8; 18 + 255];
        buf[0] = family;
        buf[1] = class as u8;
        buf[2..18].copy_from_slice(&prefix.to_le_bytes());
        match buf.get_mut(18..18 + name.len()) {
            Some(rest) => {
                rest.copy_from_slice(name);
                self.hasher.hash(&buf[..18 + name.len()])
            }
            // Longer than a domain name can be: hash it whole all the same.
            None => {
                use std::hash::Hasher;
                let mut h = self.hasher;
                h.write(&buf[..18]);
                h.write(name);
                h.finish()
            }
        }
    }

    fn now(&self, now: Now) -> u64 {
        now.micros.wrapping_sub(self.start) & TIME_MASK
    }

    /// Accounts one response of `class` to `client` (its name: the question
    /// for positive, NODATA and large answers, the zone's apex for NXDOMAIN
    /// and referrals; ignored for errors); `slot` is the caller's counter slot.
    pub fn check(&self, client: IpAddr, class: Class, name: &[u8], slot: usize) -> Verdict {
        self.check_at(client, class, name, slot, Now::read())
    }

    /// [`Limiter::check`] at `now` (the time of the caller's batch).
    pub fn check_at(
        &self,
        client: IpAddr,
        class: Class,
        name: &[u8],
        slot: usize,
        now: Now,
    ) -> Verdict {
        let client = client.to_canonical();
        if self.settings.exempt.iter().any(|n| n.contains(&client)) {
            return Verdict::Pass;
        }
        let h = self.hash(client, class, name);
        let limited = self.take(h, self.now(now));
        let c = class as usize;
        let st = self.stats.slot(slot);
        if !limited {
            return Verdict::Pass;
        }
        if self.settings.dry_run {
            st.would[c].fetch_add(1, Ordering::Relaxed);
            self.log_dry_run(client, class);
            return Verdict::Pass;
        }
        let seq = st.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let slip = self.settings.slip;
        if slip > 0 && seq % u64::from(slip) == 0 {
            st.slipped[c].fetch_add(1, Ordering::Relaxed);
            Verdict::Slip
        } else {
            st.dropped[c].fetch_add(1, Ordering::Relaxed);
            Verdict::Drop
        }
    }

    #[cold]
    fn log_dry_run(&self, client: IpAddr, class: Class) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.stats.last_log.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .stats
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(
                %client,
                class = CLASSES[class as usize],
                rate = self.settings.rate,
                "rrl dry run: this client's responses would be limited (at most one such line every 10 s; counted in geolb_rrl_would_limit_total)"
            );
        }
    }

    /// One GCRA step on the entry pair of `h`; true when the response is
    /// over the allowance.
    fn take(&self, h: u64, now: u64) -> bool {
        let tag = h >> TIME_BITS; // the top 24 bits
        let at = (h as usize) & self.mask & !1;
        // A few attempts when other workers write the same pair at once;
        // past them, decide without recording (never wait).
        for _ in 0..4 {
            let pair = [
                self.table[at].load(Ordering::Relaxed),
                self.table[at + 1].load(Ordering::Relaxed),
            ];
            // Each entry's arrival time relative to now: None when its
            // allowance is full again (or it is stale past the time wrap).
            let ahead = |e: u64| -> Option<u64> {
                if e == 0 {
                    return None; // never written
                }
                let d = (e & TIME_MASK).wrapping_sub(now) & TIME_MASK;
                (d != 0 && d <= self.tolerance + self.interval).then_some(d)
            };
            let mine = (0..2).find(|&i| pair[i] >> TIME_BITS == tag);
            let pick = mine
                .or_else(|| (0..2).find(|&i| ahead(pair[i]).is_none()))
                .unwrap_or_else(|| {
                    if ahead(pair[0]) <= ahead(pair[1]) {
                        0
                    } else {
                        1
                    }
                });
            let old = pair[pick];
            let owner = if mine.is_some() || ahead(old).is_none() {
                tag
            } else {
                old >> TIME_BITS
            };
            let d = ahead(old).unwrap_or(0);
            if d > self.tolerance {
                return true;
            }
            let tat = (now + d + self.interval) & TIME_MASK;
            let new = (owner << TIME_BITS) | tat;
            if self.table[at + pick]
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return false;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limiter(rate: u32, burst: u32, slip: u32) -> Limiter {
        Limiter::new(
            Settings {
                rate,
                burst,
                slip,
                ipv4_prefix: 24,
                ipv6_prefix: 56,
                exempt: vec!["192.0.2.7/32".parse().expect("net")],
                dry_run: false,
                table_size: 1024,
            },
            (1, 2),
            Arc::new(Stats::new(2)),
        )
    }

    #[test]
    fn a_burst_passes_then_the_rate_applies() {
        let l = limiter(10, 5, 0);
        let h = 0xabc_u64 << 40 | 77;
        let t0 = 1_000_000;
        for i in 0..5 {
            assert!(!l.take(h, t0), "burst response {i}");
        }
        assert!(l.take(h, t0), "sixth at once is over");
        // One interval (100 ms) later exactly one more passes.
        assert!(!l.take(h, t0 + 100_000));
        assert!(l.take(h, t0 + 100_000));
        // After a long pause the whole burst is back.
        for _ in 0..5 {
            assert!(!l.take(h, t0 + 10_000_000));
        }
    }

    #[test]
    fn an_entry_older_than_the_time_wrap_is_taken_as_idle() {
        let l = limiter(10, 1, 0);
        let h = 5u64 << 40 | 8;
        assert!(!l.take(h, TIME_MASK - 10));
        // 2^40 µs later the stored time reads as "just ahead" or far away:
        // either way not a reason to limit a key seen once.
        assert!(!l.take(h, (TIME_MASK - 10 + 300_000) & TIME_MASK));
    }

    #[test]
    fn keys_of_one_pair_get_an_entry_each_and_a_third_shares() {
        let l = limiter(1, 1, 0);
        let t = 5_000_000;
        let (a, b, c) = (1u64 << 40 | 2, 2u64 << 40 | 2, 3u64 << 40 | 2);
        assert!(!l.take(a, t));
        assert!(!l.take(b, t), "the second key gets the pair's other entry");
        assert!(l.take(a, t) && l.take(b, t));
        assert!(
            l.take(c, t),
            "a third busy key shares, so it is limited too"
        );
    }

    #[test]
    fn prefixes_share_an_allowance_and_classes_do_not() {
        let l = limiter(1, 2, 1);
        let a: IpAddr = "198.51.100.1".parse().expect("ip");
        let b: IpAddr = "198.51.100.200".parse().expect("ip");
        assert_eq!(l.check(a, Class::Positive, b"\x01a\x00", 0), Verdict::Pass);
        assert_eq!(l.check(b, Class::Positive, b"\x01a\x00", 0), Verdict::Pass);
        assert_eq!(l.check(a, Class::Positive, b"\x01a\x00", 0), Verdict::Slip);
        assert_eq!(l.check(a, Class::Nxdomain, b"\x01a\x00", 0), Verdict::Pass);
        assert_eq!(l.check(a, Class::Positive, b"\x01b\x00", 0), Verdict::Pass);
        let ex: IpAddr = "192.0.2.7".parse().expect("ip");
        for _ in 0..10 {
            assert_eq!(l.check(ex, Class::Positive, b"\x00", 1), Verdict::Pass);
        }
        assert_eq!(l.stats.totals().slipped[0], 1);
    }

    #[test]
    fn slip_two_alternates_and_dry_run_only_counts() {
        let l = limiter(1, 1, 2);
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(l.check(a, Class::Error, b"", 0), Verdict::Pass);
        let v: Vec<Verdict> = (0..4).map(|_| l.check(a, Class::Error, b"", 0)).collect();
        assert_eq!(
            v,
            [Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip]
        );
        let mut s = l.settings.clone();
        s.dry_run = true;
        let d = Limiter::new(s, (1, 2), Arc::new(Stats::new(1)));
        for _ in 0..5 {
            assert_eq!(d.check(a, Class::Error, b"", 0), Verdict::Pass);
        }
        assert_eq!(d.stats.totals().would[Class::Error as usize], 4);
    }
}

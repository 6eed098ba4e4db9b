//! The DNS listeners' defences against floods and reflection, as plain
//! state the answer path reads: response rate limiting ([`rrl`]) and DNS
//! cookies ([`cookie`]). No sockets, no config types: `snapshot::guard`
//! compiles them from the config, `dns::answer` consults them.

pub mod cookie;
pub mod rrl;

use std::sync::OnceLock;
use std::time::Instant;

/// The time the defences work with, read once per batch of queries (a UDP
/// worker reads it after each `recvmmsg`, not per answer: a batch is
/// answered within a fraction of a millisecond, far below what a cookie's
/// seconds or a rate limit's allowance can tell apart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Now {
    /// Unix seconds (cookie timestamps, compared in serial arithmetic).
    pub unix: u32,
    /// Microseconds since the process first read the time (rate limits).
    pub micros: u64,
}

impl Now {
    /// The time now.
    pub fn read() -> Now {
        static START: OnceLock<Instant> = OnceLock::new();
        let micros = START.get_or_init(Instant::now).elapsed().as_micros() as u64;
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        Now { unix, micros }
    }

    /// The time now when `guard` has a defence on; zero otherwise (nothing
    /// reads it, so no clock is read).
    pub fn for_guard(guard: &Guard) -> Now {
        if guard.rrl.is_some() || guard.cookies.is_some() {
            Now::read()
        } else {
            Now::default()
        }
    }
}

/// The client prefix of `ip` (IPv4-mapped IPv6 counts as IPv4): its family
/// and its first `v4` or `v6` bits, an IPv4 address in the top 32 of the 128.
pub fn client_prefix(ip: std::net::IpAddr, v4: u8, v6: u8) -> (u8, u128) {
    let mask = |bits: u128, p: u8| match p {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p.min(128)))),
    };
    match ip.to_canonical() {
        std::net::IpAddr::V4(a) => (4, mask(u128::from(u32::from(a)) << 96, v4.min(32))),
        std::net::IpAddr::V6(a) => (6, mask(u128::from(a), v6)),
    }
}

/// What a snapshot carries for the defences (each off when absent).
#[derive(Debug, Default)]
pub struct Guard {
    pub rrl: Option<std::sync::Arc<rrl::Limiter>>,
    pub cookies: Option<cookie::Cookies>,
    /// Counters, kept across reloads and whether or not a defence is on.
    pub rrl_stats: std::sync::Arc<rrl::Stats>,
    pub cookie_stats: std::sync::Arc<cookie::Stats>,
}

impl Default for rrl::Stats {
    fn default() -> Self {
        rrl::Stats::new(1)
    }
}

impl Default for cookie::Stats {
    fn default() -> Self {
        cookie::Stats::new(1)
    }
}

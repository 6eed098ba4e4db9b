//! The DNS listeners' defences against floods and reflection, as plain
//! state the answer path reads: response rate limiting ([`rrl`]) and DNS
//! cookies ([`cookie`]). No sockets, no config types: `snapshot::guard`
//! compiles them from the config, `dns::answer` consults them.

pub mod cookie;
pub mod rrl;

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

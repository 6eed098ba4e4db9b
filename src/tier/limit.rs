//! Request rate limits of an HTTP listener: per client address and for the
//! whole listener, GCRA (governor) with a burst. Past a limit a request gets
//! 429 with `Retry-After` and never reaches a backend. The per-client table
//! forgets clients whose allowance is back to full (swept every few
//! seconds), so it holds only clients seen within one burst's time.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::plan::{Rate, RateLimitPlan};

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Client,
    Listener,
}

/// A listener's limiters, built from its plan (kept across reloads while
/// the plan is the same).
pub struct Limits {
    pub plan: RateLimitPlan,
    per_client: Option<DefaultKeyedRateLimiter<IpAddr>>,
    listener: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

fn quota(r: Rate) -> Option<Quota> {
    let per = NonZeroU32::new(r.per_second)?;
    let burst = NonZeroU32::new(r.burst)?;
    Some(Quota::per_second(per).allow_burst(burst))
}

impl Limits {
    pub fn new(plan: &RateLimitPlan) -> Self {
        Limits {
            plan: plan.clone(),
            per_client: plan.per_client.and_then(quota).map(RateLimiter::keyed),
            listener: plan.listener.and_then(quota).map(RateLimiter::direct),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from `client`'s and the listener's allowance, or
    /// says which limit refused it and how long until one is allowed.
    pub fn check(&self, client: IpAddr) -> Result<(), (Limited, Duration)> {
        let client = client.to_canonical();
        if super::ip_in(client, &self.plan.exempt) {
            return Ok(());
        }
        if let Some(l) = &self.per_client {
            if let Err(n) = l.check_key(&client) {
                return Err((Limited::Client, n.wait_time_from(self.clock.now())));
            }
        }
        if let Some(l) = &self.listener {
            if let Err(n) = l.check() {
                return Err((Limited::Listener, n.wait_time_from(self.clock.now())));
            }
        }
        Ok(())
    }

    /// The limits that apply to `client`, in words.
    pub fn describe(&self, client: IpAddr) -> String {
        let client = client.to_canonical();
        if super::ip_in(client, &self.plan.exempt) {
            return format!("{client} is exempt");
        }
        let rate = |r: Option<super::plan::Rate>| {
            r.map_or("none".to_string(), |r| {
                format!("{}/s, burst {}", r.per_second, r.burst)
            })
        };
        format!(
            "per client {}; listener {}",
            rate(self.plan.per_client),
            rate(self.plan.listener)
        )
    }

    /// Forgets clients back at full allowance (bounded memory).
    pub fn sweep(&self) {
        if let Some(l) = &self.per_client {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Clients remembered now.
    pub fn clients(&self) -> usize {
        self.per_client.as_ref().map_or(0, |l| l.len())
    }
}

/// `Retry-After` seconds for a wait (at least 1).
pub fn retry_after(wait: Duration) -> u64 {
    let up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    up.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(per_client: Option<(u32, u32)>, listener: Option<(u32, u32)>) -> RateLimitPlan {
        let rate = |(per_second, burst)| Rate { per_second, burst };
        RateLimitPlan {
            per_client: per_client.map(rate),
            listener: listener.map(rate),
            exempt: vec!["10.9.0.0/16".parse().expect("net")],
        }
    }

    #[test]
    fn each_client_gets_its_burst_then_is_refused_with_a_wait() {
        let l = Limits::new(&plan(Some((1, 3)), None));
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(l.check(a), Ok(()));
        }
        let (which, wait) = l.check(a).expect_err("limited");
        assert_eq!(which, Limited::Client);
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert_eq!(retry_after(wait), 1);
        assert_eq!(l.check(b), Ok(()), "another client has its own allowance");
        // The exempt range is never limited.
        let e: IpAddr = "10.9.1.1".parse().expect("ip");
        for _ in 0..100 {
            assert_eq!(l.check(e), Ok(()));
        }
        assert_eq!(l.clients(), 2);
    }

    #[test]
    fn the_listener_limit_covers_every_client() {
        let l = Limits::new(&plan(None, Some((1, 2))));
        assert_eq!(l.check("192.0.2.1".parse().expect("ip")), Ok(()));
        assert_eq!(l.check("192.0.2.2".parse().expect("ip")), Ok(()));
        let (which, _) = l
            .check("192.0.2.3".parse().expect("ip"))
            .expect_err("limited");
        assert_eq!(which, Limited::Listener);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_millis(1)), 1);
        assert_eq!(retry_after(Duration::from_secs(2)), 2);
        assert_eq!(retry_after(Duration::from_millis(2001)), 3);
    }
}

//! Passive ejection, the pure part (Envoy's outlier detection, HAProxy's
//! `observe layer4` + `error-limit`): the proxy reports each request's or
//! connection's outcome; `failures` consecutive failures inside `window`
//! eject the backend for `base × ejections` (capped at `max`).
//!
//! The cap on how much of a group may be out at once is computed from the
//! group as it is now (its current members with a weight above zero) and the
//! ejections in force now — never from counts kept across reloads, which is
//! how Envoy came to eject more than its percentage (envoy#26877). The cap
//! is `floor(size × max_percent / 100)`, but at least one when the group has
//! two or more members (and `max_percent > 0`): a small group can always
//! shed one bad member, and a single backend is never ejected (ejecting the
//! only backend helps nobody; active health checks take it out if it is
//! really down).

use std::time::Duration;

/// Passive ejection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EjectionSettings {
    /// Consecutive failures that eject; 0 turns ejection off.
    pub failures: u32,
    /// The failures must fall inside this window (from the first of them).
    pub window: Duration,
    /// Ejection time for the first ejection; the n-th lasts n × this.
    pub base: Duration,
    /// The longest an ejection lasts.
    pub max: Duration,
    /// At most this share (percent) of a group is ejected at once.
    pub max_percent: u8,
    /// Outlier detection by success rate (Envoy's `success_rate`): off when
    /// None.
    pub success_rate: Option<SuccessRate>,
}

/// Success-rate outlier detection: every `interval`, among the backends of
/// a group (primaries and backups apart) that handled at least
/// `min_requests` in it, when there are at least `min_hosts` of them, one
/// whose success rate is below `mean − stdev_factor × stdev` is ejected
/// (within the group's cap). With n hosts one outlier is at most √(n−1)
/// standard deviations from the mean, so a factor of 1.9 needs five hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuccessRate {
    pub interval: Duration,
    pub min_requests: u32,
    pub min_hosts: u32,
    /// Thousandths (1900 = 1.9).
    pub stdev_factor_milli: u32,
}

impl Default for SuccessRate {
    /// Envoy's defaults: 10 s, 100 requests, 5 hosts, 1.9.
    fn default() -> Self {
        SuccessRate {
            interval: Duration::from_secs(10),
            min_requests: 100,
            min_hosts: 5,
            stdev_factor_milli: 1900,
        }
    }
}

impl Default for EjectionSettings {
    /// Envoy's defaults: 5 failures, 30 s base, 300 s max, 10 %.
    fn default() -> Self {
        EjectionSettings {
            failures: 5,
            window: Duration::from_secs(10),
            base: Duration::from_secs(30),
            max: Duration::from_secs(300),
            max_percent: 10,
            success_rate: None,
        }
    }
}

impl EjectionSettings {
    /// How many of a group of `size` may be ejected at once.
    pub fn cap(&self, size: usize) -> usize {
        if self.max_percent == 0 || size < 2 {
            return 0;
        }
        (size * usize::from(self.max_percent.min(100)) / 100).max(1)
    }
}

/// Why a backend is out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum EjectionReason {
    /// This many failures in a row.
    ConsecutiveFailures { failures: u32 },
    /// Its success rate in the last interval (per mille) was below the
    /// group's threshold (mean − factor × stdev, per mille).
    SuccessRate {
        rate_permille: u32,
        threshold_permille: u32,
        requests: u32,
    },
}

/// An ejection as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EjectionInfo {
    pub reason: EjectionReason,
    /// When it started and when it ends (the caller's clock, ms).
    pub since_ms: u64,
    pub until_ms: u64,
    /// Ejections so far (the multiplier of the next one's length).
    pub count: u32,
}

/// What a reported failure did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted; not (yet) enough to eject.
    Counted { consecutive: u32 },
    /// Ejected until the given time.
    Ejected { until_ms: u64 },
    /// Enough to eject, but the group is at its ejection cap.
    Capped,
    /// Already ejected, ejection off, or unknown backend: nothing changed.
    Ignored,
}

/// Per-identity ejection bookkeeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ejection {
    consecutive: u32,
    window_start: u64,
    /// The last ejection (in force or past).
    last: Option<EjectionInfo>,
    /// Ejections so far; decays by one per clean `base × count` after one.
    count: u32,
    /// When `count` last decayed (or the last ejection ended).
    clean_since: u64,
    /// This success-rate interval: requests and the successful ones.
    pub(crate) sr_total: u32,
    pub(crate) sr_ok: u32,
}

impl Ejection {
    pub fn ejected(&self, now: u64) -> bool {
        self.last.is_some_and(|l| l.until_ms > now)
    }

    /// The end of the last ejection, if it has ended by `now`.
    pub fn ended(&self, now: u64) -> Option<u64> {
        self.last.map(|l| l.until_ms).filter(|&u| u <= now)
    }

    /// The ejection in force at `now`.
    pub fn info(&self, now: u64) -> Option<EjectionInfo> {
        self.last.filter(|l| l.until_ms > now)
    }

    /// Ends the ejection in force now (the group shrank below what its cap
    /// allows); the backend ramps back from `now` like any other return.
    pub fn lift(&mut self, now: u64) {
        if let Some(l) = self.last.as_mut().filter(|l| l.until_ms > now) {
            l.until_ms = now;
            self.clean_since = now;
        }
    }

    /// When the ejection in force started.
    pub fn since(&self, now: u64) -> Option<u64> {
        self.info(now).map(|l| l.since_ms)
    }

    /// Counts one failure; `may_eject` says whether the group's cap allows
    /// one more ejection (the caller counts the group).
    pub fn failure(
        &mut self,
        s: &EjectionSettings,
        now: u64,
        may_eject: impl FnOnce() -> bool,
    ) -> FailureOutcome {
        if s.failures == 0 || self.ejected(now) {
            return FailureOutcome::Ignored;
        }
        let window = s.window.as_millis() as u64;
        if self.consecutive == 0 || now.saturating_sub(self.window_start) > window {
            self.consecutive = 0;
            self.window_start = now;
        }
        self.consecutive += 1;
        if self.consecutive < s.failures {
            return FailureOutcome::Counted {
                consecutive: self.consecutive,
            };
        }
        if !may_eject() {
            return FailureOutcome::Capped;
        }
        let reason = EjectionReason::ConsecutiveFailures {
            failures: self.consecutive,
        };
        FailureOutcome::Ejected {
            until_ms: self.eject(s, now, reason),
        }
    }

    /// Ejects now for `base × count` (capped at `max`); returns the end.
    pub fn eject(&mut self, s: &EjectionSettings, now: u64, reason: EjectionReason) -> u64 {
        self.count = self.count.saturating_add(1);
        let base = s.base.as_millis() as u64;
        let length = base
            .saturating_mul(u64::from(self.count))
            .min(s.max.as_millis() as u64);
        let until_ms = now.saturating_add(length);
        self.last = Some(EjectionInfo {
            reason,
            since_ms: now,
            until_ms,
            count: self.count,
        });
        self.consecutive = 0;
        self.clean_since = until_ms;
        until_ms
    }

    /// Counts one request for the success-rate interval.
    pub fn observe(&mut self, ok: bool) {
        self.sr_total = self.sr_total.saturating_add(1);
        self.sr_ok = self.sr_ok.saturating_add(u32::from(ok));
    }

    /// A success ends the run of failures; a backend clean for
    /// `base × count` since its last ejection ended has its count lowered
    /// by one, so its next ejection is shorter.
    pub fn success(&mut self, s: &EjectionSettings, now: u64) {
        self.consecutive = 0;
        if self.count == 0 || self.ejected(now) {
            return;
        }
        let period = (s.base.as_millis() as u64).saturating_mul(u64::from(self.count));
        if now >= self.clean_since.saturating_add(period) {
            self.count -= 1;
            self.clean_since = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EjectionSettings {
        EjectionSettings {
            failures: 3,
            window: Duration::from_millis(100),
            base: Duration::from_millis(1000),
            max: Duration::from_millis(2500),
            max_percent: 50,
            success_rate: None,
        }
    }

    #[test]
    fn the_cap_uses_the_group_as_it_is_and_allows_one_of_two() {
        let s = settings();
        assert_eq!(s.cap(1), 0);
        assert_eq!(s.cap(2), 1);
        assert_eq!(s.cap(3), 1);
        assert_eq!(s.cap(10), 5);
        let none = EjectionSettings {
            max_percent: 0,
            ..settings()
        };
        assert_eq!(none.cap(10), 0);
    }

    #[test]
    fn failures_must_be_consecutive_and_inside_the_window() {
        let s = settings();
        let mut e = Ejection::default();
        assert_eq!(
            e.failure(&s, 0, || true),
            FailureOutcome::Counted { consecutive: 1 }
        );
        e.success(&s, 1);
        e.failure(&s, 2, || true);
        e.failure(&s, 3, || true);
        // Outside the window: starts again.
        assert_eq!(
            e.failure(&s, 200, || true),
            FailureOutcome::Counted { consecutive: 1 }
        );
        e.failure(&s, 201, || true);
        assert_eq!(e.failure(&s, 202, || false), FailureOutcome::Capped);
        assert_eq!(
            e.failure(&s, 203, || true),
            FailureOutcome::Ejected { until_ms: 1203 }
        );
        assert!(e.ejected(1202) && !e.ejected(1203));
        assert_eq!(e.ended(1203), Some(1203));
    }

    #[test]
    fn cooldown_grows_with_each_ejection_up_to_the_max_and_decays() {
        let s = settings();
        let mut e = Ejection::default();
        let mut now = 0;
        let mut lengths = Vec::new();
        for _ in 0..4 {
            let mut out = FailureOutcome::Ignored;
            for _ in 0..3 {
                out = e.failure(&s, now, || true);
            }
            let FailureOutcome::Ejected { until_ms } = out else {
                panic!("{out:?}");
            };
            lengths.push(until_ms - now);
            now = until_ms;
        }
        assert_eq!(lengths, [1000, 2000, 2500, 2500]);
        // Clean for base × 4 after the last ejection: count 4 → 3.
        e.success(&s, now + 3999);
        assert_eq!(e.count, 4);
        e.success(&s, now + 4000);
        assert_eq!(e.count, 3);
    }
}

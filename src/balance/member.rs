//! Members of a backend set and the state kept for each identity.

use std::time::Duration;

use super::eject::Ejection;

/// Effective weights are the configured weight times this, so that slow
/// start can ramp a weight-1 backend in fine steps.
pub const SCALE: u64 = 1000;

/// One backend of a set, as the caller's config describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Identity, e.g. `eu-web/10.1.0.11:8080`: every piece of per-backend
    /// state is keyed by it.
    pub id: String,
    /// Relative weight; 0 = never chosen.
    pub weight: u32,
    /// A backup serves only when fewer than `min_primaries_up` primaries
    /// are eligible.
    pub backup: bool,
    /// Connections at which the backend is no longer chosen.
    pub max_conns: Option<u32>,
}

impl Member {
    /// A primary with this weight and no connection limit.
    pub fn new(id: impl Into<String>, weight: u32) -> Self {
        Member {
            id: id.into(),
            weight,
            backup: false,
            max_conns: None,
        }
    }

    /// The same member as a backup.
    pub fn backup(mut self) -> Self {
        self.backup = true;
        self
    }

    /// The same member with a connection limit.
    pub fn max_conns(mut self, max: u32) -> Self {
        self.max_conns = Some(max);
        self
    }
}

/// Peak-EWMA latency (Finagle's `PeakEwma`, Linkerd's `PeakEwma`): a sample
/// above the current cost replaces it at once (the peak), a lower one is
/// folded in with weight `1 - exp(-elapsed/decay)`; reading decays the cost
/// towards zero with the time since the last sample, so a backend that was
/// slow is tried again once it has been left alone long enough.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    /// Cost in nanoseconds; `None` until the first sample.
    cost_ns: Option<f64>,
    stamp_ms: u64,
}

impl Ewma {
    /// Folds one round-trip sample in.
    pub fn observe(&mut self, rtt: Duration, now_ms: u64, decay: Duration) {
        let rtt = rtt.as_nanos() as f64;
        let cost = match self.cost_ns {
            None => rtt,
            Some(c) if rtt > c => rtt,
            Some(c) => {
                let w = self.weight(now_ms, decay);
                c * w + rtt * (1.0 - w)
            }
        };
        self.cost_ns = Some(cost);
        self.stamp_ms = self.stamp_ms.max(now_ms);
    }

    /// `exp(-elapsed/decay)`: how much of the old cost is left at `now_ms`.
    fn weight(&self, now_ms: u64, decay: Duration) -> f64 {
        let elapsed = now_ms.saturating_sub(self.stamp_ms) as f64;
        let tau = (decay.as_millis() as f64).max(1.0);
        (-elapsed / tau).exp()
    }

    /// The cost at `now_ms` (decayed since the last sample), or `default`
    /// (ns) for a backend never sampled.
    pub fn cost_at(&self, now_ms: u64, decay: Duration, default: f64) -> f64 {
        match self.cost_ns {
            None => default,
            Some(c) => c * self.weight(now_ms, decay),
        }
    }

    /// The cost at the last sample, in nanoseconds.
    pub fn last_ns(&self) -> Option<f64> {
        self.cost_ns
    }
}

/// Everything known about one identity; carried across `update`.
#[derive(Clone, Debug)]
pub(crate) struct State {
    pub active: u32,
    pub up: bool,
    /// When the backend last became up (recovered or added): slow start
    /// ramps from here.
    pub ramp_from: Option<u64>,
    pub ewma: Ewma,
    pub ejection: Ejection,
    /// Smooth weighted round robin's current weight.
    pub current: i64,
}

impl State {
    pub fn new(ramp_from: Option<u64>) -> Self {
        State {
            active: 0,
            up: true,
            ramp_from,
            ewma: Ewma::default(),
            ejection: Ejection::default(),
            current: 0,
        }
    }

    /// Up and not ejected at `now`.
    pub fn eligible(&self, now: u64) -> bool {
        self.up && !self.ejection.ejected(now)
    }

    /// Weight × [`SCALE`], ramped linearly from 5 % of it (at least 1) to all
    /// of it over `slow_start` after the backend last became up — recovered,
    /// added by an update, or back from an ejection.
    pub fn effective(&self, weight: u32, slow_start_ms: u64, now: u64) -> u64 {
        let full = u64::from(weight) * SCALE;
        let origin = match (self.ramp_from, self.ejection.ended(now)) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return full,
            },
        };
        let elapsed = now.saturating_sub(origin);
        if slow_start_ms == 0 || elapsed >= slow_start_ms || full == 0 {
            return full;
        }
        let min = (full / 20).max(1);
        let ramp = u128::from(full - min) * u128::from(elapsed) / u128::from(slow_start_ms);
        min + ramp as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_ramps_linearly_from_five_percent() {
        let s = State::new(Some(1000));
        assert_eq!(s.effective(10, 0, 1000), 10 * SCALE);
        assert_eq!(s.effective(10, 100, 1000), 500);
        assert_eq!(s.effective(10, 100, 1050), 500 + 9500 / 2);
        assert_eq!(s.effective(10, 100, 1100), 10 * SCALE);
        assert_eq!(s.effective(0, 100, 1050), 0);
        assert_eq!(State::new(None).effective(3, 100, 0), 3 * SCALE);
    }

    #[test]
    fn peak_ewma_takes_peaks_at_once_and_decays() {
        let d = Duration::from_millis(100);
        let mut e = Ewma::default();
        assert_eq!(e.cost_at(0, d, 7.0), 7.0);
        e.observe(Duration::from_millis(10), 0, d);
        e.observe(Duration::from_millis(50), 0, d);
        assert_eq!(e.last_ns(), Some(50e6));
        e.observe(Duration::from_millis(10), 100, d);
        let c = e.last_ns().unwrap_or(0.0);
        let expect = 50e6 * (-1f64).exp() + 10e6 * (1.0 - (-1f64).exp());
        assert!((c - expect).abs() < 1.0, "{c} {expect}");
        assert!(e.cost_at(1000, d, 0.0) < c / 1000.0);
    }
}

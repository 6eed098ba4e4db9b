//! The selection algorithms. Each works on the pick's candidates (member
//! indices in member order, with their effective weights) and returns a
//! position among them; building the candidates is O(n) for every
//! algorithm, so the figures below are the choice after it.

use std::str::FromStr;

use super::hash::rendezvous;
use super::Balancer;

/// A selection algorithm, by its config name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each eligible backend in turn, weights ignored (other than 0 = never).
    /// HAProxy `static-rr` without weights, NGINX's plain rotation. O(n).
    RoundRobin,
    /// NGINX's smooth weighted round robin (`ngx_http_upstream_get_peer`):
    /// every pick adds each backend's weight to its current weight, takes
    /// the highest and subtracts the total from it — weights 5,1,1 give
    /// `a a b a c a a`, not `a a a a a b c`. O(n).
    SmoothWrr,
    /// Fewest active connections per unit of weight, `(active + 1) / weight`
    /// (HAProxy `leastconn`, NGINX `least_conn`), ties broken round robin.
    /// O(n).
    LeastConn,
    /// Power of two random choices (Mitzenmacher; Envoy `LEAST_REQUEST`):
    /// two distinct random candidates, the one with fewer active
    /// connections per unit of weight wins. O(1).
    P2c,
    /// Two random choices scored by peak-EWMA latency × (active + 1) /
    /// weight (Finagle's `P2CPeakEwma`, Linkerd's balancer); latencies come
    /// from `record_latency`. O(1).
    PeakEwma,
    /// Weighted random. O(n).
    Random,
    /// Weighted rendezvous hash of the key (else the client address): a
    /// client keeps its backend, and removing a backend moves only its own
    /// clients (HAProxy `balance source` with `hash-type consistent`, done
    /// with HRW). Without a key: weighted random. O(n).
    SourceHash,
    /// A consistent-hash ring (`POINTS` per backend at the top weight, by
    /// weight) with bounded load, HAProxy's `hash-balance-factor` (Mirrokni
    /// et al., "Consistent Hashing with Bounded Loads"): the key goes to the
    /// first backend clockwise whose active connections + 1 stay within
    /// `ceil(factor × (total + 1) × its weight share)`. O(log P) to find
    /// the place, then a walk of at most the ring. Without a key: weighted
    /// random.
    Consistent,
    /// The first backend in member order below its max connections
    /// (HAProxy `first`): packs load onto the fewest backends. O(n).
    First,
}

impl Algorithm {
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RoundRobin,
        Algorithm::SmoothWrr,
        Algorithm::LeastConn,
        Algorithm::P2c,
        Algorithm::PeakEwma,
        Algorithm::Random,
        Algorithm::SourceHash,
        Algorithm::Consistent,
        Algorithm::First,
    ];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::SmoothWrr => "smooth_wrr",
            Algorithm::LeastConn => "least_conn",
            Algorithm::P2c => "p2c",
            Algorithm::PeakEwma => "peak_ewma",
            Algorithm::Random => "random",
            Algorithm::SourceHash => "source_hash",
            Algorithm::Consistent => "consistent",
            Algorithm::First => "first",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown algorithm name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown balance algorithm {0:?} (one of round_robin, smooth_wrr, least_conn, p2c, peak_ewma, random, source_hash, consistent, first)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm(s.to_string()))
    }
}

/// `(active_a + 1) / weight_a < (active_b + 1) / weight_b`, exactly.
fn less_loaded(active_a: u32, weight_a: u64, active_b: u32, weight_b: u64) -> bool {
    u128::from(active_a + 1) * u128::from(weight_b)
        < u128::from(active_b + 1) * u128::from(weight_a)
}

impl Balancer {
    fn active_at(&self, at: usize) -> u32 {
        self.cand
            .get(at)
            .and_then(|&i| self.slots.get(i as usize))
            .map_or(0, |s| s.state.active)
    }

    fn weight_at(&self, at: usize) -> u64 {
        self.weights.get(at).copied().unwrap_or(1)
    }

    pub(super) fn round_robin(&mut self) -> usize {
        let start = self.rr_next as u32;
        let at = self.cand.iter().position(|&i| i >= start).unwrap_or(0);
        self.rr_next = self.cand.get(at).map_or(0, |&i| i as usize + 1);
        at
    }

    pub(super) fn smooth_wrr(&mut self) -> usize {
        let mut total = 0i64;
        let (mut best, mut best_current) = (0, i64::MIN);
        for (at, (&i, &w)) in self.cand.iter().zip(&self.weights).enumerate() {
            let Some(slot) = self.slots.get_mut(i as usize) else {
                continue;
            };
            let w = i64::try_from(w).unwrap_or(i64::MAX / 2);
            slot.state.current = slot.state.current.saturating_add(w);
            total = total.saturating_add(w);
            if slot.state.current > best_current {
                (best, best_current) = (at, slot.state.current);
            }
        }
        if let Some(slot) = self
            .cand
            .get(best)
            .and_then(|&i| self.slots.get_mut(i as usize))
        {
            slot.state.current = slot.state.current.saturating_sub(total);
        }
        best
    }

    pub(super) fn least_conn(&mut self) -> usize {
        let n = self.cand.len();
        let start = self.tie % n;
        self.tie = self.tie.wrapping_add(1);
        let mut best = start;
        for off in 1..n {
            let at = (start + off) % n;
            if less_loaded(
                self.active_at(at),
                self.weight_at(at),
                self.active_at(best),
                self.weight_at(best),
            ) {
                best = at;
            }
        }
        best
    }

    /// Two distinct positions, uniformly.
    fn two(&mut self) -> (usize, usize) {
        let n = self.cand.len();
        let a = self.rng.usize(..n);
        let b = self.rng.usize(..n - 1);
        (a, if b >= a { b + 1 } else { b })
    }

    pub(super) fn p2c(&mut self) -> usize {
        if self.cand.len() < 2 {
            return 0;
        }
        let (a, b) = self.two();
        let b_wins = less_loaded(
            self.active_at(b),
            self.weight_at(b),
            self.active_at(a),
            self.weight_at(a),
        );
        if b_wins {
            b
        } else {
            a
        }
    }

    pub(super) fn peak_ewma(&mut self, now: u64) -> usize {
        if self.cand.len() < 2 {
            return 0;
        }
        let (a, b) = self.two();
        let decay = self.settings.ewma_decay;
        let default = self.settings.default_rtt.as_nanos() as f64;
        let score = |at: usize| {
            let cost = self
                .cand
                .get(at)
                .and_then(|&i| self.slots.get(i as usize))
                .map_or(default, |s| s.state.ewma.cost_at(now, decay, default));
            cost * f64::from(self.active_at(at) + 1) / self.weight_at(at) as f64
        };
        if score(b) < score(a) {
            b
        } else {
            a
        }
    }

    pub(super) fn random(&mut self) -> usize {
        let total: u64 = self.weights.iter().sum();
        let mut r = self.rng.u64(..total.max(1));
        for (at, &w) in self.weights.iter().enumerate() {
            if r < w {
                return at;
            }
            r -= w;
        }
        0
    }

    pub(super) fn source_hash(&mut self, key: Option<u64>) -> usize {
        let Some(key) = key else {
            return self.random();
        };
        let mut best = (0, f64::MIN);
        for (at, (&i, &w)) in self.cand.iter().zip(&self.weights).enumerate() {
            let id = self.slots.get(i as usize).map_or(0, |s| s.id_hash);
            let score = rendezvous(key, id, w);
            if score > best.1 {
                best = (at, score);
            }
        }
        best.0
    }

    pub(super) fn consistent(&mut self, key: Option<u64>) -> usize {
        let Some(key) = key else {
            return self.random();
        };
        for (at, &i) in self.cand.iter().enumerate() {
            if let Some(p) = self.pos.get_mut(i as usize) {
                *p = at as u32;
            }
        }
        let factor = u128::from(self.settings.hash_balance_factor);
        let total_active: u128 = (0..self.cand.len())
            .map(|at| u128::from(self.active_at(at)))
            .sum();
        let total_weight: u128 = self.weights.iter().map(|&w| u128::from(w)).sum();
        let mut chosen = None;
        for m in self.ring.walk(key) {
            let at = self.pos.get(m).map_or(u32::MAX, |&p| p) as usize;
            if at >= self.cand.len() || self.cand.get(at) != Some(&(m as u32)) {
                continue;
            }
            if factor == 0 {
                chosen = Some(at);
                break;
            }
            // active + 1 ≤ ceil(factor/100 × (total + 1) × w / W)
            let share = factor * (total_active + 1) * u128::from(self.weight_at(at));
            let allowed = share.div_ceil(100 * total_weight.max(1));
            if u128::from(self.active_at(at)) < allowed {
                chosen = Some(at);
                break;
            }
        }
        for &i in &self.cand {
            if let Some(p) = self.pos.get_mut(i as usize) {
                *p = u32::MAX;
            }
        }
        // Every candidate has ring points and a factor ≥ 100 always leaves
        // one within bounds; the least loaded is the safe answer otherwise.
        chosen.unwrap_or_else(|| self.least_conn())
    }
}

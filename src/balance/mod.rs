//! The regional tier's backend selection: pure (no runtime, sockets,
//! config or server types — `tests/architecture.rs` checks), fed by its
//! caller with health, outcomes, latencies and the time.
//!
//! A [`Balancer`] holds one backend set ([`Member`]s) and the state of each
//! backend — active connections, peak-EWMA latency, slow-start origin,
//! ejection, smooth-WRR current weight — **keyed by identity**, so
//! [`Balancer::update`] (a reload that adds, removes, reorders or
//! reweights members) carries every piece of it over. [`Balancer::pick`]
//! chooses a backend with the configured [`Algorithm`] among the members
//! that may serve now:
//!
//! 1. weight above zero;
//! 2. primaries, plus backups when fewer than `min_primaries_up` primaries
//!    are eligible (up and not ejected);
//! 3. eligible ones — or, in panic mode (the eligible share of that group
//!    below `panic_threshold` percent, Envoy's panic threshold), all of them;
//! 4. not in the context's `exclude` list (connect retries) and below their
//!    max connections.
//!
//! Each weighted algorithm uses the *effective* weight: the configured one,
//! ramped by slow start after a backend comes up (recovered, added by an
//! update, or back from an ejection). A pick does not allocate: it works in
//! buffers sized when the set changes.

mod algo;
mod eject;
mod hash;
mod member;

use std::net::IpAddr;
use std::time::Duration;

use rustc_hash::FxHashMap;

pub use algo::{Algorithm, UnknownAlgorithm};
pub use eject::{EjectionInfo, EjectionReason, EjectionSettings, FailureOutcome, SuccessRate};
pub use hash::hash_bytes;
pub use member::{Ewma, Member, SCALE};

use hash::Ring;
use member::State;

/// How a [`Balancer`] chooses.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub algorithm: Algorithm,
    /// Ramp time of a backend that comes up; zero = full weight at once.
    pub slow_start: Duration,
    /// Backups join when fewer primaries than this are eligible (0: never).
    pub min_primaries_up: usize,
    /// Percent; when the eligible share of the serving group is below it,
    /// balance over all its members regardless of health. 0 = off.
    pub panic_threshold: u8,
    pub ejection: EjectionSettings,
    /// `consistent` only: HAProxy's `hash-balance-factor`, in percent (125
    /// = a backend takes a key only while its load stays within 1.25 × the
    /// average). 0 = unbounded; otherwise at least 100.
    pub hash_balance_factor: u32,
    /// `peak_ewma`: the decay time of the latency average.
    pub ewma_decay: Duration,
    /// `peak_ewma`: the latency assumed for a backend never sampled.
    pub default_rtt: Duration,
    /// Seed of the balancer's random numbers (tests); `None` = random.
    pub seed: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            algorithm: Algorithm::RoundRobin,
            slow_start: Duration::ZERO,
            min_primaries_up: 1,
            panic_threshold: 0,
            ejection: EjectionSettings::default(),
            hash_balance_factor: 0,
            ewma_decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
            seed: None,
        }
    }
}

impl Settings {
    /// These settings with another algorithm.
    pub fn with(algorithm: Algorithm) -> Self {
        Settings {
            algorithm,
            ..Settings::default()
        }
    }

    fn check(&self) -> Result<(), BalanceError> {
        if self.hash_balance_factor != 0 && self.hash_balance_factor < 100 {
            return Err(BalanceError::BalanceFactor(self.hash_balance_factor));
        }
        if self.panic_threshold > 100 {
            return Err(BalanceError::PanicThreshold(self.panic_threshold));
        }
        if self.ejection.max_percent > 100 {
            return Err(BalanceError::EjectionPercent(self.ejection.max_percent));
        }
        if let Some(sr) = &self.ejection.success_rate {
            if sr.interval.is_zero() {
                return Err(BalanceError::SuccessRate("interval must be above zero"));
            }
            if sr.min_hosts < 2 {
                return Err(BalanceError::SuccessRate(
                    "min_hosts must be 2 or more (a rate is compared with the others')",
                ));
            }
            if sr.stdev_factor_milli == 0 || sr.stdev_factor_milli > 100_000 {
                return Err(BalanceError::SuccessRate(
                    "stdev_factor must be above 0 and at most 100",
                ));
            }
        }
        Ok(())
    }
}

/// A set or settings a balancer cannot take.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error("backend {0:?} is listed twice")]
    Duplicate(String),
    #[error("hash_balance_factor {0} is below 100 (it is a percentage of the average load)")]
    BalanceFactor(u32),
    #[error("panic_threshold {0} is above 100 (percent)")]
    PanicThreshold(u8),
    #[error("max_ejection_percent {0} is above 100")]
    EjectionPercent(u8),
    #[error("ejection.success_rate: {0}")]
    SuccessRate(&'static str),
}

/// Why no backend was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoPick {
    #[error("no backend with a weight above zero")]
    Empty,
    #[error("no backend is eligible (all down or ejected)")]
    NoneEligible,
    #[error("every eligible backend is at its max connections")]
    AllAtMax,
    #[error("every eligible backend was already tried")]
    AllTried,
}

/// What one pick reads from its caller.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// The caller's monotonic clock, in milliseconds.
    pub now_ms: u64,
    /// The client (`source_hash`, `consistent` without a key).
    pub client: Option<IpAddr>,
    /// Hash key bytes (`consistent`, `source_hash`): a header, a cookie, a
    /// path; takes precedence over the client address.
    pub key: Option<&'a [u8]>,
    /// Backends (indices from earlier picks) not to choose again: the ones a
    /// connect retry already tried.
    pub exclude: &'a [usize],
}

impl<'a> Context<'a> {
    pub fn at(now_ms: u64) -> Self {
        Context {
            now_ms,
            ..Context::default()
        }
    }

    pub fn client(mut self, client: IpAddr) -> Self {
        self.client = Some(client);
        self
    }

    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    pub fn exclude(mut self, tried: &'a [usize]) -> Self {
        self.exclude = tried;
        self
    }

    /// The hash of the key, else of the client address (an IPv4-mapped IPv6
    /// address hashes as its IPv4 address).
    fn hash(&self) -> Option<u64> {
        if let Some(k) = self.key {
            return Some(hash_bytes(k));
        }
        Some(match self.client?.to_canonical() {
            IpAddr::V4(a) => hash_bytes(&a.octets()),
            IpAddr::V6(a) => hash_bytes(&a.octets()),
        })
    }
}

/// One backend's state as the API shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BackendView {
    pub id: String,
    pub weight: u32,
    pub backup: bool,
    pub up: bool,
    pub eligible: bool,
    pub active: u32,
    /// Effective weight now (slow start), in units of the configured weight.
    pub effective_weight: f64,
    /// Peak-EWMA latency at the last sample, in milliseconds.
    pub latency_ms: Option<f64>,
    pub ejection: Option<EjectionInfo>,
}

#[derive(Clone, Debug)]
struct Slot {
    member: Member,
    id_hash: u64,
    state: State,
}

/// One backend set, its per-identity state and the working memory of picks.
/// A clone picks as the original would (what `explain` uses, leaving the
/// original untouched).
#[derive(Debug, Clone)]
pub struct Balancer {
    settings: Settings,
    slots: Vec<Slot>,
    index: FxHashMap<String, usize>,
    /// State of removed members still holding connections, so their
    /// releases land and a member re-added meanwhile gets its count back.
    retired: FxHashMap<String, State>,
    ring: Ring,
    rng: fastrand::Rng,
    /// Round robin: the member index to start from.
    rr_next: usize,
    /// Least connections: rotates the start of the scan to break ties.
    tie: usize,
    /// The pick's candidates (member indices) and their effective weights.
    cand: Vec<u32>,
    weights: Vec<u64>,
    /// Consistent: member index → position in `cand`.
    pos: Vec<u32>,
    /// Start of the success-rate interval (caller's clock, ms).
    sr_since: u64,
}

/// Identity → index, or the first identity listed twice.
fn unique(members: &[Member]) -> Result<FxHashMap<String, usize>, BalanceError> {
    let mut index = FxHashMap::default();
    for (i, m) in members.iter().enumerate() {
        if index.insert(m.id.clone(), i).is_some() {
            return Err(BalanceError::Duplicate(m.id.clone()));
        }
    }
    Ok(index)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Balancer {
    /// A balancer over `members`, all up and at full weight (no ramp: there
    /// was nothing before them).
    pub fn new(settings: Settings, members: &[Member]) -> Result<Self, BalanceError> {
        settings.check()?;
        let rng = match settings.seed {
            Some(s) => fastrand::Rng::with_seed(s),
            None => fastrand::Rng::new(),
        };
        let mut b = Balancer {
            settings,
            slots: Vec::new(),
            index: FxHashMap::default(),
            retired: FxHashMap::default(),
            ring: Ring::default(),
            rng,
            rr_next: 0,
            tie: 0,
            cand: Vec::new(),
            weights: Vec::new(),
            pos: Vec::new(),
            sr_since: 0,
        };
        b.rebuild(members, unique(members)?, |_| State::new(None));
        Ok(b)
    }

    /// Replaces the set. State moves by identity: a member kept (whatever
    /// its new weight, flags or position) keeps its connections, latency,
    /// ejection, ramp and round-robin weight; a new member starts up and
    /// ramps from `now_ms` (slow start applies to added backends too); a
    /// removed one's state is kept only while it still has connections.
    pub fn update(&mut self, members: &[Member], now_ms: u64) -> Result<(), BalanceError> {
        let index = unique(members)?;
        let mut old: FxHashMap<String, State> = std::mem::take(&mut self.retired);
        let last = self.rr_next.checked_sub(1).and_then(|i| self.slots.get(i));
        let last = last.map(|s| s.member.id.clone());
        for s in std::mem::take(&mut self.slots) {
            old.insert(s.member.id, s.state);
        }
        let fresh = State::new(Some(now_ms));
        self.rebuild(members, index, |id| {
            old.remove(id).unwrap_or_else(|| fresh.clone())
        });
        self.retired = old.into_iter().filter(|(_, s)| s.active > 0).collect();
        if let Some(i) = last.and_then(|id| self.index.get(&id)) {
            self.rr_next = i + 1;
        }
        self.enforce_ejection_cap(false, now_ms);
        self.enforce_ejection_cap(true, now_ms);
        Ok(())
    }

    /// A group that shrank may hold more ejections than its cap allows
    /// now: the most recent ones are lifted until it does not.
    fn enforce_ejection_cap(&mut self, backup: bool, now: u64) {
        let in_group = |s: &Slot| s.member.backup == backup && s.member.weight > 0;
        let size = self.slots.iter().filter(|s| in_group(s)).count();
        let cap = self.settings.ejection.cap(size);
        loop {
            let ejected: Vec<&mut Slot> = self
                .slots
                .iter_mut()
                .filter(|s| in_group(s) && s.state.ejection.ejected(now))
                .collect();
            if ejected.len() <= cap {
                return;
            }
            let newest = ejected
                .into_iter()
                .max_by_key(|s| s.state.ejection.since(now));
            if let Some(s) = newest {
                s.state.ejection.lift(now);
            }
        }
    }

    fn rebuild(
        &mut self,
        members: &[Member],
        index: FxHashMap<String, usize>,
        mut state: impl FnMut(&str) -> State,
    ) {
        self.slots = members
            .iter()
            .map(|m| Slot {
                member: m.clone(),
                id_hash: hash_bytes(m.id.as_bytes()),
                state: state(&m.id),
            })
            .collect();
        self.index = index;
        let n = members.len();
        self.cand = Vec::with_capacity(n);
        self.weights = Vec::with_capacity(n);
        self.pos = vec![u32::MAX; n];
        self.rr_next = self.rr_next.min(n);
        self.build_ring();
    }

    fn build_ring(&mut self) {
        self.ring = if self.settings.algorithm == Algorithm::Consistent {
            Ring::build(self.slots.iter().map(|s| (s.id_hash, s.member.weight)))
        } else {
            Ring::default()
        };
    }

    /// Changes the settings (a reload that changed the algorithm or its
    /// parameters), keeping every backend's state. The seed is not reread.
    pub fn set_settings(&mut self, settings: Settings) -> Result<(), BalanceError> {
        settings.check()?;
        self.settings = settings;
        self.build_ring();
        Ok(())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The identity of the member at `index` (what `pick` returns).
    pub fn id(&self, index: usize) -> Option<&str> {
        self.slots.get(index).map(|s| s.member.id.as_str())
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    fn state_mut(&mut self, id: &str) -> Option<&mut State> {
        match self.index.get(id) {
            Some(&i) => self.slots.get_mut(i).map(|s| &mut s.state),
            None => self.retired.get_mut(id),
        }
    }

    /// Health from the caller: a backend going from down to up starts its
    /// slow start at `now_ms`. Whether its state changed (false for an
    /// unknown identity).
    pub fn set_up(&mut self, id: &str, up: bool, now_ms: u64) -> bool {
        let Some(s) = self.state_mut(id) else {
            return false;
        };
        if up && !s.up {
            s.ramp_from = Some(now_ms);
        }
        let changed = s.up != up;
        s.up = up;
        changed
    }

    /// Counts a connection opened to `id`. False for an unknown identity.
    pub fn acquire(&mut self, id: &str) -> bool {
        self.state_mut(id)
            .map(|s| s.active = s.active.saturating_add(1))
            .is_some()
    }

    /// Counts a connection to `id` closed (also after `id` left the set).
    pub fn release(&mut self, id: &str) -> bool {
        let found = self
            .state_mut(id)
            .map(|s| s.active = s.active.saturating_sub(1))
            .is_some();
        if self.retired.get(id).is_some_and(|s| s.active == 0) {
            self.retired.remove(id);
        }
        found
    }

    /// One failed request or connection to `id`; may eject it (see
    /// [`EjectionSettings`] for the cap).
    pub fn record_failure(&mut self, id: &str, now_ms: u64) -> FailureOutcome {
        let Some(&i) = self.index.get(id) else {
            return FailureOutcome::Ignored;
        };
        let Some(backup) = self.slots.get(i).map(|s| s.member.backup) else {
            return FailureOutcome::Ignored;
        };
        let group = || {
            self.slots
                .iter()
                .filter(|s| s.member.backup == backup && s.member.weight > 0)
        };
        let size = group().count();
        let ejected = group().filter(|s| s.state.ejection.ejected(now_ms)).count();
        let may = ejected < self.settings.ejection.cap(size);
        let s = &self.settings.ejection;
        match self.slots.get_mut(i) {
            Some(slot) => {
                slot.state.ejection.observe(false);
                slot.state.ejection.failure(s, now_ms, || may)
            }
            None => FailureOutcome::Ignored,
        }
    }

    /// One successful request or connection to `id`.
    pub fn record_success(&mut self, id: &str, now_ms: u64) {
        let s = &self.settings.ejection;
        if let Some(&i) = self.index.get(id) {
            if let Some(slot) = self.slots.get_mut(i) {
                slot.state.ejection.observe(true);
                slot.state.ejection.success(s, now_ms);
            }
        }
    }

    /// Success-rate outlier detection, once per interval (a no-op between,
    /// without allocating): the backends it ejects now, with their
    /// ejection. Call after recording outcomes.
    pub fn success_rate_outliers(&mut self, now_ms: u64) -> Vec<(String, EjectionInfo)> {
        let Some(sr) = self.settings.ejection.success_rate.clone() else {
            return Vec::new();
        };
        if now_ms.saturating_sub(self.sr_since) < sr.interval.as_millis() as u64 {
            return Vec::new();
        }
        self.sr_since = now_ms;
        let mut out = Vec::new();
        for backup in [false, true] {
            let in_group = |s: &Slot| s.member.backup == backup && s.member.weight > 0;
            let size = self.slots.iter().filter(|s| in_group(s)).count();
            let mut ejected = self
                .slots
                .iter()
                .filter(|s| in_group(s) && s.state.ejection.ejected(now_ms))
                .count();
            let cap = self.settings.ejection.cap(size);
            let qualifies = |s: &Slot| {
                in_group(s)
                    && !s.state.ejection.ejected(now_ms)
                    && s.state.ejection.sr_total >= sr.min_requests.max(1)
            };
            let rate =
                |s: &Slot| f64::from(s.state.ejection.sr_ok) / f64::from(s.state.ejection.sr_total);
            let n = self.slots.iter().filter(|s| qualifies(s)).count();
            if n < sr.min_hosts.max(2) as usize {
                continue;
            }
            let mean = self
                .slots
                .iter()
                .filter(|s| qualifies(s))
                .map(rate)
                .sum::<f64>()
                / n as f64;
            let var = self
                .slots
                .iter()
                .filter(|s| qualifies(s))
                .map(|s| (rate(s) - mean).powi(2))
                .sum::<f64>()
                / n as f64;
            let threshold = mean - f64::from(sr.stdev_factor_milli) / 1000.0 * var.sqrt();
            // Worst first, within the cap.
            let mut worst: Vec<(usize, f64)> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| qualifies(s))
                .map(|(i, s)| (i, rate(s)))
                .filter(|&(_, r)| r < threshold)
                .collect();
            worst.sort_by(|a, b| a.1.total_cmp(&b.1));
            for (i, r) in worst {
                if ejected >= cap {
                    break;
                }
                let settings = &self.settings.ejection;
                if let Some(slot) = self.slots.get_mut(i) {
                    let reason = EjectionReason::SuccessRate {
                        rate_permille: (r * 1000.0).round() as u32,
                        threshold_permille: (threshold.max(0.0) * 1000.0).round() as u32,
                        requests: slot.state.ejection.sr_total,
                    };
                    slot.state.ejection.eject(settings, now_ms, reason);
                    ejected += 1;
                    if let Some(info) = slot.state.ejection.info(now_ms) {
                        out.push((slot.member.id.clone(), info));
                    }
                }
            }
        }
        for s in &mut self.slots {
            s.state.ejection.sr_total = 0;
            s.state.ejection.sr_ok = 0;
        }
        out
    }

    /// One round-trip time to `id` (peak EWMA).
    pub fn record_latency(&mut self, id: &str, rtt: Duration, now_ms: u64) {
        let decay = self.settings.ewma_decay;
        if let Some(s) = self.state_mut(id) {
            s.ewma.observe(rtt, now_ms, decay);
        }
    }

    /// The ejection of `id` in force at `now_ms`.
    pub fn ejection(&self, id: &str, now_ms: u64) -> Option<EjectionInfo> {
        let s = self.slots.get(self.index_of(id)?)?;
        s.state.ejection.info(now_ms)
    }

    /// The index of `id` if it may take a request stuck to it at `now_ms`:
    /// weight above zero, not at its max connections, not ejected, and up
    /// (or `even_if_down`: a drained backend taking its sticky clients).
    /// Backups qualify: a client stays where it is while that serves.
    pub fn admits(&self, id: &str, now_ms: u64, even_if_down: bool) -> Option<usize> {
        let i = self.index_of(id)?;
        let s = self.slots.get(i)?;
        let m = &s.member;
        let serving =
            s.state.eligible(now_ms) || (even_if_down && !s.state.ejection.ejected(now_ms));
        let room = m.max_conns.is_none_or(|max| s.state.active < max);
        (m.weight > 0 && serving && room).then_some(i)
    }

    /// Active connections to `id`.
    pub fn active(&self, id: &str) -> Option<u32> {
        match self.index_of(id) {
            Some(i) => self.slots.get(i).map(|s| s.state.active),
            None => self.retired.get(id).map(|s| s.active),
        }
    }

    /// Every member's state at `now_ms`, in member order (for the API).
    pub fn view(&self, now_ms: u64) -> Vec<BackendView> {
        let slow = ms(self.settings.slow_start);
        self.slots
            .iter()
            .map(|s| BackendView {
                id: s.member.id.clone(),
                weight: s.member.weight,
                backup: s.member.backup,
                up: s.state.up,
                eligible: s.state.eligible(now_ms),
                active: s.state.active,
                effective_weight: s.state.effective(s.member.weight, slow, now_ms) as f64
                    / SCALE as f64,
                latency_ms: s.state.ewma.last_ns().map(|n| n / 1e6),
                ejection: s.state.ejection.info(now_ms),
            })
            .collect()
    }

    /// Chooses a backend: its index (see [`Balancer::id`]), or why none.
    /// Does not count a connection: call [`Balancer::acquire`] when one
    /// opens.
    pub fn pick(&mut self, ctx: &Context) -> Result<usize, NoPick> {
        self.candidates(ctx.now_ms, ctx.exclude)?;
        let at = match self.settings.algorithm {
            Algorithm::RoundRobin => self.round_robin(),
            Algorithm::SmoothWrr => self.smooth_wrr(),
            Algorithm::LeastConn => self.least_conn(),
            Algorithm::P2c => self.p2c(),
            Algorithm::PeakEwma => self.peak_ewma(ctx.now_ms),
            Algorithm::Random => self.random(),
            Algorithm::SourceHash => self.source_hash(ctx.hash()),
            Algorithm::Consistent => self.consistent(ctx.hash()),
            Algorithm::First => 0,
        };
        Ok(self.cand.get(at).map_or(0, |&i| i as usize))
    }

    /// Fills `cand`/`weights` with the members that may serve now (see the
    /// module documentation), in member order. O(n).
    fn candidates(&mut self, now: u64, exclude: &[usize]) -> Result<(), NoPick> {
        let s = &self.settings;
        let (mut primaries, mut primaries_up, mut all, mut all_up) = (0, 0, 0, 0);
        for slot in self.slots.iter().filter(|s| s.member.weight > 0) {
            let up = usize::from(slot.state.eligible(now));
            all += 1;
            all_up += up;
            if !slot.member.backup {
                primaries += 1;
                primaries_up += up;
            }
        }
        if all == 0 {
            return Err(NoPick::Empty);
        }
        let backups = primaries_up < s.min_primaries_up;
        let (size, up) = if backups {
            (all, all_up)
        } else {
            (primaries, primaries_up)
        };
        let panic = up * 100 < usize::from(s.panic_threshold) * size;
        if up == 0 && !panic {
            return Err(NoPick::NoneEligible);
        }
        let slow = ms(s.slow_start);
        self.cand.clear();
        self.weights.clear();
        let mut full = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let m = &slot.member;
            if m.weight == 0 || (m.backup && !backups) || !(panic || slot.state.eligible(now)) {
                continue;
            }
            if exclude.contains(&i) {
                continue;
            }
            if m.max_conns.is_some_and(|max| slot.state.active >= max) {
                full += 1;
                continue;
            }
            self.cand.push(i as u32);
            self.weights.push(slot.state.effective(m.weight, slow, now));
        }
        match (self.cand.is_empty(), full) {
            (false, _) => Ok(()),
            (true, 0) => Err(NoPick::AllTried),
            (true, _) => Err(NoPick::AllAtMax),
        }
    }
}

#[cfg(test)]
mod tests;

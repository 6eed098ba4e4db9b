//! Property tests of each algorithm's defining property, and of the state
//! rules (slow start, backups, panic, ejection, update by identity).

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn members(weights: &[u32]) -> Vec<Member> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Member::new(format!("g/10.0.0.{i}:80"), w))
        .collect()
}

fn balancer(algorithm: Algorithm, weights: &[u32]) -> Balancer {
    let settings = Settings {
        seed: Some(7),
        ..Settings::with(algorithm)
    };
    Balancer::new(settings, &members(weights)).expect("valid set")
}

fn with_settings(settings: Settings, weights: &[u32]) -> Balancer {
    Balancer::new(settings, &members(weights)).expect("valid set")
}

/// Picks `k` times at `now`, returning the count per member index.
fn counts(b: &mut Balancer, k: usize, now: u64) -> Vec<usize> {
    let mut c = vec![0; b.len()];
    for _ in 0..k {
        let i = b.pick(&Context::at(now)).expect("a backend");
        c[i] += 1;
    }
    c
}

#[test]
fn round_robin_takes_each_in_turn_and_skips_the_down() {
    let mut b = balancer(Algorithm::RoundRobin, &[3, 1, 0, 1]);
    let seq: Vec<usize> = (0..6)
        .map(|_| b.pick(&Context::at(0)).unwrap_or(9))
        .collect();
    assert_eq!(seq, [0, 1, 3, 0, 1, 3]);
    b.set_up("g/10.0.0.1:80", false, 0);
    let seq: Vec<usize> = (0..4)
        .map(|_| b.pick(&Context::at(0)).unwrap_or(9))
        .collect();
    assert_eq!(seq, [0, 3, 0, 3]);
}

#[test]
fn smooth_wrr_interleaves_like_nginx() {
    let mut b = balancer(Algorithm::SmoothWrr, &[5, 1, 1]);
    let seq: Vec<usize> = (0..7)
        .map(|_| b.pick(&Context::at(0)).unwrap_or(9))
        .collect();
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
}

proptest! {
    #[test]
    fn smooth_wrr_gives_each_its_weight_per_cycle_and_is_smooth(
        weights in prop::collection::vec(1u32..12, 1..9),
        cycles in 1usize..4,
    ) {
        let mut b = balancer(Algorithm::SmoothWrr, &weights);
        let total: u32 = weights.iter().sum();
        let mut seq = Vec::new();
        for _ in 0..cycles {
            let c = counts(&mut b, total as usize, 0);
            for (i, &w) in weights.iter().enumerate() {
                prop_assert_eq!(c[i], w as usize);
            }
        }
        let mut b = balancer(Algorithm::SmoothWrr, &weights);
        for _ in 0..total as usize * cycles {
            seq.push(b.pick(&Context::at(0)).unwrap_or(usize::MAX));
        }
        // In any window of k picks, backend i gets at most ceil(w/total × k) + 1.
        for k in 1..=seq.len() {
            for window in seq.windows(k) {
                for (i, &w) in weights.iter().enumerate() {
                    let got = window.iter().filter(|&&x| x == i).count() as u64;
                    let bound = (u64::from(w) * k as u64).div_ceil(u64::from(total)) + 1;
                    prop_assert!(got <= bound, "backend {} got {} > {} in {:?}", i, got, bound, window);
                }
            }
        }
    }
}

/// Connections in fake time: each pick acquires, and the connection ends
/// (releases, and reports its latency) after its duration.
struct Sim {
    b: Balancer,
    open: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>>,
}

impl Sim {
    fn new(b: Balancer) -> Self {
        Sim {
            b,
            open: std::collections::BinaryHeap::new(),
        }
    }

    /// Ends every connection due by `now`.
    fn advance(&mut self, now: u64, latency: impl Fn(usize) -> u64) {
        while let Some(std::cmp::Reverse((end, i))) = self.open.peek().copied() {
            if end > now {
                break;
            }
            self.open.pop();
            let id = self.b.id(i).unwrap_or_default().to_string();
            self.b.release(&id);
            self.b
                .record_latency(&id, Duration::from_millis(latency(i)), end);
        }
    }

    /// Picks at `now` and opens a connection lasting `duration(i)`.
    fn connect(&mut self, now: u64, duration: impl Fn(usize) -> u64) -> usize {
        let i = self.b.pick(&Context::at(now)).expect("a backend");
        let id = self.b.id(i).unwrap_or_default().to_string();
        self.b.acquire(&id);
        self.open.push(std::cmp::Reverse((now + duration(i), i)));
        i
    }

    fn active(&self) -> Vec<u32> {
        (0..self.b.len())
            .map(|i| self.b.id(i).and_then(|id| self.b.active(id)).unwrap_or(0))
            .collect()
    }
}

/// The share of picks the slow backend 0 gets when every connection to it
/// takes 10 × longer than to the others.
fn slow_share(algorithm: Algorithm, n: usize, seed: u64) -> f64 {
    let b = Balancer::new(
        Settings {
            seed: Some(seed),
            ..Settings::with(algorithm)
        },
        &members(&vec![1; n]),
    )
    .expect("valid set");
    let mut sim = Sim::new(b);
    let latency = |i: usize| if i == 0 { 50 } else { 5 };
    let mut slow = 0;
    let picks = 4000;
    for t in 0..picks {
        sim.advance(t, latency);
        slow += usize::from(sim.connect(t, latency) == 0);
    }
    slow as f64 / picks as f64
}

fn ids(b: &Balancer) -> Vec<String> {
    (0..b.len())
        .filter_map(|i| b.id(i).map(str::to_string))
        .collect()
}

/// Where each key goes.
fn placement(b: &mut Balancer, keys: &[u64]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            let key = k.to_be_bytes();
            let i = b.pick(&Context::at(0).key(&key)).expect("a backend");
            b.id(i).unwrap_or_default().to_string()
        })
        .collect()
}

/// Removes member `r`: which keys moved, and were they all on `r`?
fn removal_moves(b: &mut Balancer, weights: &[u32], r: usize, keys: &[u64]) -> (usize, bool) {
    let before = placement(b, keys);
    let mut rest = members(weights);
    let removed = rest.remove(r).id;
    b.update(&rest, 0).expect("valid set");
    let after = placement(b, keys);
    let moved: Vec<usize> = (0..keys.len()).filter(|&k| before[k] != after[k]).collect();
    let only_its_own = moved.iter().all(|&k| before[k] == removed);
    let all_its_own = (0..keys.len()).all(|k| before[k] != removed || after[k] != removed);
    (moved.len(), only_its_own && all_its_own)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn consistent_bounded_load_never_exceeds_the_factor(
        n in 2usize..12,
        factor in 100u32..200,
        keys in prop::collection::vec(any::<u64>(), 1..400),
    ) {
        let settings = Settings {
            hash_balance_factor: factor,
            seed: Some(1),
            ..Settings::with(Algorithm::Consistent)
        };
        let mut b = Balancer::new(settings, &members(&vec![1; n])).expect("valid");
        let mut total = 0u64;
        for k in keys {
            let key = k.to_be_bytes();
            let i = b.pick(&Context::at(0).key(&key)).expect("a backend");
            let id = b.id(i).unwrap_or_default().to_string();
            b.acquire(&id);
            total += 1;
            let bound = (u64::from(factor) * total).div_ceil(100 * n as u64);
            for id in ids(&b) {
                let load = u64::from(b.active(&id).unwrap_or(0));
                prop_assert!(load <= bound, "{} has {} > {} (total {})", id, load, bound, total);
            }
        }
    }

    #[test]
    fn consistent_moves_only_the_removed_backends_keys(
        n in 3usize..16,
        r in any::<prop::sample::Index>(),
        keys in prop::collection::vec(any::<u64>(), 2000),
    ) {
        let weights = vec![1; n];
        let mut b = balancer(Algorithm::Consistent, &weights);
        let (moved, only_its_own) = removal_moves(&mut b, &weights, r.index(n), &keys);
        prop_assert!(only_its_own);
        let share = moved as f64 / keys.len() as f64;
        prop_assert!(share <= 1.6 / n as f64 + 0.02, "{} of keys moved with {} backends", share, n);
    }

    #[test]
    fn source_hash_moves_only_the_removed_backends_clients(
        weights in prop::collection::vec(1u32..10, 2..12),
        r in any::<prop::sample::Index>(),
        keys in prop::collection::vec(any::<u64>(), 500),
    ) {
        let mut b = balancer(Algorithm::SourceHash, &weights);
        let (_, only_its_own) = removal_moves(&mut b, &weights, r.index(weights.len()), &keys);
        prop_assert!(only_its_own);
    }

    #[test]
    fn least_conn_keeps_active_counts_balanced(
        n in 2usize..8,
        durations in prop::collection::vec(1u64..300, 600),
    ) {
        let mut sim = Sim::new(balancer(Algorithm::LeastConn, &vec![1; n]));
        let mut spread = 0u64;
        for (t, &d) in durations.iter().enumerate() {
            sim.advance(t as u64, |_| 0);
            let before = sim.active();
            let i = sim.connect(t as u64, |_| d);
            // The defining property: the chosen one had the fewest.
            prop_assert_eq!(before[i], before.iter().copied().min().unwrap_or(0));
            let after = sim.active();
            let (lo, hi) = (after.iter().min(), after.iter().max());
            spread += u64::from(hi.unwrap_or(&0) - lo.unwrap_or(&0));
        }
        let mean_spread = spread as f64 / durations.len() as f64;
        prop_assert!(mean_spread <= 2.0, "mean spread {}", mean_spread);
    }

    #[test]
    fn weighted_least_conn_picks_the_fewest_per_weight(
        weights in prop::collection::vec(1u32..6, 2..8),
        durations in prop::collection::vec(1u64..300, 300),
    ) {
        let mut sim = Sim::new(balancer(Algorithm::LeastConn, &weights));
        for (t, &d) in durations.iter().enumerate() {
            sim.advance(t as u64, |_| 0);
            let before = sim.active();
            let i = sim.connect(t as u64, |_| d);
            let load = |j: usize| f64::from(before[j] + 1) / f64::from(weights[j]);
            prop_assert!((0..weights.len()).all(|j| load(i) <= load(j)));
        }
    }

    #[test]
    fn p2c_and_peak_ewma_steer_away_from_a_slow_backend(
        n in 3usize..8,
        seed in any::<u64>(),
    ) {
        for algorithm in [Algorithm::P2c, Algorithm::PeakEwma] {
            let share = slow_share(algorithm, n, seed);
            prop_assert!(share < 0.4 / n as f64, "{} gave the slow backend {}", algorithm, share);
        }
    }

    #[test]
    fn backups_serve_only_when_too_few_primaries_are_up(
        primaries in 1usize..6,
        backups in 1usize..4,
        min in 0usize..6,
        down in prop::collection::vec(any::<bool>(), 9),
    ) {
        let mut set = members(&vec![1; primaries + backups]);
        for m in &mut set[primaries..] {
            m.backup = true;
        }
        let settings = Settings { min_primaries_up: min, ..Settings::with(Algorithm::RoundRobin) };
        let mut b = Balancer::new(settings, &set).expect("valid");
        for (i, m) in set.iter().enumerate() {
            b.set_up(&m.id, !down[i], 0);
        }
        let up_primaries = (0..primaries).filter(|&i| !down[i]).count();
        let use_backups = up_primaries < min;
        let expect: std::collections::BTreeSet<usize> = (0..set.len())
            .filter(|&i| !down[i] && (i < primaries || use_backups))
            .collect();
        let got: std::collections::BTreeSet<usize> = (0..2 * set.len())
            .filter_map(|_| b.pick(&Context::at(0)).ok())
            .collect();
        prop_assert_eq!(&got, &expect);
        if expect.is_empty() {
            prop_assert_eq!(b.pick(&Context::at(0)), Err(NoPick::NoneEligible));
        }
    }

    #[test]
    fn ejection_never_exceeds_max_percent_of_the_current_group(
        n in 1usize..12,
        percent in 0u8..=100,
        ops in prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), 0u64..40), 1..300),
        shrink_to in 1usize..12,
    ) {
        let settings = Settings {
            ejection: EjectionSettings {
                failures: 2,
                window: Duration::from_millis(100),
                base: Duration::from_millis(500),
                max: Duration::from_millis(2000),
                max_percent: percent,
                success_rate: None,
            },
            ..Settings::with(Algorithm::RoundRobin)
        };
        let set = members(&vec![1; n]);
        let mut b = Balancer::new(settings.clone(), &set).expect("valid");
        let mut now = 0;
        let ejected = |b: &Balancer, now| ids(b).iter().filter(|id| b.ejection(id, now).is_some()).count();
        for (k, (who, fail, dt)) in ops.iter().enumerate() {
            now += dt;
            let id = set[who.index(n)].id.clone();
            if *fail {
                b.record_failure(&id, now);
            } else {
                b.record_success(&id, now);
            }
            prop_assert!(ejected(&b, now) <= settings.ejection.cap(b.len()));
            if k == ops.len() / 2 {
                // A reload shrinks the group: the cap is the new group's.
                b.update(&set[..shrink_to.min(n)], now).expect("valid");
                prop_assert!(ejected(&b, now) <= settings.ejection.cap(b.len()));
            }
        }
    }

    #[test]
    fn state_survives_update_with_new_weights_and_order(
        weights in prop::collection::vec(1u32..10, 2..10),
        actives in prop::collection::vec(0u32..5, 10),
        new_weights in prop::collection::vec(0u32..10, 10),
        order in Just(()).prop_perturb(|_, mut rng| rng.next_u64()),
    ) {
        let settings = Settings {
            ejection: EjectionSettings { failures: 1, max_percent: 100, ..EjectionSettings::default() },
            slow_start: Duration::from_secs(10),
            ..Settings::with(Algorithm::SmoothWrr)
        };
        let set = members(&weights);
        let mut b = Balancer::new(settings, &set).expect("valid");
        for (i, m) in set.iter().enumerate() {
            for _ in 0..actives[i] {
                b.acquire(&m.id);
            }
            b.record_latency(&m.id, Duration::from_millis(i as u64 + 1), 5);
        }
        b.pick(&Context::at(5)).expect("a backend");
        b.record_failure(&set[0].id, 5);
        b.set_up(&set[1].id, false, 5);
        let before: HashMap<String, BackendView> = b.view(6).into_iter().map(|v| (v.id.clone(), v)).collect();
        let currents: HashMap<String, i64> = (0..b.len()).map(|i| (set[i].id.clone(), b.slots[i].state.current)).collect();

        // Reweight, reverse or rotate, drop the last, add a new one.
        let mut next: Vec<Member> = set[..set.len() - 1]
            .iter()
            .enumerate()
            .map(|(i, m)| Member::new(m.id.clone(), new_weights[i]))
            .collect();
        let len = next.len() as u64;
        next.rotate_left((order % len) as usize);
        if order % 2 == 0 {
            next.reverse();
        }
        next.push(Member::new("g/new:80", 3));
        b.update(&next, 6).expect("valid");

        for v in b.view(6) {
            if v.id == "g/new:80" {
                prop_assert_eq!(v.active, 0);
                prop_assert!(v.effective_weight < 3.0, "a new member ramps");
                continue;
            }
            let was = &before[&v.id];
            prop_assert_eq!(v.active, was.active);
            prop_assert_eq!(v.up, was.up);
            prop_assert_eq!(v.latency_ms, was.latency_ms);
            prop_assert_eq!(v.ejection, was.ejection);
            let i = b.index_of(&v.id).unwrap_or(usize::MAX);
            prop_assert_eq!(b.slots[i].state.current, currents[&v.id]);
        }
        // The removed member's connections still release.
        let gone = &set[set.len() - 1].id;
        prop_assert_eq!(b.active(gone).unwrap_or(0), actives[set.len() - 1]);
        for _ in 0..actives[set.len() - 1] {
            prop_assert!(b.release(gone));
        }
        prop_assert_eq!(b.active(gone), None);
    }

    #[test]
    fn retries_never_pick_a_backend_twice(
        weights in prop::collection::vec(0u32..5, 1..10),
        algorithm in prop::sample::select(Algorithm::ALL.to_vec()),
        client in any::<u32>(),
    ) {
        let mut b = balancer(algorithm, &weights);
        let client = std::net::IpAddr::from(client.to_be_bytes());
        let mut tried = Vec::new();
        loop {
            match b.pick(&Context::at(0).client(client).exclude(&tried)) {
                Ok(i) => {
                    prop_assert!(!tried.contains(&i));
                    tried.push(i);
                }
                Err(e) => {
                    let eligible = weights.iter().filter(|&&w| w > 0).count();
                    prop_assert_eq!(tried.len(), eligible);
                    let want = if eligible == 0 { NoPick::Empty } else { NoPick::AllTried };
                    prop_assert_eq!(e, want);
                    break;
                }
            }
        }
    }

    #[test]
    fn first_packs_onto_the_first_backends_up_to_their_max(
        maxes in prop::collection::vec(1u32..4, 1..8),
        releases in prop::collection::vec(any::<Option<prop::sample::Index>>(), 1..60),
    ) {
        let set: Vec<Member> = members(&vec![1; maxes.len()])
            .into_iter()
            .zip(&maxes)
            .map(|(m, &max)| m.max_conns(max))
            .collect();
        let mut b = Balancer::new(Settings::with(Algorithm::First), &set).expect("valid");
        for r in releases {
            if let Some(r) = r {
                b.release(&set[r.index(set.len())].id);
            }
            let active: Vec<u32> = set.iter().map(|m| b.active(&m.id).unwrap_or(0)).collect();
            let want = (0..set.len()).find(|&i| active[i] < maxes[i]);
            match b.pick(&Context::at(0)) {
                Ok(i) => {
                    prop_assert_eq!(Some(i), want);
                    b.acquire(&set[i].id);
                }
                Err(e) => {
                    prop_assert_eq!(want, None);
                    prop_assert_eq!(e, NoPick::AllAtMax);
                }
            }
        }
    }
}

#[test]
fn slow_start_ramps_a_recovered_backends_share_to_full() {
    let settings = Settings {
        slow_start: Duration::from_secs(10),
        seed: Some(3),
        ..Settings::with(Algorithm::SmoothWrr)
    };
    let mut b = with_settings(settings, &[1, 1, 1, 1]);
    b.set_up("g/10.0.0.0:80", false, 0);
    b.set_up("g/10.0.0.0:80", true, 1000);
    let mut last = 0.0;
    for second in 0..10u64 {
        let mut got = 0;
        let picks = 2000;
        for k in 0..picks {
            let now = 1000 + second * 1000 + k * 1000 / picks;
            got += usize::from(b.pick(&Context::at(now)).ok() == Some(0));
        }
        let share = got as f64 / picks as f64;
        let eff = 0.05 + 0.95 * (second as f64 + 0.5) / 10.0;
        let expect = eff / (eff + 3.0);
        assert!(
            (share - expect).abs() < 0.02,
            "second {second}: {share} vs {expect}"
        );
        assert!(share >= last - 0.01, "the share ramps up");
        last = share;
    }
    // After the window: exactly its share per cycle.
    let c = counts(&mut b, 4000, 11_000);
    assert_eq!(c, [1000, 1000, 1000, 1000]);
}

#[test]
fn slow_start_ramps_members_added_by_an_update_and_after_an_ejection() {
    let settings = Settings {
        slow_start: Duration::from_secs(10),
        ejection: EjectionSettings {
            failures: 1,
            ..EjectionSettings::default()
        },
        ..Settings::with(Algorithm::SmoothWrr)
    };
    let mut b = with_settings(settings, &[4, 4]);
    let weight = |b: &Balancer, now, id: &str| {
        b.view(now)
            .into_iter()
            .find(|v| v.id == id)
            .map_or(-1.0, |v| v.effective_weight)
    };
    assert_eq!(weight(&b, 0, "g/10.0.0.0:80"), 4.0, "no ramp at start");
    let mut next = members(&[4, 4]);
    next.push(Member::new("g/added:80", 4));
    b.update(&next, 1000).expect("valid");
    assert_eq!(weight(&b, 1000, "g/added:80"), 0.2);
    assert_eq!(weight(&b, 6000, "g/added:80"), 0.2 + 3.8 / 2.0);
    assert_eq!(weight(&b, 11_000, "g/added:80"), 4.0);
    let out = b.record_failure("g/10.0.0.1:80", 20_000);
    assert_eq!(out, FailureOutcome::Ejected { until_ms: 50_000 });
    assert_eq!(weight(&b, 50_000, "g/10.0.0.1:80"), 0.2);
    assert_eq!(weight(&b, 60_000, "g/10.0.0.1:80"), 4.0);
}

#[test]
fn panic_mode_balances_over_all_when_too_few_are_up() {
    let settings = Settings {
        panic_threshold: 50,
        ..Settings::with(Algorithm::RoundRobin)
    };
    let mut b = with_settings(settings, &[1, 1, 1, 1]);
    b.set_up("g/10.0.0.0:80", false, 0);
    b.set_up("g/10.0.0.1:80", false, 0);
    // 2 of 4 up: 50 % is not below the threshold.
    assert_eq!(counts(&mut b, 4, 0), [0, 0, 2, 2]);
    b.set_up("g/10.0.0.2:80", false, 0);
    // 1 of 4 up: panic, all four.
    assert_eq!(counts(&mut b, 4, 0), [1, 1, 1, 1]);
    b.set_up("g/10.0.0.3:80", false, 0);
    assert_eq!(counts(&mut b, 4, 0), [1, 1, 1, 1]);
    // Without panic mode: nothing.
    let mut b = with_settings(Settings::with(Algorithm::RoundRobin), &[1, 1]);
    b.set_up("g/10.0.0.0:80", false, 0);
    b.set_up("g/10.0.0.1:80", false, 0);
    assert_eq!(b.pick(&Context::at(0)), Err(NoPick::NoneEligible));
}

#[test]
fn consecutive_failures_eject_for_a_growing_cooldown() {
    let settings = Settings {
        ejection: EjectionSettings {
            failures: 3,
            window: Duration::from_secs(1),
            base: Duration::from_secs(10),
            max: Duration::from_secs(25),
            max_percent: 50,
            success_rate: None,
        },
        ..Settings::with(Algorithm::RoundRobin)
    };
    let mut b = with_settings(settings, &[1, 1, 1, 1]);
    let id = "g/10.0.0.2:80";
    let mut now = 0;
    for want in [10_000, 20_000, 25_000] {
        b.record_failure(id, now);
        b.record_failure(id, now + 1);
        assert_eq!(
            b.record_failure(id, now + 2),
            FailureOutcome::Ejected {
                until_ms: now + 2 + want
            }
        );
        let info = b.ejection(id, now + 3).expect("ejected");
        assert_eq!(
            info.reason,
            EjectionReason::ConsecutiveFailures { failures: 3 }
        );
        assert!(
            counts(&mut b, 30, now + 3)[2] == 0,
            "an ejected backend serves nothing"
        );
        now += 2 + want;
        assert!(b.ejection(id, now).is_none());
    }
    // Two of four may be out at once (50 %), not three.
    for id in ["g/10.0.0.0:80", "g/10.0.0.1:80", "g/10.0.0.3:80"] {
        for k in 0..3 {
            b.record_failure(id, now + k);
        }
    }
    let out = ids(&b)
        .iter()
        .filter(|id| b.ejection(id, now + 3).is_some())
        .count();
    assert_eq!(out, 2);
}

#[test]
fn weighted_random_and_source_hash_follow_weights() {
    for algorithm in [Algorithm::Random, Algorithm::SourceHash] {
        let mut b = balancer(algorithm, &[1, 3]);
        let mut c = [0usize; 2];
        for k in 0..20_000u32 {
            let client = std::net::IpAddr::from(k.to_be_bytes());
            let i = b.pick(&Context::at(0).client(client)).unwrap_or(0);
            c[i] += 1;
        }
        let share = c[1] as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "{algorithm}: {share}");
    }
}

#[test]
fn source_hash_keeps_a_client_on_its_backend() {
    let mut b = balancer(Algorithm::SourceHash, &[1, 1, 1, 1, 1]);
    let v4: std::net::IpAddr = [192, 0, 2, 7].into();
    let mapped: std::net::IpAddr = "::ffff:192.0.2.7".parse().expect("address");
    let first = b.pick(&Context::at(0).client(v4));
    for _ in 0..10 {
        assert_eq!(b.pick(&Context::at(0).client(v4)), first);
        assert_eq!(b.pick(&Context::at(0).client(mapped)), first);
    }
}

#[test]
fn max_connections_exclude_a_full_backend() {
    let set = vec![
        Member::new("a", 1).max_conns(1),
        Member::new("b", 1).max_conns(2),
    ];
    let mut b = Balancer::new(Settings::with(Algorithm::LeastConn), &set).expect("valid");
    for _ in 0..3 {
        let i = b.pick(&Context::at(0)).expect("room");
        let id = b.id(i).unwrap_or_default().to_string();
        b.acquire(&id);
    }
    assert_eq!(b.pick(&Context::at(0)), Err(NoPick::AllAtMax));
    b.release("a");
    assert_eq!(b.pick(&Context::at(0)), Ok(0));
}

#[test]
fn bad_sets_and_settings_are_refused_without_losing_state() {
    let mut b = balancer(Algorithm::RoundRobin, &[1, 1]);
    b.acquire("g/10.0.0.0:80");
    let twice = vec![Member::new("x", 1), Member::new("x", 2)];
    assert_eq!(
        b.update(&twice, 0),
        Err(BalanceError::Duplicate("x".into()))
    );
    assert_eq!(b.active("g/10.0.0.0:80"), Some(1));
    let bad = Settings {
        hash_balance_factor: 50,
        ..Settings::default()
    };
    assert_eq!(b.set_settings(bad), Err(BalanceError::BalanceFactor(50)));
    assert!(Balancer::new(Settings::default(), &twice).is_err());
}

#[test]
fn algorithms_have_config_names() {
    for a in Algorithm::ALL {
        assert_eq!(a.name().parse::<Algorithm>(), Ok(a));
        let json = serde_json::to_string(&a).unwrap_or_default();
        assert_eq!(json, format!("\"{}\"", a.name()));
    }
    assert!("leastconn".parse::<Algorithm>().is_err());
}

fn success_rate_settings(factor_milli: u32, max_percent: u8) -> Settings {
    Settings {
        seed: Some(7),
        ejection: EjectionSettings {
            failures: 0,
            max_percent,
            success_rate: Some(SuccessRate {
                interval: Duration::from_millis(1000),
                min_requests: 10,
                min_hosts: 5,
                stdev_factor_milli: factor_milli,
            }),
            ..EjectionSettings::default()
        },
        ..Settings::with(Algorithm::RoundRobin)
    }
}

/// Records `ok` successes and `bad` failures on member `i` at `now`.
fn outcomes(b: &mut Balancer, i: usize, ok: u32, bad: u32, now: u64) {
    let id = format!("g/10.0.0.{i}:80");
    for _ in 0..ok {
        b.record_success(&id, now);
    }
    for _ in 0..bad {
        b.record_failure(&id, now);
    }
}

#[test]
fn a_success_rate_outlier_is_ejected_once_per_interval_and_a_uniform_group_is_not() {
    let mut b = with_settings(success_rate_settings(1900, 50), &[1; 6]);
    for i in 0..5 {
        outcomes(&mut b, i, 99, 1, 10);
    }
    outcomes(&mut b, 5, 50, 50, 10);
    // Not before the interval is over.
    assert!(b.success_rate_outliers(500).is_empty());
    let out = b.success_rate_outliers(1000);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, "g/10.0.0.5:80");
    let EjectionReason::SuccessRate {
        rate_permille,
        requests,
        ..
    } = out[0].1.reason
    else {
        panic!("{:?}", out[0].1.reason);
    };
    assert_eq!((rate_permille, requests), (500, 100));
    assert!(b.ejection("g/10.0.0.5:80", 1001).is_some());
    // Counters start again: a uniform interval ejects nobody.
    for i in 0..5 {
        outcomes(&mut b, i, 90, 10, 1500);
    }
    assert!(b.success_rate_outliers(2000).is_empty());
}

#[test]
fn success_rate_needs_min_hosts_with_min_requests_and_respects_the_cap() {
    // Four hosts with enough requests: below min_hosts, nobody is judged.
    let mut b = with_settings(success_rate_settings(1000, 50), &[1; 6]);
    for i in 0..3 {
        outcomes(&mut b, i, 100, 0, 0);
    }
    outcomes(&mut b, 3, 0, 100, 0);
    outcomes(&mut b, 4, 5, 0, 0);
    outcomes(&mut b, 5, 0, 5, 0);
    assert!(b.success_rate_outliers(1000).is_empty());
    // Six judged, two bad, a cap of one (10 % of six, at least one).
    let mut b = with_settings(success_rate_settings(500, 10), &[1; 6]);
    for i in 0..4 {
        outcomes(&mut b, i, 100, 0, 0);
    }
    outcomes(&mut b, 4, 10, 90, 0);
    outcomes(&mut b, 5, 20, 80, 0);
    let out = b.success_rate_outliers(1000);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, "g/10.0.0.4:80", "the worst goes first");
}

#[test]
fn success_rate_settings_are_checked() {
    for (factor, hosts) in [(0, 5), (1900, 1)] {
        let mut s = success_rate_settings(factor, 50);
        if let Some(sr) = s.ejection.success_rate.as_mut() {
            sr.min_hosts = hosts;
        }
        assert!(matches!(
            Balancer::new(s, &members(&[1, 1])),
            Err(BalanceError::SuccessRate(_))
        ));
    }
}

#[test]
fn set_up_says_whether_the_state_changed() {
    let mut b = balancer(Algorithm::RoundRobin, &[1, 1]);
    assert!(!b.set_up("g/10.0.0.0:80", true, 0), "up already");
    assert!(b.set_up("g/10.0.0.0:80", false, 0));
    assert!(!b.set_up("g/10.0.0.0:80", false, 0));
    assert!(b.set_up("g/10.0.0.0:80", true, 5));
    assert!(!b.set_up("g/10.9.9.9:80", false, 0), "unknown");
}

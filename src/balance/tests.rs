//! Property tests of each algorithm's defining property, and of the state
//! rules (slow start, backups, panic, ejection, update by identity).

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

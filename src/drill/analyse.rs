//! What a drill's observations mean, computed from plain data (no I/O):
//! when each node stopped handing each client subnet the drained target,
//! and, from the nodes' resolver telemetry, which resolvers moved, when,
//! whether they re-asked once their cached answer expired, and which still
//! hold the old answer.

use serde::{Deserialize, Serialize};

/// What one probe answer showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seen {
    /// An address of the drained target was in the answer.
    Old,
    /// Addresses, none of the drained target.
    New,
    /// No address, or no answer.
    Nothing,
}

/// One probe: node × subnet at a time (unix seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub node: usize,
    pub subnet: usize,
    pub at: f64,
    pub seen: Seen,
}

/// Per node and subnet: how long answers took to leave the target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeConvergence {
    pub node: String,
    pub subnet: String,
    /// The answer before the action was from the target.
    pub affected: bool,
    /// Seconds from the action to the first answer after which every
    /// answer was off the target; `None`: the last answer still was on it.
    pub converged_after: Option<f64>,
    pub samples: usize,
}

/// Convergence of each (node, subnet) from the samples after `t0`; a pair
/// is affected when its last sample before `t0` was `Old`.
pub fn probes(
    samples: &[Sample],
    nodes: &[String],
    subnets: &[String],
    t0: f64,
) -> Vec<ProbeConvergence> {
    let mut out = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (s, subnet) in subnets.iter().enumerate() {
            let mine = samples.iter().filter(|x| x.node == n && x.subnet == s);
            let before = mine.clone().rfind(|x| x.at < t0);
            let after: Vec<&Sample> = mine.filter(|x| x.at >= t0).collect();
            let affected = before.is_some_and(|b| b.seen == Seen::Old);
            let last_old = after.iter().rposition(|x| x.seen != Seen::New);
            let converged_after = match last_old {
                None => after.first().map(|x| x.at - t0),
                Some(i) => after.get(i + 1).map(|x| x.at - t0),
            };
            out.push(ProbeConvergence {
                node: node.clone(),
                subnet: subnet.clone(),
                affected,
                converged_after,
                samples: after.len(),
            });
        }
    }
    out
}

/// What one gradual step of a drain did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// The share of the target's client subnets withdrawn.
    pub fraction: f64,
    /// Seconds from the first step (the action) to this one.
    pub at: f64,
    /// How long it was held (seconds).
    pub held: f64,
    /// Probes (node × subnet) answered from the target before the action
    /// and probed during this step.
    pub probes: usize,
    /// Of those, answered off the target at the end of the step.
    pub moved: usize,
    /// `moved / probes` (0 without probes).
    pub share_moved: f64,
    /// Of those with an ECS subnet, how many the partial drain's hash puts
    /// below this step's share: expected off the target.
    pub expected_moved: usize,
    /// Probes answered otherwise than the hash says.
    pub unexpected: Vec<String>,
    /// From the nodes' resolver telemetry at the end of the step: tracked
    /// resolvers last answered from the target, and those moved off it.
    pub resolvers_on_target: Option<usize>,
    pub resolvers_moved: Option<usize>,
}

/// Each step's effect on the probes: `windows` are (share, start, end) in
/// unix seconds, in order; `positions` per subnet the partial-drain
/// position of its ECS subnet (None: the plain query, whose client the
/// prober cannot know). A probe counts when its last sample before the
/// first step was `Old`; its state at a step's end is its last sample in
/// the step.
pub fn steps(
    samples: &[Sample],
    nodes: &[String],
    subnets: &[String],
    positions: &[Option<f64>],
    windows: &[(f64, f64, f64)],
) -> Vec<StepReport> {
    let Some(&(_, first, _)) = windows.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for &(fraction, start, end) in windows {
        let mut st = StepReport {
            fraction,
            at: start - first,
            held: end - start,
            probes: 0,
            moved: 0,
            share_moved: 0.0,
            expected_moved: 0,
            unexpected: Vec::new(),
            resolvers_on_target: None,
            resolvers_moved: None,
        };
        for (n, node) in nodes.iter().enumerate() {
            for (s, subnet) in subnets.iter().enumerate() {
                let mut mine = samples.iter().filter(|x| x.node == n && x.subnet == s);
                let before = mine.clone().rfind(|x| x.at < first);
                if before.is_none_or(|b| b.seen != Seen::Old) {
                    continue;
                }
                let Some(last) = mine.rfind(|x| x.at >= start && x.at < end) else {
                    continue;
                };
                st.probes += 1;
                let moved = last.seen == Seen::New;
                st.moved += usize::from(moved);
                let Some(pos) = positions.get(s).copied().flatten() else {
                    continue;
                };
                let expected = fraction >= 1.0 || pos < fraction;
                st.expected_moved += usize::from(expected);
                if moved != expected {
                    st.unexpected.push(format!(
                        "{node} for {subnet} (at {pos:.3}): {} the target, expected {}",
                        if moved { "off" } else { "still on" },
                        if expected { "off it" } else { "on it" }
                    ));
                }
            }
        }
        if st.probes > 0 {
            st.share_moved = st.moved as f64 / st.probes as f64;
        }
        out.push(st);
    }
    out
}

/// One reading of a tier listener's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierSample {
    /// Index of the listener in the report's `tier` list.
    pub listener: usize,
    pub at: f64,
    pub accepted: u64,
    pub active: u64,
}

/// A tier listener's new-connection rate over the drill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerRate {
    pub tier: String,
    pub listener: String,
    pub region: String,
    pub bind: String,
    /// Its region is one the drill's target covers: its rate should fall
    /// to zero.
    pub drained: bool,
    /// New connections per second before the action, from the action to
    /// the restore, and after the restore (None: no interval read).
    pub before: Option<f64>,
    pub during: Option<f64>,
    pub after: Option<f64>,
    /// Seconds from the action until new connections stopped and stayed
    /// stopped until the restore; None: they did not.
    pub zero_after: Option<f64>,
    /// (seconds from the action at the end of an interval, new connections
    /// per second over it).
    pub over_time: Vec<(f64, f64)>,
}

/// Fills each listener's rates from its samples: the rate of an interval
/// between two readings is the growth of `accepted` over its length (a
/// counter that went back, a restarted node, is skipped). An interval
/// counts before the action if it ends by `t0`, during if it ends after
/// `t0` and by `restored`, after if it starts at `restored` or later.
pub fn tier_rates(listeners: &mut [ListenerRate], samples: &[TierSample], t0: f64, restored: f64) {
    for (i, l) in listeners.iter_mut().enumerate() {
        let mine: Vec<&TierSample> = samples.iter().filter(|s| s.listener == i).collect();
        let mut sums = [(0u64, 0.0f64); 3];
        let mut last_nonzero: Option<f64> = None;
        let mut zero_seen_after = false;
        l.over_time.clear();
        for w in mine.windows(2) {
            let (a, b) = (w[0], w[1]);
            let dt = b.at - a.at;
            if dt <= 0.0 || b.accepted < a.accepted {
                continue;
            }
            let n = b.accepted - a.accepted;
            l.over_time.push((b.at - t0, n as f64 / dt));
            let slot = if b.at <= t0 {
                0
            } else if b.at <= restored {
                if n > 0 {
                    last_nonzero = Some(b.at);
                    zero_seen_after = false;
                } else {
                    zero_seen_after = true;
                }
                1
            } else if a.at >= restored {
                2
            } else {
                continue;
            };
            sums[slot].0 += n;
            sums[slot].1 += dt;
        }
        let rate = |(n, dt): (u64, f64)| (dt > 0.0).then(|| n as f64 / dt);
        l.before = rate(sums[0]);
        l.during = rate(sums[1]);
        l.after = rate(sums[2]);
        l.zero_after = if !zero_seen_after {
            None
        } else {
            Some(last_nonzero.map_or(0.0, |t| t - t0))
        };
    }
}

/// A resolver's line as `GET /v1/resolvers` gives it.
pub use crate::snapshot::resolvers::Line as ResolverLine;

/// What became of one resolver that had the drained region's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ResolverState {
    /// It asked again and got another region, `after` seconds from the
    /// action; `late` when that was more than TTL + grace after it was last
    /// given the old answer.
    Moved { after: f64, gap: f64, late: bool },
    /// Still on the old answer, and its cached copy has not expired yet.
    Holding { expires_in: f64 },
    /// Still on the old answer, expired `since` seconds ago, and it has
    /// not asked again: it keeps answers past their TTL, or has no clients.
    NotReasked { expired_for: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolverOutcome {
    pub node: String,
    pub resolver: String,
    pub queries: u32,
    pub ttl: u32,
    #[serde(flatten)]
    pub state: ResolverState,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolverSummary {
    /// Resolvers (per node) that had the drained region's answer.
    pub affected: usize,
    pub moved: usize,
    pub holding: usize,
    pub not_reasked: usize,
    pub late: usize,
    /// Seconds from the action to each moved resolver's first new answer.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    /// The TTL budget: the largest TTL the affected resolvers were given.
    pub ttl_budget: u32,
    /// Share of affected resolvers, and of their queries, still on the old
    /// answer at the end.
    pub share_old: f64,
    pub share_old_queries: f64,
    /// (seconds from the action, share of affected resolvers still on the
    /// old answer) at each observation interval.
    pub over_time: Vec<(f64, f64)>,
    /// Every affected resolver, the late and never-re-asking ones first.
    pub resolvers: Vec<ResolverOutcome>,
}

/// During a two-phase drain, after the target left DNS answers at `t1`:
/// how many resolvers still hold a cached answer from it and when the last
/// of those expires (`None`: nobody holds one). A resolver's last answer
/// from the target is held until `last + ttl`; the largest TTL seen also
/// bounds answers given before tracking began.
pub fn holding_until(lines: &[ResolverLine], target: &str, t1: f64) -> (usize, Option<f64>) {
    let on_target = |r: &Option<String>| r.as_deref() == Some(target);
    let mut holders = 0;
    let mut until: Option<f64> = None;
    let mut later = |t: f64| until = Some(until.map_or(t, |u: f64| u.max(t)));
    for l in lines {
        let expiry = if on_target(&l.region) {
            Some(l.last + f64::from(l.ttl))
        } else if on_target(&l.previous_region) {
            l.previous_last.map(|p| p + f64::from(l.ttl))
        } else {
            None
        };
        if let Some(e) = expiry {
            holders += usize::from(on_target(&l.region));
            later(e);
        }
    }
    if let Some(ttl) = lines.iter().map(|l| l.ttl).max() {
        later(t1 + f64::from(ttl));
    }
    (holders, until)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

/// Resolver convergence from each node's telemetry (`lines`: node name and
/// line), for a drain of `regions` made at `t0`, read at `now`.
pub fn resolvers(
    lines: &[(String, ResolverLine)],
    regions: &[String],
    t0: f64,
    now: f64,
    grace: f64,
    step: f64,
) -> ResolverSummary {
    let drained = |r: &Option<String>| r.as_ref().is_some_and(|r| regions.contains(r));
    let mut out = Vec::new();
    for (node, l) in lines {
        let state = if drained(&l.region) {
            let expiry = l.last + f64::from(l.ttl);
            if expiry > now {
                ResolverState::Holding {
                    expires_in: expiry - now,
                }
            } else {
                ResolverState::NotReasked {
                    expired_for: now - expiry,
                }
            }
        } else if drained(&l.previous_region) && l.since >= t0 {
            let prev = l.previous_last.unwrap_or(l.since);
            let gap = l.since - prev;
            ResolverState::Moved {
                after: l.since - t0,
                gap,
                late: gap > f64::from(l.ttl) + grace,
            }
        } else {
            continue;
        };
        out.push(ResolverOutcome {
            node: node.clone(),
            resolver: l.resolver.to_string(),
            queries: l.queries,
            ttl: l.ttl,
            state,
        });
    }
    let rank = |o: &ResolverOutcome| match o.state {
        ResolverState::NotReasked { .. } => 0,
        ResolverState::Moved { late: true, .. } => 1,
        ResolverState::Holding { .. } => 2,
        ResolverState::Moved { .. } => 3,
    };
    out.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| (&a.node, &a.resolver).cmp(&(&b.node, &b.resolver)))
    });
    let mut delays: Vec<f64> = out
        .iter()
        .filter_map(|o| match o.state {
            ResolverState::Moved { after, .. } => Some(after),
            _ => None,
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    let count = |f: fn(&ResolverState) -> bool| out.iter().filter(|o| f(&o.state)).count();
    let old = |o: &&ResolverOutcome| !matches!(o.state, ResolverState::Moved { .. });
    let total_q: u64 = out.iter().map(|o| u64::from(o.queries)).sum();
    let old_q: u64 = out.iter().filter(old).map(|o| u64::from(o.queries)).sum();
    let affected = out.len();
    let share = |n: usize| {
        if affected == 0 {
            0.0
        } else {
            n as f64 / affected as f64
        }
    };
    let mut over_time = Vec::new();
    if step > 0.0 {
        let mut t = 0.0;
        while t0 + t <= now {
            let still = out
                .iter()
                .filter(|o| match o.state {
                    ResolverState::Moved { after, .. } => after > t,
                    _ => true,
                })
                .count();
            over_time.push((t, share(still)));
            t += step;
        }
    }
    ResolverSummary {
        affected,
        moved: delays.len(),
        holding: count(|s| matches!(s, ResolverState::Holding { .. })),
        not_reasked: count(|s| matches!(s, ResolverState::NotReasked { .. })),
        late: count(|s| matches!(s, ResolverState::Moved { late: true, .. })),
        p50: percentile(&delays, 50.0),
        p90: percentile(&delays, 90.0),
        p99: percentile(&delays, 99.0),
        ttl_budget: out.iter().map(|o| o.ttl).max().unwrap_or(0),
        share_old: share(out.iter().filter(old).count()),
        share_old_queries: if total_q == 0 {
            0.0
        } else {
            old_q as f64 / total_q as f64
        },
        over_time,
        resolvers: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        resolver: &str,
        region: &str,
        last: f64,
        since: f64,
        prev: Option<(&str, f64)>,
    ) -> ResolverLine {
        ResolverLine {
            resolver: resolver.parse().expect("ip"),
            service: "www.example.com.".into(),
            region: Some(region.into()),
            last,
            since,
            previous_region: prev.map(|p| p.0.to_string()),
            previous_last: prev.map(|p| p.1),
            ttl: 10,
            queries: 5,
            switches: u32::from(prev.is_some()),
        }
    }

    #[test]
    fn resolvers_that_moved_in_time_late_or_never_are_told_apart() {
        let t0 = 100.0;
        let lines = vec![
            // Last given eu at 98, asked again at 108: in time (TTL 10).
            (
                "a".to_string(),
                line("192.0.2.1", "us", 108.0, 108.0, Some(("eu", 98.0))),
            ),
            // Last given eu at 99, asked again only at 140: late.
            (
                "a".to_string(),
                line("192.0.2.2", "us", 140.0, 140.0, Some(("eu", 99.0))),
            ),
            // Still eu, given at 99, expired at 109, never asked again.
            ("a".to_string(), line("192.0.2.3", "eu", 99.0, 50.0, None)),
            // Still eu, given at 145: holding until 155.
            ("b".to_string(), line("192.0.2.4", "eu", 145.0, 50.0, None)),
            // Never on eu: not affected.
            ("b".to_string(), line("192.0.2.5", "us", 145.0, 50.0, None)),
        ];
        let s = resolvers(&lines, &["eu".to_string()], t0, 150.0, 2.0, 10.0);
        assert_eq!(
            (s.affected, s.moved, s.late, s.holding, s.not_reasked),
            (4, 2, 1, 1, 1)
        );
        assert_eq!(
            s.resolvers[0].resolver, "192.0.2.3",
            "never re-asked comes first"
        );
        assert_eq!(s.resolvers[1].resolver, "192.0.2.2", "then the late one");
        assert_eq!(s.p50, Some(8.0));
        assert_eq!(s.p99, Some(40.0));
        assert_eq!(s.ttl_budget, 10);
        assert!((s.share_old - 0.5).abs() < 1e-9);
        assert_eq!(s.over_time.first(), Some(&(0.0, 1.0)));
        assert_eq!(s.over_time.get(1), Some(&(10.0, 0.75)));
        assert_eq!(s.over_time.last(), Some(&(50.0, 0.5)));
    }

    #[test]
    fn a_two_phase_drain_waits_for_the_last_cached_answer_and_one_ttl() {
        let lines = vec![
            line("192.0.2.1", "eu", 101.0, 50.0, None),
            line("192.0.2.2", "us", 103.0, 103.0, Some(("eu", 99.5))),
            line("192.0.2.3", "us", 90.0, 50.0, None),
        ];
        let (holders, until) = holding_until(&lines, "eu", 100.0);
        assert_eq!(holders, 1);
        assert_eq!(
            until,
            Some(111.0),
            "192.0.2.1's answer given at 101, TTL 10"
        );
        let (holders, until) = holding_until(&lines[1..], "eu", 100.0);
        assert_eq!((holders, until), (0, Some(110.0)), "one TTL after phase 1");
        assert_eq!(holding_until(&[], "eu", 100.0), (0, None));
    }

    #[test]
    fn a_probe_converges_at_the_first_answer_after_the_last_old_one() {
        use Seen::*;
        let s = |node, at, seen| Sample {
            node,
            subnet: 0,
            at,
            seen,
        };
        let samples = vec![
            s(0, 9.0, Old),
            s(0, 10.5, Old),
            s(0, 11.5, New),
            s(0, 12.5, Old), // a node flapping back counts
            s(0, 13.5, New),
            s(0, 14.5, New),
            s(1, 9.0, New), // not affected
            s(1, 10.5, New),
        ];
        let c = probes(
            &samples,
            &["a".into(), "b".into()],
            &["192.0.2.0/24".into()],
            10.0,
        );
        assert!(c[0].affected);
        assert_eq!(c[0].converged_after, Some(3.5));
        assert!(!c[1].affected);
        assert_eq!(c[1].converged_after, Some(0.5));
        let stuck = vec![s(0, 9.0, Old), s(0, 11.0, Old)];
        let c = probes(&stuck, &["a".into()], &["x".into()], 10.0);
        assert_eq!(c[0].converged_after, None);
    }

    #[test]
    fn each_step_counts_the_probes_it_moved_against_the_hash() {
        let nodes = vec!["dns1".to_string()];
        let subnets = vec!["a".to_string(), "b".to_string(), "(no ECS)".to_string()];
        let positions = [Some(0.05), Some(0.7), None];
        let mut samples = Vec::new();
        // Before: all on the target. Step 0.1 from 10: a moves; step 1.0
        // from 20: everyone moves, but b keeps the target (unexpected).
        for t in 0..30 {
            for s in 0..3 {
                let seen = match (t, s) {
                    (t, _) if t < 10 => Seen::Old,
                    (_, 0) => Seen::New,
                    (t, 2) if t >= 20 => Seen::New,
                    _ => Seen::Old,
                };
                samples.push(Sample {
                    node: 0,
                    subnet: s,
                    at: f64::from(t),
                    seen,
                });
            }
        }
        let st = steps(
            &samples,
            &nodes,
            &subnets,
            &positions,
            &[(0.1, 10.0, 20.0), (1.0, 20.0, 30.0)],
        );
        assert_eq!(st.len(), 2);
        assert_eq!((st[0].probes, st[0].moved, st[0].expected_moved), (3, 1, 1));
        assert!(st[0].unexpected.is_empty(), "{:?}", st[0].unexpected);
        assert!((st[0].share_moved - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(st[1].at, 10.0);
        assert_eq!((st[1].probes, st[1].moved, st[1].expected_moved), (3, 2, 2));
        assert_eq!(st[1].unexpected.len(), 1);
        assert!(
            st[1].unexpected[0].contains("dns1 for b"),
            "{:?}",
            st[1].unexpected
        );
        assert!(steps(&samples, &nodes, &subnets, &positions, &[]).is_empty());
    }

    #[test]
    fn a_listener_rate_falls_to_zero_after_the_action_and_comes_back() {
        let listener = |drained| ListenerRate {
            tier: "t".into(),
            listener: "eu-http".into(),
            region: "eu".into(),
            bind: "127.0.1.1:80".into(),
            drained,
            before: None,
            during: None,
            after: None,
            zero_after: None,
            over_time: Vec::new(),
        };
        let mut ls = vec![listener(true), listener(false)];
        // Listener 0: 10/s until 12, nothing until the restore at 20, 5/s
        // after. Listener 1: 10/s throughout (never zero).
        let mut acc = [0u64; 2];
        let mut samples = Vec::new();
        for t in 0..=25 {
            if t > 0 {
                acc[0] += if t <= 12 {
                    10
                } else if t > 20 {
                    5
                } else {
                    0
                };
                acc[1] += 10;
            }
            for (l, a) in acc.iter().enumerate() {
                samples.push(TierSample {
                    listener: l,
                    at: f64::from(t),
                    accepted: *a,
                    active: 0,
                });
            }
        }
        tier_rates(&mut ls, &samples, 10.0, 20.0);
        assert_eq!(ls[0].before, Some(10.0));
        assert_eq!(ls[0].zero_after, Some(2.0));
        assert_eq!(ls[0].after, Some(5.0));
        assert!((ls[0].during.expect("during") - 2.0).abs() < 1e-9);
        assert_eq!(ls[0].over_time.len(), 25);
        assert_eq!(ls[1].zero_after, None, "never stopped");
        assert_eq!(ls[1].during, Some(10.0));
        // A counter that went back (a restart) is skipped, not negative.
        let mut back = vec![listener(true)];
        let s = |at: f64, accepted| TierSample {
            listener: 0,
            at,
            accepted,
            active: 0,
        };
        tier_rates(
            &mut back,
            &[s(0.0, 50), s(11.0, 3), s(12.0, 3), s(13.0, 3)],
            10.0,
            20.0,
        );
        assert_eq!(back[0].zero_after, Some(0.0));
        assert_eq!(back[0].over_time.len(), 2);
    }
}

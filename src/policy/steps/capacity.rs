//! `capacity`: moves clients away from regions whose tier is near what it
//! can carry, and brings them back as it empties.
//!
//! Each group of the service has a **share**: the fraction of client
//! subnets that keep it in its place. A client whose subnet hashes (per
//! group) at or above the share is *spilled*: the group moves behind every
//! group that keeps it, so `failover` (after this step) answers from the
//! next one in the order. A subnet's position is fixed, so a share that
//! falls spills subnets in one order and a share that rises brings them
//! back in the reverse order: no subnet flips back and forth while a share
//! moves one way. When every group spills a client, its order is left as
//! it was (fail open: all of them past capacity is no reason to answer
//! nothing).
//!
//! Shares are moved off the answer path ([`Capacity::advance`], called
//! for each new load sample and on a timer), from the region's load as a
//! fraction of its capacity:
//!
//! - above `high`, the share falls toward the one that would bring the
//!   load back to the middle of the band: `seen × middle / load`, where
//!   `seen` is the share resolvers are still acting on as the load shows
//!   it (the share followed over one TTL, since cached answers keep
//!   sending clients that long, and the load measurement's smoothing).
//!   Shedding what is already shed twice is what makes DNS load
//!   shedding overshoot and swing back; a load that does not fall with the
//!   share (traffic that does not come through DNS) drives it down to 0,
//!   by a factor of `middle / load` or more per TTL;
//! - below `low`, it rises toward `seen × middle / load` (up to 1), never
//!   falling; a region shed to nothing is probed back by `max_step`;
//! - between the two it holds: the band is the hysteresis, so a share that
//!   brought the load into the band stays where it is;
//! - with no fresh load report it rises back to 1.
//!
//! Whatever the target, a share moves at most `max_step` per TTL of the
//! service, so answers ramp rather than flap.

use super::weighted::{mix64, subnet_key};
use super::{Stage, StepKind};
use crate::policy::health::{RegionLoad, Share, ShareWhy};
use crate::policy::scratch::{Run, Scratch};
use crate::policy::trace::Note;

/// Below this a falling share is 0: the region is shed.
pub const MIN_SHARE: f64 = 0.01;

#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Load (fraction of capacity) below which a share rises.
    pub low: f64,
    /// Load above which a share falls.
    pub high: f64,
    /// The most a share moves in one TTL of the service.
    pub max_step: f64,
    /// The client subnet that keeps its answer (its hash is its position).
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// Per group of the service: the hash of its name, mixed with the
    /// client's subnet (so each group spills its own set of subnets).
    pub group_hash: Vec<u64>,
}

impl Capacity {
    pub fn new(
        low: f64,
        high: f64,
        max_step: f64,
        prefix_v4: u8,
        prefix_v6: u8,
    ) -> Result<Capacity, String> {
        let band = 0.0..=1.5;
        if !(low.is_finite() && band.contains(&low) && low > 0.0) {
            return Err(format!(
                "capacity.low = {low}: expected a fraction of capacity in (0, 1.5]"
            ));
        }
        if !(high.is_finite() && band.contains(&high) && high > 0.0) {
            return Err(format!(
                "capacity.high = {high}: expected a fraction of capacity in (0, 1.5]"
            ));
        }
        if low >= high {
            return Err(format!(
                "capacity.low = {low} must be below capacity.high = {high}"
            ));
        }
        if !(max_step.is_finite() && max_step > 0.0 && max_step <= 1.0) {
            return Err(format!(
                "capacity.max_step = {max_step}: expected the largest move of a share per TTL, in (0, 1]"
            ));
        }
        if prefix_v4 > 32 || prefix_v6 > 128 {
            return Err("capacity sticky prefixes must be at most 32 (IPv4) and 128 (IPv6)".into());
        }
        Ok(Capacity {
            low,
            high,
            max_step,
            prefix_v4,
            prefix_v6,
            group_hash: Vec::new(),
        })
    }

    fn middle(&self) -> f64 {
        (self.low + self.high) / 2.0
    }

    /// Where a share goes after a load sample `load` (fraction of
    /// capacity), from its state `s`.
    pub fn target(&self, s: &Share, load: f64) -> (f64, ShareWhy) {
        let mid = self.middle();
        if load > self.high {
            let t = (s.seen * mid / load).min(s.share);
            (if t < MIN_SHARE { 0.0 } else { t }, ShareWhy::Above)
        } else if load < self.low {
            if s.share >= 1.0 || load <= 1e-9 {
                (1.0, ShareWhy::Below)
            } else if s.seen < MIN_SHARE {
                ((s.share + self.max_step).min(1.0), ShareWhy::Probe)
            } else {
                ((s.seen * mid / load).clamp(s.share, 1.0), ShareWhy::Below)
            }
        } else {
            (s.share, ShareWhy::Hold)
        }
    }

    /// The share at `now`: `seen` follows the share over `ttl + lag`
    /// seconds (resolvers' caches, then the smoothing of the load
    /// measurement), the share moves toward its target by at most
    /// `max_step` per `ttl` seconds, and a new load sample (`load`: the
    /// fraction and the sample's `at`; None when unknown) sets a new
    /// target. Pure: the same inputs give the same share on every node.
    pub fn advance(
        &self,
        prev: &Share,
        load: Option<(f64, f64)>,
        now: f64,
        ttl: f64,
        lag: f64,
    ) -> Share {
        let ttl = ttl.max(1.0);
        let mut s = *prev;
        // A share at rest has not moved since `at`: it starts moving now.
        let dt = if prev.at > 0.0 && !prev.at_rest() {
            (now - prev.at).max(0.0)
        } else {
            0.0
        };
        s.seen += (prev.share - prev.seen) * (1.0 - (-dt / (ttl + lag.max(0.0))).exp());
        // Close enough: resolvers act on the share (and it can come to rest).
        if (s.seen - s.share).abs() < 1e-3 {
            s.seen = s.share;
        }
        let bound = self.max_step * dt / ttl;
        s.share = if s.target > s.share {
            (s.share + bound).min(s.target)
        } else {
            (s.share - bound).max(s.target)
        };
        match load {
            Some((fraction, at)) if at != prev.sample => {
                (s.target, s.why) = self.target(&s, fraction);
                s.sample = at;
            }
            Some(_) => {}
            None => {
                s.target = 1.0;
                s.why = ShareWhy::NoLoad;
            }
        }
        s.at = now;
        s
    }

    /// The position (in [0, 1)) of the client subnet `key` for group `g`.
    fn position(&self, key: u64, g: u16) -> f64 {
        let h = mix64(key ^ self.group_hash.get(g as usize).copied().unwrap_or(0));
        (h >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What the load of a region looks like in explain.
pub fn describe_load(load: Option<&RegionLoad>) -> String {
    match load {
        None => "no fresh load report".into(),
        Some(l) => {
            let of = match l.fraction {
                Some(f) => format!("load {f:.2} of capacity"),
                None => "no capacity configured".into(),
            };
            format!(
                "{of} ({:.0} connections, {:.1} req/s, {} reporter{})",
                l.connections,
                l.rps,
                l.reporters,
                if l.reporters == 1 { "" } else { "s" }
            )
        }
    }
}

impl StepKind for Capacity {
    const NAME: &'static str = "capacity";
    const STAGE: Stage = Stage::Groups;

    fn run(&self, r: &Run<'_>, sc: &mut Scratch, note: Option<&mut Note>) {
        let (key, p) = subnet_key(r.client.addr, self.prefix_v4, self.prefix_v6);
        let mut split = false;
        let mut kept = 0;
        let mut lines = Vec::new();
        sc.keyed.clear();
        for i in 0..sc.groups.len() {
            let g = sc.groups[i];
            let share = r.shares.get(g as usize).map_or(1.0, |s| s.share);
            let (keep, at) = if share >= 1.0 {
                (true, None)
            } else if share <= 0.0 {
                (false, None)
            } else {
                split = true;
                let at = self.position(key, g);
                (at < share, Some(at))
            };
            kept += usize::from(keep);
            sc.keyed.push((if keep { 0.0 } else { 1.0 }, g));
            if note.is_some() {
                let region = r.groups[g as usize].region;
                let load = describe_load(r.health.region_load(region));
                let how = r
                    .shares
                    .get(g as usize)
                    .map_or("full share", |s| s.why.as_str());
                let fate = match (keep, at) {
                    (true, None) => "kept".to_string(),
                    (false, None) => "spilled (shed)".to_string(),
                    (true, Some(a)) => format!("this client at {a:.2}: kept"),
                    (false, Some(a)) => format!("this client at {a:.2}: spilled"),
                };
                lines.push(format!(
                    "{}: {load}, share {share:.2} ({how}); {fate}",
                    r.group_label(g)
                ));
            }
        }
        if kept > 0 {
            // Stable: kept groups first, spilled ones after, each in order.
            sc.groups.clear();
            sc.groups
                .extend(sc.keyed.iter().filter(|k| k.0 == 0.0).map(|k| k.1));
            sc.groups
                .extend(sc.keyed.iter().filter(|k| k.0 != 0.0).map(|k| k.1));
        }
        if split {
            sc.scope = sc.scope.max(p);
            sc.without_location = sc.without_location.max(p);
        }
        if let Some(n) = note {
            if kept == 0 && !sc.groups.is_empty() {
                lines
                    .push("every candidate spills this client: order kept (fail open)".to_string());
            }
            if split {
                lines.push(format!("position by hash of the client's /{p}"));
            }
            n.detail = lines.join("; ");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> Capacity {
        Capacity::new(0.8, 0.95, 0.2, 24, 56).expect("valid")
    }

    #[test]
    fn bad_watermarks_and_steps_are_refused_with_the_reason() {
        for (low, high, step, want) in [
            (0.9, 0.8, 0.2, "must be below"),
            (0.9, 0.9, 0.2, "must be below"),
            (0.0, 0.8, 0.2, "capacity.low"),
            (0.5, 1.6, 0.2, "capacity.high"),
            (f64::NAN, 0.8, 0.2, "capacity.low"),
            (0.5, 0.8, 0.0, "capacity.max_step"),
            (0.5, 0.8, 1.5, "capacity.max_step"),
        ] {
            let e = Capacity::new(low, high, step, 24, 56).expect_err("refused");
            assert!(e.contains(want), "{e}");
        }
        assert!(
            Capacity::new(0.5, 1.5, 1.0, 24, 56).is_ok(),
            "1.5: Envoy-like overprovisioning"
        );
        assert!(Capacity::new(0.5, 0.8, 0.2, 33, 56).is_err());
    }

    #[test]
    fn below_low_the_share_is_full_within_the_band_it_holds_above_high_it_falls() {
        let c = step();
        let full = Share::default();
        assert_eq!(c.target(&full, 0.5), (1.0, ShareWhy::Below));
        let part = Share {
            share: 0.6,
            target: 0.6,
            seen: 0.6,
            ..Share::default()
        };
        assert_eq!(c.target(&part, 0.9), (0.6, ShareWhy::Hold));
        // Above high: toward what brings the load to the band's middle.
        let (t, why) = c.target(&full, 1.75);
        assert_eq!(why, ShareWhy::Above);
        assert!((t - 0.875 / 1.75).abs() < 1e-9, "{t}");
        // Below low from a partial share: up toward the middle, never down.
        let (t, _) = c.target(&part, 0.6);
        assert!((t - 0.875).abs() < 1e-9, "{t}");
        assert_eq!(c.target(&part, 0.4).0, 1.0, "at most full");
        let (t, _) = c.target(&part, 0.79);
        assert!(t >= 0.6);
        // Nearly nothing left: shed.
        assert_eq!(c.target(&full, 200.0), (0.0, ShareWhy::Above));
        // Shed and quiet: probe back by max_step.
        let shed = Share {
            share: 0.0,
            target: 0.0,
            seen: 0.0,
            ..Share::default()
        };
        assert_eq!(c.target(&shed, 0.3), (0.2, ShareWhy::Probe));
        assert_eq!(c.target(&shed, 0.0), (1.0, ShareWhy::Below));
    }

    /// What the controller is run against: resolvers act on the share
    /// after their caches expire (an average over `cache` seconds), the
    /// load is `base` (clients that do not come through DNS) plus `demand`
    /// × that share (or what `override_load` says at a time), and the tier
    /// smooths it over `smooth` seconds before it is sampled.
    struct Plant {
        base: f64,
        demand: f64,
        cache: f64,
        smooth: f64,
    }

    /// Runs `advance` every `tick` seconds for `secs` (the model's lag:
    /// 2 s), a new sample every `poll` seconds; returns (t, share) pairs,
    /// the last share and the load resolvers make at the end.
    #[allow(clippy::too_many_arguments)]
    fn run(
        c: &Capacity,
        ttl: f64,
        secs: f64,
        tick: f64,
        poll: f64,
        start: Share,
        plant: &Plant,
        override_load: impl Fn(f64) -> Option<f64>,
    ) -> (Vec<(f64, f64)>, Share, f64) {
        let mut s = start;
        let mut out = Vec::new();
        let t0 = 1000.0;
        let (mut t, mut next_poll, mut sample) = (0.0, 0.0, None);
        let mut acting = s.share;
        let mut measured = plant.base + plant.demand * acting;
        while t <= secs {
            acting += (s.share - acting) * (1.0 - (-tick / plant.cache).exp());
            let load = override_load(t).unwrap_or(plant.base + plant.demand * acting);
            measured += (load - measured) * (1.0 - (-tick / plant.smooth).exp());
            if t >= next_poll {
                next_poll += poll;
                sample = Some((measured, t0 + t));
            }
            s = c.advance(&s, sample, t0 + t, ttl, 2.0);
            out.push((t, s.share));
            t += tick;
        }
        (out, s, plant.base + plant.demand * acting)
    }

    /// A load that ignores the share: `load(t)`.
    fn fixed(load: impl Fn(f64) -> f64) -> impl Fn(f64) -> Option<f64> {
        move |t| Some(load(t))
    }

    const NO_PLANT: Plant = Plant {
        base: 0.0,
        demand: 0.0,
        cache: 1.0,
        smooth: 0.001,
    };

    #[test]
    fn a_share_moves_at_most_max_step_per_ttl() {
        let c = step();
        let ttl = 10.0;
        // A load far over, then none at all.
        let load = fixed(|t| if t < 120.0 { 5.0 } else { 0.0 });
        let (trace, _, _) = run(&c, ttl, 240.0, 0.25, 1.0, Share::default(), &NO_PLANT, load);
        for w in trace.windows(2) {
            let ((t0, a), (t1, b)) = (w[0], w[1]);
            assert!(
                (b - a).abs() <= c.max_step * (t1 - t0) / ttl + 1e-9,
                "{a} -> {b} in {}s",
                t1 - t0
            );
        }
        // It did move: shed, then back in full.
        assert!(trace.iter().any(|&(_, s)| s == 0.0));
        assert_eq!(trace.last().map(|x| x.1), Some(1.0));
    }

    #[test]
    fn a_load_that_does_not_follow_the_share_sheds_the_region_and_it_comes_back_gradually() {
        let c = step();
        let ttl = 5.0;
        // Each TTL (and the measurement's lag) the share falls to at most
        // middle / load of itself: 0.73 here, to 0 within 150 s.
        let load = fixed(|t| if t < 150.0 { 1.2 } else { 0.1 });
        let (trace, end, _) = run(&c, ttl, 250.0, 0.5, 1.0, Share::default(), &NO_PLANT, load);
        let over: Vec<f64> = trace.iter().filter(|x| x.0 < 150.0).map(|x| x.1).collect();
        let after: Vec<f64> = trace.iter().filter(|x| x.0 >= 150.0).map(|x| x.1).collect();
        assert!(
            over.windows(2).all(|w| w[1] <= w[0]),
            "only down while over"
        );
        assert_eq!(
            over.last(),
            Some(&0.0),
            "shed: {:?}",
            &over[over.len() - 5..]
        );
        assert!(after.windows(2).all(|w| w[1] >= w[0]), "only up after");
        // Gradually: max_step per TTL from the drop on.
        for &(t, s) in trace.iter().filter(|x| x.0 >= 150.0) {
            assert!(s <= c.max_step * (t - 150.0) / ttl + 1e-9, "{s} at {t}");
        }
        assert_eq!(end.share, 1.0);
    }

    #[test]
    fn under_load_that_follows_the_share_it_settles_in_the_band_without_swinging() {
        let c = step();
        for ttl in [1.0, 5.0, 30.0] {
            // Caches as long as the TTL, and twice as long (resolvers that
            // keep answers, long connections): the model assumes the TTL.
            for cache in [ttl, 2.0 * ttl] {
                for (base, demand) in [(0.0, 1.3), (0.0, 3.0), (0.3, 1.0), (0.6, 0.9), (0.0, 0.7)] {
                    let plant = Plant {
                        base,
                        demand,
                        cache,
                        smooth: 2.0,
                    };
                    let secs = 60.0 * ttl + 200.0;
                    let poll = if ttl < 5.0 { 0.5 } else { 2.0 };
                    let (trace, end, load) =
                        run(&c, ttl, secs, 0.25, poll, Share::default(), &plant, |_| {
                            None
                        });
                    let case = format!("ttl {ttl} cache {cache} base {base} demand {demand}");
                    assert!(
                        load <= c.high + 1e-6 && (load >= c.low - 1e-6 || end.share == 1.0),
                        "{case}: settled at share {} load {load}",
                        end.share
                    );
                    // Direction changes: at most one (an overshoot
                    // corrected, only with caches longer than assumed),
                    // none in the second half.
                    let mut turns = 0;
                    let mut dir = 0.0;
                    for w in trace.windows(2) {
                        let d = (w[1].1 - w[0].1).signum();
                        if w[1].1 != w[0].1 && d != dir {
                            if dir != 0.0 {
                                turns += 1;
                                assert!(w[0].0 < secs / 2.0, "{case}: turned at {}s", w[0].0);
                            }
                            dir = d;
                        }
                    }
                    let allowed = if cache == ttl { 0 } else { 1 };
                    assert!(turns <= allowed, "{case}: {turns} turns");
                }
            }
        }
    }

    #[test]
    fn without_a_fresh_load_report_the_share_returns_to_full_at_the_same_pace() {
        let c = step();
        let shed = Share {
            share: 0.0,
            target: 0.0,
            seen: 0.0,
            sample: 5.0,
            at: 100.0,
            why: ShareWhy::Above,
        };
        let s = c.advance(&shed, None, 100.0, 10.0, 2.0);
        assert_eq!((s.share, s.target, s.why), (0.0, 1.0, ShareWhy::NoLoad));
        let s = c.advance(&s, None, 105.0, 10.0, 2.0);
        assert!((s.share - 0.1).abs() < 1e-9, "{}", s.share);
    }

    #[test]
    fn a_share_at_rest_starts_moving_when_its_target_changes_not_before() {
        let c = step();
        let rest = Share {
            at: 10.0,
            ..Share::default()
        };
        // Long at rest, then a sample over high: no jump.
        let s = c.advance(&rest, Some((2.0, 500.0)), 500.0, 10.0, 2.0);
        assert_eq!(s.share, 1.0);
        assert!(s.target < 1.0);
        let s = c.advance(&s, Some((2.0, 500.0)), 501.0, 10.0, 2.0);
        assert!((s.share - 0.98).abs() < 1e-9, "{}", s.share);
    }

    #[test]
    fn a_falling_share_spills_a_growing_set_of_subnets_each_once() {
        let mut c = step();
        c.group_hash = vec![crate::policy::fnv1a("eu"), crate::policy::fnv1a("us")];
        let subnets: Vec<u64> = (0..2000u32)
            .map(|i| {
                subnet_key(
                    std::net::IpAddr::from((0x0a00_0000 + (i << 8)).to_be_bytes()),
                    24,
                    56,
                )
                .0
            })
            .collect();
        let mut before: Vec<bool> = vec![true; subnets.len()];
        for step in (0..=20).rev() {
            let share = step as f64 / 20.0;
            let now: Vec<bool> = subnets.iter().map(|&k| c.position(k, 0) < share).collect();
            // Nested: whoever is kept at a lower share was kept before.
            assert!(now.iter().zip(&before).all(|(n, b)| !n || *b));
            let kept = now.iter().filter(|&&k| k).count() as f64 / subnets.len() as f64;
            assert!((kept - share).abs() < 0.05, "share {share}: {kept} kept");
            before = now;
        }
        // Each group spills its own subnets.
        let both = subnets
            .iter()
            .filter(|&&k| c.position(k, 0) >= 0.5 && c.position(k, 1) >= 0.5)
            .count() as f64;
        assert!((both / subnets.len() as f64 - 0.25).abs() < 0.05);
    }
}

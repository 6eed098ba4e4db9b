//! The tier's load per region: open connections and requests per second
//! through the region's listeners, smoothed (an exponentially weighted
//! average over [`TAU`]) so one burst or one quiet moment does not move
//! DNS answers. Sampled by the tier's job every 200 ms; reported to the
//! node's own DNS answers and, through `/v1/observations`, to the DNS
//! nodes that read this node.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

use crate::health::LoadReport;
use crate::policy::Capacity;

/// The time constant of the smoothing, in seconds: a step in load shows
/// 63 % after this long, 95 % after three times it.
pub const TAU: f64 = 2.0;

/// One listener's counters at a sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub region_index: usize,
    /// Open connections now.
    pub active: u64,
    /// Requests (HTTP) or connections (TCP) since the listener started.
    pub total: u64,
}

/// One region's smoothed load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Smoothed {
    pub connections: f64,
    pub rps: f64,
}

/// The smoothed load of every region this node runs listeners of.
#[derive(Debug, Default)]
pub struct Meter {
    /// When the last sample was taken (seconds, any monotonic origin).
    last_at: Option<f64>,
    /// Each listener's total at the last sample, by bind address.
    totals: BTreeMap<SocketAddr, u64>,
    regions: BTreeMap<String, Smoothed>,
}

impl Meter {
    /// Takes a sample at `at` (seconds): `listeners` by bind address, with
    /// the names of their regions in `names`. Regions with no listener any
    /// more are forgotten; a region's first sample starts from its open
    /// connections and no rate.
    pub fn sample(&mut self, at: f64, names: &[String], listeners: &[(SocketAddr, Sample)]) {
        let dt = self.last_at.map_or(0.0, |t| (at - t).max(0.0));
        let alpha = if dt > 0.0 {
            1.0 - (-dt / TAU).exp()
        } else {
            0.0
        };
        let mut now: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut totals = BTreeMap::new();
        for (bind, s) in listeners {
            let Some(name) = names.get(s.region_index) else {
                continue;
            };
            let counted = self
                .totals
                .get(bind)
                .map_or(0, |&t| s.total.saturating_sub(t));
            totals.insert(*bind, s.total);
            let e = now.entry(name.as_str()).or_default();
            e.0 += s.active;
            e.1 += counted;
        }
        self.totals = totals;
        self.regions.retain(|r, _| now.contains_key(r.as_str()));
        for (region, (active, counted)) in now {
            let rate = if dt > 0.0 { counted as f64 / dt } else { 0.0 };
            match self.regions.get_mut(region) {
                Some(s) => {
                    s.connections += (active as f64 - s.connections) * alpha;
                    s.rps += (rate - s.rps) * alpha;
                }
                None => {
                    self.regions.insert(
                        region.to_string(),
                        Smoothed {
                            connections: active as f64,
                            rps: 0.0,
                        },
                    );
                }
            }
        }
        self.last_at = Some(at);
    }

    /// The load of every region, as reported to DNS nodes.
    pub fn report(&self) -> Vec<LoadReport> {
        self.regions
            .iter()
            .map(|(region, s)| LoadReport {
                region: region.clone(),
                connections: s.connections,
                rps: s.rps,
            })
            .collect()
    }
}

/// A region's load as `/v1/tier` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RegionLoadStatus {
    pub region: String,
    /// Open connections and requests per second, smoothed.
    pub connections: f64,
    pub rps: f64,
    /// The region's capacity (`[regions.NAME] capacity`), if configured.
    pub capacity_connections: Option<f64>,
    pub capacity_rps: Option<f64>,
    /// This node's load as a fraction of it (the region's tier may run on
    /// other nodes too: DNS nodes sum every node's report).
    pub load: Option<f64>,
}

/// The status of each reported region against its capacity.
pub fn status(
    report: &[LoadReport],
    capacity: &BTreeMap<String, Capacity>,
) -> Vec<RegionLoadStatus> {
    report
        .iter()
        .map(|r| {
            let cap = capacity.get(&r.region);
            RegionLoadStatus {
                region: r.region.clone(),
                connections: r.connections,
                rps: r.rps,
                capacity_connections: cap.and_then(|c| c.connections),
                capacity_rps: cap.and_then(|c| c.rps),
                load: cap.and_then(|c| c.fraction(r.connections, r.rps)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 1, 1], port))
    }

    #[test]
    fn load_is_summed_per_region_and_smoothed_over_a_few_seconds() {
        let names = vec!["eu".to_string(), "us".to_string()];
        let mut m = Meter::default();
        let l = |active, total| Sample {
            region_index: 0,
            active,
            total,
        };
        m.sample(0.0, &names, &[(at(1), l(0, 0)), (at(2), l(0, 0))]);
        assert_eq!(m.report()[0].connections, 0.0);
        // 100 connections held, 50 new requests a second on each listener.
        let mut t = 0.0;
        let mut total = 0;
        while t < 3.0 * TAU {
            t += 0.2;
            total += 10;
            m.sample(t, &names, &[(at(1), l(50, total)), (at(2), l(50, total))]);
        }
        let r = &m.report()[0];
        assert!((r.connections - 95.0).abs() < 2.0, "{}", r.connections);
        assert!((r.rps - 95.0).abs() < 2.0, "{}", r.rps);
        // A listener gone (reload) forgets its total; a region gone is forgotten.
        m.sample(t + 0.2, &names, &[(at(1), l(50, total + 10))]);
        assert_eq!(m.report().len(), 1);
        m.sample(
            t + 0.4,
            &names,
            &[(
                at(3),
                Sample {
                    region_index: 1,
                    active: 7,
                    total: 1000,
                },
            )],
        );
        let r = m.report();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].region.as_str(), r[0].connections, r[0].rps),
            ("us", 7.0, 0.0)
        );
    }

    #[test]
    fn the_status_judges_each_region_against_its_capacity() {
        let cap: BTreeMap<String, Capacity> = [(
            "eu".to_string(),
            Capacity {
                connections: Some(200.0),
                rps: Some(50.0),
            },
        )]
        .into();
        let report = vec![
            LoadReport {
                region: "eu".into(),
                connections: 100.0,
                rps: 40.0,
            },
            LoadReport {
                region: "us".into(),
                connections: 1.0,
                rps: 1.0,
            },
        ];
        let s = status(&report, &cap);
        assert_eq!(s[0].load, Some(0.8), "the larger of 0.5 and 0.8");
        assert_eq!(s[1].load, None);
    }
}

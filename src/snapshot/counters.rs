//! Query counters of a snapshot.
//!
//! The answer path counts into per-worker slots (one cache line set per UDP
//! worker, one shared by TCP), so workers never contend on a counter. The
//! counters belong to a snapshot; when the last reference to a replaced
//! snapshot goes, its counts are folded into a retained total, so nothing
//! counted is lost across reloads. `metrics::render` sums everything at
//! scrape time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Query types counted separately; the rest go to "other".
pub const QTYPES: [(u16, &str); 11] = [
    (1, "A"),
    (28, "AAAA"),
    (5, "CNAME"),
    (15, "MX"),
    (2, "NS"),
    (6, "SOA"),
    (16, "TXT"),
    (33, "SRV"),
    (65, "HTTPS"),
    (255, "ANY"),
    (0, "other"),
];
/// Response codes counted separately; the rest go to "other".
pub const RCODES: [(u16, &str); 10] = [
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (9, "NOTAUTH"),
    (16, "BADVERS"),
    (23, "BADCOOKIE"),
    (u16::MAX, "other"),
];
const CELLS: usize = QTYPES.len() * RCODES.len();

pub fn qtype_bucket(t: u16) -> usize {
    QTYPES
        .iter()
        .position(|&(c, _)| c == t)
        .unwrap_or(QTYPES.len() - 1)
}
pub fn rcode_bucket(r: u16) -> usize {
    RCODES
        .iter()
        .position(|&(c, _)| c == r)
        .unwrap_or(RCODES.len() - 1)
}

/// Totals carried over from replaced snapshots.
#[derive(Debug, Default)]
pub struct Retained {
    /// (zone, qtype, rcode) → count.
    pub queries: BTreeMap<(String, &'static str, &'static str), u64>,
    /// (service, region) → count.
    pub answers: BTreeMap<(String, String), u64>,
}

#[repr(align(64))]
#[derive(Debug, Default)]
struct Cell(AtomicU64);

/// Counters of one snapshot.
#[derive(Debug)]
pub struct Counters {
    slots: usize,
    /// Zone names; index `zones.len()` is "no zone" (REFUSED, FORMERR...).
    zones: Vec<String>,
    /// `service name`, per service index.
    services: Vec<String>,
    /// Region names; index `regions.len()` is "none" (fallback, NODATA).
    regions: Vec<String>,
    queries: Box<[Cell]>,
    answers: Box<[Cell]>,
    retained: Arc<Mutex<Retained>>,
}

impl Counters {
    pub fn new(
        slots: usize,
        zones: Vec<String>,
        services: Vec<String>,
        regions: Vec<String>,
        retained: Arc<Mutex<Retained>>,
    ) -> Counters {
        let slots = slots.max(1);
        let q = slots * (zones.len() + 1) * CELLS;
        let a = slots * services.len().max(1) * (regions.len() + 1);
        Counters {
            slots,
            queries: (0..q).map(|_| Cell::default()).collect(),
            answers: (0..a).map(|_| Cell::default()).collect(),
            zones,
            services,
            regions,
            retained,
        }
    }

    pub fn retained(&self) -> Arc<Mutex<Retained>> {
        self.retained.clone()
    }

    /// Counts one query (zone `None`: no served zone).
    #[inline]
    pub fn query(&self, slot: usize, zone: Option<usize>, qtype: u16, rcode: u16) {
        let z = zone.unwrap_or(self.zones.len()).min(self.zones.len());
        let i = (slot.min(self.slots - 1) * (self.zones.len() + 1) + z) * CELLS
            + qtype_bucket(qtype) * RCODES.len()
            + rcode_bucket(rcode);
        if let Some(c) = self.queries.get(i) {
            c.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one steered answer (region `None`: fallback or NODATA).
    #[inline]
    pub fn answer(&self, slot: usize, service: usize, region: Option<usize>) {
        let r = region.unwrap_or(self.regions.len()).min(self.regions.len());
        let i = (slot.min(self.slots - 1) * self.services.len().max(1) + service)
            * (self.regions.len() + 1)
            + r;
        if let Some(c) = self.answers.get(i) {
            c.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fold_into(&self, r: &mut Retained) {
        for s in 0..self.slots {
            for z in 0..=self.zones.len() {
                for (qi, (_, qn)) in QTYPES.iter().enumerate() {
                    for (ri, (_, rn)) in RCODES.iter().enumerate() {
                        let i = (s * (self.zones.len() + 1) + z) * CELLS + qi * RCODES.len() + ri;
                        let n = self.queries[i].0.load(Ordering::Relaxed);
                        if n > 0 {
                            let zone = self
                                .zones
                                .get(z)
                                .cloned()
                                .unwrap_or_else(|| "(none)".into());
                            *r.queries.entry((zone, qn, rn)).or_default() += n;
                        }
                    }
                }
            }
            for sv in 0..self.services.len() {
                for rg in 0..=self.regions.len() {
                    let i = (s * self.services.len().max(1) + sv) * (self.regions.len() + 1) + rg;
                    let n = self.answers[i].0.load(Ordering::Relaxed);
                    if n > 0 {
                        let region = self
                            .regions
                            .get(rg)
                            .cloned()
                            .unwrap_or_else(|| "(none)".into());
                        *r.answers
                            .entry((self.services[sv].clone(), region))
                            .or_default() += n;
                    }
                }
            }
        }
    }

    /// Retained totals plus this snapshot's live counts.
    pub fn totals(&self) -> Retained {
        let mut out = Retained::default();
        if let Ok(r) = self.retained.lock() {
            out.queries = r.queries.clone();
            out.answers = r.answers.clone();
        }
        self.fold_into(&mut out);
        out
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        if let Ok(mut r) = self.retained.lock() {
            let mut tmp = Retained::default();
            self.fold_into(&mut tmp);
            for (k, v) in tmp.queries {
                *r.queries.entry(k).or_default() += v;
            }
            for (k, v) in tmp.answers {
                *r.answers.entry(k).or_default() += v;
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_the_snapshot_they_were_counted_in() {
        let retained = Arc::new(Mutex::new(Retained::default()));
        let c = Counters::new(
            2,
            vec!["example.com.".into()],
            vec!["www.example.com.".into()],
            vec!["eu".into()],
            retained.clone(),
        );
        c.query(0, Some(0), 1, 0);
        c.query(1, Some(0), 1, 0);
        c.query(1, None, 1, 5);
        c.answer(0, 0, Some(0));
        let t = c.totals();
        assert_eq!(t.queries[&("example.com.".to_string(), "A", "NOERROR")], 2);
        assert_eq!(t.queries[&("(none)".to_string(), "A", "REFUSED")], 1);
        drop(c);
        let c2 = Counters::new(2, vec!["example.com.".into()], vec![], vec![], retained);
        c2.query(0, Some(0), 1, 0);
        let t = c2.totals();
        assert_eq!(t.queries[&("example.com.".to_string(), "A", "NOERROR")], 3);
        assert_eq!(
            t.answers[&("www.example.com.".to_string(), "eu".to_string())],
            1
        );
    }
}

//! Resolver telemetry for failover drills: while armed, every answer a
//! service gives is noted per resolver (the packet's source address) and
//! service — which region answered, since when, the region before that and
//! when it was last given, the TTL. From that a drill tells, per resolver,
//! when it moved off a drained region, whether it re-asked once its cached
//! answer expired, and which resolvers still hold the old answer.
//!
//! Off, it costs one atomic load per service answer. Armed, a lock of one of
//! 64 stripes and no allocation: each stripe's table is sized when armed,
//! and a resolver that does not fit is counted (`overflow`), not stored.
//! Tracking ends by itself at the deadline given when armed.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustc_hash::FxHasher;

const STRIPES: usize = 64;
/// Most resolvers one arming may track.
pub const MAX_CAPACITY: usize = 1 << 20;
/// Longest tracking window (as long as a drill may hold).
pub const MAX_WINDOW: Duration = Duration::from_secs(72 * 3600);
/// The region code of an answer that came from no region (fallback
/// addresses, NODATA).
pub const NO_REGION: u16 = u16::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    addr: IpAddr,
    service: u16,
}

/// What is kept per resolver and service. Times are milliseconds since the
/// tracker was armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The region of the latest answer (a tag of [`Tracker::name`]).
    pub region: u16,
    pub last_ms: u32,
    /// When the answers from `region` began (the latest switch).
    pub streak_ms: u32,
    /// The region answered before `region` ([`NO_REGION`] before any
    /// switch), and the last time it was given.
    pub previous_region: u16,
    pub previous_last_ms: u32,
    /// The TTL of the latest answer.
    pub ttl: u32,
    pub queries: u32,
    pub switches: u32,
}

type Table = HashMap<Key, Entry, BuildHasherDefault<FxHasher>>;

/// The tracker, shared by every snapshot (it outlives reloads).
#[derive(Debug)]
pub struct Tracker {
    /// Unix milliseconds at which tracking stops; 0 when off.
    until_ms: AtomicU64,
    /// Unix milliseconds of the arming (times in entries count from here).
    armed_ms: AtomicU64,
    per_stripe: AtomicU64,
    overflow: AtomicU64,
    stripes: Box<[Mutex<Table>]>,
    /// Service and region names, interned: tags survive reloads that
    /// renumber services and regions.
    names: Mutex<Vec<String>>,
    /// The counts every [`SAMPLE_EVERY`] while armed, the last
    /// [`HISTORY`] (cleared when armed again).
    history: Mutex<VecDeque<Sample>>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            until_ms: AtomicU64::new(0),
            armed_ms: AtomicU64::new(0),
            per_stripe: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(Table::default())).collect(),
            names: Mutex::new(Vec::new()),
            history: Mutex::new(VecDeque::new()),
        }
    }
}

/// Service and region tags of one snapshot, by its indices.
#[derive(Debug, Clone, Default)]
pub struct Tags {
    pub services: Vec<u16>,
    pub regions: Vec<u16>,
}

/// One resolver's line, as the API gives it (and `geolb drill` reads it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Line {
    pub resolver: IpAddr,
    pub service: String,
    pub region: Option<String>,
    pub last: f64,
    pub since: f64,
    pub previous_region: Option<String>,
    pub previous_last: Option<f64>,
    pub ttl: u32,
    pub queries: u32,
    pub switches: u32,
}

/// The tracker's state, for the API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub armed: bool,
    pub armed_at: Option<f64>,
    pub until: Option<f64>,
    pub capacity: usize,
    pub tracked: usize,
    pub overflow: u64,
    pub resolvers: Vec<Line>,
}

/// Most rows of a [`Summary`].
pub const MAX_SUMMARY_ROWS: usize = 256;
/// How often the counts are sampled while armed (by `control`).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: an hour at [`SAMPLE_EVERY`].
pub const HISTORY: usize = 720;

/// The counts of one moment, for the timeline's curves.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Unix seconds.
    pub at: f64,
    pub regions: Vec<SampleCount>,
}

/// One service and region of a [`Sample`] (see [`RegionCount`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SampleCount {
    pub service: String,
    pub region: Option<String>,
    pub resolvers: usize,
    pub holding: usize,
}

/// The tracked resolvers counted per service and region: what the status
/// page polls every few seconds (its size does not grow with resolvers).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub armed: bool,
    pub armed_at: Option<f64>,
    pub until: Option<f64>,
    /// Unix seconds the counts are of.
    pub now: f64,
    pub tracked: usize,
    pub overflow: u64,
    /// By service, then region (no region last).
    pub regions: Vec<RegionCount>,
    /// Rows left out beyond [`MAX_SUMMARY_ROWS`].
    pub more: usize,
    /// The samples taken since the time asked for (all kept when none),
    /// oldest first.
    pub history: Vec<Sample>,
}

/// One service and region of a [`Summary`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RegionCount {
    pub service: String,
    /// None: answers from no region (fallback addresses, NODATA).
    pub region: Option<String>,
    /// Resolvers whose latest answer came from this region.
    pub resolvers: usize,
    /// Of those, the ones whose latest answer is still within its TTL: they
    /// hold it in their cache now.
    pub holding: usize,
    /// Of those, the ones that came to it from another region.
    pub moved_in: usize,
    /// Resolvers last answered from another region after this one.
    pub moved_away: usize,
    /// The newest answer from this region to any resolver (unix seconds).
    pub last_given: Option<f64>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Tracker {
    /// The tag of `name` (interned on first use).
    pub fn tag(&self, name: &str) -> u16 {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = names.iter().position(|n| n == name) {
            return i as u16;
        }
        if names.len() >= usize::from(NO_REGION) {
            return NO_REGION;
        }
        names.push(name.to_string());
        (names.len() - 1) as u16
    }

    /// The name behind a tag.
    pub fn name(&self, tag: u16) -> Option<String> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.get(usize::from(tag)).cloned()
    }

    /// Tags for a snapshot's services and regions.
    pub fn tags<'a>(
        &self,
        services: impl Iterator<Item = &'a str>,
        regions: impl Iterator<Item = &'a str>,
    ) -> Tags {
        Tags {
            services: services.map(|s| self.tag(s)).collect(),
            regions: regions.map(|r| self.tag(r)).collect(),
        }
    }

    /// Starts (or restarts) tracking for `window`, forgetting what was
    /// tracked before; at most `capacity` resolver-service pairs.
    pub fn arm(&self, window: Duration, capacity: usize, now: SystemTime) {
        let capacity = capacity.clamp(STRIPES, MAX_CAPACITY);
        let per = capacity.div_ceil(STRIPES);
        // Stop recording while the tables are replaced.
        self.until_ms.store(0, Ordering::SeqCst);
        for s in self.stripes.iter() {
            let mut t = s.lock().unwrap_or_else(|p| p.into_inner());
            *t = Table::with_capacity_and_hasher(per, Default::default());
        }
        self.overflow.store(0, Ordering::Relaxed);
        self.per_stripe.store(per as u64, Ordering::Relaxed);
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let at = unix_ms(now);
        self.armed_ms.store(at, Ordering::SeqCst);
        let window = window.min(MAX_WINDOW);
        self.until_ms
            .store(at + window.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops tracking; what was tracked stays readable.
    pub fn disarm(&self) {
        self.until_ms.store(0, Ordering::SeqCst);
    }

    /// Notes an answer of `service` from `region` with `ttl` to `resolver`.
    #[inline]
    pub fn record(&self, resolver: IpAddr, service: u16, region: u16, ttl: u32) {
        let until = self.until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return;
        }
        self.record_armed(resolver, service, region, ttl, until, SystemTime::now());
    }

    #[cold]
    fn record_armed(
        &self,
        resolver: IpAddr,
        service: u16,
        region: u16,
        ttl: u32,
        until: u64,
        now: SystemTime,
    ) {
        let now = unix_ms(now);
        if now > until {
            return;
        }
        let at = now.saturating_sub(self.armed_ms.load(Ordering::Relaxed)) as u32;
        let key = Key {
            addr: resolver,
            service,
        };
        let mut h = FxHasher::default();
        key.hash(&mut h);
        let stripe = (h.finish() >> 32) as usize % STRIPES;
        let mut t = self.stripes[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(e) = t.get_mut(&key) {
            if e.region != region {
                e.previous_region = e.region;
                e.previous_last_ms = e.last_ms;
                e.region = region;
                e.streak_ms = at;
                e.switches = e.switches.saturating_add(1);
            }
            e.last_ms = at;
            e.ttl = ttl;
            e.queries = e.queries.saturating_add(1);
            return;
        }
        if t.len() as u64 >= self.per_stripe.load(Ordering::Relaxed) {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        t.insert(
            key,
            Entry {
                region,
                last_ms: at,
                streak_ms: at,
                previous_region: NO_REGION,
                previous_last_ms: 0,
                ttl,
                queries: 1,
                switches: 0,
            },
        );
    }

    /// Everything tracked, optionally for one service only, ordered by
    /// resolver then service.
    pub fn report(&self, service: Option<&str>, now: SystemTime) -> Report {
        let until = self.until_ms.load(Ordering::SeqCst);
        let armed_ms = self.armed_ms.load(Ordering::SeqCst);
        let secs = |ms: u32| (armed_ms + u64::from(ms)) as f64 / 1000.0;
        // One copy of the names, not a lock per line.
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let name = |tag: u16| names.get(usize::from(tag)).cloned();
        let region = |tag: u16| (tag != NO_REGION).then(|| name(tag)).flatten();
        let mut resolvers = Vec::new();
        for s in self.stripes.iter() {
            let t = s.lock().unwrap_or_else(|p| p.into_inner());
            for (k, e) in t.iter() {
                let Some(name) = name(k.service) else {
                    continue;
                };
                if service.is_some_and(|s| s != name) {
                    continue;
                }
                resolvers.push(Line {
                    resolver: k.addr,
                    service: name,
                    region: region(e.region),
                    last: secs(e.last_ms),
                    since: secs(e.streak_ms),
                    previous_region: region(e.previous_region),
                    previous_last: (e.switches > 0).then(|| secs(e.previous_last_ms)),
                    ttl: e.ttl,
                    queries: e.queries,
                    switches: e.switches,
                });
            }
        }
        resolvers.sort_by(|a, b| (a.resolver, &a.service).cmp(&(b.resolver, &b.service)));
        let per = self.per_stripe.load(Ordering::Relaxed) as usize;
        Report {
            armed: until != 0 && unix_ms(now) <= until,
            armed_at: (armed_ms != 0).then(|| armed_ms as f64 / 1000.0),
            until: (until != 0).then(|| until as f64 / 1000.0),
            capacity: per * STRIPES,
            tracked: resolvers.len(),
            overflow: self.overflow.load(Ordering::Relaxed),
            resolvers,
        }
    }
}

impl Tracker {
    /// The counts of every tracked resolver per service and region, at
    /// `now`: one pass over the tables, output bounded by services ×
    /// regions (at most [`MAX_SUMMARY_ROWS`] rows).
    pub fn summary(&self, now: SystemTime, since: Option<f64>) -> Summary {
        #[derive(Default)]
        struct Acc {
            resolvers: usize,
            holding: usize,
            moved_in: usize,
            moved_away: usize,
            last: Option<u32>,
        }
        let until = self.until_ms.load(Ordering::SeqCst);
        let armed_ms = self.armed_ms.load(Ordering::SeqCst);
        let now_ms = unix_ms(now);
        let at = now_ms.saturating_sub(armed_ms);
        let mut acc: rustc_hash::FxHashMap<(u16, u16), Acc> = Default::default();
        let mut tracked = 0;
        for s in self.stripes.iter() {
            let t = s.lock().unwrap_or_else(|p| p.into_inner());
            tracked += t.len();
            for (k, e) in t.iter() {
                let a = acc.entry((k.service, e.region)).or_default();
                a.resolvers += 1;
                if u64::from(e.last_ms) + u64::from(e.ttl) * 1000 > at {
                    a.holding += 1;
                }
                if e.switches > 0 {
                    a.moved_in += 1;
                }
                a.last = a.last.max(Some(e.last_ms));
                if e.switches > 0 {
                    acc.entry((k.service, e.previous_region))
                        .or_default()
                        .moved_away += 1;
                }
            }
        }
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let name = |tag: u16| names.get(usize::from(tag)).cloned();
        let mut regions: Vec<RegionCount> = acc
            .into_iter()
            .filter_map(|((svc, region), a)| {
                Some(RegionCount {
                    service: name(svc)?,
                    region: (region != NO_REGION).then(|| name(region)).flatten(),
                    resolvers: a.resolvers,
                    holding: a.holding,
                    moved_in: a.moved_in,
                    moved_away: a.moved_away,
                    last_given: a.last.map(|ms| (armed_ms + u64::from(ms)) as f64 / 1000.0),
                })
            })
            .collect();
        regions.sort_by(|a, b| {
            (&a.service, a.region.is_none(), &a.region).cmp(&(
                &b.service,
                b.region.is_none(),
                &b.region,
            ))
        });
        let more = regions.len().saturating_sub(MAX_SUMMARY_ROWS);
        regions.truncate(MAX_SUMMARY_ROWS);
        Summary {
            armed: until != 0 && now_ms <= until,
            armed_at: (armed_ms != 0).then(|| armed_ms as f64 / 1000.0),
            until: (until != 0).then(|| until as f64 / 1000.0),
            now: now_ms as f64 / 1000.0,
            tracked,
            overflow: self.overflow.load(Ordering::Relaxed),
            regions,
            more,
            history: self
                .history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|s| since.is_none_or(|t| s.at > t))
                .cloned()
                .collect(),
        }
    }

    /// Whether tracking is on at `now`.
    pub fn armed(&self, now: SystemTime) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until != 0 && unix_ms(now) <= until
    }

    /// Keeps the counts of `now` in the history, if armed.
    pub fn sample(&self, now: SystemTime) {
        if !self.armed(now) {
            return;
        }
        let s = self.summary(now, Some(f64::INFINITY));
        let sample = Sample {
            at: s.now,
            regions: s
                .regions
                .into_iter()
                .map(|r| SampleCount {
                    service: r.service,
                    region: r.region,
                    resolvers: r.resolvers,
                    holding: r.holding,
                })
                .collect(),
        };
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() >= HISTORY {
            h.pop_front();
        }
        h.push_back(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn off_records_nothing_and_armed_follows_each_resolver_across_a_switch() {
        let t = Tracker::default();
        let www = t.tag("www.example.com.");
        let (eu, us) = (t.tag("eu"), t.tag("us"));
        assert_eq!(t.tag("eu"), eu, "interned once");
        let t0 = SystemTime::now();
        t.record_armed(ip("192.0.2.1"), www, eu, 30, 0, t0);
        t.record(ip("192.0.2.1"), www, eu, 30);
        assert_eq!(t.report(None, t0).tracked, 0, "off");
        t.arm(Duration::from_secs(60), 1000, t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        let until = unix_ms(t0) + 60_000;
        t.record_armed(ip("192.0.2.1"), www, eu, 30, until, at(0));
        t.record_armed(ip("192.0.2.1"), www, eu, 30, until, at(1000));
        t.record_armed(ip("192.0.2.1"), www, us, 20, until, at(31_000));
        t.record_armed(ip("198.51.100.7"), www, eu, 30, until, at(2000));
        // Past the deadline nothing more is noted.
        t.record_armed(ip("198.51.100.7"), www, us, 30, until, at(61_000));
        let r = t.report(None, at(5000));
        assert!(r.armed);
        assert_eq!(r.tracked, 2);
        let a = &r.resolvers[0];
        assert_eq!(a.resolver, ip("192.0.2.1"));
        assert_eq!(a.region.as_deref(), Some("us"));
        assert_eq!(a.previous_region.as_deref(), Some("eu"));
        let base = unix_ms(t0) as f64 / 1000.0;
        assert!((a.previous_last.expect("switched") - (base + 1.0)).abs() < 1e-6);
        assert!((a.since - (base + 31.0)).abs() < 1e-6);
        assert_eq!((a.queries, a.switches, a.ttl), (3, 1, 20));
        let b = &r.resolvers[1];
        assert_eq!(b.region.as_deref(), Some("eu"));
        assert_eq!((b.queries, b.switches, b.previous_last), (1, 0, None));
        assert!(!t.report(None, at(61_000)).armed, "the window ended");
        assert_eq!(t.report(Some("other."), at(0)).tracked, 0);
    }

    #[test]
    fn the_summary_counts_resolvers_per_region_holding_and_moved() {
        let t = Tracker::default();
        let www = t.tag("www.example.com.");
        let (eu, us) = (t.tag("eu"), t.tag("us"));
        let t0 = SystemTime::now();
        t.arm(Duration::from_secs(600), 1000, t0);
        let until = unix_ms(t0) + 600_000;
        let at = |ms| t0 + Duration::from_millis(ms);
        // a: eu, then us at 40 s (TTL 30). b: eu at 5 s (TTL 30). c: eu at
        // 50 s (TTL 30). d: a fallback answer.
        t.record_armed(ip("192.0.2.1"), www, eu, 30, until, at(0));
        t.record_armed(ip("192.0.2.1"), www, us, 30, until, at(40_000));
        t.record_armed(ip("192.0.2.2"), www, eu, 30, until, at(5_000));
        t.record_armed(ip("192.0.2.3"), www, eu, 30, until, at(50_000));
        t.record_armed(ip("192.0.2.4"), www, NO_REGION, 30, until, at(1_000));
        t.sample(at(30_000));
        t.sample(at(60_000));
        let s = t.summary(at(60_000), None);
        assert!(s.armed);
        assert_eq!(s.tracked, 4);
        let row = |r: Option<&str>| {
            s.regions
                .iter()
                .find(|x| x.region.as_deref() == r)
                .cloned()
                .unwrap_or_else(|| panic!("no row {r:?}: {s:?}"))
        };
        let e = row(Some("eu"));
        assert_eq!(
            (e.resolvers, e.holding, e.moved_in, e.moved_away),
            (2, 1, 0, 1)
        );
        let base = unix_ms(t0) as f64 / 1000.0;
        assert!((e.last_given.unwrap_or(0.0) - (base + 50.0)).abs() < 1e-6);
        let u = row(Some("us"));
        assert_eq!(
            (u.resolvers, u.holding, u.moved_in, u.moved_away),
            (1, 1, 1, 0)
        );
        let n = row(None);
        assert_eq!((n.resolvers, n.holding), (1, 0));
        assert_eq!(
            s.regions.last().map(|r| r.region.clone()),
            Some(None),
            "no region last"
        );
        assert_eq!(s.more, 0);
        // The samples: the counts then, and only the newer when asked.
        assert_eq!(s.history.len(), 2);
        let then = &s.history[0];
        let eu_then = then
            .regions
            .iter()
            .find(|r| r.region.as_deref() == Some("eu"));
        assert_eq!(eu_then.map(|r| (r.resolvers, r.holding)), Some((2, 2)));
        let base = unix_ms(t0) as f64 / 1000.0;
        assert_eq!(t.summary(at(60_000), Some(base + 30.0)).history.len(), 1);
        t.disarm();
        t.sample(at(61_000));
        assert_eq!(
            t.summary(at(61_000), None).history.len(),
            2,
            "not armed: no sample"
        );
        t.arm(Duration::from_secs(60), 1000, at(62_000));
        assert!(
            t.summary(at(62_000), None).history.is_empty(),
            "armed afresh"
        );
    }

    #[test]
    fn a_full_table_counts_what_it_cannot_keep_and_arming_again_starts_afresh() {
        let t = Tracker::default();
        let s = t.tag("s.");
        let now = SystemTime::now();
        t.arm(Duration::from_secs(60), 64, now);
        for i in 0..1000u32 {
            t.record(IpAddr::from(i.to_be_bytes()), s, 0, 30);
        }
        let r = t.report(None, now);
        assert!(
            r.tracked <= r.capacity && r.capacity <= 128,
            "{}",
            r.capacity
        );
        assert_eq!(r.tracked as u64 + r.overflow, 1000);
        t.arm(Duration::from_secs(60), 64, now);
        let r = t.report(None, now);
        assert_eq!((r.tracked, r.overflow), (0, 0));
        t.disarm();
        t.record(ip("192.0.2.1"), s, 0, 30);
        assert_eq!(t.report(None, now).tracked, 0);
    }
}

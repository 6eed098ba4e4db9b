//! What `simulate` reports, as JSON (serde) and as text (`Display`), and
//! the sums it is made of.

use std::fmt;
use std::net::IpAddr;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::Weight;
use crate::geo::index::Walk;

/// One simulation: the shares of every service, the change from a base,
/// and a resilience check.
#[derive(Debug, Serialize)]
pub struct Report {
    pub config: String,
    /// The health simulated ("all up", "down: …; drained: …").
    pub health: String,
    pub qtype: &'static str,
    /// City database networks walked.
    pub networks: usize,
    /// How address space is counted.
    pub counting: &'static str,
    pub services: Vec<ServiceSim>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resilience: Option<Resilience>,
    /// Milliseconds: loading, walking, simulating, the resilience check.
    pub timings_ms: Timings,
}

#[derive(Debug, Default, Serialize)]
pub struct Timings {
    pub load: u64,
    pub walk: u64,
    pub simulate: u64,
    pub resilience: u64,
}

pub const COUNTING: &str =
    "IPv4 in addresses; IPv6 in addresses as 2^(128-prefix) per network (floating point); \
     only space a database network, a CIDR entry or a named AS number covers";

/// One service's simulated answers.
#[derive(Debug, Serialize)]
pub struct ServiceSim {
    pub service: String,
    pub qtype: &'static str,
    pub v4: Shares,
    pub v6: Shares,
    /// The change from the base (all up, or the `--against` config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// With `--per-network`: every network's answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAnswer>,
}

/// The share of one family's client address space per region (of the
/// answer's first endpoint) and per pool.
#[derive(Debug, Serialize)]
pub struct Shares {
    pub networks: u64,
    pub addresses: f64,
    pub regions: Vec<Share>,
    pub pools: Vec<Share>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Share {
    pub name: String,
    pub percent: f64,
    pub addresses: f64,
    pub networks: u64,
}

/// Where address space moved, region to region.
#[derive(Debug, Serialize)]
pub struct Change {
    /// What it is compared with.
    pub from: String,
    pub moved_v4_percent: f64,
    pub moved_v6_percent: f64,
    pub v4: Vec<Move>,
    pub v6: Vec<Move>,
}

#[derive(Debug, Serialize)]
pub struct Move {
    pub from: String,
    pub to: String,
    pub percent: f64,
    pub addresses: f64,
}

/// One network (a piece of the walk: a City network, cut where a CIDR
/// entry or an AS network begins or ends) and its answer.
#[derive(Debug, Serialize)]
pub struct NetworkAnswer {
    pub first: IpAddr,
    pub last: IpAddr,
    pub place: String,
    pub region: String,
    pub pool: String,
    /// The answer's addresses or CNAME targets, in order.
    pub answer: Vec<String>,
}

/// Every combination of up to `k` regions down.
#[derive(Debug, Serialize)]
pub struct Resilience {
    pub k: usize,
    /// The health the regions go down on top of.
    pub base: String,
    pub scenarios: usize,
    pub ok: bool,
    /// The scenarios that leave some place without an answer.
    pub failing: Vec<ScenarioFailure>,
}

#[derive(Debug, Serialize)]
pub struct ScenarioFailure {
    pub down: Vec<String>,
    pub services: Vec<ServiceFailure>,
}

#[derive(Debug, Serialize)]
pub struct ServiceFailure {
    pub service: String,
    pub networks: u64,
    pub v4_percent: f64,
    pub v6_percent: f64,
    /// The places without an answer, most networks first.
    pub places: Vec<Place>,
    /// Places beyond those listed.
    pub more_places: usize,
}

#[derive(Debug, Serialize)]
pub struct Place {
    pub place: String,
    pub networks: u64,
    pub v4_addresses: f64,
    pub v6_addresses: f64,
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

/// One family's shares from the sums per region and per pool.
pub(super) fn shares(
    regions: &FxHashMap<&str, Weight>,
    pools: &FxHashMap<&str, Weight>,
    total: &Weight,
    v6: bool,
) -> Shares {
    let (whole, networks) = if v6 {
        (total.v6, total.nets6)
    } else {
        (total.v4, total.nets4)
    };
    let list = |m: &FxHashMap<&str, Weight>| {
        let mut v: Vec<Share> = m
            .iter()
            .map(|(name, w)| {
                let (a, n) = if v6 { (w.v6, w.nets6) } else { (w.v4, w.nets4) };
                Share {
                    name: name.to_string(),
                    percent: percent(a, whole),
                    addresses: a,
                    networks: n,
                }
            })
            .filter(|s| s.networks > 0)
            .collect();
        v.sort_by(|a, b| {
            b.addresses
                .total_cmp(&a.addresses)
                .then(a.name.cmp(&b.name))
        });
        v
    };
    Shares {
        networks,
        addresses: whole,
        regions: list(regions),
        pools: list(pools),
    }
}

/// Calls `f(first, last, a, b)` for each interval where the pieces of two
/// walks (starts ascending from 0, each to the next start) both stay.
fn overlay<T: Copy + Into<u128>>(
    a: &[(T, u32)],
    b: &[(T, u32)],
    max: u128,
    mut f: impl FnMut(u128, u128, u32, u32),
) {
    let end_of = |v: &[(T, u32)], i: usize| v.get(i + 1).map_or(max, |n| n.0.into() - 1);
    let (mut i, mut j, mut pos) = (0, 0, 0u128);
    while i < a.len() && j < b.len() {
        let (ea, eb) = (end_of(a, i), end_of(b, j));
        let end = ea.min(eb);
        f(pos, end, a[i].1, b[j].1);
        if end >= max {
            break;
        }
        pos = end + 1;
        i += usize::from(ea == end);
        j += usize::from(eb == end);
    }
}

/// The region-to-region matrix from one walk's answers to another's (the
/// same walk for a health change; another config's for `--against`): the
/// address space whose answer's region differs, per family.
pub(super) fn change(label: &str, from: (&Walk, &[String]), to: (&Walk, &[String])) -> Change {
    let mut moves: [FxHashMap<(u32, u32), f64>; 2] = Default::default();
    let mut totals = [0.0f64; 2];
    let listed = |w: &Walk, i: u32| w.inputs.get(i as usize).is_some_and(|x| x.listed());
    let mut count = |fam: usize, first: u128, last: u128, a: u32, b: u32| {
        if !(listed(from.0, a) || listed(to.0, b)) {
            return;
        }
        if fam == 1 && super::is_mapped(IpAddr::from(first.to_be_bytes())) {
            return;
        }
        let size = (last - first) as f64 + 1.0;
        totals[fam] += size;
        *moves[fam].entry((a, b)).or_default() += size;
    };
    overlay(&from.0.v4, &to.0.v4, u32::MAX as u128, |s, e, a, b| {
        count(0, s, e, a, b)
    });
    overlay(&from.0.v6, &to.0.v6, u128::MAX, |s, e, a, b| {
        count(1, s, e, a, b)
    });
    let name = |v: &[String], i: u32| v.get(i as usize).cloned().unwrap_or_default();
    let [v4, v6] = [0, 1].map(|fam| {
        let mut by: FxHashMap<(String, String), f64> = FxHashMap::default();
        for (&(a, b), &size) in &moves[fam] {
            let (f, t) = (name(from.1, a), name(to.1, b));
            if f != t {
                *by.entry((f, t)).or_default() += size;
            }
        }
        let mut v: Vec<Move> = by
            .into_iter()
            .map(|((from, to), a)| Move {
                from,
                to,
                percent: percent(a, totals[fam]),
                addresses: a,
            })
            .collect();
        v.sort_by(|a, b| {
            b.addresses
                .total_cmp(&a.addresses)
                .then(a.from.cmp(&b.from))
        });
        v
    });
    let moved = |v: &[Move], fam: usize| percent(v.iter().map(|m| m.addresses).sum(), totals[fam]);
    Change {
        from: label.to_string(),
        moved_v4_percent: moved(&v4, 0),
        moved_v6_percent: moved(&v6, 1),
        v4,
        v6,
    }
}

/// One service's failure in one scenario, its `top` places listed.
pub(super) fn failure(
    service: &str,
    places: FxHashMap<String, Weight>,
    lost: &Weight,
    all: &Weight,
    top: usize,
) -> ServiceFailure {
    let mut list: Vec<Place> = places
        .into_iter()
        .map(|(place, w)| Place {
            place,
            networks: w.nets4 + w.nets6,
            v4_addresses: w.v4,
            v6_addresses: w.v6,
        })
        .collect();
    list.sort_by(|a, b| b.networks.cmp(&a.networks).then(a.place.cmp(&b.place)));
    let more_places = list.len().saturating_sub(top);
    list.truncate(top);
    ServiceFailure {
        service: service.to_string(),
        networks: lost.nets4 + lost.nets6,
        v4_percent: percent(lost.v4, all.v4),
        v6_percent: percent(lost.v6, all.v6),
        places: list,
        more_places,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} networks, {} queries, health: {}",
            self.config, self.networks, self.qtype, self.health
        )?;
        writeln!(f, "(counting {})", self.counting)?;
        for s in &self.services {
            writeln!(f)?;
            write!(f, "{s}")?;
        }
        if let Some(r) = &self.resilience {
            writeln!(f)?;
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// A share table's rows: every name of either family, by IPv4 share.
fn rows<'a>(v4: &'a [Share], v6: &'a [Share]) -> Vec<(&'a str, f64, f64)> {
    let mut names: Vec<&str> = v4.iter().map(|s| s.name.as_str()).collect();
    for s in v6 {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    let pct = |l: &[Share], n: &str| l.iter().find(|s| s.name == n).map_or(0.0, |s| s.percent);
    names
        .into_iter()
        .map(|n| (n, pct(v4, n), pct(v6, n)))
        .collect()
}

impl fmt::Display for ServiceSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {}: IPv4 {} networks ({:.3e} addresses), IPv6 {} networks ({:.3e} addresses)",
            self.service,
            self.qtype,
            self.v4.networks,
            self.v4.addresses,
            self.v6.networks,
            self.v6.addresses
        )?;
        for (title, v4, v6) in [
            ("region", &self.v4.regions, &self.v6.regions),
            ("pool", &self.v4.pools, &self.v6.pools),
        ] {
            writeln!(f, "  {title:<28} {:>8} {:>8}", "IPv4", "IPv6")?;
            for (name, a, b) in rows(v4, v6) {
                writeln!(f, "    {name:<26} {a:>7.2}% {b:>7.2}%")?;
            }
        }
        if let Some(c) = &self.change {
            writeln!(
                f,
                "  change from {}: {:.2}% of IPv4 and {:.2}% of IPv6 space answered from another region",
                c.from, c.moved_v4_percent, c.moved_v6_percent
            )?;
            let mut all: Vec<(&str, &str, f64, f64)> = Vec::new();
            for (fam, list) in [(0, &c.v4), (1, &c.v6)] {
                for m in list.iter() {
                    let at = match all.iter().position(|x| x.0 == m.from && x.1 == m.to) {
                        Some(i) => i,
                        None => {
                            all.push((&m.from, &m.to, 0.0, 0.0));
                            all.len() - 1
                        }
                    };
                    if fam == 0 {
                        all[at].2 = m.percent;
                    } else {
                        all[at].3 = m.percent;
                    }
                }
            }
            for (from, to, a, b) in all {
                writeln!(f, "    {from:>20} → {to:<20} {a:>7.2}% {b:>7.2}%")?;
            }
        }
        for n in &self.networks {
            writeln!(
                f,
                "  {} - {}  {}  {}  {}",
                n.first,
                n.last,
                n.place,
                n.region,
                n.answer.join(" ")
            )?;
        }
        Ok(())
    }
}

/// "1 network", "2 networks".
fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

impl fmt::Display for Resilience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok {
            "OK: every place keeps an answer".to_string()
        } else {
            format!(
                "FAIL: places without an answer in {}",
                plural(self.failing.len() as u64, "scenario")
            )
        };
        writeln!(
            f,
            "resilience, up to {} down ({}, health otherwise: {}): {verdict}",
            plural(self.k as u64, "region"),
            plural(self.scenarios as u64, "scenario"),
            self.base
        )?;
        for s in &self.failing {
            writeln!(f, "  down: {}", s.down.join(", "))?;
            for sv in &s.services {
                writeln!(
                    f,
                    "    {}: {} without an answer ({:.2}% of IPv4, {:.2}% of IPv6 space)",
                    sv.service,
                    plural(sv.networks, "network"),
                    sv.v4_percent,
                    sv.v6_percent
                )?;
                for p in &sv.places {
                    let unit = if p.networks == 1 {
                        "network"
                    } else {
                        "networks"
                    };
                    writeln!(f, "      {:<32} {:>8} {unit}", p.place, p.networks)?;
                }
                if sv.more_places > 0 {
                    writeln!(f, "      … and {} more places", sv.more_places)?;
                }
            }
        }
        Ok(())
    }
}

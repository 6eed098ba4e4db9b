//! Geo decisions compiled at load time.
//!
//! Walking a full City database per query (a trie walk through a 57 MB
//! mapping plus decoding a record with names in eight languages) costs more
//! than the rest of an answer. Instead, at load the whole database is walked
//! once: every network's location is run through the location-dependent
//! steps (`geo`, `nearest`, `latency` tables) of every service that uses
//! only City data, and consecutive address ranges that lead to the same
//! decisions for all of them are merged. A query is then a binary search in
//! a small sorted table; the ECS scope is the largest prefix around the
//! client that stays inside its range — exact, and usually wider than the
//! database network, so resolvers cache more.

use std::net::IpAddr;

use maxminddb::WithinOptions;
use rustc_hash::FxHashMap;

use super::{GeoDb, Location};

/// A compiled lookup: address → decision combination, with its range.
#[derive(Debug, Default)]
pub struct GeoIndex {
    /// Range starts (ascending) and the combination for [start, next start).
    v4: Vec<(u32, u32)>,
    /// For each /16: the index of the last range starting at or before it,
    /// so a lookup only searches the ranges inside one /16.
    v4_by16: Vec<u32>,
    v6: Vec<(u128, u32)>,
    /// Per combination, per compiled service: the index of its decision.
    pub combos: Vec<Box<[u32]>>,
    /// Networks read from the database (for the log line).
    pub networks: usize,
}

/// What a lookup found: the combination and the ECS scope it holds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub combo: u32,
    pub scope: u8,
}

/// Largest prefix around `a` whose block lies inside [lo, hi].
fn scope_in(a: u128, lo: u128, hi: u128, bits: u32) -> u8 {
    for p in 0..=bits {
        // The host bits of a /p (all 128 of them for ::/0).
        let host = if p == bits {
            0
        } else {
            u128::MAX >> (128 - (bits - p))
        };
        let start = a & !host;
        let end = start | host;
        if start >= lo && end <= hi {
            return p as u8;
        }
    }
    bits as u8
}

impl GeoIndex {
    /// Finds the range holding `ip`. Special addresses (private, loopback…)
    /// are the caller's business, as in [`GeoDb::locate`].
    pub fn lookup(&self, ip: IpAddr) -> Option<Hit> {
        match ip {
            IpAddr::V4(v4) => {
                let a = u32::from(v4);
                let top = (a >> 16) as usize;
                let (lo_i, hi_i) = match (self.v4_by16.get(top), self.v4_by16.get(top + 1)) {
                    (Some(&l), Some(&h)) => (l as usize, (h as usize + 1).min(self.v4.len())),
                    _ => (0, self.v4.len()),
                };
                let i = lo_i
                    + self.v4[lo_i..hi_i]
                        .partition_point(|&(s, _)| s <= a)
                        .checked_sub(1)?;
                let lo = self.v4[i].0 as u128;
                let hi = self
                    .v4
                    .get(i + 1)
                    .map_or(u32::MAX as u128, |n| n.0 as u128 - 1);
                Some(Hit {
                    combo: self.v4[i].1,
                    scope: scope_in(a as u128, lo, hi, 32),
                })
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return self.lookup(IpAddr::V4(v4));
                }
                let a = u128::from(v6);
                let i = self.v6.partition_point(|&(s, _)| s <= a).checked_sub(1)?;
                let lo = self.v6[i].0;
                let hi = self.v6.get(i + 1).map_or(u128::MAX, |n| n.0 - 1);
                Some(Hit {
                    combo: self.v6[i].1,
                    scope: scope_in(a, lo, hi, 128),
                })
            }
        }
    }

    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// Builds the index. `decide` maps a location to one decision index per
/// compiled service (the same for equal locations); it is called once per
/// distinct database record, not per network.
pub fn build(
    geo: &GeoDb,
    mut decide: impl FnMut(&Location) -> Vec<u32>,
) -> Result<GeoIndex, String> {
    let db = geo.city.as_ref().ok_or("no City database")?;
    let mut combos: Vec<Box<[u32]>> = Vec::new();
    let mut combo_of: FxHashMap<Box<[u32]>, u32> = FxHashMap::default();
    let mut intern = |c: Vec<u32>| -> u32 {
        let key = c.into_boxed_slice();
        if let Some(&i) = combo_of.get(&key) {
            return i;
        }
        let i = combos.len() as u32;
        combos.push(key.clone());
        combo_of.insert(key, i);
        i
    };
    // Addresses the database does not know: the "unknown" decision.
    let unknown = intern(decide(&Location::default()));
    let mut by_offset: FxHashMap<usize, u32> = FxHashMap::default();
    let mut v4: Vec<(u32, u32, u32)> = Vec::new();
    let mut v6: Vec<(u128, u128, u32)> = Vec::new();
    let mut networks = 0usize;
    let iter = db
        .reader
        .networks(WithinOptions::default())
        .map_err(|e| e.to_string())?;
    for item in iter {
        let r = item.map_err(|e| e.to_string())?;
        let Some(offset) = r.offset() else { continue };
        let net = r.network().map_err(|e| e.to_string())?;
        networks += 1;
        let combo = match by_offset.get(&offset) {
            Some(&c) => c,
            None => {
                let mut loc = Location::default();
                if let Ok(Some(rec)) = r.decode::<super::CityRec<'_>>() {
                    super::fill(&mut loc, rec);
                }
                let c = intern(decide(&loc));
                by_offset.insert(offset, c);
                c
            }
        };
        match net {
            ipnetwork::IpNetwork::V4(n) => {
                let start = u32::from(n.network());
                let host = if n.prefix() >= 32 {
                    0
                } else {
                    u32::MAX >> n.prefix()
                };
                v4.push((start, start | host, combo));
            }
            ipnetwork::IpNetwork::V6(n) => {
                let start = u128::from(n.network());
                let host = if n.prefix() >= 128 {
                    0
                } else {
                    u128::MAX >> n.prefix()
                };
                v6.push((start, start | host, combo));
            }
        }
    }
    let v4 = merge(v4, unknown, 0, |x| x.checked_add(1));
    let v4_by16 = (0..=0x1_0000u64)
        .map(|h| {
            let at = (h << 16).min(u32::MAX as u64) as u32;
            v4.partition_point(|&(s, _)| s <= at).saturating_sub(1) as u32
        })
        .collect();
    Ok(GeoIndex {
        v4,
        v4_by16,
        v6: merge(v6, unknown, 0, |x| x.checked_add(1)),
        combos,
        networks,
    })
}

/// Sorted, gap-filled, merged range starts, from `zero` on.
fn merge<T: Copy + Ord>(
    mut nets: Vec<(T, T, u32)>,
    unknown: u32,
    zero: T,
    succ: impl Fn(T) -> Option<T>,
) -> Vec<(T, u32)> {
    nets.sort_unstable_by_key(|n| n.0);
    let mut out: Vec<(T, u32)> = Vec::new();
    let push = |start: T, combo: u32, out: &mut Vec<(T, u32)>| {
        if out.last().is_none_or(|l| l.1 != combo) {
            out.push((start, combo));
        }
    };
    // The first address not yet covered.
    let mut next = Some(zero);
    for (start, end, combo) in nets {
        let Some(n) = next else { break };
        if start < n {
            continue; // overlaps what is covered (aliases): the first wins
        }
        if start > n {
            push(n, unknown, &mut out);
        }
        push(start, combo, &mut out);
        next = succ(end);
    }
    if let Some(n) = next {
        push(n, unknown, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_the_largest_aligned_block_inside_the_range() {
        // Range 10.0.0.0 - 10.0.255.255: a /16.
        let lo = u32::from_be_bytes([10, 0, 0, 0]) as u128;
        let hi = u32::from_be_bytes([10, 0, 255, 255]) as u128;
        assert_eq!(
            scope_in(u32::from_be_bytes([10, 0, 7, 1]) as u128, lo, hi, 32),
            16
        );
        // Range 10.0.0.0 - 10.0.2.255: 10.0.1.x sits in 10.0.0.0/23, 10.0.2.x in a /24.
        let hi = u32::from_be_bytes([10, 0, 2, 255]) as u128;
        assert_eq!(
            scope_in(u32::from_be_bytes([10, 0, 1, 9]) as u128, lo, hi, 32),
            23
        );
        assert_eq!(
            scope_in(u32::from_be_bytes([10, 0, 2, 9]) as u128, lo, hi, 32),
            24
        );
    }

    #[test]
    fn scope_of_a_range_spanning_the_whole_space_is_zero() {
        assert_eq!(scope_in(12345, 0, u32::MAX as u128, 32), 0);
        assert_eq!(scope_in(12345, 0, u128::MAX, 128), 0);
        // The upper half of the IPv6 space, and one address short of it.
        let half = 1u128 << 127;
        assert_eq!(scope_in(half + 9, half, u128::MAX, 128), 1);
        assert_eq!(scope_in(half + 9, half + 1, u128::MAX, 128), 125);
        assert_eq!(scope_in(half, half, u128::MAX - 1, 128), 2);
    }

    #[test]
    fn lookups_with_the_16_bit_index_match_a_plain_search() {
        let ranges: Vec<(u32, u32)> = (0..5000u32)
            .map(|i| (i.wrapping_mul(858_993), i % 7))
            .collect();
        let mut ranges = ranges;
        ranges.sort_unstable();
        ranges.dedup_by_key(|r| r.0);
        ranges[0].0 = 0;
        let v4_by16 = (0..=0x1_0000u64)
            .map(|h| {
                let at = (h << 16).min(u32::MAX as u64) as u32;
                ranges.partition_point(|&(s, _)| s <= at).saturating_sub(1) as u32
            })
            .collect();
        let idx = GeoIndex {
            v4: ranges.clone(),
            v4_by16,
            ..GeoIndex::default()
        };
        let mut x = 12345u32;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let want = ranges[ranges.partition_point(|&(s, _)| s <= x) - 1].1;
            let got = idx
                .lookup(IpAddr::from(x.to_be_bytes()))
                .expect("found")
                .combo;
            assert_eq!(got, want, "{x}");
        }
    }

    #[test]
    fn merge_fills_gaps_and_joins_equal_neighbours() {
        let nets = vec![(10u32, 19, 1), (20, 29, 1), (40, 49, 2)];
        let m = merge(nets, 0, 0, |x| x.checked_add(1));
        assert_eq!(m, vec![(0, 0), (10, 1), (30, 0), (40, 2), (50, 0)]);
        // A range reaching the top of the space leaves no trailing gap.
        let m = merge(vec![(0u32, u32::MAX, 3)], 0, 0, |x| x.checked_add(1));
        assert_eq!(m, vec![(0, 3)]);
    }
}

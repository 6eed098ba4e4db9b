//! Geo decisions compiled at load time.
//!
//! Walking a full City database per query (a trie walk through a 57 MB
//! mapping plus decoding a record with names in eight languages) costs more
//! than the rest of an answer. Instead, at load the whole database is walked
//! once: every network's location is run through the location-dependent
//! steps (`geo`, `nearest`, `latency` tables) of every service that uses
//! only City data, and, per service, consecutive address ranges that lead
//! to the same decision are merged. A query is then a binary search in a
//! small sorted table (most IPv4 lookups one read of a per-/16 table); the
//! ECS scope is the largest prefix around the client that stays inside its
//! range — exact, and usually wider than the database network, so
//! resolvers cache more. Each service has its own ranges, so one service's
//! boundaries never narrow another's scope.

use std::net::IpAddr;

use maxminddb::WithinOptions;
use rustc_hash::FxHashMap;

use super::{GeoDb, Location};

/// One service's compiled lookup: address → decision, with its range.
#[derive(Debug, Default)]
pub struct GeoIndex {
    /// Range starts (ascending) and the decision for [start, next start).
    v4: Vec<(u32, u32)>,
    /// For each /16: the index of the last range starting at or before it,
    /// so a lookup only searches the ranges inside one /16.
    v4_by16: Vec<u32>,
    /// For each /16 that lies inside one range: the answer itself
    /// (`UNIFORM | scope << 10 | decision`, 128 KB: small enough to stay
    /// cached), so most lookups touch one cache line; `MIXED` for the others
    /// (and for decisions numbered 1 024 and up).
    v4_flat16: Vec<u16>,
    v6: Vec<(u128, u32)>,
}

/// What a lookup found: the decision and the ECS scope it holds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub decision: u32,
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

const UNIFORM: u16 = 1 << 15;
const MIXED: u16 = 0;
const COMBO_BITS: u32 = 10;

impl GeoIndex {
    /// Finds the range holding `ip`. Special addresses (private, loopback…)
    /// are the caller's business, as in [`GeoDb::locate`].
    pub fn lookup(&self, ip: IpAddr) -> Option<Hit> {
        match ip {
            IpAddr::V4(v4) => {
                let a = u32::from(v4);
                let top = (a >> 16) as usize;
                if let Some(&f) = self.v4_flat16.get(top) {
                    if f & UNIFORM != 0 {
                        return Some(Hit {
                            decision: u32::from(f) & ((1 << COMBO_BITS) - 1),
                            scope: ((f >> COMBO_BITS) & 0x1f) as u8,
                        });
                    }
                }
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
                    decision: self.v4[i].1,
                    scope: scope_in(a as u128, lo, hi, 32),
                })
            }
            IpAddr::V6(v6) => {
                // The IPv4 client, with the scope counted in IPv6 bits.
                if let Some(v4) = v6.to_ipv4_mapped() {
                    let hit = self.lookup(IpAddr::V4(v4))?;
                    return Some(Hit {
                        scope: hit.scope + 96,
                        ..hit
                    });
                }
                let a = u128::from(v6);
                let i = self.v6.partition_point(|&(s, _)| s <= a).checked_sub(1)?;
                let lo = self.v6[i].0;
                let hi = self.v6.get(i + 1).map_or(u128::MAX, |n| n.0 - 1);
                Some(Hit {
                    decision: self.v6[i].1,
                    scope: scope_in(a, lo, hi, 128),
                })
            }
        }
    }

    /// The merged range holding `ip` (first and last address), for
    /// `explain`: every address in it gets the same location decisions.
    pub fn range(&self, ip: IpAddr) -> Option<(IpAddr, IpAddr)> {
        match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let a = u128::from(v6);
                let i = self.v6.partition_point(|&(s, _)| s <= a).checked_sub(1)?;
                let hi = self.v6.get(i + 1).map_or(u128::MAX, |n| n.0 - 1);
                Some((IpAddr::V6(self.v6[i].0.into()), IpAddr::V6(hi.into())))
            }
            _ => {
                let a = match ip {
                    IpAddr::V4(v4) => u32::from(v4),
                    IpAddr::V6(v6) => u32::from(v6.to_ipv4_mapped()?),
                };
                let i = self.v4.partition_point(|&(s, _)| s <= a).checked_sub(1)?;
                let hi = self.v4.get(i + 1).map_or(u32::MAX, |n| n.0 - 1);
                Some((IpAddr::V4(self.v4[i].0.into()), IpAddr::V4(hi.into())))
            }
        }
    }

    /// How many IPv4 /16s lie inside one range (answered from one table).
    pub fn uniform_16s(&self) -> usize {
        self.v4_flat16.iter().filter(|&&f| f & UNIFORM != 0).count()
    }

    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// The compiled lookups of all services, from one walk of the database.
#[derive(Debug, Default)]
pub struct GeoIndexes {
    /// Per compiled service slot.
    pub services: Vec<GeoIndex>,
    /// Networks read from the database, their distinct records and the
    /// distinct locations among those (for the log line).
    pub networks: usize,
    pub records: usize,
    pub locations: usize,
}

/// Builds one index per service. `decide` maps a location to one decision
/// index per compiled service (`slots` of them; the same for equal
/// locations); it is called once per distinct database record, not per
/// network.
pub fn build(
    geo: &GeoDb,
    slots: usize,
    mut decide: impl FnMut(&Location) -> Vec<u32>,
) -> Result<GeoIndexes, String> {
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
    // Decisions per database record, and per distinct location: many
    // records (cities, postal codes) share what a policy looks at.
    let mut by_offset: FxHashMap<usize, u32> = FxHashMap::default();
    let mut by_location: FxHashMap<LocationKey, u32> = FxHashMap::default();
    let mut last: Option<(usize, u32)> = None;
    // Networks come in address order and neighbours mostly share a record
    // or a decision: contiguous networks with the same decisions are kept
    // as one range, so the tables stay a tenth of the network count.
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
        let combo = match last {
            Some((o, c)) if o == offset => c,
            _ => {
                let c = match by_offset.get(&offset) {
                    Some(&c) => c,
                    None => {
                        let mut loc = Location::default();
                        if let Ok(Some(rec)) = r.decode::<super::CityRec<'_>>() {
                            super::fill(&mut loc, rec);
                        }
                        let c = *by_location
                            .entry(LocationKey::of(&loc))
                            .or_insert_with(|| intern(decide(&loc)));
                        by_offset.insert(offset, c);
                        c
                    }
                };
                last = Some((offset, c));
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
                extend(&mut v4, start, start | host, combo, |x| x.checked_add(1));
            }
            ipnetwork::IpNetwork::V6(n) => {
                let start = u128::from(n.network());
                let host = if n.prefix() >= 128 {
                    0
                } else {
                    u128::MAX >> n.prefix()
                };
                extend(&mut v6, start, start | host, combo, |x| x.checked_add(1));
            }
        }
    }
    let (records, locations) = (by_offset.len(), by_location.len());
    drop(by_offset);
    drop(by_location);
    drop(combo_of);
    v4.sort_unstable_by_key(|n| n.0);
    v6.sort_unstable_by_key(|n| n.0);
    let services = (0..slots)
        .map(|s| {
            let of = |c: u32| combos[c as usize].get(s).copied().unwrap_or(0);
            GeoIndex::from_ranges(
                merge(&v4, of, of(unknown), 0, |x| x.checked_add(1)),
                merge(&v6, of, of(unknown), 0, |x| x.checked_add(1)),
            )
        })
        .collect();
    Ok(GeoIndexes {
        services,
        networks,
        records,
        locations,
    })
}

impl GeoIndex {
    /// The index over merged ranges (starts ascending, the first at 0).
    fn from_ranges(v4: Vec<(u32, u32)>, v6: Vec<(u128, u32)>) -> GeoIndex {
        let v4_by16: Vec<u32> = (0..=0x1_0000u64)
            .map(|h| {
                let at = (h << 16).min(u32::MAX as u64) as u32;
                v4.partition_point(|&(s, _)| s <= at).saturating_sub(1) as u32
            })
            .collect();
        let v4_flat16 = (0..0x1_0000u32)
            .map(|h| {
                let (first, last) = (h << 16, h << 16 | 0xffff);
                let i = v4_by16[h as usize] as usize;
                let Some(&(lo, decision)) = v4.get(i) else {
                    return MIXED;
                };
                let hi = v4.get(i + 1).map_or(u32::MAX, |n| n.0 - 1);
                if lo <= first && last <= hi && decision < 1 << COMBO_BITS {
                    // Every address of the /16 has the same scope (≤ 16).
                    let scope = scope_in(first as u128, lo as u128, hi as u128, 32) as u16;
                    UNIFORM | scope << COMBO_BITS | decision as u16
                } else {
                    MIXED
                }
            })
            .collect();
        GeoIndex {
            v4,
            v4_by16,
            v4_flat16,
            v6,
        }
    }
}

/// Appends a network, or grows the last range when the network follows it
/// directly with the same decisions.
fn extend<T: Copy + Eq>(
    v: &mut Vec<(T, T, u32)>,
    start: T,
    end: T,
    combo: u32,
    succ: impl Fn(T) -> Option<T>,
) {
    if let Some(l) = v.last_mut() {
        if l.2 == combo && succ(l.1) == Some(start) {
            l.1 = end;
            return;
        }
    }
    v.push((start, end, combo));
}

/// Everything of a [`Location`]: records with equal keys get the same
/// decisions. Built by destructuring, so a new field cannot be left out.
#[derive(PartialEq, Eq, Hash)]
struct LocationKey {
    codes: [u8; 7],
    coords: Option<(u64, u64)>,
    asn: u32,
    prefixes: [u8; 2],
    flags: [bool; 2],
}

impl LocationKey {
    fn of(l: &Location) -> LocationKey {
        let Location {
            continent: c,
            country: k,
            subdivision: s,
            coords,
            asn,
            prefix,
            asn_prefix,
            special,
            found,
        } = *l;
        LocationKey {
            codes: [c[0], c[1], k[0], k[1], s[0], s[1], s[2]],
            coords: coords.map(|(a, b)| (a.to_bits(), b.to_bits())),
            asn,
            prefixes: [prefix, asn_prefix],
            flags: [special, found],
        }
    }
}

/// Gap-filled, merged range starts, from `zero` on, of networks sorted by
/// start, each mapped to its decision by `of`.
fn merge<T: Copy + Ord>(
    nets: &[(T, T, u32)],
    of: impl Fn(u32) -> u32,
    unknown: u32,
    zero: T,
    succ: impl Fn(T) -> Option<T>,
) -> Vec<(T, u32)> {
    let mut out: Vec<(T, u32)> = Vec::new();
    let push = |start: T, decision: u32, out: &mut Vec<(T, u32)>| {
        if out.last().is_none_or(|l| l.1 != decision) {
            out.push((start, decision));
        }
    };
    // The first address not yet covered.
    let mut next = Some(zero);
    for &(start, end, combo) in nets {
        let Some(n) = next else { break };
        if start < n {
            continue; // overlaps what is covered (aliases): the first wins
        }
        if start > n {
            push(n, unknown, &mut out);
        }
        push(start, of(combo), &mut out);
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
    fn only_adjacent_networks_with_the_same_decisions_join_one_range() {
        let mut v: Vec<(u32, u32, u32)> = Vec::new();
        let succ = |x: u32| x.checked_add(1);
        extend(&mut v, 0, 9, 1, succ);
        extend(&mut v, 10, 19, 1, succ); // adjacent, same: joins
        extend(&mut v, 20, 29, 2, succ); // adjacent, other decisions
        extend(&mut v, 31, 39, 2, succ); // same decisions after a gap
        extend(&mut v, 40, u32::MAX, 2, succ);
        assert_eq!(v, [(0, 19, 1), (20, 29, 2), (31, u32::MAX, 2)]);
        // Nothing follows the last address.
        extend(&mut v, 0, 0, 2, succ);
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn locations_differing_in_any_field_get_their_own_decisions() {
        let base = Location {
            continent: *b"EU",
            country: *b"DE",
            subdivision: *b"BE\0",
            coords: Some((52.5, 13.4)),
            asn: 3320,
            prefix: 24,
            asn_prefix: 16,
            special: false,
            found: true,
        };
        let variants = [
            Location {
                continent: *b"AS",
                ..base
            },
            Location {
                country: *b"AT",
                ..base
            },
            Location {
                subdivision: *b"BY\0",
                ..base
            },
            Location {
                coords: Some((52.5, 13.5)),
                ..base
            },
            Location {
                coords: None,
                ..base
            },
            Location { asn: 1, ..base },
            Location { prefix: 23, ..base },
            Location {
                asn_prefix: 15,
                ..base
            },
            Location {
                special: true,
                ..base
            },
            Location {
                found: false,
                ..base
            },
        ];
        let key = LocationKey::of(&base);
        assert!(key == LocationKey::of(&Location { ..base }));
        for v in &variants {
            assert!(key != LocationKey::of(v), "{v:?}");
        }
    }

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
        // Some /16s hold many ranges (searched), most lie inside one range
        // (answered from the per-/16 table): both must agree with a plain
        // search over all ranges, combination and scope.
        ranges.extend((0..300u32).map(|i| (0x0a00_0000 + i * 97, i % 5)));
        ranges.sort_unstable();
        ranges.dedup_by_key(|r| r.0);
        let idx = GeoIndex::from_ranges(ranges.clone(), Vec::new());
        let uniform = idx.v4_flat16.iter().filter(|&&f| f & UNIFORM != 0).count();
        assert!(uniform > 50_000 && uniform < 65_536, "{uniform}");
        let mut x = 12345u32;
        for k in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let a = if k % 4 == 0 {
                0x0a00_0000 | (x & 0xffff)
            } else {
                x
            };
            let i = ranges.partition_point(|&(s, _)| s <= a) - 1;
            let hi = ranges.get(i + 1).map_or(u32::MAX, |n| n.0 - 1);
            let want = Hit {
                decision: ranges[i].1,
                scope: scope_in(a as u128, ranges[i].0 as u128, hi as u128, 32),
            };
            let got = idx.lookup(IpAddr::from(a.to_be_bytes())).expect("found");
            assert_eq!(got, want, "{a:#x}");
            if k % 16 == 0 {
                let range = (
                    IpAddr::from(ranges[i].0.to_be_bytes()),
                    IpAddr::from(hi.to_be_bytes()),
                );
                assert_eq!(idx.range(IpAddr::from(a.to_be_bytes())), Some(range));
            }
        }
    }

    #[test]
    fn merge_fills_gaps_and_joins_equal_neighbours() {
        let id = |c: u32| c;
        let nets = vec![(10u32, 19, 1), (20, 29, 1), (40, 49, 2)];
        let m = merge(&nets, id, 0, 0, |x| x.checked_add(1));
        assert_eq!(m, vec![(0, 0), (10, 1), (30, 0), (40, 2), (50, 0)]);
        // A range reaching the top of the space leaves no trailing gap.
        let m = merge(&[(0u32, u32::MAX, 3)], id, 0, 0, |x| x.checked_add(1));
        assert_eq!(m, vec![(0, 3)]);
        // Per service: neighbours whose combinations differ only in another
        // service's decision are one range for this one.
        let combos = [[0u32, 0], [1, 0], [1, 1], [2, 1]];
        let nets = vec![(0u32, 9, 0), (10, 19, 1), (20, 29, 2), (30, u32::MAX, 3)];
        let first = merge(&nets, |c| combos[c as usize][0], 0, 0, |x| x.checked_add(1));
        assert_eq!(first, vec![(0, 0), (10, 1), (30, 2)]);
        let second = merge(&nets, |c| combos[c as usize][1], 0, 0, |x| x.checked_add(1));
        assert_eq!(second, vec![(0, 0), (20, 1)]);
    }

    #[test]
    fn an_ipv4_mapped_client_gets_its_ipv4_decision_with_the_scope_in_ipv6_bits() {
        let at = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().expect("address"));
        let idx = GeoIndex::from_ranges(
            vec![(0, 0), (at("192.0.2.0"), 1), (at("192.0.3.0"), 0)],
            vec![(0, 2)],
        );
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("address");
        assert_eq!(
            idx.lookup(mapped),
            Some(Hit {
                decision: 1,
                scope: 120
            })
        );
        let plain: IpAddr = "192.0.2.7".parse().expect("address");
        assert_eq!(
            idx.lookup(plain),
            Some(Hit {
                decision: 1,
                scope: 24
            })
        );
    }
}

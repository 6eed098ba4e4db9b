//! Hashing for `source_hash` and `consistent`: a fixed, specified function
//! (FNV-1a 64 over the bytes, then the SplitMix64 finalizer), so that every
//! tier node — whatever its build — maps a key to the same backend.

/// FNV-1a 64 of `bytes`, finalized with SplitMix64.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// SplitMix64's finalizer: a bijection that spreads every input bit.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Weighted rendezvous (highest random weight) score of a key for a
/// backend: `weight / -ln(u)` with `u` uniform in (0, 1) from the pair's
/// hash (Schindelhauer & Schomaker's logarithmic method). The backend with
/// the highest score wins; each backend's share is its weight's share, and
/// removing one backend moves only the keys it had.
pub fn rendezvous(key: u64, id: u64, weight: u64) -> f64 {
    let h = mix(key ^ mix(id));
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight as f64 / -u.ln()
}

/// Points each backend gets on the ring at the highest weight; a backend
/// of weight w gets `POINTS × w / max weight` (at least one).
pub const POINTS: u64 = 160;

/// A consistent-hash ring: points `(hash of identity and replica, member
/// index)`, sorted by hash. Built when the set changes, never per pick.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// The ring of members given as (identity hash, weight); weight 0 gets
    /// no points. A point's place depends only on its identity and replica
    /// number, so a member that leaves takes only its own arcs with it.
    pub fn build(members: impl Iterator<Item = (u64, u32)> + Clone) -> Self {
        let max = members.clone().map(|(_, w)| w).max().unwrap_or(0);
        let mut points = Vec::new();
        for (i, (id, w)) in members.enumerate() {
            if w == 0 {
                continue;
            }
            let n = (POINTS * u64::from(w) / u64::from(max)).max(1);
            for r in 0..n {
                points.push((mix(id ^ mix(r + 1)), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// Member indices clockwise from `key`'s place, each point once, one
    /// full turn.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|&(h, _)| h < key);
        let (after, before) = self.points.split_at(start);
        before.iter().chain(after).map(|&(_, i)| i as usize)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fixed() {
        // Pinned: a change here remaps every client of every tier node.
        assert_eq!(hash_bytes(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_bytes(b"a"), mix(0xaf63_dc4c_8601_ec8c));
    }

    #[test]
    fn rendezvous_shares_follow_weights() {
        let mut wins = [0u32; 2];
        for k in 0..20_000u64 {
            let a = rendezvous(mix(k), 1, 1);
            let b = rendezvous(mix(k), 2, 3);
            wins[usize::from(b > a)] += 1;
        }
        let share = f64::from(wins[1]) / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }

    #[test]
    fn the_ring_gives_points_by_weight_and_walks_one_turn() {
        let r = Ring::build([(1, 2), (2, 1), (3, 0)].into_iter());
        assert_eq!(r.len(), 160 + 80);
        assert_eq!(r.walk(12345).count(), r.len());
        assert!(r.walk(0).all(|i| i < 2));
        assert!(Ring::build(std::iter::empty()).is_empty());
    }
}

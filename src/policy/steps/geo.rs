//! `geo`: replaces the candidate groups with the list of the most specific
//! entry of a geo table that matches the client: CIDR, ASN, subdivision,
//! country, continent, then default.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use super::{Stage, StepKind};
use crate::geo::Location;
use crate::policy::scratch::{Run, Scratch};
use crate::policy::trace::Note;

/// Geo map, compiled: each entry points at an ordered group list.
#[derive(Debug, Clone, Default)]
pub struct GeoMap {
    pub lists: Vec<Vec<u16>>,
    pub default: Option<usize>,
    pub continent: FxHashMap<[u8; 2], usize>,
    pub country: FxHashMap<[u8; 2], usize>,
    /// Keyed by country + subdivision code ("US" + "CA\0").
    pub subdivision: FxHashMap<[u8; 5], usize>,
    pub asn: FxHashMap<u32, usize>,
    /// (prefix length, masked network → list), longest prefix first.
    pub cidr_v4: Vec<(u8, FxHashMap<u32, usize>)>,
    pub cidr_v6: Vec<(u8, FxHashMap<u128, usize>)>,
}

/// Why a geo list was chosen, and how much of the address decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoMatch {
    Cidr(u8),
    Asn(u32),
    Subdivision,
    Country,
    Continent,
    Default,
}

pub fn mask_v4(ip: u32, prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        ip & (u32::MAX << (32 - prefix as u32))
    }
}

pub fn mask_v6(ip: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        ip & (u128::MAX << (128 - prefix as u32))
    }
}

/// The IPv4 address of an IPv4-mapped IPv6 address.
fn mapped(addr: IpAddr) -> Option<std::net::Ipv4Addr> {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        IpAddr::V4(_) => None,
    }
}

impl GeoMap {
    /// How much of the client address a lookup that ended with `how`
    /// depended on: every stage tried up to the match counts (a CIDR table
    /// is only as coarse as its longest entry; the ASN and City databases
    /// by the network that matched). Conservative: what a decision made per
    /// query can tell (compiled geo knows the exact block instead).
    pub fn scope(&self, addr: IpAddr, how: GeoMatch, loc: &Location) -> u8 {
        if let Some(v4) = mapped(addr) {
            return 96 + self.scope(IpAddr::V4(v4), how, loc).min(32);
        }
        let cidr = match addr {
            IpAddr::V4(_) => self.cidr_v4.first().map_or(0, |(p, _)| *p),
            IpAddr::V6(_) => self.cidr_v6.first().map_or(0, |(p, _)| *p),
        };
        let asn = if self.asn.is_empty() {
            0
        } else {
            loc.asn_prefix
        };
        match how {
            GeoMatch::Cidr(_) => cidr,
            GeoMatch::Asn(_) => cidr.max(asn),
            _ => cidr.max(asn).max(loc.prefix),
        }
    }

    /// The most specific entry for this client: CIDR, ASN, subdivision,
    /// country, continent, then default. An IPv4-mapped IPv6 address is the
    /// IPv4 client (as the databases locate it).
    pub fn lookup(&self, addr: IpAddr, loc: &Location) -> Option<(usize, GeoMatch)> {
        let addr = mapped(addr).map_or(addr, IpAddr::V4);
        match addr {
            IpAddr::V4(v4) => {
                let ip = u32::from(v4);
                for (p, m) in &self.cidr_v4 {
                    if let Some(&i) = m.get(&mask_v4(ip, *p)) {
                        return Some((i, GeoMatch::Cidr(*p)));
                    }
                }
            }
            IpAddr::V6(v6) => {
                let ip = u128::from(v6);
                for (p, m) in &self.cidr_v6 {
                    if let Some(&i) = m.get(&mask_v6(ip, *p)) {
                        return Some((i, GeoMatch::Cidr(*p)));
                    }
                }
            }
        }
        if loc.asn != 0 {
            if let Some(&i) = self.asn.get(&loc.asn) {
                return Some((i, GeoMatch::Asn(loc.asn)));
            }
        }
        if loc.subdivision[0] != 0 {
            let mut k = [0u8; 5];
            k[..2].copy_from_slice(&loc.country);
            k[2..].copy_from_slice(&loc.subdivision);
            if let Some(&i) = self.subdivision.get(&k) {
                return Some((i, GeoMatch::Subdivision));
            }
        }
        if loc.country[0] != 0 {
            if let Some(&i) = self.country.get(&loc.country) {
                return Some((i, GeoMatch::Country));
            }
        }
        if loc.continent[0] != 0 {
            if let Some(&i) = self.continent.get(&loc.continent) {
                return Some((i, GeoMatch::Continent));
            }
        }
        self.default.map(|i| (i, GeoMatch::Default))
    }
}

fn match_text(m: GeoMatch, loc: &Location) -> String {
    match m {
        GeoMatch::Cidr(p) => format!("client CIDR /{p}"),
        GeoMatch::Asn(a) => format!("ASN {a}"),
        GeoMatch::Subdivision => format!("subdivision {}-{}", loc.country(), loc.subdivision()),
        GeoMatch::Country => format!("country {}", loc.country()),
        GeoMatch::Continent => format!("continent {}", loc.continent()),
        GeoMatch::Default => "default (no more specific entry)".to_string(),
    }
}

impl StepKind for GeoMap {
    const NAME: &'static str = "geo";
    const STAGE: Stage = Stage::Location;

    fn order(&self, r: &Run<'_>, sc: &mut Scratch, note: Option<&mut Note>) -> u8 {
        let (addr, loc) = (r.client.addr, r.loc());
        match self.lookup(addr, loc) {
            Some((list, how)) => {
                sc.groups.clear();
                sc.groups.extend_from_slice(&self.lists[list]);
                if let Some(n) = note {
                    n.detail = format!("matched {}", match_text(how, loc));
                }
                self.scope(addr, how, loc)
            }
            None => {
                if let Some(n) = note {
                    n.detail = "no entry matches and there is no default; order unchanged".into();
                }
                self.scope(addr, GeoMatch::Default, loc)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_mapped_client_matches_ipv4_cidr_entries_with_the_scope_in_ipv6_bits() {
        let mut m = GeoMap {
            lists: vec![vec![0], vec![1]],
            default: Some(0),
            ..GeoMap::default()
        };
        let net = u32::from_be_bytes([192, 0, 2, 0]);
        m.cidr_v4 = vec![(24, [(net, 1)].into_iter().collect())];
        let loc = Location::default();
        let plain: IpAddr = "192.0.2.7".parse().expect("address");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("address");
        assert_eq!(m.lookup(plain, &loc), Some((1, GeoMatch::Cidr(24))));
        assert_eq!(m.lookup(mapped, &loc), Some((1, GeoMatch::Cidr(24))));
        assert_eq!(m.scope(plain, GeoMatch::Cidr(24), &loc), 24);
        assert_eq!(m.scope(mapped, GeoMatch::Cidr(24), &loc), 120);
    }
}

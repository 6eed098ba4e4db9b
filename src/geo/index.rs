//! Geo decisions compiled at load time.
//!
//! Walking a full City database per query (a trie walk through a 57 MB
//! mapping plus decoding a record with names in eight languages) costs more
//! than the rest of an answer. Instead, at load the address space is walked
//! once, cut wherever one of three partitions has a boundary: the City
//! database's networks, the ASN database's networks (when a compiled
//! service has `asn` entries) and the blocks of the `geo` tables' CIDR
//! entries. Both databases list their networks in address order, so the
//! walk is a merge of three sorted lists; inside each piece every address
//! has the same City record, AS number and most specific CIDR entry. Each
//! distinct such input (not each network: most pieces share a location, and
//! AS numbers no service names count as none) is run through the
//! location-dependent steps (`geo`, `nearest`, `latency` tables) of every
//! compiled service — every service whose location steps depend on nothing
//! else, such as live probe RTTs — and, per service, consecutive pieces that
//! lead to the same decision are merged. A query is then a binary search in
//! a small sorted table (most IPv4 lookups one read of a per-/16 table) and
//! never touches the databases; the ECS scope is the largest prefix around
//! the client that stays inside its range — exact, and usually wider than
//! the database network, so resolvers cache more. Each service has its own
//! ranges, so one service's boundaries (a CIDR entry, an AS network, a
//! city) never narrow another's scope, nor those of its own networks that
//! they do not cut.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use maxminddb::WithinOptions;
use rustc_hash::{FxHashMap, FxHashSet};

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
        let host = host_mask(p as u8, bits);
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

/// What compiled decisions depend on besides the City record: the AS
/// numbers and CIDR blocks that compiled services have entries for.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// AS numbers some service has an entry for. The ASN database is
    /// walked only when there are any; other numbers decide like none.
    pub asns: FxHashSet<u32>,
    /// CIDR keys as (network, prefix length), host bits clear.
    pub v4: Vec<(u32, u8)>,
    pub v6: Vec<(u128, u8)>,
}

/// The compiled lookups of all services, from one walk of the databases.
#[derive(Debug, Default)]
pub struct GeoIndexes {
    /// Per compiled service slot.
    pub services: Vec<GeoIndex>,
    /// Networks read from the City and the ASN database, the City's
    /// distinct records and the distinct locations among those, and the
    /// distinct (location, AS number, CIDR key) inputs decided (for the
    /// log line).
    pub networks: usize,
    pub asn_networks: usize,
    pub records: usize,
    pub locations: usize,
    pub inputs: usize,
}

/// No City location / no CIDR key.
const NONE: u32 = u32::MAX;

/// Builds one index per service. The address space is cut into pieces
/// where any of three partitions has a boundary: the City database's
/// networks, the ASN database's (only when `keys` has AS numbers) and the
/// CIDR keys' blocks; inside a piece, every address has the same location,
/// AS number and most specific CIDR key. `decide` maps such a location (the
/// City record plus the AS number) and an address of the piece to one
/// decision index per compiled service (`slots` of them); it is called once
/// per distinct (location, AS number, CIDR key), not per network or piece.
pub fn build(
    geo: &GeoDb,
    slots: usize,
    keys: &Keys,
    mut decide: impl FnMut(&Location, IpAddr) -> Vec<u32>,
) -> Result<GeoIndexes, String> {
    let mut walk = Pieces::new(geo, keys)?;
    let mut combos = Combos::default();
    let mut last: Option<(Input, u32)> = None;
    // Pieces come in address order and neighbours mostly share their
    // decisions: a piece with the same decisions as the one before it only
    // extends that range, so the tables stay a tenth of the network count.
    let mut v4: Vec<(u32, u32)> = Vec::new();
    let mut v6: Vec<(u128, u32)> = Vec::new();
    while let Some(p) = walk.next_piece()? {
        let combo = match last {
            Some((i, c)) if i == p.input => c,
            _ => {
                let c = match combos.of(p.input) {
                    Some(c) => c,
                    None => {
                        let l = walk.city.src.records.of(p.input);
                        combos.add(p.input, decide(&l, address(p.v6, p.start)))
                    }
                };
                last = Some((p.input, c));
                c
            }
        };
        if p.v6 {
            extend(&mut v6, p.start, combo);
        } else {
            extend(&mut v4, p.start as u32, combo);
        }
    }
    let inputs = combos.inputs;
    let (records, locations) = (
        walk.city.src.by_offset.len(),
        walk.city.src.records.list.len(),
    );
    let (networks, asn_networks) = (walk.city.src.networks, walk.asn.src.networks);
    // The walk's maps are not needed for the indexes.
    drop(walk);
    let combos = combos.list;
    let services = (0..slots)
        .map(|s| {
            let of = |c: u32| combos[c as usize].get(s).copied().unwrap_or(0);
            GeoIndex::from_ranges(project(&v4, of), project(&v6, of))
        })
        .collect();
    Ok(GeoIndexes {
        services,
        networks,
        asn_networks,
        records,
        locations,
        inputs,
    })
}

/// One piece of the walk: an interval of one family in which every address
/// has the same City record, AS number and innermost CIDR key.
#[derive(Debug, Clone, Copy)]
struct Piece {
    v6: bool,
    start: u128,
    input: Input,
}

/// The walk itself: the three partitions merged, piece by piece, IPv4
/// (as numbers below 2^32) then IPv6, covering each family's whole space.
struct Pieces<'a> {
    city: Cursor<DbNets<'a, Locations>>,
    asn: Cursor<DbNets<'a, AsNumbers<'a>>>,
    cidr: Cursor<std::vec::IntoIter<Net>>,
    /// Where the next piece starts; `None` once the walk is over.
    at: Option<(bool, u128)>,
}

impl<'a> Pieces<'a> {
    fn new(geo: &'a GeoDb, keys: &'a Keys) -> Result<Pieces<'a>, String> {
        let db = geo.city.as_ref().ok_or("no City database")?;
        // Numbers no service has an entry for decide like none: the ASN
        // database is walked only when there are entries.
        let asn_db = geo.asn.as_deref().filter(|_| !keys.asns.is_empty());
        Ok(Pieces {
            city: Cursor::new(DbNets::new(Some(db), Locations::default())?)?,
            asn: Cursor::new(DbNets::new(asn_db, AsNumbers(&keys.asns))?)?,
            cidr: Cursor::new(blocks(keys).0.into_iter())?,
            at: Some((false, 0)),
        })
    }

    /// The next piece (it ends where the one after it begins).
    fn next_piece(&mut self) -> Result<Option<Piece>, String> {
        let Some((v6, pos)) = self.at else {
            return Ok(None);
        };
        let max = if v6 { u128::MAX } else { u32::MAX as u128 };
        let (loc, to_a) = self.city.at(v6, pos, max)?;
        let (asn_no, to_b) = self.asn.at(v6, pos, max)?;
        let (key, to_c) = self.cidr.at(v6, pos, max)?;
        let end = to_a.min(to_b).min(to_c);
        let input = Input {
            location: loc.unwrap_or(NONE),
            asn: asn_no.unwrap_or(0),
            cidr: key.unwrap_or(NONE),
        };
        self.at = match (end >= max, v6) {
            (false, _) => Some((v6, end + 1)),
            (true, false) => Some((true, 0)),
            (true, true) => None,
        };
        Ok(Some(Piece {
            v6,
            start: pos,
            input,
        }))
    }
}

/// The whole address space as the compiled walk cuts it, for a simulation
/// of every client: each piece (in address order, covering the family's
/// space) with the number of its distinct input.
#[derive(Debug, Default)]
pub struct Walk {
    /// IPv4 pieces: first address, input number (a piece ends where the
    /// next begins).
    pub v4: Vec<(u32, u32)>,
    pub v6: Vec<(u128, u32)>,
    /// The distinct inputs, numbered by first appearance.
    pub inputs: Vec<WalkInput>,
    /// Networks read from the City and the ASN database.
    pub networks: usize,
    pub asn_networks: usize,
}

/// What every address of some pieces has in common: what decisions are
/// made from.
#[derive(Debug, Clone, Copy)]
pub struct WalkInput {
    /// The City record's location (default when none) with the AS number
    /// (0 when none any service names).
    pub location: Location,
    /// The address the input was first met at: the one compiled geo decides
    /// from for every piece with this input.
    pub addr: IpAddr,
    /// Whether a City database network holds it.
    pub city: bool,
    /// The innermost CIDR key over it (first address, prefix length).
    pub cidr: Option<(IpAddr, u8)>,
}

impl WalkInput {
    /// Whether anything the walk reads holds these pieces: a City network,
    /// a CIDR key or an AS number some service names (else: address space
    /// no database lists).
    pub fn listed(&self) -> bool {
        self.city || self.cidr.is_some() || self.location.asn != 0
    }
}

/// Walks the address space as [`build`] does, without deciding: every
/// piece with its distinct input.
pub fn walk(geo: &GeoDb, keys: &Keys) -> Result<Walk, String> {
    let key_blocks = blocks(keys).1;
    let mut pieces = Pieces::new(geo, keys)?;
    let mut out = Walk::default();
    let mut index: FxHashMap<Input, u32> = FxHashMap::default();
    let mut last: Option<(Input, u32)> = None;
    while let Some(p) = pieces.next_piece()? {
        let n = match last {
            Some((i, n)) if i == p.input => n,
            _ => {
                let next = out.inputs.len() as u32;
                let n = *index.entry(p.input).or_insert(next);
                if n == next {
                    let cidr = key_blocks.get(p.input.cidr as usize).map(|&(v6, s, e)| {
                        let bits = if v6 { 128 } else { 32 };
                        let host = (e - s).count_ones();
                        (address(v6, s), (bits - host) as u8)
                    });
                    out.inputs.push(WalkInput {
                        location: pieces.city.src.records.of(p.input),
                        addr: address(p.v6, p.start),
                        city: p.input.location != NONE,
                        cidr,
                    });
                }
                last = Some((p.input, n));
                n
            }
        };
        if p.v6 {
            out.v6.push((p.start, n));
        } else {
            out.v4.push((p.start as u32, n));
        }
    }
    out.networks = pieces.city.src.networks;
    out.asn_networks = pieces.asn.src.networks;
    Ok(out)
}

/// What a piece's decisions are made from: its City location's number,
/// the AS number (0: none, or none any service has an entry for) and the
/// number of the most specific CIDR key over it (`NONE` for each absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Input {
    location: u32,
    asn: u32,
    cidr: u32,
}

/// The distinct decision combinations (one decision per service) and which
/// input gets which.
#[derive(Default)]
struct Combos {
    list: Vec<Box<[u32]>>,
    index: FxHashMap<Box<[u32]>, u32>,
    /// Per location number + 1 (0: no location), for inputs with neither
    /// an AS number nor a CIDR key, the most of them: its combination, or
    /// `NONE` if not decided yet.
    plain: Vec<u32>,
    keyed: FxHashMap<Input, u32>,
    /// Inputs decided.
    inputs: usize,
}

impl Combos {
    fn of(&self, i: Input) -> Option<u32> {
        if i.asn == 0 && i.cidr == NONE {
            let at = i.location.wrapping_add(1) as usize;
            self.plain.get(at).copied().filter(|&c| c != NONE)
        } else {
            self.keyed.get(&i).copied()
        }
    }

    fn add(&mut self, i: Input, decisions: Vec<u32>) -> u32 {
        let key = decisions.into_boxed_slice();
        let c = match self.index.get(&key) {
            Some(&c) => c,
            None => {
                let c = self.list.len() as u32;
                self.list.push(key.clone());
                self.index.insert(key, c);
                c
            }
        };
        if i.asn == 0 && i.cidr == NONE {
            let at = i.location.wrapping_add(1) as usize;
            if self.plain.len() <= at {
                self.plain.resize(at + 1, NONE);
            }
            self.plain[at] = c;
        } else {
            self.keyed.insert(i, c);
        }
        self.inputs += 1;
        c
    }
}

/// One network of a walk: an address interval of one family (IPv4
/// addresses as numbers below 2^32) and what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    v6: bool,
    start: u128,
    end: u128,
    value: u32,
}

impl Net {
    fn of(net: ipnetwork::IpNetwork, value: u32) -> Net {
        let (v6, start, bits) = match net {
            ipnetwork::IpNetwork::V4(n) => (false, u32::from(n.network()) as u128, 32),
            ipnetwork::IpNetwork::V6(n) => (true, u128::from(n.network()), 128),
        };
        Net {
            v6,
            start,
            end: start | host_mask(net.prefix(), bits),
            value,
        }
    }
}

/// The host bits of a /`prefix` in a `bits`-bit address (all 128 of them
/// for ::/0).
fn host_mask(prefix: u8, bits: u32) -> u128 {
    let p = (prefix as u32).min(bits);
    if p == bits {
        0
    } else {
        u128::MAX >> (128 - (bits - p))
    }
}

/// Networks in address order (IPv4 first), one at a time.
trait Source {
    fn next_net(&mut self) -> Result<Option<Net>, String>;
}

/// A walk over a source, one network ahead.
struct Cursor<S> {
    head: Option<Net>,
    src: S,
}

impl<S: Source> Cursor<S> {
    fn new(mut src: S) -> Result<Cursor<S>, String> {
        Ok(Cursor {
            head: src.next_net()?,
            src,
        })
    }

    /// What the networks say about address `pos` of the family (`None`: no
    /// network holds it), and the last address up to which that stays so.
    /// Networks that end before `pos` are passed: a network overlapping one
    /// already walked (an alias) counts from where the other ends.
    fn at(&mut self, v6: bool, pos: u128, max: u128) -> Result<(Option<u32>, u128), String> {
        loop {
            match self.head {
                None => return Ok((None, max)),
                // The walk is on to IPv6: no more IPv4 networks.
                Some(n) if n.v6 && !v6 => return Ok((None, max)),
                // An IPv4 network after IPv6 ones (out of order): skipped.
                Some(n) if n.v6 != v6 => {}
                Some(n) if n.end < pos => {}
                Some(n) if n.start <= pos => return Ok((Some(n.value), n.end)),
                Some(n) => return Ok((None, n.start - 1)),
            }
            self.head = self.src.next_net()?;
        }
    }
}

/// A database's networks, each with a number its record maps to. Records
/// are read once each (neighbouring networks often share one).
struct DbNets<'a, R> {
    iter: Option<maxminddb::Within<'a, super::Map>>,
    by_offset: FxHashMap<u32, u32>,
    last: Option<(usize, u32)>,
    networks: usize,
    records: R,
}

/// What a database walk makes of a record.
trait Records {
    fn number(&mut self, r: &maxminddb::LookupResult<'_, super::Map>) -> u32;
}

impl<'a, R> DbNets<'a, R> {
    /// Walks `db`, or nothing when there is none.
    fn new(db: Option<&'a super::Db>, records: R) -> Result<DbNets<'a, R>, String> {
        let iter = db
            .map(|d| d.reader.networks(WithinOptions::default()))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(DbNets {
            iter,
            by_offset: FxHashMap::default(),
            last: None,
            networks: 0,
            records,
        })
    }
}

impl<R: Records> Source for DbNets<'_, R> {
    fn next_net(&mut self) -> Result<Option<Net>, String> {
        let Some(iter) = self.iter.as_mut() else {
            return Ok(None);
        };
        for item in iter.by_ref() {
            let r = item.map_err(|e| e.to_string())?;
            let Some(offset) = r.offset() else { continue };
            let net = r.network().map_err(|e| e.to_string())?;
            self.networks += 1;
            let n = match self.last {
                Some((o, n)) if o == offset => n,
                _ => {
                    // Offsets fit 32 bits in any real database; keys half
                    // the size keep more of the map in cache.
                    let key = u32::try_from(offset).ok();
                    let n = match key.and_then(|k| self.by_offset.get(&k)) {
                        Some(&n) => n,
                        None => {
                            let n = self.records.number(&r);
                            if let Some(k) = key {
                                self.by_offset.insert(k, n);
                            }
                            n
                        }
                    };
                    self.last = Some((offset, n));
                    n
                }
            };
            return Ok(Some(Net::of(net, n)));
        }
        Ok(None)
    }
}

/// City records, numbered by distinct location: many records (cities,
/// postal codes) share what a policy looks at.
#[derive(Default)]
struct Locations {
    by_location: FxHashMap<LocationKey, u32>,
    list: Vec<Location>,
}

impl Records for Locations {
    fn number(&mut self, r: &maxminddb::LookupResult<'_, super::Map>) -> u32 {
        let mut loc = Location::default();
        if let Ok(Some(rec)) = r.decode::<super::CityRec<'_>>() {
            super::fill(&mut loc, rec);
        }
        let next = self.list.len() as u32;
        let n = *self
            .by_location
            .entry(LocationKey::of(&loc))
            .or_insert(next);
        if n == next {
            self.list.push(loc);
        }
        n
    }
}

impl Locations {
    /// The location an input's decisions are made from: its City record's
    /// (none for `NONE`) with its AS number.
    fn of(&self, i: Input) -> Location {
        let city = self.list.get(i.location as usize).copied();
        Location {
            asn: i.asn,
            ..city.unwrap_or_default()
        }
    }
}

/// ASN records: the AS number if some service has an entry for it, else 0
/// (as `GeoDb::locate` reads it: unusable means none).
struct AsNumbers<'a>(&'a FxHashSet<u32>);

impl Records for AsNumbers<'_> {
    fn number(&mut self, r: &maxminddb::LookupResult<'_, super::Map>) -> u32 {
        match r.decode::<super::AsnRec>() {
            Ok(Some(rec)) => rec
                .autonomous_system_number
                .filter(|a| self.0.contains(a))
                .unwrap_or(0),
            _ => 0,
        }
    }
}

/// Address `pos` of the family.
fn address(v6: bool, pos: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(pos))
    } else {
        IpAddr::V4(Ipv4Addr::from(pos as u32))
    }
}

impl Source for std::vec::IntoIter<Net> {
    fn next_net(&mut self) -> Result<Option<Net>, String> {
        Ok(self.next())
    }
}

/// The CIDR keys as disjoint intervals in address order, each carrying the
/// number of the most specific key that covers it (blocks nest or are
/// disjoint, so that key tells every service's longest match).
fn blocks(keys: &Keys) -> (Vec<Net>, Vec<(bool, u128, u128)>) {
    let mut all: Vec<(bool, u128, u128)> = keys
        .v4
        .iter()
        .map(|&(n, p)| (false, n as u128, n as u128 | host_mask(p, 32)))
        .chain(
            keys.v6
                .iter()
                .map(|&(n, p)| (true, n, n | host_mask(p, 128))),
        )
        .collect();
    // Outer blocks before the blocks they hold.
    all.sort_unstable_by_key(|&(v6, start, end)| (v6, start, std::cmp::Reverse(end)));
    all.dedup();
    let mut out = Vec::new();
    for v6 in [false, true] {
        let family = all.iter().enumerate().filter(|(_, b)| b.0 == v6);
        flatten(family.map(|(i, b)| (b.1, b.2, i as u32)), v6, &mut out);
    }
    (out, all)
}

/// Flattens nested blocks of one family, given outer first, into the
/// intervals where each is the innermost.
fn flatten(nested: impl Iterator<Item = (u128, u128, u32)>, v6: bool, out: &mut Vec<Net>) {
    let mut emit = |start: u128, end: u128, value: u32| {
        if start <= end {
            out.push(Net {
                v6,
                start,
                end,
                value,
            });
        }
    };
    // Open blocks (end, number), innermost last; `pos`: the first address
    // not yet given to an interval.
    let mut open: Vec<(u128, u32)> = Vec::new();
    let mut pos = Some(0u128);
    for (start, end, n) in nested {
        while let Some(&(e, i)) = open.last() {
            if e >= start {
                break;
            }
            if let Some(p) = pos {
                emit(p, e, i);
            }
            // e < start: no overflow.
            pos = pos.map(|p| p.max(e + 1));
            open.pop();
        }
        if let (Some(&(_, i)), Some(p)) = (open.last(), pos) {
            if p < start {
                emit(p, start - 1, i);
            }
        }
        pos = Some(start);
        open.push((end, n));
    }
    while let Some((e, i)) = open.pop() {
        let Some(p) = pos else { break };
        emit(p, e, i);
        pos = e.checked_add(1).map(|next| next.max(p));
    }
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

/// Appends a piece that starts at `start`, unless the range before it has
/// the same decisions (then it just grows).
fn extend<T>(v: &mut Vec<(T, u32)>, start: T, combo: u32) {
    if v.last().is_none_or(|l| l.1 != combo) {
        v.push((start, combo));
    }
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

/// One service's ranges: the pieces (starts ascending, the first at 0)
/// mapped to its decision by `of`, neighbours with the same decision joined.
fn project<T: Copy>(pieces: &[(T, u32)], of: impl Fn(u32) -> u32) -> Vec<(T, u32)> {
    let mut out = Vec::new();
    for &(start, combo) in pieces {
        extend(&mut out, start, of(combo));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_neighbouring_pieces_with_other_decisions_start_a_range() {
        let mut v: Vec<(u32, u32)> = Vec::new();
        extend(&mut v, 0, 1);
        extend(&mut v, 10, 1); // same decisions: the range grows
        extend(&mut v, 20, 2);
        extend(&mut v, 30, 2);
        extend(&mut v, 40, 1);
        assert_eq!(v, [(0, 1), (20, 2), (40, 1)]);
    }

    fn v4(s: &str) -> u128 {
        u32::from(s.parse::<Ipv4Addr>().expect("address")) as u128
    }

    #[test]
    fn nested_cidr_keys_flatten_to_the_innermost_key_of_each_interval() {
        let keys = Keys {
            v4: vec![
                (v4("10.0.0.0") as u32, 8),
                (v4("10.1.0.0") as u32, 16),
                (v4("10.1.0.0") as u32, 24),
                (v4("10.200.0.0") as u32, 17),
                (v4("10.1.0.0") as u32, 16), // twice (two services)
                (v4("192.0.2.0") as u32, 24),
                (v4("255.255.255.255") as u32, 32),
            ],
            v6: vec![(0, 0), (0x2001_0db8u128 << 96, 32)],
            ..Keys::default()
        };
        let got: Vec<(bool, u128, u128, u32)> = blocks(&keys)
            .0
            .iter()
            .map(|n| (n.v6, n.start, n.end, n.value))
            .collect();
        // Numbered by (family, start, outer first), duplicates dropped:
        // 0 10/8, 1 10.1/16, 2 10.1.0/24, 3 10.200/17, 4 192.0.2/24,
        // 5 255.255.255.255/32, 6 ::/0, 7 2001:db8::/32.
        let db8 = 0x2001_0db8u128 << 96;
        assert_eq!(
            got,
            [
                (false, v4("10.0.0.0"), v4("10.0.255.255"), 0),
                (false, v4("10.1.0.0"), v4("10.1.0.255"), 2),
                (false, v4("10.1.1.0"), v4("10.1.255.255"), 1),
                (false, v4("10.2.0.0"), v4("10.199.255.255"), 0),
                (false, v4("10.200.0.0"), v4("10.200.127.255"), 3),
                (false, v4("10.200.128.0"), v4("10.255.255.255"), 0),
                (false, v4("192.0.2.0"), v4("192.0.2.255"), 4),
                (false, u32::MAX as u128, u32::MAX as u128, 5),
                (true, 0, db8 - 1, 6),
                (true, db8, db8 | (u128::MAX >> 32), 7),
                (true, (db8 | (u128::MAX >> 32)) + 1, u128::MAX, 6),
            ]
        );
    }

    /// Networks from a list, as a database walk gives them.
    impl Source for std::slice::Iter<'_, Net> {
        fn next_net(&mut self) -> Result<Option<Net>, String> {
            Ok(self.next().copied())
        }
    }

    #[test]
    fn a_cursor_tells_what_holds_each_address_and_how_far() {
        let net = |v6, start, end, value| Net {
            v6,
            start,
            end,
            value,
        };
        let nets = [
            net(false, 10, 19, 1),
            net(false, 12, 13, 9), // overlaps the one before (an alias)
            net(false, 30, 39, 2),
            net(true, 5, 5, 3),
            net(false, 50, 59, 4), // IPv4 after IPv6: out of order
            net(true, 8, 9, 5),
        ];
        let mut c = Cursor::new(nets.iter()).expect("cursor");
        let max4 = u32::MAX as u128;
        assert_eq!(c.at(false, 0, max4), Ok((None, 9)));
        assert_eq!(c.at(false, 10, max4), Ok((Some(1), 19)));
        assert_eq!(c.at(false, 20, max4), Ok((None, 29)));
        assert_eq!(c.at(false, 30, max4), Ok((Some(2), 39)));
        assert_eq!(c.at(false, 40, max4), Ok((None, max4)));
        assert_eq!(c.at(true, 0, u128::MAX), Ok((None, 4)));
        assert_eq!(c.at(true, 5, u128::MAX), Ok((Some(3), 5)));
        assert_eq!(c.at(true, 6, u128::MAX), Ok((None, 7)));
        assert_eq!(c.at(true, 8, u128::MAX), Ok((Some(5), 9)));
        assert_eq!(c.at(true, 10, u128::MAX), Ok((None, u128::MAX)));
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
    fn a_service_joins_neighbours_whose_combinations_differ_only_for_others() {
        let combos = [[0u32, 0], [1, 0], [1, 1], [2, 1]];
        let pieces = vec![(0u32, 0), (10, 1), (20, 2), (30, 3)];
        let first = project(&pieces, |c| combos[c as usize][0]);
        assert_eq!(first, vec![(0, 0), (10, 1), (30, 2)]);
        let second = project(&pieces, |c| combos[c as usize][1]);
        assert_eq!(second, vec![(0, 0), (20, 1)]);
    }

    #[test]
    fn an_ipv4_mapped_client_gets_its_ipv4_decision_with_the_scope_in_ipv6_bits() {
        let idx = GeoIndex::from_ranges(
            vec![
                (0, 0),
                (v4("192.0.2.0") as u32, 1),
                (v4("192.0.3.0") as u32, 0),
            ],
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

//! The names of one zone, laid out for the answer path.
//!
//! A query that arrives after the worker slept finds its caches cold, so
//! what an answer costs is mostly how many separate cache lines it has to
//! fetch. A general hash map of boxed names to nodes of boxed RRsets of
//! boxed records makes that a chain of about seven dependent loads. Here a
//! lookup is one probe of an array of 8-byte slots (hash tag and node
//! index), the node's fixed part, and one contiguous stretch of the zone's
//! byte arena that holds the node's lower-cased key, its owner name as
//! written, and the pre-encoded records of all its RRsets, back to back.

use std::hash::Hasher;

use rustc_hash::FxHasher;

/// A byte range in the arena.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    off: u32,
    len: u32,
}

impl Span {
    fn of(self, bytes: &[u8]) -> &[u8] {
        &bytes[self.off as usize..self.off as usize + self.len as usize]
    }
}

/// One RRset as compiled: its records (TYPE, CLASS, TTL, RDLENGTH and
/// RDATA each, names uncompressed) back to back in the arena.
#[derive(Debug)]
struct Set {
    rtype: u16,
    wire: Span,
    /// Lower-cased wire names the records point at (CNAME target, NS, MX
    /// exchange, SRV target), for chasing and additional-section processing.
    targets: Box<[Box<[u8]>]>,
}

#[derive(Debug)]
struct NodeData {
    key: Span,
    name: Span,
    sets: u32,
    nsets: u16,
    cut: bool,
    service: Option<u16>,
}

/// An RRset being built: one encoded record per entry.
#[derive(Debug)]
pub struct SetBuild {
    pub rtype: u16,
    pub rrs: Vec<Box<[u8]>>,
    pub targets: Vec<Box<[u8]>>,
}

/// A node being built.
#[derive(Debug)]
pub struct NodeBuild {
    /// Lower-cased wire-format name (the lookup key).
    pub key: Box<[u8]>,
    /// The owner name in wire format, case as written in the zone file.
    pub name: Box<[u8]>,
    /// Sorted by type.
    pub sets: Vec<SetBuild>,
    pub cut: bool,
    pub service: Option<u16>,
}

/// The zone is too large for 32-bit arena offsets.
#[derive(Debug, thiserror::Error)]
#[error("zone data exceeds 4 GiB once encoded")]
pub struct TooLarge;

/// A zone's names: lookup by lower-cased wire-format name.
#[derive(Debug, Default)]
pub struct Names {
    /// Open addressing, linear probing: `tag << 32 | index + 1`, 0 = empty.
    slots: Box<[u64]>,
    /// `64 - log2(slots.len())`: the slot of a hash is its top bits.
    shift: u32,
    nodes: Box<[NodeData]>,
    sets: Box<[Set]>,
    bytes: Box<[u8]>,
}

fn hash(key: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(key);
    h.finish()
}

impl Names {
    pub fn build(nodes: Vec<NodeBuild>) -> Result<Names, TooLarge> {
        let cap = (nodes.len() * 2).max(8).next_power_of_two();
        let shift = 64 - cap.trailing_zeros();
        let mut slots = vec![0u64; cap];
        let mut data = Vec::with_capacity(nodes.len());
        let mut sets = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        let span = |bytes: &mut Vec<u8>, b: &[u8]| -> Result<Span, TooLarge> {
            let off = u32::try_from(bytes.len()).map_err(|_| TooLarge)?;
            let len = u32::try_from(b.len()).map_err(|_| TooLarge)?;
            bytes.extend_from_slice(b);
            u32::try_from(bytes.len()).map_err(|_| TooLarge)?;
            Ok(Span { off, len })
        };
        for (i, n) in nodes.into_iter().enumerate() {
            let key = span(&mut bytes, &n.key)?;
            let name = span(&mut bytes, &n.name)?;
            let first = u32::try_from(sets.len()).map_err(|_| TooLarge)?;
            let nsets = u16::try_from(n.sets.len()).map_err(|_| TooLarge)?;
            for s in n.sets {
                let off = u32::try_from(bytes.len()).map_err(|_| TooLarge)?;
                for rr in &s.rrs {
                    bytes.extend_from_slice(rr);
                }
                let len = u32::try_from(bytes.len() - off as usize).map_err(|_| TooLarge)?;
                sets.push(Set {
                    rtype: s.rtype,
                    wire: Span { off, len },
                    targets: s.targets.into_boxed_slice(),
                });
            }
            let h = hash(&n.key);
            let idx = u32::try_from(i + 1).map_err(|_| TooLarge)?;
            let mut at = (h >> shift) as usize;
            while slots[at] != 0 {
                at = (at + 1) & (cap - 1);
            }
            slots[at] = (h << 32) | u64::from(idx);
            data.push(NodeData {
                key,
                name,
                sets: first,
                nsets,
                cut: n.cut,
                service: n.service,
            });
        }
        Ok(Names {
            slots: slots.into_boxed_slice(),
            shift,
            nodes: data.into_boxed_slice(),
            sets: sets.into_boxed_slice(),
            bytes: bytes.into_boxed_slice(),
        })
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node with this lower-cased wire-format name.
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<NodeRef<'_>> {
        if self.slots.is_empty() {
            return None;
        }
        let h = hash(key);
        let tag = h << 32;
        let mask = self.slots.len() - 1;
        let mut at = (h >> self.shift) as usize;
        loop {
            let s = self.slots[at];
            if s == 0 {
                return None;
            }
            if s & 0xffff_ffff_0000_0000 == tag {
                let d = &self.nodes[(s as u32 - 1) as usize];
                if d.key.of(&self.bytes) == key {
                    return Some(NodeRef { names: self, d });
                }
            }
            at = (at + 1) & mask;
        }
    }
}

/// A node: a name that exists in the zone (with RRsets, or an empty
/// non-terminal).
#[derive(Clone, Copy)]
pub struct NodeRef<'z> {
    names: &'z Names,
    d: &'z NodeData,
}

impl<'z> NodeRef<'z> {
    /// The owner name in wire format, case as written in the zone file.
    pub fn name(&self) -> &'z [u8] {
        self.d.name.of(&self.names.bytes)
    }
    /// The lower-cased wire-format name.
    pub fn key(&self) -> &'z [u8] {
        self.d.key.of(&self.names.bytes)
    }
    /// A delegation point (NS records below the apex).
    pub fn cut(&self) -> bool {
        self.d.cut
    }
    /// A dynamic name: index into the zone's services.
    pub fn service(&self) -> Option<u16> {
        self.d.service
    }
    /// The RRsets, sorted by type.
    pub fn rrsets(&self) -> impl Iterator<Item = SetRef<'z>> + 'z {
        let names = self.names;
        let s = self.d.sets as usize;
        names.sets[s..s + self.d.nsets as usize]
            .iter()
            .map(move |set| SetRef { names, set })
    }
    pub fn first(&self) -> Option<SetRef<'z>> {
        self.rrsets().next()
    }
    pub fn get(&self, rtype: u16) -> Option<SetRef<'z>> {
        self.rrsets().find(|s| s.rtype() == rtype)
    }
}

impl std::fmt::Debug for NodeRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name())
            .field("cut", &self.cut())
            .field("service", &self.service())
            .finish_non_exhaustive()
    }
}

/// One RRset of a node.
#[derive(Clone, Copy)]
pub struct SetRef<'z> {
    names: &'z Names,
    set: &'z Set,
}

impl<'z> SetRef<'z> {
    pub fn rtype(&self) -> u16 {
        self.set.rtype
    }
    pub fn targets(&self) -> &'z [Box<[u8]>] {
        &self.set.targets
    }
    /// The records: TYPE, CLASS, TTL, RDLENGTH and RDATA each.
    pub fn rrs(&self) -> Records<'z> {
        Records {
            rest: self.set.wire.of(&self.names.bytes),
        }
    }
}

/// Walks records laid back to back (each is 10 bytes plus RDLENGTH).
pub struct Records<'z> {
    rest: &'z [u8],
}

impl<'z> Iterator for Records<'z> {
    type Item = &'z [u8];
    #[inline]
    fn next(&mut self) -> Option<&'z [u8]> {
        let rdlen = u16::from_be_bytes([*self.rest.get(8)?, *self.rest.get(9)?]) as usize;
        let end = (10 + rdlen).min(self.rest.len());
        let (rr, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(rr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(rtype: u16, rdata: &[u8]) -> Box<[u8]> {
        let mut v = Vec::new();
        v.extend_from_slice(&rtype.to_be_bytes());
        v.extend_from_slice(&[0, 1, 0, 0, 1, 0]);
        v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        v.extend_from_slice(rdata);
        v.into_boxed_slice()
    }

    fn key(i: usize) -> Box<[u8]> {
        let label = format!("h{i}");
        let mut v = vec![label.len() as u8];
        v.extend_from_slice(label.as_bytes());
        v.extend_from_slice(b"\x07example\x03com\x00");
        v.into_boxed_slice()
    }

    #[test]
    fn every_node_is_found_with_its_records_and_absent_names_are_not() {
        let nodes: Vec<NodeBuild> = (0..5000)
            .map(|i| NodeBuild {
                key: key(i),
                name: key(i),
                sets: (0..(i % 3))
                    .map(|t| SetBuild {
                        rtype: t as u16 + 1,
                        rrs: (0..=(i % 4))
                            .map(|r| rr(t as u16 + 1, &[r as u8; 4]))
                            .collect(),
                        targets: vec![key(i + 1)],
                    })
                    .collect(),
                cut: i % 7 == 0,
                service: (i % 5 == 0).then_some(i as u16),
            })
            .collect();
        let names = Names::build(nodes).expect("build");
        assert_eq!(names.len(), 5000);
        for i in 0..5000 {
            let n = names.get(&key(i)).expect("present");
            assert_eq!(n.key(), &key(i)[..]);
            assert_eq!(n.cut(), i % 7 == 0);
            assert_eq!(n.service(), (i % 5 == 0).then_some(i as u16));
            assert_eq!(n.rrsets().count(), i % 3);
            for t in 0..(i % 3) {
                let s = n.get(t as u16 + 1).expect("set");
                let rrs: Vec<&[u8]> = s.rrs().collect();
                assert_eq!(rrs.len(), i % 4 + 1);
                for (r, got) in rrs.iter().enumerate() {
                    assert_eq!(*got, &rr(t as u16 + 1, &[r as u8; 4])[..]);
                }
                assert_eq!(s.targets(), &[key(i + 1)][..]);
            }
            assert!(n.get(99).is_none());
        }
        for i in 5000..10000 {
            assert!(names.get(&key(i)).is_none());
        }
        assert!(Names::default().get(&key(1)).is_none());
    }
}

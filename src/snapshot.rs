//! Compiles a validated [`Config`] and its zones into an immutable
//! [`Snapshot`]: the only structure the query path reads.
//!
//! Everything the answer path needs is decided and encoded here, once:
//! names are lower-cased wire-format keys in hash maps, empty non-terminals
//! exist as nodes (so NODATA vs NXDOMAIN and the closest encloser fall out of
//! one walk down the name), delegation points are flagged, and every record
//! is pre-encoded as TYPE/CLASS/TTL/RDLENGTH/RDATA ready to be copied.

use std::sync::Arc;
use std::time::SystemTime;

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use ipnet::IpNet;
use rustc_hash::FxHashMap;

use crate::config::Config;
use crate::diag::{Diagnostic, LoadError};
use crate::dns::wire::{self, MAX_LABELS};
use crate::zone::{self, ZoneData};

/// A name or record in wire format.
type Wire = Box<[u8]>;

/// One RRset, encoded.
#[derive(Debug)]
pub struct RRset {
    pub rtype: u16,
    /// Per record: TYPE, CLASS, TTL, RDLENGTH and RDATA in wire format.
    pub rrs: Box<[Box<[u8]>]>,
    /// Lower-cased wire names this RRset points at (CNAME target, NS, MX
    /// exchange, SRV target), for chasing and additional-section processing.
    pub targets: Box<[Box<[u8]>]>,
}

/// A name in a zone: its RRsets (none for an empty non-terminal).
#[derive(Debug)]
pub struct Node {
    /// The owner name in wire format, case as written in the zone file.
    pub name: Box<[u8]>,
    pub rrsets: Box<[RRset]>,
    /// A delegation point (NS records below the apex).
    pub cut: bool,
}

impl Node {
    pub fn get(&self, rtype: u16) -> Option<&RRset> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }
}

/// A served zone, compiled.
#[derive(Debug)]
pub struct Zone {
    pub origin: Name,
    /// Lower-cased wire-format apex name.
    pub apex: Box<[u8]>,
    /// Labels in the apex name, counting the root.
    pub apex_labels: usize,
    pub nodes: FxHashMap<Box<[u8]>, Node>,
    /// Node keys in canonical order (zone transfers walk this).
    pub order: Vec<Box<[u8]>>,
    pub has_cuts: bool,
    pub has_wildcards: bool,
    /// The SOA record, encoded, with its own TTL.
    pub soa: Box<[u8]>,
    /// The SOA record with TTL = min(SOA TTL, MINIMUM) for negative answers
    /// (RFC 2308 §3).
    pub neg_soa: Box<[u8]>,
    pub allow_transfer: Vec<IpNet>,
    pub data: ZoneData,
}

impl Zone {
    pub fn apex_node(&self) -> Option<&Node> {
        self.nodes.get(&self.apex)
    }
    pub fn serial(&self) -> u32 {
        self.data.serial().unwrap_or(0)
    }
}

/// Served zones, indexed by apex.
#[derive(Debug, Default)]
pub struct ZoneTable {
    index: FxHashMap<Box<[u8]>, usize>,
    pub zones: Vec<Zone>,
}

impl ZoneTable {
    /// The most specific zone containing the name whose labels start at
    /// `offsets[..labels]` in `name`.
    pub fn find(&self, name: &[u8], offsets: &[u8], labels: usize) -> Option<&Zone> {
        for &off in offsets.iter().take(labels) {
            if let Some(&i) = self.index.get(&name[off as usize..]) {
                return self.zones.get(i);
            }
        }
        None
    }
    pub fn find_name(&self, name: &[u8]) -> Option<&Zone> {
        let mut offs = [0u8; MAX_LABELS];
        let n = wire::label_offsets(name, &mut offs);
        self.find(name, &offs, n)
    }
}

/// Everything the query path reads, immutable; replaced whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub config: Config,
    pub zones: ZoneTable,
    pub udp_payload: u16,
    pub nsid: Option<Box<[u8]>>,
}

/// Wire format of a name, case kept.
pub fn name_wire(name: &Name) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        v.push(label.len() as u8);
        v.extend_from_slice(label);
    }
    v.push(0);
    v
}

/// Wire format of a name, lower-cased.
pub fn name_key(name: &Name) -> Box<[u8]> {
    let mut v = name_wire(name);
    // Length bytes are < 64, never ASCII letters: lower-casing the whole
    // buffer only touches label text.
    v.make_ascii_lowercase();
    v.into_boxed_slice()
}

/// Encodes TYPE, CLASS IN, TTL, RDLENGTH and RDATA (names uncompressed).
pub fn encode_rr(rtype: RecordType, ttl: u32, rdata: &RData) -> Result<Box<[u8]>, String> {
    let mut rd = Vec::with_capacity(64);
    {
        let mut enc = BinEncoder::new(&mut rd);
        enc.set_name_encoding(NameEncoding::Uncompressed);
        rdata
            .emit(&mut enc)
            .map_err(|e| format!("cannot encode {rtype} data: {e}"))?;
    }
    if rd.len() > u16::MAX as usize {
        return Err(format!("{rtype} data is larger than 65535 bytes"));
    }
    let mut out = Vec::with_capacity(10 + rd.len());
    out.extend_from_slice(&u16::from(rtype).to_be_bytes());
    out.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rd.len() as u16).to_be_bytes());
    out.extend_from_slice(&rd);
    Ok(out.into_boxed_slice())
}

fn targets(rdata: &RData) -> Option<&Name> {
    match rdata {
        RData::CNAME(c) => Some(&c.0),
        RData::NS(ns) => Some(&ns.0),
        RData::MX(mx) => Some(&mx.exchange),
        RData::SRV(srv) => Some(&srv.target),
        _ => None,
    }
}

/// Compiles one validated zone.
pub fn compile_zone(data: ZoneData, allow_transfer: Vec<IpNet>) -> Result<Zone, Vec<Diagnostic>> {
    let apex = name_key(&data.origin);
    let apex_labels = data.origin.num_labels() as usize + 1;
    let mut diags = Vec::new();
    let mut nodes: FxHashMap<Wire, (Wire, Vec<RRset>)> = FxHashMap::default();
    let mut soa = None;
    let mut neg_soa = None;
    for ((lname, rtype), set) in &data.rrsets {
        let key = name_key(&Name::from(lname.clone()));
        let mut rrs = Vec::with_capacity(set.rdatas.len());
        let mut tg = Vec::new();
        for rd in &set.rdatas {
            match encode_rr(*rtype, set.ttl, rd) {
                Ok(b) => rrs.push(b),
                Err(e) => diags.push(set.loc.error(e)),
            }
            if let Some(t) = targets(rd) {
                tg.push(name_key(t));
            }
            if let RData::SOA(s) = rd {
                soa = encode_rr(*rtype, set.ttl, rd).ok();
                neg_soa = encode_rr(*rtype, set.ttl.min(s.minimum), rd).ok();
            }
        }
        let entry = nodes
            .entry(key)
            .or_insert_with(|| (name_wire(&set.name).into_boxed_slice(), Vec::new()));
        entry.1.push(RRset {
            rtype: u16::from(*rtype),
            rrs: rrs.into_boxed_slice(),
            targets: tg.into_boxed_slice(),
        });
    }
    let (Some(soa), Some(neg_soa)) = (soa, neg_soa) else {
        diags.push(Diagnostic::error(
            &data.file,
            0,
            0,
            "zone has no usable SOA",
        ));
        return Err(diags);
    };
    if !diags.is_empty() {
        return Err(diags);
    }
    // Empty non-terminals: every name between an owner and the apex exists.
    let owners: Vec<(Wire, Wire)> = nodes
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (key, orig) in owners {
        let mut offs = [0u8; MAX_LABELS];
        let n = wire::label_offsets(&key, &mut offs);
        for &off in offs.iter().take(n.saturating_sub(apex_labels)).skip(1) {
            let off = off as usize;
            nodes
                .entry(key[off..].into())
                .or_insert_with(|| (orig[off..].into(), Vec::new()));
        }
    }
    let mut has_cuts = false;
    let mut has_wildcards = false;
    let mut out: FxHashMap<Box<[u8]>, Node> = FxHashMap::default();
    for (key, (orig, mut sets)) in nodes {
        sets.sort_by_key(|s| s.rtype);
        let cut = *key != *apex && sets.iter().any(|s| s.rtype == wire::TYPE_NS);
        has_cuts |= cut;
        has_wildcards |= key.starts_with(b"\x01*");
        out.insert(
            key,
            Node {
                name: orig,
                rrsets: sets.into_boxed_slice(),
                cut,
            },
        );
    }
    let mut order: Vec<(Name, Box<[u8]>)> =
        out.keys().map(|k| (wire_to_name(k), k.clone())).collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Zone {
        origin: data.origin.clone(),
        apex,
        apex_labels,
        nodes: out,
        order: order.into_iter().map(|(_, k)| k).collect(),
        has_cuts,
        has_wildcards,
        soa,
        neg_soa,
        allow_transfer,
        data,
    })
}

/// Name from an uncompressed wire name (for ordering; never fails on names
/// this module encoded).
fn wire_to_name(w: &[u8]) -> Name {
    let mut labels = Vec::new();
    let mut at = 0;
    while at < w.len() && w[at] != 0 {
        let l = w[at] as usize;
        labels.push(&w[at + 1..at + 1 + l]);
        at += 1 + l;
    }
    Name::from_labels(labels).unwrap_or_else(|_| Name::root())
}

/// Loads every zone of `config` and compiles a snapshot. Returns warnings
/// alongside; any error fails the whole load.
pub fn build(config: Config, generation: u64) -> Result<(Snapshot, Vec<Diagnostic>), LoadError> {
    let mut diags = Vec::new();
    let mut table = ZoneTable::default();
    for spec in &config.zones {
        let mut zd = Vec::new();
        let data = zone::load_zone(&spec.origin, &spec.file, &mut zd);
        let failed = zd.iter().any(Diagnostic::is_error);
        diags.extend(zd);
        if failed {
            continue;
        }
        match compile_zone(data, spec.allow_transfer.clone()) {
            Ok(z) => {
                table.index.insert(z.apex.clone(), table.zones.len());
                table.zones.push(z);
            }
            Err(d) => diags.extend(d),
        }
    }
    if diags.iter().any(Diagnostic::is_error) {
        return Err(LoadError(diags));
    }
    let snap = Snapshot {
        generation,
        loaded_at: SystemTime::now(),
        udp_payload: config.server.udp_payload,
        nsid: config
            .server
            .nsid
            .as_ref()
            .map(|s| s.as_bytes().to_vec().into_boxed_slice()),
        config,
        zones: table,
    };
    Ok((snap, diags))
}

/// Loads a config file and builds a snapshot from it.
pub fn load(
    path: &std::path::Path,
    generation: u64,
) -> Result<(Arc<Snapshot>, Vec<Diagnostic>), LoadError> {
    let config = Config::load(path)?;
    let (snap, warnings) = build(config, generation)?;
    Ok((Arc::new(snap), warnings))
}

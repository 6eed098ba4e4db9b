//! Whole-database validation before a database may serve.
//!
//! Every network of the search tree is walked and every distinct record it
//! points to is decoded completely, following pointers into shared data and
//! checking every string: a record that does not decode cleanly (what
//! libmaxminddb and the Python reader refuse) rejects the file. The
//! maxminddb crate's own `verify` is stricter than the format (it refuses
//! an empty `description`, which common writers emit), so it is not used.

use std::fmt;

use rustc_hash::FxHashSet;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use maxminddb::{LookupResult, Reader, WithinOptions};

/// Decodes any value completely and keeps nothing.
struct Whole;

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Whole, D::Error> {
        d.deserialize_any(WholeVisitor)
    }
}

struct WholeVisitor;

impl<'de> Visitor<'de> for WholeVisitor {
    type Value = Whole;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any MaxMind DB value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Whole, E> {
        Ok(Whole)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Whole, E> {
        Ok(Whole)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Whole, E> {
        Ok(Whole)
    }
    fn visit_u128<E>(self, _: u128) -> Result<Whole, E> {
        Ok(Whole)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Whole, E> {
        Ok(Whole)
    }
    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Whole, E> {
        Ok(Whole)
    }
    fn visit_str<E>(self, _: &str) -> Result<Whole, E> {
        Ok(Whole)
    }
    fn visit_borrowed_bytes<E>(self, _: &'de [u8]) -> Result<Whole, E> {
        Ok(Whole)
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<Whole, E> {
        Ok(Whole)
    }
    fn visit_unit<E>(self) -> Result<Whole, E> {
        Ok(Whole)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Whole, A::Error> {
        while seq.next_element::<Whole>()?.is_some() {}
        Ok(Whole)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Whole, A::Error> {
        while map.next_entry::<Whole, Whole>()?.is_some() {}
        Ok(Whole)
    }
}

/// Walks every network and decodes each distinct record once; calls
/// `each` with every record that decoded. The error names the network.
pub(super) fn records<S: AsRef<[u8]>>(
    reader: &Reader<S>,
    mut each: impl FnMut(&LookupResult<'_, S>),
) -> Result<(), String> {
    let mut seen: FxHashSet<usize> = FxHashSet::default();
    let iter = reader
        .networks(WithinOptions::default())
        .map_err(|e| format!("search tree: {e}"))?;
    for item in iter {
        let r = item.map_err(|e| format!("search tree: {e}"))?;
        let Some(offset) = r.offset() else { continue };
        if !seen.insert(offset) {
            continue;
        }
        if let Err(e) = r.decode::<Whole>() {
            let net = r
                .network()
                .map_or_else(|_| "?".to_string(), |n| n.to_string());
            return Err(format!("record for {net} (data offset {offset}): {e}"));
        }
        each(&r);
    }
    Ok(())
}

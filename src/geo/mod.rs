//! Client location: MaxMind-format databases (GeoIP2/GeoLite2 City or
//! Country, DB-IP's compatible layout, GeoLite2-ASN), EDNS Client Subnet
//! (RFC 7871) and great-circle distance.
//!
//! Databases are read from a private copy that no other process can shrink
//! (see [`file`]), memory-mapped; a lookup decodes only the fields steering
//! uses, borrowing from the map, so it does not allocate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use maxminddb::Reader;

pub mod file;
pub mod index;
mod verify;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

/// Why a database could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a usable MaxMind DB: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Identity of a file on disk, to notice replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub len: u64,
    pub modified: Option<SystemTime>,
    pub inode: u64,
}

impl FileStamp {
    pub fn of(path: &Path) -> Option<FileStamp> {
        std::fs::metadata(path).ok().map(|m| FileStamp::of_meta(&m))
    }

    /// The stamp of an open file (the inode actually read).
    pub fn of_file(f: &std::fs::File) -> std::io::Result<FileStamp> {
        f.metadata().map(|m| FileStamp::of_meta(&m))
    }

    fn of_meta(m: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let inode = 0;
        FileStamp {
            len: m.len(),
            modified: m.modified().ok(),
            inode,
        }
    }
}

/// A shared read-only view of a private copy of a database file.
#[derive(Clone)]
pub struct Map(std::sync::Arc<file::Bytes>);

impl AsRef<[u8]> for Map {
    fn as_ref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// One opened database.
pub struct Db {
    reader: Reader<Map>,
    map: Map,
    pub path: PathBuf,
    pub stamp: Option<FileStamp>,
    pub database_type: String,
    pub build_epoch: u64,
    /// Where the private copy being read lives.
    pub backing: file::Backing,
    /// Records whose steering fields have an unusable type.
    pub bad_fields: BadFields,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("database_type", &self.database_type)
            .field("build_epoch", &self.build_epoch)
            .finish()
    }
}

impl Db {
    /// Opens a database: copies the file into a private inode (see
    /// [`file`]), maps the copy and verifies all of it.
    pub fn open(path: &Path) -> Result<Db, GeoError> {
        Db::open_inner(path, false)
    }

    /// Opens an ASN database like [`Db::open`], and checks that every
    /// record's `autonomous_system_number` is usable. Records where it is
    /// not (a string, a signed or float number, more than 32 bits) do not
    /// reject the file; they are counted in [`Db::bad_fields`] and reported
    /// once, with the first one's network.
    pub fn open_asn(path: &Path) -> Result<Db, GeoError> {
        Db::open_inner(path, true)
    }

    fn open_inner(path: &Path, asn: bool) -> Result<Db, GeoError> {
        let (bytes, stamp, backing) =
            file::private_copy(path).map_err(|source| GeoError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let map = Map(std::sync::Arc::new(bytes));
        let reader = Reader::from_source(map.clone()).map_err(|e| GeoError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let meta = reader.metadata();
        let mut db = Db {
            map,
            path: path.to_path_buf(),
            stamp: Some(stamp),
            backing,
            bad_fields: BadFields::default(),
            database_type: meta.database_type.clone(),
            build_epoch: meta.build_epoch,
            reader,
        };
        // The whole file, before it can replace anything: every node of the
        // search tree and every record the tree points to
        // must decode (the same records libmaxminddb would refuse). A test
        // lookup alone lets a damaged record through to the compile, where
        // its addresses silently fall to the "unknown" decision.
        let mut bad = BadFields::default();
        let walked = verify::records(&db.reader, |r| {
            if asn {
                if let Err(e) = r.decode::<AsnRec>() {
                    let net = || r.network().map_or_else(|_| "?".into(), |n| n.to_string());
                    bad.note(net, e);
                }
            }
        });
        walked.map_err(|e| GeoError::Invalid {
            path: path.to_path_buf(),
            message: format!("corrupt: {e}"),
        })?;
        if let Some(first) = &bad.first {
            tracing::warn!(
                path = %path.display(),
                records = bad.records,
                "ASN database: {} record(s) have an autonomous_system_number that is not an unsigned integer of at most 32 bits; their networks get no ASN (first: {first})",
                bad.records
            );
        }
        db.bad_fields = bad;
        Ok(db)
    }
}

impl Db {
    /// Lets the kernel drop the pages read so far (they are read back from
    /// the file if touched again). Used after compiling decisions, which
    /// reads the whole file once.
    pub fn release_pages(&self) {
        self.map.0.release();
    }
}

/// Where a client is, as far as the databases know.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Location {
    /// Two-letter continent code (e.g. b"EU"), zeros if unknown.
    pub continent: [u8; 2],
    /// ISO 3166-1 alpha-2 country, zeros if unknown.
    pub country: [u8; 2],
    /// ISO 3166-2 subdivision part after the country (e.g. b"CA\0"), zeros if unknown.
    pub subdivision: [u8; 3],
    pub coords: Option<(f64, f64)>,
    /// Autonomous system number, 0 if unknown.
    pub asn: u32,
    /// Prefix length of the City/Country database network that matched (0: none).
    pub prefix: u8,
    /// Prefix length of the ASN database network that matched.
    pub asn_prefix: u8,
    /// The address fell in a private, loopback or otherwise special range.
    pub special: bool,
    /// The City/Country database had a record for the address.
    pub found: bool,
}

fn code<const N: usize>(s: Option<&str>) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = s {
        if s.len() <= N && s.is_ascii() {
            for (o, b) in out.iter_mut().zip(s.bytes()) {
                *o = b.to_ascii_uppercase();
            }
        }
    }
    out
}

/// Text of a fixed-size code ("" if unknown).
pub fn code_str(c: &[u8]) -> &str {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    std::str::from_utf8(&c[..end]).unwrap_or("")
}

impl Location {
    pub fn continent(&self) -> &str {
        code_str(&self.continent)
    }
    pub fn country(&self) -> &str {
        code_str(&self.country)
    }
    pub fn subdivision(&self) -> &str {
        code_str(&self.subdivision)
    }
}

#[derive(Deserialize)]
struct CodeRec<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}
#[derive(Deserialize)]
struct IsoRec<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}
#[derive(Deserialize)]
struct LocRec {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

/// The first subdivision's ISO code, without collecting the list.
fn first_subdivision<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de str>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<&'de str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of subdivisions")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first: Option<IsoRec<'de>> = seq.next_element()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first.and_then(|r| r.iso_code))
        }
    }
    d.deserialize_seq(V)
}

/// The fields of a GeoIP2 City/Country (or DB-IP) record that steering uses.
#[derive(Deserialize)]
struct CityRec<'a> {
    #[serde(borrow, default)]
    continent: Option<CodeRec<'a>>,
    #[serde(borrow, default)]
    country: Option<IsoRec<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<IsoRec<'a>>,
    #[serde(borrow, default, deserialize_with = "first_subdivision")]
    subdivisions: Option<&'a str>,
    #[serde(default)]
    location: Option<LocRec>,
}

#[derive(Deserialize)]
struct AsnRec {
    #[serde(default, deserialize_with = "any_unsigned")]
    autonomous_system_number: Option<u32>,
}

/// An AS number stored as any unsigned integer type of the format (uint16,
/// uint32, uint64, uint128: writers pick the smallest that fits) whose
/// value fits in 32 bits. Anything else is an error, which the database
/// check counts (see [`Db::open_asn`]).
fn any_unsigned<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an unsigned integer of at most 32 bits")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            u32::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }
        fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Self::Value, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::invalid_value(
                    serde::de::Unexpected::Other("u128"),
                    &self,
                )),
            }
        }
    }
    d.deserialize_any(V)
}

/// Records of a database whose fields steering reads have a type it cannot
/// use (those addresses get no ASN / no location): counted when the
/// database is opened, and the first one named.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BadFields {
    pub records: u64,
    /// The first such record: its network and why.
    pub first: Option<String>,
}

impl BadFields {
    fn note(&mut self, network: impl FnOnce() -> String, why: impl fmt::Display) {
        self.records += 1;
        if self.first.is_none() {
            self.first = Some(format!("{}: {why}", network()));
        }
    }
}

/// Special-purpose ranges that are never located (RFC 6890): (network, prefix).
const SPECIAL_V4: [(u32, u8); 9] = [
    (0x0000_0000, 8),  // "this network"
    (0x0a00_0000, 8),  // private
    (0x6440_0000, 10), // shared address space (CGNAT)
    (0x7f00_0000, 8),  // loopback
    (0xa9fe_0000, 16), // link-local
    (0xac10_0000, 12), // private
    (0xc0a8_0000, 16), // private
    (0xe000_0000, 4),  // multicast
    (0xf000_0000, 4),  // reserved and broadcast
];
const SPECIAL_V6: [(u128, u8); 5] = [
    (0, 128),                 // unspecified
    (1, 128),                 // loopback
    (0xfc00_u128 << 112, 7),  // unique local
    (0xfe80_u128 << 112, 10), // link-local
    (0xff00_u128 << 112, 8),  // multicast
];

/// The prefix of the special-purpose range `ip` falls in, if any: private,
/// loopback, link-local, CGNAT, multicast and the like never locate. The
/// prefix is what an ECS scope for such a client may cover.
pub fn special_prefix(ip: IpAddr) -> Option<u8> {
    match ip {
        IpAddr::V4(v4) => {
            let a = u32::from(v4);
            SPECIAL_V4
                .iter()
                .find(|(net, p)| a & (u32::MAX << (32 - *p as u32)) == *net)
                .map(|&(_, p)| p)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_prefix(IpAddr::V4(v4)).map(|p| p + 96);
            }
            let a = u128::from(v6);
            SPECIAL_V6
                .iter()
                .find(|(net, p)| {
                    let mask = if *p == 128 {
                        u128::MAX
                    } else {
                        u128::MAX << (128 - *p as u32)
                    };
                    a & mask == *net
                })
                .map(|&(_, p)| p)
        }
    }
}

/// Addresses that never locate (see [`special_prefix`]).
pub fn is_special(ip: IpAddr) -> bool {
    special_prefix(ip).is_some()
}

/// Copies a decoded City record into a location.
fn fill(loc: &mut Location, rec: CityRec<'_>) {
    loc.found = true;
    loc.continent = code(rec.continent.and_then(|c| c.code));
    let country = rec
        .country
        .and_then(|c| c.iso_code)
        .or(rec.registered_country.and_then(|c| c.iso_code));
    loc.country = code(country);
    loc.subdivision = code(rec.subdivisions);
    if let Some(LocRec {
        latitude: Some(lat),
        longitude: Some(lon),
    }) = rec.location
    {
        if lat.is_finite() && lon.is_finite() {
            loc.coords = Some((lat, lon));
        }
    }
}

/// The configured databases (either may be absent).
#[derive(Debug, Default)]
pub struct GeoDb {
    pub city: Option<std::sync::Arc<Db>>,
    pub asn: Option<std::sync::Arc<Db>>,
}

impl GeoDb {
    /// The City record offset and network prefix for `ip` (no decoding).
    pub fn city_offset(&self, ip: IpAddr) -> Option<(usize, u8)> {
        let db = self.city.as_ref()?;
        let r = db.reader.lookup(ip).ok()?;
        Some((r.offset()?, r.network().map_or(0, |n| n.prefix())))
    }

    /// Locates `ip`. Errors inside a database are treated as "not found".
    pub fn locate(&self, ip: IpAddr) -> Location {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut loc = Location::default();
        if let Some(p) = special_prefix(ip) {
            loc.special = true;
            loc.prefix = p;
            return loc;
        }
        if let Some(db) = &self.city {
            if let Ok(r) = db.reader.lookup(ip) {
                loc.prefix = r.network().map_or(0, |n| n.prefix());
                if let Ok(Some(rec)) = r.decode::<CityRec<'_>>() {
                    fill(&mut loc, rec);
                }
            }
        }
        if let Some(db) = &self.asn {
            if let Ok(r) = db.reader.lookup(ip) {
                if let Ok(Some(rec)) = r.decode::<AsnRec>() {
                    loc.asn = rec.autonomous_system_number.unwrap_or(0);
                    loc.asn_prefix = r.network().map_or(0, |n| n.prefix());
                }
            }
        }
        loc
    }
}

/// Great-circle distance in km (haversine).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let dlat = lat2 - lat1;
    let dlon = lon2 - lon1;
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// An EDNS Client Subnet option from a query (RFC 7871 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    pub family: u16,
    pub source_prefix: u8,
    /// The address with the bits beyond `source_prefix` zero.
    pub addr: IpAddr,
}

/// A malformed client-subnet option (answered with FORMERR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadEcs;

impl ClientSubnet {
    /// Parses option data: FAMILY, SOURCE PREFIX-LENGTH, SCOPE
    /// PREFIX-LENGTH, ADDRESS truncated to the source prefix.
    pub fn parse(data: &[u8]) -> Result<ClientSubnet, BadEcs> {
        if data.len() < 4 {
            return Err(BadEcs);
        }
        let family = u16::from_be_bytes([data[0], data[1]]);
        let source = data[2];
        // RFC 7871 §6: SCOPE PREFIX-LENGTH MUST be 0 in queries.
        if data[3] != 0 {
            return Err(BadEcs);
        }
        let addr = &data[4..];
        let max = match family {
            1 => 32,
            2 => 128,
            _ => return Err(BadEcs),
        };
        if source > max || addr.len() != (source as usize).div_ceil(8) {
            return Err(BadEcs);
        }
        // Bits beyond the source prefix must be zero (RFC 7871 §6).
        if source % 8 != 0 {
            if let Some(&last) = addr.last() {
                if last & (0xffu8 >> (source % 8)) != 0 {
                    return Err(BadEcs);
                }
            }
        }
        let ip = if family == 1 {
            let mut b = [0u8; 4];
            b[..addr.len()].copy_from_slice(addr);
            IpAddr::V4(Ipv4Addr::from(b))
        } else {
            let mut b = [0u8; 16];
            b[..addr.len()].copy_from_slice(addr);
            IpAddr::V6(Ipv6Addr::from(b))
        };
        Ok(ClientSubnet {
            family,
            source_prefix: source,
            addr: ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7871_6_ecs_option_validation() {
        let ok = ClientSubnet::parse(&[0, 1, 24, 0, 192, 0, 2]).expect("valid");
        assert_eq!(ok.addr, IpAddr::from([192, 0, 2, 0]));
        assert_eq!(ok.source_prefix, 24);
        let v6 = ClientSubnet::parse(&[0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0]).expect("valid");
        assert_eq!(v6.source_prefix, 56);
        // Source 0: no address bytes.
        assert!(ClientSubnet::parse(&[0, 1, 0, 0]).is_ok());
        for bad in [
            &[0, 1, 24][..],                   // short
            &[0, 3, 24, 0, 1, 2, 3][..],       // unknown family
            &[0, 1, 33, 0, 1, 2, 3, 4, 5][..], // prefix too long
            &[0, 1, 24, 0, 192, 0][..],        // address too short
            &[0, 1, 24, 0, 192, 0, 2, 1][..],  // address too long
            &[0, 1, 23, 0, 192, 0, 3][..],     // bit beyond /23 set
        ] {
            assert_eq!(ClientSubnet::parse(bad), Err(BadEcs), "{bad:?}");
        }
    }

    #[test]
    fn rfc7871_6_scope_prefix_must_be_zero_in_queries() {
        assert!(ClientSubnet::parse(&[0, 1, 24, 0, 192, 0, 2]).is_ok());
        assert_eq!(ClientSubnet::parse(&[0, 1, 24, 24, 192, 0, 2]), Err(BadEcs));
    }

    #[test]
    fn distances_are_great_circle() {
        let fra = (50.11, 8.68);
        let iad = (38.95, -77.45);
        let d = distance_km(fra, iad);
        assert!((6450.0..6600.0).contains(&d), "{d}");
        assert!(distance_km(fra, fra) < 1e-6);
    }

    #[test]
    fn special_ranges_carry_their_prefix() {
        let p = |s: &str| special_prefix(s.parse().expect("ip"));
        assert_eq!(p("10.9.8.7"), Some(8));
        assert_eq!(p("172.20.0.1"), Some(12));
        assert_eq!(p("172.32.0.1"), None);
        assert_eq!(p("100.64.0.1"), Some(10));
        assert_eq!(p("100.128.0.1"), None);
        assert_eq!(p("::1"), Some(128));
        assert_eq!(p("fd12::1"), Some(7));
        assert_eq!(p("::ffff:192.168.1.1"), Some(112));
        let none = GeoDb::default().locate("10.1.2.3".parse().expect("ip"));
        assert!(none.special && none.prefix == 8);
    }

    #[test]
    fn special_addresses_are_not_located() {
        for ip in [
            "10.1.2.3",
            "127.0.0.1",
            "192.168.1.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "100.64.0.1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(is_special(ip), "{ip}");
        }
        for ip in ["192.0.2.1", "8.8.8.8", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(!is_special(ip), "{ip}");
        }
    }
}

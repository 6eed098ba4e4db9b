//! Builds MaxMind-format databases for tests and for the shipped sample:
//! City databases in the GeoIP2 layout and in DB-IP's, and ASN databases in
//! the GeoLite2-ASN layout.
#![allow(dead_code)]

use std::collections::BTreeMap;

use mmdb_writer::ipnet::IpNet;
use mmdb_writer::Writer;
use serde::Serialize;

/// One network of a City database.
#[derive(Debug, Clone)]
pub struct CityNet {
    pub cidr: String,
    pub continent: String,
    pub country: String,
    /// ISO 3166-2 subdivision code without the country ("HE", "VA", "13").
    pub subdivision: Option<String>,
    pub city: String,
    pub lat: f64,
    pub lon: f64,
}

impl CityNet {
    pub fn new(
        cidr: &str,
        continent: &str,
        country: &str,
        sub: Option<&str>,
        city: &str,
        lat: f64,
        lon: f64,
    ) -> CityNet {
        CityNet {
            cidr: cidr.into(),
            continent: continent.into(),
            country: country.into(),
            subdivision: sub.map(str::to_string),
            city: city.into(),
            lat,
            lon,
        }
    }
}

/// A network of New York (US-NY).
pub fn new_york(cidr: &str) -> CityNet {
    CityNet::new(cidr, "NA", "US", Some("NY"), "New York", 40.7, -74.0)
}

/// A few networks on four continents, IPv4 and IPv6 (the geo tests' world).
pub fn world() -> Vec<CityNet> {
    vec![
        CityNet::new(
            "192.0.2.0/24",
            "EU",
            "DE",
            Some("HE"),
            "Frankfurt",
            50.11,
            8.68,
        ),
        CityNet::new(
            "198.51.100.0/24",
            "NA",
            "US",
            Some("VA"),
            "Ashburn",
            39.04,
            -77.49,
        ),
        CityNet::new(
            "203.0.113.0/24",
            "AS",
            "JP",
            Some("13"),
            "Tokyo",
            35.68,
            139.69,
        ),
        CityNet::new(
            "45.0.0.0/8",
            "SA",
            "BR",
            Some("SP"),
            "Sao Paulo",
            -23.55,
            -46.63,
        ),
        CityNet::new(
            "81.0.0.0/16",
            "EU",
            "GB",
            Some("ENG"),
            "London",
            51.5,
            -0.12,
        ),
        CityNet::new(
            "2001:db8:e0::/48",
            "EU",
            "FR",
            Some("IDF"),
            "Paris",
            48.86,
            2.35,
        ),
        CityNet::new(
            "64.0.0.0/16",
            "NA",
            "US",
            Some("CA"),
            "San Jose",
            37.33,
            -121.89,
        ),
    ]
}

/// Which vendor's record layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// MaxMind GeoIP2/GeoLite2-City.
    GeoIp2,
    /// DB-IP City Lite: no geoname ids, subdivisions carry names only.
    DbIp,
}

type Names = BTreeMap<&'static str, String>;

fn names(s: &str) -> Names {
    [("en", s.to_string())].into()
}

#[derive(Serialize)]
struct Named {
    #[serde(skip_serializing_if = "Option::is_none")]
    geoname_id: Option<u32>,
    names: Names,
}

#[derive(Serialize)]
struct Continent {
    code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    geoname_id: Option<u32>,
    names: Names,
}

#[derive(Serialize)]
struct Country {
    #[serde(skip_serializing_if = "Option::is_none")]
    geoname_id: Option<u32>,
    iso_code: String,
    names: Names,
}

#[derive(Serialize)]
struct Subdivision {
    #[serde(skip_serializing_if = "Option::is_none")]
    geoname_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iso_code: Option<String>,
    names: Names,
}

#[derive(Serialize)]
struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy_radius: Option<u16>,
    latitude: f64,
    longitude: f64,
}

#[derive(Serialize)]
struct City {
    city: Named,
    continent: Continent,
    country: Country,
    location: Location,
    #[serde(skip_serializing_if = "Option::is_none")]
    registered_country: Option<Country>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subdivisions: Vec<Subdivision>,
}

#[derive(Serialize)]
struct Asn {
    autonomous_system_number: u32,
    autonomous_system_organization: String,
}

/// A City database with these networks.
pub fn build_city(nets: &[CityNet], layout: Layout) -> Vec<u8> {
    let db_type = match layout {
        Layout::GeoIp2 => "GeoIP2-City",
        Layout::DbIp => "DBIP-City-Lite",
    };
    let mut w = Writer::new(db_type);
    let gid = |s: &str| {
        (layout == Layout::GeoIp2).then(|| {
            s.bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
        })
    };
    for n in nets {
        let net: IpNet = n.cidr.parse().expect("fixture CIDR");
        let country = || Country {
            geoname_id: gid(&n.country),
            iso_code: n.country.clone(),
            names: names(&n.country),
        };
        let rec = City {
            city: Named {
                geoname_id: gid(&n.city),
                names: names(&n.city),
            },
            continent: Continent {
                code: n.continent.clone(),
                geoname_id: gid(&n.continent),
                names: names(&n.continent),
            },
            country: country(),
            location: Location {
                accuracy_radius: (layout == Layout::GeoIp2).then_some(20),
                latitude: n.lat,
                longitude: n.lon,
            },
            registered_country: (layout == Layout::GeoIp2).then(country),
            subdivisions: n
                .subdivision
                .iter()
                .map(|s| Subdivision {
                    geoname_id: gid(s),
                    iso_code: (layout == Layout::GeoIp2).then(|| s.clone()),
                    names: names(s),
                })
                .collect(),
        };
        w.insert(net, &rec).expect("fixture insert");
    }
    w.to_bytes().expect("fixture database")
}

/// An ASN database (GeoLite2-ASN layout).
pub fn build_asn(nets: &[(&str, u32, &str)]) -> Vec<u8> {
    let mut w = Writer::new("GeoLite2-ASN");
    for (cidr, asn, org) in nets {
        let net: IpNet = cidr.parse().expect("fixture CIDR");
        w.insert(
            net,
            &Asn {
                autonomous_system_number: *asn,
                autonomous_system_organization: org.to_string(),
            },
        )
        .expect("fixture insert");
    }
    w.to_bytes().expect("fixture database")
}

/// Changes one byte of `db`: the control byte of the record that `ip`
/// finds becomes an extended type whose number (read from the next byte)
/// does not exist. The tree, the metadata and every other record are
/// untouched, so opening the file and most lookups work.
pub fn corrupt_record(db: &mut [u8], ip: std::net::IpAddr) {
    let reader = maxminddb::Reader::from_source(&*db).expect("fixture opens");
    let meta = reader.metadata();
    let tree = meta.node_count as usize * meta.record_size as usize / 4;
    let offset = reader
        .lookup(ip)
        .expect("lookup")
        .offset()
        .expect("the address has a record");
    let at = tree + 16 + offset;
    assert_eq!(db[at] >> 5, 7, "the record is a map");
    db[at] = 0;
}

/// An `autonomous_system_number` as a writer may store it.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum AsnValue {
    U16(u16),
    U32(u32),
    U64(u64),
    U128(u128),
    /// A wrong type: a string ("AS64500").
    Text(&'static str),
}

#[derive(Serialize)]
struct TypedAsn {
    autonomous_system_number: AsnValue,
    autonomous_system_organization: &'static str,
}

/// An ASN database whose numbers are stored with the given types.
pub fn build_asn_typed(nets: &[(&str, AsnValue)]) -> Vec<u8> {
    let mut w = Writer::new("GeoLite2-ASN");
    for (cidr, asn) in nets {
        let net: IpNet = cidr.parse().expect("fixture CIDR");
        let rec = TypedAsn {
            autonomous_system_number: *asn,
            autonomous_system_organization: "Example",
        };
        w.insert(net, &rec).expect("fixture insert");
    }
    w.to_bytes().expect("fixture database")
}

//! Writes a Knot DNS `mod-geoip` response file (geodb mode) that answers a
//! name like a geolb service with `chain = ["healthy", "nearest",
//! "failover", "first_n"]`, `first_n = 1`: the nearest of a few
//! datacenters to the client's City record, the first one when the record
//! has no coordinates. The benchmarks run Knot with it beside geolb.
//!
//! ```sh
//! cargo run --release --example knot_geo -- geoip/GeoLite2-City.mmdb geo.example.com \
//!     38.9,-77.0=192.0.2.101 50.1,8.7=192.0.2.102 1.35,103.8=192.0.2.103 37.4,-122.1=192.0.2.104 > geo.conf
//! ```
//!
//! Knot's geodb mode matches the record's keys, not its coordinates, so the
//! file keys each view on `country/iso_code`, `subdivisions/0/iso_code` and
//! `(id)city/geoname_id` (the module's `geodb-key` list, in that order)
//! and answers it with the datacenter nearest to the most IPv4 addresses
//! among the networks with those keys. Where networks with the same keys
//! lie nearest to different datacenters, some answers differ from geolb's:
//! the share of the database's IPv4 space affected is printed on standard
//! error, with the number of views.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;

use maxminddb::{Reader, WithinOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Rec<'a> {
    #[serde(borrow, default)]
    country: Option<Iso<'a>>,
    #[serde(borrow, default)]
    subdivisions: Option<Vec<Iso<'a>>>,
    #[serde(default)]
    city: Option<City>,
    #[serde(default)]
    location: Option<Loc>,
}

#[derive(Deserialize)]
struct Iso<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct City {
    #[serde(default)]
    geoname_id: Option<u32>,
}

#[derive(Deserialize)]
struct Loc {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// A datacenter: its coordinates and the address answered.
struct Dc {
    at: (f64, f64),
    address: String,
}

fn parse_dc(s: &str) -> Option<Dc> {
    let (at, address) = s.split_once('=')?;
    let (lat, lon) = at.split_once(',')?;
    address.parse::<IpAddr>().ok()?;
    Some(Dc {
        at: (lat.parse().ok()?, lon.parse().ok()?),
        address: address.to_string(),
    })
}

/// The view key of a record, as the module's `geo:` value ("*" for a key
/// the record lacks), and the index of the datacenter geolb answers.
fn decide(rec: &Rec<'_>, dcs: &[Dc]) -> (String, usize) {
    let country = rec.country.as_ref().and_then(|c| c.iso_code);
    let sub = rec
        .subdivisions
        .as_ref()
        .and_then(|s| s.first())
        .and_then(|s| s.iso_code);
    let city = rec.city.as_ref().and_then(|c| c.geoname_id);
    let key = format!(
        "{};{};{}",
        country.unwrap_or("*"),
        sub.unwrap_or("*"),
        city.map_or("*".to_string(), |c| c.to_string())
    );
    let coords = rec
        .location
        .as_ref()
        .and_then(|l| Some((l.latitude?, l.longitude?)))
        .filter(|(a, b)| a.is_finite() && b.is_finite());
    let dc = coords.map_or(0, |c| {
        (0..dcs.len())
            .min_by(|&a, &b| {
                geolb::geo::distance_km(c, dcs[a].at)
                    .total_cmp(&geolb::geo::distance_km(c, dcs[b].at))
            })
            .unwrap_or(0)
    });
    (key, dc)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let subnet = args.first().is_some_and(|a| a == "--subnet");
    if subnet {
        args.remove(0);
    }
    if args.len() < 3 {
        eprintln!("usage: knot_geo [--subnet] CITY.mmdb NAME LAT,LON=ADDRESS...   (the first datacenter also answers unlocated clients)");
        return ExitCode::from(2);
    }
    let Some(dcs) = args[2..]
        .iter()
        .map(|s| parse_dc(s))
        .collect::<Option<Vec<Dc>>>()
    else {
        eprintln!("a datacenter is LAT,LON=ADDRESS (38.9,-77.0=192.0.2.101)");
        return ExitCode::from(2);
    };
    let reader = match Reader::open_readfile(&args[0]) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", args[0]);
            return ExitCode::FAILURE;
        }
    };
    let Ok(nets) = reader.networks(WithinOptions::default()) else {
        eprintln!("{}: cannot walk the networks", args[0]);
        return ExitCode::FAILURE;
    };
    // Per view key: IPv4 addresses (or IPv6 networks) nearest to each datacenter.
    let mut views: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let mut decided: HashMap<usize, (String, usize)> = HashMap::new();
    let (mut networks, mut v4_total) = (0u64, 0u64);
    // --subnet: IPv4 ranges (first, last address) with their datacenter.
    let mut ranges: Vec<(u32, u32, usize)> = Vec::new();
    for item in nets {
        let Ok(r) = item else { continue };
        let (Some(offset), Ok(net)) = (r.offset(), r.network()) else {
            continue;
        };
        let (key, dc) = match decided.get(&offset) {
            Some(d) => d.clone(),
            None => match r.decode::<Rec<'_>>() {
                Ok(Some(rec)) => {
                    let d = decide(&rec, &dcs);
                    decided.insert(offset, d.clone());
                    d
                }
                _ => continue,
            },
        };
        networks += 1;
        let w = views.entry(key).or_insert_with(|| vec![(0, 0); dcs.len()]);
        match net {
            ipnetwork::IpNetwork::V4(n) => {
                let a = 1u64 << (32 - u32::from(n.prefix()));
                let first = u32::from(n.network());
                let last = first.wrapping_add((a - 1) as u32);
                match ranges.last_mut() {
                    Some(r) if r.2 == dc && r.1.wrapping_add(1) == first => r.1 = last,
                    _ => ranges.push((first, last, dc)),
                }
                w[dc].0 += a;
                v4_total += a;
            }
            ipnetwork::IpNetwork::V6(_) => w[dc].1 += 1,
        }
    }
    if subnet {
        return write_subnets(&args[1], &ranges, &dcs, networks);
    }
    let mut keys: Vec<&String> = views.keys().collect();
    keys.sort();
    let mut differ = 0u64;
    let mut text = format!("{}:\n", args[1]);
    for k in keys {
        let w = &views[k];
        let best = (0..dcs.len())
            .max_by_key(|&i| (w[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        differ += w
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != best)
            .map(|(_, c)| c.0)
            .sum::<u64>();
        text.push_str(&format!("  - geo: \"{k}\"\n    A: {}\n", dcs[best].address));
    }
    write_out(
        &text,
        &format!(
            "{networks} networks, {} views; answers differ from the nearest datacenter for {:.3} % of the database's IPv4 addresses",
            views.len(),
            100.0 * differ as f64 / v4_total.max(1) as f64
        ),
    )
}

/// Subnet mode: the fewest CIDR blocks covering each run of adjacent IPv4
/// networks with the same nearest datacenter, each a `net:` view; the same
/// answers as geolb's for every IPv4 address the database lists (IPv6 is
/// left out). Addresses in no block get the zone's record, as in geolb
/// the first datacenter.
fn write_subnets(name: &str, ranges: &[(u32, u32, usize)], dcs: &[Dc], networks: u64) -> ExitCode {
    let mut text = format!("{name}:\n");
    let mut blocks = 0u64;
    for &(first, last, dc) in ranges {
        let (mut at, end) = (u64::from(first), u64::from(last) + 1);
        while at < end {
            // The largest block aligned at `at` that stays inside the run.
            let mut len = 32 - at.trailing_zeros().min(32);
            while (1u64 << (32 - len)) > end - at {
                len += 1;
            }
            text.push_str(&format!(
                "  - net: {}/{len}\n    A: {}\n",
                std::net::Ipv4Addr::from(at as u32),
                dcs[dc].address
            ));
            blocks += 1;
            at += 1u64 << (32 - len);
        }
    }
    write_out(
        &text,
        &format!(
            "{networks} networks, {} IPv4 runs of one datacenter, {blocks} blocks",
            ranges.len()
        ),
    )
}

/// Writes the response file to standard output and a summary to standard error.
fn write_out(text: &str, summary: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        eprintln!("cannot write the response file");
        return ExitCode::FAILURE;
    }
    eprintln!("knot_geo: {summary}");
    ExitCode::SUCCESS
}

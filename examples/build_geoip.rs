//! Builds a City database (GeoIP2-City schema, or DB-IP's layout) from a
//! readable TOML source. The shipped sample is made with:
//!
//! ```sh
//! cargo run --example build_geoip -- geoip/sample-city.toml geoip/sample-city.mmdb
//! ```
//!
//! Source format:
//!
//! ```toml
//! layout = "geoip2"            # or "dbip"
//! [[network]]
//! cidr = "192.0.2.0/24"
//! continent = "EU"
//! country = "DE"
//! subdivision = "HE"           # optional (ISO 3166-2 part after the country)
//! city = "Frankfurt am Main"
//! location = [50.11, 8.68]
//! ```

#[path = "../tests/common/mmdb.rs"]
mod mmdb;

use std::process::ExitCode;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    #[serde(default = "geoip2")]
    layout: String,
    network: Vec<Net>,
}

fn geoip2() -> String {
    "geoip2".into()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Net {
    cidr: String,
    continent: String,
    country: String,
    #[serde(default)]
    subdivision: Option<String>,
    city: String,
    location: [f64; 2],
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, src, dst] = args.as_slice() else {
        eprintln!("usage: build_geoip SOURCE.toml OUTPUT.mmdb");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(src) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{src}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source: Source = match toml::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{src}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let layout = match source.layout.as_str() {
        "geoip2" => mmdb::Layout::GeoIp2,
        "dbip" => mmdb::Layout::DbIp,
        other => {
            eprintln!("{src}: layout {other:?}: expected \"geoip2\" or \"dbip\"");
            return ExitCode::FAILURE;
        }
    };
    for n in &source.network {
        if n.cidr.parse::<mmdb_writer::ipnet::IpNet>().is_err() {
            eprintln!("{src}: {:?} is not a CIDR", n.cidr);
            return ExitCode::FAILURE;
        }
    }
    let nets: Vec<mmdb::CityNet> = source
        .network
        .iter()
        .map(|n| {
            mmdb::CityNet::new(
                &n.cidr,
                &n.continent,
                &n.country,
                n.subdivision.as_deref(),
                &n.city,
                n.location[0],
                n.location[1],
            )
        })
        .collect();
    let bytes = mmdb::build_city(&nets, layout);
    if let Err(e) = std::fs::write(dst, &bytes) {
        eprintln!("{dst}: {e}");
        return ExitCode::FAILURE;
    }
    println!("{dst}: {} networks, {} bytes", nets.len(), bytes.len());
    ExitCode::SUCCESS
}

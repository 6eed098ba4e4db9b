//! Times `geolb replay` over a million random log lines.
//!
//! ```sh
//! cargo run --release --example replay_log              # 1 M lines
//! cargo run --release --example replay_log -- 5000000   # or another count
//! cargo run --release --example replay_log -- 1000000 --dnstap
//! ```
//!
//! With `--dnstap` the log is a dnstap file instead (`queries.fstrm`): each
//! query as an AUTH_QUERY frame and its AUTH_RESPONSE, as `[dnstap]` writes
//! them, the client subnet in an OPT record, bad lines as frames that are
//! not dnstap.
//!
//! Writes, into a temporary directory it prints: a City database of 65,536
//! networks (/24s in 30 countries on five continents, each its own city) —
//! or uses `geoip/GeoLite2-City.mmdb` when present —, a running config (by
//! continent, `nearest` for a second service) and a proposed one (two
//! countries sent elsewhere), and the log: 100,000 resolvers, a fifth of
//! the queries carrying a client subnet, a tenth AAAA, a few other types,
//! names and bad lines. Then replays it as `geolb replay` does and prints
//! the times and the summary, and the command that replays it with the
//! binary.

#[path = "../tests/common/mmdb.rs"]
mod mmdb;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

const COUNTRIES: [(&str, &str, f64, f64); 30] = [
    ("EU", "DE", 50.1, 8.7),
    ("EU", "GB", 51.5, -0.1),
    ("EU", "FR", 48.9, 2.4),
    ("EU", "NL", 52.4, 4.9),
    ("EU", "PL", 52.2, 21.0),
    ("EU", "ES", 40.4, -3.7),
    ("EU", "IT", 41.9, 12.5),
    ("EU", "SE", 59.3, 18.1),
    ("NA", "US", 39.0, -77.5),
    ("NA", "CA", 43.7, -79.4),
    ("NA", "MX", 19.4, -99.1),
    ("SA", "BR", -23.6, -46.6),
    ("SA", "AR", -34.6, -58.4),
    ("SA", "CL", -33.4, -70.7),
    ("AS", "JP", 35.7, 139.7),
    ("AS", "KR", 37.6, 127.0),
    ("AS", "IN", 19.1, 72.9),
    ("AS", "SG", 1.35, 103.8),
    ("AS", "ID", -6.2, 106.8),
    ("AS", "VN", 21.0, 105.8),
    ("AS", "TH", 13.8, 100.5),
    ("AS", "CN", 31.2, 121.5),
    ("AF", "ZA", -26.2, 28.0),
    ("AF", "NG", 6.5, 3.4),
    ("AF", "EG", 30.0, 31.2),
    ("AF", "KE", -1.3, 36.8),
    ("OC", "AU", -33.9, 151.2),
    ("OC", "NZ", -36.8, 174.8),
    ("EU", "TR", 41.0, 29.0),
    ("AS", "AE", 25.2, 55.3),
];

const ZONE: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n";

fn config(city: &Path, extra: &str) -> String {
    format!(
        r#"
[server]
dns = ["127.0.0.1:0"]

[geoip]
city = "{city}"

[regions.eu]
location = [50.11, 8.68]
[regions.us]
location = [39.04, -77.49]
[regions.ap]
location = [35.68, 139.69]
[regions.sa]
location = [-23.55, -46.63]

[pools.eu-web]
region = "eu"
endpoints = [{{ address = "10.1.0.1" }}, {{ address = "2001:db8:1::1" }}]
[pools.us-web]
region = "us"
endpoints = [{{ address = "10.2.0.1" }}, {{ address = "2001:db8:2::1" }}]
[pools.ap-web]
region = "ap"
endpoints = [{{ address = "10.3.0.1" }}, {{ address = "2001:db8:3::1" }}]
[pools.sa-web]
region = "sa"
endpoints = [{{ address = "10.4.0.1" }}, {{ address = "2001:db8:4::1" }}]

[zones."example.com"]
file = "example.com.zone"

[zones."example.com".services.www]
pools = ["eu-web", "us-web", "ap-web", "sa-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 2
geo = {{ default = ["us", "eu"], continent = {{ EU = ["eu", "us"], NA = ["us", "eu"], AS = ["ap", "us"], OC = ["ap", "us"], SA = ["sa", "us"], AF = ["eu", "us"] }}{extra} }}

[zones."example.com".services.api]
pools = ["eu-web", "us-web", "ap-web", "sa-web"]
chain = ["healthy", "nearest", "failover", "first_n"]
first_n = 2
"#,
        city = city.display()
    )
}

/// 65,536 /24s: 10.0.0.0/8 is skipped; each /24 is a city of one of the
/// countries, near its capital.
fn networks(rng: &mut fastrand::Rng) -> Vec<mmdb::CityNet> {
    (0..65_536u32)
        .map(|i| {
            let base = 0x0B00_0000u32 + i * 256 * 37;
            let (cont, country, lat, lon) = COUNTRIES[rng.usize(..COUNTRIES.len())];
            let a = std::net::Ipv4Addr::from(base & 0xFFFF_FF00);
            mmdb::CityNet::new(
                &format!("{a}/24"),
                cont,
                country,
                None,
                &format!("City {i}"),
                lat + rng.f64() - 0.5,
                lon + rng.f64() - 0.5,
            )
        })
        .collect()
}

/// A query for `name` (`qtype` as in a text line: "", " A", " AAAA", " MX"),
/// with a /24 client subnet when `ecs` is given.
fn wire_query(name: &str, qtype: &str, ecs: Option<std::net::Ipv4Addr>) -> Vec<u8> {
    let mut q = vec![
        0x12,
        0x34,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(ecs.is_some()),
    ];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    let t: u16 = match qtype.trim() {
        "AAAA" => 28,
        "MX" => 15,
        _ => 1,
    };
    q.extend_from_slice(&t.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if let Some(s) = ecs {
        let o = s.octets();
        // OPT: root, type 41, payload 1232, no flags, one ECS option (/24).
        q.extend_from_slice(&[
            0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0,
        ]);
        q.extend_from_slice(&o[..3]);
    }
    q
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dnstap = args.iter().any(|a| a == "--dnstap");
    let lines: u64 = match args.iter().find(|a| !a.starts_with("--")) {
        Some(n) => n.parse()?,
        None => 1_000_000,
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let dir = std::env::temp_dir().join(format!("geolb-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let real = Path::new("geoip/GeoLite2-City.mmdb");
    let nets = networks(&mut rng);
    let city = if real.exists() {
        std::fs::canonicalize(real)?
    } else {
        let t = Instant::now();
        let p = dir.join("city.mmdb");
        std::fs::write(&p, mmdb::build_city(&nets, mmdb::Layout::GeoIp2))?;
        eprintln!(
            "built {} ({} networks) in {:?}",
            p.display(),
            nets.len(),
            t.elapsed()
        );
        p
    };
    std::fs::write(dir.join("example.com.zone"), ZONE)?;
    std::fs::write(dir.join("geolb.toml"), config(&city, ""))?;
    std::fs::write(
        dir.join("next.toml"),
        config(
            &city,
            r#", country = { GB = ["us", "eu"], BR = ["us", "sa"] }"#,
        ),
    )?;

    // The log: addresses inside the networks (and some anywhere).
    let t = Instant::now();
    let addr = |rng: &mut fastrand::Rng| -> std::net::Ipv4Addr {
        if rng.u8(..10) == 0 {
            std::net::Ipv4Addr::from(rng.u32(..))
        } else {
            let n = &nets[rng.usize(..nets.len())];
            let base: std::net::Ipv4Addr = n
                .cidr
                .split('/')
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
            std::net::Ipv4Addr::from(u32::from(base) | rng.u32(..256))
        }
    };
    let resolvers: Vec<std::net::Ipv4Addr> = (0..100_000).map(|_| addr(&mut rng)).collect();
    let log = dir.join(if dnstap {
        "queries.fstrm"
    } else {
        "queries.log"
    });
    let mut w = std::io::BufWriter::new(std::fs::File::create(&log)?);
    let mut frames = Vec::new();
    if dnstap {
        geolb::dnstap::fstrm::put_control(
            &mut frames,
            geolb::dnstap::fstrm::Control::Start,
            Some(geolb::dnstap::fstrm::CONTENT_TYPE),
        );
        w.write_all(&frames)?;
    }
    let now = std::time::SystemTime::now();
    for i in 0..lines {
        let r = resolvers[rng.usize(..resolvers.len())];
        let name = match rng.u8(..100) {
            0 => "static.example.com",
            1..=40 => "api.example.com.",
            _ => "www.example.com.",
        };
        let qtype = match rng.u8(..100) {
            0 => " MX",
            1..=10 => " AAAA",
            11..=50 => " A",
            _ => "",
        };
        let bad = i % 100_000 == 99_999;
        let ecs = (!bad && rng.u8(..5) == 0).then(|| addr(&mut rng));
        if dnstap {
            frames.clear();
            if bad {
                frames.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
            } else {
                let q = wire_query(name, qtype, ecs);
                let mut resp = q.clone();
                resp[2] |= 0x84;
                for (kind, message) in [
                    (geolb::dnstap::proto::MessageType::AuthQuery, &q),
                    (geolb::dnstap::proto::MessageType::AuthResponse, &resp),
                ] {
                    let rec = geolb::dnstap::encode::Record {
                        kind,
                        tcp: false,
                        client: std::net::SocketAddr::new(r.into(), 40000),
                        server: "192.0.2.53:53".parse()?,
                        query_time: now,
                        response_time: (!kind.is_query()).then_some(now),
                        message,
                    };
                    geolb::dnstap::encode::put_frame(&mut frames, b"ns1", b"geolb", &rec);
                }
            }
            w.write_all(&frames)?;
        } else if bad {
            writeln!(w, "not-an-address {name}")?;
        } else if let Some(s) = ecs {
            writeln!(w, "{r}/{s}/24 {name}{qtype}")?;
        } else {
            writeln!(w, "{r} {name}{qtype}")?;
        }
    }
    if dnstap {
        frames.clear();
        geolb::dnstap::fstrm::put_control(&mut frames, geolb::dnstap::fstrm::Control::Stop, None);
        w.write_all(&frames)?;
    }
    w.flush()?;
    eprintln!(
        "wrote {} ({lines} queries) in {:?}",
        log.display(),
        t.elapsed()
    );

    let t = Instant::now();
    let load = |p: &Path| {
        geolb::snapshot::load_with(p, &Default::default(), 0, None, false)
            .map(|(s, _)| s)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let (cur, next) = (dir.join("geolb.toml"), dir.join("next.toml"));
    let (a, b) = (load(&cur)?, load(&next)?);
    let loaded = t.elapsed();
    let t = Instant::now();
    let f = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(&log)?);
    let report = geolb::sim::replay::replay(
        f,
        &log.display().to_string(),
        (&a, "geolb.toml"),
        (&b, "next.toml"),
        &geolb::sim::replay::ReplayOptions {
            top: 5,
            format: Default::default(),
            health: Default::default(),
        },
    )?;
    let total = t.elapsed();
    print!("{report}");
    println!(
        "\nload {loaded:?}; walk and replay of {lines} lines {total:?} (walk {} ms, replay {} ms)",
        report.timings_ms.walk, report.timings_ms.replay
    );
    println!(
        "with the binary: time geolb replay {} --config {} --against {}",
        log.display(),
        cur.display(),
        next.display()
    );
    Ok(())
}

//! `geolb replay` end to end: the real binary over databases built here and
//! a query log, under the same config (no shift) and under one that moves
//! one country; malformed lines counted and reported.

mod common;

use std::io::Write;
use std::path::Path;

use common::mmdb::{build_city, world, Layout};
use serde_json::Value;

/// `www` and `plain` (which ignores ECS) by continent; `extra` is added to
/// both geo tables (the proposed config's change).
fn config(extra: &str) -> String {
    format!(
        r#"
[server]
dns = ["127.0.0.1:0"]

[geoip]
city = "city.mmdb"

{regions}
[zones."example.com".services.www]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 2
geo = {{ default = ["us", "eu"], continent = {{ EU = ["eu", "us"], NA = ["us", "eu"], AS = ["ap", "us"] }}{extra} }}

[zones."example.com".services.plain]
pools = ["eu-web", "us-web", "ap-web"]
chain = ["healthy", "geo", "failover", "first_n"]
first_n = 2
ecs = false
geo = {{ default = ["us", "eu"], continent = {{ EU = ["eu", "us"], NA = ["us", "eu"], AS = ["ap", "us"] }}{extra} }}
"#,
        regions = common::THREE_REGIONS
    )
}

/// The running config (`geolb.toml`) and one sending Britain to `us`
/// (`next.toml`).
fn write_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::write(p.join("geolb.toml"), config("")).expect("w");
    std::fs::write(
        p.join("next.toml"),
        config(r#", country = { GB = ["us", "eu"] }"#),
    )
    .expect("w");
    std::fs::write(p.join("example.com.zone"), common::TIER_ZONE).expect("w");
    std::fs::write(p.join("city.mmdb"), build_city(&world(), Layout::GeoIp2)).expect("w");
    dir
}

/// Frankfurt (192.0.2.0/24), London (81.0.0.0/16) and Tokyo
/// (203.0.113.0/24) resolvers; a Frankfurt resolver forwarding a London
/// subnet; a London subnet alone; a type and a name not replayed.
const LOG: &str = "\
# resolvers in Frankfurt, London, Tokyo
192.0.2.1 www.example.com
192.0.2.2 www.example.com. A
192.0.2.2 WWW.Example.com AAAA

81.0.0.1 www.example.com
81.0.0.1 www.example.com
81.0.0.1 www.example.com A  # trailing comment
81.0.5.5 www.example.com AAAA
81.0.5.5 www.example.com AAAA
203.0.113.9 www.example.com
192.0.2.1/81.0.9.0/24 www.example.com
192.0.2.1/81.0.9.0/24 plain.example.com
81.0.7.0/24 www.example.com
198.51.100.1 www.example.com MX
198.51.100.1 static.example.com
";

/// Runs `geolb replay LOG --config geolb.toml --against OTHER --json`,
/// feeding `stdin` when LOG is `-`.
fn replay(dir: &Path, log: &str, against: &str, stdin: Option<&[u8]>) -> Value {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["--log-level", "warn", "replay", log, "--config"])
        .arg(dir.join("geolb.toml"))
        .arg("--against")
        .arg(dir.join(against))
        .arg("--json")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run geolb replay");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or_default()).expect("write");
    drop(input);
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The matrix as (from, to, queries, resolvers), in report order.
fn cells(v: &Value) -> Vec<(String, String, u64, u64)> {
    v.as_array()
        .expect("cells")
        .iter()
        .map(|c| {
            (
                c["from"].as_str().expect("from").to_string(),
                c["to"].as_str().expect("to").to_string(),
                c["queries"].as_u64().expect("queries"),
                c["resolvers"].as_u64().expect("resolvers"),
            )
        })
        .collect()
}

fn cell(from: &str, to: &str, queries: u64, resolvers: u64) -> (String, String, u64, u64) {
    (from.to_string(), to.to_string(), queries, resolvers)
}

#[test]
fn the_same_config_predicts_no_shift() {
    let dir = write_dir();
    let log = dir.path().join("queries.log");
    std::fs::write(&log, LOG).expect("w");
    let r = replay(dir.path(), log.to_str().expect("path"), "geolb.toml", None);
    assert_eq!(r["queries"], 14);
    assert_eq!(r["replayed"], 12);
    assert_eq!(r["other_types"], 1);
    assert_eq!(r["not_a_service"], 1);
    assert_eq!(r["bad"], 0);
    assert_eq!(r["moved"]["queries"], 0);
    assert_eq!(r["moved"]["resolvers"], 0);
    assert_eq!(r["resolvers"], 6);
    assert_eq!(
        cells(&r["matrix"]),
        vec![cell("eu", "eu", 11, 5), cell("ap", "ap", 1, 1)]
    );
    assert_eq!(r["countries"], serde_json::json!([]));
}

#[test]
fn moving_one_country_moves_exactly_its_queries_and_resolvers() {
    let dir = write_dir();
    // From standard input.
    let r = replay(dir.path(), "-", "next.toml", Some(LOG.as_bytes()));
    assert_eq!(r["log"], "(stdin)");
    assert_eq!(r["replayed"], 12);
    // London: three and two queries of two resolvers, one forwarded by a
    // Frankfurt resolver (ECS), one subnet alone; `plain` ignores the
    // forwarded subnet and stays.
    assert_eq!(r["moved"]["queries"], 7);
    assert_eq!(r["moved"]["resolvers"], 4);
    assert_eq!(
        cells(&r["matrix"]),
        vec![
            cell("eu", "us", 7, 4),
            cell("eu", "eu", 4, 2),
            cell("ap", "ap", 1, 1)
        ]
    );
    let countries = r["countries"].as_array().expect("countries");
    assert_eq!(countries.len(), 1, "{countries:?}");
    let gb = &countries[0];
    assert_eq!(gb["country"], "GB");
    assert_eq!(gb["queries"], 8);
    assert_eq!(gb["moved"], 7);
    assert_eq!(gb["resolvers"], 4);
    assert_eq!(cells(&gb["moves"]), vec![cell("eu", "us", 7, 4)]);
}

#[test]
fn malformed_lines_are_counted_and_reported_and_the_rest_replayed() {
    let dir = write_dir();
    let log = dir.path().join("queries.log");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"81.0.0.1 www.example.com\n");
    bytes.extend_from_slice(b"81.0.0.300 www.example.com\n");
    bytes.extend_from_slice(b"81.0.0.1\n");
    bytes.extend_from_slice(b"81.0.0.1 www.example.com A B\n");
    bytes.extend_from_slice(b"81.0.0.1 \xff\xfe.example.com\n");
    bytes.extend_from_slice(b"192.0.2.1/81.0.0.0/99 www.example.com\n");
    bytes.extend_from_slice(b"203.0.113.9 www.example.com\r\n");
    bytes.extend_from_slice(b"81.0.0.2 www.example.com");
    std::fs::write(&log, bytes).expect("w");
    let r = replay(dir.path(), log.to_str().expect("path"), "next.toml", None);
    assert_eq!(r["lines"], 8);
    assert_eq!(r["bad"], 5);
    assert_eq!(r["replayed"], 3);
    assert_eq!(r["moved"]["queries"], 2);
    let lines: Vec<u64> = r["bad_lines"]
        .as_array()
        .expect("bad_lines")
        .iter()
        .map(|b| b["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6]);
    assert_eq!(r["bad_lines"][0]["text"], "81.0.0.300 www.example.com");
    assert!(r["bad_lines"][0]["error"]
        .as_str()
        .expect("error")
        .contains("not an IP address"));
}

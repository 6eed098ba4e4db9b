//! `geolb replay` end to end: the real binary over databases built here and
//! a query log, under the same config (no shift) and under one that moves
//! one country; malformed lines counted and reported.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::mmdb::{build_city, world, Layout};
use serde_json::Value;

/// `www` and `plain` (which ignores ECS) by continent; `extra` is added to
/// both geo tables (the proposed config's change).
fn config(extra: &str) -> String {
    format!(
        r#"
[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:0"

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
    run_replay(dir, log, against, stdin, &[])
}

/// [`replay`] from a file, with more arguments.
fn replay_with(dir: &Path, log: &str, against: &str, args: &[&str]) -> Value {
    run_replay(dir, log, against, None, args)
}

fn run_replay(dir: &Path, log: &str, against: &str, stdin: Option<&[u8]>, args: &[&str]) -> Value {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["--log-level", "warn", "replay", log, "--config"])
        .arg(dir.join("geolb.toml"))
        .arg("--against")
        .arg(dir.join(against))
        .args(args)
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

/// A log written by Knot DNS 3.2's `mod-dnstap` (log-queries and
/// log-responses on), from `kdig` queries on 127.0.0.1: `www` A; `www` AAAA
/// with subnet 81.0.9.0/24 (London); `www` A over TCP with 203.0.113.0/24
/// (Tokyo); `plain` A with 81.0.7.0/24; `www` MX. Ten frames: each query
/// and its response.
const KNOT_DNSTAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/knot.dnstap");

#[test]
fn a_dnstap_log_written_by_knot_is_replayed_from_its_queries() {
    let dir = write_dir();
    let r = replay(dir.path(), KNOT_DNSTAP, "next.toml", None);
    assert_eq!(r["format"], "dnstap");
    assert_eq!(r["lines"], 10);
    assert_eq!(r["bad"], 0, "{r}");
    assert_eq!(r["truncated"], Value::Null);
    // Each query once: the responses are not replayed again.
    assert_eq!(r["queries"], 5);
    assert_eq!(r["other_messages"], 5);
    assert_eq!(r["other_types"], 1);
    assert_eq!(r["replayed"], 4);
    // The London subnet moves; `plain` ignores its subnet and is decided
    // from the resolver, as `www` A without one.
    assert_eq!(r["moved"]["queries"], 1);
    assert_eq!(r["resolvers"], 1);
    let gb = &r["countries"][0];
    assert_eq!(gb["country"], "GB");
    assert_eq!(cells(&gb["moves"]), vec![cell("eu", "us", 1, 1)]);
}

/// `LOG`'s queries (those with a resolver: every form but a subnet alone)
/// as a dnstap file: each as an AUTH_QUERY and its AUTH_RESPONSE, over UDP
/// and TCP, the client subnet in an OPT record.
fn dnstap_of_log() -> Vec<u8> {
    use geolb::dnstap::encode::{file, Record};
    use geolb::dnstap::proto::MessageType;
    let mut msgs = Vec::new();
    for line in LOG.lines() {
        let Ok(Some(q)) = geolb::sim::replay::parse_line(line) else {
            continue;
        };
        let (resolver, ecs) = match q.from {
            geolb::sim::replay::From::Resolver(a) => (a, None),
            geolb::sim::replay::From::Ecs(a, s, p) => (a, Some((s, p))),
            geolb::sim::replay::From::Subnet(..) => continue,
        };
        let qtype = match line.split_whitespace().nth(2).map(str::to_ascii_uppercase) {
            None => hickory_proto::rr::RecordType::A,
            Some(t) => t.parse().expect("type"),
        };
        let mut m = hickory_proto::op::Message::query();
        m.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii(q.name).expect("name"),
            qtype,
        ));
        if let Some((s, p)) = ecs {
            let mut edns = hickory_proto::op::Edns::new();
            edns.options_mut()
                .insert(hickory_proto::rr::rdata::opt::EdnsOption::Subnet(
                    hickory_proto::rr::rdata::opt::ClientSubnet::new(s, p, 0),
                ));
            m.set_edns(edns);
        }
        let query = m.to_vec().expect("encode");
        let mut response = query.clone();
        response[2] |= 0x84;
        msgs.push((resolver, query, response));
    }
    let t = std::time::SystemTime::now();
    let mut records = Vec::new();
    for (i, (resolver, query, response)) in msgs.iter().enumerate() {
        let client = std::net::SocketAddr::new(*resolver, 40000 + i as u16);
        let server = "192.0.2.53:53".parse().expect("addr");
        for (kind, message) in [
            (MessageType::AuthQuery, query),
            (MessageType::AuthResponse, response),
        ] {
            records.push(Record {
                kind,
                tcp: i % 2 == 1,
                client,
                server,
                query_time: t,
                response_time: (!kind.is_query()).then_some(t),
                message,
            });
        }
    }
    file(b"ns1", b"geolb", &records)
}

#[test]
fn a_dnstap_log_replays_as_the_same_queries_in_text() {
    let dir = write_dir();
    let text: String = LOG
        .lines()
        .filter(|l| !matches!(geolb::sim::replay::parse_line(l), Ok(Some(q)) if matches!(q.from, geolb::sim::replay::From::Subnet(..))))
        .map(|l| format!("{l}\n"))
        .collect();
    let t = replay(dir.path(), "-", "next.toml", Some(text.as_bytes()));
    let bytes = dnstap_of_log();
    // From standard input, recognised by its START frame.
    let d = replay(dir.path(), "-", "next.toml", Some(&bytes));
    assert_eq!(d["format"], "dnstap");
    assert_eq!(d["queries"], 13);
    assert_eq!(d["other_messages"], 13);
    for k in [
        "queries",
        "replayed",
        "other_types",
        "not_a_service",
        "resolvers",
    ] {
        assert_eq!(d[k], t[k], "{k}");
    }
    assert_eq!(d["moved"], t["moved"]);
    assert_eq!(d["matrix"], t["matrix"]);
    assert_eq!(d["countries"], t["countries"]);
    // From a file, the format named.
    let log = dir.path().join("tap.fstrm");
    std::fs::write(&log, &bytes).expect("w");
    let f = replay_with(
        dir.path(),
        log.to_str().expect("path"),
        "next.toml",
        &["--format", "dnstap"],
    );
    assert_eq!(f["matrix"], t["matrix"]);
}

#[test]
fn a_dnstap_log_cut_short_replays_what_came_before_and_bad_frames_are_counted() {
    let dir = write_dir();
    let mut bytes = dnstap_of_log();
    // A frame that is not a dnstap message, then the stream cut inside the
    // next frame (no STOP).
    bytes.truncate(bytes.len() - 12);
    bytes.extend_from_slice(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
    bytes.extend_from_slice(&[0, 0, 0, 100]);
    bytes.extend_from_slice(&[0x08; 20]);
    let log = dir.path().join("cut.fstrm");
    std::fs::write(&log, &bytes).expect("w");
    let r = replay(dir.path(), log.to_str().expect("path"), "geolb.toml", None);
    assert_eq!(r["bad"], 1);
    assert_eq!(
        r["bad_lines"][0]["error"]
            .as_str()
            .map(|e| e.starts_with("not a dnstap message")),
        Some(true)
    );
    assert!(
        r["truncated"]
            .as_str()
            .expect("truncated")
            .contains("inside a data frame"),
        "{r}"
    );
    // Every query before the cut is replayed.
    assert_eq!(r["queries"], 13);
    assert_eq!(r["moved"]["queries"], 0);
    // Not dnstap at all, named so: an error.
    let text = dir.path().join("text.log");
    std::fs::write(&text, LOG).expect("w");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args([
            "replay",
            text.to_str().expect("path"),
            "--format",
            "dnstap",
            "--config",
        ])
        .arg(dir.path().join("geolb.toml"))
        .arg("--against")
        .arg(dir.path().join("geolb.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a dnstap log"));
}

/// The server's own dnstap log (every exchange sampled) of queries over UDP
/// and TCP, with and without a client subnet, replays to exactly those
/// queries: no shift under its own config, London's subnets moving under
/// the proposed one.
#[test]
fn the_servers_own_dnstap_log_replays_its_queries() {
    use hickory_proto::op::{Edns, Message, Query};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name, RecordType};
    let dir = write_dir();
    let cfg = dir.path().join("geolb.toml");
    let mut text = std::fs::read_to_string(&cfg).expect("read");
    text.push_str("\n[dnstap]\npath = \"tap.fstrm\"\nsample = 1.0\nidentity = \"ns1\"\n");
    std::fs::write(&cfg, text).expect("w");
    let mut ts = common::TestServer::start_dir(dir);
    // (subnet, type, over TCP): London, Tokyo, Frankfurt, none.
    let subnets = [
        Some("81.0.9.0"),
        Some("203.0.113.0"),
        Some("192.0.2.0"),
        None,
    ];
    let n = 40;
    for i in 0..n {
        let mut m = Message::query();
        m.metadata.id = common::rand_id();
        let qtype = if i % 3 == 0 {
            RecordType::AAAA
        } else {
            RecordType::A
        };
        m.add_query(Query::query(
            Name::from_ascii("www.example.com.").expect("name"),
            qtype,
        ));
        if let Some(s) = subnets[i % subnets.len()] {
            let mut edns = Edns::new();
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(
                    s.parse().expect("subnet"),
                    24,
                    0,
                )));
            m.set_edns(edns);
        }
        let r = if i % 2 == 0 {
            common::udp(ts.dns, &m)
        } else {
            common::tcp(ts.dns, &m)
        };
        assert!(!r.answers.is_empty(), "{r:?}");
    }
    let status = ts
        .shared()
        .source
        .load()
        .dnstap
        .as_ref()
        .expect("dnstap on")
        .status();
    assert_eq!(status.sample, 1.0);
    let tap = ts.path("tap.fstrm");
    // Stopping ends the stream with STOP.
    let shared = ts.shared();
    ts.stop();
    drop(shared);
    common::wait_for(Duration::from_secs(5), || {
        std::fs::read(&tap).is_ok_and(|b| b.ends_with(&[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3]))
    })
    .expect("the log ends with STOP");
    let log = tap.to_str().expect("path");
    let r = replay(ts.dir.path(), log, "geolb.toml", None);
    assert_eq!(r["truncated"], Value::Null, "{r}");
    assert_eq!(r["bad"], 0);
    assert_eq!(r["queries"], n as u64);
    assert_eq!(r["replayed"], n as u64);
    assert_eq!(r["other_messages"], n as u64);
    assert_eq!(r["moved"]["queries"], 0);
    assert_eq!(r["resolvers"], 1);
    // Under next.toml, London's subnets (every fourth query) move.
    let r = replay(ts.dir.path(), log, "next.toml", None);
    assert_eq!(r["moved"]["queries"], (n / 4) as u64);
    // What was written: each exchange as AUTH_QUERY then AUTH_RESPONSE,
    // UDP and TCP, from the client's address and port to the server's.
    let bytes = std::fs::read(&tap).expect("read");
    let mut frames = geolb::dnstap::fstrm::FrameReader::start(&bytes[..]).expect("start");
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    while frames.next(&mut buf).expect("frame") == geolb::dnstap::fstrm::Next::Data {
        use prost::Message as _;
        let d = geolb::dnstap::proto::Dnstap::decode(&buf[..]).expect("dnstap");
        assert_eq!(d.identity.as_deref(), Some(&b"ns1"[..]));
        let m = d.message.expect("message");
        assert_eq!(m.query_address.as_deref(), Some(&[127, 0, 0, 1][..]));
        assert_eq!(m.response_port, Some(u32::from(ts.dns.port())));
        assert!(m.query_port.is_some_and(|p| p > 0));
        seen.push((m.r#type, m.socket_protocol.expect("protocol")));
    }
    assert_eq!(seen.len(), 2 * n);
    assert_eq!(seen[0], (1, 1), "AUTH_QUERY over UDP first");
    assert_eq!(
        seen.iter().filter(|(t, p)| *t == 2 && *p == 2).count(),
        n / 2,
        "TCP responses"
    );
}

/// A health scenario on the running config: the queries of the region
/// taken down move to where failover sends them, the rest stay; the shares
/// of the log's queries before and after add up; `geolb simulate --queries`
/// weighs the same scenario by the same log and says the same; a replay
/// with nothing to compare is refused.
#[test]
fn a_region_down_moves_exactly_its_queries_and_simulate_weighs_by_the_log() {
    let dir = write_dir();
    let log = dir.path().join("queries.log");
    std::fs::write(&log, LOG).expect("w");
    let log = log.to_str().expect("path");
    let r = replay_with(dir.path(), log, "geolb.toml", &["--down", "eu"]);
    assert_eq!(r["health"], "down: eu");
    assert_eq!(r["replayed"], 12);
    assert_eq!(
        cells(&r["matrix"]),
        vec![cell("eu", "us", 11, 5), cell("ap", "ap", 1, 1)]
    );
    assert_eq!(r["moved"]["queries"], 11);
    let shares: Vec<(String, u64, u64)> = r["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| {
            (
                s["region"].as_str().expect("region").to_string(),
                s["before"].as_u64().expect("before"),
                s["after"].as_u64().expect("after"),
            )
        })
        .collect();
    assert_eq!(
        shares,
        vec![
            ("us".to_string(), 0, 11),
            ("ap".to_string(), 1, 1),
            ("eu".to_string(), 11, 0)
        ]
    );
    assert_eq!(r["shares"][0]["after_percent"], 91.67);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["--log-level", "warn", "simulate", "--config"])
        .arg(dir.path().join("geolb.toml"))
        .args(["--queries", log, "--down", "eu", "--json"])
        .output()
        .expect("run geolb simulate");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let s: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["matrix"], r["matrix"]);
    assert_eq!(s["shares"], r["shares"]);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["--log-level", "warn", "replay", log, "--config"])
        .arg(dir.path().join("geolb.toml"))
        .output()
        .expect("run geolb replay");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--against"));
}

//! Capacity-aware spill end to end: two regions on their own loopback
//! ranges (eu on 127.0.1.0/24, us on 127.0.2.0/24) with real tier
//! listeners and backends on a tier-only node, a DNS-only node that reads
//! the tier node's load from its `/v1/observations`, and a load generator
//! that holds connections open through eu's VIP past its high watermark.
//! Answers for a set of client subnets spill to us within a few polls,
//! the share moves no faster than `max_step` per TTL, no subnet flips back
//! and forth, and eu comes back gradually once the load is gone. Also,
//! without the network: which subnets spill, the ECS scope of a split
//! answer, the fail-open when every region spills, and `geolb check`'s
//! errors for the new keys.

use crate::common;

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{RData, RecordType};

const EU: &str = "127.0.1.1";
const US: &str = "127.0.2.1";
/// How often the DNS node reads the tier node.
const POLL_MS: u64 = 200;
const MAX_STEP: f64 = 0.5;
const HIGH: f64 = 0.8;

/// A backend on `ip` that accepts connections and holds each until the
/// other side closes it.
fn holding_backend(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind backend");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

/// What the tier node and the DNS node share: the regions (eu can carry
/// 20 connections, us 1000), one pool each on the tier VIP, the service
/// (TTL 1 s) and the tier's listeners and groups.
fn shared(eu_backend: SocketAddr, us_backend: SocketAddr) -> String {
    format!(
        r#"
[zones."example.com"]
file = "example.com.zone"

[regions.eu]
location = [50.1, 8.7]
capacity = {{ connections = 20 }}
[regions.us]
location = [39.0, -77.5]
capacity = {{ connections = 1000, rps = 10000 }}

[pools.eu-web]
region = "eu"
endpoints = [{{ address = "{EU}" }}]
[pools.us-web]
region = "us"
endpoints = [{{ address = "{US}" }}]

[zones."example.com".services.www]
ttl = 1
pools = ["eu-web", "us-web"]
chain = ["healthy", "capacity", "failover"]
capacity = {{ low = 0.5, high = {HIGH}, max_step = {MAX_STEP} }}

[listeners.eu-tcp]
region = "eu"
bind = "{EU}:0"
group = "eu-app"
[listeners.us-tcp]
region = "us"
bind = "{US}:0"
group = "us-app"

[groups.eu-app]
region = "eu"
members = [{{ address = "{eu_backend}" }}]
[groups.us-app]
region = "us"
members = [{{ address = "{us_backend}" }}]
"#
    )
}

fn node(config: String) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), TIER_ZONE).expect("zone");
    std::fs::write(dir.path().join("geolb.toml"), config).expect("config");
    TestServer::start_dir(dir)
}

fn json(admin: SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = http(admin, "GET", path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// The client subnets sampled: 10.9.i.0/24.
fn subnet(i: u8) -> IpAddr {
    IpAddr::from([10, 9, i, 0])
}

/// `www.example.com A` for the client subnet `net`/`prefix`: the address
/// answered and the ECS scope.
fn ask(dns: SocketAddr, net: IpAddr, prefix: u8) -> (String, u8) {
    let mut q = query("www.example.com.", RecordType::A);
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(net, prefix, 0)));
    q.edns = Some(e);
    scoped(&udp(dns, &q))
}

fn scoped(r: &Message) -> (String, u8) {
    let addr = r
        .answers
        .iter()
        .find_map(|a| match &a.data {
            RData::A(x) => Some(x.to_string()),
            _ => None,
        })
        .unwrap_or_default();
    (addr, ecs_scope(r).unwrap_or(255))
}

/// What the DNS node steers by: eu's load, its share for www and when the
/// share last moved (by the node's clock), and who reported the load.
fn eu_state(dns_admin: SocketAddr) -> (Option<f64>, (f64, f64), Vec<String>) {
    let cap = json(dns_admin, "/v1/health")["capacity"].clone();
    let eu = cap["regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["region"] == "eu"))
        .cloned()
        .unwrap_or_default();
    let group = cap["services"][0]["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["group"] == "eu"))
        .cloned()
        .expect("eu share");
    let share = (
        group["share"].as_f64().expect("share"),
        group["moved_at"].as_f64().unwrap_or(0.0),
    );
    let reporters = eu["reporters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (eu["load"].as_f64(), share, reporters)
}

/// One sampling round: when, eu's load and share on the DNS node, and
/// each subnet's answer and scope.
struct Round {
    at: Duration,
    load: Option<f64>,
    share: f64,
    /// When the node last moved the share (its clock).
    moved_at: f64,
    /// The share was the same after the round's queries as before them
    /// (the node may move it while the 64 queries are asked).
    stable: bool,
    answers: Vec<(String, u8)>,
}

impl Round {
    fn on(&self, vip: &str) -> usize {
        self.answers.iter().filter(|a| a.0 == vip).count()
    }
}

const SUBNETS: u8 = 64;

fn round(t0: Instant, dns: SocketAddr, admin: SocketAddr) -> Round {
    let (load, (share, moved_at), _) = eu_state(admin);
    let answers = (0..SUBNETS).map(|i| ask(dns, subnet(i), 24)).collect();
    let (_, (share_after, _), _) = eu_state(admin);
    std::thread::sleep(Duration::from_millis(50));
    Round {
        at: t0.elapsed(),
        load,
        share,
        moved_at,
        stable: share_after == share,
        answers,
    }
}

#[test]
fn a_tier_over_its_high_watermark_spills_answers_gradually_without_flapping_and_gets_them_back() {
    let eu_backend = holding_backend("127.0.1.11");
    let us_backend = holding_backend("127.0.2.11");
    let shared = shared(eu_backend, us_backend);
    let tier = node(format!(
        "[server]\nadmin = \"127.0.0.1:0\"\n[node]\ndns = false\n{shared}"
    ));
    let tier_admin = tier.admin.expect("tier admin");
    let dns = node(format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n\
         [node]\nregions = []\n\
         [health]\nvantage = \"dns\"\nfresh_for = \"2s\"\npoll_interval = \"{POLL_MS}ms\"\n\
         [health.vantages.tier]\nurl = \"http://{tier_admin}\"\nvotes = false\n{shared}"
    ));
    let admin = dns.admin.expect("dns admin");
    let vip = *tier
        .server()
        .tier
        .local_addrs()
        .get("eu-tcp")
        .expect("eu listener");

    // The DNS node reads the tier node's load (a vantage that does not vote).
    let heard = wait_for(Duration::from_secs(5), || {
        eu_state(admin).2 == ["tier"] && eu_state(admin).0.is_some()
    });
    assert!(heard.is_some(), "{}", json(admin, "/v1/health")["capacity"]);
    let h = json(admin, "/v1/health");
    assert_eq!(
        h["quorum"], 1,
        "a vantage that does not vote counts in no quorum"
    );
    assert_eq!(h["vantages"][0]["votes"], false);
    let t0 = Instant::now();
    let base = round(t0, dns.dns, admin);
    assert_eq!(base.on(EU), SUBNETS as usize, "all on eu while it is quiet");
    assert!(
        base.answers.iter().all(|a| a.1 == 0),
        "no split, no dependence on the subnet"
    );

    // 40 connections held through eu's VIP: twice its capacity.
    let generator: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(vip).expect("connect through eu"))
        .collect();
    let mut rounds = vec![base];
    let over = Instant::now();
    while over.elapsed() < Duration::from_secs(12) {
        let r = round(t0, dns.dns, admin);
        let done = r.on(US) * 10 >= SUBNETS as usize * 8;
        rounds.push(r);
        if done {
            break;
        }
    }
    let spilled_rounds = rounds.len();
    let tier_view = json(tier_admin, "/v1/tier");
    let eu_tier = tier_view["regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["region"] == "eu"))
        .cloned()
        .expect("the tier node shows eu's load");
    assert!(eu_tier["load"].as_f64().unwrap_or(0.0) > HIGH, "{eu_tier}");
    let explain = json(
        admin,
        "/v1/explain?name=www.example.com&type=A&subnet=10.9.3.0/24",
    );
    let spec = geolb::explain::ClientSpec::parse("10.9.3.0/24").expect("subnet");
    let text = geolb::explain::explain(
        &dns.shared().source.load_full(),
        "www.example.com",
        "A",
        spec,
    )
    .expect("explain");
    eprintln!("{text}");
    drop(generator);
    let calm = Instant::now();
    while calm.elapsed() < Duration::from_secs(15) {
        let r = round(t0, dns.dns, admin);
        let back = r.on(EU) == SUBNETS as usize && r.share == 1.0;
        rounds.push(r);
        if back {
            break;
        }
    }

    // Spilled, to most subnets, within a few polls of the load passing high.
    let overload: Vec<&Round> = rounds[..spilled_rounds].iter().collect();
    // Recovery: from the fewest subnets on eu after the generator stopped
    // (the load goes on falling through high a moment after it stops).
    let after = &rounds[spilled_rounds - 1..];
    let fewest = after.iter().map(|r| r.on(EU)).min().unwrap_or(0);
    let turn = after.iter().position(|r| r.on(EU) == fewest).unwrap_or(0);
    let recovery: Vec<&Round> = after[turn..].iter().collect();
    let end = overload[overload.len() - 1];
    assert!(
        end.on(US) * 10 >= SUBNETS as usize * 8,
        "{} on us",
        end.on(US)
    );
    let passed = overload
        .iter()
        .find(|r| r.load.is_some_and(|l| l > HIGH))
        .expect("eu's load passed high");
    let first = overload.iter().find(|r| r.on(US) > 0).expect("spilled");
    assert!(
        first.at.saturating_sub(passed.at) <= Duration::from_millis(5 * POLL_MS),
        "spilled {:?} after the load passed high",
        first.at.saturating_sub(passed.at)
    );
    // The share moved at most max_step per TTL (1 s), by the node's own
    // clock: between the times it says it moved the two shares read (unix
    // seconds in an f64 are good to a microsecond or so).
    for w in rounds.windows(2).filter(|w| w[0].moved_at > 0.0) {
        let dt = w[1].moved_at - w[0].moved_at;
        assert!(
            (w[1].share - w[0].share).abs() <= MAX_STEP * dt + 1e-6,
            "share {} -> {} in {dt}s",
            w[0].share,
            w[1].share
        );
    }
    // No subnet flipped back and forth: while the load was high, answers
    // only moved eu -> us; after it fell, only us -> eu.
    let left = |rs: &[&Round], from: &str| -> usize {
        (0..SUBNETS as usize)
            .filter(|&i| {
                rs.windows(2)
                    .any(|w| w[0].answers[i].0 == from && w[1].answers[i].0 != from)
            })
            .count()
    };
    assert_eq!(
        left(&overload, US),
        0,
        "a subnet came back to eu under load"
    );
    // Over the whole run, each subnet left eu at most once and came back
    // at most once (the load keeps falling a moment after the generator
    // stops, so some subnets still leave then).
    for i in 0..SUBNETS as usize {
        let mut seen: Vec<&str> = Vec::new();
        for r in &rounds {
            let a = r.answers[i].0.as_str();
            if seen.last() != Some(&a) {
                seen.push(a);
            }
        }
        assert!(
            [EU, US, EU].starts_with(&seen),
            "subnet {} went {seen:?}",
            subnet(i as u8)
        );
    }
    // Back gradually: every subnet on eu at the end, through rounds with
    // some back and some not, never fewer than the round before.
    for r in &rounds {
        eprintln!(
            "{:>6.2}s load {:>5} share {:.3}: {} on eu",
            r.at.as_secs_f64(),
            r.load.map_or("-".into(), |l| format!("{l:.2}")),
            r.share,
            r.on(EU)
        );
    }
    let last = recovery[recovery.len() - 1];
    assert_eq!(last.on(EU), SUBNETS as usize, "eu got its clients back");
    assert!(
        recovery
            .iter()
            .any(|r| r.on(EU) > 0 && r.on(EU) < SUBNETS as usize),
        "all at once"
    );
    assert!(recovery.windows(2).all(|w| w[1].on(EU) >= w[0].on(EU)));
    // A split answer depends on the client's /24 and says so; with nothing
    // split (all on eu at the start and the end) it depends on nothing.
    // (Only rounds that one share answered: the node may move it mid-round.)
    for r in rounds
        .iter()
        .filter(|r| r.stable && r.on(EU) > 0 && r.on(US) > 0)
    {
        assert!(
            r.answers.iter().all(|a| a.1 == 24),
            "split round (share {}): scopes {:?}",
            r.share,
            r.answers.iter().map(|a| a.1).collect::<Vec<_>>()
        );
    }
    assert!(
        last.answers.iter().all(|a| a.1 == 0),
        "whole again: scope 0"
    );
    // Explain showed the load it used and why eu spilled.
    let cap = &explain["service"]["capacity"][0];
    assert_eq!(cap["group"], "eu", "{explain}");
    assert!(cap["load"].as_f64().unwrap_or(0.0) > HIGH, "{explain}");
    assert!(
        cap["connections"].as_f64().unwrap_or(0.0) > 16.0,
        "{explain}"
    );
    let step = explain["trace"]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["step"] == "capacity"))
        .cloned()
        .expect("capacity step traced");
    assert!(
        step["detail"].as_str().unwrap_or("").contains("load"),
        "{step}"
    );
}

/// A snapshot of [`shared`]'s regions and service (no tier runs) with
/// eu's and us's shares set by hand.
fn snapshot_with_shares(eu: f64, us: f64) -> (tempfile::TempDir, geolb::snapshot::Snapshot) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), TIER_ZONE).expect("zone");
    let any = SocketAddr::from(([127, 0, 0, 1], 1));
    let path = dir.path().join("geolb.toml");
    let cfg = geolb::config::Config::parse(&path, &shared(any, any)).expect("config");
    let (mut snap, _) = geolb::snapshot::build(cfg, 1, None).expect("snapshot");
    let mut view = (*snap.health).clone();
    view.shares[0][0].share = eu;
    view.shares[0][1].share = us;
    snap.set_health(view);
    (dir, snap)
}

/// The answer and ECS scope for client subnet `net`/`prefix`, from the
/// answer path itself.
fn answer(snap: &geolb::snapshot::Snapshot, net: [u8; 4], prefix: u8) -> (String, u8) {
    let q = common::steering::query(b"\x03www\x07example\x03com\x00", 1, Some((net, prefix)));
    let mut out = Vec::new();
    let outcome = geolb::dns::answer::handle(
        snap,
        &q,
        IpAddr::from([127, 0, 0, 1]),
        geolb::dns::answer::Transport::Udp,
        &mut out,
        &mut geolb::policy::Scratch::seeded(1),
    );
    assert_eq!(outcome, geolb::dns::answer::Outcome::Reply);
    scoped(&Message::from_vec(&out).expect("reply"))
}

#[test]
fn rfc7871_7_2_1_a_split_share_spills_each_subnet_one_way_and_the_scope_covers_the_hashed_subnet() {
    let (_d, half) = snapshot_with_shares(0.5, 1.0);
    let subnets: Vec<[u8; 4]> = (0..=255u8).map(|i| [10, 7, i, 0]).collect();
    let got: Vec<(String, u8)> = subnets.iter().map(|&n| answer(&half, n, 24)).collect();
    let on_us = got.iter().filter(|a| a.0 == US).count();
    assert!(
        (100..=156).contains(&on_us),
        "{on_us} of 256 spilled at share 0.5"
    );
    assert!(
        got.iter().all(|a| a.1 == 24),
        "the answer depends on the /24"
    );
    // Every address of a /24 gets its subnet's answer (that is what /24
    // promises), and a longer source prefix changes nothing.
    for (i, &n) in subnets.iter().enumerate().take(32) {
        for host in [1u8, 77, 255] {
            let (a, scope) = answer(&half, [n[0], n[1], n[2], host], 32);
            assert_eq!((a.as_str(), scope), (got[i].0.as_str(), 24));
        }
    }
    // A shorter source prefix: the scope never claims more than was sent.
    assert_eq!(answer(&half, [10, 7, 0, 0], 16).1, 16);
    // A lower share keeps a subset of the same subnets.
    let (_d, low) = snapshot_with_shares(0.2, 1.0);
    for (i, &n) in subnets.iter().enumerate() {
        let (a, _) = answer(&low, n, 24);
        assert!(
            a == US || got[i].0 == EU,
            "{n:?} came back at a lower share"
        );
    }
    // Nothing split, nothing to depend on: eu shed, eu whole, both shed
    // (every region past capacity: answer as if none were, fail open).
    for (eu, us, want) in [(0.0, 1.0, US), (1.0, 1.0, EU), (0.0, 0.0, EU)] {
        let (_d, s) = snapshot_with_shares(eu, us);
        for &n in subnets.iter().take(64) {
            assert_eq!(answer(&s, n, 24), (want.to_string(), 0), "shares {eu}/{us}");
        }
    }
}

#[test]
fn check_refuses_bad_capacity_keys_and_a_capacity_step_after_failover_at_their_lines() {
    let any = SocketAddr::from(([127, 0, 0, 1], 1));
    let good = shared(any, any);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), TIER_ZONE).expect("zone");
    let path = dir.path().join("geolb.toml");
    for (from, to, want) in [
        (
            "low = 0.5, high = 0.8",
            "low = 0.9, high = 0.8",
            "capacity.low = 0.9 must be below capacity.high = 0.8",
        ),
        (
            "low = 0.5, high = 0.8",
            "low = 0.5, high = 2.0",
            "capacity.high = 2: expected a fraction of capacity in (0, 1.5]",
        ),
        ("max_step = 0.5", "max_step = 0", "capacity.max_step = 0"),
        (
            "capacity = { connections = 20 }",
            "capacity = { connections = -5 }",
            "regions.eu.capacity.connections = -5: expected a number above 0",
        ),
        (
            "capacity = { connections = 20 }",
            "capacity = { }",
            "regions.eu.capacity: give connections = N, rps = N or both",
        ),
        (
            "capacity = { connections = 20 }",
            "capacity = { connection = 20 }",
            "unknown field `connection`",
        ),
        (
            r#"chain = ["healthy", "capacity", "failover"]"#,
            r#"chain = ["healthy", "failover", "capacity"]"#,
            "step \"capacity\" must come before \"failover\"",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        std::fs::write(&path, good.replacen(from, to, 1)).expect("config");
        let (code, out) = check(&path);
        assert_eq!(code, Some(1), "{to}: {out}");
        let line = out
            .lines()
            .find(|l| l.contains(want))
            .unwrap_or_else(|| panic!("{to}: no {want:?} in {out}"));
        assert!(
            line.contains("geolb.toml:") && line.contains(": error: "),
            "{line}"
        );
    }
    std::fs::write(&path, &good).expect("config");
    assert_eq!(check(&path).0, Some(0));
    // A capacity step with no region to judge is a warning, not an error.
    std::fs::write(
        &path,
        good.replace("capacity = { connections = 20 }", "")
            .replace("capacity = { connections = 1000, rps = 10000 }", ""),
    )
    .expect("config");
    let (code, out) = check(&path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("the capacity step has nothing to judge"),
        "{out}"
    );
}

/// `geolb drill run` against a node that runs DNS and both regions' tiers:
/// eu carries 20 connections, us can take 5 more, so draining eu is
/// refused by the headroom pre-check, with the figures, and nothing
/// changes.
#[test]
fn a_drill_whose_target_load_does_not_fit_the_other_regions_is_refused_with_the_figures() {
    let eu_backend = holding_backend("127.0.1.11");
    let us_backend = holding_backend("127.0.2.11");
    let cfg = shared(eu_backend, us_backend)
        .replace(
            "capacity = { connections = 20 }",
            "capacity = { connections = 100 }",
        )
        .replace(
            "capacity = { connections = 1000, rps = 10000 }",
            "capacity = { connections = 5 }",
        );
    let s = node(format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n{cfg}"
    ));
    let admin = s.admin.expect("admin");
    let vip = *s
        .server()
        .tier
        .local_addrs()
        .get("eu-tcp")
        .expect("eu listener");
    let held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(vip).expect("connect through eu"))
        .collect();
    // This node's own tier reports to its DNS side every second.
    let eu_connections = || {
        json(admin, "/v1/health")["capacity"]["regions"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["region"] == "eu"))
            .and_then(|r| r["connections"].as_f64())
            .unwrap_or(0.0)
    };
    assert!(
        wait_for(Duration::from_secs(10), || eu_connections() > 10.0).is_some(),
        "{}",
        json(admin, "/v1/health")["capacity"]
    );
    // `geolb status` shows the load and the shares.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .expect("run geolb status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("capacity:")
            && text
                .lines()
                .any(|l| l.trim_start().starts_with("eu ") && l.contains("of 100"))
            && text.contains("shares of www.example.com.: eu 1.00"),
        "{text}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("drill.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"evacuate eu\"\nexpiry = \"10m\"\nbaseline = \"1s\"\nhold = \"1s\"\n\
             [[node]]\nname = \"dns1\"\nadmin = \"{admin}\"\ndns = \"{}\"\n\
             [action]\ndrain = \"eu\"\n[observe]\nname = \"www.example.com\"\n\
             [expect]\nconverge_within = \"3s\"\n",
            s.dns
        ),
    )
    .expect("scenario");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["drill", "run", "--json"])
        .arg(&scenario)
        .output()
        .expect("run geolb drill");
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(run.status.code(), Some(3), "{report}");
    assert_eq!(report["outcome"], "REFUSED");
    let headroom = report["prechecks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == "headroom"))
        .cloned()
        .expect("a headroom check");
    assert_eq!(headroom["ok"], false, "{headroom}");
    let detail = headroom["detail"].as_str().unwrap_or("");
    assert!(
        detail.starts_with("the other regions cannot take eu's load: connections: ")
            && detail.contains("5 spare (us 5 of 5 free)"),
        "{detail}"
    );
    // Nothing changed.
    assert_eq!(
        json(admin, "/v1/health")["overrides"],
        serde_json::json!([])
    );
    drop(held);
}

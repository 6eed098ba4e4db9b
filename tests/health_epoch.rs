//! One health epoch across nodes: three probers check real backends, two
//! DNS nodes poll all three. Both nodes name the health state they answer
//! under by the same consensus id (status, metrics, NSID, explain), reach
//! the same new id within two poll intervals of the probers' verdict when
//! a backend dies, and adding a DNS node adds no probes to the probers.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::backend::{Backend, OK};
use common::*;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;

const ZONE: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n";

/// How often the DNS nodes read the probers.
const POLL: Duration = Duration::from_millis(300);

/// The part every node shares: the monitor, one region with two
/// endpoints checked at the two backends, the service.
fn common_config(dead: SocketAddr, alive: SocketAddr) -> String {
    format!(
        r#"
[zones."example.com"]
file = "example.com.zone"

[monitors.web]
kind = "http"
path = "/healthz"
interval = "300ms"
timeout = "200ms"
rise = 1
fall = 2

[regions.eu]
location = [50.0, 8.0]
[pools.eu-web]
region = "eu"
monitor = "web"
endpoints = [{{ address = "10.1.0.1", check = "{dead}" }}, {{ address = "10.1.0.2", check = "{alive}" }}]

[zones."example.com".services.www]
ttl = 60
pools = ["eu-web"]
chain = ["healthy"]
"#
    )
}

fn dir_with(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), ZONE).expect("zone");
    std::fs::write(dir.path().join("geolb.toml"), config).expect("config");
    dir
}

fn prober(name: &str, shared: &str) -> TestServer {
    let cfg = format!("[server]\nadmin = \"127.0.0.1:0\"\n{shared}");
    TestServer::start_dir_with(
        dir_with(&cfg),
        geolb::config::Overrides {
            vantage: Some(name.into()),
            probe_only: true,
            ..Default::default()
        },
    )
}

fn dns_node(nsid: &str, probers: &[(&str, SocketAddr)], shared: &str) -> TestServer {
    let mut cfg = format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\nnsid = \"{nsid}\"\n\
         [health]\nvantage = \"dns\"\nfresh_for = \"3s\"\npoll_interval = \"{}ms\"\n",
        POLL.as_millis()
    );
    for (name, addr) in probers {
        cfg.push_str(&format!(
            "[health.vantages.{name}]\nurl = \"http://{addr}\"\n"
        ));
    }
    cfg.push_str(shared);
    TestServer::start_dir(dir_with(&cfg))
}

fn json(admin: SocketAddr, path: &str) -> serde_json::Value {
    let (code, body) = http(admin, "GET", path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// The health epoch a node answers under, as `/v1/status` shows it.
fn epoch(node: &TestServer) -> serde_json::Value {
    json(node.admin.expect("admin"), "/v1/status")["health"]["epoch"].clone()
}

fn epoch_id(node: &TestServer) -> String {
    epoch(node)["id"].as_str().expect("epoch id").to_string()
}

/// Every vote on the node for `endpoint`: {"dns": "up", "p1": "down", ...}.
fn votes(node: &TestServer, endpoint: &str) -> BTreeMap<String, String> {
    let h = json(node.admin.expect("admin"), "/v1/health");
    let e = h["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["endpoint"] == endpoint))
        .cloned()
        .unwrap_or_default();
    e["votes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn all_say(node: &TestServer, endpoint: &str, word: &str) -> bool {
    let v = votes(node, endpoint);
    ["p1", "p2", "p3"]
        .iter()
        .all(|p| v.get(*p).map(String::as_str) == Some(word))
}

/// The NSID a node sends when asked (RFC 5001), as text.
fn nsid(node: &TestServer) -> String {
    let mut q = edns_query("www.example.com.", RecordType::A, 1232);
    if let Some(e) = q.edns.as_mut() {
        e.options_mut().insert(EdnsOption::Unknown(3, Vec::new()));
    }
    let r = udp(node.dns, &q);
    match r.edns.as_ref().and_then(|e| e.option(EdnsCode::NSID)) {
        Some(EdnsOption::NSID(id)) => String::from_utf8_lossy(id.as_ref()).into_owned(),
        Some(EdnsOption::Unknown(_, v)) => String::from_utf8_lossy(v).into_owned(),
        other => panic!("no NSID: {other:?}"),
    }
}

/// Checks the probers have run so far, summed over probers and endpoints.
fn probes(probers: &[&TestServer]) -> f64 {
    probers
        .iter()
        .map(|p| {
            let (code, text) = http(p.admin.expect("admin"), "GET", "/metrics");
            assert_eq!(code, 200);
            text.lines()
                .filter(|l| l.starts_with("geolb_probes_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum()
}

/// Probes the probers run in `window`.
fn probes_in(probers: &[&TestServer], window: Duration) -> f64 {
    let before = probes(probers);
    std::thread::sleep(window);
    probes(probers) - before
}

/// The newest time, by the probers' clocks, at which a prober's state for
/// `endpoint` changed (what `/v1/observations` reports as `since`).
fn probers_since(probers: &[&TestServer], endpoint: &str) -> f64 {
    probers
        .iter()
        .filter_map(|p| {
            let o = json(p.admin.expect("admin"), "/v1/observations");
            o["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["endpoint"] == endpoint)?["since"]
                .as_f64()
        })
        .fold(0.0, f64::max)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn two_dns_nodes_polling_three_probers_answer_under_the_same_health_epoch_after_a_backend_dies() {
    let mut dead = Backend::start(OK);
    let alive = Backend::start(OK);
    let shared = common_config(dead.addr, alive.addr);
    let (p1, p2, p3) = (
        prober("p1", &shared),
        prober("p2", &shared),
        prober("p3", &shared),
    );
    let probers = [&p1, &p2, &p3];
    let list: Vec<(&str, SocketAddr)> = [("p1", &p1), ("p2", &p2), ("p3", &p3)]
        .iter()
        .map(|(n, p)| (*n, p.admin.expect("prober admin")))
        .collect();

    // One DNS node: once every prober's vote is in, the probers' load.
    let d1 = dns_node("dns1", &list, &shared);
    let settled = wait_for(Duration::from_secs(10), || {
        all_say(&d1, "eu-web/10.1.0.1", "up") && all_say(&d1, "eu-web/10.1.0.2", "up")
    });
    assert!(settled.is_some(), "{:?}", votes(&d1, "eu-web/10.1.0.1"));
    let window = Duration::from_secs(2);
    let with_one = probes_in(&probers, window);

    // A second DNS node polls the same probers: their load stays flat
    // (the probers are read, not multiplied per node).
    let d2 = dns_node("dns2", &list, &shared);
    let settled = wait_for(Duration::from_secs(10), || {
        all_say(&d2, "eu-web/10.1.0.1", "up") && all_say(&d2, "eu-web/10.1.0.2", "up")
    });
    assert!(settled.is_some(), "{:?}", votes(&d2, "eu-web/10.1.0.1"));
    let with_two = probes_in(&probers, window);
    eprintln!("probes by the three probers in {window:?}: {with_one} with one DNS node, {with_two} with two");
    // 2 endpoints × 3 probers every 300 ms ± 10 % ≈ 40 in 2 s; a probe per
    // poll would add 2 × 3 × 2 s / 300 ms ≈ 40.
    assert!(with_one >= 20.0, "the probers are probing: {with_one}");
    assert!(
        with_two <= with_one * 1.25 + 2.0,
        "the probers' load grew with a second DNS node: {with_one} → {with_two}"
    );

    // Both nodes saw the same votes: one epoch.
    let before = wait_for(Duration::from_secs(5), || epoch_id(&d1) == epoch_id(&d2));
    assert!(
        before.is_some(),
        "steady state, different ids: {} / {}",
        epoch(&d1),
        epoch(&d2)
    );
    let id0 = epoch_id(&d1);
    assert_eq!(nsid(&d1), format!("dns1 epoch={id0}"));
    assert_eq!(nsid(&d2), format!("dns2 epoch={id0}"));

    // The backend dies. Watch both nodes' epochs until both show the same
    // new one with every prober's vote against the endpoint.
    dead.kill();
    let t0 = Instant::now();
    let mut converged = None;
    while t0.elapsed() < Duration::from_secs(15) {
        let ids = [epoch_id(&d1), epoch_id(&d2)];
        if ids[0] == ids[1]
            && ids[0] != id0
            && all_say(&d1, "eu-web/10.1.0.1", "down")
            && all_say(&d2, "eu-web/10.1.0.1", "down")
            && epoch_id(&d1) == ids[0]
            && epoch_id(&d2) == ids[0]
        {
            converged = Some(ids[0].clone());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let id1 =
        converged.unwrap_or_else(|| panic!("no common new epoch: {} / {}", epoch(&d1), epoch(&d2)));
    assert_ne!(id1, id0);
    // Measured from the probers' own verdict: the last prober to call the
    // backend down stamped when it did, and each node when it took the
    // new id (the same machine's clock); within two poll intervals.
    let verdict_at = probers_since(&probers, "eu-web/10.1.0.1");
    assert!(
        verdict_at > unix_now() - 15.0,
        "a stamp of this run: {verdict_at}"
    );
    for (name, d) in [("dns1", &d1), ("dns2", &d2)] {
        let at = epoch(d)["changed_at"].as_f64().expect("changed_at");
        let lag = at - verdict_at;
        assert!(lag >= 0.0, "{name} took {id1} before the probers' verdict");
        eprintln!(
            "{name}: epoch {id1} {:.0} ms after the probers' verdict",
            lag * 1000.0
        );
        assert!(
            lag <= 2.0 * POLL.as_secs_f64(),
            "{name} reached epoch {id1} {lag:.3} s after the probers' verdict (poll interval {POLL:?})"
        );
    }
    // The ordering hint is the probers' stamp, the same on both nodes.
    for d in [&d1, &d2] {
        let e = epoch(d);
        assert_eq!(e["since"].as_f64(), Some(verdict_at), "{e}");
        assert!(e["changes"].as_u64() >= Some(1), "{e}");
    }

    // Every way of asking names that epoch: answers, NSID, explain, metrics.
    for (d, name) in [(&d1, "dns1"), (&d2, "dns2")] {
        assert_eq!(a_of(d.dns, "www.example.com."), ["10.1.0.2"]);
        assert_eq!(nsid(d), format!("{name} epoch={id1}"));
        let admin = d.admin.expect("admin");
        let ex = json(
            admin,
            "/v1/explain?name=www.example.com&type=A&client=192.0.2.1",
        );
        assert_eq!(ex["health_epoch"], id1.as_str(), "{ex}");
        let (_, metrics) = http(admin, "GET", "/metrics");
        assert!(
            metrics.contains(&format!("geolb_health_epoch_info{{epoch=\"{id1}\"}} 1")),
            "{metrics}"
        );
    }
}

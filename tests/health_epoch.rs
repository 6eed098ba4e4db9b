//! One health epoch across nodes: three probers check real backends, two
//! DNS nodes poll all three. Both nodes name the health state they answer
//! under by the same consensus id (status, metrics, NSID, explain), reach
//! the same new id within two poll intervals of the probers' verdict when
//! a backend dies, and adding a DNS node adds no probes to the probers.
//! DNS nodes with `local_checks = false` run no checks at all: a second
//! one adds no request to the backends, and they still fail over from the
//! probers' votes alone.

use crate::common;

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
    dns_node_with(nsid, probers, shared, "")
}

/// A DNS node with more `[health]` settings (`health`: lines of keys).
fn dns_node_with(
    nsid: &str,
    probers: &[(&str, SocketAddr)],
    shared: &str,
    health: &str,
) -> TestServer {
    let mut cfg = format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\nnsid = \"{nsid}\"\n\
         [health]\nvantage = \"dns\"\nfresh_for = \"3s\"\npoll_interval = \"{}ms\"\n{health}",
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

/// When each prober's state for `endpoint` last changed, by its own clock
/// (what `/v1/observations` reports as `since`).
fn prober_stamps(probers: &[&TestServer], endpoint: &str) -> Vec<f64> {
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
        .collect()
}

/// The newest time, by the probers' clocks, at which a prober's state for
/// `endpoint` changed.
fn probers_since(probers: &[&TestServer], endpoint: &str) -> f64 {
    prober_stamps(probers, endpoint)
        .into_iter()
        .fold(0.0, f64::max)
}

/// Two real backends (the first one to be killed), three probers checking
/// them, and the probers' admin addresses by vantage name.
struct Cluster {
    dead: Backend,
    alive: Backend,
    shared: String,
    probers: [TestServer; 3],
    list: Vec<(&'static str, SocketAddr)>,
}

fn cluster() -> Cluster {
    let dead = Backend::start(OK);
    let alive = Backend::start(OK);
    let shared = common_config(dead.addr, alive.addr);
    let probers = ["p1", "p2", "p3"].map(|name| prober(name, &shared));
    let list = ["p1", "p2", "p3"]
        .into_iter()
        .zip(&probers)
        .map(|(n, p)| (n, p.admin.expect("prober admin")))
        .collect();
    Cluster {
        dead,
        alive,
        shared,
        probers,
        list,
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[test]
fn two_dns_nodes_polling_three_probers_answer_under_the_same_health_epoch_after_a_backend_dies() {
    let mut c = cluster();
    let probers: Vec<&TestServer> = c.probers.iter().collect();

    // One DNS node: once every prober's vote is in, the probers' load.
    let d1 = dns_node("dns1", &c.list, &c.shared);
    let settled = wait_for(Duration::from_secs(10), || {
        all_say(&d1, "eu-web/10.1.0.1", "up") && all_say(&d1, "eu-web/10.1.0.2", "up")
    });
    assert!(settled.is_some(), "{:?}", votes(&d1, "eu-web/10.1.0.1"));
    let window = Duration::from_secs(2);
    let with_one = probes_in(&probers, window);

    // A second DNS node polls the same probers: their load stays flat
    // (the probers are read, not multiplied per node).
    let d2 = dns_node("dns2", &c.list, &c.shared);
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
    c.dead.kill();
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

/// When the probers' states for `endpoint` changed, of those that changed
/// after `after`, earliest first.
fn probers_changes(probers: &[&TestServer], endpoint: &str, after: f64) -> Vec<f64> {
    let mut at = prober_stamps(probers, endpoint);
    at.retain(|&t| t > after);
    at.sort_by(f64::total_cmp);
    at
}

/// Connections the backends accepted in `window`, less the checks the
/// probers completed in it: what anyone but the probers sent (± a check in
/// flight at either edge).
fn requests_beyond_the_probers(
    backends: &[&Backend],
    probers: &[&TestServer],
    window: Duration,
) -> (u64, f64) {
    let accepted = || backends.iter().map(|b| b.accepted()).sum::<u64>();
    let (b0, p0) = (accepted(), probes(probers));
    std::thread::sleep(window);
    let (p1, b1) = (probes(probers), accepted());
    (b1 - b0, (b1 - b0) as f64 - (p1 - p0))
}

#[test]
fn dns_nodes_without_local_checks_add_no_backend_requests_and_fail_over_on_the_probers_votes() {
    let mut c = cluster();
    let probers: Vec<&TestServer> = c.probers.iter().collect();
    let quiet = "local_checks = false\n";

    // Ready once every prober was read once; its own checks are not
    // waited for (it has none).
    let d1 = dns_node_with("dns1", &c.list, &c.shared, quiet);
    let admin1 = d1.admin.expect("admin");
    let ready = wait_for(Duration::from_secs(10), || {
        http(admin1, "GET", "/v1/ready").0 == 200
    });
    assert!(ready.is_some(), "{}", http(admin1, "GET", "/v1/ready").1);
    let r = json(admin1, "/v1/ready");
    assert_eq!(r["local_checks"], false, "{r}");
    assert_eq!(
        (r["vantages"].as_u64(), r["unpolled"].as_u64()),
        (Some(3), Some(0)),
        "{r}"
    );
    assert_eq!(r["unchecked"].as_u64(), Some(0), "{r}");

    let settled = wait_for(Duration::from_secs(10), || {
        all_say(&d1, "eu-web/10.1.0.1", "up") && all_say(&d1, "eu-web/10.1.0.2", "up")
    });
    assert!(settled.is_some(), "{:?}", votes(&d1, "eu-web/10.1.0.1"));
    // The status says so: no local vote, the probers decide.
    let h = json(admin1, "/v1/status")["health"].clone();
    assert_eq!(h["local_checks"], false);
    assert_eq!(h["quorum"], 2, "a majority of the three probers");
    for e in h["endpoints"].as_array().expect("endpoints") {
        assert!(e["local_vote"].is_null(), "{e}");
        assert!(e["votes"].get("dns").is_none(), "{e}");
        assert_eq!(
            e["reason"], "0 of 3 fresh vantages say down, 2 needed (no local vote)",
            "{e}"
        );
    }
    // It has no observations of its own to serve.
    let (code, body) = http(admin1, "GET", "/v1/observations");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("local_checks = false"), "{body}");

    let backends = [&c.dead, &c.alive];
    let window = Duration::from_secs(2);
    let (one, extra_one) = requests_beyond_the_probers(&backends, &probers, window);

    // A second DNS node: not one request more on the backends.
    let d2 = dns_node_with("dns2", &c.list, &c.shared, quiet);
    let settled = wait_for(Duration::from_secs(10), || {
        all_say(&d2, "eu-web/10.1.0.1", "up") && all_say(&d2, "eu-web/10.1.0.2", "up")
    });
    assert!(settled.is_some(), "{:?}", votes(&d2, "eu-web/10.1.0.1"));
    let (two, extra_two) = requests_beyond_the_probers(&backends, &probers, window);
    eprintln!(
        "backend requests in {window:?}: {one} with one DNS node ({extra_one:+} beyond the probers' checks), \
         {two} with two ({extra_two:+})"
    );
    // 2 endpoints × 3 probers every 300 ms ± 10 % ≈ 40 in 2 s; a DNS node
    // checking for itself would add 2 × 2 s / 300 ms ≈ 13.
    assert!(one >= 20, "the probers are probing: {one}");
    for extra in [extra_one, extra_two] {
        assert!(
            extra.abs() <= 6.0,
            "requests not from the probers: {extra} (one node {one}, two {two})"
        );
    }
    assert_eq!(probes(&[&d1, &d2]), 0.0, "the DNS nodes ran checks");

    // The backend dies: both nodes drop it from their answers once two of
    // the three probers say so, within two poll intervals (plus this
    // loop's own querying).
    assert_eq!(a_of(d1.dns, "www.example.com.").len(), 2);
    let killed_at = unix_now();
    c.dead.kill();
    let mut switched: [Option<f64>; 2] = [None, None];
    let t0 = Instant::now();
    while switched.iter().any(Option::is_none) && t0.elapsed() < Duration::from_secs(15) {
        for (i, d) in [&d1, &d2].iter().enumerate() {
            if switched[i].is_none() && a_of(d.dns, "www.example.com.") == ["10.1.0.2"] {
                switched[i] = Some(unix_now());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let changes = probers_changes(&probers, "eu-web/10.1.0.1", killed_at);
    assert!(changes.len() >= 2, "two probers' verdicts: {changes:?}");
    let quorum_at = changes[1];
    for (name, at) in ["dns1", "dns2"].iter().zip(switched) {
        let at = at.unwrap_or_else(|| panic!("{name} still answers the dead backend"));
        let lag = at - quorum_at;
        eprintln!(
            "{name}: answer changed {:.0} ms after the second prober's verdict",
            lag * 1000.0
        );
        assert!(lag >= 0.0, "{name} changed before two probers said down");
        assert!(
            lag <= 2.0 * POLL.as_secs_f64() + 0.15,
            "{name} changed its answer {lag:.3} s after the quorum of probers (poll {POLL:?})"
        );
    }
    for d in [&d1, &d2] {
        let reason = json(d.admin.expect("admin"), "/v1/health")["endpoints"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|e| e["endpoint"] == "eu-web/10.1.0.1")
                    .cloned()
            })
            .unwrap_or_default()["reason"]
            .clone();
        assert!(
            reason
                .as_str()
                .is_some_and(|r| r.ends_with("2 needed (no local vote)")),
            "{reason}"
        );
    }
}

#[test]
fn without_local_checks_readiness_waits_for_the_vantages_first_poll_never_forever_and_a_dns_node_read_as_a_vantage_fails_loudly(
) {
    // A vantage that accepts and never answers: its first poll ends only
    // at the client's timeout (the poll interval, 5 s).
    let hang = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hang_addr = hang.local_addr().expect("addr");
    let shared = common_config(hang_addr, hang_addr);
    let slow = "poll_interval = \"5s\"\nfresh_for = \"1500ms\"\n";
    let node = |nsid: &str, vantages: &[(&str, SocketAddr)]| {
        let mut cfg = format!(
            "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\nnsid = \"{nsid}\"\n\
             [health]\nvantage = \"{nsid}\"\nlocal_checks = false\n{slow}"
        );
        for (name, addr) in vantages {
            cfg.push_str(&format!(
                "[health.vantages.{name}]\nurl = \"http://{addr}\"\n"
            ));
        }
        cfg.push_str(&shared);
        TestServer::start_dir(dir_with(&cfg))
    };
    // Another DNS node without local checks, read by mistake as a vantage.
    let y = node("y", &[("hang", hang_addr)]);
    let started = Instant::now();
    let x = node("x", &[("hang", hang_addr), ("y", y.admin.expect("admin"))]);
    let admin = x.admin.expect("admin");

    let (code, body) = http(admin, "GET", "/v1/ready");
    assert_eq!(code, 503, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(r["unpolled"].as_u64() >= Some(1), "{r}");
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|t| t.contains("vantages not polled yet (no local checks)")),
        "{r}"
    );

    // The DNS node read as a vantage shows as failing, with why.
    let y_error = || {
        json(admin, "/v1/health")["vantages"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["vantage"] == "y").cloned())
            .unwrap_or_default()
    };
    let failed = wait_for(Duration::from_secs(5), || {
        !y_error()["last_error"].is_null()
    });
    assert!(failed.is_some(), "{}", y_error());
    let v = y_error();
    assert_eq!(v["fresh"], false, "{v}");
    let err = v["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("HTTP 409") && err.contains("runs no checks of its own"),
        "{err}"
    );

    // The hanging vantage is not waited for past fresh_for.
    let ready = wait_for(Duration::from_secs(10), || {
        http(admin, "GET", "/v1/ready").0 == 200
    });
    assert!(ready.is_some(), "{}", http(admin, "GET", "/v1/ready").1);
    let took = started.elapsed();
    eprintln!("ready after {took:?} with a vantage that never answers");
    assert!(
        took < Duration::from_millis(4500),
        "ready only after {took:?}: it waited for the hanging vantage's poll"
    );
    // Nothing voted: every endpoint is up, and says why.
    let e = json(admin, "/v1/health")["endpoints"][0].clone();
    assert_eq!(e["up"], true, "{e}");
    assert_eq!(
        e["reason"], "no local checks and no vantage heard yet: up until the vantages vote",
        "{e}"
    );
    drop(hang);
}

#[test]
fn a_prober_checks_the_tiers_backends_so_a_tier_node_without_local_checks_sees_one_die() {
    let mut backend = Backend::start(OK);
    let b = backend.addr;
    let shared = format!(
        "{}[groups.eu-app]\nregion = \"eu\"\nmonitor = \"web\"\nmembers = [{{ address = \"{b}\" }}]\n\
         [listeners.eu-tcp]\nregion = \"eu\"\nbind = \"127.0.1.1:0\"\ngroup = \"eu-app\"\n",
        common_config(b, b)
    );
    let p = prober("p1", &shared);
    let member = format!("eu-app/{b}");
    let observed = wait_for(Duration::from_secs(10), || {
        prober_stamps(&[&p], &member).len() == 1
    });
    assert!(
        observed.is_some(),
        "the prober observes the tier's backend: {}",
        json(p.admin.expect("admin"), "/v1/observations")
    );

    // A tier node of region eu that reads the prober and checks nothing.
    let cfg = format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n\
         [health]\nlocal_checks = false\nfresh_for = \"3s\"\npoll_interval = \"{}ms\"\n\
         [health.vantages.p1]\nurl = \"http://{}\"\n{shared}",
        POLL.as_millis(),
        p.admin.expect("admin")
    );
    let t = TestServer::start_dir_with(
        dir_with(&cfg),
        geolb::config::Overrides {
            dns_enabled: Some(false),
            regions: Some(vec!["eu".into()]),
            ..Default::default()
        },
    );
    let admin = t.admin.expect("admin");
    let health = || {
        json(admin, "/v1/tier")["groups"][0]["backends"][0]["health"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(health(), "up");
    backend.kill();
    let down = wait_for(Duration::from_secs(10), || {
        health() == "down (health checks)"
    });
    assert!(down.is_some(), "{}", json(admin, "/v1/tier"));
    assert_eq!(probes(&[&t]), 0.0, "the tier node ran checks");
}

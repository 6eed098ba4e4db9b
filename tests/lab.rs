//! The lab of `deploy/lab` end to end, with the built binary: `geolb lab
//! start` brings up three regions on loopback (127.0.R.0/24: backends, a
//! tier node, a prober each) and two DNS nodes reading the probers; a
//! second start is refused; a DNS answer leads through a VIP's tier to a
//! backend; `geolb lab drill` stops us-east's backends, and its report
//! shows both nodes moving us-east's clients away and reaching the same
//! new health epoch within two poll intervals of the probers' verdict, and
//! naming the one of two resolvers that keeps its answer past the TTL;
//! `geolb lab stop` leaves no process and no port behind, and says so
//! again when run twice.
//!
//! The shipped files run as they are, with other ports (so a lab someone
//! runs by hand does not collide) and shorter intervals.

use crate::common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

const BIN: &str = env!("CARGO_BIN_EXE_geolb");

/// The shipped ports and the test's.
const PORTS: [(&str, &str); 4] = [
    (":5353", ":15353"),
    (":8053", ":18053"),
    (":8054", ":18054"),
    (":8080", ":18080"),
];

/// How often the test's DNS nodes read the probers.
const POLL_SECS: f64 = 0.3;

/// `text` with each `(from, to)` replaced; every `from` must be there.
fn edit(file: &str, text: &str, edits: &[(&str, &str)]) -> String {
    let mut t = text.to_string();
    for (from, to) in edits {
        assert!(t.contains(from), "{file} has no {from:?}");
        t = t.replace(from, to);
    }
    t
}

/// The shipped lab copied into `dir`, on the test's ports, faster.
fn lab_files(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/lab");
    let read = |f: &str| std::fs::read_to_string(src.join(f)).expect("shipped lab file");
    let write = |f: &str, t: String| std::fs::write(dir.join(f), t).expect("write");
    write(
        "geolb.toml",
        edit(
            "geolb.toml",
            &edit("geolb.toml", &read("geolb.toml"), &PORTS),
            &[
                ("interval = \"1s\"", "interval = \"300ms\""),
                ("timeout = \"500ms\"", "timeout = \"250ms\""),
                ("ttl = 10\n", "ttl = 1\n"),
                ("ttl_when_down = 5\n", "ttl_when_down = 1\n"),
            ],
        ),
    );
    write("lab.toml", edit("lab.toml", &read("lab.toml"), &PORTS[..2]));
    write(
        "drill.toml",
        edit(
            "drill.toml",
            &edit("drill.toml", &read("drill.toml"), &PORTS[..2]),
            &[
                ("baseline = \"3s\"", "baseline = \"1s\""),
                ("hold = \"12s\"", "hold = \"5s\""),
                ("converge_within = \"10s\"", "converge_within = \"3s\""),
            ],
        ),
    );
    write("lab.example.zone", read("lab.example.zone"));
    // (The service's TTL is shortened below so a resolver can keep its
    // answer past it within the test's drill.)
    dir.join("lab.toml")
}

/// One lab at a time: they share the addresses.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A lab in a temporary directory, stopped when dropped (whatever the
/// test did before).
struct Lab {
    file: PathBuf,
    run: PathBuf,
    _dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Lab {
    fn new() -> Lab {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().expect("tempdir");
        let file = lab_files(dir.path());
        let run = dir.path().join("run");
        Lab {
            file,
            run,
            _dir: dir,
            _turn: turn,
        }
    }

    /// Runs `geolb lab ARGS`, requires exit `code` and `needle` in its
    /// stdout or stderr; its stdout.
    fn expect(&self, args: &[&str], code: i32, needle: &str) -> String {
        let o = self.geolb(args);
        let all = text(&o);
        assert_eq!(o.status.code(), Some(code), "{all}");
        assert!(all.contains(needle), "{needle:?} not in: {all}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn geolb(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["lab"])
            .args(args)
            .arg("--lab")
            .arg(&self.file)
            .arg("--dir")
            .arg(&self.run)
            .env_remove("GEOLB_LAB")
            .env_remove("GEOLB_LAB_DIR")
            .output()
            .expect("run geolb lab")
    }

    /// The pid file: (pid, name, command line).
    fn pids(&self) -> Vec<(u32, String, String)> {
        let Ok(text) = std::fs::read_to_string(self.run.join("pids")) else {
            return Vec::new();
        };
        text.lines()
            .map(|l| {
                let mut p = l.splitn(3, ' ');
                let pid = p.next().and_then(|v| v.parse().ok()).expect("pid");
                let name = p.next().expect("name").to_string();
                (pid, name, p.next().expect("cmdline").to_string())
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.geolb(&["stop"]);
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether `pid` still runs `cmdline` (what the pid file recorded).
fn runs(pid: u32, cmdline: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        args.join(" ") == cmdline
    })
}

/// A resolver at `from` (a loopback address of us-east's clients): once
/// `ns1`'s resolver telemetry is armed, it asks for www.lab.example, then
/// again every `every` (never again when `None`), until `stop`.
fn lab_resolver(from: &str, ns1: SocketAddr, every: Option<Duration>, stop: &AtomicBool) {
    let admin = addr("127.0.10.1:18053");
    let armed = || {
        let (code, body) = http(admin, "GET", "/v1/resolvers");
        code == 200
            && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["armed"] == true)
    };
    while !stop.load(Ordering::Relaxed) && !armed() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sock = UdpSocket::bind((from, 0)).expect("bind a loopback source");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let q = query("www.lab.example.", RecordType::A)
        .to_vec()
        .expect("encode");
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        sock.send_to(&q, ns1).expect("send");
        let _ = sock.recv(&mut buf);
        let Some(every) = every else { break };
        let until = Instant::now() + every;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

#[test]
fn the_lab_starts_once_drills_a_dying_region_under_one_health_epoch_and_stops_without_a_trace() {
    let t0 = Instant::now();
    let lab = Lab::new();

    let out = lab.expect(&["start"], 0, "settled: health epoch");
    assert!(out.contains("curl http://127.0.2.10:18080/"), "{out}");
    let started = lab.pids();
    assert_eq!(started.len(), 17, "{started:?}");
    assert!(started.iter().all(|(pid, _, c)| runs(*pid, c)));
    eprintln!("lab up after {:?}", t0.elapsed());

    // Twice: refused, nothing started.
    lab.expect(&["start"], 1, "already running");
    assert_eq!(lab.pids(), started);

    // ns1 answers a us-east client with us-east's VIP, whose tier hands
    // the request to one of us-east's backends.
    let ns1 = addr("127.0.10.1:15353");
    assert_eq!(a_of(ns1, "www.lab.example."), ["127.0.2.10"]);
    let (code, body) = http(addr("127.0.2.10:18080"), "GET", "/");
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("backend us-app/127.0.2.1"), "{body}");

    // Two resolvers of us-east's clients ask ns1 once its telemetry is
    // armed by the drill: one again at every TTL (1 s), one never again
    // (it keeps its answer past the TTL). The report names the second.
    let stop = Arc::new(AtomicBool::new(false));
    let resolvers: Vec<_> = [
        ("127.0.2.201", Some(Duration::from_millis(900))),
        ("127.0.2.202", None),
    ]
    .into_iter()
    .map(|(from, every)| {
        let stop = stop.clone();
        std::thread::spawn(move || lab_resolver(from, ns1, every, &stop))
    })
    .collect();

    // The drill: us-east's backends die.
    let drill_out = lab.expect(
        &["drill"],
        0,
        "starting again what the drill stopped: us-app-1, us-app-2, us-app-3",
    );
    stop.store(true, Ordering::Relaxed);
    for r in resolvers {
        r.join().expect("resolver");
    }
    let report_dir = lab.run.join("drill");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(report_dir.join("report.json")).expect("report.json"),
    )
    .expect("json");
    assert_eq!(report["outcome"], "SUCCEEDED", "{report}");
    let probes = report["probes"].as_array().expect("probes");
    for p in probes {
        let us = p["subnet"] == "127.0.2.0/24";
        assert_eq!(p["affected"], us, "{p}");
        if us {
            assert!(
                p["converged_after"].as_f64().is_some_and(|t| t <= 3.0),
                "{p}"
            );
        }
    }
    assert_eq!(probes.len(), 4, "two nodes, two subnets: {report}");
    // Both nodes: a new epoch, the same one, taken within two poll
    // intervals of the probers' verdict.
    assert_eq!(report["epochs_agree"], true, "{}", report["epochs"]);
    let epochs = report["epochs"].as_array().expect("epochs");
    assert_eq!(epochs.len(), 2);
    for e in epochs {
        assert_eq!(e["before"], epochs[0]["before"], "{e}");
        assert_eq!(e["after"], epochs[0]["after"], "{e}");
        assert_ne!(e["after"], e["before"], "{e}");
        assert_eq!(e["poll_interval"].as_f64(), Some(POLL_SECS), "{e}");
        let behind = e["behind_probers"]
            .as_f64()
            .expect("a verdict after the action");
        eprintln!(
            "{}: epoch {} {:.0} ms after the probers' verdict, {:.2} s after the action",
            e["node"],
            e["after"],
            behind * 1000.0,
            e["after_action"].as_f64().unwrap_or(f64::NAN)
        );
        assert!(
            (0.0..=2.0 * POLL_SECS).contains(&behind),
            "{} took its epoch {behind:.3} s after the probers' verdict: {e}",
            e["node"]
        );
    }
    let md = std::fs::read_to_string(report_dir.join("report.md")).expect("report.md");
    assert!(
        md.contains("## Health epoch") && md.contains("Every node answered under"),
        "{md}"
    );
    assert!(drill_out.contains("drill report: "), "{drill_out}");
    // Resolver convergence: the one that re-asks at every TTL moved in
    // time; the one that keeps its answer past the TTL is named.
    let resolver_state = |addr: &str| {
        report["resolvers"]["resolvers"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["resolver"] == addr))
            .cloned()
            .unwrap_or_else(|| panic!("{addr} not in {}", report["resolvers"]))
    };
    let prompt = resolver_state("127.0.2.201");
    assert_eq!(prompt["state"], "moved", "{prompt}");
    assert_eq!(prompt["late"], false, "{prompt}");
    let stale = resolver_state("127.0.2.202");
    assert!(
        stale["state"] == "not_reasked" || (stale["state"] == "moved" && stale["late"] == true),
        "the resolver keeping its answer past the TTL is named: {stale}"
    );
    assert!(md.contains("127.0.2.202"), "{md}");
    // The tier connection drain: both tier nodes' listeners, read
    // throughout (the lab has no clients: their rates are what they are).
    let tier = report["tier"].as_array().expect("tier");
    for name in ["tier-us-east", "tier-eu-central"] {
        assert!(
            tier.iter()
                .any(|l| l["tier"] == name && l["before"].is_f64()),
            "{name}: {tier:?}"
        );
    }
    assert!(md.contains("## Tier connection drain"), "{md}");
    // What the drill stopped runs again: three new PIDs, the rest as before.
    let after = lab.pids();
    assert_eq!(after.len(), 17, "{after:?}");
    assert!(after.iter().all(|(pid, _, c)| runs(*pid, c)));
    let renewed: Vec<&str> = after
        .iter()
        .filter(|e| !started.contains(e))
        .map(|(_, n, _)| n.as_str())
        .collect();
    assert_eq!(renewed, ["us-app-1", "us-app-2", "us-app-3"]);
    eprintln!("drill done after {:?}", t0.elapsed());

    // Stop: every process gone, every address free, the pid file too.
    lab.expect(&["stop"], 0, "stopped 17 processes");
    for (pid, name, cmdline) in started.iter().chain(&after) {
        assert!(!runs(*pid, cmdline), "{name} (pid {pid}) still runs");
    }
    assert!(!lab.run.join("pids").exists());
    let tcp = [
        "127.0.1.11:18080",
        "127.0.2.10:18080",
        "127.0.2.10:18053",
        "127.0.3.54:18054",
        "127.0.10.1:18053",
        "127.0.10.2:18053",
    ];
    for a in tcp {
        assert!(TcpListener::bind(a).is_ok(), "{a} still taken");
    }
    for a in ["127.0.10.1:15353", "127.0.10.2:15353"] {
        assert!(UdpSocket::bind(a).is_ok(), "{a} still taken");
    }
    // Again: nothing to stop, and that is fine.
    lab.expect(&["stop"], 0, "nothing of the lab runs");
    eprintln!("lab test took {:?}", t0.elapsed());
}

#[test]
fn the_shipped_lab_config_and_zone_check_clean() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/lab/geolb.toml");
    let (code, out) = check(&cfg);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok (1 zones"), "{out}");
}

#[test]
fn a_lab_process_that_cannot_start_stops_everything_started_before_it() {
    let lab = Lab::new();
    // Take ns2's DNS port: ns2 cannot bind it and exits.
    let squatter = UdpSocket::bind("127.0.10.2:15353").expect("bind");
    let up = lab.geolb(&["start"]);
    let all = text(&up);
    assert_eq!(up.status.code(), Some(1), "{all}");
    for needle in [
        "ns2 exited",
        "cannot listen on 127.0.10.2:15353",
        "stopping what was started",
    ] {
        assert!(all.contains(needle), "{needle:?} not in: {all}");
    }
    assert!(lab.pids().is_empty(), "{:?}", lab.pids());
    // Everything it had started is gone: the ports are free again.
    for a in ["127.0.2.11:18080", "127.0.2.10:18080", "127.0.10.1:18053"] {
        assert!(TcpListener::bind(a).is_ok(), "{a} still taken");
    }
    drop(squatter);
}

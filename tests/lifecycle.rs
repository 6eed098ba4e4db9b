//! Reload, status, shutdown and the command line, against the real server
//! (in-process for the API, the real binary for signals and `check`).

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const BIN: &str = env!("CARGO_BIN_EXE_geolb");

fn write_zone(s: &TestServer, extra: &str) {
    let mut z = zone_com();
    z.push_str(extra);
    std::fs::write(s.path("example.com.zone"), z).expect("write zone");
}

#[test]
fn reload_via_api_serves_new_data() {
    let s = TestServer::start();
    let admin = s.admin.expect("admin");
    assert!(a_of(s.dns, "new.example.com.").is_empty());
    write_zone(&s, "new IN A 192.0.2.200\n");
    let (code, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"generation\":2"), "{body}");
    assert_eq!(a_of(s.dns, "new.example.com."), ["192.0.2.200"]);
    let (_, status) = http(admin, "GET", "/v1/status");
    assert!(
        status.contains("\"generation\":2") && status.contains("\"ok\":true"),
        "{status}"
    );
}

#[test]
fn invalid_reload_keeps_the_old_snapshot_and_reports_why() {
    let s = TestServer::start();
    let admin = s.admin.expect("admin");
    // Line 4 of the appended text: a CNAME next to other data.
    write_zone(&s, "new IN A 192.0.2.200\nwww IN CNAME mail\n");
    let (code, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("example.com.zone:") && body.contains("CNAME"),
        "{body}"
    );
    assert!(body.contains("\"generation\":1"), "{body}");
    // Old data is still served, new is not.
    assert!(a_of(s.dns, "new.example.com.").is_empty());
    assert_eq!(a_of(s.dns, "www.example.com."), ["192.0.2.80"]);
    let (_, status) = http(admin, "GET", "/v1/status");
    assert!(
        status.contains("\"ok\":false") && status.contains("CNAME"),
        "{status}"
    );
    // A broken config file is handled the same way.
    std::fs::write(s.path("geolb.toml"), "[server]\nnot_a_key = 1\n").expect("write");
    let (code, body) = http(admin, "POST", "/v1/reload");
    assert_eq!(code, 422);
    assert!(
        body.contains("geolb.toml:2:1") && body.contains("unknown field"),
        "{body}"
    );
    assert_eq!(a_of(s.dns, "www.example.com."), ["192.0.2.80"]);
}

#[test]
fn admin_api_errors_are_json() {
    let s = TestServer::start();
    let (code, body) = http(s.admin.expect("admin"), "GET", "/v1/nope");
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""), "{body}");
    let (code, _) = http(s.admin.expect("admin"), "GET", "/v1/reload");
    assert_eq!(code, 405);
}

#[test]
fn no_query_is_lost_or_half_answered_during_reloads() {
    let s = TestServer::start();
    let admin = s.admin.expect("admin");
    let dns = s.dns;
    write_zone(&s, "flip 222 IN A 192.0.2.2\n");
    assert_eq!(http(admin, "POST", "/v1/reload").0, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let stop = stop.clone();
        let answered = answered.clone();
        clients.push(std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let q = query("flip.example.com.", RecordType::A);
                sock.send_to(&q.to_vec().expect("encode"), dns).expect("send");
                let (n, _) = sock.recv_from(&mut buf).expect("every query is answered");
                let r = Message::from_vec(&buf[..n]).expect("parses");
                assert_eq!(r.metadata.id, q.metadata.id);
                assert_eq!(r.metadata.response_code, ResponseCode::NoError);
                // Either generation's data, whole: one A record, consistent TTL.
                assert_eq!(r.answers.len(), 1, "{:?}", r.answers);
                let a = &r.answers[0];
                let ok = matches!((&a.data, a.ttl), (RData::A(ip), 111) if ip.to_string() == "192.0.2.1")
                    || matches!((&a.data, a.ttl), (RData::A(ip), 222) if ip.to_string() == "192.0.2.2");
                assert!(ok, "mixed answer {a:?}");
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..20 {
        let rec = if i % 2 == 0 {
            "flip 111 IN A 192.0.2.1\n"
        } else {
            "flip 222 IN A 192.0.2.2\n"
        };
        write_zone(&s, rec);
        let (code, body) = http(admin, "POST", "/v1/reload");
        assert_eq!(code, 200, "{body}");
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread ok");
    }
    assert!(answered.load(Ordering::Relaxed) > 20);
}

struct Proc {
    child: Child,
    dns: SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    fn start(config: &std::path::Path, extra: &[&str]) -> Proc {
        Proc::start_env(config, extra, &[])
    }

    fn start_env(
        config: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> Proc {
        let mut child = Command::new(BIN)
            .envs(env.iter().copied())
            .args(["serve", "--config"])
            .arg(config)
            .args([
                "--dns",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--udp-workers",
                "1",
            ])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn geolb");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut dns = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while dns.is_none() && Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                if let Some(rest) = line.split("listening dns=").nth(1) {
                    let addr = rest.split([' ', ',', '"']).next().unwrap_or("");
                    dns = addr.parse().ok();
                }
            }
        }
        Proc {
            child,
            dns: dns.expect("server logged its address"),
            lines: rx,
        }
    }

    fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on a child we own, with a valid signal number.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0);
    }

    fn wait_line(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if l.contains(needle) {
                    return true;
                }
            }
        }
        false
    }

    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("geolb.toml"), config("")).expect("w");
    std::fs::write(dir.path().join("example.com.zone"), zone_com()).expect("w");
    std::fs::write(dir.path().join("example.net.zone"), ZONE_NET).expect("w");
    dir
}

#[test]
fn under_systemd_it_notifies_ready_reloading_and_stopping_on_notify_socket() {
    let dir = files();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut p = Proc::start_env(
        &dir.path().join("geolb.toml"),
        &[],
        &[("NOTIFY_SOCKET", &sock_path)],
    );
    assert_eq!(recv(), "READY=1");
    p.signal(libc::SIGHUP);
    let reloading = recv();
    let usec = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|u| u.parse::<u64>().ok());
    assert!(usec.is_some_and(|u| u > 0), "{reloading:?}");
    assert_eq!(recv(), "READY=1", "after the reload");
    p.signal(libc::SIGTERM);
    assert_eq!(recv(), "STOPPING=1");
    assert_eq!(p.wait_exit(), Some(0));
}

#[test]
fn sighup_reloads_and_bad_data_keeps_serving() {
    let dir = files();
    let p = Proc::start(&dir.path().join("geolb.toml"), &[]);
    assert!(a_of(p.dns, "hup.example.com.").is_empty());
    let mut z = zone_com();
    z.push_str("hup IN A 192.0.2.201\n");
    std::fs::write(dir.path().join("example.com.zone"), &z).expect("w");
    p.signal(libc::SIGHUP);
    assert!(p.wait_line("reload succeeded"));
    assert_eq!(a_of(p.dns, "hup.example.com."), ["192.0.2.201"]);
    z.push_str("broken IN A not-an-address\n");
    std::fs::write(dir.path().join("example.com.zone"), &z).expect("w");
    p.signal(libc::SIGHUP);
    assert!(p.wait_line("reload failed"));
    assert_eq!(a_of(p.dns, "hup.example.com."), ["192.0.2.201"]);
}

#[test]
fn sigterm_finishes_an_in_flight_tcp_query_then_exits_0() {
    let dir = files();
    let mut p = Proc::start(&dir.path().join("geolb.toml"), &[]);
    let mut c = tcp_connect(p.dns);
    let q = query("www.example.com.", RecordType::A)
        .to_vec()
        .expect("encode");
    let mut frame = (q.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&q);
    // Half a query, then SIGTERM, then the rest: the answer still comes.
    std::io::Write::write_all(&mut c, &frame[..6]).expect("write");
    std::thread::sleep(Duration::from_millis(100));
    p.signal(libc::SIGTERM);
    assert!(p.wait_line("shutting down"));
    std::io::Write::write_all(&mut c, &frame[6..]).expect("write");
    let reply = tcp_read(&mut c).expect("in-flight query answered");
    let m = Message::from_vec(&reply).expect("parses");
    assert_eq!(m.answers.len(), 1);
    assert_eq!(p.wait_exit(), Some(0));
}

#[test]
fn sigint_exits_0_and_json_logs_are_json() {
    let dir = files();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(dir.path().join("geolb.toml"))
        .args(["--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let first = lines.next().expect("a log line").expect("utf8");
    let v: serde_json::Value = serde_json::from_str(&first).expect("JSON log line");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("listening"),
        "{first}"
    );
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let st = child.wait().expect("exits");
    assert_eq!(st.code(), Some(0));
}

/// Runs `geolb check` on `dir/geolb.toml`: exit code and output.
fn check(dir: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(dir.join("geolb.toml"))
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_accepts_the_shipped_sample() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/geolb.toml");
    let out = Command::new(BIN)
        .args(["check", "--config", sample])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn check_prints_every_error_with_file_and_line_and_exits_1() {
    let dir = files();
    let mut z = zone_com();
    z.push_str("bad1 IN A 300.1.1.1\nwww IN CNAME mail\nx.example.org. IN A 192.0.2.1\n");
    std::fs::write(dir.path().join("example.com.zone"), z).expect("w");
    let (code, text) = check(dir.path());
    assert_eq!(code, Some(1));
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 3, "{text}");
    assert!(
        errors.iter().all(|l| l.contains("example.com.zone:")),
        "{text}"
    );
    assert!(
        text.contains("invalid A") && text.contains("CNAME") && text.contains("outside the zone")
    );
}

#[test]
fn check_reports_errors_of_every_section_in_one_pass_each_at_its_line() {
    let dir = files();
    let cfg = "[server]\n\
        dns = [\"127.0.0.1:0\"]\n\
        udp_payload = 100\n\
        [regions.eu]\n\
        location = [50.1, 8.7]\n\
        [pools.web]\n\
        region = \"nowhere\"\n\
        endpoints = [{ address = \"192.0.2.1\" }]\n\
        [pools.ok]\n\
        region = \"eu\"\n\
        endpoints = [{ address = \"192.0.2.2\" }]\n\
        [zones.\"example.com\"]\n\
        file = \"example.com.zone\"\n\
        [zones.\"example.com\".services.www]\n\
        pools = [\"ok\"]\n\
        chain = [\"healthy\", \"teleport\"]\n";
    std::fs::write(dir.path().join("geolb.toml"), cfg).expect("w");
    let (code, text) = check(dir.path());
    assert_eq!(code, Some(1));
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 3, "{text}");
    // [server] (line 3), the pool (line 7) and the service (line 16), each
    // at its own line, not line 0.
    for (line, what) in [
        (3, "udp_payload"),
        (7, "unknown region"),
        (16, "unknown step"),
    ] {
        assert!(
            errors
                .iter()
                .any(|l| l.contains(&format!("geolb.toml:{line}:")) && l.contains(what)),
            "{what} at line {line}: {text}"
        );
    }
}

#[test]
fn serve_fails_clearly_on_a_bad_config_or_a_busy_port() {
    let dir = files();
    std::fs::write(
        dir.path().join("geolb.toml"),
        "[zones.\"example.com\"]\nfile = \"missing.zone\"\n",
    )
    .expect("w");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("geolb.toml"))
        .args(["--dns", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("geolb.toml:2:8") && err.contains("missing.zone"),
        "{err}"
    );
    // A port someone else holds.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = holder.local_addr().expect("addr");
    let dir = files();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("geolb.toml"))
        .args(["--dns", "127.0.0.1:0", "--admin"])
        .arg(busy.to_string())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
}

/// `udp_cpu_affinity`: each UDP worker is pinned to one of the process's
/// CPUs, and a query whose packet the kernel received on CPU c (over
/// loopback: the sender's CPU) is answered by the worker pinned to c; the
/// status API and the metrics show each worker's CPU and packets.
#[cfg(target_os = "linux")]
#[test]
fn udp_cpu_affinity_answers_each_query_on_the_cpu_that_received_it() {
    use geolb::dns::affinity;
    let allowed = affinity::allowed_cpus().expect("sched_getaffinity");
    let s = TestServer::start_with(
        &config("udp_cpu_affinity = true"),
        &[
            ("example.com.zone", &zone_com()),
            ("example.net.zone", ZONE_NET),
        ],
    );
    let stats = s.server().dns.udp.clone();
    let placed = affinity::Placement::over(&allowed, 2).expect("placement");
    assert_eq!(
        stats.iter().map(|w| w.cpu).collect::<Vec<_>>(),
        placed.cpus.iter().map(|&c| Some(c)).collect::<Vec<_>>(),
        "config() asks for 2 workers; they sit on the first two CPUs"
    );
    let counts = || -> Vec<u64> {
        stats
            .iter()
            .map(|w| w.queries.load(Ordering::Relaxed))
            .collect()
    };
    // Sending from each worker's CPU in turn: every query lands on that
    // worker. (On a one-CPU machine both workers share the CPU, packets
    // are not steered, and only the total can be checked.)
    for (i, &cpu) in placed.cpus.iter().enumerate() {
        let before = counts();
        let dns = s.dns;
        std::thread::spawn(move || {
            affinity::pin_current_thread(cpu).expect("pin the sending thread");
            for _ in 0..20 {
                assert_eq!(a_of(dns, "www.example.com."), ["192.0.2.80"]);
            }
        })
        .join()
        .expect("sender");
        let got: Vec<u64> = counts().iter().zip(&before).map(|(a, b)| a - b).collect();
        if placed.steered {
            let mut want = vec![0; got.len()];
            want[i] = 20;
            assert_eq!(got, want, "queries sent from CPU {cpu}, per worker");
        } else {
            assert_eq!(got.iter().sum::<u64>(), 20, "{got:?}");
        }
    }
    let admin = s.admin.expect("admin");
    let (code, body) = http(admin, "GET", "/v1/status");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["udp_workers"][0]["cpu"], placed.cpus[0], "{body}");
    assert_eq!(v["udp_workers"][0]["listener"], s.dns.to_string(), "{body}");
    let (_, metrics) = http(admin, "GET", "/metrics");
    let line = format!(
        "geolb_udp_worker_packets_total{{worker=\"0\",listener=\"{}\",cpu=\"{}\"}} {}",
        s.dns,
        placed.cpus[0],
        counts()[0]
    );
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
}

#[test]
fn a_server_starts_from_values_without_a_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.com.zone"), zone_com()).expect("zone");
    // The config exists only as text; the file name is where errors would
    // point, and nothing is read from it.
    let text = "[server]\ndns = [\"127.0.0.1:0\"]\nadmin_enabled = false\nudp_workers = 1\n\
                [zones.\"example.com\"]\nfile = \"example.com.zone\"\n";
    let config = geolb::config::Config::parse(&dir.path().join("(memory)"), text).expect("config");
    let (snap, _) = geolb::snapshot::build(config, 1, None).expect("snapshot");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let server = rt
        .block_on(geolb::server::Server::run(snap, Default::default()))
        .expect("serves");
    let r = udp(
        server.dns_addrs[0],
        &query("www.example.com.", RecordType::A),
    );
    assert_eq!(r.answers.len(), 1);
    // With no file there is nothing to reload: a clear refusal, still serving.
    let e = server.control.reload().expect_err("no file");
    assert!(
        e.errors[0].message.contains("without a config file"),
        "{:?}",
        e.errors
    );
    let r = udp(
        server.dns_addrs[0],
        &query("www.example.com.", RecordType::A),
    );
    assert_eq!(r.answers.len(), 1);
    rt.block_on(server.shutdown());
}

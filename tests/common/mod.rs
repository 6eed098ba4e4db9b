//! Test harness: starts the real server on 127.0.0.1 port 0 with a config
//! and zones written to a temporary directory, and speaks DNS to it over
//! real UDP and TCP sockets (messages built and parsed with hickory-proto).
#![allow(dead_code)]

pub mod backend;
pub mod cdp;
pub mod mmdb;
pub mod props;
pub mod steering;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

use geolb::config::Overrides;
use geolb::server::Server;

/// Three regions (eu, us, ap) with a pool each (`eu-web`, `us-web`,
/// `ap-web`: one IPv4 and one IPv6 endpoint) and the zone `example.com`
/// (file `example.com.zone`), for the configs of steering tests; services
/// follow as `[zones."example.com".services.NAME]` tables.
pub const THREE_REGIONS: &str = r#"
[regions]
eu = { location = [50.11, 8.68] }
us = { location = [39.04, -77.49] }
ap = { location = [35.68, 139.69] }

[pools]
eu-web = { region = "eu", endpoints = [{ address = "10.1.0.1" }, { address = "2001:db8:1::1" }] }
us-web = { region = "us", endpoints = [{ address = "10.2.0.1" }, { address = "2001:db8:2::1" }] }
ap-web = { region = "ap", endpoints = [{ address = "10.3.0.1" }, { address = "2001:db8:3::1" }] }

[zones."example.com"]
file = "example.com.zone"
"#;

pub const ZONE: &str = r#"$ORIGIN example.com.
$TTL 3600
@       IN  SOA ns1.example.com. hostmaster.example.com. ( 2026112201 7200 900 1209600 300 )
        IN  NS      ns1
        IN  NS      ns2.example.net.
        IN  MX      10 mail
        IN  TXT     "v=spf1 mx -all"
        IN  A       192.0.2.80
ns1     IN  A       192.0.2.53
        IN  AAAA    2001:db8::53
mail    IN  A       192.0.2.25
www  60 IN  A       192.0.2.80
www  60 IN  AAAA    2001:db8::80
ftp     IN  CNAME   www
loop1   IN  CNAME   loop2
loop2   IN  CNAME   loop1
gone    IN  CNAME   nothere
out     IN  CNAME   www.example.org.
other   IN  CNAME   host.example.net.
*.apps  IN  A       192.0.2.90
*.apps  IN  TXT     "wild"
ci.apps IN  A       192.0.2.91
*.alias IN  CNAME   www
a.b     IN  TXT     "below an empty non-terminal"
lab     IN  NS      ns.lab
lab     IN  DS      12345 8 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.lab  IN  A       192.0.2.153
big     IN  TXT     "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
"#;

/// The test zone plus 40 A records at many.example.com (about 700 bytes:
/// more than 512, less than 1232).
pub fn zone_com() -> String {
    let mut t = ZONE.to_string();
    for i in 1..=40 {
        t.push_str(&format!("many IN A 10.0.0.{i}\n"));
    }
    t
}

pub const ZONE_NET: &str = r#"$ORIGIN example.net.
$TTL 300
@    SOA ns1.example.com. hostmaster.example.com. 7 7200 900 1209600 60
@    NS  ns1.example.com.
host A   198.51.100.7
"#;

pub fn config(extra_server: &str) -> String {
    format!(
        r#"[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
udp_workers = 2
nsid = "test-node"
{extra_server}

[zones."example.com"]
file = "example.com.zone"
allow_transfer = ["127.0.0.1/32"]

[zones."example.net"]
file = "example.net.zone"
"#
    )
}

/// Two regions, eu (10.1.0.1) and us (10.2.0.1), and a service
/// `www.example.com` answering eu first and us when eu is out, with `ttl`;
/// the zone file `example.com.zone` (e.g. [`TIER_ZONE`]) beside it.
pub fn failover_config(ttl: u32) -> String {
    format!(
        r#"
[server]
dns = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
udp_workers = 1

[regions.eu]
location = [50.11, 8.68]
[regions.us]
location = [39.04, -77.49]

[pools.eu-web]
region = "eu"
endpoints = [{{ address = "10.1.0.1" }}]
[pools.us-web]
region = "us"
endpoints = [{{ address = "10.2.0.1" }}]

[zones."example.com"]
file = "example.com.zone"

[zones."example.com".services.www]
ttl = {ttl}
pools = ["eu-web", "us-web"]
chain = ["healthy", "failover"]
"#
    )
}

/// `www.example.com A` asked over UDP from the local address `from` (a
/// resolver of its own: 127.0.0.2, 127.0.0.3, ...); the answer's data.
pub fn ask_from(from: &str, dns: SocketAddr) -> Vec<String> {
    let sock = UdpSocket::bind((from, 0)).expect("bind a loopback source");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let q = query("www.example.com.", RecordType::A);
    sock.send_to(&q.to_vec().expect("encode"), dns)
        .expect("send");
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).expect("reply");
    let m = Message::from_vec(&buf[..n]).expect("parse");
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

/// The zone of the tier tests: an apex with SOA and NS only.
pub const TIER_ZONE: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n";

/// A config for tier tests: DNS and the admin API on port 0, region eu
/// (its pool hands out 127.0.1.1), then `tier`.
pub fn tier_config(tier: &str) -> String {
    format!(
        "[server]\ndns = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nudp_workers = 1\n\
         [zones.\"example.com\"]\nfile = \"example.com.zone\"\n\
         [regions.eu]\nlocation = [50.1, 8.7]\n\
         [pools.eu-web]\nregion = \"eu\"\nendpoints = [{{ address = \"127.0.1.1\" }}]\n{tier}"
    )
}

/// Starts a server on [`tier_config`]`(tier)`, with `files` beside it.
pub fn start_tier(tier: &str, files: &[(&str, &str)]) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    std::fs::write(dir.path().join("example.com.zone"), TIER_ZONE).expect("write zone");
    std::fs::write(dir.path().join("geolb.toml"), tier_config(tier)).expect("write config");
    TestServer::start_dir(dir)
}

/// A server running on its own runtime, with its files in a temp dir.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub dns: SocketAddr,
    pub admin: Option<SocketAddr>,
    rt: Option<tokio::runtime::Runtime>,
    server: Option<Server>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(
            &config(""),
            &[
                ("example.com.zone", &zone_com()),
                ("example.net.zone", ZONE_NET),
            ],
        )
    }

    pub fn start_with(cfg: &str, files: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("geolb.toml"), cfg).expect("write config");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write zone");
        }
        Self::start_dir(dir)
    }

    /// Starts on `dir/geolb.toml`, with whatever files the test put there.
    pub fn start_dir(dir: tempfile::TempDir) -> TestServer {
        Self::start_dir_with(dir, Overrides::default())
    }

    /// [`start_dir`](Self::start_dir) with command-line overrides (a
    /// prober: `probe_only`, whose `dns` is then 0.0.0.0:0).
    pub fn start_dir_with(dir: tempfile::TempDir, overrides: Overrides) -> TestServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let path = dir.path().join("geolb.toml");
        let server = rt
            .block_on(Server::start(path, overrides))
            .expect("server starts");
        let dns = server
            .dns_addrs
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let admin = server.admin_addr;
        TestServer {
            dir,
            dns,
            admin,
            rt: Some(rt),
            server: Some(server),
        }
    }

    pub fn shared(&self) -> std::sync::Arc<geolb::control::Control> {
        self.server.as_ref().expect("running").control.clone()
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    /// Replies sent so far by each UDP worker.
    pub fn udp_replies(&self) -> Vec<u64> {
        self.server()
            .dns
            .udp
            .iter()
            .map(|w| w.replies.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn stop(&mut self) {
        if let (Some(rt), Some(server)) = (self.rt.as_ref(), self.server.take()) {
            rt.block_on(server.shutdown());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

pub fn query(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    m
}

/// The A records of `name`, asked over UDP.
pub fn a_of(addr: SocketAddr, name: &str) -> Vec<String> {
    udp(addr, &query(name, RecordType::A))
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

pub fn edns_query(name: &str, rtype: RecordType, payload: u16) -> Message {
    let mut m = query(name, rtype);
    let mut e = Edns::new();
    e.set_max_payload(payload);
    m.edns = Some(e);
    m
}

pub fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(4242);
    N.fetch_add(7919, Ordering::Relaxed)
}

/// The ECS scope prefix a reply carries (RFC 7871 §6), if it has the option.
pub fn ecs_scope(m: &Message) -> Option<u8> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    m.edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => Some(s.scope_prefix()),
            _ => None,
        })
}

/// Sends raw bytes over UDP and returns the raw reply (None on timeout).
pub fn udp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    s.send_to(bytes, addr).expect("send");
    let mut buf = vec![0u8; 65535];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

pub fn udp(addr: SocketAddr, m: &Message) -> Message {
    let bytes = m.to_vec().expect("encode");
    let reply = udp_raw(addr, &bytes).expect("a UDP reply");
    let r = Message::from_vec(&reply).expect("reply parses");
    assert_eq!(r.metadata.id, m.metadata.id, "reply id matches");
    r
}

pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("tcp connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s
}

pub fn tcp_send(s: &mut TcpStream, bytes: &[u8]) {
    let mut f = (bytes.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(bytes);
    s.write_all(&f).expect("tcp write");
}

pub fn tcp_read(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

pub fn tcp(addr: SocketAddr, m: &Message) -> Message {
    let mut s = tcp_connect(addr);
    tcp_send(&mut s, &m.to_vec().expect("encode"));
    let reply = tcp_read(&mut s).expect("a TCP reply");
    Message::from_vec(&reply).expect("reply parses")
}

/// Minimal HTTP/1.1 client for the admin API: returns (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    request(addr, method, path, None, "")
}

/// Like [`http`], with a bearer token.
pub fn http_auth(addr: SocketAddr, method: &str, path: &str, token: &str) -> (u16, String) {
    request(addr, method, path, Some(token), "")
}

/// POST a JSON body.
pub fn http_json(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    request(addr, "POST", path, None, body)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let (status, _, body) = http_raw(addr, method, path, token, body);
    (status, body)
}

/// Like [`http`], returning the status, the response head (status line and
/// headers) and the body.
pub fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("admin connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (status, head.to_string(), body.to_string())
}

/// Polls `f` every 20 ms for up to `limit`; returns how long it took to hold.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Runs `geolb check --config PATH`: (exit code, stdout).
/// Runs `geolb --log-level warn COMMAND --config CONFIG ARGS…` to its end.
pub fn run_geolb(command: &str, config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["--log-level", "warn", command, "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run geolb {command}: {e}"))
}

pub fn check(config: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geolb"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run geolb check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// Resident set size of this process (server and client both live here).
#[cfg(target_os = "linux")]
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

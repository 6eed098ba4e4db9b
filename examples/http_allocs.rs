//! Heap allocations per request proxied by an HTTP listener, counted with a
//! counting global allocator on the server's runtime threads only: the
//! backend and the client run on threads of their own and are not counted.
//!
//! ```sh
//! cargo run --release --example http_allocs                  # 20 000 keep-alive requests
//! cargo run --release --example http_allocs -- 5000 --close  # a new client connection per request
//! cargo run --release --example http_allocs -- 300 --trace   # and where each allocation comes from
//! cargo run --release --example http_allocs -- --fwd off     # forwarded_for = "off"
//! cargo run --release --example http_allocs -- --engine hyper # the hyper engine (default: native)
//! cargo run --release --example http_allocs -- 1000 --idle  # heap kept per idle keep-alive client
//! cargo run --release --example http_allocs -- --h2          # h2c: one stream per request on one connection
//! ```
//!
//! The server is `geolb serve`'s own (`Server::start` on a config with one
//! `mode = "http"` listener in front of a round_robin group of two
//! loopback backends; X-Forwarded-For appended, as by default), on a
//! one-thread runtime as when pinned to one core. The backends answer
//! every request with the same 12-byte body (raw sockets, one thread per
//! connection); the client sends `GET / HTTP/1.1` on one keep-alive
//! connection (or a new one per request with `--close`) and reads each
//! response before the next. After a warm-up (pools filled, buffers
//! grown) it prints allocations and bytes per request; `--trace` captures
//! a backtrace for each allocation of the measured requests and prints
//! them grouped by the first frame of geolb, hyper, hyper-util, h2, http,
//! bytes or tokio, and by the geolb frame that led there. `--idle` opens N
//! client connections that each send one request and stay open, then
//! prints the server's heap still live per connection, by size (and with
//! `--trace` by site).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

struct Counting;

thread_local! {
    /// This thread is one of the server's (its allocations count).
    static SERVER: Cell<bool> = const { Cell::new(false) };
    /// Inside the tracing hook (its own allocations do not count).
    static HOOK: Cell<bool> = const { Cell::new(false) };
}
static ON: AtomicBool = AtomicBool::new(false);
static TRACE: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static TRACES: Mutex<Vec<std::backtrace::Backtrace>> = Mutex::new(Vec::new());
/// With `--idle`: the allocations made while counting that are still live
/// (address → size and, with `--trace`, where it was made).
type Live = HashMap<usize, (usize, Option<std::backtrace::Backtrace>)>;
static KEEP: AtomicBool = AtomicBool::new(false);
static LIVE: Mutex<Option<Live>> = Mutex::new(None);

/// Runs `f` as the hook (its own allocations are not counted), unless
/// already inside it.
fn hooked(f: impl FnOnce()) {
    if HOOK.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    HOOK.with(|h| h.set(true));
    f();
    HOOK.with(|h| h.set(false));
}

fn note(size: usize, p: *mut u8) {
    if !ON.load(Ordering::Relaxed) || !SERVER.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    hooked(|| {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
        let bt = TRACE
            .load(Ordering::Relaxed)
            .then(std::backtrace::Backtrace::force_capture);
        if KEEP.load(Ordering::Relaxed) {
            if let Ok(mut live) = LIVE.lock() {
                live.get_or_insert_with(HashMap::new)
                    .insert(p as usize, (size, bt));
            }
        } else if let (Some(bt), Ok(mut t)) = (bt, TRACES.lock()) {
            t.push(bt);
        }
    });
}

fn freed(p: *mut u8) {
    if KEEP.load(Ordering::Relaxed) {
        hooked(|| {
            if let Ok(mut live) = LIVE.lock() {
                if let Some(m) = live.as_mut() {
                    m.remove(&(p as usize));
                }
            }
        });
    }
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        note(l.size(), p);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        freed(p);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        note(l.size(), p);
        p
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        freed(p);
        let q = unsafe { System.realloc(p, l, n) };
        note(n, q);
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n\r\nhello, tier\n";

/// A keep-alive backend: answers each request (headers only) with RESPONSE.
fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a backend");
    let addr = l.local_addr().expect("backend address");
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = c.set_nodelay(true);
                let mut c = c;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = c.read(&mut chunk) else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if c.write_all(RESPONSE).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Reads one response with a Content-Length from `s`.
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(std::io::Error::other(head));
            }
            let len: usize = head
                .split("\r\n")
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(());
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `n` requests through `addr`, on one connection or one each.
fn client(addr: SocketAddr, n: usize, close: bool) {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: http_allocs\r\nAccept: */*\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    );
    let connect = || {
        let s = TcpStream::connect(addr).expect("connect to the listener");
        s.set_nodelay(true).expect("nodelay");
        s
    };
    let mut s = connect();
    let mut buf = Vec::with_capacity(4096);
    for i in 0..n {
        if close && i > 0 {
            s = connect();
        }
        s.write_all(req.as_bytes()).expect("send");
        read_response(&mut s, &mut buf).expect("response");
    }
}

/// `n` requests through `addr` over h2c (prior knowledge), one stream
/// each, one after the other on one connection (the windows opened wide
/// at the start, so no WINDOW_UPDATE is needed on the way).
fn client_h2(addr: SocketAddr, n: usize, s: &mut Option<(TcpStream, u32)>) {
    use geolb::tier::hpack;
    let (sock, next_id) = s.get_or_insert_with(|| {
        let mut c = TcpStream::connect(addr).expect("connect to the listener");
        c.set_nodelay(true).expect("nodelay");
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // SETTINGS: INITIAL_WINDOW_SIZE 2^31-1; then the connection window.
        hello.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff]);
        hello.extend_from_slice(&[0, 0, 4, 8, 0, 0, 0, 0, 0]);
        hello.extend_from_slice(&(0x7fff_ffffu32 - 65_535).to_be_bytes());
        c.write_all(&hello).expect("preface");
        (c, 1)
    });
    let mut block = Vec::new();
    for (k, v) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "bench.example"),
        ("user-agent", "http_allocs"),
        ("accept", "*/*"),
    ] {
        hpack::encode_field(k.as_bytes(), v.as_bytes(), &mut block);
    }
    let mut head = [0u8; 9];
    let mut payload = Vec::new();
    for _ in 0..n {
        let id = *next_id;
        *next_id += 2;
        let l = (block.len() as u32).to_be_bytes();
        let mut f = vec![l[1], l[2], l[3], 1, 0x5];
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&block);
        sock.write_all(&f).expect("send");
        loop {
            sock.read_exact(&mut head).expect("frame head");
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            payload.resize(len, 0);
            sock.read_exact(&mut payload).expect("frame");
            let (ty, flags) = (head[3], head[4]);
            let sid = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
            if ty == 4 && flags & 1 == 0 {
                sock.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0])
                    .expect("SETTINGS ACK");
            }
            if sid == id && (ty == 0 || ty == 1) && flags & 1 != 0 {
                break;
            }
            assert!(ty != 3 && ty != 7, "stream reset or GOAWAY");
        }
    }
}

/// Frames of a captured backtrace: (function, location).
fn frames(bt: &std::backtrace::Backtrace) -> Vec<(String, String)> {
    let text = format!("{bt}");
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(at) = t.strip_prefix("at ") {
            if let Some(last) = out.last_mut() {
                let short = at.rsplit_once("/src/").map_or(at, |(_, s)| s);
                last.1 = short.to_string();
            }
        } else if let Some((num, f)) = t.split_once(": ") {
            if num.chars().all(|c| c.is_ascii_digit()) {
                // Drop the hash suffix (::h0123456789abcdef).
                let f = match f.rsplit_once("::h") {
                    Some((a, h)) if h.len() == 16 => a,
                    _ => f,
                };
                out.push((f.to_string(), String::new()));
            }
        }
    }
    out
}

fn crate_of(f: &str) -> &str {
    let f = f.trim_start_matches('<');
    f.split("::").next().unwrap_or("")
}

fn report(traces: &[std::backtrace::Backtrace], requests: usize) {
    let interesting = [
        "geolb",
        "hyper",
        "hyper_util",
        "h2",
        "http",
        "http_body_util",
        "bytes",
        "tokio",
    ];
    let mut sites: HashMap<(String, String), usize> = HashMap::new();
    for bt in traces {
        let fr = frames(bt);
        let first = fr
            .iter()
            .find(|(f, _)| interesting.contains(&crate_of(f)))
            .map(|(f, at)| format!("{f} ({at})"))
            .unwrap_or_else(|| "?".into());
        let ours = fr
            .iter()
            .find(|(f, _)| crate_of(f) == "geolb")
            .map(|(f, at)| format!("{f} ({at})"))
            .unwrap_or_else(|| "-".into());
        *sites.entry((first, ours)).or_default() += 1;
    }
    let mut v: Vec<_> = sites.into_iter().collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.1));
    println!("allocation sites (per request), by first frame of interest <- geolb frame:");
    for ((first, ours), n) in v {
        println!(
            "{:6.2}  {first}\n          <- {ours}",
            n as f64 / requests as f64
        );
    }
}

/// `--idle`: the heap each idle keep-alive client connection keeps on
/// the server, after one request.
fn held(addr: SocketAddr, n: usize, trace: bool, rt: tokio::runtime::Runtime) {
    let req =
        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: http_allocs\r\nAccept: */*\r\n\r\n");
    KEEP.store(true, Ordering::SeqCst);
    ON.store(true, Ordering::SeqCst);
    let mut open = Vec::with_capacity(n);
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).expect("connect to the listener");
        s.write_all(req.as_bytes()).expect("send");
        read_response(&mut s, &mut buf).expect("response");
        open.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    ON.store(false, Ordering::SeqCst);
    let live = LIVE.lock().expect("live").take().unwrap_or_default();
    KEEP.store(false, Ordering::SeqCst);
    let bytes: usize = live.values().map(|(b, _)| b).sum();
    println!(
        "{n} idle keep-alive clients, one request each: {:.1} allocations and {:.0} bytes live per client on the server's threads",
        live.len() as f64 / n as f64,
        bytes as f64 / n as f64
    );
    let mut sizes: HashMap<usize, usize> = HashMap::new();
    for (b, _) in live.values() {
        *sizes.entry(*b).or_default() += 1;
    }
    let mut sizes: Vec<_> = sizes.into_iter().collect();
    sizes.sort_by_key(|(b, c)| std::cmp::Reverse(b * c));
    println!("by size (bytes x allocations per client):");
    for (b, c) in sizes.iter().take(12) {
        println!("  {b:6} x {:.2}", *c as f64 / n as f64);
    }
    if trace {
        let traces: Vec<_> = live.into_values().filter_map(|(_, bt)| bt).collect();
        report(&traces, n);
    }
    drop(open);
    drop(rt);
}

fn main() {
    let mut n = 20_000usize;
    let (mut close, mut trace, mut idle, mut fwd) = (false, false, false, "append".to_string());
    let mut h2 = false;
    let mut engine = "native".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--close" => close = true,
            "--h2" => h2 = true,
            "--trace" => trace = true,
            "--idle" => idle = true,
            "--fwd" => fwd = args.next().unwrap_or_else(|| "append".into()),
            "--engine" => engine = args.next().unwrap_or_else(|| "native".into()),
            v => match v.parse() {
                Ok(x) => n = x,
                Err(_) => {
                    eprintln!(
                        "usage: http_allocs [N] [--close | --idle | --h2] [--trace] [--fwd append|replace|off] [--engine native|hyper]"
                    );
                    std::process::exit(2);
                }
            },
        }
    }
    let (b1, b2) = (backend(), backend());
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("example.com.zone"),
        include_str!("../benches/example.com.zone"),
    )
    .expect("zone");
    let cfg = format!(
        r#"[server]
dns = ["127.0.0.1:0"]

[regions.lab]
location = [50.11, 8.68]

[pools.lab-vip]
region = "lab"
endpoints = [{{ address = "127.0.0.1" }}]

[listeners.bench]
region = "lab"
bind = "127.0.0.1:0"
mode = "http"
group = "app"
forwarded_for = "{fwd}"
http1_engine = "{engine}"

[groups.app]
region = "lab"
algorithm = "round_robin"
members = [{{ address = "{b1}" }}, {{ address = "{b2}" }}]

[zones."example.com"]
file = "example.com.zone"
"#
    );
    let path = dir.path().join("geolb.toml");
    std::fs::write(&path, cfg).expect("config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("geolb-rt")
        .on_thread_start(|| SERVER.with(|s| s.set(true)))
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt
        .block_on(geolb::server::Server::start(path, Default::default()))
        .expect("server");
    let addr = server.tier.local_addrs()["bench"];
    // Warm-up: pools filled, buffers at their working size.
    let mut h2c = None;
    if h2 {
        client_h2(addr, 2_000.min(n), &mut h2c);
    } else {
        client(addr, 2_000.min(n), close);
    }
    std::thread::sleep(Duration::from_millis(100));
    TRACE.store(trace, Ordering::Relaxed);
    if idle {
        return held(addr, n, trace, rt);
    }
    ON.store(true, Ordering::SeqCst);
    if h2 {
        client_h2(addr, n, &mut h2c);
    } else {
        client(addr, n, close);
    }
    // The last response is written before the server's task finishes with
    // it (the backend's body guard, the connection's bookkeeping).
    std::thread::sleep(Duration::from_millis(50));
    ON.store(false, Ordering::SeqCst);
    let (a, b) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    println!(
        "{n} requests ({}, forwarded_for = {fwd:?}): {:.2} allocations and {:.0} bytes per request on the server's threads",
        if h2 {
            "h2c, a stream each on one connection"
        } else if close {
            "a new connection each"
        } else {
            "one keep-alive connection"
        },
        a as f64 / n as f64,
        b as f64 / n as f64
    );
    if trace {
        let traces = std::mem::take(&mut *TRACES.lock().expect("traces"));
        report(&traces, n);
    }
    drop(rt);
}

//! An HTTP/1.1 keep-alive load tool for the HTTP tier benchmark
//! (`benches/tier-http.sh`):
//!
//! ```sh
//! httpload rate 127.0.0.1:19101 20000 10 32 /   # 20 000 requests a second for 10 s over 32 connections
//! httpload rate 127.0.0.1:19101 10000 10 32 / --close   # the same, a new connection per request
//! httpload hold 127.0.0.1:19101 10000 /         # 10 000 connections, one request each, kept open
//! httpload hold 127.0.0.1:19001 10000 -         # 10 000 connections that send nothing, kept open
//! ```
//!
//! - `rate ADDR RATE SECS CONNS [PATH]`: open loop at a fixed rate. A
//!   pacer thread releases RATE requests a second, evenly spaced (a
//!   precise sleep per release, not 1 ms timer ticks, so the load is not
//!   a burst every millisecond); CONNS keep-alive connections take them in
//!   turn, one request in flight each. A request's latency runs from its
//!   release to the last byte of its response: it includes the time it
//!   waited for a free connection (coordinated omission is not hidden),
//!   not the pacer's own oversleep. Prints `sent=N ok=N errors=N rps=N
//!   late=N p50=US p90=US p99=US p999=US max=US` (`late`: releases more
//!   than 1 ms behind schedule, i.e. the tool could not keep up). With
//!   `--close`, each request goes on a new connection and says
//!   `Connection: close` (CONNS requests in flight at most); its latency
//!   includes the connect.
//! - `hold ADDR N [PATH]`: opens N connections (256 at a time), sends one
//!   request on each and reads its response (with PATH `-`: sends
//!   nothing, as idle TCP clients for `benches/tier.sh`), prints `open=N
//!   errors=N` once all have been tried, then keeps them open (idle
//!   keep-alive clients) until its standard input reaches end of stream.
//!
//! Responses must carry a Content-Length (the backends of the benchmark
//! send one, and so do the proxies in front of them).

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn usage() -> ExitCode {
    eprintln!("usage: httpload rate ADDR RATE SECS CONNS [PATH] [--close] | hold ADDR N [PATH]");
    ExitCode::from(2)
}

/// One keep-alive connection with its read buffer.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            s,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `request`, reads one whole response; Err on anything but a 2xx
    /// with a Content-Length.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<()> {
        self.s.write_all(request).await?;
        self.buf.clear();
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
        let mut chunk = [0u8; 4096];
        let (head, len) = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = &self.buf[..end];
                if !head.starts_with(b"HTTP/1.1 2") && !head.starts_with(b"HTTP/1.0 2") {
                    return Err(bad("not a 2xx response"));
                }
                let text = std::str::from_utf8(head).map_err(|_| bad("header not UTF-8"))?;
                let len = text
                    .split("\r\n")
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| bad("no content-length"))?;
                break (end + 4, len);
            }
            let n = self.s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let mut have = self.buf.len() - head;
        while have < len {
            let n = self.s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            have += n;
        }
        if have > len {
            return Err(bad("more bytes than the content-length"));
        }
        Ok(())
    }
}

/// Releases `rate` requests a second for `secs` seconds into `tx`, each
/// stamped with its release time; returns how many were late (> 1 ms).
fn pace(tx: mpsc::UnboundedSender<Instant>, rate: u64, secs: u64) -> u64 {
    // A timer slack of 1 ns: the default 50 µs would bunch releases.
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let total = rate * secs;
    let start = Instant::now();
    let mut late = 0;
    for i in 0..total {
        let at = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        } else if now - at > Duration::from_millis(1) {
            late += 1;
        }
        if tx.send(Instant::now()).is_err() {
            break;
        }
    }
    late
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn rate(
    addr: SocketAddr,
    rate: u64,
    secs: u64,
    conns: usize,
    request: Rc<Vec<u8>>,
    close: bool,
) {
    let (tx, rx) = mpsc::unbounded_channel::<Instant>();
    let rx = Rc::new(tokio::sync::Mutex::new(rx));
    let lat: Rc<RefCell<Vec<u32>>> = Rc::new(RefCell::new(Vec::new()));
    let (ok, errors) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
    let mut workers = Vec::new();
    for _ in 0..conns {
        let (rx, lat, ok, errors, req) = (
            rx.clone(),
            lat.clone(),
            ok.clone(),
            errors.clone(),
            request.clone(),
        );
        workers.push(tokio::task::spawn_local(async move {
            let mut conn = if close {
                None
            } else {
                Conn::open(addr).await.ok()
            };
            loop {
                let Some(released) = rx.lock().await.recv().await else {
                    return;
                };
                if conn.is_none() || close {
                    conn = Conn::open(addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errors.set(errors.get() + 1);
                    continue;
                };
                match c.exchange(&req).await {
                    Ok(()) => {
                        ok.set(ok.get() + 1);
                        let us = released.elapsed().as_micros().min(u128::from(u32::MAX));
                        lat.borrow_mut().push(us as u32);
                    }
                    Err(_) => {
                        errors.set(errors.get() + 1);
                        conn = None;
                    }
                }
                if close {
                    conn = None;
                }
            }
        }));
    }
    // Let the connections open before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let pacer = std::thread::spawn(move || pace(tx, rate, secs));
    for w in workers {
        let _ = w.await;
    }
    let elapsed = start.elapsed();
    let late = pacer.join().unwrap_or(0);
    let mut l = lat.take();
    l.sort_unstable();
    let sent = ok.get() + errors.get();
    println!(
        "sent={sent} ok={} errors={} rps={:.0} late={late} p50={} p90={} p99={} p999={} max={}",
        ok.get(),
        errors.get(),
        ok.get() as f64 / elapsed.as_secs_f64(),
        pct(&l, 0.50),
        pct(&l, 0.90),
        pct(&l, 0.99),
        pct(&l, 0.999),
        l.last().copied().unwrap_or(0),
    );
}

/// `request` None: send nothing.
async fn hold(addr: SocketAddr, n: usize, request: Option<Rc<Vec<u8>>>) {
    let open = Rc::new(RefCell::new(Vec::with_capacity(n)));
    let errors = Rc::new(Cell::new(0u64));
    let next = Rc::new(Cell::new(0usize));
    let mut workers = Vec::new();
    for _ in 0..256.min(n) {
        let (open, errors, next, req) =
            (open.clone(), errors.clone(), next.clone(), request.clone());
        workers.push(tokio::task::spawn_local(async move {
            while next.get() < n {
                next.set(next.get() + 1);
                let c = match (Conn::open(addr).await, &req) {
                    (Ok(mut c), Some(req)) => c.exchange(req).await.map(|()| c),
                    (c, _) => c,
                };
                match c {
                    Ok(mut c) => {
                        c.buf = Vec::new();
                        open.borrow_mut().push(c);
                    }
                    Err(_) => errors.set(errors.get() + 1),
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    println!("open={} errors={}", open.borrow().len(), errors.get());
    // Hold until standard input ends (the caller closes it or exits).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await;
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let close = args.iter().any(|a| a == "--close");
    args.retain(|a| a != "--close");
    let arg = |i: usize| args.get(i).map(String::as_str);
    let Some(addr) = arg(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        return usage();
    };
    let num = |i: usize| arg(i).and_then(|v| v.parse::<u64>().ok());
    let request = |i: usize| {
        Rc::new(
            format!(
                "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: httpload\r\nAccept: */*\r\n{}\r\n",
                arg(i).unwrap_or("/"),
                if close { "Connection: close\r\n" } else { "" }
            )
            .into_bytes(),
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    match (arg(0), num(2), num(3), num(4)) {
        (Some("rate"), Some(r), Some(s), Some(c)) if r > 0 && c > 0 => {
            local.block_on(&rt, rate(addr, r, s, c as usize, request(5), close));
        }
        (Some("hold"), Some(n), _, _) => {
            let req = (arg(3) != Some("-")).then(|| request(3));
            local.block_on(&rt, hold(addr, n as usize, req));
        }
        _ => return usage(),
    }
    ExitCode::SUCCESS
}

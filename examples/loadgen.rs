//! A UDP load generator for DNS servers: several sockets, each keeping a
//! window of queries in flight (closed loop), or all together sending at a
//! fixed rate (open loop), for a fixed time; prints QPS and mean round-trip
//! time. Queries are generated, so no input files are needed:
//!
//! ```sh
//! cargo run --release --example loadgen -- 127.0.0.1:5312 static 10
//! cargo run --release --example loadgen -- 127.0.0.1:5312 geo-ecs 10
//! cargo run --release --example loadgen -- 127.0.0.1:5312 nxdomain 10
//! cargo run --release --example loadgen -- 127.0.0.1:5312 any 10 1 --rate 10000 --source 127.0.9.1
//! ```
//!
//! Mixes: `static` (the benchmark zone: 200 hosts, www, mail, MX/NS/SOA at
//! the apex, 10 % NXDOMAIN), `positive` (the same without NXDOMAIN),
//! `nxdomain` (only NXDOMAIN), `nodata` (only NODATA), `geo-ecs`
//! (geo.example.com A, each query with a different random client /24),
//! `any` (example.com ANY, every query the same: what a reflection attack
//! sends in its victim's name).
//! Optional 4th and 5th arguments: sockets (default 4) and window per
//! socket (default 64). By default the generator polls its sockets without
//! ever sleeping (it holds its CPU); a 6th argument `block` makes it sleep
//! in `poll` whenever a pass over its sockets received nothing, so it can
//! share a CPU with the server it loads.
//!
//! Options (anywhere after the address):
//! - `--rate QPS`: open loop; the sockets together send QPS queries a
//!   second, in steps of about a millisecond, whatever comes back, and
//!   sleep in between. The output adds the answered share (`answered=`,
//!   replies that arrived within 200 ms after the last query counted).
//! - `--source IP[,IP...]`: bind the sockets to these local addresses, in
//!   turn (127.0.1.1,127.0.2.1: two client /24s on loopback).
//! - `--cookie HEX`: a COOKIE option (RFC 7873) in every query, the hex of
//!   the client cookie and a server cookie (what `dig +cookie` prints).
//!
//! Replies are counted by ID; `tc=` is how many of them had TC=1. The send
//! loop copies each prepared query into one buffer and keeps the send time
//! of each ID in a fixed table per socket: nothing is allocated per query.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn name(out: &mut Vec<u8>, n: &str) {
    for l in n.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

fn query(id: u16, qname: &str, qtype: u16, ecs: Option<[u8; 3]>, cookie: &[u8]) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    name(&mut q, qname);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    let ecs_len = if ecs.is_some() { 4 + 7 } else { 0 };
    let cookie_len = if cookie.is_empty() {
        0
    } else {
        4 + cookie.len()
    };
    q.extend_from_slice(&((ecs_len + cookie_len) as u16).to_be_bytes());
    if let Some(a) = ecs {
        q.extend_from_slice(&[0, 8, 0, 7, 0, 1, 24, 0]);
        q.extend_from_slice(&a);
    }
    if !cookie.is_empty() {
        q.extend_from_slice(&[0, 10]);
        q.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
        q.extend_from_slice(cookie);
    }
    q
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn queries(mix: &str, cookie: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut fixed: Vec<(String, u16)> = (1..=200)
        .map(|i| (format!("host{i}.example.com"), 1))
        .collect();
    fixed.extend([
        ("www.example.com".to_string(), 1),
        ("www.example.com".to_string(), 28),
        ("mail.example.com".to_string(), 1),
        ("example.com".to_string(), 15),
        ("example.com".to_string(), 2),
        ("example.com".to_string(), 6),
    ]);
    let n = 100_000;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = rng.next();
        let q = match mix {
            "static" if r % 10 == 0 => query(
                0,
                &format!("nx{}.example.com", r % 1_000_000),
                1,
                None,
                cookie,
            ),
            "static" | "positive" => {
                let (q, t) = &fixed[(r as usize / 16) % fixed.len()];
                query(0, q, *t, None, cookie)
            }
            "nxdomain" => query(
                0,
                &format!("nx{}.example.com", r % 1_000_000),
                1,
                None,
                cookie,
            ),
            "nodata" => query(
                0,
                &format!("host{}.example.com", 1 + r % 200),
                16,
                None,
                cookie,
            ),
            "geo-ecs" => {
                let a = (r >> 8).to_be_bytes();
                let first = a[0].clamp(1, 223);
                query(0, "geo.example.com", 1, Some([first, a[1], a[2]]), cookie)
            }
            "any" => return Some(vec![query(0, "example.com", 255, None, cookie)]),
            _ => return None,
        };
        out.push(q);
    }
    Some(out)
}

/// The options: `--rate`, `--source`, `--cookie`.
#[derive(Default)]
struct Opts {
    rate: Option<f64>,
    sources: Vec<IpAddr>,
    cookie: Vec<u8>,
}

/// Splits the arguments into positional ones and options.
fn parse(args: &[String]) -> Result<(Vec<String>, Opts), String> {
    let (mut pos, mut o) = (Vec::new(), Opts::default());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if !a.starts_with("--") {
            pos.push(a.clone());
            continue;
        }
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--rate" => match v.parse::<f64>() {
                Ok(r) if r > 0.0 && r.is_finite() => o.rate = Some(r),
                _ => return Err(format!("--rate {v}: not a positive number")),
            },
            "--source" => {
                for s in v.split(',') {
                    o.sources
                        .push(s.parse().map_err(|_| format!("--source {s}: not an IP"))?);
                }
            }
            "--cookie" => {
                let ok = v.len() % 2 == 0 && (32..=80).contains(&v.len());
                o.cookie = (0..v.len())
                    .step_by(2)
                    .map(|i| v.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .filter(|_| ok)
                    .ok_or(format!(
                        "--cookie {v}: not 16 to 40 bytes of hex (client and server cookie)"
                    ))?;
            }
            _ => return Err(format!("{a}: unknown option (--rate, --source, --cookie)")),
        }
    }
    Ok((pos, o))
}

/// Per socket: the send time of each ID in flight (nanoseconds since the
/// start, 0 for none) and how many there are.
struct Flight {
    sent_at: Vec<u64>,
    pending: usize,
}

impl Flight {
    fn new() -> Flight {
        Flight {
            sent_at: vec![0; 1 << 16],
            pending: 0,
        }
    }
    fn clear(&mut self) {
        self.sent_at.fill(0);
        self.pending = 0;
    }
}

fn main() -> ExitCode {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let (args, opts) = match parse(&all) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.len() < 3 {
        eprintln!(
            "usage: loadgen ADDR MIX SECONDS [SOCKETS [WINDOW [spin|block]]] [--rate QPS] [--source IP,...] [--cookie HEX]"
        );
        return ExitCode::from(2);
    }
    let Ok(target) = args[0].parse::<SocketAddr>() else {
        eprintln!("{}: not an address:port", args[0]);
        return ExitCode::from(2);
    };
    let Some(qs) = queries(&args[1], &opts.cookie) else {
        eprintln!(
            "{}: unknown mix (static, positive, nxdomain, nodata, geo-ecs, any)",
            args[1]
        );
        return ExitCode::from(2);
    };
    let secs: u64 = args[2].parse().unwrap_or(10);
    let sockets: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4).max(1);
    let window: usize = args
        .get(4)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
        .clamp(1, 1 << 15);
    let block = match args.get(5).map(String::as_str) {
        None | Some("spin") => false,
        Some("block") => true,
        Some(other) => {
            eprintln!("{other}: 6th argument is spin or block");
            return ExitCode::from(2);
        }
    };
    let socks: Vec<UdpSocket> = (0..sockets)
        .filter_map(|i| {
            let local = match opts.sources.get(i % opts.sources.len().max(1)) {
                Some(ip) => SocketAddr::new(*ip, 0),
                None => "127.0.0.1:0".parse().ok()?,
            };
            let s = UdpSocket::bind(local).ok()?;
            s.connect(target).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        })
        .collect();
    if socks.len() != sockets {
        eprintln!("cannot open {sockets} sockets to {target} (from the --source addresses?)");
        return ExitCode::FAILURE;
    }
    let mut next_q = 0usize;
    let mut next_id = vec![0u16; sockets];
    let mut flight: Vec<Flight> = (0..sockets).map(|_| Flight::new()).collect();
    let (mut sent, mut recv, mut tc, mut rtt_ns, mut resets) = (0u64, 0u64, 0u64, 0u128, 0u64);
    let mut buf = [0u8; 4096];
    let mut out = [0u8; 512];
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    // Open loop: replies still arriving after the last query count.
    let drain_until = end + Duration::from_millis(if opts.rate.is_some() { 200 } else { 0 });
    let mut last_progress = Instant::now();
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(s),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut send_one = |si: usize, s: &UdpSocket, flight: &mut Flight, now_ns: u64| -> bool {
        let q = &qs[next_q % qs.len()];
        let id = next_id[si];
        out[..q.len()].copy_from_slice(q);
        out[0..2].copy_from_slice(&id.to_be_bytes());
        if s.send(&out[..q.len()]).is_err() {
            return false;
        }
        next_q += 1;
        next_id[si] = id.wrapping_add(1);
        let slot = &mut flight.sent_at[usize::from(id)];
        if *slot == 0 {
            flight.pending += 1;
        }
        *slot = now_ns.max(1);
        true
    };
    loop {
        let now = Instant::now();
        if now >= drain_until {
            break;
        }
        let now_ns = (now - start).as_nanos() as u64;
        let before = recv;
        let mut due = 0u64;
        if now < end {
            if let Some(rate) = opts.rate {
                // Queries due by now at the rate, at most a second's worth at once.
                let want = ((now - start).as_secs_f64() * rate) as u64;
                due = want.saturating_sub(sent).min(rate as u64 + 1);
            }
        }
        for (si, s) in socks.iter().enumerate() {
            if now < end {
                if opts.rate.is_some() {
                    // Spread what is due over the sockets.
                    let share =
                        due / sockets as u64 + u64::from((si as u64) < due % sockets as u64);
                    for _ in 0..share {
                        if !send_one(si, s, &mut flight[si], now_ns) {
                            break;
                        }
                        sent += 1;
                    }
                } else {
                    while flight[si].pending < window {
                        if !send_one(si, s, &mut flight[si], now_ns) {
                            break;
                        }
                        sent += 1;
                    }
                }
            }
            while let Ok(n) = s.recv(&mut buf) {
                if n < 4 {
                    continue;
                }
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                let f = &mut flight[si];
                let at = std::mem::take(&mut f.sent_at[usize::from(id)]);
                if at != 0 {
                    f.pending -= 1;
                    recv += 1;
                    tc += u64::from(buf[2] & 0x02 != 0);
                    rtt_ns += u128::from((Instant::now() - start).as_nanos() as u64 - at);
                    last_progress = Instant::now();
                }
            }
        }
        if (block || opts.rate.is_some()) && recv == before {
            let wait = if opts.rate.is_some() { 1 } else { 50 };
            // SAFETY: `fds` is a live array of pollfd of the given length.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        }
        // Lost packets would stall a closed loop: start the windows again.
        if opts.rate.is_none() && last_progress.elapsed() > Duration::from_millis(200) {
            for f in flight.iter_mut() {
                f.clear();
            }
            resets += 1;
            last_progress = Instant::now();
        }
    }
    let elapsed = (Instant::now().min(end) - start).as_secs_f64();
    let mean_us = if recv > 0 {
        rtt_ns as f64 / recv as f64 / 1e3
    } else {
        0.0
    };
    let answered = if opts.rate.is_some() && sent > 0 {
        format!(" answered={:.4}", recv as f64 / sent as f64)
    } else {
        String::new()
    };
    println!(
        "sent={sent} recv={recv} tc={tc}{answered} window_resets={resets} elapsed={elapsed:.2}s qps={:.0} mean_rtt_us={mean_us:.1}",
        recv as f64 / elapsed
    );
    ExitCode::SUCCESS
}

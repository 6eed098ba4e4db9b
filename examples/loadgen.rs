//! A closed-loop UDP load generator for DNS servers: several sockets, each
//! keeping a window of queries in flight, for a fixed time; prints QPS and
//! mean round-trip time. Queries are generated, so no input files are needed:
//!
//! ```sh
//! cargo run --release --example loadgen -- 127.0.0.1:5312 static 10
//! cargo run --release --example loadgen -- 127.0.0.1:5312 geo-ecs 10
//! cargo run --release --example loadgen -- 127.0.0.1:5312 nxdomain 10
//! ```
//!
//! Mixes: `static` (the benchmark zone: 200 hosts, www, mail, MX/NS/SOA at
//! the apex, 10 % NXDOMAIN), `positive` (the same without NXDOMAIN),
//! `nxdomain` (only NXDOMAIN), `nodata` (only NODATA), `geo-ecs`
//! (geo.example.com A, each query with a different random client /24).
//! Optional 4th and 5th arguments: sockets (default 4) and window per
//! socket (default 64). By default the generator polls its sockets without
//! ever sleeping (it holds its CPU); a 6th argument `block` makes it sleep
//! in `poll` whenever a pass over its sockets received nothing, so it can
//! share a CPU with the server it loads.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn name(out: &mut Vec<u8>, n: &str) {
    for l in n.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

fn query(id: u16, qname: &str, qtype: u16, ecs: Option<[u8; 3]>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    name(&mut q, qname);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    match ecs {
        Some(a) => {
            q.extend_from_slice(&11u16.to_be_bytes());
            q.extend_from_slice(&[0, 8, 0, 7, 0, 1, 24, 0]);
            q.extend_from_slice(&a);
        }
        None => q.extend_from_slice(&[0, 0]),
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

fn queries(mix: &str) -> Option<Vec<Vec<u8>>> {
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
            "static" if r % 10 == 0 => {
                query(0, &format!("nx{}.example.com", r % 1_000_000), 1, None)
            }
            "static" | "positive" => {
                let (q, t) = &fixed[(r as usize / 16) % fixed.len()];
                query(0, q, *t, None)
            }
            "nxdomain" => query(0, &format!("nx{}.example.com", r % 1_000_000), 1, None),
            "nodata" => query(0, &format!("host{}.example.com", 1 + r % 200), 16, None),
            "geo-ecs" => {
                let a = (r >> 8).to_be_bytes();
                let first = a[0].clamp(1, 223);
                query(0, "geo.example.com", 1, Some([first, a[1], a[2]]))
            }
            _ => return None,
        };
        out.push(q);
    }
    Some(out)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: loadgen ADDR MIX SECONDS [SOCKETS [WINDOW]]");
        return ExitCode::from(2);
    }
    let Ok(target) = args[1].parse::<SocketAddr>() else {
        eprintln!("{}: not an address:port", args[1]);
        return ExitCode::from(2);
    };
    let Some(qs) = queries(&args[2]) else {
        eprintln!(
            "{}: unknown mix (static, positive, nxdomain, nodata, geo-ecs)",
            args[2]
        );
        return ExitCode::from(2);
    };
    let secs: u64 = args[3].parse().unwrap_or(10);
    let sockets: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(4);
    let window: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(64);
    let block = match args.get(6).map(String::as_str) {
        None | Some("spin") => false,
        Some("block") => true,
        Some(other) => {
            eprintln!("{other}: 6th argument is spin or block");
            return ExitCode::from(2);
        }
    };
    let socks: Vec<UdpSocket> = (0..sockets)
        .filter_map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").ok()?;
            s.connect(target).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        })
        .collect();
    if socks.len() != sockets {
        eprintln!("cannot open {sockets} sockets to {target}");
        return ExitCode::FAILURE;
    }
    let mut next_q = 0usize;
    let mut next_id = vec![0u16; sockets];
    let mut inflight: Vec<HashMap<u16, Instant>> = vec![HashMap::new(); sockets];
    let (mut sent, mut recv, mut rtt_sum, mut resets) = (0u64, 0u64, 0f64, 0u64);
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut last_progress = Instant::now();
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(s),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while Instant::now() < end {
        let before = recv;
        for (si, s) in socks.iter().enumerate() {
            while inflight[si].len() < window {
                let mut q = qs[next_q % qs.len()].clone();
                next_q += 1;
                let id = next_id[si];
                next_id[si] = id.wrapping_add(1);
                q[0..2].copy_from_slice(&id.to_be_bytes());
                if s.send(&q).is_err() {
                    break;
                }
                inflight[si].insert(id, Instant::now());
                sent += 1;
            }
            while let Ok(n) = s.recv(&mut buf) {
                if n < 2 {
                    continue;
                }
                let id = u16::from_be_bytes([buf[0], buf[1]]);
                if let Some(t) = inflight[si].remove(&id) {
                    recv += 1;
                    rtt_sum += t.elapsed().as_secs_f64();
                    last_progress = Instant::now();
                }
            }
        }
        if block && recv == before {
            // SAFETY: `fds` is a live array of pollfd of the given length.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        }
        // Lost packets would stall a closed loop: start the windows again.
        if last_progress.elapsed() > Duration::from_millis(200) {
            for f in inflight.iter_mut() {
                f.clear();
            }
            resets += 1;
            last_progress = Instant::now();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mean_us = if recv > 0 {
        rtt_sum / recv as f64 * 1e6
    } else {
        0.0
    };
    println!(
        "sent={sent} recv={recv} window_resets={resets} elapsed={elapsed:.2}s qps={:.0} mean_rtt_us={mean_us:.1}",
        recv as f64 / elapsed
    );
    ExitCode::SUCCESS
}

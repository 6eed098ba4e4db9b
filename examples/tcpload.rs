//! A TCP load tool for the tier benchmark (`benches/tier.sh`), one thread:
//!
//! ```sh
//! tcpload rate  127.0.0.1:19001 5000 10 /tiny   # 5 000 new connections a second for 10 s
//! tcpload close 127.0.0.1:19001 10 64 /tiny     # as many as 64 loops manage for 10 s
//! ```
//!
//! - `rate ADDR RATE SECS [PATH]`: open loop. RATE connections a second,
//!   started on schedule whether or not earlier ones have finished; each
//!   connects, sends `GET PATH HTTP/1.0` (default `/`), reads the response
//!   to the end of stream and closes. Prints `started=N ok=N errors=N
//!   cps=N late=N` (`late`: connections started more than 10 ms behind
//!   schedule, i.e. the tool could not keep up).
//! - `close ADDR SECS CONC [PATH]`: closed loop, the same connections
//!   back to back from CONC loops; prints `ok=N errors=N cps=N`.
//!
//! Idle connections for the RSS measure: `httpload hold ADDR N -`.

use std::cell::Cell;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn usage() -> ExitCode {
    eprintln!("usage: tcpload rate ADDR RATE SECS [PATH] | close ADDR SECS CONC [PATH]");
    ExitCode::from(2)
}

#[derive(Default)]
struct Counts {
    ok: Cell<u64>,
    errors: Cell<u64>,
}

/// One connection: connect, request, read to the end, close.
async fn once(addr: SocketAddr, request: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(request).await?;
    let mut buf = [0u8; 4096];
    let mut got = 0;
    loop {
        match s.read(&mut buf).await? {
            0 if got == 0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            0 => return Ok(()),
            n => got += n,
        }
    }
}

fn count(c: &Counts, r: std::io::Result<()>) {
    match r {
        Ok(()) => c.ok.set(c.ok.get() + 1),
        Err(_) => c.errors.set(c.errors.get() + 1),
    }
}

async fn rate(addr: SocketAddr, rate: u64, secs: u64, request: Rc<Vec<u8>>) {
    let counts = Rc::new(Counts::default());
    let start = Instant::now();
    let total = rate * secs;
    let (mut started, mut late) = (0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while started < total {
        tick.tick().await;
        let elapsed = start.elapsed();
        let due = (u128::from(rate) * elapsed.as_micros() / 1_000_000) as u64;
        let due = due.min(total);
        while started < due {
            // When connection number `started` should have begun.
            let at = Duration::from_micros(started * 1_000_000 / rate);
            if elapsed.saturating_sub(at) > Duration::from_millis(10) {
                late += 1;
            }
            started += 1;
            let (c, req) = (counts.clone(), request.clone());
            tokio::task::spawn_local(async move { count(&c, once(addr, &req).await) });
        }
    }
    let sent = start.elapsed();
    // Let the last connections finish (at most 5 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    while counts.ok.get() + counts.errors.get() < started && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ok = counts.ok.get();
    println!(
        "started={started} ok={ok} errors={} cps={:.0} late={late}",
        counts.errors.get(),
        ok as f64 / sent.as_secs_f64()
    );
}

async fn close(addr: SocketAddr, secs: u64, conc: usize, request: Rc<Vec<u8>>) {
    let counts = Rc::new(Counts::default());
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..conc {
        let (c, req) = (counts.clone(), request.clone());
        loops.push(tokio::task::spawn_local(async move {
            while Instant::now() < end {
                count(&c, once(addr, &req).await);
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
    let ok = counts.ok.get();
    println!(
        "ok={ok} errors={} cps={:.0}",
        counts.errors.get(),
        ok as f64 / start.elapsed().as_secs_f64()
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let Some(addr) = arg(1).and_then(|a| a.parse::<SocketAddr>().ok()) else {
        return usage();
    };
    let num = |i: usize| arg(i).and_then(|v| v.parse::<u64>().ok());
    let request =
        |i: usize| Rc::new(format!("GET {} HTTP/1.0\r\n\r\n", arg(i).unwrap_or("/")).into_bytes());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    match (arg(0), num(2), num(3)) {
        (Some("rate"), Some(r), Some(s)) if r > 0 => {
            local.block_on(&rt, rate(addr, r, s, request(4)));
        }
        (Some("close"), Some(s), Some(c)) if c > 0 => {
            local.block_on(&rt, close(addr, s, c as usize, request(4)));
        }
        _ => return usage(),
    }
    ExitCode::SUCCESS
}

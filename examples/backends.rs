//! Serves the backends of a geolb config's tier groups on loopback, for the
//! lab: every member address of every `[groups.NAME]` answers
//!
//! - HTTP (`curl http://127.0.1.1:9000/` through the tier): `200` with the
//!   backend's identity and the client the backend sees (from a PROXY
//!   header when the group sends one); `GET /healthz` is what monitors hit;
//! - anything else: each line echoed back, prefixed with the identity.
//!
//! ```text
//! cargo run --example backends                      # the sample geolb.toml
//! cargo run --example backends -- other.toml --down 127.0.1.12:9001
//! ```
//! `--down ADDR` leaves that backend out (connections to it are refused),
//! to see health checks, retries and ejection at work.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

fn usage() -> ! {
    eprintln!("usage: backends [CONFIG] [--down ADDR]...");
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut config = PathBuf::from("geolb.toml");
    let mut down: Vec<SocketAddr> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--down" => match args.next().and_then(|v| v.parse().ok()) {
                Some(addr) => down.push(addr),
                None => usage(),
            },
            "-h" | "--help" => usage(),
            _ => config = PathBuf::from(a),
        }
    }
    let cfg = match geolb::config::Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    };
    let mut tasks = Vec::new();
    for g in &cfg.groups {
        let proxy = g
            .value
            .send_proxy
            .as_ref()
            .is_some_and(|p| p.get_ref() != "none");
        for m in g.value.members.get_ref() {
            if down.contains(&m.address) {
                println!("{:<28} left down", format!("{}/{}", g.name, m.address));
                continue;
            }
            let id = format!("{} {}/{}", g.value.region.get_ref(), g.name, m.address);
            match TcpListener::bind(m.address).await {
                Ok(l) => {
                    println!("{:<28} listening", format!("{}/{}", g.name, m.address));
                    tasks.push(tokio::spawn(serve(l, id, proxy)));
                }
                Err(e) => eprintln!("{}: cannot listen on {}: {e}", g.name, m.address),
            }
        }
    }
    if tasks.is_empty() {
        eprintln!("no [groups] members to serve in {}", config.display());
        std::process::exit(1);
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn serve(l: TcpListener, id: String, proxy: bool) {
    loop {
        let Ok((s, peer)) = l.accept().await else {
            continue;
        };
        let id = id.clone();
        tokio::spawn(async move {
            let _ = conn(s, peer, &id, proxy).await;
        });
    }
}

async fn conn(mut s: TcpStream, peer: SocketAddr, id: &str, proxy: bool) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut have = s.read(&mut buf).await?;
    let mut client = peer.to_string();
    let mut start = 0;
    if proxy {
        // Read until the whole header is in.
        loop {
            match geolb::tier::proxy::parse(&buf[..have]) {
                Ok(Some((addrs, len))) => {
                    if let Some((src, _)) = addrs {
                        client = format!("{src} (PROXY header; TCP peer {peer})");
                    }
                    start = len;
                    break;
                }
                Ok(None) if have < buf.len() => {
                    let n = s.read(&mut buf[have..]).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    have += n;
                }
                // Not a header (a health check connects without one).
                _ => break,
            }
        }
        if start > 0 && start == have {
            have = 0;
            start = 0;
            have += s.read(&mut buf).await?;
        }
    }
    let first = &buf[start..have];
    if first.starts_with(b"GET ") || first.starts_with(b"HEAD ") || first.starts_with(b"POST ") {
        let head = String::from_utf8_lossy(first);
        let forwarded = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-forwarded-for")
                    .then(|| v.trim().to_string())
            })
            .map(|f| format!(" (X-Forwarded-For: {f})"))
            .unwrap_or_default();
        // The request's body (Content-Length), read and dropped before
        // answering, as an application would.
        if let Some(end) = first.windows(4).position(|w| w == b"\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut left = len.saturating_sub(first.len() - end - 4);
            let mut sink = vec![0u8; 16 * 1024];
            while left > 0 {
                let n = s.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(n);
            }
        }
        let body = if first.starts_with(b"GET /healthz") {
            "ok\n".to_string()
        } else {
            format!("backend {id}\nclient {client}{forwarded}\n")
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await?;
        return s.shutdown().await;
    }
    // Line echo, prefixed with who answers.
    let (r, mut w) = s.into_split();
    let mut pending = first.to_vec();
    let mut lines = BufReader::new(r);
    loop {
        while let Some(i) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            w.write_all(format!("{id}: ").as_bytes()).await?;
            w.write_all(&line).await?;
        }
        let mut more = Vec::new();
        if lines.read_until(b'\n', &mut more).await? == 0 {
            if !pending.is_empty() {
                w.write_all(format!("{id}: ").as_bytes()).await?;
                w.write_all(&pending).await?;
            }
            return w.shutdown().await;
        }
        pending.extend_from_slice(&more);
    }
}

//! Real HTTP/TCP backends for health tests: a small threaded HTTP/1.1
//! server whose behaviour can be switched while it runs (healthy, failing,
//! hanging, wrong body, a given JSON body), killed (port closed) and revived.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const OK: u8 = 0;
pub const FAIL: u8 = 1;
pub const HANG: u8 = 2;
pub const WRONG_BODY: u8 = 3;
pub const BODY: u8 = 4;
/// Alternates: OK, FAIL, OK, FAIL... one per request.
pub const FLAP: u8 = 5;

pub struct Backend {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    body: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    /// Connections accepted since start (every check opens its own).
    accepted: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn serve(
    listener: TcpListener,
    mode: Arc<AtomicU8>,
    body: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
) {
    listener.set_nonblocking(true).expect("nonblocking");
    let mut served = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                served += 1;
                accepted.fetch_add(1, Ordering::Relaxed);
                let m = match mode.load(Ordering::Relaxed) {
                    FLAP if served % 2 == 0 => FAIL,
                    FLAP => OK,
                    m => m,
                };
                let body = body.clone();
                let stop = stop.clone();
                std::thread::spawn(move || handle(s, m, &body, &stop));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn handle(mut s: TcpStream, mode: u8, body: &Mutex<String>, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let (status, text) = match mode {
        OK => ("200 OK", "ok".to_string()),
        FAIL => ("500 Internal Server Error", "broken".to_string()),
        WRONG_BODY => ("200 OK", "nope".to_string()),
        BODY => ("200 OK", body.lock().map(|b| b.clone()).unwrap_or_default()),
        _ => {
            for _ in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            return;
        }
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

impl Backend {
    pub fn start(mode: u8) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let mut b = Backend {
            addr,
            mode: Arc::new(AtomicU8::new(mode)),
            body: Arc::new(Mutex::new(String::new())),
            stop: Arc::new(AtomicBool::new(false)),
            accepted: Arc::new(AtomicU64::new(0)),
            thread: None,
        };
        b.run(listener);
        b
    }

    fn run(&mut self, listener: TcpListener) {
        let (m, b, s) = (self.mode.clone(), self.body.clone(), self.stop.clone());
        let a = self.accepted.clone();
        self.thread = Some(std::thread::spawn(move || serve(listener, m, b, s, a)));
    }

    /// Connections accepted so far (a check is one connection).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }

    pub fn set_body(&self, text: &str) {
        if let Ok(mut b) = self.body.lock() {
            *b = text.to_string();
        }
        self.set(BODY);
    }

    /// Stops listening: connections are refused.
    pub fn kill(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Listens again on the same port.
    pub fn revive(&mut self) {
        self.stop = Arc::new(AtomicBool::new(false));
        let listener = TcpListener::bind(self.addr).expect("rebind backend");
        self.run(listener);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

//! Keep-alive HTTP/1.1 connections to cleartext backends, pooled per
//! backend: a last-in-first-out list of idle connections (hyper's client
//! `SendRequest` over a connection task of its own), shared by every
//! listener that sends to the backend. A connection goes back to the list
//! when its response body has been read to the end; one whose response was
//! cut short, that the backend closed, or that sat idle past `IDLE_FOR` is
//! dropped. The backend's drain deadline closes its pooled connections.
//!
//! This replaces hyper-util's pooled client on the hot path: no pool map
//! keyed by a hashed scheme and authority, no oneshot per checkout, no boxed
//! response future, no extensions; a request on a reused connection that the
//! backend closed before it was sent is sent again on another connection
//! (as hyper-util does).
//!
//! The native engine (`tier::native`) keeps plain sockets instead
//! (`RawIdle`): the same last-in-first-out list per backend, a socket
//! found readable while idle (the backend closed it) dropped when taken.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::stats::add;

/// Idle connections kept per backend at most (more are closed).
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused.
const IDLE_FOR: Duration = Duration::from_secs(60);

/// A backend's idle connections (requests with bodies of type `B`).
pub struct Idle<B> {
    conns: Mutex<Vec<(SendRequest<B>, Instant)>>,
}

impl<B> Default for Idle<B> {
    fn default() -> Self {
        Idle {
            conns: Mutex::new(Vec::new()),
        }
    }
}

impl<B> std::fmt::Debug for Idle<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("conns", &self.count())
            .finish()
    }
}

impl<B> Idle<B> {
    fn take(&self) -> Option<SendRequest<B>> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((s, since)) = conns.pop() {
            if !s.is_closed() && since.elapsed() < IDLE_FOR {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, s: SendRequest<B>) {
        if s.is_closed() {
            return;
        }
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if conns.len() >= MAX_IDLE {
            // The oldest and those the backend closed go first.
            conns.retain(|(s, since)| !s.is_closed() && since.elapsed() < IDLE_FOR);
            if conns.len() >= MAX_IDLE {
                conns.remove(0);
            }
        }
        conns.push((s, Instant::now()));
    }

    /// Idle connections held now.
    pub fn count(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("connect to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// A reused connection failed after the request went out: the backend
    /// had closed it (a keep-alive race), not a failure of the backend.
    #[error("reused connection closed: {0}")]
    Stale(hyper::Error),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        !matches!(self, SendError::Http(_))
    }
}

/// The connection a response came on: back to its backend's idle list
/// once the response body has been read to the end (`finish`), else
/// dropped with it.
pub struct Lease<B> {
    sender: SendRequest<B>,
    idle: Arc<Idle<B>>,
}

impl<B> Lease<B> {
    pub fn finish(self) {
        self.idle.put(self.sender);
    }
}

/// Where requests go: a backend's address, its idle connections, and the
/// signal that closes its connections (its drain deadline).
pub struct Target<'a, B> {
    pub addr: SocketAddr,
    pub idle: &'a Arc<Idle<B>>,
    pub kill: &'a tokio::sync::watch::Sender<u64>,
}

/// Sends `req` to `backend` on an idle connection or a new one (opened
/// within `connect_timeout`, counted in `opened`).
pub async fn send<B>(
    backend: Target<'_, B>,
    mut req: Request<B>,
    connect_timeout: Duration,
    opened: &AtomicU64,
) -> Result<(Response<Incoming>, Lease<B>), SendError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (mut sender, reused) = match backend.idle.take() {
            Some(s) => (s, true),
            None => (connect(&backend, connect_timeout, opened).await?, false),
        };
        if !sender.is_ready() && sender.ready().await.is_err() {
            if reused {
                continue;
            }
            return Err(SendError::Connect(
                backend.addr,
                std::io::Error::other("closed before the first request"),
            ));
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let lease = Lease {
                    sender,
                    idle: backend.idle.clone(),
                };
                return Ok((resp, lease));
            }
            Err(mut e) => match e.take_message() {
                // Never sent, on a connection the backend had closed: again
                // on another.
                Some(r) if reused => req = r,
                None if reused => return Err(SendError::Stale(e.into_error())),
                _ => return Err(SendError::Http(e.into_error())),
            },
        }
    }
}

async fn connect<B>(
    backend: &Target<'_, B>,
    within: Duration,
    opened: &AtomicU64,
) -> Result<SendRequest<B>, SendError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let addr = backend.addr;
    let stream = match tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => return Err(SendError::ConnectTimeout(addr)),
        Ok(Err(e)) => return Err(SendError::Connect(addr, e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    add(opened, 1);
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    let mut kill = backend.kill.subscribe();
    tokio::spawn(async move {
        tokio::select! {
            r = conn.with_upgrades() => {
                if let Err(e) = r {
                    tracing::debug!(backend = %addr, "backend connection ended: {e}");
                }
            }
            // The backend's drain deadline: its pooled connections close.
            _ = kill.changed() => {}
        }
    });
    Ok(sender)
}

/// A backend's idle keep-alive connections of the native engine
/// (`tier::native`): plain sockets, last in first out, each with the
/// backend's kill generation when it went idle (a drain deadline since
/// closes it instead of reusing it).
#[derive(Debug, Default)]
pub struct RawIdle {
    conns: Mutex<Vec<(tokio::net::TcpStream, Instant, u64)>>,
}

impl RawIdle {
    /// An idle connection the backend has not closed, opened in kill
    /// generation `gen`, at `now`. Dead ones found on the way are dropped.
    pub fn take(&self, gen: u64, now: Instant) -> Option<tokio::net::TcpStream> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((s, since, g)) = conns.pop() {
            if g != gen || now.saturating_duration_since(since) >= IDLE_FOR {
                continue;
            }
            // Readable while idle: the backend closed it (or sent what
            // no request asked for). Costs no system call while the
            // socket is known not to be readable.
            let mut probe = [0u8; 1];
            match s.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(s),
                _ => continue,
            }
        }
        None
    }

    /// Pools a connection idle since `since` (a clock read of the request
    /// it served: at most that early, so it expires no later than due).
    pub fn put(&self, s: tokio::net::TcpStream, gen: u64, since: Instant) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if conns.len() >= MAX_IDLE {
            conns.retain(|(_, t, g)| *g == gen && since.saturating_duration_since(*t) < IDLE_FOR);
            if conns.len() >= MAX_IDLE {
                conns.remove(0);
            }
        }
        conns.push((s, since, gen));
    }

    /// Idle connections held now.
    pub fn count(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Closes them all (the backend's drain deadline).
    pub fn clear(&self) {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

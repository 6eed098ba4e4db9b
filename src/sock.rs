//! Socket set-up shared by every TCP listener (DNS over TCP, the tier).

use std::net::SocketAddr;

/// A non-blocking listening socket with address reuse (a restart does not
/// wait for TIME_WAIT), IPv6 sockets IPv6-only, and an accept queue of
/// `backlog` (the kernel caps it at `net.core.somaxconn`).
pub fn listen_tcp(addr: SocketAddr, backlog: u32) -> std::io::Result<std::net::TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(i32::try_from(backlog.clamp(128, 65_535)).unwrap_or(1024))?;
    // Delayed ACKs on accepted connections (as HAProxy sets its listeners):
    // a client's first request is acknowledged with the response rather
    // than on its own.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = s.set_quickack(false);
    Ok(s.into())
}

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

/// Whether listener `l` wakes its acceptor only once a new connection has
/// data (TCP_DEFER_ACCEPT, waiting up to `secs`; 0 turns it off). For
/// listeners whose clients speak first — HTTP, TLS, a PROXY header — a
/// connection then costs one wake-up instead of two (the handshake's last
/// ACK, then the request), and its request is there when it is accepted.
/// HAProxy's `defer-accept` and NGINX's `deferred` are the same option.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn defer_accept(l: &std::net::TcpListener, secs: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is an open socket `l` owns for the whole call;
    // the option value is a c_int on this stack frame, its size passed.
    let r = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// (Not on this platform: accepting is not deferred.)
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn defer_accept(_: &std::net::TcpListener, _: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_deferred_listener_accepts_a_connection_once_it_has_sent_data() {
        let l = listen_tcp("127.0.0.1:0".parse().expect("addr"), 16).expect("listen");
        defer_accept(&l, 5).expect("TCP_DEFER_ACCEPT");
        let mut c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(
            l.accept().map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "accepted before any data"
        );
        c.write_all(b"GET").expect("write");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (mut s, _) = loop {
            match l.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "never accepted");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        s.set_nonblocking(false).expect("blocking");
        let mut got = [0u8; 3];
        s.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"GET");
        // Turned off again: the next connection is accepted at once.
        defer_accept(&l, 0).expect("off");
        let _c2 = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(e) = l.accept() {
            assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
            assert!(
                std::time::Instant::now() < deadline,
                "not accepted without data"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

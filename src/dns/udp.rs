//! UDP listeners: one socket per worker thread, all bound to the same
//! address with `SO_REUSEPORT` so the kernel spreads queries across them.
//! Each worker is a plain OS thread with its own buffers: no task, channel
//! or lock per packet; it loads the current snapshot once per query.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::dns::affinity::{self, Placement};
use crate::dns::answer::{handle, Outcome, Transport};
use crate::policy::Scratch;
use crate::server::Shared;

/// How often an idle worker wakes to check for shutdown.
const POLL: Duration = Duration::from_millis(200);

/// Counters of one worker (written by that worker only). Aligned to two
/// cache lines so that two workers' counters never share one (or a pair
/// the prefetcher fetches together): each worker writes its own on every
/// batch.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub queries: AtomicU64,
    pub replies: AtomicU64,
    pub dropped: AtomicU64,
    /// The address this worker serves.
    pub listener: Option<SocketAddr>,
    /// The CPU this worker is pinned to (`udp_cpu_affinity`).
    pub cpu: Option<usize>,
}

/// Binds one UDP socket with `SO_REUSEPORT` (and IPv6-only for v6).
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    no_path_mtu_discovery(&s, addr.is_ipv6());
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(POLL))?;
    Ok(s.into())
}

/// Replies go out at the interface MTU without the DF bit, ignoring path
/// MTU information (`IP_PMTUDISC_OMIT`), as NSD, Knot and gdnsd do: a
/// forged ICMP "fragmentation needed" cannot then make us fragment replies
/// (fragments are how off-path attackers splice records into answers), and
/// sending skips the per-packet path MTU lookup. Large answers are kept
/// under the client's EDNS size and truncated to TCP instead.
fn no_path_mtu_discovery(s: &Socket, v6: bool) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (level, name, omit, dont) = if v6 {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_OMIT,
                libc::IPV6_PMTUDISC_DONT,
            )
        } else {
            (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_OMIT,
                libc::IP_PMTUDISC_DONT,
            )
        };
        let set = |v: libc::c_int| {
            // SAFETY: a valid socket, an int option and its size.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    level,
                    name,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                ) == 0
            }
        };
        // OMIT needs Linux 3.15 (IPv4) / 4.x (IPv6); DONT is the fallback.
        if !set(omit) && !set(dont) {
            tracing::warn!(
                error = %io::Error::last_os_error(),
                "could not turn off path MTU discovery on a UDP socket"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (s, v6);
}

/// The worker threads serving one address.
pub struct Listener {
    pub addr: SocketAddr,
    pub threads: Vec<JoinHandle<()>>,
    pub stats: Vec<Arc<WorkerStats>>,
    /// Kept so shutdown can wake workers blocked in a receive.
    pub sockets: Vec<Arc<UdpSocket>>,
    /// Whether the kernel hands each packet to the worker pinned on the
    /// CPU that received it.
    pub steered: bool,
}

/// Wakes a worker blocked receiving on `sock` (it then sees the stop flag).
pub fn wake(sock: &UdpSocket) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the socket is alive (the caller holds it); shutting down its
        // read side only makes pending and future receives return at once.
        unsafe {
            libc::shutdown(sock.as_raw_fd(), libc::SHUT_RD);
        }
    }
    #[cfg(not(unix))]
    let _ = sock;
}

/// Binds `workers` sockets to `addr`. Port 0 is resolved by the first
/// socket and reused by the others.
pub fn bind_group(addr: SocketAddr, workers: usize) -> io::Result<(SocketAddr, Vec<UdpSocket>)> {
    let first = bind(addr)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(bind(bound)?);
    }
    Ok((bound, sockets))
}

/// Starts one worker thread per socket; with a placement, worker i is
/// pinned to `placement.cpus[i]` and, when the placement allows it, the
/// group is steered by receiving CPU (failures are logged, and the workers
/// run unpinned or unsteered).
pub fn spawn(
    bound: SocketAddr,
    sockets: Vec<UdpSocket>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    first_slot: usize,
    placement: Option<&Placement>,
) -> io::Result<Listener> {
    let mut handles = Vec::new();
    let mut stats = Vec::new();
    let mut steered = false;
    if let (Some(p), Some(first)) = (placement.filter(|p| p.steered), sockets.first()) {
        match affinity::steer(first, &p.cpus) {
            Ok(()) => steered = true,
            Err(e) => {
                tracing::warn!(addr = %bound, error = %e, "cannot steer UDP packets to the worker on the receiving CPU; the kernel spreads them by hash")
            }
        }
    }
    let sockets: Vec<Arc<UdpSocket>> = sockets.into_iter().map(Arc::new).collect();
    for (i, sock) in sockets.iter().cloned().enumerate() {
        let cpu = placement.and_then(|p| p.cpus.get(i).copied());
        let st = Arc::new(WorkerStats {
            listener: Some(bound),
            cpu,
            ..WorkerStats::default()
        });
        stats.push(st.clone());
        let shared = shared.clone();
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .name(format!("udp-{bound}-{i}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(e) = affinity::pin_current_thread(cpu) {
                        tracing::warn!(worker = i, cpu, error = %e, "cannot pin a UDP worker to its CPU");
                    }
                }
                worker(sock, shared, stop, st, first_slot + i)
            })?;
        handles.push(h);
    }
    Ok(Listener {
        addr: bound,
        threads: handles,
        stats,
        sockets,
        steered,
    })
}

fn worker(
    sock: Arc<UdpSocket>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    st: Arc<WorkerStats>,
    slot: usize,
) {
    #[cfg(target_os = "linux")]
    {
        match batched::run(&sock, &shared, &stop, &st, slot) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "recvmmsg unavailable; receiving one packet per call")
            }
        }
    }
    simple(&sock, shared, stop, st, slot);
}

/// One `recv_from`/`send_to` pair per packet.
fn simple(
    sock: &UdpSocket,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    st: Arc<WorkerStats>,
    slot: usize,
) {
    let mut rbuf = vec![0u8; 65535];
    let mut out: Vec<u8> = Vec::with_capacity(65535);
    let mut scratch = Scratch::for_slot(slot);
    while !stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut rbuf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        st.queries.fetch_add(1, Ordering::Relaxed);
        if peer.port() == 0 {
            st.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let snap = shared.snapshot.load();
        let client = peer.ip().to_canonical();
        match handle(
            &snap,
            &rbuf[..n],
            client,
            Transport::Udp,
            &mut out,
            &mut scratch,
        ) {
            Outcome::Reply => {
                if let Err(e) = sock.send_to(&out, peer) {
                    tracing::debug!(error = %e, %peer, "udp send failed");
                } else {
                    st.replies.fetch_add(1, Ordering::Relaxed);
                }
            }
            Outcome::Drop | Outcome::Transfer(_) => {
                st.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Batched receive and send (`recvmmsg`/`sendmmsg`): up to `BATCH` queries
/// per system call in each direction, which is where a DNS server spends
/// most of its time on a busy socket.
#[cfg(target_os = "linux")]
mod batched {
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::WorkerStats;
    use crate::dns::answer::{handle, Outcome, Transport};
    use crate::policy::Scratch;
    use crate::server::Shared;

    const BATCH: usize = 32;
    /// Queries larger than this are dropped (DNS queries are far smaller).
    const BUF: usize = 4096;

    fn peer(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match ss.ss_family as i32 {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
                let sin =
                    unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
                let sin6 =
                    unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::new(
                    IpAddr::V6(ip),
                    u16::from_be(sin6.sin6_port),
                ))
            }
            _ => None,
        }
    }

    pub fn run(
        sock: &UdpSocket,
        shared: &Arc<Shared>,
        stop: &AtomicBool,
        st: &WorkerStats,
        slot: usize,
    ) -> io::Result<()> {
        let fd = sock.as_raw_fd();
        // Block until packets arrive (no periodic wake-ups: shutdown wakes us
        // through `wake`).
        sock.set_read_timeout(None)?;
        let mut bufs = vec![[0u8; BUF]; BATCH];
        // SAFETY: all-zero is a valid value for these C structs.
        let mut addrs: Vec<libc::sockaddr_storage> =
            (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut riov: Vec<libc::iovec> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut rmsgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut siov: Vec<libc::iovec> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut smsgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
        let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(BUF)).collect();
        let mut scratch = Scratch::for_slot(slot);
        let mut first = true;
        for i in 0..BATCH {
            riov[i].iov_base = bufs[i].as_mut_ptr().cast();
            riov[i].iov_len = BUF;
            let h = &mut rmsgs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut riov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
        }
        // The kernel writes back only the headers of the datagrams it
        // returned: only those need resetting (fewer cache lines per wake).
        let mut dirty = BATCH;
        while !stop.load(Ordering::Relaxed) {
            for m in &mut rmsgs[..dirty] {
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                m.msg_hdr.msg_controllen = 0;
                m.msg_hdr.msg_flags = 0;
                m.msg_len = 0;
            }
            // SAFETY: every header points at buffers owned by this function
            // that outlive the call.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    rmsgs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            dirty = if n < 0 { BATCH } else { n as usize };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted => continue,
                    _ if first && e.raw_os_error() == Some(libc::ENOSYS) => return Err(e),
                    _ => {
                        tracing::debug!(error = %e, "recvmmsg failed");
                        continue;
                    }
                }
            }
            first = false;
            let n = n as usize;
            if n == 0 {
                continue; // woken by shutdown
            }
            st.queries.fetch_add(n as u64, Ordering::Relaxed);
            let mut k = 0;
            // One snapshot for the whole batch.
            let snap = shared.snapshot.load();
            for i in 0..n {
                let len = (rmsgs[i].msg_len as usize).min(BUF);
                let truncated = rmsgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let from = if truncated { None } else { peer(&addrs[i]) };
                let Some(from) = from.filter(|p| p.port() != 0) else {
                    st.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let client = from.ip().to_canonical();
                match handle(
                    &snap,
                    &bufs[i][..len],
                    client,
                    Transport::Udp,
                    &mut outs[k],
                    &mut scratch,
                ) {
                    Outcome::Reply => {
                        siov[k].iov_base = outs[k].as_mut_ptr().cast();
                        siov[k].iov_len = outs[k].len();
                        let namelen = rmsgs[i].msg_hdr.msg_namelen;
                        let h = &mut smsgs[k].msg_hdr;
                        h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                        h.msg_namelen = namelen;
                        h.msg_iov = &mut siov[k];
                        h.msg_iovlen = 1;
                        h.msg_control = std::ptr::null_mut();
                        h.msg_controllen = 0;
                        h.msg_flags = 0;
                        smsgs[k].msg_len = 0;
                        k += 1;
                    }
                    Outcome::Drop | Outcome::Transfer(_) => {
                        st.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let mut sent = 0;
            while sent < k {
                // SAFETY: the first k send headers point at live replies and
                // addresses owned by this function.
                let r =
                    unsafe { libc::sendmmsg(fd, smsgs[sent..].as_mut_ptr(), (k - sent) as u32, 0) };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // Skip the reply that failed (an unreachable peer, say).
                    tracing::debug!(error = %e, "sendmmsg failed");
                    sent += 1;
                    continue;
                }
                if r == 0 {
                    break;
                }
                sent += r as usize;
                st.replies.fetch_add(r as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn mtu_discover(sock: &UdpSocket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket, an int buffer and its size.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "getsockopt: {}", io::Error::last_os_error());
        v
    }

    #[test]
    fn replies_ignore_path_mtu_information() {
        let s = bind("127.0.0.1:0".parse().expect("addr")).expect("bind v4");
        let v = mtu_discover(&s, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER);
        assert!(
            v == libc::IP_PMTUDISC_OMIT || v == libc::IP_PMTUDISC_DONT,
            "IP_MTU_DISCOVER = {v}"
        );
        // IPv6 only where the machine has it.
        if let Ok(s) = bind("[::1]:0".parse().expect("addr")) {
            let v = mtu_discover(&s, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER);
            assert!(
                v == libc::IPV6_PMTUDISC_OMIT || v == libc::IPV6_PMTUDISC_DONT,
                "IPV6_MTU_DISCOVER = {v}"
            );
        }
    }
}

//! UDP listeners: one socket per worker thread, all bound to the same
//! address with `SO_REUSEPORT` so the kernel spreads queries across them.
//! Each worker is a plain OS thread with its own buffers: no task, channel
//! or lock per packet; it loads the current snapshot once per batch.
//!
//! There is one loop ([`serve`]): receive a batch, answer each packet,
//! send the replies. Where the system has `recvmmsg`/`sendmmsg` a batch is
//! up to 32 packets per system call; elsewhere it is one packet
//! (`recv_from`/`send_to`), the same loop with a batch of one.
//!
//! A worker cannot die silently: a panic while answering a packet is
//! contained to that packet (no reply, counted in `panics`, logged); a
//! panic anywhere else in the loop restarts the loop on the same socket;
//! and a worker thread that ends while the server is not stopping takes the
//! process down with a log line (see `server`), rather than leave a dead
//! socket in the reuseport group that silently drops its share of queries.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::dns::affinity::{self, Placement};
use crate::dns::answer::{handle_at, Outcome, Transport};
use crate::guard::Now;
use crate::policy::Scratch;
use crate::snapshot::Source;

/// How often an idle worker wakes to check for shutdown (one-packet I/O).
const POLL: Duration = Duration::from_millis(200);
/// Queries larger than this are dropped (DNS queries are far smaller).
const BUF: usize = 4096;

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
    /// Packets whose answering panicked (no reply was sent for them).
    pub panics: AtomicU64,
    /// Times the worker's loop was restarted after a panic outside a
    /// packet's answer.
    pub restarts: AtomicU64,
    /// The address this worker serves.
    pub listener: Option<SocketAddr>,
    /// The CPU this worker is pinned to (`udp_cpu_affinity`).
    pub cpu: Option<usize>,
}

/// Fault injection for tests of worker supervision: while armed, a query
/// whose DNS ID is [`FAULT_ID`] panics where [`Fault`] says. Never armed
/// outside tests; costs one relaxed load per packet.
#[doc(hidden)]
pub mod fault {
    use super::*;

    /// The DNS ID that triggers an armed fault.
    pub const FAULT_ID: u16 = 0xFA17;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(u8)]
    pub enum Fault {
        Off = 0,
        /// Panic inside the answer step of the packet.
        Answer = 1,
        /// Panic in the worker loop, outside any packet's answer.
        Loop = 2,
    }

    pub(super) static ARMED: AtomicU8 = AtomicU8::new(0);
    pub(super) static ID: AtomicU16 = AtomicU16::new(FAULT_ID);

    pub fn arm(f: Fault) {
        ARMED.store(f as u8, Ordering::SeqCst);
    }

    /// What is armed (read once per batch).
    #[inline]
    pub(super) fn armed() -> u8 {
        ARMED.load(Ordering::Relaxed)
    }

    #[inline]
    pub(super) fn hit(armed: u8, packet: &[u8], at: Fault) -> bool {
        armed == at as u8
            && packet.len() >= 2
            && u16::from_be_bytes([packet[0], packet[1]]) == ID.load(Ordering::Relaxed)
    }
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
    source: Arc<Source>,
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
        let source = source.clone();
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .name(format!("udp-{bound}-{i}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if let Err(e) = affinity::pin_current_thread(cpu) {
                        tracing::warn!(worker = i, cpu, error = %e, "cannot pin a UDP worker to its CPU");
                    }
                }
                supervise(&sock, &source, &stop, &st, first_slot + i, i)
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

/// Runs the worker loop until `stop`, restarting it on the same socket if
/// it panics outside a packet's answer.
fn supervise(
    sock: &UdpSocket,
    source: &Source,
    stop: &AtomicBool,
    st: &WorkerStats,
    slot: usize,
    worker: usize,
) {
    let mut io = Io::new(sock);
    while !stop.load(Ordering::Relaxed) {
        match catch_unwind(AssertUnwindSafe(|| serve(&mut io, source, stop, st, slot))) {
            Ok(()) => return,
            Err(e) => {
                let n = st.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    worker,
                    listener = ?st.listener,
                    restarts = n,
                    panic = panic_text(&*e),
                    "UDP worker loop panicked; restarted on the same socket"
                );
                // Fresh buffers: the panic may have left them half-written.
                io = Io::new(sock);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> &str {
    e.downcast_ref::<&str>()
        .copied()
        .or_else(|| e.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// The worker loop: receive a batch, answer each packet from one snapshot,
/// send the replies.
fn serve(io: &mut Io<'_>, source: &Source, stop: &AtomicBool, st: &WorkerStats, slot: usize) {
    let mut scratch = Scratch::for_slot(slot);
    let mut last_panic_log = std::time::Instant::now() - Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) {
        let n = io.recv();
        if n == 0 {
            continue; // woken by shutdown, a timeout or an error
        }
        st.queries.fetch_add(n as u64, Ordering::Relaxed);
        // One snapshot and one reading of the clock for the whole batch.
        let snap = source.load();
        let now = Now::for_guard(&snap.guard);
        let armed = fault::armed();
        for i in 0..n {
            let Some((packet, from, out)) = io.packet(i) else {
                st.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if armed != 0 && fault::hit(armed, packet, fault::Fault::Loop) {
                panic!("injected fault in the worker loop");
            }
            let client = from.ip().to_canonical();
            let answered = catch_unwind(AssertUnwindSafe(|| {
                if armed != 0 && fault::hit(armed, packet, fault::Fault::Answer) {
                    panic!("injected fault while answering");
                }
                handle_at(
                    &snap,
                    packet,
                    client,
                    Transport::Udp,
                    out,
                    &mut scratch,
                    now,
                )
            }));
            match answered {
                Ok(Outcome::Reply) => {
                    if let (Some(tap), Some(server)) = (&snap.dnstap, st.listener) {
                        tap.log(false, from, || server, packet, out);
                    }
                    io.reply(i)
                }
                Ok(Outcome::Drop | Outcome::Transfer(_)) => {
                    st.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    st.panics.fetch_add(1, Ordering::Relaxed);
                    scratch = Scratch::for_slot(slot);
                    if last_panic_log.elapsed() >= Duration::from_secs(1) {
                        last_panic_log = std::time::Instant::now();
                        tracing::error!(
                            %from,
                            panic = panic_text(&*e),
                            panics = st.panics.load(Ordering::Relaxed),
                            "answering a query panicked; no reply sent, the worker goes on (at most one such line a second)"
                        );
                    }
                }
            }
        }
        let sent = io.send();
        st.replies.fetch_add(sent as u64, Ordering::Relaxed);
    }
}

/// One-packet I/O: `recv_from`/`send_to`.
struct Single<'s> {
    sock: &'s UdpSocket,
    buf: Vec<u8>,
    len: usize,
    from: Option<SocketAddr>,
    out: Vec<u8>,
    reply: bool,
}

impl<'s> Single<'s> {
    fn new(sock: &'s UdpSocket) -> Single<'s> {
        let _ = sock.set_read_timeout(Some(POLL));
        Single {
            sock,
            buf: vec![0u8; BUF],
            len: 0,
            from: None,
            out: Vec::with_capacity(BUF),
            reply: false,
        }
    }
    fn recv(&mut self) -> usize {
        self.reply = false;
        match self.sock.recv_from(&mut self.buf) {
            Ok((n, peer)) => {
                self.len = n;
                self.from = Some(peer).filter(|p| p.port() != 0 && n <= BUF);
                1
            }
            Err(e) => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) {
                    tracing::debug!(error = %e, "udp receive failed");
                }
                0
            }
        }
    }
    fn packet(&mut self, _i: usize) -> Option<(&[u8], SocketAddr, &mut Vec<u8>)> {
        let from = self.from?;
        Some((&self.buf[..self.len], from, &mut self.out))
    }
    fn send(&mut self) -> usize {
        let (true, Some(peer)) = (self.reply, self.from) else {
            return 0;
        };
        match self.sock.send_to(&self.out, peer) {
            Ok(_) => 1,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "udp send failed");
                0
            }
        }
    }
}

/// The I/O of one worker: batched where the system has it.
enum Io<'s> {
    #[cfg(target_os = "linux")]
    Batched(Box<batched::Mmsg<'s>>),
    Single(Single<'s>),
}

impl<'s> Io<'s> {
    fn new(sock: &'s UdpSocket) -> Io<'s> {
        #[cfg(target_os = "linux")]
        match batched::Mmsg::new(sock) {
            Ok(m) => return Io::Batched(Box::new(m)),
            Err(e) => {
                tracing::warn!(error = %e, "recvmmsg unavailable; receiving one packet per call")
            }
        }
        Io::Single(Single::new(sock))
    }
    /// Receives a batch; returns how many packets arrived.
    #[inline]
    fn recv(&mut self) -> usize {
        match self {
            #[cfg(target_os = "linux")]
            Io::Batched(m) => match m.recv() {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "recvmmsg unavailable; receiving one packet per call");
                    let sock = m.sock;
                    *self = Io::Single(Single::new(sock));
                    0
                }
            },
            Io::Single(s) => s.recv(),
        }
    }
    /// Packet `i` of the batch, its sender and the buffer for its reply;
    /// None if it must be dropped (truncated, no usable source).
    #[inline]
    fn packet(&mut self, i: usize) -> Option<(&[u8], SocketAddr, &mut Vec<u8>)> {
        match self {
            #[cfg(target_os = "linux")]
            Io::Batched(m) => m.packet(i),
            Io::Single(s) => s.packet(i),
        }
    }
    /// Queues the reply written for packet `i`.
    #[inline]
    fn reply(&mut self, i: usize) {
        match self {
            #[cfg(target_os = "linux")]
            Io::Batched(m) => m.reply(i),
            Io::Single(s) => s.reply = true,
        }
    }
    /// Sends the queued replies; returns how many went out.
    #[inline]
    fn send(&mut self) -> usize {
        match self {
            #[cfg(target_os = "linux")]
            Io::Batched(m) => m.send(),
            Io::Single(s) => s.send(),
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

    use super::BUF;

    const BATCH: usize = 32;

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

    /// Buffers and message headers for one batch in each direction. The
    /// headers point into the buffers, so this lives in a `Box` and never
    /// moves once built.
    pub struct Mmsg<'s> {
        pub sock: &'s UdpSocket,
        bufs: Vec<[u8; BUF]>,
        addrs: Vec<libc::sockaddr_storage>,
        riov: Vec<libc::iovec>,
        rmsgs: Vec<libc::mmsghdr>,
        siov: Vec<libc::iovec>,
        smsgs: Vec<libc::mmsghdr>,
        outs: Vec<Vec<u8>>,
        /// Received headers the kernel wrote back (to reset before reuse).
        dirty: usize,
        /// Replies queued for the next send.
        queued: usize,
        /// No batch received yet: ENOSYS then means no recvmmsg here.
        first: bool,
    }

    impl<'s> Mmsg<'s> {
        pub fn new(sock: &'s UdpSocket) -> io::Result<Mmsg<'s>> {
            // Block until packets arrive (no periodic wake-ups: shutdown
            // wakes us through `wake`).
            sock.set_read_timeout(None)?;
            fn z<T>() -> Vec<T> {
                // SAFETY: all-zero is a valid value for these C structs
                // (sockaddr_storage, iovec, mmsghdr).
                (0..BATCH).map(|_| unsafe { zeroed() }).collect()
            }
            let mut m = Mmsg {
                sock,
                bufs: vec![[0u8; BUF]; BATCH],
                addrs: z(),
                riov: z(),
                rmsgs: z(),
                siov: z(),
                smsgs: z(),
                outs: (0..BATCH).map(|_| Vec::with_capacity(BUF)).collect(),
                dirty: BATCH,
                queued: 0,
                first: true,
            };
            for i in 0..BATCH {
                m.riov[i].iov_base = m.bufs[i].as_mut_ptr().cast();
                m.riov[i].iov_len = BUF;
                let h = &mut m.rmsgs[i].msg_hdr;
                h.msg_name = (&mut m.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_iov = &mut m.riov[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
            }
            Ok(m)
        }

        /// Ok(0) on an interruption or a transient error; Err only when the
        /// system has no recvmmsg.
        pub fn recv(&mut self) -> io::Result<usize> {
            self.queued = 0;
            // The kernel writes back only the headers of the datagrams it
            // returned: only those need resetting (fewer cache lines per wake).
            for m in &mut self.rmsgs[..self.dirty] {
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                m.msg_hdr.msg_controllen = 0;
                m.msg_hdr.msg_flags = 0;
                m.msg_len = 0;
            }
            // SAFETY: every header points at buffers owned by `self` (boxed,
            // never moved) that outlive the call.
            let n = unsafe {
                libc::recvmmsg(
                    self.sock.as_raw_fd(),
                    self.rmsgs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                self.dirty = BATCH;
                let e = io::Error::last_os_error();
                if self.first && e.raw_os_error() == Some(libc::ENOSYS) {
                    return Err(e);
                }
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) {
                    tracing::debug!(error = %e, "recvmmsg failed");
                }
                return Ok(0);
            }
            self.first = false;
            self.dirty = n as usize;
            Ok(n as usize)
        }

        #[inline]
        pub fn packet(&mut self, i: usize) -> Option<(&[u8], SocketAddr, &mut Vec<u8>)> {
            let len = (self.rmsgs[i].msg_len as usize).min(BUF);
            if self.rmsgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                return None;
            }
            let from = peer(&self.addrs[i]).filter(|p| p.port() != 0)?;
            let k = self.queued;
            Some((&self.bufs[i][..len], from, &mut self.outs[k]))
        }

        #[inline]
        pub fn reply(&mut self, i: usize) {
            let k = self.queued;
            self.siov[k].iov_base = self.outs[k].as_mut_ptr().cast();
            self.siov[k].iov_len = self.outs[k].len();
            let namelen = self.rmsgs[i].msg_hdr.msg_namelen;
            let h = &mut self.smsgs[k].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &mut self.siov[k];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.smsgs[k].msg_len = 0;
            self.queued += 1;
        }

        pub fn send(&mut self) -> usize {
            let k = self.queued;
            let mut sent = 0;
            let mut ok = 0;
            while sent < k {
                // SAFETY: the first k send headers point at live replies and
                // addresses owned by `self`.
                let r = unsafe {
                    libc::sendmmsg(
                        self.sock.as_raw_fd(),
                        self.smsgs[sent..].as_mut_ptr(),
                        (k - sent) as u32,
                        0,
                    )
                };
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
                ok += r as usize;
            }
            self.queued = 0;
            ok
        }
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

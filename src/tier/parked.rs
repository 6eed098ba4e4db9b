//! A listener's parked connections: idle keep-alive sockets waiting for
//! their next request holding no buffer, no timer and no waiter of their
//! own — only the socket's readiness. Their keep-alive deadline and the
//! listener's closing are enforced from here: the tier's job sweeps the set
//! (every 200 ms) and shuts down the socket of each connection past its
//! deadline, and closing the listener (removed, or the node stopping) shuts
//! down all of them; either wakes the parked task, which sees it was sent
//! away and closes. What an idle connection keeps is then its task, a slot
//! here and its socket's registration (`examples/http_allocs.rs --idle`).

use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::Instant;

/// The parked connections of one listener.
#[derive(Debug, Default)]
pub struct ParkedSet {
    inner: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Set when the listener closes: no connection parks any more.
    closed: bool,
}

#[derive(Debug)]
enum Slot {
    Free,
    Parked {
        fd: RawFd,
        until: Instant,
        /// Its socket was shut down (deadline or closing).
        sent_away: bool,
    },
}

/// A connection's place in the set; leaving it (dropped) frees the slot.
#[must_use]
pub struct Place<'a> {
    set: &'a ParkedSet,
    at: usize,
}

impl Place<'_> {
    /// Leaves the set: whether the connection was sent away meanwhile (its
    /// socket shut down; it must close).
    pub fn leave(self) -> bool {
        let sent_away = self.set.take(self.at);
        std::mem::forget(self);
        sent_away
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.set.take(self.at);
    }
}

impl ParkedSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks the connection on socket `fd` until `until`; None when the
    /// listener is closed. The socket must stay open while the place is
    /// held (drop the place first).
    pub fn park(&self, fd: RawFd, until: Instant) -> Option<Place<'_>> {
        let mut s = self.lock();
        if s.closed {
            return None;
        }
        let slot = Slot::Parked {
            fd,
            until,
            sent_away: false,
        };
        let at = match s.free.pop() {
            Some(i) => {
                s.slots[i] = slot;
                i
            }
            None => {
                s.slots.push(slot);
                s.slots.len() - 1
            }
        };
        Some(Place { set: self, at })
    }

    fn take(&self, at: usize) -> bool {
        let mut s = self.lock();
        let Some(slot) = s.slots.get_mut(at) else {
            return false;
        };
        let sent_away = matches!(
            slot,
            Slot::Parked {
                sent_away: true,
                ..
            }
        );
        *slot = Slot::Free;
        s.free.push(at);
        // Shrinks after a burst: trailing free slots go.
        if s.free.len() > 64 && s.free.len() * 2 > s.slots.len() {
            while matches!(s.slots.last(), Some(Slot::Free)) {
                s.slots.pop();
            }
            let n = s.slots.len();
            s.free.retain(|&i| i < n);
            s.slots.shrink_to(n.max(64));
            s.free.shrink_to(n.max(64));
        }
        sent_away
    }

    /// Sends away the connections past their deadline (`now`).
    pub fn sweep(&self, now: Instant) -> usize {
        let mut s = self.lock();
        let mut n = 0;
        for slot in &mut s.slots {
            if let Slot::Parked {
                fd,
                until,
                sent_away,
            } = slot
            {
                if !*sent_away && *until <= now {
                    *sent_away = true;
                    shut(*fd);
                    n += 1;
                }
            }
        }
        n
    }

    /// The listener closes: every parked connection is sent away and none
    /// parks from now on.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        for slot in &mut s.slots {
            if let Slot::Parked { fd, sent_away, .. } = slot {
                if !*sent_away {
                    *sent_away = true;
                    shut(*fd);
                }
            }
        }
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.slots.len() - s.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Shuts a parked socket down both ways, which wakes its task (readable:
/// end of stream). Called with the set's lock held.
fn shut(fd: RawFd) {
    // SAFETY: `fd` is open: its connection holds its `Place` while its
    // socket is open and frees the slot (under the lock held here) before
    // the socket can be closed, so the descriptor cannot have been reused.
    // shutdown(2) on a socket touches no memory of ours.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (s, _) = l.accept().expect("accept");
        (c, s)
    }

    #[test]
    fn a_connection_past_its_deadline_is_sent_away_and_sees_the_end_of_its_stream() {
        let set = ParkedSet::default();
        let (_c1, mut s1) = pair();
        let (_c2, s2) = pair();
        let now = Instant::now();
        let late = set.park(s1.as_raw_fd(), now).expect("park");
        let early = set
            .park(s2.as_raw_fd(), now + Duration::from_secs(60))
            .expect("park");
        assert_eq!(set.len(), 2);
        assert_eq!(set.sweep(now), 1);
        assert_eq!(set.sweep(now), 0, "sent away once");
        let mut b = [0u8; 1];
        assert_eq!(s1.read(&mut b).expect("read"), 0, "shut down");
        assert!(late.leave());
        assert!(!early.leave());
        assert!(set.is_empty());
    }

    #[test]
    fn a_closed_set_sends_everyone_away_and_takes_no_one() {
        let set = ParkedSet::default();
        let (_c, s) = pair();
        let p = set
            .park(s.as_raw_fd(), Instant::now() + Duration::from_secs(60))
            .expect("park");
        set.close();
        assert!(p.leave());
        assert!(set.park(s.as_raw_fd(), Instant::now()).is_none());
    }

    #[test]
    fn slots_are_reused_and_shrink_after_a_burst() {
        let set = ParkedSet::default();
        let (_c, s) = pair();
        let far = Instant::now() + Duration::from_secs(60);
        let places: Vec<_> = (0..1000)
            .map(|_| set.park(s.as_raw_fd(), far).expect("park"))
            .collect();
        assert_eq!(set.len(), 1000);
        drop(places);
        assert!(set.is_empty());
        assert!(set.lock().slots.len() <= 64, "{}", set.lock().slots.len());
        let p = set.park(s.as_raw_fd(), far).expect("park");
        assert_eq!(set.len(), 1);
        drop(p);
    }
}

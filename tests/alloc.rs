//! Zero heap allocations per UDP answer on the hot path, proven with a
//! counting allocator: parse → locate (GeoIP, ECS) → steer (geo, failover,
//! weighted) → encode, for many different client subnets.

mod common;

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::steering;
use geolb::dns::answer::{handle, Outcome, Transport};
use geolb::policy::Scratch;

struct Counting;
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: AllocLayout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn udp_answers_do_not_allocate() {
    let (_dir, snap) = steering::snapshot();
    let queries = steering::queries();
    let client = IpAddr::from([127, 0, 0, 1]);
    let mut out = Vec::with_capacity(65535);
    let mut scratch = Scratch::seeded(1);
    // Warm-up: buffers reach their working size.
    for q in &queries {
        handle(&snap, q, client, Transport::Udp, &mut out, &mut scratch);
    }
    ALLOCS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let mut replies = 0;
    for _ in 0..4 {
        for q in &queries {
            if handle(&snap, q, client, Transport::Udp, &mut out, &mut scratch) == Outcome::Reply {
                replies += 1;
            }
        }
    }
    COUNTING.store(false, Ordering::Relaxed);
    let allocs = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(replies, queries.len() * 4);
    assert_eq!(allocs, 0, "{allocs} allocations over {replies} answers");
    // The counter does count: a fresh output buffer must allocate.
    COUNTING.store(true, Ordering::Relaxed);
    let mut fresh = Vec::new();
    handle(
        &snap,
        &queries[0],
        client,
        Transport::Udp,
        &mut fresh,
        &mut scratch,
    );
    COUNTING.store(false, Ordering::Relaxed);
    assert!(ALLOCS.load(Ordering::Relaxed) > 0);
}

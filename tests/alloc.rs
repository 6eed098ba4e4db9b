//! Zero heap allocations per UDP answer on the hot path, proven with a
//! counting allocator: parse → locate (GeoIP, ECS) → steer (geo, failover,
//! weighted) → encode, for many different client subnets.

mod common;

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::net::IpAddr;

use common::steering;
use geolb::dns::answer::{handle, Outcome, Transport};
use geolb::policy::Scratch;

struct Counting;

thread_local! {
    /// (counting on this thread, allocations counted). Per thread, so tests
    /// running in parallel do not count each other's allocations.
    static COUNT: Cell<(bool, usize)> = const { Cell::new((false, 0)) };
}

fn bump() {
    let _ = COUNT.try_with(|c| {
        let (on, n) = c.get();
        if on {
            c.set((true, n + 1));
        }
    });
}

fn counting(on: bool) -> usize {
    COUNT.with(|c| {
        let (_, n) = c.get();
        c.set((on, if on { 0 } else { n }));
        n
    })
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: AllocLayout) -> *mut u8 {
        bump();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: AllocLayout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: AllocLayout, n: usize) -> *mut u8 {
        bump();
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
    counting(true);
    let mut replies = 0;
    for _ in 0..4 {
        for q in &queries {
            if handle(&snap, q, client, Transport::Udp, &mut out, &mut scratch) == Outcome::Reply {
                replies += 1;
            }
        }
    }
    let allocs = counting(false);
    assert_eq!(replies, queries.len() * 4);
    assert_eq!(allocs, 0, "{allocs} allocations over {replies} answers");
    // The counter does count: a fresh output buffer must allocate.
    counting(true);
    let mut fresh = Vec::new();
    handle(
        &snap,
        &queries[0],
        client,
        Transport::Udp,
        &mut fresh,
        &mut scratch,
    );
    assert!(counting(false) > 0);
}

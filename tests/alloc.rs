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

/// Answers each query once over UDP, counting: (replies, allocations).
fn answer_counted(
    snap: &geolb::snapshot::Snapshot,
    queries: &[Vec<u8>],
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> (usize, usize) {
    let client = IpAddr::from([127, 0, 0, 1]);
    counting(true);
    let mut replies = 0;
    for q in queries {
        if handle(snap, q, client, Transport::Udp, out, scratch) == Outcome::Reply {
            replies += 1;
        }
    }
    (replies, counting(false))
}

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

/// With resolver tracking armed (a drill running), answers allocate
/// nothing: the tables are sized when armed, and a resolver past the size
/// is counted, not stored.
#[test]
fn answers_with_resolver_tracking_armed_do_not_allocate() {
    let (_dir, snap) = steering::snapshot();
    let queries = steering::queries();
    let mut out = Vec::with_capacity(65535);
    let mut scratch = Scratch::seeded(1);
    snap.resolvers.arm(
        std::time::Duration::from_secs(60),
        64,
        std::time::SystemTime::now(),
    );
    // Warm-up: buffers reach their working size.
    answer_counted(&snap, &queries, &mut out, &mut scratch);
    let (replies, allocs) = answer_counted(&snap, &queries, &mut out, &mut scratch);
    assert_eq!(replies, queries.len());
    assert_eq!(allocs, 0, "{allocs} allocations over {replies} answers");
    let r = snap.resolvers.report(None, std::time::SystemTime::now());
    assert!(r.tracked > 0, "answers were tracked: {r:?}");
    // Many resolvers: past the table's size they are counted, not stored.
    counting(true);
    for i in 0..2000u32 {
        snap.resolvers
            .record(IpAddr::from(i.to_be_bytes()), 0, 0, 30);
    }
    assert_eq!(counting(false), 0);
    assert!(
        snap.resolvers
            .report(None, std::time::SystemTime::now())
            .overflow
            > 0
    );
}

/// With response rate limiting and cookies on, an answer still allocates
/// nothing: cookie check and a fresh server cookie, the rate-limit table
/// (passed, slipped and dropped responses), for queries with a client
/// cookie alone, a valid server cookie and none.
#[test]
fn answers_with_cookies_and_rrl_do_not_allocate() {
    for (rrl, want_all) in [
        ("rate = 1000000\nmax_qps = 1000000\n", true),
        ("rate = 1\nslip = 2\n", false),
    ] {
        let (_dir, snap) = steering::snapshot_with(&format!(
            "[rrl]\nenabled = true\n{rrl}[cookies]\nenabled = true\n"
        ));
        let client = IpAddr::from([127, 0, 0, 1]);
        let mut out = Vec::with_capacity(65535);
        let mut scratch = Scratch::seeded(1);
        let plain = steering::queries();
        // A valid server cookie for this client, from a first reply.
        let first = steering::with_cookie(&plain[0], &[7; 8]);
        assert_eq!(
            handle(
                &snap,
                &first,
                client,
                Transport::Udp,
                &mut out,
                &mut scratch
            ),
            Outcome::Reply
        );
        let valid = out[out.len() - 24..].to_vec();
        let mut queries = Vec::new();
        for q in &plain {
            queries.push(q.clone());
            queries.push(steering::with_cookie(q, &[7; 8]));
            queries.push(steering::with_cookie(q, &valid));
        }
        for q in &queries {
            handle(&snap, q, client, Transport::Udp, &mut out, &mut scratch);
        }
        let (replies, allocs) = answer_counted(&snap, &queries, &mut out, &mut scratch);
        assert_eq!(
            allocs, 0,
            "{rrl}: {allocs} allocations over {replies} answers"
        );
        if want_all {
            assert_eq!(replies, queries.len(), "nobody is limited at a high rate");
        } else {
            assert!(replies < queries.len(), "the low rate limits some");
        }
    }
}

/// An answer to a query that asks for NSID (RFC 5001) carries the server's
/// name and the health epoch it was given under, and still allocates
/// nothing: the option's bytes are built once per health change.
#[test]
fn answers_naming_their_health_epoch_in_nsid_do_not_allocate() {
    let (_dir, snap) = steering::snapshot_with("[server]\nnsid = \"dns1\"\n");
    let state = geolb::health::HealthState {
        epoch: geolb::policy::Epoch {
            seq: 1,
            id: 0x1a2b_3c4d_5e6f_7788,
            ..Default::default()
        },
        ..Default::default()
    };
    let snap = snap.with_health(&state).expect("a newer epoch");
    let queries: Vec<Vec<u8>> = steering::queries()
        .iter()
        .map(|q| steering::with_option(q, 3, &[]))
        .collect();
    let client = IpAddr::from([127, 0, 0, 1]);
    let mut out = Vec::with_capacity(65535);
    let mut scratch = Scratch::seeded(1);
    for q in &queries {
        handle(&snap, q, client, Transport::Udp, &mut out, &mut scratch);
    }
    let want = b"dns1 epoch=1a2b3c4d5e6f7788";
    assert!(
        out.windows(want.len()).any(|w| w == want),
        "the reply names the epoch"
    );
    let (replies, allocs) = answer_counted(&snap, &queries, &mut out, &mut scratch);
    assert_eq!(replies, queries.len());
    assert_eq!(allocs, 0, "{allocs} allocations over {replies} answers");
}

/// A service steering by capacity, with regions whose shares split their
/// clients, answers without allocating: the step reads the shares the
/// snapshot holds and reorders the candidates in the scratch.
#[test]
fn answers_split_by_capacity_shares_do_not_allocate() {
    let (_dir, mut snap) = steering::snapshot_with(
        "[zones.\"example.com\".services.cap]\npools = [\"eu-p\", \"us-p\", \"ap-p\"]\n\
         chain = [\"healthy\", \"geo\", \"capacity\", \"failover\", \"first_n\"]\n\
         first_n = 1\ngeo = { default = [\"eu\", \"us\", \"ap\"] }\n",
    );
    let mut view = (*snap.health).clone();
    for (g, share) in view.shares[0].iter_mut().zip([0.4, 0.7, 1.0]) {
        g.share = share;
    }
    snap.set_health(view);
    let queries: Vec<Vec<u8>> = (0..=255u8)
        .flat_map(|i| [[192, 0, 2, i], [10, i, 0, 0], [45, i, 7, 0]])
        .map(|addr| steering::query(b"\x03cap\x07example\x03com\x00", 1, Some((addr, 24))))
        .collect();
    let client = IpAddr::from([127, 0, 0, 1]);
    let mut out = Vec::with_capacity(65535);
    let mut scratch = Scratch::seeded(1);
    let mut regions = std::collections::BTreeSet::new();
    for q in &queries {
        handle(&snap, q, client, Transport::Udp, &mut out, &mut scratch);
        let reply = hickory_proto::op::Message::from_vec(&out).expect("reply");
        regions.insert(reply.answers.first().map(|a| a.data.to_string()));
    }
    assert!(regions.len() >= 2, "the shares split the answers");
    let (replies, allocs) = answer_counted(&snap, &queries, &mut out, &mut scratch);
    assert_eq!(replies, queries.len());
    assert_eq!(allocs, 0, "{allocs} allocations over {replies} answers");
}

/// With a dnstap log configured, an answer whose exchange is not sampled
/// still allocates nothing: the hook the UDP worker calls after each reply
/// is a thread-local add and compare. A sampled one copies its bytes.
#[test]
fn answers_with_dnstap_on_allocate_nothing_unless_sampled() {
    use geolb::dnstap::writer::{Tap, TapPlan, Target};
    let (dir, snap) = steering::snapshot();
    let queries = steering::queries();
    let plan = |sample| TapPlan {
        target: Target::File(dir.path().join("tap.fstrm")),
        sample,
        queries: true,
        responses: true,
        identity: String::new(),
        version: String::new(),
        queue: 10_000,
    };
    // One exchange in 100,000: none of these.
    let rare = Tap::start(&plan(0.00001)).expect("tap");
    let always = Tap::start(&plan(1.0)).expect("tap");
    let client = IpAddr::from([127, 0, 0, 1]);
    let (from, server) = (
        std::net::SocketAddr::new(client, 5300),
        std::net::SocketAddr::new(client, 53),
    );
    let mut out = Vec::with_capacity(65535);
    let mut scratch = Scratch::seeded(1);
    for q in &queries {
        handle(&snap, q, client, Transport::Udp, &mut out, &mut scratch);
    }
    counting(true);
    let mut replies = 0;
    for _ in 0..4 {
        for q in &queries {
            if handle(&snap, q, client, Transport::Udp, &mut out, &mut scratch) == Outcome::Reply {
                rare.log(false, from, || server, q, &out);
                replies += 1;
            }
        }
    }
    let allocs = counting(false);
    assert!(replies > 0 && replies < 100_000);
    assert_eq!(allocs, 0, "{allocs} allocations over {replies} answers");
    counting(true);
    always.log(false, from, || server, &queries[0], &out);
    assert!(counting(false) > 0, "a sampled exchange is copied");
}

#[test]
fn balance_picks_and_accounting_do_not_allocate() {
    use geolb::balance::{Algorithm, Balancer, Context, Member, Settings};
    use std::time::Duration;

    let members: Vec<Member> = (0..50)
        .map(|i| Member::new(format!("g/10.0.0.{i}:80"), 1 + i % 3).max_conns(1000))
        .collect();
    for algorithm in Algorithm::ALL {
        let settings = Settings {
            hash_balance_factor: 125,
            slow_start: Duration::from_secs(5),
            seed: Some(1),
            ..Settings::with(algorithm)
        };
        let mut b = Balancer::new(settings, &members).expect("a valid set");
        let tried = [3usize, 7];
        let run = |b: &mut Balancer| {
            for k in 0..500u32 {
                let client = IpAddr::from((0x0a00_0000 + k * 31).to_be_bytes());
                let ctx = Context::at(u64::from(k)).client(client).exclude(&tried);
                let i = b.pick(&ctx).expect("a backend");
                let id = &members[i].id;
                b.acquire(id);
                b.record_latency(id, Duration::from_micros(500 + u64::from(k)), u64::from(k));
                if k % 3 == 0 {
                    b.release(id);
                    b.record_failure(id, u64::from(k));
                } else {
                    b.record_success(id, u64::from(k));
                }
            }
        };
        run(&mut b);
        counting(true);
        run(&mut b);
        let allocs = counting(false);
        assert_eq!(
            allocs, 0,
            "{algorithm}: {allocs} allocations over 500 picks"
        );
    }
}

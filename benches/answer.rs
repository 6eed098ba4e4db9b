//! Answer-path benchmarks: steering alone (GeoIP lookup + geo + failover +
//! weighted) and whole answers (parse → decide → encode) for geo with ECS,
//! static, and NXDOMAIN queries.
//!
//! `cargo bench --bench answer`

#[path = "../tests/common/mmdb.rs"]
mod mmdb;
#[path = "../tests/common/steering.rs"]
mod steering;

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use geolb::dns::answer::{find_service, handle, handle_at, Transport};
use geolb::guard::Now;
use geolb::policy::{decide, Client, Family, Scratch};

fn bench(c: &mut Criterion) {
    let (_dir, snap) = steering::snapshot();
    let client = IpAddr::from([127, 0, 0, 1]);
    let mut out = Vec::with_capacity(65535);
    let mut scratch = Scratch::seeded(7);

    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    let (_, svc) = find_service(&snap, steering::WWW).expect("www is a service");
    let addrs: Vec<IpAddr> = (0..=255u8)
        .flat_map(|i| {
            [
                IpAddr::from([192, 0, 2, i]),
                IpAddr::from([198, 51, 100, i]),
                IpAddr::from([203, 0, 113, i]),
            ]
        })
        .collect();
    let mut i = 0;
    g.bench_function("locate+geo+failover+weighted", |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            let addr = addrs[i];
            let c = Client {
                addr,
                loc: snap.geo.locate(addr),
            };
            black_box(decide(
                &snap.topology,
                svc,
                &c,
                Family::V4,
                &snap.health,
                &mut scratch,
                None,
            ))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("handle");
    g.throughput(Throughput::Elements(1));
    let geo: Vec<Vec<u8>> = steering::queries().into_iter().take(2560).collect();
    let mut i = 0;
    g.bench_function("geo-ecs", |b| {
        b.iter(|| {
            i = (i + 1) % geo.len();
            black_box(handle(
                &snap,
                &geo[i],
                client,
                Transport::Udp,
                &mut out,
                &mut scratch,
            ))
        })
    });
    let stat = steering::query(b"\x05host7\x07example\x03com\x00", 1, None);
    g.bench_function("static", |b| {
        b.iter(|| {
            black_box(handle(
                &snap,
                &stat,
                client,
                Transport::Udp,
                &mut out,
                &mut scratch,
            ))
        })
    });
    let nx = steering::query(b"\x05nope9\x07example\x03com\x00", 1, None);
    g.bench_function("nxdomain", |b| {
        b.iter(|| {
            black_box(handle(
                &snap,
                &nx,
                client,
                Transport::Udp,
                &mut out,
                &mut scratch,
            ))
        })
    });
    g.finish();

    // What the abuse defences add to a static answer whose query carries a
    // server cookie: response rate limiting (at a rate nobody reaches: every
    // answer accounted), cookies (check and a fresh cookie), both; against
    // neither, with the same query (the option is then ignored).
    let mut g = c.benchmark_group("guard");
    g.throughput(Throughput::Elements(1));
    let rrl = "[rrl]\nenabled = true\nrate = 1000000\n";
    let cookies = "[cookies]\nenabled = true\n";
    for (name, extra) in [
        ("off", String::new()),
        ("rrl", rrl.to_string()),
        ("cookies", cookies.to_string()),
        ("both", format!("{rrl}{cookies}")),
    ] {
        let (_d, s) = steering::snapshot_with(&extra);
        // A valid server cookie from the server with cookies on (or any
        // 24 bytes where they are off: ignored).
        let first = steering::with_cookie(&stat, &[7; 8]);
        handle(&s, &first, client, Transport::Udp, &mut out, &mut scratch);
        let cookie = if s.guard.cookies.is_some() {
            out[out.len() - 24..].to_vec()
        } else {
            vec![7; 24]
        };
        let q = steering::with_cookie(&stat, &cookie);
        // Clients from 4096 /24s in turn (none near the rate); the cookie
        // is then valid for none of them but the first, so it is checked
        // and renewed as for a client cookie alone.
        let clients: Vec<IpAddr> = (0..4096u32)
            .map(|i| IpAddr::from((0x0a00_0000 + (i << 8)).to_be_bytes()))
            .collect();
        // The time read once per 32 answers, as a UDP worker reads it once
        // per receive batch.
        let mut n = 0u32;
        let mut now = Now::for_guard(&s.guard);
        let mut tick = |s: &geolb::snapshot::Snapshot| {
            n = n.wrapping_add(1);
            if n % 32 == 0 {
                now = Now::for_guard(&s.guard);
            }
            now
        };
        // One resolver asking with its valid cookie (the usual case: a
        // valid cookie also exempts it from rate limiting).
        g.bench_function(BenchmarkId::new("static+valid-cookie", name), |b| {
            b.iter(|| {
                let now = tick(&s);
                black_box(handle_at(
                    &s,
                    &q,
                    client,
                    Transport::Udp,
                    &mut out,
                    &mut scratch,
                    now,
                ))
            })
        });
        let mut i = 0;
        g.bench_function(BenchmarkId::new("static+cookie", name), |b| {
            b.iter(|| {
                i = (i + 1) % clients.len();
                let now = tick(&s);
                black_box(handle_at(
                    &s,
                    &q,
                    clients[i],
                    Transport::Udp,
                    &mut out,
                    &mut scratch,
                    now,
                ))
            })
        });
    }
    g.finish();

    // Scaling: N threads answering from one shared snapshot, each with its
    // own scratch and counter slot, as the UDP workers do. Near 2x elements
    // per second at 2 threads means nothing on the answer path is shared
    // between workers (no locks, no contended atomics).
    let mut g = c.benchmark_group("threads");
    g.throughput(Throughput::Elements(1));
    let mix: Vec<Vec<u8>> = geo.iter().chain([&stat, &nx]).cloned().collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for n in [1usize, 2].into_iter().filter(|&n| n <= cores) {
        g.bench_with_input(BenchmarkId::new("geo-ecs+static", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(n as u64);
                let start = std::time::Instant::now();
                std::thread::scope(|s| {
                    for t in 0..n {
                        let (snap, mix) = (&snap, &mix);
                        s.spawn(move || {
                            let mut out = Vec::with_capacity(65535);
                            let mut scratch = Scratch::for_slot(t);
                            for i in 0..per as usize {
                                black_box(handle(
                                    snap,
                                    &mix[i % mix.len()],
                                    client,
                                    Transport::Udp,
                                    &mut out,
                                    &mut scratch,
                                ));
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    g.finish();

    // The benchmark geo workload against a full City database, when one is
    // at geoip/GeoLite2-City.mmdb (see benches/geo.toml; not shipped).
    let geo_toml = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/geo.toml");
    let full = geolb::config::Config::load(std::path::Path::new(geo_toml))
        .ok()
        .and_then(|c| geolb::snapshot::build(c, 1, None).ok());
    if let Some((snap, _)) = full {
        let mut g = c.benchmark_group("geolite2");
        g.throughput(Throughput::Elements(1));
        let mut x = 0x9e37_79b9u32;
        let mut next_addr = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            IpAddr::from((x & 0xffff_ff00).to_be_bytes())
        };
        g.bench_function("locate", |b| {
            b.iter(|| black_box(snap.geo.locate(next_addr())))
        });
        g.bench_function("tree-walk", |b| {
            b.iter(|| black_box(snap.geo.city_offset(next_addr())))
        });
        // The compiled table, over as many distinct /24s as the benchmark
        // geo workload (100 k), so the cache misses are the real ones.
        if let Some(cg) = snap.geo_index.clone() {
            let clients: Vec<IpAddr> = (0..100_000).map(|_| next_addr()).collect();
            let mut i = 0;
            g.bench_function("compiled-lookup", |b| {
                b.iter(|| {
                    i = (i + 1) % clients.len();
                    black_box(cg.order(0, clients[i]))
                })
            });
        }
        let queries: Vec<Vec<u8>> = (0..4096u32)
            .map(|i| {
                let a = ((i.wrapping_mul(2_654_435_761)) & 0xffff_ff00).to_be_bytes();
                steering::query(b"\x03geo\x07example\x03com\x00", 1, Some((a, 24)))
            })
            .collect();
        let mut i = 0;
        g.bench_function("handle-geo-ecs", |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                black_box(handle(
                    &snap,
                    &queries[i],
                    client,
                    Transport::Udp,
                    &mut out,
                    &mut scratch,
                ))
            })
        });
        g.finish();
        // What a GeoIP swap costs in CPU: walking the whole database and
        // compiling every service's decisions (the build thread's work).
        let mut g = c.benchmark_group("geolite2-compile");
        g.sample_size(10);
        g.bench_function("all-services", |b| {
            b.iter(|| {
                black_box(geolb::snapshot::compile_geo(
                    &snap.zones,
                    &snap.topology,
                    &snap.geo,
                    None,
                ))
            })
        });
        // What opening (and checking) the City database costs before the
        // compile can start.
        if let Some(g0) = &snap.config.geoip {
            let path = g0.city.get_ref().clone();
            g.bench_function("open-city", |b| {
                b.iter(|| black_box(geolb::geo::Db::open(&path).map(|d| d.build_epoch)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

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

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use geolb::dns::answer::{find_service, handle, Transport};
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
}

criterion_group!(benches, bench);
criterion_main!(benches);

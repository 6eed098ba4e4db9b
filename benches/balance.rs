//! Backend selection: one pick of each algorithm over 8 and 100 backends
//! (weights 1–4, a few connections open on each, slow start over, varied
//! client addresses for the hashing algorithms).
//!
//! `nice -n 10 cargo bench --bench balance`

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use geolb::balance::{Algorithm, Balancer, Context, Member, Settings};

fn balancer(algorithm: Algorithm, n: usize) -> Balancer {
    let members: Vec<Member> = (0..n)
        .map(|i| {
            Member::new(
                format!("eu-web/10.1.{}.{}:8080", i / 256, i % 256),
                1 + i as u32 % 4,
            )
        })
        .collect();
    let settings = Settings {
        hash_balance_factor: if algorithm == Algorithm::Consistent {
            125
        } else {
            0
        },
        slow_start: Duration::from_secs(10),
        seed: Some(1),
        ..Settings::with(algorithm)
    };
    let mut b = Balancer::new(settings, &members).expect("a valid set");
    for (i, m) in members.iter().enumerate() {
        for _ in 0..i % 5 {
            b.acquire(&m.id);
        }
        b.record_latency(&m.id, Duration::from_millis(1 + i as u64 % 7), 0);
    }
    b
}

fn bench(c: &mut Criterion) {
    let clients: Vec<IpAddr> = (0..1024u32)
        .map(|i| IpAddr::from((0xc000_0200u32 + i * 7919).to_be_bytes()))
        .collect();
    let mut g = c.benchmark_group("pick");
    g.throughput(Throughput::Elements(1));
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
    for algorithm in Algorithm::ALL {
        for n in [8, 100] {
            let mut b = balancer(algorithm, n);
            let mut k = 0;
            g.bench_with_input(BenchmarkId::new(algorithm.name(), n), &n, |bench, _| {
                bench.iter(|| {
                    k = (k + 1) % clients.len();
                    let ctx = Context::at(20_000).client(clients[k]);
                    black_box(b.pick(black_box(&ctx)))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

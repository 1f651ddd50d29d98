//! Sector -> target lookup at 1, 100, 10,000 and 100,000 targets, through the
//! table's static B-tree index (the goal: under 50 ns at 100,000 targets).

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use udm_core::index::Index;

fn ends(n: u64) -> Vec<u64> {
    // Irregular target lengths so lookups do not follow a simple stride.
    let mut acc = 0;
    (0..n)
        .map(|i| {
            acc += 8 + (i * 7919) % 1024;
            acc
        })
        .collect()
}

fn bench_lookup(c: &mut Criterion) {
    println!("{}", common::machine_line(None));
    let mut g = c.benchmark_group("table_lookup");
    for n in [1u64, 100, 10_000, 100_000] {
        let e = ends(n);
        let idx = Index::new(&e);
        let size = *e.last().unwrap_or(&1);
        // A fixed pseudo-random probe sequence spread over the whole device.
        let probes: Vec<u64> = (0..4096u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) % size)
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(idx.lookup(black_box(probes[i])))
            })
        });
    }
    g.finish();
    println!("# load at end: {}", common::load_average());
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);

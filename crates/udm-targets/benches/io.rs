//! 4 KiB random reads through a linear and a 4-way striped device against direct
//! pread on the same file (in /dev/shm when present, so the figures measure the
//! mapping overhead, not a disk). The goal: within 10% of pread.
//!
//! criterion runs the variants one after another, so on a shared machine a change in
//! load between them lands in their ratio: use these figures for absolute regressions
//! and `--bench ratios` (variants interleaved within one run) for the ratio to pread.

mod common;

use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use udm_core::{DevRef, Engine, EngineConfig};

const FILE_BYTES: u64 = 256 << 20;

fn bench_dir() -> tempfile::TempDir {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    tempfile::tempdir_in(base).expect("temp dir")
}

fn bench_io(c: &mut Criterion) {
    let dir = bench_dir();
    let path = dir.path().join("backing");
    println!("{}", common::machine_line(Some(dir.path())));
    {
        let f = std::fs::File::create(&path).expect("create");
        let chunk = vec![0x5au8; 1 << 20];
        for i in 0..(FILE_BYTES >> 20) {
            f.write_all_at(&chunk, i << 20).expect("fill");
        }
    }
    let sectors = FILE_BYTES >> 9;
    let e = Engine::new(udm_targets::registry(), EngineConfig::default());
    e.create("lin", None, None).expect("create");
    e.load_text(
        &DevRef::name("lin"),
        &format!("0 {sectors} linear {} 0", path.display()),
        false,
    )
    .expect("load");
    e.resume(&DevRef::name("lin"), false).expect("resume");
    let q = sectors / 4;
    let p = path.display();
    e.create("str", None, None).expect("create");
    e.load_text(
        &DevRef::name("str"),
        &format!(
            "0 {sectors} striped 4 128 {p} 0 {p} {q} {p} {} {p} {}",
            2 * q,
            3 * q
        ),
        false,
    )
    .expect("load");
    e.resume(&DevRef::name("str"), false).expect("resume");
    let lin = e.device(&DevRef::name("lin")).expect("dev");
    let st = e.device(&DevRef::name("str")).expect("dev");
    let file = std::fs::File::open(&path).expect("open");
    let blocks = FILE_BYTES / 4096;
    let offsets: Vec<u64> = (0..8192u64)
        .map(|i| ((i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 13) % blocks) * 4096)
        .collect();

    let mut g = c.benchmark_group("read_4k_random");
    g.throughput(Throughput::Bytes(4096));
    let mut buf = vec![0u8; 4096];
    let mut i = 0usize;
    g.bench_function("pread_file", |b| {
        b.iter(|| {
            i = (i + 1) & 8191;
            file.read_exact_at(&mut buf, offsets[i]).expect("pread");
            black_box(&buf);
        })
    });
    g.bench_function("linear", |b| {
        b.iter(|| {
            i = (i + 1) & 8191;
            lin.read(offsets[i] >> 9, &mut buf).expect("read");
            black_box(&buf);
        })
    });
    g.bench_function("striped_4way", |b| {
        b.iter(|| {
            i = (i + 1) & 8191;
            st.read(offsets[i] >> 9, &mut buf).expect("read");
            black_box(&buf);
        })
    });
    g.finish();
    println!("# load at end: {}", common::load_average());
}

criterion_group!(benches, bench_io);
criterion_main!(benches);

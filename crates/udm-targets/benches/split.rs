//! 1 MiB reads through a 4-way striped device (64 KiB chunks) over four files,
//! against one 1 MiB pread of one file: how much the engine gains by issuing the
//! 16 pieces of a split together (one vectored read per stripe, spread over the
//! worker pool) rather than one after another. Uses only the engine's blocking
//! API, so the same file builds against an older udm-core to compare (see
//! bench/split-vs-base.sh). Prints the machine, then the median microseconds per
//! 1 MiB read of each, over rounds that alternate the two.
//!
//! `cargo bench -p udm-targets --bench split`. Environment: SPLIT_ROUNDS (31),
//! SPLIT_OPS reads per round (64), SPLIT_FILE_MIB per file (64), SPLIT_DIR (/dev/shm).

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use udm_core::{DevRef, Engine, EngineConfig};

const MIB: usize = 1 << 20;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds = if bench { env_or("SPLIT_ROUNDS", 31) } else { 3 };
    let ops = if bench { env_or("SPLIT_OPS", 64) } else { 4 };
    let mib = env_or("SPLIT_FILE_MIB", 64);
    let dir = std::env::var("SPLIT_DIR").unwrap_or_else(|_| "/dev/shm".into());
    let dir = match tempfile::Builder::new()
        .prefix("udm-split")
        .tempdir_in(&dir)
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("split: cannot make a directory in {dir}: {e}");
            std::process::exit(2);
        }
    };
    println!("{}", common::machine_line(Some(dir.path())));
    let paths: Vec<_> = (0..4).map(|i| dir.path().join(format!("s{i}"))).collect();
    for (i, p) in paths.iter().enumerate() {
        let data = vec![i as u8 + 1; mib * MIB];
        if let Err(e) = std::fs::write(p, &data) {
            eprintln!("split: cannot write {}: {e}", p.display());
            std::process::exit(2);
        }
    }
    let sectors = (mib * MIB / 512) as u64 * 4;
    let table = format!(
        "0 {sectors} striped 4 128 {} 0 {} 0 {} 0 {} 0",
        paths[0].display(),
        paths[1].display(),
        paths[2].display(),
        paths[3].display()
    );
    let e = Engine::new(udm_targets::registry(), EngineConfig::default());
    let r = DevRef::name("split");
    let dev = e
        .create("split", None, None)
        .and_then(|_| e.load_text(&r, &table, false))
        .and_then(|_| e.resume(&r, false))
        .and_then(|_| e.device(&r));
    let dev = match dev {
        Ok(d) => d,
        Err(err) => {
            eprintln!("split: {err}");
            std::process::exit(2);
        }
    };
    let file = match File::open(&paths[0]) {
        Ok(f) => f,
        Err(err) => {
            eprintln!("split: {err}");
            std::process::exit(2);
        }
    };
    let mut buf = vec![0u8; MIB];
    let reads = (sectors as usize * 512 / MIB) as u64;
    let preads = (mib as u64).max(1);
    let (mut striped, mut pread) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut one = |striped_first: bool| {
            for which in [striped_first, !striped_first] {
                let start = Instant::now();
                for k in 0..ops as u64 {
                    if which {
                        let at = (k * 7919 % reads) * (MIB as u64 / 512);
                        if let Err(err) = dev.read(at, &mut buf) {
                            eprintln!("split: read failed: {err:?}");
                            std::process::exit(1);
                        }
                    } else {
                        let at = (k * 7919 % preads) * MIB as u64;
                        if let Err(err) = file.read_exact_at(&mut buf, at) {
                            eprintln!("split: pread failed: {err}");
                            std::process::exit(1);
                        }
                    }
                }
                let us = start.elapsed().as_secs_f64() * 1e6 / ops as f64;
                if which {
                    striped.push(us);
                } else {
                    pread.push(us);
                }
            }
        };
        one(round % 2 == 0);
    }
    let (s, p) = (median(striped), median(pread));
    println!("1 MiB read, 4-way striped (64 KiB chunks) over 4 files: {s:.1} us");
    println!("1 MiB pread of one file:                                  {p:.1} us");
    println!("ratio striped/pread: {:.2}", s / p);
}

//! Ratios of in-process I/O to pread, measured interleaved: each round times one
//! batch of 4 KiB random reads through every variant in turn (pread, linear, 4-way
//! striped over quarters of the file, 4-way striped over four files, each on the
//! sync and on the io_uring engine), on the same buffer, the order rotating from
//! round to round.
//! A change in a shared machine then lands in all of a round's variants alike and
//! cancels out of that round's ratio; a round is several short batches per variant
//! and takes their median, so a batch that lost the CPU does not decide it. Prints per variant the median time per read,
//! the median ratio to pread with its interquartile range over rounds, and whether
//! the run was quiet enough to trust. criterion's `io` bench keeps absolute figures.
//!
//! `cargo bench -p udm-targets --bench ratios [-- FILTER]` (FILTER: part of a variant's
//! name). Environment: RATIO_ROUNDS (201), RATIO_REPS batches per variant and round (7),
//! RATIO_OPS reads per batch (512), RATIO_WARMUP rounds dropped (5), RATIO_NOISE widest trusted ratio IQR (0.05),
//! RATIO_GOAL ratio a variant should stay under (1.10), RATIO_MAX_LOAD highest trusted
//! 1-minute load average (the number of cores), RATIO_FILE_MIB (256),
//! RATIO_DIR (/dev/shm), RATIO_STRICT=1 to exit 3 when the run is too noisy,
//! RATIO_BLOCK_KIB read size (4; e.g. 1024 for 1 MiB reads, which the striped
//! variants split into 16 pieces; RATIO_OPS then defaults to 8).
//! The `_uring` variants are skipped (with a note) where io_uring is unavailable.
//! Without `--bench` (`cargo test --benches`) it runs a few short rounds as a smoke test.

mod common;

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use udm_core::{DevRef, Device, Engine, EngineConfig, IoEngine, SECTOR_SHIFT};

/// Offsets in the random sequence; a power of two so the cursor wraps with a mask.
const OFFSETS: usize = 1 << 16;
/// Below this many rounds an interquartile range says little.
const MIN_TRUSTED_ROUNDS: usize = 20;

/// The variants measured against pread: a name and the table mapping the backing
/// file (`path`, `sectors` long) or its four quarter-size siblings (`parts`). Each
/// runs on the sync engine and, as `<name>_uring`, on the io_uring engine. A new
/// target's fast path is one more entry here.
fn variants(path: &str, parts: &[String; 4], sectors: u64) -> Vec<(&'static str, String)> {
    let q = sectors / 4;
    vec![
        ("linear", format!("0 {sectors} linear {path} 0")),
        (
            "striped_4way",
            format!(
                "0 {sectors} striped 4 128 {path} 0 {path} {q} {path} {} {path} {}",
                2 * q,
                3 * q
            ),
        ),
        (
            "striped_4files",
            format!(
                "0 {sectors} striped 4 128 {} 0 {} 0 {} 0 {} 0",
                parts[0], parts[1], parts[2], parts[3]
            ),
        ),
    ]
}

enum Reader {
    Pread(File),
    Device(Arc<Device>),
}

impl Reader {
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        match self {
            Reader::Pread(f) => f.read_exact_at(buf, offset).map_err(|e| e.to_string()),
            Reader::Device(d) => d
                .read(offset >> SECTOR_SHIFT, buf)
                .map_err(|e| format!("{e:?}")),
        }
    }
}

struct Settings {
    rounds: usize,
    reps: usize,
    ops: usize,
    warmup: usize,
    noise: f64,
    goal: f64,
    max_load: f64,
    file_mib: u64,
    block: usize,
    dir: PathBuf,
    strict: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env(bench_mode: bool) -> Result<Settings, String> {
        // Outside `cargo bench` this is a smoke test: short, but the same code.
        let (rounds, reps, ops, warmup, file_mib) = if bench_mode {
            (201, 7, 512, 5, 256)
        } else {
            (3, 3, 64, 1, 16)
        };
        let block_kib: usize = env_or("RATIO_BLOCK_KIB", 4)?;
        if block_kib == 0 || block_kib > 64 << 10 {
            return Err("RATIO_BLOCK_KIB must be 1 to 65536".into());
        }
        let block = block_kib << 10;
        // Big reads: fewer per batch, as many bytes as 512 4 KiB reads at least.
        let ops = if block > 4096 {
            (ops * 4096 / block).max(8)
        } else {
            ops
        };
        let default_dir = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let s = Settings {
            rounds: env_or("RATIO_ROUNDS", rounds)?,
            reps: env_or("RATIO_REPS", reps)?,
            ops: env_or("RATIO_OPS", ops)?,
            warmup: env_or("RATIO_WARMUP", warmup)?,
            noise: env_or("RATIO_NOISE", 0.05)?,
            goal: env_or("RATIO_GOAL", 1.10)?,
            max_load: env_or("RATIO_MAX_LOAD", common::cores() as f64)?,
            file_mib: env_or("RATIO_FILE_MIB", file_mib)?,
            block,
            dir: env_or("RATIO_DIR", default_dir)?,
            strict: env_or("RATIO_STRICT", 0u8)? != 0,
        };
        if s.rounds == 0 || s.reps == 0 || s.ops == 0 || s.file_mib == 0 {
            return Err(
                "RATIO_ROUNDS, RATIO_REPS, RATIO_OPS and RATIO_FILE_MIB must be at least 1".into(),
            );
        }
        if (s.file_mib << 20) / 4 < s.block as u64 {
            return Err("RATIO_FILE_MIB must hold four blocks of RATIO_BLOCK_KIB".into());
        }
        Ok(s)
    }
}

/// The value at quantile `q` (0..=1) of sorted `v`, interpolating between neighbours.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

struct Spread {
    p25: f64,
    median: f64,
    p75: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Spread {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        Spread {
            p25: quantile(&s, 0.25),
            median: quantile(&s, 0.5),
            p75: quantile(&s, 0.75),
            min: s[0],
            max: s[s.len() - 1],
        }
    }

    fn iqr(&self) -> f64 {
        self.p75 - self.p25
    }
}

/// splitmix64: offsets spread over the whole file with no stride a prefetcher follows.
fn random_offsets(blocks: u64, block: usize) -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..OFFSETS)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z % blocks) * block as u64
        })
        .collect()
}

fn fill(path: &Path, bytes: u64) -> Result<(), String> {
    let f = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut chunk = vec![0u8; 1 << 20];
    for (i, b) in chunk.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ 0x5a;
    }
    let mut at = 0;
    while at < bytes {
        let n = (bytes - at).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], at)
            .map_err(|e| format!("fill {}: {e}", path.display()))?;
        at += n as u64;
    }
    Ok(())
}

fn setup_device(e: &Engine, name: &str, table: &str) -> Result<Arc<Device>, String> {
    let r = DevRef::name(name);
    e.create(name, None, None)
        .map_err(|err| format!("create {name}: {err}"))?;
    e.load_text(&r, table, false)
        .map_err(|err| format!("load {name} ({table}): {err}"))?;
    e.resume(&r, false)
        .map_err(|err| format!("resume {name}: {err}"))?;
    e.device(&r).map_err(|err| format!("open {name}: {err}"))
}

fn run(bench_mode: bool, filter: &[String]) -> Result<bool, String> {
    let s = Settings::from_env(bench_mode)?;
    let dir = tempfile::tempdir_in(&s.dir)
        .map_err(|e| format!("temp dir in {}: {e}", s.dir.display()))?;
    let path = dir.path().join("backing");
    let bytes = s.file_mib << 20;
    println!("{}", common::machine_line(Some(dir.path())));
    let load_start = common::load_1min();
    fill(&path, bytes)?;

    let parts: [PathBuf; 4] = std::array::from_fn(|i| dir.path().join(format!("part{i}")));
    for p in &parts {
        fill(p, bytes / 4)?;
    }

    let sectors = bytes >> SECTOR_SHIFT;
    let engine_on = |io_engine| {
        Engine::new(
            udm_targets::registry(),
            EngineConfig {
                io_engine,
                ..EngineConfig::default()
            },
        )
    };
    let engines = [
        ("", engine_on(IoEngine::Sync)),
        ("_uring", engine_on(IoEngine::Uring)),
    ];
    if engines[1].1.io_engine() != IoEngine::Uring {
        println!("# io_uring unavailable here: no _uring variants");
    }
    let file = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut names = vec!["pread".to_string()];
    let mut readers = vec![Reader::Pread(file)];
    let part_names = parts.each_ref().map(|p| p.display().to_string());
    for (base, table) in variants(&path.display().to_string(), &part_names, sectors) {
        for (suffix, engine) in &engines {
            let name = format!("{base}{suffix}");
            // A filter ending in `$` names one variant exactly (`linear$` but not `linear_uring`).
            let wanted = filter.is_empty()
                || filter.iter().any(|f| match f.strip_suffix('$') {
                    Some(exact) => name == exact,
                    None => name.contains(f.as_str()),
                });
            let runs = suffix.is_empty() || engine.io_engine() == IoEngine::Uring;
            if wanted && runs {
                readers.push(Reader::Device(setup_device(engine, &name, &table)?));
                names.push(name);
            }
        }
    }

    println!(
        "# ratios: {} KiB random reads from a {} MiB file; {} rounds, each {} interleaved batches \
         of {} reads per variant (order rotating), the round's figure their median; \
         warm-up rounds dropped: {}{}",
        s.block / 1024,
        s.file_mib,
        s.rounds,
        s.reps,
        s.ops,
        s.warmup,
        if bench_mode {
            ""
        } else {
            " [smoke test: not --bench]"
        },
    );
    let offsets = random_offsets(bytes / s.block as u64, s.block);
    let mut buf = vec![0u8; s.block];
    let n = readers.len();
    let mut ns: Vec<Vec<f64>> = vec![Vec::with_capacity(s.rounds); n];
    let mut reps: Vec<Vec<f64>> = vec![Vec::with_capacity(s.reps); n];
    // One cursor for all: every batch reads blocks the previous batch did not, so no
    // variant finds the cache warmed by the one before it.
    let mut cursor = 0usize;
    for round in 0..s.warmup + s.rounds {
        for r in reps.iter_mut() {
            r.clear();
        }
        for rep in 0..s.reps {
            for k in 0..n {
                let v = (round + rep + k) % n;
                let start = Instant::now();
                for _ in 0..s.ops {
                    cursor = (cursor + 1) & (OFFSETS - 1);
                    readers[v].read(offsets[cursor], &mut buf)?;
                    black_box(&buf);
                }
                reps[v].push(start.elapsed().as_nanos() as f64 / s.ops as f64);
            }
        }
        // A batch that lost the CPU to another process is an outlier inside its
        // round; the round's median of its batches leaves it out.
        if round >= s.warmup {
            for v in 0..n {
                ns[v].push(Spread::of(&reps[v]).median);
            }
        }
    }

    println!(
        "| variant | ns/read median | ns/read p25–p75 | ratio to pread | ratio p25–p75 (IQR) | ratio min–max | goal ≤ {:.2} |",
        s.goal
    );
    println!("|---|---|---|---|---|---|---|");
    let mut widest: Option<(f64, &str)> = None;
    for v in 0..n {
        let t = Spread::of(&ns[v]);
        if v == 0 {
            println!(
                "| {} | {:.0} | {:.0}–{:.0} | 1.000 | – | – | – |",
                names[v], t.median, t.p25, t.p75
            );
            continue;
        }
        let ratios: Vec<f64> = ns[v].iter().zip(&ns[0]).map(|(a, b)| a / b).collect();
        let r = Spread::of(&ratios);
        let goal = if r.p75 <= s.goal {
            "met"
        } else if r.p25 > s.goal {
            "missed"
        } else {
            "inconclusive"
        };
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.3} | {:.3}–{:.3} ({:.3}) | {:.3}–{:.3} | {goal} |",
            names[v],
            t.median,
            t.p25,
            t.p75,
            r.median,
            r.p25,
            r.p75,
            r.iqr(),
            r.min,
            r.max,
        );
        if widest.is_none_or(|(w, _)| r.iqr() > w) {
            widest = Some((r.iqr(), names[v].as_str()));
        }
    }
    println!("# load at end: {}", common::load_average());

    let busy = [load_start, common::load_1min()]
        .into_iter()
        .flatten()
        .fold(0.0, f64::max);
    let mut doubts = Vec::new();
    if s.rounds < MIN_TRUSTED_ROUNDS {
        doubts.push(format!(
            "too few rounds ({} < {MIN_TRUSTED_ROUNDS}) to judge the spread",
            s.rounds
        ));
    }
    if let Some((w, name)) = widest.filter(|(w, _)| *w > s.noise) {
        doubts.push(format!(
            "the ratio IQR of {name} is {w:.3} > {:.3} (RATIO_NOISE)",
            s.noise
        ));
    }
    // Other processes on our cores skew a ratio even when its spread stays narrow:
    // contention slows the memory-bound copy and the mapping unequally.
    if busy > s.max_load {
        doubts.push(format!(
            "load {busy:.2} > {:.2} (RATIO_MAX_LOAD; {} cores)",
            s.max_load,
            common::cores()
        ));
    }
    let trusted = doubts.is_empty();
    match widest {
        _ if !trusted => println!(
            "# verdict: NOISY, do not trust these ratios: {}; rerun on a quieter machine",
            doubts.join("; ")
        ),
        None => println!("# verdict: no variant matched the filter"),
        Some((w, name)) => println!(
            "# verdict: trusted: widest ratio IQR {w:.3} ({name}) ≤ {:.3}, load ≤ {:.2}",
            s.noise, s.max_load
        ),
    }
    Ok(trusted || !s.strict)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let filter: Vec<String> = args.into_iter().filter(|a| !a.starts_with('-')).collect();
    match run(bench_mode, &filter) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("ratios: {e}");
            ExitCode::FAILURE
        }
    }
}

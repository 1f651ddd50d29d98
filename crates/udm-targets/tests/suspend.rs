//! Suspend/resume under load: four writers run while the table is switched
//! between linear-on-A and linear-on-B a hundred times. No write may fail, each
//! acknowledged write must be on exactly one file, the one whose table was live
//! while it ran, and once a suspend has drained (or a resume has swapped the
//! table) no write may reach the old table any more.
//!
//! The writers and the reloads are synchronised by barriers, so what is checked
//! does not depend on scheduling: in every generation each writer makes
//! `SETTLED` writes while the table is known to be stable, then keeps writing
//! ("racing" writes) while the device is suspended, reloaded and resumed, until
//! it has issued a write under the next generation. A busy machine only changes
//! how many racing writes there are, never what must hold for them.

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::Duration;

use udm_core::{DevRef, Engine, EngineConfig};

const THREADS: u64 = 4;
const CYCLES: u64 = 100;
/// Writes per writer per generation made while no reload can run.
const SETTLED: u64 = 8;
/// Room per writer per generation for writes racing a suspend/reload/resume.
const RACING: u64 = 128;
const SLOT: u64 = SETTLED + RACING;
/// Blocks of one generation (all writers); generation `g` owns
/// `g * REGION .. (g + 1) * REGION`, so every write goes to a block of its own.
const REGION: u64 = THREADS * SLOT;
/// The whole test must finish well within this, even on a loaded machine.
const WATCHDOG: Duration = Duration::from_secs(300);

fn block_of(g: u64, t: u64, k: u64) -> u64 {
    g * REGION + t * SLOT + k
}

fn racing_blocks(g: u64) -> impl Iterator<Item = u64> {
    (0..THREADS).flat_map(move |t| (SETTLED..SLOT).map(move |k| block_of(g, t, k)))
}

fn payload(block: u64) -> [u8; 512] {
    let mut buf = [0u8; 512];
    buf[..8].copy_from_slice(&(block + 1).to_le_bytes());
    buf[8..16].copy_from_slice(&0x75646d_u64.to_le_bytes());
    buf
}

/// The table generation: changed only while the device is suspended, before the
/// new table is loaded. Writers read it before and after each write.
struct Generation {
    value: AtomicU64,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Generation {
    fn get(&self) -> u64 {
        self.value.load(Ordering::SeqCst)
    }

    fn set(&self, g: u64) {
        let _l = self.lock.lock().unwrap();
        self.value.store(g, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn wait_past(&self, g: u64) {
        let mut l = self.lock.lock().unwrap();
        while self.get() <= g {
            l = self
                .changed
                .wait_timeout(l, Duration::from_secs(1))
                .unwrap()
                .0;
        }
    }
}

#[derive(Debug)]
struct Ack {
    block: u64,
    settled: bool,
    gen_before: u64,
    gen_after: u64,
}

#[test]
fn reload_a_b_under_four_writers() {
    let done = Arc::new(AtomicBool::new(false));
    {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() > WATCHDOG {
                    eprintln!("reload_a_b_under_four_writers: no progress in {WATCHDOG:?}: hung");
                    std::process::exit(1);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }

    let dir = tempfile::tempdir().unwrap();
    let blocks = (CYCLES + 1) * REGION;
    let files: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| {
            let p = dir.path().join(n);
            std::fs::File::create(&p)
                .unwrap()
                .set_len(blocks * 512)
                .unwrap();
            p
        })
        .collect();
    let e = Engine::new(udm_targets::registry(), EngineConfig::default());
    let r = DevRef::name("sw");
    e.create("sw", None, None).unwrap();
    let table = |i: u64| format!("0 {blocks} linear {} 0", files[i as usize].display());
    e.load_text(&r, &table(0), false).unwrap();
    e.resume(&r, false).unwrap();
    let dev = e.device(&r).unwrap();

    let generation = Arc::new(Generation {
        value: AtomicU64::new(0),
        lock: Mutex::new(()),
        changed: Condvar::new(),
    });
    // Main thread and writers meet twice per generation: before the settled writes
    // (the generation's table is live and stays so) and after them (the writers go
    // on racing, main starts the next reload).
    let barrier = Arc::new(Barrier::new(THREADS as usize + 1));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let dev = dev.clone();
            let generation = generation.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<Vec<Ack>, String> {
                let mut acks = Vec::new();
                let mut write = |g: u64, k: u64, settled: bool| -> Result<u64, String> {
                    let block = block_of(g, t, k);
                    let gen_before = generation.get();
                    dev.write(block, &payload(block), false)
                        .map_err(|e| format!("write of block {block} failed: {e:?}"))?;
                    let gen_after = generation.get();
                    acks.push(Ack {
                        block,
                        settled,
                        gen_before,
                        gen_after,
                    });
                    Ok(gen_before)
                };
                for g in 0..=CYCLES {
                    barrier.wait();
                    for k in 0..SETTLED {
                        write(g, k, true)?;
                    }
                    barrier.wait();
                    if g == CYCLES {
                        break;
                    }
                    // Race the reload to generation g + 1 until a write has been
                    // issued under it (or this writer's room is used up).
                    let mut after_switch = false;
                    for k in SETTLED..SLOT {
                        if write(g, k, false)? > g {
                            after_switch = true;
                            break;
                        }
                    }
                    if !after_switch {
                        generation.wait_past(g);
                    }
                }
                Ok(acks)
            })
        })
        .collect();

    let read_block = |f: &std::fs::File, block: u64| -> bool {
        let mut b = [0u8; 512];
        f.read_exact_at(&mut b, block * 512).unwrap();
        if b == [0u8; 512] {
            return false;
        }
        assert_eq!(b, payload(block), "block {block} holds foreign data");
        true
    };
    let handles = [
        std::fs::File::open(&files[0]).unwrap(),
        std::fs::File::open(&files[1]).unwrap(),
    ];
    // snapshots[g]: the racing blocks of generation g present on g's file once its
    // table could no longer receive I/O (suspend drained, or resume swapped it out).
    let mut snapshots: Vec<BTreeSet<u64>> = Vec::new();
    for g in 0..=CYCLES {
        barrier.wait(); // the settled writes of g start
        barrier.wait(); // ... and are done; the writers race the reload
        if g == CYCLES {
            break;
        }
        let next = g + 1;
        let noflush = next % 10 == 0;
        let old = &handles[(g % 2) as usize];
        let snapshot =
            |old: &std::fs::File| racing_blocks(g).filter(|&b| read_block(old, b)).collect();
        e.suspend(&r, noflush).unwrap();
        assert!(dev.is_suspended());
        generation.set(next);
        // A flushing suspend has drained: nothing more may reach the old table.
        let drained: Option<BTreeSet<u64>> = (!noflush).then(|| snapshot(old));
        e.load_text(&r, &table(next % 2), false).unwrap();
        e.resume(&r, false).unwrap();
        assert!(!dev.is_suspended());
        // After a noflush suspend, in-flight I/O drains before the swap at resume.
        snapshots.push(drained.unwrap_or_else(|| snapshot(old)));
    }
    let mut acks = Vec::new();
    for w in writers {
        acks.extend(w.join().unwrap().unwrap_or_else(|e| panic!("{e}")));
    }
    done.store(true, Ordering::SeqCst);

    let mut settled_per_gen = vec![0u64; CYCLES as usize + 1];
    let mut written = BTreeSet::new();
    let (mut exact, mut straddled) = (0u64, 0u64);
    for a in &acks {
        let g = a.block / REGION;
        assert!(written.insert(a.block), "block {} written twice", a.block);
        let (in_a, in_b) = (
            read_block(&handles[0], a.block),
            read_block(&handles[1], a.block),
        );
        assert!(
            in_a != in_b,
            "acknowledged write to block {} found on a={in_a} b={in_b}: {a:?}",
            a.block
        );
        let on = u64::from(in_b);
        if a.settled {
            assert_eq!(
                (a.gen_before, a.gen_after),
                (g, g),
                "settled write ran outside its generation: {a:?}"
            );
            assert_eq!(on, g % 2, "settled write on the wrong file: {a:?}");
            settled_per_gen[g as usize] += 1;
        } else if a.gen_before == a.gen_after {
            // Ran entirely under one generation: on that generation's file.
            exact += 1;
            assert!(
                a.gen_before == g || a.gen_before == g + 1,
                "racing write outside its reload: {a:?}"
            );
            assert_eq!(
                on,
                a.gen_before % 2,
                "write acknowledged under generation {} on the wrong file: {a:?}",
                a.gen_before
            );
        } else {
            // Straddled the one reload of its generation: either file is right.
            straddled += 1;
            assert_eq!(
                (a.gen_before, a.gen_after),
                (g, g + 1),
                "racing write straddled more than its own reload: {a:?}"
            );
        }
        if !a.settled && on == g % 2 {
            assert!(
                snapshots[g as usize].contains(&a.block),
                "block {} reached generation {g}'s table after it was drained: {a:?}",
                a.block
            );
        }
    }
    for (g, n) in settled_per_gen.iter().enumerate() {
        assert_eq!(
            *n,
            THREADS * SETTLED,
            "generation {g} got {n} settled writes"
        );
    }
    // Nothing but the acknowledged writes reached either file.
    for (i, file) in files.iter().enumerate() {
        let data = std::fs::read(file).unwrap();
        for (b, chunk) in data.chunks(512).enumerate() {
            if chunk.iter().any(|&x| x != 0) {
                assert!(
                    written.contains(&(b as u64)),
                    "block {b} on file {i} was never acknowledged"
                );
            }
        }
    }
    eprintln!(
        "{} acknowledged writes: {} settled, {exact} racing within one generation, \
         {straddled} straddling a reload; {CYCLES} reloads",
        acks.len(),
        THREADS * SETTLED * (CYCLES + 1)
    );
}

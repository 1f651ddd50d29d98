//! Suspend/resume under load: four writers run while the table is switched
//! between linear-on-A and linear-on-B a hundred times. No write may fail, and
//! each acknowledged write must be on the file whose table was live when it was
//! acknowledged (and only there).

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use udm_core::{DevRef, Engine, EngineConfig};

const THREADS: u64 = 4;
const PER_THREAD: u64 = 32768;
const CYCLES: u64 = 100;

struct Ack {
    block: u64,
    gen_before: u64,
    gen_after: u64,
}

#[test]
fn reload_a_b_under_four_writers() {
    let dir = tempfile::tempdir().unwrap();
    let sectors = THREADS * PER_THREAD;
    let files: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| {
            let p = dir.path().join(n);
            std::fs::File::create(&p)
                .unwrap()
                .set_len(sectors * 512)
                .unwrap();
            p
        })
        .collect();
    let e = Engine::new(udm_targets::registry(), EngineConfig::default());
    let r = DevRef::name("sw");
    e.create("sw", None, None).unwrap();
    let table = |i: usize| format!("0 {sectors} linear {} 0", files[i].display());
    e.load_text(&r, &table(0), false).unwrap();
    e.resume(&r, false).unwrap();
    let dev = e.device(&r).unwrap();
    // The generation is changed only while the device is suspended, so a write that
    // saw the same generation before submitting and after completing ran entirely
    // under that generation's table.
    let generation = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let dev = dev.clone();
            let generation = generation.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                for i in 0..PER_THREAD {
                    if stop.load(Ordering::SeqCst) && i > 64 {
                        break;
                    }
                    let block = t * PER_THREAD + i;
                    let mut buf = [0u8; 512];
                    buf[..8].copy_from_slice(&(block + 1).to_le_bytes());
                    buf[8..16].copy_from_slice(&0x75646d_u64.to_le_bytes());
                    let gen_before = generation.load(Ordering::SeqCst);
                    dev.write(block, &buf, false)
                        .expect("write failed during suspend/resume");
                    let gen_after = generation.load(Ordering::SeqCst);
                    acks.push(Ack {
                        block,
                        gen_before,
                        gen_after,
                    });
                }
                acks
            })
        })
        .collect();
    for cycle in 1..=CYCLES {
        let noflush = cycle % 10 == 0;
        e.suspend(&r, noflush).unwrap();
        generation.store(cycle, Ordering::SeqCst);
        e.load_text(&r, &table((cycle % 2) as usize), false)
            .unwrap();
        e.resume(&r, false).unwrap();
        assert!(!dev.is_suspended());
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    stop.store(true, Ordering::SeqCst);
    let acks: Vec<Ack> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let fa = std::fs::File::open(&files[0]).unwrap();
    let fb = std::fs::File::open(&files[1]).unwrap();
    let holds = |f: &std::fs::File, block: u64| {
        let mut b = [0u8; 16];
        f.read_exact_at(&mut b, block * 512).unwrap();
        u64::from_le_bytes(b[..8].try_into().unwrap()) == block + 1
    };
    let mut exact = 0;
    let mut generations = std::collections::BTreeSet::new();
    for a in &acks {
        let (in_a, in_b) = (holds(&fa, a.block), holds(&fb, a.block));
        assert!(in_a != in_b, "block {} found in a={in_a} b={in_b}", a.block);
        if a.gen_before == a.gen_after {
            exact += 1;
            generations.insert(a.gen_before);
            let expect_b = a.gen_before % 2 == 1;
            assert_eq!(
                in_b, expect_b,
                "block {} acknowledged under generation {}",
                a.block, a.gen_before
            );
        } else {
            // It straddled a switch: it must be on one of the files live in between.
            let on = if in_b { 1 } else { 0 };
            assert!(
                (a.gen_before..=a.gen_after).any(|g| g % 2 == on),
                "block {}",
                a.block
            );
        }
    }
    assert!(
        acks.len() as u64 >= THREADS * 64,
        "writers made too little progress: {}",
        acks.len()
    );
    assert!(
        exact > acks.len() / 2,
        "too few writes could be attributed exactly: {exact} of {}",
        acks.len()
    );
    assert!(
        generations.len() > 50,
        "writes landed in only {} of {CYCLES} table generations",
        generations.len()
    );
    eprintln!(
        "{} acknowledged writes, {exact} attributed exactly, {CYCLES} reloads",
        acks.len()
    );
}

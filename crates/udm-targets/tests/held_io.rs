//! Held I/O under table swaps: writers keep writing through a `delay` device
//! (so most of their writes are held by the target, or by the suspended device,
//! when a swap comes) while the table is switched between delay-on-A and
//! delay-on-B, with flushing and noflush suspends. Every write is to a block of
//! its own, so what must hold does not depend on scheduling: every acknowledged
//! write is on exactly one of the two files, intact, and the other file has
//! nothing there; no write fails; nothing hangs.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use udm_core::{DevRef, Engine, EngineConfig};

const WRITERS: u64 = 4;
const SWAPS: u64 = 40;
const BLOCKS: u64 = 4096;

fn payload(block: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (block as u8) ^ (i as u8) ^ 0x5a;
    }
    b[..8].copy_from_slice(&block.to_le_bytes());
    b
}

#[test]
fn writes_held_across_swaps_land_once_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| {
            let p = dir.path().join(n);
            std::fs::File::create(&p)
                .unwrap()
                .set_len(BLOCKS * 512)
                .unwrap();
            p
        })
        .collect();
    let e = Engine::new(udm_targets::registry(), EngineConfig::default());
    let r = DevRef::name("held");
    e.create("held", None, None).unwrap();
    let table = |i: usize| format!("0 {BLOCKS} delay {} 0 3", files[i].display());
    e.load_text(&r, &table(0), false).unwrap();
    e.resume(&r, false).unwrap();
    let dev = e.device(&r).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|t| {
            let (dev, stop, acked) = (dev.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::SeqCst) && k < BLOCKS / WRITERS {
                    let block = k * WRITERS + t;
                    dev.write(block, &payload(block), false).unwrap();
                    acked.lock().unwrap().push(block);
                    k += 1;
                }
            })
        })
        .collect();
    for s in 0..SWAPS {
        std::thread::sleep(Duration::from_millis(5));
        e.load_text(&r, &table(((s + 1) % 2) as usize), false)
            .unwrap();
        e.suspend(&r, s % 3 == 0).unwrap();
        e.resume(&r, s % 3 == 0).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let fa = std::fs::File::open(&files[0]).unwrap();
    let fb = std::fs::File::open(&files[1]).unwrap();
    for block in acked {
        let (mut a, mut b) = ([0u8; 512], [0u8; 512]);
        fa.read_exact_at(&mut a, block * 512).unwrap();
        fb.read_exact_at(&mut b, block * 512).unwrap();
        let want = payload(block);
        let zero = [0u8; 512];
        assert!(
            (a == want && b == zero) || (a == zero && b == want),
            "block {block} is not on exactly one file"
        );
    }
}

//! The FUSE mapper directory answers I/O asynchronously: a request whose bio is held (by a
//! `delay` target, or by a suspended device) holds no thread of udmd, so many such requests
//! are in flight at once and end together, unaligned ones included (in whole sectors), and
//! none of them stops the directory or another device.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Daemon, Opts};

/// The delay of the `delay` device, ms.
const DELAY_MS: u64 = 300;
/// Concurrent requests (the mount has five FUSE threads).
const CONCURRENT: usize = 64;
const BLOCK: usize = 4096;
/// Generous bound for anything that must not hang (a busy 2-core CI machine).
const BOUND: Duration = Duration::from_secs(30);

/// FUSE (and root, for mounts) is needed; with UDM_REQUIRE_CLIENTS set its absence fails.
fn fuse_required() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return udm_testkit::unavailable("mounting the mapper dir needs root");
    }
    udm_testkit::have_device("/dev/fuse")
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ ((i / BLOCK) as u8))
        .collect()
}

/// Threads of process `pid`.
fn threads_of(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

fn mapper(d: &Daemon) -> &Path {
    d.mapper.as_deref().expect("mapper dir enabled")
}

/// #engine: 64 reads and writes through a `delay <file> 0 300` device are all in flight at
/// once: they end in about one delay period (five FUSE threads serving them one at a time
/// each would take 13 periods, 3.9 s), and udmd's thread count does not grow with them.
#[test]
fn delayed_requests_are_in_flight_together_and_hold_no_thread() {
    if !fuse_required() {
        return;
    }
    let d = Daemon::with(Opts {
        mapper: true,
        ..Opts::default()
    });
    let len = CONCURRENT * BLOCK;
    let backing = d.dir.path().join("backing");
    let before = pattern(1, len);
    fs::write(&backing, &before).expect("write backing file");
    let sectors = len / 512;
    d.ok(&[
        "create",
        "slow",
        "--table",
        &format!("0 {sectors} delay {} 0 {DELAY_MS}", backing.display()),
    ]);
    let path = mapper(&d).join("slow");
    // Opened first (an open is not I/O), and one request served, so that the engine's
    // timer and workers that any delayed bio needs are already running.
    let files: Vec<File> = (0..CONCURRENT)
        .map(|_| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open the mapper file")
        })
        .collect();
    let mut one = vec![0u8; BLOCK];
    files[0].read_exact_at(&mut one, 0).expect("warm-up read");
    assert!(one == before[..BLOCK], "warm-up read returned wrong data");
    let base_threads = threads_of(d.pid());

    // Even blocks are read, odd ones written with new data.
    let after = pattern(2, len);
    let start = Arc::new(Barrier::new(CONCURRENT + 1));
    let (tx, rx) = mpsc::channel();
    for (i, f) in files.into_iter().enumerate() {
        let (start, tx) = (Arc::clone(&start), tx.clone());
        let data = after[i * BLOCK..(i + 1) * BLOCK].to_vec();
        std::thread::spawn(move || {
            let off = (i * BLOCK) as u64;
            start.wait();
            let r = if i % 2 == 0 {
                let mut buf = vec![0u8; BLOCK];
                f.read_exact_at(&mut buf, off).map(|()| Some(buf))
            } else {
                f.write_all_at(&data, off).map(|()| None)
            };
            let _ = tx.send((i, r));
        });
    }
    drop(tx);
    start.wait();
    let t0 = Instant::now();
    let mut peak = threads_of(d.pid());
    let mut done = Vec::new();
    while done.len() < CONCURRENT {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(r) => done.push(r),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                assert!(
                    t0.elapsed() < BOUND,
                    "only {} of {CONCURRENT} requests ended",
                    done.len()
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        peak = peak.max(threads_of(d.pid()));
    }
    let elapsed = t0.elapsed();
    assert_eq!(done.len(), CONCURRENT, "a request thread died");
    for (i, r) in done {
        let got = r.unwrap_or_else(|e| panic!("request {i}: {e}"));
        if let Some(buf) = got {
            assert!(
                buf == before[i * BLOCK..(i + 1) * BLOCK],
                "read {i} returned wrong data"
            );
        }
    }
    let periods = elapsed.as_millis() as f64 / DELAY_MS as f64;
    eprintln!(
        "{CONCURRENT} delayed requests in {elapsed:?} ({periods:.1} delay periods); \
         udmd threads {base_threads} before, {peak} at most meanwhile"
    );
    assert!(
        elapsed >= Duration::from_millis(DELAY_MS),
        "the requests were not delayed ({elapsed:?})"
    );
    assert!(
        elapsed < Duration::from_millis(DELAY_MS * 6),
        "{CONCURRENT} requests through a {DELAY_MS} ms delay took {elapsed:?}: \
         they were not all in flight at once"
    );
    // The engine may start a few pool workers to pass expired bios on; a thread per
    // request (or per few requests) would be far more.
    assert!(
        peak < base_threads + CONCURRENT / 4,
        "udmd grew from {base_threads} to {peak} threads while the requests were held"
    );
    // What was written reached the backing file, and the rest is untouched.
    let file = fs::read(&backing).expect("read backing file");
    for i in 0..CONCURRENT {
        let want = if i % 2 == 0 { &before } else { &after };
        assert!(
            file[i * BLOCK..(i + 1) * BLOCK] == want[i * BLOCK..(i + 1) * BLOCK],
            "block {i} of the backing file"
        );
    }
}

/// Unaligned reads (in whole sectors) and an fsync held by a suspended device, more of
/// them than the mount has threads, stop neither the directory nor another device, and
/// complete on resume.
#[test]
fn unaligned_and_flush_requests_of_a_suspended_device_block_nothing_else() {
    if !fuse_required() {
        return;
    }
    let d = Daemon::with(Opts {
        mapper: true,
        ..Opts::default()
    });
    const LEN: usize = 1 << 20;
    let (a, b) = (d.dir.path().join("a"), d.dir.path().join("b"));
    fs::write(&a, pattern(3, LEN)).expect("write a");
    fs::write(&b, pattern(4, LEN)).expect("write b");
    let sectors = (LEN / 512).to_string();
    for (name, file) in [("fa", &a), ("fb", &b)] {
        d.ok(&[
            "create",
            name,
            "--table",
            &format!("0 {sectors} linear {} 0", file.display()),
        ]);
    }
    let fa = mapper(&d).join("fa");
    let fb = mapper(&d).join("fb");
    let files: Vec<File> = (0..9)
        .map(|_| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fa)
                .expect("open fa")
        })
        .collect();
    d.ok(&["suspend", "fa"]);

    let (tx, rx) = mpsc::channel();
    for (i, f) in files.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let r = if i == 8 {
                f.sync_all().map(|()| None)
            } else {
                let off = (i * 65536 + 100) as u64;
                let mut buf = vec![0u8; 1000];
                f.read_exact_at(&mut buf, off).map(|()| Some((off, buf)))
            };
            let _ = tx.send(r);
        });
    }
    drop(tx);
    // Give the requests time to reach udmd (they cannot end before the resume).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rx.try_recv().is_err(),
        "a request of suspended fa completed"
    );

    let (ok_tx, ok_rx) = mpsc::channel();
    let (dir, fb2) = (mapper(&d).to_path_buf(), fb.clone());
    std::thread::spawn(move || {
        let mut names: Vec<String> = fs::read_dir(&dir)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let size = fs::metadata(&fb2).expect("stat fb").len();
        let mut odd = vec![0u8; 777];
        File::open(&fb2)
            .and_then(|f| f.read_exact_at(&mut odd, 4097))
            .expect("unaligned read of fb");
        let _ = ok_tx.send((names, size, odd, fs::read(&fb2).expect("read fb")));
    });
    let got = ok_rx.recv_timeout(BOUND);
    d.ok(&["resume", "fa"]);
    let (names, size, odd, data) =
        got.expect("ls/stat/read of fb hung while fa held unaligned reads and an fsync");
    assert_eq!(names, ["fa", "fb"]);
    assert_eq!(size, LEN as u64);
    let want_b = pattern(4, LEN);
    assert!(odd == want_b[4097..4097 + 777], "unaligned read of fb");
    assert!(data == want_b, "fb read back wrong data");
    let want_a = pattern(3, LEN);
    for _ in 0..9 {
        let r = rx.recv_timeout(BOUND).expect("a held request never ended");
        if let Some((off, buf)) = r.expect("held request failed") {
            let off = off as usize;
            assert!(buf == want_a[off..off + buf.len()], "held read at {off}");
        }
    }
}

/// Reads and writes at any offset and length through the mapper file match the backing
/// file: unaligned ones go in whole sectors (a write reads its partial edge sectors
/// first), including the split the kernel makes of a 1 MiB direct request whose buffer
/// starts 16 bytes into a page (1 MiB - 16 bytes, then 16 bytes).
#[test]
fn unaligned_reads_and_writes_match_the_backing_file() {
    if !fuse_required() {
        return;
    }
    let d = Daemon::with(Opts {
        mapper: true,
        ..Opts::default()
    });
    const LEN: usize = 4 << 20;
    let backing = d.dir.path().join("backing");
    let mut want = pattern(5, LEN);
    fs::write(&backing, &want).expect("write backing file");
    d.ok(&[
        "create",
        "u",
        "--table",
        &format!("0 {} linear {} 0", LEN / 512, backing.display()),
    ]);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mapper(&d).join("u"))
        .expect("open the mapper file");
    // A 1 MiB buffer 16 bytes into a page, as malloc hands out large buffers.
    let mut page_buf = vec![0u8; (1 << 20) + 8192];
    let at = page_buf.as_ptr().align_offset(4096) + 16;
    let window = &mut page_buf[at..at + (1 << 20)];
    f.read_exact_at(window, 1 << 20).expect("1 MiB read");
    assert!(
        window == &want[1 << 20..2 << 20],
        "1 MiB read from a misaligned buffer"
    );
    let new = pattern(6, 1 << 20);
    window.copy_from_slice(&new);
    f.write_all_at(window, (2 << 20) + 512)
        .expect("1 MiB write");
    want[(2 << 20) + 512..(3 << 20) + 512].copy_from_slice(&new);

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for k in 0..200u64 {
        let len = 1 + next(9000) as usize;
        let off = next((LEN - len) as u64) as usize;
        if k % 2 == 0 {
            let data = pattern(k as u8, len);
            f.write_all_at(&data, off as u64).expect("unaligned write");
            want[off..off + len].copy_from_slice(&data);
        } else {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off as u64)
                .expect("unaligned read");
            assert!(buf == want[off..off + len], "read {off}+{len}");
        }
    }
    drop(f);
    let got = fs::read(&backing).expect("read backing file");
    assert!(
        got == want,
        "the backing file differs from what was written"
    );
}

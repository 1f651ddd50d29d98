//! The io_uring engine: data.rs's round trips through engines built with
//! `IoEngine::Uring`, each checked against the backing files and against the
//! sync engine doing the same (results, file contents, tables, deps); many
//! submitters with many bios in flight at once; unaligned O_DIRECT buffers; and
//! the fallback to the sync engine when io_uring cannot be set up.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use udm_core::{Bio, DevRef, Device, Engine, EngineConfig, Errno, IoEngine, Op, StatusType};

fn engine_with(io_engine: IoEngine, direct_io: bool) -> Engine {
    Engine::new(
        udm_targets::registry(),
        EngineConfig {
            io_engine,
            direct_io,
            ..EngineConfig::default()
        },
    )
}

/// An engine on io_uring; `None` (with a note) where the kernel refuses io_uring.
fn uring() -> Option<Engine> {
    let e = engine_with(IoEngine::Uring, false);
    if e.io_engine() != IoEngine::Uring {
        eprintln!("io_uring unavailable here: nothing to test");
        return None;
    }
    Some(e)
}

/// Both engines, the sync one first, for tests that compare them; `None` when
/// io_uring is unavailable.
fn both() -> Option<[Engine; 2]> {
    Some([engine_with(IoEngine::Sync, false), uring()?])
}

fn make_file(dir: &Path, name: &str, sectors: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(sectors * 512)
        .unwrap();
    p
}

/// Every 512-byte sector gets a distinct, position-dependent pattern.
fn pattern(len_sectors: u64, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity((len_sectors * 512) as usize);
    for s in 0..len_sectors {
        for i in 0..64u64 {
            v.extend_from_slice(
                &(s.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i << 48) ^ seed).to_le_bytes(),
            );
        }
    }
    v
}

fn read_file(p: &Path, sector: u64, n: u64) -> Vec<u8> {
    let f = std::fs::File::open(p).unwrap();
    let mut b = vec![0u8; (n * 512) as usize];
    f.read_exact_at(&mut b, sector * 512).unwrap();
    b
}

fn create(e: &Engine, name: &str, table: &str) -> Arc<Device> {
    let r = DevRef::name(name);
    e.create(name, None, None).unwrap();
    e.load_text(&r, table, false).unwrap();
    e.resume(&r, false).unwrap();
    e.device(&r).unwrap()
}

fn table_text(e: &Engine, name: &str) -> String {
    let (_, lines) = e
        .status(&DevRef::name(name), false, StatusType::Table)
        .unwrap();
    lines
        .iter()
        .map(|l| format!("{} {} {} {}", l.start, l.len, l.target_type, l.text))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn linear_fua_and_flush_land_in_the_files_and_print_as_with_sync() {
    let Some(engines) = both() else { return };
    let mut seen = Vec::new();
    for e in &engines {
        let dir = tempfile::tempdir().unwrap();
        let a = make_file(dir.path(), "a", 4096);
        let b = make_file(dir.path(), "b", 4096);
        let t = format!(
            "0 1000 linear {a} 100\n1000 500 linear {b} 3000\n1500 24 linear {a} 2000",
            a = a.display(),
            b = b.display()
        );
        let dev = create(e, "lin", &t);
        let data = pattern(1524, 7);
        // The first half plain, the second FUA (RWF_DSYNC), in pieces that cross
        // the targets' boundaries.
        for (i, piece) in data.chunks(77 * 512).enumerate() {
            let s = (i * 77) as u64;
            dev.write(s, piece, s >= 762).unwrap();
        }
        dev.flush().unwrap();
        let chunk = |s: u64, n: u64| &data[(s * 512) as usize..((s + n) * 512) as usize];
        assert_eq!(&read_file(&a, 100, 1000)[..], chunk(0, 1000));
        assert_eq!(&read_file(&b, 3000, 500)[..], chunk(1000, 500));
        assert_eq!(&read_file(&a, 2000, 24)[..], chunk(1500, 24));
        assert!(read_file(&a, 0, 100).iter().all(|&x| x == 0));
        let mut back = vec![0u8; data.len()];
        dev.read(0, &mut back).unwrap();
        assert!(back == data, "read back differs");
        // Unaligned byte I/O (read-modify-write) across the first boundary.
        dev.write_bytes(999 * 512 + 300, &[0xaa; 600], true)
            .unwrap();
        assert_eq!(&read_file(&a, 1099, 1)[300..], &[0xaa; 212][..]);
        assert_eq!(&read_file(&b, 3000, 1)[..388], &[0xaa; 388][..]);
        // What the tables print does not depend on the engine (paths are the
        // temporary directory's: compare with it taken out).
        let text = table_text(e, "lin").replace(&dir.path().display().to_string(), "D");
        let (_, deps) = e.deps(&DevRef::name("lin"), false).unwrap();
        seen.push((text, deps));
    }
    assert_eq!(seen[0], seen[1]);
    assert!(
        seen[1].0.starts_with("0 1000 linear D/a 100\n"),
        "{}",
        seen[1].0
    );
}

fn check_striped(e: &Engine, chunk: u64, io_sectors: u64) {
    let dir = tempfile::tempdir().unwrap();
    let offs = [0u64, 64, 8];
    let width = chunk * 40;
    let files: Vec<PathBuf> = (0..3)
        .map(|i| make_file(dir.path(), &format!("s{i}"), width + 128))
        .collect();
    let len = width * 3;
    let table = format!(
        "0 {len} striped 3 {chunk} {} {} {} {} {} {}",
        files[0].display(),
        offs[0],
        files[1].display(),
        offs[1],
        files[2].display(),
        offs[2]
    );
    let name = format!("st{chunk}");
    let dev = create(e, &name, &table);
    let data = pattern(len, chunk);
    let mut s = 0;
    while s < len {
        let n = io_sectors.min(len - s);
        let piece = &data[(s * 512) as usize..((s + n) * 512) as usize];
        dev.write(s, piece, false).unwrap();
        s += n;
    }
    for o in 0..len {
        let c = o / chunk;
        let stripe = (c % 3) as usize;
        let dev_sector = (c / 3) * chunk + o % chunk + offs[stripe];
        let got = read_file(&files[stripe], dev_sector, 1);
        assert_eq!(
            &got[..],
            &data[(o * 512) as usize..((o + 1) * 512) as usize],
            "sector {o}"
        );
    }
    assert!(read_file(&files[1], 0, 64).iter().all(|&b| b == 0));
    let mut back = vec![0u8; data.len()];
    dev.read(0, &mut back).unwrap();
    assert!(back == data, "read back through the device differs");
    e.remove(&DevRef::name(&name), false).unwrap();
}

#[test]
fn striped_over_three_files_puts_every_sector_where_the_arithmetic_says() {
    let Some(e) = uring() else { return };
    check_striped(&e, 8, 37);
    check_striped(&e, 24, 50);
}

#[test]
fn stacked_devices_pass_data_through() {
    let Some(e) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = make_file(dir.path(), "a", 2048);
    create(&e, "low", &format!("0 2048 linear {} 0", a.display()));
    let hi = create(&e, "high", "0 1024 linear 253:0 1024");
    hi.write(5, &[9u8; 512], true).unwrap();
    assert!(read_file(&a, 1029, 1).iter().all(|&x| x == 9));
    let mut b = [0u8; 1024];
    hi.read(4, &mut b).unwrap();
    assert!(b[..512].iter().all(|&x| x == 0) && b[512..].iter().all(|&x| x == 9));
    hi.flush().unwrap();
    let (_, deps) = e.deps(&DevRef::name("high"), false).unwrap();
    assert_eq!(deps, vec![udm_core::DevNumber::new(253, 0)]);
}

/// Discard, write zeroes (each way) and fast-only zeroing on a file, through
/// `e`: the results and what the file holds afterwards.
fn zeroing(e: &Engine, dir: &Path) -> (Vec<Result<(), Errno>>, Vec<u8>, bool) {
    let p = dir.join("z");
    std::fs::write(&p, vec![0x5au8; 256 * 512]).unwrap();
    let dev = create(e, "z", &format!("0 256 linear {} 0", p.display()));
    let results = vec![
        dev.discard(8, 8),
        dev.write_zeroes(32, 8, false, false),
        dev.write_zeroes(48, 8, true, true),
        dev.write_zeroes(64, 8, false, true),
        dev.write_zeroes_fast_only(80, 8, true, false),
        dev.write_zeroes_fast_only(96, 8, false, false),
        dev.discard(255, 1),
    ];
    let mut through = vec![0u8; 256 * 512];
    dev.read(0, &mut through).unwrap();
    let file = std::fs::read(&p).unwrap();
    assert!(through == file, "the device and its file disagree");
    let hole = dev.extents(8, 8).unwrap();
    e.remove(&DevRef::name("z"), false).unwrap();
    (
        results,
        file,
        hole.first()
            .is_some_and(|h| h.0 == udm_core::ExtentKind::Hole),
    )
}

#[test]
fn discard_and_write_zeroes_do_what_the_sync_engine_does() {
    let Some([sync, uring]) = both() else { return };
    // A disk filesystem (fallocate zeroes ranges) and tmpfs (it only punches
    // holes: zeroing without unmapping writes zeros, fast-only refuses).
    let mut dirs = vec![tempfile::tempdir().unwrap()];
    if Path::new("/dev/shm").is_dir() {
        dirs.push(tempfile::tempdir_in("/dev/shm").unwrap());
    }
    for dir in &dirs {
        let want = zeroing(&sync, dir.path());
        let got = zeroing(&uring, dir.path());
        assert_eq!(got.0, want.0, "results in {}", dir.path().display());
        assert!(got.1 == want.1, "file contents in {}", dir.path().display());
        assert_eq!(got.2, want.2);
        let zero = |s: usize| got.1[s * 512..(s + 8) * 512].iter().all(|&b| b == 0);
        for s in [8, 32, 48, 64, 80] {
            assert!(zero(s), "sectors {s}.. not zeroed");
        }
        assert!(got.1[16 * 512..32 * 512].iter().all(|&b| b == 0x5a));
    }
}

#[test]
fn reads_past_the_end_of_a_shrunk_file_fail_with_eio() {
    let Some(engines) = both() else { return };
    let mut seen = Vec::new();
    for e in &engines {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short");
        std::fs::write(&p, vec![7u8; 64 * 512]).unwrap();
        let dev = create(e, "short", &format!("0 64 linear {} 0", p.display()));
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(16 * 512)
            .unwrap();
        let mut b = vec![0u8; 16 * 512];
        let results = [
            dev.read(0, &mut b[..8 * 512]),
            dev.read(8, &mut b),  // straddles the new end
            dev.read(32, &mut b), // wholly past it
        ];
        assert!(b[..8 * 512].iter().all(|&x| x == 7));
        seen.push(results);
    }
    assert_eq!(seen[0], [Ok(()), Err(Errno::EIO), Err(Errno::EIO)]);
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn read_only_tables_refuse_writes_and_accept_flushes() {
    let Some(e) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ro");
    std::fs::write(&p, vec![3u8; 64 * 512]).unwrap();
    let r = DevRef::name("ro");
    e.create("ro", None, None).unwrap();
    e.load_text(&r, &format!("0 64 linear {} 0", p.display()), true)
        .unwrap();
    e.resume(&r, false).unwrap();
    let dev = e.device(&r).unwrap();
    assert_eq!(dev.write(0, &[1u8; 512], false), Err(Errno::EROFS));
    assert_eq!(dev.discard(0, 8), Err(Errno::EROFS));
    assert_eq!(dev.flush(), Ok(()));
    let mut b = [0u8; 512];
    dev.read(3, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 3));
}

#[test]
fn one_open_per_file_however_many_tables_use_it() {
    let Some(e) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = make_file(dir.path(), "a", 256);
    let b = make_file(dir.path(), "b", 256);
    // `a` reached by two devices and two names (a symlink): one pdev, one number.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    create(&e, "d1", &format!("0 128 linear {} 0", a.display()));
    create(
        &e,
        "d2",
        &format!(
            "0 64 linear {} 128\n64 64 linear {} 0",
            link.display(),
            b.display()
        ),
    );
    let (_, d1) = e.deps(&DevRef::name("d1"), false).unwrap();
    let (_, d2) = e.deps(&DevRef::name("d2"), false).unwrap();
    assert_eq!(d1.len(), 1);
    assert_eq!(d2.len(), 2);
    assert!(d2.contains(&d1[0]), "{d1:?} {d2:?}");
    // Tables print the file as it was resolved, not the symlink.
    let text = table_text(&e, "d2");
    assert!(
        text.contains(&format!("linear {} 128", a.display())),
        "{text}"
    );
}

/// Many threads, each with many bios in flight at once (submitted without
/// waiting), writing then reading distinct blocks through a striped device over
/// four files, with blocking reads and flushes from other threads meanwhile.
#[test]
fn many_submitters_with_many_bios_in_flight() {
    let Some(e) = uring() else { return };
    let dir = tempfile::tempdir().unwrap();
    const THREADS: u64 = 6;
    const PER_THREAD: u64 = 300;
    const BLOCK: u64 = 8; // sectors
    let len = THREADS * PER_THREAD * BLOCK;
    let files: Vec<PathBuf> = (0..4)
        .map(|i| make_file(dir.path(), &format!("s{i}"), len / 4))
        .collect();
    let table = format!(
        "0 {len} striped 4 8 {} 0 {} 0 {} 0 {} 0",
        files[0].display(),
        files[1].display(),
        files[2].display(),
        files[3].display()
    );
    let dev = create(&e, "many", &table);
    let block_of = |t: u64, k: u64| (k * THREADS + t) * BLOCK;
    let stamp = |t: u64, k: u64| {
        let mut b = pattern(BLOCK, t << 32 | k);
        b[..8].copy_from_slice(&(t << 32 | k).to_le_bytes());
        b
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let dev = dev.clone();
            std::thread::spawn(move || {
                let (tx, rx) = mpsc::channel();
                for k in 0..PER_THREAD {
                    let tx = tx.clone();
                    let mut bio = Bio::with_buffer(Op::Write, block_of(t, k), stamp(t, k), {
                        move |r, _| tx.send(r).unwrap()
                    });
                    bio.fua = k % 7 == 0;
                    dev.submit(bio);
                }
                drop(tx);
                let results: Vec<_> = rx.iter().collect();
                assert_eq!(results.len() as u64, PER_THREAD);
                assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
            })
        })
        .collect();
    let stop = Arc::new(AtomicUsize::new(0));
    let side = {
        let (dev, stop) = (dev.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut b = vec![0u8; 4096];
            let mut n = 0u64;
            while stop.load(Ordering::SeqCst) == 0 {
                dev.read((n * 61) % (len - 8), &mut b).unwrap();
                if n % 16 == 0 {
                    dev.flush().unwrap();
                }
                n += 1;
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    let readers: Vec<_> = (0..THREADS)
        .map(|t| {
            let dev = dev.clone();
            std::thread::spawn(move || {
                let (tx, rx) = mpsc::channel();
                for k in 0..PER_THREAD {
                    let tx = tx.clone();
                    let buf = vec![0u8; (BLOCK * 512) as usize];
                    let bio = Bio::with_buffer(Op::Read, block_of(t, k), buf, move |r, b| {
                        tx.send((k, r, b)).unwrap()
                    });
                    dev.submit(bio);
                }
                drop(tx);
                let mut n = 0;
                for (k, r, b) in rx.iter() {
                    assert_eq!(r, Ok(()));
                    assert!(b == stamp(t, k), "thread {t} block {k}");
                    n += 1;
                }
                assert_eq!(n, PER_THREAD);
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    stop.store(1, Ordering::SeqCst);
    side.join().unwrap();
    // And in the files, where striping puts each block (chunk = one block).
    for t in 0..THREADS {
        for k in (0..PER_THREAD).step_by(13) {
            let chunk = block_of(t, k) / BLOCK;
            let got = read_file(&files[(chunk % 4) as usize], (chunk / 4) * BLOCK, BLOCK);
            assert!(got == stamp(t, k), "file: thread {t} block {k}");
        }
    }
}

/// O_DIRECT wants aligned memory: windows that are not go through the request's
/// own aligned buffer.
#[test]
fn direct_io_with_unaligned_buffers() {
    let e = engine_with(IoEngine::Uring, true);
    if e.io_engine() != IoEngine::Uring {
        eprintln!("io_uring unavailable here: nothing to test");
        return;
    }
    // tmpfs has no O_DIRECT: a directory on the target's filesystem.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = make_file(dir.path(), "d", 2048);
    let r = DevRef::name("d");
    e.create("d", None, None).unwrap();
    if let Err(err) = e.load_text(&r, &format!("0 2048 linear {} 0", p.display()), false) {
        assert_eq!(err.errno(), Errno::EINVAL, "{err}");
        eprintln!("no O_DIRECT on {}: nothing to test", dir.path().display());
        return;
    }
    e.resume(&r, false).unwrap();
    let dev = e.device(&r).unwrap();
    let data = pattern(24, 3);
    // One byte into a Vec is never 4 KiB aligned; sector 1 is not either.
    let mut mem = vec![0u8; data.len() + 1];
    mem[1..].copy_from_slice(&data);
    dev.write(1, &mem[1..], true).unwrap();
    dev.write(64, &data, false).unwrap();
    let mut back = vec![0u8; data.len() + 3];
    dev.read(1, &mut back[3..]).unwrap();
    assert!(back[3..] == data[..]);
    dev.read(64, &mut back[3..]).unwrap();
    assert!(back[3..] == data[..]);
    dev.write_zeroes(64, 8, false, true).unwrap();
    assert!(read_file(&p, 64, 8).iter().all(|&b| b == 0));
    assert!(read_file(&p, 1, 24) == data);
}

/// Counts the warnings emitted on the thread it is the default for.
struct Warnings(Arc<AtomicUsize>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, ev: &tracing::Event<'_>) {
        if *ev.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn without_io_uring_the_engine_falls_back_to_sync_with_one_warning() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let e = tracing::subscriber::with_default(Warnings(warnings.clone()), || {
        // As on a kernel without io_uring (or with it disabled, or filtered).
        udm_core::uring::fail_next_setup_on_this_thread();
        let e = engine_with(IoEngine::Uring, false);
        let dir = tempfile::tempdir().unwrap();
        let a = make_file(dir.path(), "a", 64);
        let dev = create(&e, "fb", &format!("0 64 linear {} 0", a.display()));
        dev.write(3, &[4u8; 1024], true).unwrap();
        let mut b = [0u8; 1024];
        dev.read(3, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 4));
        assert!(read_file(&a, 3, 2).iter().all(|&x| x == 4));
        e
    });
    assert_eq!(e.io_engine(), IoEngine::Sync);
    assert_eq!(e.config().io_engine, IoEngine::Uring);
    assert_eq!(warnings.load(Ordering::SeqCst), 1);
    // The hook is spent: the next engine gets its rings (where the kernel has them).
    if let Some(e) = uring() {
        assert_eq!(e.io_engine(), IoEngine::Uring);
    }
}

//! Regression tests for the engine points of issue #11: device cycles (1), self-maps
//! through the mapper directory (2), DEV_WAIT across a removal (13), short reads and
//! write-zeroes errors (17), and namespace operations racing each other (18).

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use udm_core::{DevRef, Engine, EngineConfig, Errno, RenameTo};

fn engine() -> Engine {
    Engine::new(udm_targets::registry(), EngineConfig::default())
}

fn make_file(dir: &Path, name: &str, sectors: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(sectors * 512)
        .unwrap();
    p
}

/// Create `name` with a live `zero` table of `sectors`.
fn zero_dev(e: &Engine, name: &str, sectors: u64) -> String {
    let info = e.create(name, None, None).unwrap();
    let r = DevRef::name(name);
    e.load_text(&r, &format!("0 {sectors} zero"), false)
        .unwrap();
    e.resume(&r, false).unwrap();
    info.dev.to_string()
}

/// Run `f` on a thread and fail if it has not finished within `secs`.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs} s"),
    }
}

/// A table of `lines` one-sector linear lines onto `dev`.
fn linear_lines(dev: &str, lines: u64) -> String {
    (0..lines)
        .map(|i| format!("{i} 1 linear {dev} {i}\n"))
        .collect()
}

// ---- #11.1: device cycles ----

#[test]
fn racing_loads_never_create_a_cycle() {
    let e = engine();
    const LINES: u64 = 2000;
    let a = zero_dev(&e, "a", LINES);
    let b = zero_dev(&e, "b", LINES);
    let (ta, tb) = (linear_lines(&b, LINES), linear_lines(&a, LINES));
    for round in 0..100 {
        let barrier = Arc::new(Barrier::new(2));
        let spawn = |name: &'static str, text: String| {
            let (e, barrier) = (e.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                e.load_text(&DevRef::name(name), &text, false)
            })
        };
        let ja = spawn("a", ta.clone());
        let jb = spawn("b", tb.clone());
        let (ra, rb) = (ja.join().unwrap(), jb.join().unwrap());
        assert!(
            !(ra.is_ok() && rb.is_ok()),
            "round {round}: both loads accepted: a onto b and b onto a form a cycle"
        );
        for r in [ra, rb].into_iter().filter_map(|r| r.err()) {
            assert_eq!(r.errno(), Errno::EINVAL, "{r}");
            assert!(r.to_string().contains("cycle"), "{r}");
        }
        e.clear(&DevRef::name("a")).unwrap();
        e.clear(&DevRef::name("b")).unwrap();
    }
    e.remove(&DevRef::name("a"), false).unwrap();
    e.remove(&DevRef::name("b"), false).unwrap();
}

#[test]
fn sequential_cycle_is_refused_and_leaves_tables_unchanged() {
    let e = engine();
    let a = zero_dev(&e, "a", 8);
    let b = zero_dev(&e, "b", 8);
    e.load_text(&DevRef::name("a"), &format!("0 8 linear {b} 0"), false)
        .unwrap();
    let err = e
        .load_text(&DevRef::name("b"), &format!("0 8 linear {a} 0"), false)
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EINVAL, "{err}");
    assert!(!e.info(&DevRef::name("b"), false).unwrap().inactive_present);
    // A staged (not yet live) table counts too, and so does a longer loop.
    let c = zero_dev(&e, "c", 8);
    e.load_text(&DevRef::name("b"), &format!("0 8 linear {c} 0"), false)
        .unwrap();
    let err = e
        .load_text(&DevRef::name("c"), &format!("0 8 linear {a} 0"), false)
        .unwrap_err();
    assert_eq!(err.errno(), Errno::EINVAL, "{err}");
}

#[test]
fn diamond_stack_of_26_layers_loads_quickly() {
    let e = engine();
    within(60, "loading a 26-layer diamond stack", move || {
        let mut below = [zero_dev(&e, "l0x", 8), zero_dev(&e, "l0y", 8)];
        for layer in 1..=26 {
            let mut next = Vec::new();
            for side in ["x", "y"] {
                let name = format!("l{layer}{side}");
                let info = e.create(&name, None, None).unwrap();
                let r = DevRef::name(&name);
                let t = format!("0 4 linear {} 0\n4 4 linear {} 4", below[0], below[1]);
                e.load_text(&r, &t, false).unwrap();
                e.resume(&r, false).unwrap();
                next.push(info.dev.to_string());
            }
            below = [next[0].clone(), next[1].clone()];
        }
    });
}

#[test]
fn chain_of_66_devices_is_not_a_cycle() {
    let e = engine();
    within(60, "loading a 66-deep chain", move || {
        let mut below = zero_dev(&e, "c0", 8);
        for i in 1..=66 {
            let name = format!("c{i}");
            let info = e.create(&name, None, None).unwrap();
            let r = DevRef::name(&name);
            if let Err(err) = e.load_text(&r, &format!("0 8 linear {below} 0"), false) {
                panic!("layer {i}: {err}");
            }
            e.resume(&r, false).unwrap();
            below = info.dev.to_string();
        }
        let top = e.device(&DevRef::name("c66")).unwrap();
        let mut buf = vec![1u8; 4096];
        top.read(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    });
}

// ---- #11.2: self-map through the mapper directory ----

#[test]
fn self_map_through_mapper_symlink_or_dotdot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A plain directory standing in for the mapper mount: `self` is the device's file.
    let mapper = dir.path().join("mapper");
    std::fs::create_dir(&mapper).unwrap();
    make_file(&mapper, "self", 8);
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(mapper.join("self"), &link).unwrap();
    let e = Engine::new(
        udm_targets::registry(),
        EngineConfig {
            mapper_dir: Some(mapper.clone()),
            ..EngineConfig::default()
        },
    );
    zero_dev(&e, "self", 8);
    let r = DevRef::name("self");
    let dotdot = mapper.join("../mapper/self");
    let via_link_dir = dir.path().join("mlink");
    std::os::unix::fs::symlink(&mapper, &via_link_dir).unwrap();
    for spec in [link, dotdot, via_link_dir.join("self")] {
        let err = e
            .load_text(&r, &format!("0 8 linear {} 0", spec.display()), false)
            .unwrap_err();
        assert_eq!(err.errno(), Errno::EINVAL, "{}: {err}", spec.display());
        assert!(err.to_string().contains("onto itself"), "{err}");
        let info = e.info(&r, false).unwrap();
        assert!(
            !info.inactive_present,
            "{}: a table was staged",
            spec.display()
        );
        let (_, st) = e.status(&r, false, udm_core::StatusType::Table).unwrap();
        assert_eq!(st[0].target_type, "zero");
    }
    // Through the mapper file, another device is a stacked device, not a file.
    zero_dev(&e, "other", 8);
    make_file(&mapper, "other", 8);
    let spec = mapper.join("../mapper/other");
    e.load_text(&r, &format!("0 8 linear {} 0", spec.display()), false)
        .unwrap();
    let (_, deps) = e.deps(&r, true).unwrap();
    assert_eq!(
        deps,
        vec![e.info(&DevRef::name("other"), false).unwrap().dev]
    );
}

// ---- #11.13: DEV_WAIT across a removal ----

#[test]
fn wait_on_a_device_that_is_removed_returns_ok() {
    let e = engine();
    zero_dev(&e, "w", 8);
    let r = DevRef::name("w");
    let dev = e.device(&r).unwrap();
    let nr = dev.event_nr();
    let waiter = std::thread::spawn(move || dev.wait_event(nr, Some(Duration::from_secs(30))));
    e.remove(&r, false).unwrap();
    let got = waiter.join().unwrap();
    assert!(got.is_ok(), "wait across a removal: {got:?}");
}

// ---- #11.17: short reads, write-zeroes errors ----

#[test]
fn short_read_of_truncated_file_is_eio() {
    let dir = tempfile::tempdir().unwrap();
    let f = make_file(dir.path(), "f", 2048);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .write_all_at(&[7u8; 512], 1500 * 512)
        .unwrap();
    let e = engine();
    e.create("t", None, None).unwrap();
    let r = DevRef::name("t");
    e.load_text(&r, &format!("0 2048 linear {} 0", f.display()), false)
        .unwrap();
    e.resume(&r, false).unwrap();
    let dev = e.device(&r).unwrap();
    let mut buf = vec![0u8; 4096];
    dev.read(1500, &mut buf).unwrap();
    assert_eq!(buf[0], 7);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(1024 * 512)
        .unwrap();
    assert_eq!(dev.read(1500, &mut buf), Err(Errno::EIO));
    // A read that starts inside and ends past the new end fails too.
    assert_eq!(dev.read(1020, &mut buf), Err(Errno::EIO));
    dev.read(0, &mut buf).unwrap();
}

// ---- #11.18: namespace operations racing ----

#[test]
fn concurrent_loads_give_distinct_file_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine();
    const THREADS: usize = 8;
    for t in 0..THREADS {
        e.create(&format!("f{t}"), None, None).unwrap();
    }
    for round in 0..20 {
        let files: Vec<PathBuf> = (0..THREADS)
            .map(|t| make_file(dir.path(), &format!("r{round}t{t}"), 8))
            .collect();
        let barrier = Arc::new(Barrier::new(THREADS));
        let joins: Vec<_> = files
            .into_iter()
            .enumerate()
            .map(|(t, f)| {
                let (e, barrier) = (e.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let r = DevRef::name(&format!("f{t}"));
                    e.load_text(&r, &format!("0 8 linear {} 0", f.display()), false)
                        .unwrap();
                    e.deps(&r, true).unwrap().1
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for j in joins {
            for d in j.join().unwrap() {
                assert!(seen.insert(d), "round {round}: two files listed as {d}");
            }
        }
    }
}

/// The namespace invariants, checked while no operation runs.
fn check_namespace(e: &Engine, created: u64, removed: u64, when: &str) {
    let list = e.list();
    let mut ptrs = HashSet::new();
    for d in &list {
        assert!(
            ptrs.insert(Arc::as_ptr(d) as usize),
            "{when}: device {} listed twice",
            d.name()
        );
        if d.name().starts_with("bg") {
            continue;
        }
        let found = match e.device(&DevRef::name(&d.name())) {
            Ok(f) => f,
            Err(err) => panic!(
                "{when}: {} ({}) is listed but not found by its name: {err}; listed: {:?}",
                d.name(),
                d.dev_number(),
                list.iter()
                    .filter(|d| !d.name().starts_with("bg"))
                    .map(|d| (d.name(), d.dev_number().to_string(), d.is_removed()))
                    .collect::<Vec<_>>()
            ),
        };
        assert!(
            Arc::ptr_eq(&found, d),
            "{when}: {} is listed under another name",
            d.name()
        );
        assert!(
            !d.is_removed(),
            "{when}: {} is listed but removed",
            d.name()
        );
        let info = d.info(false);
        assert!(
            !(info.deferred_remove && info.open_count == 0),
            "{when}: {}: deferred removal lost at last close",
            d.name()
        );
    }
    assert_eq!(
        created - removed,
        list.len() as u64,
        "{when}: {created} creates and {removed} removals but {} devices listed",
        list.len()
    );
}

#[test]
fn namespace_stress_keeps_invariants() {
    let dir = tempfile::tempdir().unwrap();
    let files: Arc<Vec<PathBuf>> = Arc::new(
        (0..4)
            .map(|i| make_file(dir.path(), &format!("s{i}"), 16))
            .collect(),
    );
    let e = engine();
    let created = Arc::new(AtomicU64::new(0));
    let removed = Arc::new(AtomicU64::new(0));
    {
        let (c, r) = (created.clone(), removed.clone());
        e.subscribe(move |ev| match ev {
            udm_core::engine::EngineEvent::Created { .. } => {
                c.fetch_add(1, Ordering::SeqCst);
            }
            udm_core::engine::EngineEvent::Removed { .. } => {
                r.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        });
    }
    // Many idle devices with uuids make every uuid check a long walk under the
    // namespace lock, so the racing operations queue on it together.
    for i in 0..3000 {
        e.create(&format!("bg{i}"), Some(&format!("bg-uuid-{i}")), None)
            .unwrap();
    }
    const NAMES: [&str; 2] = ["n0", "n1"];
    const THREADS: usize = 6;
    const ROUNDS: u64 = 3000;
    // Each round every thread runs one operation, all released at once; between
    // rounds the invariants are checked with nothing running.
    let start = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (e, files, start, done) = (e.clone(), files.clone(), start.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seed =
                    0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1).wrapping_mul(0x1234_5678_9abc);
                let mut rnd = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                let mut handles = Vec::new();
                for _ in 0..ROUNDS {
                    let x = rnd();
                    start.wait();
                    let name = NAMES[(x % 2) as usize];
                    let r = DevRef::name(name);
                    match (x >> 8) % 8 {
                        0 => {
                            let _ = e.create(name, Some(&format!("u{t}-{x}")), None);
                        }
                        1 | 2 => {
                            let _ = e.remove(&r, false);
                        }
                        3 => {
                            let _ = e.remove(&r, true);
                        }
                        4 => {
                            let to = NAMES[((x >> 16) % 2) as usize];
                            let _ = e.rename(name, &RenameTo::Name(to.to_string()));
                        }
                        5 => {
                            let f = &files[((x >> 16) % 4) as usize];
                            let _ =
                                e.load_text(&r, &format!("0 8 linear {} 0", f.display()), false);
                        }
                        6 => {
                            if let Ok(h) = e.open(&r) {
                                handles.push(h);
                            }
                        }
                        _ => {
                            handles.clear();
                        }
                    }
                    done.wait();
                }
                // Keep the handles until the last round has been checked.
                start.wait();
                drop(handles);
            })
        })
        .collect();
    for round in 0..ROUNDS {
        start.wait();
        done.wait();
        check_namespace(
            &e,
            created.load(Ordering::SeqCst),
            removed.load(Ordering::SeqCst),
            &format!("round {round}"),
        );
    }
    start.wait();
    for w in workers {
        w.join().unwrap();
    }
    check_namespace(
        &e,
        created.load(Ordering::SeqCst),
        removed.load(Ordering::SeqCst),
        "at the end",
    );
    for d in e.list() {
        e.remove(&DevRef::name(&d.name()), false).unwrap();
    }
    // No device was orphaned (unlisted but holding its minor).
    for m in 0..16 {
        let name = format!("probe{m}");
        if let Err(err) = e.create(&name, None, Some(m)) {
            panic!("minor {m} is still held after every device was removed: {err}");
        }
    }
}

//! Write-zeroes that must be fast (NBD's FAST_ZERO, issue #11.17): refused with
//! EOPNOTSUPP, changing nothing, when it would fall back to writing zeros.

use std::os::unix::fs::FileExt;

use udm_core::{DevRef, Engine, EngineConfig, Errno};

#[test]
fn fast_only_write_zeroes_refuses_when_it_would_write() {
    // tmpfs has PUNCH_HOLE but no ZERO_RANGE: keeping the allocation (no unmap)
    // would need written zeros, which is not fast.
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        panic!("/dev/shm is needed for this test");
    };
    let f = dir.path().join("z");
    std::fs::File::create(&f)
        .unwrap()
        .set_len(64 * 512)
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .write_all_at(&[9u8; 64 * 512], 0)
        .unwrap();
    let e = Engine::new(udm_targets::registry(), EngineConfig::default());
    e.create("z", None, None).unwrap();
    let r = DevRef::name("z");
    e.load_text(&r, &format!("0 64 linear {} 0", f.display()), false)
        .unwrap();
    e.resume(&r, false).unwrap();
    let dev = e.device(&r).unwrap();
    assert_eq!(
        dev.write_zeroes_fast_only(0, 8, false, false),
        Err(Errno::EOPNOTSUPP)
    );
    let mut buf = vec![0u8; 4096];
    dev.read(0, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&b| b == 9),
        "a refused fast zero changed data"
    );
    // Punching a hole is fast on tmpfs; the slow path still works.
    dev.write_zeroes_fast_only(0, 8, true, false).unwrap();
    dev.write_zeroes(8, 8, false, false).unwrap();
    dev.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    dev.read(8, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    // zero targets complete at once.
    e.create("zz", None, None).unwrap();
    e.load_text(&DevRef::name("zz"), "0 8 zero", false).unwrap();
    e.resume(&DevRef::name("zz"), false).unwrap();
    let zz = e.device(&DevRef::name("zz")).unwrap();
    zz.write_zeroes_fast_only(0, 8, false, false).unwrap();
}

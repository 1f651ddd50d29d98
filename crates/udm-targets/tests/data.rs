//! Data lands where the mapping arithmetic says: written through a device, read
//! back from the underlying files directly.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use udm_core::{DevRef, Engine, EngineConfig, Errno};

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

fn check_striped(chunk: u64, io_sectors: u64) {
    let dir = tempfile::tempdir().unwrap();
    let offs = [0u64, 64, 8];
    let width = chunk * 40;
    let files: Vec<PathBuf> = (0..3)
        .map(|i| make_file(dir.path(), &format!("s{i}"), width + 128))
        .collect();
    let len = width * 3;
    let e = engine();
    e.create("st", None, None).unwrap();
    let table = format!(
        "0 {len} striped 3 {chunk} {} {} {} {} {} {}",
        files[0].display(),
        offs[0],
        files[1].display(),
        offs[1],
        files[2].display(),
        offs[2]
    );
    e.load_text(&DevRef::name("st"), &table, false).unwrap();
    e.resume(&DevRef::name("st"), false).unwrap();
    let dev = e.device(&DevRef::name("st")).unwrap();
    assert_eq!(dev.size_sectors(), len);
    let data = pattern(len, chunk);
    // Write in pieces that straddle chunk boundaries.
    let mut s = 0;
    while s < len {
        let n = io_sectors.min(len - s);
        dev.write(
            s,
            &data[(s * 512) as usize..((s + n) * 512) as usize],
            false,
        )
        .unwrap();
        s += n;
    }
    // Each device sector must sit where the striping arithmetic puts it.
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
    // Space outside the stripes' ranges is untouched.
    assert!(read_file(&files[1], 0, 64).iter().all(|&b| b == 0));
    let mut back = vec![0u8; data.len()];
    dev.read(0, &mut back).unwrap();
    assert!(back == data, "read back through the device differs");
}

#[test]
fn striped_three_files_power_of_two_chunk() {
    check_striped(8, 37);
}

#[test]
fn striped_three_files_odd_chunk() {
    check_striped(24, 50);
}

#[test]
fn linear_with_offsets_over_two_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_file(dir.path(), "a", 4096);
    let b = make_file(dir.path(), "b", 4096);
    let e = engine();
    e.create("lin", None, None).unwrap();
    let t = format!(
        "0 1000 linear {a} 100\n1000 500 linear {b} 3000\n1500 24 linear {a} 2000\n",
        a = a.display(),
        b = b.display()
    );
    e.load_text(&DevRef::name("lin"), &t, false).unwrap();
    e.resume(&DevRef::name("lin"), false).unwrap();
    let dev = e.device(&DevRef::name("lin")).unwrap();
    let data = pattern(1524, 7);
    dev.write(0, &data, false).unwrap();
    let chunk = |s: u64, n: u64| &data[(s * 512) as usize..((s + n) * 512) as usize];
    assert_eq!(&read_file(&a, 100, 1000)[..], chunk(0, 1000));
    assert_eq!(&read_file(&b, 3000, 500)[..], chunk(1000, 500));
    assert_eq!(&read_file(&a, 2000, 24)[..], chunk(1500, 24));
    assert!(read_file(&a, 0, 100).iter().all(|&x| x == 0));
    // Unaligned byte I/O goes through read-modify-write.
    dev.write_bytes(999 * 512 + 300, &[0xaa; 600], false)
        .unwrap();
    let mut got = vec![0u8; 600];
    dev.read_bytes(999 * 512 + 300, &mut got).unwrap();
    assert!(got.iter().all(|&x| x == 0xaa));
    assert_eq!(&read_file(&a, 1099, 1)[300..], &[0xaa; 212][..]);
    assert_eq!(&read_file(&b, 3000, 1)[..388], &[0xaa; 388][..]);
    assert_eq!(&read_file(&b, 3000, 1)[388..], &chunk(1000, 1)[388..]);
}

#[test]
fn zero_reads_zeros_and_error_fails_with_eio() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_file(dir.path(), "a", 1024);
    std::fs::write(&a, vec![0x5a; 1024 * 512]).unwrap();
    let e = engine();
    e.create("mix", None, None).unwrap();
    let t = format!(
        "0 100 zero\n100 100 error\n200 100 linear {} 0\n",
        a.display()
    );
    e.load_text(&DevRef::name("mix"), &t, false).unwrap();
    e.resume(&DevRef::name("mix"), false).unwrap();
    let dev = e.device(&DevRef::name("mix")).unwrap();
    let mut b = vec![0xffu8; 100 * 512];
    dev.read(0, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    // Writes to zero are dropped: still zeros afterwards.
    dev.write(10, &[1u8; 512], false).unwrap();
    dev.read(10, &mut b[..512]).unwrap();
    assert!(b[..512].iter().all(|&x| x == 0));
    let mut one = [0u8; 512];
    assert_eq!(dev.read(150, &mut one), Err(Errno::EIO));
    assert_eq!(dev.write(150, &one, false), Err(Errno::EIO));
    assert_eq!(dev.discard(100, 8), Err(Errno::EIO));
    // Flushes are not sent to error targets (as in the kernel): the flush succeeds.
    assert_eq!(dev.flush(), Ok(()));
    // A read spanning zero and error fails as a whole.
    let mut two = vec![0u8; 1024];
    assert_eq!(dev.read(99, &mut two), Err(Errno::EIO));
    dev.read(200, &mut one).unwrap();
    assert!(one.iter().all(|&x| x == 0x5a));
    // Beyond the end is refused.
    assert_eq!(dev.read(300, &mut one), Err(Errno::EINVAL));
}

#[test]
fn stacked_devices_pass_data_through() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_file(dir.path(), "a", 2048);
    let e = engine();
    e.create("low", None, None).unwrap();
    e.load_text(
        &DevRef::name("low"),
        &format!("0 2048 linear {} 0", a.display()),
        false,
    )
    .unwrap();
    e.resume(&DevRef::name("low"), false).unwrap();
    e.create("high", None, None).unwrap();
    e.load_text(&DevRef::name("high"), "0 1024 linear 253:0 1024", false)
        .unwrap();
    e.resume(&DevRef::name("high"), false).unwrap();
    let hi = e.device(&DevRef::name("high")).unwrap();
    hi.write(5, &[9u8; 512], false).unwrap();
    assert!(read_file(&a, 1029, 1).iter().all(|&x| x == 9));
    assert_eq!(e.info(&DevRef::name("low"), false).unwrap().open_count, 1);
    let (_, deps) = e.deps(&DevRef::name("high"), false).unwrap();
    assert_eq!(deps, vec![udm_core::DevNumber::new(253, 0)]);
}

#[test]
fn removing_a_suspended_device_releases_held_io() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_file(dir.path(), "a", 64);
    let e = engine();
    e.create("s", None, None).unwrap();
    e.load_text(
        &DevRef::name("s"),
        &format!("0 64 linear {} 0", a.display()),
        false,
    )
    .unwrap();
    e.resume(&DevRef::name("s"), false).unwrap();
    let dev = e.device(&DevRef::name("s")).unwrap();
    e.suspend(&DevRef::name("s"), false).unwrap();
    let d2 = dev.clone();
    let held = std::thread::spawn(move || {
        let mut b = [0u8; 512];
        d2.read(0, &mut b)
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !held.is_finished(),
        "a read completed on a suspended device"
    );
    e.remove(&DevRef::name("s"), false).unwrap();
    assert_eq!(held.join().unwrap(), Err(Errno::ESHUTDOWN));
    let mut b = [0u8; 512];
    assert_eq!(dev.read(0, &mut b), Err(Errno::ESHUTDOWN));
}

//! The mapper directory as a user sees it with std::fs: file I/O at odd offsets against the
//! RAM content, devices coming, going and being renamed, fsync, fallocate, lseek, and
//! unmounting (busy, and after a crashed run).

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{fuse_available, is_mount_point, wait_until, Rng};
use udm_fuse::ram::{RamFile, RamSource, DISCARD_FILL};
use udm_fuse::{mount, FuseError, MapperMount, MountOptions};

const ALPHA_SIZE: usize = (1 << 20) + 4099;
const BETA_SIZE: usize = 64 << 10;

struct Fixture {
    _dir: tempfile::TempDir,
    source: Arc<RamSource>,
    alpha: Arc<RamFile>,
    alpha_id: u64,
    beta: Arc<RamFile>,
    beta_id: u64,
    mnt: Option<MapperMount>,
}

impl Fixture {
    fn new() -> Self {
        let mut rng = Rng::new(7);
        let source = Arc::new(RamSource::new());
        let alpha = Arc::new(RamFile::new(ALPHA_SIZE, false));
        alpha.fill(0, &rng.bytes(ALPHA_SIZE));
        let beta = Arc::new(RamFile::new(BETA_SIZE, true));
        beta.fill(0, &rng.bytes(BETA_SIZE));
        let alpha_id = source.add("alpha", alpha.clone());
        let beta_id = source.add("beta", beta.clone());
        let dir = tempfile::tempdir().unwrap();
        let mnt = mount(dir.path(), source.clone(), MountOptions::default()).unwrap();
        Fixture {
            _dir: dir,
            source,
            alpha,
            alpha_id,
            beta,
            beta_id,
            mnt: Some(mnt),
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.mnt.as_ref().unwrap().path().join(name)
    }

    fn open_rw(&self, name: &str) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(name))
            .unwrap()
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.mnt.as_ref().unwrap().path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error").raw_os_error().unwrap()
}

#[test]
fn reads_and_writes_at_unaligned_offsets_match_ram() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new();
    let mut model = fx.alpha.snapshot();

    // Attributes: size, mode, owner.
    let meta = fs::metadata(fx.path("alpha")).unwrap();
    assert_eq!(meta.len(), ALPHA_SIZE as u64);
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert!(meta.is_file());
    // SAFETY: geteuid cannot fail.
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    let beta_meta = fs::metadata(fx.path("beta")).unwrap();
    assert_eq!(beta_meta.mode() & 0o7777, 0o400);
    assert_eq!(beta_meta.len(), BETA_SIZE as u64);

    // Whole-file and unaligned reads.
    assert_eq!(fs::read(fx.path("alpha")).unwrap(), model);
    assert_eq!(fs::read(fx.path("beta")).unwrap(), fx.beta.snapshot());
    let f = fx.open_rw("alpha");
    for (off, len) in [
        (12345usize, 70001usize),
        (1, 1),
        (511, 513),
        (ALPHA_SIZE - 100, 100),
    ] {
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert_eq!(buf, model[off..off + len], "read at {off}+{len}");
    }
    // Reads at and across the end are short, as at EOF.
    let mut buf = vec![0; 100];
    assert_eq!(f.read_at(&mut buf, (ALPHA_SIZE - 10) as u64).unwrap(), 10);
    assert_eq!(buf[..10], model[ALPHA_SIZE - 10..]);
    assert_eq!(f.read_at(&mut buf, ALPHA_SIZE as u64).unwrap(), 0);

    // Unaligned writes, one larger than max_write, land in RAM.
    let mut rng = Rng::new(99);
    for (off, len) in [
        (4097usize, 33333usize),
        (3, 1),
        (ALPHA_SIZE - 7, 7),
        (65536 + 1, 3 << 20),
    ] {
        let len = len.min(ALPHA_SIZE - off);
        let data = rng.bytes(len);
        f.write_all_at(&data, off as u64).unwrap();
        model[off..off + len].copy_from_slice(&data);
        assert_eq!(fx.alpha.snapshot(), model, "after write at {off}+{len}");
    }
    // Writes at the end fail, across it are short.
    assert_eq!(errno_of(f.write_at(b"x", ALPHA_SIZE as u64)), libc::ENOSPC);
    assert_eq!(f.write_at(&[9; 10], (ALPHA_SIZE - 3) as u64).unwrap(), 3);
    model[ALPHA_SIZE - 3..].fill(9);
    assert_eq!(fx.alpha.snapshot(), model);
    // The RAM is read back through the file after a change underneath (no stale cache).
    fx.alpha.fill(100, b"underneath");
    let mut buf = [0u8; 10];
    f.read_exact_at(&mut buf, 100).unwrap();
    assert_eq!(&buf, b"underneath");

    // fsync and fdatasync reach flush.
    let flushes = fx.alpha.counters.flushes.load(Ordering::SeqCst);
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    assert_eq!(
        fx.alpha.counters.flushes.load(Ordering::SeqCst),
        flushes + 2
    );

    // A read-only device cannot be opened for writing (EACCES for non-root).
    let e = errno_of(OpenOptions::new().write(true).open(fx.path("beta")));
    assert!(e == libc::EROFS || e == libc::EACCES, "errno {e}");

    // Truncation is refused; O_TRUNC is ignored, as on a block device.
    assert_eq!(errno_of(f.set_len(10)), libc::EPERM);
    f.set_len(ALPHA_SIZE as u64).unwrap();
    drop(
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(fx.path("alpha"))
            .unwrap(),
    );
    assert_eq!(
        fs::metadata(fx.path("alpha")).unwrap().len(),
        ALPHA_SIZE as u64
    );
    assert_eq!(fx.alpha.snapshot(), {
        model[100..110].copy_from_slice(b"underneath");
        model
    });

    // Every FUSE open is released (RELEASE is asynchronous to close).
    drop(f);
    let c = &fx.alpha.counters;
    assert!(wait_until(5, || c.opens.load(Ordering::SeqCst)
        == c.releases.load(Ordering::SeqCst)));
    assert!(c.opens.load(Ordering::SeqCst) >= 3);
}

#[test]
fn devices_appear_disappear_and_renames_show() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new();
    assert_eq!(fx.names(), ["alpha", "beta"]);

    let gamma = Arc::new(RamFile::new(4096, false));
    gamma.fill(0, b"gamma!");
    let gamma_id = fx.source.add("gamma", gamma);
    assert_eq!(fx.names(), ["alpha", "beta", "gamma"]);
    assert_eq!(&fs::read(fx.path("gamma")).unwrap()[..6], b"gamma!");
    let ino = fs::metadata(fx.path("gamma")).unwrap().ino();
    assert_eq!(ino, gamma_id + 2);

    fx.source.remove(fx.alpha_id).unwrap();
    assert_eq!(fx.names(), ["beta", "gamma"]);
    assert_eq!(errno_of(fs::metadata(fx.path("alpha"))), libc::ENOENT);

    assert!(fx.source.rename(fx.beta_id, "delta"));
    assert_eq!(fx.names(), ["delta", "gamma"]);
    assert_eq!(errno_of(fs::metadata(fx.path("beta"))), libc::ENOENT);
    assert_eq!(fs::read(fx.path("delta")).unwrap(), fx.beta.snapshot());
    assert_eq!(
        fs::metadata(fx.path("delta")).unwrap().ino(),
        fx.beta_id + 2
    );

    // Nothing else can be created in the directory.
    assert!(File::create(fx.path("new")).is_err());
    assert!(fs::create_dir(fx.path("sub")).is_err());
    assert!(fs::remove_file(fx.path("gamma")).is_err());
}

#[test]
fn io_on_a_removed_device_returns_its_errno() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new();
    let f = fx.open_rw("alpha");
    let mut buf = [0u8; 512];
    f.read_exact_at(&mut buf, 0).unwrap();
    fx.source.remove(fx.alpha_id).unwrap();
    assert_eq!(errno_of(f.read_exact_at(&mut buf, 0)), libc::ESHUTDOWN);
    assert_eq!(errno_of(f.write_at(&buf, 0)), libc::ESHUTDOWN);
    assert_eq!(errno_of(f.sync_all()), libc::ESHUTDOWN);
    assert_eq!(errno_of(fs::metadata(fx.path("alpha"))), libc::ENOENT);
    drop(f);
    let c = &fx.alpha.counters;
    assert!(wait_until(5, || c.releases.load(Ordering::SeqCst) == 1));
}

/// A libc return value as an io::Result.
fn check(rc: i64) -> std::io::Result<i64> {
    if rc >= 0 {
        Ok(rc)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn fallocate(f: &File, mode: i32, offset: i64, len: i64) -> std::io::Result<()> {
    // SAFETY: a valid fd; fallocate touches no memory of ours.
    check(unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, len) }.into()).map(drop)
}

fn lseek(f: &File, offset: i64, whence: i32) -> std::io::Result<i64> {
    // SAFETY: a valid fd; lseek touches no memory of ours.
    check(unsafe { libc::lseek(f.as_raw_fd(), offset, whence) })
}

#[test]
fn fallocate_and_seek_data_hole() {
    if !fuse_available() {
        return;
    }
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    let fx = Fixture::new();
    let f = fx.open_rw("alpha");
    let c = &fx.alpha.counters;
    let mut model = fx.alpha.snapshot();

    // This device's discard does not zero, so a punch must become write_zeroes.
    fallocate(&f, punch, 1000, 5000).unwrap();
    model[1000..6000].fill(0);
    assert_eq!(fx.alpha.snapshot(), model);
    assert_eq!(c.discards.load(Ordering::SeqCst), 0);
    assert_eq!(c.write_zeroes.load(Ordering::SeqCst), 1);

    fallocate(
        &f,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        8000,
        3000,
    )
    .unwrap();
    fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 20000, 10).unwrap();
    model[8000..11000].fill(0);
    model[20000..20010].fill(0);
    // A punch across the end stops at the end.
    fallocate(&f, punch, (ALPHA_SIZE - 10) as i64, 1 << 20).unwrap();
    model[ALPHA_SIZE - 10..].fill(0);
    assert_eq!(fx.alpha.snapshot(), model);
    assert_eq!(c.write_zeroes.load(Ordering::SeqCst), 4);

    // Allocation and unknown modes are not supported; growing is impossible.
    assert_eq!(errno_of(fallocate(&f, 0, 0, 4096)), libc::EOPNOTSUPP);
    assert_eq!(
        errno_of(fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096)),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno_of(fallocate(
            &f,
            libc::FALLOC_FL_ZERO_RANGE,
            (ALPHA_SIZE - 1) as i64,
            2
        )),
        libc::ENOSPC
    );

    // SEEK_DATA / SEEK_HOLE: all data, the hole at the end.
    assert_eq!(lseek(&f, 100, libc::SEEK_DATA).unwrap(), 100);
    assert_eq!(lseek(&f, 100, libc::SEEK_HOLE).unwrap(), ALPHA_SIZE as i64);
    assert_eq!(
        errno_of(lseek(&f, ALPHA_SIZE as i64, libc::SEEK_DATA)),
        libc::ENXIO
    );
    drop(f);

    // A device whose discard zeroes gets a real discard for a punch.
    let zeroing = Arc::new(RamFile::new(65536, false).with_zeroing_discard());
    zeroing.fill(0, &[7; 65536]);
    fx.source.add("zeroing", zeroing.clone());
    let z = OpenOptions::new()
        .write(true)
        .open(fx.path("zeroing"))
        .unwrap();
    fallocate(&z, punch, 4096, 8192).unwrap();
    assert_eq!(zeroing.counters.discards.load(Ordering::SeqCst), 1);
    assert_eq!(zeroing.counters.write_zeroes.load(Ordering::SeqCst), 0);
    let snap = zeroing.snapshot();
    assert!(snap[4096..12288].iter().all(|&b| b == 0));
    assert!(snap[..4096].iter().chain(&snap[12288..]).all(|&b| b == 7));
    assert_ne!(DISCARD_FILL, 0);
}

#[test]
fn parallel_writers_and_readers_see_their_own_data() {
    if !fuse_available() {
        return;
    }
    let fx = Fixture::new();
    let path = fx.path("alpha");
    let slice = ALPHA_SIZE / 8;
    std::thread::scope(|s| {
        for t in 0..8 {
            let path = &path;
            s.spawn(move || {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .unwrap();
                let mut rng = Rng::new(t as u64 + 1);
                let base = t * slice;
                for _ in 0..200 {
                    let len = 1 + rng.below(8192) as usize;
                    let off = base + rng.below((slice - len) as u64) as usize;
                    let data = rng.bytes(len);
                    f.write_all_at(&data, off as u64).unwrap();
                    let mut back = vec![0; len];
                    f.read_exact_at(&mut back, off as u64).unwrap();
                    assert_eq!(back, data, "thread {t} at {off}+{len}");
                }
            });
        }
    });
}

#[test]
fn allow_other_is_a_mount_option() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = MountOptions {
        allow_other: true,
        ..MountOptions::default()
    };
    let mnt = mount(dir.path(), Arc::new(RamSource::new()), opts).unwrap();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = mnt.path().to_string_lossy().into_owned();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .unwrap();
    assert!(line.contains("allow_other"), "{line}");
    assert!(line.contains("default_permissions"), "{line}");
    assert!(line.contains(" - fuse"), "{line}");
}

#[test]
fn busy_unmount_detaches_lazily_and_open_files_keep_working() {
    if !fuse_available() {
        return;
    }
    let mut fx = Fixture::new();
    let path = fx.mnt.as_ref().unwrap().path().to_path_buf();
    let f = File::open(fx.path("alpha")).unwrap();
    let err = fx.mnt.take().unwrap().unmount().unwrap_err();
    assert!(matches!(err, FuseError::Busy { .. }), "{err}");
    assert!(!is_mount_point(&path));
    let mut buf = vec![0; 4096];
    f.read_exact_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, fx.alpha.snapshot()[4096..8192]);
    drop(f);
    let c = &fx.alpha.counters;
    assert!(wait_until(5, || c.releases.load(Ordering::SeqCst)
        == c.opens.load(Ordering::SeqCst)));
}

#[test]
fn unmount_on_drop_and_remount() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = Arc::new(RamSource::new());
    source.add("d", Arc::new(RamFile::new(4096, false)));
    let path = {
        let mnt = mount(dir.path(), source.clone(), MountOptions::default()).unwrap();
        assert!(is_mount_point(mnt.path()));
        mnt.path().to_path_buf()
    };
    assert!(!is_mount_point(&path));
    let mnt = mount(dir.path(), source, MountOptions::default()).unwrap();
    assert!(path.join("d").exists());
    mnt.unmount().unwrap();
    assert!(!is_mount_point(&path));
    assert!(!path.join("d").exists());
    assert!(matches!(
        mount(
            &path.join("missing"),
            Arc::new(RamSource::new()),
            MountOptions::default()
        ),
        Err(FuseError::Io { .. })
    ));
    assert!(matches!(
        mount(
            &path,
            Arc::new(RamSource::new()),
            MountOptions {
                threads: 0,
                ..MountOptions::default()
            }
        ),
        Err(FuseError::InvalidOptions(_))
    ));
}

const CRASH_DIR_ENV: &str = "UDM_FUSE_CRASH_DIR";

/// Run in a child process by `a_dead_mount_from_a_crashed_run_is_cleared`: mount, then
/// exit without unmounting, leaving a dead FUSE mount behind.
#[test]
#[ignore = "helper, run by a_dead_mount_from_a_crashed_run_is_cleared"]
fn crash_helper_mount_and_exit() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let source = Arc::new(RamSource::new());
    source.add("d", Arc::new(RamFile::new(4096, false)));
    let mnt = mount(Path::new(&dir), source, MountOptions::default()).unwrap();
    std::mem::forget(mnt);
    std::process::exit(0);
}

#[test]
fn a_dead_mount_from_a_crashed_run_is_cleared() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_helper_mount_and_exit",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(errno_of(fs::metadata(dir.path())), libc::ENOTCONN);

    let source = Arc::new(RamSource::new());
    source.add("fresh", Arc::new(RamFile::new(4096, false)));
    let mnt = mount(dir.path(), source, MountOptions::default()).unwrap();
    let names: Vec<_> = fs::read_dir(mnt.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["fresh"]);
    let path = mnt.path().to_path_buf();
    mnt.unmount().unwrap();
    assert!(!is_mount_point(&path));
}

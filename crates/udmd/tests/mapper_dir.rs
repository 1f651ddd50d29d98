//! The FUSE mapper directory of a real udmd: a suspended device holds only its own I/O,
//! a restart after `kill -9` clears the dead mount, shutdown unmounts exactly once, a live
//! mapper directory is refused, and `ls -l` logs no warning.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bin, is_fuse_mount};

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

/// A udmd whose stderr goes to a log file; killed (SIGKILL) on drop if still running.
struct Udmd {
    child: Child,
    socket: PathBuf,
    mapper: PathBuf,
    log: PathBuf,
}

impl Udmd {
    fn spawn(socket: &Path, mapper: &Path, log: &Path) -> Udmd {
        let err = File::create(log).unwrap();
        let child = Command::new(bin("udmd"))
            .arg("--socket")
            .arg(socket)
            .arg("--mapper-dir")
            .arg(mapper)
            .args(["--log", "info"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Udmd {
            child,
            socket: socket.to_path_buf(),
            mapper: mapper.to_path_buf(),
            log: log.to_path_buf(),
        }
    }

    /// Spawns and waits until the control socket and the mapper mount are up.
    fn start(socket: &Path, mapper: &Path, log: &Path) -> Udmd {
        let mut d = Udmd::spawn(socket, mapper, log);
        let t0 = Instant::now();
        while !(socket.exists() && is_fuse_mount(mapper)) {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("udmd exited ({st}): {}", d.log_text());
            }
            assert!(t0.elapsed() < BOUND, "udmd did not start: {}", d.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn dm(&self, args: &[&str]) -> String {
        let o = Command::new(bin("udmsetup"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "udmsetup {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits (bounded) for the process to exit; returns its status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                t0.elapsed() < BOUND,
                "udmd did not exit: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) {
        // SAFETY: kill with the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.wait_exit();
        assert!(st.success(), "udmd exited {st}: {}", self.log_text());
    }
}

impl Drop for Udmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A mount left dead by the kill (ENOTCONN) is detached; a live one is not ours.
        let dead =
            fs::metadata(&self.mapper).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
        if dead {
            let _ = Command::new("umount").arg("-l").arg(&self.mapper).status();
        }
    }
}

/// Lazily unmounts whatever is left at `p` when a test ends (also on failure).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for _ in 0..4 {
            let o = Command::new("umount").arg("-l").arg(&self.0).output();
            if !o.is_ok_and(|o| o.status.success()) {
                break;
            }
        }
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The syscall a thread of this process is in (`/proc/self/task/TID/syscall`).
fn in_syscall(tid: i32) -> Option<i64> {
    let s = fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// #11.3: readers held by a suspended `fa`, more of them than the mount has FUSE
/// threads, must not stop `ls`, `stat` and reads of `fb`; on resume the held reads complete.
#[test]
fn a_suspended_device_does_not_block_the_mapper_directory() {
    if !fuse_required() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mapper = tmp.path().join("mapper");
    let d = Udmd::start(
        &tmp.path().join("control"),
        &mapper,
        &tmp.path().join("log"),
    );
    const LEN: usize = 1 << 20;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::write(&a, pattern(1, LEN)).unwrap();
    fs::write(&b, pattern(2, LEN)).unwrap();
    let sectors = (LEN / 512).to_string();
    for (name, file) in [("fa", &a), ("fb", &b)] {
        d.dm(&[
            "create",
            name,
            "--table",
            &format!("0 {sectors} linear {} 0", file.display()),
        ]);
    }
    let fa = mapper.join("fa");
    let fb = mapper.join("fb");
    // Spawned now, before this process holds files of fa: an exec closes the parent's
    // inherited files, and each close is a FUSE FLUSH that a hung mount never answers.
    let mut resume = Command::new("sh")
        .arg("-c")
        .arg("read go && exec \"$0\" --socket \"$1\" resume fa")
        .arg(bin("udmsetup"))
        .arg(&d.socket)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let files: Vec<File> = (0..8).map(|_| File::open(&fa).unwrap()).collect();
    d.dm(&["suspend", "fa"]);

    // Eight readers (the mount has four FUSE threads), each inside its pread.
    let (tid_tx, tid_rx) = mpsc::channel();
    let readers: Vec<_> = files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let tid_tx = tid_tx.clone();
            std::thread::spawn(move || {
                // SAFETY: gettid cannot fail.
                tid_tx.send(unsafe { libc::gettid() }).unwrap();
                let mut buf = vec![0u8; 65536];
                let off = (i * 65536) as u64;
                f.read_exact_at(&mut buf, off).map(|()| (off, buf))
            })
        })
        .collect();
    let tids: Vec<i32> = (0..8).map(|_| tid_rx.recv().unwrap()).collect();
    let t0 = Instant::now();
    while !tids
        .iter()
        .all(|&t| in_syscall(t) == Some(libc::SYS_pread64))
    {
        assert!(t0.elapsed() < BOUND, "readers did not reach pread");
        std::thread::sleep(Duration::from_millis(10));
    }

    // ls, stat and a read of fb, in a thread so that a hang is reported, not waited out.
    let (tx, rx) = mpsc::channel();
    let (mapper2, fb2) = (mapper.clone(), fb.clone());
    std::thread::spawn(move || {
        let mut names: Vec<String> = fs::read_dir(&mapper2)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let size = fs::metadata(&fb2).unwrap().len();
        let size_a = fs::metadata(mapper2.join("fa")).unwrap().len();
        let data = fs::read(&fb2).unwrap();
        let _ = tx.send((names, size, size_a, data));
    });
    let got = rx.recv_timeout(BOUND);
    let blocked = readers.iter().filter(|r| !r.is_finished()).count();
    {
        use std::io::Write;
        let mut go = resume.stdin.take().unwrap();
        go.write_all(b"go\n").unwrap();
    }
    assert!(
        resume.wait().unwrap().success(),
        "udmsetup resume fa failed"
    );
    let (names, size, size_a, data) =
        got.expect("ls/stat/read of fb hung while fa was suspended with 8 readers");
    assert_eq!(names, ["fa", "fb"]);
    assert_eq!((size, size_a), (LEN as u64, LEN as u64));
    assert!(data == pattern(2, LEN), "fb read back wrong data");
    assert_eq!(blocked, 8, "a read of suspended fa completed");
    let want = pattern(1, LEN);
    for r in readers {
        let (off, buf) = r.join().unwrap().expect("held read of fa");
        let off = off as usize;
        assert!(buf == want[off..off + buf.len()], "held read at {off}");
    }
}

/// #11.5: after `kill -9`, a new udmd on the same mapper directory comes up and serves.
#[test]
fn restart_after_kill_9_clears_the_dead_mapper_mount() {
    if !fuse_required() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mapper = tmp.path().join("mapper");
    let _cleanup = Unmount(mapper.clone());
    let mut first = Udmd::start(
        &tmp.path().join("control1"),
        &mapper,
        &tmp.path().join("log1"),
    );
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let e = fs::metadata(&mapper).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");

    let second = Udmd::start(
        &tmp.path().join("control2"),
        &mapper,
        &tmp.path().join("log2"),
    );
    second.dm(&["create", "z", "--table", "0 8 zero"]);
    assert_eq!(fs::read(mapper.join("z")).unwrap(), vec![0u8; 4096]);
}

/// Whether `p` is a mount point of filesystem type `fstype` (or `fstype.*`), by
/// /proc/self/mounts.
fn mounted_as(p: &Path, fstype: &str) -> bool {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let p = p.display().to_string();
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.nth(1) == Some(p.as_str())
            && f.next().is_some_and(|t| {
                t == fstype || t.strip_prefix(fstype).is_some_and(|s| s.starts_with('.'))
            })
    })
}

/// #11.6: a mapper directory that is itself a tmpfs mount point: stopping udmd removes
/// its FUSE mount and leaves the tmpfs mounted.
#[test]
fn shutdown_unmounts_the_mapper_dir_exactly_once() {
    if !fuse_required() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mapper = tmp.path().join("mapper");
    fs::create_dir(&mapper).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mapper)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount tmpfs: {out:?}");
    let _cleanup = Unmount(mapper.clone());
    fs::write(mapper.join("marker"), b"tmpfs").unwrap();

    let mut d = Udmd::start(
        &tmp.path().join("control"),
        &mapper,
        &tmp.path().join("log"),
    );
    d.dm(&["create", "z", "--table", "0 8 zero"]);
    assert!(mapper.join("z").exists());
    d.stop();
    assert!(
        mounted_as(&mapper, "tmpfs"),
        "the tmpfs under the mapper dir was unmounted too: {}",
        d.log_text()
    );
    assert!(!mounted_as(&mapper, "fuse"), "FUSE mount left behind");
    assert_eq!(fs::read(mapper.join("marker")).unwrap(), b"tmpfs");
}

/// #11.6: a second udmd given another udmd's live mapper directory refuses, naming the
/// path, and the first one's mount keeps working.
#[test]
fn a_live_mapper_dir_is_refused() {
    if !fuse_required() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mapper = tmp.path().join("mapper");
    let _cleanup = Unmount(mapper.clone());
    let mut first = Udmd::start(
        &tmp.path().join("control1"),
        &mapper,
        &tmp.path().join("log1"),
    );
    first.dm(&["create", "z", "--table", "0 8 zero"]);

    let mut second = Udmd::spawn(
        &tmp.path().join("control2"),
        &mapper,
        &tmp.path().join("log2"),
    );
    let st = second.wait_exit();
    let log = second.log_text();
    assert!(
        !st.success(),
        "a second udmd served the live mapper dir: {log}"
    );
    let canon = fs::canonicalize(tmp.path()).unwrap().join("mapper");
    assert!(
        log.contains(&format!("{}: already mounted", canon.display())),
        "{log}"
    );
    assert_eq!(fs::read(mapper.join("z")).unwrap(), vec![0u8; 4096]);
    first.stop();
    assert!(!is_fuse_mount(&mapper), "a FUSE mount is left behind");
}

/// #11.21: `ls -l` on the mapper directory asks for xattrs; udmd answers them without a
/// warning.
#[test]
fn ls_l_logs_no_warning() {
    if !fuse_required() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mapper = tmp.path().join("mapper");
    let d = Udmd::start(
        &tmp.path().join("control"),
        &mapper,
        &tmp.path().join("log"),
    );
    d.dm(&["create", "z", "--table", "0 8 zero"]);
    let o = Command::new("ls").arg("-l").arg(&mapper).output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains(" z\n"), "{o:?}");
    let o = Command::new("ls")
        .arg("-l")
        .arg(mapper.join("z"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    // A warning is written before the request it is about is answered.
    let log = d.log_text();
    assert!(
        !log.lines().any(|l| l.contains("WARN")),
        "udmd warned during ls -l:\n{log}"
    );
}

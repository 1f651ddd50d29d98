//! Test harness: a real udmd on temporary paths, driven by the real udmsetup
//! binary (both from the same target directory as the test), self-cleaning.
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/<name>`, next to this test's `deps` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` first (the README's test command does)",
        p.display()
    );
    p
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub nbd: Option<PathBuf>,
    pub mapper: Option<PathBuf>,
    child: Child,
}

#[derive(Default)]
pub struct Opts {
    pub nbd: bool,
    pub mapper: bool,
    pub extra: Vec<String>,
}

impl Daemon {
    pub fn start() -> Daemon {
        Daemon::with(Opts::default())
    }

    pub fn with(opts: Opts) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("control");
        let mut cmd = Command::new(bin("udmd"));
        cmd.arg("--socket").arg(&socket).arg("--log").arg("warn");
        let nbd = opts.nbd.then(|| dir.path().join("nbd.sock"));
        if let Some(n) = &nbd {
            cmd.arg("--nbd").arg(format!("unix:{}", n.display()));
        }
        let mapper = opts.mapper.then(|| dir.path().join("mapper"));
        if let Some(m) = &mapper {
            cmd.arg("--mapper-dir").arg(m);
        }
        cmd.args(&opts.extra);
        let child = cmd.stdin(Stdio::null()).spawn().expect("spawn udmd");
        let d = Daemon {
            dir,
            socket,
            nbd,
            mapper,
            child,
        };
        let t0 = Instant::now();
        // A socket file exists from bind(2), before listen(2): only a connection
        // that succeeds shows the daemon is serving.
        let serving = |p: &Path| std::os::unix::net::UnixStream::connect(p).is_ok();
        while !serving(&d.socket) || d.nbd.as_deref().is_some_and(|n| !serving(n)) {
            assert!(t0.elapsed() < Duration::from_secs(30), "udmd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(m) = &d.mapper {
            // The FUSE mount is up once the directory reports the fuse filesystem.
            while !is_fuse_mount(m) {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "mapper dir did not mount"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        d
    }

    /// Run udmsetup against this daemon.
    pub fn dm(&self, args: &[&str]) -> Output {
        self.dm_stdin(args, None)
    }

    pub fn dm_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(bin("udmsetup"));
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn udmsetup");
        if let Some(s) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(s.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("udmsetup output")
    }

    /// Run udmsetup and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.dm(args);
        assert!(
            o.status.success(),
            "udmsetup {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Run udmsetup and require failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.dm(args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "udmsetup {args:?} should fail: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// A sparse file of `sectors` sectors under the daemon's directory.
    pub fn file(&self, name: &str, sectors: u64) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::File::create(&p)
            .expect("create")
            .set_len(sectors * 512)
            .expect("set_len");
        p
    }

    pub fn nbd_uri(&self, name: &str) -> String {
        format!(
            "nbd+unix:///{name}?socket={}",
            self.nbd.as_ref().expect("nbd enabled").display()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill with a pid we spawned; a stale pid only yields ESRCH.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(m) = &self.mapper {
            if is_fuse_mount(m) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}

pub fn is_fuse_mount(p: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let p = p.display().to_string();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(p.as_str()))
}

/// Read a file range directly.
pub fn read_at(p: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(p).expect("open");
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset).expect("read");
    b
}

/// Require a real client: missing, it fails the test under UDM_REQUIRE_CLIENTS=1,
/// else prints "skipped: ..." (see udm-testkit).
#[track_caller]
pub fn require(prog: &str) -> bool {
    udm_testkit::have_tool(prog)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

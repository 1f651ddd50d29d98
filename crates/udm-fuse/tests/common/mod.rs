//! Shared test harness: required-device checks, deterministic random data, commands, and guards that
//! undo loop devices and mounts even when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// True if FUSE can be used here. Missing, it fails the test under
/// UDM_REQUIRE_CLIENTS=1, else prints "skipped: ..." (see udm-testkit).
#[track_caller]
pub fn fuse_available() -> bool {
    udm_testkit::have_device("/dev/fuse")
}

/// True if FUSE, loop devices and the tools the loop tests run are here; same
/// convention as [`fuse_available`].
#[track_caller]
pub fn loop_available() -> bool {
    udm_testkit::have(
        &["/dev/fuse", "/dev/loop-control"],
        &[
            "losetup",
            "blockdev",
            "mkfs.ext4",
            "e2fsck",
            "mount",
            "umount",
        ],
    )
}

/// xorshift64*: deterministic bytes without a rand dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Runs a command; fails with its stderr if it exits non-zero. Returns stdout.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `path` (canonical) is a mount point in this namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}

/// Polls `cond` for up to `secs` seconds.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// A loop device, detached on drop.
pub struct LoopDev {
    pub dev: String,
    attached: bool,
}

impl LoopDev {
    pub fn attach(file: &Path, extra: &[&str]) -> Result<Self> {
        let file = file.to_string_lossy();
        let mut args = vec!["-f", "--show"];
        args.extend_from_slice(extra);
        args.push(&file);
        let dev = run("losetup", &args)?.trim().to_owned();
        if !dev.starts_with("/dev/loop") {
            bail!("losetup printed {dev:?}");
        }
        Ok(LoopDev {
            dev,
            attached: true,
        })
    }

    pub fn detach(mut self) -> Result<()> {
        self.attached = false;
        run("losetup", &["-d", &self.dev]).map(drop)
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        if self.attached {
            if let Err(e) = run("losetup", &["-d", &self.dev]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// A mounted filesystem, unmounted (lazily if need be) on drop.
pub struct Mounted {
    pub dir: PathBuf,
    mounted: bool,
}

impl Mounted {
    pub fn mount(dev: &str, dir: &Path, opts: &[&str]) -> Result<Self> {
        let d = dir.to_string_lossy();
        let mut args: Vec<&str> = opts.to_vec();
        args.push(dev);
        args.push(&d);
        run("mount", &args)?;
        Ok(Mounted {
            dir: dir.to_path_buf(),
            mounted: true,
        })
    }

    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        run("umount", &[&self.dir.to_string_lossy()]).map(drop)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let d = self.dir.to_string_lossy().into_owned();
            if run("umount", &[&d]).is_err() {
                if let Err(e) = run("umount", &["-l", &d]) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
    }
}

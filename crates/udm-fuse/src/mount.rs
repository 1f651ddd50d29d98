//! Mounting the mapper directory, and unmounting it without hanging: a busy directory is
//! detached lazily, a dead one left by a crashed run is cleared before mounting, a live
//! FUSE mount is refused, and the mount is unmounted exactly once (a filesystem the
//! directory sat on stays mounted).

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, Session, SessionACL};
use tracing::{info, warn};

use crate::error::FuseError;
use crate::fs::{FsConfig, MapperFs};
use crate::source::MapperSource;

/// How long an unmount waits for the session threads to end before leaving them detached.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How the mapper directory is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Let users other than the mounting one see the directory (`allow_other`); file
    /// permissions (0600, owner = the mounting uid) are still checked by the kernel.
    pub allow_other: bool,
    /// FUSE threads reading requests (default 5). They start device I/O and return to the
    /// next request without waiting for it (see the crate doc), so more threads do not mean
    /// more requests in flight; they matter for work done on the thread that starts a
    /// request (copying a write's payload, and I/O that a device carries out at once, such
    /// as reading a file under a linear target).
    pub threads: usize,
    /// Open every file with `FOPEN_DIRECT_IO` (no page cache of our own; see the crate doc).
    /// Off only to compare.
    pub direct_io: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            threads: 5,
            direct_io: true,
        }
    }
}

/// `statfs` `f_type` of a FUSE filesystem.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Who unmounts the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// We mounted it with mount(2) and unmount it (fuser holds no mount of its own).
    Us {
        /// `st_dev` of the mounted root: the mount at the path is still ours.
        dev: u64,
    },
    /// fuser mounted it through fusermount3 and unmounts it when the session is dropped.
    Fuser,
}

/// A mounted mapper directory. Dropping it unmounts (see [`MapperMount::unmount`]).
pub struct MapperMount {
    path: PathBuf,
    session: Option<BackgroundSession>,
    owner: Owner,
}

impl std::fmt::Debug for MapperMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapperMount")
            .field("path", &self.path)
            .field("mounted", &self.session.is_some())
            .finish()
    }
}

/// Makes `dir` ready to be a mount point: a dead FUSE mount left there by a crashed run is
/// detached, and the directory is created (with its parents) if missing.
pub fn create_mount_point(dir: &Path) -> Result<(), FuseError> {
    match std::fs::metadata(dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => clear_stale_mount(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| FuseError::io("create directory", dir, e))
        }
        Err(e) => Err(FuseError::io("stat", dir, e)),
        Ok(_) => Ok(()),
    }
}

/// Mounts the devices of `source` as files in `dir`, an existing directory. A live FUSE
/// filesystem mounted at `dir` is refused ([`FuseError::AlreadyMounted`]).
pub fn mount(
    dir: &Path,
    source: Arc<dyn MapperSource>,
    opts: MountOptions,
) -> Result<MapperMount, FuseError> {
    if opts.threads == 0 {
        return Err(FuseError::InvalidOptions("threads must be at least 1"));
    }
    clear_stale_mount(dir)?;
    let path = dir
        .canonicalize()
        .map_err(|e| FuseError::io("canonicalize", dir, e))?;
    refuse_live_fuse_mount(&path)?;

    let fs = MapperFs::new(
        source,
        FsConfig {
            direct_io: opts.direct_io,
        },
    );
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("udm".into()),
        MountOption::Subtype("udm".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        MountOption::NoAtime,
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads);
    config.clone_fd = opts.threads > 1;
    let (session, owner) = match mount_sys(&path, opts.allow_other) {
        Ok(fd) => {
            let acl = config.acl;
            let session = Session::from_fd(fs, fd, acl, config).map_err(|e| {
                let _ = umount2(&path, libc::MNT_DETACH);
                FuseError::io("FUSE handshake", &path, e)
            })?;
            (session, Owner::Us { dev: 0 })
        }
        // Unprivileged: fuser mounts through the setuid fusermount3.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let session =
                Session::new(fs, &path, &config).map_err(|e| FuseError::io("mount", &path, e))?;
            (session, Owner::Fuser)
        }
        Err(e) => return Err(FuseError::io("mount", &path, e)),
    };
    let session = session.spawn().map_err(|e| {
        if matches!(owner, Owner::Us { .. }) {
            let _ = umount2(&path, libc::MNT_DETACH);
        }
        FuseError::io("spawn session", &path, e)
    })?;
    let mut mnt = MapperMount {
        path,
        session: Some(session),
        owner,
    };
    if let Owner::Us { dev } = &mut mnt.owner {
        // Only now, with the session serving: a stat before would wait for FUSE INIT.
        match std::fs::metadata(&mnt.path) {
            Ok(m) => *dev = m.dev(),
            Err(e) => {
                let _ = lazy_unmount(&mnt.path);
                return Err(FuseError::io("stat after mount", &mnt.path, e));
            }
        }
    }
    info!(path = %mnt.path.display(), threads = opts.threads, direct_io = opts.direct_io, "mapper directory mounted");
    Ok(mnt)
}

/// Mounts a FUSE filesystem at `path` with mount(2); the returned `/dev/fuse` fd serves it.
/// EPERM without CAP_SYS_ADMIN.
fn mount_sys(path: &Path, allow_other: bool) -> io::Result<OwnedFd> {
    let dev: OwnedFd = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?
        .into();
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut data = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid},default_permissions",
        dev.as_raw_fd()
    );
    if allow_other {
        data.push_str(",allow_other");
    }
    let invalid = |e| io::Error::new(io::ErrorKind::InvalidInput, e);
    let target = CString::new(path.as_os_str().as_bytes()).map_err(invalid)?;
    let data = CString::new(data).map_err(invalid)?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOATIME;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            c"udm".as_ptr(),
            target.as_ptr(),
            c"fuse.udm".as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(dev)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A live FUSE filesystem mounted at `path` (another udmd's mapper directory, say) must
/// not be mounted over: its owner would lose it, and unmounting ours could take it away.
fn refuse_live_fuse_mount(path: &Path) -> Result<(), FuseError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| {
        FuseError::io(
            "statfs",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })?;
    // SAFETY: an all-zero statfs is a valid out-buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and st a valid, writable statfs.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(FuseError::io("statfs", path, io::Error::last_os_error()));
    }
    #[allow(clippy::unnecessary_cast)]
    if st.f_type as i64 != FUSE_SUPER_MAGIC {
        return Ok(());
    }
    let dev_of = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
    let here = dev_of(path).map_err(|e| FuseError::io("stat", path, e))?;
    let parent = dev_of(&path.join("..")).map_err(|e| FuseError::io("stat", path, e))?;
    if here != parent {
        return Err(FuseError::AlreadyMounted {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

impl MapperMount {
    /// The mounted directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts and joins the session threads. If files are still open, the directory is
    /// detached lazily (their I/O keeps working; the session ends at the last close) and
    /// [`FuseError::Busy`] is returned.
    pub fn unmount(mut self) -> Result<(), FuseError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), FuseError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let Owner::Us { dev } = self.owner else {
            // fuser unmounts (once, lazily) as the session is dropped; its threads end when
            // the last open file is closed.
            drop(session);
            info!(path = %self.path.display(), "mapper directory unmounted");
            return Ok(());
        };
        // Unmount only our own mount: if it was unmounted from outside, the path now shows
        // whatever it was mounted on, and that is not ours to unmount.
        let ours = match std::fs::metadata(&self.path) {
            Ok(m) => m.dev() == dev,
            Err(e) => e.raw_os_error() == Some(libc::ENOTCONN),
        };
        let res = if ours {
            unmount_dir(&self.path)
        } else {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        };
        match res {
            Ok(()) => {}
            // Unmounted from outside already: the session has ended or is ending.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                warn!(path = %self.path.display(), "mapper directory busy; detaching lazily");
                lazy_unmount(&self.path)
                    .map_err(|e| FuseError::io("lazy unmount", &self.path, e))?;
                // Dropping the session detaches its threads; they end at the last close.
                drop(session);
                return Err(FuseError::Busy {
                    path: self.path.clone(),
                });
            }
            Err(e) => return Err(FuseError::io("unmount", &self.path, e)),
        }
        let deadline = Instant::now() + JOIN_TIMEOUT;
        while !session.guard.is_finished() {
            if Instant::now() >= deadline {
                warn!(path = %self.path.display(), "FUSE session did not end; leaving its threads");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        session.join().map_err(|source| FuseError::Session {
            path: self.path.clone(),
            source,
        })?;
        info!(path = %self.path.display(), "mapper directory unmounted");
        Ok(())
    }
}

impl Drop for MapperMount {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            warn!("{e}");
        }
    }
}

/// A directory whose FUSE server died reports ENOTCONN; detach it so it can be mounted
/// again.
fn clear_stale_mount(dir: &Path) -> Result<(), FuseError> {
    let meta = match std::fs::metadata(dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            warn!(path = %dir.display(), "clearing a dead FUSE mount left by an earlier run");
            lazy_unmount(dir).map_err(|e| FuseError::io("lazy unmount (stale)", dir, e))?;
            std::fs::metadata(dir)
        }
        other => other,
    }
    .map_err(|e| FuseError::io("stat", dir, e))?;
    if !meta.is_dir() {
        return Err(FuseError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

fn umount2(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    let rc = unsafe { libc::umount2(c_path.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Without CAP_SYS_ADMIN the setuid helper does the unmount.
fn fusermount_unmount(path: &Path, lazy: bool) -> io::Result<()> {
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u").arg("-q");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg("--").arg(path).output()?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("busy") {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    if stderr.contains("not found in") || stderr.contains("not mounted") {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Err(io::Error::other(format!(
        "fusermount3 -u: {}",
        stderr.trim()
    )))
}

fn unmount_dir(path: &Path) -> io::Result<()> {
    match umount2(path, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fusermount_unmount(path, false),
        other => other,
    }
}

fn lazy_unmount(path: &Path) -> io::Result<()> {
    match umount2(path, libc::MNT_DETACH) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => fusermount_unmount(path, true),
        other => other,
    }
}

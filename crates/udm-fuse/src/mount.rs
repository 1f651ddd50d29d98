//! Mounting the mapper directory, and unmounting it without hanging: a busy directory is
//! detached lazily, a dead one left by a crashed run is cleared before mounting.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
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
    /// FUSE threads serving requests; reads and writes run on them in parallel.
    pub threads: usize,
    /// Open every file with `FOPEN_DIRECT_IO` (no page cache of our own; see the crate doc).
    /// Off only to compare.
    pub direct_io: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            threads: 4,
            direct_io: true,
        }
    }
}

/// A mounted mapper directory. Dropping it unmounts (see [`MapperMount::unmount`]).
pub struct MapperMount {
    path: PathBuf,
    session: Option<BackgroundSession>,
}

impl std::fmt::Debug for MapperMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapperMount")
            .field("path", &self.path)
            .field("mounted", &self.session.is_some())
            .finish()
    }
}

/// Mounts the devices of `source` as files in `dir`, an existing directory.
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
    let session = Session::new(fs, &path, &config).map_err(|e| FuseError::io("mount", &path, e))?;
    let session = session
        .spawn()
        .map_err(|e| FuseError::io("spawn session", &path, e))?;
    info!(path = %path.display(), threads = opts.threads, direct_io = opts.direct_io, "mapper directory mounted");
    Ok(MapperMount {
        path,
        session: Some(session),
    })
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
        match unmount_dir(&self.path) {
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

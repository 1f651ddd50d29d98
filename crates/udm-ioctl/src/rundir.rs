//! Where udmd's control socket lives unless told otherwise, and the check both
//! udmd and udmsetup make on the directory that holds it (the only part of this
//! crate that touches the filesystem).
//!
//! As tmux does for `/tmp/tmux-$UID`, the *default* directory (`$XDG_RUNTIME_DIR/udm`,
//! else `/tmp/udm-$UID`) must be a real directory, not a symlink, owned by the user,
//! with no permissions for group or others; udmd creates it 0700 when missing. A
//! path the user names (`--socket`, `$UDM_SOCKET`) is used as given, as tmux uses
//! `-S` as given: the user chose it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The environment variable that names the control socket explicitly.
pub const SOCKET_ENV: &str = "UDM_SOCKET";

/// The socket's file name inside the default directory.
pub const SOCKET_NAME: &str = "control";

/// Why the default socket directory cannot be trusted (or made).
#[derive(Debug, thiserror::Error)]
pub enum RundirError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{} is a symlink (to {}), not a directory: refusing to use it for the udm control \
         socket (another user may own its target); remove it (rm {}) or give --socket PATH",
        path.display(), target.display(), path.display()
    )]
    Symlink { path: PathBuf, target: PathBuf },
    #[error(
        "{} is not a directory: refusing to use it for the udm control socket; \
         remove it or give --socket PATH",
        path.display()
    )]
    NotDirectory { path: PathBuf },
    #[error(
        "{} is owned by uid {owner}, not by you (uid {uid}): refusing to use it for the udm \
         control socket (its owner could capture your commands); remove it as root or as \
         uid {owner} (rm -r {}), or give --socket PATH",
        path.display(), path.display()
    )]
    WrongOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "{} has mode {mode:04o}: group or others may use it, refusing to use it for the udm \
         control socket; make it private (chmod 0700 {}) or give --socket PATH",
        path.display(), path.display()
    )]
    OpenMode { path: PathBuf, mode: u32 },
}

impl RundirError {
    /// The errno the kernel would give for the same refusal.
    pub fn errno(&self) -> i32 {
        match self {
            RundirError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            RundirError::Symlink { .. } | RundirError::NotDirectory { .. } => libc::ENOTDIR,
            RundirError::WrongOwner { .. } | RundirError::OpenMode { .. } => libc::EACCES,
        }
    }
}

/// The user's real uid (whose directory the default one is).
fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The default directory: `$XDG_RUNTIME_DIR/udm`, else `/tmp/udm-$UID`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return Path::new(&d).join("udm");
    }
    PathBuf::from(format!("/tmp/udm-{}", uid()))
}

/// The path named by `$UDM_SOCKET`, if set and not empty.
pub fn explicit_socket_path() -> Option<PathBuf> {
    std::env::var_os(SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Where the socket is unless told otherwise: `$UDM_SOCKET` as given, else
/// `control` in the [`default_dir`]. Nothing is checked; for display.
pub fn socket_path_unchecked() -> PathBuf {
    explicit_socket_path().unwrap_or_else(|| default_dir().join(SOCKET_NAME))
}

/// The socket a client connects to: `$UDM_SOCKET` as given, else `control` in
/// the default directory once [`check_dir`] accepts it.
pub fn client_socket_path() -> Result<PathBuf, RundirError> {
    if let Some(p) = explicit_socket_path() {
        return Ok(p);
    }
    let dir = default_dir();
    check_dir(&dir, uid())?;
    Ok(dir.join(SOCKET_NAME))
}

/// The socket the daemon serves: as [`client_socket_path`], creating the
/// default directory (0700) when it is missing.
pub fn server_socket_path() -> Result<PathBuf, RundirError> {
    if let Some(p) = explicit_socket_path() {
        return Ok(p);
    }
    let dir = default_dir();
    ensure_dir(&dir, uid())?;
    Ok(dir.join(SOCKET_NAME))
}

/// Create `dir` with mode 0700 if it does not exist (its parent must), then
/// [`check_dir`] it.
pub fn ensure_dir(dir: &Path, uid: u32) -> Result<(), RundirError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(RundirError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    check_dir(dir, uid)
}

/// Refuse `dir` unless it is a real directory (not a symlink) owned by `uid`
/// with no permission bits for group or others.
pub fn check_dir(dir: &Path, uid: u32) -> Result<(), RundirError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| RundirError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.to_path_buf();
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(dir).unwrap_or_default();
        return Err(RundirError::Symlink { path, target });
    }
    if !meta.is_dir() {
        return Err(RundirError::NotDirectory { path });
    }
    if meta.uid() != uid {
        return Err(RundirError::WrongOwner {
            path,
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(RundirError::OpenMode { path, mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_missing_dir_is_made_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("udm");
        // SAFETY: umask only changes this process's file mode mask.
        let old = unsafe { libc::umask(0) };
        let r = ensure_dir(&d, uid());
        // SAFETY: as above, restoring it.
        unsafe { libc::umask(old) };
        r.unwrap();
        let m = std::fs::symlink_metadata(&d).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o700);
        check_dir(&d, uid()).unwrap();
    }

    #[test]
    fn open_symlinked_foreign_and_plain_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_dir(&open, uid()).unwrap_err();
        assert_eq!(e.errno(), libc::EACCES);
        assert!(e.to_string().contains("has mode 0777"), "{e}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(matches!(
            check_dir(&open, uid()),
            Err(RundirError::OpenMode { mode: 0o750, .. })
        ));

        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = ensure_dir(&link, uid()).unwrap_err();
        assert_eq!(e.errno(), libc::ENOTDIR);
        assert!(e.to_string().contains("is a symlink (to "), "{e}");

        // Owned by someone else: as another uid would see our own directory.
        let e = check_dir(&real, uid().wrapping_add(1)).unwrap_err();
        assert!(e.to_string().contains("not by you"), "{e}");

        let file = t.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            check_dir(&file, uid()),
            Err(RundirError::NotDirectory { .. })
        ));
    }
}

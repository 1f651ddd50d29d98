//! Errors of mounting and unmounting the mapper directory.

use std::io;
use std::path::PathBuf;

/// Why a mount or unmount of the mapper directory failed.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    /// The options cannot be used.
    #[error("invalid FUSE mount options: {0}")]
    InvalidOptions(&'static str),
    /// The mount point exists but is not a directory.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The mount point.
        path: PathBuf,
    },
    /// A live FUSE filesystem (another udmd's mapper directory?) is mounted there.
    #[error("{path}: already mounted (a live FUSE filesystem, another udmd's mapper directory?); not mounting over it")]
    AlreadyMounted {
        /// The mount point.
        path: PathBuf,
    },
    /// A system call or helper failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Files were still open at unmount: the directory was detached lazily and the FUSE
    /// session ends when the last of them is closed.
    #[error(
        "{path}: busy (files still open); detached lazily, the session ends at the last close"
    )]
    Busy {
        /// The mount point.
        path: PathBuf,
    },
    /// The FUSE session threads ended with an error.
    #[error("{path}: FUSE session: {source}")]
    Session {
        /// The mount point.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl FuseError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FuseError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

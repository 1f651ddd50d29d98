//! Errors, each carrying the errno the kernel would return for it.

use std::fmt;
use std::io;

/// A positive errno value (EIO, EINVAL, ...).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENXIO: Errno = Errno(libc::ENXIO);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const ESHUTDOWN: Errno = Errno(libc::ESHUTDOWN);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const EPERM: Errno = Errno(libc::EPERM);

    pub fn from_io(e: &io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Errno({}: {})",
            self.0,
            io::Error::from_raw_os_error(self.0)
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.0))
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Self {
        Errno::from_io(&e)
    }
}

/// A table line that cannot be loaded: where (line, target type, field) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {target}: {}{msg}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct TableError {
    /// 1-based line of the table text, or index of the target spec in a TABLE_LOAD.
    pub line: u32,
    /// Target type name (or "table" for framing errors).
    pub target: String,
    /// The argument at fault, e.g. `argument 2 (offset)`.
    pub field: Option<String>,
    pub msg: String,
    pub errno: Errno,
}

impl TableError {
    pub fn new(line: u32, target: &str, msg: impl Into<String>) -> Self {
        TableError {
            line,
            target: target.to_string(),
            field: None,
            msg: msg.into(),
            errno: Errno::EINVAL,
        }
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn errno(mut self, errno: Errno) -> Self {
        self.errno = errno;
        self
    }
}

/// Any failure of an engine command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DmError {
    #[error("device {0} does not exist")]
    NoDevice(String),
    #[error("{0}")]
    Table(#[from] TableError),
    #[error("{msg}")]
    Other { errno: Errno, msg: String },
}

impl DmError {
    pub fn new(errno: Errno, msg: impl Into<String>) -> Self {
        DmError::Other {
            errno,
            msg: msg.into(),
        }
    }
    pub fn errno(&self) -> Errno {
        match self {
            DmError::NoDevice(_) => Errno::ENXIO,
            DmError::Table(t) => t.errno,
            DmError::Other { errno, .. } => *errno,
        }
    }
}

pub type Result<T, E = DmError> = std::result::Result<T, E>;

//! The seam between the NBD server and whatever it serves: an [`Export`] is one block
//! device, a [`Backend`] names the exports a client may open.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Arc;

use parking_lot::RwLock;

/// A positive host errno an [`Export`] operation failed with; the server maps it onto
/// the NBD error set when it answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    pub const ESHUTDOWN: Errno = Errno(libc::ESHUTDOWN);

    /// The errno of an I/O error (EIO when it carries none).
    pub fn from_io(e: &io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Self {
        Errno::from_io(&e)
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

/// Size constraints advertised with NBD_INFO_BLOCK_SIZE (spec "Size constraints"):
/// `min` and `preferred` are powers of two, `min <= 65536`, `preferred >= max(min, 512)`,
/// `max >= preferred`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSize {
    pub min: u32,
    pub preferred: u32,
    pub max: u32,
}

impl Default for BlockSize {
    /// The protocol's defaults: 1 byte, 4 KiB, 32 MiB.
    fn default() -> Self {
        BlockSize {
            min: 1,
            preferred: 4096,
            max: 32 << 20,
        }
    }
}

/// One run of the export with the same allocation status (`base:allocation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub length: u64,
    /// Not allocated in the backing store (NBD_STATE_HOLE).
    pub hole: bool,
    /// Reads as zeroes (NBD_STATE_ZERO).
    pub zero: bool,
}

/// One block device served over NBD. Every method may be called from many threads at
/// once; the server has already checked that the range lies inside the export, that
/// the export is writable for writes, and the client's flags.
pub trait Export: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    fn read_only(&self) -> bool;
    /// Whether flush and FUA on one connection are visible on every other one.
    fn can_multi_conn(&self) -> bool;
    fn block_size(&self) -> BlockSize;
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno>;
    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> Result<(), Errno>;
    fn flush(&self) -> Result<(), Errno>;
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), Errno>;
    /// Zero a range; `may_trim` allows punching a hole; with `fast_only`, fail with
    /// `Errno(ENOTSUP)` at once (changing nothing) unless zeroing is faster than writing.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fast_only: bool,
        fua: bool,
    ) -> Result<(), Errno>;
    /// A prefetch hint.
    fn cache(&self, offset: u64, len: u64) -> Result<(), Errno>;
    /// Append the allocation status of `[offset, offset + len)` to `out`, in order from
    /// `offset`; may describe less than `len` but at least one extent.
    fn extents(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), Errno>;
}

/// The namespace of exports.
pub trait Backend: Send + Sync {
    /// Every export as (name, description), for NBD_OPT_LIST.
    fn list(&self) -> Vec<(String, String)>;
    /// Open an export by its name; `None` answers NBD_REP_ERR_UNKNOWN.
    fn open(&self, name: &str) -> Option<Arc<dyn Export>>;
}

/// An export and its description, as [`ExportMap`] keeps them.
type Entry = (String, Arc<dyn Export>);

/// A [`Backend`] holding its exports in a map that may change while serving.
#[derive(Default)]
pub struct ExportMap {
    exports: RwLock<BTreeMap<String, Entry>>,
}

impl ExportMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace an export.
    pub fn insert(&self, name: &str, description: &str, export: Arc<dyn Export>) {
        self.exports
            .write()
            .insert(name.to_owned(), (description.to_owned(), export));
    }

    /// Remove an export; pair with [`crate::Server::close_export`] to drop its clients.
    pub fn remove(&self, name: &str) -> Option<Arc<dyn Export>> {
        self.exports.write().remove(name).map(|(_, e)| e)
    }
}

impl Backend for ExportMap {
    fn list(&self) -> Vec<(String, String)> {
        self.exports
            .read()
            .iter()
            .map(|(n, (d, _))| (n.clone(), d.clone()))
            .collect()
    }

    fn open(&self, name: &str) -> Option<Arc<dyn Export>> {
        self.exports.read().get(name).map(|(_, e)| Arc::clone(e))
    }
}

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

/// What an asynchronous request asks of an [`Export`] (see [`Export::submit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Fill the buffer from `offset`.
    Read,
    /// Store the buffer at `offset`.
    Write,
    Flush,
    /// Discard `[offset, offset + len)` ([`Export::trim`]).
    Trim,
    /// Zero `[offset, offset + len)` ([`Export::write_zeroes`]).
    WriteZeroes,
    /// A prefetch hint ([`Export::cache`]).
    Cache,
}

/// One request as [`Export::submit`] receives it, already judged by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Io {
    pub op: Op,
    pub offset: u64,
    /// Bytes; for reads and writes the buffer holds exactly this many.
    pub len: u64,
    /// The client asked for force unit access.
    pub fua: bool,
    /// Write zeroes may punch a hole (the request had no NO_HOLE).
    pub may_trim: bool,
    /// Write zeroes only if that is fast (FAST_ZERO): else `Errno::ENOTSUP` at
    /// once, changing nothing.
    pub fast_only: bool,
}

pub use crate::transmission::Done;

/// One block device served over NBD. Every method may be called from many threads at
/// once; the server has already checked that the range lies inside the export, that
/// the export is writable for writes, and the client's flags.
///
/// The server starts requests through [`Export::submit`]. Its default runs the
/// blocking methods below on the calling thread; an export that can complete
/// requests later from other threads overrides it, so that a slow request holds no
/// server thread while in flight.
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

    /// Start `io` and answer it through `done`, exactly once, from any thread:
    /// before returning (the server then sends the reply with others in one write)
    /// or at any later time (the reply goes out from the completing thread).
    /// `buf` holds exactly `io.len` bytes for reads (to be filled) and writes (the
    /// payload), and is empty otherwise; give it back through [`Done::complete`].
    /// Dropping `done` unanswered answers EIO.
    ///
    /// The default runs [`blocking`] on the calling thread.
    fn submit(&self, io: Io, mut buf: Vec<u8>, done: Done) {
        let r = blocking(self, &io, &mut buf);
        done.complete(r, buf);
    }
}

/// Carry out `io` with the blocking methods of `export` (what [`Export::submit`]
/// does by default); `buf` is the read or write buffer, at least `io.len` bytes.
pub fn blocking<E: Export + ?Sized>(export: &E, io: &Io, buf: &mut [u8]) -> Result<(), Errno> {
    let data = |buf: &mut [u8]| -> Result<std::ops::Range<usize>, Errno> {
        let len = usize::try_from(io.len).map_err(|_| Errno::EINVAL)?;
        if buf.len() < len {
            return Err(Errno::EINVAL);
        }
        Ok(0..len)
    };
    match io.op {
        Op::Read => {
            let r = data(buf)?;
            export.read(io.offset, &mut buf[r])
        }
        Op::Write => {
            let r = data(buf)?;
            export.write(io.offset, &buf[r], io.fua)
        }
        Op::Flush => export.flush(),
        Op::Trim => export.trim(io.offset, io.len, io.fua),
        Op::WriteZeroes => {
            export.write_zeroes(io.offset, io.len, io.may_trim, io.fast_only, io.fua)
        }
        Op::Cache => export.cache(io.offset, io.len),
    }
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

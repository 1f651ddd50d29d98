//! The seam to the engine: what the mapper directory lists and what each file reads and
//! writes. Errors are plain errnos, passed to the FUSE caller unchanged.

use std::sync::Arc;

/// What `lseek` is looking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekKind {
    /// `SEEK_DATA`: the first byte at or after the offset that is data.
    Data,
    /// `SEEK_HOLE`: the first byte at or after the offset that is a hole (the end of the
    /// device counts as a hole).
    Hole,
}

/// One mapped device, seen as a file. Every method may be called from several FUSE
/// threads at once.
pub trait MappedFile: Send + Sync {
    /// The current size in bytes.
    fn size(&self) -> u64;
    /// Whether the device refuses writes.
    fn read_only(&self) -> bool;
    /// Fill `buf` from `offset`; any byte offset and length within [`size`](Self::size).
    /// `Err` is an errno.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), i32>;
    /// Write `buf` at `offset`; any byte offset and length within the size.
    fn write(&self, offset: u64, buf: &[u8]) -> Result<(), i32>;
    /// Make every completed write durable (FUSE fsync).
    fn flush(&self) -> Result<(), i32>;
    /// Discard a byte range (the loop driver's DISCARD).
    fn discard(&self, offset: u64, len: u64) -> Result<(), i32>;
    /// Make a byte range read back as zeros (`fallocate` ZERO_RANGE, and PUNCH_HOLE when a
    /// discard does not zero).
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), i32>;
    /// Whether a discarded range is guaranteed to read back as zeros. Only then does
    /// `fallocate(PUNCH_HOLE)` become [`discard`](Self::discard); a regular file promises
    /// zeros after a punch, and the loop driver relies on it for WRITE_ZEROES.
    fn discard_zeroes(&self) -> bool {
        false
    }
    /// `lseek` `SEEK_DATA`/`SEEK_HOLE` from `offset` (below the size). The default treats
    /// the whole device as data.
    fn seek(&self, offset: u64, kind: SeekKind) -> Result<u64, i32> {
        let size = self.size();
        if offset >= size {
            return Err(libc::ENXIO);
        }
        Ok(match kind {
            SeekKind::Data => offset,
            SeekKind::Hole => size,
        })
    }
    /// Whether I/O would wait now (a suspended device holds it until resumed). Such
    /// requests are answered from a per-device queue, off the FUSE threads, so that a
    /// held device never blocks the directory or another device. Called on every request:
    /// keep it to an atomic load.
    fn held(&self) -> bool {
        false
    }
    /// A FUSE open of this file (the engine counts opens).
    fn opened(&self) {}
    /// The matching close of an [`opened`](Self::opened) file.
    fn released(&self) {}
}

/// The set of devices shown in the directory.
pub trait MapperSource: Send + Sync {
    /// `(stable id, current name)` of every device. The id never changes for a device and
    /// is never reused; the inode number is `id + 2`.
    fn list(&self) -> Vec<(u64, String)>;
    /// The device with this id, or `None` once it is gone. This is a lookup, not an open:
    /// FUSE opens are reported through [`MappedFile::opened`].
    fn open(&self, id: u64) -> Option<Arc<dyn MappedFile>>;
}

//! The seam to the engine: what the mapper directory lists and what each file reads and
//! writes. Errors are plain errnos, passed to the FUSE caller unchanged.

use std::num::NonZeroU64;
use std::sync::Arc;

/// The end of an asynchronous read or write: the result and the buffer the call was given
/// (for a read, now holding the data). Runs exactly once, on any thread.
pub type IoDone = Box<dyn FnOnce(Result<(), i32>, Vec<u8>) + Send>;

/// The end of an asynchronous flush, discard or zeroing. Runs exactly once, on any thread.
pub type Done = Box<dyn FnOnce(Result<(), i32>) + Send>;

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
///
/// Two ways of doing I/O: the blocking methods ([`read`](Self::read), ...), which may wait
/// (a suspended device holds I/O until it is resumed) and are therefore called off the FUSE
/// threads, from the device's queue; and the asynchronous ones ([`read_async`](Self::read_async),
/// ...), called on the FUSE thread for ranges of whole blocks of
/// [`async_granularity`](Self::async_granularity), which must not wait for held I/O: they
/// start the request and return, and the request's end answers FUSE.
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
    /// The block of the asynchronous path. Reads and writes go through the `_async`
    /// methods in whole blocks (an unaligned read reads the blocks around it; an unaligned
    /// write reads its partial edge blocks, then writes the whole blocks), discards and
    /// zeroings when they are whole blocks, flushes always. `None` (the default): every
    /// request uses the blocking methods, from the device's queue.
    fn async_granularity(&self) -> Option<NonZeroU64> {
        None
    }
    /// Start reading `buf.len()` bytes at `offset` (aligned, within the size) into `buf`;
    /// `done` gets the result and `buf` back. Must not wait for held I/O. The default reads
    /// with [`read`](Self::read) here: right only for a file whose I/O never waits (RAM).
    fn read_async(&self, offset: u64, mut buf: Vec<u8>, done: IoDone) {
        let r = self.read(offset, &mut buf);
        done(r, buf);
    }
    /// Start writing `buf` at `offset` (aligned, within the size); `done` gets the result
    /// and `buf` back. Must not wait for held I/O (default: [`write`](Self::write) here).
    fn write_async(&self, offset: u64, buf: Vec<u8>, done: IoDone) {
        let r = self.write(offset, &buf);
        done(r, buf);
    }
    /// Start a [`flush`](Self::flush). Must not wait for held I/O (default: the flush here).
    fn flush_async(&self, done: Done) {
        done(self.flush());
    }
    /// Start a [`discard`](Self::discard) of an aligned range (default: the discard here).
    fn discard_async(&self, offset: u64, len: u64, done: Done) {
        done(self.discard(offset, len));
    }
    /// Start a [`write_zeroes`](Self::write_zeroes) of an aligned range (default: here).
    fn write_zeroes_async(&self, offset: u64, len: u64, done: Done) {
        done(self.write_zeroes(offset, len));
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

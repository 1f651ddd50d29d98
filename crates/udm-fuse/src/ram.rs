//! A RAM-backed [`MapperSource`] for tests, examples and measurements: devices can be added,
//! removed and renamed while mounted, and every call is counted.
//!
//! By default a discard does not zero (it fills with [`DISCARD_FILL`]), like a real device
//! without that guarantee, so callers that rely on discarded data reading back as zeros
//! show up.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::source::{MappedFile, MapperSource};

/// The byte a discarded range reads back as.
pub const DISCARD_FILL: u8 = 0xa5;

/// How often each operation reached a [`RamFile`].
#[derive(Debug, Default)]
pub struct RamCounters {
    /// Successful reads.
    pub reads: AtomicU64,
    /// Successful writes.
    pub writes: AtomicU64,
    /// Flushes.
    pub flushes: AtomicU64,
    /// Discards.
    pub discards: AtomicU64,
    /// Write-zeroes calls.
    pub write_zeroes: AtomicU64,
    /// FUSE opens.
    pub opens: AtomicU64,
    /// FUSE releases.
    pub releases: AtomicU64,
}

/// A device held in memory.
#[derive(Debug)]
pub struct RamFile {
    data: RwLock<Vec<u8>>,
    read_only: bool,
    discard_zeroes: bool,
    gone: AtomicBool,
    /// Counts of the calls made.
    pub counters: RamCounters,
}

impl RamFile {
    /// A zero-filled device of `size` bytes.
    pub fn new(size: usize, read_only: bool) -> Self {
        RamFile {
            data: RwLock::new(vec![0; size]),
            read_only,
            discard_zeroes: false,
            gone: AtomicBool::new(false),
            counters: RamCounters::default(),
        }
    }

    /// Makes discards zero the range and say so ([`MappedFile::discard_zeroes`]).
    pub fn with_zeroing_discard(mut self) -> Self {
        self.discard_zeroes = true;
        self
    }

    /// A copy of the whole content.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.read().clone()
    }

    /// Overwrites the content from `offset` (no size change; panics past the end).
    pub fn fill(&self, offset: usize, bytes: &[u8]) {
        self.data.write()[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    fn range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, i32> {
        if self.gone.load(Ordering::Acquire) {
            return Err(libc::ESHUTDOWN);
        }
        let start = usize::try_from(offset).map_err(|_| libc::EINVAL)?;
        let len = usize::try_from(len).map_err(|_| libc::EINVAL)?;
        let end = start.checked_add(len).ok_or(libc::EINVAL)?;
        if end > self.data.read().len() {
            return Err(libc::EINVAL);
        }
        Ok(start..end)
    }

    fn writable_range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, i32> {
        if self.read_only {
            return Err(libc::EROFS);
        }
        self.range(offset, len)
    }

    fn len_u64(len: usize) -> u64 {
        u64::try_from(len).unwrap_or(u64::MAX)
    }
}

impl MappedFile for RamFile {
    fn size(&self) -> u64 {
        Self::len_u64(self.data.read().len())
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), i32> {
        let r = self.range(offset, Self::len_u64(buf.len()))?;
        buf.copy_from_slice(&self.data.read()[r]);
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8]) -> Result<(), i32> {
        let r = self.writable_range(offset, Self::len_u64(buf.len()))?;
        self.data.write()[r].copy_from_slice(buf);
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn flush(&self) -> Result<(), i32> {
        self.range(0, 0)?;
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), i32> {
        let r = self.writable_range(offset, len)?;
        let fill = if self.discard_zeroes { 0 } else { DISCARD_FILL };
        self.data.write()[r].fill(fill);
        self.counters.discards.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), i32> {
        let r = self.writable_range(offset, len)?;
        self.data.write()[r].fill(0);
        self.counters.write_zeroes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn discard_zeroes(&self) -> bool {
        self.discard_zeroes
    }

    /// RAM never waits: every request takes the asynchronous path, which runs it at once.
    fn async_granularity(&self) -> Option<NonZeroU64> {
        NonZeroU64::new(1)
    }

    fn opened(&self) {
        self.counters.opens.fetch_add(1, Ordering::Relaxed);
    }

    fn released(&self) {
        self.counters.releases.fetch_add(1, Ordering::Relaxed);
    }
}

/// A changeable set of [`RamFile`]s.
#[derive(Debug, Default)]
pub struct RamSource {
    devices: Mutex<BTreeMap<u64, (String, Arc<RamFile>)>>,
    next_id: AtomicU64,
}

impl RamSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a device and returns its id.
    pub fn add(&self, name: &str, file: Arc<RamFile>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.devices.lock().insert(id, (name.to_owned(), file));
        id
    }

    /// Removes a device; I/O on files still open then fails with `ESHUTDOWN`.
    pub fn remove(&self, id: u64) -> Option<Arc<RamFile>> {
        let (_, file) = self.devices.lock().remove(&id)?;
        file.gone.store(true, Ordering::Release);
        Some(file)
    }

    /// Renames a device; returns false if there is no such device.
    pub fn rename(&self, id: u64, name: &str) -> bool {
        match self.devices.lock().get_mut(&id) {
            Some(entry) => {
                name.clone_into(&mut entry.0);
                true
            }
            None => false,
        }
    }
}

impl MapperSource for RamSource {
    fn list(&self) -> Vec<(u64, String)> {
        self.devices
            .lock()
            .iter()
            .map(|(id, (name, _))| (*id, name.clone()))
            .collect()
    }

    fn open(&self, id: u64) -> Option<Arc<dyn MappedFile>> {
        let file: Arc<dyn MappedFile> = self.devices.lock().get(&id)?.1.clone();
        Some(file)
    }
}

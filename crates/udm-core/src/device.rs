//! A mapped device: name, uuid, device number, the active and inactive table
//! slots, the suspend gate, open count and event counter, and the I/O entry points.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::bio::{Bio, BioData, Op};
use crate::blockdev::DevNumber;
use crate::engine::EngineInner;
use crate::error::{DmError, Errno};
use crate::sector::{SECTOR_SHIFT, SECTOR_SIZE};
use crate::table::Table;
use crate::target::ExtentKind;

const BLOCKED: u64 = 1 << 63;

/// Holds new I/O while a device is suspended and counts I/O in flight, without a
/// lock on the fast path: one atomic add on entry and one subtract on exit.
struct Gate {
    state: AtomicU64,
    mu: Mutex<()>,
    cv: Condvar,
}

impl Gate {
    fn new() -> Self {
        Gate {
            state: AtomicU64::new(0),
            mu: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    #[inline]
    fn enter(&self) {
        loop {
            let prev = self.state.fetch_add(1, Ordering::SeqCst);
            if prev & BLOCKED == 0 {
                return;
            }
            self.exit();
            let mut g = self.mu.lock();
            while self.state.load(Ordering::SeqCst) & BLOCKED != 0 {
                self.cv.wait(&mut g);
            }
        }
    }

    #[inline]
    fn exit(&self) {
        let prev = self.state.fetch_sub(1, Ordering::SeqCst);
        if prev & BLOCKED != 0 && prev & !BLOCKED == 1 {
            let _g = self.mu.lock();
            self.cv.notify_all();
        }
    }

    fn block(&self) {
        self.state.fetch_or(BLOCKED, Ordering::SeqCst);
    }

    fn drain(&self) {
        let mut g = self.mu.lock();
        while self.state.load(Ordering::SeqCst) & !BLOCKED != 0 {
            self.cv.wait(&mut g);
        }
    }

    fn unblock(&self) {
        let _g = self.mu.lock();
        self.state.fetch_and(!BLOCKED, Ordering::SeqCst);
        self.cv.notify_all();
    }
}

struct GateGuard<'a>(&'a Gate);

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        self.0.exit();
    }
}

/// The `__dev_status` facts of a device, as DEV_STATUS reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub uuid: String,
    pub dev: DevNumber,
    pub open_count: i32,
    pub event_nr: u32,
    pub suspended: bool,
    pub read_only: bool,
    pub live_present: bool,
    pub inactive_present: bool,
    pub target_count: u32,
    pub deferred_remove: bool,
}

/// Disk geometry set by DEV_SET_GEOMETRY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u32,
    pub heads: u32,
    pub sectors: u32,
    pub start: u64,
}

pub struct Device {
    pub(crate) id: u64,
    pub(crate) number: DevNumber,
    pub(crate) name: RwLock<String>,
    pub(crate) uuid: RwLock<String>,
    gate: Gate,
    pub(crate) active: ArcSwapOption<Table>,
    pub(crate) inactive: Mutex<Option<Arc<Table>>>,
    suspended: AtomicBool,
    events: Mutex<u32>,
    events_cv: Condvar,
    pub(crate) open_count: AtomicI32,
    pub(crate) deferred_remove: AtomicBool,
    pub(crate) removed: AtomicBool,
    pub(crate) geometry: Mutex<Option<Geometry>>,
    /// Serialises control operations (load, suspend, resume) on this device.
    pub(crate) ctl: Mutex<()>,
    pub(crate) engine: Weak<EngineInner>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &*self.name.read())
            .field("number", &self.number)
            .finish()
    }
}

impl Device {
    pub(crate) fn new(
        id: u64,
        number: DevNumber,
        name: String,
        uuid: String,
        engine: Weak<EngineInner>,
    ) -> Self {
        Device {
            id,
            number,
            name: RwLock::new(name),
            uuid: RwLock::new(uuid),
            gate: Gate::new(),
            active: ArcSwapOption::empty(),
            inactive: Mutex::new(None),
            suspended: AtomicBool::new(false),
            events: Mutex::new(0),
            events_cv: Condvar::new(),
            open_count: AtomicI32::new(0),
            deferred_remove: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            geometry: Mutex::new(None),
            ctl: Mutex::new(()),
            engine,
        }
    }

    /// A stable identifier that survives renames (the minor number).
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn name(&self) -> String {
        self.name.read().clone()
    }
    pub fn uuid(&self) -> String {
        self.uuid.read().clone()
    }
    pub fn dev_number(&self) -> DevNumber {
        self.number
    }
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }
    pub fn event_nr(&self) -> u32 {
        *self.events.lock()
    }

    /// Size of the live table in sectors (0 without one).
    pub fn size_sectors(&self) -> u64 {
        self.active.load().as_ref().map_or(0, |t| t.size())
    }

    /// Whether the live table is read-only.
    pub fn read_only(&self) -> bool {
        self.active.load().as_ref().is_some_and(|t| t.read_only())
    }

    pub fn info(&self, query_inactive: bool) -> DeviceInfo {
        let live = self.active.load_full();
        let inactive = self.inactive.lock().clone();
        let (read_only, target_count) = if query_inactive {
            inactive
                .as_ref()
                .map_or((false, 0), |t| (t.read_only(), t.targets().len() as u32))
        } else {
            live.as_ref()
                .map_or((false, 0), |t| (t.read_only(), t.targets().len() as u32))
        };
        DeviceInfo {
            name: self.name(),
            uuid: self.uuid(),
            dev: self.number,
            open_count: self.open_count.load(Ordering::SeqCst),
            event_nr: self.event_nr(),
            suspended: self.is_suspended(),
            read_only,
            live_present: live.is_some(),
            inactive_present: inactive.is_some(),
            target_count,
            deferred_remove: self.deferred_remove.load(Ordering::SeqCst),
        }
    }

    /// Raise a device event (what `dm_table_event` does): wakes DEV_WAIT callers.
    pub fn raise_event(&self) {
        self.bump_event();
        if let Some(engine) = self.engine.upgrade() {
            engine.bump_global_event();
        }
    }

    /// Count a device event and wake DEV_WAIT callers (the global counter is the caller's).
    pub(crate) fn bump_event(&self) {
        let mut e = self.events.lock();
        *e = e.wrapping_add(1);
        self.events_cv.notify_all();
    }

    /// Block until the event counter differs from `event_nr` (or the device is removed).
    pub fn wait_event(&self, event_nr: u32, timeout: Option<Duration>) -> Result<u32, DmError> {
        let mut e = self.events.lock();
        while *e == event_nr {
            if self.is_removed() {
                return Err(DmError::NoDevice(self.name()));
            }
            match timeout {
                Some(t) => {
                    if self.events_cv.wait_for(&mut e, t).timed_out() {
                        return Err(DmError::new(Errno(libc::EINTR), "wait timed out"));
                    }
                }
                None => self.events_cv.wait(&mut e),
            }
        }
        Ok(*e)
    }

    /// Mark the device gone and release I/O held by a suspend: it completes with
    /// ESHUTDOWN instead of waiting for a resume that will never come.
    pub(crate) fn kill(&self) {
        self.removed.store(true, Ordering::SeqCst);
        self.gate.unblock();
        self.wake_waiters();
    }

    pub(crate) fn wake_waiters(&self) {
        let _e = self.events.lock();
        self.events_cv.notify_all();
    }

    /// Suspend: run presuspend hooks, hold new I/O, wait for in-flight I/O unless
    /// `noflush`, then run postsuspend hooks. Already suspended is a no-op.
    pub(crate) fn suspend(&self, noflush: bool) {
        if self.is_suspended() {
            return;
        }
        let live = self.active.load_full();
        if let Some(t) = &live {
            for tt in t.targets() {
                tt.target.presuspend();
            }
        }
        self.gate.block();
        if !noflush {
            self.gate.drain();
        }
        self.suspended.store(true, Ordering::SeqCst);
        if let Some(t) = &live {
            for tt in t.targets() {
                tt.target.postsuspend();
            }
        }
    }

    /// Resume: swap in the inactive table if one is staged (suspending first), then
    /// release held I/O. Returns whether a table was swapped in.
    pub(crate) fn resume(&self, noflush: bool) -> Result<bool, DmError> {
        // The staged table stays in its slot until it is live: the engine's cycle
        // check reads the staged slot, then the live one, and must find the table's
        // edges in one of them at every moment. (The caller holds `ctl`, so no load
        // or clear changes the slot meanwhile.)
        let staged = self.inactive.lock().clone();
        let swapped = staged.is_some();
        if let Some(new) = staged {
            self.suspend(noflush);
            // Even after a noflush suspend, I/O already running on the old table
            // completes there before the new one is installed.
            self.gate.drain();
            let old_size = self.size_sectors();
            if old_size != new.size() {
                *self.geometry.lock() = None;
            }
            let old = self.active.swap(Some(new));
            let staged = self.inactive.lock().take();
            drop(staged);
            drop(old);
            if let Some(engine) = self.engine.upgrade() {
                engine.bump_global_event();
            }
        }
        if self.is_suspended() {
            let live = self.active.load_full();
            let Some(t) = live.filter(|t| t.size() > 0) else {
                return Err(DmError::new(
                    Errno::EINVAL,
                    "cannot resume a device without a table",
                ));
            };
            for tt in t.targets() {
                tt.target.preresume()?;
            }
            for tt in t.targets() {
                tt.target.resume();
            }
            self.suspended.store(false, Ordering::SeqCst);
            self.gate.unblock();
        }
        Ok(swapped)
    }

    /// Submit one bio (device-relative sectors). Blocks while the device is suspended.
    #[inline]
    pub fn submit(&self, bio: Bio<'_>) -> Result<(), Errno> {
        if self.removed.load(Ordering::Relaxed) {
            return Err(Errno::ESHUTDOWN);
        }
        self.gate.enter();
        let _g = GateGuard(&self.gate);
        // Held while suspended and released by a removal: the device is gone.
        if self.removed.load(Ordering::Relaxed) {
            return Err(Errno::ESHUTDOWN);
        }
        let table = self.active.load();
        match &*table {
            Some(t) => t.submit(bio),
            None => Err(Errno::EIO),
        }
    }

    /// Read whole sectors starting at `sector`.
    pub fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let len = sectors_of(buf.len())?;
        self.submit(Bio {
            op: Op::Read,
            sector,
            len,
            data: BioData::Read(buf),
            fua: false,
            may_unmap: false,
            fast_only: false,
        })
    }

    /// Write whole sectors starting at `sector`.
    pub fn write(&self, sector: u64, buf: &[u8], fua: bool) -> Result<(), Errno> {
        let len = sectors_of(buf.len())?;
        self.submit(Bio {
            op: Op::Write,
            sector,
            len,
            data: BioData::Write(buf),
            fua,
            may_unmap: false,
            fast_only: false,
        })
    }

    pub fn flush(&self) -> Result<(), Errno> {
        self.submit(Bio {
            op: Op::Flush,
            sector: 0,
            len: 0,
            data: BioData::None,
            fua: false,
            may_unmap: false,
            fast_only: false,
        })
    }

    pub fn discard(&self, sector: u64, len: u64) -> Result<(), Errno> {
        self.submit(Bio {
            op: Op::Discard,
            sector,
            len,
            data: BioData::None,
            fua: false,
            may_unmap: true,
            fast_only: false,
        })
    }

    pub fn write_zeroes(
        &self,
        sector: u64,
        len: u64,
        may_unmap: bool,
        fua: bool,
    ) -> Result<(), Errno> {
        self.zeroes(sector, len, may_unmap, fua, false)
    }

    /// Write zeroes only if every underlying device can zero without writing zeros
    /// (NBD's FAST_ZERO); otherwise EOPNOTSUPP. A range over several targets may be
    /// zeroed in part before a later target refuses, as the NBD spec allows.
    pub fn write_zeroes_fast_only(
        &self,
        sector: u64,
        len: u64,
        may_unmap: bool,
        fua: bool,
    ) -> Result<(), Errno> {
        self.zeroes(sector, len, may_unmap, fua, true)
    }

    fn zeroes(
        &self,
        sector: u64,
        len: u64,
        may_unmap: bool,
        fua: bool,
        fast_only: bool,
    ) -> Result<(), Errno> {
        self.submit(Bio {
            op: Op::WriteZeroes,
            sector,
            len,
            data: BioData::None,
            fua,
            may_unmap,
            fast_only,
        })
    }

    /// Read at any byte offset: partial sectors at either end go through a bounce buffer.
    pub fn read_bytes(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let (head, mid, tail) = split_unaligned(offset, buf.len() as u64);
        let mut pos = 0usize;
        if head > 0 {
            let mut b = [0u8; SECTOR_SIZE as usize];
            let s = offset >> SECTOR_SHIFT;
            self.read(s, &mut b)?;
            let inner = (offset % SECTOR_SIZE) as usize;
            buf[..head as usize].copy_from_slice(&b[inner..inner + head as usize]);
            pos = head as usize;
        }
        if mid > 0 {
            let s = (offset + pos as u64) >> SECTOR_SHIFT;
            self.read(s, &mut buf[pos..pos + mid as usize])?;
            pos += mid as usize;
        }
        if tail > 0 {
            let mut b = [0u8; SECTOR_SIZE as usize];
            self.read((offset + pos as u64) >> SECTOR_SHIFT, &mut b)?;
            buf[pos..].copy_from_slice(&b[..tail as usize]);
        }
        Ok(())
    }

    /// Write at any byte offset: partial sectors are read, modified and written back.
    /// Concurrent unaligned writers to the same sector are not serialised against
    /// each other, as with a raw block device.
    pub fn write_bytes(&self, offset: u64, buf: &[u8], fua: bool) -> Result<(), Errno> {
        let (head, mid, tail) = split_unaligned(offset, buf.len() as u64);
        let mut pos = 0usize;
        if head > 0 {
            let mut b = [0u8; SECTOR_SIZE as usize];
            let s = offset >> SECTOR_SHIFT;
            self.read(s, &mut b)?;
            let inner = (offset % SECTOR_SIZE) as usize;
            b[inner..inner + head as usize].copy_from_slice(&buf[..head as usize]);
            self.write(s, &b, fua)?;
            pos = head as usize;
        }
        if mid > 0 {
            let s = (offset + pos as u64) >> SECTOR_SHIFT;
            self.write(s, &buf[pos..pos + mid as usize], fua)?;
            pos += mid as usize;
        }
        if tail > 0 {
            let mut b = [0u8; SECTOR_SIZE as usize];
            let s = (offset + pos as u64) >> SECTOR_SHIFT;
            self.read(s, &mut b)?;
            b[..tail as usize].copy_from_slice(&buf[pos..]);
            self.write(s, &b, fua)?;
        }
        Ok(())
    }

    /// Allocation map of `[sector, sector+len)`, as (kind, sectors) runs.
    pub fn extents(&self, sector: u64, len: u64) -> Result<Vec<(ExtentKind, u64)>, Errno> {
        if self.removed.load(Ordering::Relaxed) {
            return Err(Errno::ESHUTDOWN);
        }
        self.gate.enter();
        let _g = GateGuard(&self.gate);
        let table = self.active.load();
        let mut out = Vec::new();
        match &*table {
            Some(t) => t.extents(sector, len, &mut out),
            None => return Err(Errno::EIO),
        }
        Ok(out)
    }

    /// Open the device (counted in `open_count`, like a block device open).
    pub fn open(self: &Arc<Self>) -> Result<OpenHandle, DmError> {
        // Under the namespace lock, so that an open never races a removal's check
        // of the open count.
        match self.engine.upgrade() {
            Some(engine) => {
                let _ns = engine.ns.lock();
                self.open_locked()
            }
            None => self.open_locked(),
        }
    }

    /// [`Device::open`] with the namespace lock held by the caller.
    pub(crate) fn open_locked(self: &Arc<Self>) -> Result<OpenHandle, DmError> {
        if self.is_removed() {
            return Err(DmError::NoDevice(self.name()));
        }
        self.open_count.fetch_add(1, Ordering::SeqCst);
        Ok(OpenHandle { dev: self.clone() })
    }
}

fn sectors_of(len: usize) -> Result<u64, Errno> {
    if len as u64 % SECTOR_SIZE != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(len as u64 >> SECTOR_SHIFT)
}

/// Bytes before the first sector boundary, whole sectors, bytes after the last.
fn split_unaligned(offset: u64, len: u64) -> (u64, u64, u64) {
    let inner = offset % SECTOR_SIZE;
    if inner != 0 {
        let head = (SECTOR_SIZE - inner).min(len);
        let rest = len - head;
        (head, rest & !(SECTOR_SIZE - 1), rest % SECTOR_SIZE)
    } else {
        (0, len & !(SECTOR_SIZE - 1), len % SECTOR_SIZE)
    }
}

/// An open of a device; closing it (drop) may complete a deferred removal.
pub struct OpenHandle {
    dev: Arc<Device>,
}

impl OpenHandle {
    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }
}

impl std::fmt::Debug for OpenHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OpenHandle").field(&self.dev).finish()
    }
}

impl Drop for OpenHandle {
    fn drop(&mut self) {
        let Some(engine) = self.dev.engine.upgrade() else {
            self.dev.open_count.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        // The last close and a deferred remove both decide under the namespace lock:
        // either the remove sees this open and marks the device, and this close then
        // removes it, or it sees the device closed and removes it itself.
        let removed = {
            let mut ns = engine.ns.lock();
            let prev = self.dev.open_count.fetch_sub(1, Ordering::SeqCst);
            if prev == 1 {
                engine.deferred_remove_locked(&mut ns, &self.dev)
            } else {
                None
            }
        };
        if let Some(tables) = removed {
            engine.deferred_removed(&self.dev, tables);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_unaligned;

    #[test]
    fn unaligned_split() {
        assert_eq!(split_unaligned(0, 1024), (0, 1024, 0));
        assert_eq!(split_unaligned(100, 10), (10, 0, 0));
        assert_eq!(split_unaligned(100, 1000), (412, 512, 76));
        assert_eq!(split_unaligned(512, 700), (0, 512, 188));
    }
}

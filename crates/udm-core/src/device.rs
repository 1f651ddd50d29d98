//! A mapped device: name, uuid, device number, the active and inactive table
//! slots, the suspend gate, open count and event counter, and the I/O entry points.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::bio::{Bio, InFlight, Op, WaitGuard, Waiter};
use crate::blockdev::DevNumber;
use crate::engine::EngineInner;
use crate::error::{DmError, Errno};
use crate::gate::Gate;
use crate::io::dispatch;
use crate::sector::{Sector, SECTOR_SHIFT, SECTOR_SIZE};
use crate::services::pool;
use crate::table::Table;
use crate::target::ExtentKind;

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
    gate: Arc<Gate>,
    /// This device, for work that outlives a call (requeue, pool jobs).
    me: Weak<Device>,
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
        me: Weak<Device>,
    ) -> Self {
        Device {
            me,
            id,
            number,
            name: RwLock::new(name),
            uuid: RwLock::new(uuid),
            gate: Arc::new(Gate::new()),
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

    /// A device outside any engine, live with `table` at once: for embedders and
    /// fuzzing, where no namespace or control interface is wanted.
    pub fn standalone(name: &str, table: Table) -> Arc<Device> {
        let dev = Arc::new_cyclic(|me| {
            Device::new(
                0,
                DevNumber::new(0, 0),
                name.to_string(),
                String::new(),
                Weak::new(),
                me.clone(),
            )
        });
        dev.active.store(Some(Arc::new(table)));
        dev
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
    /// Whether new I/O is being held: from the moment a suspend closes the gate
    /// (before it has drained) until resume.
    pub fn io_blocked(&self) -> bool {
        self.gate.is_blocked()
    }
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }
    pub fn event_nr(&self) -> u32 {
        *self.events.lock()
    }

    /// Size of the live table in sectors (0 without one).
    pub fn size_sectors(&self) -> u64 {
        self.active.load().as_ref().map_or(0, |t| t.size().get())
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

    /// Mark the device gone and fail the I/O held by a suspend with ESHUTDOWN
    /// instead of leaving it waiting for a resume that will never come.
    pub(crate) fn kill(&self) {
        self.removed.store(true, Ordering::SeqCst);
        for bio in self.gate.unblock() {
            bio.complete(Err(Errno::ESHUTDOWN));
        }
        self.wake_waiters();
    }

    /// A weak handle on this device, for work that outlives a call.
    pub(crate) fn handle(&self) -> Weak<Device> {
        self.me.clone()
    }

    /// Count `bio` (a piece being mapped) in flight until it ends.
    #[inline]
    pub(crate) fn account(&self, bio: &mut Bio) {
        self.gate.enter_always();
        bio.account(Arc::clone(&self.gate) as Arc<dyn InFlight>);
    }

    /// A bio its target pushed back (device-relative, no longer counted): held
    /// across a noflush suspend, failed during a flushing one, otherwise
    /// submitted again from the worker pool.
    pub(crate) fn requeue(&self, bio: Bio) {
        match self.gate.hold_requeued(bio) {
            Ok(()) => {}
            Err((bio, true)) => bio.complete(Err(Errno::EIO)),
            Err((bio, false)) => {
                let me = self.handle();
                pool().spawn(move || match me.upgrade() {
                    Some(d) => d.submit(bio),
                    None => bio.complete(Err(Errno::ESHUTDOWN)),
                });
            }
        }
    }

    pub(crate) fn wake_waiters(&self) {
        let _e = self.events.lock();
        self.events_cv.notify_all();
    }

    /// Suspend, in the kernel's order: presuspend hooks, hold new I/O, wait for
    /// the I/O in flight (always: with `noflush` too), postsuspend hooks. With
    /// `noflush`, bios that targets requeue wait for resume instead of failing.
    /// Already suspended is a no-op.
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
        self.gate.block(noflush);
        self.gate.drain();
        self.suspended.store(true, Ordering::SeqCst);
        if let Some(t) = &live {
            for tt in t.targets() {
                tt.target.postsuspend();
            }
        }
    }

    /// Resume. With a staged table: suspend if needed, run the new table's
    /// preresume hooks while the old table still exists, swap, run the resume
    /// hooks, drop the old table, then release held I/O (to the new table).
    /// Without one: preresume and resume hooks of the live table, then release.
    /// A failing preresume leaves the device suspended (and discards a staged
    /// table). Returns whether a table was swapped in.
    pub(crate) fn resume(&self, noflush: bool) -> Result<bool, DmError> {
        // The staged table stays in its slot until it is live: the engine's cycle
        // check reads the staged slot, then the live one, and must find the table's
        // edges in one of them at every moment. (The caller holds `ctl`, so no load
        // or clear changes the slot meanwhile.)
        let staged = self.inactive.lock().clone();
        let swapped = staged.is_some();
        if let Some(new) = staged {
            self.suspend(noflush);
            for tt in new.targets() {
                if let Err(e) = tt.target.preresume() {
                    // Dropped outside the slot's lock: closing stacked devices
                    // takes the namespace lock.
                    let refused = self.inactive.lock().take();
                    drop(refused);
                    return Err(e);
                }
            }
            let old_size = self.size_sectors();
            if old_size != new.size().get() {
                *self.geometry.lock() = None;
            }
            let old = self.active.swap(Some(Arc::clone(&new)));
            let staged = self.inactive.lock().take();
            drop(staged);
            for tt in new.targets() {
                tt.target.resume();
            }
            drop(old);
            if let Some(engine) = self.engine.upgrade() {
                engine.bump_global_event();
            }
        } else if self.is_suspended() {
            let live = self.active.load_full();
            let Some(t) = live.filter(|t| !t.size().is_zero()) else {
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
        }
        if self.is_suspended() {
            self.suspended.store(false, Ordering::SeqCst);
            for bio in self.gate.unblock() {
                self.submit(bio);
            }
        }
        Ok(swapped)
    }

    /// Submit a bio (device-relative sectors); it is completed from whichever
    /// thread finishes it. While the device is suspended it is held, holding no
    /// thread.
    #[inline]
    pub fn submit(&self, bio: Bio) {
        if self.removed.load(Ordering::Relaxed) {
            return bio.complete(Err(Errno::ESHUTDOWN));
        }
        let Some(bio) = self.gate.enter(bio) else {
            return;
        };
        if self.removed.load(Ordering::Relaxed) {
            bio.complete(Err(Errno::ESHUTDOWN));
        } else {
            let table = self.active.load();
            match &*table {
                Some(t) => dispatch(t, self, bio),
                None => bio.complete(Err(Errno::EIO)),
            }
        }
        self.gate.exit();
    }

    /// Submit a bio over the caller's buffer and wait for it.
    fn submit_wait(
        &self,
        op: Op,
        sector: Sector,
        len: Sector,
        buf: Option<(*mut u8, usize, bool)>,
        setup: impl FnOnce(&mut Bio),
    ) -> Result<(), Errno> {
        let w = Waiter::new();
        let guard = WaitGuard(&w);
        let (ptr, bytes, writable) = buf.unwrap_or((std::ptr::null_mut(), 0, false));
        // SAFETY: `guard` waits for the bio's end before `w` and the caller's
        // buffer (borrowed for this call) go away, even on unwind.
        let mut bio = unsafe { Bio::borrowed(op, sector, len, ptr, bytes, writable, &w) };
        setup(&mut bio);
        self.submit(bio);
        let r = w.wait();
        drop(guard);
        r
    }

    /// Read whole sectors starting at `sector`.
    pub fn read(&self, sector: impl Into<Sector>, buf: &mut [u8]) -> Result<(), Errno> {
        let len = sectors_of(buf.len())?;
        let b = Some((buf.as_mut_ptr(), buf.len(), true));
        self.submit_wait(Op::Read, sector.into(), len, b, |_| {})
    }

    /// Write whole sectors starting at `sector`.
    pub fn write(&self, sector: impl Into<Sector>, buf: &[u8], fua: bool) -> Result<(), Errno> {
        let len = sectors_of(buf.len())?;
        let b = Some((buf.as_ptr() as *mut u8, buf.len(), false));
        self.submit_wait(Op::Write, sector.into(), len, b, |bio| bio.fua = fua)
    }

    pub fn flush(&self) -> Result<(), Errno> {
        self.submit_wait(Op::Flush, Sector::ZERO, Sector::ZERO, None, |_| {})
    }

    pub fn discard(&self, sector: impl Into<Sector>, len: impl Into<Sector>) -> Result<(), Errno> {
        self.submit_wait(Op::Discard, sector.into(), len.into(), None, |bio| {
            bio.may_unmap = true
        })
    }

    pub fn write_zeroes(
        &self,
        sector: impl Into<Sector>,
        len: impl Into<Sector>,
        may_unmap: bool,
        fua: bool,
    ) -> Result<(), Errno> {
        self.zeroes(sector.into(), len.into(), may_unmap, fua, false)
    }

    /// Write zeroes only if every underlying device can zero without writing zeros
    /// (NBD's FAST_ZERO); otherwise EOPNOTSUPP. A range over several targets may be
    /// zeroed in part before a later target refuses, as the NBD spec allows.
    pub fn write_zeroes_fast_only(
        &self,
        sector: impl Into<Sector>,
        len: impl Into<Sector>,
        may_unmap: bool,
        fua: bool,
    ) -> Result<(), Errno> {
        self.zeroes(sector.into(), len.into(), may_unmap, fua, true)
    }

    fn zeroes(
        &self,
        sector: Sector,
        len: Sector,
        may_unmap: bool,
        fua: bool,
        fast_only: bool,
    ) -> Result<(), Errno> {
        self.submit_wait(Op::WriteZeroes, sector, len, None, |bio| {
            bio.fua = fua;
            bio.may_unmap = may_unmap;
            bio.fast_only = fast_only;
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
        // Not a bio: it holds this thread until resume, as before.
        self.gate.wait_open(|| self.is_removed());
        if self.is_removed() {
            return Err(Errno::ESHUTDOWN);
        }
        let table = self.active.load();
        let mut out = Vec::new();
        match &*table {
            Some(t) => t.extents(Sector(sector), Sector(len), &mut out),
            None => return Err(Errno::EIO),
        }
        Ok(out.into_iter().map(|(k, n)| (k, n.get())).collect())
    }

    /// The live table.
    pub fn live_table(&self) -> Option<Arc<Table>> {
        self.active.load_full()
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

fn sectors_of(len: usize) -> Result<Sector, Errno> {
    if len as u64 % SECTOR_SIZE != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(Sector::from_bytes(len as u64))
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

//! Devices for testing targets: a RAM disk, and a device that injects faults
//! (fail, delay or corrupt chosen ranges, on reads or writes) in front of another
//! device, as thin-provisioning-tools' ramdisk and nbdkit's error filter do.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::bio::{Bio, Op};
use crate::blockdev::{BlockDev, DevNumber};
use crate::error::Errno;
use crate::io::execute;
use crate::sector::{Sector, SECTOR_SHIFT};
use crate::services::{pool, timers};

/// A device in memory.
pub struct RamDev {
    data: RwLock<Vec<u8>>,
    number: DevNumber,
}

impl RamDev {
    /// `sectors` zeroed sectors; `minor` numbers it (major 1, as Linux's ramdisks).
    pub fn new(sectors: u64, minor: u32) -> Arc<RamDev> {
        Arc::new(RamDev {
            data: RwLock::new(vec![0u8; (sectors << SECTOR_SHIFT) as usize]),
            number: DevNumber::new(1, minor),
        })
    }

    /// A copy of the whole contents.
    pub fn contents(&self) -> Vec<u8> {
        self.data.read().clone()
    }

    /// Write `buf` at byte `offset` directly (test set-up).
    pub fn poke(&self, offset: usize, buf: &[u8]) {
        self.data.write()[offset..offset + buf.len()].copy_from_slice(buf);
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let size = self.data.read().len();
        let start = usize::try_from(offset).map_err(|_| einval())?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= size)
            .ok_or_else(einval)?;
        Ok(start..end)
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

impl BlockDev for RamDev {
    fn size_sectors(&self) -> u64 {
        (self.data.read().len() as u64) >> SECTOR_SHIFT
    }
    fn dev_number(&self) -> DevNumber {
        self.number
    }
    fn display_name(&self) -> String {
        self.number.to_string()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.data.read()[r]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64, _fua: bool) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        self.data.write()[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, true, false)
    }
    fn write_zeroes(&self, offset: u64, len: u64, _unmap: bool, _fast: bool) -> io::Result<()> {
        let r = self.range(offset, usize::try_from(len).map_err(|_| einval())?)?;
        self.data.write()[r].fill(0);
        Ok(())
    }
}

/// Which bios a [`FaultRule`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Reads,
    /// Writes, discards, write-zeroes and flushes.
    Writes,
    Both,
}

/// What a [`FaultRule`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fail with this errno, touching nothing.
    Fail(Errno),
    /// Carry the bio out after this long (without holding a thread meanwhile).
    Delay(Duration),
    /// XOR byte `offset` of the bio's data with `xor` (reads after reading,
    /// writes in a copy before writing).
    Corrupt { offset: usize, xor: u8 },
    /// Park the bio until [`FaultDev::release`] (the test decides when it goes on).
    Hold,
}

/// A fault on the sectors `[start, start + len)` of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub dir: Dir,
    pub start: Sector,
    pub len: Sector,
    pub fault: Fault,
}

/// A device in front of `inner` that fails, delays or corrupts what its rules say.
pub struct FaultDev {
    inner: Arc<dyn BlockDev>,
    rules: Mutex<Vec<FaultRule>>,
    me: Weak<FaultDev>,
    /// Writes (and discards, write-zeroes) that reached `inner`.
    pub writes_done: AtomicU64,
    /// Reads that reached `inner`.
    pub reads_done: AtomicU64,
    parked: Mutex<Vec<(Bio, Sector, Vec<Fault>)>>,
}

impl FaultDev {
    pub fn new(inner: Arc<dyn BlockDev>) -> Arc<FaultDev> {
        Arc::new_cyclic(|me| FaultDev {
            inner,
            rules: Mutex::new(Vec::new()),
            me: me.clone(),
            writes_done: AtomicU64::new(0),
            reads_done: AtomicU64::new(0),
            parked: Mutex::new(Vec::new()),
        })
    }

    /// How many bios a [`Fault::Hold`] rule parks now.
    pub fn parked(&self) -> usize {
        self.parked.lock().len()
    }

    /// Carry out every parked bio (on this thread).
    pub fn release(&self) {
        let parked = std::mem::take(&mut *self.parked.lock());
        for (mut bio, sector, faults) in parked {
            let r = self.run(&mut bio, sector, &faults);
            bio.complete(r);
        }
    }

    /// Write `buf` at byte `offset` of the device below, directly (test set-up).
    pub fn poke(&self, offset: u64, buf: &[u8]) {
        let _ = self.inner.write_at(buf, offset, false);
    }

    pub fn add(&self, rule: FaultRule) {
        self.rules.lock().push(rule);
    }

    pub fn clear(&self) {
        self.rules.lock().clear();
    }

    fn matching(&self, write: bool, sector: Sector, len: Sector) -> Vec<Fault> {
        let end = sector + len.max(Sector(1));
        self.rules
            .lock()
            .iter()
            .filter(|r| match r.dir {
                Dir::Reads => !write,
                Dir::Writes => write,
                Dir::Both => true,
            })
            .filter(|r| r.start < end && sector < r.start + r.len)
            .map(|r| r.fault)
            .collect()
    }

    /// Carry a bio out now, applying the fail and corrupt rules.
    fn run(&self, bio: &mut Bio, sector: Sector, faults: &[Fault]) -> Result<(), Errno> {
        for f in faults {
            if let Fault::Fail(e) = f {
                return Err(*e);
            }
        }
        let corrupt = faults.iter().find_map(|f| match f {
            Fault::Corrupt { offset, xor } => Some((*offset, *xor)),
            _ => None,
        });
        let r = match (bio.op, corrupt) {
            (Op::Write, Some((o, x))) => {
                let mut copy = bio.data().to_vec();
                if let Some(b) = copy.get_mut(o) {
                    *b ^= x;
                }
                self.inner
                    .write_at(&copy, sector.bytes(), bio.fua)
                    .map_err(Errno::from)
            }
            _ => execute(&*self.inner, bio, sector),
        };
        if r.is_ok() {
            match bio.op {
                Op::Read => {
                    self.reads_done.fetch_add(1, Ordering::SeqCst);
                    if let (Some((o, x)), Some(d)) = (corrupt, bio.data_mut()) {
                        if let Some(b) = d.get_mut(o) {
                            *b ^= x;
                        }
                    }
                }
                Op::Flush => {}
                _ => {
                    self.writes_done.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        r
    }
}

impl BlockDev for FaultDev {
    fn size_sectors(&self) -> u64 {
        self.inner.size_sectors()
    }
    fn dev_number(&self) -> DevNumber {
        self.inner.dev_number()
    }
    fn display_name(&self) -> String {
        self.inner.display_name()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.inner.write_at(buf, offset, fua)
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool, fast: bool) -> io::Result<()> {
        self.inner.write_zeroes(offset, len, unmap, fast)
    }
    fn is_async(&self) -> bool {
        true
    }
    fn submit(&self, mut bio: Bio, sector: Sector) {
        let faults = self.matching(bio.op.is_write(), sector, bio.len);
        let delay = faults.iter().find_map(|f| match f {
            Fault::Delay(d) => Some(*d),
            _ => None,
        });
        if faults.contains(&Fault::Hold) {
            let rest = faults.into_iter().filter(|f| *f != Fault::Hold).collect();
            self.parked.lock().push((bio, sector, rest));
            return;
        }
        match (delay, self.me.upgrade()) {
            (Some(d), Some(me)) => {
                timers().schedule(Instant::now() + d, move || {
                    pool().spawn(move || {
                        let r = me.run(&mut bio, sector, &faults);
                        bio.complete(r);
                    })
                });
            }
            _ => {
                let r = self.run(&mut bio, sector, &faults);
                bio.complete(r);
            }
        }
    }
}

//! The I/O path of a table (the kernel's dm.c): split a bio at target
//! boundaries and each target's `max_io_len`, map every piece, carry out the
//! remaps (on the caller's thread for synchronous devices, the pieces of a split
//! spread over the worker pool), run `end_io`, and requeue what targets push back.

use std::io::{IoSlice, IoSliceMut};
use std::sync::Arc;

use crate::bio::{Bio, Op};
use crate::blockdev::BlockDev;
use crate::device::Device;
use crate::error::Errno;
use crate::sector::Sector;
use crate::services::pool;
use crate::table::Table;
use crate::target::{EndIo, Mapped};

/// Carry out `bio` on a synchronous device at device sector `sector`; the bio is
/// not completed (its caller decides, after `end_io`).
pub fn execute<D: BlockDev + ?Sized>(dev: &D, bio: &mut Bio, sector: Sector) -> Result<(), Errno> {
    let off = sector.bytes();
    let bytes = bio.bytes();
    let r = match bio.op {
        Op::Read => match bio.data_mut() {
            Some(buf) => dev.read_at(buf, off),
            None => return Err(Errno::EINVAL),
        },
        Op::Write => dev.write_at(bio.data(), off, bio.fua),
        Op::Flush => dev.flush(),
        Op::Discard => dev.discard(off, bytes),
        Op::WriteZeroes => dev.write_zeroes(off, bytes, bio.may_unmap, bio.fast_only),
    };
    r.map_err(Errno::from)?;
    if bio.fua && matches!(bio.op, Op::Discard | Op::WriteZeroes) {
        dev.flush().map_err(Errno::from)?;
    }
    Ok(())
}

/// Send `bio` to `dev` at `sector` and complete it when the device is done: what
/// a target that took a bio ([`Mapped::Submitted`]) uses to pass it on later.
pub fn issue(dev: &dyn BlockDev, mut bio: Bio, sector: Sector) {
    if dev.is_async() {
        dev.submit(bio, sector);
    } else {
        let r = execute(dev, &mut bio, sector);
        bio.complete(r);
    }
}

/// A remapped piece waiting to be carried out.
struct Pending {
    idx: usize,
    /// Which destination of the target's map (0, or the clone's index).
    dest: usize,
    dev: DevPtr,
    sector: Sector,
    bio: Bio,
}

/// A device of a live table. It lives as long as the table (its target holds an
/// `Arc` to it), and whoever holds a `DevPtr` holds the table.
#[derive(Clone, Copy)]
struct DevPtr(*const dyn BlockDev);
// SAFETY: BlockDev is Send + Sync; the pointer is only dereferenced while the
// table that owns the device is held (see `DevPtr`).
unsafe impl Send for DevPtr {}

impl DevPtr {
    fn new(d: &dyn BlockDev) -> DevPtr {
        // Erase the borrow's lifetime: validity is tied to the held table instead.
        // SAFETY: only the lifetime changes; see the type's rule.
        DevPtr(unsafe { std::mem::transmute::<&dyn BlockDev, &'static dyn BlockDev>(d) })
    }
    /// # Safety
    /// The table the device belongs to must be alive for `'a`.
    unsafe fn get<'a>(self) -> &'a dyn BlockDev {
        // SAFETY: by the caller's guarantee the pointee is alive.
        unsafe { &*self.0 }
    }
    fn addr(self) -> *const () {
        self.0 as *const ()
    }
}

/// Map and carry out `bio` (device-relative sectors) through `table` of `dev`.
pub(crate) fn dispatch(table: &Arc<Table>, dev: &Device, mut bio: Bio) {
    if bio.is_write() && table.read_only() && bio.op != Op::Flush {
        return bio.complete(Err(Errno::EROFS));
    }
    if bio.op == Op::Flush {
        return flush(table, dev, bio);
    }
    let end = bio.sector.checked_add(bio.len);
    if end.is_none_or(|e| e > table.size()) {
        return bio.complete(Err(Errno::EINVAL));
    }
    if bio.len.is_zero() {
        return bio.complete(Ok(()));
    }
    let mut batch: Vec<Pending> = Vec::new();
    loop {
        let Some(i) = table.lookup(bio.sector) else {
            return bio.complete(Err(Errno::EINVAL));
        };
        let t = &table.targets()[i];
        let off = bio.sector - t.start;
        let mut n = bio.len.min(t.start + t.len - bio.sector);
        if matches!(bio.op, Op::Read | Op::Write) || t.target.split_discards() {
            n = n.min(t.target.max_io_len(off).max(Sector(1)));
        }
        if n == bio.len {
            bio.sector = off;
            dev.account(&mut bio);
            if batch.is_empty() {
                // The rest is one piece with nothing batched: run it here, and
                // allocate nothing (the whole of an unsplit bio).
                return map_piece(table, dev, i, bio, None);
            }
            map_piece(table, dev, i, bio, Some(&mut batch));
            break;
        }
        let mut piece = bio.split_front(n);
        piece.sector = off;
        dev.account(&mut piece);
        map_piece(table, dev, i, piece, Some(&mut batch));
    }
    run_batch(table, dev, batch);
}

/// An empty flush goes to every target (each flushes what it uses); a device used
/// by several targets is flushed once.
fn flush(table: &Arc<Table>, dev: &Device, mut bio: Bio) {
    let n = table.targets().len();
    let mut pieces = Vec::with_capacity(n);
    for _ in 1..n {
        match bio.clone_shared() {
            Some(c) => pieces.push(c),
            None => return bio.complete(Err(Errno::EINVAL)),
        }
    }
    pieces.push(bio);
    let mut batch: Vec<Pending> = Vec::new();
    for (i, mut piece) in pieces.into_iter().enumerate() {
        piece.sector = Sector::ZERO;
        piece.len = Sector::ZERO;
        dev.account(&mut piece);
        map_piece(table, dev, i, piece, Some(&mut batch));
    }
    let mut seen: Vec<(*const (), Result<(), Errno>)> = Vec::new();
    for mut p in batch {
        let addr = p.dev.addr();
        let r = match seen.iter().find(|(a, _)| *a == addr) {
            Some((_, r)) => *r,
            None => {
                // SAFETY: `table` is held for the whole call.
                let r = execute(unsafe { p.dev.get() }, &mut p.bio, p.sector);
                seen.push((addr, r));
                r
            }
        };
        end_io(table, dev, p.idx, p.dest, p.bio, r);
    }
}

/// Run what `map` decided for one piece. Synchronous remaps join `batch`, or
/// without one run here at once.
fn map_piece(
    table: &Arc<Table>,
    dev: &Device,
    idx: usize,
    piece: Bio,
    batch: Option<&mut Vec<Pending>>,
) {
    let t = &table.targets()[idx];
    match t.target.map(piece) {
        Mapped::Remap(bio, bdev, sector) => {
            if bdev.is_async() {
                issue_async(table, dev, idx, 0, bdev, bio, sector);
            } else if let Some(batch) = batch {
                batch.push(Pending {
                    idx,
                    dest: 0,
                    dev: DevPtr::new(bdev),
                    sector,
                    bio,
                });
            } else {
                let mut bio = bio;
                let r = execute(bdev, &mut bio, sector);
                end_io(table, dev, idx, 0, bio, r);
            }
        }
        Mapped::Clone(mut bio, dests) => {
            if dests.is_empty() {
                return bio.complete(Err(Errno::EIO));
            }
            let mut clones = Vec::with_capacity(dests.len());
            for _ in 1..dests.len() {
                match bio.clone_shared() {
                    Some(c) => clones.push(c),
                    None => return bio.complete(Err(Errno::EINVAL)),
                }
            }
            clones.push(bio);
            let mut batch = batch;
            for (j, ((bdev, sector), mut c)) in dests.into_iter().zip(clones).enumerate() {
                if bdev.is_async() {
                    issue_async(table, dev, idx, j, bdev, c, sector);
                } else if let Some(b) = batch.as_deref_mut() {
                    b.push(Pending {
                        idx,
                        dest: j,
                        dev: DevPtr::new(bdev),
                        sector,
                        bio: c,
                    });
                } else {
                    let r = execute(bdev, &mut c, sector);
                    end_io(table, dev, idx, j, c, r);
                }
            }
        }
        Mapped::Submitted => {}
        Mapped::Requeue(bio) => requeue(table, dev, idx, bio),
        Mapped::Kill(bio, e) => bio.complete(Err(e)),
    }
}

/// Carry out the synchronous remaps of one bio: one on this thread; several
/// spread over the worker pool by device (each device's pieces in order), the last
/// group here, so that the pieces of a striped read run at once.
fn run_batch(table: &Arc<Table>, dev: &Device, mut batch: Vec<Pending>) {
    if batch.len() <= 1 {
        if let Some(mut p) = batch.pop() {
            // SAFETY: `table` is held for the whole call.
            let r = execute(unsafe { p.dev.get() }, &mut p.bio, p.sector);
            end_io(table, dev, p.idx, p.dest, p.bio, r);
        }
        return;
    }
    let mut groups: Vec<Vec<Pending>> = Vec::new();
    for p in batch {
        match groups.iter_mut().find(|g| g[0].dev.addr() == p.dev.addr()) {
            Some(g) => g.push(p),
            None => groups.push(vec![p]),
        }
    }
    // A group goes to the pool only when it moves enough data to pay for the
    // hand-off: on 2 cores a pool wake-up costs about as much as copying
    // 256 KiB from the page cache, and measured 1 MiB reads over 4 stripes ran
    // slower spread over the pool than as 4 vectored reads in a row.
    let here = groups.pop();
    let me = dev.handle();
    for g in groups {
        let bytes: u64 = g.iter().map(|p| p.bio.bytes()).sum();
        if bytes < OFFLOAD_MIN_BYTES {
            run_group(table, dev, g);
            continue;
        }
        let table = Arc::clone(table);
        let me = me.clone();
        pool().spawn(move || {
            let Some(dev) = me.upgrade() else {
                return; // the pieces end with EIO as they drop
            };
            run_group(&table, &dev, g);
        });
    }
    if let Some(g) = here {
        run_group(table, dev, g);
    }
}

/// Least data a device's share of a split must move to be carried out on the
/// worker pool rather than on the submitting thread.
const OFFLOAD_MIN_BYTES: u64 = 4 << 20;

/// Carry out one device's pieces in device order; pieces of the same op that lie
/// one after another on the device go as one vectored call.
fn run_group(table: &Arc<Table>, dev: &Device, mut g: Vec<Pending>) {
    g.sort_by_key(|p| p.sector);
    let mut results = vec![Ok(()); g.len()];
    let mut i = 0;
    while i < g.len() {
        let mut j = i + 1;
        while j < g.len()
            && matches!(g[i].bio.op, Op::Read | Op::Write)
            && g[j].bio.op == g[i].bio.op
            && g[j].bio.fua == g[i].bio.fua
            && g[j].sector == g[j - 1].sector + g[j - 1].bio.len
        {
            j += 1;
        }
        let r = if j - i == 1 {
            let p = &mut g[i];
            // SAFETY: `table` is held for the whole call.
            execute(unsafe { p.dev.get() }, &mut p.bio, p.sector)
        } else {
            run_vectored(&mut g[i..j])
        };
        results[i..j].fill(r);
        i = j;
    }
    for (p, r) in g.into_iter().zip(results) {
        end_io(table, dev, p.idx, p.dest, p.bio, r);
    }
}

/// One vectored read or write over consecutive pieces of one device.
fn run_vectored(run: &mut [Pending]) -> Result<(), Errno> {
    let first = &run[0];
    // SAFETY: the caller holds the table.
    let bdev = unsafe { first.dev.get() };
    let off = first.sector.bytes();
    let fua = first.bio.fua;
    let r = if first.bio.op == Op::Read {
        let mut bufs: Vec<IoSliceMut<'_>> = Vec::with_capacity(run.len());
        for p in run.iter_mut() {
            match p.bio.data_mut() {
                Some(d) => bufs.push(IoSliceMut::new(d)),
                None => return Err(Errno::EINVAL),
            }
        }
        bdev.read_vectored_at(&mut bufs, off)
    } else {
        let bufs: Vec<IoSlice<'_>> = run.iter().map(|p| IoSlice::new(p.bio.data())).collect();
        bdev.write_vectored_at(&bufs, off, fua)
    };
    r.map_err(Errno::from)
}

/// Issue to an asynchronous device (another udm device); `end_io` runs when it is done.
fn issue_async(
    table: &Arc<Table>,
    dev: &Device,
    idx: usize,
    dest: usize,
    bdev: &dyn BlockDev,
    bio: Bio,
    sector: Sector,
) {
    let tbl = Arc::clone(table);
    let me = dev.handle();
    let child = bio.chain(move |r, bio| match me.upgrade() {
        Some(dev) => end_io(&tbl, &dev, idx, dest, bio, r),
        None => bio.complete(r),
    });
    bdev.submit(child, sector);
}

/// A piece ended on its device: ask the target, then finish, retry or requeue it.
fn end_io(
    table: &Arc<Table>,
    dev: &Device,
    idx: usize,
    dest: usize,
    bio: Bio,
    r: Result<(), Errno>,
) {
    let t = &table.targets()[idx];
    match t.target.end_io(bio, dest, r) {
        EndIo::Done(bio, r) => bio.complete(r),
        EndIo::Retry(bio) => map_piece(table, dev, idx, bio, None),
        EndIo::Requeue(bio) => requeue(table, dev, idx, bio),
        EndIo::Incomplete => {}
    }
}

/// A piece pushed back by its target: device-relative again, no longer in flight,
/// and held by the device.
fn requeue(table: &Arc<Table>, dev: &Device, idx: usize, mut bio: Bio) {
    bio.sector += table.targets()[idx].start;
    bio.unaccount();
    dev.requeue(bio);
}

//! A block I/O request as it travels down the table. A [`Bio`] owns its window of
//! the submitter's buffer and its completion: a target may keep it after `map`
//! returns, split it, clone a write, and complete it from any thread. Completing
//! it (or dropping it, which completes it with EIO) is the only way it ends, and
//! the submitter gets its buffer back only then.
//!
//! Memory rule: the window points into memory that stays valid until the root
//! completion runs (a blocked caller waits for it; an owned buffer lives inside
//! the completion). Pieces of a split have disjoint windows; clones share one
//! read-only; a piece ends only by being consumed. So every access to the window
//! goes through the one live bio that covers it.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::Errno;
use crate::sector::Sector;

/// The operation of a [`Bio`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    /// An empty flush (PREFLUSH with no data).
    Flush,
    Discard,
    WriteZeroes,
}

impl Op {
    /// Whether the op changes the device (the kernel's `op_is_write`).
    pub fn is_write(self) -> bool {
        matches!(self, Op::Write | Op::Discard | Op::WriteZeroes | Op::Flush)
    }
    /// Whether the op carries a data buffer.
    pub fn has_data(self) -> bool {
        matches!(self, Op::Read | Op::Write)
    }
}

/// Something that counts I/O in flight and is told when a bio it counted ends
/// (a device's suspend gate).
pub(crate) trait InFlight: Send + Sync {
    fn io_done(&self);
}

/// How a bio reports its end.
enum Completion {
    /// Already reported.
    Done,
    /// A caller blocked in [`Waiter::wait`] on its own stack.
    Wait(*const Waiter),
    /// An asynchronous submitter's callback.
    Call(Box<dyn FnOnce(Result<(), Errno>) + Send>),
    /// One of several pieces (split or cloned) of one bio.
    Share(Arc<Shared>),
}

// SAFETY: the only non-Send part is the Waiter pointer; a Waiter is made of
// atomics (Sync) and stays alive until it is signalled.
unsafe impl Send for Completion {}

/// The in-flight counters a bio entered on its way down: one inline (a device
/// that is not stacked), more only for stacks.
#[derive(Default)]
struct Accounts {
    first: Option<Arc<dyn InFlight>>,
    more: Vec<Arc<dyn InFlight>>,
}

impl Accounts {
    fn push(&mut self, a: Arc<dyn InFlight>) {
        if self.first.is_none() {
            self.first = Some(a);
        } else {
            self.more.push(a);
        }
    }
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }
    /// Stop counting in the most recent counter (a requeued piece is not in flight).
    fn pop(&mut self) -> Option<Arc<dyn InFlight>> {
        self.more.pop().or_else(|| self.first.take())
    }
    fn release(self) {
        for a in self.more.into_iter().rev() {
            a.io_done();
        }
        if let Some(a) = self.first {
            a.io_done();
        }
    }
}

/// The node the pieces of a split or cloned bio report into; the last one to end
/// runs the original completion with the first error any piece had.
struct Shared {
    pending: AtomicUsize,
    /// 0 or the first errno.
    error: AtomicI32,
    end: Mutex<Option<(Completion, Accounts)>>,
}

impl Shared {
    fn piece_done(&self, r: Result<(), Errno>) {
        if let Err(e) = r {
            let _ = self
                .error
                .compare_exchange(0, e.0.max(1), Ordering::AcqRel, Ordering::Acquire);
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let taken = self.end.lock().take();
            if let Some((c, acct)) = taken {
                let e = self.error.load(Ordering::Acquire);
                finish(c, acct, if e == 0 { Ok(()) } else { Err(Errno(e)) });
            }
        }
    }
}

fn finish(c: Completion, acct: Accounts, r: Result<(), Errno>) {
    match c {
        Completion::Done => {}
        // SAFETY: a Waiter outlives every bio pointing at it: `Waiter::wait` (and
        // its guard on unwind) returns only after `signal`, which is the last access.
        Completion::Wait(w) => unsafe { Waiter::signal(w, r) },
        Completion::Call(f) => f(r),
        Completion::Share(s) => s.piece_done(r),
    }
    acct.release();
}

/// A blocked caller's completion, on its stack: no allocation on the fast path,
/// and no system call when the bio completes before the caller waits (the usual
/// case: a remap onto a file completes inline).
pub(crate) struct Waiter {
    /// PENDING, DONE, or SLEEPING (the caller sleeps on this futex word).
    state: AtomicU32,
    result: AtomicI32,
}

const PENDING: u32 = 0;
const DONE: u32 = 1;
const SLEEPING: u32 = 2;

impl Waiter {
    pub(crate) fn new() -> Waiter {
        Waiter {
            state: AtomicU32::new(PENDING),
            result: AtomicI32::new(0),
        }
    }

    /// # Safety
    /// `w` must point at a live Waiter; after this call nothing may touch it.
    unsafe fn signal(w: *const Waiter, r: Result<(), Errno>) {
        // SAFETY: the caller guarantees `w` is live until `state` is swapped.
        let (state, result) = unsafe { (&(*w).state, &(*w).result) };
        result.store(r.err().map_or(0, |e| e.0), Ordering::Relaxed);
        let word = state as *const AtomicU32;
        if state.swap(DONE, Ordering::AcqRel) == SLEEPING {
            // The waiter may already be gone: FUTEX_WAKE only uses the address
            // to find sleepers; at worst it wakes an unrelated futex user, who
            // re-checks its word (every futex user must tolerate that).
            // SAFETY: a plain system call; no memory is read or written.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    word,
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    1,
                );
            }
        }
    }

    pub(crate) fn wait(&self) -> Result<(), Errno> {
        loop {
            match self.state.load(Ordering::Acquire) {
                DONE => break,
                PENDING => {
                    let _ = self.state.compare_exchange(
                        PENDING,
                        SLEEPING,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                _ => {
                    // SAFETY: FUTEX_WAIT on our own live word, no timeout; it
                    // returns at once unless the word still says SLEEPING.
                    unsafe {
                        libc::syscall(
                            libc::SYS_futex,
                            &self.state as *const AtomicU32,
                            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                            SLEEPING,
                            std::ptr::null::<libc::timespec>(),
                        );
                    }
                }
            }
        }
        match self.result.load(Ordering::Relaxed) {
            0 => Ok(()),
            e => Err(Errno(e)),
        }
    }
}

/// Waits for the bio on `waiter` even while unwinding, so that the borrowed buffer
/// and the waiter are never freed under a live bio.
pub(crate) struct WaitGuard<'a>(pub(crate) &'a Waiter);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.wait();
    }
}

/// One piece of I/O, in sectors. Inside [`crate::Target::map`] the sector is
/// relative to the start of the target; `len` never crosses the target's end nor
/// its `max_io_len` boundary.
pub struct Bio {
    pub op: Op,
    pub sector: Sector,
    /// Length (zero for an empty flush).
    pub len: Sector,
    /// Force unit access: the data must be durable when the bio completes.
    pub fua: bool,
    /// Write zeroes may deallocate (NBD's absence of NO_HOLE).
    pub may_unmap: bool,
    /// Write zeroes only if that is fast (NBD's FAST_ZERO): otherwise fail with
    /// EOPNOTSUPP before changing anything, rather than write zeros.
    pub fast_only: bool,
    ptr: *mut u8,
    bytes: usize,
    /// The window is shared with clones: nobody may write to it.
    shared: bool,
    completion: Completion,
    acct: Accounts,
}

// SAFETY: the window and the waiter are valid until completion (module rule) and
// are reached only through this bio; the callback is Send; Shared and the
// in-flight counters are Sync.
unsafe impl Send for Bio {}

impl std::fmt::Debug for Bio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bio")
            .field("op", &self.op)
            .field("sector", &self.sector)
            .field("len", &self.len)
            .field("fua", &self.fua)
            .finish()
    }
}

impl Bio {
    fn raw(op: Op, sector: Sector, len: Sector, ptr: *mut u8, bytes: usize, c: Completion) -> Bio {
        Bio {
            op,
            sector,
            len,
            fua: false,
            may_unmap: false,
            fast_only: false,
            ptr,
            bytes,
            shared: false,
            completion: c,
            acct: Accounts::default(),
        }
    }

    /// A bio over an owned buffer (whole sectors; a partial last sector is not part
    /// of the I/O). `done` gets the result and the buffer back, from whichever
    /// thread completes the bio.
    pub fn with_buffer<F>(op: Op, sector: impl Into<Sector>, mut buf: Vec<u8>, done: F) -> Bio
    where
        F: FnOnce(Result<(), Errno>, Vec<u8>) + Send + 'static,
    {
        let len = Sector::from_bytes(buf.len() as u64);
        let ptr = buf.as_mut_ptr();
        // The Vec moves into the callback; its heap memory does not move.
        let call: Box<dyn FnOnce(Result<(), Errno>) + Send> = Box::new(move |r| done(r, buf));
        Bio::raw(
            op,
            sector.into(),
            len,
            ptr,
            len.bytes() as usize,
            Completion::Call(call),
        )
    }

    /// A bio without data (flush, discard, write zeroes).
    pub fn without_data<F>(
        op: Op,
        sector: impl Into<Sector>,
        len: impl Into<Sector>,
        done: F,
    ) -> Bio
    where
        F: FnOnce(Result<(), Errno>) + Send + 'static,
    {
        Bio::raw(
            op,
            sector.into(),
            len.into(),
            std::ptr::null_mut(),
            0,
            Completion::Call(Box::new(done)),
        )
    }

    /// A bio over a blocked caller's buffer.
    ///
    /// # Safety
    /// `ptr..ptr+bytes` and `w` must stay valid, and the buffer untouched by the
    /// caller, until `w` is signalled (see [`WaitGuard`]).
    /// `writable` is false for a caller's `&[u8]`: then nobody may write to it.
    pub(crate) unsafe fn borrowed(
        op: Op,
        sector: Sector,
        len: Sector,
        ptr: *mut u8,
        bytes: usize,
        writable: bool,
        w: &Waiter,
    ) -> Bio {
        let mut b = Bio::raw(op, sector, len, ptr, bytes, Completion::Wait(w));
        b.shared = !writable;
        b
    }

    pub fn is_write(&self) -> bool {
        self.op.is_write()
    }

    /// Length in bytes.
    pub fn bytes(&self) -> u64 {
        self.len.bytes()
    }

    /// The data: what a write carries, or what a read has read so far.
    pub fn data(&self) -> &[u8] {
        if self.bytes == 0 {
            return &[];
        }
        // SAFETY: the window is valid while this bio lives (module rule) and no
        // `&mut` to it can exist while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr, self.bytes) }
    }

    /// The data, writable; `None` when the window is shared with clones.
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if self.shared {
            return None;
        }
        if self.bytes == 0 {
            return Some(&mut []);
        }
        // SAFETY: the window is valid while this bio lives, it is not shared, and
        // pieces' windows are disjoint, so this is the only access.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr, self.bytes) })
    }

    /// End the bio with `r`.
    pub fn complete(mut self, r: Result<(), Errno>) {
        self.end(r);
    }

    fn end(&mut self, r: Result<(), Errno>) {
        let c = std::mem::replace(&mut self.completion, Completion::Done);
        let acct = std::mem::take(&mut self.acct);
        finish(c, acct, r);
    }

    /// Counted in flight by `a` until it ends.
    pub(crate) fn account(&mut self, a: Arc<dyn InFlight>) {
        self.acct.push(a);
    }

    /// Stop being counted by the counter added last, and tell it.
    pub(crate) fn unaccount(&mut self) {
        if let Some(a) = self.acct.pop() {
            a.io_done();
        }
    }

    /// Make this bio a piece of a shared node (if it is not one yet) and return the
    /// node, with one more piece expected.
    fn share(&mut self) -> Arc<Shared> {
        // A piece that counts in flight somewhere gets a node of its own, so that
        // its counters are released only when all its own pieces ended.
        if let (Completion::Share(s), true) = (&self.completion, self.acct.is_empty()) {
            s.pending.fetch_add(1, Ordering::AcqRel);
            return Arc::clone(s);
        }
        let c = std::mem::replace(&mut self.completion, Completion::Done);
        let acct = std::mem::take(&mut self.acct);
        let s = Arc::new(Shared {
            pending: AtomicUsize::new(2),
            error: AtomicI32::new(0),
            end: Mutex::new(Some((c, acct))),
        });
        self.completion = Completion::Share(Arc::clone(&s));
        s
    }

    /// Split off and return the first `sectors` sectors; `self` keeps the rest.
    /// Both end into the original completion, which runs when every piece ended.
    pub fn split_front(&mut self, sectors: Sector) -> Bio {
        let sectors = sectors.min(self.len);
        let s = self.share();
        let (ptr, bytes) = if self.bytes == 0 {
            (std::ptr::null_mut(), 0)
        } else {
            let b = (sectors.bytes() as usize).min(self.bytes);
            let front = self.ptr;
            // SAFETY: b <= self.bytes, so the new start stays inside the window.
            self.ptr = unsafe { self.ptr.add(b) };
            self.bytes -= b;
            (front, b)
        };
        let front = Bio {
            op: self.op,
            sector: self.sector,
            len: sectors,
            fua: self.fua,
            may_unmap: self.may_unmap,
            fast_only: self.fast_only,
            ptr,
            bytes,
            shared: self.shared,
            completion: Completion::Share(s),
            acct: Accounts::default(),
        };
        self.sector += sectors;
        self.len -= sectors;
        front
    }

    /// A clone that shares this bio's data read-only (a write sent to several
    /// devices); the original completion runs when both ended. Reads cannot be
    /// cloned (two writers to one buffer): `None`.
    pub fn clone_shared(&mut self) -> Option<Bio> {
        if self.op == Op::Read && self.bytes > 0 {
            return None;
        }
        let s = self.share();
        self.shared = true;
        Some(Bio {
            op: self.op,
            sector: self.sector,
            len: self.len,
            fua: self.fua,
            may_unmap: self.may_unmap,
            fast_only: self.fast_only,
            ptr: self.ptr,
            bytes: self.bytes,
            shared: true,
            completion: Completion::Share(s),
            acct: Accounts::default(),
        })
    }

    /// Hand the window to a new bio whose end runs `f` with this bio (which must
    /// not be used meanwhile: `f` receives it back). The engine uses this to run a
    /// target's `end_io` after an asynchronous device finished.
    pub fn chain<F>(self, f: F) -> Bio
    where
        F: FnOnce(Result<(), Errno>, Bio) + Send + 'static,
    {
        let (op, sector, len, fua, may_unmap, fast_only) = (
            self.op,
            self.sector,
            self.len,
            self.fua,
            self.may_unmap,
            self.fast_only,
        );
        let (ptr, bytes, shared) = (self.ptr, self.bytes, self.shared);
        let parent = self;
        Bio {
            op,
            sector,
            len,
            fua,
            may_unmap,
            fast_only,
            ptr,
            bytes,
            shared,
            completion: Completion::Call(Box::new(move |r| f(r, parent))),
            acct: Accounts::default(),
        }
    }
}

impl Drop for Bio {
    fn drop(&mut self) {
        if !matches!(self.completion, Completion::Done) {
            // A bio nobody completed must not leave its submitter waiting.
            self.end(Err(Errno::EIO));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn split_pieces_complete_the_original_once_with_the_first_error() {
        let (tx, rx) = mpsc::channel();
        let mut bio = Bio::with_buffer(Op::Read, 10, vec![0u8; 4096], move |r, buf| {
            tx.send((r, buf)).unwrap();
        });
        let mut a = bio.split_front(Sector(2));
        let b = bio.split_front(Sector(3));
        assert_eq!((a.sector.0, a.len.0, a.data().len()), (10, 2, 1024));
        assert_eq!((b.sector.0, b.len.0, b.data().len()), (12, 3, 1536));
        assert_eq!((bio.sector.0, bio.len.0, bio.data().len()), (15, 3, 1536));
        a.data_mut().unwrap().fill(7);
        a.complete(Ok(()));
        b.complete(Err(Errno::EIO));
        assert!(rx.try_recv().is_err());
        drop(bio); // an unfinished piece ends with EIO too
        let (r, buf) = rx.recv().unwrap();
        assert_eq!(r, Err(Errno::EIO));
        assert!(buf[..1024].iter().all(|&x| x == 7));
        assert!(buf[1024..].iter().all(|&x| x == 0));
    }

    #[test]
    fn clones_share_writes_only_and_are_read_only() {
        let (tx, rx) = mpsc::channel();
        let mut w = Bio::with_buffer(Op::Write, 0, vec![1u8; 512], move |r, _| {
            tx.send(r).unwrap();
        });
        let c = w.clone_shared().unwrap();
        assert!(w.data_mut().is_none());
        assert_eq!(c.data(), &[1u8; 512][..]);
        c.complete(Ok(()));
        assert!(rx.try_recv().is_err());
        w.complete(Ok(()));
        assert_eq!(rx.recv().unwrap(), Ok(()));

        let mut r = Bio::with_buffer(Op::Read, 0, vec![0u8; 512], |_, _| {});
        assert!(r.clone_shared().is_none());
        r.complete(Ok(()));
    }

    #[test]
    fn completion_from_another_thread_wakes_a_waiter() {
        let w = Waiter::new();
        let mut buf = vec![0u8; 512];
        // SAFETY: the guard below waits for the bio before buf and w go away.
        let mut bio = unsafe {
            Bio::borrowed(
                Op::Read,
                Sector(0),
                Sector(1),
                buf.as_mut_ptr(),
                512,
                true,
                &w,
            )
        };
        let guard = WaitGuard(&w);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            bio.data_mut().unwrap().fill(9);
            bio.complete(Err(Errno::ENXIO));
        });
        assert_eq!(w.wait(), Err(Errno::ENXIO));
        drop(guard);
        assert!(buf.iter().all(|&x| x == 9));
    }

    #[test]
    fn chain_returns_the_parent_after_the_child() {
        let (tx, rx) = mpsc::channel();
        let bio = Bio::with_buffer(Op::Read, 5, vec![0u8; 512], move |r, buf| {
            tx.send((r, buf[0])).unwrap();
        });
        let mut child = bio.chain(|r, mut parent| {
            parent.data_mut().unwrap()[0] ^= 0xff;
            parent.complete(r);
        });
        child.data_mut().unwrap()[0] = 0x0f;
        child.complete(Ok(()));
        assert_eq!(rx.recv().unwrap(), (Ok(()), 0xf0));
    }
}

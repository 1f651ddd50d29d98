//! The io_uring engine for files and block devices: [`UringDev`] is a [`FileDev`]
//! whose bios go through an io_uring instead of pread/pwrite on the submitting
//! thread. The engine uses it when [`EngineConfig::io_engine`] asks for
//! [`IoEngine::Uring`] and the kernel lets a ring be set up; otherwise files stay
//! [`FileDev`]s (one warning says why).
//!
//! Rings. An engine has a few rings (one per core, at most [`MAX_RINGS`]); each
//! thread submits to the one its slot names, so threads on different cores do not
//! queue behind each other on one ring's submission lock (the kernel also
//! serialises submissions to one ring). Pushing an entry takes the ring's
//! submission lock only for the push; telling the kernel (`io_uring_enter`)
//! happens after it, so concurrent submitters never wait for each other's
//! system call.
//!
//! Completion. Each entry's `user_data` is a leaked `Box<Req>` (the bio, the file,
//! where the op stands); the entry's completion gives it back to whoever reaps it,
//! exactly once, under the ring's completion lock. A read of the page cache
//! completes while the kernel is still in the submitter's `io_uring_enter`, so the
//! submitter reaps what is there at once, on its own thread, like a pread. What
//! completes later (a disk, O_DIRECT, a read the kernel hands to its workers) is
//! reaped by the ring's completion thread, which waits in the kernel only while
//! entries are outstanding and sleeps otherwise; a submitter whose request did
//! not finish during its own submission wakes it (so a page-cache read wakes no
//! one). A short read or write is queued again for the rest; a
//! read that meets the end of a file fails with EIO, as [`FileDev`] does.
//!
//! Memory. The kernel writes a read's bio window (or the request's own bounce
//! buffer, for unaligned O_DIRECT I/O) until the entry's completion is reaped;
//! the bio is inside the request and a bio's window lives until the bio is
//! completed, which happens only after the last completion of its request.
//!
//! Falling back. Discards and write-zeroes of block devices (ioctls) run on the
//! submitting thread as [`FileDev`] runs them; zeroing a file whose filesystem
//! cannot zero a range by fallocate writes zeros from the worker pool.

use std::cell::Cell;
use std::fmt;
use std::io::{self, IoSlice, IoSliceMut};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring, Probe};
use parking_lot::{Condvar, Mutex};

use crate::bio::{Bio, Op};
use crate::blockdev::{not_supported, BlockDev, Bounce, DevNumber, FileDev};
use crate::engine::{Engine, EngineConfig};
use crate::error::Errno;
use crate::sector::Sector;

/// How files and block devices are read and written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoEngine {
    /// pread/pwrite on the submitting thread (the pieces of a split spread over
    /// the worker pool).
    #[default]
    Sync,
    /// io_uring; where the kernel has none (or refuses it) the engine falls back
    /// to `Sync` with a warning. One blocking read at a time of cached data is
    /// slower than pread (an `io_uring_enter` costs more than a `pread`), and
    /// much slower on filesystems whose reads io_uring cannot try without
    /// blocking (tmpfs on Linux 6.18: every read goes to its worker threads);
    /// it pays where many bios are in flight at once on slow devices.
    Uring,
}

impl IoEngine {
    /// `UDM_IO_ENGINE` (`sync` or `uring`) when it is set, else [`IoEngine::Sync`]:
    /// what [`EngineConfig::default`] uses, so that a test suite can run on
    /// io_uring without a change to its code.
    pub fn from_env() -> IoEngine {
        match std::env::var("UDM_IO_ENGINE") {
            Ok(v) => v.parse().unwrap_or_else(|e: String| {
                tracing::warn!("UDM_IO_ENGINE: {e}; using sync");
                IoEngine::Sync
            }),
            Err(_) => IoEngine::Sync,
        }
    }
}

impl FromStr for IoEngine {
    type Err = String;
    fn from_str(s: &str) -> Result<IoEngine, String> {
        match s {
            "sync" => Ok(IoEngine::Sync),
            "uring" | "io_uring" => Ok(IoEngine::Uring),
            _ => Err(format!("{s}: the I/O engine is sync or uring")),
        }
    }
}

impl fmt::Display for IoEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoEngine::Sync => "sync",
            IoEngine::Uring => "uring",
        })
    }
}

/// Submission queue entries of one ring (the completion queue has twice as many,
/// and the kernel keeps what overflows it: IORING_FEAT_NODROP is required).
const ENTRIES: u32 = 256;
/// Most rings an engine sets up (one per core up to this).
const MAX_RINGS: usize = 4;
/// The most one read or write moves (Linux's MAX_RW_COUNT); more is a short I/O.
const MAX_RW: usize = 0x7fff_f000;
/// Times an op is queued again after EINTR, EAGAIN or ECANCELED before it fails.
const RETRIES: u8 = 8;
/// `user_data` of a NOP that only wakes the completion thread; every other
/// entry's is a `Box<Req>`, never null.
const WAKE: u64 = 0;
/// Completions taken off the queue under one hold of its lock.
const BATCH: usize = 32;
/// Batches a submitter reaps after submitting (the rest is the completion thread's).
const INLINE_BATCHES: usize = 4;
/// Reaps nest this deep on one thread (a completion that submits reaps again).
const MAX_DEPTH: u32 = 2;
/// io_uring_enter's IORING_ENTER_GETEVENTS: wait for `min_complete` completions.
const GETEVENTS: u32 = 1;

thread_local! {
    /// Which ring this thread submits to (assigned on first use).
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// How many reaps are running on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Test hook: the next ring set up on this thread fails.
    static FAIL_SETUP: Cell<bool> = const { Cell::new(false) };
    /// The request this thread's current submission waits for (its id), until it
    /// finishes on this thread.
    static AWAIT: Cell<usize> = const { Cell::new(0) };
}

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// Make the next io_uring setup on this thread fail as on a kernel without
/// io_uring (ENOSYS), to test the fallback to synchronous I/O.
#[doc(hidden)]
pub fn fail_next_setup_on_this_thread() {
    FAIL_SETUP.with(|f| f.set(true));
}

/// The rings `config` asks for: none for [`IoEngine::Sync`], and none (with one
/// warning) when io_uring cannot be set up here.
pub(crate) fn for_config(config: &EngineConfig) -> Option<Arc<Uring>> {
    match config.io_engine {
        IoEngine::Sync => None,
        IoEngine::Uring => match Uring::new() {
            Ok(u) => Some(Arc::new(u)),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "io_uring cannot be set up; files and block devices use synchronous I/O"
                );
                None
            }
        },
    }
}

impl Engine {
    /// The I/O engine files and block devices use: [`IoEngine::Uring`] only when
    /// it was asked for and could be set up.
    pub fn io_engine(&self) -> IoEngine {
        if self.inner.uring.is_some() {
            IoEngine::Uring
        } else {
            IoEngine::Sync
        }
    }
}

/// An engine's rings. Dropping it (with the engine's last [`UringDev`]) lets
/// each completion thread finish what is outstanding and exit.
pub(crate) struct Uring {
    rings: Vec<Arc<Ring>>,
}

impl Uring {
    fn new() -> io::Result<Uring> {
        Uring::with_limit(usize::MAX)
    }

    /// Rings that admit at most `limit` requests each (less if their completion
    /// queue is smaller).
    fn with_limit(limit: usize) -> io::Result<Uring> {
        if FAIL_SETUP.with(|f| f.replace(false)) {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let n = thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_RINGS);
        // Rings already started are closed again (by Drop) if a later one fails.
        let mut u = Uring {
            rings: Vec::with_capacity(n),
        };
        for i in 0..n {
            u.rings.push(Ring::start(i, limit)?);
        }
        Ok(u)
    }

    /// The ring of the calling thread.
    fn ring(&self) -> &Ring {
        let slot = SLOT.with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SLOT.fetch_add(1, Ordering::Relaxed));
            }
            s.get()
        });
        &self.rings[slot % self.rings.len()]
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        for r in &self.rings {
            r.close();
        }
    }
}

/// One io_uring with its completion thread.
struct Ring {
    uring: IoUring,
    /// Held while pushing to the submission queue (one `SubmissionQueue` at a time).
    sq: Mutex<()>,
    /// Held while taking completions off the queue (one `CompletionQueue` at a time).
    cq: Mutex<()>,
    /// Entries pushed whose completion has not been acted on yet.
    outstanding: AtomicUsize,
    /// The completion thread sleeps (on `wake`) rather than waiting in the kernel.
    sleeping: AtomicBool,
    idle: Mutex<()>,
    wake: Condvar,
    /// No more bios will come: exit once nothing is outstanding.
    closing: AtomicBool,
    /// Most requests admitted at once: the completion queue's size, less room
    /// for the closing NOP.
    limit: usize,
}

impl Ring {
    fn start(index: usize, limit: usize) -> io::Result<Arc<Ring>> {
        let uring = IoUring::new(ENTRIES)?;
        if !uring.params().is_feature_nodrop() {
            return Err(io::Error::other(
                "io_uring without IORING_FEAT_NODROP (Linux before 5.5)",
            ));
        }
        let mut probe = Probe::new();
        uring.submitter().register_probe(&mut probe)?;
        let ops = [
            (opcode::Nop::CODE, "NOP"),
            (opcode::Read::CODE, "READ"),
            (opcode::Write::CODE, "WRITE"),
            (opcode::Fsync::CODE, "FSYNC"),
            (opcode::Fallocate::CODE, "FALLOCATE"),
        ];
        for (code, name) in ops {
            if !probe.is_supported(code) {
                return Err(io::Error::other(format!(
                    "io_uring without IORING_OP_{name}"
                )));
            }
        }
        let cq_entries = uring.params().cq_entries();
        let ring = Arc::new(Ring {
            uring,
            sq: Mutex::new(()),
            cq: Mutex::new(()),
            outstanding: AtomicUsize::new(0),
            sleeping: AtomicBool::new(false),
            idle: Mutex::new(()),
            wake: Condvar::new(),
            closing: AtomicBool::new(false),
            limit: (cq_entries as usize)
                .saturating_sub(8)
                .clamp(1, limit.max(1)),
        });
        // A seccomp filter may let a ring be set up but not entered: go through
        // the kernel once before trusting it.
        ring.round_trip()?;
        let r = Arc::clone(&ring);
        thread::Builder::new()
            .name(format!("udm-uring-{index}"))
            .spawn(move || r.run())?;
        Ok(ring)
    }

    /// Run `f` on the submission queue, under the sq lock. The queue publishes
    /// its tail when dropped, so it must be dropped before the lock is released
    /// (a queue that outlived the lock would store a stale tail over another
    /// thread's push): hence this one way to reach it.
    fn with_sq<R>(&self, f: impl FnOnce(&mut squeue::SubmissionQueue<'_>) -> R) -> R {
        let _g = self.sq.lock();
        // SAFETY: the sq lock makes this the ring's only SubmissionQueue.
        let mut sq = unsafe { self.uring.submission_shared() };
        let r = f(&mut sq);
        drop(sq);
        r
    }

    /// A NOP through the kernel and back, before the ring is in use.
    fn round_trip(&self) -> io::Result<()> {
        let nop = opcode::Nop::new().build().user_data(WAKE);
        // SAFETY: a NOP refers to no memory.
        self.with_sq(|sq| unsafe { sq.push(&nop) })
            .map_err(|_| io::Error::other("io_uring queue full"))?;
        let mut tries = 0;
        loop {
            match self.enter(1, 1) {
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) && tries < RETRIES => tries += 1,
                Err(e) => return Err(e),
            }
        }
        let _g = self.cq.lock();
        // SAFETY: the cq lock makes this the ring's only CompletionQueue.
        let mut cq = unsafe { self.uring.completion_shared() };
        let first = cq.next();
        // The queue publishes its head when dropped: before the lock is released.
        drop(cq);
        match first {
            Some(c) if c.result() >= 0 => Ok(()),
            Some(c) => Err(io::Error::from_raw_os_error(-c.result())),
            None => Err(io::Error::other("io_uring NOP did not complete")),
        }
    }

    /// Count a new request in, unless the ring has `limit` outstanding already:
    /// then its submitter carries it out synchronously. So the completion queue
    /// never overflows (its entries are at most the outstanding requests), and a
    /// burst of submitters is held back by doing its own I/O, blocking no one.
    fn admit(&self) -> bool {
        if self.outstanding.fetch_add(1, Ordering::SeqCst) < self.limit {
            return true;
        }
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
        false
    }

    /// Queue `req`'s next step (counted in `outstanding`); the ring owns it until
    /// its completion is reaped.
    fn queue(&self, req: Box<Req>) {
        let entry = req.entry();
        self.push(entry.user_data(Box::into_raw(req) as u64));
    }

    /// Queue the next step of a request whose completion a reap is acting on
    /// (still counted until that is done, so the queue holds no more
    /// completions than `limit`); whoever reaps it, the completion thread is
    /// awake to wait for it.
    fn requeue(&self, req: Box<Req>) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        self.queue(req);
        self.kick();
    }

    fn push(&self, entry: squeue::Entry) {
        loop {
            // SAFETY: the memory an entry names (a bio's window or a bounce
            // buffer) belongs to the request its user_data owns, which is dropped
            // only after the entry's completion is reaped.
            let pushed = self.with_sq(|sq| unsafe { sq.push(&entry) }.is_ok());
            if pushed {
                break;
            }
            // Full: give the kernel what is queued (it takes all of it) and retry.
            if !self.submit_queued() {
                self.kick();
                thread::yield_now();
            }
        }
        self.submit_queued();
    }

    /// `io_uring_enter`: submit up to `to_submit` queued entries, then wait for
    /// `min_complete` completions. The kernel clamps `to_submit` to what is
    /// queued, but waits only if it submitted all it was asked to: waits pass
    /// 0 or an exact count.
    fn enter(&self, to_submit: u32, min_complete: u32) -> io::Result<usize> {
        let flags = if min_complete > 0 { GETEVENTS } else { 0 };
        // SAFETY: no extended argument is passed; the entries the kernel takes
        // were published by `push` (the SubmissionQueue's drop stores the tail).
        unsafe {
            self.uring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, min_complete, flags, None)
        }
    }

    /// Hand the queued entries to the kernel (all of them: asking for the ring's
    /// size, the queue's tail, which other threads write under the sq lock, is
    /// not read here). False when it would not take them now (EBUSY, EAGAIN):
    /// they stay queued, for the completion thread at the latest.
    fn submit_queued(&self) -> bool {
        loop {
            match self.enter(ENTRIES, 0) {
                Ok(_) => return true,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => return false,
            }
        }
    }

    /// Submit `req` and reap what completed at once (a page-cache read, inside
    /// the `io_uring_enter`), on this thread. If `req` did not finish here, the
    /// completion thread is woken to wait for it.
    fn submit(&self, req: Box<Req>) {
        let id = req.id;
        let outer = AWAIT.with(|a| a.replace(id));
        self.queue(req);
        let depth = DEPTH.with(|d| d.get());
        if depth < MAX_DEPTH {
            let _nest = Nest::enter(depth);
            for _ in 0..INLINE_BATCHES {
                if !self.reap(false) {
                    break;
                }
            }
        }
        // Still `id`: it did not finish on this thread (a nested submission that
        // finished it counts as not: a needless wake-up is harmless, a missing one
        // is not).
        if AWAIT.with(|a| a.replace(outer)) == id {
            self.kick();
        }
    }

    /// Wake the completion thread if it sleeps.
    fn kick(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            let _g = self.idle.lock();
            self.wake.notify_one();
        }
    }

    /// Take up to [`BATCH`] completions and act on them; false if there were none
    /// (or, without `wait`, if someone else is taking them).
    fn reap(&self, wait: bool) -> bool {
        let mut got = [(0u64, 0i32); BATCH];
        let mut n = 0;
        {
            let _g = if wait {
                self.cq.lock()
            } else {
                match self.cq.try_lock() {
                    Some(g) => g,
                    None => return false,
                }
            };
            // SAFETY: the cq lock makes this the ring's only CompletionQueue.
            let mut cq = unsafe { self.uring.completion_shared() };
            while n < BATCH {
                match cq.next() {
                    Some(c) => {
                        got[n] = (c.user_data(), c.result());
                        n += 1;
                    }
                    None => break,
                }
            }
            // The queue publishes its head when dropped: before the lock is released.
            drop(cq);
        }
        for &(user_data, res) in &got[..n] {
            // A completion callback that panics must not take the ring down with it.
            if catch_unwind(AssertUnwindSafe(|| self.process(user_data, res))).is_err() {
                tracing::error!("a bio completion panicked on an io_uring completion");
            }
            // Counted down only now: a request queued again is never at zero.
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
        n > 0
    }

    fn process(&self, user_data: u64, res: i32) {
        if user_data == WAKE {
            return;
        }
        // SAFETY: every entry but a wake-up carries a Box<Req> leaked by `queue`,
        // and each completion is taken off the queue once, under the cq lock.
        let req = unsafe { Box::from_raw(user_data as *mut Req) };
        req.step(self, res);
    }

    /// The completion thread: reap while anything is outstanding, sleep otherwise.
    fn run(self: Arc<Self>) {
        DEPTH.with(|d| d.set(1));
        let mut warned = false;
        loop {
            if self.outstanding.load(Ordering::SeqCst) == 0 {
                if self.closing.load(Ordering::SeqCst) {
                    return;
                }
                let mut g = self.idle.lock();
                self.sleeping.store(true, Ordering::SeqCst);
                while self.outstanding.load(Ordering::SeqCst) == 0
                    && !self.closing.load(Ordering::SeqCst)
                {
                    self.wake.wait(&mut g);
                }
                self.sleeping.store(false, Ordering::SeqCst);
                continue;
            }
            if self.reap(true) {
                continue;
            }
            // Hand the kernel what a failed submission left queued, then wait for
            // a completion (which also moves any overflowed ones into the queue).
            if self.with_sq(|sq| sq.len()) > 0 {
                self.submit_queued();
            }
            match self.enter(0, 1) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                    ) => {}
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "io_uring wait failed; retrying");
                        warned = true;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// No more submissions: the completion thread exits once nothing is outstanding.
    fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        // Wake the completion thread wherever it waits: a NOP's completion ends a
        // wait in the kernel, the condition variable a sleep.
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        self.push(opcode::Nop::new().build().user_data(WAKE));
        self.kick();
    }
}

/// Counts one reap on this thread while it lives.
struct Nest(u32);

impl Nest {
    fn enter(depth: u32) -> Nest {
        DEPTH.with(|d| d.set(depth + 1));
        Nest(depth)
    }
}

impl Drop for Nest {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(self.0));
    }
}

/// Where a request stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Read,
    Write {
        dsync: bool,
    },
    /// fallocate of the whole range (discard, write zeroes).
    Allocate {
        mode: i32,
    },
    /// fdatasync (a flush, or what follows a FUA write that had to go without
    /// RWF_DSYNC, or a FUA discard or write-zeroes).
    Sync,
}

/// A bio on its way through the ring.
struct Req {
    bio: Bio,
    file: Arc<FileDev>,
    stage: Stage,
    /// What the kernel reads or writes: the bio's window or `bounce`.
    ptr: *mut u8,
    /// Bytes of the I/O (of the range, for fallocate).
    len: usize,
    /// Device byte offset.
    off: u64,
    /// Bytes read or written so far.
    done: usize,
    /// An fdatasync follows the main op.
    sync_after: bool,
    /// Aligned memory for O_DIRECT I/O whose window is not aligned.
    bounce: Option<Bounce>,
    retries: u8,
    /// Its address when submitted: tells its submitter whether it finished.
    id: usize,
}

impl Req {
    fn entry(&self) -> squeue::Entry {
        let fd = types::Fd(self.file.raw_fd());
        let rest = (self.len - self.done).min(MAX_RW) as u32;
        let at = self.off + self.done as u64;
        match self.stage {
            Stage::Read => {
                // SAFETY: done < len, so the pointer stays inside the buffer.
                let p = unsafe { self.ptr.add(self.done) };
                opcode::Read::new(fd, p, rest).offset(at).build()
            }
            Stage::Write { dsync } => {
                // SAFETY: done < len, so the pointer stays inside the buffer.
                let p = unsafe { self.ptr.add(self.done) };
                let flags = if dsync { libc::RWF_DSYNC } else { 0 };
                opcode::Write::new(fd, p, rest)
                    .offset(at)
                    .rw_flags(flags)
                    .build()
            }
            Stage::Allocate { mode } => opcode::Fallocate::new(fd, self.len as u64)
                .offset(self.off)
                .mode(mode)
                .build(),
            Stage::Sync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        }
    }

    /// Act on the completion of the current step: queue the next one or finish.
    fn step(mut self: Box<Self>, ring: &Ring, res: i32) {
        if res < 0 {
            let e = -res;
            if matches!(e, libc::EINTR | libc::EAGAIN | libc::ECANCELED) && self.retries < RETRIES {
                self.retries += 1;
                return self.requeue(ring);
            }
            match self.stage {
                // Some files refuse RWF_DSYNC: write, then fdatasync (as FileDev does).
                Stage::Write { dsync: true } if e == libc::EOPNOTSUPP => {
                    self.stage = Stage::Write { dsync: false };
                    self.sync_after = true;
                    return self.requeue(ring);
                }
                Stage::Allocate { .. }
                    if self.bio.op == Op::WriteZeroes
                        && not_supported(&io::Error::from_raw_os_error(e)) =>
                {
                    return self.zero_by_writing();
                }
                _ => {}
            }
            let e = if e == libc::ECANCELED { libc::EIO } else { e };
            return self.finish(Err(Errno(e)));
        }
        if matches!(self.stage, Stage::Read | Stage::Write { .. }) {
            if res == 0 {
                // A read past the end of a file (which shrank under its table) fails
                // as a block device's would; a write that moves nothing is an error.
                return self.finish(Err(Errno::EIO));
            }
            self.done = (self.done + res as usize).min(self.len);
            self.retries = 0;
            if self.done < self.len {
                return self.requeue(ring);
            }
        }
        if self.sync_after && self.stage != Stage::Sync {
            self.stage = Stage::Sync;
            self.retries = 0;
            return self.requeue(ring);
        }
        self.finish(Ok(()))
    }

    fn requeue(self: Box<Self>, ring: &Ring) {
        ring.requeue(self);
    }

    /// The request is done with the ring: its submitter need not wake anyone.
    fn finished_here(&self) {
        AWAIT.with(|a| {
            if a.get() == self.id {
                a.set(0);
            }
        });
    }

    fn finish(self, r: Result<(), Errno>) {
        self.finished_here();
        let Req {
            mut bio,
            mut bounce,
            stage,
            ..
        } = self;
        if r.is_ok() && stage == Stage::Read {
            if let (Some(b), Some(dst)) = (bounce.as_mut(), bio.data_mut()) {
                dst.copy_from_slice(b.slice());
            }
        }
        bio.complete(r);
    }

    /// The filesystem cannot zero a range with fallocate: write zeros, from the
    /// worker pool (not on the completion thread), unless only a fast zeroing will do.
    fn zero_by_writing(self) {
        self.finished_here();
        let Req {
            bio,
            file,
            off,
            len,
            sync_after,
            ..
        } = self;
        if bio.fast_only {
            return bio.complete(Err(Errno::EOPNOTSUPP));
        }
        crate::services::pool().spawn(move || {
            let r = file.write_zero_buffers(off, len as u64).and_then(|()| {
                if sync_after {
                    file.flush()
                } else {
                    Ok(())
                }
            });
            bio.complete(r.map_err(Errno::from));
        });
    }
}

/// A file or block device whose bios go through io_uring. It is the [`FileDev`]
/// it wraps in every other respect: the same name in tables and deps, the same
/// synchronous methods (which targets may call), one per underlying file.
pub struct UringDev {
    file: Arc<FileDev>,
    uring: Arc<Uring>,
}

impl fmt::Debug for UringDev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UringDev").field(&self.file).finish()
    }
}

impl UringDev {
    pub(crate) fn new(file: Arc<FileDev>, uring: Arc<Uring>) -> UringDev {
        UringDev { file, uring }
    }

    pub fn file(&self) -> &FileDev {
        &self.file
    }
}

impl BlockDev for UringDev {
    fn size_sectors(&self) -> u64 {
        self.file.size_sectors()
    }
    fn dev_number(&self) -> DevNumber {
        self.file.dev_number()
    }
    fn display_name(&self) -> String {
        self.file.display_name()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.file.write_at(buf, offset, fua)
    }
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<()> {
        self.file.read_vectored_at(bufs, offset)
    }
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64, fua: bool) -> io::Result<()> {
        self.file.write_vectored_at(bufs, offset, fua)
    }
    fn flush(&self) -> io::Result<()> {
        self.file.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.file.discard(offset, len)
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_unmap: bool,
        fast_only: bool,
    ) -> io::Result<()> {
        self.file.write_zeroes(offset, len, may_unmap, fast_only)
    }
    fn extent(&self, offset: u64, len: u64) -> (bool, u64) {
        self.file.extent(offset, len)
    }
    fn read_only(&self) -> bool {
        self.file.read_only()
    }
    fn is_async(&self) -> bool {
        true
    }

    fn submit(&self, mut bio: Bio, sector: Sector) {
        let f = &self.file;
        let off = sector.bytes();
        let (stage, ptr, len, bounce, sync_after) = match bio.op {
            Op::Read => {
                let Some(buf) = bio.data_mut() else {
                    return bio.complete(Err(Errno::EINVAL));
                };
                if buf.is_empty() {
                    return bio.complete(Ok(()));
                }
                let (p, n) = (buf.as_mut_ptr(), buf.len());
                if f.dio_ok(p, n, off) {
                    (Stage::Read, p, n, None, false)
                } else {
                    let mut b = Bounce::new(n);
                    (Stage::Read, b.slice().as_mut_ptr(), n, Some(b), false)
                }
            }
            Op::Write => {
                if f.read_only() {
                    return bio.complete(Err(Errno::EROFS));
                }
                let buf = bio.data();
                if buf.is_empty() {
                    return bio.complete(Ok(()));
                }
                let stage = Stage::Write { dsync: bio.fua };
                let (p, n) = (buf.as_ptr(), buf.len());
                if f.dio_ok(p, n, off) {
                    // The kernel only reads through this pointer.
                    (stage, p as *mut u8, n, None, false)
                } else {
                    let mut b = Bounce::new(n);
                    b.slice().copy_from_slice(buf);
                    (stage, b.slice().as_mut_ptr(), n, Some(b), false)
                }
            }
            Op::Flush => {
                if f.read_only() {
                    return bio.complete(Ok(()));
                }
                (Stage::Sync, std::ptr::null_mut(), 0, None, false)
            }
            Op::Discard | Op::WriteZeroes => {
                if f.read_only() {
                    return bio.complete(Err(Errno::EROFS));
                }
                if f.is_block {
                    // Block devices discard and zero by ioctl: as FileDev does it.
                    let r = crate::io::execute(&**f, &mut bio, sector);
                    return bio.complete(r);
                }
                let mode = if bio.op == Op::Discard || bio.may_unmap {
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
                } else {
                    libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
                };
                let n = bio.bytes() as usize;
                (
                    Stage::Allocate { mode },
                    std::ptr::null_mut(),
                    n,
                    None,
                    bio.fua,
                )
            }
        };
        let mut req = Box::new(Req {
            bio,
            file: Arc::clone(f),
            stage,
            ptr,
            len,
            off,
            done: 0,
            sync_after,
            bounce,
            retries: 0,
            id: 0,
        });
        req.id = &*req as *const Req as usize;
        let ring = self.uring.ring();
        if !ring.admit() {
            // As many requests in flight as the ring takes: do this one here.
            let Req { mut bio, .. } = *req;
            let r = crate::io::execute(&**f, &mut bio, sector);
            return bio.complete(r);
        }
        ring.submit(req);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sector::SECTOR_SHIFT;
    use std::sync::mpsc;
    use std::time::Instant;

    fn setup(sectors: u64) -> Option<(tempfile::TempDir, Arc<UringDev>)> {
        let u = match Uring::new() {
            Ok(u) => Arc::new(u),
            Err(e) => {
                udm_testkit::unavailable(&format!("io_uring: {e}"));
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(sectors << SECTOR_SHIFT)
            .unwrap();
        let f = FileDev::open(&p, false, false, 1).unwrap();
        Some((dir, Arc::new(UringDev::new(Arc::new(f), u))))
    }

    #[test]
    fn completion_threads_exit_once_the_rings_are_dropped() {
        let u = match Uring::new() {
            Ok(u) => u,
            Err(e) => {
                udm_testkit::unavailable(&format!("io_uring: {e}"));
                return;
            }
        };
        let rings = u.rings.clone();
        drop(u);
        let end = Instant::now() + Duration::from_secs(10);
        while rings.iter().any(|r| Arc::strong_count(r) > 1) {
            assert!(Instant::now() < end, "a completion thread did not exit");
            thread::sleep(Duration::from_millis(5));
        }
        assert!(rings
            .iter()
            .all(|r| r.outstanding.load(Ordering::SeqCst) == 0));
    }

    /// Each completion submits the next bio (on whichever thread completes it):
    /// nested reaps stay shallow and every bio ends.
    #[test]
    fn completions_that_submit_again() {
        let Some((_dir, dev)) = setup(64) else { return };
        fn next(dev: Arc<UringDev>, n: u32, tx: mpsc::Sender<Result<(), Errno>>) {
            let d = Arc::clone(&dev);
            let sector = Sector(u64::from(n % 64));
            let bio = Bio::with_buffer(Op::Write, sector, vec![n as u8; 512], move |r, _| {
                if n == 0 || r.is_err() {
                    let _ = tx.send(r);
                } else {
                    next(d, n - 1, tx);
                }
            });
            dev.submit(bio, sector);
        }
        let (tx, rx) = mpsc::channel();
        next(Arc::clone(&dev), 2000, tx);
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(Ok(())));
        let mut b = [0u8; 512];
        dev.read_at(&mut b, 5 << SECTOR_SHIFT).unwrap();
        assert!(b.iter().all(|&x| x == 5));
    }

    /// A read that runs into the end of the file gets what is there, then EIO
    /// for the rest (the second, resubmitted part reads nothing).
    #[test]
    fn a_read_across_the_end_of_the_file_fails() {
        let Some((_dir, dev)) = setup(8) else { return };
        dev.write_at(&[1u8; 4096], 0, false).unwrap();
        let (tx, rx) = mpsc::channel();
        let bio = Bio::with_buffer(Op::Read, 4, vec![0u8; 4096], move |r, b| {
            let _ = tx.send((r, b));
        });
        dev.submit(bio, Sector(4));
        let (r, b) = rx.recv().unwrap();
        assert_eq!(r, Err(Errno::EIO));
        assert!(b[..2048].iter().all(|&x| x == 1), "the part before the end");
    }

    /// Past the limit a request is done on its submitter's thread; all end, and
    /// the data is where it should be.
    #[test]
    fn past_the_limit_submitters_do_their_own_io() {
        let u = match Uring::with_limit(2) {
            Ok(u) => Arc::new(u),
            Err(e) => {
                udm_testkit::unavailable(&format!("io_uring: {e}"));
                return;
            }
        };
        let r = &u.rings[0];
        assert!(r.admit() && r.admit() && !r.admit());
        r.outstanding.fetch_sub(2, Ordering::SeqCst);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::File::create(&p)
            .unwrap()
            .set_len(256 << 9)
            .unwrap();
        let f = FileDev::open(&p, false, false, 1).unwrap();
        let dev = Arc::new(UringDev::new(Arc::new(f), u));
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let dev = Arc::clone(&dev);
                thread::spawn(move || {
                    let (tx, rx) = mpsc::channel();
                    for k in 0..64u64 {
                        let tx = tx.clone();
                        let sector = k * 4 + u64::from(t);
                        let bio =
                            Bio::with_buffer(Op::Write, sector, vec![t + 1; 512], move |r, _| {
                                let _ = tx.send(r);
                            });
                        dev.submit(bio, Sector(sector));
                    }
                    drop(tx);
                    assert!(rx.iter().all(|r| r.is_ok()));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all = std::fs::read(&p).unwrap();
        for (s, b) in all.chunks(512).enumerate() {
            assert!(b.iter().all(|&x| x == (s % 4) as u8 + 1), "sector {s}");
        }
    }

    #[test]
    fn engine_names_parse_and_print() {
        for e in [IoEngine::Sync, IoEngine::Uring] {
            assert_eq!(e.to_string().parse::<IoEngine>(), Ok(e));
        }
        assert!("aio".parse::<IoEngine>().is_err());
    }
}

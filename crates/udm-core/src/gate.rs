//! The suspend gate of a device: counts I/O in flight without a lock on the fast
//! path (one atomic add on entry, one subtract at the end), and while the device
//! is suspended holds new bios in a queue, so that held I/O holds no thread.
//! Bios that targets push back (requeue) wait in the same place.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::bio::{Bio, InFlight};

const BLOCKED: u64 = 1 << 63;

pub(crate) struct Gate {
    state: AtomicU64,
    q: Mutex<Held>,
    cv: Condvar,
}

#[derive(Default)]
pub(crate) struct Held {
    /// Bios that arrived while suspended, in order.
    pub(crate) deferred: VecDeque<Bio>,
    /// The current suspend is a noflush one: requeued bios wait for resume.
    pub(crate) noflush: bool,
}

impl Gate {
    pub(crate) fn new() -> Self {
        Gate {
            state: AtomicU64::new(0),
            q: Mutex::new(Held::default()),
            cv: Condvar::new(),
        }
    }

    /// Count one more in flight unless the gate is closed; on a closed gate the bio
    /// is held and `None` returned.
    #[inline]
    pub(crate) fn enter(&self, bio: Bio) -> Option<Bio> {
        loop {
            let prev = self.state.fetch_add(1, Ordering::SeqCst);
            if prev & BLOCKED == 0 {
                return Some(bio);
            }
            self.exit();
            let mut q = self.q.lock();
            if self.state.load(Ordering::SeqCst) & BLOCKED != 0 {
                q.deferred.push_back(bio);
                return None;
            }
        }
    }

    /// Count one more in flight whether or not the gate is closed (a piece of a bio
    /// that already entered).
    #[inline]
    pub(crate) fn enter_always(&self) {
        self.state.fetch_add(1, Ordering::SeqCst);
    }

    #[inline]
    pub(crate) fn exit(&self) {
        let prev = self.state.fetch_sub(1, Ordering::SeqCst);
        if prev & BLOCKED != 0 && prev & !BLOCKED == 1 {
            let _q = self.q.lock();
            self.cv.notify_all();
        }
    }

    pub(crate) fn is_blocked(&self) -> bool {
        self.state.load(Ordering::SeqCst) & BLOCKED != 0
    }

    /// Close the gate: new bios are held from now on.
    pub(crate) fn block(&self, noflush: bool) {
        let mut q = self.q.lock();
        q.noflush = noflush;
        self.state.fetch_or(BLOCKED, Ordering::SeqCst);
    }

    /// Wait until nothing is in flight.
    pub(crate) fn drain(&self) {
        let mut q = self.q.lock();
        while self.state.load(Ordering::SeqCst) & !BLOCKED != 0 {
            self.cv.wait(&mut q);
        }
    }

    /// Hold a requeued bio if a noflush suspend is under way; otherwise give it back.
    /// The flag says whether the gate is closed (the caller then fails it).
    pub(crate) fn hold_requeued(&self, bio: Bio) -> Result<(), (Bio, bool)> {
        let mut q = self.q.lock();
        if self.is_blocked() {
            if q.noflush {
                q.deferred.push_back(bio);
                return Ok(());
            }
            return Err((bio, true));
        }
        Err((bio, false))
    }

    /// Open the gate and return what was held, in order.
    pub(crate) fn unblock(&self) -> VecDeque<Bio> {
        let mut q = self.q.lock();
        self.state.fetch_and(!BLOCKED, Ordering::SeqCst);
        q.noflush = false;
        self.cv.notify_all();
        std::mem::take(&mut q.deferred)
    }

    /// Wait (holding this thread) until the gate opens; for requests that are not
    /// bios. `gone` ends the wait early.
    pub(crate) fn wait_open(&self, gone: impl Fn() -> bool) {
        let mut q = self.q.lock();
        while self.is_blocked() && !gone() {
            self.cv.wait(&mut q);
        }
    }
}

impl InFlight for Gate {
    fn io_done(&self) {
        self.exit();
    }
}

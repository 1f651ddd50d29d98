//! Held I/O off the FUSE threads. Device I/O normally runs on the fuser thread that read
//! the request; a request that would wait (its device is suspended), or one that finds
//! every inline slot taken, is queued instead on its device's [`IoQueue`] and replied to
//! from that queue's worker thread (fuser's replies are `Send`).
//!
//! Why this shape: the hot path stays a direct call (two atomic operations more, no
//! copy, no thread hop), and the cost of a held device is bounded per device, not by the
//! mount's thread count: a device has at most one worker, started when it first has
//! queued work and ended after [`IDLE`] without any, so no request spawns a thread of its
//! own. The inline slots (one fewer than the fuser threads) cover the race a
//! [`MappedFile::held`](crate::MappedFile::held) check cannot: a request that passed the
//! check just before its device was suspended waits on its fuser thread, but such
//! waiters can never take the last thread, which keeps serving lookups, attributes,
//! listings and every other device's I/O through the queues.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing::warn;

/// How long an idle worker waits for more work before it ends.
const IDLE: Duration = Duration::from_secs(2);

/// A request to run off the fuser threads; it sends its own reply.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    worker: bool,
}

/// The queue of one device's requests that must not run on a fuser thread; they run in
/// order on one worker thread.
#[derive(Default)]
pub(crate) struct IoQueue {
    state: Mutex<State>,
    cv: Condvar,
}

impl IoQueue {
    pub(crate) fn push(self: &Arc<Self>, job: Job) {
        let mut st = self.state.lock();
        st.jobs.push_back(job);
        if st.worker {
            self.cv.notify_one();
            return;
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("udm-fuse-held".into())
            .spawn(move || me.run());
        match spawned {
            Ok(_) => st.worker = true,
            Err(e) => {
                // Without a worker the request can only run here, on the fuser thread.
                warn!("cannot start a FUSE I/O worker ({e}); running the request inline");
                let job = st.jobs.pop_back();
                drop(st);
                if let Some(job) = job {
                    job();
                }
            }
        }
    }

    fn run(&self) {
        let mut st = self.state.lock();
        loop {
            match st.jobs.pop_front() {
                Some(job) => {
                    drop(st);
                    job();
                    st = self.state.lock();
                }
                None => {
                    if self.cv.wait_for(&mut st, IDLE).timed_out() && st.jobs.is_empty() {
                        st.worker = false;
                        return;
                    }
                }
            }
        }
    }
}

/// Inline I/O slots shared by the fuser threads of one mount.
pub(crate) struct InlineSlots {
    used: AtomicUsize,
    max: usize,
}

/// One inline slot, given back on drop.
pub(crate) struct Slot<'a>(&'a InlineSlots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::Release);
    }
}

impl InlineSlots {
    /// `threads - 1` slots: one fuser thread is always free of device I/O.
    pub(crate) fn new(threads: usize) -> Self {
        InlineSlots {
            used: AtomicUsize::new(0),
            max: threads.saturating_sub(1),
        }
    }

    pub(crate) fn take(&self) -> Option<Slot<'_>> {
        let prev = self.used.fetch_add(1, Ordering::Acquire);
        if prev < self.max {
            Some(Slot(self))
        } else {
            self.used.fetch_sub(1, Ordering::Release);
            None
        }
    }
}

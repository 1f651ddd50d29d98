//! Blocking I/O off the FUSE threads. Reads, writes and flushes of a file with an
//! asynchronous path
//! ([`MappedFile::async_granularity`](crate::MappedFile::async_granularity)), and its
//! aligned discards and zeroings, are started on the fuser thread and answered from their
//! completion, and never come here. What is left may wait (a suspended device holds it
//! until resume): unaligned fallocate ranges, lseek's map of the device, a read or write
//! whose last block the size cuts short, and all I/O of a file without an asynchronous
//! path. Those are done with the blocking methods, queued on their device's [`IoQueue`]
//! and replied to from that queue's worker thread (fuser's replies are `Send`), so a held
//! device never blocks lookups, listings, attributes or another device's I/O.
//!
//! The cost of a held device is bounded per device, not by the number of requests: a
//! device has at most one worker, started when it first has queued work and ended after
//! [`IDLE`] without any, so no request spawns a thread of its own.

use std::collections::VecDeque;
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

/// The queue of one device's blocking requests, which must not run on a fuser thread;
/// they run in order on one worker thread.
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

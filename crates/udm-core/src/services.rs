//! What the core offers targets through their constructor's context: raising a
//! device event, timers, a worker pool for I/O that must leave the caller's
//! thread, and finding another udm device (a snapshot finds its origin).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, OnceLock, Weak};
use std::thread;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tracing::warn;

use crate::device::Device;
use crate::engine::EngineInner;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads that run jobs in order of submission, started on
/// first use. Jobs must not block for long (they issue I/O).
pub struct Pool {
    queue: Mutex<PoolQueue>,
    cv: Condvar,
    max_threads: usize,
}

#[derive(Default)]
struct PoolQueue {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

impl Pool {
    fn new(max_threads: usize) -> Pool {
        Pool {
            queue: Mutex::new(PoolQueue::default()),
            cv: Condvar::new(),
            max_threads: max_threads.max(1),
        }
    }

    /// Run `f` on a pool thread.
    pub fn spawn(self: &Arc<Self>, f: impl FnOnce() + Send + 'static) {
        let mut q = self.queue.lock();
        q.jobs.push_back(Box::new(f));
        if q.idle > 0 {
            self.cv.notify_one();
            return;
        }
        if q.threads < self.max_threads {
            let me = Arc::clone(self);
            let n = q.threads;
            let r = thread::Builder::new()
                .name(format!("udm-io-{n}"))
                .spawn(move || me.work());
            match r {
                Ok(_) => q.threads += 1,
                Err(e) => warn!(error = %e, "cannot start an I/O worker thread"),
            }
        }
        if q.threads == 0 {
            // No thread could start: run it here rather than never.
            let job = q.jobs.pop_back();
            drop(q);
            if let Some(job) = job {
                job();
            }
        }
    }

    fn work(&self) {
        let mut q = self.queue.lock();
        loop {
            if let Some(job) = q.jobs.pop_front() {
                drop(q);
                job();
                q = self.queue.lock();
                continue;
            }
            q.idle += 1;
            self.cv.wait(&mut q);
            q.idle -= 1;
        }
    }
}

/// One thread that runs jobs at their deadline.
pub struct Timers {
    state: Mutex<TimerState>,
    cv: Condvar,
}

#[derive(Default)]
struct TimerState {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    jobs: std::collections::HashMap<u64, Job>,
    seq: u64,
    started: bool,
}

impl Timers {
    fn new() -> Timers {
        Timers {
            state: Mutex::new(TimerState::default()),
            cv: Condvar::new(),
        }
    }

    /// Run `f` on the timer thread at `at` (at once if that is past). Jobs should
    /// hand real work to the pool.
    pub fn schedule(self: &Arc<Self>, at: Instant, f: impl FnOnce() + Send + 'static) {
        let mut st = self.state.lock();
        if !st.started {
            let me = Arc::clone(self);
            match thread::Builder::new()
                .name("udm-timer".into())
                .spawn(move || me.run())
            {
                Ok(_) => st.started = true,
                Err(e) => {
                    warn!(error = %e, "cannot start the timer thread; running the job now");
                    drop(st);
                    f();
                    return;
                }
            }
        }
        st.seq += 1;
        let id = st.seq;
        st.heap.push(Reverse((at, id)));
        st.jobs.insert(id, Box::new(f));
        self.cv.notify_one();
    }

    fn run(&self) {
        let mut st = self.state.lock();
        loop {
            let now = Instant::now();
            let next = st.heap.peek().map(|Reverse((t, id))| (*t, *id));
            match next {
                Some((t, id)) if t <= now => {
                    st.heap.pop();
                    let job = st.jobs.remove(&id);
                    drop(st);
                    if let Some(job) = job {
                        job();
                    }
                    st = self.state.lock();
                }
                Some((t, _)) => {
                    self.cv.wait_until(&mut st, t);
                }
                None => self.cv.wait(&mut st),
            }
        }
    }
}

/// The process-wide worker pool.
pub fn pool() -> &'static Arc<Pool> {
    static POOL: OnceLock<Arc<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Pool::new((2 * n).clamp(4, 16)))
    })
}

/// The process-wide timer thread.
pub fn timers() -> &'static Arc<Timers> {
    static TIMERS: OnceLock<Arc<Timers>> = OnceLock::new();
    TIMERS.get_or_init(|| Arc::new(Timers::new()))
}

/// A target's handle on the core, given to its constructor.
#[derive(Clone, Default)]
pub struct Services {
    device: Weak<Device>,
    engine: Weak<EngineInner>,
}

impl Services {
    pub(crate) fn new(device: Weak<Device>, engine: Weak<EngineInner>) -> Services {
        Services { device, engine }
    }

    /// For tables built outside an engine (tests): events go nowhere.
    pub fn detached() -> Services {
        Services::default()
    }

    /// Raise an event on the device the table belongs to (what `dm_table_event`
    /// does): `udmsetup wait` wakes. A table that is not (or no longer) a
    /// device's raises nothing.
    pub fn raise_event(&self) {
        if let Some(d) = self.device.upgrade() {
            d.raise_event();
        }
    }

    /// Run `f` at `at` on the timer thread.
    pub fn schedule(&self, at: Instant, f: impl FnOnce() + Send + 'static) {
        timers().schedule(at, f);
    }

    /// Run `f` on the worker pool.
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        pool().spawn(f);
    }

    /// The device this table is for.
    pub fn device(&self) -> Option<Arc<Device>> {
        self.device.upgrade()
    }

    /// Another udm device, by name.
    pub fn find_device(&self, name: &str) -> Option<Arc<Device>> {
        self.engine.upgrade()?.find_by_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn timers_run_in_deadline_order() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        for (i, ms) in [(1, 60u64), (2, 20), (3, 40)] {
            let tx = tx.clone();
            timers().schedule(now + Duration::from_millis(ms), move || {
                tx.send((i, Instant::now())).unwrap();
            });
        }
        let got: Vec<_> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![2, 3, 1]);
        assert!(got[0].1 >= now + Duration::from_millis(20));
    }

    #[test]
    fn pool_runs_every_job() {
        let (tx, rx) = mpsc::channel();
        for i in 0..100 {
            let tx = tx.clone();
            pool().spawn(move || tx.send(i).unwrap());
        }
        let mut got: Vec<i32> = (0..100).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }
}

//! The copy engine (the kernel's kcopyd): copy a region of one device to one or
//! more destinations, or zero them, in large pieces with several in flight, with
//! an optional throttle, cancellation, progress counters and a completion
//! callback. Snapshot copy-out and merge, mirror resync and live move use it.
//! Pieces are bios on the underlying devices, so nothing holds a thread while a
//! slow device works; the next piece starts from the worker pool, never by
//! recursion inside a completion.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::bio::{Bio, Op};
use crate::blockdev::BlockDev;
use crate::error::Errno;
use crate::io::issue;
use crate::sector::Sector;
use crate::services::{pool, timers};

/// How a copy is carried out.
#[derive(Clone, Copy, Debug)]
pub struct CopyConfig {
    /// Size of one piece.
    pub piece: Sector,
    /// Pieces in flight at once.
    pub depth: usize,
    /// At most this many bytes per second (0: no limit).
    pub max_bytes_per_sec: u64,
}

impl Default for CopyConfig {
    fn default() -> Self {
        CopyConfig {
            piece: Sector(2048), // 1 MiB
            depth: 4,
            max_bytes_per_sec: 0,
        }
    }
}

/// One end of a copy: a device and where on it.
#[derive(Clone)]
pub struct Region {
    pub dev: Arc<dyn BlockDev>,
    pub start: Sector,
}

/// What to do: copy `len` sectors from `from` (or write zeros when `None`) to
/// every destination.
pub struct CopyJob {
    pub from: Option<Region>,
    pub to: Vec<Region>,
    pub len: Sector,
}

type Done = Box<dyn FnOnce(Result<(), Errno>) + Send>;

struct State {
    job: CopyJob,
    config: CopyConfig,
    /// Next sector (relative to the job) not started yet.
    next: Mutex<Sector>,
    in_flight: AtomicU64,
    copied: AtomicU64,
    error: Mutex<Option<Errno>>,
    cancelled: AtomicBool,
    done: Mutex<Option<Done>>,
    started: Instant,
}

/// A running copy: its progress, and a way to stop it.
#[derive(Clone)]
pub struct CopyHandle {
    state: Arc<State>,
}

impl CopyHandle {
    /// (sectors copied, sectors in all).
    pub fn progress(&self) -> (Sector, Sector) {
        (
            Sector(self.state.copied.load(Ordering::SeqCst)),
            self.state.job.len,
        )
    }

    /// Stop starting pieces; the callback gets ECANCELED once those in flight ended.
    pub fn cancel(&self) {
        self.state.cancelled.store(true, Ordering::SeqCst);
        State::pump(&self.state);
    }
}

/// Start a copy; `done` runs once, from any thread, when it ended.
pub fn copy(
    job: CopyJob,
    config: CopyConfig,
    done: impl FnOnce(Result<(), Errno>) + Send + 'static,
) -> CopyHandle {
    let state = Arc::new(State {
        job,
        config: CopyConfig {
            piece: config.piece.max(Sector(1)),
            depth: config.depth.max(1),
            ..config
        },
        next: Mutex::new(Sector::ZERO),
        in_flight: AtomicU64::new(0),
        copied: AtomicU64::new(0),
        error: Mutex::new(None),
        cancelled: AtomicBool::new(false),
        done: Mutex::new(Some(Box::new(done))),
        started: Instant::now(),
    });
    State::pump(&state);
    CopyHandle { state }
}

impl State {
    fn stopping(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst) || self.error.lock().is_some()
    }

    /// Start pieces while there is room; finish when nothing is left.
    fn pump(me: &Arc<State>) {
        loop {
            if me.in_flight.load(Ordering::SeqCst) >= me.config.depth as u64 {
                return;
            }
            let piece = {
                let mut next = me.next.lock();
                if me.stopping() || *next >= me.job.len {
                    None
                } else if let Some(wait) = me.throttled(*next) {
                    let m = Arc::clone(me);
                    timers().schedule(Instant::now() + wait, move || State::pump(&m));
                    return;
                } else {
                    let at = *next;
                    let n = me.config.piece.min(me.job.len - at);
                    *next = at + n;
                    me.in_flight.fetch_add(1, Ordering::SeqCst);
                    Some((at, n))
                }
            };
            match piece {
                Some((at, n)) => State::start(me, at, n),
                None => {
                    if me.in_flight.load(Ordering::SeqCst) == 0 {
                        me.finish();
                    }
                    return;
                }
            }
        }
    }

    /// How long to wait before the piece at `at` may start under the throttle.
    fn throttled(&self, at: Sector) -> Option<Duration> {
        let limit = self.config.max_bytes_per_sec;
        if limit == 0 {
            return None;
        }
        let allowed = Duration::from_secs_f64(at.bytes() as f64 / limit as f64);
        allowed.checked_sub(self.started.elapsed())
    }

    fn finish(&self) {
        let Some(done) = self.done.lock().take() else {
            return;
        };
        let r = match *self.error.lock() {
            Some(e) => Err(e),
            None if self.cancelled.load(Ordering::SeqCst)
                && self.copied.load(Ordering::SeqCst) < self.job.len.get() =>
            {
                Err(Errno(libc::ECANCELED))
            }
            None => Ok(()),
        };
        done(r);
    }

    /// A piece ended: count it, then start more from the pool (not from inside
    /// this completion, which may run on the submitter's stack).
    fn piece_done(me: Arc<State>, n: Sector, r: Result<(), Errno>) {
        match r {
            Ok(()) => {
                me.copied.fetch_add(n.get(), Ordering::SeqCst);
            }
            Err(e) => {
                me.error.lock().get_or_insert(e);
            }
        }
        me.in_flight.fetch_sub(1, Ordering::SeqCst);
        pool().spawn(move || State::pump(&me));
    }

    fn start(me: &Arc<State>, at: Sector, n: Sector) {
        let m = Arc::clone(me);
        match &me.job.from {
            None => State::write(m, at, n, None),
            Some(src) => {
                let buf = vec![0u8; n.bytes() as usize];
                let bio = Bio::with_buffer(Op::Read, src.start + at, buf, move |r, buf| match r {
                    Ok(()) => State::write(m, at, n, Some(buf)),
                    Err(e) => State::piece_done(m, n, Err(e)),
                });
                issue(&*src.dev, bio, src.start + at);
            }
        }
    }

    /// Write the piece (or zeros) to every destination at once.
    fn write(me: Arc<State>, at: Sector, n: Sector, data: Option<Vec<u8>>) {
        let m = Arc::clone(&me);
        let mut bio = match data {
            Some(buf) => {
                Bio::with_buffer(Op::Write, at, buf, move |r, _| State::piece_done(m, n, r))
            }
            None => Bio::without_data(Op::WriteZeroes, at, n, move |r| State::piece_done(m, n, r)),
        };
        let k = me.job.to.len();
        if k == 0 {
            return bio.complete(Ok(()));
        }
        let mut clones = Vec::with_capacity(k);
        for _ in 1..k {
            match bio.clone_shared() {
                Some(c) => clones.push(c),
                None => return bio.complete(Err(Errno::EINVAL)),
            }
        }
        clones.push(bio);
        for (dst, mut c) in me.job.to.iter().zip(clones) {
            c.sector = dst.start + at;
            issue(&*dst.dev, c, dst.start + at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdev::{Dir, Fault, FaultDev, FaultRule, RamDev};
    use std::sync::mpsc;

    fn pattern(dev: &RamDev) {
        let data: Vec<u8> = (0..dev.size_sectors() * 512)
            .map(|i| (i / 512 % 251) as u8)
            .collect();
        dev.poke(0, &data);
    }

    fn run(job: CopyJob, config: CopyConfig) -> (Result<(), Errno>, CopyHandle) {
        let (tx, rx) = mpsc::channel();
        let h = copy(job, config, move |r| tx.send(r).unwrap());
        let r = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        (r, h)
    }

    #[test]
    fn copies_to_every_destination_in_pieces() {
        let src = RamDev::new(10_000, 1);
        pattern(&src);
        let (a, b) = (RamDev::new(20_000, 2), RamDev::new(10_000, 3));
        let job = CopyJob {
            from: Some(Region {
                dev: src.clone(),
                start: Sector(100),
            }),
            to: vec![
                Region {
                    dev: a.clone(),
                    start: Sector(5000),
                },
                Region {
                    dev: b.clone(),
                    start: Sector(0),
                },
            ],
            len: Sector(9000),
        };
        let config = CopyConfig {
            piece: Sector(700),
            depth: 3,
            ..Default::default()
        };
        let (r, h) = run(job, config);
        assert_eq!(r, Ok(()));
        assert_eq!(h.progress(), (Sector(9000), Sector(9000)));
        let s = src.contents();
        let want = &s[100 * 512..9100 * 512];
        assert_eq!(&a.contents()[5000 * 512..14000 * 512], want);
        assert_eq!(&b.contents()[..9000 * 512], want);
        assert!(a.contents()[..5000 * 512].iter().all(|&x| x == 0));
    }

    #[test]
    fn zeroes_and_reports_the_first_error() {
        let a = RamDev::new(4096, 4);
        pattern(&a);
        let job = CopyJob {
            from: None,
            to: vec![Region {
                dev: a.clone(),
                start: Sector(8),
            }],
            len: Sector(100),
        };
        assert_eq!(run(job, CopyConfig::default()).0, Ok(()));
        let c = a.contents();
        assert!(c[8 * 512..108 * 512].iter().all(|&x| x == 0));
        assert_ne!(c[108 * 512], 0);

        let bad = FaultDev::new(RamDev::new(4096, 5));
        bad.add(FaultRule {
            dir: Dir::Writes,
            start: Sector(2048),
            len: Sector(8),
            fault: Fault::Fail(Errno::EIO),
        });
        let job = CopyJob {
            from: Some(Region {
                dev: a.clone(),
                start: Sector::ZERO,
            }),
            to: vec![Region {
                dev: bad.clone(),
                start: Sector::ZERO,
            }],
            len: Sector(4096),
        };
        let (r, h) = run(job, CopyConfig::default());
        assert_eq!(r, Err(Errno::EIO));
        assert!(h.progress().0 < Sector(4096));
    }

    #[test]
    fn a_cancelled_copy_stops_and_says_so() {
        let slow = FaultDev::new(RamDev::new(8192, 6));
        slow.add(FaultRule {
            dir: Dir::Reads,
            start: Sector::ZERO,
            len: Sector(8192),
            fault: Fault::Hold,
        });
        let (tx, rx) = mpsc::channel();
        let h = copy(
            CopyJob {
                from: Some(Region {
                    dev: slow.clone(),
                    start: Sector::ZERO,
                }),
                to: vec![Region {
                    dev: RamDev::new(8192, 7),
                    start: Sector::ZERO,
                }],
                len: Sector(8192),
            },
            CopyConfig {
                piece: Sector(1024),
                depth: 2,
                ..Default::default()
            },
            move |r| tx.send(r).unwrap(),
        );
        while slow.parked() < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(slow.parked(), 2, "no more than the depth in flight");
        h.cancel();
        slow.release();
        let r = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(r, Err(Errno(libc::ECANCELED)));
        assert_eq!(h.progress().0, Sector(2048));
    }

    #[test]
    fn the_throttle_spreads_a_copy_over_time() {
        let a = RamDev::new(2048, 8);
        let start = Instant::now();
        let job = CopyJob {
            from: Some(Region {
                dev: a.clone(),
                start: Sector::ZERO,
            }),
            to: vec![Region {
                dev: RamDev::new(2048, 9),
                start: Sector::ZERO,
            }],
            len: Sector(2048),
        };
        let config = CopyConfig {
            piece: Sector(256),
            depth: 4,
            max_bytes_per_sec: 2 << 20, // 1 MiB at 2 MiB/s: at least ~0.44 s
        };
        assert_eq!(run(job, config).0, Ok(()));
        assert!(start.elapsed() >= Duration::from_millis(400));
    }
}

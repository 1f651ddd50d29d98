//! The reader role of a connection: which of its threads may read the socket.
//!
//! Handing the role to another thread costs a wake-up, which on a busy machine costs
//! more than a fast export's whole request. So a thread that took requests the export
//! should answer quickly may *lend* the role instead: nobody is woken, and when done
//! it takes the role back without any system call. In case the export is slow after
//! all, one follower stands by and takes a role that has been lent for longer than
//! [`TAKEOVER_AFTER`]; that bounds the stall a slow request can cause.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A lent role this old is taken over by the standby follower.
const TAKEOVER_AFTER: Duration = Duration::from_millis(1);
/// The standby stops polling after this many checks that found nothing lent.
const IDLE_CHECKS: u32 = 20;

#[derive(Default)]
struct State {
    /// A thread holds the role (reading, or lending it).
    taken: bool,
    /// The holder lent the role: when, and the loan's number.
    lent: Option<(u64, Instant)>,
    loans: u64,
    /// A follower watches lent roles.
    standby: bool,
    /// The standby sleeps without a timeout (the connection was idle).
    standby_asleep: bool,
    /// Followers waiting on `followers`.
    waiting: usize,
}

pub(super) struct Role {
    state: Mutex<State>,
    /// Followers other than the standby wait here.
    followers: Condvar,
    /// The standby waits here.
    standby: Condvar,
}

/// Proof of a loan, to take the role back with.
pub(super) struct Loan(u64);

impl Role {
    pub(super) fn new() -> Self {
        Role {
            state: Mutex::new(State::default()),
            followers: Condvar::new(),
            standby: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait until this thread holds the role.
    pub(super) fn acquire(&self) {
        let mut st = self.lock();
        let mut am_standby = false;
        let mut idle = 0;
        loop {
            if !st.taken {
                st.taken = true;
                break;
            }
            if am_standby {
                if let Some((_, at)) = st.lent {
                    if at.elapsed() >= TAKEOVER_AFTER {
                        // The lender is stuck in the export: read in its place.
                        st.lent = None;
                        break;
                    }
                }
            } else if !st.standby {
                st.standby = true;
                am_standby = true;
            }
            if !am_standby {
                st.waiting += 1;
                st = self
                    .followers
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
                st.waiting -= 1;
                continue;
            }
            if st.lent.is_some() {
                idle = 0;
            } else {
                idle += 1;
            }
            if idle > IDLE_CHECKS {
                st.standby_asleep = true;
                st = self
                    .standby
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
                st.standby_asleep = false;
                idle = 0;
            } else {
                st = self
                    .standby
                    .wait_timeout(st, TAKEOVER_AFTER)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        if am_standby {
            st.standby = false;
            if st.waiting > 0 {
                drop(st);
                // Someone else must stand by now.
                self.followers.notify_one();
            }
        }
    }

    /// Give the role up and wake a follower to take it.
    pub(super) fn release(&self) {
        let mut st = self.lock();
        st.taken = false;
        st.lent = None;
        let (followers, standby) = (st.waiting > 0, st.standby);
        drop(st);
        if followers {
            self.followers.notify_one();
        } else if standby {
            self.standby.notify_one();
        }
    }

    /// Lend the role while serving requests expected to be quick; wakes nobody
    /// unless the standby sleeps.
    pub(super) fn lend(&self) -> Loan {
        let mut st = self.lock();
        st.loans += 1;
        let n = st.loans;
        st.lent = Some((n, Instant::now()));
        let wake = st.standby_asleep;
        drop(st);
        if wake {
            self.standby.notify_one();
        }
        Loan(n)
    }

    /// Take a lent role back; false when the standby took it over meanwhile.
    pub(super) fn reclaim(&self, loan: Loan) -> bool {
        let mut st = self.lock();
        match st.lent {
            Some((n, _)) if n == loan.0 => {
                st.lent = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn lend_and_reclaim_without_contention() {
        let r = Role::new();
        r.acquire();
        let loan = r.lend();
        assert!(r.reclaim(loan));
        r.release();
        r.acquire();
        r.release();
    }

    #[test]
    fn a_stuck_loan_is_taken_over() {
        let r = Arc::new(Role::new());
        r.acquire();
        let follower = {
            let r = Arc::clone(&r);
            std::thread::spawn(move || {
                r.acquire();
                r.release();
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let loan = r.lend();
        follower.join().unwrap();
        assert!(!r.reclaim(loan), "the follower took over");
        r.acquire();
        r.release();
    }

    #[test]
    fn release_hands_over_to_every_waiter_in_turn() {
        let r = Arc::new(Role::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (r, inside, count) = (r.clone(), inside.clone(), count.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        r.acquire();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        count.fetch_add(1, Ordering::SeqCst);
                        if count.load(Ordering::SeqCst) % 3 == 0 {
                            let loan = r.lend();
                            inside.fetch_sub(1, Ordering::SeqCst);
                            if r.reclaim(loan) {
                                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                            } else {
                                continue;
                            }
                        }
                        inside.fetch_sub(1, Ordering::SeqCst);
                        r.release();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(count.load(Ordering::SeqCst), 1600);
    }
}

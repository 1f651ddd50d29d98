//! What one connection may hold in request buffers.
//!
//! Every byte of capacity of a connection's request buffers is counted in its
//! [`Budget`]. Ordinary requests reuse the buffers their thread keeps (see
//! [`KEEP_PER_WORKER`]), so the steady state touches the budget not at all; only a
//! buffer that grows reserves bytes, and a reservation that would pass the limit
//! waits until other threads of the connection give theirs back. Buffers beyond what
//! a thread keeps are given back as soon as their reply is sent.
//!
//! A request handed to an export that answers later takes its buffer along (it stays
//! counted); its completion keeps it as one of the connection's spares (up to
//! [`SPARE_PER_CONN`]) for the threads to reuse, or frees it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

/// Request buffer capacity one thread of a connection keeps between requests: up to
/// this much (in slot order) stays allocated, the rest is freed after each batch.
/// Requests up to this size, the usual ones, therefore never allocate.
pub(crate) const KEEP_PER_WORKER: usize = 2 << 20;

/// Buffer capacity of requests answered later that a connection keeps for reuse.
pub(crate) const SPARE_PER_CONN: usize = 2 << 20;

/// The buffer accounting of one connection.
pub(crate) struct Budget {
    limit: usize,
    held: AtomicUsize,
    /// Highest `held` seen (updated on growth only, which is the slow path).
    peak: AtomicUsize,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            limit,
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    /// Bytes of buffer capacity held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The most this connection held at once.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Count `n` more bytes. With `wait`, first wait until they fit under the limit
    /// (they always fit once the other threads of the connection are idle, see
    /// `ServerConfig::buffer_budget`); without, count them at once (a small,
    /// bounded overshoot the caller accounts for).
    pub(crate) fn reserve(&self, n: usize, wait: bool) {
        if n == 0 {
            return;
        }
        if wait && !self.try_reserve(n) {
            let mut g = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.waiters.fetch_add(1, Ordering::SeqCst);
            while !self.try_reserve(n) {
                g = self.freed.wait(g).unwrap_or_else(PoisonError::into_inner);
            }
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            drop(g);
        } else if !wait {
            self.held.fetch_add(n, Ordering::SeqCst);
        }
        self.peak
            .fetch_max(self.held.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn try_reserve(&self, n: usize) -> bool {
        self.held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| {
                (h + n <= self.limit).then_some(h + n)
            })
            .is_ok()
    }

    /// Give `n` bytes back and wake whoever waits for them.
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.held.fetch_sub(n, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this wake-up after the waiter's last check.
            let _g = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.freed.notify_all();
        }
    }
}

/// Make `buf` at least `len` bytes long, counting any growth of its capacity in
/// `budget` (waiting for room when `wait`). No-op, and no atomic, when it already is.
pub(crate) fn grow(buf: &mut Vec<u8>, len: usize, budget: &Budget, wait: bool) {
    if buf.len() >= len {
        return;
    }
    let cap = buf.capacity();
    if cap < len {
        budget.reserve(len - cap, wait);
        buf.reserve_exact(len - buf.len());
        // The allocator may round up; count what it really gave.
        budget.reserve(buf.capacity().saturating_sub(len), false);
    }
    buf.resize(len, 0);
}

/// Free `buf`, giving its capacity back to `budget`.
pub(crate) fn free(buf: &mut Vec<u8>, budget: &Budget) {
    let cap = buf.capacity();
    *buf = Vec::new();
    budget.release(cap);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn growth_is_counted_and_waits_for_room() {
        let b = Arc::new(Budget::new(1000));
        let mut v = Vec::new();
        grow(&mut v, 600, &b, true);
        assert_eq!(b.held(), v.capacity());
        grow(&mut v, 100, &b, true);
        assert_eq!(b.held(), v.capacity(), "no growth, no change");
        let b2 = Arc::clone(&b);
        let t = std::thread::spawn(move || {
            let mut w = Vec::new();
            grow(&mut w, 700, &b2, true);
            let c = w.capacity();
            free(&mut w, &b2);
            c
        });
        // The other thread cannot fit until this buffer is freed.
        free(&mut v, &b);
        let c = t.join().unwrap();
        assert!(c >= 700);
        assert_eq!(b.held(), 0);
        assert!(b.peak() <= 1000 + 64, "peak {}", b.peak());
    }
}

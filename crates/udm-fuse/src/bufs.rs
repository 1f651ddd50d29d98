//! Data buffers of reads and writes, reused. A request owns its buffer until it ends (it
//! may end on another thread, long after the fuser thread moved on), so the buffers cannot
//! be per-thread; a few are kept for the next requests. A read needs a buffer of exactly
//! its length whose bytes are initialised: it takes a kept buffer of that very length
//! (shortening a longer one would cost zeroing it again to grow it back), so a workload of
//! a few request sizes (1 MiB reads that the kernel splits into 1 MiB - 16 and 16 bytes,
//! widened to 1 MiB and 512) neither allocates nor zeroes. A write copies its payload into
//! any kept buffer large enough.

use parking_lot::Mutex;

use crate::fs::MAX_WRITE;

/// Buffers kept for reuse; beyond that the oldest is freed.
const KEEP: usize = 16;

#[derive(Default)]
pub(crate) struct BufPool {
    /// Oldest first.
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// The most recently kept buffer that `fits`.
    fn take(&self, fits: impl Fn(&Vec<u8>) -> bool) -> Option<Vec<u8>> {
        let mut free = self.free.lock();
        let i = free.iter().rposition(fits)?;
        Some(free.remove(i))
    }

    /// A buffer of `len` bytes to read into.
    pub(crate) fn zeroed(&self, len: usize) -> Vec<u8> {
        self.take(|b| b.len() == len)
            .unwrap_or_else(|| vec![0; len])
    }

    /// A buffer holding a copy of `data`.
    pub(crate) fn copy_of(&self, data: &[u8]) -> Vec<u8> {
        let mut b = self
            .take(|b| b.capacity() >= data.len())
            .unwrap_or_default();
        b.clear();
        b.extend_from_slice(data);
        b
    }

    /// Gives a buffer back for reuse.
    pub(crate) fn give(&self, b: Vec<u8>) {
        if b.is_empty() || b.capacity() > MAX_WRITE as usize {
            return;
        }
        let mut free = self.free.lock();
        if free.len() >= KEEP {
            free.remove(0);
        }
        free.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_reuses_a_buffer_of_its_own_length() {
        let pool = BufPool::default();
        let mut big = pool.zeroed(1 << 20);
        big[0] = 7;
        let big_ptr = big.as_ptr();
        pool.give(big);
        let mut small = pool.zeroed(512);
        small.fill(9);
        pool.give(small);
        // The small read did not take (and shorten) the big buffer.
        let big = pool.zeroed(1 << 20);
        assert_eq!((big.as_ptr(), big.len(), big[0]), (big_ptr, 1 << 20, 7));
        let small = pool.zeroed(512);
        assert_eq!(small, [9; 512]);
        // A write takes any buffer large enough.
        pool.give(big);
        let w = pool.copy_of(b"abc");
        assert_eq!((w.as_slice(), w.as_ptr()), (&b"abc"[..], big_ptr));
    }

    #[test]
    fn only_a_few_modest_buffers_are_kept_the_newest() {
        let pool = BufPool::default();
        for i in 0..KEEP + 4 {
            pool.give(vec![i as u8; 16]);
        }
        let free = pool.free.lock();
        assert_eq!(free.len(), KEEP);
        assert_eq!(free[0][0], 4);
        drop(free);
        let pool = BufPool::default();
        pool.give(vec![0; MAX_WRITE as usize + 1]);
        pool.give(Vec::new());
        assert!(pool.free.lock().is_empty());
    }
}

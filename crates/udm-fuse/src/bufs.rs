//! Data buffers of reads and writes, reused. A request owns its buffer until it ends (it
//! may end on another thread, long after the fuser thread moved on), so the buffers cannot
//! be per-thread; a few are kept for the next requests, which then neither allocate nor
//! zero (a read's buffer is zeroed only where it grows past what it held before).

use parking_lot::Mutex;

use crate::fs::MAX_WRITE;

/// Buffers kept for reuse; beyond that they are freed.
const KEEP: usize = 16;

#[derive(Default)]
pub(crate) struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    fn pop(&self) -> Vec<u8> {
        self.free.lock().pop().unwrap_or_default()
    }

    /// A buffer of `len` bytes to read into.
    pub(crate) fn zeroed(&self, len: usize) -> Vec<u8> {
        let mut b = self.pop();
        if b.len() >= len {
            b.truncate(len);
        } else {
            b.resize(len, 0);
        }
        b
    }

    /// A buffer holding a copy of `data`.
    pub(crate) fn copy_of(&self, data: &[u8]) -> Vec<u8> {
        let mut b = self.pop();
        b.clear();
        b.extend_from_slice(data);
        b
    }

    /// Gives a buffer back for reuse.
    pub(crate) fn give(&self, b: Vec<u8>) {
        if b.capacity() == 0 || b.capacity() > MAX_WRITE as usize {
            return;
        }
        let mut free = self.free.lock();
        if free.len() < KEEP {
            free.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_buffers_are_zeroed_where_they_grow() {
        let pool = BufPool::default();
        let mut b = pool.zeroed(8);
        assert_eq!(b, [0; 8]);
        b.fill(7);
        pool.give(b);
        // The reused buffer keeps what it held within its old length; a read fills
        // all of it anyway, and nothing past the old length is left uninitialised.
        let b = pool.zeroed(12);
        assert_eq!(b.len(), 12);
        assert_eq!(&b[8..], [0; 4]);
        pool.give(b);
        assert_eq!(pool.copy_of(b"abc"), b"abc");
    }

    #[test]
    fn only_a_few_modest_buffers_are_kept() {
        let pool = BufPool::default();
        for _ in 0..KEEP + 4 {
            pool.give(vec![0; 16]);
        }
        assert_eq!(pool.free.lock().len(), KEEP);
        let pool = BufPool::default();
        pool.give(vec![0; MAX_WRITE as usize + 1]);
        pool.give(Vec::new());
        assert!(pool.free.lock().is_empty());
    }
}

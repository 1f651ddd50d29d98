//! A RAM disk [`Export`] for tests and examples: the data lives in memory, and a
//! per-granule map remembers which parts are holes or known zeroes so that block
//! status has something to report.

use parking_lot::RwLock;

use crate::export::{BlockSize, Errno, Export, Extent};

/// Allocation state of one granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Data,
    /// Allocated, reads as zeroes.
    Zero,
    /// Not allocated, reads as zeroes.
    Hole,
}

struct Inner {
    data: Vec<u8>,
    state: Vec<State>,
}

/// An in-memory export. It starts as one hole; writes allocate, trims punch holes,
/// write-zeroes makes zeroes (holes when allowed).
pub struct MemExport {
    inner: RwLock<Inner>,
    size: u64,
    granule: u64,
    read_only: bool,
    multi_conn: bool,
    fast_zero: bool,
    block_size: BlockSize,
}

impl MemExport {
    /// A writable, multi-conn RAM disk of `size` bytes tracking 4 KiB granules.
    pub fn new(size: usize) -> Self {
        Self::new_granular(size, 4096)
    }

    /// Same, tracking allocation in granules of `granule` bytes (at least 1).
    pub fn new_granular(size: usize, granule: usize) -> Self {
        let granule = granule.max(1);
        MemExport {
            inner: RwLock::new(Inner {
                data: vec![0; size],
                state: vec![State::Hole; size.div_ceil(granule)],
            }),
            size: size as u64,
            granule: granule as u64,
            read_only: false,
            multi_conn: true,
            fast_zero: true,
            block_size: BlockSize::default(),
        }
    }

    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    pub fn with_multi_conn(mut self, multi_conn: bool) -> Self {
        self.multi_conn = multi_conn;
        self
    }

    /// Whether write-zeroes counts as fast (otherwise fast-only requests fail ENOTSUP).
    pub fn with_fast_zero(mut self, fast_zero: bool) -> Self {
        self.fast_zero = fast_zero;
        self
    }

    pub fn with_block_size(mut self, block_size: BlockSize) -> Self {
        self.block_size = block_size;
        self
    }

    /// Store `bytes` at `offset` directly (setting up test contents, even read-only).
    pub fn fill(&self, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
        let (start, end) = self.range(offset, bytes.len() as u64)?;
        let mut g = self.inner.write();
        g.data[start..end].copy_from_slice(bytes);
        self.mark(&mut g.state, start, end, State::Data, true);
        Ok(())
    }

    /// A copy of the current contents.
    pub fn contents(&self) -> Vec<u8> {
        self.inner.read().data.clone()
    }

    fn range(&self, offset: u64, len: u64) -> Result<(usize, usize), Errno> {
        let end = offset.checked_add(len).ok_or(Errno::EINVAL)?;
        if end > self.size {
            return Err(Errno::EINVAL);
        }
        Ok((offset as usize, end as usize))
    }

    /// Set the state of the granules `[start, end)` touches: every touched granule
    /// when `partial`, else only the fully covered ones.
    fn mark(&self, state: &mut [State], start: usize, end: usize, to: State, partial: bool) {
        if start >= end {
            return;
        }
        let g = self.granule as usize;
        let (first, last) = if partial {
            (start / g, end.div_ceil(g))
        } else {
            // The final granule may be short (size not a multiple of the granule).
            let last = if end == self.size as usize {
                end.div_ceil(g)
            } else {
                end / g
            };
            (start.div_ceil(g), last)
        };
        for s in state.iter_mut().take(last).skip(first) {
            *s = to;
        }
    }

    fn zero(&self, offset: u64, len: u64, to: State) -> Result<(), Errno> {
        let (start, end) = self.range(offset, len)?;
        let mut g = self.inner.write();
        g.data[start..end].fill(0);
        self.mark(&mut g.state, start, end, to, false);
        Ok(())
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.read_only {
            Err(Errno::EPERM)
        } else {
            Ok(())
        }
    }
}

impl Export for MemExport {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn can_multi_conn(&self) -> bool {
        self.multi_conn
    }

    fn block_size(&self) -> BlockSize {
        self.block_size
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let (start, end) = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.inner.read().data[start..end]);
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8], _fua: bool) -> Result<(), Errno> {
        self.writable()?;
        self.fill(offset, buf)
    }

    fn flush(&self) -> Result<(), Errno> {
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, _fua: bool) -> Result<(), Errno> {
        self.writable()?;
        // Only whole granules are discarded (the spec allows rounding inwards).
        let (start, end) = self.range(offset, len)?;
        let g = self.granule as usize;
        let a = start.div_ceil(g) * g;
        let b = if end == self.size as usize {
            end
        } else {
            end / g * g
        };
        if a < b {
            self.zero(a as u64, (b - a) as u64, State::Hole)?;
        }
        Ok(())
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fast_only: bool,
        _fua: bool,
    ) -> Result<(), Errno> {
        self.writable()?;
        if fast_only && !self.fast_zero {
            return Err(Errno::ENOTSUP);
        }
        self.zero(
            offset,
            len,
            if may_trim { State::Hole } else { State::Zero },
        )
    }

    fn cache(&self, offset: u64, len: u64) -> Result<(), Errno> {
        self.range(offset, len).map(|_| ())
    }

    fn extents(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), Errno> {
        let (start, end) = self.range(offset, len)?;
        let g = self.granule as usize;
        let state = &self.inner.read().state;
        let mut at = start;
        while at < end {
            let i = at / g;
            let s = state.get(i).copied().unwrap_or(State::Data);
            let mut j = i + 1;
            while j * g < end && state.get(j) == Some(&s) {
                j += 1;
            }
            let stop = (j * g).min(end);
            out.push(Extent {
                length: (stop - at) as u64,
                hole: s == State::Hole,
                zero: s != State::Data,
            });
            at = stop;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(length: u64, hole: bool, zero: bool) -> Extent {
        Extent { length, hole, zero }
    }

    fn map(m: &MemExport, offset: u64, len: u64) -> Vec<Extent> {
        let mut v = Vec::new();
        m.extents(offset, len, &mut v).unwrap();
        v
    }

    #[test]
    fn states_follow_writes_trims_and_zeroes() {
        let m = MemExport::new(64 << 10);
        assert_eq!(map(&m, 0, 64 << 10), vec![ext(64 << 10, true, true)]);
        m.write(4096, &[1u8; 100], false).unwrap();
        m.write_zeroes(16384, 8192, false, false, false).unwrap();
        assert_eq!(
            map(&m, 0, 32768),
            vec![
                ext(4096, true, true),
                ext(4096, false, false),
                ext(8192, true, true),
                ext(8192, false, true),
                ext(8192, true, true),
            ]
        );
        assert_eq!(map(&m, 4196, 100), vec![ext(100, false, false)]);
        m.trim(4000, 4200, false).unwrap();
        assert_eq!(map(&m, 0, 16384), vec![ext(16384, true, true)]);
        let mut b = [9u8; 8];
        m.read(4096, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
        assert_eq!(m.write_zeroes(0, 1, true, true, false), Ok(()));
        let slow = MemExport::new(4096).with_fast_zero(false);
        assert_eq!(
            slow.write_zeroes(0, 1, true, true, false),
            Err(Errno::ENOTSUP)
        );
        assert_eq!(m.read(65535, &mut b), Err(Errno::EINVAL));
        assert_eq!(m.read(u64::MAX, &mut b), Err(Errno::EINVAL));
    }

    #[test]
    fn short_last_granule_can_become_a_hole() {
        let m = MemExport::new(5000);
        m.write(0, &[1u8; 5000], false).unwrap();
        m.trim(4096, 904, false).unwrap();
        assert_eq!(
            map(&m, 0, 5000),
            vec![ext(4096, false, false), ext(904, true, true)]
        );
    }
}

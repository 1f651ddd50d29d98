//! Reads and writes that do not fall on the file's asynchronous granularity (a sector for
//! a device) still go the asynchronous way, in whole blocks: a read reads the aligned
//! range around it, and a write first reads the partial blocks at its edges, puts its
//! data between them and writes the whole range. Such requests are common: the kernel
//! splits a direct read or write at the caller's page boundaries, so a 1 MiB `pread` into
//! a buffer that starts 16 bytes into a page (malloc's) arrives as 1 MiB - 16 bytes and
//! 16 bytes.
//!
//! As with the blocking byte I/O it replaces, an unaligned write is not atomic against
//! another write to the same block at the same time (the kernel's page cache would
//! serialise them; a block device without one does not either).

use std::sync::Arc;

use crate::bufs::BufPool;
use crate::source::{IoDone, MappedFile};

/// The range of whole `g`-byte blocks around `[offset, offset + len)`, if it lies within
/// `size`.
pub(crate) fn widen(offset: u64, len: u64, g: u64, size: u64) -> Option<(u64, u64)> {
    let start = offset - offset % g;
    let end = offset.checked_add(len)?.checked_next_multiple_of(g)?;
    (end <= size).then_some((start, end))
}

/// One unaligned write: the edge blocks still to read, then the write.
pub(crate) struct Rmw {
    file: Arc<dyn MappedFile>,
    bufs: Arc<BufPool>,
    g: u64,
    /// Where the whole-block range starts.
    start: u64,
    /// The whole-block range, filled in.
    buf: Vec<u8>,
    /// The request's data, and where it goes in `buf`.
    data: Vec<u8>,
    skip: usize,
    /// Offsets of the edge blocks not read yet.
    edges: Vec<u64>,
    /// The request's end: the result, and `data` or the range's buffer back (for reuse).
    done: IoDone,
}

impl Rmw {
    /// Writes `data` at `offset`, through `[start, end)` (from [`widen`]).
    pub(crate) fn start(
        file: Arc<dyn MappedFile>,
        bufs: Arc<BufPool>,
        g: u64,
        (start, end): (u64, u64),
        offset: u64,
        data: Vec<u8>,
        done: IoDone,
    ) {
        let data_end = offset + data.len() as u64;
        let mut edges = Vec::with_capacity(2);
        if offset % g != 0 {
            edges.push(start);
        }
        let last = end - g;
        if data_end % g != 0 && !edges.contains(&last) {
            edges.push(last);
        }
        let Ok(len) = usize::try_from(end - start) else {
            return done(Err(libc::EINVAL), data);
        };
        let rmw = Rmw {
            buf: bufs.zeroed(len),
            file,
            bufs,
            g,
            start,
            data,
            skip: (offset - start) as usize,
            edges,
            done,
        };
        rmw.step();
    }

    fn step(mut self) {
        let Some(at) = self.edges.pop() else {
            return self.write();
        };
        let block = self.bufs.zeroed(self.g as usize);
        let file = Arc::clone(&self.file);
        file.read_async(
            at,
            block,
            Box::new(move |r, block| {
                let i = (at - self.start) as usize;
                let dst = self.buf.get_mut(i..i + self.g as usize);
                let r = match (r, dst) {
                    (Ok(()), Some(dst)) if block.len() == dst.len() => {
                        dst.copy_from_slice(&block);
                        Ok(())
                    }
                    (Ok(()), _) => Err(libc::EIO),
                    (Err(e), _) => Err(e),
                };
                self.bufs.give(block);
                match r {
                    Ok(()) => self.step(),
                    Err(e) => {
                        self.bufs.give(self.buf);
                        (self.done)(Err(e), self.data);
                    }
                }
            }),
        );
    }

    fn write(mut self) {
        let end = self.skip + self.data.len();
        match self.buf.get_mut(self.skip..end) {
            Some(dst) => dst.copy_from_slice(&self.data),
            None => return (self.done)(Err(libc::EIO), self.data),
        }
        self.bufs.give(self.data);
        self.file.write_async(self.start, self.buf, self.done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::num::NonZeroU64;

    #[test]
    fn widen_to_whole_blocks_within_the_size() {
        assert_eq!(widen(0, 1024, 512, 4096), Some((0, 1024)));
        assert_eq!(widen(100, 1000, 512, 4096), Some((0, 1536)));
        assert_eq!(widen(1048560, 16, 512, 2 << 20), Some((1048064, 1048576)));
        assert_eq!(widen(4000, 96, 512, 4096), Some((3584, 4096)));
        assert_eq!(widen(4000, 97, 512, 4096), None);
        assert_eq!(widen(u64::MAX - 10, 5, 512, u64::MAX), None);
    }

    /// RAM in 512-byte blocks that counts the requests it gets and can fail reads.
    struct Blocks {
        data: Mutex<Vec<u8>>,
        requests: Mutex<Vec<String>>,
        fail_reads: bool,
    }

    impl MappedFile for Blocks {
        fn size(&self) -> u64 {
            self.data.lock().len() as u64
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), i32> {
            self.requests
                .lock()
                .push(format!("r{offset}+{}", buf.len()));
            if self.fail_reads {
                return Err(libc::EIO);
            }
            let o = offset as usize;
            buf.copy_from_slice(&self.data.lock()[o..o + buf.len()]);
            Ok(())
        }
        fn write(&self, offset: u64, buf: &[u8]) -> Result<(), i32> {
            self.requests
                .lock()
                .push(format!("w{offset}+{}", buf.len()));
            let o = offset as usize;
            self.data.lock()[o..o + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&self) -> Result<(), i32> {
            Ok(())
        }
        fn discard(&self, _: u64, _: u64) -> Result<(), i32> {
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64) -> Result<(), i32> {
            Ok(())
        }
        fn async_granularity(&self) -> Option<NonZeroU64> {
            NonZeroU64::new(512)
        }
    }

    fn blocks(fail_reads: bool) -> Arc<Blocks> {
        Arc::new(Blocks {
            data: Mutex::new((0..4096u32).map(|i| (i % 251) as u8).collect()),
            requests: Mutex::new(Vec::new()),
            fail_reads,
        })
    }

    fn write(file: &Arc<Blocks>, offset: u64, data: &[u8]) -> Result<(), i32> {
        let range = widen(offset, data.len() as u64, 512, 4096).unwrap();
        let out = Arc::new(Mutex::new(None));
        let out2 = Arc::clone(&out);
        let f: Arc<dyn MappedFile> = file.clone();
        Rmw::start(
            f,
            Arc::new(BufPool::default()),
            512,
            range,
            offset,
            data.to_vec(),
            Box::new(move |r, _| *out2.lock() = Some(r)),
        );
        let r = out.lock().take();
        r.expect("the write did not end")
    }

    #[test]
    fn unaligned_writes_keep_the_rest_of_their_blocks() {
        let file = blocks(false);
        let mut want = file.data.lock().clone();
        // Both edges partial, two blocks apart.
        write(&file, 700, &[0xaa; 1000]).unwrap();
        want[700..1700].fill(0xaa);
        assert_eq!(*file.data.lock(), want);
        assert_eq!(
            *file.requests.lock(),
            ["r1536+512", "r512+512", "w512+1536"]
        );
        // Inside one block: it is read once.
        file.requests.lock().clear();
        write(&file, 2050, &[0xbb; 10]).unwrap();
        want[2050..2060].fill(0xbb);
        assert_eq!(*file.data.lock(), want);
        assert_eq!(*file.requests.lock(), ["r2048+512", "w2048+512"]);
        // Aligned start, partial end.
        file.requests.lock().clear();
        write(&file, 0, &[0xcc; 1048]).unwrap();
        want[..1048].fill(0xcc);
        assert_eq!(*file.data.lock(), want);
        assert_eq!(*file.requests.lock(), ["r1024+512", "w0+1536"]);
    }

    #[test]
    fn a_failed_edge_read_fails_the_write_and_writes_nothing() {
        let file = blocks(true);
        let before = file.data.lock().clone();
        assert_eq!(write(&file, 700, &[1; 1000]), Err(libc::EIO));
        assert_eq!(*file.data.lock(), before);
        assert_eq!(*file.requests.lock(), ["r1536+512"]);
    }
}

//! One ublk request: the io descriptor's op and flags decoded, and served on an
//! [`Export`]. Free of libublk, so it is tested without a kernel.

use crate::Export;

/// `UBLK_IO_OP_*` and `UBLK_IO_F_*` of `include/uapi/linux/ublk_cmd.h`.
pub const OP_READ: u32 = 0;
pub const OP_WRITE: u32 = 1;
pub const OP_FLUSH: u32 = 2;
pub const OP_DISCARD: u32 = 3;
pub const OP_WRITE_ZEROES: u32 = 5;
pub const F_FUA: u32 = 1 << 13;
pub const F_NOUNMAP: u32 = 1 << 15;

const SECTOR: usize = 512;

/// A decoded request; sectors are 512-byte units, as in `ublksrv_io_desc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Read {
        sector: u64,
        sectors: u32,
    },
    Write {
        sector: u64,
        sectors: u32,
        fua: bool,
    },
    Flush,
    Discard {
        sector: u64,
        sectors: u32,
    },
    WriteZeroes {
        sector: u64,
        sectors: u32,
        may_unmap: bool,
        fua: bool,
    },
    /// An op this export does not serve (zoned ops, WRITE_SAME).
    Unsupported(u32),
}

impl Request {
    /// Decode `ublksrv_io_desc.{op_flags, start_sector, nr_sectors}`.
    pub fn decode(op_flags: u32, sector: u64, sectors: u32) -> Request {
        let fua = op_flags & F_FUA != 0;
        match op_flags & 0xff {
            OP_READ => Request::Read { sector, sectors },
            OP_WRITE => Request::Write {
                sector,
                sectors,
                fua,
            },
            OP_FLUSH => Request::Flush,
            OP_DISCARD => Request::Discard { sector, sectors },
            OP_WRITE_ZEROES => Request::WriteZeroes {
                sector,
                sectors,
                may_unmap: op_flags & F_NOUNMAP == 0,
                fua,
            },
            op => Request::Unsupported(op),
        }
    }

    /// Bytes of the request's data buffer that the request reads or fills.
    pub fn data_bytes(&self) -> usize {
        match *self {
            Request::Read { sectors, .. } | Request::Write { sectors, .. } => {
                sectors as usize * SECTOR
            }
            _ => 0,
        }
    }
}

/// Start `req` on `export`. `tag_buf` is the tag's data buffer, where the kernel put a
/// write's data; `data` is the owned buffer that carries the data through the export (a
/// tag reuses one from request to request: a read's buffer is zeroed only where it grows).
/// `done` gets what the ublk command completes with (the byte count for a read or write, 0
/// for the other ops, or a negative errno) and `data` back, from whichever thread ends the
/// request; for a read, [`finish`] then copies the data into the tag's buffer.
pub fn serve<F>(export: &dyn Export, req: Request, tag_buf: &[u8], mut data: Vec<u8>, done: F)
where
    F: FnOnce(i32, Vec<u8>) + Send + 'static,
{
    let bytes = req.data_bytes();
    let Some(src) = tag_buf
        .get(..bytes)
        .filter(|_| i32::try_from(bytes).is_ok())
    else {
        return done(-libc::EINVAL, data);
    };
    // `bytes` fits in an i32 (checked above).
    let result = move |r: Result<(), i32>| match r {
        Ok(()) => bytes as i32,
        Err(errno) if errno > 0 => -errno,
        Err(_) => -libc::EIO,
    };
    match req {
        Request::Read { sector, .. } => {
            if data.len() >= bytes {
                data.truncate(bytes);
            } else {
                data.resize(bytes, 0);
            }
            export.read(sector, data, Box::new(move |r, d| done(result(r), d)));
        }
        Request::Write { sector, fua, .. } => {
            data.clear();
            data.extend_from_slice(src);
            export.write(sector, data, fua, Box::new(move |r, d| done(result(r), d)));
        }
        Request::Flush => export.flush(Box::new(move |r| done(result(r), data))),
        Request::Discard { sector, sectors } => export.discard(
            sector,
            sectors.into(),
            Box::new(move |r| done(result(r), data)),
        ),
        Request::WriteZeroes {
            sector,
            sectors,
            may_unmap,
            fua,
        } => export.write_zeroes(
            sector,
            sectors.into(),
            may_unmap,
            fua,
            Box::new(move |r| done(result(r), data)),
        ),
        Request::Unsupported(_) => done(-libc::EOPNOTSUPP, data),
    }
}

/// The end of `req`, which [`serve`] ended with `res` and `data`: a read that succeeded
/// has its data copied into the tag's buffer. Returns what the ublk command completes
/// with (EIO if the export gave back less data than it read).
pub fn finish(req: Request, res: i32, data: &[u8], tag_buf: &mut [u8]) -> i32 {
    if !matches!(req, Request::Read { .. }) || res <= 0 {
        return res;
    }
    let n = res as usize;
    match (data.get(..n), tag_buf.get_mut(..n)) {
        (Some(src), Some(dst)) => {
            dst.copy_from_slice(src);
            res
        }
        _ => -libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Done, IoDone};
    use std::sync::{mpsc, Mutex};

    /// A RAM device that records the flags it was called with.
    struct Ram {
        data: Mutex<Vec<u8>>,
        calls: Mutex<Vec<String>>,
    }

    impl Ram {
        fn new(sectors: usize) -> Ram {
            Ram {
                data: Mutex::new(vec![0; sectors * SECTOR]),
                calls: Mutex::new(Vec::new()),
            }
        }
        fn log(&self, s: String) {
            self.calls.lock().unwrap().push(s);
        }
        fn range(&self, sector: u64, len: usize) -> Result<std::ops::Range<usize>, i32> {
            let start = sector as usize * SECTOR;
            let end = start + len;
            if end > self.data.lock().unwrap().len() {
                return Err(libc::EIO);
            }
            Ok(start..end)
        }
    }

    impl Ram {
        fn do_read(&self, sector: u64, buf: &mut [u8]) -> Result<(), i32> {
            let r = self.range(sector, buf.len())?;
            buf.copy_from_slice(&self.data.lock().unwrap()[r]);
            Ok(())
        }
        fn do_write(&self, sector: u64, buf: &[u8], fua: bool) -> Result<(), i32> {
            self.log(format!("write {sector} fua={fua}"));
            let r = self.range(sector, buf.len())?;
            self.data.lock().unwrap()[r].copy_from_slice(buf);
            Ok(())
        }
        fn do_zeroes(
            &self,
            sector: u64,
            sectors: u64,
            may_unmap: bool,
            fua: bool,
        ) -> Result<(), i32> {
            self.log(format!(
                "zeroes {sector}+{sectors} unmap={may_unmap} fua={fua}"
            ));
            let r = self.range(sector, sectors as usize * SECTOR)?;
            self.data.lock().unwrap()[r].fill(0);
            Ok(())
        }
    }

    /// Every request ends at once, on the calling thread.
    impl Export for Ram {
        fn read(&self, sector: u64, mut buf: Vec<u8>, done: IoDone) {
            let r = self.do_read(sector, &mut buf);
            done(r, buf);
        }
        fn write(&self, sector: u64, buf: Vec<u8>, fua: bool, done: IoDone) {
            let r = self.do_write(sector, &buf, fua);
            done(r, buf);
        }
        fn flush(&self, done: Done) {
            self.log("flush".into());
            done(Ok(()));
        }
        fn discard(&self, sector: u64, sectors: u64, done: Done) {
            self.log(format!("discard {sector}+{sectors}"));
            done(Ok(()));
        }
        fn write_zeroes(&self, sector: u64, sectors: u64, may_unmap: bool, fua: bool, done: Done) {
            done(self.do_zeroes(sector, sectors, may_unmap, fua));
        }
    }

    /// Serve `req` to its end (`export` must end it at once) and finish it into `tag`.
    fn serve_now(export: &dyn Export, req: Request, tag: &mut [u8]) -> i32 {
        let (tx, rx) = mpsc::channel();
        serve(export, req, tag, Vec::new(), move |res, data| {
            tx.send((res, data)).unwrap();
        });
        let (res, data) = rx.try_recv().expect("the request did not end at once");
        finish(req, res, &data, tag)
    }

    /// Holds every read until the test ends it.
    #[derive(Default)]
    struct Holding {
        reads: Mutex<Vec<(u64, Vec<u8>, IoDone)>>,
    }

    impl Export for Holding {
        fn read(&self, sector: u64, buf: Vec<u8>, done: IoDone) {
            self.reads.lock().unwrap().push((sector, buf, done));
        }
        fn write(&self, _: u64, buf: Vec<u8>, _: bool, done: IoDone) {
            done(Err(libc::EROFS), buf);
        }
        fn flush(&self, done: Done) {
            done(Ok(()));
        }
        fn discard(&self, _: u64, _: u64, done: Done) {
            done(Err(libc::EOPNOTSUPP));
        }
        fn write_zeroes(&self, _: u64, _: u64, _: bool, _: bool, done: Done) {
            done(Err(libc::EOPNOTSUPP));
        }
    }

    #[test]
    fn decode_ops_and_flags() {
        assert_eq!(
            Request::decode(OP_READ, 8, 2),
            Request::Read {
                sector: 8,
                sectors: 2
            }
        );
        assert_eq!(
            Request::decode(OP_WRITE | F_FUA, 1, 1),
            Request::Write {
                sector: 1,
                sectors: 1,
                fua: true
            }
        );
        assert_eq!(Request::decode(OP_FLUSH, 0, 0), Request::Flush);
        assert_eq!(
            Request::decode(OP_WRITE_ZEROES | F_NOUNMAP, 4, 4),
            Request::WriteZeroes {
                sector: 4,
                sectors: 4,
                may_unmap: false,
                fua: false
            }
        );
        assert_eq!(Request::decode(13, 0, 1), Request::Unsupported(13));
    }

    #[test]
    fn write_then_read_round_trips() {
        let ram = Ram::new(16);
        let mut buf = vec![0u8; 4096];
        buf[..1024].fill(0xab);
        let w = Request::decode(OP_WRITE, 3, 2);
        assert_eq!(serve_now(&ram, w, &mut buf), 1024);
        let mut back = vec![0u8; 4096];
        assert_eq!(
            serve_now(&ram, Request::decode(OP_READ, 3, 2), &mut back),
            1024
        );
        assert!(back[..1024].iter().all(|&b| b == 0xab));
        assert!(back[1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn flags_reach_the_export() {
        let ram = Ram::new(16);
        let mut buf = vec![0u8; 512];
        serve_now(&ram, Request::decode(OP_WRITE | F_FUA, 0, 1), &mut buf);
        assert_eq!(
            serve_now(&ram, Request::decode(OP_FLUSH, 0, 0), &mut buf),
            0
        );
        serve_now(&ram, Request::decode(OP_DISCARD, 2, 6), &mut buf);
        serve_now(&ram, Request::decode(OP_WRITE_ZEROES, 2, 6), &mut buf);
        serve_now(
            &ram,
            Request::decode(OP_WRITE_ZEROES | F_NOUNMAP | F_FUA, 2, 6),
            &mut buf,
        );
        assert_eq!(
            *ram.calls.lock().unwrap(),
            [
                "write 0 fua=true",
                "flush",
                "discard 2+6",
                "zeroes 2+6 unmap=true fua=false",
                "zeroes 2+6 unmap=false fua=true"
            ]
        );
    }

    #[test]
    fn errors_are_negative_errnos() {
        let ram = Ram::new(4);
        let mut buf = vec![0u8; 4096];
        // Past the end of the device: the export's errno.
        assert_eq!(
            serve_now(&ram, Request::decode(OP_READ, 3, 2), &mut buf),
            -libc::EIO
        );
        // Larger than the tag's buffer.
        assert_eq!(
            serve_now(&ram, Request::decode(OP_READ, 0, 9), &mut buf),
            -libc::EINVAL
        );
        assert_eq!(
            serve_now(&ram, Request::decode(10, 0, 1), &mut buf),
            -libc::EOPNOTSUPP
        );
    }

    #[test]
    fn a_held_read_ends_later_on_another_thread() {
        let dev = Holding::default();
        let mut tag = vec![0u8; 4096];
        let (tx, rx) = mpsc::channel();
        let req = Request::decode(OP_READ, 6, 2);
        // The tag's owned buffer is reused: longer than this read, it is cut to size.
        serve(&dev, req, &tag, vec![9u8; 3000], move |res, data| {
            tx.send((res, data)).unwrap();
        });
        assert!(rx.try_recv().is_err(), "a held read ended");
        let (sector, mut buf, done) = dev.reads.lock().unwrap().pop().unwrap();
        assert_eq!((sector, buf.len()), (6, 1024));
        std::thread::spawn(move || {
            buf.fill(0x5a);
            done(Ok(()), buf);
        })
        .join()
        .unwrap();
        let (res, data) = rx.recv().unwrap();
        assert_eq!(res, 1024);
        assert_eq!(finish(req, res, &data, &mut tag), 1024);
        assert!(tag[..1024].iter().all(|&b| b == 0x5a));
        assert!(tag[1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_read_that_gives_back_less_data_is_an_error() {
        let req = Request::decode(OP_READ, 0, 2);
        let mut tag = vec![0u8; 4096];
        assert_eq!(finish(req, 1024, &[1u8; 512], &mut tag), -libc::EIO);
        assert_eq!(finish(req, -libc::EIO, &[], &mut tag), -libc::EIO);
        // Only reads copy back.
        let w = Request::decode(OP_WRITE, 0, 2);
        assert_eq!(finish(w, 1024, &[], &mut tag), 1024);
    }

    #[test]
    fn a_request_the_export_loses_drops_its_callback() {
        // An export that loses a request drops its `done` uncalled, and with it the
        // caller's callback (the kernel side's slot then ends the tag with EIO).
        struct Loses;
        impl Export for Loses {
            fn read(&self, _: u64, _: Vec<u8>, _: IoDone) {}
            fn write(&self, _: u64, _: Vec<u8>, _: bool, _: IoDone) {}
            fn flush(&self, _: Done) {}
            fn discard(&self, _: u64, _: u64, _: Done) {}
            fn write_zeroes(&self, _: u64, _: u64, _: bool, _: bool, _: Done) {}
        }
        let (tx, rx) = mpsc::channel::<i32>();
        serve(&Loses, Request::Flush, &[], Vec::new(), move |res, _| {
            tx.send(res).unwrap();
        });
        // The callback was dropped, not run: the sender is gone.
        assert!(rx.recv().is_err());
    }

    #[cfg(feature = "libublk")]
    #[test]
    fn constants_match_the_uapi_header() {
        use libublk::sys;
        assert_eq!(OP_READ, sys::UBLK_IO_OP_READ);
        assert_eq!(OP_WRITE, sys::UBLK_IO_OP_WRITE);
        assert_eq!(OP_FLUSH, sys::UBLK_IO_OP_FLUSH);
        assert_eq!(OP_DISCARD, sys::UBLK_IO_OP_DISCARD);
        assert_eq!(OP_WRITE_ZEROES, sys::UBLK_IO_OP_WRITE_ZEROES);
        assert_eq!(F_FUA, sys::UBLK_IO_F_FUA);
        assert_eq!(F_NOUNMAP, sys::UBLK_IO_F_NOUNMAP);
    }
}

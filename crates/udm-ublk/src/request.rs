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

/// Serve `req` on `export`, `buf` being the tag's data buffer. Returns what the ublk
/// command completes with: the byte count for a read or write, 0 for the other ops,
/// or a negative errno.
pub fn serve(export: &dyn Export, req: Request, buf: &mut [u8]) -> i32 {
    let bytes = req.data_bytes();
    if bytes > buf.len() || i32::try_from(bytes).is_err() {
        return -libc::EINVAL;
    }
    let done = match req {
        Request::Read { sector, .. } => export.read(sector, &mut buf[..bytes]),
        Request::Write { sector, fua, .. } => export.write(sector, &buf[..bytes], fua),
        Request::Flush => export.flush(),
        Request::Discard { sector, sectors } => export.discard(sector, sectors.into()),
        Request::WriteZeroes {
            sector,
            sectors,
            may_unmap,
            fua,
        } => export.write_zeroes(sector, sectors.into(), may_unmap, fua),
        Request::Unsupported(_) => Err(libc::EOPNOTSUPP),
    };
    match done {
        // `bytes` fits in an i32 (checked above).
        Ok(()) => bytes as i32,
        Err(errno) if errno > 0 => -errno,
        Err(_) => -libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

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

    impl Export for Ram {
        fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), i32> {
            let r = self.range(sector, buf.len())?;
            buf.copy_from_slice(&self.data.lock().unwrap()[r]);
            Ok(())
        }
        fn write(&self, sector: u64, buf: &[u8], fua: bool) -> Result<(), i32> {
            self.log(format!("write {sector} fua={fua}"));
            let r = self.range(sector, buf.len())?;
            self.data.lock().unwrap()[r].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&self) -> Result<(), i32> {
            self.log("flush".into());
            Ok(())
        }
        fn discard(&self, sector: u64, sectors: u64) -> Result<(), i32> {
            self.log(format!("discard {sector}+{sectors}"));
            Ok(())
        }
        fn write_zeroes(
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
        assert_eq!(serve(&ram, w, &mut buf), 1024);
        let mut back = vec![0u8; 4096];
        assert_eq!(serve(&ram, Request::decode(OP_READ, 3, 2), &mut back), 1024);
        assert!(back[..1024].iter().all(|&b| b == 0xab));
        assert!(back[1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn flags_reach_the_export() {
        let ram = Ram::new(16);
        let mut buf = vec![0u8; 512];
        serve(&ram, Request::decode(OP_WRITE | F_FUA, 0, 1), &mut buf);
        assert_eq!(serve(&ram, Request::decode(OP_FLUSH, 0, 0), &mut buf), 0);
        serve(&ram, Request::decode(OP_DISCARD, 2, 6), &mut buf);
        serve(&ram, Request::decode(OP_WRITE_ZEROES, 2, 6), &mut buf);
        serve(
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
            serve(&ram, Request::decode(OP_READ, 3, 2), &mut buf),
            -libc::EIO
        );
        // Larger than the tag's buffer.
        assert_eq!(
            serve(&ram, Request::decode(OP_READ, 0, 9), &mut buf),
            -libc::EINVAL
        );
        assert_eq!(
            serve(&ram, Request::decode(10, 0, 1), &mut buf),
            -libc::EOPNOTSUPP
        );
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

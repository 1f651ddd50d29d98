//! Underlying devices ("pdevs"): what a target reads and writes. Regular files and
//! block devices are served by [`FileDev`] with positioned I/O; other udm devices
//! are served by the engine's stacking adaptor.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bio::Bio;
use crate::sector::{Sector, SECTOR_SHIFT};
use crate::Device;

/// A device number, as the kernel prints it (`major:minor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevNumber {
    pub major: u32,
    pub minor: u32,
}

impl DevNumber {
    pub const fn new(major: u32, minor: u32) -> Self {
        DevNumber { major, minor }
    }
    /// The kernel's `huge_encode_dev` form used in dm-ioctl structures.
    pub fn encode(self) -> u64 {
        let (ma, mi) = (self.major as u64, self.minor as u64);
        (mi & 0xff) | (ma << 8) | ((mi & !0xff) << 12)
    }
    pub fn decode(dev: u64) -> Self {
        DevNumber {
            major: ((dev & 0xfff00) >> 8) as u32,
            minor: ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32,
        }
    }
}

impl fmt::Display for DevNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// An underlying device. Offsets and lengths are in bytes and sector aligned.
pub trait BlockDev: Send + Sync {
    /// Size in 512-byte sectors.
    fn size_sectors(&self) -> u64;
    /// Device number for deps; files have none of their own (see [`FileDev`]).
    fn dev_number(&self) -> DevNumber;
    /// How tables print this device: `major:minor`, or the path of a regular file.
    fn display_name(&self) -> String;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()>;
    /// Read consecutive bytes from `offset` into several buffers (the pieces of a
    /// striped read that lie one after another on this device): one preadv for files.
    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<()> {
        let mut off = offset;
        for b in bufs.iter_mut() {
            self.read_at(b, off)?;
            off += b.len() as u64;
        }
        Ok(())
    }
    /// Write several buffers to consecutive bytes from `offset`.
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64, fua: bool) -> io::Result<()> {
        let mut off = offset;
        for b in bufs {
            self.write_at(b, off, fua)?;
            off += b.len() as u64;
        }
        Ok(())
    }
    fn flush(&self) -> io::Result<()>;
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Zero a range (`may_unmap`: it may be deallocated). With `fast_only`, fail with
    /// EOPNOTSUPP, changing nothing, when that would mean writing zeros.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_unmap: bool,
        fast_only: bool,
    ) -> io::Result<()>;
    /// Whether `[offset, offset+len)` starts with allocated data or a hole (reads as zero);
    /// returns the kind and how many bytes it extends for (at least 1 sector).
    fn extent(&self, offset: u64, len: u64) -> (bool, u64) {
        let _ = offset;
        (false, len)
    }
    /// The udm device behind this pdev, when it is a stacked udm device.
    fn udm_device(&self) -> Option<&Arc<Device>> {
        None
    }
    fn read_only(&self) -> bool {
        false
    }
    /// Whether the device completes bios on its own time (another udm device, a
    /// device that injects delays): the core then hands it bios with
    /// [`BlockDev::submit`] instead of calling the methods above.
    fn is_async(&self) -> bool {
        false
    }
    /// Take `bio` (at device sector `sector`) and complete it when done. The
    /// default carries it out at once with the methods above.
    fn submit(&self, mut bio: Bio, sector: Sector) {
        let r = crate::io::execute(self, &mut bio, sector);
        bio.complete(r);
    }
}

/// Major number under which regular files are listed in deps: 0 is Linux's
/// "unnamed" major, so it never collides with a real block device.
pub const FILE_MAJOR: u32 = 0;

/// A regular file or a block device, read and written with pread/pwrite.
pub struct FileDev {
    file: File,
    path: PathBuf,
    pub(crate) is_block: bool,
    read_only: bool,
    /// Opened with O_DIRECT: memory must be aligned, so unaligned buffers bounce.
    direct: bool,
    number: DevNumber,
    /// Identity used by the pdev cache: (st_dev, st_ino) for files, rdev for block devices.
    pub(crate) key: (u64, u64),
}

impl fmt::Debug for FileDev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileDev")
            .field("path", &self.path)
            .field("number", &self.number)
            .finish()
    }
}

impl FileDev {
    /// Opens `path` read-write (or read-only when asked, or when read-write is refused).
    /// `file_minor` numbers a regular file in deps (`0:<file_minor>`).
    pub fn open(
        path: &Path,
        read_only: bool,
        direct: bool,
        file_minor: u32,
    ) -> io::Result<FileDev> {
        let flags = if direct { libc::O_DIRECT } else { 0 };
        let open = |write: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(flags)
                .open(path)
        };
        let (file, ro) = if read_only {
            (open(false)?, true)
        } else {
            match open(true) {
                Ok(f) => (f, false),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EROFS)) => {
                    (open(false)?, true)
                }
                Err(e) => return Err(e),
            }
        };
        let meta = file.metadata()?;
        let key = identity(&meta)?;
        let is_block = meta.file_type().is_block_device();
        let number = if is_block {
            DevNumber::new(libc::major(meta.rdev()), libc::minor(meta.rdev()))
        } else {
            DevNumber::new(FILE_MAJOR, file_minor)
        };
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(FileDev {
            file,
            path,
            is_block,
            read_only: ro,
            direct,
            number,
            key,
        })
    }

    /// The pdev-cache identity of what `path` names, from a stat: lets a cached
    /// device be reused without opening (and resolving) the path again.
    pub(crate) fn cache_key(path: &Path) -> io::Result<(u64, u64)> {
        identity(&std::fs::metadata(path)?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn raw_fd(&self) -> std::os::unix::io::RawFd {
        self.file.as_raw_fd()
    }

    fn size_bytes(&self) -> u64 {
        if self.is_block {
            // SAFETY: lseek on an fd we own; it does not touch memory.
            let end = unsafe { libc::lseek(self.file.as_raw_fd(), 0, libc::SEEK_END) };
            if end < 0 {
                0
            } else {
                end as u64
            }
        } else {
            self.file.metadata().map(|m| m.len()).unwrap_or(0)
        }
    }

    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate on an fd we own with plain integer arguments.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn blk_ioctl(&self, req: libc::c_ulong, offset: u64, len: u64) -> io::Result<()> {
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKDISCARD/BLKZEROOUT read a u64[2] from the pointer, which is valid for the call.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), req as _, range.as_ptr()) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn pread_all(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                // Past the end of a file that shrank under its table: a block device
                // fails such a read, it does not invent zeros.
                Ok(0) => return Err(io::Error::from_raw_os_error(libc::EIO)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn pwrite_all(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        if fua {
            let iov = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            // SAFETY: the iovec points at `buf`, valid and unmodified for the call.
            let r = unsafe {
                libc::pwritev2(
                    self.file.as_raw_fd(),
                    &iov,
                    1,
                    offset as libc::off_t,
                    libc::RWF_DSYNC,
                )
            };
            if r == buf.len() as isize {
                return Ok(());
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                    return Err(e);
                }
            }
            self.file.write_all_at(buf, offset)?;
            return self.file.sync_data();
        }
        self.file.write_all_at(buf, offset)
    }

    /// Whether `buf` can go to the kernel as it is (always, without O_DIRECT).
    pub(crate) fn dio_ok(&self, ptr: *const u8, len: usize, offset: u64) -> bool {
        !self.direct
            || (ptr as usize % DIO_ALIGN == 0
                && len % DIO_ALIGN == 0
                && offset % DIO_ALIGN as u64 == 0)
    }

    pub(crate) fn write_zero_buffers(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; (len.min(1 << 20)) as usize];
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], offset, false)?;
            offset += n as u64;
        }
        Ok(())
    }
}

/// Alignment used for O_DIRECT buffers, offsets and lengths (covers 512- and 4096-byte
/// logical blocks; sector-granular I/O that is not 4 KiB aligned takes the bounce path
/// and must then be 512-aligned, which udm's I/O always is).
const DIO_ALIGN: usize = 4096;

/// A zeroed buffer of `len` bytes whose start is aligned to [`DIO_ALIGN`].
pub(crate) struct Bounce {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl Bounce {
    pub(crate) fn new(len: usize) -> Bounce {
        let mem = vec![0u8; len + DIO_ALIGN];
        let start = mem.as_ptr().align_offset(DIO_ALIGN).min(DIO_ALIGN);
        Bounce { mem, start, len }
    }
    pub(crate) fn slice(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

/// (st_dev, st_ino) for a regular file, (MAX, rdev) for a block device; anything
/// else cannot back a target (ENOTBLK).
fn identity(meta: &std::fs::Metadata) -> io::Result<(u64, u64)> {
    let ft = meta.file_type();
    if ft.is_block_device() {
        Ok((u64::MAX, meta.rdev()))
    } else if ft.is_file() {
        Ok((meta.dev(), meta.ino()))
    } else {
        Err(io::Error::from_raw_os_error(libc::ENOTBLK))
    }
}

/// Whether a failed fallocate or BLKZEROOUT means "not supported here" (the
/// filesystem or device has no such operation), as opposed to an I/O failure.
pub(crate) fn not_supported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::ENOSYS)
    )
}

/// Most iovecs one preadv/pwritev takes (Linux's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// Run a preadv/pwritev-shaped `call` over `bufs` from `offset` until every byte
/// moved: EINTR is retried, a short transfer continues after what moved, and a
/// transfer of nothing (past the end of a file that shrank) is EIO.
fn vectored<T>(
    mut bufs: &mut [T],
    offset: u64,
    advance: fn(&mut &mut [T], usize),
    mut call: impl FnMut(&[T], libc::c_int, libc::off_t) -> isize,
) -> io::Result<()> {
    let mut off = offset;
    while !bufs.is_empty() {
        let cnt = bufs.len().min(IOV_MAX) as libc::c_int;
        let n = call(bufs, cnt, off as libc::off_t);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        off += n as u64;
        advance(&mut bufs, n as usize);
    }
    Ok(())
}

const BLKDISCARD: libc::c_ulong = 0x1277; // _IO(0x12, 119)
const BLKZEROOUT: libc::c_ulong = 0x127f; // _IO(0x12, 127)

impl BlockDev for FileDev {
    fn size_sectors(&self) -> u64 {
        self.size_bytes() >> SECTOR_SHIFT
    }

    fn dev_number(&self) -> DevNumber {
        self.number
    }

    fn display_name(&self) -> String {
        if self.is_block {
            self.number.to_string()
        } else {
            self.path.display().to_string()
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if !self.dio_ok(buf.as_ptr(), buf.len(), offset) {
            let mut b = Bounce::new(buf.len());
            self.pread_all(b.slice(), offset)?;
            buf.copy_from_slice(b.slice());
            return Ok(());
        }
        self.pread_all(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        if !self.dio_ok(buf.as_ptr(), buf.len(), offset) {
            let mut b = Bounce::new(buf.len());
            b.slice().copy_from_slice(buf);
            return self.pwrite_all(b.slice(), offset, fua);
        }
        self.pwrite_all(buf, offset, fua)
    }

    fn read_vectored_at(&self, bufs: &mut [IoSliceMut<'_>], offset: u64) -> io::Result<()> {
        let aligned = bufs
            .iter()
            .all(|b| self.dio_ok(b.as_ptr(), b.len(), offset));
        if !aligned {
            let mut off = offset;
            for b in bufs.iter_mut() {
                self.read_at(b, off)?;
                off += b.len() as u64;
            }
            return Ok(());
        }
        let fd = self.file.as_raw_fd();
        vectored(bufs, offset, IoSliceMut::advance_slices, |iov, cnt, off| {
            // SAFETY: IoSliceMut is ABI-compatible with iovec; each points at a live,
            // exclusively borrowed buffer for the duration of the call.
            unsafe { libc::preadv(fd, iov.as_ptr() as *const libc::iovec, cnt, off) }
        })
    }

    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64, fua: bool) -> io::Result<()> {
        let aligned = bufs
            .iter()
            .all(|b| self.dio_ok(b.as_ptr(), b.len(), offset));
        if fua || self.read_only || !aligned {
            let mut off = offset;
            for b in bufs {
                self.write_at(b, off, fua)?;
                off += b.len() as u64;
            }
            return Ok(());
        }
        let mut owned: Vec<IoSlice<'_>> = bufs.to_vec();
        let fd = self.file.as_raw_fd();
        vectored(
            &mut owned,
            offset,
            IoSlice::advance_slices,
            |iov, cnt, off| {
                // SAFETY: IoSlice is ABI-compatible with iovec; each points at a live
                // buffer for the duration of the call.
                unsafe { libc::pwritev(fd, iov.as_ptr() as *const libc::iovec, cnt, off) }
            },
        )
    }

    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        if self.is_block {
            self.blk_ioctl(BLKDISCARD, offset, len)
        } else {
            self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        }
    }

    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_unmap: bool,
        fast_only: bool,
    ) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        let fast = if self.is_block && fast_only {
            // On a block device this mode is the write-zeroes offload without the
            // kernel's own fallback to writing zeros (BLKDEV_ZERO_NOFALLBACK).
            self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        } else if self.is_block {
            self.blk_ioctl(BLKZEROOUT, offset, len)
        } else if may_unmap {
            self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        } else {
            self.fallocate(
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        match fast {
            Ok(()) => Ok(()),
            // Only "this file or device cannot zero that way" falls back to writing
            // zeros (and not when the caller wants zeroing only if it is fast); a
            // real failure (EIO, ENOSPC, ...) is the answer.
            Err(e) if not_supported(&e) => {
                if fast_only {
                    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
                } else {
                    self.write_zero_buffers(offset, len)
                }
            }
            Err(e) => Err(e),
        }
    }

    fn extent(&self, offset: u64, len: u64) -> (bool, u64) {
        if self.is_block {
            return (false, len);
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: lseek with SEEK_DATA/SEEK_HOLE on an fd we own; no memory involved.
        let data = unsafe { libc::lseek(fd, offset as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            // ENXIO: no data at or after offset, the rest is a hole.
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENXIO) {
                (true, len)
            } else {
                (false, len)
            };
        }
        let data = data as u64;
        if data > offset {
            let n = (data - offset).min(len);
            return (true, round_sectors(n));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, offset as libc::off_t, libc::SEEK_HOLE) };
        if hole < 0 {
            return (false, len);
        }
        let n = (hole as u64).saturating_sub(offset).min(len);
        (false, round_sectors(n.max(1)))
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}

fn round_sectors(n: u64) -> u64 {
    // Extents are reported in whole sectors; a partial sector counts as data.
    let s = 1u64 << SECTOR_SHIFT;
    n.div_ceil(s) * s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_encoding_matches_kernel() {
        let d = DevNumber::new(253, 0x12345);
        let e = d.encode();
        assert_eq!(e, 0x45 | (253 << 8) | (0x12300 << 12));
        assert_eq!(DevNumber::decode(e), d);
        assert_eq!(DevNumber::new(8, 16).encode(), 0x810);
    }

    #[test]
    fn direct_io_with_unaligned_buffers() {
        // tmpfs has no O_DIRECT; use a directory on a disk filesystem.
        let base = std::env::var_os("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let p = dir.path().join("d");
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        let d = match FileDev::open(&p, false, true, 1) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                udm_testkit::unavailable("the target directory's filesystem has no O_DIRECT");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        // A buffer one byte into a Vec is never 4 KiB aligned.
        let mut mem = vec![0u8; 4096 + 513];
        let buf = &mut mem[1..1 + 4096];
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i % 251) as u8);
        d.write_at(buf, 8192 + 512, false).unwrap();
        d.write_at(buf, 65536, true).unwrap();
        let mut back = vec![0u8; 4096 + 7];
        d.read_at(&mut back[3..3 + 4096], 8192 + 512).unwrap();
        assert_eq!(&back[3..3 + 4096], &mem[1..1 + 4096]);
        d.write_zeroes(65536, 4096, false, false).unwrap();
        d.read_at(&mut back[3..3 + 4096], 65536).unwrap();
        assert!(back[3..3 + 4096].iter().all(|&b| b == 0));
        let plain = std::fs::read(&p).unwrap();
        assert_eq!(&plain[8192 + 512..8192 + 512 + 4096], &mem[1..1 + 4096]);
    }

    #[test]
    fn only_not_supported_falls_back() {
        for e in [libc::EOPNOTSUPP, libc::EINVAL, libc::ENOTTY] {
            assert!(not_supported(&io::Error::from_raw_os_error(e)), "{e}");
        }
        for e in [
            libc::EIO,
            libc::ENOSPC,
            libc::EBADF,
            libc::EFBIG,
            libc::EROFS,
        ] {
            assert!(!not_supported(&io::Error::from_raw_os_error(e)), "{e}");
        }
    }

    #[test]
    fn vectored_reads_and_writes_cover_every_buffer_and_fail_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        let d = FileDev::open(&p, false, false, 1).unwrap();
        let (a, b) = (vec![1u8; 512], vec![2u8; 1536]);
        d.write_vectored_at(&[IoSlice::new(&a), IoSlice::new(&b)], 1024, false)
            .unwrap();
        let (mut x, mut y) = (vec![0u8; 1024], vec![0u8; 1024]);
        d.read_vectored_at(
            &mut [IoSliceMut::new(&mut x), IoSliceMut::new(&mut y)],
            1024,
        )
        .unwrap();
        assert_eq!(&x[..512], &a[..]);
        assert_eq!(&x[512..], &b[..512]);
        assert_eq!(&y[..], &b[512..]);
        let mut z = vec![0u8; 1024];
        let e = d
            .read_vectored_at(&mut [IoSliceMut::new(&mut z)], 7680)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn file_roundtrip_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
        let d = FileDev::open(&p, false, false, 1).unwrap();
        assert_eq!(d.size_sectors(), 2048);
        d.write_at(&[7u8; 4096], 8192, true).unwrap();
        let mut b = [0u8; 4096];
        d.read_at(&mut b, 8192).unwrap();
        assert!(b.iter().all(|&x| x == 7));
        let (hole, n) = d.extent(0, 1 << 20);
        assert!(hole);
        assert_eq!(n, 8192);
        d.write_zeroes(8192, 4096, false, false).unwrap();
        d.read_at(&mut b, 8192).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(
            d.display_name(),
            std::fs::canonicalize(&p).unwrap().display().to_string()
        );
    }
}

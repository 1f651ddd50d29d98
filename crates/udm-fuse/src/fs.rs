//! The fuser `Filesystem`: one flat directory whose entries are the source's devices.
//! Requests are answered on the fuser thread that read them, except device I/O: reads and
//! writes (unaligned ones in whole blocks, see [`crate::unaligned`]), aligned discards and
//! zeroings and every flush are started on the fuser thread and answered from their
//! completion, on whichever thread ends them; the rest (unaligned fallocate ranges, lseek)
//! may wait, and is answered from its device's queue (see [`crate::queue`]).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};
use tracing::{debug, trace, warn};

use crate::bufs::BufPool;
use crate::queue::{IoQueue, Job};
use crate::source::{MappedFile, MapperSource, SeekKind};
use crate::unaligned::{widen, Rmw};

/// Entry and attribute lifetime in the kernel's caches: none, so that renames, removals and
/// resizes are seen by the next lookup or stat.
const TTL: Duration = Duration::ZERO;
/// The largest READ/WRITE the kernel may send (it also bounds direct I/O requests).
pub(crate) const MAX_WRITE: u32 = 1 << 20;
/// Reported as `st_blksize` and `f_bsize`; the loop driver takes its discard granularity
/// from `f_bsize`.
const BLOCK_SIZE: u32 = 4096;
/// Inode numbers below this are not devices (1 is the directory).
const FIRST_DEVICE_INO: u64 = 2;
/// readdir offsets of `.` and `..`; a device's offset is `id + FIRST_DEVICE_OFFSET`, so a
/// listing resumes correctly while devices come and go.
const FIRST_DEVICE_OFFSET: u64 = 3;

const FALLOC_KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
const FALLOC_PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
const FALLOC_ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;

/// Settings the filesystem needs from the mount options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FsConfig {
    pub(crate) direct_io: bool,
}

/// A FUSE open file: the device it was opened on, kept even if the device is removed
/// (its I/O then fails with the device's own errno).
struct OpenFile {
    id: u64,
    file: Arc<dyn MappedFile>,
    writable: bool,
    /// The device's queue for the blocking I/O, which must not wait on a fuser thread.
    queue: Arc<IoQueue>,
}

/// What an I/O handler needs of an open file.
struct Io {
    fh: FileHandle,
    file: Arc<dyn MappedFile>,
    writable: bool,
}

pub(crate) struct MapperFs {
    source: Arc<dyn MapperSource>,
    config: FsConfig,
    uid: u32,
    gid: u32,
    created: SystemTime,
    /// Looked up on every I/O (shared), changed only by open and release.
    open_files: RwLock<HashMap<u64, OpenFile>>,
    next_fh: AtomicU64,
    /// One queue per device with open files, shared by its opens.
    queues: Mutex<HashMap<u64, Weak<IoQueue>>>,
    /// Data buffers of asynchronous reads and writes, reused.
    bufs: Arc<BufPool>,
}

fn ino_of(id: u64) -> Option<INodeNo> {
    id.checked_add(FIRST_DEVICE_INO).map(INodeNo)
}

fn id_of(ino: INodeNo) -> Option<u64> {
    ino.0.checked_sub(FIRST_DEVICE_INO)
}

/// An errno from a [`MappedFile`], as FUSE wants it (positive; anything else is EIO).
fn errno(e: i32) -> Errno {
    Errno::from_i32(e.checked_abs().unwrap_or(libc::EIO))
}

/// Whether `[offset, offset+len)` goes through the file's asynchronous methods as it is.
fn is_async(file: &dyn MappedFile, offset: u64, len: u64) -> bool {
    file.async_granularity()
        .is_some_and(|g| offset % g.get() == 0 && len % g.get() == 0)
}

/// The file's block for asynchronous I/O (1 without an asynchronous path).
fn whole_block(file: &dyn MappedFile) -> u64 {
    file.async_granularity().map_or(1, |g| g.get())
}

/// The whole blocks around `[offset, offset+len)` that an asynchronous read or write
/// goes through, or `None` for the blocking path (no asynchronous path, or a last block
/// that the size cuts short).
fn async_range(file: &dyn MappedFile, offset: u64, len: u64) -> Option<(u64, u64)> {
    let g = file.async_granularity()?.get();
    widen(offset, len, g, file.size())
}

/// Names the kernel cannot show as one directory entry.
fn representable(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

impl MapperFs {
    pub(crate) fn new(source: Arc<dyn MapperSource>, config: FsConfig) -> Self {
        // SAFETY: geteuid and getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        MapperFs {
            source,
            config,
            uid,
            gid,
            created: SystemTime::now(),
            open_files: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            queues: Mutex::new(HashMap::new()),
            bufs: Arc::new(BufPool::default()),
        }
    }

    fn dir_attr(&self) -> FileAttr {
        self.attr(INodeNo::ROOT, FileType::Directory, 0, 0o755)
    }

    fn file_attr(&self, ino: INodeNo, file: &dyn MappedFile) -> FileAttr {
        let perm = if file.read_only() { 0o400 } else { 0o600 };
        self.attr(ino, FileType::RegularFile, file.size(), perm)
    }

    fn attr(&self, ino: INodeNo, kind: FileType, size: u64, perm: u16) -> FileAttr {
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.created,
            mtime: self.created,
            ctime: self.created,
            crtime: self.created,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK_SIZE,
            flags: 0,
        }
    }

    /// The device behind a file inode, if it still exists.
    fn device(&self, ino: INodeNo) -> Option<Arc<dyn MappedFile>> {
        self.source.open(id_of(ino)?)
    }

    fn open_file(&self, fh: FileHandle) -> Result<Io, Errno> {
        let files = self.open_files.read();
        let open = files.get(&fh.0).ok_or(Errno::EBADF)?;
        Ok(Io {
            fh,
            file: Arc::clone(&open.file),
            writable: open.writable,
        })
    }

    fn writable_file(&self, fh: FileHandle) -> Result<Io, Errno> {
        let io = self.open_file(fh)?;
        if !io.writable {
            return Err(Errno::EBADF);
        }
        if io.file.read_only() {
            return Err(Errno::EROFS);
        }
        Ok(io)
    }

    /// The queue of device `id`, made on its first open.
    fn queue_of(&self, id: u64) -> Arc<IoQueue> {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.get(&id).and_then(Weak::upgrade) {
            return q;
        }
        queues.retain(|_, q| q.strong_count() > 0);
        let q = Arc::new(IoQueue::default());
        queues.insert(id, Arc::downgrade(&q));
        q
    }

    /// Queues blocking I/O on the device of `io`'s file, so that a fuser thread never
    /// waits on a suspended device (a file released meanwhile still has its reply to
    /// send: it runs here).
    fn queue(&self, io: &Io, job: Job) {
        let queue = self
            .open_files
            .read()
            .get(&io.fh.0)
            .map(|open| Arc::clone(&open.queue));
        match queue {
            Some(q) => q.push(job),
            None => job(),
        }
    }

    fn release_all(&self) {
        for (_, open) in self.open_files.write().drain() {
            debug!(id = open.id, "releasing a file still open at session end");
            open.file.released();
        }
    }
}

/// What a `fallocate` on a device (whose size cannot change) comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Falloc {
    /// Nothing to do (an empty range, or one past the end with KEEP_SIZE).
    Nothing,
    /// A discard (punching a hole where a discard reads back as zeros).
    Discard { offset: u64, len: u64 },
    /// A zeroing.
    Zeroes { offset: u64, len: u64 },
}

fn plan_fallocate(
    file: &dyn MappedFile,
    offset: u64,
    len: u64,
    mode: i32,
) -> Result<Falloc, Errno> {
    let keep_size = mode & FALLOC_KEEP_SIZE != 0;
    let zero_range = match mode & !FALLOC_KEEP_SIZE {
        FALLOC_PUNCH_HOLE if keep_size => false,
        FALLOC_ZERO_RANGE => true,
        _ => return Err(Errno::EOPNOTSUPP),
    };
    let size = file.size();
    let end = offset.saturating_add(len);
    if end > size && !keep_size {
        // The file would have to grow, and a device cannot.
        return Err(Errno::ENOSPC);
    }
    let end = end.min(size);
    if offset >= end {
        return Ok(Falloc::Nothing);
    }
    let len = end - offset;
    Ok(if !zero_range && file.discard_zeroes() {
        Falloc::Discard { offset, len }
    } else {
        Falloc::Zeroes { offset, len }
    })
}

/// Answers a request that ended with `r`.
fn reply_empty(r: Result<(), i32>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// Asks for `wanted` if the kernel has it; an old kernel just goes without.
fn request_capability(config: &mut KernelConfig, wanted: InitFlags) {
    if let Err(missing) = config.add_capabilities(wanted) {
        debug!(?missing, "FUSE capability not offered by the kernel");
    }
}

impl Filesystem for MapperFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_WRITE) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        request_capability(config, InitFlags::FUSE_ATOMIC_O_TRUNC);
        request_capability(config, InitFlags::FUSE_ASYNC_DIO);
        request_capability(config, InitFlags::FUSE_PARALLEL_DIROPS);
        request_capability(config, InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        debug!(abi = ?config.kernel_abi(), "FUSE session initialised");
        Ok(())
    }

    fn destroy(&mut self) {
        self.release_all();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let found = self
            .source
            .list()
            .into_iter()
            .find(|(_, n)| n.as_bytes() == name.as_bytes());
        let Some((id, _)) = found else {
            return reply.error(Errno::ENOENT);
        };
        let (Some(ino), Some(file)) = (ino_of(id), self.source.open(id)) else {
            return reply.error(Errno::ENOENT);
        };
        reply.entry(&TTL, &self.file_attr(ino, file.as_ref()), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            return reply.attr(&TTL, &self.dir_attr());
        }
        match self.device(ino) {
            Some(file) => reply.attr(&TTL, &self.file_attr(ino, file.as_ref())),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino == INodeNo::ROOT {
            return reply.error(Errno::EPERM);
        }
        let Some(file) = self.device(ino) else {
            return reply.error(Errno::ENOENT);
        };
        // Times are accepted and forgotten (touch works); the size belongs to the device.
        let resize = size.is_some_and(|s| s != file.size());
        if resize || mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &self.file_attr(ino, file.as_ref()));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (Some(id), Some(file)) = (id_of(ino), self.device(ino)) else {
            return reply.error(Errno::ENOENT);
        };
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        if writable && file.read_only() {
            return reply.error(Errno::EROFS);
        }
        file.opened();
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let queue = self.queue_of(id);
        self.open_files.write().insert(
            fh,
            OpenFile {
                id,
                file,
                writable,
                queue,
            },
        );
        debug!(id, fh, writable, "open");
        let fopen = if self.config.direct_io {
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(fh), fopen);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let io = match self.open_file(fh) {
            Ok(io) => io,
            Err(e) => return reply.error(e),
        };
        let end = offset.saturating_add(u64::from(size)).min(io.file.size());
        let Some(len) = end
            .checked_sub(offset)
            .filter(|&l| l > 0)
            .and_then(|l| usize::try_from(l).ok())
        else {
            // At or past the end: EOF.
            return reply.data(&[]);
        };
        trace!(fh = fh.0, offset, len, "read");
        let bufs = Arc::clone(&self.bufs);
        // An unaligned read reads the whole blocks around it.
        let whole = async_range(io.file.as_ref(), offset, len as u64);
        if let Some((start, end)) = whole.and_then(|(s, e)| Some((s, usize::try_from(e - s).ok()?)))
        {
            let skip = (offset - start) as usize;
            let done: crate::IoDone = Box::new(move |r, buf| {
                read_done(
                    fh,
                    offset,
                    r,
                    buf.get(skip..).unwrap_or_default(),
                    len,
                    reply,
                );
                bufs.give(buf);
            });
            return io.file.read_async(start, self.bufs.zeroed(end), done);
        }
        let buf = self.bufs.zeroed(len);
        let done: crate::IoDone = Box::new(move |r, buf| {
            read_done(fh, offset, r, &buf, len, reply);
            bufs.give(buf);
        });
        let file = Arc::clone(&io.file);
        self.queue(
            &io,
            Box::new(move || {
                let mut buf = buf;
                let r = file.read(offset, &mut buf);
                done(r, buf);
            }),
        );
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let io = match self.writable_file(fh) {
            Ok(io) => io,
            Err(e) => return reply.error(e),
        };
        let size = io.file.size();
        if data.is_empty() {
            return reply.written(0);
        }
        if offset >= size {
            return reply.error(Errno::ENOSPC);
        }
        // A write across the end is short, as on a block device.
        let len = usize::try_from(size - offset).map_or(data.len(), |room| room.min(data.len()));
        let Ok(written) = u32::try_from(len) else {
            return reply.error(Errno::EINVAL);
        };
        trace!(fh = fh.0, offset, len, "write");
        // The payload is fuser's, borrowed for this call: the request keeps a copy.
        let buf = self.bufs.copy_of(&data[..len]);
        let bufs = Arc::clone(&self.bufs);
        let done: crate::IoDone = Box::new(move |r, buf| {
            match r {
                Ok(()) => reply.written(written),
                Err(e) => {
                    debug!(fh = fh.0, offset, len, errno = e, "write failed");
                    reply.error(errno(e));
                }
            }
            bufs.give(buf);
        });
        if let Some(whole) = async_range(io.file.as_ref(), offset, len as u64) {
            if whole == (offset, offset + len as u64) {
                return io.file.write_async(offset, buf, done);
            }
            // An unaligned write reads the partial blocks at its edges first.
            let (file, bufs) = (Arc::clone(&io.file), Arc::clone(&self.bufs));
            let g = whole_block(io.file.as_ref());
            return Rmw::start(file, bufs, g, whole, offset, buf, done);
        }
        let file = Arc::clone(&io.file);
        self.queue(
            &io,
            Box::new(move || {
                let r = file.write(offset, &buf);
                done(r, buf);
            }),
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): nothing is buffered here; durability is fsync's job.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let open = self.open_files.write().remove(&fh.0);
        match open {
            Some(open) => {
                debug!(id = open.id, fh = fh.0, "release");
                open.file.released();
                reply.ok();
            }
            None => reply.error(Errno::EBADF),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let io = match self.open_file(fh) {
            Ok(io) => io,
            Err(e) => return reply.error(e),
        };
        let done: crate::Done = Box::new(move |r| {
            if let Err(e) = r {
                warn!(fh = fh.0, errno = e, "flush failed");
            }
            reply_empty(r, reply);
        });
        if io.file.async_granularity().is_some() {
            return io.file.flush_async(done);
        }
        let file = Arc::clone(&io.file);
        self.queue(&io, Box::new(move || done(file.flush())));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut devices: Vec<(u64, INodeNo, String)> = self
            .source
            .list()
            .into_iter()
            .filter_map(|(id, name)| {
                if !representable(&name) {
                    warn!(id, name, "device name cannot be a file name; not listed");
                    return None;
                }
                let off = id.checked_add(FIRST_DEVICE_OFFSET)?;
                Some((off, ino_of(id)?, name))
            })
            .collect();
        devices.sort_unstable_by_key(|d| d.0);
        let dots = [
            (1, INodeNo::ROOT, FileType::Directory, "."),
            (2, INodeNo::ROOT, FileType::Directory, ".."),
        ];
        let entries = dots.into_iter().chain(
            devices
                .iter()
                .map(|(off, ino, name)| (*off, *ino, FileType::RegularFile, name.as_str())),
        );
        for (off, ino, kind, name) in entries.filter(|e| e.0 > offset) {
            if reply.add(ino, off, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = u64::try_from(self.source.list().len()).unwrap_or(u64::MAX);
        reply.statfs(0, 0, 0, files, 0, BLOCK_SIZE, 255, BLOCK_SIZE);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        trace!(fh = fh.0, offset, length, mode, "fallocate");
        let io = match self.writable_file(fh) {
            Ok(io) => io,
            Err(e) => return reply.error(e),
        };
        let plan = match plan_fallocate(io.file.as_ref(), offset, length, mode) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let done: crate::Done = Box::new(move |r| reply_empty(r, reply));
        let file = Arc::clone(&io.file);
        match plan {
            Falloc::Nothing => done(Ok(())),
            Falloc::Discard { offset, len } if is_async(file.as_ref(), offset, len) => {
                file.discard_async(offset, len, done)
            }
            Falloc::Zeroes { offset, len } if is_async(file.as_ref(), offset, len) => {
                file.write_zeroes_async(offset, len, done)
            }
            Falloc::Discard { offset, len } => {
                self.queue(&io, Box::new(move || done(file.discard(offset, len))))
            }
            Falloc::Zeroes { offset, len } => {
                self.queue(&io, Box::new(move || done(file.write_zeroes(offset, len))))
            }
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let kind = match whence {
            libc::SEEK_DATA => SeekKind::Data,
            libc::SEEK_HOLE => SeekKind::Hole,
            _ => return reply.error(Errno::EINVAL),
        };
        let io = match self.open_file(fh) {
            Ok(io) => io,
            Err(e) => return reply.error(e),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        // A map of the device: it may wait for a suspended device, so it is queued.
        let file = Arc::clone(&io.file);
        self.queue(
            &io,
            Box::new(move || match file.seek(offset, kind).map(i64::try_from) {
                Ok(Ok(pos)) => reply.offset(pos),
                Ok(Err(_)) => reply.error(Errno::EOVERFLOW),
                Err(e) => reply.error(errno(e)),
            }),
        );
    }

    // No extended attributes, answered as a filesystem without them answers (fuser's
    // defaults log a warning on every call; `ls -l` asks for security.selinux).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }
}

/// Answers a READ of `len` bytes that ended with `r`, the data in `buf`.
fn read_done(
    fh: FileHandle,
    offset: u64,
    r: Result<(), i32>,
    buf: &[u8],
    len: usize,
    reply: ReplyData,
) {
    match (r, buf.get(..len)) {
        (Ok(()), Some(data)) => reply.data(data),
        (Ok(()), None) => {
            warn!(
                fh = fh.0,
                offset,
                len,
                got = buf.len(),
                "a read gave back a short buffer"
            );
            reply.error(Errno::EIO);
        }
        (Err(e), _) => {
            debug!(fh = fh.0, offset, len, errno = e, "read failed");
            reply.error(errno(e));
        }
    }
}

//! The FUSE "mapper directory": every mapped device appears as a regular file
//! `DIR/<name>`, sized to the device and read and written through it, so that
//! `losetup -f --show DIR/<name>` gives a kernel block device without dm, nbd or ublk.
//!
//! The crate knows nothing of the engine: [`mount`] takes a [`MapperSource`] (the list of
//! devices) whose [`MappedFile`]s do the I/O.
//!
//! # Design choices
//!
//! * **Threads, and I/O that waits.** fuser 0.18 runs its session on `n` threads itself
//!   (`Config::n_threads`, each thread blocking on its own `FUSE_DEV_IOC_CLONE`d `/dev/fuse`
//!   fd, [`MountOptions::threads`]). Device I/O is asynchronous: a READ, WRITE or FSYNC,
//!   and a FALLOCATE of an aligned range, is started on the fuser thread with an owned
//!   buffer ([`MappedFile::read_async`], ...) and answered from its completion, on
//!   whichever thread ends it (fuser's replies are `Send`). So a request the device holds
//!   (suspended, or a `delay` target) holds no thread, and as many requests as the kernel
//!   sends are in flight at once, however few the threads. Reads and writes off the
//!   file's block ([`MappedFile::async_granularity`], a sector) go in whole blocks, a
//!   write reading its partial edge blocks first (`unaligned.rs`): the kernel splits a
//!   direct read or write at the caller's page boundaries, so a 1 MiB read into a
//!   malloc'ed buffer arrives as 1 MiB - 16 bytes and 16 bytes. Buffers are reused
//!   (`bufs.rs`); a write's payload is copied once, out of fuser's read buffer. Unaligned
//!   fallocate ranges and lseek use blocking calls, which may wait: they go to their
//!   device's queue and are answered from its worker (one per device, started on demand,
//!   ended when idle; see `queue.rs`), so a suspended device never blocks lookups,
//!   listings, attributes or another device's I/O.
//! * **No stale names.** Lookups and readdir ask [`MapperSource::list`] every time and entry
//!   and attribute TTLs are 0, so creations, removals, renames and resizes show at once.
//!   The inode number of a device is `id + 2` (1 is the directory).
//! * **`direct_io` on open (the default).** Every read and write of the file goes straight to
//!   the device, with no page cache of our own. Reasons: (1) coherence: the device can change
//!   underneath (a table reload, a snapshot merge, a write through the NBD export), and a
//!   FUSE page cache would keep serving the old data; (2) without `losetup --direct-io` the
//!   loop device already caches in its own page cache (and ext4 on top in its own), so ours
//!   would be a second copy; (3) fsync has nothing to write back and maps one-to-one to
//!   FLUSH. Parallel direct writes are allowed (`FOPEN_PARALLEL_DIRECT_WRITES`), and `mmap`
//!   still works where the kernel has `FUSE_DIRECT_IO_ALLOW_MMAP` (6.6+).
//!   Measured (RAM device, 2 vCPUs, one noisy 8 s fio run each, direct_io vs page cache):
//!   on the file, 128k psync write 1414 vs 485 MiB/s, read 1459 vs 859 MiB/s, 4k random
//!   read io_uring qd16 105k vs 29k IOPS; on `losetup --direct-io=on` (fio O_DIRECT qd16),
//!   128k read 3391 vs 2669 MiB/s, write 2933 vs 1798 MiB/s, 4k random read 120k vs 33k
//!   IOPS, write 92k vs 95k. The page cache only wins under a *buffered* loop device read
//!   with O_DIRECT (128k read 1422 vs 959 MiB/s, 4k random read 38k vs 17k: its readahead
//!   and cache hits stand in for the loop cache that O_DIRECT skipped); a buffered loop
//!   writes 3.5x slower with it. Use `losetup --direct-io=on` for speed.
//! * **Block-device semantics where a file's would be wrong.** `O_TRUNC` is ignored (as on a
//!   block device; `FUSE_ATOMIC_O_TRUNC` keeps the kernel from sending a truncate), changing
//!   the size is `EPERM`, writes at or past the end are `ENOSPC` (a write across the end is
//!   short). `fallocate(PUNCH_HOLE|KEEP_SIZE)` must read back as zeros on a regular file (the
//!   loop driver turns WRITE_ZEROES into it), so it becomes [`MappedFile::discard`] only
//!   when [`MappedFile::discard_zeroes`] says a discard reads back as zeros, and
//!   [`MappedFile::write_zeroes`] otherwise. `ZERO_RANGE` is `write_zeroes`; other modes are
//!   `EOPNOTSUPP`. `SEEK_DATA`/`SEEK_HOLE` go to [`MappedFile::seek`].
//! * **Unmount.** Dropping a [`MapperMount`] unmounts and joins the session threads. If a
//!   file is still open (a loop device still attached), the directory is detached lazily
//!   instead: new opens fail, open files keep working, and the session ends when the last
//!   one is closed. A directory left mounted by a crashed run (`ENOTCONN`) is detached
//!   lazily before mounting again; a live FUSE mount (another udmd's mapper directory) is
//!   refused rather than mounted over. As root the mount is made here (`mount(2)` with a
//!   `/dev/fuse` fd) and unmounted exactly once, here; without privilege fuser mounts
//!   through `fusermount3` and unmounts (lazily) when the session is dropped.

mod bufs;
mod error;
mod fs;
mod mount;
mod queue;
pub mod ram;
mod source;
mod unaligned;

pub use error::FuseError;
pub use mount::{create_mount_point, mount, MapperMount, MountOptions};
pub use source::{Done, IoDone, MappedFile, MapperSource, SeekKind};

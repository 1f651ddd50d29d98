//! The ublk export: a mapped device as a kernel block device `/dev/ublkbN`, served
//! from user space through the kernel's ublk driver (`ublk_drv`, Linux 6.0+).
//!
//! The crate knows nothing of the engine: a device is an [`Export`] (sector I/O that
//! is started and ends later, for instance after a suspended device is resumed). What is always built is
//! the part that needs no kernel: decoding and serving one request ([`request`]) and
//! deciding which devices to add, resize or delete ([`plan`]). The kernel side,
//! [`UblkDevice`], is behind the `libublk` cargo feature because libublk's bindings
//! are generated at build time with bindgen, which needs libclang.
//!
//! # Design choices
//!
//! * **One thread per device owns its control handle.** libublk's control ring is
//!   thread-local, so a device's `UblkCtrl` is created, started, resized and stopped
//!   on one thread, which otherwise sleeps on a command channel.
//! * **A request holds no thread.** The queue thread starts each request on the export
//!   and goes back to its ring; the request's completion, on whichever thread ends it,
//!   hands the result to the tag and wakes the queue thread through an eventfd polled on
//!   the queue's io_uring, and the queue thread commits the tag (ublk takes commands of a
//!   queue from its own thread only). There is no thread pool in between: a request that
//!   the device holds (suspended until resume, or a `delay` target) costs no thread, and
//!   any number of them, up to the queue depth, wait at once. A request the device carries
//!   out at once (a file under a linear target) runs on the queue thread and commits
//!   without a wake-up.
//! * **Data moves through an owned buffer.** The kernel copies a tag's data into and out
//!   of the tag's registered buffer; a request carries its data in a `Vec` that the export
//!   owns until it ends (a bio's buffer), reused by the tag's next request, so the data is
//!   copied once more between the two ([`request::serve`], [`request::finish`]).
//! * **Sizes are fixed at add.** A size change is tried with `UPDATE_SIZE` (Linux
//!   6.16+); where that fails the caller re-adds the device (see [`plan`]).

pub mod plan;
pub mod request;
#[cfg(any(feature = "libublk", test))]
mod slot;

#[cfg(feature = "libublk")]
mod kernel;

#[cfg(feature = "libublk")]
pub use kernel::UblkDevice;

use std::path::Path;

/// The ublk control device; its presence means the kernel can serve ublk devices.
pub const CONTROL_PATH: &str = "/dev/ublk-control";

/// The block device of ublk device `id`.
pub fn bdev_path(id: u32) -> String {
    format!("/dev/ublkb{id}")
}

/// Whether the running kernel offers ublk (`ublk_drv` loaded).
pub fn available() -> bool {
    Path::new(CONTROL_PATH).exists()
}

/// Whether the ublk support was compiled in (the `libublk` feature).
pub const fn compiled_in() -> bool {
    cfg!(feature = "libublk")
}

/// The end of a read or write: the result (`Err` holds a positive errno) and the buffer
/// the request was given back (a read's now holding the data). Runs exactly once, on
/// whichever thread ends the request.
pub type IoDone = Box<dyn FnOnce(Result<(), i32>, Vec<u8>) + Send>;

/// The end of a flush, discard or write-zeroes request.
pub type Done = Box<dyn FnOnce(Result<(), i32>) + Send>;

/// A device served over ublk. All I/O is in whole 512-byte sectors; errors are positive
/// errno values. Every call starts a request and returns without waiting for it: its
/// `done` runs exactly once, from whichever thread ends it, possibly before the call
/// returns. A device may hold a request as long as it needs to (a suspended device holds
/// it until resume); that must hold no thread.
pub trait Export: Send + Sync + 'static {
    /// Read `buf.len()` bytes from `sector` into `buf`.
    fn read(&self, sector: u64, buf: Vec<u8>, done: IoDone);
    /// Write `buf` at `sector`.
    fn write(&self, sector: u64, buf: Vec<u8>, fua: bool, done: IoDone);
    fn flush(&self, done: Done);
    fn discard(&self, sector: u64, sectors: u64, done: Done);
    fn write_zeroes(&self, sector: u64, sectors: u64, may_unmap: bool, fua: bool, done: Done);
}

/// Queue geometry of an exported device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UblkOptions {
    /// Hardware queues (one serving thread each).
    pub queues: u16,
    /// Requests in flight per queue.
    pub depth: u16,
    /// Largest request, bytes (each tag owns a buffer this big).
    pub io_buf_bytes: u32,
}

impl Default for UblkOptions {
    fn default() -> Self {
        // 64 tags of 256 KiB: 16 MiB of buffers per device.
        UblkOptions {
            queues: 1,
            depth: 64,
            io_buf_bytes: 256 << 10,
        }
    }
}

/// What a new ublk device looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// For logs and thread names (the udm device name).
    pub name: String,
    /// The ublk id to ask for; another free id is taken when it is in use.
    pub preferred_id: Option<u32>,
    /// Size in bytes, a multiple of 512.
    pub size_bytes: u64,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the kernel has no ublk ({CONTROL_PATH} is missing; modprobe ublk_drv)")]
    NoKernelSupport,
    #[error("ublk {op}: {detail}")]
    Ublk { op: &'static str, detail: String },
    #[error("ublk device {id}: {what}")]
    Device { id: u32, what: String },
    #[error("size {0} is not a positive multiple of 512 bytes")]
    BadSize(u64),
    #[error("cannot start a ublk thread: {0}")]
    Thread(#[from] std::io::Error),
}

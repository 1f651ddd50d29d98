//! The ublk export: a mapped device as a kernel block device `/dev/ublkbN`, served
//! from user space through the kernel's ublk driver (`ublk_drv`, Linux 6.0+).
//!
//! The crate knows nothing of the engine: a device is an [`Export`] (sector I/O that
//! may block, for instance while the device is suspended). What is always built is
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
//! * **The queue thread never blocks on the device.** Every request is handed to a
//!   blocking thread pool (`smol::unblock`); the queue thread keeps serving other tags
//!   meanwhile. A suspended device therefore holds its requests in the pool until
//!   resume (they are never failed), while the queue stays responsive. A worker that
//!   finishes wakes the queue thread through an eventfd polled on the queue's io_uring.
//! * **Sizes are fixed at add.** A size change is tried with `UPDATE_SIZE` (Linux
//!   6.16+); where that fails the caller re-adds the device (see [`plan`]).

pub mod plan;
pub mod request;

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

/// A device served over ublk. All I/O is in whole 512-byte sectors; errors are
/// positive errno values. Calls may block (a suspended device holds them).
pub trait Export: Send + Sync + 'static {
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), i32>;
    fn write(&self, sector: u64, buf: &[u8], fua: bool) -> Result<(), i32>;
    fn flush(&self) -> Result<(), i32>;
    fn discard(&self, sector: u64, sectors: u64) -> Result<(), i32>;
    fn write_zeroes(
        &self,
        sector: u64,
        sectors: u64,
        may_unmap: bool,
        fua: bool,
    ) -> Result<(), i32>;
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

//! udm-core: the device-mapper engine rebuilt in user space.
//!
//! A [`Device`] maps sector ranges, through its active [`Table`], onto [`Target`]s;
//! the [`Engine`] owns the device namespace, the target [`Registry`] and the cache of
//! underlying devices, and offers one method per dm-ioctl command with the kernel's
//! semantics.

pub mod arg_reader;
pub mod args;
pub mod bio;
pub mod blockdev;
pub mod copier;
pub mod device;
pub mod engine;
pub mod error;
mod gate;
pub mod index;
pub mod io;
mod namespace;
pub mod registry;
mod resolver;
pub mod sector;
pub mod services;
pub mod table;
pub mod target;
pub mod testdev;
pub mod uring;

pub use arg_reader::ArgReader;
pub use bio::{Bio, Op};
pub use blockdev::{BlockDev, DevNumber, FileDev};
pub use device::{Device, DeviceInfo, OpenHandle};
pub use engine::{DevRef, Engine, EngineConfig, RenameTo};
pub use error::{DmError, Errno, TableError};
pub use io::issue;
pub use registry::{Registry, TargetType};
pub use sector::{Sector, SECTOR_SHIFT, SECTOR_SIZE};
pub use services::Services;
pub use table::{Table, TargetSpec};
pub use target::{
    ima_name_version, EndIo, ExtentKind, IoHints, Mapped, StatusType, Target, TargetCtx,
};
pub use uring::{IoEngine, UringDev};

//! `dm_ioctl.flags` bits (`DM_*_FLAG`). EXISTS has no kernel name: libdm
//! sets it on every request and the kernel echoes it back.

pub const READONLY: u32 = 0x1;
pub const SUSPEND: u32 = 0x2;
pub const EXISTS: u32 = 0x4;
pub const PERSISTENT_DEV: u32 = 0x8;
pub const STATUS_TABLE: u32 = 0x10;
pub const ACTIVE_PRESENT: u32 = 0x20;
pub const INACTIVE_PRESENT: u32 = 0x40;
pub const BUFFER_FULL: u32 = 0x100;
pub const SKIP_BDGET: u32 = 0x200;
pub const SKIP_LOCKFS: u32 = 0x400;
pub const NOFLUSH: u32 = 0x800;
pub const QUERY_INACTIVE_TABLE: u32 = 0x1000;
pub const UEVENT_GENERATED: u32 = 0x2000;
pub const UUID: u32 = 0x4000;
pub const SECURE_DATA: u32 = 0x8000;
pub const DATA_OUT: u32 = 0x10000;
pub const DEFERRED_REMOVE: u32 = 0x20000;
pub const INTERNAL_SUSPEND: u32 = 0x40000;
pub const IMA_MEASUREMENT: u32 = 0x80000;

/// Output-only flags the kernel clears on entry, before running a command.
pub const CLEARED_ON_ENTRY: u32 = BUFFER_FULL | UEVENT_GENERATED | SECURE_DATA | DATA_OUT;

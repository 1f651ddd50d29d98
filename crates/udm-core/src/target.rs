//! The target interface: a constructor (see [`crate::Registry`]), a map function,
//! status and message handlers, and suspend/resume hooks. Most targets only remap.

use std::sync::Arc;

use crate::args::parse_u64;
use crate::bio::Bio;
use crate::blockdev::BlockDev;
use crate::error::{DmError, Errno, TableError};

/// Which status line is asked for (dmsetup `status`, `table` or `measure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusType {
    Info,
    Table,
    /// STATUSTYPE_IMA (TABLE_STATUS with DM_IMA_MEASUREMENT_FLAG): the
    /// `key=value,...;` measurement line, empty for a target without one.
    Ima,
}

/// The start of every IMA line, the kernel's `DMEMIT_TARGET_NAME_VERSION`:
/// `target_name=<name>,target_version=<a>.<b>.<c>`.
pub fn ima_name_version(out: &mut String, name: &str, version: [u32; 3]) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "target_name={name},target_version={}.{}.{}",
        version[0], version[1], version[2]
    );
}

/// Where a bio went.
pub enum Mapped<'a> {
    /// Issue the bio, unchanged in size, to `dev` at `sector`.
    Remap { dev: &'a dyn BlockDev, sector: u64 },
    /// The target completed the bio itself.
    Done,
}

/// What a range of a target reads as, for NBD block status and SEEK_HOLE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    Data,
    /// Reads as zeros but is allocated.
    Zero,
    /// Reads as zeros and is not allocated.
    Hole,
}

pub trait Target: Send + Sync {
    /// Sectors from target offset `offset` to the next point where I/O must be split
    /// (a stripe chunk, a region). `u64::MAX` when the target never splits.
    fn max_io_len(&self, offset: u64) -> u64 {
        let _ = offset;
        u64::MAX
    }

    /// Decide where `bio` goes. `bio.sector` is relative to the start of the target.
    fn map<'s>(&'s self, bio: &mut Bio<'_>) -> Result<Mapped<'s>, Errno>;

    /// A remapped bio failed on the underlying device (offset relative to the target).
    fn end_io(&self, offset: u64, err: Errno) {
        let _ = (offset, err);
    }

    /// An empty flush. `None` means: flush the devices this target uses.
    fn flush(&self) -> Option<Result<(), Errno>> {
        None
    }

    /// Append the INFO, TABLE or IMA text (what follows `<start> <len> <type> `).
    /// Devices show as in TABLE ([`BlockDev::display_name`]: `major:minor`,
    /// or the path of a file), in IMA's `device_name` fields too.
    fn status(&self, kind: StatusType, out: &mut String);

    /// A target message (dmsetup message). `Ok(Some(reply))` sets DATA_OUT.
    fn message(&self, argv: &[String]) -> Result<Option<String>, DmError> {
        let _ = argv;
        Err(DmError::new(
            Errno::EINVAL,
            "target does not accept messages",
        ))
    }

    /// Underlying devices, in the order the table names them.
    fn devices(&self) -> Vec<Arc<dyn BlockDev>> {
        Vec::new()
    }

    /// The kind of the range starting at `offset` (sectors) and how many sectors
    /// (at least 1, at most `len`) share it.
    fn extent(&self, offset: u64, len: u64) -> (ExtentKind, u64) {
        let _ = offset;
        (ExtentKind::Data, len)
    }

    fn presuspend(&self) {}
    fn postsuspend(&self) {}
    fn preresume(&self) -> Result<(), DmError> {
        Ok(())
    }
    fn resume(&self) {}
}

/// Resolves a device argument of a table line into an open underlying device.
pub trait DevResolver {
    fn open(&self, spec: &str, read_only: bool) -> Result<Arc<dyn BlockDev>, DmError>;
}

/// What a constructor knows about the line it is building.
pub struct TargetCtx<'a> {
    pub line: u32,
    pub type_name: &'a str,
    /// Start of the target in the device, sectors.
    pub start: u64,
    /// Length of the target, sectors.
    pub len: u64,
    pub read_only: bool,
    pub resolver: &'a dyn DevResolver,
}

impl TargetCtx<'_> {
    pub fn err(&self, msg: impl Into<String>) -> TableError {
        TableError::new(self.line, self.type_name, msg)
    }

    /// An error about argument `idx` (1-based, as a user counts words after the type).
    pub fn arg_err(&self, idx: usize, name: &str, msg: impl Into<String>) -> TableError {
        self.err(msg).field(format!("argument {idx} ({name})"))
    }

    /// Parse argument `idx` (0-based into `args`) as an unsigned decimal.
    pub fn u64_arg(&self, args: &[String], idx: usize, name: &str) -> Result<u64, TableError> {
        let s = args.get(idx).map(String::as_str).unwrap_or("");
        parse_u64(s)
            .ok_or_else(|| self.arg_err(idx + 1, name, format!("'{s}' is not an unsigned number")))
    }

    /// Open the device named by argument `idx` and check that sectors
    /// `[start, start+len)` of it exist.
    pub fn device(
        &self,
        args: &[String],
        idx: usize,
        start: u64,
        len: u64,
    ) -> Result<Arc<dyn BlockDev>, TableError> {
        let spec = args.get(idx).map(String::as_str).unwrap_or("");
        let dev = self.resolver.open(spec, self.read_only).map_err(|e| {
            self.arg_err(idx + 1, "device", format!("'{spec}': {e}"))
                .errno(e.errno())
        })?;
        let size = dev.size_sectors();
        let end = start.checked_add(len);
        if end.is_none_or(|e| e > size) {
            return Err(self.arg_err(
                idx + 1,
                "device",
                format!(
                    "'{spec}' is too small for target: needs sectors {start}..{}, device has {size}",
                    start.saturating_add(len)
                ),
            ));
        }
        Ok(dev)
    }

    /// Exactly `n` arguments, or the kernel's "Invalid argument count".
    pub fn expect_args(&self, args: &[String], n: usize) -> Result<(), TableError> {
        if args.len() != n {
            return Err(self.err(format!(
                "invalid argument count: expected {n}, got {}",
                args.len()
            )));
        }
        Ok(())
    }
}

//! The target interface: a constructor (see [`crate::Registry`]), a map function,
//! status and message handlers, and suspend/resume hooks. Most targets only remap.

use std::sync::Arc;

use crate::args::parse_u64;
use crate::bio::Bio;
use crate::blockdev::BlockDev;
use crate::error::{DmError, Errno, TableError};
use crate::sector::Sector;
use crate::services::Services;

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

/// What `map` did with a bio (the kernel's `DM_MAPIO_*`).
pub enum Mapped<'a> {
    /// Issue the bio, unchanged in size, to `dev` at `sector`; its end goes
    /// through [`Target::end_io`] with destination 0.
    Remap(Bio, &'a dyn BlockDev, Sector),
    /// Issue the bio to every `(dev, sector)` at once (a mirror write): it ends when
    /// all did, each through `end_io` with its index. Reads cannot be cloned.
    Clone(Bio, Vec<(&'a dyn BlockDev, Sector)>),
    /// The target took the bio and will complete it (at once, or later, from any
    /// thread).
    Submitted,
    /// Hold the bio in the core: across a noflush suspend it waits for resume and
    /// goes to the new table; during a flushing suspend it fails with EIO;
    /// otherwise it is submitted again.
    Requeue(Bio),
    /// Fail the bio with this error.
    Kill(Bio, Errno),
}

/// What `end_io` decided (the kernel's `DM_ENDIO_*`).
pub enum EndIo {
    /// Complete the bio with this result.
    Done(Bio, Result<(), Errno>),
    /// Map it again (the target chose another path, e.g. the other mirror leg).
    Retry(Bio),
    /// Hold it in the core, as [`Mapped::Requeue`].
    Requeue(Bio),
    /// The target kept the bio and will complete it.
    Incomplete,
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
    fn max_io_len(&self, offset: Sector) -> Sector {
        let _ = offset;
        Sector::MAX
    }

    /// Whether discards and write-zeroes are split at `max_io_len` too. A target
    /// that maps a whole range itself (striped: one range per stripe) says no.
    fn split_discards(&self) -> bool {
        true
    }

    /// Decide where `bio` goes. `bio.sector` is relative to the start of the
    /// target. An empty flush (`Op::Flush`, `len` 0) reaches every target once.
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s>;

    /// A remapped bio (or clone number `dest` of [`Mapped::Clone`]) ended on its
    /// device with `result`; `bio.sector` is target-relative again.
    fn end_io(&self, bio: Bio, dest: usize, result: Result<(), Errno>) -> EndIo {
        let _ = dest;
        EndIo::Done(bio, result)
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
    fn extent(&self, offset: Sector, len: Sector) -> (ExtentKind, Sector) {
        let _ = offset;
        (ExtentKind::Data, len)
    }

    /// Before new I/O is held (delay releases what it holds here).
    fn presuspend(&self) {}
    /// After I/O in flight has drained.
    fn postsuspend(&self) {}
    /// On resume, before the table goes live (when it is a new table, the old
    /// one still exists). An error leaves the device suspended.
    fn preresume(&self) -> Result<(), DmError> {
        Ok(())
    }
    /// On resume, after the table went live, before held I/O is released.
    fn resume(&self) {}

    /// The target as `Any`, for a target of another device that needs this
    /// one's concrete type (a snapshot finds its origin through
    /// `Services::find_device` or a device argument, then the live table's
    /// targets, then this). `None`: not offered.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Limits and hints for the I/O the target wants (stripe geometry).
    fn io_hints(&self, hints: &mut IoHints) {
        let _ = hints;
    }
}

/// I/O size hints a table gives its users (the kernel's `io_min`/`io_opt`), in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoHints {
    /// Smallest preferred I/O (0: none).
    pub io_min: u32,
    /// Optimal I/O size (0: none).
    pub io_opt: u32,
}

/// Resolves a device argument of a table line into an open underlying device.
pub trait DevResolver {
    fn open(&self, spec: &str, read_only: bool) -> Result<Arc<dyn BlockDev>, DmError>;
}

/// What a constructor knows about the line it is building.
pub struct TargetCtx<'a> {
    pub line: u32,
    pub type_name: &'a str,
    /// Start of the target in the device.
    pub start: Sector,
    /// Length of the target.
    pub len: Sector,
    pub read_only: bool,
    pub resolver: &'a dyn DevResolver,
    /// Events, timers, the worker pool, and the device this table is for.
    pub services: &'a Services,
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
        start: Sector,
        len: Sector,
    ) -> Result<Arc<dyn BlockDev>, TableError> {
        let spec = args.get(idx).map(String::as_str).unwrap_or("");
        let dev = self.resolver.open(spec, self.read_only).map_err(|e| {
            self.arg_err(idx + 1, "device", format!("'{spec}': {e}"))
                .errno(e.errno())
        })?;
        let size = Sector(dev.size_sectors());
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

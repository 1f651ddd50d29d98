//! The eighteen control commands, their ioctl request numbers and the
//! per-command facts the kernel and libdm attach to them.

use crate::DecodeError;

/// `_IOWR(0xfd, 0, struct dm_ioctl)`: direction read|write, size 312, type 0xfd.
const IOCTL_BASE: u32 = 0xC138_FD00;

/// A dm-ioctl v4 command, in kernel numbering order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Version,
    RemoveAll,
    ListDevices,
    DevCreate,
    DevRemove,
    DevRename,
    DevSuspend,
    DevStatus,
    DevWait,
    TableLoad,
    TableClear,
    TableDeps,
    TableStatus,
    ListVersions,
    TargetMsg,
    DevSetGeometry,
    DevArmPoll,
    GetTargetVersion,
}

impl Command {
    /// Every command, indexed by its number.
    pub const ALL: [Command; 18] = [
        Command::Version,
        Command::RemoveAll,
        Command::ListDevices,
        Command::DevCreate,
        Command::DevRemove,
        Command::DevRename,
        Command::DevSuspend,
        Command::DevStatus,
        Command::DevWait,
        Command::TableLoad,
        Command::TableClear,
        Command::TableDeps,
        Command::TableStatus,
        Command::ListVersions,
        Command::TargetMsg,
        Command::DevSetGeometry,
        Command::DevArmPoll,
        Command::GetTargetVersion,
    ];

    /// The command number (`DM_*_CMD`).
    pub fn nr(self) -> u32 {
        self as u32
    }

    /// The command with number `nr`, if there is one.
    pub fn from_nr(nr: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(nr).ok()?).copied()
    }

    /// The ioctl request number, `_IOWR(0xfd, nr, struct dm_ioctl)`.
    pub fn ioctl_number(self) -> u32 {
        IOCTL_BASE | self.nr()
    }

    /// Decode an ioctl request number. A wrong direction, size or type byte,
    /// or an unknown command number, is ENOTTY as in the kernel.
    pub fn from_ioctl_number(n: u32) -> Result<Self, DecodeError> {
        if n & !0xff != IOCTL_BASE {
            return Err(DecodeError::NotDmIoctl(n));
        }
        Self::from_nr(n & 0xff).ok_or(DecodeError::UnknownCommand(n & 0xff))
    }

    /// The kernel copies in only the header for these and ignores any
    /// payload; it also returns only the header (`data_size` = 305).
    pub fn no_params(self) -> bool {
        matches!(
            self,
            Command::RemoveAll
                | Command::DevCreate
                | Command::DevRemove
                | Command::DevSuspend
                | Command::DevStatus
                | Command::TableClear
                | Command::DevArmPoll
        )
    }

    /// Commands after whose success the kernel bumps the global event
    /// counter (IOCTL_FLAGS_ISSUE_GLOBAL_EVENT).
    pub fn issues_global_event(self) -> bool {
        matches!(
            self,
            Command::RemoveAll | Command::DevCreate | Command::DevRemove | Command::DevRename
        )
    }

    /// Commands that skip the name/uuid checks of `validate_params`.
    pub fn is_global(self) -> bool {
        matches!(
            self,
            Command::RemoveAll | Command::ListDevices | Command::ListVersions
        )
    }

    /// The name libdm uses in its messages ("device-mapper: <name> ioctl on
    /// ..."). DEV_SUSPEND is "suspend" (libdm says "resume" for a resume)
    /// and TABLE_STATUS is "status" (libdm says "table" for the table form).
    pub fn libdm_name(self) -> &'static str {
        match self {
            Command::Version => "version",
            Command::RemoveAll => "remove_all",
            Command::ListDevices => "names",
            Command::DevCreate => "create",
            Command::DevRemove => "remove",
            Command::DevRename => "rename",
            Command::DevSuspend => "suspend",
            Command::DevStatus => "info",
            Command::DevWait => "waitevent",
            Command::TableLoad => "reload",
            Command::TableClear => "clear",
            Command::TableDeps => "deps",
            Command::TableStatus => "status",
            Command::ListVersions => "versions",
            Command::TargetMsg => "message",
            Command::DevSetGeometry => "setgeometry",
            Command::DevArmPoll => "armpoll",
            Command::GetTargetVersion => "target-version",
        }
    }

    /// The interface version libdm sends with this command: the minimum it
    /// needs, not its own version, so it works on old kernels.
    pub fn min_version(self) -> [u32; 3] {
        match self {
            Command::ListVersions => [4, 1, 0],
            Command::TargetMsg => [4, 2, 0],
            Command::DevSetGeometry => [4, 6, 0],
            Command::DevArmPoll => [4, 36, 0],
            Command::GetTargetVersion => [4, 41, 0],
            _ => [4, 0, 0],
        }
    }
}

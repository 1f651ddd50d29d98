//! The one error type of the codec. Every variant maps onto the errno the
//! kernel would return for the same malformed input.

/// Why a buffer, payload or frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("{what}: need {need} bytes, have {have}")]
    TooShort {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// `data_size` outside `305..=min(buffer length, 1 GiB)`.
    #[error("data_size {data_size} is invalid for a buffer of {len} bytes (must be 305..=1 GiB and fit)")]
    BadDataSize { data_size: u64, len: usize },
    /// The request number's type byte or size field is not dm-ioctl's.
    #[error("ioctl number {0:#010x} is not a device-mapper ioctl")]
    NotDmIoctl(u32),
    /// The command number is not a dm-ioctl command.
    #[error("unknown device-mapper command number {0}")]
    UnknownCommand(u32),
    /// A name longer than 127 bytes (or containing a NUL).
    #[error("device name of {len} bytes is too long or contains NUL (at most 127 bytes)")]
    BadName { len: usize },
    /// A uuid longer than 128 bytes (or containing a NUL).
    #[error("uuid of {len} bytes is too long or contains NUL (at most 128 bytes)")]
    BadUuid { len: usize },
    /// A string destined for a NUL-terminated field contains a NUL.
    #[error("{what} contains a NUL byte")]
    InteriorNul { what: &'static str },
    /// A NUL-terminated string runs to the end of the buffer.
    #[error("{what} is not NUL-terminated inside the buffer")]
    MissingNul { what: &'static str },
    /// TABLE_LOAD with `target_count == 0`.
    #[error("no targets specified")]
    NoTargets,
    /// More targets than the kernel's DM_MAX_TARGETS (1048576).
    #[error("{count} targets is more than the limit of 1048576")]
    TooManyTargets { count: u32 },
    /// A target type name of 16 bytes or more.
    #[error("target spec {index}: target type name {name:?} is too long (at most 15 bytes)")]
    TypeTooLong { index: usize, name: String },
    /// A framing fault in a target spec list; `index` counts from 1.
    #[error("target spec {index}: {reason}")]
    Spec { index: usize, reason: String },
    /// A framing fault in a record list (names, versions, deps).
    #[error("{what} record at payload offset {offset}: {reason}")]
    Record {
        what: &'static str,
        offset: usize,
        reason: String,
    },
    /// A buffer larger than the protocol allows.
    #[error("{what} of {len} bytes is larger than the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A control-socket frame that does not start with [`crate::FRAME_MAGIC`].
    #[error("bad frame magic {0:#010x} (expected 0x31444d55)")]
    BadMagic(u32),
    /// A reply frame with a negative errno.
    #[error("reply frame carries a negative errno {0}")]
    BadErrno(i32),
}

impl DecodeError {
    /// The errno the kernel returns for the same fault: ENOTTY for a request
    /// that is not a dm ioctl, EOVERFLOW for too many targets, EINVAL else.
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::NotDmIoctl(_) | DecodeError::UnknownCommand(_) => libc::ENOTTY,
            DecodeError::TooManyTargets { .. } => libc::EOVERFLOW,
            _ => libc::EINVAL,
        }
    }
}

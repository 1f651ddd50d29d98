//! Why a connection ended: the reasons a session is torn down, for the logs.

use std::io;

/// A connection-ending condition. None of these affect any other connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("client sent option magic {0:#018x}, not IHAVEOPT")]
    BadOptionMagic(u64),
    #[error("client sent unknown client flags {0:#x}")]
    BadClientFlags(u32),
    #[error("option {option} carries {len} bytes of data, more than a handshake may")]
    OptionTooLong { option: u32, len: u32 },
    #[error("NBD_OPT_EXPORT_NAME asked for unknown export {0:?}")]
    UnknownExport(String),
    #[error("client sent request magic {0:#010x}")]
    BadRequestMagic(u32),
}

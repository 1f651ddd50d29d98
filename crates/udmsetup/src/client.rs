//! The control-socket client: one request frame out, one reply frame back,
//! with libdm's buffer sizing and BUFFER_FULL retry.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use udm_ioctl::{
    flags, split_buffer, DecodeError, DmIoctl, ReplyFrame, RequestFrame, MAX_DATA_SIZE,
};

pub use udm_ioctl::Command;

/// Where udmd listens unless told otherwise: `$UDM_SOCKET`, else
/// `$XDG_RUNTIME_DIR/udm/control`, else `/tmp/udm-$UID/control` (for display:
/// [`Client::connect_to`] checks the default directory before using it).
pub fn default_socket_path() -> PathBuf {
    udm_ioctl::rundir::socket_path_unchecked()
}

/// The first buffer size libdm uses for a command: 16 KiB for those that
/// return lists or status text, 2 KiB for the rest, and never less than
/// the header plus the payload.
pub fn initial_capacity(cmd: Command, payload_len: usize) -> usize {
    let min = match cmd {
        Command::DevCreate
        | Command::TableDeps
        | Command::ListDevices
        | Command::TableStatus
        | Command::TargetMsg
        | Command::DevWait => 16 * 1024,
        _ => 2 * 1024,
    };
    min.max(udm_ioctl::HEADER_SIZE + payload_len)
}

/// Commands libdm retries with a doubled buffer on BUFFER_FULL; for the
/// others BUFFER_FULL is an error.
pub fn retries_buffer_full(cmd: Command) -> bool {
    matches!(
        cmd,
        Command::ListVersions
            | Command::ListDevices
            | Command::TableDeps
            | Command::TableStatus
            | Command::DevWait
            | Command::TargetMsg
    )
}

/// What came back for one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The returned header; on failure the header that was sent, with
    /// the daemon's `version` (all the kernel copies back on failure).
    pub header: DmIoctl,
    /// `buffer[data_start..data_size]` of the reply.
    pub payload: Vec<u8>,
    /// 0, or the positive errno of the failed command.
    pub errno: i32,
    /// The daemon's explanation of a failure (may be empty).
    pub detail: String,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.errno == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}: connect failed: {}", path.display(), crate::format::strerror(source.raw_os_error().unwrap_or(0)))]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Rundir(#[from] udm_ioctl::rundir::RundirError),
    #[error("control socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message on the control socket: {0}")]
    Decode(#[from] DecodeError),
    #[error("the daemon closed the control socket before replying")]
    Closed,
    #[error("WARNING: libdevmapper buffer too small for data.")]
    BufferFull,
    #[error("Ioctl buffer maximum reached ({size} bytes), giving up.")]
    BufferMax { size: usize },
}

/// The header and payload of a successful reply. Like the kernel, a
/// daemon may return less than a header (REMOVE_ALL and SET_GEOMETRY set
/// `data_size` to 0, so only `version` comes back): then the sent header
/// stands, with the returned version.
fn returned(sent: &DmIoctl, buffer: &[u8]) -> Result<(DmIoctl, Vec<u8>), ClientError> {
    if buffer.len() < udm_ioctl::HEADER_MIN {
        let mut h = sent.clone();
        if let Some(v) = udm_ioctl::decode_version(buffer) {
            h.version = v;
        }
        return Ok((h, Vec::new()));
    }
    match split_buffer(buffer) {
        Ok((h, p)) => Ok((h, p.to_vec())),
        // A header whose data_size says "header only" (305) or less.
        Err(DecodeError::BadDataSize { data_size, .. })
            if data_size < udm_ioctl::HEADER_MIN as u64 =>
        {
            Ok((DmIoctl::decode(buffer)?, Vec::new()))
        }
        Err(e) => Err(e.into()),
    }
}

/// A connection to udmd's control socket.
pub struct Client {
    stream: UnixStream,
    inbox: Vec<u8>,
}

impl Client {
    /// Connect to `path` as given, or (None) to the default socket once its
    /// directory passes the ownership and mode check udmd makes.
    pub fn connect_to(path: Option<&Path>) -> Result<Self, ClientError> {
        match path {
            Some(p) => Client::connect(p),
            None => Client::connect(udm_ioctl::rundir::client_socket_path()?),
        }
    }

    pub fn connect(path: impl AsRef<Path>) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Client {
            stream,
            inbox: Vec::new(),
        })
    }

    /// Send `cmd` with `header` and `payload` in a buffer of `capacity`
    /// bytes, as libdm would: EXISTS set, the command's minimum interface
    /// version, and on BUFFER_FULL the whole command again with a doubled
    /// buffer (up to 1 GiB) for the commands libdm retries.
    pub fn call(
        &mut self,
        cmd: Command,
        header: DmIoctl,
        payload: &[u8],
        capacity: usize,
    ) -> Result<Reply, ClientError> {
        let mut header = header;
        header.version = cmd.min_version();
        header.flags |= flags::EXISTS;
        let mut capacity = capacity;
        loop {
            let buffer = udm_ioctl::request_buffer(&header, payload, capacity)?;
            let size = buffer.len();
            let frame = RequestFrame {
                ioctl: cmd.ioctl_number(),
                buffer,
            };
            let reply = self.exchange(&frame)?;
            if reply.errno != 0 {
                // As from the kernel, only `version` comes back on failure.
                let mut header = header.clone();
                if let Some(v) = udm_ioctl::decode_version(&reply.buffer) {
                    header.version = v;
                }
                return Ok(Reply {
                    header,
                    payload: Vec::new(),
                    errno: reply.errno,
                    detail: reply.detail,
                });
            }
            let (h, p) = returned(&header, &reply.buffer)?;
            if h.flags & flags::BUFFER_FULL == 0 {
                return Ok(Reply {
                    header: h,
                    payload: p,
                    errno: 0,
                    detail: reply.detail,
                });
            }
            if !retries_buffer_full(cmd) {
                return Err(ClientError::BufferFull);
            }
            if size >= MAX_DATA_SIZE {
                return Err(ClientError::BufferMax { size });
            }
            capacity = size.saturating_mul(2).min(MAX_DATA_SIZE);
        }
    }

    fn exchange(&mut self, frame: &RequestFrame) -> Result<ReplyFrame, ClientError> {
        self.stream.write_all(&frame.encode())?;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some((reply, used)) = ReplyFrame::decode(&self.inbox)? {
                self.inbox.drain(..used);
                return Ok(reply);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.inbox.extend_from_slice(&chunk[..n]);
        }
    }
}

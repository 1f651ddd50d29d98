//! The control socket: a Unix stream socket speaking udm-ioctl frames, one
//! thread per client. A client that sends garbage is answered (where a frame
//! boundary is still known) and disconnected; the daemon and other clients go on.
//!
//! Shutdown never goes through the socket's path (which anyone may have removed
//! or replaced): it shuts the listening socket down, which wakes a blocked
//! `accept` (Linux returns EINVAL), and removes the path only while it is still
//! the socket udmd bound.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use udm_core::Engine;
use udm_ioctl::{ReplyFrame, RequestFrame, MAX_FRAME};

use crate::control::{handle, ConnState};

/// A running control socket; stops listening and removes the socket on drop.
pub struct ControlServer {
    path: PathBuf,
    /// (st_dev, st_ino) of the socket file we bound, to recognise it at removal.
    bound: (u64, u64),
    listener: Arc<UnixListener>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// Create the socket's directory (mode 0700) if needed and make sure no other
/// daemon is listening on `path`; a stale socket is removed.
fn prepare_path(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    udm_nbd::remove_stale_socket(path)
}

impl ControlServer {
    pub fn start(engine: Engine, path: &Path) -> io::Result<ControlServer> {
        prepare_path(path)?;
        // Bind under a restrictive umask so the socket is never briefly world-accessible.
        // SAFETY: umask only changes this process's file mode mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = Arc::new(bound?);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let meta = std::fs::symlink_metadata(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, listener2) = (stop.clone(), listener.clone());
        let accept = std::thread::Builder::new()
            .name("udm-control".into())
            .spawn(move || accept_loop(engine, &listener2, &stop2))?;
        tracing::info!(socket = %path.display(), "control socket listening");
        Ok(ControlServer {
            path: path.to_path_buf(),
            bound: (meta.dev(), meta.ino()),
            listener,
            stop,
            accept: Some(accept),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: shutdown on a listening socket we own (kept alive by `self.listener`).
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        // Only our own socket: the path may since have been removed or taken over.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.bound);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        } else {
            tracing::info!(socket = %self.path.display(), "control socket path is no longer ours; left alone");
        }
    }
}

fn accept_loop(engine: Engine, listener: &UnixListener, stop: &AtomicBool) {
    loop {
        let conn = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok((stream, _)) => {
                let engine = engine.clone();
                let r = std::thread::Builder::new()
                    .name("udm-control-conn".into())
                    .spawn(move || serve_client(engine, stream));
                if let Err(e) = r {
                    tracing::warn!("cannot start a control connection thread: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("control accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The request bytes udmd holds at once across all control clients, unless
/// [`set_request_budget`] says otherwise: one largest frame.
pub const DEFAULT_REQUEST_BUDGET: usize = MAX_FRAME;

/// Request bytes held across every control connection. A frame's buffer is
/// reserved here before it is allocated and released once its reply is
/// written. A frame that would take the total past the cap waits until
/// earlier frames are done (it is never refused for it); a frame always
/// proceeds when nothing else is held, so one frame up to [`MAX_FRAME`]
/// works whatever the cap.
struct RequestBudget {
    state: Mutex<BudgetState>,
    freed: Condvar,
}

struct BudgetState {
    cap: usize,
    held: usize,
    peak: usize,
    waiting: usize,
}

static BUDGET: RequestBudget = RequestBudget {
    state: Mutex::new(BudgetState {
        cap: DEFAULT_REQUEST_BUDGET,
        held: 0,
        peak: 0,
        waiting: 0,
    }),
    freed: Condvar::new(),
};

/// Set the cap on request bytes held across all control clients.
pub fn set_request_budget(bytes: usize) {
    BUDGET.state.lock().cap = bytes;
    BUDGET.freed.notify_all();
}

/// What the request budget holds now: (bytes held, the most ever held,
/// frames waiting for room).
pub fn request_budget_usage() -> (usize, usize, usize) {
    let st = BUDGET.state.lock();
    (st.held, st.peak, st.waiting)
}

/// How long a frame's body may stall (no byte arriving) before the client
/// is dropped.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// `len` bytes of the budget, released on drop.
struct Reservation(usize);

impl Reservation {
    fn take(len: usize) -> Reservation {
        let mut st = BUDGET.state.lock();
        if st.held > 0 && st.held.saturating_add(len) > st.cap {
            st.waiting += 1;
            while st.held > 0 && st.held.saturating_add(len) > st.cap {
                BUDGET.freed.wait(&mut st);
            }
            st.waiting -= 1;
        }
        st.held += len;
        st.peak = st.peak.max(st.held);
        Reservation(len)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut st = BUDGET.state.lock();
        st.held -= self.0;
        drop(st);
        BUDGET.freed.notify_all();
    }
}

/// Fill `buf` from the stream: false on a clean EOF before the first byte,
/// an error on EOF part-way or a read error.
fn read_full(stream: &mut UnixStream, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Answer a frame that cannot be decoded, then close the connection.
fn refuse(stream: &mut UnixStream, e: udm_ioctl::DecodeError) {
    tracing::warn!("malformed control frame, closing the connection: {e}");
    let reply = ReplyFrame {
        errno: e.errno(),
        buffer: Vec::new(),
        detail: e.to_string(),
    };
    let _ = stream.write_all(&reply.encode());
}

/// Serve one client: read each frame's fixed part, reserve its length in
/// the request budget, read the body straight into the buffer the
/// dispatcher uses (no second copy), reply, release.
fn serve_client(engine: Engine, mut stream: UnixStream) {
    let mut conn = ConnState {
        peer: Some(stream.as_raw_fd()),
        ..ConnState::default()
    };
    loop {
        let mut magic = [0u8; 4];
        match read_full(&mut stream, &mut magic) {
            Ok(true) => {}
            Ok(false) | Err(_) => return,
        }
        let mut fixed = [0u8; 12];
        fixed[..4].copy_from_slice(&magic);
        if let Err(e) = RequestFrame::decode(&fixed[..4]) {
            return refuse(&mut stream, e);
        }
        if !matches!(read_full(&mut stream, &mut fixed[4..]), Ok(true)) {
            return;
        }
        let len = match RequestFrame::decode(&fixed) {
            Ok(None) => u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]) as usize,
            // An empty buffer: the whole frame was its fixed part.
            Ok(Some(_)) => 0,
            Err(e) => return refuse(&mut stream, e),
        };
        let ioctl = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let _held = Reservation::take(len);
        // Zeroed pages cost nothing until the body lands in them.
        let mut body = vec![0u8; len];
        // A client that announced a body must keep sending it: one that
        // stalls for BODY_TIMEOUT is dropped and its reservation freed.
        if stream.set_read_timeout(Some(BODY_TIMEOUT)).is_err()
            || !matches!(read_full(&mut stream, &mut body), Ok(true))
            || stream.set_read_timeout(None).is_err()
        {
            return;
        }
        let reply = handle(&engine, ioctl, &body, &mut conn);
        drop(body);
        if reply.errno != 0 {
            tracing::debug!(ioctl = format!("{ioctl:#x}"), errno = reply.errno, detail = %reply.detail, "request failed");
        }
        if stream.write_all(&reply.encode()).is_err() {
            return;
        }
    }
}

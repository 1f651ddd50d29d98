//! The control socket: a Unix stream socket speaking udm-ioctl frames, one
//! thread per client. A client that sends garbage is answered (where a frame
//! boundary is still known) and disconnected; the daemon and other clients go on.

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use udm_core::Engine;
use udm_ioctl::{ReplyFrame, RequestFrame};

use crate::control::{handle, ConnState};

/// A running control socket; stops listening and removes the socket on drop.
pub struct ControlServer {
    path: PathBuf,
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
        let listener = bound?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let accept = std::thread::Builder::new()
            .name("udm-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(stream) => {
                            let engine = engine.clone();
                            let r = std::thread::Builder::new()
                                .name("udm-control-conn".into())
                                .spawn(move || serve_client(engine, stream));
                            if let Err(e) = r {
                                tracing::warn!("cannot start a control connection thread: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("control accept failed: {e}"),
                    }
                }
            })?;
        tracing::info!(socket = %path.display(), "control socket listening");
        Ok(ControlServer {
            path: path.to_path_buf(),
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
        // Wake the accept loop with a throwaway connection.
        let _ = UnixStream::connect(&self.path);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_client(engine: Engine, mut stream: UnixStream) {
    let mut conn = ConnState::default();
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        // Decode every complete frame already buffered.
        loop {
            match RequestFrame::decode(&buf) {
                Ok(Some((req, used))) => {
                    buf.drain(..used);
                    let reply = handle(&engine, req.ioctl, &req.buffer, &mut conn);
                    if reply.errno != 0 {
                        tracing::debug!(ioctl = format!("{:#x}", req.ioctl), errno = reply.errno, detail = %reply.detail, "request failed");
                    }
                    if stream.write_all(&reply.encode()).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("malformed control frame, closing the connection: {e}");
                    let reply = ReplyFrame {
                        errno: e.errno(),
                        buffer: Vec::new(),
                        detail: e.to_string(),
                    };
                    let _ = stream.write_all(&reply.encode());
                    return;
                }
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

//! The server: listening sockets, one accept thread each, and the registry of live
//! connections that `close_export` and `shutdown` act on.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{debug, error, info, warn};

use crate::conn::{self, Conn};
use crate::export::Backend;
use crate::stream::Stream;

/// Tuning of a [`Server`].
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    /// Threads serving each connection (each holds one request at a time).
    pub threads_per_conn: usize,
    /// Largest read or write payload accepted, in bytes.
    pub max_request: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads_per_conn: 16,
            max_request: 32 << 20,
        }
    }
}

/// An NBD server over a [`Backend`]. Clones share one server; dropping the last clone
/// shuts it down as [`Server::shutdown`] does.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: ServerConfig,
    stopping: AtomicBool,
    listeners: Mutex<Vec<ListenerEntry>>,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    next_id: AtomicU64,
}

struct ListenerEntry {
    listener: Arc<Listener>,
    thread: Option<JoinHandle<()>>,
}

struct ConnEntry {
    conn: Arc<Conn>,
    thread: Option<JoinHandle<()>>,
}

enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

struct DropGuard(Arc<Inner>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

impl Server {
    pub fn new(backend: Arc<dyn Backend>, config: ServerConfig) -> Self {
        let config = ServerConfig {
            threads_per_conn: config.threads_per_conn.max(1),
            // Large enough for the protocol's preferred block, small enough that a
            // structured read chunk length (8 + payload) fits in 32 bits.
            max_request: config.max_request.clamp(4096, 1 << 31),
        };
        let inner = Arc::new(Inner {
            backend,
            config,
            stopping: AtomicBool::new(false),
            listeners: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        Server {
            _guard: Arc::new(DropGuard(Arc::clone(&inner))),
            inner,
        }
    }

    /// Listen on a Unix socket (replacing a stale socket file) from a new thread.
    pub fn listen_unix(&self, path: &Path) -> io::Result<()> {
        remove_stale_socket(path)?;
        let listener = UnixListener::bind(path)?;
        info!(path = %path.display(), "NBD server listening");
        self.spawn_listener(Listener::Unix(listener, path.to_owned()))
    }

    /// Listen on TCP (`"host:port"`, or `":port"` for every IPv4 address) from a new
    /// thread; returns the bound address (useful with port 0).
    pub fn listen_tcp(&self, addr: &str) -> io::Result<SocketAddr> {
        let listener = if let Some(port) = addr.strip_prefix(':') {
            TcpListener::bind(format!("0.0.0.0:{port}"))?
        } else {
            TcpListener::bind(addr)?
        };
        let local = listener.local_addr()?;
        info!(addr = %local, "NBD server listening");
        self.spawn_listener(Listener::Tcp(listener))?;
        Ok(local)
    }

    /// The export `name` is gone: every connection on it answers its requests in
    /// flight and any new one with ESHUTDOWN, then closes; idle ones close at once.
    pub fn close_export(&self, name: &str) {
        let conns: Vec<Arc<Conn>> = self
            .inner
            .conns
            .lock()
            .values()
            .filter(|c| c.conn.is_on_export(name))
            .map(|c| Arc::clone(&c.conn))
            .collect();
        info!(export = name, connections = conns.len(), "closing export");
        for c in conns {
            c.begin_close();
        }
    }

    /// Stop listening, close every connection (after answering what is in flight)
    /// and wait for all threads.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// Connections currently open (in handshake or transmission).
    pub fn connection_count(&self) -> usize {
        self.inner.conns.lock().len()
    }

    fn spawn_listener(&self, listener: Listener) -> io::Result<()> {
        let listener = Arc::new(listener);
        let mut listeners = self.inner.listeners.lock();
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(io::Error::other("server is shut down"));
        }
        let inner = Arc::clone(&self.inner);
        let l = Arc::clone(&listener);
        let thread = thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || accept_loop(&inner, &l))?;
        listeners.push(ListenerEntry {
            listener,
            thread: Some(thread),
        });
        Ok(())
    }
}

impl Inner {
    fn shutdown(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        let listeners = std::mem::take(&mut *self.listeners.lock());
        for mut l in listeners {
            l.listener.wake();
            if let Some(t) = l.thread.take() {
                if t.join().is_err() {
                    error!("accept thread panicked");
                }
            }
            if let Listener::Unix(_, path) = &*l.listener {
                let _ = std::fs::remove_file(path);
            }
        }
        let conns: Vec<ConnEntry> = self.conns.lock().drain().map(|(_, c)| c).collect();
        for c in &conns {
            // No new requests; those in flight are answered, then the socket closes.
            c.conn.stream.shutdown(Shutdown::Read);
            c.conn.begin_close();
        }
        for mut c in conns {
            if let Some(t) = c.thread.take() {
                if t.join().is_err() {
                    error!(conn = c.conn.id, "connection thread panicked");
                }
            }
        }
        info!("NBD server stopped");
    }

    fn spawn_connection(self: &Arc<Self>, stream: Stream) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        stream.enlarge_send_buffer();
        let conn = Arc::new(Conn::new(id, stream));
        // Hold the registry while spawning, so the thread's own removal comes after
        // its insertion.
        let mut conns = self.conns.lock();
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let inner = Arc::clone(self);
        let c = Arc::clone(&conn);
        let spawned = thread::Builder::new()
            .name(format!("nbd-conn-{id}"))
            .spawn(move || {
                conn::serve(&inner, &c);
                inner.conns.lock().remove(&c.id);
            });
        match spawned {
            Ok(thread) => {
                conns.insert(
                    id,
                    ConnEntry {
                        conn,
                        thread: Some(thread),
                    },
                );
            }
            Err(e) => error!(error = %e, "cannot spawn a connection thread"),
        }
    }
}

fn accept_loop(inner: &Arc<Inner>, listener: &Listener) {
    loop {
        let accepted = match listener {
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().and_then(|(s, peer)| {
                s.set_nodelay(true)?;
                debug!(%peer, "TCP connection");
                Ok(Stream::Tcp(s))
            }),
        };
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok(stream) => inner.spawn_connection(stream),
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {}
                _ => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    thread::sleep(Duration::from_millis(50));
                }
            },
        }
    }
}

impl Listener {
    /// Make the accept thread return: shut the listening socket down (Linux wakes a
    /// blocked accept with EINVAL) and, should that not wake it, connect once.
    fn wake(&self) {
        match self {
            Listener::Unix(l, path) => {
                // SAFETY: the fd belongs to a listener kept alive by `self`.
                unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
                let _ = UnixStream::connect(path);
            }
            Listener::Tcp(l) => {
                // SAFETY: as above.
                unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
                if let Ok(mut addr) = l.local_addr() {
                    if addr.ip().is_unspecified() {
                        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    }
                    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(100));
                }
            }
        }
    }
}

/// Remove a socket file nobody listens on any more; refuse to touch anything else
/// (a regular file, a socket with a live server). Also used by udmd's control socket.
pub fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a live server", path.display()),
        ));
    }
    debug!(path = %path.display(), "removing stale socket");
    std::fs::remove_file(path)
}

//! The server: listening sockets, one accept thread each, and the registry of live
//! connections that `close_export` and `shutdown` act on.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tracing::{debug, error, info, warn};

use crate::budget::{KEEP_PER_WORKER, SPARE_PER_CONN};
use crate::conn::{self, Conn};
use crate::export::Backend;
use crate::stream::Stream;

/// Tuning of a [`Server`].
#[derive(Clone, Copy, Debug)]
pub struct ServerConfig {
    /// Threads serving each connection. Each reads requests and starts them; one
    /// that the export answers before returning (a blocking export) holds its
    /// thread until then, one it answers later holds no thread.
    pub threads_per_conn: usize,
    /// Largest read or write payload accepted, in bytes.
    pub max_request: u32,
    /// Connections served at once (handshake or transmission); one more is accepted
    /// and closed at once, before the greeting. At least 1.
    pub max_connections: usize,
    /// A client must have chosen an export this long after connecting, or it is
    /// disconnected. Zero: no limit.
    pub handshake_timeout: Duration,
    /// Request buffer bytes one connection may hold at once; a request that would
    /// pass it waits until the connection's other requests give theirs back. Zero,
    /// or anything below it, means the least that always lets a `max_request`
    /// request through: `max_request + threads_per_conn * 2.5 MiB + 2 MiB` (each
    /// thread keeps up to 2 MiB of buffers between requests, a batch of small
    /// requests may add 512 KiB without waiting, and the connection keeps up to
    /// 2 MiB of buffers of requests answered later for reuse).
    pub buffer_budget: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads_per_conn: 16,
            max_request: 32 << 20,
            max_connections: 64,
            handshake_timeout: Duration::from_secs(20),
            buffer_budget: 0,
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
    /// Connections are being refused (at `max_connections`); logged once per episode.
    refusing: AtomicBool,
    /// Connections in their handshake, by deadline (all get the same timeout, so
    /// accept order is deadline order).
    handshakes: Mutex<VecDeque<(Instant, Weak<Conn>)>>,
    handshake_added: Condvar,
    /// The thread that drops clients whose handshake takes too long.
    watchdog: Mutex<Option<JoinHandle<()>>>,
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
        let threads_per_conn = config.threads_per_conn.max(1);
        // Large enough for the protocol's preferred block, small enough that a
        // structured read chunk length (8 + payload) fits in 32 bits.
        let max_request = config.max_request.clamp(4096, 1 << 31);
        let least_budget = max_request as usize
            + threads_per_conn * (KEEP_PER_WORKER + crate::transmission::MAX_BATCH_DATA)
            + SPARE_PER_CONN;
        let config = ServerConfig {
            threads_per_conn,
            max_request,
            max_connections: config.max_connections.max(1),
            handshake_timeout: config.handshake_timeout,
            buffer_budget: config.buffer_budget.max(least_budget),
        };
        let inner = Arc::new(Inner {
            backend,
            config,
            stopping: AtomicBool::new(false),
            listeners: Mutex::new(Vec::new()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            refusing: AtomicBool::new(false),
            handshakes: Mutex::new(VecDeque::new()),
            handshake_added: Condvar::new(),
            watchdog: Mutex::new(None),
        });
        Server {
            _guard: Arc::new(DropGuard(Arc::clone(&inner))),
            inner,
        }
    }

    /// Listen on a Unix socket (replacing a stale socket file) from a new thread.
    /// The socket is created mode 0600 whatever the umask: NBD has no
    /// authentication, so who may connect is who may write the socket file (the
    /// owner may chmod or chgrp it to grant more).
    pub fn listen_unix(&self, path: &Path) -> io::Result<()> {
        remove_stale_socket(path)?;
        let listener = bind_unix_private(path)?;
        info!(path = %path.display(), "NBD server listening");
        self.spawn_listener(Listener::Unix(listener, path.to_owned()))
    }

    /// Listen on TCP (`"host:port"`, or `":port"` for loopback, 127.0.0.1) from a
    /// new thread; returns the bound address (useful with port 0). Any host can
    /// connect to a non-loopback address, and every local user to loopback.
    pub fn listen_tcp(&self, addr: &str) -> io::Result<SocketAddr> {
        let listener = if let Some(port) = addr.strip_prefix(':') {
            TcpListener::bind(format!("127.0.0.1:{port}"))?
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

    /// The configuration in force (as [`Server::new`] adjusted it).
    pub fn config(&self) -> ServerConfig {
        self.inner.config
    }

    /// Request buffer bytes the open connections hold, in all.
    pub fn buffer_bytes(&self) -> usize {
        self.inner
            .conns
            .lock()
            .values()
            .map(|c| c.conn.budget.held())
            .sum()
    }

    /// The most request buffer bytes any open connection held at once.
    pub fn peak_buffer_bytes(&self) -> usize {
        self.inner
            .conns
            .lock()
            .values()
            .map(|c| c.conn.budget.peak())
            .max()
            .unwrap_or(0)
    }

    fn spawn_listener(&self, listener: Listener) -> io::Result<()> {
        let listener = Arc::new(listener);
        let mut listeners = self.inner.listeners.lock();
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(io::Error::other("server is shut down"));
        }
        let mut watchdog = self.inner.watchdog.lock();
        if watchdog.is_none() && !self.inner.config.handshake_timeout.is_zero() {
            let inner = Arc::clone(&self.inner);
            *watchdog = Some(
                thread::Builder::new()
                    .name("nbd-handshake-timer".into())
                    .spawn(move || handshake_watchdog(&inner))?,
            );
        }
        drop(watchdog);
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
        {
            // Taking the lock orders the wake-up after the watchdog's check.
            let _q = self.handshakes.lock();
            self.handshake_added.notify_all();
        }
        if let Some(t) = self.watchdog.lock().take() {
            if t.join().is_err() {
                error!("handshake watchdog panicked");
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
        // Hold the registry while spawning, so the thread's own removal comes after
        // its insertion.
        let mut conns = self.conns.lock();
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        if conns.len() >= self.config.max_connections {
            // Closed before the greeting: the client sees end of file at once, and
            // costs no thread.
            if !self.refusing.swap(true, Ordering::Relaxed) {
                warn!(
                    limit = self.config.max_connections,
                    "too many NBD connections; refusing new ones"
                );
            } else {
                debug!("NBD connection refused: at the connection limit");
            }
            return;
        }
        self.refusing.store(false, Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        stream.enlarge_send_buffer();
        let conn = Arc::new(Conn::new(id, stream, self.config.buffer_budget));
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
                self.watch_handshake(&conn);
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

impl Inner {
    /// Give `conn` until the handshake timeout to choose an export.
    fn watch_handshake(&self, conn: &Arc<Conn>) {
        let timeout = self.config.handshake_timeout;
        // Zero, or too far in the future to represent: no limit.
        let Some(deadline) = Instant::now()
            .checked_add(timeout)
            .filter(|_| !timeout.is_zero())
        else {
            return;
        };
        let mut q = self.handshakes.lock();
        if q.len() > 4 * self.config.max_connections {
            // Many short connections: forget those already done with the handshake.
            q.retain(|(_, c)| c.upgrade().is_some_and(|c| c.in_handshake()));
        }
        q.push_back((deadline, Arc::downgrade(conn)));
        self.handshake_added.notify_one();
    }
}

/// Drop every client still in its handshake at its deadline.
fn handshake_watchdog(inner: &Inner) {
    let mut q = inner.handshakes.lock();
    loop {
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Some(&(deadline, _)) = q.front() else {
            inner.handshake_added.wait(&mut q);
            continue;
        };
        if Instant::now() < deadline {
            inner.handshake_added.wait_until(&mut q, deadline);
            continue;
        }
        if let Some((_, c)) = q.pop_front() {
            if let Some(c) = c.upgrade() {
                c.handshake_expired();
            }
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

/// Bind and listen on a Unix socket at `path` created mode 0600: the mode is set on
/// the socket before bind, so the file never exists with the umask's mode.
fn bind_unix_private(path: &Path) -> io::Result<UnixListener> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all-zero is a valid (empty) address.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: a Unix socket path must be 1 to {} bytes without NUL",
                path.display(),
                addr.sun_path.len() - 1
            ),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket has no memory preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    // SAFETY: fchmod on the socket we own.
    if unsafe { libc::fchmod(raw, 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: bind reads exactly `len` bytes of `addr`, which lives across the call.
    if unsafe { libc::bind(raw, (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen on the socket we own.
    if unsafe { libc::listen(raw, 128) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixListener::from(fd))
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

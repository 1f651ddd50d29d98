//! One client connection: its shared state, and its life from handshake to close.

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tracing::{debug, info, warn};

use crate::budget::Budget;
use crate::error::ConnError;
use crate::handshake;
use crate::server::Inner;
use crate::stream::{Reader, Stream};
use crate::transmission;

/// State every thread of a connection and the server's registry share.
pub(crate) struct Conn {
    pub id: u64,
    pub stream: Arc<Stream>,
    /// The export chosen for transmission, once the client chose.
    export: Mutex<Option<String>>,
    /// The export is going away: answer everything with ESHUTDOWN, then close.
    closing: AtomicBool,
    /// No more requests are read (disconnect, protocol error, closing).
    stop_reading: AtomicBool,
    /// Requests read but not yet answered.
    in_flight: AtomicUsize,
    /// Threads waiting in [`Conn::wait_in_flight`]; `answered` wakes them.
    in_flight_waiters: AtomicUsize,
    in_flight_lock: Mutex<()>,
    answered: Condvar,
    /// The request buffers of its threads.
    pub budget: Budget,
    /// HANDSHAKE, TRANSMISSION or TIMED_OUT.
    phase: AtomicU8,
}

const HANDSHAKE: u8 = 0;
const TRANSMISSION: u8 = 1;
const TIMED_OUT: u8 = 2;

impl Conn {
    pub(crate) fn new(id: u64, stream: Stream, buffer_budget: usize) -> Self {
        Conn {
            id,
            stream: Arc::new(stream),
            export: Mutex::new(None),
            closing: AtomicBool::new(false),
            stop_reading: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            in_flight_waiters: AtomicUsize::new(0),
            in_flight_lock: Mutex::new(()),
            answered: Condvar::new(),
            budget: Budget::new(buffer_budget),
            phase: AtomicU8::new(HANDSHAKE),
        }
    }

    pub(crate) fn in_handshake(&self) -> bool {
        self.phase.load(Ordering::Acquire) == HANDSHAKE
    }

    /// The handshake took too long: drop the client, unless it just finished.
    pub(crate) fn handshake_expired(&self) {
        if self
            .phase
            .compare_exchange(HANDSHAKE, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.abort();
        }
    }

    /// Leave the handshake; false when it has timed out meanwhile.
    fn enter_transmission(&self) -> bool {
        self.phase
            .compare_exchange(HANDSHAKE, TRANSMISSION, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn timed_out(&self) -> bool {
        self.phase.load(Ordering::Acquire) == TIMED_OUT
    }

    pub(crate) fn set_export(&self, name: &str) {
        *self.export.lock() = Some(name.to_owned());
    }

    pub(crate) fn is_on_export(&self, name: &str) -> bool {
        self.export.lock().as_deref() == Some(name)
    }

    /// Start closing: requests in flight and any new ones are answered ESHUTDOWN, and
    /// the socket is shut down once none is left (at once when idle).
    pub(crate) fn begin_close(&self) {
        // SeqCst pairs with request_started/request_done: either this thread sees a
        // request in flight, or that request sees `closing` (and closes when done).
        self.closing.store(true, Ordering::SeqCst);
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            self.stream.shutdown(Shutdown::Both);
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
    }

    /// A request was answered (its reply sent, or given up on); from any thread.
    pub(crate) fn request_done(&self) {
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && self.is_closing() {
            self.stream.shutdown(Shutdown::Both);
        }
        // SeqCst pairs with wait_in_flight: either the waiter sees the new count, or
        // this sees the waiter (and wakes it under the lock it waits with).
        if self.in_flight_waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.in_flight_lock.lock();
            self.answered.notify_all();
        }
    }

    /// Requests read and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Wait until at most `n` requests are in flight.
    pub(crate) fn wait_in_flight(&self, n: usize) {
        if self.in_flight() <= n {
            return;
        }
        let mut g = self.in_flight_lock.lock();
        self.in_flight_waiters.fetch_add(1, Ordering::SeqCst);
        while self.in_flight() > n {
            self.answered.wait(&mut g);
        }
        self.in_flight_waiters.fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn stop_reading(&self) {
        self.stop_reading.store(true, Ordering::Release);
    }

    pub(crate) fn reading_stopped(&self) -> bool {
        self.stop_reading.load(Ordering::Acquire)
    }

    /// Stop everything now: the peer is gone or the stream cannot be trusted.
    pub(crate) fn abort(&self) {
        self.stop_reading();
        self.stream.shutdown(Shutdown::Both);
    }
}

/// Whether a socket error means the peer went away (rather than a fault).
fn client_left(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
    )
}

/// Serve one connection on the current thread until it ends.
pub(crate) fn serve(server: &Inner, conn: &Arc<Conn>) {
    let mut reader = Reader::new(Arc::clone(&conn.stream));
    let negotiated = match handshake::negotiate(
        conn,
        &mut reader,
        &*server.backend,
        server.config.max_request,
    ) {
        Ok(Some(n)) => n,
        Ok(_) | Err(_) if conn.timed_out() => {
            info!(
                conn = conn.id,
                timeout_secs = server.config.handshake_timeout.as_secs_f64(),
                "client dropped: no export chosen within the handshake timeout"
            );
            return;
        }
        Ok(None) => {
            debug!(conn = conn.id, "client left during the handshake");
            return;
        }
        // A client that hangs up mid-handshake (a probe of the socket, a client
        // that gave up) is normal; only protocol errors are worth a warning.
        Err(ConnError::Io(e)) if client_left(&e) => {
            debug!(conn = conn.id, error = %e, "client left during the handshake");
            return;
        }
        Err(e) => {
            warn!(conn = conn.id, error = %e, "handshake failed");
            return;
        }
    };
    if !conn.enter_transmission() {
        info!(
            conn = conn.id,
            "client dropped: no export chosen within the handshake timeout"
        );
        return;
    }
    info!(
        conn = conn.id,
        export = negotiated.name,
        structured = negotiated.structured,
        block_status = negotiated.meta_context.is_some(),
        "client entered transmission"
    );
    transmission::run(conn, reader, negotiated, &server.config);
    debug!(conn = conn.id, "connection closed");
}

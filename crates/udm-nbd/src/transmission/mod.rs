//! The transmission phase. Every thread of a connection loops: take the reader role,
//! read a request (and its write payload) into its own buffer, hand the role on, start
//! the request, take the write half, send the reply with one vectored write. Replies
//! go out in completion order; buffers are reused, so the steady state allocates
//! nothing. A thread keeps up to [`KEEP_PER_WORKER`] of request buffers between
//! requests and frees the rest once their reply is sent; all of a connection's
//! buffers count against its [`Budget`](crate::budget::Budget).
//!
//! A request is handed to the export with its buffer and a [`Done`]
//! ([`Export::submit`]). An export that answers before returning (every blocking
//! one) is served as above: the thread sends the reply with the others of its
//! batch. One that answers later holds no thread meanwhile: the thread goes back
//! to reading, and the completion sends the reply from whichever thread runs it and
//! gives the buffer back (to a few spares the threads reuse, or to the budget). At
//! most [`MAX_IN_FLIGHT`] requests of a connection are in flight; the connection
//! closes its socket only once every request read was answered.
//!
//! When the export answers fast (a moving average of its answer times), a thread
//! also takes the further requests already complete in the read buffer, sends their
//! replies together, and only lends the reader role while serving them (see
//! [`role`]): a hand-off per request would cost more than the requests themselves.

mod check;
mod done;
mod reply;
mod role;

pub use done::Done;

use std::io::IoSlice;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use tracing::{debug, error, warn};

use crate::budget::{self, KEEP_PER_WORKER, SPARE_PER_CONN};
use crate::conn::Conn;
use crate::error::ConnError;
use crate::export::{Errno, Export, Extent, Io, Op};
use crate::handshake::Negotiated;
use crate::proto::{self, be_u16, be_u32, err};
use crate::server::ServerConfig;
use crate::stream::Reader;
use check::{Limits, Request};
use reply::Format;
use role::Role;

/// Most requests one thread takes from the read buffer at once.
const MAX_BATCH: usize = 16;
/// The extra requests of a batch move at most this much data together.
pub(crate) const MAX_BATCH_DATA: usize = 512 << 10;
/// An export whose average answer time is below this counts as fast: threads take
/// batches and keep the reader role while serving them. A hand-off costs a few
/// microseconds of wake-up; a fast export's whole 128 KiB request costs about 20.
const FAST_EXPORT_NS: u64 = 40_000;
/// Replies finished this long ago go out even if the batch is not done.
const FLUSH_AFTER_NS: u64 = 100_000;
/// Write payloads from this size on make the reader stop reading ahead.
const LARGE_PAYLOAD: usize = 16 << 10;
/// Reply scratch space above this is given back after use (block status).
const KEEP_SCRATCH: usize = 1 << 20;
/// Requests of one connection read and not yet answered, at most: past it, the
/// connection reads no more until some are answered. (Their buffers are bounded by
/// the budget; this bounds what requests without data cost while an export holds
/// them, e.g. a suspended device.)
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// What every thread of a connection in transmission shares.
struct Session {
    conn: Arc<Conn>,
    export: Arc<dyn Export>,
    limits: Limits,
    format: Format,
    /// Who may read the socket.
    role: Role,
    /// The read half; only the role holder locks it.
    reader: Mutex<Reader>,
    writer: Mutex<()>,
    /// Moving average of the export's answer time, in nanoseconds.
    avg_op_ns: AtomicU64,
    /// Buffers of requests answered later, for the threads to reuse; counted in the
    /// budget, at most [`SPARE_PER_CONN`] bytes.
    spares: parking_lot::Mutex<Spares>,
    spare_count: AtomicUsize,
}

/// One thread's handle on its session, which its requests hold while in flight.
/// Each thread has its own, on a cache line of its own: the reference count that
/// every request takes and drops is then touched by one core only, unless a
/// request is answered elsewhere.
#[repr(align(64))]
struct Handle(Arc<Session>);

impl std::ops::Deref for Handle {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

#[derive(Default)]
struct Spares {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

impl Session {
    fn record_op(&self, ns: u64) {
        // Racy read-modify-write on purpose: an approximate average is enough.
        let old = self.avg_op_ns.load(Ordering::Relaxed);
        self.avg_op_ns
            .store(old - old / 8 + ns / 8, Ordering::Relaxed);
    }

    /// Whether the export answers fast enough for batches, and for one thread to
    /// keep reading and serving them (no hand-off at all).
    fn fast(&self) -> bool {
        self.avg_op_ns.load(Ordering::Relaxed) < FAST_EXPORT_NS
    }

    /// The NBD error for an export's errno on `req`; an export going away
    /// (ESHUTDOWN) starts closing the connection.
    fn fail(&self, req: &Request, errno: Errno) -> u32 {
        debug!(
            conn = self.conn.id,
            cmd = proto::command_name(req.cmd),
            offset = req.offset,
            len = req.len,
            error = %errno,
            "request failed"
        );
        let e = check::map_errno(req, errno);
        if e == err::ESHUTDOWN {
            self.conn.begin_close();
        }
        e
    }

    /// Make `buf` exactly `len` bytes, reusing a spare buffer when it has none.
    fn prepare(&self, buf: &mut Vec<u8>, len: usize, wait: bool) {
        if buf.capacity() == 0 && len > 0 {
            if let Some(b) = self.take_spare() {
                *buf = b;
            }
        }
        budget::grow(buf, len, &self.conn.budget, wait);
        buf.truncate(len);
    }

    fn take_spare(&self) -> Option<Vec<u8>> {
        if self.spare_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut sp = self.spares.lock();
        let b = sp.bufs.pop()?;
        sp.bytes -= b.capacity();
        self.spare_count.store(sp.bufs.len(), Ordering::Relaxed);
        Some(b)
    }

    /// The buffer of a request answered later (`counted` bytes of budget): keep it
    /// as a spare while there is room, else free it.
    fn recycle(&self, buf: Option<Vec<u8>>, counted: usize) {
        let budget = &self.conn.budget;
        match buf {
            Some(b) if counted > 0 && b.capacity() == counted => {
                let mut sp = self.spares.lock();
                if sp.bytes + counted <= SPARE_PER_CONN && !self.conn.reading_stopped() {
                    sp.bytes += counted;
                    sp.bufs.push(b);
                    self.spare_count.store(sp.bufs.len(), Ordering::Relaxed);
                    return;
                }
                drop(sp);
                drop(b);
                budget.release(counted);
            }
            other => {
                // Not the buffer that was counted (or none): free what came back.
                drop(other);
                budget.release(counted);
            }
        }
    }

    fn drop_spares(&self) {
        let mut sp = self.spares.lock();
        for mut b in sp.bufs.drain(..) {
            budget::free(&mut b, &self.conn.budget);
        }
        sp.bytes = 0;
        self.spare_count.store(0, Ordering::Relaxed);
    }

    /// Send the reply of a request answered after its thread moved on, from the
    /// thread that completed it, then give its buffer back and count it answered.
    fn answer_later(
        &self,
        req: &Request,
        result: Result<(), u32>,
        buf: Option<Vec<u8>>,
        counted: usize,
    ) {
        let result = if self.conn.is_closing() {
            Err(err::ESHUTDOWN)
        } else {
            result
        };
        let mut hdr = Vec::with_capacity(64);
        let mut with_data = reply::encode(&mut hdr, &self.format, req, result, &[]);
        let len = req.len as usize;
        let data: &[u8] = match &buf {
            Some(b) if with_data && b.len() >= len => &b[..len],
            _ if with_data => {
                // The export gave back less than it read: that is a failed read.
                hdr.clear();
                with_data = reply::encode(&mut hdr, &self.format, req, Err(err::EIO), &[]);
                &[]
            }
            _ => &[],
        };
        let mut iov = [IoSlice::new(&hdr), IoSlice::new(data)];
        let k = if with_data { 2 } else { 1 };
        {
            let _w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            // The socket stays open while this request holds the session, so a
            // client that left only makes this fail (EPIPE, no signal).
            if let Err(e) = self.conn.stream.send_all(&mut iov[..k]) {
                debug!(conn = self.conn.id, error = %e, "sending a reply failed");
                self.conn.abort();
            }
        }
        self.recycle(buf, counted);
        self.conn.request_done();
    }
}

/// Run the transmission phase on this thread and `threads_per_conn - 1` more; return
/// when all of them stopped, with the socket shut down.
pub(crate) fn run(conn: &Arc<Conn>, reader: Reader, n: Negotiated, config: &ServerConfig) {
    let session = Arc::new(Session {
        conn: Arc::clone(conn),
        limits: Limits {
            size: n.export.size(),
            read_only: n.export.read_only(),
            structured: n.structured,
            block_status: n.meta_context.is_some(),
            min_block: u64::from(n.block_size.min),
            max_request: config.max_request,
        },
        format: Format {
            structured: n.structured,
            meta_context: n.meta_context.unwrap_or(proto::BASE_ALLOCATION_ID),
        },
        export: n.export,
        role: Role::new(),
        reader: Mutex::new(reader),
        writer: Mutex::new(()),
        // Start pessimistic: batching begins once the export proved fast.
        avg_op_ns: AtomicU64::new(FAST_EXPORT_NS * 4),
        spares: parking_lot::Mutex::new(Spares::default()),
        spare_count: AtomicUsize::new(0),
    });
    let mut helpers = Vec::new();
    for i in 1..config.threads_per_conn.max(1) {
        let s = Arc::clone(&session);
        let spawned = thread::Builder::new()
            .name(format!("nbd-{}-{i}", conn.id))
            .spawn(move || Worker::new(&s).run());
        match spawned {
            Ok(h) => helpers.push(h),
            Err(e) => {
                warn!(conn = conn.id, error = %e, "cannot spawn more connection threads");
                break;
            }
        }
    }
    Worker::new(&session).run();
    for h in helpers {
        if h.join().is_err() {
            error!(conn = conn.id, "a connection thread panicked");
        }
    }
    // Requests the export still holds keep the connection (its socket, its budget,
    // its place among the server's connections) until they are answered.
    if conn.in_flight() > 0 {
        debug!(
            conn = conn.id,
            in_flight = conn.in_flight(),
            "waiting for requests in flight"
        );
        conn.wait_in_flight(0);
    }
    session.drop_spares();
    conn.stream.shutdown(std::net::Shutdown::Both);
}

/// One request of a batch, with the buffer its data lives in.
#[derive(Default)]
struct Slot {
    req: Request,
    /// The answer, when known before running (or after).
    result: Option<Result<(), u32>>,
    /// Write payload or read data; grows, freed after the reply when the worker
    /// keeps too much (see [`Worker::trim_buffers`]).
    buf: Vec<u8>,
    /// End of this reply's header in the worker's header buffer.
    hdr_end: usize,
    /// Read data follows the header.
    with_data: bool,
    /// The reply is part of this batch (false: the request is in flight, and its
    /// completion answers it).
    answered: bool,
}

/// One thread's reusable state.
struct Worker<'a> {
    s: &'a Session,
    handle: Arc<Handle>,
    slots: Vec<Slot>,
    /// Reply headers (and small payloads) of the current batch, back to back.
    hdr: Vec<u8>,
    extents: Vec<Extent>,
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            budget::free(&mut slot.buf, &self.s.conn.budget);
        }
    }
}

enum Received {
    Request,
    Stop,
}

impl<'a> Worker<'a> {
    fn new(s: &'a Arc<Session>) -> Self {
        Worker {
            s,
            handle: Arc::new(Handle(Arc::clone(s))),
            slots: Vec::new(),
            hdr: Vec::with_capacity(64 * MAX_BATCH),
            extents: Vec::new(),
        }
    }

    fn run(&mut self) {
        let s = self.s;
        let mut holding = false;
        loop {
            if !holding {
                s.role.acquire();
            }
            if s.conn.reading_stopped() {
                s.role.release();
                return;
            }
            let n = {
                let mut rd = s.reader.lock().unwrap_or_else(PoisonError::into_inner);
                self.receive(&mut rd)
            };
            if n == 0 {
                s.role.release();
                return;
            }
            let loan = if s.fast() && self.slots[..n].iter().all(|x| x.req.is_quick()) {
                // Keep the role: cheaper than waking another thread, as long as the
                // export answers this fast (the standby covers the other case).
                Some(s.role.lend())
            } else {
                s.role.release();
                None
            };
            self.hdr.clear();
            let mut sent = 0;
            let mut first_unsent = Instant::now();
            for i in 0..n {
                self.execute_slot(i);
                if i + 1 < n && first_unsent.elapsed().as_nanos() as u64 > FLUSH_AFTER_NS {
                    self.send(sent, i + 1);
                    sent = i + 1;
                    first_unsent = Instant::now();
                }
            }
            self.send(sent, n);
            for slot in &self.slots[..n] {
                if slot.answered {
                    s.conn.request_done();
                }
            }
            holding = loan.is_some_and(|l| s.role.reclaim(l));
            self.trim_buffers();
            if self.hdr.capacity() > KEEP_SCRATCH {
                self.hdr = Vec::with_capacity(64 * MAX_BATCH);
            }
            if self.extents.capacity() > KEEP_SCRATCH / 16 {
                self.extents = Vec::new();
            }
        }
    }

    /// Keep at most [`KEEP_PER_WORKER`] of request buffers (the first slots' first:
    /// they are the ones every batch uses); free the others. Nothing changes, and
    /// nothing is freed, while the requests are of ordinary sizes.
    fn trim_buffers(&mut self) {
        let mut kept = 0;
        for slot in &mut self.slots {
            let cap = slot.buf.capacity();
            if kept + cap <= KEEP_PER_WORKER {
                kept += cap;
            } else {
                budget::free(&mut slot.buf, &self.s.conn.budget);
            }
        }
    }

    /// Take requests under the read lock: wait for one, then add those already
    /// complete in the buffer, up to the batch limit. Returns how many (0: stop).
    fn receive(&mut self, rd: &mut Reader) -> usize {
        let s = self.s;
        let limit = if s.fast() { MAX_BATCH } else { 1 };
        let mut n = 0;
        let mut data = 0;
        // Room for one more request in flight (a batch may add a few past it).
        s.conn.wait_in_flight(MAX_IN_FLIGHT - 1);
        while n < limit {
            if n > 0 && !complete_request(rd.buffered(), &mut data) {
                break;
            }
            if self.slots.len() <= n {
                self.slots.push(Slot::default());
            }
            match self.read_request(rd, n) {
                Received::Request => n += 1,
                Received::Stop => break,
            }
            if s.conn.reading_stopped() {
                break;
            }
        }
        n
    }

    /// Read one request into slot `i`.
    fn read_request(&mut self, rd: &mut Reader, i: usize) -> Received {
        let conn = &*self.s.conn;
        let mut h = [0u8; proto::REQUEST_LEN];
        match rd.read_message(&mut h) {
            Ok(true) => {}
            Ok(false) => {
                debug!(conn = conn.id, "client closed the connection");
                conn.stop_reading();
                return Received::Stop;
            }
            Err(e) => {
                if !conn.is_closing() {
                    debug!(conn = conn.id, error = %e, "reading a request failed");
                }
                conn.stop_reading();
                return Received::Stop;
            }
        }
        let (magic, req) = Request::parse(&h);
        if magic != proto::REQUEST_MAGIC {
            warn!(conn = conn.id, error = %ConnError::BadRequestMagic(magic), "disconnecting");
            conn.stop_reading();
            return Received::Stop;
        }
        if req.cmd == proto::CMD_DISC {
            debug!(conn = conn.id, "client sent NBD_CMD_DISC");
            conn.stop_reading();
            return Received::Stop;
        }
        conn.request_started();
        rd.expect_large_payloads(req.cmd == proto::CMD_WRITE && req.len as usize >= LARGE_PAYLOAD);
        let slot = &mut self.slots[i];
        slot.req = req;
        slot.result = None;
        if req.cmd == proto::CMD_WRITE {
            if req.len > self.s.limits.max_request {
                // The payload cannot be skipped safely: answer, then hang up.
                warn!(
                    conn = conn.id,
                    len = req.len,
                    "write larger than the maximum request"
                );
                conn.stop_reading();
                slot.result = Some(Err(err::EINVAL));
            } else {
                let len = req.len as usize;
                // Only the first request of a batch may wait for room: a batch's
                // others are small (MAX_BATCH_DATA), and waiting for them while
                // holding the first could wait for ever.
                self.s.prepare(&mut slot.buf, len, i == 0);
                if let Err(e) = rd.read_exact(&mut slot.buf[..len]) {
                    debug!(conn = conn.id, error = %e, "reading a write payload failed");
                    conn.stop_reading();
                    conn.request_done();
                    return Received::Stop;
                }
            }
        }
        if conn.is_closing() {
            // Answer this one, then stop: the connection is going away.
            conn.stop_reading();
            slot.result = Some(Err(err::ESHUTDOWN));
        }
        Received::Request
    }

    /// Start slot `i`; if it is answered already, append its reply header.
    fn execute_slot(&mut self, i: usize) {
        let s = self.s;
        let slot = &mut self.slots[i];
        let req = slot.req;
        let result = match slot.result {
            Some(r) => Some(r),
            None => {
                let start = Instant::now();
                let r = start_request(&self.handle, &req, &mut slot.buf, i == 0, &mut self.extents);
                s.record_op(start.elapsed().as_nanos() as u64);
                r
            }
        };
        let Some(result) = result else {
            // In flight: its completion sends the reply.
            slot.answered = false;
            slot.with_data = false;
            slot.hdr_end = self.hdr.len();
            return;
        };
        // Once the export is going away, everything is answered ESHUTDOWN.
        let result = if s.conn.is_closing() {
            Err(err::ESHUTDOWN)
        } else {
            result
        };
        slot.answered = true;
        slot.with_data = reply::encode(&mut self.hdr, &s.format, &req, result, &self.extents);
        slot.hdr_end = self.hdr.len();
    }

    /// Send the replies of slots `from..to` with one vectored write.
    fn send(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        let s = self.s;
        let mut iov = [IoSlice::new(&[]); 2 * MAX_BATCH];
        let mut start = if from == 0 {
            0
        } else {
            self.slots[from - 1].hdr_end
        };
        let mut k = 0;
        for slot in &self.slots[from..to] {
            if slot.answered {
                iov[k] = IoSlice::new(&self.hdr[start..slot.hdr_end]);
                k += 1;
                if slot.with_data {
                    iov[k] = IoSlice::new(&slot.buf[..slot.req.len as usize]);
                    k += 1;
                }
            }
            start = slot.hdr_end;
        }
        if k == 0 {
            return;
        }
        let _w = s.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = s.conn.stream.send_all(&mut iov[..k]) {
            debug!(conn = s.conn.id, error = %e, "sending a reply failed");
            s.conn.abort();
        }
    }
}

/// Whether `b` starts with a whole request small enough to join a batch; adds its
/// data to `data`, which may not exceed [`MAX_BATCH_DATA`] in all.
fn complete_request(b: &[u8], data: &mut usize) -> bool {
    if b.len() < proto::REQUEST_LEN {
        return false;
    }
    let cmd = be_u16(b, 6);
    let len = be_u32(b, 24) as usize;
    let moved = match cmd {
        proto::CMD_READ | proto::CMD_WRITE => len,
        _ => 0,
    };
    if cmd == proto::CMD_WRITE && b.len() - proto::REQUEST_LEN < len {
        return false;
    }
    if *data + moved > MAX_BATCH_DATA {
        return false;
    }
    *data += moved;
    true
}

/// Start a request: `Some(answer)` when it is answered already (judged here, or
/// completed by the export before it returned, on this thread), `None` while it is
/// in flight (its [`Done`] answers it). A panicking export answers EIO and winds the
/// connection down.
fn start_request(
    h: &Arc<Handle>,
    req: &Request,
    buf: &mut Vec<u8>,
    may_wait: bool,
    extents: &mut Vec<Extent>,
) -> Option<Result<(), u32>> {
    let s: &Session = h;
    if let Err(e) = check::check(&s.limits, req) {
        return Some(Err(e));
    }
    let len = req.len as usize;
    let len64 = u64::from(req.len);
    let op = match req.cmd {
        _ if len == 0 && req.cmd != proto::CMD_FLUSH => return Some(Ok(())),
        proto::CMD_READ => {
            s.prepare(buf, len, may_wait);
            Op::Read
        }
        proto::CMD_WRITE => Op::Write,
        proto::CMD_FLUSH => Op::Flush,
        proto::CMD_TRIM => Op::Trim,
        proto::CMD_CACHE => Op::Cache,
        proto::CMD_WRITE_ZEROES => Op::WriteZeroes,
        proto::CMD_BLOCK_STATUS => {
            extents.clear();
            let r = guarded(s, req, || s.export.extents(req.offset, len64, extents));
            return Some(r.and_then(|r| r.map_err(|e| s.fail(req, e))));
        }
        _ => return Some(Err(err::EINVAL)),
    };
    let io = Io {
        op,
        offset: req.offset,
        len: len64,
        fua: req.has(proto::CMD_FLAG_FUA),
        may_trim: !req.has(proto::CMD_FLAG_NO_HOLE),
        fast_only: req.has(proto::CMD_FLAG_FAST_ZERO),
    };
    let has_data = matches!(op, Op::Read | Op::Write);
    let data = if has_data {
        std::mem::take(buf)
    } else {
        Vec::new()
    };
    let counted = data.capacity();
    let key = done::begin();
    let d = Done::server(Arc::clone(h), *req, key, counted);
    let submitted = guarded(s, req, || s.export.submit(io, data, d));
    // If submit panicked, its Done was dropped on the way out (answering EIO here)
    // or had been passed on (and answers later).
    let answer = done::end();
    if let Err(e) = submitted {
        if answer.is_none() {
            // The export kept the request: its completion answers it.
            debug!(
                conn = s.conn.id,
                error = e,
                "export panicked after taking a request"
            );
        }
    }
    let answer = answer?;
    if has_data {
        let budget = &s.conn.budget;
        match answer.buf {
            Some(b) if b.capacity() == counted => *buf = b,
            Some(b) => {
                budget.release(counted);
                budget.reserve(b.capacity(), false);
                *buf = b;
            }
            None => budget.release(counted),
        }
    }
    match answer.result {
        // A read must give back its data.
        Ok(()) if op == Op::Read && buf.len() < len => Some(Err(err::EIO)),
        r => Some(r),
    }
}

/// Run an export call; a panic answers EIO and winds the connection down.
fn guarded<T>(s: &Session, req: &Request, f: impl FnOnce() -> T) -> Result<T, u32> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
        error!(
            conn = s.conn.id,
            cmd = proto::command_name(req.cmd),
            "export panicked; closing the connection"
        );
        s.conn.stop_reading();
        err::EIO
    })
}

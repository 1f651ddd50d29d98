//! An export that answers later (Export::submit keeps the Done and completes it from
//! another thread): requests in flight hold no server thread, are answered with the
//! right reply and data, count against the connection's limits, and keep the
//! connection open until they are answered.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use udm_nbd::{BlockSize, Done, Errno, Export, Extent, Io, MemExport, ServerConfig};

/// Holds every submitted request until [`Later::release`] (or, with a timer, until
/// `delay` after it came), then answers it from the releasing thread. Requests at
/// `drop_at` are dropped unanswered.
/// A request held by [`Later`]: when it came, and what answering it needs.
type Held = (Instant, Io, Vec<u8>, Done);

struct Later {
    mem: MemExport,
    hold: AtomicBool,
    drop_at: Option<u64>,
    held: Mutex<Vec<Held>>,
    cv: Condvar,
    most_held: AtomicUsize,
}

impl Later {
    fn new(mem: MemExport, drop_at: Option<u64>) -> Arc<Later> {
        Arc::new(Later {
            mem,
            hold: AtomicBool::new(true),
            drop_at,
            held: Mutex::new(Vec::new()),
            cv: Condvar::new(),
            most_held: AtomicUsize::new(0),
        })
    }

    fn answer(&self, io: Io, mut buf: Vec<u8>, done: Done) {
        let r = udm_nbd::blocking(&self.mem, &io, &mut buf);
        done.complete(r, buf);
    }

    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    fn wait_held(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut g = self.held.lock().unwrap();
        while g.len() < n {
            assert!(Instant::now() < deadline, "only {} requests held", g.len());
            g = self
                .cv
                .wait_timeout(g, Duration::from_millis(20))
                .unwrap()
                .0;
        }
    }

    /// Answer what is held (and, with `stop_holding`, everything from now on).
    fn release(&self, stop_holding: bool) {
        if stop_holding {
            self.hold.store(false, Ordering::SeqCst);
        }
        let all = std::mem::take(&mut *self.held.lock().unwrap());
        for (_, io, buf, done) in all {
            self.answer(io, buf, done);
        }
    }

    /// Answer each request `delay` after it came, from one thread, until dropped.
    fn timer(self: &Arc<Self>, delay: Duration) -> Timer {
        let stop = Arc::new(AtomicBool::new(false));
        let (me, st) = (Arc::clone(self), Arc::clone(&stop));
        let t = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let due: Vec<_> = {
                    let mut g = me.held.lock().unwrap();
                    let now = Instant::now();
                    let (due, keep) = std::mem::take(&mut *g)
                        .into_iter()
                        .partition(|(at, ..)| now.duration_since(*at) >= delay);
                    *g = keep;
                    due
                };
                for (_, io, buf, done) in due {
                    me.answer(io, buf, done);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Timer {
            stop,
            t: Some(t),
            export: Arc::clone(self),
        }
    }
}

/// Stops the timer and answers whatever is left, so that no test leaves the
/// server waiting.
struct Timer {
    stop: Arc<AtomicBool>,
    t: Option<std::thread::JoinHandle<()>>,
    export: Arc<Later>,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
        self.export.release(true);
    }
}

/// Answers everything held when dropped (a failing test must not hang the server).
struct ReleaseLater(Arc<Later>);

impl Drop for ReleaseLater {
    fn drop(&mut self) {
        self.0.release(true);
    }
}

impl Export for Later {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read_only(&self) -> bool {
        Export::read_only(&self.mem)
    }
    fn can_multi_conn(&self) -> bool {
        true
    }
    fn block_size(&self) -> BlockSize {
        Export::block_size(&self.mem)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.mem.read(offset, buf)
    }
    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> Result<(), Errno> {
        self.mem.write(offset, buf, fua)
    }
    fn flush(&self) -> Result<(), Errno> {
        self.mem.flush()
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), Errno> {
        self.mem.trim(offset, len, fua)
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fast_only: bool,
        fua: bool,
    ) -> Result<(), Errno> {
        self.mem.write_zeroes(offset, len, may_trim, fast_only, fua)
    }
    fn cache(&self, offset: u64, len: u64) -> Result<(), Errno> {
        self.mem.cache(offset, len)
    }
    fn extents(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), Errno> {
        self.mem.extents(offset, len, out)
    }
    fn submit(&self, io: Io, buf: Vec<u8>, done: Done) {
        if self.drop_at == Some(io.offset) {
            return; // dropped: the server answers EIO
        }
        if !self.hold.load(Ordering::SeqCst) {
            return self.answer(io, buf, done);
        }
        let mut g = self.held.lock().unwrap();
        g.push((Instant::now(), io, buf, done));
        self.most_held.fetch_max(g.len(), Ordering::SeqCst);
        self.cv.notify_all();
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn serve(e: &Arc<Later>, config: ServerConfig) -> Harness {
    Harness::with_config(&[("disk", Arc::clone(e) as Arc<dyn Export>)], config)
}

fn read_reply(c: &mut Raw, len: usize) -> (u64, Vec<u8>) {
    match c.reply() {
        Reply::Simple { error: 0, cookie } => (cookie, c.bytes(len)),
        r => panic!("expected a read's data, got {r:?}"),
    }
}

#[test]
fn requests_answered_later_wait_together_not_a_thread_each() {
    let mem = MemExport::new(1 << 20);
    let data = random_bytes(1 << 20, 3);
    mem.fill(0, &data).unwrap();
    let e = Later::new(mem, None);
    let h = serve(
        &e,
        ServerConfig {
            threads_per_conn: 2,
            ..ServerConfig::default()
        },
    );
    let _timer = e.timer(Duration::from_millis(100));
    let mut c = h.raw();
    c.go("disk", false, false);
    let t0 = Instant::now();
    for i in 0..64u64 {
        c.request(0, NBD_CMD_READ, i, i * 4096, 4096);
    }
    let mut seen = [false; 64];
    for _ in 0..64 {
        let (cookie, got) = read_reply(&mut c, 4096);
        let i = cookie as usize;
        assert!(!seen[i], "two replies for {cookie}");
        seen[i] = true;
        assert!(got == data[i * 4096..(i + 1) * 4096], "read {cookie}: data");
    }
    // Two threads answering one request at a time would take 64 / 2 * 100 ms.
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    assert!(
        e.most_held.load(Ordering::SeqCst) > 2,
        "never more than 2 held"
    );
}

#[test]
fn later_answers_carry_data_errors_and_structured_chunks() {
    let mem = MemExport::new(1 << 20);
    mem.fill(8192, b"abcd").unwrap();
    let e = Later::new(mem, Some(65536));
    let h = serve(&e, ServerConfig::default());
    // After the server: dropped first, so a failing test ends.
    let _release = ReleaseLater(Arc::clone(&e));
    let mut c = h.raw();
    c.go("disk", true, false);
    c.request(0, NBD_CMD_READ, 1, 8192, 4);
    c.request_with(0, NBD_CMD_WRITE, 2, 4096, 4, b"wxyz");
    c.request(0, NBD_CMD_READ, 3, 65536, 512); // dropped by the export: EIO
    c.request(0, NBD_CMD_FLUSH, 4, 0, 0);
    // Judged by the server itself, answered while the others are held.
    c.request(0, NBD_CMD_READ, 5, 1 << 20, 512);
    let mut errors = Vec::new();
    for _ in 0..2 {
        match c.reply() {
            Reply::Chunk {
                flags: 1,
                typ: 0x8001,
                cookie,
                payload,
            } => errors.push((cookie, u32::from_be_bytes(payload[..4].try_into().unwrap()))),
            r => panic!("expected an error chunk, got {r:?}"),
        }
    }
    errors.sort();
    assert_eq!(errors, [(3, EIO), (5, EINVAL)]);
    e.wait_held(3);
    e.release(false);
    // The read's data in a final OFFSET_DATA chunk; the write and the flush with
    // simple replies, as this server always answers commands without data.
    let mut simple = Vec::new();
    for _ in 0..3 {
        match c.reply() {
            Reply::Chunk {
                flags,
                typ,
                cookie,
                payload,
            } => {
                assert_eq!((cookie, flags, typ), (1, 1, 1), "final OFFSET_DATA");
                assert_eq!(&payload[..8], &8192u64.to_be_bytes());
                assert_eq!(&payload[8..], b"abcd");
            }
            Reply::Simple { error: 0, cookie } => simple.push(cookie),
            r => panic!("unexpected reply {r:?}"),
        }
    }
    simple.sort();
    assert_eq!(simple, [2, 4]);
    c.request(0, NBD_CMD_READ, 6, 4096, 4);
    e.wait_held(1);
    e.release(true);
    match c.reply() {
        Reply::Chunk {
            cookie, payload, ..
        } => {
            assert_eq!(cookie, 6);
            assert_eq!(&payload[8..], b"wxyz");
        }
        r => panic!("expected the data, got {r:?}"),
    }
}

#[test]
fn a_connection_stays_until_its_requests_in_flight_are_answered() {
    let e = Later::new(MemExport::new(1 << 20), None);
    let h = serve(&e, ServerConfig::default());
    // After the server: dropped first, so a failing test ends.
    let _release = ReleaseLater(Arc::clone(&e));
    let mut c = h.raw();
    c.go("disk", false, false);
    for i in 0..8u64 {
        c.request(0, NBD_CMD_READ, i, i * 65536, 65536);
    }
    e.wait_held(8);
    drop(c);
    // The client is gone, but the export still holds its requests and their buffers.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.server.connection_count(), 1);
    assert!(h.server.buffer_bytes() >= 8 * 65536);
    // Answering them sends to a closed socket: nothing breaks, and all is freed.
    e.release(true);
    wait_until("the connection to close", || {
        h.server.connection_count() == 0
    });
    let mut c = h.raw();
    c.go("disk", false, false);
    c.request(0, NBD_CMD_READ, 9, 0, 512);
    assert_eq!(read_reply(&mut c, 512), (9, vec![0; 512]));
}

#[test]
fn shutdown_answers_requests_in_flight_before_it_returns() {
    let e = Later::new(MemExport::new(1 << 20), None);
    let h = serve(&e, ServerConfig::default());
    // After the server: dropped first, so a failing test ends.
    let _release = ReleaseLater(Arc::clone(&e));
    let mut c = h.raw();
    c.go("disk", false, false);
    c.request(0, NBD_CMD_READ, 1, 0, 512);
    e.wait_held(1);
    let server = h.server.clone();
    let stopping = std::thread::spawn(move || server.shutdown());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !stopping.is_finished(),
        "shutdown returned with a request in flight"
    );
    e.release(true);
    stopping.join().unwrap();
    // The server was going away when the answer came.
    assert_eq!(c.simple_error(1), ESHUTDOWN);
    c.expect_closed();
}

#[test]
fn a_connection_stops_reading_at_its_limit_of_requests_in_flight() {
    let e = Later::new(MemExport::new(1 << 20), None);
    let h = serve(&e, ServerConfig::default());
    // After the server: dropped first, so a failing test ends.
    let _release = ReleaseLater(Arc::clone(&e));
    let mut c = h.raw();
    c.go("disk", false, false);
    let n = 1500u64;
    let mut burst = Vec::new();
    for i in 0..n {
        burst.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        burst.extend_from_slice(&0u16.to_be_bytes());
        burst.extend_from_slice(&NBD_CMD_FLUSH.to_be_bytes());
        burst.extend_from_slice(&i.to_be_bytes());
        burst.extend_from_slice(&[0u8; 12]);
    }
    c.send(&burst);
    e.wait_held(1000);
    std::thread::sleep(Duration::from_millis(200));
    let held = e.held();
    assert!(
        (1000..=1024 + 16).contains(&held),
        "{held} requests held (limit 1024 in flight)"
    );
    e.release(true);
    let mut seen = vec![false; n as usize];
    for _ in 0..n {
        match c.reply() {
            Reply::Simple { error: 0, cookie } => seen[cookie as usize] = true,
            r => panic!("unexpected reply {r:?}"),
        }
    }
    assert!(seen.iter().all(|&s| s));
}

#[test]
fn buffers_in_flight_count_against_the_budget() {
    const REQ: u32 = 8 << 20;
    let config = ServerConfig {
        max_request: REQ,
        buffer_budget: 24 << 20,
        ..ServerConfig::default()
    };
    let mem = MemExport::new(4 * REQ as usize);
    let data = random_bytes(4 * REQ as usize, 9);
    mem.fill(0, &data).unwrap();
    let e = Later::new(mem, None);
    let h = serve(&e, config);
    let _release = ReleaseLater(Arc::clone(&e));
    let mut c = h.raw();
    c.go("disk", false, false);
    for k in 0..12u64 {
        c.request(0, NBD_CMD_READ, k, (k % 4) * u64::from(REQ), REQ);
    }
    let limit = h.server.config().buffer_budget;
    let fit = limit / REQ as usize;
    e.wait_held(fit.min(12));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        e.held() <= fit,
        "{} reads of 8 MiB held under a budget of {limit}",
        e.held()
    );
    assert!(e.held() < 12, "the budget {limit} must bound the test");
    // Answered from another thread: 48 MiB of replies do not fit in the socket.
    let e2 = Arc::clone(&e);
    let releasing = std::thread::spawn(move || e2.release(true));
    for _ in 0..12 {
        let (cookie, got) = read_reply(&mut c, REQ as usize);
        let at = (cookie % 4) as usize * REQ as usize;
        assert!(got == data[at..at + REQ as usize], "read {cookie}: data");
    }
    releasing.join().unwrap();
    assert!(
        h.server.peak_buffer_bytes() <= limit + 16 * (512 << 10),
        "peak {} over the budget {limit}",
        h.server.peak_buffer_bytes()
    );
}

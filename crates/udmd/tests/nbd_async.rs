//! NBD requests are answered when their bio completes: a request the device holds
//! (a delay target, a suspended device) holds no udmd thread, so many of them wait
//! together and a connection keeps serving meanwhile; a client that leaves with
//! requests in flight leaves udmd healthy.
//!
//! The client is a small one written here from the protocol (doc/proto.md), so that
//! it can pipeline hundreds of requests on one connection and hang up mid-flight.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Daemon, Opts};

const BLOCK: usize = 4096;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const CMD_READ: u16 = 0;
const EINVAL: u32 = 22;

/// One NBD connection in transmission (simple replies, no structured ones).
struct Client {
    s: UnixStream,
    size: u64,
}

impl Client {
    fn connect(sock: &Path, export: &str) -> Client {
        let mut s = UnixStream::connect(sock).expect("connect to the NBD socket");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).expect("greeting");
        assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT", "newstyle greeting");
        // FIXED_NEWSTYLE | NO_ZEROES
        s.write_all(&3u32.to_be_bytes()).unwrap();
        // NBD_OPT_GO: the export name and no information requests.
        let mut data = (export.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        let mut opt = b"IHAVEOPT".to_vec();
        opt.extend_from_slice(&7u32.to_be_bytes());
        opt.extend_from_slice(&(data.len() as u32).to_be_bytes());
        opt.extend_from_slice(&data);
        s.write_all(&opt).unwrap();
        let mut size = None;
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).expect("option reply");
            let typ = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
            let mut d = vec![0u8; len];
            s.read_exact(&mut d).unwrap();
            match typ {
                // NBD_REP_INFO, NBD_INFO_EXPORT: size and flags
                3 if d.len() == 12 && d[..2] == [0, 0] => {
                    size = Some(u64::from_be_bytes(d[2..10].try_into().unwrap()));
                }
                3 => {}
                1 => break, // NBD_REP_ACK
                t => panic!(
                    "NBD_OPT_GO {export} failed with {t:#x}: {}",
                    String::from_utf8_lossy(&d)
                ),
            }
        }
        Client {
            s,
            size: size.expect("NBD_INFO_EXPORT"),
        }
    }

    /// Send reads of `len` bytes at `(cookie, offset)`, all in one write.
    fn send_reads(&mut self, reads: &[(u64, u64)], len: u32) {
        let mut m = Vec::with_capacity(28 * reads.len());
        for &(cookie, offset) in reads {
            m.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
            m.extend_from_slice(&0u16.to_be_bytes());
            m.extend_from_slice(&CMD_READ.to_be_bytes());
            m.extend_from_slice(&cookie.to_be_bytes());
            m.extend_from_slice(&offset.to_be_bytes());
            m.extend_from_slice(&len.to_be_bytes());
        }
        self.s.write_all(&m).expect("send requests");
    }

    /// The next reply: (cookie, error), with its data for a successful read of `len`.
    fn reply(&mut self, len: usize) -> (u64, u32, Vec<u8>) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).expect("reply header");
        assert_eq!(
            u32::from_be_bytes(h[..4].try_into().unwrap()),
            SIMPLE_REPLY_MAGIC
        );
        let error = u32::from_be_bytes(h[4..8].try_into().unwrap());
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let mut data = Vec::new();
        if error == 0 {
            data = vec![0u8; len];
            self.s.read_exact(&mut data).expect("read data");
        }
        (cookie, error, data)
    }
}

/// What block `i` of the backing file holds.
fn block(i: u64) -> Vec<u8> {
    let mut b = vec![(i % 251) as u8; BLOCK];
    b[..8].copy_from_slice(&i.to_be_bytes());
    b
}

/// A backing file of `blocks` 4 KiB blocks, each filled by [`block`].
fn backing_file(d: &Daemon, name: &str, blocks: u64) -> std::path::PathBuf {
    let p = d.dir.path().join(name);
    let mut all = Vec::with_capacity(blocks as usize * BLOCK);
    for i in 0..blocks {
        all.extend_from_slice(&block(i));
    }
    std::fs::write(&p, all).unwrap();
    p
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Samples udmd's thread count until dropped; `max` is the most it saw.
struct ThreadWatch {
    max: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    t: Option<std::thread::JoinHandle<()>>,
}

impl ThreadWatch {
    fn start(pid: u32) -> ThreadWatch {
        let max = Arc::new(AtomicUsize::new(threads(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, st) = (max.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                m.fetch_max(threads(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        ThreadWatch {
            max,
            stop,
            t: Some(t),
        }
    }

    fn max(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take() {
            t.join().unwrap();
        }
        self.max.load(Ordering::Relaxed)
    }
}

/// udmd's thread count may grow by this much while requests are held: the engine's
/// pool and timer threads, started on first use, not a thread per request.
const THREAD_SLACK: usize = 8;

fn nbd_daemon() -> Daemon {
    Daemon::with(Opts {
        nbd: true,
        ..Opts::default()
    })
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Read every reply of `cookies` (reads of one block at block `cookie`) and check
/// the data.
fn expect_reads(c: &mut Client, cookies: impl IntoIterator<Item = u64>) {
    let mut want: HashSet<u64> = cookies.into_iter().collect();
    while !want.is_empty() {
        let (cookie, error, data) = c.reply(BLOCK);
        assert_eq!(error, 0, "read {cookie} failed");
        assert!(
            want.remove(&cookie),
            "unexpected or repeated reply {cookie}"
        );
        assert!(data == block(cookie), "read {cookie}: wrong data");
    }
}

#[test]
fn reads_held_by_a_delay_target_complete_together_without_a_thread_each() {
    let d = nbd_daemon();
    let blocks = 512u64;
    let f = backing_file(&d, "data", blocks);
    let sectors = blocks * (BLOCK as u64 / 512);
    d.ok(&[
        "create",
        "slow",
        "--table",
        &format!("0 {sectors} delay {} 0 200", f.display()),
    ]);
    let sock = d.nbd.clone().unwrap();
    let mut c = Client::connect(&sock, "slow");
    assert_eq!(c.size, blocks * BLOCK as u64);
    // One read first: the engine's timer and pool threads start on first use.
    c.send_reads(&[(7, 7 * BLOCK as u64)], BLOCK as u32);
    expect_reads(&mut c, [7]);

    let before = threads(d.pid());
    let watch = ThreadWatch::start(d.pid());
    let reads: Vec<(u64, u64)> = (0..256u64).map(|i| (i, i * BLOCK as u64)).collect();
    let t0 = Instant::now();
    c.send_reads(&reads, BLOCK as u32);
    expect_reads(&mut c, 0..256);
    let took = t0.elapsed();
    let most = watch.max();
    eprintln!(
        "256 reads of 4 KiB through a 200 ms delay: {took:?}; udmd threads {before} -> at most {most}"
    );
    assert!(
        took < Duration::from_millis(400),
        "256 concurrent reads held 200 ms each took {took:?}: they did not wait together"
    );
    assert!(
        most <= before + THREAD_SLACK,
        "udmd grew from {before} to {most} threads while 256 reads were held"
    );
}

#[test]
fn a_suspended_device_holds_nbd_requests_without_threads_and_answers_after_resume() {
    let d = nbd_daemon();
    let blocks = 256u64;
    let f = backing_file(&d, "data", blocks);
    let sectors = blocks * (BLOCK as u64 / 512);
    d.ok(&[
        "create",
        "held",
        "--table",
        &format!("0 {sectors} linear {} 0", f.display()),
    ]);
    let sock = d.nbd.clone().unwrap();
    let mut c = Client::connect(&sock, "held");
    c.send_reads(&[(3, 3 * BLOCK as u64)], BLOCK as u32);
    expect_reads(&mut c, [3]);

    d.ok(&["suspend", "held"]);
    let before = threads(d.pid());
    let watch = ThreadWatch::start(d.pid());
    // Far more reads than the connection has threads, all held by the suspend.
    let reads: Vec<(u64, u64)> = (0..128u64).map(|i| (i, i * BLOCK as u64)).collect();
    c.send_reads(&reads, BLOCK as u32);
    // A request the server answers itself (past the end: EINVAL) is still read and
    // answered: no thread is parked on the held ones.
    c.send_reads(&[(1000, c.size)], BLOCK as u32);
    let t0 = Instant::now();
    let (cookie, error, _) = c.reply(BLOCK);
    assert_eq!(
        (cookie, error),
        (1000, EINVAL),
        "the only reply while suspended"
    );
    eprintln!("answered past 128 held reads in {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(200));
    let most = watch.max();
    assert!(
        most <= before + THREAD_SLACK,
        "udmd grew from {before} to {most} threads while 128 reads were held"
    );
    // Nothing else came: the reads are still held.
    c.s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    assert!(
        matches!(c.s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a held read was answered while the device is suspended"
    );
    c.s.set_nonblocking(false).unwrap();

    d.ok(&["resume", "held"]);
    expect_reads(&mut c, 0..128);
}

#[test]
fn a_client_leaving_with_requests_in_flight_leaves_udmd_healthy() {
    let mut d = nbd_daemon();
    let blocks = 256u64;
    let f = backing_file(&d, "data", blocks);
    let sectors = blocks * (BLOCK as u64 / 512);
    d.ok(&[
        "create",
        "slow",
        "--table",
        &format!("0 {sectors} delay {} 0 200", f.display()),
    ]);
    d.ok(&[
        "create",
        "held",
        "--table",
        &format!("0 {sectors} linear {} 0", f.display()),
    ]);
    let sock = d.nbd.clone().unwrap();
    let idle = threads(d.pid());
    let reads: Vec<(u64, u64)> = (0..200u64).map(|i| (i, i * BLOCK as u64)).collect();

    // Hang up while the delay target holds the reads.
    let mut c = Client::connect(&sock, "slow");
    c.send_reads(&reads, BLOCK as u32);
    std::thread::sleep(Duration::from_millis(20));
    c.s.shutdown(Shutdown::Both).unwrap();
    drop(c);

    // Hang up while a suspend holds them, then resume: they complete for nobody.
    d.ok(&["suspend", "held"]);
    let mut c = Client::connect(&sock, "held");
    c.send_reads(&reads, BLOCK as u32);
    std::thread::sleep(Duration::from_millis(50));
    drop(c);
    std::thread::sleep(Duration::from_millis(50));
    d.ok(&["resume", "held"]);

    // Both connections end once their requests are answered, and free their threads.
    wait_until("the connections to close", Duration::from_secs(10), || {
        threads(d.pid()) <= idle + THREAD_SLACK
    });
    assert!(d.alive(), "udmd died");
    for name in ["slow", "held"] {
        let mut c = Client::connect(&sock, name);
        c.send_reads(
            &[(42, 42 * BLOCK as u64), (43, 43 * BLOCK as u64)],
            BLOCK as u32,
        );
        expect_reads(&mut c, [42, 43]);
    }
    d.ok(&["remove", "slow"]);
    d.ok(&["remove", "held"]);
    assert!(d.alive(), "udmd died");
}

#[test]
fn udmd_stops_promptly_with_nbd_requests_held_by_a_suspend() {
    let mut d = nbd_daemon();
    let blocks = 64u64;
    let f = backing_file(&d, "data", blocks);
    let sectors = blocks * (BLOCK as u64 / 512);
    d.ok(&[
        "create",
        "held",
        "--table",
        &format!("0 {sectors} linear {} 0", f.display()),
    ]);
    let sock = d.nbd.clone().unwrap();
    let mut c = Client::connect(&sock, "held");
    d.ok(&["suspend", "held"]);
    let reads: Vec<(u64, u64)> = (0..32u64).map(|i| (i, i * BLOCK as u64)).collect();
    c.send_reads(&reads, BLOCK as u32);
    // Answered by the server itself once it has read (and started) all 32 before it.
    c.send_reads(&[(1000, c.size)], BLOCK as u32);
    assert_eq!(c.reply(BLOCK).0, 1000);
    // SAFETY: kill with the pid of the udmd this test spawned.
    unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };
    // The held reads fail (the engine stops first), the connection closes once they
    // are answered, and udmd exits: nothing waits for a resume that never comes.
    let mut answered = 0;
    loop {
        let mut h = [0u8; 16];
        match c.s.read_exact(&mut h) {
            Ok(()) => {
                let error = u32::from_be_bytes(h[4..8].try_into().unwrap());
                assert_ne!(error, 0, "a held read succeeded on a stopping udmd");
                answered += 1;
            }
            Err(_) => break,
        }
    }
    assert_eq!(answered, 32, "every held read is answered before the close");
    wait_until("udmd to exit", Duration::from_secs(5), || !d.alive());
}

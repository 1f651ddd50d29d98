//! What one client can cost the server: request buffers, connections, and the time a
//! handshake may take.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use udm_nbd::{Export, MemExport, ServerConfig};

const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Read one simple read reply of `len` bytes.
fn read_reply(c: &mut Raw, cookie: u64, len: usize) -> Vec<u8> {
    assert_eq!(c.simple_error(cookie), 0);
    c.bytes(len)
}

#[test]
fn idle_connections_do_not_keep_large_buffers() {
    const BIG: u32 = 32 << 20;
    let m = Arc::new(MemExport::new(2 * BIG as usize));
    let h = Harness::new(&[("disk", m as Arc<dyn Export>)]);
    let mut conns: Vec<Raw> = (0..4).map(|_| h.raw()).collect();
    let payload = vec![0x5au8; BIG as usize];
    for c in &mut conns {
        c.go("disk", false, false);
        // Several large requests in flight, so several threads each get a big buffer.
        c.request_with(0, CMD_WRITE, 1, 0, BIG, &payload);
        for k in 0..3 {
            c.request(0, CMD_READ, 2 + k, 0, BIG);
        }
        let mut seen = 0;
        while seen < 4 {
            match c.reply() {
                Reply::Simple {
                    error: 0,
                    cookie: 1,
                } => {}
                Reply::Simple { error: 0, cookie } => {
                    assert!((2..5).contains(&cookie));
                    let data = c.bytes(BIG as usize);
                    assert!(data.iter().all(|&b| b == 0x5a));
                }
                r => panic!("unexpected reply {r:?}"),
            }
            seen += 1;
        }
    }
    // All replies are in: every connection is idle. The buffers are given back
    // right after the reply is sent, so wait (bounded) for the last sends to finish.
    let per_conn = 16 << 20;
    let t0 = Instant::now();
    while h.server.buffer_bytes() > 4 * per_conn && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        h.server.buffer_bytes() <= 4 * per_conn,
        "4 idle connections hold {} bytes of request buffers",
        h.server.buffer_bytes()
    );
    // Still served after that (nothing was freed that is in use).
    let c = &mut conns[0];
    c.request(0, CMD_READ, 9, 4096, 4096);
    assert_eq!(read_reply(c, 9, 4096), vec![0x5a; 4096]);
}

#[test]
fn a_connection_never_holds_more_than_its_budget() {
    const REQ: u32 = 8 << 20;
    let config = ServerConfig {
        max_request: REQ,
        buffer_budget: 24 << 20,
        ..ServerConfig::default()
    };
    let m = Arc::new(MemExport::new(4 * REQ as usize));
    let h = Harness::with_config(&[("disk", m as Arc<dyn Export>)], config);
    let mut c = h.raw();
    c.go("disk", false, false);
    let payload: Vec<u8> = (0..REQ).map(|i| (i / 4096) as u8).collect();
    // Large requests pipelined: 16 threads could take them all at once. The
    // writes are answered before the reads go out: NBD orders nothing between
    // requests in flight together, so a read sent beside the write of the same
    // range may see the data before it.
    for k in 0..4u64 {
        c.request_with(0, CMD_WRITE, k, k * u64::from(REQ), REQ, &payload);
    }
    for _ in 0..4 {
        match c.reply() {
            Reply::Simple { error: 0, cookie } if cookie < 4 => {}
            r => panic!("unexpected reply {r:?}"),
        }
    }
    for k in 0..8u64 {
        c.request(0, CMD_READ, 100 + k, (k % 4) * u64::from(REQ), REQ);
    }
    for _ in 0..8 {
        match c.reply() {
            Reply::Simple { error: 0, cookie } if (100..108).contains(&cookie) => {
                assert!(c.bytes(REQ as usize) == payload, "read {cookie} data");
            }
            r => panic!("unexpected reply {r:?}"),
        }
    }
    // The budget is raised to what a max-size request on every thread needs at least
    // (see ServerConfig::buffer_budget): 24 MiB is below that, so it is the floor.
    let limit = h.server.config().buffer_budget;
    assert!(
        h.server.peak_buffer_bytes() <= limit + 16 * (512 << 10),
        "peak {} over the budget {limit}",
        h.server.peak_buffer_bytes()
    );
    assert!(
        limit < 12 * REQ as usize,
        "the budget {limit} must bound the test"
    );
}

#[test]
fn connections_past_the_limit_are_closed_before_the_greeting() {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let m = Arc::new(MemExport::new(1 << 20));
    let h = Harness::with_config(&[("disk", m as Arc<dyn Export>)], config);
    let mut a = h.raw();
    a.go("disk", false, false);
    let mut b = h.raw();
    b.bytes(18); // greeting: b is in its handshake, which counts too
    for _ in 0..5 {
        let mut over = h.raw();
        over.expect_closed();
    }
    assert_eq!(h.server.connection_count(), 2);
    drop(a);
    wait_until("the closed connection leaves the registry", || {
        h.server.connection_count() == 1
    });
    let mut c = h.raw();
    c.go("disk", false, false);
    c.request(0, CMD_READ, 1, 0, 512);
    assert_eq!(read_reply(&mut c, 1, 512), vec![0; 512]);
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let m = Arc::new(MemExport::new(1 << 20));
    let h = Harness::with_config(&[("disk", m as Arc<dyn Export>)], config);
    let mut good = h.raw();
    good.go("disk", false, false);
    // Says nothing at all.
    let mut silent = UnixStream::connect(&h.sock).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Greets, then stalls in the middle of an option.
    let mut slow = h.raw();
    slow.greet(3);
    slow.send(b"IHAVE");
    let t0 = Instant::now();
    let mut all = Vec::new();
    let r = silent.read_to_end(&mut all);
    assert!(
        matches!(&r, Ok(18)),
        "the silent client got {r:?} (want the greeting, then end of file)"
    );
    slow.expect_closed();
    assert!(t0.elapsed() < Duration::from_secs(25));
    wait_until("the dropped clients leave the registry", || {
        h.server.connection_count() == 1
    });
    // A client that finished its handshake is older than the timeout and stays.
    good.request(0, CMD_READ, 7, 0, 512);
    assert_eq!(read_reply(&mut good, 7, 512), vec![0; 512]);
}

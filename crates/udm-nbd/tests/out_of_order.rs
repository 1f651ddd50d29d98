//! Replies go out in completion order: a request stuck in the export does not hold
//! back later ones on the same connection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use udm_nbd::{Export, MemExport, ServerConfig};

fn setup(threads: usize) -> (Harness, Arc<TestExport>, Raw) {
    let t = Arc::new(TestExport::new(MemExport::new(1 << 20), Some(0)));
    let config = ServerConfig {
        threads_per_conn: threads,
        ..ServerConfig::default()
    };
    let h = Harness::with_config(&[("disk", t.clone() as Arc<dyn Export>)], config);
    let mut c = h.raw();
    c.go("disk", false, false);
    (h, t, c)
}

#[test]
fn a_later_request_is_answered_first() {
    let (_h, t, mut c) = setup(16);
    let _open = ReleaseOnDrop(t.clone());
    c.request(0, NBD_CMD_READ, 1, 0, 512);
    t.wait_for_waiters(1);
    c.request_with(0, NBD_CMD_WRITE, 2, 8192, 4, b"late");
    c.request(0, NBD_CMD_READ, 3, 8192, 4);
    // Both overtake cookie 1, in whichever order they finish.
    let mut early = Vec::new();
    for _ in 0..2 {
        match c.reply() {
            Reply::Simple {
                error: 0,
                cookie: 3,
            } => {
                early.push(3);
                c.bytes(4);
            }
            Reply::Simple {
                error: 0,
                cookie: 2,
            } => early.push(2),
            r => panic!("unexpected reply {r:?}"),
        }
    }
    early.sort();
    assert_eq!(early, [2, 3]);
    t.release();
    assert_eq!(c.simple_error(1), 0);
    assert_eq!(c.bytes(512), vec![0; 512]);
}

#[test]
fn with_one_thread_replies_stay_in_order() {
    // The control experiment: one thread per connection cannot overtake.
    let (_h, t, mut c) = setup(1);
    let _open = ReleaseOnDrop(t.clone());
    c.request(0, NBD_CMD_READ, 1, 0, 512);
    t.wait_for_waiters(1);
    c.request(0, NBD_CMD_FLUSH, 2, 0, 0);
    c.s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(
        std::io::Read::read(&mut c.s, &mut b).is_err(),
        "nothing may arrive yet"
    );
    c.s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    t.release();
    assert_eq!(c.simple_error(1), 0);
    c.bytes(512);
    assert_eq!(c.simple_error(2), 0);
}

#[test]
fn many_connections_write_at_once() {
    let m = Arc::new(MemExport::new(8 << 20));
    let h = Harness::new(&[("disk", m.clone() as Arc<dyn Export>)]);
    let threads: Vec<_> = (0..8u64)
        .map(|i| {
            let mut c = h.raw();
            std::thread::spawn(move || {
                c.go("disk", i % 2 == 0, false);
                let base = i << 20;
                // Pipeline 64 writes, then collect the replies in any order.
                for k in 0..64u64 {
                    let data = random_bytes(16384, i * 100 + k);
                    c.request_with(0, NBD_CMD_WRITE, k, base + k * 16384, 16384, &data);
                }
                let mut seen = [false; 64];
                for _ in 0..64 {
                    match c.reply() {
                        Reply::Simple { error: 0, cookie } => seen[cookie as usize] = true,
                        r => panic!("unexpected reply {r:?}"),
                    }
                }
                assert!(seen.iter().all(|&s| s));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = m.contents();
    for i in 0..8u64 {
        for k in 0..64u64 {
            let at = ((i << 20) + k * 16384) as usize;
            assert_eq!(&all[at..at + 16384], &random_bytes(16384, i * 100 + k)[..]);
        }
    }
}

#[test]
fn a_slow_request_after_many_fast_ones_is_still_overtaken() {
    // Fast requests first, so the server serves this connection from one thread;
    // a request that then blocks must not hold back the next one for long.
    let (_h, t, mut c) = setup(16);
    let _open = ReleaseOnDrop(t.clone());
    for _ in 0..50 {
        for k in 0..8u64 {
            c.request(0, NBD_CMD_READ, k, 4096 * (k + 1), 4096);
        }
        for _ in 0..8 {
            match c.reply() {
                Reply::Simple { error: 0, cookie } if cookie < 8 => c.bytes(4096),
                r => panic!("unexpected reply {r:?}"),
            };
        }
    }
    c.request(0, NBD_CMD_READ, 100, 0, 512);
    t.wait_for_waiters(1);
    c.request(0, NBD_CMD_READ, 101, 8192, 4);
    c.s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    match c.reply() {
        Reply::Simple {
            error: 0,
            cookie: 101,
        } => assert_eq!(c.bytes(4), [0; 4]),
        r => panic!("the later request did not overtake: {r:?}"),
    }
    t.release();
    assert_eq!(c.simple_error(100), 0);
    c.bytes(512);
}

//! The cap on request bytes held across all control clients (#11.10): a
//! frame past the budget waits for room and is then answered as usual.
//! Alone in its test binary, because the budget is process-wide.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use udm_core::{Engine, EngineConfig};
use udm_ioctl::{request_buffer, Command, DmIoctl, ReplyFrame, RequestFrame};
use udmd::server::{request_budget_usage, set_request_budget, ControlServer};

fn read_reply(s: &mut UnixStream) -> ReplyFrame {
    let mut inbox = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        if let Some((r, _)) = ReplyFrame::decode(&inbox).expect("a well-formed reply") {
            return r;
        }
        let n = s.read(&mut chunk).expect("read reply");
        assert!(n > 0, "udmd closed the connection before replying");
        inbox.extend_from_slice(&chunk[..n]);
    }
}

/// A DEV_STATUS frame for a missing device with a `size`-byte buffer.
fn frame(size: usize) -> Vec<u8> {
    let h = DmIoctl {
        name: "missing".into(),
        ..DmIoctl::new()
    };
    RequestFrame {
        ioctl: Command::DevStatus.ioctl_number(),
        buffer: request_buffer(&h, &[], size).expect("request"),
    }
    .encode()
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}: usage (held, peak, waiting) = {:?}",
            request_budget_usage()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn frames_past_the_global_budget_wait_for_room() {
    const CAP: usize = 1 << 20;
    const A: usize = 768 << 10;
    const B: usize = 512 << 10;
    set_request_budget(CAP);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("control");
    let engine = Engine::new(udm_targets::registry(), EngineConfig::default());
    let _server = ControlServer::start(engine, &path).expect("server");

    // A announces 768 KiB and sends only part of it: it holds its reservation.
    let fa = frame(A);
    let mut a = UnixStream::connect(&path).expect("connect");
    a.write_all(&fa[..4096]).expect("send part of A");
    until("A's reservation", || request_budget_usage().0 == A);

    // B's 512 KiB would take the total past 1 MiB: it waits, holding nothing.
    // (Sent from a thread: udmd reads no more of B until it has room.)
    let mut b = UnixStream::connect(&path).expect("connect");
    let mut b_writer = b.try_clone().expect("clone");
    let sender = std::thread::spawn(move || b_writer.write_all(&frame(B)));
    until("B to wait", || request_budget_usage().2 == 1);

    // A small frame still fits beside A and is answered while B waits.
    let mut c = UnixStream::connect(&path).expect("connect");
    c.write_all(&frame(4096)).expect("send C");
    assert_eq!(read_reply(&mut c).errno, libc::ENXIO);
    // C's bytes are given back just after its reply is sent, so wait for that.
    until("C's reservation to be given back", || {
        request_budget_usage().0 <= A
    });
    let (held, _, waiting) = request_budget_usage();
    assert_eq!((held, waiting), (A, 1), "B was let in past the budget");

    // A completes: A is answered, then B gets room and is answered too.
    a.write_all(&fa[4096..]).expect("send the rest of A");
    assert_eq!(read_reply(&mut a).errno, libc::ENXIO);
    assert_eq!(read_reply(&mut b).errno, libc::ENXIO);
    sender.join().expect("sender").expect("send B");
    until("the budget to drain", || request_budget_usage().0 == 0);
    let (_, peak, waiting) = request_budget_usage();
    assert!(
        peak <= CAP,
        "peak {peak} bytes held, over the {CAP}-byte budget"
    );
    assert_eq!(waiting, 0);

    // One frame larger than the whole budget still proceeds on its own.
    let mut d = UnixStream::connect(&path).expect("connect");
    d.write_all(&frame(2 * CAP)).expect("send D");
    assert_eq!(read_reply(&mut d).errno, libc::ENXIO);
}

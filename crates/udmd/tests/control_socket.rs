//! The control socket under load: what one big frame costs udmd, and that
//! an abandoned DEV_WAIT does not keep a thread (#11.10).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::Daemon;
use udm_ioctl::{request_buffer, Command, DmIoctl, ReplyFrame, RequestFrame};

fn header(name: &str) -> DmIoctl {
    DmIoctl {
        name: name.to_string(),
        ..DmIoctl::new()
    }
}

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

fn send(s: &mut UnixStream, cmd: Command, buffer: Vec<u8>) {
    let frame = RequestFrame {
        ioctl: cmd.ioctl_number(),
        buffer,
    };
    s.write_all(&frame.encode()).expect("send frame");
}

/// A `/proc/<pid>/status` field in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// udmd's control-connection threads ("udm-control-conn", cut to 15 bytes by the
/// kernel): one per client being served. Counting these, not all threads, keeps the
/// test's baseline free of whatever else udmd or the harness's start-up probe runs.
fn conn_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("proc task")
        .filter_map(|t| t.ok())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with("udm-control-con"))
        })
        .count()
}

/// Poll `f` until it holds, for at most `secs` seconds; false if it never did.
fn within(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

#[test]
fn a_big_frame_is_held_once() {
    // A 256 MiB request (DEV_STATUS of a missing device, so nothing but the
    // request buffer is needed) must raise udmd's peak RSS by about one
    // copy of it, not two.
    const SIZE: usize = 256 << 20;
    let d = Daemon::start();
    let pid = d.pid();
    let before = status_kb(pid, "VmHWM:");
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    send(
        &mut s,
        Command::DevStatus,
        request_buffer(&header("missing"), &[], SIZE).expect("request"),
    );
    let r = read_reply(&mut s);
    assert_eq!(r.errno, libc::ENXIO, "{}", r.detail);
    let grown_kb = status_kb(pid, "VmHWM:").saturating_sub(before);
    let frame_kb = (SIZE / 1024) as u64;
    assert!(
        grown_kb < frame_kb * 3 / 2,
        "a {} MiB frame raised udmd's peak RSS by {} MiB (more than one copy)",
        frame_kb / 1024,
        grown_kb / 1024
    );
}

#[test]
fn abandoned_waits_give_their_threads_back() {
    const WAITERS: usize = 300;
    let d = Daemon::start();
    let pid = d.pid();
    d.ok(&["create", "w", "--notable"]);
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    send(
        &mut s,
        Command::DevStatus,
        request_buffer(&header("w"), &[], 4096).expect("request"),
    );
    let r = read_reply(&mut s);
    assert_eq!(r.errno, 0, "{}", r.detail);
    let status = DmIoctl::decode(&r.buffer).expect("header");
    let event_nr = status.event_nr;
    drop(s);
    assert!(
        within(20, || conn_threads(pid) == 0),
        "closed connections kept their threads: {} connection threads",
        conn_threads(pid)
    );
    let mut waiters = Vec::with_capacity(WAITERS);
    for _ in 0..WAITERS {
        let mut s = UnixStream::connect(&d.socket).expect("connect");
        let mut h = header("w");
        h.event_nr = event_nr;
        send(
            &mut s,
            Command::DevWait,
            request_buffer(&h, &[], 16 << 10).expect("request"),
        );
        waiters.push(s);
    }
    assert!(
        within(30, || conn_threads(pid) >= WAITERS),
        "udmd never had a thread per waiter: {} connection threads",
        conn_threads(pid)
    );
    // Every waiting client goes away without reading its reply.
    drop(waiters);
    assert!(
        within(20, || conn_threads(pid) == 0),
        "300 abandoned DEV_WAITs still hold threads: {} connection threads",
        conn_threads(pid)
    );
    // The device and the daemon are fine, and a live waiter still wakes.
    // It names the device by number: the rename that wakes it may run before the
    // wait has looked the device up, and a name lookup would then find nothing.
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    let mut h = header("");
    h.dev = status.dev;
    h.event_nr = event_nr;
    send(
        &mut s,
        Command::DevWait,
        request_buffer(&h, &[], 16 << 10).expect("request"),
    );
    d.ok(&["rename", "w", "w2"]);
    let r = read_reply(&mut s);
    assert_eq!(r.errno, 0, "{}", r.detail);
}

//! udmd's NBD listeners and limits: where they listen, who may connect, what one
//! client can cost, and what a probe logs.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bin;

/// A udmd whose log goes to a file, started through `sh` (for a umask).
struct Udmd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Udmd {
    fn start(umask: &str, log: &str, nbd: &str, extra: &[&str]) -> Udmd {
        let dir = tempfile::tempdir().expect("tempdir");
        let nbd = nbd.replace("{dir}", &dir.path().display().to_string());
        let mut script = format!(
            "umask {umask}; exec '{}' --socket '{}' --log '{log}' --nbd '{nbd}'",
            bin("udmd").display(),
            dir.path().join("control").display()
        );
        for e in extra {
            script.push_str(&format!(" '{e}'"));
        }
        let log_file = std::fs::File::create(dir.path().join("log")).expect("log file");
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn udmd");
        let d = Udmd { dir, child };
        d.wait_for("the control socket", || d.path("control").exists());
        d
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The log so far, without colour escapes.
    fn log(&self) -> String {
        let raw = std::fs::read_to_string(self.path("log")).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let t0 = Instant::now();
        while !cond() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn udmsetup(&self, args: &[&str]) {
        let o = Command::new(bin("udmsetup"))
            .arg("--socket")
            .arg(self.path("control"))
            .args(args)
            .output()
            .expect("udmsetup");
        assert!(o.status.success(), "udmsetup {args:?}: {o:?}");
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .expect("/proc/PID/task")
            .count()
    }
}

impl Drop for Udmd {
    fn drop(&mut self) {
        // SAFETY: kill with a pid we spawned (sh exec'd udmd); a stale pid only yields ESRCH.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(p: &Path) -> UnixStream {
    let s = UnixStream::connect(p).expect("connect to the NBD socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Handshake with NBD_OPT_EXPORT_NAME into transmission on `name`.
fn enter(s: &mut UnixStream, name: &str) {
    let mut g = [0u8; 18];
    s.read_exact(&mut g).expect("greeting");
    assert_eq!(&g[..8], b"NBDMAGIC");
    s.write_all(&3u32.to_be_bytes()).unwrap();
    let mut m = b"IHAVEOPT".to_vec();
    m.extend_from_slice(&1u32.to_be_bytes());
    m.extend_from_slice(&(name.len() as u32).to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    s.write_all(&m).unwrap();
    let mut r = [0u8; 10];
    s.read_exact(&mut r).expect("export size and flags");
}

/// Whether the server closed `s` without sending anything.
fn closed_at_once(s: &mut UnixStream) -> Result<(), String> {
    let mut b = [0u8; 18];
    match s.read(&mut b) {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("got {n} bytes")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn tcp_with_an_empty_host_listens_on_loopback_only() {
    let d = Udmd::start("022", "info", "tcp::0", &[]);
    d.wait_for("the TCP listener", || {
        d.log().contains("NBD listening bound=")
    });
    let log = d.log();
    let bound = log
        .lines()
        .find_map(|l| l.split("NBD listening bound=").nth(1))
        .expect("bound address in the log")
        .trim()
        .to_string();
    let port: u16 = bound.rsplit(':').next().unwrap().parse().expect("port");
    // The kernel's own view of the listening socket: local address, state 0A (LISTEN).
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local: Vec<&str> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&"0A") && f[1].ends_with(&format!(":{port:04X}"))).then_some(f[1])
        })
        .collect();
    assert_eq!(
        local,
        vec![format!("0100007F:{port:04X}")],
        "tcp::{port} must listen on 127.0.0.1 only (log: {bound})"
    );
}

#[test]
fn the_nbd_socket_is_0600_whatever_the_umask() {
    let d = Udmd::start("000", "info", "unix:{dir}/nbd.sock", &[]);
    let sock = d.path("nbd.sock");
    d.wait_for("the NBD socket", || sock.exists());
    let mode = std::fs::symlink_metadata(&sock)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o600, "NBD socket mode {mode:o} under umask 000");
}

#[test]
fn a_probe_of_the_nbd_socket_is_not_a_warning() {
    let d = Udmd::start("022", "info,udm_nbd=debug", "unix:{dir}/nbd.sock", &[]);
    let sock = d.path("nbd.sock");
    d.wait_for("the NBD socket", || sock.exists());
    const PROBES: usize = 10;
    for i in 0..PROBES {
        let mut s = UnixStream::connect(&sock).unwrap();
        match i % 3 {
            // Connect and close at once (the greeting meets a closed socket).
            0 => {}
            // Read the greeting, then close.
            1 => {
                let mut g = [0u8; 18];
                s.read_exact(&mut g).unwrap();
            }
            // Close in the middle of a message.
            _ => {
                let mut g = [0u8; 18];
                s.read_exact(&mut g).unwrap();
                s.write_all(&[0, 0]).unwrap();
            }
        }
    }
    // And one real protocol error, which must stay a warning.
    let mut bad = UnixStream::connect(&sock).unwrap();
    let mut g = [0u8; 18];
    bad.read_exact(&mut g).unwrap();
    bad.write_all(&3u32.to_be_bytes()).unwrap();
    bad.write_all(b"NOTMAGIC\0\0\0\x01\0\0\0\0").unwrap();
    let ended = |log: &str| {
        log.matches("client left during the handshake").count()
            + log.matches("handshake failed").count()
    };
    d.wait_for("every probe to end", || {
        let log = d.log();
        ended(&log) > PROBES && log.contains("not IHAVEOPT")
    });
    let log = d.log();
    let warns: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(
        warns.len(),
        1,
        "only the protocol error may warn; got:\n{}",
        warns.join("\n")
    );
    assert!(
        warns[0].contains("IHAVEOPT"),
        "the protocol error is the warning: {}",
        warns[0]
    );
}

#[test]
fn connections_threads_and_handshakes_are_bounded() {
    let d = Udmd::start(
        "022",
        "info",
        "unix:{dir}/nbd.sock",
        &["--nbd-max-connections", "3", "--nbd-handshake-timeout", "1"],
    );
    let sock = d.path("nbd.sock");
    d.wait_for("the NBD socket", || sock.exists());
    d.udmsetup(&["create", "z", "--table", "0 8 zero"]);
    let base = d.threads();
    let mut open: Vec<UnixStream> = (0..3).map(|_| connect(&sock)).collect();
    for s in &mut open {
        enter(s, "z");
    }
    // Past the limit: closed at once, before any greeting, again and again.
    for i in 0..20 {
        let mut s = connect(&sock);
        if let Err(e) = closed_at_once(&mut s) {
            panic!("connection {i} past the limit of 3: {e}");
        }
    }
    let threads = d.threads();
    assert!(
        threads <= base + 3 * 16 + 2,
        "{threads} threads for 3 connections (from {base})"
    );
    // A client that connects and says nothing is dropped after the timeout, which
    // frees its place for another.
    drop(open.pop());
    let mut silent = connect_when_free(&sock);
    let t0 = Instant::now();
    let mut rest = Vec::new();
    let r = silent.read_to_end(&mut rest);
    assert!(
        matches!(r, Ok(0)),
        "a silent client got {r:?} after the greeting (want end of file)"
    );
    assert!(t0.elapsed() < Duration::from_secs(25));
    let mut s = connect_when_free(&sock);
    s.write_all(&3u32.to_be_bytes()).unwrap();
}

/// Connect once a place is free (a closed connection leaves the server's registry
/// just after its socket closes); returns the stream with its greeting read.
fn connect_when_free(sock: &Path) -> UnixStream {
    let t0 = Instant::now();
    loop {
        let mut s = connect(sock);
        let mut g = [0u8; 18];
        if s.read_exact(&mut g).is_ok() {
            assert_eq!(&g[..8], b"NBDMAGIC");
            return s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no place freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn idle_connections_after_large_reads_give_the_memory_back() {
    const BIG: u32 = 32 << 20;
    let d = Udmd::start("022", "warn", "unix:{dir}/nbd.sock", &[]);
    let sock = d.path("nbd.sock");
    d.wait_for("the NBD socket", || sock.exists());
    d.udmsetup(&["create", "z", "--table", "0 131072 zero"]);
    let mut conns: Vec<UnixStream> = (0..4).map(|_| connect(&sock)).collect();
    for s in &mut conns {
        enter(s, "z");
        // Four 32 MiB reads in flight: four threads of the connection get a buffer each.
        for k in 0..4u64 {
            let mut m = 0x2560_9513u32.to_be_bytes().to_vec();
            m.extend_from_slice(&[0, 0, 0, 0]);
            m.extend_from_slice(&k.to_be_bytes());
            m.extend_from_slice(&0u64.to_be_bytes());
            m.extend_from_slice(&BIG.to_be_bytes());
            s.write_all(&m).unwrap();
        }
    }
    let mut data = vec![0u8; BIG as usize];
    for s in &mut conns {
        for _ in 0..4 {
            let mut h = [0u8; 16];
            s.read_exact(&mut h).unwrap();
            assert_eq!(&h[4..8], &[0, 0, 0, 0], "read error");
            s.read_exact(&mut data).unwrap();
        }
    }
    // Every reply is in; the buffers go back right after each send completes.
    let pid = d.child.id();
    let t0 = Instant::now();
    while rss_kib(pid) > 160 << 10 && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss = rss_kib(pid);
    assert!(
        rss <= 160 << 10,
        "udmd keeps {} MiB resident for 4 idle connections",
        rss >> 10
    );
}

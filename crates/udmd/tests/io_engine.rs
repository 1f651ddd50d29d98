//! `udmd --io-engine`: the same tables print the same and the same I/O through
//! NBD lands the same in the files on the sync and the io_uring engine; a name
//! that is no engine is refused.

mod common;

use std::process::Command;

use common::{bin, read_at, require, stderr, stdout, Daemon, Opts};

fn run(cmd: &mut Command) -> std::process::Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// Tables, then qemu-io patterns across target boundaries, FUA writes, zeroing
/// and discards; returns what udmsetup printed and what the files hold.
fn exercise(engine: &str) -> (String, Vec<Vec<u8>>) {
    let d = Daemon::with(Opts {
        nbd: true,
        extra: vec!["--io-engine".into(), engine.into()],
        ..Opts::default()
    });
    let a = d.file("a", 8192);
    let b = d.file("b", 4096);
    let c = d.file("c", 4096);
    let t = format!(
        "0 2048 linear {a} 100\n2048 2048 striped 2 16 {b} 0 {c} 0\n4096 2048 linear {a} 4000\n",
        a = a.display(),
        b = b.display(),
        c = c.display()
    );
    d.ok(&["create", "mix", "--table", &t]);
    let dir = std::fs::canonicalize(d.dir.path()).unwrap();
    let printed = [
        d.ok(&["table", "mix"]),
        d.ok(&["status", "mix"]),
        d.ok(&["deps", "mix"]),
    ]
    .join("")
    .replace(&dir.display().to_string(), "D");
    if require("qemu-io") {
        let uri = d.nbd_uri("mix");
        run(Command::new("qemu-io")
            .args([
                "-f",
                "raw",
                "-c",
                "write -P 0xab 1044480 8192",
                "-c",
                "write -f -P 0xcd 2093056 16384",
                "-c",
                "write -P 0x11 2500000 100000",
                "-c",
                "flush",
                "-c",
                "write -z 2600000 20000",
                "-c",
                "discard 1048576 65536",
            ])
            .arg(&uri));
        let o = run(Command::new("qemu-io")
            .args([
                "-f",
                "raw",
                "-c",
                "read -P 0xab 1044480 4096",
                "-c",
                "read -P 0 1048576 65536",
                "-c",
                "read -P 0xcd 2097152 12288",
                "-c",
                "read -P 0 2600000 20000",
            ])
            .arg(&uri));
        assert!(
            !stdout(&o).contains("Pattern verification failed"),
            "{engine}: {}",
            stdout(&o)
        );
    }
    let files = [&a, &b, &c]
        .iter()
        .map(|p| read_at(p, 0, std::fs::metadata(p).unwrap().len() as usize))
        .collect();
    (printed, files)
}

#[test]
fn uring_prints_and_stores_what_sync_does() {
    let sync = exercise("sync");
    let uring = exercise("uring");
    assert_eq!(sync.0, uring.0);
    assert!(sync.0.contains("linear D/a 100"), "{}", sync.0);
    for (i, (s, u)) in sync.1.iter().zip(&uring.1).enumerate() {
        assert!(s == u, "file {i} differs between the engines");
    }
}

#[test]
fn an_unknown_engine_is_refused() {
    let o = Command::new(bin("udmd"))
        .args(["--io-engine", "aio", "--socket", "/nonexistent/udm/control"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("sync or uring"), "{}", stderr(&o));
}

//! udmd's exports driven by real clients: nbdinfo, nbdcopy, qemu-io, qemu-img and
//! nbdsh over NBD; losetup + mkfs.ext4 + mount + e2fsck over the FUSE mapper dir.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{read_at, require, stderr, stdout, Daemon, Opts};

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

fn nbd_daemon() -> Daemon {
    Daemon::with(Opts {
        nbd: true,
        ..Opts::default()
    })
}

#[test]
fn nbdinfo_shows_size_and_flags() {
    if !require("nbdinfo") {
        return;
    }
    let d = nbd_daemon();
    let a = d.file("a", 8192);
    d.ok(&[
        "create",
        "rw",
        "--table",
        &format!("0 8192 linear {} 0", a.display()),
    ]);
    d.ok(&["create", "ro", "-r", "--table", "0 4096 zero"]);
    for (name, size, ro) in [("rw", 8192u64 * 512, false), ("ro", 4096 * 512, true)] {
        let o = run(Command::new("nbdinfo").arg("--json").arg(d.nbd_uri(name)));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("nbdinfo json");
        let e = &j["exports"][0];
        assert_eq!(e["export-size"], size, "{name}: {j}");
        assert_eq!(e["is_read_only"], ro, "{name}: {j}");
        for flag in ["can_flush", "can_multi_conn", "can_cache", "can_df"] {
            assert_eq!(e[flag], true, "{name} {flag}: {j}");
        }
        for flag in ["can_fua", "can_trim", "can_zero", "can_fast_zero"] {
            assert_eq!(e[flag], !ro, "{name} {flag}: {j}");
        }
        assert_eq!(e["block_size_minimum"], 512, "{j}");
        assert_eq!(e["block_size_preferred"], 4096, "{j}");
        assert!(e["contexts"].to_string().contains("base:allocation"), "{j}");
    }
    // A striped table's full stripe (2 x 64 KiB) is the preferred block size.
    let b = d.file("b", 8192);
    d.ok(&[
        "create",
        "st",
        "--table",
        &format!("0 8192 striped 2 128 {} 0 {} 0", a.display(), b.display()),
    ]);
    let o = run(Command::new("nbdinfo").arg("--json").arg(d.nbd_uri("st")));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("nbdinfo json");
    assert_eq!(j["exports"][0]["block_size_preferred"], 131072, "{j}");
    let o = run(Command::new("nbdinfo")
        .arg("--list")
        .arg("--json")
        .arg(d.nbd_uri("")));
    let names = stdout(&o);
    assert!(
        names.contains("\"ro\"") && names.contains("\"rw\""),
        "{names}"
    );
    // The zero target reports itself as a hole in base:allocation.
    let o = run(Command::new("nbdinfo").arg("--map").arg(d.nbd_uri("ro")));
    assert!(stdout(&o).contains("hole,zero"), "{}", stdout(&o));
}

#[test]
fn nbdcopy_256mib_through_striped_is_identical() {
    if !require("nbdcopy") {
        return;
    }
    let d = nbd_daemon();
    let per = 96u64 << 11; // 96 MiB per stripe in sectors
    let files: Vec<_> = (0..3).map(|i| d.file(&format!("s{i}"), per)).collect();
    let t = format!(
        "0 {} striped 3 128 {} 0 {} 0 {} 0",
        per * 3,
        files[0].display(),
        files[1].display(),
        files[2].display()
    );
    d.ok(&["create", "st", "--table", &t]);
    let src = d.dir.path().join("random.bin");
    run(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=256", "status=none"])
        .arg(format!("of={}", src.display())));
    run(Command::new("nbdcopy").arg(&src).arg(d.nbd_uri("st")));
    let out = d.dir.path().join("out.bin");
    run(Command::new("nbdcopy").arg(d.nbd_uri("st")).arg(&out));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), per * 3 * 512);
    run(Command::new("cmp")
        .arg("-n")
        .arg((256u64 << 20).to_string())
        .arg(&src)
        .arg(&out));
    // And the bytes sit on the stripes as striping says: chunk 1 is stripe 1's first chunk.
    assert_eq!(read_at(&files[1], 0, 65536), read_at(&src, 65536, 65536));
}

#[test]
fn qemu_io_patterns_across_target_boundaries() {
    if !require("qemu-io") {
        return;
    }
    let d = nbd_daemon();
    let a = d.file("a", 8192);
    let b = d.file("b", 4096);
    let c = d.file("c", 4096);
    let t = format!(
        "0 2048 linear {a} 100\n2048 2048 striped 2 16 {b} 0 {c} 0\n4096 2048 linear {a} 4000\n6144 1024 zero\n",
        a = a.display(),
        b = b.display(),
        c = c.display()
    );
    d.ok(&["create", "mix", "--table", &t]);
    let uri = d.nbd_uri("mix");
    // 1 MiB is the linear/striped boundary, 2 MiB the striped/linear one.
    run(Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -P 0xab 1044480 8192",
            "-c",
            "write -P 0xcd 2093056 16384",
        ])
        .arg(&uri));
    let o = run(Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "read -P 0xab 1044480 8192",
            "-c",
            "read -P 0xcd 2093056 16384",
            "-c",
            "read -P 0 3145728 524288",
        ])
        .arg(&uri));
    assert!(
        !stdout(&o).contains("Pattern verification failed"),
        "{}",
        stdout(&o)
    );
    // Checked on the files: the tail of the first linear range...
    assert!(read_at(&a, (100 + 2040) * 512, 4096)
        .iter()
        .all(|&x| x == 0xab));
    // ...and the head of the striped range (chunk 0 of stripe 0 is file b at 0).
    assert!(read_at(&b, 0, 4096).iter().all(|&x| x == 0xab));
    assert!(read_at(&a, 4000 * 512, 8192).iter().all(|&x| x == 0xcd));
    // write -z and discard go through too.
    run(Command::new("qemu-io")
        .args([
            "-f",
            "raw",
            "-c",
            "write -z 1044480 8192",
            "-c",
            "discard 2093056 16384",
            "-c",
            "read -P 0 1044480 8192",
        ])
        .arg(&uri));
    assert!(read_at(&a, (100 + 2040) * 512, 4096)
        .iter()
        .all(|&x| x == 0));
}

#[test]
fn qemu_img_convert_round_trip() {
    if !require("qemu-img") || !require("nbdcopy") {
        return;
    }
    let d = nbd_daemon();
    let a = d.file("a", 32768);
    run(Command::new("dd")
        .args([
            "if=/dev/urandom",
            "bs=1M",
            "count=8",
            "seek=2",
            "conv=notrunc",
            "status=none",
        ])
        .arg(format!("of={}", a.display())));
    d.ok(&[
        "create",
        "img",
        "--table",
        &format!("0 32768 linear {} 0", a.display()),
    ]);
    let q = d.dir.path().join("x.qcow2");
    let back = d.dir.path().join("back.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(d.nbd_uri("img"))
        .arg(&q));
    run(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&q)
        .arg(&back));
    run(Command::new("cmp").arg(&a).arg(&back));
    // And back into a second device through NBD.
    let b = d.file("b", 32768);
    d.ok(&[
        "create",
        "img2",
        "--table",
        &format!("0 32768 linear {} 0", b.display()),
    ]);
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "qcow2", "-O", "raw"])
        .arg(&q)
        .arg(d.nbd_uri("img2")));
    run(Command::new("cmp").arg(&a).arg(&b));
}

#[test]
fn suspended_device_holds_requests_and_removed_device_shuts_down() {
    if !require("qemu-io") || !require("nbdsh") {
        return;
    }
    let d = nbd_daemon();
    let a = d.file("a", 4096);
    std::fs::write(&a, vec![0x11u8; 4096 * 512]).unwrap();
    d.ok(&[
        "create",
        "s",
        "--table",
        &format!("0 4096 linear {} 0", a.display()),
    ]);
    d.ok(&["suspend", "s"]);
    let uri = d.nbd_uri("s");
    let t0 = Instant::now();
    let reader = std::thread::spawn(move || {
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", "read -P 0x11 0 65536"])
            .arg(uri)
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !reader.is_finished(),
        "a read completed while the device was suspended"
    );
    d.ok(&["resume", "s"]);
    let o = reader.join().unwrap();
    assert!(
        o.status.success() && !stdout(&o).contains("failed"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(t0.elapsed() >= Duration::from_millis(600));

    // Remove while a client is connected: its next request fails cleanly, the daemon lives on.
    let script = format!(
        r#"
import subprocess, nbd
h = nbd.NBD()
h.connect_uri("{uri}")
assert h.pread(512, 0) == b"\x11" * 512
subprocess.run(["{udmsetup}", "--socket", "{sock}", "remove", "s"], check=True)
try:
    h.pread(512, 0)
    print("READ-SUCCEEDED")
except nbd.Error as e:
    print("ERRNO", e.errno)
"#,
        uri = d.nbd_uri("s"),
        udmsetup = common::bin("udmsetup").display(),
        sock = d.socket.display()
    );
    let o = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let out = stdout(&o);
    // An idle connection is closed (ENOTCONN at the client); a request caught in
    // flight is answered ESHUTDOWN first.
    assert!(
        out.contains("ERRNO ESHUTDOWN") || out.contains("ERRNO ENOTCONN"),
        "{out}{}",
        stderr(&o)
    );
    assert!(!out.contains("READ-SUCCEEDED"), "{out}");
    d.ok(&["create", "after", "--table", "0 8 zero"]);
}

#[test]
fn fuse_mapper_losetup_mkfs_mount_fsck() {
    if !udm_testkit::have(
        &["/dev/fuse", "/dev/loop-control"],
        &[
            "losetup",
            "mkfs.ext4",
            "e2fsck",
            "mount",
            "umount",
            "dd",
            "cmp",
        ],
    ) {
        return;
    }
    let d = Daemon::with(Opts {
        mapper: true,
        ..Opts::default()
    });
    let files: Vec<_> = (0..2).map(|i| d.file(&format!("f{i}"), 65536)).collect();
    let t = format!(
        "0 131072 striped 2 64 {} 0 {} 0",
        files[0].display(),
        files[1].display()
    );
    d.ok(&["create", "vol", "--table", &t]);
    let m = d.mapper.clone().unwrap();
    let file = m.join("vol");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 131072 * 512);
    let o = run(Command::new("losetup").args(["-f", "--show"]).arg(&file));
    let loopdev = stdout(&o).trim().to_string();
    struct Cleanup(String, std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.1).status();
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let mnt = d.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _c = Cleanup(loopdev.clone(), mnt.clone());
    // The loop device holds the file open: the device is open and cannot be removed.
    assert!(d.ok(&["info", "vol"]).contains("Open count:        1\n"));
    assert!(d
        .fails(&["remove", "vol"])
        .contains("Device or resource busy"));
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&loopdev));
    run(Command::new("mount").arg(&loopdev).arg(&mnt));
    let payload = d.dir.path().join("payload");
    run(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=8", "status=none"])
        .arg(format!("of={}", payload.display())));
    std::fs::copy(&payload, mnt.join("payload")).unwrap();
    for i in 0..50 {
        std::fs::write(
            mnt.join(format!("small{i}")),
            format!("file {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    run(Command::new("umount").arg(&mnt));
    run(Command::new("e2fsck").args(["-fn"]).arg(&loopdev));
    run(Command::new("mount")
        .args(["-o", "ro"])
        .arg(&loopdev)
        .arg(&mnt));
    run(Command::new("cmp").arg(&payload).arg(mnt.join("payload")));
    assert_eq!(
        std::fs::read_to_string(mnt.join("small7")).unwrap(),
        "file 7\n".repeat(8)
    );
    run(Command::new("umount").arg(&mnt));
    // The filesystem really lives on the striped files: the ext4 superblock magic
    // (0xEF53 at byte 1024 + 56 of the device) is in chunk 0, on stripe 0.
    assert_eq!(read_at(&files[0], 1024 + 56, 2), vec![0x53, 0xef]);
}

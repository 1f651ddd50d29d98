//! End to end with real NBD clients: nbdinfo, nbdcopy, nbdsh, qemu-io, qemu-img, fio.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use serde_json::Value;
use udm_nbd::{BlockSize, Export, MemExport};

const MIB: usize = 1 << 20;

fn info_json(uri: &str, list: bool) -> Value {
    let mut c = cmd("nbdinfo");
    c.arg("--json");
    if list {
        c.arg("--list");
    }
    serde_json::from_str(&stdout(c.arg(uri))).unwrap()
}

#[test]
fn nbdinfo_reports_size_flags_block_sizes_and_contexts() {
    if !have("nbdinfo") {
        return;
    }
    let disk = Arc::new(MemExport::new(64 * MIB).with_block_size(BlockSize {
        min: 512,
        preferred: 4096,
        max: 8 * MIB as u32,
    }));
    let ro = Arc::new(
        MemExport::new(MIB)
            .with_read_only(true)
            .with_multi_conn(false),
    );
    let h = Harness::new(&[("disk", disk as Arc<dyn Export>), ("ro", ro)]);

    let j = info_json(&h.uri("disk"), false);
    assert_eq!(j["protocol"], "newstyle-fixed");
    assert_eq!(j["structured"], true);
    let e = &j["exports"][0];
    assert_eq!(e["export-name"], "disk");
    assert_eq!(e["export-size"], 64 * MIB);
    for (k, v) in [
        ("is_read_only", false),
        ("can_multi_conn", true),
        ("can_trim", true),
        ("can_zero", true),
        ("can_fast_zero", true),
        ("can_fua", true),
        ("can_flush", true),
        ("can_cache", true),
        ("can_df", true),
        ("is_rotational", false),
    ] {
        assert_eq!(e[k], v, "{k}");
    }
    assert_eq!(e["block_size_minimum"], 512);
    assert_eq!(e["block_size_preferred"], 4096);
    assert_eq!(e["block_size_maximum"], 8 * MIB);
    assert_eq!(e["contexts"], serde_json::json!(["base:allocation"]));
    assert_eq!(e["description"], "test export disk");

    let j = info_json(&h.uri("ro"), false);
    let e = &j["exports"][0];
    assert_eq!(e["is_read_only"], true);
    assert_eq!(e["can_multi_conn"], false);
    assert_eq!(e["can_trim"], false);
    assert_eq!(e["can_zero"], false);
    assert_eq!(e["can_fua"], false);
}

#[test]
fn nbdinfo_list_shows_every_export() {
    if !have("nbdinfo") {
        return;
    }
    let h = Harness::new(&[
        ("alpha", Arc::new(MemExport::new(MIB)) as Arc<dyn Export>),
        ("beta", Arc::new(MemExport::new(2 * MIB))),
        ("gamma", Arc::new(MemExport::new(3 * MIB))),
    ]);
    let j = info_json(&h.uri(""), true);
    let mut got: Vec<(String, u64)> = j["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["export-name"].as_str().unwrap().to_owned(),
                e["export-size"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("alpha".into(), MIB as u64),
            ("beta".into(), 2 * MIB as u64),
            ("gamma".into(), 3 * MIB as u64)
        ]
    );
}

#[test]
fn nbdinfo_map_shows_data_holes_and_zeroes() {
    if !have("nbdinfo") {
        return;
    }
    let m = Arc::new(MemExport::new(8 * MIB));
    m.fill(MIB as u64, &vec![1; MIB]).unwrap();
    m.write_zeroes(4 * MIB as u64, MIB as u64, false, false, false)
        .unwrap();
    let h = Harness::new(&[("disk", m as Arc<dyn Export>)]);
    let out = stdout(cmd("nbdinfo").arg("--map").arg(h.uri("disk")));
    let rows: Vec<(u64, u64, u32)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    let m = MIB as u64;
    assert_eq!(
        rows,
        [
            (0, m, 3),
            (m, m, 0),
            (2 * m, 2 * m, 3),
            (4 * m, m, 2),
            (5 * m, 3 * m, 3)
        ],
        "{out}"
    );
}

#[test]
fn nbdcopy_in_and_out_is_byte_identical() {
    if !have("nbdcopy") {
        return;
    }
    let m = Arc::new(MemExport::new(32 * MIB));
    let h = Harness::new(&[("disk", m.clone() as Arc<dyn Export>)]);
    let data = random_bytes(32 * MIB, 42);
    let input = h.path("in.bin");
    let output = h.path("out.bin");
    std::fs::write(&input, &data).unwrap();
    run(cmd("nbdcopy").arg(&input).arg(h.uri("disk")));
    assert!(m.contents() == data, "export differs from the input");
    run(cmd("nbdcopy").arg(h.uri("disk")).arg(&output));
    assert!(std::fs::read(&output).unwrap() == data, "copy out differs");
}

#[test]
fn qemu_io_patterns_zeroes_and_discard() {
    if !have("qemu-io") {
        return;
    }
    let m = Arc::new(MemExport::new(8 * MIB));
    let h = Harness::new(&[("disk", m.clone() as Arc<dyn Export>)]);
    let out = stdout(
        cmd("qemu-io")
            .args(["-f", "raw"])
            .args(["-c", "write -P 0xab 0 4M"])
            .args(["-c", "read -P 0xab 0 4M"])
            .args(["-c", "write -z 1M 1M"])
            .args(["-c", "discard 3M 1M"])
            .args(["-c", "read -P 0 1M 1M"])
            .args(["-c", "read -P 0xab 2M 1M"])
            .args(["-c", "aio_write -P 0xcd 5M 64k"])
            .args(["-c", "aio_flush"])
            .args(["-c", "read -P 0xcd 5M 64k"])
            .arg(h.uri("disk")),
    );
    assert!(!out.contains("failed") && !out.contains("error"), "{out}");
    let c = m.contents();
    assert!(c[..MIB].iter().all(|&b| b == 0xab));
    assert!(c[MIB..2 * MIB].iter().all(|&b| b == 0));
    assert!(c[2 * MIB..3 * MIB].iter().all(|&b| b == 0xab));
    assert!(c[5 * MIB..5 * MIB + 65536].iter().all(|&b| b == 0xcd));
    // Prove the check can fail: a wrong pattern is reported, with a failing status.
    let out = cmd("qemu-io")
        .args(["-f", "raw", "-c", "read -P 0x11 0 4k"])
        .arg(h.uri("disk"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Pattern verification failed"));
}

#[test]
fn qemu_img_convert_round_trip() {
    if !have("qemu-img") {
        return;
    }
    let src = Arc::new(MemExport::new(16 * MIB));
    src.fill(0, &random_bytes(3 * MIB, 7)).unwrap();
    src.fill(9 * MIB as u64, &random_bytes(MIB, 8)).unwrap();
    let dst = Arc::new(MemExport::new(16 * MIB));
    dst.fill(12 * MIB as u64, &[0x55; 4096]).unwrap();
    let h = Harness::new(&[
        ("src", src.clone() as Arc<dyn Export>),
        ("dst", dst.clone()),
    ]);
    let qcow = h.path("img.qcow2");
    run(cmd("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(h.uri("src"))
        .arg(&qcow));
    run(cmd("qemu-img")
        .args(["convert", "-n", "-f", "qcow2", "-O", "raw"])
        .arg(&qcow)
        .arg(h.uri("dst")));
    assert!(src.contents() == dst.contents(), "round trip differs");
    run(cmd("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(h.uri("src"))
        .arg(h.uri("dst")));
}

#[test]
fn nbdsh_drives_every_command() {
    if !have("nbdsh") {
        return;
    }
    let m = Arc::new(MemExport::new(MIB));
    let h = Harness::new(&[("disk", m.clone() as Arc<dyn Export>)]);
    let script = r#"
assert h.can_meta_context("base:allocation")
h.pwrite(b"x" * 8192, 0, nbd.CMD_FLAG_FUA)
assert h.pread(8192, 0) == b"x" * 8192
h.zero(4096, 4096, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
h.trim(65536, 131072)
h.cache(65536, 0)
h.flush()
seen = []
def cb(ctx, offset, entries, err):
    seen.append((ctx, offset, list(entries)))
h.block_status(1048576, 0, cb)
print(seen)
assert seen == [("base:allocation", 0, [4096, 0, 4096, 2, 1040384, 3])], seen
try:
    h.pread(4096, 1048576 - 2048)
    assert False, "read beyond the end succeeded"
except nbd.Error as e:
    print("out of range:", e)
assert h.pread(4096, 4096) == bytes(4096)
"#;
    run(cmd("nbdsh")
        .arg("--base-allocation")
        .arg("-u")
        .arg(h.uri("disk"))
        .arg("-c")
        .arg(script));
    assert_eq!(&m.contents()[..4096], &[b'x'; 4096][..]);
}

#[test]
fn tcp_listener_serves_nbdinfo_and_qemu_io() {
    if !have("nbdinfo") || !have("qemu-io") {
        return;
    }
    let h = Harness::new(&[("disk", Arc::new(MemExport::new(4 * MIB)) as Arc<dyn Export>)]);
    let addr = h.server.listen_tcp("127.0.0.1:0").unwrap();
    let uri = format!("nbd://{addr}/disk");
    let j = info_json(&uri, false);
    assert_eq!(j["exports"][0]["export-size"], 4 * MIB);
    let out = stdout(
        cmd("qemu-io")
            .args([
                "-f",
                "raw",
                "-c",
                "write -P 0x5a 0 1M",
                "-c",
                "read -P 0x5a 0 1M",
            ])
            .arg(&uri),
    );
    assert!(!out.contains("failed"), "{out}");
}

#[test]
fn fio_verifies_concurrent_writes_over_two_connections() {
    if !have("fio") {
        return;
    }
    let h = Harness::new(&[(
        "disk",
        Arc::new(MemExport::new(16 * MIB)) as Arc<dyn Export>,
    )]);
    // fio writes its verify-state files (local-verify-N-verify.state) to --aux-path,
    // else to its cwd: keep both in a temp dir, never in the crate directory.
    let aux = tempfile::tempdir().unwrap();
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Verify-state files in `d` written since `since`.
    let states = |d: &Path, since: std::time::SystemTime| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= since)
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with("verify.state"))
            .collect()
    };
    let start = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let out = stdout(
        cmd("fio")
            .current_dir(aux.path())
            .arg(format!("--aux-path={}", aux.path().display()))
            .args([
                "--name=verify",
                "--ioengine=nbd",
                "--rw=randwrite",
                "--bs=4k",
            ])
            .args([
                "--iodepth=16",
                "--numjobs=2",
                "--size=8M",
                "--offset_increment=8M",
            ])
            .args(["--verify=crc32c", "--do_verify=1", "--verify_fatal=1"])
            .arg(format!("--uri={}", h.uri("disk"))),
    );
    assert!(out.contains("err= 0"), "{out}");
    let stray = states(crate_dir, start);
    assert!(
        stray.is_empty(),
        "fio wrote {stray:?} into {}",
        crate_dir.display()
    );
    assert!(
        !states(aux.path(), start).is_empty(),
        "fio wrote no verify state"
    );
}

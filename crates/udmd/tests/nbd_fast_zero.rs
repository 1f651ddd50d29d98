//! NBD_CMD_FLAG_FAST_ZERO (issue #11.17): udmd advertises NBD_FLAG_SEND_FAST_ZERO,
//! so a fast-zero request must fail with ENOTSUP, changing nothing, when zeroing
//! would mean writing zeros; and succeed when it is fast.

mod common;

use std::process::Command;

use common::{require, stderr, stdout, Daemon, Opts};

#[test]
fn nbdsh_fast_zero_is_refused_when_it_would_write_zeros() {
    if !require("nbdsh") {
        return;
    }
    let d = Daemon::with(Opts {
        nbd: true,
        ..Opts::default()
    });
    // tmpfs can punch holes but has no ZERO_RANGE: NO_HOLE zeroing writes zeros.
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm");
    let f = shm.path().join("z");
    std::fs::write(&f, vec![0x5au8; 64 * 512]).unwrap();
    d.ok(&[
        "create",
        "fz",
        "--table",
        &format!("0 64 linear {} 0", f.display()),
    ]);
    let script = format!(
        r#"
import nbd
h = nbd.NBD()
h.connect_uri("{uri}")
assert h.can_fast_zero()
try:
    h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
    print("FAST-ZERO-ACCEPTED")
except nbd.Error as e:
    print("ERRNO", e.errno)
assert h.pread(4096, 0) == b"\x5a" * 4096
h.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(4096, 0) == b"\0" * 4096
h.zero(4096, 4096, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4096, 4096) == b"\0" * 4096
print("DONE")
"#,
        uri = d.nbd_uri("fz")
    );
    let o = Command::new("/usr/bin/nbdsh")
        .arg("-c")
        .arg(&script)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(out.contains("ERRNO ENOTSUP"), "{out}{}", stderr(&o));
    assert!(out.contains("DONE"), "{out}{}", stderr(&o));
}

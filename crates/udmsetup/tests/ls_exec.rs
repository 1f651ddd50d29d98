//! #11.16: `ls --exec <command>`. dmsetup 1.02.185 in the kernel VM, with
//! devices `a\x20b` (created as "a b"), x (zero) and y (no table):
//!   ls --exec echo            -> /dev/mapper/a b, /dev/mapper/x, /dev/mapper/y
//!   ls --exec 'echo X'        -> X /dev/mapper/a b ...
//!   ls --exec '/tmp/s.sh  a   b' -> args=3:a b /dev/mapper/a b ...
//!   ls --exec echo --target zero -> /dev/mapper/a b, /dev/mapper/x
//!   ls --manglename none --exec echo -> /dev/mapper/a\x20b ...
//!   ls --exec false, ls --exec /nonexistent/cmd -> nothing, exit 0

mod common;

use common::*;

#[test]
fn ls_exec_runs_the_command_per_device() {
    let (d, k) = FakeDaemon::kernel();
    {
        let mut k = k.lock().unwrap();
        k.add("a\\x20b", "", Some(vec![spec(0, 8, "zero", "")]));
        k.add("x", "", Some(vec![spec(0, 8, "zero", "")]));
        k.add("y", "", None);
    }
    ok(
        &d.run(&["ls", "--exec", "echo"]),
        "/dev/mapper/a b\n/dev/mapper/x\n/dev/mapper/y\n",
    );
    ok(
        &d.run(&["ls", "--exec", "echo X"]),
        "X /dev/mapper/a b\nX /dev/mapper/x\nX /dev/mapper/y\n",
    );
    let script = d.dir.path().join("s.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"args=$#:$*\"\n").unwrap();
    let status = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success());
    ok(
        &d.run(&["ls", "--exec", &format!("{}  a   b", script.display())]),
        "args=3:a b /dev/mapper/a b\nargs=3:a b /dev/mapper/x\nargs=3:a b /dev/mapper/y\n",
    );
    ok(
        &d.run(&["ls", "--exec", "echo", "--target", "zero"]),
        "/dev/mapper/a b\n/dev/mapper/x\n",
    );
    ok(
        &d.run(&["ls", "--exec", "echo", "-o", "devname"]),
        "/dev/mapper/a b\n/dev/mapper/x\n/dev/mapper/y\n",
    );
    ok(
        &d.run(&["ls", "--manglename", "none", "--exec", "echo"]),
        "/dev/mapper/a\\x20b\n/dev/mapper/x\n/dev/mapper/y\n",
    );
    ok(&d.run(&["ls", "--exec", "false"]), "");
    ok(&d.run(&["ls", "--exec", "/nonexistent/cmd"]), "");
}

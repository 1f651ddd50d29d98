//! udmsetup against a real udmd: every command's happy path and its failure
//! modes, with dmsetup's output formats and the kernel's errno values.

mod common;

use common::{stderr, stdout, Daemon};

fn canon(p: &std::path::Path) -> String {
    std::fs::canonicalize(p).unwrap().display().to_string()
}

#[test]
fn version_and_targets() {
    let d = Daemon::start();
    let v = d.ok(&["version"]);
    assert!(v.lines().any(|l| l == "Driver version:    4.48.0"), "{v}");
    assert!(v.starts_with("Library version:   "), "{v}");
    assert_eq!(
        d.ok(&["targets"]),
        "dust             v1.0.0\nflakey           v1.5.0\ndelay            v1.4.0\n\
         zero             v1.2.0\nstriped          v1.6.0\nlinear           v1.4.0\n\
         error            v1.7.0\n"
    );
    assert_eq!(
        d.ok(&["target-version", "linear", "zero"]),
        "linear           v1.4.0\nzero             v1.2.0\n"
    );
    let e = d.fails(&["target-version", "frob"]);
    assert!(e.contains("Invalid argument"), "{e}");
}

#[test]
fn create_info_table_status_ls_deps() {
    let d = Daemon::start();
    let a = d.file("a", 8192);
    let b = d.file("b", 8192);
    d.ok(&[
        "create",
        "lin",
        "--table",
        &format!("0 4096 linear {} 2048", a.display()),
    ]);
    let (ca, cb) = (canon(&a), canon(&b));
    assert_eq!(
        d.ok(&["info", "lin"]),
        "Name:              lin\nState:             ACTIVE\nRead Ahead:        256\nTables present:    LIVE\nOpen count:        0\nEvent number:      0\nMajor, minor:      253, 0\nNumber of targets: 1\n\n"
    );
    assert_eq!(
        d.ok(&["table", "lin"]),
        format!("0 4096 linear {ca} 2048\n")
    );
    assert_eq!(d.ok(&["status", "lin"]), "0 4096 linear \n");
    d.ok(&[
        "create",
        "str",
        "--table",
        &format!("0 4096 striped 2 128 {} 0 {} 0", a.display(), b.display()),
    ]);
    assert_eq!(
        d.ok(&["table", "str"]),
        format!("0 4096 striped 2 128 {ca} 0 {cb} 0\n")
    );
    assert_eq!(
        d.ok(&["status", "str"]),
        format!("0 4096 striped 2 {ca} {cb} 1 AA\n")
    );
    assert_eq!(d.ok(&["ls"]), "lin\t(253:0)\nstr\t(253:1)\n");
    assert_eq!(d.ok(&["ls", "--target", "striped"]), "str\t(253, 1)\n");
    // Files have no device number of their own: they are listed under major 0.
    let deps = d.ok(&["deps", "str"]);
    assert!(deps.starts_with("2 dependencies\t: (0, "), "{deps}");
    let all = d.ok(&["table"]);
    assert_eq!(
        all,
        format!("lin: 0 4096 linear {ca} 2048\nstr: 0 4096 striped 2 128 {ca} 0 {cb} 0\n")
    );
    let cols = d.ok(&["info", "-c", "--noheadings", "-o", "name,attr", "lin"]);
    assert_eq!(cols, "lin:L--w\n");
    // JSON listing is machine-readable.
    let j: serde_json::Value = serde_json::from_str(&d.ok(&["ls", "--json"])).expect("ls --json");
    assert!(j.to_string().contains("\"lin\""), "{j}");
}

#[test]
fn duplicate_name_and_uuid_are_ebusy() {
    let d = Daemon::start();
    d.ok(&["create", "x", "--notable", "-u", "uuid-x"]);
    let e = d.fails(&["create", "x", "--notable"]);
    assert!(
        e.starts_with("device-mapper: create ioctl on x  failed: Device or resource busy\n"),
        "{e}"
    );
    assert!(e.ends_with("Command failed.\n"), "{e}");
    let e = d.fails(&["create", "y", "--notable", "-u", "uuid-x"]);
    assert!(
        e.starts_with("device-mapper: create ioctl on y uuid-x failed: Device or resource busy\n"),
        "{e}"
    );
    assert_eq!(d.ok(&["ls"]), "x\t(253:0)\n");
}

#[test]
fn unknown_device_is_enxio() {
    let d = Daemon::start();
    assert_eq!(
        d.fails(&["info", "nosuch"]),
        "Device does not exist.\nCommand failed.\n"
    );
    assert_eq!(
        d.fails(&["status", "nosuch"]),
        "Device does not exist.\nCommand failed.\n"
    );
    let e = d.fails(&["table", "nosuch"]);
    assert!(
        e.starts_with("device-mapper: table ioctl on nosuch  failed: No such device or address\n"),
        "{e}"
    );
    let e = d.fails(&["remove", "nosuch"]);
    assert!(
        e.starts_with("device-mapper: remove ioctl on nosuch  failed: No such device or address\n"),
        "{e}"
    );
    let e = d.fails(&["suspend", "nosuch"]);
    assert!(
        e.contains("suspend ioctl on nosuch  failed: No such device or address"),
        "{e}"
    );
    assert_eq!(d.ok(&["ls"]), "No devices found\n");
}

#[test]
fn bad_table_line_names_its_line_and_changes_nothing() {
    let d = Daemon::start();
    let a = d.file("a", 4096);
    d.ok(&["create", "t", "--table", "0 100 zero"]);
    let table = format!(
        "# a comment\n0 100 linear {} 0\n\n100 50 striped 2 7 {} 0 {} 0\n",
        a.display(),
        a.display(),
        a.display()
    );
    let o = d.dm_stdin(&["load", "t"], Some(&table));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with("device-mapper: reload ioctl on t  failed: Invalid argument\n"),
        "{e}"
    );
    assert!(
        e.contains("line 4: striped: "),
        "the error must name source line 4: {e}"
    );
    assert!(e.contains("not divisible by chunk size 7"), "{e}");
    // Old live table untouched, nothing staged.
    assert_eq!(d.ok(&["table", "t"]), "0 100 zero \n");
    assert!(d.ok(&["info", "t"]).contains("Tables present:    LIVE\n"));
    // A gap, an unknown type, a missing file, a bad count: each names its line and errno.
    for (t, want, errno) in [
        (
            "0 10 zero\n20 10 zero\n",
            "line 2: zero: gap in table",
            "Invalid argument",
        ),
        (
            "0 10 frob\n",
            "line 1: frob: unknown target type",
            "Invalid argument",
        ),
        (
            "0 10 linear /nonexistent/x 0\n",
            "line 1: linear: argument 1 (device)",
            "No such file or directory",
        ),
        (
            "0 10 linear /dev/null\n",
            "line 1: linear: invalid argument count",
            "Invalid argument",
        ),
        (
            "0 10 zero 1\n",
            "line 1: zero: no arguments required",
            "Invalid argument",
        ),
        (
            "0 0 zero\n",
            "line 1: zero: zero-length target",
            "Invalid argument",
        ),
    ] {
        let o = d.dm_stdin(&["load", "t"], Some(t));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(e.contains(want), "table {t:?}: want {want:?} in {e}");
        assert!(
            e.contains(&format!("failed: {errno}")),
            "table {t:?}: want {errno} in {e}"
        );
    }
    let e = d.fails(&[
        "load",
        "t",
        "--table",
        &format!("0 5000 linear {} 0", a.display()),
    ]);
    assert!(e.contains("too small for target"), "{e}");
    assert_eq!(d.ok(&["table", "t"]), "0 100 zero \n");
    assert!(!d.ok(&["info", "t"]).contains("INACTIVE"));
    // Bad text that never reaches the daemon.
    let o = d.dm_stdin(&["load", "t"], Some("0 10 zero\nbogus line\n"));
    assert_eq!(
        stderr(&o),
        "Invalid format on line 2 of table on stdin.\n\
         udm: line 2: start sector 'bogus' is not a number\nCommand failed.\n"
    );
}

#[test]
fn create_with_bad_table_leaves_no_device() {
    let d = Daemon::start();
    let e = d.fails(&["create", "bad", "--table", "0 10 frob"]);
    assert!(e.contains("reload ioctl on bad"), "{e}");
    assert_eq!(
        d.fails(&["info", "bad"]),
        "Device does not exist.\nCommand failed.\n"
    );
}

#[test]
fn reload_suspend_resume_and_inactive_slot() {
    let d = Daemon::start();
    d.ok(&["create", "r", "--table", "0 100 zero"]);
    d.ok(&["load", "r", "--table", "0 200 error"]);
    assert!(d
        .ok(&["info", "r"])
        .contains("Tables present:    LIVE & INACTIVE\n"));
    assert_eq!(d.ok(&["table", "--inactive", "r"]), "0 200 error \n");
    assert_eq!(d.ok(&["table", "r"]), "0 100 zero \n");
    d.ok(&["clear", "r"]);
    assert!(d.ok(&["info", "r"]).contains("Tables present:    LIVE\n"));
    d.ok(&["load", "r", "--table", "0 200 error"]);
    d.ok(&["suspend", "r"]);
    let i = d.ok(&["info", "r"]);
    assert!(i.contains("State:             SUSPENDED\n"), "{i}");
    d.ok(&["resume", "r"]);
    assert_eq!(d.ok(&["table", "r"]), "0 200 error \n");
    assert!(d.ok(&["info", "r"]).contains("State:             ACTIVE\n"));
    // Reload without suspend, then resume, also swaps.
    d.ok(&["reload", "r", "--table", "0 300 zero"]);
    d.ok(&["resume", "r"]);
    assert_eq!(d.ok(&["table", "r"]), "0 300 zero \n");
    assert!(d.ok(&["info", "r"]).contains("Event number:      0\n"));
}

#[test]
fn resume_without_table_is_einval() {
    let d = Daemon::start();
    d.ok(&["create", "empty", "--notable"]);
    let i = d.ok(&["info", "empty"]);
    assert!(
        i.contains("Tables present:    None\n") && !i.contains("Read Ahead"),
        "{i}"
    );
    d.ok(&["resume", "empty"]);
    d.ok(&["suspend", "empty"]);
    let e = d.fails(&["resume", "empty"]);
    assert!(
        e.starts_with("device-mapper: resume ioctl on empty  failed: Invalid argument\n"),
        "{e}"
    );
    assert!(d
        .ok(&["info", "empty"])
        .contains("State:             SUSPENDED\n"));
}

#[test]
fn remove_of_open_device_is_ebusy_and_deferred_works() {
    let d = Daemon::start();
    let a = d.file("a", 4096);
    d.ok(&[
        "create",
        "low",
        "--table",
        &format!("0 4096 linear {} 0", a.display()),
    ]);
    d.ok(&[
        "create",
        "high",
        "--table",
        "0 1000 linear /dev/mapper/low 10",
    ]);
    assert!(d.ok(&["info", "low"]).contains("Open count:        1\n"));
    assert_eq!(d.ok(&["deps", "high"]), "1 dependencies\t: (253, 0)\n");
    let e = d.fails(&["remove", "low"]);
    assert!(
        e.starts_with("device-mapper: remove ioctl on low  failed: Device or resource busy\n"),
        "{e}"
    );
    d.ok(&["remove", "--deferred", "low"]);
    assert!(d.ok(&["info", "low"]).contains("(DEFERRED REMOVE)"));
    // A table may not map a device onto itself, directly or through a cycle.
    let e = d.fails(&["load", "low", "--table", "0 100 linear /dev/mapper/high 0"]);
    assert!(e.contains("cycle"), "{e}");
    d.ok(&["remove", "high"]);
    // Last close completed the deferred removal.
    assert_eq!(d.ok(&["ls"]), "No devices found\n");
}

#[test]
fn rename_and_set_uuid() {
    let d = Daemon::start();
    d.ok(&["create", "a", "--table", "0 10 zero"]);
    d.ok(&["create", "b", "--notable"]);
    d.ok(&["rename", "a", "c"]);
    assert!(d.ok(&["info", "c"]).contains("Event number:      1\n"));
    let e = d.fails(&["rename", "c", "b"]);
    assert!(e.contains("Device or resource busy"), "{e}");
    d.ok(&["rename", "c", "--setuuid", "my-uuid"]);
    let i = d.ok(&["info", "c"]);
    assert!(
        i.contains("UUID: my-uuid\n") && i.contains("Event number:      2\n"),
        "{i}"
    );
    let e = d.fails(&["rename", "c", "--setuuid", "other"]);
    assert!(
        e.starts_with("device-mapper: rename ioctl on c  failed: Invalid argument\n"),
        "{e}"
    );
    assert!(d
        .ok(&["info", "-u", "my-uuid"])
        .contains("Name:              c\n"));
    let e = d.fails(&["rename", "c", "bad/name"]);
    assert!(e.contains("invalid"), "{e}");
}

#[test]
fn readonly_device() {
    let d = Daemon::start();
    d.ok(&["create", "ro", "-r", "--table", "0 100 zero"]);
    assert!(d
        .ok(&["info", "ro"])
        .contains("State:             ACTIVE (READ-ONLY)\n"));
}

#[test]
fn message_geometry_wait_mknodes() {
    let d = Daemon::start();
    d.ok(&["create", "m", "--table", "0 100 zero"]);
    let e = d.fails(&["message", "m", "0", "hello"]);
    assert!(
        e.contains("message ioctl on m  failed: Invalid argument"),
        "{e}"
    );
    let e = d.fails(&["message", "m", "0", "@frob"]);
    assert!(e.contains("Invalid argument"), "{e}");
    d.ok(&["message", "m", "0", "@cancel_deferred_remove"]);
    d.ok(&["setgeometry", "m", "10", "16", "63", "0"]);
    let e = d.fails(&["setgeometry", "m", "70000", "16", "63", "0"]);
    assert!(
        e.contains("setgeometry ioctl on m  failed: Invalid argument"),
        "{e}"
    );
    d.ok(&["mknodes", "m"]);
    // wait returns at once for an old event number, and blocks until a rename for the current one.
    d.ok(&["wait", "m", "5"]);
    let sock = d.socket.clone();
    let waiter = std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        let o = std::process::Command::new(common::bin("udmsetup"))
            .args(["--socket", sock.to_str().unwrap(), "wait", "m", "0"])
            .output()
            .unwrap();
        (o, t0.elapsed())
    });
    std::thread::sleep(std::time::Duration::from_millis(400));
    d.ok(&["rename", "m", "m2"]);
    let (o, took) = waiter.join().unwrap();
    assert!(o.status.success(), "wait failed: {}", stderr(&o));
    assert!(
        took >= std::time::Duration::from_millis(300),
        "wait returned before the event: {took:?}"
    );
    let e = d.fails(&["wait", "nosuch", "0"]);
    assert!(
        e.contains("waitevent ioctl on nosuch  failed: No such device or address"),
        "{e}"
    );
}

#[test]
fn remove_all_and_garbage_on_the_socket() {
    let d = Daemon::start();
    d.ok(&["create", "a", "--table", "0 10 zero"]);
    d.ok(&["create", "b", "--table", "0 10 zero"]);
    {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        s.write_all(b"this is not a dm-ioctl frame at all........")
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    d.ok(&["remove_all"]);
    assert_eq!(d.ok(&["ls"]), "No devices found\n");
    let o = d.dm(&["info"]);
    assert_eq!(stdout(&o), "No devices found\n");
}

#[test]
fn every_device_command_on_a_missing_device_is_enxio() {
    let d = Daemon::start();
    for (args, ioctl) in [
        (vec!["clear", "nosuch"], "clear"),
        (vec!["deps", "nosuch"], "deps"),
        (vec!["table", "nosuch"], "table"),
        (vec!["resume", "nosuch"], "resume"),
        (vec!["suspend", "nosuch"], "suspend"),
        (vec!["remove", "nosuch"], "remove"),
        (vec!["rename", "nosuch", "other"], "rename"),
        (vec!["message", "nosuch", "0", "x"], "message"),
        (
            vec!["setgeometry", "nosuch", "1", "1", "1", "0"],
            "setgeometry",
        ),
        (vec!["wait", "nosuch", "0"], "waitevent"),
        (vec!["load", "nosuch", "--table", "0 1 zero"], "reload"),
    ] {
        let e = d.fails(&args);
        let want =
            format!("device-mapper: {ioctl} ioctl on nosuch  failed: No such device or address\n");
        assert!(e.starts_with(&want), "{args:?}: want {want:?}, got {e:?}");
        assert!(e.ends_with("Command failed.\n"), "{args:?}: {e}");
    }
    for args in [vec!["info", "nosuch"], vec!["status", "nosuch"]] {
        assert_eq!(
            d.fails(&args),
            "Device does not exist.\nCommand failed.\n",
            "{args:?}"
        );
    }
    // Nothing was created along the way.
    assert_eq!(d.ok(&["ls"]), "No devices found\n");
}

#[test]
fn remove_force_wipes_to_error_first() {
    let d = Daemon::start();
    let a = d.file("a", 4096);
    d.ok(&[
        "create",
        "low",
        "--table",
        &format!("0 4096 linear {} 0", a.display()),
    ]);
    d.ok(&[
        "create",
        "high",
        "--table",
        "0 100 linear /dev/mapper/low 0",
    ]);
    // Open (held by `high`): --force replaces the table with error, and the remove is still EBUSY.
    let e = d.fails(&["remove", "--force", "low"]);
    assert!(
        e.contains("remove ioctl on low  failed: Device or resource busy"),
        "{e}"
    );
    assert_eq!(d.ok(&["table", "low"]), "0 4096 error \n");
    d.ok(&["remove", "-f", "high"]);
    d.ok(&["remove", "low"]);
    assert_eq!(d.ok(&["ls"]), "No devices found\n");
}

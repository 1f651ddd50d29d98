//! udmsetup as a user runs it, against a fake udmd (tests/common). The
//! expected texts are dmsetup 1.02.185's on Linux 6.12, captured in a VM.

mod common;

use common::*;
use udm_ioctl::*;

fn zero(len: u64) -> Option<Vec<TargetSpec>> {
    Some(vec![spec(0, len, "zero", "")])
}

/// a (zero 100), b (zero 50, uuid), c (no table): the VM's first setup.
fn abc() -> (FakeDaemon, std::sync::Arc<std::sync::Mutex<FakeKernel>>) {
    let (d, k) = FakeDaemon::kernel();
    {
        let mut k = k.lock().unwrap();
        k.add("a", "", zero(100));
        k.add("b", "UUID-B-1234", zero(50));
        k.add("c", "", None);
    }
    (d, k)
}

const INFO_A: &str = "Name:              a\nState:             ACTIVE\nRead Ahead:        256\n\
Tables present:    LIVE\nOpen count:        0\nEvent number:      0\nMajor, minor:      254, 0\n\
Number of targets: 1\n\n";
const INFO_B: &str = "Name:              b\nState:             ACTIVE\nRead Ahead:        256\n\
Tables present:    LIVE\nOpen count:        0\nEvent number:      0\nMajor, minor:      254, 1\n\
Number of targets: 1\nUUID: UUID-B-1234\n\n";

#[test]
fn version_sends_the_minimum_version_and_exists() {
    let (d, _) = FakeDaemon::kernel();
    ok(
        &d.run(&["version"]),
        "Library version:   udmsetup 0.1.0\nDriver version:    4.48.0\n",
    );
    let s = &d.seen()[0];
    assert_eq!(s.cmd, Command::Version);
    assert_eq!(s.header.version, [4, 0, 0]);
    assert_eq!(s.header.flags, flags::EXISTS);
    assert_eq!(s.size, 2048);
    ok(
        &d.run(&["--version"]),
        "Library version:   udmsetup 0.1.0\nDriver version:    4.48.0\n",
    );
}

#[test]
fn no_devices() {
    let (d, _) = FakeDaemon::kernel();
    for cmd in ["ls", "info", "status", "table", "deps"] {
        ok(&d.run(&[cmd]), "No devices found\n");
    }
    let s = &d.seen()[0];
    assert_eq!((s.cmd, s.size), (Command::ListDevices, 16384));
}

#[test]
fn bad_tables_name_their_line_and_send_nothing() {
    let (d, _) = FakeDaemon::kernel();
    fails(
        &d.run(&["create", "bad", "--table", "0 10"]),
        "Invalid format on line 1 of table .\nudm: line 1: target type is missing\nCommand failed.\n",
    );
    let f = d.dir.path().join("t1");
    std::fs::write(&f, "\n# c\n0 x zero\n").unwrap();
    let fname = f.to_str().unwrap();
    fails(
        &d.run(&["create", "bad", fname]),
        &format!(
            "Invalid format on line 3 of table {fname}.\n\
             udm: line 3: length 'x' is not a number\nCommand failed.\n"
        ),
    );
    fails(
        &d.run_stdin(&["create", "bad"], "0 10 zero\n  \n1 z\n"),
        "Invalid format on line 3 of table on stdin.\n\
         udm: line 3: length 'z' is not a number\nCommand failed.\n",
    );
    fails(
        &d.run(&["create", "bad", "/nonexistent/table"]),
        "Couldn't open '/nonexistent/table' for reading.\nCommand failed.\n",
    );
    assert!(d.seen().is_empty());
}

#[test]
fn create_loads_by_number_then_resumes_by_name() {
    let (d, k) = FakeDaemon::kernel();
    ok(&d.run(&["create", "a", "--table", "0 100 zero"]), "");
    let s = d.seen();
    assert_eq!(
        d.commands(),
        [Command::DevCreate, Command::TableLoad, Command::DevSuspend]
    );
    assert_eq!(s[0].header.name, "a");
    assert_eq!(s[0].size, 16384);
    assert_eq!(s[1].header.name, "", "libdm loads by device number");
    assert_eq!(s[1].header.dev, encode_dev(254, 0));
    assert_ne!(s[1].header.flags & flags::PERSISTENT_DEV, 0);
    assert_eq!(s[1].header.target_count, 1);
    assert_eq!(s[2].header.name, "a");
    assert_eq!(s[2].header.flags & flags::SUSPEND, 0);
    let k = k.lock().unwrap();
    assert_eq!(k.devs["a"].live, zero(100));
}

#[test]
fn create_from_stdin_options_anywhere_and_notable() {
    let (d, k) = FakeDaemon::kernel();
    ok(
        &d.run_stdin(&["-r", "create", "-u", "U-1", "ro"], "0 10 zero\n"),
        "",
    );
    ok(
        &d.run(&["--table", "0 8 zero", "create", "x", "-v"]),
        &INFO_A
            .replace("Name:              a", "Name:              x")
            .replace("254, 0", "254, 1")
            .replace("Event number:      0", "Event number:      1"),
    );
    ok(&d.run(&["create", "n", "--notable"]), "");
    ok(&d.run_stdin(&["create", "empty"], ""), "");
    let k = k.lock().unwrap();
    assert!(k.devs["ro"].live_ro);
    assert_eq!(k.devs["ro"].uuid, "U-1");
    assert_eq!(k.devs["n"].live, None);
    assert_eq!(k.devs["empty"].live, None);
    fails(
        &d.run(&["create", "z", "--notable", "--table", "0 1 zero"]),
        "--table and --notable are incompatible.\nCouldn't process command line.\n",
    );
}

#[test]
fn create_failures_and_undo() {
    let (d, k) = abc();
    fails(
        &d.run(&["create", "a", "--table", "0 100 zero"]),
        "device-mapper: create ioctl on a  failed: Device or resource busy\n\
         udm: name or uuid already in use\nCommand failed.\n",
    );
    fails(
        &d.run(&["create", "dup", "-u", "UUID-B-1234", "--table", "0 10 zero"]),
        "device-mapper: create ioctl on dup UUID-B-1234 failed: Device or resource busy\n\
         udm: name or uuid already in use\nCommand failed.\n",
    );
    // The daemon names the second spec; the user wrote it on line 4.
    let before = d.seen().len();
    fails(
        &d.run(&["create", "d", "--table", "# c\n0 100 zero\n\n100 100 bogus"]),
        "device-mapper: reload ioctl on d (254:3) failed: Invalid argument\n\
         udm: line 4: bogus: unknown target type\nCommand failed.\n",
    );
    let cmds: Vec<_> = d.commands()[before..].to_vec();
    assert_eq!(
        cmds,
        [Command::DevCreate, Command::TableLoad, Command::DevRemove]
    );
    assert!(
        !k.lock().unwrap().devs.contains_key("d"),
        "create was undone"
    );
    fails(
        &d.run(&["create", "bad/name", "--table", "0 10 zero"]),
        "Name \"bad/name\" invalid. It contains \"/\".\nCommand failed.\n",
    );
    fails(
        &d.run(&["create"]),
        "Please provide a name for the new device.\nCommand failed.\n",
    );
    fails(
        &d.run(&["create", "t", "--table", "0 1 abcdefghijklmnop"]),
        "Target type name abcdefghijklmnop is too long.\nCommand failed.\n",
    );
}

#[test]
fn info_long_columns_and_missing() {
    let (d, _) = abc();
    ok(&d.run(&["info", "a"]), INFO_A);
    let all = d.run(&["info"]);
    assert_eq!(all.code, 0);
    assert!(all
        .out
        .starts_with(&format!("{INFO_A}{INFO_B}Name:              c\n")));
    assert!(all.out.contains("Tables present:    None\n"));
    ok(
        &d.run(&["info", "-c"]),
        "Name             Maj Min Stat Open Targ Event  UUID                            \n\
         a                254   0 L--w    0    1      0                                 \n\
         b                254   1 L--w    0    1      0 UUID-B-1234                     \n\
         c                254   2 ---w    0    0      0                                 \n",
    );
    ok(
        &d.run(&["info", "-c", "--noheadings", "a"]),
        "a:254:0:L--w:0:1:0:\n",
    );
    ok(
        &d.run(&[
            "info",
            "-c",
            "-o",
            "name,attr,suspended,readonly,tables_loaded,devno",
            "--separator",
            ":",
        ]),
        "Name:Stat:Suspended:Read-only:Tables:DevNo\na:L--w:Active:Writeable:Live:254:0\n\
         b:L--w:Active:Writeable:Live:254:1\nc:---w:Active:Writeable:None:254:2\n",
    );
    ok(
        &d.run(&["info", "-c", "-o", "suspended", "--noheadings", "a"]),
        "Active\n",
    );
    fails(
        &d.run(&["info", "nonexist"]),
        "Device does not exist.\nCommand failed.\n",
    );
    ok(&d.run(&["info", "-u", "UUID-B-1234"]), INFO_B);
    ok(&d.run(&["info", "-j", "254", "-m", "1"]), INFO_B);
    fails(
        &d.run(&["info", "-j", "253", "-m", "77"]),
        "Device does not exist.\nCommand failed.\n",
    );
    // The report rows gathered before a failure are still printed.
    let o = d.run(&["info", "-c", "b", "nonexist", "a"]);
    assert_eq!(o.code, 1);
    assert_eq!(o.err, "Device does not exist.\nCommand failed.\n");
    assert_eq!(o.out.lines().count(), 2, "{}", o.out);
    let o = d.run(&["info", "-c", "-o", "bogus"]);
    assert_eq!(o.code, 1);
    assert!(o.err.ends_with("Unrecognised field: bogus\n"), "{}", o.err);
}

#[test]
fn status_and_table_lines() {
    let (d, _) = abc();
    ok(&d.run(&["status", "a"]), "0 100 zero \n");
    ok(
        &d.run(&["status", "a", "b", "c"]),
        "a: 0 100 zero \nb: 0 50 zero \nc: \n",
    );
    ok(&d.run(&["status"]), "a: 0 100 zero \nb: 0 50 zero \nc: \n");
    ok(&d.run(&["table"]), "a: 0 100 zero \nb: 0 50 zero \nc: \n");
    ok(&d.run(&["table", "c"]), "\n");
    ok(
        &d.run(&["status", "--target", "zero"]),
        "a: 0 100 zero \nb: 0 50 zero \n",
    );
    ok(
        &d.run(&["status", "-v", "a"]),
        &format!("{INFO_A}0 100 zero \n"),
    );
    ok(
        &d.run(&["status", "-v", "a", "b"]),
        &format!("{INFO_A}0 100 zero \n\n{INFO_B}0 50 zero \n\n"),
    );
    ok(
        &d.run(&["table", "--concise"]),
        "a,,0,rw,0 100 zero ;b,UUID-B-1234,1,rw,0 50 zero ;c,,2,rw\n",
    );
    fails(
        &d.run(&["status", "nonexist"]),
        "Device does not exist.\nCommand failed.\n",
    );
    fails(
        &d.run(&["table", "nonexist"]),
        "device-mapper: table ioctl on nonexist  failed: No such device or address\nCommand failed.\n",
    );
    let s = d.seen();
    let t = s
        .iter()
        .rev()
        .find(|s| s.cmd == Command::TableStatus)
        .unwrap();
    assert_ne!(t.header.flags & flags::STATUS_TABLE, 0);
}

#[test]
fn table_masks_keys_and_keeps_backslashes() {
    let (d, k) = FakeDaemon::kernel();
    k.lock().unwrap().add(
        "cr",
        "",
        Some(vec![spec(
            0,
            100,
            "crypt",
            "aes-xts-plain64 0123456789abcdef 0 7:0 0",
        )]),
    );
    ok(
        &d.run(&["table", "cr"]),
        "0 100 crypt aes-xts-plain64 0000000000000000 0 7:0 0\n",
    );
    ok(
        &d.run(&["table", "--showkeys", "cr"]),
        "0 100 crypt aes-xts-plain64 0123456789abcdef 0 7:0 0\n",
    );
    ok(&d.run(&["create", "bk", "--table", "0 100 error a\\b"]), "");
    let load = d
        .seen()
        .into_iter()
        .find(|s| s.cmd == Command::TableLoad)
        .unwrap();
    let specs = decode_table_load(&load.payload, 1).unwrap();
    assert_eq!(specs[0].params, "a\\\\b", "libdm doubles backslashes");
    ok(&d.run(&["table", "bk"]), "0 100 error a\\b\n");
}

#[test]
fn ls_forms() {
    let (d, _) = abc();
    ok(&d.run(&["ls"]), "a\t(254:0)\nb\t(254:1)\nc\t(254:2)\n");
    ok(
        &d.run(&["ls", "--target", "zero"]),
        "a\t(254, 0)\nb\t(254, 1)\n",
    );
    ok(
        &d.run(&["ls", "-o", "devno"]),
        "a\t(254:0)\nb\t(254:1)\nc\t(254:2)\n",
    );
    ok(&d.run(&["ls", "-o", "devname"]), "a\t(a)\nb\t(b)\nc\t(c)\n");
    ok(
        &d.run(&["ls", "-o", "blkdevname"]),
        "a\t(dm-0)\nb\t(dm-1)\nc\t(dm-2)\n",
    );
    ok(
        &d.run(&["ls", "--tree", "-o", "ascii"]),
        "a (254:0)\nb (254:1)\nc (254:2)\n",
    );
    fails(
        &d.run(&["ls", "-o", "bogus"]),
        // dmsetup (kernel VM): a command-line error, no "Command failed.".
        "Option not recognised: bogus.\nCouldn't process command line.\n",
    );
    fails(
        &d.run(&["ls", "--tree", "-o", "bogus"]),
        "Tree options not recognised: bogus.\nCouldn't process command line.\n",
    );
}

#[test]
fn deps_and_tree_of_a_stack() {
    let (d, k) = FakeDaemon::kernel();
    {
        let mut k = k.lock().unwrap();
        k.add("base", "", Some(vec![spec(0, 8192, "linear", "7:0 0")]));
        k.add("zz", "ZZUUID", zero(100));
        k.add(
            "top",
            "",
            Some(vec![
                spec(0, 100, "linear", "254:0 0"),
                spec(100, 100, "linear", "254:1 0"),
                spec(200, 100, "linear", "7:0 100"),
            ]),
        );
        k.add("top2", "", Some(vec![spec(0, 100, "linear", "254:0 200")]));
    }
    ok(
        &d.run(&["deps"]),
        "base: 1 dependencies\t: (7, 0)\ntop: 3 dependencies\t: (7, 0) (254, 1) (254, 0)\n\
         top2: 1 dependencies\t: (254, 0)\nzz: 0 dependencies\t:\n",
    );
    ok(
        &d.run(&["deps", "top"]),
        "3 dependencies\t: (7, 0) (254, 1) (254, 0)\n",
    );
    let named = d.run(&["deps", "-o", "devname", "top"]);
    assert_eq!(named.code, 0);
    assert!(named.out.ends_with(" (zz) (base)\n"), "{}", named.out);
    fails(
        &d.run(&["deps", "nonexist"]),
        "device-mapper: deps ioctl on nonexist  failed: No such device or address\nCommand failed.\n",
    );
    ok(
        &d.run(&["ls", "--tree", "-o", "ascii"]),
        "top (254:2)\n |- (7:0)\n |-zz (254:1)\n `-base (254:0)\n    `- (7:0)\n\
         top2 (254:3)\n `-base (254:0)\n    `- (7:0)\n",
    );
    ok(
        &d.run(&[
            "info",
            "-c",
            "-o",
            "name,devnos_used,device_count,devs_used,names_using_dev",
            "top",
            "base",
        ]),
        "Name             DevNosUsed       #Devs DevNamesUsed     RefNames\n\
         top              7:0,254:1,254:0      3 zz,base                  \n\
         base             7:0                  1                  top,top2\n",
    );
}

#[test]
fn messages() {
    let (d, _) = abc();
    fails(
        &d.run(&["message", "a", "0", "hello", "world"]),
        "device-mapper: message ioctl on a  failed: Invalid argument\n\
         udm: Target type does not support messages\nCommand failed.\n",
    );
    let msg = d.seen().last().unwrap().clone();
    assert_eq!(msg.header.version, [4, 2, 0]);
    assert_eq!(
        decode_target_msg(&msg.payload).unwrap(),
        (0, "hello world".into())
    );
    ok(
        &d.run(&["message", "a", "0", "--", "echo", "-x", "y"]),
        "-x y\n",
    );
    ok(
        &d.run(&["message", "a", "0", "@cancel_deferred_remove"]),
        "",
    );
    fails(
        &d.run(&["message", "a", "0"]),
        "No message supplied.\ndevice-mapper: message ioctl on a  failed: Invalid argument\n\
         udm: empty message\nCommand failed.\n",
    );
    fails(
        &d.run(&["message", "a", "x1", "hi"]),
        "Invalid sector.\nCommand failed.\n",
    );
}

#[test]
fn targets_and_target_version() {
    let (d, _) = FakeDaemon::kernel();
    ok(
        &d.run(&["targets"]),
        "crypt            v1.28.0\nzero             v1.2.0\nstriped          v1.6.0\n\
         linear           v1.4.0\nerror            v1.7.0\n",
    );
    ok(
        &d.run(&["target-version", "zero", "linear"]),
        "zero             v1.2.0\nlinear           v1.4.0\n",
    );
    assert_eq!(d.seen().last().unwrap().header.version, [4, 41, 0]);
    fails(
        &d.run(&["target-version", "bogus"]),
        "device-mapper: target-version ioctl on bogus  failed: Invalid argument\n\
         udm: unknown target type bogus\nCommand failed.\n",
    );
}

#[test]
fn load_suspend_resume_rename_clear() {
    let (d, k) = abc();
    fails(
        &d.run(&["reload", "a", "--table", ""]),
        "device-mapper: reload ioctl on a  failed: Invalid argument\nudm: no targets specified\nCommand failed.\n",
    );
    ok(
        &d.run(&["load", "a", "--table", "0 200 zero", "--readonly"]),
        "",
    );
    ok(&d.run(&["table", "--inactive", "a"]), "0 200 zero \n");
    ok(&d.run(&["info", "-c", "a"]), "Name             Maj Min Stat Open Targ Event  UUID                            \na                254   0 LI-w    0    1      0                                 \n");
    ok(&d.run(&["suspend", "a"]), "");
    assert!(d
        .run(&["info", "a"])
        .out
        .contains("State:             SUSPENDED\n"));
    ok(&d.run(&["resume", "a"]), "");
    assert_eq!(k.lock().unwrap().devs["a"].live, zero(200));
    assert!(d
        .run(&["info", "a"])
        .out
        .contains("State:             ACTIVE (READ-ONLY)\n"));
    ok(&d.run(&["rename", "a", "aa"]), "");
    ok(&d.run(&["rename", "aa", "--setuuid", "NEWUUID"]), "");
    fails(
        &d.run(&["rename", "aa", "--setuuid", "NEWUUID2"]),
        "device-mapper: rename ioctl on aa  failed: Invalid argument\nudm: uuid already set\nCommand failed.\n",
    );
    let r = d.seen().last().unwrap().clone();
    assert_ne!(r.header.flags & flags::UUID, 0);
    assert_eq!(decode_string(&r.payload).unwrap(), "NEWUUID2");
    fails(
        &d.run(&["rename", "nonexist", "x"]),
        "device-mapper: rename ioctl on nonexist  failed: No such device or address\nCommand failed.\n",
    );
    ok(&d.run(&["load", "b", "--table", "0 10 zero"]), "");
    ok(&d.run(&["clear", "b"]), "");
    assert_eq!(k.lock().unwrap().devs["b"].inactive, None);
    fails(
        &d.run(&["load"]),
        "Please specify device.\nCommand failed.\n",
    );
    fails(
        &d.run(&["suspend", "nonexist"]),
        "device-mapper: suspend ioctl on nonexist  failed: No such device or address\nCommand failed.\n",
    );
    fails(
        &d.run(&["resume", "nonexist"]),
        "device-mapper: resume ioctl on nonexist  failed: No such device or address\nCommand failed.\n",
    );
    let o = d.run(&["suspend", "-v", "b", "--noflush", "--nolockfs"]);
    assert!(o.out.contains("State:             SUSPENDED\n"), "{o:?}");
    let s = d
        .seen()
        .into_iter()
        .rfind(|s| s.cmd == Command::DevSuspend)
        .unwrap();
    assert_eq!(
        s.header.flags & (flags::SUSPEND | flags::NOFLUSH | flags::SKIP_LOCKFS),
        flags::SUSPEND | flags::NOFLUSH | flags::SKIP_LOCKFS
    );
}

#[test]
fn remove_force_retry_and_remove_all() {
    let (d, k) = abc();
    k.lock().unwrap().devs.get_mut("a").unwrap().open_count = 1;
    let before = d.seen().len();
    fails(
        &d.run(&["remove", "--force", "a"]),
        "device-mapper: remove ioctl on a  failed: Device or resource busy\nudm: a is open\nCommand failed.\n",
    );
    let s: Vec<_> = d.seen()[before..].to_vec();
    let cmds: Vec<_> = s.iter().map(|s| s.cmd).collect();
    assert_eq!(
        cmds,
        [
            Command::TableStatus,
            Command::TableLoad,
            Command::DevSuspend,
            Command::DevRemove
        ]
    );
    assert_eq!(
        decode_table_load(&s[1].payload, 1).unwrap(),
        [spec(0, 100, "error", "")]
    );
    assert_eq!(
        s[2].header.flags & (flags::NOFLUSH | flags::SKIP_LOCKFS),
        flags::NOFLUSH | flags::SKIP_LOCKFS
    );
    ok(&d.run(&["table", "a"]), "0 100 error \n");
    ok(&d.run(&["remove", "--deferred", "a"]), "");
    assert!(k.lock().unwrap().devs["a"].deferred);
    // The first failure stops a repeatable command.
    fails(
        &d.run(&["remove", "b", "nonexist", "c"]),
        "device-mapper: remove ioctl on nonexist  failed: No such device or address\nCommand failed.\n",
    );
    assert!(k.lock().unwrap().devs.contains_key("c"));
    // remove --force of a table-less device: the error load fails, the remove works.
    let o = d.run(&["remove", "--force", "c"]);
    assert_eq!(o.code, 0);
    assert!(
        o.err
            .starts_with("device-mapper: reload ioctl on c  failed: Invalid argument\n"),
        "{o:?}"
    );
    ok(&d.run(&["remove_all"]), "");
    ok(&d.run(&["ls"]), "a\t(254:0)\n");
    let o = d.run(&["remove_all", "-f"]);
    assert_eq!(o.code, 0);
    assert!(o.err.ends_with("Unable to remove 1 device(s).\n"), "{o:?}");
}

#[test]
fn remove_retry_on_busy() {
    let mut busy = 2;
    let d = FakeDaemon::start(Box::new(move |_s| {
        if busy > 0 {
            busy -= 1;
            Answer::err(libc::EBUSY, "")
        } else {
            Answer::ok(DmIoctl::new(), vec![])
        }
    }));
    ok(&d.run(&["remove", "--retry", "x"]), "");
    assert_eq!(d.seen().len(), 3);
}

#[test]
fn wait_setgeometry_mknodes() {
    let (d, _) = abc();
    ok(&d.run(&["wait", "-v", "a"]), INFO_A);
    ok(&d.run(&["wait", "a", "5"]), "");
    assert_eq!(d.seen().last().unwrap().header.event_nr, 5);
    ok(&d.run(&["setgeometry", "a", "1", "2", "3", "4"]), "");
    assert_eq!(
        decode_string(&d.seen().last().unwrap().payload).unwrap(),
        "1 2 3 4"
    );
    fails(
        &d.run(&["setgeometry", "a", "100000", "2", "3", "4"]),
        "device-mapper: setgeometry ioctl on a  failed: Invalid argument\n\
         udm: Geometry exceeds range limits.\nCommand failed.\n",
    );
    ok(&d.run(&["mknodes", "a"]), "");
    ok(&d.run(&["mknodes", "nonexist"]), "");
    ok(&d.run(&["mknodes"]), "");
    fails(
        &d.run(&["wait", "nonexist"]),
        "device-mapper: waitevent ioctl on nonexist  failed: No such device or address\nCommand failed.\n",
    );
}

#[test]
fn buffer_full_retries_double_the_buffer() {
    let (d, k) = FakeDaemon::kernel();
    {
        let mut k = k.lock().unwrap();
        for i in 0..300 {
            k.add(&format!("{i:03}-{}", "x".repeat(100)), "", zero(8));
        }
    }
    let o = d.run(&["ls"]);
    assert_eq!(o.code, 0);
    assert_eq!(o.out.lines().count(), 300);
    let sizes: Vec<_> = d.seen().iter().map(|s| s.size).collect();
    assert_eq!(sizes, [16384, 32768, 65536]);
    // A long status string needs more than the first buffer too.
    k.lock().unwrap().add(
        "long",
        "",
        Some(vec![spec(0, 8, "linear", &"7:0 0 ".repeat(4000))]),
    );
    let o = d.run(&["table", "long"]);
    assert_eq!(o.code, 0);
    assert_eq!(o.out.len(), "0 8 linear ".len() + 24000 + 1);
}

#[test]
fn buffer_full_on_other_commands_is_an_error() {
    let d = FakeDaemon::start(Box::new(|_s| {
        let mut h = DmIoctl::new();
        h.flags = flags::BUFFER_FULL;
        Answer::ok(h, vec![])
    }));
    fails(
        &d.run(&["info", "x"]),
        "WARNING: libdevmapper buffer too small for data.\nCommand failed.\n",
    );
    assert_eq!(d.seen().len(), 1);
}

#[test]
fn no_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nothing");
    let mut argv: Vec<std::ffi::OsString> = vec!["udmsetup".into(), "ls".into(), "--socket".into()];
    argv.push(sock.clone().into());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = udmsetup::run(argv, &mut out, &mut err, &mut &b""[..]);
    assert_eq!(code, 1);
    assert_eq!(
        String::from_utf8(err).unwrap(),
        format!(
            "{}: connect failed: No such file or directory\n\
             Failure to communicate with the udm daemon (is udmd running?).\nCommand failed.\n",
            sock.display()
        )
    );
}

#[test]
fn command_line_errors() {
    let (d, _) = FakeDaemon::kernel();
    let o = d.run(&["bogus"]);
    assert_eq!(o.code, 1);
    assert!(o.err.starts_with("Unknown command.\nUsage:\n"), "{}", o.err);
    let o = d.run(&["rename"]);
    assert!(o.err.starts_with("Incorrect number of arguments.\n"));
    let o = d.run(&["ls", "--bogus"]);
    assert_eq!(o.code, 1);
    assert!(
        o.err.ends_with("Couldn't process command line.\n"),
        "{}",
        o.err
    );
    fails(
        &d.run(&["info", "-j", "254"]),
        "Please specify both major number and minor number.\nCouldn't process command line.\n",
    );
    fails(
        &d.run(&["suspend"]),
        "No device specified.\nCommand failed.\n",
    );
    let o = d.run(&["-h"]);
    assert_eq!(o.code, 0);
    assert!(o.err.starts_with("Usage:\n"));
    assert!(d.seen().is_empty());
}

#[test]
fn json_output() {
    let (d, _) = abc();
    let o = d.run(&["ls", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v[1]["name"], "b");
    assert_eq!(v[1]["minor"], 1);
    let o = d.run(&["info", "--json", "b"]);
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v[0]["uuid"], "UUID-B-1234");
    assert_eq!(v[0]["live_table"], true);
    let o = d.run(&["table", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v[0]["targets"][0]["target_type"], "zero");
    assert_eq!(v[2]["targets"].as_array().unwrap().len(), 0);
    let o = d.run(&["info", "-c", "-o", "name,events", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v[2], serde_json::json!({"name": "c", "events": 0}));
    let o = d.run(&["version", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(v["driver"], "4.48.0");
}

#[test]
fn client_call_directly() {
    let (d, _) = abc();
    let mut c = udmsetup::client::Client::connect(&d.socket).unwrap();
    let mut h = DmIoctl::new();
    h.name = "b".into();
    let r = c.call(Command::DevStatus, h, &[], 2048).unwrap();
    assert!(r.ok());
    assert_eq!(r.header.uuid, "UUID-B-1234");
    let mut h = DmIoctl::new();
    h.name = "nope".into();
    let r = c.call(Command::DevStatus, h, &[], 2048).unwrap();
    assert_eq!(r.errno, libc::ENXIO);
    assert_eq!(
        r.header.name, "nope",
        "a failed reply keeps the sent header"
    );
    assert_eq!(
        udmsetup::client::initial_capacity(Command::TableStatus, 0),
        16384
    );
    assert_eq!(
        udmsetup::client::initial_capacity(Command::DevRename, 5000),
        5312
    );
}

#[test]
fn the_binary_exits_like_dmsetup() {
    let (d, _) = abc();
    let bin = env!("CARGO_BIN_EXE_udmsetup");
    let out = std::process::Command::new(bin)
        .args(["info", "-c", "--noheadings", "a", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a:254:0:L--w:0:1:0:\n"
    );
    let out = std::process::Command::new(bin)
        .env("UDM_SOCKET", &d.socket)
        .args(["info", "nonexist"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Device does not exist.\nCommand failed.\n"
    );
}

#[test]
fn short_success_replies_are_accepted() {
    // Like the kernel after REMOVE_ALL: only the version (12 bytes), or a
    // header whose data_size is 0.
    let mut n = 0;
    let d = FakeDaemon::start(Box::new(move |_s| {
        n += 1;
        let mut a = Answer::ok(DmIoctl::new(), vec![]);
        let mut h = DmIoctl::new();
        h.data_size = 0;
        let header = h.encode().unwrap().to_vec();
        a.raw = Some(if n % 2 == 1 {
            header[..12].to_vec()
        } else {
            header
        });
        a
    }));
    ok(&d.run(&["remove_all"]), "");
    ok(&d.run(&["remove_all"]), "");
    let mut c = udmsetup::client::Client::connect(&d.socket).unwrap();
    let r = c.call(Command::Version, DmIoctl::new(), &[], 2048).unwrap();
    assert!(r.ok());
    assert_eq!(r.header.version, VERSION);
}

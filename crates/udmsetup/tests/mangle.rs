//! #11.15: names and uuids are mangled as libdevmapper mangles them
//! (`--manglename`, default `auto`). Expected texts are what dmsetup
//! 1.02.185 printed on Linux 6.12 in the kernel VM for the same devices.

mod common;

use common::*;
use udm_ioctl::*;

fn zero8() -> Option<Vec<TargetSpec>> {
    Some(vec![spec(0, 8, "zero", "")])
}

/// The devices the VM held after dmsetup created them (stored names).
fn stored() -> (FakeDaemon, std::sync::Arc<std::sync::Mutex<FakeKernel>>) {
    let (d, k) = FakeDaemon::kernel();
    {
        let mut k = k.lock().unwrap();
        k.add("a\\x20b", "", zero8());
        k.add("bs\\x5cz", "", zero8());
        k.add("e\\x1bf", "", zero8());
        k.add("hx", "", zero8());
        k.add("n\\x0al", "", zero8());
        k.add("p\\x41q", "", zero8());
        k.add("uu", "u\\x20u", zero8());
    }
    (d, k)
}

#[test]
fn create_and_rename_send_mangled_names_and_uuids() {
    let (d, k) = FakeDaemon::kernel();
    ok(&d.run(&["create", "a b", "--table", "0 8 zero"]), "");
    ok(&d.run(&["create", "bs\\z", "--table", "0 8 zero"]), "");
    ok(&d.run(&["create", "p\\x41q", "--table", "0 8 zero"]), "");
    ok(&d.run(&["create", "\u{1b}x", "--table", "0 8 zero"]), "");
    ok(
        &d.run(&["create", "-u", "u u", "uu", "--table", "0 8 zero"]),
        "",
    );
    ok(
        &d.run(&[
            "create",
            "--manglename",
            "none",
            "c d",
            "--table",
            "0 8 zero",
        ]),
        "",
    );
    ok(
        &d.run(&["create", "--manglename", "hex", "h\\x41", "--notable"]),
        "",
    );
    let names: Vec<String> = k.lock().unwrap().devs.keys().cloned().collect();
    assert_eq!(
        names,
        [
            "\\x1bx",
            "a\\x20b",
            "bs\\x5cz",
            "c d",
            "h\\x5cx41",
            "p\\x41q",
            "uu"
        ]
    );
    assert_eq!(k.lock().unwrap().devs["uu"].uuid, "u\\x20u");
    // Addressing by the unmangled name finds the mangled device.
    ok(&d.run(&["rename", "a b", "a c"]), "");
    assert!(k.lock().unwrap().devs.contains_key("a\\x20c"));
    ok(&d.run(&["remove", "a c"]), "");
    fails(
        &d.run(&["create", "m\\x20 x", "--notable"]),
        "The name \"m\\x20 x\" contains mixed mangled and unmangled characters or it's already mangled improperly.\n\
         Failed to mangle device name \"m\\x20 x\".\nCommand failed.\n",
    );
    fails(
        &d.run(&["create", "m\\x5cx20", "--notable"]),
        "The name \"m\\x5cx20\" seems to be mangled more than once. This is not allowed in auto mode.\n\
         Command failed.\n",
    );
    fails(
        &d.run(&["create", "-u", "u\\x20 u", "uu", "--notable"]),
        "The UUID \"u\\x20 u\" contains mixed mangled and unmangled characters or it's already mangled improperly.\n\
         Failed to mangle device uuid \"u\\x20 u\".\nCommand failed.\n",
    );
    fails(
        &d.run(&["--manglename", "bogus", "ls"]),
        "Unknown name mangling mode.\nCouldn't process command line.\n",
    );
}

#[test]
fn ls_shows_names_per_mode_and_never_raw_controls() {
    let (d, _) = stored();
    // dmsetup prints the unmangled ESC and newline raw; udmsetup keeps them
    // as \xNN (the only difference, on purpose).
    let auto = "a b\t(254:0)\nbs\\z\t(254:1)\ne\\x1bf\t(254:2)\nhx\t(254:3)\n\
                n\\x0al\t(254:4)\npAq\t(254:5)\nuu\t(254:6)\n";
    ok(&d.run(&["ls"]), auto);
    ok(&d.run(&["ls", "--manglename", "auto"]), auto);
    ok(&d.run(&["ls", "--manglename", "hex"]), auto);
    // dmsetup ls --manglename none, byte for byte.
    ok(
        &d.run(&["ls", "--manglename", "none"]),
        "a\\x20b\t(254:0)\nbs\\x5cz\t(254:1)\ne\\x1bf\t(254:2)\nhx\t(254:3)\n\
         n\\x0al\t(254:4)\np\\x41q\t(254:5)\nuu\t(254:6)\n",
    );
    let info_a = "Name:              a b\nState:             ACTIVE\nRead Ahead:        256\n\
Tables present:    LIVE\nOpen count:        0\nEvent number:      0\nMajor, minor:      254, 0\n\
Number of targets: 1\n\n";
    ok(&d.run(&["info", "a b"]), info_a);
    ok(&d.run(&["info", "a\\x20b"]), info_a);
    ok(&d.run(&["info", "--manglename", "hex", "a b"]), info_a);
    ok(
        &d.run(&["info", "--manglename", "none", "a\\x20b"]),
        &info_a.replace("a b", "a\\x20b"),
    );
    let o = d.run(&["info", "-u", "u u"]);
    assert!(o.out.ends_with("UUID: u u\n\n"), "{o:?}");
    // The report's name fields, as dmsetup printed them in none mode
    // (rows without control characters).
    ok(
        &d.run(&[
            "info", "-c", "--manglename", "none", "-o",
            "name,mangled_name,unmangled_name,uuid,mangled_uuid,unmangled_uuid",
            "a\\x20b", "bs\\x5cz", "hx", "p\\x41q", "uu",
        ]),
        "Name             MangledName      UnmangledName    UUID                             MangledUUID                      UnmangledUUID                   \n\
a\\x20b           a\\x20b           a b                                                                                                                \n\
bs\\x5cz          bs\\x5cz          bs\\z                                                                                                               \n\
hx               hx               hx                                                                                                                 \n\
p\\x41q           p\\x41q           pAq                                                                                                                \n\
uu               uu               uu               u\\x20u                           u\\x20u                           u u                             \n",
    );
    ok(
        &d.run(&["info", "-c", "-o", "name,mangled_name,unmangled_name", "a b"]),
        "Name             MangledName      UnmangledName   \na b              a\\x20b           a b             \n",
    );
}

#[test]
fn raw_names_that_need_mangling_are_refused_as_dmsetup_does() {
    let (d, k) = stored();
    k.lock().unwrap().add("c d", "", zero8());
    let refused = "The name \"c d\" should be mangled but it contains blacklisted characters.\nCommand failed.\n";
    fails(&d.run(&["ls"]), refused);
    fails(&d.run(&["ls", "--manglename", "hex"]), refused);
    fails(&d.run(&["table"]), refused);
    fails(
        &d.run(&["info", "c d"]),
        "Device does not exist.\nCommand failed.\n",
    );
    let o = d.run(&["info", "--manglename", "none", "c d"]);
    assert_eq!(
        (o.code, o.out.lines().next()),
        (0, Some("Name:              c d")),
        "{o:?}"
    );
    // dmsetup (env DM_DEFAULT_NAME_MANGLING_MODE=none) ls.
    let bin = env!("CARGO_BIN_EXE_udmsetup");
    let out = std::process::Command::new(bin)
        .env("UDM_SOCKET", &d.socket)
        .env("DM_DEFAULT_NAME_MANGLING_MODE", "none")
        .arg("ls")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a\\x20b\t(254:0)\nbs\\x5cz\t(254:1)\nc d\t(254:7)\ne\\x1bf\t(254:2)\nhx\t(254:3)\n\
         n\\x0al\t(254:4)\np\\x41q\t(254:5)\nuu\t(254:6)\n"
    );
    let out = std::process::Command::new(bin)
        .env("UDM_SOCKET", &d.socket)
        .env("DM_DEFAULT_NAME_MANGLING_MODE", "hex")
        .arg("ls")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), refused);
}

#[test]
fn remove_all_force_addresses_listed_devices_by_their_stored_name() {
    let (d, k) = FakeDaemon::kernel();
    k.lock().unwrap().add("a\\x20b", "", zero8());
    k.lock()
        .unwrap()
        .devs
        .get_mut("a\\x20b")
        .unwrap()
        .open_count = 1;
    let o = d.run(&["remove_all", "-f"]);
    assert_eq!(o.code, 0, "{o:?}");
    let loads: Vec<String> = d
        .seen()
        .iter()
        .filter(|s| s.cmd == Command::TableLoad)
        .map(|s| s.header.name.clone())
        .collect();
    assert_eq!(loads, ["a\\x20b"], "{o:?}");
}

#[test]
fn every_listed_device_is_found_again_in_every_mode() {
    let (d, _) = stored();
    // `info` of all devices looks each listed name up again: names whose
    // shown form does not mangle back to the stored one (p\x41q shown as
    // pAq, e\x1bf kept escaped) must still be found.
    for mode in ["auto", "hex", "none"] {
        let o = d.run(&[
            "info",
            "-c",
            "--noheadings",
            "-o",
            "name",
            "--manglename",
            mode,
        ]);
        assert_eq!(o.code, 0, "{mode}: {o:?}");
        assert_eq!(o.out.lines().count(), 7, "{mode}: {o:?}");
    }
}

//! Expected texts are dmsetup 1.02.185's output on Linux 6.12 (captured in
//! a VM), or taken from dmsetup.c where noted.

use super::read_ahead_of_hints;
use super::report::{Report, RowData};
use super::tree::{render, DepGraph, DevFacts, TreeOptions};
use super::*;

fn info(name: &str, minor: u32, uuid: &str) -> DeviceInfo {
    DeviceInfo {
        name: name.into(),
        uuid: uuid.into(),
        major: 254,
        minor,
        target_count: 1,
        live_table: true,
        read_ahead: Some(256),
        ..Default::default()
    }
}

#[test]
fn no_read_ahead_line_without_a_table() {
    let mut a = info("a", 0, "");
    a.live_table = false;
    a.read_ahead = None;
    assert!(!a.long_form().contains("Read Ahead"));
}

#[test]
fn read_ahead_comes_from_udmds_hints() {
    assert_eq!(
        read_ahead_of_hints("read_ahead 1024 io_min 65536 io_opt 262144"),
        Some(1024)
    );
    assert_eq!(read_ahead_of_hints("io_min 1 io_opt 2"), None);
    assert_eq!(read_ahead_of_hints("read_ahead x"), None);
}

#[test]
fn strerror_matches_glibc() {
    assert_eq!(strerror(libc::ENXIO), "No such device or address");
    assert_eq!(strerror(libc::EBUSY), "Device or resource busy");
    assert_eq!(strerror(libc::EINVAL), "Invalid argument");
    assert_eq!(strerror(libc::ENOENT), "No such file or directory");
}

#[test]
fn ioctl_error_lines() {
    let l = DevLabel {
        name: "test".into(),
        ..Default::default()
    };
    assert_eq!(
        ioctl_error("reload", &l, libc::EINVAL),
        "device-mapper: reload ioctl on test  failed: Invalid argument"
    );
    let l = DevLabel {
        name: "d".into(),
        uuid: String::new(),
        devno: Some((254, 3)),
    };
    assert_eq!(
        ioctl_error("reload", &l, libc::EINVAL),
        "device-mapper: reload ioctl on d (254:3) failed: Invalid argument"
    );
    let l = DevLabel {
        name: "dup".into(),
        uuid: "ZZUUID".into(),
        devno: None,
    };
    assert_eq!(
        ioctl_error("create", &l, libc::EBUSY),
        "device-mapper: create ioctl on dup ZZUUID failed: Device or resource busy"
    );
}

#[test]
fn detail_line_numbers_are_rewritten_to_source_lines() {
    let lines = [3, 5, 9];
    assert_eq!(
        rewrite_detail("line 2: zero: Gap in table", &lines, &[]),
        "line 5: zero: Gap in table"
    );
    assert_eq!(rewrite_detail("line 1:x", &lines, &[]), "line 3:x");
    assert_eq!(
        rewrite_detail("line 4: out of range", &lines, &[]),
        "line 4: out of range"
    );
    assert_eq!(rewrite_detail("line 0: zero", &lines, &[]), "line 0: zero");
    assert_eq!(rewrite_detail("linear: bad", &lines, &[]), "linear: bad");
    assert_eq!(rewrite_detail("line x: y", &lines, &[]), "line x: y");
    assert_eq!(rewrite_detail("", &lines, &[]), "");
}

#[test]
fn info_long_form() {
    let a = info("a", 0, "");
    assert_eq!(
        a.long_form(),
        "Name:              a\n\
         State:             ACTIVE\n\
         Read Ahead:        256\n\
         Tables present:    LIVE\n\
         Open count:        0\n\
         Event number:      0\n\
         Major, minor:      254, 0\n\
         Number of targets: 1\n\
         \n"
    );
    let mut b = info("aa", 0, "NEWUUID");
    b.event_nr = 2;
    b.inactive_table = true;
    b.suspended = true;
    b.read_only = true;
    b.deferred_remove = true;
    b.open_count = 2;
    assert_eq!(
        b.long_form(),
        "Name:              aa\n\
         State:             SUSPENDED (READ-ONLY) (DEFERRED REMOVE)\n\
         Read Ahead:        256\n\
         Tables present:    LIVE & INACTIVE\n\
         Open count:        2\n\
         Event number:      2\n\
         Major, minor:      254, 0\n\
         Number of targets: 1\n\
         UUID: NEWUUID\n\
         \n"
    );
    let mut c = info("c", 2, "");
    c.live_table = false;
    c.target_count = 0;
    assert!(c.long_form().contains("Tables present:    None\n"));
    c.inactive_table = true;
    assert!(c.long_form().contains("Tables present:    INACTIVE\n"));
}

#[test]
fn info_from_header_flags() {
    let mut h = DmIoctl::new();
    h.flags = flags::ACTIVE_PRESENT | flags::SUSPEND | flags::READONLY | flags::EXISTS;
    h.dev = udm_ioctl::encode_dev(254, 300);
    h.name = "x".into();
    let i = DeviceInfo::from_header(&h);
    assert_eq!((i.major, i.minor), (254, 300));
    assert_eq!(i.attr(), "L-sr");
    assert_eq!(i.tables_loaded(), "Live");
    assert_eq!(i.to_json()["state"], "SUSPENDED");
}

#[test]
fn report_default_columns() {
    let mut r = Report::new(None, false, None).unwrap();
    r.add_row(&RowData {
        info: info("a", 0, ""),
        ..Default::default()
    });
    r.add_row(&RowData {
        info: info("b", 1, "UUID-B-1234"),
        ..Default::default()
    });
    let mut c = info("c", 2, "");
    c.live_table = false;
    c.target_count = 0;
    r.add_row(&RowData {
        info: c,
        ..Default::default()
    });
    assert_eq!(
        r.render(),
        "Name             Maj Min Stat Open Targ Event  UUID                            \n\
         a                254   0 L--w    0    1      0                                 \n\
         b                254   1 L--w    0    1      0 UUID-B-1234                     \n\
         c                254   2 ---w    0    0      0                                 \n"
    );
}

#[test]
fn report_widths_grow_with_values() {
    let mut r = Report::new(Some("+devno"), false, None).unwrap();
    let long = "averyveryverylongdevicenamethatexceedssixteen";
    let uuid = "LVM-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    r.add_row(&RowData {
        info: info(long, 2, uuid),
        ..Default::default()
    });
    r.add_row(&RowData {
        info: info("zz", 1, "ZZUUID"),
        ..Default::default()
    });
    assert_eq!(
        r.render(),
        format!(
            "Name                                          Maj Min Stat Open Targ Event  UUID                                                   DevNo\n\
             {long} 254   2 L--w    0    1      0 {uuid} 254:2\n\
             zz                                            254   1 L--w    0    1      0 ZZUUID                                                 254:1\n"
        )
    );
}

#[test]
fn report_noheadings_separator_and_fields() {
    let mut r = Report::new(None, true, None).unwrap();
    r.add_row(&RowData {
        info: info("a", 0, ""),
        ..Default::default()
    });
    assert_eq!(r.render(), "a:254:0:L--w:0:1:0:\n");

    let mut r = Report::new(
        Some("name,attr,suspended,readonly,tables_loaded,devno"),
        false,
        Some(":"),
    )
    .unwrap();
    r.add_row(&RowData {
        info: info("a", 0, ""),
        ..Default::default()
    });
    assert_eq!(
        r.render(),
        "Name:Stat:Suspended:Read-only:Tables:DevNo\na:L--w:Active:Writeable:Live:254:0\n"
    );

    let mut r = Report::new(Some("name,attr,readonly"), false, None).unwrap();
    let mut ro = info("ro", 3, "");
    ro.read_only = true;
    r.add_row(&RowData {
        info: ro,
        ..Default::default()
    });
    assert_eq!(
        r.render(),
        "Name             Stat Read-only\nro               L--r Read-only\n"
    );

    let mut r = Report::new(Some("suspended"), true, None).unwrap();
    r.add_row(&RowData {
        info: info("a", 0, ""),
        ..Default::default()
    });
    assert_eq!(r.render(), "Active\n");
    assert_eq!(Report::new(None, false, None).unwrap().render(), "");

    let e = Report::new(Some("name,bogus"), false, None).unwrap_err();
    assert!(e.starts_with("Mapped Device Name Fields\n-------------------------\n  name_all              - All fields in this section.\n"));
    assert!(e.ends_with(" \nUnrecognised field: bogus"));
}

#[test]
fn report_deps_and_tree_fields() {
    let mut r = Report::new(
        Some("name,devnos_used,blkdevs_used,device_count,devs_used,device_ref_count,names_using_dev,devnos_using_dev"),
        false,
        None,
    )
    .unwrap();
    assert_eq!(r.needs(), report::Needs::Tree);
    r.add_row(&RowData {
        info: info("base", 0, ""),
        deps: vec![(7, 0)],
        deps_blk_names: vec!["loop0".into()],
        devs_used: vec![],
        ref_names: vec!["top".into(), "top2".into()],
        ref_devnos: vec![(254, 2), (254, 3)],
        ..Default::default()
    });
    r.add_row(&RowData {
        info: info("top", 2, ""),
        deps: vec![(7, 0), (254, 1), (254, 0)],
        deps_blk_names: vec!["loop0".into(), "dm-1".into(), "dm-0".into()],
        devs_used: vec!["zz".into(), "base".into()],
        ..Default::default()
    });
    assert_eq!(
        r.render(),
        "Name             DevNosUsed       BlkDevNamesUsed  #Devs DevNamesUsed     #Refs RefNames RefDevNos  \n\
         base             7:0              loop0                1                      2 top,top2 254:2,254:3\n\
         top              7:0,254:1,254:0  loop0,dm-1,dm-0      3 zz,base              0                     \n"
    );
    let j = r.to_json();
    assert_eq!(j[0]["device_count"], 1);
    assert_eq!(j[1]["devs_used"], "zz,base");
}

#[test]
fn lines_for_ls_status_deps_targets_version() {
    assert_eq!(ls_line("a", 254, 0, None), "a\t(254:0)");
    assert_eq!(ls_line("a", 254, 0, Some("dm-0")), "a\t(dm-0)");
    assert_eq!(ls_target_line("b", 254, 1), "b\t(254, 1)");
    let s = udm_ioctl::TargetSpec {
        sector_start: 0,
        length: 100,
        status: 0,
        target_type: "zero".into(),
        params: String::new(),
    };
    assert_eq!(target_line(&s), "0 100 zero ");
    assert_eq!(deps_line(&[]), "0 dependencies\t:");
    let e = [deps_entry(7, 0, None), deps_entry(254, 1, Some("zz"))];
    assert_eq!(deps_line(&e), "2 dependencies\t: (7, 0) (zz)");
    assert_eq!(
        target_version_line("zero", [1, 2, 0]),
        "zero             v1.2.0"
    );
    assert_eq!(
        target_version_line("snapshot-origin", [1, 9, 0]),
        "snapshot-origin  v1.9.0"
    );
    assert!(version_lines([4, 48, 0]).ends_with("\nDriver version:    4.48.0\n"));
    assert!(version_lines([4, 48, 0]).starts_with("Library version:   udmsetup "));
    assert_eq!(concise_quote("a,b;c\\d"), "a\\,b\\;c\\\\d");
}

#[test]
fn key_masking() {
    let p = "aes-cbc-essiv:sha256 0123456789abcdef 0 7:0 0";
    assert_eq!(
        mask_keys("crypt", p),
        "aes-cbc-essiv:sha256 0000000000000000 0 7:0 0"
    );
    let k = "aes-cbc-essiv:sha256 :32:logon:foo 0 7:0 0";
    assert_eq!(mask_keys("crypt", k), k);
    assert_eq!(mask_keys("linear", "7:0 0"), "7:0 0");
    assert_eq!(mask_keys("crypt", "only"), "only");
    let i = "7:0 0 32 J 3 internal_hash:hmac(sha256):abcd journal_crypt:ctr(aes):1234 journal_mac:hmac(sha256):ff";
    assert_eq!(
        mask_keys("integrity", i),
        "7:0 0 32 J 3 internal_hash:hmac(sha256):0000 journal_crypt:ctr(aes):0000 journal_mac:hmac(sha256):00"
    );
    let nokey = "7:0 0 32 J 1 internal_hash:crc32c";
    assert_eq!(mask_keys("integrity", nokey), nokey);
}

/// The stacked setup from the VM: base over loop0, top over loop0, zz and
/// base, top2 over base.
fn stacked() -> DepGraph {
    let facts = |ma: u32, mi: u32| -> DevFacts {
        let dm = |name: &str, uuid: &str, deps: Vec<(u32, u32)>, open| DevFacts {
            info: Some(DeviceInfo {
                open_count: open,
                ..info(name, mi, uuid)
            }),
            deps,
            blkdevname: Some(format!("dm-{mi}")),
            path: None,
        };
        match (ma, mi) {
            (254, 0) => dm("base", "", vec![(7, 0)], 2),
            (254, 1) => dm("zz", "ZZUUID", vec![], 1),
            (254, 2) => dm("top", "", vec![(7, 0), (254, 1), (254, 0)], 0),
            (254, 3) => dm("top2", "", vec![(254, 0)], 0),
            _ => DevFacts {
                info: None,
                deps: vec![],
                blkdevname: Some("loop0".into()),
                path: None,
            },
        }
    };
    DepGraph::build(&[(254, 0), (254, 2), (254, 3), (254, 1)], &facts)
}

fn tree(opts: &str) -> String {
    render(
        &stacked(),
        &TreeOptions::parse(Some(opts), false, 80).unwrap(),
    )
}

#[test]
fn tree_default_and_attributes() {
    assert_eq!(
        tree(""),
        "top (254:2)\n |- (7:0)\n |-zz (254:1)\n `-base (254:0)\n    `- (7:0)\n\
         top2 (254:3)\n `-base (254:0)\n    `- (7:0)\n"
    );
    assert_eq!(
        tree("ascii,uuid,active,rw,open,blkdevname"),
        "top <dm-2> (254:2) [ACTIVE, RW, 0, ]\n |- <loop0> (7:0)\n \
         |-zz <dm-1> (254:1) [ACTIVE, RW, 1, ZZUUID]\n `-base <dm-0> (254:0) [ACTIVE, RW, 2, ]\n    \
         `- <loop0> (7:0)\ntop2 <dm-3> (254:3) [ACTIVE, RW, 0, ]\n `-base <dm-0> (254:0) [ACTIVE, RW, 2, ]\n    \
         `- <loop0> (7:0)\n"
    );
}

#[test]
fn tree_inverted_compact_utf_nodevice() {
    assert_eq!(
        tree("inverted"),
        " (7:0)\n |-base (254:0)\n |  |-top (254:2)\n |  `-top2 (254:3)\n `-top (254:2)\n\
         zz (254:1)\n `-top (254:2)\n"
    );
    assert_eq!(
        tree("compact"),
        "top (254:2)-+- (7:0)\n            |-zz (254:1)\n            `-base (254:0)--- (7:0)\n\
         top2 (254:3)---base (254:0)--- (7:0)\n"
    );
    assert_eq!(
        tree("utf"),
        "top (254:2)\n \u{251c}\u{2500} (7:0)\n \u{251c}\u{2500}zz (254:1)\n \u{2514}\u{2500}base (254:0)\n    \
         \u{2514}\u{2500} (7:0)\ntop2 (254:3)\n \u{2514}\u{2500}base (254:0)\n    \u{2514}\u{2500} (7:0)\n"
    );
    assert_eq!(tree("nodevice"), "top\n |-zz\n `-base\ntop2\n `-base\n");
    assert!(TreeOptions::parse(Some("bogus"), false, 80).is_err());
}

#[test]
fn tree_truncates_at_the_width() {
    let long = "averyveryverylongdevicenamethatexceedssixteen";
    let uuid = "LVM-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let facts = |_: u32, mi: u32| DevFacts {
        info: Some(info(long, mi, uuid)),
        deps: vec![],
        blkdevname: Some(format!("dm-{mi}")),
        path: None,
    };
    let g = DepGraph::build(&[(254, 2)], &facts);
    let o = TreeOptions::parse(Some("ascii,uuid,active,rw,open,blkdevname"), false, 80).unwrap();
    assert_eq!(
        render(&g, &o),
        format!("{long} <dm-2> (254:2) [ACTIVE, RW, 0, LV...\n")
    );
    let o = TreeOptions::parse(Some("uuid,notrunc"), false, 80).unwrap();
    assert_eq!(render(&g, &o), format!("{long} (254:2) [{uuid}]\n"));
    // Users and used devices for the report.
    let s = stacked();
    let names: Vec<_> = s.users((254, 0)).iter().map(|n| n.name.clone()).collect();
    assert_eq!(names, ["top", "top2"]);
    let names: Vec<_> = s.used((254, 2)).iter().map(|n| n.name.clone()).collect();
    assert_eq!(names, ["zz", "base"]);
}

//! Checks the crate's layout against the kernel's own header: a small C
//! program compiled against <linux/dm-ioctl.h> prints every size, offset,
//! ioctl number and flag, and dumps structures filled with distinctive
//! values; the crate must agree byte for byte. Needs `cc` and the uapi
//! header (Debian/Ubuntu: `apt-get install gcc linux-libc-dev`).

use std::collections::HashMap;
use std::process::Command as Process;

use udm_ioctl::*;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/dm-ioctl.h>

#define P(k, v) printf("%s %llu\n", k, (unsigned long long)(v))
#define OFF(s, f) P("off." #s "." #f, offsetof(struct s, f))
#define SIZE(s) P("size." #s, sizeof(struct s))

static void dump(const char *k, const void *p, size_t n) {
    const unsigned char *b = p;
    printf("%s ", k);
    for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\n");
}

int main(void) {
    SIZE(dm_ioctl);
    OFF(dm_ioctl, version); OFF(dm_ioctl, data_size); OFF(dm_ioctl, data_start);
    OFF(dm_ioctl, target_count); OFF(dm_ioctl, open_count); OFF(dm_ioctl, flags);
    OFF(dm_ioctl, event_nr); OFF(dm_ioctl, padding); OFF(dm_ioctl, dev);
    OFF(dm_ioctl, name); OFF(dm_ioctl, uuid); OFF(dm_ioctl, data);
    SIZE(dm_target_spec);
    OFF(dm_target_spec, sector_start); OFF(dm_target_spec, length);
    OFF(dm_target_spec, status); OFF(dm_target_spec, next); OFF(dm_target_spec, target_type);
    SIZE(dm_target_deps);
    OFF(dm_target_deps, count); OFF(dm_target_deps, padding); OFF(dm_target_deps, dev);
    SIZE(dm_name_list);
    OFF(dm_name_list, dev); OFF(dm_name_list, next); OFF(dm_name_list, name);
    SIZE(dm_target_versions);
    OFF(dm_target_versions, next); OFF(dm_target_versions, version); OFF(dm_target_versions, name);
    SIZE(dm_target_msg);
    OFF(dm_target_msg, sector); OFF(dm_target_msg, message);

    P("const.DM_NAME_LEN", DM_NAME_LEN); P("const.DM_UUID_LEN", DM_UUID_LEN);
    P("const.DM_MAX_TYPE_NAME", DM_MAX_TYPE_NAME);
    P("const.DM_NAME_LIST_FLAG_HAS_UUID", DM_NAME_LIST_FLAG_HAS_UUID);
    P("const.DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID", DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID);
    P("const.DM_VERSION_MAJOR", DM_VERSION_MAJOR);

    P("ioctl.Version", DM_VERSION); P("ioctl.RemoveAll", DM_REMOVE_ALL);
    P("ioctl.ListDevices", DM_LIST_DEVICES); P("ioctl.DevCreate", DM_DEV_CREATE);
    P("ioctl.DevRemove", DM_DEV_REMOVE); P("ioctl.DevRename", DM_DEV_RENAME);
    P("ioctl.DevSuspend", DM_DEV_SUSPEND); P("ioctl.DevStatus", DM_DEV_STATUS);
    P("ioctl.DevWait", DM_DEV_WAIT); P("ioctl.TableLoad", DM_TABLE_LOAD);
    P("ioctl.TableClear", DM_TABLE_CLEAR); P("ioctl.TableDeps", DM_TABLE_DEPS);
    P("ioctl.TableStatus", DM_TABLE_STATUS); P("ioctl.ListVersions", DM_LIST_VERSIONS);
    P("ioctl.TargetMsg", DM_TARGET_MSG); P("ioctl.DevSetGeometry", DM_DEV_SET_GEOMETRY);
    P("ioctl.DevArmPoll", DM_DEV_ARM_POLL); P("ioctl.GetTargetVersion", DM_GET_TARGET_VERSION);

    P("flag.READONLY", DM_READONLY_FLAG); P("flag.SUSPEND", DM_SUSPEND_FLAG);
    P("flag.PERSISTENT_DEV", DM_PERSISTENT_DEV_FLAG); P("flag.STATUS_TABLE", DM_STATUS_TABLE_FLAG);
    P("flag.ACTIVE_PRESENT", DM_ACTIVE_PRESENT_FLAG); P("flag.INACTIVE_PRESENT", DM_INACTIVE_PRESENT_FLAG);
    P("flag.BUFFER_FULL", DM_BUFFER_FULL_FLAG); P("flag.SKIP_BDGET", DM_SKIP_BDGET_FLAG);
    P("flag.SKIP_LOCKFS", DM_SKIP_LOCKFS_FLAG); P("flag.NOFLUSH", DM_NOFLUSH_FLAG);
    P("flag.QUERY_INACTIVE_TABLE", DM_QUERY_INACTIVE_TABLE_FLAG);
    P("flag.UEVENT_GENERATED", DM_UEVENT_GENERATED_FLAG); P("flag.UUID", DM_UUID_FLAG);
    P("flag.SECURE_DATA", DM_SECURE_DATA_FLAG); P("flag.DATA_OUT", DM_DATA_OUT_FLAG);
    P("flag.DEFERRED_REMOVE", DM_DEFERRED_REMOVE); P("flag.INTERNAL_SUSPEND", DM_INTERNAL_SUSPEND_FLAG);
    P("flag.IMA_MEASUREMENT", DM_IMA_MEASUREMENT_FLAG);

    struct dm_ioctl d;
    memset(&d, 0, sizeof d);
    d.version[0] = 0x04030201; d.version[1] = 0x14131211; d.version[2] = 0x24232221;
    d.data_size = 0x34333231; d.data_start = 0x44434241; d.target_count = 0x54535251;
    d.open_count = -0x63646566; d.flags = 0x74737271; d.event_nr = 0x84838281;
    d.dev = 0x9c9b9a9998979695ULL;
    strcpy(d.name, "name-\xc3\xa9-0123456789");
    strcpy(d.uuid, "LVM-uuid-abcdefghijklmnopqrstuvwxyz");
    dump("bytes.dm_ioctl", &d, sizeof d);

    struct { struct dm_target_spec s; char p[16]; } t;
    memset(&t, 0, sizeof t);
    t.s.sector_start = 0x0807060504030201ULL; t.s.length = 0x1817161514131211ULL;
    t.s.status = -2; t.s.next = 56; strcpy(t.s.target_type, "striped");
    strcpy(t.p, "2 8 7:0 0");
    dump("bytes.dm_target_spec", &t, 56);
    return 0;
}
"#;

fn run_c_probe() -> HashMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("probe.c");
    let exe = dir.path().join("probe");
    std::fs::write(&src, PROGRAM).unwrap();
    let hint = "this test needs a C compiler and the kernel uapi headers: \
                install gcc and linux-libc-dev (apt-get install gcc linux-libc-dev)";
    let out = Process::new("cc")
        .arg("-std=c11")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cc ({e}); {hint}"));
    assert!(
        out.status.success(),
        "cc failed to build the <linux/dm-ioctl.h> probe:\n{}\n{hint}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Process::new(&exe).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn num(m: &HashMap<String, String>, k: &str) -> u64 {
    m.get(k)
        .unwrap_or_else(|| panic!("probe printed no {k}"))
        .parse()
        .unwrap()
}

fn hex(m: &HashMap<String, String>, k: &str) -> Vec<u8> {
    let s = &m[k];
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn layout_numbers_and_flags_match_the_uapi_header() {
    let m = run_c_probe();

    assert_eq!(num(&m, "size.dm_ioctl"), HEADER_SIZE as u64);
    assert_eq!(num(&m, "off.dm_ioctl.data"), HEADER_MIN as u64);
    assert_eq!(num(&m, "const.DM_NAME_LEN"), NAME_LEN as u64);
    assert_eq!(num(&m, "const.DM_UUID_LEN"), UUID_LEN as u64);
    assert_eq!(num(&m, "const.DM_MAX_TYPE_NAME"), MAX_TYPE_NAME as u64);
    assert_eq!(num(&m, "const.DM_VERSION_MAJOR"), u64::from(VERSION[0]));
    assert_eq!(
        num(&m, "const.DM_NAME_LIST_FLAG_HAS_UUID"),
        u64::from(NAME_LIST_FLAG_HAS_UUID)
    );
    assert_eq!(
        num(&m, "const.DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID"),
        u64::from(NAME_LIST_FLAG_DOESNT_HAVE_UUID)
    );

    // Payload structures: the offsets the codecs write at.
    assert_eq!(num(&m, "size.dm_target_spec"), SPEC_SIZE as u64);
    for (f, off) in [
        ("sector_start", 0),
        ("length", 8),
        ("status", 16),
        ("next", 20),
        ("target_type", 24),
    ] {
        assert_eq!(num(&m, &format!("off.dm_target_spec.{f}")), off, "{f}");
    }
    for (k, v) in [
        ("size.dm_target_deps", 8),
        ("off.dm_target_deps.count", 0),
        ("off.dm_target_deps.padding", 4),
        ("off.dm_target_deps.dev", 8),
        ("off.dm_name_list.dev", 0),
        ("off.dm_name_list.next", 8),
        ("off.dm_name_list.name", 12),
        ("size.dm_target_versions", 16),
        ("off.dm_target_versions.next", 0),
        ("off.dm_target_versions.version", 4),
        ("off.dm_target_versions.name", 16),
        ("size.dm_target_msg", 8),
        ("off.dm_target_msg.sector", 0),
        ("off.dm_target_msg.message", 8),
    ] {
        assert_eq!(num(&m, k), v, "{k}");
    }

    for cmd in Command::ALL {
        let k = format!("ioctl.{cmd:?}");
        assert_eq!(num(&m, &k), u64::from(cmd.ioctl_number()), "{k}");
        assert_eq!(Command::from_ioctl_number(num(&m, &k) as u32), Ok(cmd));
    }

    for (name, ours) in [
        ("READONLY", flags::READONLY),
        ("SUSPEND", flags::SUSPEND),
        ("PERSISTENT_DEV", flags::PERSISTENT_DEV),
        ("STATUS_TABLE", flags::STATUS_TABLE),
        ("ACTIVE_PRESENT", flags::ACTIVE_PRESENT),
        ("INACTIVE_PRESENT", flags::INACTIVE_PRESENT),
        ("BUFFER_FULL", flags::BUFFER_FULL),
        ("SKIP_BDGET", flags::SKIP_BDGET),
        ("SKIP_LOCKFS", flags::SKIP_LOCKFS),
        ("NOFLUSH", flags::NOFLUSH),
        ("QUERY_INACTIVE_TABLE", flags::QUERY_INACTIVE_TABLE),
        ("UEVENT_GENERATED", flags::UEVENT_GENERATED),
        ("UUID", flags::UUID),
        ("SECURE_DATA", flags::SECURE_DATA),
        ("DATA_OUT", flags::DATA_OUT),
        ("DEFERRED_REMOVE", flags::DEFERRED_REMOVE),
        ("INTERNAL_SUSPEND", flags::INTERNAL_SUSPEND),
        ("IMA_MEASUREMENT", flags::IMA_MEASUREMENT),
    ] {
        assert_eq!(num(&m, &format!("flag.{name}")), u64::from(ours), "{name}");
    }
}

#[test]
fn encoded_header_matches_c_struct_byte_for_byte() {
    let m = run_c_probe();
    let h = DmIoctl {
        version: [0x04030201, 0x14131211, 0x24232221],
        data_size: 0x34333231,
        data_start: 0x44434241,
        target_count: 0x54535251,
        open_count: -0x63646566,
        flags: 0x74737271,
        event_nr: 0x84838281,
        dev: 0x9c9b9a9998979695,
        name: "name-é-0123456789".into(),
        uuid: "LVM-uuid-abcdefghijklmnopqrstuvwxyz".into(),
    };
    let ours = h.encode().unwrap();
    let theirs = hex(&m, "bytes.dm_ioctl");
    assert_eq!(theirs.len(), HEADER_SIZE);
    // Field by field first, for a readable failure, then the whole struct.
    for (f, len) in [
        ("version", 12),
        ("data_size", 4),
        ("data_start", 4),
        ("target_count", 4),
        ("open_count", 4),
        ("flags", 4),
        ("event_nr", 4),
        ("padding", 4),
        ("dev", 8),
        ("name", NAME_LEN),
        ("uuid", UUID_LEN),
    ] {
        let off = num(&m, &format!("off.dm_ioctl.{f}")) as usize;
        assert_eq!(ours[off..off + len], theirs[off..off + len], "field {f}");
    }
    assert_eq!(ours.to_vec(), theirs);
    assert_eq!(DmIoctl::decode(&theirs).unwrap(), h);
}

#[test]
fn encoded_target_spec_matches_c_struct_byte_for_byte() {
    let m = run_c_probe();
    let spec = TargetSpec {
        sector_start: 0x0807060504030201,
        length: 0x1817161514131211,
        status: -2,
        target_type: "striped".into(),
        params: "2 8 7:0 0".into(),
    };
    let ours = encode_table_load(std::slice::from_ref(&spec)).unwrap();
    assert_eq!(ours, hex(&m, "bytes.dm_target_spec"));
    assert_eq!(decode_table_load(&ours, 1).unwrap(), vec![spec]);
}

//! Hand-made byte vectors for every payload type, built field by field
//! from the uapi layout (little-endian hosts), including the BUFFER_FULL
//! edges and the empty LIST_DEVICES convention.
#![cfg(target_endian = "little")]

use udm_ioctl::*;

fn u32le(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn u64le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn padded(s: &str, len: usize) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.resize(len, 0);
    v
}
fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}
fn spec(start: u64, len: u64, ty: &str, params: &str) -> TargetSpec {
    TargetSpec {
        sector_start: start,
        length: len,
        status: 0,
        target_type: ty.into(),
        params: params.into(),
    }
}
/// A raw spec record: header with `next`, then params + NUL padded to `total`.
fn raw_spec(start: u64, len: u64, next: u32, ty: &str, params: &str, total: usize) -> Vec<u8> {
    cat(&[
        u64le(start),
        u64le(len),
        u32le(0),
        u32le(next),
        padded(ty, 16),
        padded(params, total - 40),
    ])
}

// ---------------------------------------------------------------- header

#[test]
fn header_new_and_field_offsets() {
    let h = DmIoctl::new();
    assert_eq!(h.version, [4, 48, 0]);
    assert_eq!((h.data_start, h.data_size), (312, 312));
    let mut h = DmIoctl::new();
    h.flags = flags::EXISTS | flags::UUID;
    h.dev = encode_dev(254, 3);
    h.name = "vg-lv".into();
    h.uuid = "LVM-x".into();
    h.event_nr = 7;
    let b = h.encode().unwrap();
    assert_eq!(b[0..12], cat(&[u32le(4), u32le(48), u32le(0)])[..]);
    assert_eq!(b[12..20], cat(&[u32le(312), u32le(312)])[..]);
    assert_eq!(b[28..32], u32le(0x4004)[..]);
    assert_eq!(b[32..36], u32le(7)[..]);
    assert_eq!(b[36..40], [0; 4]);
    assert_eq!(b[40..48], u64le(0xfe03)[..]);
    assert_eq!(b[48..48 + 128], padded("vg-lv", 128)[..]);
    assert_eq!(b[176..176 + 129], padded("LVM-x", 129)[..]);
    assert_eq!(b[305..312], [0; 7]);
}

#[test]
fn header_name_and_uuid_limits() {
    let mut h = DmIoctl::new();
    h.name = "n".repeat(127);
    h.uuid = "u".repeat(128);
    let b = h.encode().unwrap();
    assert_eq!(DmIoctl::decode(&b).unwrap(), h);
    h.name = "n".repeat(128);
    assert_eq!(h.encode().unwrap_err().errno(), libc::EINVAL);
    h.name = "ok".into();
    h.uuid = "u".repeat(129);
    assert!(matches!(h.encode(), Err(DecodeError::BadUuid { len: 129 })));
    h.uuid = "a\0b".into();
    assert!(h.encode().is_err());

    // The kernel forces byte 127 of name and byte 128 of uuid to NUL.
    let mut raw = DmIoctl::new().encode().unwrap().to_vec();
    raw[48..176].fill(b'x');
    raw[176..305].fill(b'y');
    let d = DmIoctl::decode(&raw).unwrap();
    assert_eq!(d.name, "x".repeat(127));
    assert_eq!(d.uuid, "y".repeat(128));
    // Invalid UTF-8 is replaced, not an error.
    raw[48] = 0xff;
    raw[49] = 0;
    assert_eq!(DmIoctl::decode(&raw).unwrap().name, "\u{fffd}");
}

#[test]
fn header_decode_needs_305_bytes() {
    let b = DmIoctl::new().encode().unwrap();
    assert!(DmIoctl::decode(&b[..305]).is_ok());
    let e = DmIoctl::decode(&b[..304]).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
}

#[test]
fn request_split_and_reply_buffers() {
    let mut h = DmIoctl::new();
    h.name = "dev".into();
    h.data_start = 999; // overwritten
    let buf = request_buffer(&h, b"abc\0", 16 * 1024).unwrap();
    assert_eq!(buf.len(), 16 * 1024);
    assert_eq!(buf[12..20], cat(&[u32le(16384), u32le(312)])[..]);
    assert_eq!(&buf[312..316], b"abc\0");
    assert!(buf[316..].iter().all(|&b| b == 0));
    let (hh, payload) = split_buffer(&buf).unwrap();
    assert_eq!(hh.name, "dev");
    assert_eq!(payload.len(), 16384 - 312);
    assert_eq!(&payload[..4], b"abc\0");

    // Payload larger than the capacity grows the buffer.
    let buf = request_buffer(&h, &[1; 100], 0).unwrap();
    assert_eq!(buf.len(), 412);

    // data_size bounds.
    let mut raw = request_buffer(&h, &[], 0).unwrap();
    raw[12..16].copy_from_slice(&u32le(304));
    assert!(matches!(
        split_buffer(&raw),
        Err(DecodeError::BadDataSize { .. })
    ));
    raw[12..16].copy_from_slice(&u32le(313));
    assert!(split_buffer(&raw).is_err());
    raw[12..16].copy_from_slice(&u32le(305));
    let (_, p) = split_buffer(&raw).unwrap();
    assert!(
        p.is_empty(),
        "data_start 312 >= data_size 305 gives no payload"
    );
    // data_start inside the header is allowed by split_buffer (RENAME uses >= 305).
    raw[12..16].copy_from_slice(&u32le(312));
    raw[16..20].copy_from_slice(&u32le(308));
    assert_eq!(split_buffer(&raw).unwrap().1.len(), 4);
    assert!(request_buffer(&h, &[], (1 << 30) + 1).is_err());

    let r = reply_buffer(&h, b"xyz").unwrap();
    assert_eq!(r.len(), 315);
    assert_eq!(r[12..20], cat(&[u32le(315), u32le(312)])[..]);
    assert_eq!(split_buffer(&r).unwrap().1, b"xyz");
}

// ---------------------------------------------------------------- commands

#[test]
fn command_numbers_names_and_params() {
    assert_eq!(Command::Version.ioctl_number(), 0xC138FD00);
    assert_eq!(Command::GetTargetVersion.ioctl_number(), 0xC138FD11);
    assert_eq!(Command::from_nr(18), None);
    for bad in [
        0xC138FE00u32,
        0xC139FD00,
        0x8138FD00,
        0x0000FD12,
        0xC138FD12,
        0xC138FDFF,
    ] {
        let e = Command::from_ioctl_number(bad).unwrap_err();
        assert_eq!(e.errno(), libc::ENOTTY, "{bad:#x}");
    }
    let np: Vec<_> = Command::ALL.iter().filter(|c| c.no_params()).collect();
    assert_eq!(
        np,
        [
            &Command::RemoveAll,
            &Command::DevCreate,
            &Command::DevRemove,
            &Command::DevSuspend,
            &Command::DevStatus,
            &Command::TableClear,
            &Command::DevArmPoll
        ]
    );
    let names: Vec<_> = Command::ALL.iter().map(|c| c.libdm_name()).collect();
    assert_eq!(
        names,
        [
            "version",
            "remove_all",
            "names",
            "create",
            "remove",
            "rename",
            "suspend",
            "info",
            "waitevent",
            "reload",
            "clear",
            "deps",
            "status",
            "versions",
            "message",
            "setgeometry",
            "armpoll",
            "target-version"
        ]
    );
    assert_eq!(Command::TargetMsg.min_version(), [4, 2, 0]);
    assert_eq!(Command::GetTargetVersion.min_version(), [4, 41, 0]);
    assert_eq!(Command::DevCreate.min_version(), [4, 0, 0]);
}

#[test]
fn dev_encoding() {
    assert_eq!(encode_dev(254, 0), 0xfe00);
    assert_eq!(encode_dev(8, 16), 0x0810);
    assert_eq!(
        encode_dev(253, 0x12345),
        0x45 | (253 << 8) | (0x12300 << 12)
    );
    assert_eq!(decode_dev(0x0810), (8, 16));
    assert_eq!(decode_dev(encode_dev(4095, 0xfffff)), (4095, 0xfffff));
}

// ---------------------------------------------------------------- TABLE_LOAD

fn two_spec_load() -> Vec<u8> {
    cat(&[
        raw_spec(0, 100, 48, "linear", "7:0 0", 48),
        raw_spec(100, 50, 48, "zero", "", 48),
    ])
}

#[test]
fn table_load_bytes() {
    let specs = [spec(0, 100, "linear", "7:0 0"), spec(100, 50, "zero", "")];
    assert_eq!(encode_table_load(&specs).unwrap(), two_spec_load());
    assert_eq!(decode_table_load(&two_spec_load(), 2).unwrap(), specs);
    let long = [spec(0, 1, "sixteen-chars-xx", "")];
    assert!(matches!(
        encode_table_load(&long),
        Err(DecodeError::TypeTooLong { index: 1, .. })
    ));
    assert!(encode_table_load(&[spec(0, 1, "zero", "a\0b")]).is_err());
    // A 15-byte type fills the field but for its NUL.
    let b = encode_table_load(&[spec(0, 1, "fifteen-chars-x", "")]).unwrap();
    assert_eq!(&b[24..40], b"fifteen-chars-x\0");
}

fn spec_error(r: Result<Vec<TargetSpec>, DecodeError>) -> (usize, String) {
    match r {
        Err(DecodeError::Spec { index, reason }) => (index, reason),
        other => panic!("expected a spec error, got {other:?}"),
    }
}

#[test]
fn table_load_framing_errors() {
    let good = two_spec_load();
    assert_eq!(decode_table_load(&good, 0), Err(DecodeError::NoTargets));
    assert_eq!(
        decode_table_load(&good, 1_048_577).unwrap_err().errno(),
        libc::EOVERFLOW
    );
    // Three specs claimed, two present: the third's `next` runs off the end.
    let (i, why) = spec_error(decode_table_load(&good, 3));
    assert_eq!(i, 3);
    assert!(why.contains("beyond end"), "{why}");
    // Only a spec header, no parameter byte.
    let (i, _) = spec_error(decode_table_load(&good[..40], 1));
    assert_eq!(i, 1);
    // Misaligned next.
    let mut b = good.clone();
    b[20..24].copy_from_slice(&u32le(52));
    b.extend_from_slice(&[0; 8]);
    let (i, why) = spec_error(decode_table_load(&b, 2));
    assert_eq!((i, why.contains("8-byte aligned")), (2, true), "{why}");
    // Next spec starting inside the previous parameters.
    let mut b = good.clone();
    b[20..24].copy_from_slice(&u32le(40));
    let (i, why) = spec_error(decode_table_load(&b, 2));
    assert_eq!((i, why.contains("overlaps")), (2, true), "{why}");
    // Next spec starting right after the previous NUL, unaligned: 46 is the
    // minimum allowed by overlap rules but fails alignment.
    let mut b = good.clone();
    b[20..24].copy_from_slice(&u32le(46));
    let (_, why) = spec_error(decode_table_load(&b, 2));
    assert!(why.contains("aligned"), "{why}");
    // Parameters not NUL-terminated inside the buffer.
    let mut b = raw_spec(0, 8, 48, "zero", "", 48);
    b[40..48].fill(b'a');
    let (i, why) = spec_error(decode_table_load(&b, 1));
    assert_eq!((i, why.contains("NUL")), (1, true), "{why}");
    // The type field is not required to hold a NUL.
    let mut b = raw_spec(0, 8, 48, "", "x", 48);
    b[24..40].copy_from_slice(b"abcdefghijklmnop");
    assert_eq!(
        decode_table_load(&b, 1).unwrap()[0].target_type,
        "abcdefghijklmnop"
    );
}

#[test]
fn table_load_request_checks_data_start() {
    let mut h = DmIoctl::new();
    h.target_count = 2;
    let buf = request_buffer(&h, &two_spec_load(), 0).unwrap();
    let (hh, specs) = decode_table_load_request(&buf).unwrap();
    assert_eq!((hh.target_count, specs.len()), (2, 2));
    let mut bad = buf.clone();
    bad[16..20].copy_from_slice(&u32le(304));
    let (i, why) = spec_error(decode_table_load_request(&bad).map(|x| x.1));
    assert_eq!((i, why.contains("'struct dm_ioctl'")), (1, true), "{why}");
    let mut bad = buf.clone();
    bad[16..20].copy_from_slice(&u32le(316));
    assert!(decode_table_load_request(&bad).is_err());
    let mut none = buf.clone();
    none[20..24].copy_from_slice(&u32le(0));
    assert_eq!(
        decode_table_load_request(&none).unwrap_err(),
        DecodeError::NoTargets
    );
}

// ---------------------------------------------------------------- TABLE_STATUS

#[test]
fn table_status_cumulative_next() {
    let specs = [
        spec(0, 100, "linear", "7:0 0"),
        spec(100, 50, "zero", ""),
        spec(150, 8, "error", ""),
    ];
    let (b, full) = encode_table_status(&specs, 16 * 1024);
    assert!(!full);
    let expect = cat(&[
        raw_spec(0, 100, 48, "linear", "7:0 0", 48),
        raw_spec(100, 50, 96, "zero", "", 48),
        raw_spec(150, 8, 144, "error", "", 41),
    ]);
    assert_eq!(b, expect, "data ends at the last NUL, unpadded");
    assert_eq!(decode_table_status(&b, 3).unwrap(), specs);
}

#[test]
fn table_status_buffer_full_edges() {
    let specs = [spec(0, 8, "zero", ""), spec(8, 8, "linear", "abcdef")];
    // Second spec starts at 48: it needs 48 + 40 + 6 + 1 = 95 < capacity.
    let (b, full) = encode_table_status(&specs, 96);
    assert!(!full);
    assert_eq!(b.len(), 95);
    // strlen + 1 == remaining: counts as full, the partial spec is dropped.
    let (b, full) = encode_table_status(&specs, 95);
    assert!(full);
    assert_eq!(b.len(), 41);
    assert_eq!(decode_table_status(&b, 1).unwrap(), specs[..1]);
    // Exactly 40 bytes left before the second spec: full.
    assert_eq!(encode_table_status(&specs, 88), (b.clone(), true));
    // 41 bytes: the spec header fits, the string still does not.
    assert!(encode_table_status(&specs, 89).1);
    // Nothing fits at all.
    assert_eq!(encode_table_status(&specs, 41), (vec![], true));
    assert_eq!(encode_table_status(&specs, 0), (vec![], true));
    // A table with no targets writes nothing.
    assert_eq!(encode_table_status(&[], 0), (vec![], false));
    // Long type names are cut to 15 bytes, as strncpy does.
    let (b, _) = encode_table_status(&[spec(0, 1, "abcdefghijklmnopq", "")], 1024);
    assert_eq!(&b[24..40], b"abcdefghijklmno\0");
    // The status field is always written as 0.
    let mut s = spec(0, 1, "zero", "");
    s.status = 5;
    assert_eq!(encode_table_status(&[s], 100).0[16..20], [0; 4]);
}

#[test]
fn table_status_decode_errors() {
    let (b, _) = encode_table_status(&[spec(0, 8, "zero", ""), spec(8, 8, "zero", "")], 1024);
    assert!(decode_table_status(&b, 3).is_err());
    let mut loopy = b.clone();
    loopy[20..24].copy_from_slice(&u32le(0));
    assert!(
        decode_table_status(&loopy, 2).is_err(),
        "next must move forward"
    );
    assert!(decode_table_status(&b[..60], 2).is_err());
    assert_eq!(decode_table_status(&[], 0).unwrap(), vec![]);
}

// ---------------------------------------------------------------- LIST_DEVICES

fn entry(dev: u64, name: &str, ev: u32, uuid: Option<&str>) -> NameListEntry {
    NameListEntry {
        dev,
        name: name.into(),
        event_nr: ev,
        uuid: uuid.map(Into::into),
    }
}

#[test]
fn name_list_bytes_without_uuids() {
    let list = [entry(0xfe00, "a", 3, None), entry(0xfe01, "bcdef", 0, None)];
    let expect = cat(&[
        u64le(0xfe00),
        u32le(24),
        padded("a", 4),
        u32le(3),
        u32le(0),
        u64le(0xfe01),
        u32le(0),
        padded("bcdef", 12),
        u32le(0),
        u32le(0),
    ]);
    assert_eq!(encode_name_list(&list, false, 1024).unwrap(), expect);
    assert_eq!(decode_name_list(&expect).unwrap(), list);
    // Exactly enough space, then one byte short.
    assert!(encode_name_list(&list, false, expect.len()).is_some());
    assert!(encode_name_list(&list, false, expect.len() - 1).is_none());
}

#[test]
fn name_list_bytes_with_uuids() {
    let list = [
        entry(0xfe00, "a", 1, Some("U-1")),
        entry(0xfe01, "b", 2, None),
    ];
    let expect = cat(&[
        u64le(0xfe00),
        u32le(32),
        padded("a", 4),
        u32le(1),
        u32le(NAME_LIST_FLAG_HAS_UUID),
        padded("U-1", 8),
        u64le(0xfe01),
        u32le(0),
        padded("b", 4),
        u32le(2),
        u32le(NAME_LIST_FLAG_DOESNT_HAVE_UUID),
    ]);
    assert_eq!(encode_name_list(&list, true, 1024).unwrap(), expect);
    assert_eq!(decode_name_list(&expect).unwrap(), list);
    // Without the UUID flag, no uuids are sent and flags stay 0.
    let no = encode_name_list(&list, false, 1024).unwrap();
    assert_eq!(no.len(), 48);
    assert!(decode_name_list(&no)
        .unwrap()
        .iter()
        .all(|e| e.uuid.is_none()));
}

#[test]
fn empty_list_devices_convention() {
    // No devices: an empty payload (the client's buffer stays zero), but the
    // kernel still wants 8 bytes of room.
    assert_eq!(encode_name_list(&[], false, 16 * 1024), Some(vec![]));
    assert_eq!(encode_name_list(&[], true, 8), Some(vec![]));
    assert_eq!(encode_name_list(&[], false, 7), None);
    assert_eq!(decode_name_list(&[]).unwrap(), vec![]);
    assert_eq!(decode_name_list(&[0u8; 16 * 1024]).unwrap(), vec![]);
}

#[test]
fn name_list_decode_errors() {
    let list = [entry(0xfe00, "a", 3, None), entry(0xfe01, "b", 0, None)];
    let b = encode_name_list(&list, false, 1024).unwrap();
    assert!(decode_name_list(&b[..20]).is_err(), "truncated trailer");
    let mut back = b.clone();
    back[8..12].copy_from_slice(&u32le(8));
    assert!(decode_name_list(&back).is_err(), "next inside the record");
    let mut noterm = b[..24].to_vec();
    noterm[12..16].fill(b'z');
    assert!(decode_name_list(&noterm).is_err());
}

// ---------------------------------------------------------------- versions

#[test]
fn versions_bytes_and_capacity() {
    let v = [
        TargetVersion {
            name: "linear".into(),
            version: [1, 4, 0],
        },
        TargetVersion {
            name: "zero".into(),
            version: [1, 2, 0],
        },
    ];
    // Records: 16 + 7 -> 24, 16 + 5 -> 24; kernel sizes them 16+7+7 + 16+5+7 = 58.
    let expect = cat(&[
        u32le(24),
        u32le(1),
        u32le(4),
        u32le(0),
        padded("linear", 8),
        u32le(0),
        u32le(1),
        u32le(2),
        u32le(0),
        padded("zero", 8),
        vec![0; 10],
    ]);
    assert_eq!(encode_versions(&v, 4096).unwrap(), expect);
    assert_eq!(decode_versions(&expect).unwrap(), v);
    assert!(encode_versions(&v, 58).is_some());
    assert!(encode_versions(&v, 57).is_none());
    assert_eq!(encode_versions(&[], 0), Some(vec![]));
    assert_eq!(decode_versions(&[]).unwrap(), vec![]);
    let mut bad = expect.clone();
    bad[0..4].copy_from_slice(&u32le(8));
    assert!(decode_versions(&bad).is_err());
}

// ---------------------------------------------------------------- deps, strings, msg

#[test]
fn deps_bytes_and_capacity() {
    let devs = [0x700u64, 0xfe01];
    let expect = cat(&[u32le(2), u32le(0), u64le(0x700), u64le(0xfe01)]);
    assert_eq!(encode_deps(&devs, 24).unwrap(), expect);
    assert!(encode_deps(&devs, 23).is_none());
    assert_eq!(decode_deps(&expect).unwrap(), devs);
    assert_eq!(decode_deps(&[]).unwrap(), vec![]);
    assert_eq!(encode_deps(&[], 8).unwrap(), cat(&[u32le(0), u32le(0)]));
    assert!(decode_deps(&expect[..20]).is_err());
}

#[test]
fn strings_and_target_msg() {
    assert_eq!(encode_string("new-name"), b"new-name\0");
    assert_eq!(decode_string(b"abc\0junk").unwrap(), "abc");
    assert!(decode_string(b"abc").is_err());
    assert!(decode_string(b"").is_err());
    let m = encode_target_msg(0x1122, "@stats_list");
    assert_eq!(m, cat(&[u64le(0x1122), b"@stats_list\0".to_vec()]));
    assert_eq!(
        decode_target_msg(&m).unwrap(),
        (0x1122, "@stats_list".into())
    );
    assert!(decode_target_msg(&m[..m.len() - 1]).is_err());
    assert!(decode_target_msg(&m[..7]).is_err());
}

// ---------------------------------------------------------------- frames

/// FRAME_MAGIC (0x3144_4d55) in little-endian order: the bytes "UMD1".
const MAGIC: &[u8; 4] = b"UMD1";

#[test]
fn frame_bytes() {
    let r = RequestFrame {
        ioctl: Command::DevStatus.ioctl_number(),
        buffer: vec![1, 2, 3],
    };
    let b = r.encode();
    assert_eq!(
        b,
        cat(&[MAGIC.to_vec(), u32le(0xC138FD07), u32le(3), vec![1, 2, 3]])
    );
    for cut in 0..b.len() {
        assert_eq!(RequestFrame::decode(&b[..cut]).unwrap(), None, "cut {cut}");
    }
    let mut two = b.clone();
    two.extend_from_slice(&b);
    assert_eq!(RequestFrame::decode(&two).unwrap(), Some((r, 15)));

    let p = ReplyFrame {
        errno: libc::ENXIO,
        buffer: vec![9],
        detail: "line 2: gap".into(),
    };
    let b = p.encode();
    assert_eq!(
        b,
        cat(&[
            MAGIC.to_vec(),
            u32le(6),
            u32le(1),
            vec![9],
            u32le(11),
            b"line 2: gap".to_vec()
        ])
    );
    for cut in 0..b.len() {
        assert_eq!(ReplyFrame::decode(&b[..cut]).unwrap(), None, "cut {cut}");
    }
    assert_eq!(ReplyFrame::decode(&b).unwrap(), Some((p, b.len())));

    assert!(matches!(
        RequestFrame::decode(b"UDM1"),
        Err(DecodeError::BadMagic(_))
    ));
    assert!(
        RequestFrame::decode(b"XX").is_ok(),
        "too short to judge the magic yet"
    );
    let huge = cat(&[MAGIC.to_vec(), u32le(0), u32le(u32::MAX)]);
    assert!(matches!(
        RequestFrame::decode(&huge),
        Err(DecodeError::TooLarge { .. })
    ));
    let neg = cat(&[MAGIC.to_vec(), u32le(-1i32 as u32), u32le(0), u32le(0)]);
    assert!(ReplyFrame::decode(&neg).is_err());
}

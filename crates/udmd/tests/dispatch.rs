//! The dm-ioctl dispatcher fed raw request buffers: the kernel's checks and
//! corner cases that udmsetup never produces.

use udm_core::{DevRef, Engine, EngineConfig};
use udm_ioctl::{flags, request_buffer, split_buffer, Command, DmIoctl, HEADER_MIN, VERSION};
use udmd::control::{handle, ConnState};

fn engine() -> Engine {
    Engine::new(udm_targets::registry(), EngineConfig::default())
}

fn header(name: &str) -> DmIoctl {
    let mut h = DmIoctl::new();
    h.name = name.to_string();
    h
}

fn call(
    e: &Engine,
    cmd: Command,
    h: &DmIoctl,
    payload: &[u8],
    capacity: usize,
) -> (i32, DmIoctl, Vec<u8>, String) {
    let mut buf = request_buffer(h, payload, capacity).unwrap();
    let r = handle(e, cmd.ioctl_number(), &buf, &mut ConnState::default());
    if r.buffer.is_empty() {
        return (r.errno, DmIoctl::default(), Vec::new(), r.detail);
    }
    // As the framing documents: the reply is copied over the start of the
    // caller's buffer (what the kernel's copy_to_user would write).
    buf[..r.buffer.len()].copy_from_slice(&r.buffer);
    if r.errno != 0 {
        return (
            r.errno,
            DmIoctl::decode(&buf).unwrap(),
            Vec::new(),
            r.detail,
        );
    }
    let (rh, p) = split_buffer(&buf).unwrap();
    (r.errno, rh, p.to_vec(), r.detail)
}

/// `version[3]` as the kernel's check_version writes it back.
fn version_bytes() -> Vec<u8> {
    VERSION.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// The raw reply to one request buffer.
fn raw(e: &Engine, ioctl: u32, buf: &[u8]) -> udm_ioctl::ReplyFrame {
    handle(e, ioctl, buf, &mut ConnState::default())
}

fn active(e: &Engine, name: &str) {
    e.create(name, None, None).unwrap();
    e.load_text(&DevRef::name(name), "0 8 zero", false).unwrap();
    e.resume(&DevRef::name(name), false).unwrap();
}

#[test]
fn failed_command_copies_back_only_the_version() {
    let e = engine();
    e.create("dup", None, None).unwrap();
    let cases: Vec<(&str, u32, Vec<u8>, i32)> = vec![
        (
            "status of a missing device",
            Command::DevStatus.ioctl_number(),
            request_buffer(&header("missing"), &[], 16 << 10).unwrap(),
            libc::ENXIO,
        ),
        (
            "create of an existing name",
            Command::DevCreate.ioctl_number(),
            request_buffer(&header("dup"), &[], 16 << 10).unwrap(),
            libc::EBUSY,
        ),
        (
            "name and uuid together",
            Command::DevStatus.ioctl_number(),
            request_buffer(
                &DmIoctl {
                    uuid: "u".into(),
                    ..header("dup")
                },
                &[],
                4096,
            )
            .unwrap(),
            libc::EINVAL,
        ),
        (
            "a client minor above ours",
            Command::DevStatus.ioctl_number(),
            request_buffer(
                &DmIoctl {
                    version: [4, VERSION[1] + 1, 0],
                    ..header("dup")
                },
                &[],
                4096,
            )
            .unwrap(),
            libc::EINVAL,
        ),
        (
            "an unknown command number",
            0xC138_FD00 | 40,
            request_buffer(&header("dup"), &[], 4096).unwrap(),
            libc::ENOTTY,
        ),
        (
            "a data_size beyond the buffer",
            Command::DevStatus.ioctl_number(),
            {
                let mut b = request_buffer(&header("dup"), &[], 4096).unwrap();
                b[12..16].copy_from_slice(&8192u32.to_ne_bytes());
                b
            },
            libc::EINVAL,
        ),
    ];
    for (what, ioctl, buf, errno) in cases {
        let r = raw(&e, ioctl, &buf);
        assert_eq!(r.errno, errno, "{what}: {}", r.detail);
        assert_eq!(
            r.buffer,
            version_bytes(),
            "{what}: on failure the kernel writes back only version[3]"
        );
    }
    // Not a dm ioctl at all: the kernel returns ENOTTY before touching the buffer.
    let r = raw(
        &e,
        0x1234_5678,
        &request_buffer(&header("dup"), &[], 4096).unwrap(),
    );
    assert_eq!((r.errno, r.buffer.len()), (libc::ENOTTY, 0));
}

#[test]
fn version_copies_back_only_the_version() {
    let e = engine();
    let mut h = DmIoctl::new();
    h.version = [4, 0, 0];
    let r = raw(
        &e,
        Command::Version.ioctl_number(),
        &request_buffer(&h, &[], 16 << 10).unwrap(),
    );
    assert_eq!(r.errno, 0, "{}", r.detail);
    assert_eq!(r.buffer, version_bytes());
}

#[test]
fn remove_all_and_set_geometry_copy_back_only_the_version() {
    let e = engine();
    active(&e, "g");
    let r = raw(
        &e,
        Command::DevSetGeometry.ioctl_number(),
        &request_buffer(&header("g"), &udm_ioctl::encode_string("1 2 3 0"), 4096).unwrap(),
    );
    assert_eq!(r.errno, 0, "{}", r.detail);
    assert_eq!(
        r.buffer,
        version_bytes(),
        "SET_GEOMETRY sets data_size to 0"
    );
    let r = raw(
        &e,
        Command::RemoveAll.ioctl_number(),
        &request_buffer(&DmIoctl::new(), &[], 4096).unwrap(),
    );
    assert_eq!(r.errno, 0, "{}", r.detail);
    assert_eq!(r.buffer, version_bytes(), "REMOVE_ALL sets data_size to 0");
    assert!(e.list().is_empty());
}

#[test]
fn header_only_success_copies_back_305_bytes() {
    let e = engine();
    let mut buf = request_buffer(&header("h"), &[], 16 << 10).unwrap();
    let r = raw(&e, Command::DevCreate.ioctl_number(), &buf);
    assert_eq!(r.errno, 0, "{}", r.detail);
    assert_eq!(r.buffer.len(), HEADER_MIN);
    buf[..HEADER_MIN].copy_from_slice(&r.buffer);
    let h = DmIoctl::decode(&buf).unwrap();
    assert_eq!((h.data_size as usize, h.name.as_str()), (HEADER_MIN, "h"));
}

#[test]
fn resume_remove_rename_never_claim_a_uevent() {
    // udm sends no uevents, so it must never tell libdm one was generated
    // (libdm would wait on its udev cookie forever).
    let e = engine();
    e.create("u", None, None).unwrap();
    e.load_text(&DevRef::name("u"), "0 8 zero", false).unwrap();
    let (errno, rh, _, d) = call(&e, Command::DevSuspend, &header("u"), &[], 4096);
    assert_eq!(errno, 0, "resume: {d}");
    assert_eq!(rh.flags & flags::UEVENT_GENERATED, 0, "resume");
    let (errno, rh, _, d) = call(
        &e,
        Command::DevRename,
        &header("u"),
        &udm_ioctl::encode_string("u2"),
        4096,
    );
    assert_eq!(errno, 0, "rename: {d}");
    assert_eq!(rh.flags & flags::UEVENT_GENERATED, 0, "rename");
    // The flag is output-only: one sent in is cleared, as the kernel does.
    let mut h = header("u2");
    h.flags = flags::UEVENT_GENERATED;
    let (errno, rh, _, d) = call(&e, Command::DevRemove, &h, &[], 4096);
    assert_eq!(errno, 0, "remove: {d}");
    assert_eq!(rh.flags & flags::UEVENT_GENERATED, 0, "remove");
    assert!(e.list().is_empty());
}

#[test]
fn version_mismatch_is_einval_and_reports_our_version() {
    let e = engine();
    let mut h = header("");
    h.version = [4, VERSION[1] + 1, 0];
    let (errno, rh, _, detail) = call(&e, Command::Version, &h, &[], 0);
    assert_eq!(errno, libc::EINVAL, "{detail}");
    assert_eq!(rh.version, VERSION);
    h.version = [5, 0, 0];
    assert_eq!(call(&e, Command::DevCreate, &h, &[], 0).0, libc::EINVAL);
    h.version = [4, 0, 0];
    let (errno, rh, _, _) = call(&e, Command::Version, &h, &[], 0);
    // Only version[3] comes back: the caller's own data_size survives.
    assert_eq!(
        (errno, rh.version, rh.data_size as usize),
        (0, VERSION, udm_ioctl::HEADER_SIZE)
    );
}

#[test]
fn unknown_ioctl_is_enotty_and_short_buffers_einval() {
    let e = engine();
    // The version is checked (and written back) before the command is looked up.
    let r = handle(&e, 0xC138_FD00 | 40, &[0u8; 312], &mut ConnState::default());
    assert_eq!(r.errno, libc::EINVAL);
    let buf = request_buffer(&DmIoctl::new(), &[], 0).unwrap();
    let r = handle(&e, 0xC138_FD00 | 40, &buf, &mut ConnState::default());
    assert_eq!(r.errno, libc::ENOTTY);
    let r = handle(&e, 0x1234_5678, &[0u8; 312], &mut ConnState::default());
    assert_eq!(r.errno, libc::ENOTTY);
    let r = handle(
        &e,
        Command::DevStatus.ioctl_number(),
        &[0u8; 100],
        &mut ConnState::default(),
    );
    assert_eq!(r.errno, libc::EINVAL);
}

#[test]
fn name_and_uuid_together_are_einval_except_for_create() {
    let e = engine();
    let mut h = header("a");
    h.uuid = "u".into();
    assert_eq!(call(&e, Command::DevCreate, &h, &[], 0).0, 0);
    let (errno, _, _, _) = call(&e, Command::DevStatus, &h, &[], 0);
    assert_eq!(errno, libc::EINVAL);
    // By uuid alone, by dev alone.
    let (errno, rh, _, _) = call(
        &e,
        Command::DevStatus,
        &DmIoctl {
            uuid: "u".into(),
            ..DmIoctl::new()
        },
        &[],
        0,
    );
    assert_eq!((errno, rh.name.as_str()), (0, "a"));
    let (errno, rh, _, _) = call(
        &e,
        Command::DevStatus,
        &DmIoctl {
            dev: rh.dev,
            ..DmIoctl::new()
        },
        &[],
        0,
    );
    assert_eq!((errno, rh.name.as_str()), (0, "a"));
    // Nothing named at all.
    assert_eq!(
        call(&e, Command::DevStatus, &DmIoctl::new(), &[], 0).0,
        libc::ENXIO
    );
}

#[test]
fn list_devices_buffer_full_then_retry() {
    let e = engine();
    for i in 0..50 {
        e.create(&format!("device-with-a-long-name-{i:03}"), None, None)
            .unwrap();
    }
    let (errno, rh, p, _) = call(&e, Command::ListDevices, &DmIoctl::new(), &[], 312 + 256);
    assert_eq!(errno, 0);
    assert_ne!(rh.flags & flags::BUFFER_FULL, 0);
    assert!(p.is_empty());
    let (errno, rh, p, _) = call(&e, Command::ListDevices, &DmIoctl::new(), &[], 16 << 10);
    assert_eq!(errno, 0);
    assert_eq!(rh.flags & flags::BUFFER_FULL, 0);
    let names = udm_ioctl::decode_name_list(&p).unwrap();
    assert_eq!(names.len(), 50);
    assert_eq!(names[0].name, "device-with-a-long-name-000");
}

#[test]
fn table_status_buffer_full_keeps_what_fits() {
    let e = engine();
    e.create("t", None, None).unwrap();
    let table: String = (0..100).map(|i| format!("{} 10 zero\n", i * 10)).collect();
    e.load_text(&DevRef::name("t"), &table, false).unwrap();
    e.resume(&DevRef::name("t"), false).unwrap();
    let mut h = header("t");
    h.flags = flags::STATUS_TABLE;
    let (errno, rh, p, _) = call(&e, Command::TableStatus, &h, &[], 312 + 500);
    assert_eq!(errno, 0);
    assert_ne!(rh.flags & flags::BUFFER_FULL, 0);
    let partial = udm_ioctl::decode_table_status(&p, rh.target_count).unwrap_or_default();
    assert!(partial.len() < 100);
    let (_, rh, p, _) = call(&e, Command::TableStatus, &h, &[], 64 << 10);
    assert_eq!(rh.flags & flags::BUFFER_FULL, 0);
    assert_eq!(
        udm_ioctl::decode_table_status(&p, rh.target_count)
            .unwrap()
            .len(),
        100
    );
}

#[test]
fn arm_poll_records_the_global_event_counter() {
    let e = engine();
    let mut conn = ConnState::default();
    let buf = request_buffer(&DmIoctl::new(), &[], 0).unwrap();
    let r = handle(&e, Command::DevArmPoll.ioctl_number(), &buf, &mut conn);
    assert_eq!(r.errno, 0);
    let armed = conn.armed_event.expect("armed");
    e.create("x", None, None).unwrap();
    assert!(
        e.global_event_nr() > armed,
        "create must bump the global event counter"
    );
}

#[test]
fn no_params_commands_ignore_their_payload() {
    let e = engine();
    // A DEV_CREATE carrying garbage after the header still works (NO_PARAMS).
    let (errno, rh, _, _) = call(&e, Command::DevCreate, &header("np"), &[0xff; 64], 0);
    assert_eq!(errno, 0);
    assert_eq!(rh.data_size as usize, HEADER_MIN);
    // TABLE_LOAD with no targets is EINVAL and changes nothing.
    let mut h = header("np");
    h.target_count = 0;
    assert_eq!(call(&e, Command::TableLoad, &h, &[], 0).0, libc::EINVAL);
    assert!(!e.info(&DevRef::name("np"), false).unwrap().inactive_present);
}

#[test]
fn message_without_handler_or_beyond_the_end_is_einval() {
    let e = engine();
    e.create("m", None, None).unwrap();
    e.load_text(&DevRef::name("m"), "0 8 zero", false).unwrap();
    e.resume(&DevRef::name("m"), false).unwrap();
    // zero has no message handler: EINVAL with a detail.
    let p = udm_ioctl::encode_target_msg(0, "hello");
    let (errno, _, _, detail) = call(&e, Command::TargetMsg, &header("m"), &p, 4096);
    assert_eq!(errno, libc::EINVAL);
    assert!(detail.contains("message"), "{detail}");
    // Beyond the end of the device.
    let p = udm_ioctl::encode_target_msg(100, "hello");
    assert_eq!(
        call(&e, Command::TargetMsg, &header("m"), &p, 4096).0,
        libc::EINVAL
    );
}

/// A request as the kernel VM probe sent it: padding 0x55555555, the name's
/// bytes after its NUL 0x77 (name[127] too), the payload area 0xaa.
fn probe_request(name: &str, flags_: u32, size: usize) -> Vec<u8> {
    let mut h = header(name);
    h.flags = flags_;
    let mut b = request_buffer(&h, &[], size).unwrap();
    b[36..40].fill(0x55);
    b[48 + name.len() + 1..48 + 128].fill(0x77);
    b[305..].fill(0xaa);
    b
}

#[test]
fn a_returned_header_keeps_what_the_kernel_leaves_untouched() {
    // Observed in the 6.12 kernel VM: a header-only success writes back 305
    // bytes of the kernel's copy of the request, so the padding word and the
    // name's bytes past its NUL come back as sent, except name[127], which
    // validate_params zeroes.
    let e = engine();
    let buf = probe_request("geo", 0, 4096);
    let r = raw(&e, Command::DevCreate.ioctl_number(), &buf);
    assert_eq!(r.errno, 0, "{}", r.detail);
    assert_eq!(r.buffer.len(), HEADER_MIN);
    assert_eq!(&r.buffer[36..40], &[0x55; 4], "padding");
    assert_eq!(&r.buffer[48..52], b"geo\0");
    assert_eq!(&r.buffer[52..175], &[0x77; 123][..], "name past its NUL");
    assert_eq!(r.buffer[175], 0, "name[127]");
    // No table: retrieve_status never runs, so data_size stays 305.
    let r = raw(
        &e,
        Command::TableStatus.ioctl_number(),
        &probe_request("geo", 0, 4096),
    );
    assert_eq!((r.errno, r.buffer.len()), (0, HEADER_MIN), "{}", r.detail);
    // A payload reply keeps data[7] (305..312) as sent too, and ends at
    // the last string's NUL.
    e.load_text(&DevRef::name("geo"), "0 8 zero", false)
        .unwrap();
    e.resume(&DevRef::name("geo"), false).unwrap();
    let r = raw(
        &e,
        Command::TableStatus.ioctl_number(),
        &probe_request("geo", 0, 4096),
    );
    assert_eq!(r.errno, 0, "{}", r.detail);
    assert_eq!(
        r.buffer.len(),
        udm_ioctl::HEADER_SIZE + udm_ioctl::SPEC_SIZE + 1
    );
    assert_eq!(&r.buffer[305..312], &[0xaa; 7], "data[7]");
    // BUFFER_FULL with nothing used: data_start 312, data_size 305.
    let r = raw(
        &e,
        Command::ListVersions.ioctl_number(),
        &probe_request("", 0, 320),
    );
    assert_eq!((r.errno, r.buffer.len()), (0, HEADER_MIN), "{}", r.detail);
    let h = DmIoctl::decode(&r.buffer).unwrap();
    assert_ne!(h.flags & flags::BUFFER_FULL, 0);
    assert_eq!((h.data_start, h.data_size), (312, 305));
}

#[test]
fn secure_data_wipes_the_callers_buffer() {
    // Observed in the 6.12 kernel VM: with SECURE_DATA the kernel zeroes the
    // bytes it copied in (305 for a NO_PARAMS command, data_size otherwise),
    // version included, before running the command; a failure then writes
    // nothing back, a success its result over the zeros.
    let e = engine();
    e.create("geo", None, None).unwrap();
    let r = raw(
        &e,
        Command::DevStatus.ioctl_number(),
        &probe_request("missing", flags::SECURE_DATA, 4096),
    );
    assert_eq!(r.errno, libc::ENXIO, "{}", r.detail);
    assert_eq!(r.buffer, vec![0u8; HEADER_MIN], "failed NO_PARAMS command");
    let mut load = probe_request("missing", flags::SECURE_DATA, 4096);
    load[20..24].copy_from_slice(&1u32.to_ne_bytes());
    let r = raw(&e, Command::TableLoad.ioctl_number(), &load);
    assert_ne!(r.errno, 0);
    assert_eq!(r.buffer, vec![0u8; 4096], "failed command with a payload");
    let r = raw(
        &e,
        Command::DevStatus.ioctl_number(),
        &probe_request("geo", flags::SECURE_DATA, 4096),
    );
    assert_eq!(r.errno, 0, "{}", r.detail);
    assert_eq!(r.buffer.len(), HEADER_MIN);
    let h = DmIoctl::decode(&r.buffer).unwrap();
    assert_eq!(
        (h.version, h.name.as_str(), h.flags & flags::SECURE_DATA),
        (VERSION, "geo", 0)
    );
    // A failure before the buffer is copied in (a bad version) only writes
    // the version back.
    let mut bad = probe_request("geo", flags::SECURE_DATA, 4096);
    bad[4..8].copy_from_slice(&(VERSION[1] + 1).to_ne_bytes());
    let r = raw(&e, Command::DevStatus.ioctl_number(), &bad);
    assert_eq!((r.errno, r.buffer), (libc::EINVAL, version_bytes()));
}

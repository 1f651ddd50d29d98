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
    let buf = request_buffer(h, payload, capacity).unwrap();
    let r = handle(e, cmd.ioctl_number(), &buf, &mut ConnState::default());
    if r.buffer.is_empty() {
        return (r.errno, DmIoctl::default(), Vec::new(), r.detail);
    }
    let (rh, p) = split_buffer(&r.buffer).unwrap();
    (r.errno, rh, p.to_vec(), r.detail)
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
    assert_eq!(
        (errno, rh.version, rh.data_size as usize),
        (0, VERSION, HEADER_MIN)
    );
}

#[test]
fn unknown_ioctl_is_enotty_and_short_buffers_einval() {
    let e = engine();
    let r = handle(&e, 0xC138_FD00 | 40, &[0u8; 312], &mut ConnState::default());
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

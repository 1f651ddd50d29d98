//! Property tests: every decoder returns (Ok or Err) on arbitrary bytes and
//! never panics, including inputs that start like valid ones.

use proptest::prelude::*;
use udm_ioctl::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Arbitrary bytes behind a valid-looking prefix, so decoders get past
/// their first checks.
fn with_prefix(prefix: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    bytes(600).prop_map(move |tail| [prefix.clone(), tail].concat())
}

fn exercise_payload(b: &[u8], count: u32) {
    let _ = decode_table_load(b, count);
    let _ = decode_table_status(b, count);
    let _ = decode_name_list(b);
    let _ = decode_versions(b);
    let _ = decode_deps(b);
    let _ = decode_target_msg(b);
    let _ = decode_string(b);
}

fn exercise_buffer(b: &[u8]) {
    let _ = DmIoctl::decode(b);
    if let Ok((h, p)) = split_buffer(b) {
        exercise_payload(p, h.target_count);
    }
    let _ = decode_table_load_request(b);
    let _ = RequestFrame::decode(b);
    let _ = ReplyFrame::decode(b);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn payload_decoders_never_panic(b in bytes(1024), count in any::<u32>(), small in 0u32..8) {
        exercise_payload(&b, count);
        exercise_payload(&b, small);
    }

    #[test]
    fn buffer_and_frame_decoders_never_panic(b in bytes(1024)) {
        exercise_buffer(&b);
    }

    #[test]
    fn decoders_never_panic_past_valid_prefixes(
        load in with_prefix(encode_table_load(&[TargetSpec { sector_start: 0, length: 8, status: 0, target_type: "zero".into(), params: "".into() }]).unwrap()),
        names in with_prefix(encode_name_list(&[NameListEntry { dev: 1, name: "a".into(), event_nr: 0, uuid: Some("u".into()) }], true, 4096).unwrap()),
        frame in with_prefix(FRAME_MAGIC.to_le_bytes().to_vec()),
        header in with_prefix(request_buffer(&DmIoctl::new(), &[], 312).unwrap()),
        count in 0u32..6,
    ) {
        exercise_payload(&load, count);
        exercise_payload(&names, count);
        exercise_buffer(&frame);
        exercise_buffer(&header);
    }

    #[test]
    fn ioctl_numbers_never_panic(n in any::<u32>()) {
        match Command::from_ioctl_number(n) {
            Ok(c) => prop_assert_eq!(c.ioctl_number(), n),
            Err(e) => prop_assert_eq!(e.errno(), libc::ENOTTY),
        }
    }
}

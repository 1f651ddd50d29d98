//! Feeds arbitrary bytes to every udm-ioctl decoder (buffers, payloads,
//! frames) and checks what decodes re-encodes consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udm_ioctl::*;

fuzz_target!(|data: &[u8]| {
    // The first byte picks a target_count for the spec decoders.
    let count = u32::from(data.first().copied().unwrap_or(0) % 8);

    if let Ok(h) = DmIoctl::decode(data) {
        if let Ok(b) = h.encode() {
            assert_eq!(DmIoctl::decode(&b).ok(), Some(h));
        }
    }
    if let Ok((h, payload)) = split_buffer(data) {
        let _ = decode_table_load(payload, h.target_count);
        let _ = decode_table_status(payload, h.target_count);
    }
    if let Ok((_, specs)) = decode_table_load_request(data) {
        let again = encode_table_load(&specs);
        assert!(again.is_ok() || specs.iter().any(|s| s.target_type.len() >= 16));
    }

    if let Ok(specs) = decode_table_load(data, count) {
        assert_eq!(specs.len() as u32, count);
    }
    if let Ok(specs) = decode_table_status(data, count) {
        assert_eq!(specs.len() as u32, count);
    }
    if let Ok(names) = decode_name_list(data) {
        if let Some(b) = encode_name_list(&names, true, 1 << 20) {
            let _ = decode_name_list(&b);
        }
    }
    if let Ok(v) = decode_versions(data) {
        if let Some(b) = encode_versions(&v, 1 << 20) {
            let _ = decode_versions(&b);
        }
    }
    if let Ok(d) = decode_deps(data) {
        if let Some(b) = encode_deps(&d, 1 << 20) {
            assert_eq!(decode_deps(&b).ok(), Some(d));
        }
    }
    let _ = decode_target_msg(data);
    let _ = decode_string(data);

    if let Ok(Some((f, used))) = RequestFrame::decode(data) {
        assert_eq!(f.encode(), data[..used].to_vec());
    }
    if let Ok(Some((f, used))) = ReplyFrame::decode(data) {
        assert!(used <= data.len());
        let _ = f.encode();
    }
    if data.len() >= 4 {
        let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        if let Ok(c) = Command::from_ioctl_number(n) {
            assert_eq!(c.ioctl_number(), n);
        }
    }
});

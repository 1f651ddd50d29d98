//! NUL-terminated string payloads: RENAME's new name or uuid, SET_GEOMETRY's
//! "cyl heads sectors start", TARGET_MSG's request (`struct dm_target_msg`)
//! and its reply.

use crate::wire::{c_str, get_u64};
use crate::DecodeError;

/// The string and its NUL. A NUL inside `s` ends the string there for the
/// reader, as in C.
pub fn encode_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 1);
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    out
}

/// The text before the first NUL; a payload with no NUL is an error.
pub fn decode_string(payload: &[u8]) -> Result<String, DecodeError> {
    c_str(payload, 0, "string payload").map(|(s, _)| s)
}

/// `struct dm_target_msg`: the sector, then the NUL-terminated message.
pub fn encode_target_msg(sector: u64, msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + msg.len() + 1);
    out.extend_from_slice(&sector.to_ne_bytes());
    out.extend_from_slice(msg.as_bytes());
    out.push(0);
    out
}

/// Decode `struct dm_target_msg`; the message must be NUL-terminated
/// inside the payload.
pub fn decode_target_msg(payload: &[u8]) -> Result<(u64, String), DecodeError> {
    let sector = get_u64(payload, 0, "dm_target_msg.sector")?;
    let (msg, _) = c_str(payload, 8, "target message")?;
    Ok((sector, msg))
}

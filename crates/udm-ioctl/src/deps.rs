//! `struct dm_target_deps`: the TABLE_DEPS reply (a count and the dev_t of
//! every distinct underlying device).

use crate::wire::get_u32;
use crate::wire::get_u64;
use crate::DecodeError;

/// Encode a TABLE_DEPS payload (8 + 8·n bytes); `None` (BUFFER_FULL) when
/// it does not fit in `capacity`.
pub fn encode_deps(devs: &[u64], capacity: usize) -> Option<Vec<u8>> {
    let needed = 8usize.checked_add(devs.len().checked_mul(8)?)?;
    if capacity < needed {
        return None;
    }
    let count = u32::try_from(devs.len()).ok()?;
    let mut out = Vec::with_capacity(needed);
    out.extend_from_slice(&count.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    for d in devs {
        out.extend_from_slice(&d.to_ne_bytes());
    }
    Some(out)
}

/// Decode a TABLE_DEPS payload. An empty payload (no table) is no deps.
pub fn decode_deps(payload: &[u8]) -> Result<Vec<u64>, DecodeError> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let count = get_u32(payload, 0, "dm_target_deps.count")? as usize;
    let need = count.saturating_mul(8).saturating_add(8);
    if payload.len() < need {
        return Err(DecodeError::TooShort {
            what: "dm_target_deps",
            need,
            have: payload.len(),
        });
    }
    (0..count)
        .map(|i| get_u64(payload, 8 + 8 * i, "dm_target_deps.dev"))
        .collect()
}

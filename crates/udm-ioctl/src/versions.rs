//! `struct dm_target_versions`: the LIST_VERSIONS and GET_TARGET_VERSION
//! reply records.

use crate::wire::{align8, c_str, get_u32, pad8};
use crate::DecodeError;

/// `sizeof(struct dm_target_versions)` = `offsetof(name)`.
const HEAD: usize = 16;

/// A registered target type and its version triple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetVersion {
    pub name: String,
    pub version: [u32; 3],
}

/// Encode a LIST_VERSIONS / GET_TARGET_VERSION payload for `capacity` bytes
/// of space; `None` (BUFFER_FULL) when it does not fit. The kernel sizes
/// the reply as Σ(16 + strlen + 1 + 7), more than the records use; the
/// payload is zero-padded to that size, as the kernel's `data_size` says.
pub fn encode_versions(v: &[TargetVersion], capacity: usize) -> Option<Vec<u8>> {
    let cut = |s: &str| -> Vec<u8> { s.bytes().take_while(|&b| b != 0).collect() };
    let needed: usize = v.iter().map(|t| HEAD + cut(&t.name).len() + 1 + 7).sum();
    if capacity < needed {
        return None;
    }
    let mut out = Vec::with_capacity(needed);
    let mut prev: Option<usize> = None;
    for t in v {
        let at = out.len();
        if let Some(p) = prev {
            let next = u32::try_from(at - p).ok()?;
            out[p..p + 4].copy_from_slice(&next.to_ne_bytes());
        }
        out.extend_from_slice(&0u32.to_ne_bytes());
        for x in t.version {
            out.extend_from_slice(&x.to_ne_bytes());
        }
        out.extend_from_slice(&cut(&t.name));
        out.push(0);
        pad8(&mut out);
        prev = Some(at);
    }
    out.resize(needed, 0);
    Some(out)
}

/// Decode a LIST_VERSIONS / GET_TARGET_VERSION payload (empty = none).
/// Each `next` must point past its record's name.
pub fn decode_versions(payload: &[u8]) -> Result<Vec<TargetVersion>, DecodeError> {
    let mut out = Vec::new();
    if payload.is_empty() {
        return Ok(out);
    }
    let mut at = 0usize;
    loop {
        let next = get_u32(payload, at, "dm_target_versions.next")? as usize;
        let version = [
            get_u32(payload, at + 4, "dm_target_versions.version")?,
            get_u32(payload, at + 8, "dm_target_versions.version")?,
            get_u32(payload, at + 12, "dm_target_versions.version")?,
        ];
        let (name, nul) =
            c_str(payload, at + HEAD, "target name").map_err(|e| DecodeError::Record {
                what: "dm_target_versions",
                offset: at,
                reason: e.to_string(),
            })?;
        out.push(TargetVersion { name, version });
        if next == 0 {
            return Ok(out);
        }
        if at + next <= nul || (at + next) != align8(at + next) {
            return Err(DecodeError::Record {
                what: "dm_target_versions",
                offset: at,
                reason: format!("next offset {next} overlaps this record or is unaligned"),
            });
        }
        at += next;
    }
}

//! `struct dm_target_spec` lists: the TABLE_LOAD input (each `next` relative
//! to its own spec) and the TABLE_STATUS / DEV_WAIT output (each `next`
//! relative to the first spec).

use crate::header::{split_buffer, DmIoctl, HEADER_SIZE, MAX_TYPE_NAME};
use crate::wire::{align8, c_str, fixed_str, get_i32, get_u32, get_u64, pad8, push_c_str};
use crate::DecodeError;

/// `sizeof(struct dm_target_spec)`.
pub const SPEC_SIZE: usize = 40;
/// `DM_MAX_TARGETS`: the most targets one table may hold.
pub const MAX_TARGETS: u32 = 1 << 20;

const OFF_START: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_STATUS: usize = 16;
const OFF_NEXT: usize = 20;
const OFF_TYPE: usize = 24;

/// One target line: `<sector_start> <length> <target_type> <params>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub sector_start: u64,
    pub length: u64,
    /// The kernel writes 0 and ignores it on input.
    pub status: i32,
    pub target_type: String,
    pub params: String,
}

fn spec_err(index: usize, reason: impl Into<String>) -> DecodeError {
    DecodeError::Spec {
        index,
        reason: reason.into(),
    }
}

fn write_head(out: &mut Vec<u8>, spec: &TargetSpec, next: u32, type_bytes: &[u8]) {
    out.extend_from_slice(&spec.sector_start.to_ne_bytes());
    out.extend_from_slice(&spec.length.to_ne_bytes());
    out.extend_from_slice(&spec.status.to_ne_bytes());
    out.extend_from_slice(&next.to_ne_bytes());
    let mut ty = [0u8; MAX_TYPE_NAME];
    ty[..type_bytes.len()].copy_from_slice(type_bytes);
    out.extend_from_slice(&ty);
}

fn read_spec(payload: &[u8], at: usize) -> Result<(TargetSpec, usize), DecodeError> {
    let head = payload
        .get(at..at.saturating_add(SPEC_SIZE))
        .filter(|h| h.len() == SPEC_SIZE)
        .ok_or(DecodeError::TooShort {
            what: "struct dm_target_spec",
            need: at.saturating_add(SPEC_SIZE),
            have: payload.len(),
        })?;
    let (params, nul) = c_str(payload, at + SPEC_SIZE, "target parameters")?;
    let spec = TargetSpec {
        sector_start: get_u64(head, OFF_START, "sector_start")?,
        length: get_u64(head, OFF_LENGTH, "length")?,
        status: get_i32(head, OFF_STATUS, "status")?,
        target_type: fixed_str(&head[OFF_TYPE..SPEC_SIZE]),
        params,
    };
    Ok((spec, nul))
}

/// Encode a TABLE_LOAD payload as libdm does: each spec padded to 8 bytes,
/// `next` = the padded size of its own record. A type of 16 bytes or more,
/// or a NUL inside a type or the parameters, is an error.
pub fn encode_table_load(specs: &[TargetSpec]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let ty = spec.target_type.as_bytes();
        if ty.len() >= MAX_TYPE_NAME || ty.contains(&0) {
            return Err(DecodeError::TypeTooLong {
                index: i + 1,
                name: spec.target_type.clone(),
            });
        }
        let next = align8(SPEC_SIZE + spec.params.len() + 1);
        let next = u32::try_from(next).map_err(|_| DecodeError::TooLarge {
            what: "target parameters",
            len: spec.params.len(),
            max: u32::MAX as usize,
        })?;
        write_head(&mut out, spec, next, ty);
        push_c_str(&mut out, &spec.params, "target parameters")?;
        pad8(&mut out);
    }
    Ok(out)
}

/// Decode a TABLE_LOAD payload (the bytes from `data_start` on, which the
/// caller has checked is 8-byte aligned and at least 312) with the
/// kernel's `populate_table` framing rules. Errors name the spec (from 1).
pub fn decode_table_load(payload: &[u8], count: u32) -> Result<Vec<TargetSpec>, DecodeError> {
    if count > MAX_TARGETS {
        return Err(DecodeError::TooManyTargets { count });
    }
    if count == 0 {
        return Err(DecodeError::NoTargets);
    }
    let end = payload.len();
    let mut specs = Vec::with_capacity((count as usize).min(end / (SPEC_SIZE + 1)));
    let mut at = 0usize;
    // Offset (from the current spec) before which the next spec may not start.
    let mut min_next = 0usize;
    for i in 0..count as usize {
        let index = i + 1;
        if i > 0 {
            let next = get_u32(payload, at + OFF_NEXT, "next")? as usize;
            if next < min_next {
                return Err(spec_err(
                    index,
                    format!("next target spec (offset {next}) overlaps previous target"),
                ));
            }
            // Room for this spec plus at least one parameter byte.
            if end - at - SPEC_SIZE <= next {
                return Err(spec_err(
                    index,
                    "target spec extends beyond end of parameters",
                ));
            }
            if next % 8 != 0 {
                return Err(spec_err(
                    index,
                    format!("next target spec (offset {next}) is not 8-byte aligned"),
                ));
            }
            at += next;
        } else if end <= SPEC_SIZE {
            return Err(spec_err(
                index,
                "target spec extends beyond end of parameters",
            ));
        }
        let (spec, nul) = read_spec(payload, at).map_err(|e| match e {
            DecodeError::MissingNul { .. } => {
                spec_err(index, "target parameters not NUL-terminated")
            }
            other => spec_err(index, other.to_string()),
        })?;
        min_next = nul - at + 1;
        specs.push(spec);
    }
    Ok(specs)
}

/// Decode a whole TABLE_LOAD request buffer: the header, then the specs,
/// including the checks on `data_start` that [`decode_table_load`] cannot
/// see (it must not overlap the header and must be 8-byte aligned).
pub fn decode_table_load_request(buf: &[u8]) -> Result<(DmIoctl, Vec<TargetSpec>), DecodeError> {
    let (h, _) = split_buffer(buf)?;
    if h.target_count > MAX_TARGETS {
        return Err(DecodeError::TooManyTargets {
            count: h.target_count,
        });
    }
    if h.target_count == 0 {
        return Err(DecodeError::NoTargets);
    }
    let start = h.data_start as usize;
    let size = h.data_size as usize;
    if start < HEADER_SIZE {
        return Err(spec_err(
            1,
            format!("next target spec (offset {start}) overlaps 'struct dm_ioctl'"),
        ));
    }
    if size - SPEC_SIZE <= start {
        return Err(spec_err(1, "target spec extends beyond end of parameters"));
    }
    if start % 8 != 0 {
        return Err(spec_err(
            1,
            format!("next target spec (offset {start}) is not 8-byte aligned"),
        ));
    }
    let specs = decode_table_load(&buf[start..size], h.target_count)?;
    Ok((h, specs))
}

/// Encode a TABLE_STATUS / DEV_WAIT payload for `capacity` bytes of space
/// (`data_size` − 312) with the kernel's `retrieve_status` rules: a spec is
/// written only when more than 40 bytes remain, and its string only when
/// it does not fill the rest exactly (`strlen + 1 == remaining` counts as
/// full). Returns the bytes up to the last complete string's NUL (which is
/// what the kernel copies back) and whether the buffer was full.
pub fn encode_table_status(specs: &[TargetSpec], capacity: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut used = 0;
    for spec in specs {
        let at = out.len();
        let remaining = capacity.saturating_sub(at);
        let params = spec.params.as_bytes();
        let params = &params[..params.iter().position(|&b| b == 0).unwrap_or(params.len())];
        if remaining <= SPEC_SIZE || SPEC_SIZE + params.len() + 1 >= remaining {
            out.truncate(used);
            return (out, true);
        }
        let ty = spec.target_type.as_bytes();
        let ty = &ty[..ty
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(ty.len())
            .min(MAX_TYPE_NAME - 1)];
        let end = at + SPEC_SIZE + params.len() + 1;
        // `next` cannot overflow: end < capacity, and callers pass at most 1 GiB.
        let next = u32::try_from(align8(end)).unwrap_or(u32::MAX);
        let zero_status = TargetSpec {
            status: 0,
            ..spec.clone()
        };
        write_head(&mut out, &zero_status, next, ty);
        out.extend_from_slice(params);
        out.push(0);
        used = out.len();
        pad8(&mut out);
    }
    out.truncate(used);
    (out, false)
}

/// Decode a TABLE_STATUS / DEV_WAIT payload of `count` specs (the reply's
/// `target_count`). Each `next` (from the first spec) must point past the
/// previous string, so decoding always moves forward.
pub fn decode_table_status(payload: &[u8], count: u32) -> Result<Vec<TargetSpec>, DecodeError> {
    let mut specs = Vec::with_capacity((count as usize).min(payload.len() / (SPEC_SIZE + 1)));
    let mut at = 0usize;
    for i in 0..count as usize {
        let index = i + 1;
        let (spec, nul) = read_spec(payload, at).map_err(|e| spec_err(index, e.to_string()))?;
        if i + 1 < count as usize {
            let next = get_u32(payload, at + OFF_NEXT, "next")? as usize;
            if next <= nul {
                return Err(spec_err(
                    index,
                    format!("next offset {next} does not lie after this spec's parameters"),
                ));
            }
            at = next;
        }
        specs.push(spec);
    }
    Ok(specs)
}

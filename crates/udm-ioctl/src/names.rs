//! `struct dm_name_list`: the LIST_DEVICES reply, with the event_nr/flags
//! trailer (interface >= 4.38) and optional uuids (DM_UUID_FLAG).

use crate::wire::{align8, c_str, get_u32, get_u64, pad8};
use crate::DecodeError;

/// `DM_NAME_LIST_FLAG_HAS_UUID`: a uuid string follows the trailer.
pub const NAME_LIST_FLAG_HAS_UUID: u32 = 1;
/// `DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID`: uuids were asked for; none is set.
pub const NAME_LIST_FLAG_DOESNT_HAVE_UUID: u32 = 2;

/// `offsetof(struct dm_name_list, name)`.
const OFF_NAME: usize = 12;

/// One device in a LIST_DEVICES reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameListEntry {
    /// The encoded dev_t ([`crate::encode_dev`]).
    pub dev: u64,
    pub name: String,
    pub event_nr: u32,
    /// `None` when the device has no uuid or uuids were not asked for.
    pub uuid: Option<String>,
}

fn has_uuid(e: &NameListEntry) -> Option<&str> {
    e.uuid.as_deref().filter(|u| !u.is_empty())
}

/// Encode a LIST_DEVICES payload for `capacity` bytes of space, as the
/// kernel does: `None` (the caller sets BUFFER_FULL and sends no payload)
/// when the records do not fit or fewer than 8 bytes are free. An empty
/// list is an empty payload: the client's zeroed buffer then reads as
/// `dev == 0`, "no devices". With `with_uuid` each record carries
/// HAS_UUID (and the uuid) or DOESNT_HAVE_UUID. Names or uuids holding a
/// NUL are cut there, as `strcpy` would.
pub fn encode_name_list(
    entries: &[NameListEntry],
    with_uuid: bool,
    capacity: usize,
) -> Option<Vec<u8>> {
    let cut = |s: &str| -> Vec<u8> { s.bytes().take_while(|&b| b != 0).collect() };
    let needed: usize = entries
        .iter()
        .map(|e| {
            let mut n = align8(OFF_NAME + cut(&e.name).len() + 1) + 8;
            if with_uuid {
                if let Some(u) = has_uuid(e) {
                    n += align8(cut(u).len() + 1);
                }
            }
            n
        })
        .sum();
    if capacity < needed || capacity < 8 {
        return None;
    }
    let mut out = Vec::with_capacity(needed);
    let mut prev: Option<usize> = None;
    for e in entries {
        let at = out.len();
        if let Some(p) = prev {
            let next = u32::try_from(at - p).ok()?;
            out[p + 8..p + 12].copy_from_slice(&next.to_ne_bytes());
        }
        out.extend_from_slice(&e.dev.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&cut(&e.name));
        out.push(0);
        pad8(&mut out);
        let mut flags = 0;
        let uuid = if with_uuid { has_uuid(e) } else { None };
        if with_uuid {
            flags = match uuid {
                Some(_) => NAME_LIST_FLAG_HAS_UUID,
                None => NAME_LIST_FLAG_DOESNT_HAVE_UUID,
            };
        }
        out.extend_from_slice(&e.event_nr.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        if let Some(u) = uuid {
            out.extend_from_slice(&cut(u));
            out.push(0);
            pad8(&mut out);
        }
        prev = Some(at);
    }
    Some(out)
}

fn rec_err(offset: usize, reason: impl Into<String>) -> DecodeError {
    DecodeError::Record {
        what: "dm_name_list",
        offset,
        reason: reason.into(),
    }
}

/// Decode a LIST_DEVICES payload. An empty payload, or a first record with
/// `dev == 0`, is the empty list. Each record must hold the event_nr/flags
/// trailer, and each `next` must point past the end of its record.
pub fn decode_name_list(payload: &[u8]) -> Result<Vec<NameListEntry>, DecodeError> {
    let mut out = Vec::new();
    if payload.is_empty() || get_u64(payload, 0, "dm_name_list.dev")? == 0 {
        return Ok(out);
    }
    let mut at = 0usize;
    loop {
        let dev = get_u64(payload, at, "dm_name_list.dev")?;
        let next = get_u32(payload, at + 8, "dm_name_list.next")? as usize;
        let (name, nul) =
            c_str(payload, at + OFF_NAME, "device name").map_err(|e| rec_err(at, e.to_string()))?;
        let trailer = align8(nul + 1);
        let event_nr = get_u32(payload, trailer, "dm_name_list.event_nr")
            .map_err(|e| rec_err(at, e.to_string()))?;
        let flags = get_u32(payload, trailer + 4, "dm_name_list.flags")
            .map_err(|e| rec_err(at, e.to_string()))?;
        let mut end = trailer + 8;
        let uuid = if flags & NAME_LIST_FLAG_HAS_UUID != 0 {
            let (u, unul) = c_str(payload, end, "uuid").map_err(|e| rec_err(at, e.to_string()))?;
            end = unul + 1;
            Some(u)
        } else {
            None
        };
        out.push(NameListEntry {
            dev,
            name,
            event_nr,
            uuid,
        });
        if next == 0 {
            return Ok(out);
        }
        if at + next < end {
            return Err(rec_err(
                at,
                format!("next offset {next} overlaps this record"),
            ));
        }
        at += next;
    }
}

//! `struct dm_ioctl`, the 312-byte header every request and reply starts
//! with, and the whole-buffer helpers (header + payload at `data_start`).

use crate::wire::{fixed_str, get, get_i32, get_u32, get_u64, put_i32, put_u32, put_u64};
use crate::DecodeError;

/// The interface version udm implements: the oracle kernel's (6.12, 4.48.0).
pub const VERSION: [u32; 3] = [4, 48, 0];
/// `sizeof(struct dm_ioctl)`; also where every payload starts (`align8`).
pub const HEADER_SIZE: usize = 312;
/// `offsetof(struct dm_ioctl, data)`: the smallest `data_size` accepted.
pub const HEADER_MIN: usize = 305;
/// `DM_NAME_LEN`: the name field, NUL included (at most 127 characters).
pub const NAME_LEN: usize = 128;
/// `DM_UUID_LEN`: the uuid field, NUL included (at most 128 characters).
pub const UUID_LEN: usize = 129;
/// `DM_MAX_TYPE_NAME`: the target type field, NUL included.
pub const MAX_TYPE_NAME: usize = 16;
/// Largest `data_size` the kernel accepts: DM_MAX_TARGETS × DM_MAX_TARGET_PARAMS.
pub const MAX_DATA_SIZE: usize = 1 << 30;

/// Bytes of `version[3]`: all the kernel writes back for DM_VERSION, for a
/// failed command, and for REMOVE_ALL and SET_GEOMETRY (which set
/// `data_size` to 0).
pub const VERSION_LEN: usize = 12;

/// `version` as the kernel's `check_version` writes it (host byte order).
pub fn encode_version(version: [u32; 3]) -> [u8; VERSION_LEN] {
    let mut b = [0u8; VERSION_LEN];
    for (i, v) in version.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
    }
    b
}

/// The `version[3]` at the front of a buffer, if it holds 12 bytes.
pub fn decode_version(buf: &[u8]) -> Option<[u32; 3]> {
    let v = buf.get(..VERSION_LEN)?;
    let word = |i: usize| u32::from_ne_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
    Some([word(0), word(4), word(8)])
}

pub(crate) const OFF_VERSION: usize = 0;
pub(crate) const OFF_DATA_SIZE: usize = 12;
pub(crate) const OFF_DATA_START: usize = 16;
pub(crate) const OFF_TARGET_COUNT: usize = 20;
pub(crate) const OFF_OPEN_COUNT: usize = 24;
pub(crate) const OFF_FLAGS: usize = 28;
pub(crate) const OFF_EVENT_NR: usize = 32;
pub(crate) const OFF_PADDING: usize = 36;
pub(crate) const OFF_DEV: usize = 40;
pub(crate) const OFF_NAME: usize = 48;
pub(crate) const OFF_UUID: usize = OFF_NAME + NAME_LEN;

/// The decoded `struct dm_ioctl`. `name` and `uuid` are the text before the
/// first NUL; the padding fields are not kept (they encode as zero).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DmIoctl {
    pub version: [u32; 3],
    pub data_size: u32,
    pub data_start: u32,
    pub target_count: u32,
    pub open_count: i32,
    pub flags: u32,
    pub event_nr: u32,
    pub dev: u64,
    pub name: String,
    pub uuid: String,
}

impl DmIoctl {
    /// A header with our version and an empty payload (`data_start` =
    /// `data_size` = 312).
    pub fn new() -> Self {
        DmIoctl {
            version: VERSION,
            data_size: HEADER_SIZE as u32,
            data_start: HEADER_SIZE as u32,
            ..Default::default()
        }
    }

    /// Decode the first 305+ bytes. As the kernel does, the name ends at
    /// byte 127 and the uuid at byte 128 at the latest; invalid UTF-8 is
    /// replaced (U+FFFD), never an error.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_MIN {
            return Err(DecodeError::TooShort {
                what: "struct dm_ioctl",
                need: HEADER_MIN,
                have: buf.len(),
            });
        }
        let v = get::<12>(buf, OFF_VERSION, "version")?;
        let word = |i: usize| u32::from_ne_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
        Ok(DmIoctl {
            version: [word(0), word(4), word(8)],
            data_size: get_u32(buf, OFF_DATA_SIZE, "data_size")?,
            data_start: get_u32(buf, OFF_DATA_START, "data_start")?,
            target_count: get_u32(buf, OFF_TARGET_COUNT, "target_count")?,
            open_count: get_i32(buf, OFF_OPEN_COUNT, "open_count")?,
            flags: get_u32(buf, OFF_FLAGS, "flags")?,
            event_nr: get_u32(buf, OFF_EVENT_NR, "event_nr")?,
            dev: get_u64(buf, OFF_DEV, "dev")?,
            name: fixed_str(&buf[OFF_NAME..OFF_NAME + NAME_LEN - 1]),
            uuid: fixed_str(&buf[OFF_UUID..OFF_UUID + UUID_LEN - 1]),
        })
    }

    /// Encode into the 312-byte struct (padding and `data` zeroed).
    /// A name over 127 bytes or a uuid over 128 bytes (or either holding a
    /// NUL) is an error.
    pub fn encode(&self) -> Result<[u8; HEADER_SIZE], DecodeError> {
        check_name(&self.name)?;
        check_uuid(&self.uuid)?;
        let mut b = [0u8; HEADER_SIZE];
        for (i, v) in self.version.iter().enumerate() {
            put_u32(&mut b, OFF_VERSION + 4 * i, *v);
        }
        put_u32(&mut b, OFF_DATA_SIZE, self.data_size);
        put_u32(&mut b, OFF_DATA_START, self.data_start);
        put_u32(&mut b, OFF_TARGET_COUNT, self.target_count);
        put_i32(&mut b, OFF_OPEN_COUNT, self.open_count);
        put_u32(&mut b, OFF_FLAGS, self.flags);
        put_u32(&mut b, OFF_EVENT_NR, self.event_nr);
        put_u64(&mut b, OFF_DEV, self.dev);
        b[OFF_NAME..OFF_NAME + self.name.len()].copy_from_slice(self.name.as_bytes());
        b[OFF_UUID..OFF_UUID + self.uuid.len()].copy_from_slice(self.uuid.as_bytes());
        Ok(b)
    }

    /// Encode over `base`, the request buffer this header answers, as the
    /// kernel writes its copy of the request back: bytes it never sets (the
    /// padding word, `data[7]`, and the bytes past the NULs of the name and
    /// uuid) keep `base`'s values, except `name[127]` and `uuid[128]`, which
    /// `validate_params` zeroes; the name and uuid are written as `strscpy`
    /// does (text and NUL). `base` shorter than 312 bytes reads as zeros past
    /// its end.
    pub fn encode_over(&self, base: &[u8]) -> Result<[u8; HEADER_SIZE], DecodeError> {
        let fresh = self.encode()?;
        let mut b = [0u8; HEADER_SIZE];
        let n = base.len().min(HEADER_SIZE);
        b[..n].copy_from_slice(&base[..n]);
        b[..OFF_NAME].copy_from_slice(&fresh[..OFF_NAME]);
        b[OFF_PADDING..OFF_PADDING + 4].copy_from_slice(&base_word(base, OFF_PADDING));
        b[OFF_NAME + NAME_LEN - 1] = 0;
        b[OFF_UUID + UUID_LEN - 1] = 0;
        let name = self.name.len();
        b[OFF_NAME..OFF_NAME + name + 1].copy_from_slice(&fresh[OFF_NAME..OFF_NAME + name + 1]);
        let uuid = self.uuid.len();
        b[OFF_UUID..OFF_UUID + uuid + 1].copy_from_slice(&fresh[OFF_UUID..OFF_UUID + uuid + 1]);
        Ok(b)
    }
}

/// The 4 bytes of `base` at `at`, zeros where `base` is shorter.
fn base_word(base: &[u8], at: usize) -> [u8; 4] {
    let mut w = [0u8; 4];
    for (i, x) in w.iter_mut().enumerate() {
        *x = base.get(at + i).copied().unwrap_or(0);
    }
    w
}

/// A device name fits the header: at most 127 bytes and no NUL.
pub fn check_name(name: &str) -> Result<(), DecodeError> {
    if name.len() >= NAME_LEN || name.as_bytes().contains(&0) {
        return Err(DecodeError::BadName { len: name.len() });
    }
    Ok(())
}

/// A uuid fits the header: at most 128 bytes and no NUL.
pub fn check_uuid(uuid: &str) -> Result<(), DecodeError> {
    if uuid.len() >= UUID_LEN || uuid.as_bytes().contains(&0) {
        return Err(DecodeError::BadUuid { len: uuid.len() });
    }
    Ok(())
}

fn too_large(what: &'static str, len: usize) -> DecodeError {
    DecodeError::TooLarge {
        what,
        len,
        max: MAX_DATA_SIZE,
    }
}

/// Build a request buffer as libdm does: the header at 0 with
/// `data_start` = 312 and `data_size` = max(`capacity`, 312 + payload),
/// the payload at 312, zeros up to `data_size` (room for the reply).
pub fn request_buffer(
    header: &DmIoctl,
    payload: &[u8],
    capacity: usize,
) -> Result<Vec<u8>, DecodeError> {
    let size = capacity.max(HEADER_SIZE.saturating_add(payload.len()));
    if size > MAX_DATA_SIZE {
        return Err(too_large("request buffer", size));
    }
    let mut h = header.clone();
    h.data_start = HEADER_SIZE as u32;
    h.data_size = size as u32;
    let mut buf = Vec::with_capacity(size);
    buf.extend_from_slice(&h.encode()?);
    buf.extend_from_slice(payload);
    buf.resize(size, 0);
    Ok(buf)
}

/// Split a buffer into its header and payload (`buf[data_start..data_size]`,
/// empty when `data_start >= data_size`). `data_size` must lie in
/// `305..=buf.len()` and not exceed 1 GiB (EINVAL otherwise).
pub fn split_buffer(buf: &[u8]) -> Result<(DmIoctl, &[u8]), DecodeError> {
    let h = DmIoctl::decode(buf)?;
    let size = h.data_size as usize;
    if size < HEADER_MIN || size > buf.len() || size > MAX_DATA_SIZE {
        return Err(DecodeError::BadDataSize {
            data_size: u64::from(h.data_size),
            len: buf.len(),
        });
    }
    let start = h.data_start as usize;
    let payload = if start < size {
        &buf[start..size]
    } else {
        &[][..]
    };
    Ok((h, payload))
}

/// Build a reply buffer: the header with `data_start` = 312 and
/// `data_size` = 312 + payload, then the payload.
pub fn reply_buffer(header: &DmIoctl, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
    // A request buffer with no room beyond its payload is exactly a reply.
    request_buffer(header, payload, 0)
}

//! Bounds-checked little helpers shared by the codecs: native-endian
//! integers (the ioctl structures use host byte order), 8-byte alignment and
//! NUL-terminated strings.

use crate::DecodeError;

/// Round `n` up to the next multiple of 8 (the dm-ioctl record alignment).
pub(crate) const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

pub(crate) fn get<const N: usize>(
    buf: &[u8],
    at: usize,
    what: &'static str,
) -> Result<[u8; N], DecodeError> {
    let end = at.checked_add(N).ok_or(DecodeError::TooShort {
        what,
        need: usize::MAX,
        have: buf.len(),
    })?;
    buf.get(at..end)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(DecodeError::TooShort {
            what,
            need: end,
            have: buf.len(),
        })
}

pub(crate) fn get_u32(buf: &[u8], at: usize, what: &'static str) -> Result<u32, DecodeError> {
    get::<4>(buf, at, what).map(u32::from_ne_bytes)
}

pub(crate) fn get_i32(buf: &[u8], at: usize, what: &'static str) -> Result<i32, DecodeError> {
    get::<4>(buf, at, what).map(i32::from_ne_bytes)
}

pub(crate) fn get_u64(buf: &[u8], at: usize, what: &'static str) -> Result<u64, DecodeError> {
    get::<8>(buf, at, what).map(u64::from_ne_bytes)
}

pub(crate) fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

pub(crate) fn put_i32(buf: &mut [u8], at: usize, v: i32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

pub(crate) fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// The bytes before the first NUL of a fixed-size field (all of it if none).
pub(crate) fn fixed_str(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The NUL-terminated string starting at `at`; returns it and the offset of
/// its NUL. Errors when no NUL exists before the end of `buf`.
pub(crate) fn c_str(
    buf: &[u8],
    at: usize,
    what: &'static str,
) -> Result<(String, usize), DecodeError> {
    let tail = buf.get(at..).ok_or(DecodeError::MissingNul { what })?;
    let len = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or(DecodeError::MissingNul { what })?;
    Ok((String::from_utf8_lossy(&tail[..len]).into_owned(), at + len))
}

/// Append `s` and its NUL, refusing strings that hold a NUL themselves.
pub(crate) fn push_c_str(
    out: &mut Vec<u8>,
    s: &str,
    what: &'static str,
) -> Result<(), DecodeError> {
    if s.as_bytes().contains(&0) {
        return Err(DecodeError::InteriorNul { what });
    }
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(())
}

/// Zero-pad `out` to the next 8-byte boundary.
pub(crate) fn pad8(out: &mut Vec<u8>) {
    out.resize(align8(out.len()), 0);
}

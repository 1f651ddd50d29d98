//! udm's control-socket framing (little-endian): a request carries an ioctl
//! number and the whole dm_ioctl buffer, as an ioctl would pass it; a reply
//! carries an errno, the buffer the kernel would copy back and a
//! human-readable detail (which the kernel can only log).
//!
//! ```text
//! request: magic u32 | ioctl u32 | len u32 | buffer[len]
//! reply:   magic u32 | errno i32 | len u32 | buffer[len] | detail_len u32 | detail[detail_len]
//! ```
//!
//! # What a reply's buffer holds
//!
//! Exactly the bytes the kernel's `ctl_ioctl` would write into the caller's
//! buffer, from offset 0: a caller emulating the ioctl copies the reply's
//! buffer over the start of its request buffer and leaves the rest alone.
//!
//! * An ioctl number whose type byte is not 0xfd: nothing (`len` = 0, ENOTTY).
//! * `DM_VERSION`, and every failure once the version was read (a version
//!   mismatch, an unknown command, a bad `data_size`, any handler error):
//!   only `version[3]`, 12 bytes holding udm's version. The caller's
//!   `data_size`, name, uuid and payload stay as they were.
//! * `DM_REMOVE_ALL` and `DM_DEV_SET_GEOMETRY` on success: also only
//!   `version[3]` (the kernel sets `data_size` to 0 and copies nothing more).
//! * Any other success: the first `data_size` bytes of the result. That is
//!   305 for a header-only reply, including a list or status that did not
//!   fit (BUFFER_FULL, `data_start` = 312) and a TABLE_STATUS of a device
//!   with no such table; else 312 + the payload at `data_start` = 312, up to
//!   the last byte the kernel uses (a status ends at its last string's NUL).
//! * With `DM_SECURE_DATA_FLAG`, once `data_size` passed its check, the
//!   kernel zeroes the bytes it copied in (305 for the commands that take no
//!   payload, `data_size` otherwise), version included: a failure then
//!   returns that many zero bytes, a success its result followed by zeros
//!   up to that length.
//!
//! A buffer shorter than the 12 bytes of `version` is EINVAL with nothing
//! written. A returned header is the kernel's copy of the request: bytes
//! the kernel never sets (the padding word, `data[7]`, the bytes past the
//! NULs of the name and uuid) come back as sent, except `name[127]` and
//! `uuid[128]`, which are zeroed. Inside a payload, the alignment padding
//! between records is zero. (All of this was observed in Linux 6.12.)
//!
//! # Limits
//!
//! A length over [`MAX_FRAME`] is refused as soon as it is read (the reply
//! carries EINVAL and the connection is closed). Below that, the daemon
//! reads each request straight into the buffer its handler uses and caps
//! the request bytes held across all its clients (`udmd` documents the
//! budget): a frame that would exceed the budget waits until earlier
//! frames are done, so a client sees a delay, never a different answer.

use crate::DecodeError;

/// The frame magic, 0x3144_4d55. Written little-endian it is the bytes
/// `55 4d 44 31` ("UMD1"; the project calls it "UDM1").
pub const FRAME_MAGIC: u32 = 0x3144_4d55;
/// The largest buffer (and detail) a frame may carry: 1 GiB of dm_ioctl
/// buffer plus slack.
pub const MAX_FRAME: usize = (1 << 30) + 4096;

/// A request: the ioctl number and the dm_ioctl buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFrame {
    pub ioctl: u32,
    pub buffer: Vec<u8>,
}

/// A reply: 0 or a positive errno, the returned buffer and an error detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyFrame {
    pub errno: i32,
    pub buffer: Vec<u8>,
    pub detail: String,
}

fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn check_magic(buf: &[u8]) -> Result<(), DecodeError> {
    match le_u32(buf, 0) {
        Some(m) if m != FRAME_MAGIC => Err(DecodeError::BadMagic(m)),
        _ => Ok(()),
    }
}

/// A length field: `Ok(None)` when its bytes have not all arrived yet.
fn length(buf: &[u8], at: usize, what: &'static str) -> Result<Option<usize>, DecodeError> {
    match le_u32(buf, at) {
        None => Ok(None),
        Some(n) if n as usize > MAX_FRAME => Err(DecodeError::TooLarge {
            what,
            len: n as usize,
            max: MAX_FRAME,
        }),
        Some(n) => Ok(Some(n as usize)),
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Encoders are only handed buffers below MAX_FRAME; saturate rather than wrap.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

impl RequestFrame {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + self.buffer.len());
        out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
        out.extend_from_slice(&self.ioctl.to_le_bytes());
        put_len(&mut out, self.buffer.len());
        out.extend_from_slice(&self.buffer);
        out
    }

    /// Decode one frame from the front of `buf`: `Ok(None)` if more bytes
    /// are needed, else the frame and the bytes it used. A bad magic or a
    /// length over [`MAX_FRAME`] is an error as soon as it is seen.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, DecodeError> {
        check_magic(buf)?;
        let Some(ioctl) = le_u32(buf, 4) else {
            return Ok(None);
        };
        let Some(len) = length(buf, 8, "request buffer")? else {
            return Ok(None);
        };
        let end = 12 + len;
        let Some(body) = buf.get(12..end) else {
            return Ok(None);
        };
        Ok(Some((
            RequestFrame {
                ioctl,
                buffer: body.to_vec(),
            },
            end,
        )))
    }
}

impl ReplyFrame {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.buffer.len() + self.detail.len());
        out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
        out.extend_from_slice(&self.errno.to_le_bytes());
        put_len(&mut out, self.buffer.len());
        out.extend_from_slice(&self.buffer);
        put_len(&mut out, self.detail.len());
        out.extend_from_slice(self.detail.as_bytes());
        out
    }

    /// As [`RequestFrame::decode`]; a negative errno is an error and a
    /// detail that is not UTF-8 is decoded lossily.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, DecodeError> {
        check_magic(buf)?;
        let Some(errno) = le_u32(buf, 4).map(|e| e as i32) else {
            return Ok(None);
        };
        if errno < 0 {
            return Err(DecodeError::BadErrno(errno));
        }
        let Some(len) = length(buf, 8, "reply buffer")? else {
            return Ok(None);
        };
        let body_end = 12 + len;
        let Some(dlen) = length(buf, body_end, "reply detail")? else {
            return Ok(None);
        };
        let end = body_end + 4 + dlen;
        let Some(detail) = buf.get(body_end + 4..end) else {
            return Ok(None);
        };
        Ok(Some((
            ReplyFrame {
                errno,
                buffer: buf[12..body_end].to_vec(),
                detail: String::from_utf8_lossy(detail).into_owned(),
            },
            end,
        )))
    }
}

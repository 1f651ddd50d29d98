//! Reply encoding: simple replies, and the structured chunks this server sends (one
//! final chunk per reply: OFFSET_DATA, BLOCK_STATUS, ERROR or NONE).

use super::check::Request;
use crate::export::Extent;
use crate::proto::{self, PutBe};

/// How a reply is to be encoded.
pub(super) struct Format {
    pub structured: bool,
    pub meta_context: u32,
}

/// Append the reply header (and any small payload) for `req` to `out`. Returns true
/// when `req.len` bytes of read data must follow it on the wire.
pub(super) fn encode(
    out: &mut Vec<u8>,
    f: &Format,
    req: &Request,
    result: Result<(), u32>,
    extents: &[Extent],
) -> bool {
    match result {
        Ok(()) => match req.cmd {
            proto::CMD_READ if f.structured && req.len == 0 => {
                put_chunk(out, req, proto::REPLY_TYPE_NONE, 0);
                false
            }
            proto::CMD_READ if f.structured => {
                // Final already: the data is in memory, no error can follow.
                put_chunk(out, req, proto::REPLY_TYPE_OFFSET_DATA, 8 + req.len);
                out.put_u64(req.offset);
                true
            }
            proto::CMD_READ => {
                put_simple(out, req, 0);
                true
            }
            proto::CMD_BLOCK_STATUS => {
                let start = out.len();
                put_chunk(out, req, proto::REPLY_TYPE_BLOCK_STATUS, 0);
                out.put_u32(f.meta_context);
                put_extents(out, extents, req.len, req.has(proto::CMD_FLAG_REQ_ONE));
                let payload = (out.len() - start - proto::CHUNK_HEADER_LEN) as u32;
                out[start + 16..start + 20].copy_from_slice(&payload.to_be_bytes());
                false
            }
            _ => {
                put_simple(out, req, 0);
                false
            }
        },
        Err(e) if f.structured => {
            let msg = proto::error_text(e).as_bytes();
            put_chunk(out, req, proto::REPLY_TYPE_ERROR, 6 + msg.len() as u32);
            out.put_u32(e);
            out.put_u16(msg.len() as u16);
            out.extend_from_slice(msg);
            false
        }
        Err(e) => {
            put_simple(out, req, e);
            false
        }
    }
}

fn put_simple(out: &mut Vec<u8>, req: &Request, error: u32) {
    out.put_u32(proto::SIMPLE_REPLY_MAGIC);
    out.put_u32(error);
    out.put_u64(req.cookie);
}

/// A structured chunk header, always the final chunk of its reply.
fn put_chunk(out: &mut Vec<u8>, req: &Request, typ: u16, len: u32) {
    out.put_u32(proto::STRUCTURED_REPLY_MAGIC);
    out.put_u16(proto::REPLY_FLAG_DONE);
    out.put_u16(typ);
    out.put_u64(req.cookie);
    out.put_u32(len);
}

/// Block-status descriptors for a request of `req_len` bytes: clipped to the request,
/// neighbours with equal status merged, at most one with REQ_ONE and at most
/// [`proto::MAX_EXTENTS`] otherwise; never none.
fn put_extents(out: &mut Vec<u8>, extents: &[Extent], req_len: u32, req_one: bool) {
    let mut remaining = req_len;
    let mut pending: Option<(u32, u32)> = None;
    let mut count = 0usize;
    for e in extents {
        if remaining == 0 {
            break;
        }
        let len = e.length.min(u64::from(remaining)) as u32;
        if len == 0 {
            continue;
        }
        let status =
            if e.hole { proto::STATE_HOLE } else { 0 } | if e.zero { proto::STATE_ZERO } else { 0 };
        if let Some((plen, pstatus)) = pending.as_mut() {
            if *pstatus == status {
                *plen += len;
                remaining -= len;
                continue;
            }
            if req_one || count + 1 >= proto::MAX_EXTENTS {
                break;
            }
            out.put_u32(*plen);
            out.put_u32(*pstatus);
            count += 1;
        }
        pending = Some((len, status));
        remaining -= len;
    }
    // An export that described nothing gets the status that is always safe: 0.
    let (len, status) = pending.unwrap_or((req_len, 0));
    out.put_u32(len);
    out.put_u32(status);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::be_u32;

    fn ext(length: u64, hole: bool, zero: bool) -> Extent {
        Extent { length, hole, zero }
    }

    fn decode(b: &[u8]) -> Vec<(u32, u32)> {
        b.chunks_exact(8)
            .map(|c| (be_u32(c, 0), be_u32(c, 4)))
            .collect()
    }

    #[test]
    fn extents_are_merged_and_clipped() {
        let mut out = Vec::new();
        let e = [
            ext(4096, false, false),
            ext(4096, false, false),
            ext(8192, true, true),
            ext(1 << 40, false, true),
        ];
        put_extents(&mut out, &e, 20000, false);
        assert_eq!(decode(&out), vec![(8192, 0), (8192, 3), (3616, 2)]);
        out.clear();
        put_extents(&mut out, &e, 20000, true);
        assert_eq!(decode(&out), vec![(8192, 0)]);
        out.clear();
        put_extents(&mut out, &e, 100, true);
        assert_eq!(decode(&out), vec![(100, 0)]);
        out.clear();
        put_extents(&mut out, &[], 512, false);
        assert_eq!(decode(&out), vec![(512, 0)]);
        out.clear();
        let huge = [ext(0, true, true), ext(1 << 33, true, true)];
        put_extents(&mut out, &huge, u32::MAX, false);
        assert_eq!(decode(&out), vec![(u32::MAX, 3)]);
    }

    #[test]
    fn block_status_chunk_length_is_patched() {
        let mut out = vec![0xee; 3];
        let req = Request {
            cmd: proto::CMD_BLOCK_STATUS,
            cookie: 9,
            len: 4096,
            ..Request::default()
        };
        let f = Format {
            structured: true,
            meta_context: 1,
        };
        let e = [ext(1024, true, true), ext(8192, false, false)];
        assert!(!encode(&mut out, &f, &req, Ok(()), &e));
        let c = &out[3..];
        assert_eq!(be_u32(c, 0), proto::STRUCTURED_REPLY_MAGIC);
        assert_eq!(&c[4..8], &[0, 1, 0, 5]);
        assert_eq!(be_u32(c, 16), 4 + 16);
        assert_eq!(be_u32(c, 20), 1);
        assert_eq!(decode(&c[24..]), vec![(1024, 3), (3072, 0)]);
    }
}

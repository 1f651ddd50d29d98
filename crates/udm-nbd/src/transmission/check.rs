//! A request as it arrives, and its judgement against the negotiated session before
//! the export sees it (spec "Request types" and "Error values").

use crate::export::Errno;
use crate::proto::{self, be_u16, be_u32, be_u64, err};

/// Largest transfer [`Request::is_quick`] accepts.
const QUICK_LEN: u32 = 256 << 10;
/// Writes up to this size may be served by the thread that read them.
const QUICK_WRITE_LEN: u32 = 16 << 10;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Request {
    pub flags: u16,
    pub cmd: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

impl Request {
    /// Decode a request header; returns its magic alongside.
    pub(super) fn parse(h: &[u8; proto::REQUEST_LEN]) -> (u32, Request) {
        let req = Request {
            flags: be_u16(h, 4),
            cmd: be_u16(h, 6),
            cookie: be_u64(h, 8),
            offset: be_u64(h, 16),
            len: be_u32(h, 24),
        };
        (be_u32(h, 0), req)
    }

    pub(super) fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// A small read or write without FUA: the kind of request a fast export answers
    /// in microseconds. Flushes, FUA, trims, zeroing and large transfers may take
    /// long whatever the average says.
    pub(super) fn is_quick(&self) -> bool {
        let max = match self.cmd {
            proto::CMD_READ => QUICK_LEN,
            // A large write's payload is best received by another thread while this
            // one copies the current payload to the export: both are memory copies,
            // and only a hand-off lets them overlap on two cores.
            proto::CMD_WRITE => QUICK_WRITE_LEN,
            _ => return false,
        };
        !self.has(proto::CMD_FLAG_FUA) && self.len <= max
    }
}

/// What requests are judged against.
pub(super) struct Limits {
    pub size: u64,
    pub read_only: bool,
    pub structured: bool,
    pub block_status: bool,
    pub min_block: u64,
    pub max_request: u32,
}

/// Validate a request; `Err` carries the NBD error to answer.
pub(super) fn check(l: &Limits, req: &Request) -> Result<(), u32> {
    let allowed = match req.cmd {
        proto::CMD_READ if l.structured => proto::CMD_FLAG_FUA | proto::CMD_FLAG_DF,
        proto::CMD_READ | proto::CMD_WRITE | proto::CMD_FLUSH | proto::CMD_TRIM => {
            proto::CMD_FLAG_FUA
        }
        proto::CMD_CACHE => proto::CMD_FLAG_FUA,
        proto::CMD_WRITE_ZEROES => {
            proto::CMD_FLAG_FUA | proto::CMD_FLAG_NO_HOLE | proto::CMD_FLAG_FAST_ZERO
        }
        proto::CMD_BLOCK_STATUS => proto::CMD_FLAG_FUA | proto::CMD_FLAG_REQ_ONE,
        _ => return Err(err::EINVAL),
    };
    if req.flags & !allowed != 0 {
        return Err(err::EINVAL);
    }
    let writes = matches!(
        req.cmd,
        proto::CMD_WRITE | proto::CMD_TRIM | proto::CMD_WRITE_ZEROES
    );
    if writes && l.read_only {
        return Err(err::EPERM);
    }
    if req.cmd == proto::CMD_FLUSH {
        return Ok(());
    }
    let end = req.offset.checked_add(u64::from(req.len));
    if end.is_none_or(|end| end > l.size) {
        return Err(match req.cmd {
            proto::CMD_WRITE | proto::CMD_WRITE_ZEROES => err::ENOSPC,
            _ => err::EINVAL,
        });
    }
    match req.cmd {
        proto::CMD_READ if req.len > l.max_request => {
            return Err(if l.structured {
                err::EOVERFLOW
            } else {
                err::EINVAL
            });
        }
        proto::CMD_BLOCK_STATUS if !l.block_status || req.len == 0 => return Err(err::EINVAL),
        proto::CMD_BLOCK_STATUS => return Ok(()),
        _ => {}
    }
    if l.min_block > 1 && (req.offset | u64::from(req.len)) % l.min_block != 0 {
        return Err(err::EINVAL);
    }
    Ok(())
}

/// The NBD error for an export's errno on this request.
pub(super) fn map_errno(req: &Request, errno: Errno) -> u32 {
    match proto::nbd_error(errno.0) {
        // Only a fast zero request may fail with ENOTSUP (spec "Error values").
        err::ENOTSUP
            if !(req.cmd == proto::CMD_WRITE_ZEROES && req.has(proto::CMD_FLAG_FAST_ZERO)) =>
        {
            err::EINVAL
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        size: 1 << 20,
        read_only: false,
        structured: false,
        block_status: false,
        min_block: 1,
        max_request: 1 << 16,
    };

    fn req(cmd: u16, flags: u16, offset: u64, len: u32) -> Request {
        Request {
            flags,
            cmd,
            cookie: 0,
            offset,
            len,
        }
    }

    #[test]
    fn judgements_follow_the_spec() {
        let l = &LIMITS;
        assert_eq!(check(l, &req(proto::CMD_READ, 0, 0, 512)), Ok(()));
        assert_eq!(
            check(l, &req(proto::CMD_READ, proto::CMD_FLAG_DF, 0, 512)),
            Err(22)
        );
        assert_eq!(check(l, &req(proto::CMD_READ, 0, 1 << 20, 1)), Err(22));
        assert_eq!(check(l, &req(proto::CMD_WRITE, 0, 1 << 20, 1)), Err(28));
        assert_eq!(
            check(l, &req(proto::CMD_WRITE_ZEROES, 0, u64::MAX, 1)),
            Err(28)
        );
        assert_eq!(check(l, &req(proto::CMD_READ, 0, 0, 1 << 17)), Err(22));
        assert_eq!(check(l, &req(proto::CMD_TRIM, 0, 0, 1 << 20)), Ok(()));
        assert_eq!(check(l, &req(proto::CMD_FLUSH, 0, 5, 5)), Ok(()));
        assert_eq!(check(l, &req(proto::CMD_BLOCK_STATUS, 0, 0, 1)), Err(22));
        assert_eq!(check(l, &req(9, 0, 0, 0)), Err(22));
        assert_eq!(check(l, &req(proto::CMD_FLUSH, 1 << 5, 0, 0)), Err(22));
        let ro = Limits {
            read_only: true,
            ..LIMITS
        };
        assert_eq!(check(&ro, &req(proto::CMD_TRIM, 0, 0, 1)), Err(1));
        assert_eq!(check(&ro, &req(proto::CMD_WRITE, 0, 1 << 30, 1)), Err(1));
        let aligned = Limits {
            min_block: 512,
            structured: true,
            block_status: true,
            ..LIMITS
        };
        assert_eq!(check(&aligned, &req(proto::CMD_READ, 0, 512, 100)), Err(22));
        assert_eq!(
            check(&aligned, &req(proto::CMD_BLOCK_STATUS, 0, 1, 1)),
            Ok(())
        );
        assert_eq!(
            check(&aligned, &req(proto::CMD_READ, 0, 0, 1 << 17)),
            Err(75)
        );
    }

    #[test]
    fn enotsup_only_for_fast_zero() {
        let fast = req(proto::CMD_WRITE_ZEROES, proto::CMD_FLAG_FAST_ZERO, 0, 1);
        assert_eq!(map_errno(&fast, Errno::ENOTSUP), 95);
        assert_eq!(
            map_errno(&req(proto::CMD_TRIM, 0, 0, 1), Errno::ENOTSUP),
            22
        );
        assert_eq!(map_errno(&fast, Errno::EIO), 5);
    }
}

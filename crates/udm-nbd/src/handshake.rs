//! The fixed-newstyle handshake: greeting, client flags, then option haggling until the
//! client picks an export (NBD_OPT_GO or NBD_OPT_EXPORT_NAME) or leaves.

use std::io::IoSlice;
use std::sync::Arc;

use tracing::{debug, warn};

use crate::conn::Conn;
use crate::error::ConnError;
use crate::export::{Backend, BlockSize, Export};
use crate::proto::{self, be_u16, be_u32, be_u64, PutBe};
use crate::stream::Reader;

/// What the client chose, ready for the transmission phase.
pub(crate) struct Negotiated {
    pub name: String,
    pub export: Arc<dyn Export>,
    pub structured: bool,
    /// The context id of `base:allocation`, when the client selected it for this export.
    pub meta_context: Option<u32>,
    pub block_size: BlockSize,
}

/// Option data beyond this is refused with NBD_REP_ERR_TOO_BIG (names are at most
/// 4096 bytes, so real options are far smaller).
const MAX_OPTION_DATA: u32 = 64 << 10;
/// Option data beyond this is not even skipped: the connection is dropped.
const MAX_SKIPPED_OPTION_DATA: u32 = 16 << 20;

/// Run the handshake on a fresh connection. `Ok(None)` when the client ended it
/// (NBD_OPT_ABORT or end of file).
pub(crate) fn negotiate(
    conn: &Conn,
    reader: &mut Reader,
    backend: &dyn Backend,
    max_request: u32,
) -> Result<Option<Negotiated>, ConnError> {
    let mut greeting = Vec::with_capacity(18);
    greeting.put_u64(proto::NBDMAGIC);
    greeting.put_u64(proto::IHAVEOPT);
    greeting.put_u16(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES);
    conn.stream.send_all(&mut [IoSlice::new(&greeting)])?;

    let mut cf = [0u8; 4];
    if !reader.read_message(&mut cf)? {
        return Ok(None);
    }
    let client_flags = u32::from_be_bytes(cf);
    if client_flags & !(proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES) != 0 {
        return Err(ConnError::BadClientFlags(client_flags));
    }
    let mut h = Haggler {
        conn,
        reader,
        backend,
        max_request,
        no_zeroes: client_flags & proto::FLAG_C_NO_ZEROES != 0,
        structured: false,
        meta_export: None,
        data: Vec::new(),
        out: Vec::new(),
    };
    h.run()
}

struct Haggler<'a> {
    conn: &'a Conn,
    reader: &'a mut Reader,
    backend: &'a dyn Backend,
    max_request: u32,
    no_zeroes: bool,
    structured: bool,
    /// The export for which `base:allocation` was last selected.
    meta_export: Option<String>,
    /// Data of the current option.
    data: Vec<u8>,
    /// Payload of the reply being built.
    out: Vec<u8>,
}

/// How one option ended.
enum Step {
    Continue,
    Go(Negotiated),
    Abort,
}

impl Haggler<'_> {
    fn run(&mut self) -> Result<Option<Negotiated>, ConnError> {
        loop {
            let mut hdr = [0u8; 16];
            if !self.reader.read_message(&mut hdr)? {
                return Ok(None);
            }
            let magic = be_u64(&hdr, 0);
            let option = be_u32(&hdr, 8);
            let len = be_u32(&hdr, 12);
            if magic != proto::IHAVEOPT {
                return Err(ConnError::BadOptionMagic(magic));
            }
            if len > MAX_OPTION_DATA {
                if option == proto::OPT_EXPORT_NAME || len > MAX_SKIPPED_OPTION_DATA {
                    return Err(ConnError::OptionTooLong { option, len });
                }
                self.reader.discard(u64::from(len))?;
                self.reply(option, proto::REP_ERR_TOO_BIG, b"option data too long")?;
                continue;
            }
            self.data.clear();
            self.data.resize(len as usize, 0);
            self.reader.read_exact(&mut self.data)?;
            debug!(conn = self.conn.id, option, len, "option");
            match self.option(option)? {
                Step::Continue => {}
                Step::Go(n) => return Ok(Some(n)),
                Step::Abort => return Ok(None),
            }
        }
    }

    fn option(&mut self, option: u32) -> Result<Step, ConnError> {
        match option {
            proto::OPT_EXPORT_NAME => self.export_name(),
            proto::OPT_ABORT => {
                // The client may already have closed; a failed ACK is no error.
                let _ = self.reply(option, proto::REP_ACK, &[]);
                Ok(Step::Abort)
            }
            proto::OPT_LIST => {
                if !self.data.is_empty() {
                    self.reply(
                        option,
                        proto::REP_ERR_INVALID,
                        b"NBD_OPT_LIST takes no data",
                    )?;
                    return Ok(Step::Continue);
                }
                for (name, desc) in self.backend.list() {
                    self.out.clear();
                    self.out.put_u32(name.len() as u32);
                    self.out.extend_from_slice(name.as_bytes());
                    self.out.extend_from_slice(desc.as_bytes());
                    self.reply_out(option, proto::REP_SERVER)?;
                }
                self.reply(option, proto::REP_ACK, &[])?;
                Ok(Step::Continue)
            }
            proto::OPT_INFO | proto::OPT_GO => self.info_go(option),
            proto::OPT_STRUCTURED_REPLY => {
                if self.data.is_empty() {
                    self.structured = true;
                    self.reply(option, proto::REP_ACK, &[])?;
                } else {
                    self.reply(option, proto::REP_ERR_INVALID, b"option takes no data")?;
                }
                Ok(Step::Continue)
            }
            proto::OPT_LIST_META_CONTEXT | proto::OPT_SET_META_CONTEXT => self.meta_context(option),
            _ => {
                self.reply(option, proto::REP_ERR_UNSUP, b"option not supported")?;
                Ok(Step::Continue)
            }
        }
    }

    /// Legacy NBD_OPT_EXPORT_NAME: no way to report an error but hanging up.
    fn export_name(&mut self) -> Result<Step, ConnError> {
        let name = String::from_utf8_lossy(&self.data).into_owned();
        let Some(neg) = self.select(&name) else {
            return Err(ConnError::UnknownExport(name));
        };
        self.out.clear();
        self.out.put_u64(neg.export.size());
        self.out.put_u16(self.transmission_flags(&*neg.export));
        if !self.no_zeroes {
            self.out.extend_from_slice(&[0u8; 124]);
        }
        self.conn.stream.send_all(&mut [IoSlice::new(&self.out)])?;
        Ok(Step::Go(neg))
    }

    fn info_go(&mut self, option: u32) -> Result<Step, ConnError> {
        let Some((name, requests)) = parse_info(&self.data) else {
            self.reply(
                option,
                proto::REP_ERR_INVALID,
                b"malformed NBD_OPT_INFO/GO data",
            )?;
            return Ok(Step::Continue);
        };
        let Some(canonical) = self.canonical_name(&name) else {
            return self.unknown(option, &name);
        };
        let (export, neg) = if option == proto::OPT_GO {
            match self.select(&name) {
                Some(neg) => (Arc::clone(&neg.export), Some(neg)),
                None => return self.unknown(option, &name),
            }
        } else {
            match self.backend.open(&canonical) {
                Some(e) => (e, None),
                None => return self.unknown(option, &name),
            }
        };

        self.out.clear();
        self.out.put_u16(proto::INFO_EXPORT);
        self.out.put_u64(export.size());
        self.out.put_u16(self.transmission_flags(&*export));
        self.reply_out(option, proto::REP_INFO)?;
        if requests.contains(&proto::INFO_NAME) {
            self.out.clear();
            self.out.put_u16(proto::INFO_NAME);
            self.out.extend_from_slice(canonical.as_bytes());
            self.reply_out(option, proto::REP_INFO)?;
        }
        if requests.contains(&proto::INFO_DESCRIPTION) {
            let desc = self
                .backend
                .list()
                .into_iter()
                .find(|(n, _)| *n == canonical)
                .map(|(_, d)| d)
                .unwrap_or_default();
            if !desc.is_empty() {
                self.out.clear();
                self.out.put_u16(proto::INFO_DESCRIPTION);
                self.out.extend_from_slice(desc.as_bytes());
                self.reply_out(option, proto::REP_INFO)?;
            }
        }
        // Always sent: clients ignore it unless they asked, and those that did need it.
        let bs = sanitize_block_size(export.block_size(), self.max_request);
        self.out.clear();
        self.out.put_u16(proto::INFO_BLOCK_SIZE);
        self.out.put_u32(bs.min);
        self.out.put_u32(bs.preferred);
        self.out.put_u32(bs.max);
        self.reply_out(option, proto::REP_INFO)?;
        self.reply(option, proto::REP_ACK, &[])?;
        Ok(match neg {
            Some(neg) => Step::Go(neg),
            None => Step::Continue,
        })
    }

    fn unknown(&mut self, option: u32, name: &str) -> Result<Step, ConnError> {
        debug!(conn = self.conn.id, name, "unknown export");
        self.reply(option, proto::REP_ERR_UNKNOWN, b"export not found")?;
        Ok(Step::Continue)
    }

    fn meta_context(&mut self, option: u32) -> Result<Step, ConnError> {
        let set = option == proto::OPT_SET_META_CONTEXT;
        if set {
            // A SET replaces the selection even when it fails.
            self.meta_export = None;
        }
        if !self.structured {
            self.reply(
                option,
                proto::REP_ERR_INVALID,
                b"structured replies not negotiated",
            )?;
            return Ok(Step::Continue);
        }
        let Some((name, queries)) = parse_meta(&self.data) else {
            self.reply(
                option,
                proto::REP_ERR_INVALID,
                b"malformed meta context data",
            )?;
            return Ok(Step::Continue);
        };
        let Some(canonical) = self.canonical_name(&name) else {
            return self.unknown(option, &name);
        };
        if self.backend.open(&canonical).is_none() {
            return self.unknown(option, &name);
        }
        // No query lists everything but selects nothing.
        let mut selected = !set && queries.is_empty();
        for q in &queries {
            let Some((ns, leaf)) = q.split_once(':') else {
                self.reply(option, proto::REP_ERR_INVALID, b"query lacks a namespace")?;
                return Ok(Step::Continue);
            };
            // Unknown namespaces and leaves are ignored; `base:` is a wildcard for LIST
            // only.
            if ns == "base" && (leaf == "allocation" || (!set && leaf.is_empty())) {
                selected = true;
            }
        }
        if selected {
            self.out.clear();
            self.out
                .put_u32(if set { proto::BASE_ALLOCATION_ID } else { 0 });
            self.out
                .extend_from_slice(proto::BASE_ALLOCATION.as_bytes());
            self.reply_out(option, proto::REP_META_CONTEXT)?;
            if set {
                self.meta_export = Some(canonical);
            }
        }
        self.reply(option, proto::REP_ACK, &[])?;
        Ok(Step::Continue)
    }

    /// The name a client's export name stands for: the empty name is the default
    /// export, which is the only export when there is exactly one.
    fn canonical_name(&self, name: &str) -> Option<String> {
        if !name.is_empty() {
            return Some(name.to_owned());
        }
        if self.backend.open("").is_some() {
            return Some(String::new());
        }
        let mut list = self.backend.list();
        if list.len() == 1 {
            list.pop().map(|(n, _)| n)
        } else {
            None
        }
    }

    /// Open the export the client goes into transmission with.
    fn select(&mut self, name: &str) -> Option<Negotiated> {
        let canonical = self.canonical_name(name)?;
        // Register the name before opening: a close_export racing with this handshake
        // either happened before (then open fails) or sees the name.
        self.conn.set_export(&canonical);
        let export = self.backend.open(&canonical)?;
        let meta_context = (self.meta_export.as_deref() == Some(canonical.as_str()))
            .then_some(proto::BASE_ALLOCATION_ID);
        let block_size = sanitize_block_size(export.block_size(), self.max_request);
        Some(Negotiated {
            name: canonical,
            export,
            structured: self.structured,
            meta_context,
            block_size,
        })
    }

    fn transmission_flags(&self, export: &dyn Export) -> u16 {
        let mut f = proto::FLAG_HAS_FLAGS | proto::FLAG_SEND_FLUSH | proto::FLAG_SEND_CACHE;
        if export.read_only() {
            f |= proto::FLAG_READ_ONLY;
        } else {
            f |= proto::FLAG_SEND_FUA
                | proto::FLAG_SEND_TRIM
                | proto::FLAG_SEND_WRITE_ZEROES
                | proto::FLAG_SEND_FAST_ZERO;
        }
        if self.structured {
            f |= proto::FLAG_SEND_DF;
        }
        if export.can_multi_conn() {
            f |= proto::FLAG_CAN_MULTI_CONN;
        }
        f
    }

    fn reply_out(&mut self, option: u32, typ: u32) -> Result<(), ConnError> {
        let out = std::mem::take(&mut self.out);
        let r = self.reply(option, typ, &out);
        self.out = out;
        r
    }

    fn reply(&mut self, option: u32, typ: u32, data: &[u8]) -> Result<(), ConnError> {
        let mut hdr = [0u8; 20];
        hdr[..8].copy_from_slice(&proto::OPT_REPLY_MAGIC.to_be_bytes());
        hdr[8..12].copy_from_slice(&option.to_be_bytes());
        hdr[12..16].copy_from_slice(&typ.to_be_bytes());
        hdr[16..20].copy_from_slice(&(data.len() as u32).to_be_bytes());
        self.conn
            .stream
            .send_all(&mut [IoSlice::new(&hdr), IoSlice::new(data)])?;
        Ok(())
    }
}

/// Make an export's advertised constraints obey the spec's rules whatever the export
/// says, and cap the maximum payload at the server's request limit.
pub(crate) fn sanitize_block_size(bs: BlockSize, max_request: u32) -> BlockSize {
    let min = if bs.min.is_power_of_two() && bs.min <= 65536 {
        bs.min
    } else {
        warn!(
            min = bs.min,
            "export block size minimum is not a power of two <= 64 KiB; using 1"
        );
        1
    };
    let floor = min.max(512);
    let preferred = if bs.preferred.is_power_of_two() && bs.preferred >= floor {
        bs.preferred
    } else {
        floor.max(4096)
    };
    let max = bs.max.min(max_request).max(preferred);
    BlockSize {
        min,
        preferred,
        max,
    }
}

/// NBD_OPT_INFO/GO data: name length, name, request count, requests.
fn parse_info(d: &[u8]) -> Option<(String, Vec<u16>)> {
    if d.len() < 6 {
        return None;
    }
    let nlen = be_u32(d, 0) as usize;
    let rest = d.len().checked_sub(6)?;
    if nlen > rest {
        return None;
    }
    let name = std::str::from_utf8(&d[4..4 + nlen]).ok()?.to_owned();
    let count = be_u16(d, 4 + nlen) as usize;
    let reqs = &d[6 + nlen..];
    if reqs.len() != count * 2 {
        return None;
    }
    Some((name, reqs.chunks_exact(2).map(|c| be_u16(c, 0)).collect()))
}

/// NBD_OPT_{LIST,SET}_META_CONTEXT data: name length, name, query count, queries.
fn parse_meta(d: &[u8]) -> Option<(String, Vec<String>)> {
    let mut at = 0usize;
    let name = take_string(d, &mut at)?;
    let count = take_u32(d, &mut at)? as usize;
    let mut queries = Vec::new();
    for _ in 0..count {
        queries.push(take_string(d, &mut at)?);
    }
    (at == d.len()).then_some((name, queries))
}

fn take_u32(d: &[u8], at: &mut usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let v = be_u32(d.get(*at..end)?, 0);
    *at = end;
    Some(v)
}

fn take_string(d: &[u8], at: &mut usize) -> Option<String> {
    let len = take_u32(d, at)? as usize;
    let end = at.checked_add(len)?;
    let s = std::str::from_utf8(d.get(*at..end)?).ok()?.to_owned();
    *at = end;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_data_must_add_up() {
        let mut d = Vec::new();
        d.put_u32(3);
        d.extend_from_slice(b"abc");
        d.put_u16(2);
        d.put_u16(1);
        d.put_u16(3);
        assert_eq!(parse_info(&d), Some(("abc".into(), vec![1, 3])));
        assert_eq!(parse_info(&d[..d.len() - 1]), None);
        let mut long = d.clone();
        long.push(0);
        assert_eq!(parse_info(&long), None);
        let mut huge = Vec::new();
        huge.put_u32(u32::MAX);
        huge.put_u16(0);
        assert_eq!(parse_info(&huge), None);
    }

    #[test]
    fn meta_data_must_add_up() {
        let mut d = Vec::new();
        d.put_u32(0);
        d.put_u32(2);
        d.put_u32(15);
        d.extend_from_slice(b"base:allocation");
        d.put_u32(5);
        d.extend_from_slice(b"base:");
        assert_eq!(
            parse_meta(&d),
            Some((
                String::new(),
                vec!["base:allocation".into(), "base:".into()]
            ))
        );
        assert_eq!(parse_meta(&d[..d.len() - 1]), None);
        let mut bad = Vec::new();
        bad.put_u32(0);
        bad.put_u32(u32::MAX);
        assert_eq!(parse_meta(&bad), None);
    }

    #[test]
    fn block_sizes_are_made_valid() {
        let bs = |min, preferred, max| BlockSize {
            min,
            preferred,
            max,
        };
        assert_eq!(
            sanitize_block_size(bs(512, 4096, 1 << 30), 32 << 20),
            bs(512, 4096, 32 << 20)
        );
        assert_eq!(
            sanitize_block_size(bs(3, 100, 10), 32 << 20),
            bs(1, 4096, 4096)
        );
        assert_eq!(
            sanitize_block_size(bs(1 << 20, 4096, 1 << 20), 32 << 20),
            bs(1, 4096, 1 << 20)
        );
    }
}

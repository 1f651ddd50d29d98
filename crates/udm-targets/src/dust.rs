//! `dust <dev> <off> <blksz>`: linear, plus a list of bad blocks (of `blksz`
//! bytes, numbered on the underlying device, offset included). Once `enable`d, a
//! read of a bad block fails with EIO, and a write to one fails while its write
//! fail count lasts, then succeeds and removes the block from the list. I/O is
//! split at block boundaries. Messages: `addbadblock <blk> [<wr_fail_cnt>]`,
//! `removebadblock <blk>`, `queryblock <blk>`, `countbadblocks`,
//! `clearbadblocks`, `listbadblocks`, `enable`, `disable`, `quiet`; every error
//! is EINVAL, and only the query and listing ones reply. INFO is
//! `<dev> <fail_read_on_bad_block|bypass> <quiet|verbose>`; TABLE is
//! `<dev> <off> <blksz>`; IMA is empty.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::info;
use udm_core::{
    args::parse_u64, ArgReader, Bio, BlockDev, DmError, Errno, Mapped, Op, Sector, StatusType,
    TableError, Target, TargetCtx, TargetType,
};

pub const TYPE: TargetType = TargetType {
    name: "dust",
    version: [1, 0, 0],
    ctr,
};

/// Largest block: 1 GiB, in sectors.
const MAX_BLOCK_SECTORS: Sector = Sector(2_097_152);

pub struct Dust {
    dev: Arc<dyn BlockDev>,
    offset: Sector,
    blksz: u32,
    /// log2 of the block size in sectors.
    shift: u32,
    /// Bad block -> writes still to fail.
    bad: Mutex<BTreeMap<u64, u8>>,
    fail_read_on_bb: AtomicBool,
    quiet: AtomicBool,
}

fn ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    ctx.expect_args(args, 3)?;
    let mut rd = ArgReader::new(ctx, args);
    // Unlike delay and flakey, dust answers EINVAL for a device it cannot get.
    let (dev, offset, _) = rd
        .next_device(ctx.len)
        .map_err(|e| e.errno(Errno::EINVAL))?;
    let blksz = rd.next_u64("block size")?;
    if blksz < 512 {
        return Err(rd.err_last("block size", "invalid block size parameter"));
    }
    if !blksz.is_power_of_two() {
        return Err(rd.err_last("block size", "block size parameter not a power of two"));
    }
    let sectors = Sector::from_bytes(blksz);
    if sectors > ctx.len.min(MAX_BLOCK_SECTORS) {
        return Err(rd.err_last("block size", "block size too large"));
    }
    Ok(Box::new(Dust {
        dev,
        offset,
        blksz: blksz as u32,
        shift: sectors.get().trailing_zeros(),
        bad: Mutex::new(BTreeMap::new()),
        fail_read_on_bb: AtomicBool::new(false),
        quiet: AtomicBool::new(false),
    }))
}

fn einval(msg: impl Into<String>) -> DmError {
    DmError::new(Errno::EINVAL, msg)
}

impl Dust {
    fn parse_block(&self, s: &str) -> Result<u64, DmError> {
        let block = parse_u64(s).ok_or_else(|| einval(format!("invalid block '{s}'")))?;
        let blocks = self.dev.size_sectors() >> self.shift;
        if block > blocks {
            return Err(einval("selected block value out of range"));
        }
        Ok(block)
    }

    fn verbose(&self) -> bool {
        !self.quiet.load(Ordering::Relaxed)
    }
}

impl Target for Dust {
    fn max_io_len(&self, offset: Sector) -> Sector {
        let blk = Sector(1 << self.shift);
        blk - offset % blk
    }

    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        let sector = self.offset + bio.sector;
        if bio.op == Op::Flush || !self.fail_read_on_bb.load(Ordering::Relaxed) {
            return Mapped::Remap(bio, &*self.dev, sector);
        }
        let block = sector.get() >> self.shift;
        let mut bad = self.bad.lock();
        if bio.op == Op::Read {
            if bad.contains_key(&block) {
                return Mapped::Kill(bio, Errno::EIO);
            }
        } else if let Some(left) = bad.get_mut(&block) {
            if *left > 0 {
                *left -= 1;
                return Mapped::Kill(bio, Errno::EIO);
            }
            bad.remove(&block);
            if self.verbose() {
                info!(block, "dust: block removed from badblocklist by write");
            }
        }
        drop(bad);
        Mapped::Remap(bio, &*self.dev, sector)
    }

    fn message(&self, argv: &[String]) -> Result<Option<String>, DmError> {
        let word = argv
            .first()
            .map(|w| w.to_ascii_lowercase())
            .unwrap_or_default();
        match argv.len() {
            1 => match word.as_str() {
                "addbadblock" | "removebadblock" | "queryblock" => {
                    Err(einval(format!("{word} requires an additional argument")))
                }
                "disable" => {
                    self.fail_read_on_bb.store(false, Ordering::Relaxed);
                    Ok(None)
                }
                "enable" => {
                    self.fail_read_on_bb.store(true, Ordering::Relaxed);
                    Ok(None)
                }
                "countbadblocks" => Ok(Some(format!(
                    "countbadblocks: {} badblock(s) found",
                    self.bad.lock().len()
                ))),
                "clearbadblocks" => {
                    let mut bad = self.bad.lock();
                    let reply = if bad.is_empty() {
                        "dust_clear_badblocks: no badblocks found"
                    } else {
                        "dust_clear_badblocks: badblocks cleared"
                    };
                    bad.clear();
                    Ok(Some(reply.to_string()))
                }
                "quiet" => {
                    self.quiet.fetch_xor(true, Ordering::Relaxed);
                    Ok(None)
                }
                "listbadblocks" => {
                    let bad = self.bad.lock();
                    if bad.is_empty() {
                        return Ok(Some("No blocks in badblocklist".to_string()));
                    }
                    Ok(Some(bad.keys().map(|b| format!("{b}\n")).collect()))
                }
                _ => Err(einval(format!(
                    "unrecognized message '{}' received",
                    argv[0]
                ))),
            },
            2 => {
                let block = self.parse_block(&argv[1])?;
                let mut bad = self.bad.lock();
                match word.as_str() {
                    "addbadblock" => {
                        if bad.contains_key(&block) {
                            return Err(einval(format!("block {block} already in badblocklist")));
                        }
                        bad.insert(block, 0);
                        Ok(None)
                    }
                    "removebadblock" => match bad.remove(&block) {
                        Some(_) => Ok(None),
                        None => Err(einval(format!("block {block} not found in badblocklist"))),
                    },
                    "queryblock" => {
                        let found = if bad.contains_key(&block) {
                            "found in badblocklist"
                        } else {
                            "not found in badblocklist"
                        };
                        Ok(Some(format!("dust_query_block: block {block} {found}")))
                    }
                    _ => Err(einval(format!(
                        "unrecognized message '{}' received",
                        argv[0]
                    ))),
                }
            }
            3 => {
                let block = self.parse_block(&argv[1])?;
                let count = udm_core::args::parse_u32(&argv[2])
                    .ok_or_else(|| einval(format!("invalid write fail count '{}'", argv[2])))?;
                if count > 255 {
                    return Err(einval("selected write fail count out of range"));
                }
                if word != "addbadblock" {
                    return Err(einval(format!(
                        "unrecognized message '{}' received",
                        argv[0]
                    )));
                }
                let mut bad = self.bad.lock();
                if bad.contains_key(&block) {
                    return Err(einval(format!("block {block} already in badblocklist")));
                }
                bad.insert(block, count as u8);
                Ok(None)
            }
            n => Err(einval(format!("invalid number of arguments '{n}'"))),
        }
    }

    fn status(&self, kind: StatusType, out: &mut String) {
        match kind {
            StatusType::Info => {
                let mode = if self.fail_read_on_bb.load(Ordering::Relaxed) {
                    "fail_read_on_bad_block"
                } else {
                    "bypass"
                };
                let q = if self.verbose() { "verbose" } else { "quiet" };
                out.push_str(&format!("{} {mode} {q}", self.dev.display_name()));
            }
            StatusType::Table => {
                out.push_str(&format!(
                    "{} {} {}",
                    self.dev.display_name(),
                    self.offset,
                    self.blksz
                ));
            }
            StatusType::Ima => {}
        }
    }

    fn devices(&self) -> Vec<Arc<dyn BlockDev>> {
        vec![Arc::clone(&self.dev)]
    }
}

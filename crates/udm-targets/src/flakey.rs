//! `flakey <dev> <off> <up_s> <down_s> [<#features> <feature>...]`: linear while
//! "up"; while "down" (`elapsed seconds mod (up + down) >= up`) it fails, drops
//! or corrupts I/O as its features say: `error_reads`, `drop_writes` or
//! `error_writes`, `corrupt_bio_byte <N> <r|w> <value> <flags>` (byte N, from 1,
//! of each matching bio set to value), `random_read_corrupt <p>` and
//! `random_write_corrupt <p>` (p out of 1,000,000,000). No features means
//! error_reads and error_writes. Corrupted writes go out from a copy: the caller's
//! buffer is never changed. INFO and IMA are empty; TABLE prints the features in
//! the kernel's order and count.
//!
//! `<flags>` is matched against what udm's bios carry of the kernel's `bi_opf`:
//! the op (READ 0, WRITE 1) and REQ_FUA (bit 17); 0 matches every bio.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use udm_core::{
    issue, ArgReader, Bio, BlockDev, EndIo, Errno, Mapped, Op, Sector, StatusType, TableError,
    Target, TargetCtx, TargetType,
};

pub const TYPE: TargetType = TargetType {
    name: "flakey",
    version: [1, 5, 0],
    ctr,
};

const PROBABILITY_BASE: u64 = 1_000_000_000;
const REQ_FUA: u32 = 1 << 17;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

struct Corrupt {
    /// 1-based byte.
    byte: u32,
    dir: Dir,
    value: u8,
    flags: u32,
}

pub struct Flakey {
    dev: Arc<dyn BlockDev>,
    offset: Sector,
    up: u32,
    down: u32,
    start: Instant,
    error_reads: bool,
    drop_writes: bool,
    error_writes: bool,
    corrupt: Option<Corrupt>,
    random_read: u32,
    random_write: u32,
    rng: AtomicU64,
}

fn ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    if args.len() < 4 {
        return Err(ctx.err("invalid argument count"));
    }
    let mut rd = ArgReader::new(ctx, args);
    let (dev, offset, _) = rd.next_device(ctx.len)?;
    let up = rd.next_u64_in("up interval", 0, u64::from(u32::MAX))? as u32;
    let down = rd.next_u64_in("down interval", 0, u64::from(u32::MAX))? as u32;
    if up == 0 && down == 0 {
        return Err(ctx.err("total (up + down) interval is zero"));
    }
    if up.checked_add(down).is_none() {
        return Err(ctx.err("interval overflow"));
    }
    let mut f = Flakey {
        dev,
        offset,
        up,
        down,
        start: Instant::now(),
        error_reads: false,
        drop_writes: false,
        error_writes: false,
        corrupt: None,
        random_read: 0,
        random_write: 0,
        rng: AtomicU64::new(seed()),
    };
    if rd.remaining() > 0 {
        let mut feat = rd.group("#features", 11)?;
        while feat.remaining() > 0 {
            let name = feat.next_str("feature")?.to_ascii_lowercase();
            let dup = |set: bool| -> Result<(), TableError> {
                if set {
                    return Err(ctx.err(format!("feature {name} duplicated")));
                }
                Ok(())
            };
            match name.as_str() {
                "error_reads" => {
                    dup(f.error_reads)?;
                    f.error_reads = true;
                }
                "drop_writes" => {
                    dup(f.drop_writes)?;
                    if f.error_writes {
                        return Err(ctx.err("feature drop_writes conflicts with error_writes"));
                    }
                    f.drop_writes = true;
                }
                "error_writes" => {
                    dup(f.error_writes)?;
                    if f.drop_writes {
                        return Err(ctx.err("feature error_writes conflicts with drop_writes"));
                    }
                    f.error_writes = true;
                }
                "corrupt_bio_byte" => {
                    if feat.remaining() == 0 {
                        return Err(ctx.err("feature corrupt_bio_byte requires parameters"));
                    }
                    let byte = feat.next_u64_in("corrupt bio byte", 1, u64::from(u32::MAX))?;
                    let dir = match feat.next_str("direction")?.to_ascii_lowercase().as_str() {
                        "r" => Dir::Read,
                        "w" => Dir::Write,
                        _ => return Err(ctx.err("invalid corrupt bio direction (r or w)")),
                    };
                    let value = feat.next_u64_in("corrupt value", 0, 255)?;
                    let flags = feat.next_u64_in("corrupt bio flags", 0, u64::from(u32::MAX))?;
                    f.corrupt = Some(Corrupt {
                        byte: byte as u32,
                        dir,
                        value: value as u8,
                        flags: flags as u32,
                    });
                }
                "random_read_corrupt" => {
                    f.random_read = feat.next_u64_in("random corrupt", 0, PROBABILITY_BASE)? as u32;
                }
                "random_write_corrupt" => {
                    f.random_write =
                        feat.next_u64_in("random corrupt", 0, PROBABILITY_BASE)? as u32;
                }
                _ => return Err(ctx.err(format!("unrecognised flakey feature '{name}'"))),
            }
        }
        // Like 6.12, words after the feature group are ignored.
    }
    // 6.12 refuses only dropping or failing writes that are also to be corrupted
    // by corrupt_bio_byte; newer kernels refuse more combinations.
    if (f.drop_writes || f.error_writes) && f.corrupt.as_ref().is_some_and(|c| c.dir == Dir::Write)
    {
        let which = if f.drop_writes {
            "drop_writes"
        } else {
            "error_writes"
        };
        return Err(ctx.err(format!(
            "{which} is incompatible with corrupt_bio_byte with the WRITE flag set"
        )));
    }
    if f.corrupt.is_none()
        && !f.error_reads
        && !f.drop_writes
        && !f.error_writes
        && f.random_read == 0
        && f.random_write == 0
    {
        f.error_reads = true;
        f.error_writes = true;
    }
    Ok(Box::new(f))
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t | 1
}

impl Flakey {
    fn is_down(&self) -> bool {
        let elapsed = self.start.elapsed().as_secs() as u32;
        let period = self.up.wrapping_add(self.down);
        period != 0 && elapsed % period >= self.up
    }

    /// A random number below PROBABILITY_BASE (xorshift; statistical quality only).
    fn random(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x % PROBABILITY_BASE
    }

    fn flags_match(c: &Corrupt, bio: &Bio) -> bool {
        let opf = match bio.op {
            Op::Read => 0,
            Op::Write => 1,
            Op::Flush => 1,
            Op::Discard => 3,
            Op::WriteZeroes => 9,
        } | if bio.fua { REQ_FUA } else { 0 };
        opf & c.flags == c.flags
    }

    /// Apply the corruptions for direction `dir` to `data`.
    fn corrupt_data(&self, dir: Dir, data: &mut [u8], matches: bool) {
        if data.is_empty() {
            return;
        }
        if let Some(c) = self.corrupt.as_ref().filter(|c| c.dir == dir && matches) {
            if let Some(b) = data.get_mut(c.byte as usize - 1) {
                *b = c.value;
            }
        }
        let p = match dir {
            Dir::Read => self.random_read,
            Dir::Write => self.random_write,
        };
        if p > 0 && self.random() < u64::from(p) {
            let pos = (self.random() as usize) % data.len();
            data[pos] = (self.random() & 0xff) as u8;
        }
    }
}

impl Target for Flakey {
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        let sector = self.offset + bio.sector;
        if !self.is_down() {
            return Mapped::Remap(bio, &*self.dev, sector);
        }
        if bio.op == Op::Read {
            if self.error_reads {
                return Mapped::Kill(bio, Errno::EIO);
            }
            // Corrupted (if at all) at end_io, after the read.
            return Mapped::Remap(bio, &*self.dev, sector);
        }
        if self.drop_writes {
            bio.complete(Ok(()));
            return Mapped::Submitted;
        }
        if self.error_writes {
            return Mapped::Kill(bio, Errno::EIO);
        }
        let corrupt_writes =
            self.corrupt.as_ref().is_some_and(|c| c.dir == Dir::Write) || self.random_write > 0;
        if corrupt_writes && bio.op == Op::Write {
            let matches = self
                .corrupt
                .as_ref()
                .is_some_and(|c| Self::flags_match(c, &bio));
            let mut copy = bio.data().to_vec();
            self.corrupt_data(Dir::Write, &mut copy, matches);
            let fua = bio.fua;
            let mut out = Bio::with_buffer(Op::Write, sector, copy, move |r, _| bio.complete(r));
            out.fua = fua;
            issue(&*self.dev, out, sector);
            return Mapped::Submitted;
        }
        Mapped::Remap(bio, &*self.dev, sector)
    }

    fn end_io(&self, mut bio: Bio, _dest: usize, result: Result<(), Errno>) -> EndIo {
        if result.is_ok() && bio.op == Op::Read && self.is_down() {
            let matches = self
                .corrupt
                .as_ref()
                .is_some_and(|c| Self::flags_match(c, &bio));
            if let Some(data) = bio.data_mut() {
                self.corrupt_data(Dir::Read, data, matches);
            }
        }
        EndIo::Done(bio, result)
    }

    fn status(&self, kind: StatusType, out: &mut String) {
        if kind != StatusType::Table {
            return;
        }
        let count = u32::from(self.error_reads)
            + u32::from(self.drop_writes)
            + u32::from(self.error_writes)
            + if self.corrupt.is_some() { 5 } else { 0 }
            + if self.random_read > 0 { 2 } else { 0 }
            + if self.random_write > 0 { 2 } else { 0 };
        out.push_str(&format!(
            "{} {} {} {} {count}",
            self.dev.display_name(),
            self.offset,
            self.up,
            self.down
        ));
        if self.error_reads {
            out.push_str(" error_reads");
        }
        if self.drop_writes {
            out.push_str(" drop_writes");
        } else if self.error_writes {
            out.push_str(" error_writes");
        }
        if let Some(c) = &self.corrupt {
            let d = if c.dir == Dir::Write { 'w' } else { 'r' };
            out.push_str(&format!(
                " corrupt_bio_byte {} {d} {} {}",
                c.byte, c.value, c.flags
            ));
        }
        if self.random_read > 0 {
            out.push_str(&format!(" random_read_corrupt {}", self.random_read));
        }
        if self.random_write > 0 {
            out.push_str(&format!(" random_write_corrupt {}", self.random_write));
        }
    }

    fn devices(&self) -> Vec<Arc<dyn BlockDev>> {
        vec![Arc::clone(&self.dev)]
    }
}

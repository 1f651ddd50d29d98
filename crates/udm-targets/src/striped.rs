//! `striped <#stripes> <chunk> [<dev> <offset>]...`: chunks dealt round-robin over
//! the stripes. I/O is split at chunk boundaries. INFO is
//! `<#stripes> <dev>... 1 <A|D per stripe>`; a stripe that returned an I/O error
//! shows `D` (and raises no more than the kernel's 15 events, which udm does not
//! need: the flag is sticky). IMA is `target_name=striped,...,stripe_<i>_status=<A|D>;`
//! as Linux 6.12 prints it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use udm_core::{
    ima_name_version, issue, Bio, BlockDev, EndIo, Errno, ExtentKind, IoHints, Mapped, Op, Sector,
    StatusType, TableError, Target, TargetCtx, TargetType,
};

pub const TYPE: TargetType = TargetType {
    name: "striped",
    version: [1, 6, 0],
    ctr,
};

struct Stripe {
    dev: Arc<dyn BlockDev>,
    offset: Sector,
    failed: AtomicBool,
}

pub struct Striped {
    stripes: Vec<Stripe>,
    chunk: Sector,
    /// log2(chunk) when the chunk is a power of two, for shift-and-mask arithmetic.
    chunk_shift: Option<u32>,
}

fn ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    if args.len() < 2 {
        return Err(
            ctx.err("not enough arguments: need <#stripes> <chunk_size> [<dev> <offset>]...")
        );
    }
    let n = ctx.u64_arg(args, 0, "#stripes")?;
    if n == 0 || n > u32::MAX as u64 {
        return Err(ctx.arg_err(1, "#stripes", "invalid stripe count"));
    }
    let chunk = Sector(ctx.u64_arg(args, 1, "chunk_size")?);
    if chunk.is_zero() {
        return Err(ctx.arg_err(2, "chunk_size", "invalid chunk size"));
    }
    if ctx.len.get() % n != 0 {
        return Err(ctx.err(format!(
            "target length {} is not divisible by the number of stripes {n}",
            ctx.len
        )));
    }
    let width = Sector(ctx.len.get() / n);
    if !(width % chunk).is_zero() {
        return Err(ctx.err(format!(
            "target length {} is not divisible by chunk size {chunk} (per-stripe width {width})",
            ctx.len
        )));
    }
    let want = 2 + 2 * n as usize;
    if args.len() != want {
        return Err(ctx.err(format!(
            "expected {want} arguments for {n} stripes ({} given): not enough destinations specified",
            args.len()
        )));
    }
    let mut stripes = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        let offset = Sector(ctx.u64_arg(args, 3 + 2 * i, "offset")?);
        let dev = ctx.device(args, 2 + 2 * i, offset, width)?;
        stripes.push(Stripe {
            dev,
            offset,
            failed: AtomicBool::new(false),
        });
    }
    let chunk_shift = chunk
        .is_power_of_two()
        .then(|| chunk.get().trailing_zeros());
    Ok(Box::new(Striped {
        stripes,
        chunk,
        chunk_shift,
    }))
}

impl Striped {
    /// (stripe index, sector on that stripe's device) of target offset `o`.
    #[inline]
    fn locate(&self, o: Sector) -> (usize, Sector) {
        let n = self.stripes.len() as u64;
        let (chunk_no, within) = match self.chunk_shift {
            Some(s) => (o.get() >> s, Sector(o.get() & (self.chunk.get() - 1))),
            None => (o / self.chunk, o % self.chunk),
        };
        let stripe = (chunk_no % n) as usize;
        let dev_chunk = chunk_no / n;
        (
            stripe,
            self.chunk * dev_chunk + within + self.stripes[stripe].offset,
        )
    }
}

impl Striped {
    /// Where target offset `o` (a range boundary) falls on stripe `s`: the
    /// sector of that stripe's device before which the range's part on it ends
    /// (or from which it starts).
    fn stripe_bound(&self, o: Sector, s: usize) -> Sector {
        let n = self.stripes.len() as u64;
        let chunk_no = o / self.chunk;
        let row = chunk_no / n;
        let at = (chunk_no % n) as usize;
        match s.cmp(&at) {
            std::cmp::Ordering::Equal => self.chunk * row + o % self.chunk,
            std::cmp::Ordering::Less => self.chunk * (row + 1),
            std::cmp::Ordering::Greater => self.chunk * row,
        }
    }

    /// A discard or write-zeroes over the whole range: one bio per stripe, each
    /// covering that stripe's part (as the kernel's stripe_map_range), not one
    /// per chunk.
    fn map_range(&self, mut bio: Bio) -> Mapped<'_> {
        let (start, end) = (bio.sector, bio.sector + bio.len);
        for (s, stripe) in self.stripes.iter().enumerate() {
            let (b, e) = (self.stripe_bound(start, s), self.stripe_bound(end, s));
            if e <= b {
                continue;
            }
            let Some(mut part) = bio.clone_shared() else {
                return Mapped::Kill(bio, Errno::EINVAL);
            };
            part.sector = b + stripe.offset;
            part.len = e - b;
            issue(&*stripe.dev, part, b + stripe.offset);
        }
        bio.complete(Ok(()));
        Mapped::Submitted
    }
}

impl Target for Striped {
    #[inline]
    fn max_io_len(&self, offset: Sector) -> Sector {
        self.chunk - offset % self.chunk
    }

    #[inline]
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        if bio.op == Op::Flush {
            // Every stripe is flushed (the kernel's num_flush_bios = #stripes).
            let dests = self
                .stripes
                .iter()
                .map(|s| (&*s.dev, Sector::ZERO))
                .collect();
            return Mapped::Clone(bio, dests);
        }
        if matches!(bio.op, Op::Discard | Op::WriteZeroes) {
            return self.map_range(bio);
        }
        let (i, sector) = self.locate(bio.sector);
        Mapped::Remap(bio, &*self.stripes[i].dev, sector)
    }

    fn split_discards(&self) -> bool {
        false
    }

    fn end_io(&self, bio: Bio, _dest: usize, result: Result<(), Errno>) -> EndIo {
        if result == Err(Errno::EIO) && bio.op != Op::Flush {
            let (i, _) = self.locate(bio.sector);
            self.stripes[i].failed.store(true, Ordering::Relaxed);
        }
        EndIo::Done(bio, result)
    }

    fn io_hints(&self, hints: &mut IoHints) {
        let chunk = u32::try_from(self.chunk.bytes()).unwrap_or(u32::MAX);
        hints.io_min = chunk;
        hints.io_opt = chunk.saturating_mul(self.stripes.len() as u32);
    }

    fn status(&self, kind: StatusType, out: &mut String) {
        let n = self.stripes.len();
        match kind {
            StatusType::Info => {
                out.push_str(&n.to_string());
                for s in &self.stripes {
                    out.push(' ');
                    out.push_str(&s.dev.display_name());
                }
                out.push_str(" 1 ");
                for s in &self.stripes {
                    out.push(if s.failed.load(Ordering::Relaxed) {
                        'D'
                    } else {
                        'A'
                    });
                }
            }
            StatusType::Table => {
                out.push_str(&format!("{n} {}", self.chunk));
                for s in &self.stripes {
                    out.push_str(&format!(" {} {}", s.dev.display_name(), s.offset));
                }
            }
            StatusType::Ima => {
                ima_name_version(out, TYPE.name, TYPE.version);
                out.push_str(&format!(",stripes={n},chunk_size={}", self.chunk));
                for (i, s) in self.stripes.iter().enumerate() {
                    let state = if s.failed.load(Ordering::Relaxed) {
                        'D'
                    } else {
                        'A'
                    };
                    out.push_str(&format!(
                        ",stripe_{i}_device_name={},stripe_{i}_physical_start={},stripe_{i}_status={state}",
                        s.dev.display_name(),
                        s.offset
                    ));
                }
                out.push(';');
            }
        }
    }

    fn devices(&self) -> Vec<Arc<dyn BlockDev>> {
        self.stripes.iter().map(|s| s.dev.clone()).collect()
    }

    fn extent(&self, offset: Sector, len: Sector) -> (ExtentKind, Sector) {
        let (i, sector) = self.locate(offset);
        let n = len.min(self.max_io_len(offset));
        let (hole, bytes) = self.stripes[i].dev.extent(sector.bytes(), n.bytes());
        let kind = if hole {
            ExtentKind::Hole
        } else {
            ExtentKind::Data
        };
        (kind, Sector::from_bytes(bytes).clamp(Sector(1), n))
    }
}

//! Reading a target's arguments in order, as the kernel's `dm_arg_set` does, so
//! that constructors never index `args[3 + 2 * i]` by hand: each read names the
//! argument and its 1-based position in errors.

use std::sync::Arc;

use crate::args::parse_u64;
use crate::blockdev::BlockDev;
use crate::error::TableError;
use crate::sector::Sector;
use crate::target::TargetCtx;

pub struct ArgReader<'c, 'a> {
    ctx: &'c TargetCtx<'a>,
    args: &'c [String],
    pos: usize,
    end: usize,
}

impl<'c, 'a> ArgReader<'c, 'a> {
    pub fn new(ctx: &'c TargetCtx<'a>, args: &'c [String]) -> Self {
        ArgReader {
            ctx,
            args,
            pos: 0,
            end: args.len(),
        }
    }

    /// Arguments not read yet.
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// 1-based position of the next argument.
    pub fn position(&self) -> usize {
        self.pos + 1
    }

    /// The next argument, unparsed.
    pub fn next_str(&mut self, name: &str) -> Result<&'c str, TableError> {
        if self.pos >= self.end {
            return Err(self
                .ctx
                .arg_err(self.pos + 1, name, "missing argument")
                .errno(crate::Errno::EINVAL));
        }
        let s = self.args[self.pos].as_str();
        self.pos += 1;
        Ok(s)
    }

    /// The next argument without consuming it.
    pub fn peek(&self) -> Option<&'c str> {
        (self.pos < self.end).then(|| self.args[self.pos].as_str())
    }

    /// An error about the argument just read.
    pub fn err_last(&self, name: &str, msg: impl Into<String>) -> TableError {
        self.ctx.arg_err(self.pos.max(1), name, msg)
    }

    /// The next argument as an unsigned decimal.
    pub fn next_u64(&mut self, name: &str) -> Result<u64, TableError> {
        let s = self.next_str(name)?;
        parse_u64(s).ok_or_else(|| self.err_last(name, format!("'{s}' is not an unsigned number")))
    }

    /// The next argument as an unsigned decimal in `min..=max` (`dm_read_arg`).
    pub fn next_u64_in(&mut self, name: &str, min: u64, max: u64) -> Result<u64, TableError> {
        let v = self.next_u64(name)?;
        if v < min || v > max {
            return Err(self.err_last(name, format!("{v} is not in {min}..={max}")));
        }
        Ok(v)
    }

    /// `<dev> <offset>`: open the device and check that `len` sectors from the
    /// offset exist on it.
    pub fn next_device(
        &mut self,
        len: Sector,
    ) -> Result<(Arc<dyn BlockDev>, Sector, String), TableError> {
        let dev_pos = self.pos;
        let spec = self.next_str("device")?;
        let offset = Sector(self.next_u64("offset")?);
        let dev = self.ctx.device(self.args, dev_pos, offset, len)?;
        Ok((dev, offset, spec.to_string()))
    }

    /// A counted group (`dm_read_arg_group`): reads `<count>` (at most `max`) and
    /// returns a reader over the next `count` arguments, which this one skips.
    pub fn group(&mut self, name: &str, max: u64) -> Result<ArgReader<'c, 'a>, TableError> {
        let n = self.next_u64_in(name, 0, max)? as usize;
        if n > self.remaining() {
            return Err(self.err_last(
                name,
                format!("{n} arguments announced, {} given", self.remaining()),
            ));
        }
        let sub = ArgReader {
            ctx: self.ctx,
            args: self.args,
            pos: self.pos,
            end: self.pos + n,
        };
        self.pos += n;
        Ok(sub)
    }

    /// Fail unless every argument was read.
    pub fn finish(&self) -> Result<(), TableError> {
        if self.pos < self.end {
            return Err(self.ctx.arg_err(
                self.pos + 1,
                "extra",
                format!("unexpected argument '{}'", self.args[self.pos]),
            ));
        }
        Ok(())
    }
}

//! A block I/O request as it travels down the table: what to do, where, and the
//! caller's buffer. Targets see the part of it that falls inside them.

/// The operation of a [`Bio`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    /// An empty flush (PREFLUSH with no data).
    Flush,
    Discard,
    WriteZeroes,
}

/// The caller's data for a [`Bio`]; `None` for flush, discard and write-zeroes.
#[derive(Debug)]
pub enum BioData<'a> {
    None,
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

/// One piece of I/O, in sectors. Inside [`crate::Target::map`] the sector is
/// relative to the start of the target; `len` never crosses the target's end nor
/// its `max_io_len` boundary.
#[derive(Debug)]
pub struct Bio<'a> {
    pub op: Op,
    pub sector: u64,
    pub len: u64,
    pub data: BioData<'a>,
    /// Force unit access: the data must be durable when the bio completes.
    pub fua: bool,
    /// Write zeroes may deallocate (NBD's absence of NO_HOLE).
    pub may_unmap: bool,
    /// Write zeroes only if that is fast (NBD's FAST_ZERO): otherwise fail with
    /// EOPNOTSUPP before changing anything, rather than write zeros.
    pub fast_only: bool,
}

impl Bio<'_> {
    pub fn is_write(&self) -> bool {
        matches!(self.op, Op::Write | Op::Discard | Op::WriteZeroes)
    }
}

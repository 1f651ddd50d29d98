//! `zero`: reads return zeros, writes and discards are dropped. Write-zeroes is
//! accepted too (the block layer would emulate it with writes, which are dropped).
//! INFO, TABLE and IMA are empty: the kernel's zero target has no status function.

use udm_core::{
    Bio, ExtentKind, Mapped, Op, Sector, StatusType, TableError, Target, TargetCtx, TargetType,
};

pub const TYPE: TargetType = TargetType {
    name: "zero",
    version: [1, 2, 0],
    ctr,
};

pub struct Zero;

fn ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    if !args.is_empty() {
        return Err(ctx.err("no arguments required"));
    }
    Ok(Box::new(Zero))
}

impl Target for Zero {
    fn map<'s>(&'s self, mut bio: Bio) -> Mapped<'s> {
        if bio.op == Op::Read {
            if let Some(buf) = bio.data_mut() {
                buf.fill(0);
            }
        }
        bio.complete(Ok(()));
        Mapped::Submitted
    }

    fn status(&self, _kind: StatusType, _out: &mut String) {}

    fn extent(&self, _offset: Sector, len: Sector) -> (ExtentKind, Sector) {
        (ExtentKind::Hole, len)
    }
}

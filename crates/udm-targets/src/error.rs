//! `error`: every read, write and discard fails with EIO. Like the kernel's, it
//! takes no flushes (it has no device to flush), so a flush of a table holding it
//! succeeds. Like the
//! kernel, two arguments `<dev> <start>` are accepted and otherwise ignored, and
//! INFO, TABLE and IMA are empty (the kernel's error target has no status
//! function, so `dmsetup measure` prints `<start> <len> error `).

use udm_core::{Bio, Errno, Mapped, Op, StatusType, TableError, Target, TargetCtx, TargetType};

pub const TYPE: TargetType = TargetType {
    name: "error",
    version: [1, 7, 0],
    ctr,
};

pub struct ErrorTarget;

fn ctr(_ctx: &TargetCtx<'_>, _args: &[String]) -> Result<Box<dyn Target>, TableError> {
    Ok(Box::new(ErrorTarget))
}

impl Target for ErrorTarget {
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        if bio.op == Op::Flush {
            bio.complete(Ok(()));
            return Mapped::Submitted;
        }
        Mapped::Kill(bio, Errno::EIO)
    }

    fn status(&self, _kind: StatusType, _out: &mut String) {}
}

//! `remove_all [-f]`: REMOVE_ALL; with `--force` the survivors get an
//! `error` table and REMOVE_ALL runs again.

use udm_ioctl::flags;

use super::ctx::{CmdResult, Ctx, DevRef, Task};
use super::devices::list;
use super::wipe_table::error_device;
use crate::client::Command;

fn remove_all(ctx: &mut Ctx) -> CmdResult {
    let task =
        Task::new(Command::RemoveAll, "remove_all").flag(flags::DEFERRED_REMOVE, ctx.opts.deferred);
    ctx.run(&task).map(|_| ())
}

pub fn run(ctx: &mut Ctx, _args: &[String]) -> CmdResult {
    let first = remove_all(ctx);
    if !ctx.opts.force {
        return first;
    }
    let left = list(ctx)?;
    if left.is_empty() {
        return first;
    }
    for d in &left {
        // Listed names are shown unmangled: mangle them back to address.
        let Ok(name) = ctx.mangle(&d.name, "name") else {
            continue;
        };
        let _ = error_device(ctx, &DevRef::Name(name));
    }
    let _ = remove_all(ctx);
    let left = list(ctx)?.len();
    if left > 0 {
        ctx.error(&format!("Unable to remove {left} device(s)."));
    }
    // As dmsetup: the first REMOVE_ALL decides the exit status.
    first
}

//! `remove <dev>...`: DEV_REMOVE; `--force` first wipes the table to
//! `error`, `--deferred` removes at last close, `--retry` retries while
//! the device is busy.

use std::time::Duration;

use udm_ioctl::flags;

use super::ctx::{CmdResult, Ctx, Task};
use super::wipe_table::error_device;
use crate::client::Command;

/// libdm's EBUSY retry: 25 more tries, 200 ms apart.
const RETRIES: usize = 25;
const RETRY_DELAY: Duration = Duration::from_millis(200);

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    let dev = ctx.device(args.first().map(String::as_str))?;
    if ctx.opts.force {
        // dmsetup ignores the outcome: the remove below decides.
        let _ = error_device(ctx, &dev);
    }
    let task = Task::new(Command::DevRemove, "remove")
        .device(&dev)
        .flag(flags::DEFERRED_REMOVE, ctx.opts.deferred)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    let mut reply = ctx.run_raw(&task)?;
    let mut tries = 0;
    while ctx.opts.retry && reply.errno == libc::EBUSY && tries < RETRIES {
        std::thread::sleep(RETRY_DELAY);
        reply = ctx.run_raw(&task)?;
        tries += 1;
    }
    if !reply.ok() {
        ctx.report_ioctl_error(&task, &reply);
        return Err(super::Failed);
    }
    Ok(())
}

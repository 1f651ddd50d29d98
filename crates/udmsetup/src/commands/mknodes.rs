//! `mknodes [<dev>...]`: dmsetup makes /dev/mapper nodes; udm devices have
//! no kernel nodes (they are exported over NBD/FUSE), so this only checks
//! that the daemon answers. Like dmsetup, a missing device is no error.

use super::ctx::{CmdResult, Ctx};
use super::devices::list;
use super::info::status_task;

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    if args.is_empty() && !ctx.opts.device_by_option() {
        return list(ctx).map(|_| ());
    }
    let dev = ctx.device(args.first().map(String::as_str))?;
    let task = status_task(ctx, &dev, "mknodes");
    let reply = ctx.run_raw(&task)?;
    if reply.ok() || reply.errno == libc::ENXIO {
        return Ok(());
    }
    ctx.report_ioctl_error(&task, &reply);
    Err(super::Failed)
}

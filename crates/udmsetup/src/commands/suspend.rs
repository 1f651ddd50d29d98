//! `suspend|resume <dev>...`: DEV_SUSPEND with or without the SUSPEND flag
//! (`--noflush`, `--nolockfs`); `-v` shows the device afterwards.

use udm_ioctl::flags;

use super::ctx::{CmdResult, Ctx, Task};
use crate::client::Command;

fn simple(ctx: &mut Ctx, args: &[String], suspend: bool) -> CmdResult {
    let dev = ctx.device(args.first().map(String::as_str))?;
    let task = Task::new(
        Command::DevSuspend,
        if suspend { "suspend" } else { "resume" },
    )
    .device(&dev)
    .flag(flags::SUSPEND, suspend)
    .flag(flags::NOFLUSH, ctx.opts.noflush)
    .flag(flags::SKIP_LOCKFS, ctx.opts.nolockfs)
    .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
    .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    let reply = ctx.run(&task)?;
    if ctx.opts.verbose > 0 {
        return ctx.display_info(&reply);
    }
    Ok(())
}

pub fn suspend(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    simple(ctx, args, true)
}

pub fn resume(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    simple(ctx, args, false)
}

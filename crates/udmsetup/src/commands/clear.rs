//! `clear <dev>...`: TABLE_CLEAR, dropping the staged (inactive) table.

use udm_ioctl::flags;

use super::ctx::{CmdResult, Ctx, Task};
use crate::client::Command;

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    let dev = ctx.device(args.first().map(String::as_str))?;
    let task = Task::new(Command::TableClear, "clear")
        .device(&dev)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    let reply = ctx.run(&task)?;
    if ctx.opts.verbose > 0 {
        return ctx.display_info(&reply);
    }
    Ok(())
}

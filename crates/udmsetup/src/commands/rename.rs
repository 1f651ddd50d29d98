//! `rename <dev> <new_name>` and `rename <dev> --setuuid <uuid>`:
//! DEV_RENAME with the new name (or, with UUID_FLAG, the uuid) as payload.

use udm_ioctl::{encode_string, flags};

use super::ctx::{CmdResult, Ctx, Task};
use crate::client::Command;

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    let name = if args.len() == 2 {
        Some(args[0].as_str())
    } else {
        None
    };
    let new = args.last().map(String::as_str).unwrap_or("");
    let dev = ctx.device(name)?;
    if ctx.opts.setuuid {
        if udm_ioctl::check_uuid(new).is_err() {
            return ctx.fail(&format!("New uuid \"{new}\" too long."));
        }
    } else {
        if new.contains('/') {
            return ctx.fail(&format!("Name \"{new}\" invalid. It contains \"/\"."));
        }
        if new.len() >= udm_ioctl::NAME_LEN {
            return ctx.fail(&format!("Name \"{new}\" too long"));
        }
        if new.is_empty() {
            return ctx.fail("Non empty new name is required.");
        }
    }
    let what = if ctx.opts.setuuid { "UUID" } else { "new name" };
    let new = ctx.mangle(new, what)?;
    let task = Task::new(Command::DevRename, "rename")
        .device(&dev)
        .flag(flags::UUID, ctx.opts.setuuid)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount)
        .payload(encode_string(&new));
    ctx.run(&task).map(|_| ())
}

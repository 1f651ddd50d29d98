//! `target-version <type>...`: GET_TARGET_VERSION for each type.

use serde_json::json;
use udm_ioctl::decode_versions;

use super::ctx::{CmdResult, Ctx, Task};
use crate::client::Command;
use crate::format::target_version_line;

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    let Some(ty) = args.first() else {
        return ctx.fail("No target type specified.");
    };
    let name = ctx.check_name(ty)?;
    let mut task = Task::new(Command::GetTargetVersion, "target-version");
    task.header.name = name.clone();
    task.label.name = name;
    let reply = ctx.run(&task)?;
    let Some(t) = decode_versions(&reply.payload)
        .ok()
        .and_then(|v| v.into_iter().next())
    else {
        return ctx.fail("udmsetup: malformed target-version reply.");
    };
    if ctx.opts.json {
        ctx.json.push(json!({"name": t.name, "version": t.version}));
    } else {
        ctx.println(&target_version_line(&t.name, t.version));
    }
    Ok(())
}

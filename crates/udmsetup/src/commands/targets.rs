//! `targets`: LIST_VERSIONS, one `%-16s v%d.%d.%d` line per target type.

use serde_json::json;
use udm_ioctl::decode_versions;

use super::ctx::{CmdResult, Ctx, Task};
use crate::client::Command;
use crate::format::target_version_line;

pub fn run(ctx: &mut Ctx, _args: &[String]) -> CmdResult {
    let reply = ctx.run(&Task::new(Command::ListVersions, "versions"))?;
    let list = match decode_versions(&reply.payload) {
        Ok(l) => l,
        Err(e) => return ctx.fail(&format!("udmsetup: malformed versions reply: {e}")),
    };
    let mut s = String::new();
    for t in &list {
        if ctx.opts.json {
            ctx.json.push(json!({"name": t.name, "version": t.version}));
        } else {
            s += &target_version_line(&t.name, t.version);
            s.push('\n');
        }
    }
    ctx.print(&s);
    Ok(())
}

//! `version`: our library version, then the daemon's interface version
//! from DM_VERSION.

use serde_json::json;

use super::ctx::{CmdResult, Ctx, Task};
use crate::client::Command;
use crate::format::version_lines;

pub fn run(ctx: &mut Ctx, _args: &[String]) -> CmdResult {
    let library = format!("udmsetup {}", env!("CARGO_PKG_VERSION"));
    if !ctx.opts.json {
        ctx.println(&format!("Library version:   {library}"));
    }
    let reply = ctx.run(&Task::new(Command::Version, "version"))?;
    let v = reply.header.version;
    if ctx.opts.json {
        ctx.json_object = Some(json!({
            "library": library,
            "driver": format!("{}.{}.{}", v[0], v[1], v[2]),
        }));
    } else {
        let both = version_lines(v);
        let driver = both.lines().nth(1).unwrap_or_default().to_string();
        ctx.println(&driver);
    }
    Ok(())
}

//! `setgeometry <dev> <cyl> <head> <sect> <start>`: DEV_SET_GEOMETRY with
//! the string "cyl head sect start" (the daemon checks the ranges).

use udm_ioctl::encode_string;

use super::ctx::{CmdResult, Ctx, Task};
use crate::client::Command;

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    let (name, geometry) = if ctx.opts.device_by_option() {
        (None, &args[..args.len().min(4)])
    } else {
        (
            args.first().map(String::as_str),
            args.get(1..).unwrap_or(&[]),
        )
    };
    let dev = ctx.device(name)?;
    if geometry.len() != 4 {
        return ctx.fail("Incorrect number of arguments.");
    }
    let task = Task::new(Command::DevSetGeometry, "setgeometry")
        .device(&dev)
        .payload(encode_string(&geometry.join(" ")));
    ctx.run(&task).map(|_| ())
}

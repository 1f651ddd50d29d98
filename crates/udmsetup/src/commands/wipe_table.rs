//! `wipe_table <dev>...`: replace the table with one `error` target of the
//! device's size and resume, so every queued and future I/O fails. Also
//! the first step of `remove --force` and `remove_all --force`.

use udm_ioctl::{decode_table_status, encode_table_load, flags, TargetSpec};

use super::ctx::{CmdResult, Ctx, DevRef, Failed, Task};
use crate::client::Command;

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    let dev = ctx.device(args.first().map(String::as_str))?;
    error_device(ctx, &dev)
}

/// The size of the (live, or with --inactive the staged) table; 0 when it
/// cannot be read, as dmsetup's `_get_device_size`.
fn device_size(ctx: &mut Ctx, dev: &DevRef) -> u64 {
    let task = Task::new(Command::TableStatus, "table")
        .device(dev)
        .flag(flags::STATUS_TABLE, true)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive);
    match ctx.run(&task) {
        Ok(r) => decode_table_status(&r.payload, r.header.target_count)
            .map(|specs| specs.iter().map(|s| s.length).fold(0u64, u64::wrapping_add))
            .unwrap_or(0),
        Err(Failed) => 0,
    }
}

/// Load `0 <size> error` and resume (with noflush and nolockfs under
/// --force, so blocked I/O completes); clear the staged table if the
/// resume fails.
pub fn error_device(ctx: &mut Ctx, dev: &DevRef) -> CmdResult {
    let size = device_size(ctx, dev);
    let spec = TargetSpec {
        sector_start: 0,
        length: size,
        status: 0,
        target_type: "error".into(),
        params: String::new(),
    };
    let payload = encode_table_load(&[spec]).map_err(|_| Failed)?;
    let mut load = Task::new(Command::TableLoad, "reload")
        .device(dev)
        .flag(flags::READONLY, ctx.opts.readonly)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .payload(payload);
    load.header.target_count = 1;
    load.lines = vec![1];
    ctx.run(&load)?;
    let force = ctx.opts.force;
    let resume = Task::new(Command::DevSuspend, "resume")
        .device(dev)
        .flag(flags::NOFLUSH, force || ctx.opts.noflush)
        .flag(flags::SKIP_LOCKFS, force || ctx.opts.nolockfs);
    if ctx.run(&resume).is_err() {
        let clear = Task::new(Command::TableClear, "clear").device(dev);
        let _ = ctx.run(&clear);
        return Err(Failed);
    }
    Ok(())
}

//! `measure [<device>...]`: dmsetup's `measure`, a `status` with
//! DM_IMA_MEASUREMENT_FLAG: one `<start> <len> <type> <ima>` line per target,
//! where `<ima>` is the target's STATUSTYPE_IMA text (`target_name=...;`,
//! empty for targets without one, as `error` and `zero`). Prefixes and
//! `--target`, `--inactive`, `-v` behave as for `status`.

use serde_json::json;
use udm_ioctl::{decode_table_status, flags};

use super::ctx::{CmdResult, Ctx, Failed, Task};
use super::devices::process_all;
use crate::client::Command;
use crate::format::{target_line, DeviceInfo};

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    if args.is_empty() && !ctx.opts.device_by_option() {
        return process_all(ctx, false, &mut |ctx, name| one(ctx, Some(name)));
    }
    one(ctx, args.first().map(String::as_str))
}

fn one(ctx: &mut Ctx, arg: Option<&str>) -> CmdResult {
    let dev = ctx.device(arg)?;
    let task = Task::new(Command::TableStatus, "status")
        .device(&dev)
        .flag(flags::IMA_MEASUREMENT, true)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .flag(flags::NOFLUSH, ctx.opts.noflush)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    let reply = ctx.run_raw(&task)?;
    // As for status, libdm treats ENXIO as "does not exist".
    if reply.errno == libc::ENXIO {
        return ctx.fail("Device does not exist.");
    }
    if !reply.ok() {
        ctx.report_ioctl_error(&task, &reply);
        return Err(Failed);
    }
    let specs = match decode_table_status(&reply.payload, reply.header.target_count) {
        Ok(s) => s,
        Err(e) => return ctx.fail(&format!("udmsetup: malformed status reply: {e}")),
    };
    let info = DeviceInfo::from_header(&reply.header);
    let name = arg.map_or_else(|| info.name.clone(), str::to_string);
    let target = ctx.opts.target.clone();
    let wanted = |t: &str| target.as_deref().is_none_or(|w| w == t);

    if ctx.opts.json {
        let targets: Vec<_> = specs
            .iter()
            .filter(|s| wanted(&s.target_type))
            .map(|s| {
                json!({"start": s.sector_start, "length": s.length,
                       "target_type": s.target_type, "measurement": s.params})
            })
            .collect();
        if target.is_none() || !targets.is_empty() {
            ctx.json
                .push(json!({"name": name, "uuid": info.uuid, "targets": targets}));
        }
        return Ok(());
    }

    let verbose = ctx.opts.verbose;
    let mut matched = false;
    // A device without a (such) table still gets one empty line.
    let entries: Vec<Option<&udm_ioctl::TargetSpec>> = if specs.is_empty() {
        vec![None]
    } else {
        specs.iter().map(Some).collect()
    };
    let mut line = String::new();
    for spec in entries {
        if target.is_some() && !spec.is_some_and(|s| wanted(&s.target_type)) {
            continue;
        }
        if !matched && verbose > 0 {
            line += &info.long_form();
        }
        if ctx.multiple && verbose == 0 {
            line += &format!("{name}: ");
        }
        if let Some(s) = spec {
            line += &target_line(s);
        }
        line.push('\n');
        matched = true;
    }
    if ctx.multiple && verbose > 0 && matched {
        line.push('\n');
    }
    ctx.print(&line);
    Ok(())
}

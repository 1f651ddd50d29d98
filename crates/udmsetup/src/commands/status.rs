//! `status|table|measure [<dev>...]`: TABLE_STATUS (with STATUS_TABLE for
//! `table`, DM_IMA_MEASUREMENT_FLAG for `measure`), one `<start> <len> <type>
//! <params>` line per target; a `<name>: ` prefix with several devices;
//! `--target` filters, `--concise` packs a table on one line, keys are masked
//! unless `--showkeys`.

use serde_json::json;
use udm_ioctl::{decode_table_status, flags};

use super::ctx::{CmdResult, Ctx, Failed, Task};
use super::devices::process_all;
use crate::client::Command;
use crate::format::{concise_quote, mask_keys, target_line, DeviceInfo};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Status,
    Table,
    /// STATUSTYPE_IMA: each target's `target_name=...;` text (see measure.rs).
    Measure,
}

pub fn status(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    run(ctx, args, Kind::Status)
}

pub fn table(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    run(ctx, args, Kind::Table)
}

pub(crate) fn run(ctx: &mut Ctx, args: &[String], kind: Kind) -> CmdResult {
    if args.is_empty() && !ctx.opts.device_by_option() {
        return process_all(ctx, false, &mut |ctx, name| one(ctx, Some(name), kind));
    }
    one(ctx, args.first().map(String::as_str), kind)
}

fn one(ctx: &mut Ctx, arg: Option<&str>, kind: Kind) -> CmdResult {
    let dev = ctx.device(arg)?;
    let task = Task::new(
        Command::TableStatus,
        if kind == Kind::Table {
            "table"
        } else {
            "status"
        },
    )
    .device(&dev)
    .flag(flags::STATUS_TABLE, kind == Kind::Table)
    .flag(flags::IMA_MEASUREMENT, kind == Kind::Measure)
    .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
    .flag(flags::NOFLUSH, ctx.opts.noflush)
    .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    let reply = ctx.run_raw(&task)?;
    // libdm treats ENXIO as "does not exist" for status (and measure), not for table.
    if reply.errno == libc::ENXIO && kind != Kind::Table {
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
    let mask = kind == Kind::Table && !ctx.opts.showkeys;
    let target = ctx.opts.target.clone();
    let wanted = |t: &str| target.as_deref().is_none_or(|w| w == t);

    if ctx.opts.json {
        let targets: Vec<_> = specs
            .iter()
            .filter(|s| wanted(&s.target_type))
            .map(|s| {
                let params = if mask {
                    mask_keys(&s.target_type, &s.params)
                } else {
                    s.params.clone()
                };
                let key = if kind == Kind::Measure {
                    "measurement"
                } else {
                    "params"
                };
                json!({"start": s.sector_start, "length": s.length,
                       "target_type": s.target_type, key: params})
            })
            .collect();
        if target.is_none() || !targets.is_empty() {
            let mut v = json!({"name": name, "uuid": info.uuid, "targets": targets});
            if ctx.opts.verbose > 0 && kind != Kind::Measure {
                v["info"] = info.to_json();
            }
            ctx.json.push(v);
        }
        return Ok(());
    }

    let concise = kind == Kind::Table && ctx.opts.concise;
    let verbose = ctx.opts.verbose;
    let mut matched = false;
    // A device without a table still gets one (empty) line.
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
        if !concise {
            if !matched && verbose > 0 {
                line += &info.long_form();
            }
            if ctx.multiple && verbose == 0 {
                line += &format!("{name}: ");
            }
        } else if !matched {
            if ctx.concise_started {
                line.push(';');
            }
            ctx.concise_started = true;
            line += &format!(
                "{},{},{},{}",
                concise_quote(&name),
                concise_quote(&info.uuid),
                info.minor,
                if info.read_only { "ro" } else { "rw" }
            );
        }
        if let Some(s) = spec {
            let mut shown = s.clone();
            if mask {
                shown.params = mask_keys(&s.target_type, &s.params);
            }
            if concise {
                line += &format!(
                    ",{} {} {} {}",
                    s.sector_start,
                    s.length,
                    s.target_type,
                    concise_quote(&shown.params)
                );
            } else {
                line += &target_line(&shown);
            }
        }
        if !concise {
            line.push('\n');
        }
        matched = true;
    }
    if ctx.multiple && verbose > 0 && matched && (!concise || verbose > 1) {
        line.push('\n');
    }
    ctx.print(&line);
    Ok(())
}

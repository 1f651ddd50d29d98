//! `info [<dev>...]`: DEV_STATUS, shown in the long form, as a report row
//! (`-c`) or as JSON. A missing device is "Device does not exist.".

use udm_ioctl::flags;

use super::ctx::{CmdResult, Ctx, DevRef, Task};
use super::devices::{deps_of, process_all, Namer};
use crate::client::Command;
use crate::format::report::{Needs, RowData};
use crate::format::DeviceInfo;

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    if args.is_empty() && !ctx.opts.device_by_option() {
        return process_all(ctx, false, &mut |ctx, name| one(ctx, Some(name)));
    }
    one(ctx, args.first().map(String::as_str))
}

/// DEV_STATUS with libdm's ENXIO rule: the device does not exist.
pub fn status_task(ctx: &Ctx, dev: &DevRef, name: &'static str) -> Task {
    Task::new(Command::DevStatus, name)
        .device(dev)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount)
}

fn one(ctx: &mut Ctx, arg: Option<&str>) -> CmdResult {
    let dev = ctx.device(arg)?;
    let task = status_task(ctx, &dev, "info");
    let reply = ctx.run_raw(&task)?;
    if reply.errno == libc::ENXIO {
        return ctx.fail("Device does not exist.");
    }
    if !reply.ok() {
        ctx.report_ioctl_error(&task, &reply);
        return Err(super::Failed);
    }
    ctx.display_info(&reply)
}

/// Add `info` as a row of the `-c` report, fetching deps or the whole
/// dependency tree when the chosen fields need them.
pub fn add_report_row(ctx: &mut Ctx, info: DeviceInfo) -> CmdResult {
    let needs = ctx.report.as_ref().map_or(Needs::Info, |r| r.needs());
    let mut row = RowData {
        info,
        mangling: ctx.mangling,
        ..Default::default()
    };
    if needs != Needs::Info {
        let dev = DevRef::DevNo(row.info.major, row.info.minor);
        let Ok((_, deps)) = deps_of(ctx, &dev) else {
            let (ma, mi) = (row.info.major, row.info.minor);
            return ctx.fail(&format!("Cannot get deps for {ma}:{mi}."));
        };
        let namer = Namer::new(ctx)?;
        // A file (0:N) has no kernel name: its path stands in.
        let paths = super::devices::file_paths(ctx, &dev, &deps);
        row.deps_blk_names = deps
            .iter()
            .map(|&(a, b)| match paths.iter().find(|(d, _)| *d == (a, b)) {
                Some((_, p)) => p.clone(),
                None => namer.blk_name(a, b),
            })
            .collect();
        row.deps = deps;
        if needs == Needs::Tree {
            if ctx.graph.is_none() {
                ctx.graph = Some(super::devices::dep_graph(ctx)?.0);
            }
            let Some(graph) = ctx.graph.as_ref() else {
                return Err(super::Failed);
            };
            let me = (row.info.major, row.info.minor);
            row.devs_used = graph.used(me).iter().map(|n| n.name.clone()).collect();
            let users = graph.users(me);
            row.ref_names = users.iter().map(|n| n.name.clone()).collect();
            row.ref_devnos = users.iter().map(|n| (n.major, n.minor)).collect();
        }
    }
    if let Some(r) = ctx.report.as_mut() {
        r.add_row(&row);
    }
    Ok(())
}

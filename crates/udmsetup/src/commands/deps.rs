//! `deps [<dev>...]`: TABLE_DEPS, `<n> dependencies\t: (maj, min)...`, or
//! names with `-o devname|blkdevname`.

use serde_json::json;

use super::ctx::{CmdResult, Ctx};
use super::devices::{deps_of, file_paths, parse_dev_name, process_all, DevName, Namer};
use crate::format::{deps_entry, deps_line, DeviceInfo};

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    let kind = parse_dev_name(ctx)?;
    if args.is_empty() && !ctx.opts.device_by_option() {
        return process_all(ctx, false, &mut |ctx, name| one(ctx, Some(name), kind));
    }
    one(ctx, args.first().map(String::as_str), kind)
}

fn one(ctx: &mut Ctx, arg: Option<&str>, kind: DevName) -> CmdResult {
    let dev = ctx.device(arg)?;
    let (reply, deps) = deps_of(ctx, &dev)?;
    let namer = if kind == DevName::Devno {
        None
    } else {
        Some(Namer::new(ctx)?)
    };
    // Files (0:N) are named by their path, with -o devname|blkdevname and
    // in JSON.
    let paths = if namer.is_some() || ctx.opts.json {
        file_paths(ctx, &dev, &deps)
    } else {
        Vec::new()
    };
    let path_of = |ma: u32, mi: u32| {
        paths
            .iter()
            .find(|(d, _)| *d == (ma, mi))
            .map(|(_, p)| p.clone())
    };
    let name_of = |ma: u32, mi: u32| {
        let n = namer.as_ref()?;
        path_of(ma, mi).or_else(|| n.name(kind, ma, mi))
    };
    if ctx.opts.json {
        let info = DeviceInfo::from_header(&reply.header);
        let list: Vec<_> = deps
            .iter()
            .map(|&(ma, mi)| {
                let mut v = json!({"major": ma, "minor": mi, "name": name_of(ma, mi)});
                if let Some(p) = path_of(ma, mi) {
                    v["path"] = json!(p);
                }
                v
            })
            .collect();
        let name = arg.map_or_else(|| info.name.clone(), str::to_string);
        ctx.json
            .push(json!({"name": name, "count": deps.len(), "devices": list}));
        return Ok(());
    }
    let verbose = ctx.opts.verbose > 0;
    if verbose {
        ctx.display_info(&reply)?;
    }
    let mut s = String::new();
    if ctx.multiple && !verbose {
        s += &format!("{}: ", arg.unwrap_or_default());
    }
    let entries: Vec<String> = deps
        .iter()
        .map(|&(ma, mi)| deps_entry(ma, mi, name_of(ma, mi).as_deref()))
        .collect();
    s += &deps_line(&entries);
    s.push('\n');
    if ctx.multiple && verbose {
        s.push('\n');
    }
    ctx.print(&s);
    Ok(())
}

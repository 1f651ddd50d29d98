//! `ls`: every device as `name\t(maj:min)`; `--target T` lists the
//! devices with a target of type T (as `name\t(maj, min)`); `--tree`
//! draws the dependency tree.

use serde_json::{json, Value};
use udm_ioctl::{decode_dev, decode_table_status, flags};

use super::ctx::{CmdResult, Ctx, Task};
use super::devices::{dep_graph, parse_dev_name, process_all, Namer};
use crate::client::Command;
use crate::format::tree::{render, TreeOptions};
use crate::format::{ls_line, ls_target_line, DeviceInfo};

pub fn run(ctx: &mut Ctx, _args: &[String]) -> CmdResult {
    if let Some(cmd) = ctx.opts.exec.clone() {
        return exec_each(ctx, &cmd);
    }
    if let Some(t) = ctx.opts.target.clone() {
        return process_all(ctx, false, &mut |ctx, name| with_target(ctx, name, &t));
    }
    if ctx.opts.tree {
        return tree(ctx);
    }
    let kind = parse_dev_name(ctx)?;
    let namer = Namer::new(ctx)?;
    if namer.devices().is_empty() {
        if !ctx.opts.json {
            ctx.println("No devices found");
        }
        return Ok(());
    }
    let mut s = String::new();
    for d in namer.devices() {
        let (ma, mi) = decode_dev(d.dev);
        let dev_name = namer.name(kind, ma, mi);
        if ctx.opts.json {
            ctx.json
                .push(json!({"name": d.name, "major": ma, "minor": mi,
                                 "event_nr": d.event_nr, "dev_name": dev_name}));
        } else {
            // Names are shown unmangled; a control character never reaches
            // the terminal raw, whatever the mangling mode.
            let name = crate::mangle::escape_controls(&d.name);
            let dev_name = dev_name.map(|n| crate::mangle::escape_controls(&n));
            s += &ls_line(&name, ma, mi, dev_name.as_deref());
            s.push('\n');
        }
    }
    ctx.print(&s);
    Ok(())
}

/// `ls --exec <command>`: run `<command> <dev dir>/mapper/<name>` for every
/// device (with `--target`, those with such a target), as dmsetup does:
/// the command split at blanks, the path one argument, its exit status
/// ignored and nothing else printed. The directory is `$DM_DEV_DIR` (as
/// in libdm), else `/dev`.
fn exec_each(ctx: &mut Ctx, cmd: &str) -> CmdResult {
    let names: Vec<String> = match ctx.opts.target.clone() {
        Some(t) => {
            let mut v = Vec::new();
            for d in super::devices::list(ctx)? {
                if has_target(ctx, &d.name, &t)?.is_some() {
                    v.push(d.name);
                }
            }
            v
        }
        None => super::devices::list(ctx)?
            .into_iter()
            .map(|d| d.name)
            .collect(),
    };
    if names.is_empty() {
        ctx.println("No devices found");
        return Ok(());
    }
    let dev_dir = std::env::var("DM_DEV_DIR").unwrap_or_else(|_| "/dev".to_string());
    let mut words = cmd.split_whitespace();
    let Some(prog) = words.next() else {
        return Ok(());
    };
    let words: Vec<&str> = words.collect();
    for name in names {
        let path = format!("{}/mapper/{name}", dev_dir.trim_end_matches('/'));
        let out = std::process::Command::new(prog)
            .args(&words)
            .arg(&path)
            .stdin(std::process::Stdio::inherit())
            .output();
        // dmsetup ignores a command that fails or cannot run.
        if let Ok(o) = out {
            let _ = ctx.out.write_all(&o.stdout);
            let _ = ctx.err.write_all(&o.stderr);
        }
    }
    Ok(())
}

/// The device's info when its table has a target of type `target`.
fn has_target(
    ctx: &mut Ctx,
    name: &str,
    target: &str,
) -> Result<Option<DeviceInfo>, super::Failed> {
    let dev = ctx.device(Some(name))?;
    let task = Task::new(Command::TableStatus, "status")
        .device(&dev)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    let reply = ctx.run_raw(&task)?;
    if reply.errno == libc::ENXIO {
        return ctx.fail("Device does not exist.");
    }
    if !reply.ok() {
        ctx.report_ioctl_error(&task, &reply);
        return Err(super::Failed);
    }
    let specs = decode_table_status(&reply.payload, reply.header.target_count).unwrap_or_default();
    Ok(specs
        .iter()
        .any(|s| s.target_type == target)
        .then(|| DeviceInfo::from_header(&reply.header)))
}

fn with_target(ctx: &mut Ctx, name: &str, target: &str) -> CmdResult {
    if let Some(info) = has_target(ctx, name, target)? {
        if ctx.opts.json {
            ctx.json
                .push(json!({"name": name, "major": info.major, "minor": info.minor}));
        } else {
            let shown = crate::mangle::escape_controls(name);
            ctx.println(&ls_target_line(&shown, info.major, info.minor));
        }
    }
    Ok(())
}

/// The terminal's width minus 3 when stdout is a terminal, else 80.
fn tree_width() -> usize {
    // SAFETY: winsize is plain data; TIOCGWINSZ only writes into it, and a
    // failing call (stdout not a terminal) leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: fd 1 and a valid pointer to a winsize, as TIOCGWINSZ expects.
    let r = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    if r >= 0 && ws.ws_col > 3 {
        usize::from(ws.ws_col) - 3
    } else {
        80
    }
}

fn utf8_locale() -> bool {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .next()
        .is_some_and(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("utf-8") || l.contains("utf8")
        })
}

fn tree(ctx: &mut Ctx) -> CmdResult {
    let opts = match TreeOptions::parse(ctx.opts.options.as_deref(), utf8_locale(), tree_width()) {
        Ok(o) => o,
        Err(e) => {
            ctx.error(&e);
            return ctx.usage_fail();
        }
    };
    let (graph, _) = dep_graph(ctx)?;
    if graph.nodes.is_empty() && !ctx.opts.json {
        ctx.println("No devices found");
        return Ok(());
    }
    if ctx.opts.json {
        ctx.json_object = Some(Value::Array(
            graph
                .nodes
                .iter()
                .map(|n| {
                    let uses: Vec<Value> = graph
                        .children((n.major, n.minor))
                        .iter()
                        .map(|u| {
                            let mut v = json!({"name": u.name, "major": u.major, "minor": u.minor});
                            if let Some(p) = &u.path {
                                v["path"] = json!(p);
                            }
                            v
                        })
                        .collect();
                    let mut v = json!({"name": n.name, "major": n.major, "minor": n.minor,
                           "udm_device": n.info.is_some(), "uses": uses});
                    if let Some(p) = &n.path {
                        v["path"] = json!(p);
                    }
                    v
                })
                .collect(),
        ));
        return Ok(());
    }
    let s = render(&graph, &opts);
    ctx.print(&s);
    Ok(())
}

//! `create <name> [<file>]`: DEV_CREATE, then (with a table) TABLE_LOAD by
//! device number and a resume, removing the new device again if either
//! fails, as libdm does.

use udm_ioctl::{decode_dev, flags};

use super::ctx::{CmdResult, Ctx, DevRef, Task};
use super::load::{load_task, read_table};
use crate::client::Command;
use crate::table_text::ParsedTable;

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    if ctx.opts.concise {
        return ctx.fail("udmsetup: create --concise is not supported.");
    }
    let Some(name) = args.first() else {
        return ctx.fail("Please provide a name for the new device.");
    };
    if name.contains('/') {
        return ctx.fail(&format!("Name \"{name}\" invalid. It contains \"/\"."));
    }
    let name = ctx.check_name(name)?;
    let name = ctx.mangle(&name, "name")?;
    let table = if ctx.opts.notable {
        ParsedTable::default()
    } else {
        read_table(ctx, args.get(1).map(String::as_str))?
    };
    let user_devno = match (ctx.opts.major, ctx.opts.minor) {
        (Some(ma), Some(mi)) => Some((ma as u32, mi as u32)),
        _ => None,
    };

    let mut create = Task::new(Command::DevCreate, "create")
        .device(&DevRef::Name(name.clone()))
        .flag(flags::READONLY, ctx.opts.readonly)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    if let Some(u) = ctx.opts.uuid.clone() {
        if udm_ioctl::check_uuid(&u).is_err() {
            return ctx.fail(&format!("UUID \"{u}\" too long."));
        }
        let u = ctx.mangle(&u, "UUID")?;
        create.header.uuid = u.clone();
        create.label.uuid = u;
    }
    if let Some((ma, mi)) = user_devno {
        create.header.dev = udm_ioctl::encode_dev(ma, mi);
        create.header.flags |= flags::PERSISTENT_DEV;
    }
    let created = ctx.run(&create)?;
    if table.specs.is_empty() {
        if ctx.opts.verbose > 0 {
            return ctx.display_info(&created);
        }
        return Ok(());
    }

    let (ma, mi) = decode_dev(created.header.dev);
    let mut load = load_task(ctx, &DevRef::DevNo(ma, mi), &table)?;
    load.label.name = name.clone();
    if ctx.run(&load).is_err() {
        return revert(ctx, &name);
    }

    let resume_dev = match user_devno {
        Some((a, b)) => DevRef::DevNo(a, b),
        None => DevRef::Name(name.clone()),
    };
    let mut resume = Task::new(Command::DevSuspend, "resume")
        .device(&resume_dev)
        .flag(flags::READONLY, ctx.opts.readonly)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    resume.label.name = name.clone();
    match ctx.run(&resume) {
        Ok(reply) if ctx.opts.verbose > 0 => ctx.display_info(&reply),
        Ok(_) => Ok(()),
        Err(_) => revert(ctx, &name),
    }
}

/// Undo the create after a failed load or resume; the command fails.
fn revert(ctx: &mut Ctx, name: &str) -> CmdResult {
    let remove = Task::new(Command::DevRemove, "remove").device(&DevRef::Name(name.to_string()));
    let _ = ctx.run(&remove);
    Err(super::Failed)
}

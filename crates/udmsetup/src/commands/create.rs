//! `create <name> [<file>]`: DEV_CREATE, then (with a table) TABLE_LOAD by
//! device number and a resume, removing the new device again if either
//! fails, as libdm does. `create --concise` does the same for each device
//! of a concise list.

use udm_ioctl::{decode_dev, flags};

use super::ctx::{CmdResult, Ctx, DevRef, Task};
use super::load::{load_task, read_table};
use crate::client::Command;
use crate::table_text::ParsedTable;

/// One device to create.
pub struct NewDevice {
    /// As given (unmangled); mangled here.
    pub name: String,
    pub uuid: Option<String>,
    /// (major, minor) to ask for, with PERSISTENT_DEV.
    pub devno: Option<(u32, u32)>,
    pub readonly: bool,
    pub table: ParsedTable,
}

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    if ctx.opts.concise {
        return super::concise::create(ctx, args);
    }
    let Some(name) = args.first() else {
        return ctx.fail("Please provide a name for the new device.");
    };
    if name.contains('/') {
        return ctx.fail(&format!("Name \"{name}\" invalid. It contains \"/\"."));
    }
    let name = ctx.check_name(name)?;
    let table = if ctx.opts.notable {
        ParsedTable::default()
    } else {
        read_table(ctx, args.get(1).map(String::as_str))?
    };
    let devno = match (ctx.opts.major, ctx.opts.minor) {
        (Some(ma), Some(mi)) => Some((ma as u32, mi as u32)),
        _ => None,
    };
    let dev = NewDevice {
        name,
        uuid: ctx.opts.uuid.clone(),
        devno,
        readonly: ctx.opts.readonly,
        table,
    };
    create_device(ctx, &dev)
}

/// Create `dev`, load and resume its table (if any), undoing the create if
/// either fails; `-v` shows the new device.
pub fn create_device(ctx: &mut Ctx, dev: &NewDevice) -> CmdResult {
    let name = ctx.mangle(&dev.name, "name")?;
    let mut create = Task::new(Command::DevCreate, "create")
        .device(&DevRef::Name(name.clone()))
        .flag(flags::READONLY, dev.readonly)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    if let Some(u) = dev.uuid.clone() {
        if udm_ioctl::check_uuid(&u).is_err() {
            return ctx.fail(&format!("UUID \"{u}\" too long."));
        }
        let u = ctx.mangle(&u, "UUID")?;
        create.header.uuid = u.clone();
        create.label.uuid = u;
    }
    if let Some((ma, mi)) = dev.devno {
        create.header.dev = udm_ioctl::encode_dev(ma, mi);
        create.header.flags |= flags::PERSISTENT_DEV;
    }
    let created = ctx.run(&create)?;
    if dev.table.specs.is_empty() {
        if ctx.opts.verbose > 0 {
            return ctx.display_info(&created);
        }
        return Ok(());
    }

    let (ma, mi) = decode_dev(created.header.dev);
    let mut load = load_task(ctx, &DevRef::DevNo(ma, mi), &dev.table)?;
    load.label.name = name.clone();
    if dev.readonly {
        load.header.flags |= flags::READONLY;
    }
    if ctx.run(&load).is_err() {
        return revert(ctx, &name);
    }

    // By number when one was asked for (the number the device got: the
    // concise form gives only the minor), else by name.
    let resume_dev = match dev.devno {
        Some(_) => DevRef::DevNo(ma, mi),
        None => DevRef::Name(name.clone()),
    };
    let mut resume = Task::new(Command::DevSuspend, "resume")
        .device(&resume_dev)
        .flag(flags::READONLY, dev.readonly)
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

//! `load|reload <dev> [<file>]`: TABLE_LOAD of a table read from
//! `--table`, a file or stdin, into the inactive slot.

use udm_ioctl::{encode_table_load, flags};

use super::ctx::{CmdResult, Ctx, DevRef, Failed, Task};
use crate::client::Command;
use crate::table_text::{parse_table, ParsedTable, TableSource};

/// Read and parse the table: `--table`, else `file`, else stdin.
pub fn read_table(ctx: &mut Ctx, file: Option<&str>) -> Result<ParsedTable, Failed> {
    let (text, source) = if let Some(t) = ctx.opts.table.clone() {
        (t, TableSource::Arg)
    } else if let Some(f) = file {
        match std::fs::read(f) {
            Ok(b) => (
                String::from_utf8_lossy(&b).into_owned(),
                TableSource::File(f.to_string()),
            ),
            Err(_) => return ctx.fail(&format!("Couldn't open '{f}' for reading.")),
        }
    } else {
        let mut b = Vec::new();
        if let Err(e) = ctx.stdin.read_to_end(&mut b) {
            return ctx.fail(&format!("udmsetup: reading stdin: {e}"));
        }
        (String::from_utf8_lossy(&b).into_owned(), TableSource::Stdin)
    };
    parse_table(&text, &source).map_err(|e| {
        ctx.error(&e.to_string());
        if let Some(d) = e.detail() {
            ctx.error(&format!("udm: {d}"));
        }
        super::Failed
    })
}

/// The TABLE_LOAD task for `table` on `dev`.
pub fn load_task(ctx: &mut Ctx, dev: &DevRef, table: &ParsedTable) -> Result<Task, Failed> {
    let payload = match encode_table_load(&table.specs) {
        Ok(p) => p,
        Err(e) => return ctx.fail(&format!("udmsetup: {e}")),
    };
    let mut task = Task::new(Command::TableLoad, "reload")
        .device(dev)
        .flag(flags::READONLY, ctx.opts.readonly)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount)
        .payload(payload);
    task.header.target_count = table.specs.len() as u32;
    task.lines = table.lines.clone();
    task.notes = table.notes.clone();
    Ok(task)
}

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    if ctx.opts.notable {
        return ctx.fail("--notable only available when creating new device.");
    }
    let (name, rest) = if ctx.opts.device_by_option() {
        if args.len() > 1 {
            return ctx.fail("Too many command line arguments.");
        }
        (None, args)
    } else {
        match args.split_first() {
            Some((n, rest)) => (Some(n.as_str()), rest),
            None => return ctx.fail("Please specify device."),
        }
    };
    let dev = ctx.device(name)?;
    let table = read_table(ctx, rest.first().map(String::as_str))?;
    let task = load_task(ctx, &dev, &table)?;
    let reply = ctx.run(&task)?;
    if ctx.opts.verbose > 0 {
        return ctx.display_info(&reply);
    }
    Ok(())
}

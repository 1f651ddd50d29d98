//! The subcommands, one file each, and the dispatcher that mirrors
//! dmsetup's: options anywhere, a table of commands with their argument
//! counts, repeatable commands run per device until one fails, and
//! `Command failed.` once on failure.

pub mod ctx;
pub mod devices;

mod clear;
mod concise;
mod create;
mod deps;
pub mod info;
mod load;
mod ls;
mod measure;
mod message;
mod mknodes;
mod remove;
mod remove_all;
mod rename;
mod setgeometry;
mod splitname;
mod status;
mod suspend;
mod target_version;
mod targets;
mod version;
mod wait;
mod wipe_table;

use std::ffi::OsString;
use std::io::{Read, Write};

use clap::Parser;

use crate::args::Opts;
pub use ctx::{CmdResult, Ctx, DevRef, Failed, Task};

/// How a command takes device arguments (dmsetup's `repeatable_cmd`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// The function sees all arguments at once.
    No,
    /// Called once per argument (or once with none).
    PerArg,
}

type RunFn = fn(&mut Ctx, &[String]) -> CmdResult;

struct CommandSpec {
    name: &'static str,
    usage: &'static str,
    min_args: usize,
    max_args: Option<usize>,
    repeat: Repeat,
    run: RunFn,
}

macro_rules! cmd {
    ($name:expr, $usage:expr, $min:expr, $max:expr, $rep:ident, $run:expr) => {
        CommandSpec {
            name: $name,
            usage: $usage,
            min_args: $min,
            max_args: $max,
            repeat: Repeat::$rep,
            run: $run,
        }
    };
}

const COMMANDS: &[CommandSpec] = &[
    cmd!("help", "[-c|-C|--columns]", 0, Some(0), No, help),
    cmd!(
        "create",
        "<dev_name>\n\t    [-j|--major <major> -m|--minor <minor>]\n\t    [-u|--uuid <uuid>] [-r|--readonly]\n\t    [-n|--notable|--table {<table>|<table_file>}]\n\tcreate --concise [<concise_device_spec_list>]",
        0, Some(2), No, create::run
    ),
    cmd!("remove", "[--deferred] [-f|--force] [--retry] <device>...", 0, None, PerArg, remove::run),
    cmd!("remove_all", "[-f|--force]", 0, Some(0), No, remove_all::run),
    cmd!("suspend", "[--noflush] [--nolockfs] <device>...", 0, None, PerArg, suspend::suspend),
    cmd!("resume", "[--noflush] [--nolockfs] <device>...", 0, None, PerArg, suspend::resume),
    cmd!("load", "<device> [<table>|<table_file>]", 0, Some(2), No, load::run),
    cmd!("clear", "<device>", 0, None, PerArg, clear::run),
    cmd!("reload", "<device> [<table>|<table_file>]", 0, Some(2), No, load::run),
    cmd!("wipe_table", "[-f|--force] [--noflush] [--nolockfs] <device>...", 0, None, PerArg, wipe_table::run),
    cmd!("rename", "<device> [--setuuid] <new_name_or_uuid>", 1, Some(2), No, rename::run),
    cmd!("message", "<device> <sector> <message>", 2, None, No, message::run),
    cmd!("ls", "[--target <target_type>] [--exec <command>] [-o <options>] [--tree]", 0, Some(0), No, ls::run),
    cmd!("info", "[<device>...]", 0, None, PerArg, info::run),
    cmd!("deps", "[-o <options>] [<device>...]", 0, None, PerArg, deps::run),
    cmd!("status", "[<device>...] [--noflush] [--target <target_type>]", 0, None, PerArg, status::status),
    cmd!("table", "[<device>...] [--concise] [--target <target_type>] [--showkeys]", 0, None, PerArg, status::table),
    cmd!("measure", "[<device>...]", 0, None, PerArg, measure::run),
    cmd!("wait", "<device> [<event_nr>] [--noflush]", 0, Some(2), No, wait::run),
    cmd!("mknodes", "[<device>...]", 0, None, PerArg, mknodes::run),
    cmd!("target-version", "[<target>...]", 1, None, PerArg, target_version::run),
    cmd!("targets", "", 0, Some(0), No, targets::run),
    cmd!("version", "", 0, Some(0), No, version::run),
    cmd!("setgeometry", "<device> <cyl> <head> <sect> <start>", 5, Some(5), No, setgeometry::run),
    cmd!("splitname", "<device> [<subsystem>]", 1, Some(2), No, splitname::run),
];

fn usage() -> String {
    let mut s = String::from(
        "Usage:\n\nudmsetup\n        [--version] [-h|--help [-c|-C|--columns]]\n        \
         [--socket <path>] [--json]\n        \
         [-v|--verbose [-v|--verbose ...]] [-f|--force]\n        \
         [--manglename {none|hex|auto}]\n        \
         [-r|--readonly] [--noopencount] [--noflush] [--nolockfs] [--inactive]\n        \
         [--udevcookie <cookie>] [--noudevrules] [--noudevsync] [--verifyudev]\n        \
         [-y|--yes] [--readahead {[+]<sectors>|auto|none}] [--retry]\n        \
         [-c|-C|--columns] [-o <fields>] [--noheadings] [--separator <separator>]\n\n",
    );
    for c in COMMANDS {
        s += &format!("\t{} {}\n", c.name, c.usage);
    }
    s += "\n<device> may be device name or (if only one) -u <uuid> or -j <major> -m <minor>\n\
          <mangling_mode> is one of 'none', 'auto' and 'hex'.\n\
          <fields> are comma-separated.  Use 'help -c' for list.\n\
          <concise_device_specification> has single-device entries separated by semi-colons:\n    \
          <name>,<uuid>,<minor>,<flags>,<table>\n        \
          where <flags> is 'ro' or 'rw' (the default) and any of <uuid>, <minor>\n        \
          and <flags> may be empty. Separate extra table lines with commas.\n    \
          E.g.: dev1,,,,0 100 linear 253:1 0,100 100 error;dev2,,,ro,0 1 error\n\
          Table_file contents may be supplied on stdin.\n\
          Options are: devno, devname, blkdevname.\n\
          Tree specific options are: ascii, utf, vt100; compact, inverted, notrunc;\n                           \
          blkdevname, [no]device, active, open, rw and uuid;\n                           \
          devname (udm: name files by path, other devices by kernel name).\n\n";
    s
}

fn help(ctx: &mut Ctx, _args: &[String]) -> CmdResult {
    if ctx.opts.columns {
        let s = crate::format::report::field_help();
        let _ = ctx.err.write_all(s.as_bytes());
    } else {
        let _ = ctx.err.write_all(usage().as_bytes());
    }
    Ok(())
}

/// Run every device argument through `spec.run` (the whole list for
/// non-repeatable commands), stopping at the first failure.
fn perform(ctx: &mut Ctx, spec: &CommandSpec, args: &[String]) -> CmdResult {
    ctx.multiple = spec.repeat == Repeat::PerArg
        && args.len() != 1
        && (!args.is_empty() || !ctx.opts.device_by_option());
    if spec.repeat == Repeat::No || args.is_empty() {
        return (spec.run)(ctx, args);
    }
    for a in args {
        (spec.run)(ctx, std::slice::from_ref(a))?;
    }
    Ok(())
}

/// Print what was collected over all devices: the `info -c` report, the
/// JSON output, the end of a `--concise` line.
fn finish(ctx: &mut Ctx) {
    if ctx.concise_started {
        ctx.print("\n");
    }
    if ctx.opts.json {
        let v = match ctx.json_object.take() {
            Some(v) => v,
            None => match &ctx.report {
                Some(r) => r.to_json(),
                None => serde_json::Value::Array(std::mem::take(&mut ctx.json)),
            },
        };
        let s = serde_json::to_string_pretty(&v).unwrap_or_default();
        ctx.println(&s);
    } else if let Some(r) = ctx.report.take() {
        let s = r.render();
        ctx.print(&s);
    }
}

/// Run udmsetup with `argv` (program name first); returns the exit code.
pub fn run(
    argv: impl IntoIterator<Item = OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    stdin: &mut dyn Read,
) -> i32 {
    let opts = match Opts::try_parse_from(argv) {
        Ok(o) => o,
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid command line");
            let _ = writeln!(err, "udmsetup: {}", first.trim_start_matches("error: "));
            let _ = writeln!(err, "Couldn't process command line.");
            return 1;
        }
    };
    let help_or_version = opts.help || opts.version;
    let mut ctx = Ctx::new(opts, out, err, stdin);
    let code = dispatch(&mut ctx);
    finish(&mut ctx);
    let _ = ctx.out.flush();
    if help_or_version {
        0
    } else {
        code
    }
}

fn dispatch(ctx: &mut Ctx) -> i32 {
    if ctx.opts.major.is_some() != ctx.opts.minor.is_some() {
        ctx.error("Please specify both major number and minor number.");
        ctx.error("Couldn't process command line.");
        return 1;
    }
    if ctx.opts.table.is_some() && ctx.opts.notable {
        ctx.error("--table and --notable are incompatible.");
        ctx.error("Couldn't process command line.");
        return 1;
    }
    if let Some(o) = ctx.opts.unsupported() {
        ctx.error(&format!("udmsetup: {o} is not supported."));
        ctx.error("Couldn't process command line.");
        return 1;
    }
    match crate::mangle::Mangling::from_option(ctx.opts.manglename.as_deref()) {
        Ok(m) => ctx.mangling = m,
        Err(_) => {
            ctx.error("Unknown name mangling mode.");
            ctx.error("Couldn't process command line.");
            return 1;
        }
    }
    let mut args = std::mem::take(&mut ctx.opts.args);
    let name = if ctx.opts.help {
        "help".to_string()
    } else if ctx.opts.version {
        "version".to_string()
    } else if args.is_empty() {
        let _ = ctx.err.write_all(usage().as_bytes());
        return 1;
    } else {
        args.remove(0)
    };
    let Some(spec) = COMMANDS.iter().find(|c| c.name == name) else {
        ctx.error("Unknown command.");
        let _ = ctx.err.write_all(usage().as_bytes());
        return 1;
    };
    if args.len() < spec.min_args || spec.max_args.is_some_and(|m| args.len() > m) {
        ctx.error("Incorrect number of arguments.");
        let _ = ctx.err.write_all(usage().as_bytes());
        return 1;
    }
    if ctx.opts.columns && spec.name != "help" && spec.name != "splitname" {
        match crate::format::report::Report::new(
            ctx.opts.options.as_deref(),
            ctx.opts.noheadings,
            ctx.opts.separator.as_deref(),
        ) {
            Ok(r) => ctx.report = Some(r),
            Err(e) => {
                ctx.error(&e);
                return 1;
            }
        }
    }
    match perform(ctx, spec, &args) {
        Ok(()) => 0,
        Err(Failed) => {
            if !ctx.usage_error {
                ctx.error("Command failed.");
            }
            1
        }
    }
}

//! Device-wide helpers: the device list, running a command for every
//! device, naming device numbers (`-o devname|blkdevname`) and building
//! the dependency graph.

use udm_ioctl::{
    decode_deps, decode_dev, decode_name_list, decode_table_status, flags, NameListEntry,
};

/// The major udmd lists regular files under in deps (Linux's "unnamed"
/// major; udm-core's `FILE_MAJOR`).
pub const FILE_MAJOR: u32 = 0;

use super::ctx::{CmdResult, Ctx, DevRef, Failed, Task};
use crate::client::{Command, Reply};
use crate::format::tree::{DepGraph, DevFacts};
use crate::format::DeviceInfo;

/// LIST_DEVICES (sorted by name, as the kernel returns them).
pub fn list(ctx: &mut Ctx) -> Result<Vec<NameListEntry>, Failed> {
    let reply = ctx.run(&Task::new(Command::ListDevices, "names"))?;
    match decode_name_list(&reply.payload) {
        Ok(mut l) => {
            let mode = ctx.mangling;
            for d in &mut l {
                let shown = ctx.unmangle(&d.name, "name", mode)?;
                ctx.stored_names
                    .insert(shown.clone(), std::mem::take(&mut d.name));
                d.name = shown;
            }
            Ok(l)
        }
        Err(e) => ctx.fail(&format!("udmsetup: malformed device list: {e}")),
    }
}

/// Run `f` for every device, as dmsetup's `_process_all`: "No devices
/// found" when there are none (unless `silent`), every device tried even
/// after a failure, failing if any did.
pub fn process_all(
    ctx: &mut Ctx,
    silent: bool,
    f: &mut dyn FnMut(&mut Ctx, &str) -> CmdResult,
) -> CmdResult {
    let devices = list(ctx)?;
    if devices.is_empty() {
        if !silent && !ctx.opts.json {
            ctx.println("No devices found");
        }
        return Ok(());
    }
    ctx.multiple = true;
    let mut result = Ok(());
    for d in &devices {
        if f(ctx, &d.name).is_err() {
            result = Err(Failed);
        }
    }
    result
}

/// How `-o` names a device number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevName {
    /// `maj:min` (the default).
    Devno,
    /// The kernel name: `dm-N`, `loop0`.
    Blk,
    /// The mapped name for udm devices, the kernel name otherwise.
    Map,
}

/// Parse `-o` for `ls` and `deps` (dmsetup compares each word as a prefix).
pub fn parse_dev_name(ctx: &mut Ctx) -> Result<DevName, Failed> {
    let Some(opts) = ctx.opts.options.clone() else {
        return Ok(DevName::Devno);
    };
    let mut kind = DevName::Devno;
    for word in opts.split(',').filter(|w| !w.is_empty()) {
        kind = if "devno".starts_with(word) {
            DevName::Devno
        } else if "blkdevname".starts_with(word) {
            DevName::Blk
        } else if "devname".starts_with(word) {
            DevName::Map
        } else {
            ctx.error(&format!("Option not recognised: {word}."));
            return ctx.usage_fail();
        };
    }
    Ok(kind)
}

/// The kernel's name for a block device number, from sysfs.
fn sysfs_name(major: u32, minor: u32) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Names device numbers: udm devices from the device list, the rest from
/// sysfs.
pub struct Namer {
    devices: Vec<NameListEntry>,
}

impl Namer {
    pub fn new(ctx: &mut Ctx) -> Result<Self, Failed> {
        Ok(Namer {
            devices: list(ctx)?,
        })
    }

    fn udm_name(&self, major: u32, minor: u32) -> Option<&str> {
        self.devices
            .iter()
            .find(|d| decode_dev(d.dev) == (major, minor))
            .map(|d| d.name.as_str())
    }

    /// The name to print, or None to print the number.
    pub fn name(&self, kind: DevName, major: u32, minor: u32) -> Option<String> {
        match (kind, self.udm_name(major, minor)) {
            (DevName::Devno, _) => None,
            (DevName::Map, Some(n)) => Some(n.to_string()),
            (DevName::Blk, Some(_)) => Some(format!("dm-{minor}")),
            (_, None) => sysfs_name(major, minor),
        }
    }

    /// The kernel-style name, falling back to `maj:min`.
    pub fn blk_name(&self, major: u32, minor: u32) -> String {
        self.name(DevName::Blk, major, minor)
            .unwrap_or_else(|| format!("{major}:{minor}"))
    }

    pub fn devices(&self) -> &[NameListEntry] {
        &self.devices
    }
}

/// TABLE_DEPS of one device: the reply (which carries the device's info)
/// and the underlying devices as (major, minor) pairs.
pub fn deps_of(ctx: &mut Ctx, dev: &DevRef) -> Result<(Reply, Vec<(u32, u32)>), Failed> {
    let task = Task::new(Command::TableDeps, "deps")
        .device(dev)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    let reply = ctx.run(&task)?;
    match decode_deps(&reply.payload) {
        Ok(d) => Ok((reply, d.into_iter().map(decode_dev).collect())),
        Err(e) => ctx.fail(&format!("udmsetup: malformed deps reply: {e}")),
    }
}

/// The paths of the regular files among `deps` (listed as `0:N`, major 0
/// being udm's [`FILE_MAJOR`]), from the device's table: udmd prints a
/// file in a table by its absolute path, and lists a table's distinct
/// devices in deps most recently first-referenced first, so the files'
/// paths in the table, each kept at its first reference and reversed,
/// pair up with the `0:N` entries in order. Empty if the table cannot be
/// read or does not pair up (nothing is then named wrongly).
pub fn file_paths(ctx: &mut Ctx, dev: &DevRef, deps: &[(u32, u32)]) -> Vec<((u32, u32), String)> {
    let files: Vec<(u32, u32)> = deps.iter().copied().filter(|d| d.0 == FILE_MAJOR).collect();
    if files.is_empty() {
        return Vec::new();
    }
    let task = Task::new(Command::TableStatus, "table")
        .device(dev)
        .flag(flags::STATUS_TABLE, true)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    let specs = match ctx.run_raw(&task) {
        Ok(r) if r.ok() => {
            decode_table_status(&r.payload, r.header.target_count).unwrap_or_default()
        }
        _ => return Vec::new(),
    };
    let mut paths: Vec<String> = Vec::new();
    for s in &specs {
        for w in s.params.split_whitespace().filter(|w| w.starts_with('/')) {
            if !paths.iter().any(|p| p == w) {
                paths.push(w.to_string());
            }
        }
    }
    paths.reverse();
    if paths.len() != files.len() {
        return Vec::new();
    }
    files.into_iter().zip(paths).collect()
}

/// The dependency graph of every device (what `ls --tree` draws).
pub fn dep_graph(ctx: &mut Ctx) -> Result<(DepGraph, Namer), Failed> {
    let namer = Namer::new(ctx)?;
    let mut facts: Vec<((u32, u32), DevFacts)> = Vec::new();
    let mut files: Vec<((u32, u32), String)> = Vec::new();
    for d in namer.devices() {
        let (ma, mi) = decode_dev(d.dev);
        let dev = DevRef::DevNo(ma, mi);
        let (reply, deps) = deps_of(ctx, &dev)?;
        files.extend(file_paths(ctx, &dev, &deps));
        let f = DevFacts {
            info: Some(DeviceInfo::from_header(&reply.header)),
            deps,
            blkdevname: Some(format!("dm-{mi}")),
            path: None,
        };
        facts.push(((ma, mi), f));
    }
    let lookup = |ma: u32, mi: u32| -> DevFacts {
        match facts.iter().find(|(d, _)| *d == (ma, mi)) {
            Some((_, f)) => f.clone(),
            None => {
                let path = files
                    .iter()
                    .find(|(d, _)| *d == (ma, mi))
                    .map(|(_, p)| p.clone());
                DevFacts {
                    info: None,
                    deps: Vec::new(),
                    blkdevname: path.clone().or_else(|| sysfs_name(ma, mi)),
                    path,
                }
            }
        }
    };
    let order: Vec<(u32, u32)> = facts.iter().map(|(d, _)| *d).collect();
    Ok((DepGraph::build(&order, &lookup), namer))
}

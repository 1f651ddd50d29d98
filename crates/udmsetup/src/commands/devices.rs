//! Device-wide helpers: the device list, running a command for every
//! device, naming device numbers (`-o devname|blkdevname`) and building
//! the dependency graph.

use udm_ioctl::{decode_deps, decode_dev, decode_name_list, flags, NameListEntry};

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
                d.name = ctx.unmangle(&d.name, "name", mode)?;
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
            return ctx.fail("Couldn't process command line.");
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

/// The dependency graph of every device (what `ls --tree` draws).
pub fn dep_graph(ctx: &mut Ctx) -> Result<(DepGraph, Namer), Failed> {
    let namer = Namer::new(ctx)?;
    let mut facts: Vec<((u32, u32), DevFacts)> = Vec::new();
    for d in namer.devices() {
        let (ma, mi) = decode_dev(d.dev);
        let (reply, deps) = deps_of(ctx, &DevRef::DevNo(ma, mi))?;
        let f = DevFacts {
            info: Some(DeviceInfo::from_header(&reply.header)),
            deps,
            blkdevname: Some(format!("dm-{mi}")),
        };
        facts.push(((ma, mi), f));
    }
    let lookup = |ma: u32, mi: u32| -> DevFacts {
        match facts.iter().find(|(d, _)| *d == (ma, mi)) {
            Some((_, f)) => f.clone(),
            None => DevFacts {
                info: None,
                deps: Vec::new(),
                blkdevname: sysfs_name(ma, mi),
            },
        }
    };
    let order: Vec<(u32, u32)> = facts.iter().map(|(d, _)| *d).collect();
    Ok((DepGraph::build(&order, &lookup), namer))
}

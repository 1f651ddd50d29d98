//! What every subcommand works with: the options, the output streams, the
//! (lazily opened) control connection, and `Task`, one ioctl described the
//! way libdm describes it so failures print exactly as dmsetup's do.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::Value;
use udm_ioctl::{encode_dev, flags, DmIoctl};

use crate::args::Opts;
use crate::client::{default_socket_path, initial_capacity, Client, ClientError, Command, Reply};
use crate::format::report::Report;
use crate::format::{ioctl_error, rewrite_detail, DevLabel, DeviceInfo};
use crate::mangle::{self, Mangling};

/// A failure whose message is already on stderr; the caller adds
/// `Command failed.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

pub type CmdResult = Result<(), Failed>;

/// How a device is named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevRef {
    Name(String),
    Uuid(String),
    DevNo(u32, u32),
}

/// One ioctl: the command, libdm's name for it (which differs for
/// resume/table/mknodes), the header, the payload and how to name the
/// device if it fails.
#[derive(Clone, Debug)]
pub struct Task {
    pub cmd: Command,
    pub name: &'static str,
    pub header: DmIoctl,
    pub payload: Vec<u8>,
    pub label: DevLabel,
    /// For TABLE_LOAD: the source line of each spec, to rewrite the
    /// daemon's `line K:` detail.
    pub lines: Vec<usize>,
    /// For TABLE_LOAD: per spec, a precise reason to show instead of the
    /// daemon's when it refuses that spec (see `ParsedTable::notes`).
    pub notes: Vec<Option<String>>,
}

impl Task {
    pub fn new(cmd: Command, name: &'static str) -> Self {
        Task {
            cmd,
            name,
            header: DmIoctl::new(),
            payload: Vec::new(),
            label: DevLabel::default(),
            lines: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Address the device as libdm does: by name, by uuid, or by number
    /// (with PERSISTENT_DEV, as libdm sets whenever it sends a minor).
    pub fn device(mut self, dev: &DevRef) -> Self {
        match dev {
            DevRef::Name(n) => {
                self.header.name = n.clone();
                self.label.name = n.clone();
            }
            DevRef::Uuid(u) => {
                self.header.uuid = u.clone();
                self.label.uuid = u.clone();
            }
            DevRef::DevNo(ma, mi) => {
                self.header.dev = encode_dev(*ma, *mi);
                self.header.flags |= flags::PERSISTENT_DEV;
                self.label.devno = Some((*ma, *mi));
            }
        }
        self
    }

    pub fn flag(mut self, bit: u32, on: bool) -> Self {
        if on {
            self.header.flags |= bit;
        }
        self
    }

    pub fn payload(mut self, p: Vec<u8>) -> Self {
        self.payload = p;
        self
    }
}

/// The state of one udmsetup invocation.
pub struct Ctx<'a> {
    pub opts: Opts,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub stdin: &'a mut dyn Read,
    client: Option<Client>,
    /// `info -c`: rows collected over all devices, printed at the end.
    pub report: Option<Report>,
    /// `--json`: values collected over all devices, printed at the end.
    pub json: Vec<Value>,
    /// A single JSON object to print instead of the array.
    pub json_object: Option<Value>,
    /// `table --concise` printed something (devices are `;`-separated and
    /// the line ends once, at the end).
    pub concise_started: bool,
    /// The command works on several devices: prefix lines with the name.
    pub multiple: bool,
    /// The dependency graph, built once per invocation when needed.
    pub graph: Option<crate::format::tree::DepGraph>,
    /// `--manglename` (or its default).
    pub mangling: Mangling,
    /// Names as shown -> as stored, for the devices listed so far: a name
    /// taken from the list addresses that device exactly, even where
    /// mangling the shown form again would not give the stored one
    /// (`p\x41q` is shown as `pAq`; a control character stays `\xNN`).
    pub stored_names: std::collections::HashMap<String, String>,
    /// The failure was the command line's (dmsetup checks `-o` before
    /// running anything): no `Command failed.` follows.
    pub usage_error: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(
        opts: Opts,
        out: &'a mut dyn Write,
        err: &'a mut dyn Write,
        stdin: &'a mut dyn Read,
    ) -> Self {
        Ctx {
            opts,
            out,
            err,
            stdin,
            client: None,
            report: None,
            json: Vec::new(),
            json_object: None,
            concise_started: false,
            multiple: false,
            graph: None,
            mangling: Mangling::Auto,
            stored_names: Default::default(),
            usage_error: false,
        }
    }

    pub fn socket_path(&self) -> PathBuf {
        self.opts.socket.clone().unwrap_or_else(default_socket_path)
    }

    /// Print a line on stdout (a closed stdout is not our failure to report).
    pub fn print(&mut self, s: &str) {
        let _ = self.out.write_all(s.as_bytes());
    }

    pub fn println(&mut self, s: &str) {
        let _ = writeln!(self.out, "{s}");
    }

    /// Print a line on stderr.
    pub fn error(&mut self, s: &str) {
        let _ = writeln!(self.err, "{s}");
    }

    /// `Couldn't process command line.` and fail, without `Command failed.`.
    pub fn usage_fail<T>(&mut self) -> Result<T, Failed> {
        self.usage_error = true;
        self.fail("Couldn't process command line.")
    }

    /// Print `msg` on stderr and fail.
    pub fn fail<T>(&mut self, msg: &str) -> Result<T, Failed> {
        self.error(msg);
        Err(Failed)
    }

    fn client(&mut self) -> Result<&mut Client, Failed> {
        if self.client.is_none() {
            match Client::connect_to(self.opts.socket.as_deref()) {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    self.error(&e.to_string());
                    return self
                        .fail("Failure to communicate with the udm daemon (is udmd running?).");
                }
            }
        }
        self.client.as_mut().ok_or(Failed)
    }

    /// Run `task` and return the reply whatever its errno; only a failure
    /// to talk to the daemon is reported (and fails).
    pub fn run_raw(&mut self, task: &Task) -> Result<Reply, Failed> {
        let capacity = initial_capacity(task.cmd, task.payload.len());
        let client = self.client()?;
        match client.call(task.cmd, task.header.clone(), &task.payload, capacity) {
            Ok(mut r) => {
                if r.ok() {
                    let mode = self.mangling;
                    r.header.name = self.unmangle(&r.header.name, "name", mode)?;
                    r.header.uuid = self.unmangle(&r.header.uuid, "UUID", mode)?;
                }
                Ok(r)
            }
            Err(e @ (ClientError::BufferFull | ClientError::BufferMax { .. })) => {
                self.fail(&e.to_string())
            }
            Err(e) => {
                // The connection is of no further use.
                self.client = None;
                self.fail(&format!("udmsetup: {e}"))
            }
        }
    }

    /// A name or uuid the daemon returned, as shown (see [`mangle`]).
    pub fn unmangle(
        &mut self,
        s: &str,
        what: &'static str,
        mode: Mangling,
    ) -> Result<String, Failed> {
        match mangle::unmangle(s, what, mode) {
            Ok(v) => Ok(v),
            Err(e) => self.fail(&e.to_string()),
        }
    }

    /// A name or uuid from the command line, as sent (see [`mangle`]).
    pub fn mangle(&mut self, s: &str, what: &'static str) -> Result<String, Failed> {
        if what == "name" {
            if let Some(stored) = self.stored_names.get(s) {
                return Ok(stored.clone());
            }
        }
        let limit = if what == "UUID" {
            udm_ioctl::UUID_LEN
        } else {
            udm_ioctl::NAME_LEN
        };
        match mangle::mangle(s, what, self.mangling, limit) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.error(&e.to_string());
                if matches!(e, mangle::MangleError::Twice { .. }) {
                    // libdm refuses it before trying to mangle.
                    return Err(Failed);
                }
                let kind = if what == "UUID" { "uuid" } else { "name" };
                self.fail(&format!(
                    "Failed to mangle device {kind} \"{}\".",
                    mangle::escape_controls(s)
                ))
            }
        }
    }

    /// Print the ioctl failure of `task`, libdm's line then the daemon's
    /// detail (with TABLE_LOAD's spec index turned into a source line).
    pub fn report_ioctl_error(&mut self, task: &Task, reply: &Reply) {
        self.error(&ioctl_error(task.name, &task.label, reply.errno));
        if !reply.detail.is_empty() {
            let detail = rewrite_detail(&reply.detail, &task.lines, &task.notes);
            self.error(&format!("udm: {detail}"));
        }
    }

    /// Run `task`; a failing ioctl is printed and fails.
    pub fn run(&mut self, task: &Task) -> Result<Reply, Failed> {
        let reply = self.run_raw(task)?;
        if reply.ok() {
            Ok(reply)
        } else {
            self.report_ioctl_error(task, &reply);
            Err(Failed)
        }
    }

    /// The device a command works on: `arg`, else `-u`, else `-j/-m`.
    pub fn device(&mut self, arg: Option<&str>) -> Result<DevRef, Failed> {
        if let Some(name) = arg {
            let checked = self.check_name(name)?;
            if name.contains('/') {
                // A path names an existing node: libdm never mangles it.
                return Ok(DevRef::Name(checked));
            }
            return self.mangle(&checked, "name").map(DevRef::Name);
        }
        if let Some(u) = self.opts.uuid.clone() {
            return self.mangle(&u, "UUID").map(DevRef::Uuid);
        }
        if let (Some(ma), Some(mi)) = (self.opts.major, self.opts.minor) {
            return Ok(DevRef::DevNo(ma as u32, mi as u32));
        }
        self.fail("No device specified.")
    }

    /// libdm's name checks: at most 127 bytes; a path under /dev/mapper
    /// stands for its last component, any other `/` is invalid.
    pub fn check_name(&mut self, name: &str) -> Result<String, Failed> {
        if name.len() >= udm_ioctl::NAME_LEN {
            return self.fail(&format!("Name \"{name}\" too long."));
        }
        if name.contains('/') {
            if let Some(base) = name
                .strip_prefix("/dev/mapper/")
                .filter(|b| !b.contains('/'))
            {
                return Ok(base.to_string());
            }
            return self.fail(&format!("Name \"{name}\" invalid. It contains \"/\"."));
        }
        Ok(name.to_string())
    }

    /// Read-ahead of a device's live table. The table knows it (its targets'
    /// I/O hints); udmd answers the core message `@udm_io_hints`. The default
    /// when it cannot be asked.
    fn read_ahead(&mut self, info: &DeviceInfo) -> u32 {
        let task = Task::new(Command::TargetMsg, "message")
            .device(&DevRef::DevNo(info.major, info.minor))
            .payload(udm_ioctl::encode_target_msg(0, "@udm_io_hints"));
        let reply = match self.run_raw(&task) {
            Ok(r) if r.ok() => r,
            _ => return crate::format::READ_AHEAD,
        };
        udm_ioctl::decode_string(&reply.payload)
            .ok()
            .and_then(|s| crate::format::read_ahead_of_hints(&s))
            .unwrap_or(crate::format::READ_AHEAD)
    }

    /// Show a device the way `-v` and `info` do: the long form, a report
    /// row with `-c`, or a JSON object with `--json`.
    pub fn display_info(&mut self, reply: &Reply) -> CmdResult {
        let mut info = DeviceInfo::from_header(&reply.header);
        if info.live_table {
            info.read_ahead = Some(self.read_ahead(&info));
        }
        if self.opts.columns {
            return crate::commands::info::add_report_row(self, info);
        }
        if self.opts.json {
            self.json.push(info.to_json());
        } else {
            let s = info.long_form();
            self.print(&s);
        }
        Ok(())
    }
}

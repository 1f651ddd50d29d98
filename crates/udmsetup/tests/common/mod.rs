//! Test harness: a fake udmd on a Unix socket in a temporary directory.
//! `FakeKernel` answers like the kernel's dm-ioctl for a handful of
//! targets (kept small: enough to drive every udmsetup command); a custom
//! handler can answer with canned frames instead. Every request is kept
//! for the test to inspect.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use udm_ioctl::*;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub cmd: Command,
    pub header: DmIoctl,
    pub payload: Vec<u8>,
    /// `data_size`: the whole buffer the client offered.
    pub size: usize,
}

/// What the handler answers.
pub struct Answer {
    pub errno: i32,
    pub header: DmIoctl,
    pub payload: Vec<u8>,
    pub detail: String,
    /// Send these bytes as the reply buffer instead of header + payload.
    pub raw: Option<Vec<u8>>,
}

impl Answer {
    pub fn ok(header: DmIoctl, payload: Vec<u8>) -> Self {
        Answer {
            errno: 0,
            header,
            payload,
            detail: String::new(),
            raw: None,
        }
    }
    pub fn err(errno: i32, detail: &str) -> Self {
        Answer {
            errno,
            header: DmIoctl::new(),
            payload: Vec::new(),
            detail: detail.into(),
            raw: None,
        }
    }
}

pub type Handler = Box<dyn FnMut(&Seen) -> Answer + Send>;

pub struct FakeDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeDaemon {
    pub fn start(mut handler: Handler) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut inbox = Vec::new();
                let mut chunk = vec![0u8; 65536];
                loop {
                    match RequestFrame::decode(&inbox) {
                        Ok(Some((req, used))) => {
                            inbox.drain(..used);
                            let cmd = Command::from_ioctl_number(req.ioctl).unwrap();
                            let (header, payload) = split_buffer(&req.buffer).unwrap();
                            let s = Seen {
                                cmd,
                                header: header.clone(),
                                payload: payload.to_vec(),
                                size: header.data_size as usize,
                            };
                            log.lock().unwrap().push(s.clone());
                            let a = handler(&s);
                            let mut h = a.header;
                            h.version = VERSION;
                            let buffer = match a.raw {
                                Some(raw) => raw,
                                None => reply_buffer(&h, &a.payload).unwrap(),
                            };
                            let frame = ReplyFrame {
                                errno: a.errno,
                                buffer,
                                detail: a.detail,
                            };
                            if conn.write_all(&frame.encode()).is_err() {
                                break;
                            }
                        }
                        Ok(None) => match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => inbox.extend_from_slice(&chunk[..n]),
                        },
                        Err(e) => panic!("bad frame from client: {e}"),
                    }
                }
            }
        });
        FakeDaemon { dir, socket, seen }
    }

    /// A daemon backed by a fresh [`FakeKernel`].
    pub fn kernel() -> (Self, Arc<Mutex<FakeKernel>>) {
        let k = Arc::new(Mutex::new(FakeKernel::default()));
        let k2 = k.clone();
        let d = FakeDaemon::start(Box::new(move |s| k2.lock().unwrap().handle(s)));
        (d, k)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn commands(&self) -> Vec<Command> {
        self.seen().iter().map(|s| s.cmd).collect()
    }

    /// Run udmsetup in-process against this daemon.
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_stdin(args, "")
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Outcome {
        let mut argv: Vec<std::ffi::OsString> = vec![
            "udmsetup".into(),
            "--socket".into(),
            self.socket.clone().into(),
        ];
        argv.extend(args.iter().map(|a| a.into()));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input = stdin.as_bytes();
        let code = udmsetup::run(argv, &mut out, &mut err, &mut input);
        Outcome {
            code,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub out: String,
    pub err: String,
}

/// The command succeeded, printed exactly `out` and nothing on stderr.
#[track_caller]
pub fn ok(o: &Outcome, out: &str) {
    assert_eq!(
        (o.code, o.err.as_str(), o.out.as_str()),
        (0, "", out),
        "{o:?}"
    );
}

/// The command failed (exit 1), printed exactly `err` on stderr and nothing on stdout.
#[track_caller]
pub fn fails(o: &Outcome, err: &str) {
    assert_eq!(
        (o.code, o.err.as_str(), o.out.as_str()),
        (1, err, ""),
        "{o:?}"
    );
}

#[derive(Clone, Debug, Default)]
pub struct Dev {
    pub name: String,
    pub uuid: String,
    pub minor: u32,
    pub live: Option<Vec<TargetSpec>>,
    pub inactive: Option<Vec<TargetSpec>>,
    pub live_ro: bool,
    pub inactive_ro: bool,
    pub suspended: bool,
    pub event_nr: u32,
    pub open_count: i32,
    pub deferred: bool,
}

pub const MAJOR: u32 = 254;

/// A small in-memory device-mapper with the kernel's answers for the
/// linear, zero, error and crypt targets.
#[derive(Default)]
pub struct FakeKernel {
    pub devs: BTreeMap<String, Dev>,
    pub next_minor: u32,
    /// Extra registered target types (name, version), most recent first.
    pub extra_targets: Vec<TargetVersion>,
    /// Regular files tables may name by path, listed in deps as
    /// `0:<index + 1>` (udmd's FILE_MAJOR numbering).
    pub files: Vec<String>,
}

fn status_header(d: &Dev, query_inactive: bool, in_flags: u32) -> DmIoctl {
    let mut h = DmIoctl::new();
    h.name = d.name.clone();
    h.uuid = d.uuid.clone();
    h.dev = encode_dev(MAJOR, d.minor);
    h.open_count = d.open_count;
    h.event_nr = d.event_nr;
    let keep = in_flags
        & !(flags::SUSPEND
            | flags::READONLY
            | flags::ACTIVE_PRESENT
            | flags::INACTIVE_PRESENT
            | flags::INTERNAL_SUSPEND
            | flags::CLEARED_ON_ENTRY);
    h.flags = keep;
    if d.suspended {
        h.flags |= flags::SUSPEND;
    }
    if d.deferred {
        h.flags |= flags::DEFERRED_REMOVE;
    }
    if d.inactive.is_some() {
        h.flags |= flags::INACTIVE_PRESENT;
    }
    if d.live.is_some() {
        h.flags |= flags::ACTIVE_PRESENT;
    }
    let (table, ro) = if query_inactive {
        (d.inactive.as_ref(), d.inactive_ro)
    } else {
        (d.live.as_ref(), d.live_ro)
    };
    if let Some(t) = table {
        h.target_count = t.len() as u32;
        if ro {
            h.flags |= flags::READONLY;
        }
    }
    h
}

fn parse_devno(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl FakeKernel {
    pub fn add(&mut self, name: &str, uuid: &str, table: Option<Vec<TargetSpec>>) -> u32 {
        let minor = self.next_minor;
        self.next_minor += 1;
        self.devs.insert(
            name.into(),
            Dev {
                name: name.into(),
                uuid: uuid.into(),
                minor,
                live: table,
                ..Default::default()
            },
        );
        minor
    }

    fn find(&self, h: &DmIoctl) -> Option<String> {
        if !h.uuid.is_empty() {
            return self
                .devs
                .values()
                .find(|d| d.uuid == h.uuid)
                .map(|d| d.name.clone());
        }
        if !h.name.is_empty() {
            return self.devs.get(&h.name).map(|d| d.name.clone());
        }
        let (ma, mi) = decode_dev(h.dev);
        if h.dev != 0 && ma == MAJOR {
            return self
                .devs
                .values()
                .find(|d| d.minor == mi)
                .map(|d| d.name.clone());
        }
        None
    }

    fn versions(&self) -> Vec<TargetVersion> {
        let mut v = self.extra_targets.clone();
        for (n, ver) in [
            ("crypt", [1, 28, 0]),
            ("zero", [1, 2, 0]),
            ("striped", [1, 6, 0]),
            ("linear", [1, 4, 0]),
            ("error", [1, 7, 0]),
        ] {
            v.push(TargetVersion {
                name: n.into(),
                version: ver,
            });
        }
        v
    }

    fn validate(&self, specs: &[TargetSpec]) -> Result<(), String> {
        let known = self.versions();
        let mut next = 0u64;
        for (i, s) in specs.iter().enumerate() {
            let line = i + 1;
            if !known.iter().any(|k| k.name == s.target_type) {
                return Err(format!(
                    "line {line}: {}: unknown target type",
                    s.target_type
                ));
            }
            if s.length == 0 {
                return Err(format!(
                    "line {line}: {}: zero-length target",
                    s.target_type
                ));
            }
            // As udmd: the end must fit in the kernel's sector_t range.
            let Some(end) = s
                .sector_start
                .checked_add(s.length)
                .filter(|&e| e <= u64::MAX >> 9)
            else {
                return Err(format!("line {line}: {}: too large device", s.target_type));
            };
            if s.sector_start != next {
                return Err(format!("line {line}: {}: Gap in table", s.target_type));
            }
            next = end;
        }
        Ok(())
    }

    fn deps(specs: &[TargetSpec], files: &[String]) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for s in specs {
            for w in s.params.split_whitespace() {
                let file = files.iter().position(|f| f == w).map(|i| (0, i as u32 + 1));
                if let Some((a, b)) = parse_devno(w).or(file) {
                    let d = encode_dev(a, b);
                    if !out.contains(&d) {
                        // The kernel prepends each new device.
                        out.insert(0, d);
                    }
                }
            }
        }
        out
    }

    pub fn handle(&mut self, s: &Seen) -> Answer {
        let h = &s.header;
        let space = s.size.saturating_sub(HEADER_SIZE);
        let qi = h.flags & flags::QUERY_INACTIVE_TABLE != 0;
        match s.cmd {
            Command::Version => Answer::ok(DmIoctl::new(), vec![]),
            Command::ListDevices => {
                let entries: Vec<_> = self
                    .devs
                    .values()
                    .map(|d| NameListEntry {
                        dev: encode_dev(MAJOR, d.minor),
                        name: d.name.clone(),
                        event_nr: d.event_nr,
                        uuid: Some(d.uuid.clone()),
                    })
                    .collect();
                let mut out = DmIoctl::new();
                out.flags = h.flags;
                match encode_name_list(&entries, h.flags & flags::UUID != 0, space) {
                    Some(p) => Answer::ok(out, p),
                    None => {
                        out.flags |= flags::BUFFER_FULL;
                        Answer::ok(out, vec![])
                    }
                }
            }
            Command::ListVersions | Command::GetTargetVersion => {
                let mut v = self.versions();
                if s.cmd == Command::GetTargetVersion {
                    v.retain(|t| t.name == h.name);
                    if v.is_empty() {
                        return Answer::err(
                            libc::EINVAL,
                            &format!("unknown target type {}", h.name),
                        );
                    }
                }
                let mut out = DmIoctl::new();
                out.flags = h.flags;
                match encode_versions(&v, space) {
                    Some(p) => Answer::ok(out, p),
                    None => {
                        out.flags |= flags::BUFFER_FULL;
                        Answer::ok(out, vec![])
                    }
                }
            }
            Command::RemoveAll => {
                self.devs.retain(|_, d| d.open_count > 0);
                Answer::ok(DmIoctl::new(), vec![])
            }
            Command::DevCreate => {
                if h.name.is_empty() || h.name.contains('/') {
                    return Answer::err(libc::EINVAL, "invalid device name");
                }
                if self.devs.contains_key(&h.name)
                    || (!h.uuid.is_empty() && self.devs.values().any(|d| d.uuid == h.uuid))
                {
                    return Answer::err(libc::EBUSY, "name or uuid already in use");
                }
                self.add(&h.name, &h.uuid, None);
                let d = &self.devs[&h.name];
                Answer::ok(status_header(d, false, h.flags), vec![])
            }
            Command::DevArmPoll => Answer::ok(DmIoctl::new(), vec![]),
            _ => self.device_command(s, space, qi),
        }
    }

    fn device_command(&mut self, s: &Seen, space: usize, qi: bool) -> Answer {
        let h = &s.header;
        let Some(name) = self.find(h) else {
            return Answer::err(libc::ENXIO, "");
        };
        match s.cmd {
            Command::DevRemove => {
                let d = &self.devs[&name];
                if d.open_count > 0 {
                    if h.flags & flags::DEFERRED_REMOVE != 0 {
                        self.devs.get_mut(&name).unwrap().deferred = true;
                        return Answer::ok(DmIoctl::new(), vec![]);
                    }
                    return Answer::err(libc::EBUSY, &format!("{name} is open"));
                }
                self.devs.remove(&name);
                Answer::ok(DmIoctl::new(), vec![])
            }
            Command::DevRename => {
                let new = decode_string(&s.payload).unwrap();
                let mut d = self.devs.remove(&name).unwrap();
                if h.flags & flags::UUID != 0 {
                    if !d.uuid.is_empty() {
                        self.devs.insert(name, d);
                        return Answer::err(libc::EINVAL, "uuid already set");
                    }
                    d.uuid = new;
                } else {
                    d.name = new;
                }
                d.event_nr += 1;
                let out = status_header(&d, false, h.flags);
                self.devs.insert(d.name.clone(), d);
                Answer::ok(out, vec![])
            }
            Command::DevSuspend => {
                let d = self.devs.get_mut(&name).unwrap();
                if h.flags & flags::SUSPEND != 0 {
                    d.suspended = true;
                } else {
                    if let Some(t) = d.inactive.take() {
                        d.live = Some(t);
                        d.live_ro = d.inactive_ro;
                        d.event_nr += 1;
                    } else if d.suspended && d.live.is_none() {
                        return Answer::err(libc::EINVAL, "cannot resume a device without a table");
                    }
                    d.suspended = false;
                }
                let mut fl = h.flags;
                fl &= !flags::SUSPEND;
                Answer::ok(status_header(d, false, fl), vec![])
            }
            Command::DevStatus => Answer::ok(status_header(&self.devs[&name], qi, h.flags), vec![]),
            Command::DevWait => {
                let d = &self.devs[&name];
                let mut out = status_header(d, qi, h.flags);
                let specs = if qi {
                    d.inactive.clone()
                } else {
                    d.live.clone()
                };
                let (p, full) = encode_table_status(&specs.unwrap_or_default(), space);
                if full {
                    out.flags |= flags::BUFFER_FULL;
                }
                Answer::ok(out, p)
            }
            Command::TableLoad => {
                let specs = match decode_table_load(&s.payload, h.target_count) {
                    Ok(v) => v,
                    Err(e) => return Answer::err(e.errno(), &e.to_string()),
                };
                if let Err(detail) = self.validate(&specs) {
                    return Answer::err(libc::EINVAL, &detail);
                }
                let d = self.devs.get_mut(&name).unwrap();
                d.inactive = Some(specs);
                d.inactive_ro = h.flags & flags::READONLY != 0;
                Answer::ok(status_header(d, qi, h.flags), vec![])
            }
            Command::TableClear => {
                let d = self.devs.get_mut(&name).unwrap();
                d.inactive = None;
                Answer::ok(status_header(d, qi, h.flags), vec![])
            }
            Command::TableDeps => {
                let d = &self.devs[&name];
                let out = status_header(d, qi, h.flags);
                let table = if qi {
                    d.inactive.as_ref()
                } else {
                    d.live.as_ref()
                };
                let Some(t) = table else {
                    return Answer::ok(out, vec![]);
                };
                match encode_deps(&Self::deps(t, &self.files), space) {
                    Some(p) => Answer::ok(out, p),
                    None => {
                        let mut out = out;
                        out.flags |= flags::BUFFER_FULL;
                        Answer::ok(out, vec![])
                    }
                }
            }
            Command::TableStatus => {
                let d = &self.devs[&name];
                let mut out = status_header(d, qi, h.flags);
                let table = if qi {
                    d.inactive.clone()
                } else {
                    d.live.clone()
                };
                let Some(t) = table else {
                    return Answer::ok(out, vec![]);
                };
                let table_form = h.flags & flags::STATUS_TABLE != 0;
                let lines: Vec<TargetSpec> = t
                    .into_iter()
                    .map(|mut sp| {
                        // The kernel's splitter undoes libdm's backslash doubling.
                        sp.params = sp.params.replace("\\\\", "\\");
                        if !table_form {
                            sp.params = match sp.target_type.as_str() {
                                "linear" | "zero" | "error" => String::new(),
                                _ => "status".into(),
                            };
                        }
                        sp
                    })
                    .collect();
                let (p, full) = encode_table_status(&lines, space);
                if full {
                    out.flags |= flags::BUFFER_FULL;
                }
                Answer::ok(out, p)
            }
            Command::TargetMsg => {
                let (_, msg) = decode_target_msg(&s.payload).unwrap();
                let d = &self.devs[&name];
                let mut out = status_header(d, false, h.flags);
                if msg.is_empty() {
                    return Answer::err(libc::EINVAL, "empty message");
                }
                if let Some(echo) = msg.strip_prefix("echo ") {
                    let reply = echo.to_string();
                    if reply.len() + 1 >= space {
                        out.flags |= flags::BUFFER_FULL;
                        return Answer::ok(out, vec![]);
                    }
                    out.flags |= flags::DATA_OUT;
                    return Answer::ok(out, encode_string(&reply));
                }
                if msg == "@cancel_deferred_remove" {
                    return Answer::ok(out, vec![]);
                }
                Answer::err(libc::EINVAL, "Target type does not support messages")
            }
            Command::DevSetGeometry => {
                let g = decode_string(&s.payload).unwrap();
                let parts: Vec<u64> = g.split(' ').filter_map(|w| w.parse().ok()).collect();
                if parts.len() != 4 || parts[0] > 65535 || parts[1] > 255 || parts[2] > 255 {
                    return Answer::err(libc::EINVAL, "Geometry exceeds range limits.");
                }
                Answer::ok(DmIoctl::new(), vec![])
            }
            _ => Answer::err(libc::ENOTTY, "unexpected command"),
        }
    }
}

pub fn spec(start: u64, len: u64, ty: &str, params: &str) -> TargetSpec {
    TargetSpec {
        sector_start: start,
        length: len,
        status: 0,
        target_type: ty.into(),
        params: params.into(),
    }
}

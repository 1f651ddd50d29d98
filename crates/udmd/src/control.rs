//! The dm-ioctl dispatcher: one decoded request buffer in, one reply frame out,
//! with the kernel's validation order, flags, BUFFER_FULL behaviour and errno
//! values (see reference/kernel-dm-facts.md §1). No I/O here.

use std::os::fd::RawFd;
use std::time::Duration;

use udm_core::engine::StatusLine;
use udm_core::{DevNumber, DevRef, DeviceInfo, DmError, Engine, RenameTo, StatusType, TargetSpec};
use udm_ioctl::{
    encode_version, flags, Command, DmIoctl, ReplyFrame, HEADER_MIN, HEADER_SIZE, VERSION,
};

/// Per-connection state (what the kernel keeps per open control fd).
#[derive(Debug, Default)]
pub struct ConnState {
    /// Global event counter recorded by DEV_ARM_POLL.
    pub armed_event: Option<u64>,
    /// The client's socket, when there is one: a DEV_WAIT ends (EINTR, as a
    /// signal would end the kernel's) once the client has hung up, so an
    /// abandoned wait gives its thread back.
    pub peer: Option<RawFd>,
}

/// How often a DEV_WAIT looks whether its client is still there.
const PEER_CHECK: Duration = Duration::from_millis(500);

/// Whether the peer of a connected socket has closed it (POLLHUP/POLLERR;
/// a half-close for writing still waits for its reply).
fn peer_gone(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout; `fd` is owned by the caller's
    // stream for the whole call.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// DEV_WAIT: block until the device's event counter moves; with a peer,
/// in slices between which the peer is checked.
fn wait_event(
    engine: &Engine,
    r: &DevRef,
    event_nr: u32,
    peer: Option<RawFd>,
) -> Result<DeviceInfo, Failure> {
    let Some(fd) = peer else {
        return Ok(engine.wait(r, event_nr, None)?);
    };
    // Look the device up once (a rename between slices must not lose it).
    let by_number = DevRef::Number(engine.info(r, false)?.dev);
    loop {
        match engine.wait(&by_number, event_nr, Some(PEER_CHECK)) {
            Ok(info) => return Ok(info),
            Err(e) if e.errno().0 == libc::EINTR => {
                if peer_gone(fd) {
                    return Err(fail(libc::EINTR, "the waiting client hung up"));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

struct Failure {
    errno: i32,
    detail: String,
}

impl From<DmError> for Failure {
    fn from(e: DmError) -> Self {
        Failure {
            errno: e.errno().0,
            detail: e.to_string(),
        }
    }
}

impl From<udm_ioctl::DecodeError> for Failure {
    fn from(e: udm_ioctl::DecodeError) -> Self {
        Failure {
            errno: e.errno(),
            detail: e.to_string(),
        }
    }
}

fn fail(errno: i32, detail: impl Into<String>) -> Failure {
    Failure {
        errno,
        detail: detail.into(),
    }
}

/// What a successful handler copies back (the kernel's `data_size` after
/// the handler ran, then `copy_to_user(user, param, data_size)`).
enum Copy {
    /// The header only: `data_size` = 305, 305 bytes.
    Header,
    /// The header and a payload at 312: `data_size` = 312 + payload.
    Payload(Vec<u8>),
    /// Nothing past `version[3]` (REMOVE_ALL and SET_GEOMETRY set
    /// `data_size` to 0; `check_version` already wrote the version).
    VersionOnly,
}

/// What a handler produced: the header to send back and what to copy.
struct Out {
    header: DmIoctl,
    copy: Copy,
}

impl Out {
    fn header(header: DmIoctl) -> Out {
        Out {
            header,
            copy: Copy::Header,
        }
    }

    /// get_result_buffer ran (`data_start` = 312) but nothing was used:
    /// `data_size` stays 305 and only the header comes back.
    fn nothing_fit(mut header: DmIoctl) -> Out {
        header.data_start = HEADER_SIZE as u32;
        Out::header(header)
    }

    fn payload(header: DmIoctl, payload: Vec<u8>) -> Out {
        Out {
            header,
            copy: Copy::Payload(payload),
        }
    }
}

/// A reply that writes back only `version[3]`, as the kernel's ctl_ioctl
/// does on every failure after `check_version` (and for DM_VERSION).
fn version_only(errno: i32, detail: String) -> ReplyFrame {
    ReplyFrame {
        errno,
        buffer: encode_version(VERSION).to_vec(),
        detail,
    }
}

/// Handle one request. Never panics on any input.
///
/// The reply's buffer is exactly what the kernel would write to the
/// caller's buffer, from offset 0 (see the framing in `udm_ioctl::frame`):
/// nothing for an ioctl that is not a dm one; `version[3]` (12 bytes) for
/// DM_VERSION, for any failure once the version was read, and for
/// REMOVE_ALL and SET_GEOMETRY; otherwise the first `data_size` bytes as the
/// handler left it (305 for a header-only reply).
pub fn handle(engine: &Engine, ioctl: u32, buf: &[u8], conn: &mut ConnState) -> ReplyFrame {
    let cmd = Command::from_ioctl_number(ioctl);
    if let Err(e @ udm_ioctl::DecodeError::NotDmIoctl(_)) = cmd {
        // `_IOC_TYPE(command) != DM_IOCTL`: ENOTTY before the buffer is touched.
        return ReplyFrame {
            errno: e.errno(),
            buffer: Vec::new(),
            detail: e.to_string(),
        };
    }
    // check_version: read version[3], write ours back whatever the outcome.
    let Some(client_version) = udm_ioctl::decode_version(buf) else {
        return ReplyFrame {
            errno: libc::EINVAL,
            buffer: Vec::new(),
            detail: format!("a {}-byte buffer holds no version", buf.len()),
        };
    };
    if client_version[0] != VERSION[0] || client_version[1] > VERSION[1] {
        return version_only(
            libc::EINVAL,
            format!(
                "ioctl interface mismatch: client {}.{}.{}, udm {}.{}.{}",
                client_version[0],
                client_version[1],
                client_version[2],
                VERSION[0],
                VERSION[1],
                VERSION[2]
            ),
        );
    }
    let cmd = match cmd {
        Ok(Command::Version) => return version_only(0, String::new()),
        Ok(c) => c,
        Err(e) => return version_only(e.errno(), e.to_string()),
    };
    let mut header = match DmIoctl::decode(buf) {
        Ok(h) => h,
        Err(e) => return version_only(libc::EINVAL, e.to_string()),
    };
    header.version = VERSION;
    let size = header.data_size as usize;
    if size < HEADER_MIN || size > buf.len() || size > udm_ioctl::MAX_DATA_SIZE {
        return version_only(
            libc::EINVAL,
            format!(
                "invalid data_size {size} for a buffer of {} bytes",
                buf.len()
            ),
        );
    }
    let payload: &[u8] = if cmd.no_params() {
        &[]
    } else {
        let start = header.data_start as usize;
        if start < size {
            &buf[start..size]
        } else {
            &[]
        }
    };
    // copy_params: with SECURE_DATA the kernel zeroes the bytes it copied
    // in (the header alone for NO_PARAMS commands), version included.
    let wiped = (header.flags & flags::SECURE_DATA != 0).then(|| {
        if cmd.no_params() {
            HEADER_MIN
        } else {
            size
        }
    });
    let failed = |errno: i32, detail: String| match wiped {
        Some(n) => ReplyFrame {
            errno,
            buffer: vec![0; n],
            detail,
        },
        None => version_only(errno, detail),
    };
    header.flags &= !flags::CLEARED_ON_ENTRY;
    let global = matches!(
        cmd,
        Command::RemoveAll | Command::ListDevices | Command::ListVersions
    );
    if !global {
        if cmd == Command::DevCreate && header.name.is_empty() {
            return failed(libc::EINVAL, "device name is empty".into());
        }
        if cmd != Command::DevCreate && !header.name.is_empty() && !header.uuid.is_empty() {
            return failed(libc::EINVAL, "both a name and a uuid were given".into());
        }
    }
    let capacity = size.saturating_sub(HEADER_SIZE);
    let out = match dispatch(engine, cmd, header, payload, capacity, buf, conn) {
        Ok(out) => out,
        Err(f) => return failed(f.errno, f.detail),
    };
    let result = match copy_back(out, buf) {
        Ok(r) => r,
        Err(e) => return failed(e.errno(), e.to_string()),
    };
    let buffer = match wiped {
        // The result lands on the zeroed buffer.
        Some(n) => {
            let mut b = result;
            if b.len() < n {
                b.resize(n, 0);
            }
            b
        }
        // check_version already wrote the version; data_size 0 adds nothing.
        None if result.is_empty() => encode_version(VERSION).to_vec(),
        None => result,
    };
    ReplyFrame {
        errno: 0,
        buffer,
        detail: String::new(),
    }
}

/// The first `data_size` bytes of the kernel's copy of the request after a
/// successful handler: the header encoded over the request (what the kernel
/// leaves untouched comes back as sent), then any payload at 312. Empty
/// when `data_size` is 0.
fn copy_back(out: Out, request: &[u8]) -> Result<Vec<u8>, udm_ioctl::DecodeError> {
    let mut h = out.header;
    match out.copy {
        Copy::VersionOnly => Ok(Vec::new()),
        Copy::Header => {
            h.data_size = HEADER_MIN as u32;
            Ok(h.encode_over(request)?[..HEADER_MIN].to_vec())
        }
        Copy::Payload(p) => {
            let size = HEADER_SIZE + p.len();
            h.data_start = HEADER_SIZE as u32;
            h.data_size = u32::try_from(size).map_err(|_| udm_ioctl::DecodeError::TooLarge {
                what: "reply buffer",
                len: size,
                max: udm_ioctl::MAX_DATA_SIZE,
            })?;
            let mut b = Vec::with_capacity(size);
            b.extend_from_slice(&h.encode_over(request)?);
            b.extend_from_slice(&p);
            Ok(b)
        }
    }
}

/// The device a request names (uuid, else name, else dev), with the kernel's
/// ENXIO for conflicting identifiers.
fn dev_ref(h: &DmIoctl) -> Result<DevRef, Failure> {
    if !h.uuid.is_empty() {
        if !h.name.is_empty() || h.dev != 0 {
            return Err(fail(
                libc::ENXIO,
                "a uuid was given together with a name or device number",
            ));
        }
        return Ok(DevRef::Uuid(h.uuid.clone()));
    }
    if !h.name.is_empty() {
        if h.dev != 0 {
            return Err(fail(
                libc::ENXIO,
                "a name was given together with a device number",
            ));
        }
        return Ok(DevRef::Name(h.name.clone()));
    }
    if h.dev != 0 {
        return Ok(DevRef::Number(DevNumber::decode(h.dev)));
    }
    Err(fail(libc::ENXIO, "no device named"))
}

/// `__dev_status`: fill the header from a device's info.
fn dev_status(h: &mut DmIoctl, info: &DeviceInfo) {
    h.flags &= !(flags::SUSPEND
        | flags::READONLY
        | flags::ACTIVE_PRESENT
        | flags::INACTIVE_PRESENT
        | flags::INTERNAL_SUSPEND
        | flags::DEFERRED_REMOVE);
    if info.suspended {
        h.flags |= flags::SUSPEND;
    }
    if info.read_only {
        h.flags |= flags::READONLY;
    }
    if info.live_present {
        h.flags |= flags::ACTIVE_PRESENT;
    }
    if info.inactive_present {
        h.flags |= flags::INACTIVE_PRESENT;
    }
    if info.deferred_remove {
        h.flags |= flags::DEFERRED_REMOVE;
    }
    h.dev = info.dev.encode();
    h.open_count = info.open_count;
    h.event_nr = info.event_nr;
    h.target_count = info.target_count;
    h.name = info.name.clone();
    h.uuid = info.uuid.clone();
}

fn status_payload(lines: &[StatusLine], capacity: usize, h: &mut DmIoctl) -> Vec<u8> {
    let specs: Vec<udm_ioctl::TargetSpec> = lines
        .iter()
        .map(|l| udm_ioctl::TargetSpec {
            sector_start: l.start,
            length: l.len,
            status: 0,
            target_type: l.target_type.clone(),
            params: l.text.clone(),
        })
        .collect();
    let (payload, full) = udm_ioctl::encode_table_status(&specs, capacity);
    if full {
        h.flags |= flags::BUFFER_FULL;
    }
    h.target_count = lines.len() as u32;
    payload
}

fn dispatch(
    engine: &Engine,
    cmd: Command,
    mut h: DmIoctl,
    payload: &[u8],
    capacity: usize,
    whole: &[u8],
    conn: &mut ConnState,
) -> Result<Out, Failure> {
    let query_inactive = h.flags & flags::QUERY_INACTIVE_TABLE != 0;
    let noflush = h.flags & flags::NOFLUSH != 0;
    match cmd {
        Command::Version => Ok(Out::header(h)),
        Command::RemoveAll => {
            engine.remove_all(h.flags & flags::DEFERRED_REMOVE != 0);
            Ok(Out {
                header: h,
                copy: Copy::VersionOnly,
            })
        }
        Command::ListDevices => {
            let with_uuid = h.flags & flags::UUID != 0;
            let entries: Vec<udm_ioctl::NameListEntry> = engine
                .list()
                .iter()
                .map(|d| udm_ioctl::NameListEntry {
                    dev: d.dev_number().encode(),
                    name: d.name(),
                    event_nr: d.event_nr(),
                    uuid: Some(d.uuid()).filter(|u| with_uuid && !u.is_empty()),
                })
                .collect();
            Ok(fitted(
                h,
                udm_ioctl::encode_name_list(&entries, with_uuid, capacity),
            ))
        }
        Command::DevCreate => {
            let minor = if h.flags & flags::PERSISTENT_DEV != 0 {
                Some(DevNumber::decode(h.dev).minor)
            } else {
                None
            };
            let uuid = Some(h.uuid.as_str()).filter(|u| !u.is_empty());
            let info = engine.create(&h.name, uuid, minor)?;
            dev_status(&mut h, &info);
            Ok(Out::header(h))
        }
        Command::DevRemove => {
            let r = dev_ref(&h)?;
            match engine.remove(&r, h.flags & flags::DEFERRED_REMOVE != 0)? {
                Some(info) => dev_status(&mut h, &info),
                // The kernel sets UEVENT_GENERATED here because it sent a
                // REMOVE uevent; udm sends none, so it never claims one
                // (libdm would wait on its udev cookie forever).
                None => h.flags &= !flags::DEFERRED_REMOVE,
            }
            Ok(Out::header(h))
        }
        Command::DevRename => {
            if h.name.is_empty() {
                return Err(fail(libc::EINVAL, "rename needs the old device's name"));
            }
            if (h.data_start as usize) < HEADER_MIN {
                return Err(fail(libc::EINVAL, "invalid data_start for rename"));
            }
            let new = udm_ioctl::decode_string(payload)
                .map_err(|e| fail(libc::EINVAL, format!("invalid new name: {e}")))?;
            if new.is_empty() {
                return Err(fail(libc::EINVAL, "new name is empty"));
            }
            let to = if h.flags & flags::UUID != 0 {
                RenameTo::Uuid(new)
            } else {
                RenameTo::Name(new)
            };
            let info = engine.rename(&h.name, &to)?;
            // No CHANGE uevent is sent, so UEVENT_GENERATED stays clear.
            dev_status(&mut h, &info);
            Ok(Out::header(h))
        }
        Command::DevSuspend => {
            let r = dev_ref(&h)?;
            let info = if h.flags & flags::SUSPEND != 0 {
                engine.suspend(&r, noflush)?
            } else {
                // No CHANGE uevent is sent, so UEVENT_GENERATED stays clear.
                engine.resume(&r, noflush)?
            };
            dev_status(&mut h, &info);
            Ok(Out::header(h))
        }
        Command::DevStatus => {
            let info = engine.info(&dev_ref(&h)?, query_inactive)?;
            dev_status(&mut h, &info);
            Ok(Out::header(h))
        }
        Command::DevWait => {
            let r = dev_ref(&h)?;
            let info = wait_event(engine, &r, h.event_nr, conn.peer)?;
            // The event may have been a rename: report on the same device, by number.
            table_status(
                engine,
                &DevRef::Number(info.dev),
                h,
                capacity,
                query_inactive,
            )
        }
        Command::TableLoad => {
            let r = dev_ref(&h)?;
            let (_, specs) = udm_ioctl::decode_table_load_request(whole)?;
            let specs: Vec<TargetSpec> = specs
                .into_iter()
                .enumerate()
                .map(|(i, s)| TargetSpec {
                    start: s.sector_start,
                    len: s.length,
                    target_type: s.target_type,
                    params: s.params,
                    line: u32::try_from(i + 1).unwrap_or(u32::MAX),
                })
                .collect();
            let info = engine.load(&r, &specs, h.flags & flags::READONLY != 0)?;
            dev_status(&mut h, &info);
            Ok(Out::header(h))
        }
        Command::TableClear => {
            let info = engine.clear(&dev_ref(&h)?)?;
            dev_status(&mut h, &info);
            Ok(Out::header(h))
        }
        Command::TableDeps => {
            let (info, devs) = engine.deps(&dev_ref(&h)?, query_inactive)?;
            dev_status(&mut h, &info);
            let enc: Vec<u64> = devs.iter().map(|d| d.encode()).collect();
            Ok(fitted(h, udm_ioctl::encode_deps(&enc, capacity)))
        }
        Command::TableStatus => {
            let r = dev_ref(&h)?;
            table_status(engine, &r, h, capacity, query_inactive)
        }
        Command::ListVersions => {
            let v: Vec<udm_ioctl::TargetVersion> = engine
                .target_versions()
                .into_iter()
                .map(|(name, version)| udm_ioctl::TargetVersion { name, version })
                .collect();
            versions_out(h, &v, capacity)
        }
        Command::GetTargetVersion => {
            let version = engine.target_version(&h.name)?;
            let v = [udm_ioctl::TargetVersion {
                name: h.name.clone(),
                version,
            }];
            versions_out(h, &v, capacity)
        }
        Command::TargetMsg => {
            let r = dev_ref(&h)?;
            if (h.data_start as usize) < HEADER_MIN {
                return Err(fail(libc::EINVAL, "invalid data_start for a message"));
            }
            let (sector, msg) = udm_ioctl::decode_target_msg(payload)?;
            let reply = engine.message(&r, sector, &msg)?;
            dev_status(&mut h, &reply.info);
            match reply.reply {
                Some(text) => {
                    let p = udm_ioctl::encode_string(&text);
                    // DATA_OUT is set whether or not the reply fit.
                    h.flags |= flags::DATA_OUT;
                    if p.len() >= capacity {
                        h.flags |= flags::BUFFER_FULL;
                        Ok(Out::nothing_fit(h))
                    } else {
                        Ok(Out::payload(h, p))
                    }
                }
                None => Ok(Out::header(h)),
            }
        }
        Command::DevSetGeometry => {
            let r = dev_ref(&h)?;
            let text = udm_ioctl::decode_string(payload)
                .map_err(|e| fail(libc::EINVAL, format!("invalid geometry string: {e}")))?;
            engine.set_geometry(&r, &text)?;
            Ok(Out {
                header: h,
                copy: Copy::VersionOnly,
            })
        }
        Command::DevArmPoll => {
            conn.armed_event = Some(engine.global_event_nr());
            Ok(Out::header(h))
        }
    }
}

fn table_status(
    engine: &Engine,
    r: &DevRef,
    mut h: DmIoctl,
    capacity: usize,
    inactive: bool,
) -> Result<Out, Failure> {
    // retrieve_status: STATUS_TABLE wins over IMA_MEASUREMENT.
    let kind = if h.flags & flags::STATUS_TABLE != 0 {
        StatusType::Table
    } else if h.flags & flags::IMA_MEASUREMENT != 0 {
        StatusType::Ima
    } else {
        StatusType::Info
    };
    let (info, lines) = engine.status(r, inactive, kind)?;
    dev_status(&mut h, &info);
    if lines.is_empty() {
        // No (such) table: retrieve_status never runs, data_size stays 305.
        return Ok(Out::header(h));
    }
    let p = status_payload(&lines, capacity, &mut h);
    if p.is_empty() {
        // BUFFER_FULL before the first target: nothing used.
        return Ok(Out::nothing_fit(h));
    }
    Ok(Out::payload(h, p))
}

fn versions_out(
    h: DmIoctl,
    v: &[udm_ioctl::TargetVersion],
    capacity: usize,
) -> Result<Out, Failure> {
    Ok(fitted(h, udm_ioctl::encode_versions(v, capacity)))
}

/// A payload that fit, or (as the kernel does for lists) none at all with
/// BUFFER_FULL set so that the caller retries with a larger buffer.
fn fitted(mut h: DmIoctl, payload: Option<Vec<u8>>) -> Out {
    match payload {
        Some(p) => Out::payload(h, p),
        None => {
            h.flags |= flags::BUFFER_FULL;
            Out::nothing_fit(h)
        }
    }
}

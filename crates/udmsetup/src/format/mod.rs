//! Pure formatters: every byte dmsetup prints, computed from decoded
//! replies. Nothing here does I/O, so each format is unit-tested against
//! the exact text dmsetup produces.

pub mod report;
pub mod tree;

use serde_json::{json, Value};
use udm_ioctl::{decode_dev, flags, DmIoctl, TargetSpec};

/// glibc's `strerror` text for `errno` (as Rust's io::Error gets it).
pub fn strerror(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// How a failing command names its device, as libdm does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevLabel {
    pub name: String,
    pub uuid: String,
    /// Set when the device was addressed by number (`-j/-m`, or the load
    /// that follows a create).
    pub devno: Option<(u32, u32)>,
}

/// `device-mapper: <task> ioctl on <name> <uuid>[(<maj>:<min>)] failed: <strerror>`.
pub fn ioctl_error(task: &str, label: &DevLabel, errno: i32) -> String {
    let devno = label
        .devno
        .map(|(ma, mi)| format!("({ma}:{mi})"))
        .unwrap_or_default();
    format!(
        "device-mapper: {task} ioctl on {} {}{devno} failed: {}",
        label.name,
        label.uuid,
        strerror(errno)
    )
}

/// The daemon says which target of a TABLE_LOAD failed as `line K: ...`,
/// K counting the specs from 1; rewrite K to the source line the spec
/// came from; when udmsetup has a note for that spec (a value dmsetup
/// accepts but wraps), the note replaces the daemon's reason. Other details
/// pass unchanged.
pub fn rewrite_detail(detail: &str, lines: &[usize], notes: &[Option<String>]) -> String {
    let Some(rest) = detail.strip_prefix("line ") else {
        return detail.to_string();
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Some(tail) = rest[digits..].strip_prefix(':') else {
        return detail.to_string();
    };
    match rest[..digits].parse::<usize>() {
        Ok(k) if k >= 1 && k <= lines.len() => match notes.get(k - 1) {
            Some(Some(note)) => format!("line {}: {note}", lines[k - 1]),
            _ => format!("line {}:{tail}", lines[k - 1]),
        },
        _ => detail.to_string(),
    }
}

/// What `dm_task_get_info` reports, taken from a reply header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: String,
    pub uuid: String,
    pub major: u32,
    pub minor: u32,
    pub open_count: i32,
    pub event_nr: u32,
    pub target_count: u32,
    pub suspended: bool,
    pub read_only: bool,
    pub live_table: bool,
    pub inactive_table: bool,
    pub deferred_remove: bool,
    pub internal_suspend: bool,
    /// Read-ahead in sectors; `None` when the device has no table (the kernel has
    /// registered no disk yet, and dmsetup prints no Read Ahead line).
    pub read_ahead: Option<u32>,
}

/// Read ahead in sectors: udm has no block-device queue to ask, so this is
/// the kernel's default for a dm device (128 KiB).
pub const READ_AHEAD: u32 = 256;

/// The read-ahead in udmd's answer to `@udm_io_hints`
/// (`read_ahead <sectors> io_min <bytes> io_opt <bytes>`).
pub fn read_ahead_of_hints(reply: &str) -> Option<u32> {
    let mut w = reply.split_whitespace();
    while let Some(k) = w.next() {
        let v = w.next()?;
        if k == "read_ahead" {
            return v.parse().ok();
        }
    }
    None
}

impl DeviceInfo {
    pub fn from_header(h: &DmIoctl) -> Self {
        let (major, minor) = decode_dev(h.dev);
        let f = |bit| h.flags & bit != 0;
        DeviceInfo {
            name: h.name.clone(),
            uuid: h.uuid.clone(),
            major,
            minor,
            open_count: h.open_count,
            event_nr: h.event_nr,
            target_count: h.target_count,
            suspended: f(flags::SUSPEND),
            read_only: f(flags::READONLY),
            live_table: f(flags::ACTIVE_PRESENT),
            inactive_table: f(flags::INACTIVE_PRESENT),
            deferred_remove: f(flags::DEFERRED_REMOVE),
            internal_suspend: f(flags::INTERNAL_SUSPEND),
            read_ahead: (f(flags::ACTIVE_PRESENT) || f(flags::INACTIVE_PRESENT))
                .then_some(READ_AHEAD),
        }
    }

    /// `L`/`-` live, `I`/`-` inactive, `s`/`-` suspended, `r`/`w`.
    pub fn attr(&self) -> String {
        [
            if self.live_table { 'L' } else { '-' },
            if self.inactive_table { 'I' } else { '-' },
            if self.suspended { 's' } else { '-' },
            if self.read_only { 'r' } else { 'w' },
        ]
        .iter()
        .collect()
    }

    pub fn tables_loaded(&self) -> &'static str {
        match (self.live_table, self.inactive_table) {
            (true, true) => "Both",
            (true, false) => "Live",
            (false, true) => "Inactive",
            (false, false) => "None",
        }
    }

    /// The `dmsetup info` block, with its trailing empty line.
    pub fn long_form(&self) -> String {
        let mut s = format!("Name:              {}\n", self.name);
        s += &format!(
            "State:             {}{}{}\n",
            if self.suspended {
                "SUSPENDED"
            } else {
                "ACTIVE"
            },
            if self.read_only { " (READ-ONLY)" } else { "" },
            if self.deferred_remove {
                " (DEFERRED REMOVE)"
            } else {
                ""
            }
        );
        if let Some(ra) = self.read_ahead {
            s += &format!("Read Ahead:        {ra}\n");
        }
        let tables = match (self.live_table, self.inactive_table) {
            (false, false) => "None",
            (true, false) => "LIVE",
            (false, true) => "INACTIVE",
            (true, true) => "LIVE & INACTIVE",
        };
        s += &format!("Tables present:    {tables}\n");
        if self.open_count != -1 {
            s += &format!("Open count:        {}\n", self.open_count);
        }
        s += &format!("Event number:      {}\n", self.event_nr);
        s += &format!("Major, minor:      {}, {}\n", self.major, self.minor);
        if self.target_count as i32 != -1 {
            s += &format!("Number of targets: {}\n", self.target_count);
        }
        if !self.uuid.is_empty() {
            s += &format!("UUID: {}\n", self.uuid);
        }
        s.push('\n');
        s
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "uuid": self.uuid,
            "state": if self.suspended { "SUSPENDED" } else { "ACTIVE" },
            "suspended": self.suspended,
            "read_only": self.read_only,
            "deferred_remove": self.deferred_remove,
            "internal_suspend": self.internal_suspend,
            "read_ahead": self.read_ahead,
            "live_table": self.live_table,
            "inactive_table": self.inactive_table,
            "open_count": self.open_count,
            "event_nr": self.event_nr,
            "major": self.major,
            "minor": self.minor,
            "target_count": self.target_count,
        })
    }
}

/// `<start> <length> <type> <params>`; the space after the type is always
/// there, even with empty params.
pub fn target_line(spec: &TargetSpec) -> String {
    format!(
        "{} {} {} {}",
        spec.sector_start, spec.length, spec.target_type, spec.params
    )
}

fn zero_word_after(params: &str, at: usize) -> String {
    let mut b = params.as_bytes().to_vec();
    let mut i = at;
    while i < b.len() && b[i] != b' ' {
        b[i] = b'0';
        i += 1;
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Hide keys in a `table` line as dmsetup does without `--showkeys`:
/// crypt's second word becomes zeros unless it is a keyring reference
/// (`:...`); integrity's `internal_hash:`, `journal_crypt:` and
/// `journal_mac:` keys (after `<alg>:`) become zeros.
pub fn mask_keys(target_type: &str, params: &str) -> String {
    match target_type {
        "crypt" => {
            let b = params.as_bytes();
            let mut i = b.iter().position(|&c| c == b' ').unwrap_or(b.len());
            if i < b.len() {
                i += 1;
            }
            if b.get(i) == Some(&b':') {
                params.to_string()
            } else {
                zero_word_after(params, i)
            }
        }
        "integrity" => {
            let mut p = params.to_string();
            for name in ["internal_hash:", "journal_crypt:", "journal_mac:"] {
                let Some(pos) = p.find(name) else { continue };
                let after = pos + name.len();
                // The key is optional: it follows the algorithm's ':'.
                let Some(off) = p[after..].find([' ', ':']) else {
                    continue;
                };
                if p.as_bytes()[after + off] != b':' {
                    continue;
                }
                p = zero_word_after(&p, after + off + 1);
            }
            p
        }
        _ => params.to_string(),
    }
}

/// `ls`: `<name>\t(<maj>:<min>)`, or `<name>\t(<dev name>)` with `-o
/// blkdevname|devname` when the name is known.
pub fn ls_line(name: &str, major: u32, minor: u32, dev_name: Option<&str>) -> String {
    match dev_name {
        Some(d) => format!("{name}\t({d})"),
        None => format!("{name}\t({major}:{minor})"),
    }
}

/// `ls --target`: `<name>\t(<maj>, <min>)` (a different code path in
/// dmsetup, hence the different format).
pub fn ls_target_line(name: &str, major: u32, minor: u32) -> String {
    format!("{name}\t({major}, {minor})")
}

/// One `deps` entry: ` (<maj>, <min>)`, or ` (<name>)` when resolved.
pub fn deps_entry(major: u32, minor: u32, dev_name: Option<&str>) -> String {
    match dev_name {
        Some(d) => format!(" ({d})"),
        None => format!(" ({major}, {minor})"),
    }
}

/// `<count> dependencies\t:<entries>`.
pub fn deps_line(entries: &[String]) -> String {
    format!("{} dependencies\t:{}", entries.len(), entries.concat())
}

/// `targets` / `target-version`: `%-16s v%d.%d.%d`.
pub fn target_version_line(name: &str, v: [u32; 3]) -> String {
    format!("{name:<16} v{}.{}.{}", v[0], v[1], v[2])
}

/// The two lines of `version`.
pub fn version_lines(driver: [u32; 3]) -> String {
    format!(
        "Library version:   udmsetup {}\nDriver version:    {}.{}.{}\n",
        env!("CARGO_PKG_VERSION"),
        driver[0],
        driver[1],
        driver[2]
    )
}

/// dmsetup's `--concise` escaping of `,`, `;` and `\`.
pub fn concise_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ',' | ';' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;

//! What a benchmark ran on, printed before its figures: cores, CPU, load average,
//! kernel and the filesystem under its files. The same line as bench/machine-info.sh
//! prints, so figures from the in-process benches and the NBD scripts sit together.

// Each bench binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::Path;

/// The one-line description of the machine, e.g.
/// `# machine: 2 cores (AMD EPYC), load 0.12 0.30 0.41, kernel 6.12.0, fs tmpfs (/dev/shm)`.
/// `files` is where the benchmark keeps its backing files, if any.
pub fn machine_line(files: Option<&Path>) -> String {
    let fs = match files {
        Some(p) => format!("fs {} ({})", fs_type(p), p.display()),
        None => "fs none (in memory)".to_string(),
    };
    format!(
        "# machine: {} cores ({}), load {}, kernel {}, {fs}",
        cores(),
        cpu_model(),
        load_average(),
        first_line("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into()),
    )
}

/// The three load averages of /proc/loadavg, e.g. `0.12 0.30 0.41`.
pub fn load_average() -> String {
    first_line("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// The 1-minute load average, to warn when the machine is busy.
pub fn load_1min() -> Option<f64> {
    first_line("/proc/loadavg")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPUs this process may run on (its affinity mask, as `nproc` counts).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn first_line(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    Some(s.lines().next()?.trim().to_string())
}

/// The type of the filesystem holding `path`: the mount in /proc/self/mountinfo with
/// the longest mount point that is a prefix of the canonical path.
fn fs_type(path: &Path) -> String {
    let Ok(path) = path.canonicalize() else {
        return "?".into();
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return "?".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        // id parent major:minor root mount-point options [optional...] - type source ...
        let mut fields = line.split(' ');
        let Some(mount_point) = fields.nth(4) else {
            continue;
        };
        let Some(fstype) = fields.skip_while(|f| *f != "-").nth(1) else {
            continue;
        };
        let mount_point = unescape(mount_point);
        let len = mount_point.len();
        if path.starts_with(&mount_point) && best.as_ref().is_none_or(|(l, _)| len >= *l) {
            best = Some((len, fstype.to_string()));
        }
    }
    best.map_or_else(|| "?".into(), |(_, t)| t)
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let octal = b
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok());
            if let Some(v) = octal {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

//! Tables: the kernel's text format (`<start> <length> <type> <args...>` per line),
//! validated whole before anything is bound, and the bound form that serves I/O.

use std::sync::Arc;

use crate::args::{parse_u64, split_args};
use crate::blockdev::BlockDev;
use crate::error::{Errno, TableError};
use crate::index::Index;
use crate::registry::Registry;
use crate::sector::{Sector, SECTOR_SHIFT};
use crate::services::Services;
use crate::target::{DevResolver, ExtentKind, IoHints, StatusType, Target, TargetCtx};

/// Most targets a table may have (the kernel's DM_MAX_TARGETS).
pub const MAX_TARGETS: usize = 1 << 20;
/// Largest device end in sectors (the kernel's `LLONG_MAX >> 9`).
pub const MAX_SECTORS: u64 = (i64::MAX as u64) >> SECTOR_SHIFT;

/// The kernel's default read-ahead of a dm device, in sectors (128 KiB).
pub const DEFAULT_READ_AHEAD: u32 = 256;

/// One unbound table line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub start: u64,
    pub len: u64,
    pub target_type: String,
    pub params: String,
    /// Where it came from: the text line, or the 1-based index in a TABLE_LOAD.
    pub line: u32,
}

impl TargetSpec {
    /// Parse table text as dmsetup does: blank lines and `#` comments are skipped,
    /// and parameters end at the first `#`.
    pub fn parse_text(text: &str) -> Result<Vec<TargetSpec>, TableError> {
        let mut out = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let l = l.split('#').next().unwrap_or("");
            let mut rest = l;
            let mut word = |name: &str| -> Result<&str, TableError> {
                let t = rest.trim_start();
                let end = t.find(|c: char| c.is_ascii_whitespace()).unwrap_or(t.len());
                let (w, r) = t.split_at(end);
                rest = r;
                if w.is_empty() {
                    Err(TableError::new(line, "table", format!("missing {name}")))
                } else {
                    Ok(w)
                }
            };
            let s = word("start sector")?;
            let start = parse_u64(s).ok_or_else(|| {
                TableError::new(line, "table", format!("start sector '{s}' is not a number"))
            })?;
            let s = word("length")?;
            let len = parse_u64(s).ok_or_else(|| {
                TableError::new(line, "table", format!("length '{s}' is not a number"))
            })?;
            let ty = word("target type")?.to_string();
            let params = rest.trim().to_string();
            out.push(TargetSpec {
                start,
                len,
                target_type: ty,
                params,
                line,
            });
        }
        Ok(out)
    }
}

/// A bound target inside a table.
pub struct TableTarget {
    pub start: Sector,
    pub len: Sector,
    pub type_name: &'static str,
    pub target: Box<dyn Target>,
}

/// A validated, bound table: immutable once built.
pub struct Table {
    targets: Vec<TableTarget>,
    index: Index,
    size: Sector,
    read_only: bool,
    /// Distinct underlying devices, most recently first-referenced first (kernel deps order).
    devices: Vec<Arc<dyn BlockDev>>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("targets", &self.targets.len())
            .field("size", &self.size)
            .finish()
    }
}

impl Table {
    /// Validate and bind `specs`. Nothing is kept if any line fails.
    pub fn build(
        specs: &[TargetSpec],
        registry: &Registry,
        resolver: &dyn DevResolver,
        services: &Services,
        read_only: bool,
    ) -> Result<Table, TableError> {
        if specs.is_empty() {
            return Err(TableError::new(0, "table", "no targets specified"));
        }
        if specs.len() > MAX_TARGETS {
            return Err(
                TableError::new(0, "table", format!("more than {MAX_TARGETS} targets"))
                    .errno(Errno(libc::EOVERFLOW)),
            );
        }
        let mut targets = Vec::with_capacity(specs.len());
        let mut ends = Vec::with_capacity(specs.len());
        let mut next = 0u64;
        for spec in specs {
            let ty = spec.target_type.as_str();
            if spec.len == 0 {
                return Err(TableError::new(spec.line, ty, "zero-length target"));
            }
            let end = spec
                .start
                .checked_add(spec.len)
                .filter(|&e| e <= MAX_SECTORS);
            let Some(end) = end else {
                return Err(TableError::new(spec.line, ty, "too large device"));
            };
            if spec.start != next {
                return Err(TableError::new(
                    spec.line,
                    ty,
                    format!("gap in table: target starts at sector {} but the previous one ends at {next}", spec.start),
                ));
            }
            let Some(tt) = registry.get(ty) else {
                return Err(TableError::new(spec.line, ty, "unknown target type"));
            };
            let ctx = TargetCtx {
                line: spec.line,
                type_name: tt.name,
                start: Sector(spec.start),
                len: Sector(spec.len),
                read_only,
                resolver,
                services,
            };
            let args = split_args(&spec.params);
            let target = (tt.ctr)(&ctx, &args)?;
            targets.push(TableTarget {
                start: Sector(spec.start),
                len: Sector(spec.len),
                type_name: tt.name,
                target,
            });
            ends.push(end);
            next = end;
        }
        let mut devices: Vec<Arc<dyn BlockDev>> = Vec::new();
        for t in &targets {
            for d in t.target.devices() {
                if !devices.iter().any(|x| Arc::ptr_eq(x, &d)) {
                    devices.insert(0, d);
                }
            }
        }
        Ok(Table {
            index: Index::new(&ends),
            targets,
            size: Sector(next),
            read_only,
            devices,
        })
    }

    /// Device size.
    pub fn size(&self) -> Sector {
        self.size
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn targets(&self) -> &[TableTarget] {
        &self.targets
    }

    pub fn devices(&self) -> &[Arc<dyn BlockDev>] {
        &self.devices
    }

    /// Index of the target holding `sector`.
    #[inline]
    pub fn lookup(&self, sector: Sector) -> Option<usize> {
        self.index.lookup(sector.0)
    }

    /// `<start> <len> <type> <text>` pieces for every target.
    pub fn status_lines(&self, kind: StatusType) -> Vec<(Sector, Sector, &'static str, String)> {
        self.targets
            .iter()
            .map(|t| {
                let mut s = String::new();
                t.target.status(kind, &mut s);
                (t.start, t.len, t.type_name, s)
            })
            .collect()
    }

    /// The hints of every target combined as the kernel stacks queue limits:
    /// the largest `io_min`, and the least common multiple of the `io_opt`s.
    pub fn io_hints(&self) -> IoHints {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        let mut all = IoHints::default();
        let mut opt: u64 = 0;
        for t in &self.targets {
            let mut h = IoHints::default();
            t.target.io_hints(&mut h);
            all.io_min = all.io_min.max(h.io_min);
            let o = u64::from(h.io_opt);
            if o > 0 {
                opt = if opt == 0 { o } else { opt / gcd(opt, o) * o };
            }
        }
        all.io_opt = u32::try_from(opt).unwrap_or(u32::MAX);
        all
    }

    /// Read-ahead in sectors, as the kernel sets a dm device's: twice the
    /// optimal I/O size in whole pages, never below the 128 KiB default.
    pub fn read_ahead_sectors(&self) -> u32 {
        let pages = u64::from(self.io_hints().io_opt) * 2 / 4096;
        u32::try_from(pages * 8)
            .unwrap_or(u32::MAX)
            .max(DEFAULT_READ_AHEAD)
    }

    /// Extents of `[sector, sector+len)`: (kind, sectors) runs, merged.
    pub fn extents(&self, mut sector: Sector, len: Sector, out: &mut Vec<(ExtentKind, Sector)>) {
        let end = sector.saturating_add(len).min(self.size);
        while sector < end {
            let Some(i) = self.lookup(sector) else { break };
            let t = &self.targets[i];
            let n = (end - sector).min(t.start + t.len - sector);
            let (kind, got) = t.target.extent(sector - t.start, n);
            let got = got.clamp(Sector(1), n);
            match out.last_mut() {
                Some((k, l)) if *k == kind => *l += got,
                _ => out.push((kind, got)),
            }
            sector += got;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_with_comments() {
        let t = "# header\n\n0 100 linear /dev/x 0 # trailing\n  100 50 zero  \n";
        let s = TargetSpec::parse_text(t).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            TargetSpec {
                start: 0,
                len: 100,
                target_type: "linear".into(),
                params: "/dev/x 0".into(),
                line: 3
            }
        );
        assert_eq!(s[1].line, 4);
        assert_eq!(s[1].params, "");
    }

    #[test]
    fn bad_text_names_the_line() {
        let e = TargetSpec::parse_text("0 10 zero\n\nx 10 zero").unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(
            e.to_string(),
            "line 3: table: start sector 'x' is not a number"
        );
        let e = TargetSpec::parse_text("0 10").unwrap_err();
        assert_eq!(e.to_string(), "line 1: table: missing target type");
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use crate::error::DmError;
    use crate::registry::TargetType;
    use proptest::prelude::*;

    struct NoDevices;
    impl DevResolver for NoDevices {
        fn open(&self, spec: &str, _ro: bool) -> Result<Arc<dyn BlockDev>, DmError> {
            Err(DmError::new(
                Errno(libc::ENOENT),
                format!("no device {spec}"),
            ))
        }
    }

    use crate::bio::Bio;
    use crate::target::Mapped;

    struct Nop;
    impl Target for Nop {
        fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
            bio.complete(Ok(()));
            Mapped::Submitted
        }
        fn status(&self, _k: StatusType, _o: &mut String) {}
    }

    fn nop_ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
        if args.len() > 3 {
            return Err(ctx.err("too many"));
        }
        if let Some(a) = args.first() {
            ctx.device(args, 0, Sector::ZERO, ctx.len)?;
            let _ = a;
        }
        Ok(Box::new(Nop))
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(TargetType {
            name: "nop",
            version: [1, 0, 0],
            ctr: nop_ctr,
        });
        r
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-z0-9/_.:-]{1,12}"
    }

    proptest! {
        #[test]
        fn text_round_trips(lines in proptest::collection::vec((0u64..1 << 40, 1u64..1 << 30, "[a-z-]{1,15}", proptest::collection::vec(word(), 0..5)), 1..20)) {
            let mut text = String::from("# generated\n");
            let mut start = 0;
            let mut want = Vec::new();
            for (i, (_, len, ty, args)) in lines.iter().enumerate() {
                let params = args.join(" ");
                text.push_str(&format!("{start} {len} {ty} {params}\n\n"));
                want.push(TargetSpec { start, len: *len, target_type: ty.clone(), params, line: (2 + 2 * i) as u32 });
                start += len;
            }
            prop_assert_eq!(TargetSpec::parse_text(&text).unwrap(), want);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            if let Ok(specs) = TargetSpec::parse_text(&text) {
                let _ = Table::build(&specs, &registry(), &NoDevices, &Services::detached(), false);
            }
        }

        #[test]
        fn arbitrary_specs_never_panic(specs in proptest::collection::vec((any::<u64>(), any::<u64>(), prop_oneof!["nop", "zero", "[a-z]{0,3}"], "\\PC{0,40}"), 0..8)) {
            let specs: Vec<TargetSpec> = specs.into_iter().enumerate().map(|(i, (start, len, ty, params))| TargetSpec { start, len, target_type: ty, params, line: i as u32 + 1 }).collect();
            match Table::build(&specs, &registry(), &NoDevices, &Services::detached(), false) {
                Ok(t) => prop_assert!(!t.size().is_zero()),
                Err(e) => prop_assert!(e.line as usize <= specs.len()),
            }
        }
    }
}

//! The columnar report behind `info -c` (libdm's report engine as dmsetup
//! configures it): fields chosen with `-o`, values padded to the widest of
//! the field's minimum width and every value, numbers right-aligned, one
//! space between columns; `--noheadings` switches to unaligned `:`
//! separated output, `--separator` to unaligned output.

use serde_json::{Map, Value};

use super::DeviceInfo;
use super::READ_AHEAD;
use crate::mangle::{mangled_field, unmangled_field, Mangling};

/// Which facts a field needs beyond the device's info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    Info,
    Deps,
    Tree,
}

/// One report field: its `-o` name, heading, minimum width and kind.
#[derive(Debug, PartialEq, Eq)]
pub struct FieldDef {
    pub id: &'static str,
    pub heading: &'static str,
    pub width: usize,
    pub numeric: bool,
    pub needs: Needs,
    pub section: usize,
    pub desc: &'static str,
}

const SECTIONS: [(&str, &str); 4] = [
    ("Mapped Device Name", "name"),
    ("Mapped Device Information", "info"),
    ("Mapped Device Relationship Information", "deps"),
    ("Mapped Device Name Components", "splitname"),
];

/// The section of the name-component fields (all `splitname` can show).
pub const SPLITNAME_SECTION: usize = 3;

macro_rules! field {
    ($id:expr, $head:expr, $w:expr, $num:expr, $needs:ident, $sec:expr, $desc:expr) => {
        FieldDef {
            id: $id,
            heading: $head,
            width: $w,
            numeric: $num,
            needs: Needs::$needs,
            section: $sec,
            desc: $desc,
        }
    };
}

/// The fields udmsetup reports, in dmsetup's order.
pub const FIELDS: &[FieldDef] = &[
    field!("name", "Name", 16, false, Info, 0, "Name of mapped device."),
    field!(
        "mangled_name",
        "MangledName",
        16,
        false,
        Info,
        0,
        "Mangled name of mapped device."
    ),
    field!(
        "unmangled_name",
        "UnmangledName",
        16,
        false,
        Info,
        0,
        "Unmangled name of mapped device."
    ),
    field!(
        "uuid",
        "UUID",
        32,
        false,
        Info,
        0,
        "Unique (optional) identifier for mapped device."
    ),
    field!(
        "mangled_uuid",
        "MangledUUID",
        32,
        false,
        Info,
        0,
        "Mangled unique (optional) identifier for mapped device."
    ),
    field!(
        "unmangled_uuid",
        "UnmangledUUID",
        32,
        false,
        Info,
        0,
        "Unmangled unique (optional) identifier for mapped device."
    ),
    field!(
        "read_ahead",
        "RAhead",
        6,
        true,
        Info,
        0,
        "Read ahead value."
    ),
    field!(
        "blkdevname",
        "BlkDevName",
        16,
        false,
        Info,
        1,
        "Name of block device."
    ),
    field!(
        "attr",
        "Stat",
        4,
        false,
        Info,
        1,
        "(L)ive, (I)nactive, (s)uspended, (r)ead-only, read-(w)rite."
    ),
    field!(
        "tables_loaded",
        "Tables",
        6,
        false,
        Info,
        1,
        "Which of the live and inactive table slots are filled."
    ),
    field!(
        "suspended",
        "Suspended",
        9,
        false,
        Info,
        1,
        "Whether the device is suspended."
    ),
    field!(
        "readonly",
        "Read-only",
        9,
        false,
        Info,
        1,
        "Whether the device is read-only or writeable."
    ),
    field!(
        "devno",
        "DevNo",
        5,
        false,
        Info,
        1,
        "Device major and minor numbers"
    ),
    field!(
        "major",
        "Maj",
        3,
        true,
        Info,
        1,
        "Block device major number."
    ),
    field!(
        "minor",
        "Min",
        3,
        true,
        Info,
        1,
        "Block device minor number."
    ),
    field!(
        "open",
        "Open",
        4,
        true,
        Info,
        1,
        "Number of references to open device, if requested."
    ),
    field!(
        "segments",
        "Targ",
        4,
        true,
        Info,
        1,
        "Number of segments in live table, if present."
    ),
    field!(
        "events",
        "Event",
        6,
        true,
        Info,
        1,
        "Number of most recent event."
    ),
    field!(
        "device_count",
        "#Devs",
        5,
        true,
        Deps,
        2,
        "Number of devices used by this one."
    ),
    field!(
        "devs_used",
        "DevNamesUsed",
        16,
        false,
        Tree,
        2,
        "List of names of mapped devices used by this one."
    ),
    field!(
        "devnos_used",
        "DevNosUsed",
        16,
        false,
        Deps,
        2,
        "List of device numbers of devices used by this one."
    ),
    field!(
        "blkdevs_used",
        "BlkDevNamesUsed",
        16,
        false,
        Deps,
        2,
        "List of names of block devices used by this one."
    ),
    field!(
        "device_ref_count",
        "#Refs",
        5,
        true,
        Tree,
        2,
        "Number of mapped devices referencing this one."
    ),
    field!(
        "names_using_dev",
        "RefNames",
        8,
        false,
        Tree,
        2,
        "List of names of mapped devices using this one."
    ),
    field!(
        "devnos_using_dev",
        "RefDevNos",
        9,
        false,
        Tree,
        2,
        "List of device numbers of mapped devices using this one."
    ),
    field!(
        "subsystem",
        "Subsys",
        6,
        false,
        Info,
        3,
        "Userspace subsystem responsible for this device."
    ),
    field!("vg_name", "VG", 4, false, Info, 3, "LVM Volume Group name."),
    field!(
        "lv_name",
        "LV",
        4,
        false,
        Info,
        3,
        "LVM Logical Volume name."
    ),
    field!(
        "lv_layer",
        "LVLayer",
        7,
        false,
        Info,
        3,
        "LVM device layer."
    ),
];

/// dmsetup's default `info -c` fields.
pub const DEFAULT_FIELDS: &str = "name,major,minor,attr,open,segments,events,uuid";

/// Everything a row can show about one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RowData {
    pub info: DeviceInfo,
    /// Underlying devices, in TABLE_DEPS order.
    pub deps: Vec<(u32, u32)>,
    /// Their block-device names (`loop0`, `dm-1`), same order.
    pub deps_blk_names: Vec<String>,
    /// Names of the udm devices this one uses.
    pub devs_used: Vec<String>,
    /// Names and numbers of the udm devices using this one.
    pub ref_names: Vec<String>,
    pub ref_devnos: Vec<(u32, u32)>,
    /// The mangling mode the names were shown with.
    pub mangling: Mangling,
    /// `splitname <name> <subsystem>`: the subsystem given (else it comes
    /// from the uuid's prefix).
    pub subsystem: Option<String>,
}

/// The subsystem a uuid names: its text before the first `-`
/// (`LVM-...` is LVM's, `CRYPT-...` cryptsetup's), else none.
pub fn uuid_subsystem(uuid: &str) -> &str {
    uuid.split_once('-').map_or("", |(p, _)| p)
}

/// One component of an LVM name: up to the first `-` that is neither
/// doubled (`--` stands for `-`) nor the last character; returns it and
/// the rest after the separator.
fn lvm_component(s: &str) -> (String, &str) {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' && i + 1 < b.len() {
            if b[i + 1] == b'-' {
                i += 1;
            } else {
                return (String::from_utf8_lossy(&out).into_owned(), &s[i + 1..]);
            }
        }
        out.push(b[i]);
        i += 1;
    }
    (String::from_utf8_lossy(&out).into_owned(), "")
}

/// An LVM device name split as libdm splits it: VG, LV and layer (what
/// follows the layer is dropped).
pub fn split_lvm_name(name: &str) -> (String, String, String) {
    let (vg, rest) = lvm_component(name);
    let (lv, rest) = lvm_component(rest);
    let (layer, _) = lvm_component(rest);
    (vg, lv, layer)
}

fn devnos(v: &[(u32, u32)]) -> String {
    v.iter()
        .map(|(a, b)| format!("{a}:{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The text of `field` for `row`.
pub fn field_value(field: &FieldDef, row: &RowData) -> String {
    let i = &row.info;
    match field.id {
        "name" => i.name.clone(),
        "mangled_name" => mangled_field(&i.name, row.mangling),
        "unmangled_name" => unmangled_field(&i.name, row.mangling),
        "uuid" => i.uuid.clone(),
        "mangled_uuid" => mangled_field(&i.uuid, row.mangling),
        "unmangled_uuid" => unmangled_field(&i.uuid, row.mangling),
        "read_ahead" => READ_AHEAD.to_string(),
        "blkdevname" => format!("dm-{}", i.minor),
        "attr" => i.attr(),
        "tables_loaded" => i.tables_loaded().to_string(),
        "suspended" => if i.suspended { "Suspended" } else { "Active" }.to_string(),
        "readonly" => if i.read_only {
            "Read-only"
        } else {
            "Writeable"
        }
        .to_string(),
        "devno" => format!("{}:{}", i.major, i.minor),
        "major" => i.major.to_string(),
        "minor" => i.minor.to_string(),
        "open" => i.open_count.to_string(),
        "segments" => i.target_count.to_string(),
        "events" => i.event_nr.to_string(),
        "device_count" => row.deps.len().to_string(),
        "devs_used" => row.devs_used.join(","),
        "devnos_used" => devnos(&row.deps),
        "blkdevs_used" => row.deps_blk_names.join(","),
        "device_ref_count" => row.ref_names.len().to_string(),
        "names_using_dev" => row.ref_names.join(","),
        "devnos_using_dev" => devnos(&row.ref_devnos),
        "subsystem" | "vg_name" | "lv_name" | "lv_layer" => {
            let sub = row
                .subsystem
                .as_deref()
                .unwrap_or_else(|| uuid_subsystem(&i.uuid));
            if field.id == "subsystem" {
                return sub.to_string();
            }
            if sub != "LVM" {
                return String::new();
            }
            let (vg, lv, layer) = split_lvm_name(&i.name);
            match field.id {
                "vg_name" => vg,
                "lv_name" => lv,
                _ => layer,
            }
        }
        _ => String::new(),
    }
}

/// The field list dmsetup prints (to stderr) for an unknown field.
pub fn field_help() -> String {
    let mut s = String::new();
    for (n, (title, prefix)) in SECTIONS.iter().enumerate() {
        let head = format!("{title} Fields");
        s += &format!("{head}\n{}\n", "-".repeat(head.len()));
        s += &format!(
            "  {:<21} - All fields in this section.\n",
            format!("{prefix}_all")
        );
        for f in FIELDS.iter().filter(|f| f.section == n) {
            s += &format!("  {:<21} - {}\n", f.id, f.desc);
        }
        s += " \n";
    }
    s
}

/// A report being filled, one row per device, printed at the end.
#[derive(Debug)]
pub struct Report {
    pub fields: Vec<&'static FieldDef>,
    separator: String,
    aligned: bool,
    headings: bool,
    rows: Vec<Vec<String>>,
}

impl Report {
    /// Set up from `-o` (`None` = defaults, a leading `+` appends to the
    /// defaults), `--noheadings` and `--separator`. An unknown field gives
    /// the field list and `Unrecognised field: <f>` as the error text.
    pub fn new(
        options: Option<&str>,
        noheadings: bool,
        separator: Option<&str>,
    ) -> Result<Self, String> {
        Self::with_defaults(DEFAULT_FIELDS, options, noheadings, separator)
    }

    /// As [`Report::new`], with another command's default fields.
    pub fn with_defaults(
        defaults: &str,
        options: Option<&str>,
        noheadings: bool,
        separator: Option<&str>,
    ) -> Result<Self, String> {
        let spec = match options {
            None => defaults.to_string(),
            Some(o) => match o.strip_prefix('+') {
                Some(extra) => format!("{defaults},{extra}"),
                None => o.to_string(),
            },
        };
        let mut fields = Vec::new();
        for word in spec.split(',').filter(|w| !w.is_empty()) {
            if let Some(sec) = SECTIONS
                .iter()
                .position(|(_, p)| format!("{p}_all") == word)
            {
                fields.extend(FIELDS.iter().filter(|f| f.section == sec));
                continue;
            }
            match FIELDS.iter().find(|f| f.id == word) {
                Some(f) => fields.push(f),
                None => return Err(format!("{}Unrecognised field: {word}", field_help())),
            }
        }
        let (mut sep, mut aligned, mut headings) = (" ".to_string(), true, true);
        if noheadings {
            sep = ":".into();
            aligned = false;
            headings = false;
        }
        if let Some(s) = separator {
            sep = s.to_string();
            aligned = false;
        }
        Ok(Report {
            fields,
            separator: sep,
            aligned,
            headings,
            rows: Vec::new(),
        })
    }

    /// The most any field needs: deps for `devnos_used` and friends, the
    /// whole dependency tree for `devs_used` and the `*_using_dev` fields.
    pub fn needs(&self) -> Needs {
        let has = |n| self.fields.iter().any(|f| f.needs == n);
        if has(Needs::Tree) {
            Needs::Tree
        } else if has(Needs::Deps) {
            Needs::Deps
        } else {
            Needs::Info
        }
    }

    pub fn add_row(&mut self, row: &RowData) {
        self.rows
            .push(self.fields.iter().map(|f| field_value(f, row)).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows as JSON objects keyed by field id (numbers as numbers).
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    for (f, v) in self.fields.iter().zip(r) {
                        let val = match (f.numeric, v.parse::<i64>()) {
                            (true, Ok(n)) => Value::from(n),
                            _ => Value::from(v.as_str()),
                        };
                        m.insert(f.id.to_string(), val);
                    }
                    Value::Object(m)
                })
                .collect(),
        )
    }

    /// The whole report; nothing at all when there are no rows.
    pub fn render(&self) -> String {
        if self.rows.is_empty() {
            return String::new();
        }
        let widths: Vec<usize> = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .fold(f.width, usize::max)
            })
            .collect();
        let mut out = String::new();
        if self.headings {
            let cells: Vec<String> = self
                .fields
                .iter()
                .zip(&widths)
                .map(|(f, &w)| {
                    if self.aligned {
                        let h: String = f.heading.chars().take(w).collect();
                        format!("{h:<w$}")
                    } else {
                        f.heading.to_string()
                    }
                })
                .collect();
            out += &cells.join(&self.separator);
            out.push('\n');
        }
        for r in &self.rows {
            let cells: Vec<String> = self
                .fields
                .iter()
                .zip(&widths)
                .zip(r)
                .map(|((f, &w), v)| match (self.aligned, f.numeric) {
                    (false, _) => v.clone(),
                    (true, true) => format!("{v:>w$}"),
                    (true, false) => format!("{v:<w$}"),
                })
                .collect();
            out += &cells.join(&self.separator);
            out.push('\n');
        }
        out
    }
}

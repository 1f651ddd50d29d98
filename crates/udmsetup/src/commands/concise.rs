//! `create --concise [<list>]` (the list from stdin when not given):
//! `<name>,<uuid>,<minor>,<flags>,<table>[,<table line>...]` per device,
//! devices separated by `;`, `\` escaping the next character; flags are
//! `ro`, `rw` or empty. Devices are created in order; the first failure
//! stops the command (devices created before it stay), as in dmsetup.

use super::create::{create_device, NewDevice};
use super::ctx::{CmdResult, Ctx};
use crate::table_text::{parse_table, TableSource};

/// One entry as parsed: up to five fields, the table's commas turned into
/// newlines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub fields: Vec<String>,
    /// The entry ended right after an unescaped comma.
    pub trailing_comma: bool,
}

impl Entry {
    /// dmsetup's `Parsed N fields: ...` line.
    fn parsed_line(&self) -> String {
        let f = |i: usize| self.fields.get(i).map_or("(null)", String::as_str);
        format!(
            "Parsed {} fields: name: {} uuid: {} minor: {} flags: {} table: {}",
            self.fields.len(),
            f(0),
            f(1),
            f(2),
            f(3),
            f(4)
        )
    }
}

/// Split a concise list into its entries (an empty list has none; a `;`
/// at the very end ends the last entry).
pub fn parse_list(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    if text.is_empty() {
        return entries;
    }
    let mut cur = Entry {
        fields: vec![String::new()],
        trailing_comma: false,
    };
    let mut chars = text.chars();
    let mut open = true;
    while let Some(c) = chars.next() {
        if !open {
            cur = Entry {
                fields: vec![String::new()],
                trailing_comma: false,
            };
            open = true;
        }
        let field = cur.fields.len() - 1;
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.fields[field].push(n);
                }
                cur.trailing_comma = false;
            }
            ',' if field < 4 => {
                cur.fields.push(String::new());
                cur.trailing_comma = true;
            }
            ',' => {
                cur.fields[field].push('\n');
                cur.trailing_comma = true;
            }
            ';' => {
                entries.push(std::mem::take(&mut cur));
                open = false;
            }
            c => {
                cur.fields[field].push(c);
                cur.trailing_comma = false;
            }
        }
    }
    if open {
        entries.push(cur);
    }
    entries
}

pub fn create(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    if ctx.opts.table.is_some()
        || ctx.opts.notable
        || ctx.opts.minor.is_some()
        || ctx.opts.uuid.is_some()
        || ctx.opts.inactive
    {
        return ctx
            .fail("--concise is incompatible with --[no]table, --minor, --uuid and --inactive.");
    }
    if args.len() > 1 {
        return ctx.fail("udmsetup create --concise takes at most one argument");
    }
    let text = match args.first() {
        Some(t) => t.clone(),
        None => {
            let mut b = Vec::new();
            if let Err(e) = ctx.stdin.read_to_end(&mut b) {
                return ctx.fail(&format!("udmsetup: reading stdin: {e}"));
            }
            String::from_utf8_lossy(&b).into_owned()
        }
    };
    for entry in parse_list(&text) {
        if entry.trailing_comma {
            ctx.error("Incomplete entry: five comma-separated fields are required for each device");
            return ctx.fail(&entry.parsed_line());
        }
        if entry.fields.len() < 5 {
            ctx.error("Five comma-separated fields are required for each device");
            return ctx.fail(&entry.parsed_line());
        }
        let f = &entry.fields;
        let readonly = match f[3].as_str() {
            "ro" => true,
            "rw" | "" => false,
            other => {
                let msg =
                    format!("Invalid flags parameter '{other}' must be 'ro' or 'rw' or empty.");
                return ctx.fail(&msg);
            }
        };
        if f[0].contains('/') {
            return ctx.fail(&format!("Name \"{}\" invalid. It contains \"/\".", f[0]));
        }
        let name = ctx.check_name(&f[0])?;
        let table = match parse_table(&f[4], &TableSource::Arg) {
            Ok(t) => t,
            Err(e) => {
                ctx.error(&e.to_string());
                if let Some(d) = e.detail() {
                    ctx.error(&format!("udm: {d}"));
                }
                return Err(super::Failed);
            }
        };
        let dev = NewDevice {
            name,
            uuid: Some(f[1].clone()).filter(|u| !u.is_empty()),
            // atoi, as dmsetup reads it; udmd (like the kernel) looks only
            // at the minor.
            devno: (!f[2].is_empty()).then(|| (0, atoi(&f[2]))),
            readonly,
            table,
        };
        create_device(ctx, &dev)?;
    }
    Ok(())
}

/// C's `atoi`: leading blanks, a sign, digits; 0 when there are none.
fn atoi(s: &str) -> u32 {
    let t = s.trim_start();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
    let v = digits.parse::<i64>().unwrap_or(0);
    (if neg { -v } else { v }) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fields_escapes_and_table_lines() {
        let e = parse_list("c1,,,ro,0 8 zero;c2,U2,,,0 8 zero,8 8 error");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].fields, ["c1", "", "", "ro", "0 8 zero"]);
        assert_eq!(e[1].fields, ["c2", "U2", "", "", "0 8 zero\n8 8 error"]);
        let e = parse_list("c\\,9,,,,0 8 error a\\,b\\;x;");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].fields, ["c,9", "", "", "", "0 8 error a,b;x"]);
        assert!(parse_list("").is_empty());
        let e = parse_list(";");
        assert_eq!(
            e[0].parsed_line(),
            "Parsed 1 fields: name:  uuid: (null) minor: (null) flags: (null) table: (null)"
        );
        let e = parse_list("c7,,");
        assert!(e[0].trailing_comma);
        assert_eq!(
            e[0].parsed_line(),
            "Parsed 3 fields: name: c7 uuid:  minor:  flags: (null) table: (null)"
        );
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi(" 250x"), 250);
    }
}

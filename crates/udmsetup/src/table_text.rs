//! Reading table text as dmsetup does (`--table`, a file or stdin), keeping
//! for each target the source line it came from so that errors the daemon
//! reports per target can name the line the user wrote.

use udm_ioctl::{TargetSpec, MAX_TYPE_NAME};

/// Where table text came from; it names the source in error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableSource {
    /// `--table <text>`: dmsetup names it as the empty string.
    Arg,
    /// A named file.
    File(String),
    /// Standard input.
    Stdin,
}

impl TableSource {
    /// The text dmsetup puts after "of table ".
    pub fn describe(&self) -> &str {
        match self {
            TableSource::Arg => "",
            TableSource::File(f) => f,
            TableSource::Stdin => "on stdin",
        }
    }
}

/// The targets of a table, each with its 1-based source line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedTable {
    pub specs: Vec<TargetSpec>,
    pub lines: Vec<usize>,
    /// Per spec: what is wrong with a line dmsetup sends anyway (a negative
    /// start or length, which `%llu` wraps to a huge number), to name it
    /// when the daemon refuses that spec.
    pub notes: Vec<Option<String>>,
}

/// The `Display` text is dmsetup's line; [`TableTextError::detail`] is
/// udm's precise reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableTextError {
    #[error("Invalid format on line {line} of table {source_name}.")]
    InvalidFormat {
        line: usize,
        source_name: String,
        reason: String,
    },
    #[error("Target type name {0} is too long.")]
    TypeTooLong(String),
}

impl TableTextError {
    /// `line N: <reason>`, printed after dmsetup's line as `udm: ...`.
    pub fn detail(&self) -> Option<String> {
        match self {
            TableTextError::InvalidFormat { line, reason, .. } => {
                Some(format!("line {line}: {reason}"))
            }
            TableTextError::TypeTooLong(_) => None,
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_space(s[i]) {
        i += 1;
    }
    i
}

/// `%llu` as glibc scans it: optional whitespace and sign, then decimal
/// digits; a minus sign negates modulo 2^64 and overflow saturates.
fn scan_u64(s: &[u8], i: usize) -> Option<(u64, usize)> {
    let mut i = skip_space(s, i);
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut v: u64 = 0;
    while let Some(d) = s.get(i).filter(|b| b.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add(u64::from(d - b'0'));
        i += 1;
    }
    if i == start {
        return None;
    }
    Some((if neg { v.wrapping_neg() } else { v }, i))
}

/// The whitespace-delimited word at `i` (for error messages).
fn word_at(s: &[u8], i: usize) -> String {
    let i = skip_space(s, i);
    let end = (i..s.len()).find(|&j| is_space(s[j])).unwrap_or(s.len());
    String::from_utf8_lossy(&s[i..end]).into_owned()
}

/// A number dmsetup accepts but that is not what the user meant: `-N`
/// wraps modulo 2^64.
fn negative_note(s: &[u8], i: usize, what: &str) -> Option<String> {
    let w = word_at(s, i);
    w.starts_with('-').then(|| {
        format!(
            "{what} '{}' is not a number",
            w.trim_end_matches(|c: char| !c.is_ascii_digit())
        )
    })
}

/// A parsed line and the note for a value dmsetup accepts but wraps.
type Line = (TargetSpec, Option<String>);

/// One line: `Ok(None)` for a blank or comment line; `Err` says why the
/// line is not `<start> <length> <type> [<params>]`.
fn parse_line(line: &str) -> Result<Option<Line>, String> {
    let t = line.trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    let s = t.as_bytes();
    let not_a_number = |what: &str, i: usize| {
        let w = word_at(s, i);
        if w.is_empty() {
            format!("{what} is missing")
        } else {
            format!("{what} '{w}' is not a number")
        }
    };
    let Some((start, i)) = scan_u64(s, 0) else {
        return Err(not_a_number("start sector", 0));
    };
    let len_at = skip_space(s, i);
    let Some((length, i)) = scan_u64(s, len_at) else {
        return Err(not_a_number("length", len_at));
    };
    let ty_start = skip_space(s, i);
    let mut ty_end = ty_start;
    while ty_end < s.len() && !is_space(s[ty_end]) {
        ty_end += 1;
    }
    if ty_end == ty_start {
        return Err("target type is missing".to_string());
    }
    let note = negative_note(s, 0, "start sector").or_else(|| negative_note(s, len_at, "length"));
    let rest = &t[skip_space(s, ty_end)..];
    let params = rest.split('#').next().unwrap_or("");
    Ok(Some((
        TargetSpec {
            sector_start: start,
            length,
            status: 0,
            target_type: t[ty_start..ty_end].to_string(),
            // libdm doubles every backslash, so the kernel's argument splitter
            // gives the parameters back literally.
            params: params.replace('\\', "\\\\"),
        },
        note,
    )))
}

/// Parse table text line by line (lines end at `\n`): surrounding
/// whitespace is stripped, blank lines and lines starting with `#` are
/// skipped, and a parameter string ends at its first `#`.
pub fn parse_table(text: &str, source: &TableSource) -> Result<ParsedTable, TableTextError> {
    let mut out = ParsedTable::default();
    for (i, line) in text.split('\n').enumerate() {
        match parse_line(line) {
            Err(reason) => {
                return Err(TableTextError::InvalidFormat {
                    line: i + 1,
                    source_name: source.describe().to_string(),
                    reason,
                })
            }
            Ok(None) => {}
            Ok(Some((spec, note))) => {
                if spec.target_type.len() >= MAX_TYPE_NAME {
                    return Err(TableTextError::TypeTooLong(spec.target_type));
                }
                out.specs.push(spec);
                out.lines.push(i + 1);
                out.notes.push(note);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(start: u64, len: u64, ty: &str, params: &str) -> TargetSpec {
        TargetSpec {
            sector_start: start,
            length: len,
            status: 0,
            target_type: ty.into(),
            params: params.into(),
        }
    }

    #[test]
    fn lines_comments_and_blank_lines() {
        let text = "# header\n\n  0 100 linear 7:0 0 # comment here\n   \n100 100 zero\n";
        let t = parse_table(text, &TableSource::Arg).unwrap();
        assert_eq!(
            t.specs,
            [spec(0, 100, "linear", "7:0 0 "), spec(100, 100, "zero", "")]
        );
        assert_eq!(t.lines, [3, 5]);
    }

    #[test]
    fn errors_name_the_line_and_source() {
        let e = parse_table("0 10", &TableSource::Arg).unwrap_err();
        assert_eq!(e.to_string(), "Invalid format on line 1 of table .");
        let e = parse_table("\n# c\n0 x zero\n", &TableSource::File("/tmp/t1".into())).unwrap_err();
        assert_eq!(e.to_string(), "Invalid format on line 3 of table /tmp/t1.");
        let e = parse_table("0 10 zero\n  \n1 z\n", &TableSource::Stdin).unwrap_err();
        assert_eq!(e.to_string(), "Invalid format on line 3 of table on stdin.");
        let e = parse_table("0 1 abcdefghijklmnop", &TableSource::Arg).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Target type name abcdefghijklmnop is too long."
        );
    }

    #[test]
    fn scanf_quirks() {
        // "%llu %llu %s": the spaces match zero or more blanks.
        let t = parse_table("0 10zero", &TableSource::Arg).unwrap();
        assert_eq!(t.specs, [spec(0, 10, "zero", "")]);
        let t = parse_table("+5\t\t-1  error  a  b ", &TableSource::Arg).unwrap();
        assert_eq!(t.specs, [spec(5, u64::MAX, "error", "a  b")]);
        let t = parse_table("0 99999999999999999999999 zero", &TableSource::Arg).unwrap();
        assert_eq!(t.specs[0].length, u64::MAX);
        assert!(parse_table("x 1 zero", &TableSource::Arg).is_err());
        assert!(
            parse_table("1 2 #zero", &TableSource::Arg).is_ok(),
            "type may start with #"
        );
    }

    #[test]
    fn backslashes_are_doubled_and_empty_text_is_no_targets() {
        let t = parse_table("0 100 error a\\b", &TableSource::Arg).unwrap();
        assert_eq!(t.specs[0].params, "a\\\\b");
        assert_eq!(
            parse_table("", &TableSource::Stdin).unwrap(),
            ParsedTable::default()
        );
        assert_eq!(
            parse_table("\r\n", &TableSource::Stdin).unwrap().specs,
            vec![]
        );
    }
}

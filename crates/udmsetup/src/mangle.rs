//! Name and uuid mangling as libdevmapper does it (`--manglename`), so that
//! udmsetup and dmsetup store, find and show the same names.
//!
//! A character outside libdm's whitelist (`A-Z a-z 0-9 # + - . : = @ _`)
//! is stored as `\xNN`. `auto` (the default) keeps a name that is already
//! mangled as it is and refuses a mixture; `hex` mangles every character
//! outside the whitelist, `\` included; `none` sends and shows names raw.
//! Names coming back are unmangled for display in `auto` and `hex`, and a
//! stored name that should have been mangled is refused, as libdm does.
//!
//! One deliberate difference: where dmsetup would print an unmangled
//! control character (ESC, newline) or bytes that are not UTF-8, udmsetup
//! keeps them as `\xNN`, so no name can drive the terminal.

/// libdm's mangling modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mangling {
    None,
    Hex,
    #[default]
    Auto,
}

impl Mangling {
    /// `--manglename`, else `DM_DEFAULT_NAME_MANGLING_MODE`, else `auto`.
    pub fn from_option(opt: Option<&str>) -> Result<Self, String> {
        if let Some(o) = opt {
            return Self::parse(o).ok_or_else(|| format!("Unknown name mangling mode {o}"));
        }
        match std::env::var("DM_DEFAULT_NAME_MANGLING_MODE") {
            Ok(v) => Ok(Self::parse(&v).unwrap_or_default()),
            Err(_) => Ok(Mangling::Auto),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Mangling::None),
            "hex" => Some(Mangling::Hex),
            "auto" => Some(Mangling::Auto),
            _ => None,
        }
    }
}

/// libdm's whitelist: kept as is by every mode.
pub fn whitelisted(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"#+-.:=@_".contains(&b)
}

/// `what` ("name", "UUID", "new name") names the string in errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MangleError {
    #[error("The {what} \"{text}\" seems to be mangled more than once. This is not allowed in auto mode.")]
    Twice { what: &'static str, text: String },
    #[error("The {what} \"{text}\" contains mixed mangled and unmangled characters or it's already mangled improperly.")]
    Mixed { what: &'static str, text: String },
    #[error("Mangled form of the {what} too long for \"{text}\".")]
    TooLong { what: &'static str, text: String },
    #[error("The {what} \"{text}\" should be mangled but it contains blacklisted characters.")]
    Blacklisted { what: &'static str, text: String },
}

/// The form to send for a name or uuid given on the command line.
/// `limit` is the field's size (128 for names, 129 for uuids).
pub fn mangle(
    s: &str,
    what: &'static str,
    mode: Mangling,
    limit: usize,
) -> Result<String, MangleError> {
    if mode == Mangling::None {
        return Ok(s.to_string());
    }
    if mode == Mangling::Auto && s.contains("\\x5cx") {
        return Err(MangleError::Twice {
            what,
            text: escape_controls(s),
        });
    }
    mangle_string(s, what, mode, limit)
}

/// libdm's `mangle_string` (where `none` behaves as `auto`).
fn mangle_string(
    s: &str,
    what: &'static str,
    mode: Mangling,
    limit: usize,
) -> Result<String, MangleError> {
    let b = s.as_bytes();
    let mixed = || MangleError::Mixed {
        what,
        text: escape_controls(s),
    };
    let mut out = String::with_capacity(b.len());
    // None: not known yet; Some(true): mangled here; Some(false): found mangled.
    let mut mangled: Option<bool> = None;
    let mut i = 0;
    while i < b.len() {
        if mode != Mangling::Hex && b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if b.len() - i < 4 || mangled == Some(true) {
                return Err(mixed());
            }
            out.push_str(&String::from_utf8_lossy(&b[i..i + 4]));
            i += 4;
            mangled = Some(false);
            continue;
        }
        if whitelisted(b[i]) {
            out.push(char::from(b[i]));
        } else {
            if mode != Mangling::Hex && mangled == Some(false) {
                return Err(mixed());
            }
            out.push_str(&format!("\\x{:02x}", b[i]));
            mangled = Some(true);
        }
        i += 1;
    }
    if out.len() >= limit {
        return Err(MangleError::TooLong {
            what,
            text: escape_controls(s),
        });
    }
    Ok(out)
}

/// What `mangled_name`/`mangled_uuid` show for a name as displayed.
pub fn mangled_field(shown: &str, mode: Mangling) -> String {
    let m = if mode == Mangling::Hex {
        Mangling::Hex
    } else {
        Mangling::Auto
    };
    mangle_string(shown, "name", m, usize::MAX).unwrap_or_else(|_| shown.to_string())
}

/// What `unmangled_name`/`unmangled_uuid` show for a name as displayed
/// (already unmangled unless the mode is `none`).
pub fn unmangled_field(shown: &str, mode: Mangling) -> String {
    if mode == Mangling::None {
        decode(shown)
    } else {
        shown.to_string()
    }
}

/// A name or uuid the daemon returned, as udmsetup shows it: unmangled in
/// `auto` and `hex` (refusing one stored raw that needed mangling), raw in
/// `none`.
pub fn unmangle(s: &str, what: &'static str, mode: Mangling) -> Result<String, MangleError> {
    if mode == Mangling::None {
        return Ok(s.to_string());
    }
    if s.bytes().any(|b| !whitelisted(b) && b != b'\\') {
        return Err(MangleError::Blacklisted {
            what,
            text: escape_controls(s),
        });
    }
    Ok(decode(s))
}

/// Decode every `\xNN`, except that what would decode to a control
/// character or to bytes that are not UTF-8 stays as `\xNN`.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |i: usize| -> Option<u8> {
        let d = b.get(i + 2..i + 4)?;
        let t = std::str::from_utf8(d).ok()?;
        u8::from_str_radix(t, 16).ok()
    };
    // Decode into bytes, remembering which came from an escape.
    let mut bytes = Vec::with_capacity(b.len());
    let mut escaped = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let Some(v) = hex(i) {
                bytes.push(v);
                escaped.push(true);
                i += 4;
                continue;
            }
        }
        bytes.push(b[i]);
        escaped.push(false);
        i += 1;
    }
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let n = c.len_utf8();
            let from_escape = escaped[pos..pos + n].iter().any(|&e| e);
            if c.is_control() && from_escape {
                for &x in &bytes[pos..pos + n] {
                    out.push_str(&format!("\\x{x:02x}"));
                }
            } else {
                out.push(c);
            }
            pos += n;
        }
        for &x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
            pos += 1;
        }
    }
    out
}

/// Control characters as `\xNN` (for names shown raw, in `none` mode and
/// in error messages).
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            let mut buf = [0u8; 4];
            for x in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{x:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 128;

    #[test]
    fn auto_mangles_and_keeps_mangled_names() {
        let m = |s| mangle(s, "name", Mangling::Auto, N);
        assert_eq!(m("a b").unwrap(), "a\\x20b");
        assert_eq!(m("bs\\z").unwrap(), "bs\\x5cz");
        assert_eq!(m("p\\x41q").unwrap(), "p\\x41q");
        assert_eq!(m("e\u{1b}f").unwrap(), "e\\x1bf");
        assert_eq!(m("ok_name-1.2:3=4@5#6+7").unwrap(), "ok_name-1.2:3=4@5#6+7");
        assert_eq!(
            m("a\\x20b c").unwrap_err().to_string(),
            "The name \"a\\x20b c\" contains mixed mangled and unmangled characters or it's already mangled improperly."
        );
        assert_eq!(
            m("a\\x5cx20").unwrap_err().to_string(),
            "The name \"a\\x5cx20\" seems to be mangled more than once. This is not allowed in auto mode."
        );
        assert_eq!(mangle("a b", "name", Mangling::None, N).unwrap(), "a b");
        assert_eq!(
            mangle("p\\x41q", "name", Mangling::Hex, N).unwrap(),
            "p\\x5cx41q"
        );
    }

    #[test]
    fn unmangle_refuses_raw_names_and_keeps_controls_escaped() {
        let u = |s| unmangle(s, "name", Mangling::Auto);
        assert_eq!(u("a\\x20b").unwrap(), "a b");
        assert_eq!(u("p\\x41q").unwrap(), "pAq");
        assert_eq!(u("e\\x1bf").unwrap(), "e\\x1bf");
        assert_eq!(u("n\\x0al").unwrap(), "n\\x0al");
        assert_eq!(u("\\xc3\\xa9").unwrap(), "é");
        assert_eq!(u("\\xff").unwrap(), "\\xff");
        assert_eq!(
            u("c d").unwrap_err().to_string(),
            "The name \"c d\" should be mangled but it contains blacklisted characters."
        );
        assert_eq!(unmangle("c d", "name", Mangling::None).unwrap(), "c d");
        assert_eq!(mangled_field("c d", Mangling::None), "c\\x20d");
        assert_eq!(mangled_field("a\\x20b", Mangling::None), "a\\x20b");
        assert_eq!(unmangled_field("a\\x20b", Mangling::None), "a b");
        assert_eq!(escape_controls("e\u{1b}f\n"), "e\\x1bf\\x0a");
    }
}

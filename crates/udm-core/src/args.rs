//! Splitting and parsing of target arguments and messages, as the kernel's
//! `dm_split_args` does: whitespace separated, a backslash makes the next
//! character literal.

/// Split a parameter string into words. `\x` yields `x` (so `\ ` is an embedded space).
pub fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            in_word = true;
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c.is_ascii_whitespace() {
            if in_word {
                out.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            in_word = true;
            cur.push(c);
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// Strict unsigned decimal (the kernel's `sscanf("%llu%c")` check: no sign, no junk).
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub fn parse_u32(s: &str) -> Option<u32> {
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_kernel() {
        assert_eq!(split_args("  a  b\tc "), vec!["a", "b", "c"]);
        assert_eq!(split_args(r"a\ b c\\d"), vec!["a b", r"c\d"]);
        assert!(split_args("   ").is_empty());
    }

    #[test]
    fn strict_numbers() {
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64("18446744073709551616"), None);
        assert_eq!(parse_u64("+1"), None);
        assert_eq!(parse_u64("1x"), None);
        assert_eq!(parse_u64(""), None);
    }
}

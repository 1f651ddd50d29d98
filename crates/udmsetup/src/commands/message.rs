//! `message <dev> <sector> [--] <words...>`: TARGET_MSG; the words are
//! joined with single spaces, a reply (DATA_OUT) is printed with a
//! newline added if it has none.

use udm_ioctl::{decode_string, encode_target_msg, flags};

use super::ctx::{CmdResult, Ctx, Task};
use crate::client::Command;

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    let (name, rest) = if ctx.opts.device_by_option() {
        (None, args)
    } else {
        (
            args.first().map(String::as_str),
            args.get(1..).unwrap_or(&[]),
        )
    };
    let dev = ctx.device(name)?;
    let Some((sector, words)) = rest.split_first() else {
        return ctx.fail("Invalid sector.");
    };
    let Some(sector) = parse_sector(sector) else {
        return ctx.fail("Invalid sector.");
    };
    if words.is_empty() {
        ctx.error("No message supplied.");
    }
    let msg = words.join(" ");
    let task = Task::new(Command::TargetMsg, "message")
        .device(&dev)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount)
        .payload(encode_target_msg(sector, &msg));
    let reply = ctx.run(&task)?;
    if reply.header.flags & flags::DATA_OUT == 0 {
        return Ok(());
    }
    let response = match decode_string(&reply.payload) {
        Ok(r) => r,
        Err(_) => {
            return ctx
                .fail("Internal error: Message response doesn't contain terminating NUL character")
        }
    };
    if ctx.opts.json {
        ctx.json_object = Some(serde_json::json!({ "response": response }));
    } else if response.is_empty() || response.ends_with('\n') {
        ctx.print(&response);
    } else {
        ctx.println(&response);
    }
    Ok(())
}

/// `strtoull(s, &end, 10)` with dmsetup's checks: digits only (after
/// optional blanks and sign), no overflow, something parsed.
fn parse_sector(s: &str) -> Option<u64> {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = digits.parse().ok()?;
    Some(if neg { v.wrapping_neg() } else { v })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sectors_parse_like_strtoull() {
        use super::parse_sector;
        assert_eq!(parse_sector("0"), Some(0));
        assert_eq!(parse_sector(" 12"), Some(12));
        assert_eq!(parse_sector("+7"), Some(7));
        assert_eq!(parse_sector("-1"), Some(u64::MAX));
        assert_eq!(parse_sector(""), None);
        assert_eq!(parse_sector("1x"), None);
        assert_eq!(parse_sector("99999999999999999999999"), None);
    }
}

//! `wait <dev> [<event_nr>]`: DEV_WAIT until the device's event counter
//! differs from `event_nr` (0 when omitted); `-v` shows the device.

use udm_ioctl::flags;

use super::ctx::{CmdResult, Ctx, Task};
use crate::client::Command;

/// C's `atoi`: leading blanks, a sign, digits; anything else ends it.
fn atoi(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let v = rest
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |v, d| {
            v.saturating_mul(10).saturating_add(i64::from(d - b'0'))
        });
    if neg {
        -v
    } else {
        v
    }
}

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    let (name, rest) = if ctx.opts.device_by_option() {
        (None, args)
    } else {
        match args.split_first() {
            Some((n, rest)) => (Some(n.as_str()), rest),
            None => return ctx.fail("No device specified."),
        }
    };
    let dev = ctx.device(name)?;
    let event_nr = rest.last().map_or(0, |s| atoi(s) as u32);
    let mut task = Task::new(Command::DevWait, "waitevent")
        .device(&dev)
        .flag(flags::NOFLUSH, ctx.opts.noflush)
        .flag(flags::QUERY_INACTIVE_TABLE, ctx.opts.inactive)
        .flag(flags::SKIP_BDGET, ctx.opts.noopencount);
    task.header.event_nr = event_nr;
    let reply = ctx.run(&task)?;
    if ctx.opts.verbose > 0 || ctx.opts.json {
        return ctx.display_info(&reply);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn atoi_is_lenient() {
        use super::atoi;
        assert_eq!(atoi("5"), 5);
        assert_eq!(atoi(" 12abc"), 12);
        assert_eq!(atoi("x"), 0);
        assert_eq!(atoi("-3"), -3);
    }
}

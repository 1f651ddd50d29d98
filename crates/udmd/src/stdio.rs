//! udmd's stdout and stderr may be closed under it (`udmd --demo | tee log` and
//! a Ctrl-C that kills tee first): nothing written there may fail the daemon.
//! Logs go through a stderr writer that drops what it cannot write, and the
//! banner is written with its errors ignored.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;

/// stderr for the log, where a failed write (EPIPE, EBADF, ...) is dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Parse a `--log` filter, refusing any invalid directive (rather than
/// quietly falling back to `info`).
pub fn log_filter(spec: &str) -> anyhow::Result<EnvFilter> {
    EnvFilter::builder().parse(spec).map_err(|e| {
        anyhow::anyhow!(
            "--log {spec}: {e} (tracing env-filter syntax, e.g. `info` or `udm_core=debug`)"
        )
    })
}

/// Install the log: to stderr, coloured only when stderr is a terminal.
pub fn init_log(filter: EnvFilter) {
    // SAFETY: setting SIGPIPE's disposition before any thread exists; a write to
    // a closed pipe then fails with EPIPE (ignored above) instead of killing us.
    // (Rust's runtime does this already; udmd relies on it, so say so here.)
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(|| LossyStderr)
        .log_internal_errors(false)
        .init();
}

/// Write `text` on stdout, ignoring a closed stdout.
pub fn say(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

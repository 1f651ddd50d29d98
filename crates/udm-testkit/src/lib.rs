//! Test-only helpers shared by every udm crate's tests (a dev-dependency only).
//!
//! One convention for tests that need a real client program (nbdinfo, qemu-io,
//! mkfs.ext4, ...) or a device node (/dev/fuse, /dev/loop-control):
//!
//! - with `UDM_REQUIRE_CLIENTS=1` (scripts/test.sh sets it), a missing one fails
//!   the test with a message naming it;
//! - without it, the test prints `skipped: <why>` and returns.
//!
//! ```no_run
//! #[test]
//! fn mounts_over_fuse() {
//!     if !udm_testkit::have(&["/dev/fuse"], &["losetup"]) {
//!         return;
//!     }
//!     // ...
//! }
//! ```

use std::path::Path;
use std::process::{Command, Stdio};

/// The environment variable that turns a missing client or device into a failure.
pub const REQUIRE_ENV: &str = "UDM_REQUIRE_CLIENTS";

/// Whether missing clients and devices fail tests (`UDM_REQUIRE_CLIENTS` set to
/// anything but empty or `0`).
pub fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Report that a test cannot run: panics (failing the test) when clients are
/// required, else prints `skipped: <why>`. Returns false, for `if !.. { return }`.
#[track_caller]
pub fn unavailable(why: &str) -> bool {
    if required() {
        panic!("{why}, and {REQUIRE_ENV}=1 requires it");
    }
    eprintln!("skipped: {why}");
    false
}

/// Whether `tool` is on PATH (with /usr/bin first, as the tests run clients).
pub fn tool_installed(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    Command::new("sh")
        .arg("-c")
        .arg(r#"command -v "$1""#)
        .arg("sh")
        .arg(tool)
        .env("PATH", format!("/usr/bin:{path}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True if every device node in `devices` exists and every program in `tools`
/// is installed; otherwise reports all that are missing through
/// [`unavailable`] (fail when required, else `skipped: ...`) and returns false.
#[track_caller]
pub fn have(devices: &[&str], tools: &[&str]) -> bool {
    let mut missing: Vec<String> = devices
        .iter()
        .filter(|d| !Path::new(d).exists())
        .map(|d| format!("{d} is absent"))
        .collect();
    missing.extend(
        tools
            .iter()
            .filter(|t| !tool_installed(t))
            .map(|t| format!("{t} is not installed")),
    );
    if missing.is_empty() {
        return true;
    }
    unavailable(&missing.join(", "))
}

/// [`have`] for one program.
#[track_caller]
pub fn have_tool(tool: &str) -> bool {
    have(&[], &[tool])
}

/// [`have`] for one device node.
#[track_caller]
pub fn have_device(path: &str) -> bool {
    have(&[path], &[])
}

//! The demo volume stack: three sparse backing files under a local directory,
//! a striped device over them, a linear device on the rest of one file, and a
//! stacked device mixing linear-on-striped with zero and error ranges.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use udm_core::{DevRef, Engine};

/// Where `udmd --demo` puts its files (and sockets) unless given a directory.
pub const DEFAULT_DIR: &str = "udm-demo";

pub const FILE_MIB: u64 = 256;
const STRIPE_SECTORS: u64 = 200 << 11; // 200 MiB of each file go to the stripes

/// Create the backing files (if missing) and the demo devices.
pub fn build(engine: &Engine, dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for i in 0..3 {
        let p = dir.join(format!("disk{i}.img"));
        if !p.exists() {
            std::fs::File::create(&p)?.set_len(FILE_MIB << 20)?;
        }
        files.push(std::fs::canonicalize(&p)?);
    }
    let f = |i: usize| files[i].display().to_string();
    let striped = format!(
        "0 {} striped 3 128 {} 0 {} 0 {} 0",
        STRIPE_SECTORS * 3,
        f(0),
        f(1),
        f(2)
    );
    let rest = (FILE_MIB << 11) - STRIPE_SECTORS;
    let linear = format!("0 {rest} linear {} {STRIPE_SECTORS}", f(0));
    let mut made = Vec::new();
    for (name, table) in [("demo-striped", striped), ("demo-linear", linear)] {
        engine.create(name, None, None)?;
        engine.load_text(&DevRef::name(name), &table, false)?;
        engine.resume(&DevRef::name(name), false)?;
        made.push(name.to_string());
    }
    let striped_dev = engine.info(&DevRef::name("demo-striped"), false)?.dev;
    let mixed = format!("0 409600 linear {striped_dev} 0\n409600 2048 zero\n411648 2048 error\n");
    engine.create("demo-mixed", None, None)?;
    engine.load_text(&DevRef::name("demo-mixed"), &mixed, false)?;
    engine.resume(&DevRef::name("demo-mixed"), false)?;
    made.push("demo-mixed".to_string());
    Ok(made)
}

/// What the banner shows how to reach.
pub struct Reach<'a> {
    pub dir: &'a Path,
    pub devices: &'a [String],
    pub socket: &'a Path,
    pub nbd_unix: Option<&'a Path>,
    pub mapper_dir: Option<&'a Path>,
}

/// The demo banner: commands that work when pasted in another terminal in
/// udmd's working directory (paths absolute, udmsetup the one next to udmd).
pub fn banner(r: &Reach) -> String {
    let udmsetup = udmsetup_command();
    let mut b = String::new();
    let _ = writeln!(
        b,
        "udm demo: devices {} over files in {}",
        r.devices.join(", "),
        r.dir.display()
    );
    let _ = writeln!(b, "In another terminal, in this directory:");
    let _ = writeln!(b, "  export UDM_SOCKET={}", shell_word(r.socket));
    let _ = writeln!(b, "  {udmsetup} ls");
    let _ = writeln!(b, "  {udmsetup} table");
    let _ = writeln!(b, "  {udmsetup} status demo-striped");
    if let Some(p) = r.nbd_unix {
        let _ = writeln!(
            b,
            "  nbdinfo 'nbd+unix:///demo-striped?socket={}'",
            p.display()
        );
    }
    if let Some(m) = r.mapper_dir {
        let _ = writeln!(
            b,
            "  ls -l {}    # a file per device; losetup -f --show one for a kernel block device",
            shell_word(m)
        );
    }
    let _ = writeln!(b, "Stop with Ctrl-C.");
    b
}

/// udmsetup from the same build as this udmd, relative to the working
/// directory when it is under it (`target/release/udmsetup`), else as found.
fn udmsetup_command() -> String {
    let sibling: Option<PathBuf> = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("udmsetup")))
        .filter(|p| p.exists());
    let Some(p) = sibling else {
        return "udmsetup".to_string();
    };
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf));
    match rel {
        Some(r) if r.parent().is_some_and(|d| !d.as_os_str().is_empty()) => shell_word(&r),
        Some(r) => format!("./{}", shell_word(&r)),
        None => shell_word(&p),
    }
}

/// A path as one shell word: quoted when it holds anything but plain characters.
fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

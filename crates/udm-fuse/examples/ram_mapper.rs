//! Mounts a mapper directory with one RAM device, for trying and measuring the FUSE path
//! by hand (dd, fio, losetup). Unmounts when stdin reaches end of file.
//!
//! `ram_mapper DIR SIZE_MIB [--page-cache] [--threads N]`

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use udm_fuse::ram::{RamFile, RamSource};
use udm_fuse::{mount, MountOptions};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: ram_mapper DIR SIZE_MIB [--page-cache] [--threads N]";
    let dir = PathBuf::from(args.next().context(usage)?);
    let mib: usize = args.next().context(usage)?.parse().context(usage)?;
    let mut opts = MountOptions::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--page-cache" => opts.direct_io = false,
            "--threads" => opts.threads = args.next().context(usage)?.parse().context(usage)?,
            _ => bail!("{usage}"),
        }
    }
    let ram = Arc::new(RamFile::new(mib << 20, false));
    let source = Arc::new(RamSource::new());
    source.add("ram", ram.clone());
    let mnt = mount(&dir, source, opts)?;
    println!("{}", mnt.path().join("ram").display());
    std::io::stdin().read_to_end(&mut Vec::new())?;
    mnt.unmount()?;
    let c = &ram.counters;
    eprintln!(
        "reads {} writes {} flushes {} discards {} write_zeroes {}",
        c.reads.load(Ordering::Relaxed),
        c.writes.load(Ordering::Relaxed),
        c.flushes.load(Ordering::Relaxed),
        c.discards.load(Ordering::Relaxed),
        c.write_zeroes.load(Ordering::Relaxed)
    );
    Ok(())
}

//! A FUSE file as the backing file of a kernel loop device carrying ext4: mkfs, mount,
//! write, umount, `e2fsck -fn`, read back read-only, and find the data in the RAM device.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use common::{loop_available, run, LoopDev, Mounted, Rng};
use parking_lot::Mutex;
use udm_fuse::ram::{RamFile, RamSource};
use udm_fuse::{mount, MountOptions};

const DEV_SIZE: usize = 64 << 20;

/// `losetup -f` picks the first free device; parallel tests could race for it.
static LOOP_LOCK: Mutex<()> = Mutex::new(());

/// The files written into ext4: a few MiB of large files and 100 small ones.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(0x5eed);
    let mut files = Vec::new();
    for i in 0..4 {
        let len = (1 << 20) + 1000 * i + 17;
        files.push((format!("big{i}"), rng.bytes(len)));
    }
    for i in 0..100 {
        let len = 1 + rng.below(6000) as usize;
        files.push((format!("small/f{i:03}"), rng.bytes(len)));
    }
    files
}

fn loop_ext4(fuse_direct_io: bool, losetup_args: &[&str]) -> Result<()> {
    let _serial = LOOP_LOCK.lock();
    let started = Instant::now();
    let ram = Arc::new(RamFile::new(DEV_SIZE, false));
    let source = Arc::new(RamSource::new());
    source.add("disk", ram.clone());
    let fuse_dir = tempfile::tempdir()?;
    let ext_dir = tempfile::tempdir()?;
    let opts = MountOptions {
        direct_io: fuse_direct_io,
        ..MountOptions::default()
    };
    // Drop order (reverse of declaration): ext4 mount, loop device, FUSE mount.
    let fuse = mount(fuse_dir.path(), source.clone(), opts)?;
    let backing = fuse.path().join("disk");
    let lo = LoopDev::attach(&backing, losetup_args)?;
    run("mkfs.ext4", &["-q", "-F", &lo.dev])?;

    let files = files();
    let ext = Mounted::mount(&lo.dev, ext_dir.path(), &[])?;
    fs::create_dir(ext.dir.join("small"))?;
    for (name, data) in &files {
        fs::write(ext.dir.join(name), data).with_context(|| format!("writing {name}"))?;
    }
    run("sync", &[])?;
    ext.unmount()?;
    let flushes = ram.counters.flushes.load(Ordering::SeqCst);
    ensure!(flushes > 0, "ext4 journal commits never reached flush");
    run("e2fsck", &["-fn", &lo.dev]).context("e2fsck -fn must exit 0")?;

    let ext = Mounted::mount(&lo.dev, ext_dir.path(), &["-o", "ro"])?;
    for (name, data) in &files {
        let got = fs::read(ext.dir.join(name)).with_context(|| format!("reading {name}"))?;
        ensure!(&got == data, "{name} differs after remount");
    }
    ext.unmount()?;
    lo.detach()?;
    fuse.unmount()?;

    let content = ram.snapshot();
    ensure!(
        content.iter().any(|&b| b != 0),
        "the RAM device is all zero"
    );
    ensure!(
        content[1080..1082] == [0x53, 0xef],
        "no ext4 superblock magic in RAM"
    );
    // The first KiB of a large file sits somewhere in RAM, block-aligned.
    let needle = &files[0].1[..1024];
    ensure!(
        content.chunks_exact(1024).any(|c| c == needle),
        "file data not found in the RAM device"
    );
    eprintln!(
        "loop+ext4 (fuse direct_io={fuse_direct_io}, losetup {losetup_args:?}): {:?}, \
         {flushes} flushes, {} writes, {} discards, {} write_zeroes",
        started.elapsed(),
        ram.counters.writes.load(Ordering::SeqCst),
        ram.counters.discards.load(Ordering::SeqCst),
        ram.counters.write_zeroes.load(Ordering::SeqCst),
    );
    Ok(())
}

#[test]
fn ext4_on_a_loop_device_over_the_fuse_file() -> Result<()> {
    if !loop_available() {
        return Ok(());
    }
    loop_ext4(true, &[])
}

#[test]
fn ext4_with_loop_direct_io() -> Result<()> {
    if !loop_available() {
        return Ok(());
    }
    loop_ext4(true, &["--direct-io=on"])
}

#[test]
fn ext4_with_the_fuse_page_cache() -> Result<()> {
    if !loop_available() {
        return Ok(());
    }
    loop_ext4(false, &[])
}

#[test]
fn loop_device_is_removed_with_its_guard() -> Result<()> {
    if !loop_available() {
        return Ok(());
    }
    let _serial = LOOP_LOCK.lock();
    let source = Arc::new(RamSource::new());
    source.add("disk", Arc::new(RamFile::new(1 << 20, false)));
    let dir = tempfile::tempdir()?;
    let fuse = mount(dir.path(), source, MountOptions::default())?;
    let dev = {
        let lo = LoopDev::attach(&fuse.path().join("disk"), &[])?;
        let size = run("blockdev", &["--getsize64", &lo.dev])?;
        ensure!(size.trim() == "1048576", "loop size {size}");
        lo.dev.clone()
    };
    let list = run(
        "losetup",
        &["-j", &fuse.path().join("disk").to_string_lossy()],
    )?;
    ensure!(
        !list.contains(&format!("{dev}:")),
        "{dev} still attached: {list}"
    );
    fuse.unmount()?;
    ensure!(!Path::new(&dir.path().join("disk")).exists());
    Ok(())
}

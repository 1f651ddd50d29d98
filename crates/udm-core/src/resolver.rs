//! Resolving the device arguments of a table: udm devices (by number,
//! `/dev/mapper/<name>` or a mapper-directory file, however the path reaches
//! it), in-process named devices, and files and block devices opened once and
//! shared through the pdev cache; with the check that a table never closes a
//! cycle of stacked devices.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use crate::args::parse_u32;
use crate::bio::Bio;
use crate::blockdev::{BlockDev, DevNumber, FileDev};
use crate::device::{Device, OpenHandle};
use crate::engine::Engine;
use crate::error::{DmError, Errno, Result};
use crate::namespace::dev_err;
use crate::sector::Sector;
use crate::target::DevResolver;
use crate::uring::UringDev;

/// Resolves device arguments for one TABLE_LOAD on device `for_dev`.
pub(crate) struct Resolver<'a> {
    engine: &'a Engine,
    for_dev: &'a Arc<Device>,
    /// Stacked udm devices this device's tables already hold: like the kernel's
    /// per-device table_devices list, each is opened once per mapped device, however
    /// many lines (or live and staged tables) name it.
    held: parking_lot::Mutex<Vec<Arc<dyn BlockDev>>>,
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(engine: &'a Engine, for_dev: &'a Arc<Device>) -> Self {
        let mut held = Vec::new();
        let tables = [for_dev.active.load_full(), for_dev.inactive.lock().clone()];
        for t in tables.iter().flatten() {
            for d in t.devices() {
                if d.udm_device().is_some() {
                    held.push(d.clone());
                }
            }
        }
        Resolver {
            engine,
            for_dev,
            held: parking_lot::Mutex::new(held),
        }
    }
}

impl DevResolver for Resolver<'_> {
    fn open(&self, spec: &str, read_only: bool) -> Result<Arc<dyn BlockDev>> {
        if spec.is_empty() {
            return Err(dev_err(Errno::EINVAL, "no device given"));
        }
        let inner = &self.engine.inner;
        if let Some(d) = inner.named.lock().get(spec) {
            return Ok(Arc::clone(d));
        }
        if let Some(dev) = self.engine.udm_device_for(spec)? {
            if Arc::ptr_eq(&dev, self.for_dev) {
                return Err(dev_err(Errno::EINVAL, "table maps the device onto itself"));
            }
            let mut held = self.held.lock();
            if let Some(h) = held
                .iter()
                .find(|h| h.udm_device().is_some_and(|u| Arc::ptr_eq(u, &dev)))
            {
                return Ok(h.clone());
            }
            // An early check, for an error naming the line; the authoritative one is
            // repeated under the graph lock when the table is staged.
            if reaches(&dev, self.for_dev) {
                return Err(cycle_err());
            }
            let handle = dev.open()?;
            let bd: Arc<dyn BlockDev> = Arc::new(UdmDev { handle });
            held.push(bd.clone());
            return Ok(bd);
        }
        let path = if let Some((ma, mi)) = parse_maj_min(spec) {
            sysfs_dev_path(ma, mi)
                .ok_or_else(|| dev_err(Errno::ENXIO, format!("no block device {ma}:{mi}")))?
        } else {
            PathBuf::from(spec)
        };
        let io_err = |e: std::io::Error| {
            let errno = Errno::from_io(&e);
            dev_err(errno, errno.to_string())
        };
        // Each underlying device is opened once: look it up by identity first.
        let key = FileDev::cache_key(&path).map_err(io_err)?;
        if let Some(existing) = reusable(&inner.pdevs.lock(), key, read_only) {
            return Ok(existing);
        }
        // Each open takes its own number, so two racing loads never share one (a
        // number whose open loses the race below is left unused).
        let minor = inner.next_file_minor.fetch_add(1, Ordering::SeqCst);
        let fd = FileDev::open(&path, read_only, inner.config.direct_io, minor).map_err(io_err)?;
        let mut cache = inner.pdevs.lock();
        // Another load may have opened it meanwhile.
        if let Some(existing) = reusable(&cache, fd.key, read_only) {
            return Ok(existing);
        }
        let key = fd.key;
        let dev: Arc<dyn BlockDev> = match &inner.uring {
            Some(ring) => Arc::new(UringDev::new(Arc::new(fd), Arc::clone(ring))),
            None => Arc::new(fd),
        };
        cache.insert(key, Arc::downgrade(&dev));
        cache.retain(|_, w| w.strong_count() > 0);
        Ok(dev)
    }
}

/// A cached pdev that can serve a table opened `read_only` (a read-only pdev
/// cannot serve a read-write table).
fn reusable(
    cache: &HashMap<(u64, u64), Weak<dyn BlockDev>>,
    key: (u64, u64),
    read_only: bool,
) -> Option<Arc<dyn BlockDev>> {
    cache
        .get(&key)
        .and_then(Weak::upgrade)
        .filter(|d| !d.read_only() || read_only)
}

pub(crate) fn cycle_err() -> DmError {
    dev_err(Errno::EINVAL, "table would create a cycle of devices")
}

/// Whether `from` is `target` or reaches it through the tables (live or staged) of
/// stacked devices. An iterative walk that visits each device once: linear in the
/// size of the stacking graph, whatever its depth or sharing.
pub(crate) fn reaches(from: &Arc<Device>, target: &Arc<Device>) -> bool {
    let mut seen: HashSet<*const Device> = HashSet::new();
    let mut todo: Vec<Arc<Device>> = vec![from.clone()];
    while let Some(dev) = todo.pop() {
        if Arc::ptr_eq(&dev, target) {
            return true;
        }
        if !seen.insert(Arc::as_ptr(&dev)) {
            continue;
        }
        // The staged slot first, then the live one: a resume installs the live
        // table before it empties the staged slot, so no edge is missed.
        let staged = dev.inactive.lock().clone();
        let live = dev.active.load_full();
        for t in [live, staged].iter().flatten() {
            for d in t.devices() {
                if let Some(u) = d.udm_device() {
                    if !seen.contains(&Arc::as_ptr(u)) {
                        todo.push(u.clone());
                    }
                }
            }
        }
    }
    false
}

/// `p` with symlinks and `..` resolved; for a path whose last component does not
/// exist, its resolved parent joined with that name.
fn resolve_path(p: &Path) -> Option<PathBuf> {
    if let Ok(r) = std::fs::canonicalize(p) {
        return Some(r);
    }
    let parent = p.parent().filter(|d| !d.as_os_str().is_empty())?;
    Some(std::fs::canonicalize(parent).ok()?.join(p.file_name()?))
}

/// When `mapper` is a mount point and `p` names a file on that mount, the mount
/// and `p`'s (st_dev, st_ino).
fn mapper_file_identity(mapper: &Path, p: &Path) -> Option<(PathBuf, (u64, u64))> {
    let m = std::fs::metadata(mapper).ok()?;
    let up = std::fs::metadata(mapper.join("..")).ok()?;
    if m.dev() == up.dev() {
        return None;
    }
    let f = std::fs::metadata(p).ok()?;
    (f.dev() == m.dev()).then(|| (mapper.to_path_buf(), (f.dev(), f.ino())))
}

fn parse_maj_min(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((parse_u32(a)?, parse_u32(b)?))
}

/// `/dev/<DEVNAME>` of a block device number, from sysfs.
fn sysfs_dev_path(major: u32, minor: u32) -> Option<PathBuf> {
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    Some(Path::new("/dev").join(name))
}

/// Another udm device used as an underlying device (stacking).
struct UdmDev {
    handle: OpenHandle,
}

impl BlockDev for UdmDev {
    fn size_sectors(&self) -> u64 {
        self.handle.device().size_sectors()
    }
    fn dev_number(&self) -> DevNumber {
        self.handle.device().dev_number()
    }
    fn display_name(&self) -> String {
        self.dev_number().to_string()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.handle
            .device()
            .read(Sector::from_bytes(offset), buf)
            .map_err(errno_io)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> std::io::Result<()> {
        self.handle
            .device()
            .write(Sector::from_bytes(offset), buf, fua)
            .map_err(errno_io)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.handle.device().flush().map_err(errno_io)
    }
    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.handle
            .device()
            .discard(Sector::from_bytes(offset), Sector::from_bytes(len))
            .map_err(errno_io)
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_unmap: bool,
        fast_only: bool,
    ) -> std::io::Result<()> {
        let dev = self.handle.device();
        let r = if fast_only {
            dev.write_zeroes_fast_only(
                Sector::from_bytes(offset),
                Sector::from_bytes(len),
                may_unmap,
                false,
            )
        } else {
            dev.write_zeroes(
                Sector::from_bytes(offset),
                Sector::from_bytes(len),
                may_unmap,
                false,
            )
        };
        r.map_err(errno_io)
    }
    fn udm_device(&self) -> Option<&Arc<Device>> {
        Some(self.handle.device())
    }
    fn read_only(&self) -> bool {
        self.handle.device().read_only()
    }
    fn is_async(&self) -> bool {
        true
    }
    fn submit(&self, mut bio: Bio, sector: Sector) {
        bio.sector = sector;
        self.handle.device().submit(bio);
    }
}

fn errno_io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.0)
}

impl Engine {
    /// The udm device a table argument names, if it names one: `major:minor` with
    /// our major, `/dev/mapper/<name>`, or a file of the mapper directory however
    /// the path reaches it (symlinks, `..`, another mount of it).
    pub(crate) fn udm_device_for(&self, spec: &str) -> Result<Option<Arc<Device>>> {
        if let Some((ma, mi)) = parse_maj_min(spec) {
            if ma == self.inner.config.major {
                return match self.inner.ns.lock().by_minor.get(&mi) {
                    Some(d) => Ok(Some(d.clone())),
                    None => Err(dev_err(Errno::ENXIO, format!("no udm device {spec}"))),
                };
            }
            return Ok(None);
        }
        let p = Path::new(spec);
        let mut dirs = vec![PathBuf::from("/dev/mapper")];
        if let Some(d) = &self.inner.config.mapper_dir {
            dirs.push(d.clone());
        }
        // Candidate names: the path as written, then as the filesystem resolves it.
        // The file system is asked before the namespace is locked (the mapper
        // directory's own lookups take that lock).
        let resolved = resolve_path(p);
        let mut names = Vec::new();
        for dir in &dirs {
            let canon_dir = std::fs::canonicalize(dir).ok();
            let mut push = |path: &Path, dir: &Path| {
                if let Some(name) = path.strip_prefix(dir).ok().and_then(|r| r.to_str()) {
                    names.push(name.to_string());
                }
            };
            push(p, dir);
            if let (Some(r), Some(cd)) = (&resolved, &canon_dir) {
                push(r, cd);
            }
        }
        let by_identity = self
            .inner
            .config
            .mapper_dir
            .as_deref()
            .and_then(|d| mapper_file_identity(d, p));
        if let Some(d) = self.find_by_names(&names) {
            return Ok(Some(d));
        }
        // The same file reached through another mount of the mapper directory (a
        // bind mount): match it by device and inode against each device's file.
        if let Some((mapper, id)) = by_identity {
            for dev in self.list() {
                let ours = std::fs::metadata(mapper.join(dev.name()))
                    .ok()
                    .map(|m| (m.dev(), m.ino()));
                if ours == Some(id) {
                    return Ok(Some(dev));
                }
            }
        }
        Ok(None)
    }

    fn find_by_names(&self, names: &[String]) -> Option<Arc<Device>> {
        let ns = self.inner.ns.lock();
        names
            .iter()
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .find_map(|n| ns.by_name.get(n.as_str()).cloned())
    }
}

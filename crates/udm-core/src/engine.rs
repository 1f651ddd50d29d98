//! The engine: one method per dm-ioctl command, with the kernel's semantics and
//! errno values, over the device namespace (`namespace.rs`), the target registry
//! and the resolver of table arguments with its pdev cache (`resolver.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::args::{parse_u32, parse_u64, split_args};
use crate::blockdev::{BlockDev, DevNumber};
use crate::device::{Device, DeviceInfo, Geometry, OpenHandle};
use crate::error::{Errno, Result};
use crate::namespace::{check_name, check_uuid, dev_err, no_device, Namespace};
use crate::registry::Registry;
use crate::resolver::{cycle_err, reaches, Resolver};
use crate::sector::Sector;
use crate::services::Services;
use crate::table::{Table, TargetSpec};
use crate::target::StatusType;
use crate::uring::{IoEngine, Uring};

pub const NAME_MAX: usize = 127;
pub const UUID_MAX: usize = 128;
pub const MINOR_LIMIT: u32 = 1 << 20;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Major number of udm devices (the kernel's dm major is dynamic; 253 is common).
    pub major: u32,
    /// Open underlying files and block devices with O_DIRECT.
    pub direct_io: bool,
    /// Where the FUSE mapper directory is mounted: paths under it name udm devices.
    pub mapper_dir: Option<PathBuf>,
    /// How files and block devices are read and written (io_uring falls back to
    /// synchronous I/O where it cannot be set up). The default is
    /// [`IoEngine::from_env`]: sync unless `UDM_IO_ENGINE=uring`.
    pub io_engine: IoEngine,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            major: 253,
            direct_io: false,
            mapper_dir: None,
            io_engine: IoEngine::from_env(),
        }
    }
}

/// How a command names its device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevRef {
    Name(String),
    Uuid(String),
    Number(DevNumber),
}

impl DevRef {
    pub fn name(s: &str) -> DevRef {
        DevRef::Name(s.to_string())
    }
}

/// The new name or uuid of a rename.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenameTo {
    Name(String),
    Uuid(String),
}

/// Namespace changes, for exports that follow the device list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineEvent {
    Created { id: u64, name: String },
    Removed { id: u64, name: String },
    Renamed { id: u64, old: String, new: String },
}

type Listener = Box<dyn Fn(&EngineEvent) + Send + Sync>;

/// The live and staged tables of a device taken out of the namespace, dropped by
/// the caller once the namespace lock is released.
pub(crate) type Unhashed = (Option<Arc<Table>>, Option<Arc<Table>>);

pub struct EngineInner {
    /// The namespace. Every namespace change (create, remove, rename, deferred
    /// removal, the last close) looks its device up and changes it under this lock;
    /// open counts change under it too, so a last close and a deferred remove
    /// cannot miss each other.
    pub(crate) ns: Mutex<Namespace>,
    /// Serialises the cycle check of a table with its staging, across devices: the
    /// stacking graph only gains edges when a table is staged.
    graph: Mutex<()>,
    registry: Registry,
    pub(crate) config: EngineConfig,
    /// Files and block devices by identity (st_dev, st_ino): each is opened once.
    pub(crate) pdevs: Mutex<HashMap<(u64, u64), Weak<dyn BlockDev>>>,
    /// The io_uring rings, when `config.io_engine` asked for them and they exist.
    pub(crate) uring: Option<Arc<Uring>>,
    /// In-process devices tables may name (`Engine::add_named_device`).
    pub(crate) named: Mutex<HashMap<String, Arc<dyn BlockDev>>>,
    pub(crate) next_file_minor: AtomicU32,
    global_event: Mutex<u64>,
    global_cv: Condvar,
    listeners: Mutex<Vec<Listener>>,
}

/// The device-mapper engine. Cheap to clone (shared).
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

impl EngineInner {
    /// A device by name, for targets that look for another device.
    pub(crate) fn find_by_name(&self, name: &str) -> Option<Arc<Device>> {
        self.ns.lock().by_name.get(name).cloned()
    }

    pub(crate) fn bump_global_event(&self) {
        let mut g = self.global_event.lock();
        *g += 1;
        self.global_cv.notify_all();
    }

    fn notify(&self, ev: EngineEvent) {
        for l in self.listeners.lock().iter() {
            l(&ev);
        }
    }

    /// Take a device out of the namespace. Its tables are returned, to be dropped
    /// by the caller after the namespace lock is released: dropping a table closes
    /// stacked devices, which may complete their deferred removal.
    #[must_use]
    pub(crate) fn unhash(&self, ns: &mut Namespace, dev: &Arc<Device>) -> Unhashed {
        ns.by_name.remove(&*dev.name.read());
        ns.by_minor.remove(&dev.number.minor);
        // The kernel's removal raises the device's event (dm_table_event in
        // __hash_remove): a DEV_WAIT in progress returns 0.
        dev.bump_event();
        dev.removed.store(true, Ordering::SeqCst);
        let inactive = dev.inactive.lock().take();
        let active = dev.active.swap(None);
        dev.kill();
        (active, inactive)
    }

    /// The last close of a device marked for deferred removal removes it. Called
    /// with the namespace lock held (by the closer, which has just dropped the open
    /// count to zero under it); returns the tables for the caller to drop unlocked.
    #[must_use]
    pub(crate) fn deferred_remove_locked(
        &self,
        ns: &mut Namespace,
        dev: &Arc<Device>,
    ) -> Option<Unhashed> {
        let still_ours = ns
            .by_minor
            .get(&dev.number.minor)
            .is_some_and(|d| Arc::ptr_eq(d, dev));
        (still_ours
            && dev.deferred_remove.load(Ordering::SeqCst)
            && dev.open_count.load(Ordering::SeqCst) == 0)
            .then(|| self.unhash(ns, dev))
    }

    /// What follows a deferred removal, once the namespace lock is released.
    pub(crate) fn deferred_removed(&self, dev: &Arc<Device>, tables: Unhashed) {
        drop(tables);
        tracing::info!(name = %dev.name(), "deferred remove completed");
        self.bump_global_event();
        self.notify(EngineEvent::Removed {
            id: dev.id,
            name: dev.name(),
        });
    }
}

/// What TARGET_MSG produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageReply {
    pub info: DeviceInfo,
    pub reply: Option<String>,
}

/// One line of TABLE_STATUS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusLine {
    pub start: u64,
    pub len: u64,
    pub target_type: String,
    pub text: String,
}

impl Engine {
    pub fn new(registry: Registry, config: EngineConfig) -> Engine {
        let uring = crate::uring::for_config(&config);
        Engine {
            inner: Arc::new(EngineInner {
                ns: Mutex::new(Namespace::default()),
                graph: Mutex::new(()),
                registry,
                config,
                pdevs: Mutex::new(HashMap::new()),
                uring,
                named: Mutex::new(HashMap::new()),
                next_file_minor: AtomicU32::new(0),
                global_event: Mutex::new(0),
                global_cv: Condvar::new(),
                listeners: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Let tables name an in-process device (a RAM disk, a fault injector, ...)
    /// by `name`, before any path is tried: for tests of targets and embedders.
    pub fn add_named_device(&self, name: &str, dev: Arc<dyn BlockDev>) {
        self.inner.named.lock().insert(name.to_string(), dev);
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Call `f` on every namespace change (create, remove, rename).
    pub fn subscribe(&self, f: impl Fn(&EngineEvent) + Send + Sync + 'static) {
        self.inner.listeners.lock().push(Box::new(f));
    }

    /// The global event counter (bumped by create, remove, rename, table swaps and device events).
    pub fn global_event_nr(&self) -> u64 {
        *self.inner.global_event.lock()
    }

    /// Block until the global event counter differs from `seen` or `timeout` passes.
    pub fn wait_global_event(&self, seen: u64, timeout: Duration) -> u64 {
        let mut g = self.inner.global_event.lock();
        if *g == seen {
            self.inner.global_cv.wait_for(&mut g, timeout);
        }
        *g
    }

    /// Daemon shutdown: release every held I/O (it fails with ESHUTDOWN) so that
    /// exports can close even while devices are suspended.
    pub fn shutdown(&self) {
        for dev in self.list() {
            dev.kill();
        }
    }

    /// Find a device; ENXIO when there is none.
    pub fn device(&self, r: &DevRef) -> Result<Arc<Device>> {
        let ns = self.inner.ns.lock();
        ns.find(r, self.inner.config.major)
            .ok_or_else(|| no_device(r))
    }

    /// Every device, sorted by name (LIST_DEVICES order).
    pub fn list(&self) -> Vec<Arc<Device>> {
        self.inner.ns.lock().by_name.values().cloned().collect()
    }

    /// DEV_CREATE: a device with no tables. EBUSY for a name or uuid in use; ENXIO
    /// for a requested minor that is taken or out of range.
    pub fn create(&self, name: &str, uuid: Option<&str>, minor: Option<u32>) -> Result<DeviceInfo> {
        check_name(name)?;
        let uuid = uuid.unwrap_or("");
        check_uuid(uuid)?;
        let dev = {
            let mut ns = self.inner.ns.lock();
            if ns.by_name.contains_key(name) {
                return Err(dev_err(
                    Errno::EBUSY,
                    format!("a device named '{name}' already exists"),
                ));
            }
            if !uuid.is_empty() && ns.by_name.values().any(|d| *d.uuid.read() == uuid) {
                return Err(dev_err(
                    Errno::EBUSY,
                    format!("a device with uuid '{uuid}' already exists"),
                ));
            }
            let minor = match minor {
                Some(m) if m >= MINOR_LIMIT || ns.by_minor.contains_key(&m) => {
                    return Err(dev_err(
                        Errno::ENXIO,
                        format!("minor {m} is taken or out of range"),
                    ));
                }
                Some(m) => m,
                None => (0..MINOR_LIMIT)
                    .find(|m| !ns.by_minor.contains_key(m))
                    .ok_or_else(|| dev_err(Errno::ENXIO, "no free minor"))?,
            };
            let number = DevNumber::new(self.inner.config.major, minor);
            let dev = Arc::new_cyclic(|me| {
                Device::new(
                    minor as u64,
                    number,
                    name.to_string(),
                    uuid.to_string(),
                    Arc::downgrade(&self.inner),
                    me.clone(),
                )
            });
            ns.by_name.insert(name.to_string(), dev.clone());
            ns.by_minor.insert(minor, dev.clone());
            dev
        };
        tracing::info!(name, dev = %dev.number, "device created");
        self.inner.bump_global_event();
        self.inner.notify(EngineEvent::Created {
            id: dev.id,
            name: name.to_string(),
        });
        Ok(dev.info(false))
    }

    /// DEV_REMOVE. An open device is EBUSY, or with `deferred` is removed at last close
    /// (the returned info then has `deferred_remove`). Returns None when removed now.
    pub fn remove(&self, r: &DevRef, deferred: bool) -> Result<Option<DeviceInfo>> {
        let (dev, tables) = {
            let mut ns = self.inner.ns.lock();
            let dev = ns
                .find(r, self.inner.config.major)
                .ok_or_else(|| no_device(r))?;
            if dev.open_count.load(Ordering::SeqCst) > 0 {
                if deferred {
                    dev.deferred_remove.store(true, Ordering::SeqCst);
                    drop(ns);
                    return Ok(Some(dev.info(false)));
                }
                return Err(dev_err(
                    Errno::EBUSY,
                    format!(
                        "device '{}' is open ({} openers)",
                        dev.name(),
                        dev.open_count.load(Ordering::SeqCst)
                    ),
                ));
            }
            let tables = self.inner.unhash(&mut ns, &dev);
            (dev, tables)
        };
        drop(tables);
        tracing::info!(name = %dev.name(), "device removed");
        self.inner.bump_global_event();
        self.inner.notify(EngineEvent::Removed {
            id: dev.id,
            name: dev.name(),
        });
        Ok(None)
    }

    /// REMOVE_ALL: remove every closed device, repeating while that makes progress
    /// (so stacks unwind); with `deferred`, mark the busy ones.
    pub fn remove_all(&self, deferred: bool) {
        loop {
            let mut progress = false;
            for dev in self.list() {
                if dev.open_count.load(Ordering::SeqCst) == 0 {
                    let r = DevRef::Number(dev.number);
                    if self.remove(&r, false).is_ok() {
                        progress = true;
                    }
                }
            }
            if !progress {
                break;
            }
        }
        if deferred {
            // Under the namespace lock: open counts only drop to zero under it, so
            // no device is marked after its last close.
            let ns = self.inner.ns.lock();
            for dev in ns.by_name.values() {
                if dev.open_count.load(Ordering::SeqCst) > 0 {
                    dev.deferred_remove.store(true, Ordering::SeqCst);
                }
            }
        }
    }

    /// `@cancel_deferred_remove`.
    fn cancel_deferred_remove(&self, dev: &Arc<Device>) -> Result<()> {
        let _ns = self.inner.ns.lock();
        if dev.is_removed() {
            return Err(dev_err(Errno::EBUSY, "device is already being removed"));
        }
        dev.deferred_remove.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// DEV_RENAME: the old device is looked up by name only.
    pub fn rename(&self, old: &str, to: &RenameTo) -> Result<DeviceInfo> {
        let (dev, ev) = {
            let mut ns = self.inner.ns.lock();
            let r = DevRef::name(old);
            let dev = ns
                .find(&r, self.inner.config.major)
                .ok_or_else(|| no_device(&r))?;
            let ev = match to {
                RenameTo::Name(new) => {
                    check_name(new)?;
                    if ns.by_name.contains_key(new.as_str()) {
                        return Err(dev_err(
                            Errno::EBUSY,
                            format!("a device named '{new}' already exists"),
                        ));
                    }
                    ns.by_name.remove(old);
                    ns.by_name.insert(new.clone(), dev.clone());
                    *dev.name.write() = new.clone();
                    Some(EngineEvent::Renamed {
                        id: dev.id,
                        old: old.to_string(),
                        new: new.clone(),
                    })
                }
                RenameTo::Uuid(u) => {
                    if u.is_empty() {
                        return Err(dev_err(Errno::EINVAL, "new uuid is empty"));
                    }
                    check_uuid(u)?;
                    let cur = dev.uuid();
                    if !cur.is_empty() {
                        return Err(dev_err(
                            Errno::EINVAL,
                            format!("unable to change uuid of {old} to {u}: uuid is already set to {cur}"),
                        ));
                    }
                    if ns.by_name.values().any(|d| *d.uuid.read() == *u) {
                        return Err(dev_err(
                            Errno::EBUSY,
                            format!("a device with uuid '{u}' already exists"),
                        ));
                    }
                    *dev.uuid.write() = u.clone();
                    None
                }
            };
            (dev, ev)
        };
        dev.raise_event();
        if let Some(ev) = ev {
            self.inner.notify(ev);
        }
        Ok(dev.info(false))
    }

    /// DEV_SUSPEND with the suspend flag.
    pub fn suspend(&self, r: &DevRef, noflush: bool) -> Result<DeviceInfo> {
        let dev = self.device(r)?;
        let _ctl = dev.ctl.lock();
        dev.suspend(noflush);
        tracing::debug!(name = %dev.name(), noflush, "suspended");
        Ok(dev.info(false))
    }

    /// DEV_SUSPEND without the suspend flag: swap in a staged table, then resume.
    pub fn resume(&self, r: &DevRef, noflush: bool) -> Result<DeviceInfo> {
        let dev = self.device(r)?;
        let _ctl = dev.ctl.lock();
        let swapped = dev.resume(noflush)?;
        tracing::debug!(name = %dev.name(), swapped, "resumed");
        Ok(dev.info(false))
    }

    /// DEV_STATUS.
    pub fn info(&self, r: &DevRef, query_inactive: bool) -> Result<DeviceInfo> {
        Ok(self.device(r)?.info(query_inactive))
    }

    /// DEV_WAIT: block until the device's event counter differs from `event_nr`.
    pub fn wait(&self, r: &DevRef, event_nr: u32, timeout: Option<Duration>) -> Result<DeviceInfo> {
        let dev = self.device(r)?;
        dev.wait_event(event_nr, timeout)?;
        Ok(dev.info(false))
    }

    /// TABLE_LOAD: build and validate the whole table, then stage it in the inactive
    /// slot. A failure leaves both slots as they were.
    pub fn load(&self, r: &DevRef, specs: &[TargetSpec], read_only: bool) -> Result<DeviceInfo> {
        let dev = self.device(r)?;
        let _ctl = dev.ctl.lock();
        let resolver = Resolver::new(self, &dev);
        let services = Services::new(Arc::downgrade(&dev), Arc::downgrade(&self.inner));
        let table = Arc::new(Table::build(
            specs,
            &self.inner.registry,
            &resolver,
            &services,
            read_only,
        )?);
        let old = {
            // The check made while building ran unlocked: another load may have
            // staged a table since that closes a cycle through this one. Check again
            // and stage under the graph lock, so that of two racing loads that would
            // close a cycle, the second sees the first's table.
            let _graph = self.inner.graph.lock();
            for d in table.devices() {
                if let Some(u) = d.udm_device() {
                    if reaches(u, &dev) {
                        drop(_graph);
                        drop(table);
                        return Err(cycle_err());
                    }
                }
            }
            dev.inactive.lock().replace(table)
        };
        // Dropped unlocked: closing stacked devices takes the namespace lock.
        drop(old);
        tracing::debug!(name = %dev.name(), targets = specs.len(), "table loaded");
        Ok(dev.info(false))
    }

    /// Parse table text and load it (in-process convenience).
    pub fn load_text(&self, r: &DevRef, text: &str, read_only: bool) -> Result<DeviceInfo> {
        let specs = TargetSpec::parse_text(text)?;
        self.load(r, &specs, read_only)
    }

    /// TABLE_CLEAR: drop the staged table.
    pub fn clear(&self, r: &DevRef) -> Result<DeviceInfo> {
        let dev = self.device(r)?;
        let _ctl = dev.ctl.lock();
        let old = dev.inactive.lock().take();
        drop(old);
        Ok(dev.info(false))
    }

    fn table_of(dev: &Device, inactive: bool) -> Option<Arc<Table>> {
        if inactive {
            dev.inactive.lock().clone()
        } else {
            dev.active.load_full()
        }
    }

    /// TABLE_DEPS: distinct underlying device numbers.
    pub fn deps(&self, r: &DevRef, inactive: bool) -> Result<(DeviceInfo, Vec<DevNumber>)> {
        let dev = self.device(r)?;
        let devs = Self::table_of(&dev, inactive)
            .map(|t| t.devices().iter().map(|d| d.dev_number()).collect())
            .unwrap_or_default();
        Ok((dev.info(inactive), devs))
    }

    /// TABLE_STATUS: the INFO or TABLE line of every target.
    pub fn status(
        &self,
        r: &DevRef,
        inactive: bool,
        kind: StatusType,
    ) -> Result<(DeviceInfo, Vec<StatusLine>)> {
        let dev = self.device(r)?;
        let lines = Self::table_of(&dev, inactive)
            .map(|t| {
                t.status_lines(kind)
                    .into_iter()
                    .map(|(start, len, ty, text)| StatusLine {
                        start: start.get(),
                        len: len.get(),
                        target_type: ty.to_string(),
                        text,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((dev.info(inactive), lines))
    }

    /// LIST_VERSIONS.
    pub fn target_versions(&self) -> Vec<(String, [u32; 3])> {
        self.inner
            .registry
            .list()
            .map(|t| (t.name.to_string(), t.version))
            .collect()
    }

    /// GET_TARGET_VERSION: EINVAL for an unknown type.
    pub fn target_version(&self, name: &str) -> Result<[u32; 3]> {
        self.inner
            .registry
            .get(name)
            .map(|t| t.version)
            .ok_or_else(|| dev_err(Errno::EINVAL, format!("unknown target type '{name}'")))
    }

    /// TARGET_MSG: `@` messages go to the core, others to the live target at `sector`.
    pub fn message(&self, r: &DevRef, sector: u64, msg: &str) -> Result<MessageReply> {
        let dev = self.device(r)?;
        let argv = split_args(msg);
        let Some(first) = argv.first() else {
            return Err(dev_err(Errno::EINVAL, "empty message"));
        };
        if first.starts_with('@') {
            return match (first.as_str(), argv.len()) {
                // udm's own: the live table's I/O hints, which a kernel's dm
                // gives through the block device (BLKRAGET, queue limits).
                ("@udm_io_hints", 1) => {
                    let t = dev.active.load_full().ok_or_else(|| {
                        dev_err(Errno::EINVAL, "no live table to send the message to")
                    })?;
                    let h = t.io_hints();
                    Ok(MessageReply {
                        info: dev.info(false),
                        reply: Some(format!(
                            "read_ahead {} io_min {} io_opt {}",
                            t.read_ahead_sectors(),
                            h.io_min,
                            h.io_opt
                        )),
                    })
                }
                ("@cancel_deferred_remove", 1) => {
                    self.cancel_deferred_remove(&dev)?;
                    Ok(MessageReply {
                        info: dev.info(false),
                        reply: None,
                    })
                }
                _ => Err(dev_err(
                    Errno::EINVAL,
                    format!("unsupported message sent to DM core: {first}"),
                )),
            };
        }
        let Some(table) = dev.active.load_full() else {
            return Err(dev_err(
                Errno::EINVAL,
                "no live table to send the message to",
            ));
        };
        let Some(i) = table.lookup(Sector(sector)) else {
            return Err(dev_err(
                Errno::EINVAL,
                format!("sector {sector} is beyond the end of the device"),
            ));
        };
        let reply = table.targets()[i].target.message(&argv)?;
        Ok(MessageReply {
            info: dev.info(false),
            reply,
        })
    }

    /// DEV_SET_GEOMETRY: `"<cyl> <heads> <sectors> <start>"`.
    pub fn set_geometry(&self, r: &DevRef, text: &str) -> Result<()> {
        let dev = self.device(r)?;
        let w = split_args(text);
        let bad = || dev_err(Errno::EINVAL, format!("invalid geometry '{text}'"));
        if w.len() != 4 {
            return Err(bad());
        }
        let cyl = parse_u32(&w[0]).filter(|&v| v <= 65535).ok_or_else(bad)?;
        let heads = parse_u32(&w[1]).filter(|&v| v <= 255).ok_or_else(bad)?;
        let sectors = parse_u32(&w[2]).filter(|&v| v <= 255).ok_or_else(bad)?;
        let start = parse_u64(&w[3]).ok_or_else(bad)?;
        *dev.geometry.lock() = Some(Geometry {
            cylinders: cyl,
            heads,
            sectors,
            start,
        });
        Ok(())
    }

    /// The geometry set on a device, if any.
    pub fn geometry(&self, r: &DevRef) -> Result<Option<Geometry>> {
        Ok(*self.device(r)?.geometry.lock())
    }

    /// Open a device for I/O (counted in its open count until the handle drops).
    pub fn open(&self, r: &DevRef) -> Result<OpenHandle> {
        let ns = self.inner.ns.lock();
        let dev = ns
            .find(r, self.inner.config.major)
            .ok_or_else(|| no_device(r))?;
        dev.open_locked()
    }
}

//! `udmd --ublk`: every device with a live table is also a kernel block device
//! `/dev/ublkb<N>`, served through the ublk driver; N is the device's minor when that
//! ublk id is free. `<socket dir>/ublk-map` lists `<ublk id> <minor> <name>` per device.
//!
//! A watcher thread follows the engine (woken by its global event counter, at the
//! latest every 200 ms): it adds a ublk device when a device gets a live table, deletes
//! it when the device is removed, and follows size changes. A table swap that keeps the
//! size is invisible to the ublk device: the engine holds requests while the device is
//! suspended and serves them on the new table after resume. A new size is applied with
//! UPDATE_SIZE (Linux 6.16+); older kernels refuse it, and then the ublk device is
//! deleted and added again as soon as nothing holds it exclusively (a mounted
//! filesystem does), keeping its old size until then. Like an NBD connection, the ublk
//! device does not count as an open of the udm device: removing the udm device deletes
//! its ublk device.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use udm_core::{Bio, Device, Engine, Errno, Op};
use udm_ublk::plan::{self, Action, Exported, MapEntry, Wanted};
use udm_ublk::{DeviceSpec, UblkDevice, UblkOptions};

const POLL: Duration = Duration::from_millis(200);
const SECTOR: u64 = 512;

/// The map file for a control socket: `ublk-map` beside it.
pub fn map_path(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("ublk-map")
}

/// A udm device as the ublk export sees it: every request is a bio, submitted on the
/// queue thread, whose completion (on whichever thread ends it) hands the result to the
/// ublk tag. A bio the device holds (suspended, or a `delay` target) holds no thread.
struct DeviceExport(Arc<Device>);

/// A ublk completion, as a bio's.
fn io_done(done: udm_ublk::IoDone) -> impl FnOnce(Result<(), Errno>, Vec<u8>) + Send {
    move |r, buf| done(r.map_err(|e| e.0), buf)
}

/// A ublk completion without data, as a bio's.
fn done(done: udm_ublk::Done) -> impl FnOnce(Result<(), Errno>) + Send {
    move |r| done(r.map_err(|e| e.0))
}

impl udm_ublk::Export for DeviceExport {
    fn read(&self, sector: u64, buf: Vec<u8>, d: udm_ublk::IoDone) {
        self.0
            .submit(Bio::with_buffer(Op::Read, sector, buf, io_done(d)));
    }
    fn write(&self, sector: u64, buf: Vec<u8>, fua: bool, d: udm_ublk::IoDone) {
        let mut bio = Bio::with_buffer(Op::Write, sector, buf, io_done(d));
        bio.fua = fua;
        self.0.submit(bio);
    }
    fn flush(&self, d: udm_ublk::Done) {
        self.0.submit(Bio::without_data(Op::Flush, 0, 0, done(d)));
    }
    fn discard(&self, sector: u64, sectors: u64, d: udm_ublk::Done) {
        let mut bio = Bio::without_data(Op::Discard, sector, sectors, done(d));
        // As Device::discard.
        bio.may_unmap = true;
        self.0.submit(bio);
    }
    fn write_zeroes(
        &self,
        sector: u64,
        sectors: u64,
        may_unmap: bool,
        fua: bool,
        d: udm_ublk::Done,
    ) {
        let mut bio = Bio::without_data(Op::WriteZeroes, sector, sectors, done(d));
        bio.may_unmap = may_unmap;
        bio.fua = fua;
        self.0.submit(bio);
    }
}

/// The running ublk export; dropping it deletes every ublk device it added.
pub struct UblkExports {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Start following `engine`, writing the map to `map_path`.
pub fn start(engine: &Engine, map_path: PathBuf) -> Result<UblkExports, udm_ublk::Error> {
    if !udm_ublk::available() {
        return Err(udm_ublk::Error::NoKernelSupport);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = Watcher {
        engine: engine.clone(),
        map_path,
        opts: UblkOptions::default(),
        entries: BTreeMap::new(),
        map_written: None,
    };
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ublk watcher".into())
        .spawn(move || watcher.run(&stop2))?;
    tracing::info!("ublk export on: devices appear as /dev/ublkb<minor>");
    Ok(UblkExports {
        stop,
        thread: Some(thread),
    })
}

impl Drop for UblkExports {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the ublk watcher panicked");
            }
        }
    }
}

/// One exported device.
struct Entry {
    dev: Arc<Device>,
    generation: u64,
    size_bytes: u64,
    /// None: the export failed, and is retried only when the device changes.
    ublk: Option<UblkDevice>,
    /// A new size is waiting for the ublk device to be free (warned once).
    resize_waits: bool,
}

struct Watcher {
    engine: Engine,
    map_path: PathBuf,
    opts: UblkOptions,
    entries: BTreeMap<u64, Entry>,
    map_written: Option<String>,
}

/// Tells a device from another that later got the same minor. The entry holds an Arc
/// of the device, so its address is not reused while it is exported.
fn generation(dev: &Arc<Device>) -> u64 {
    Arc::as_ptr(dev) as usize as u64
}

/// Whether someone holds the block device exclusively (a mount does).
fn held_exclusively(bdev: &str) -> bool {
    let open = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(bdev);
    matches!(open, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
}

impl Watcher {
    fn run(mut self, stop: &AtomicBool) {
        let mut seen = self.engine.global_event_nr();
        while !stop.load(Ordering::SeqCst) {
            self.sync();
            seen = self.engine.wait_global_event(seen, POLL);
        }
        for (_, e) in std::mem::take(&mut self.entries) {
            Self::remove(e);
        }
        if self.map_written.is_some() {
            let _ = std::fs::remove_file(&self.map_path);
        }
    }

    fn sync(&mut self) {
        let live: Vec<Arc<Device>> = self
            .engine
            .list()
            .into_iter()
            .filter(|d| !d.is_removed() && d.size_sectors() > 0)
            .collect();
        for e in self.entries.values_mut() {
            if e.ublk.as_ref().is_some_and(|u| !u.is_running()) {
                tracing::error!(device = %e.dev.name(), "the ublk device stopped by itself");
                e.ublk = None;
            }
        }
        let wanted: Vec<Wanted> = live
            .iter()
            .map(|d| Wanted {
                key: d.id(),
                generation: generation(d),
                size_bytes: d.size_sectors() * SECTOR,
            })
            .collect();
        let exported: Vec<Exported> = self
            .entries
            .iter()
            .map(|(&key, e)| Exported {
                key,
                generation: e.generation,
                size_bytes: e.size_bytes,
            })
            .collect();
        for action in plan::plan(&wanted, &exported) {
            match action {
                Action::Remove(key) => {
                    if let Some(e) = self.entries.remove(&key) {
                        Self::remove(e);
                    }
                }
                Action::Resize { key, size_bytes } => self.resize(key, size_bytes),
                Action::Add(key) => {
                    if let Some(d) = live.iter().find(|d| d.id() == key) {
                        self.add(d.clone());
                    }
                }
            }
        }
        self.write_map();
    }

    fn add(&mut self, dev: Arc<Device>) {
        let name = dev.name();
        let size_bytes = dev.size_sectors() * SECTOR;
        let spec = DeviceSpec {
            name: name.clone(),
            preferred_id: u32::try_from(dev.id()).ok(),
            size_bytes,
            read_only: dev.read_only(),
        };
        let export = Arc::new(DeviceExport(dev.clone()));
        let ublk = match UblkDevice::start(spec, export, self.opts) {
            Ok(u) => {
                tracing::info!(device = %name, ublk = u.id(), bdev = %u.bdev_path(), size_bytes, "exported over ublk");
                Some(u)
            }
            Err(e) => {
                tracing::error!(device = %name, error = %e, "cannot export over ublk");
                None
            }
        };
        self.entries.insert(
            dev.id(),
            Entry {
                generation: generation(&dev),
                dev,
                size_bytes,
                ublk,
                resize_waits: false,
            },
        );
    }

    fn remove(e: Entry) {
        if let Some(u) = e.ublk {
            tracing::info!(device = %e.dev.name(), ublk = u.id(), "deleting the ublk device");
            u.stop();
        }
    }

    fn resize(&mut self, key: u64, size_bytes: u64) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let name = e.dev.name();
        let readd = match &e.ublk {
            None => true,
            Some(u) => match u.resize(size_bytes) {
                Ok(()) => {
                    tracing::info!(device = %name, ublk = u.id(), size_bytes, "ublk device resized");
                    e.size_bytes = size_bytes;
                    false
                }
                Err(err) if held_exclusively(&u.bdev_path()) => {
                    if !e.resize_waits {
                        tracing::warn!(
                            device = %name, bdev = %u.bdev_path(), error = %err,
                            "the device changed size but the kernel cannot resize a ublk device; \
                             it keeps its old size until it is no longer in use, then it is re-added"
                        );
                        e.resize_waits = true;
                    }
                    false
                }
                Err(err) => {
                    tracing::info!(device = %name, error = %err, "re-adding the ublk device with its new size");
                    true
                }
            },
        };
        if readd {
            if let Some(e) = self.entries.remove(&key) {
                let dev = e.dev.clone();
                Self::remove(e);
                self.add(dev);
            }
        }
    }

    fn write_map(&mut self) {
        let entries: Vec<MapEntry> = self
            .entries
            .iter()
            .filter_map(|(&minor, e)| {
                e.ublk.as_ref().map(|u| MapEntry {
                    ublk_id: u.id(),
                    minor,
                    name: e.dev.name(),
                })
            })
            .collect();
        let text = plan::map_text(&entries);
        // Nothing is written before the first export: the socket directory may not exist yet.
        if self.map_written.as_ref() == Some(&text)
            || (self.map_written.is_none() && text.is_empty())
        {
            return;
        }
        let tmp = self.map_path.with_extension("tmp");
        let written =
            std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &self.map_path));
        match written {
            Ok(()) => self.map_written = Some(text),
            Err(e) => {
                tracing::warn!(path = %self.map_path.display(), error = %e, "cannot write the ublk map");
                // Not retried until the map changes.
                self.map_written = Some(text);
            }
        }
    }
}

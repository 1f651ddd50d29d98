//! The kernel side: one ublk device per [`UblkDevice`], added, started, resized and
//! deleted on a thread of its own, because libublk's control ring is thread-local
//! (moving a `UblkCtrl` across threads panics in libublk 0.4.x).

mod queue;

use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::io::UblkDev;
use libublk::{sys, UblkError, UblkFlags};

use crate::{available, bdev_path, DeviceSpec, Error, Export, UblkOptions};

/// Largest discard or write-zeroes request the kernel sends us, sectors (1 GiB).
const MAX_DISCARD_SECTORS: u32 = 1 << 21;

enum Command {
    Resize(u64, mpsc::Sender<Result<(), String>>),
    Stop,
}

/// A ublk device serving one [`Export`] as `/dev/ublkb<id>`. Dropping it stops and
/// deletes the device; this waits for requests in flight, so it blocks while the
/// export holds requests (a suspended device) until they complete.
pub struct UblkDevice {
    id: u32,
    name: String,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl UblkDevice {
    /// Add a ublk device for `export` and start serving it. Returns once the kernel
    /// has assigned the id; `/dev/ublkb<id>` appears when the device has started
    /// (the kernel reads the partition table first), shortly after.
    pub fn start(
        spec: DeviceSpec,
        export: Arc<dyn Export>,
        opts: UblkOptions,
    ) -> Result<UblkDevice, Error> {
        if !available() {
            return Err(Error::NoKernelSupport);
        }
        if spec.size_bytes == 0 || spec.size_bytes % 512 != 0 {
            return Err(Error::BadSize(spec.size_bytes));
        }
        let (added_tx, added_rx) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel();
        let name = spec.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ublk {name}"))
            .spawn(move || device_thread(spec, export, opts, added_tx, command_rx))?;
        match added_rx.recv() {
            Ok(Ok(id)) => Ok(UblkDevice {
                id,
                name,
                commands,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Ublk {
                    op: "add",
                    detail: "the device thread exited".into(),
                })
            }
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn bdev_path(&self) -> String {
        bdev_path(self.id)
    }

    /// Whether the device is still served (its thread has not exited, for instance
    /// after a failed start).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Change the size with UPDATE_SIZE (Linux 6.16+). An older kernel refuses it;
    /// the device then has to be deleted and added again.
    pub fn resize(&self, size_bytes: u64) -> Result<(), Error> {
        if size_bytes == 0 || size_bytes % 512 != 0 {
            return Err(Error::BadSize(size_bytes));
        }
        let gone = || Error::Device {
            id: self.id,
            what: "is not running".into(),
        };
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::Resize(size_bytes, tx))
            .map_err(|_| gone())?;
        rx.recv()
            .map_err(|_| gone())?
            .map_err(|detail| Error::Ublk {
                op: "UPDATE_SIZE",
                detail,
            })
    }

    /// Stop and delete the device (what dropping it does).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(device = %self.name, ublk = self.id, "ublk device thread panicked");
            }
        }
    }
}

impl Drop for UblkDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for UblkDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UblkDevice")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

/// A readable form of a libublk error (its Display drops the errno).
fn describe(e: &UblkError) -> String {
    match e {
        UblkError::OtherError(n) | UblkError::UringIOError(n) => {
            std::io::Error::from_raw_os_error(n.saturating_abs()).to_string()
        }
        UblkError::IOError(io) => io.to_string(),
        other => other.to_string(),
    }
}

fn device_thread(
    spec: DeviceSpec,
    export: Arc<dyn Export>,
    opts: UblkOptions,
    added: mpsc::Sender<Result<u32, Error>>,
    commands: mpsc::Receiver<Command>,
) {
    let ctrl = match add(&spec, &opts) {
        Ok(c) => c,
        Err(e) => {
            let _ = added.send(Err(e));
            return;
        }
    };
    let id = ctrl.dev_info().dev_id;
    let _ = added.send(Ok(id));

    let params = params(&spec);
    let size_bytes = spec.size_bytes;
    let tgt_init = move |dev: &mut UblkDev| {
        dev.tgt.dev_size = size_bytes;
        dev.tgt.params = params;
        dev.tgt.params.basic.max_sectors = dev.dev_info.max_io_buf_bytes >> 9;
        // Room for every tag's command plus the wake-up poll of the queue thread.
        let ring = dev.dev_info.queue_depth.saturating_mul(2);
        dev.tgt.sq_depth = ring;
        dev.tgt.cq_depth = ring;
        Ok(())
    };
    let q_fn = move |qid: u16, dev: &UblkDev| queue::serve(qid, dev, export.clone());
    let commands = Mutex::new(commands);
    let name = spec.name.clone();
    let dev_fn = move |ctrl: &UblkCtrl| {
        tracing::info!(device = %name, ublk = id, bdev = %bdev_path(id), "ublk device started");
        control_loop(ctrl, &commands);
    };
    match ctrl.run_target(tgt_init, q_fn, dev_fn) {
        Ok(_) => tracing::info!(device = %spec.name, ublk = id, "ublk device stopped"),
        Err(e) => {
            tracing::error!(device = %spec.name, ublk = id, error = %describe(&e), "ublk device failed to start")
        }
    }
    // Dropping `ctrl` here deletes the device (DEL_DEV).
}

/// ADD_DEV, with the preferred id if it is free.
fn add(spec: &DeviceSpec, opts: &UblkOptions) -> Result<UblkCtrl, Error> {
    let build = |id: i32| {
        UblkCtrlBuilder::default()
            .name("udm")
            .id(id)
            .nr_queues(opts.queues.max(1))
            .depth(opts.depth.max(1))
            .io_buf_bytes(opts.io_buf_bytes.max(4096))
            .dev_flags(UblkFlags::UBLK_DEV_F_ADD_DEV)
            .build()
    };
    if let Some(id) = spec.preferred_id.and_then(|i| i32::try_from(i).ok()) {
        match build(id) {
            Ok(c) => return Ok(c),
            Err(e) => tracing::debug!(
                device = %spec.name, id, error = %describe(&e),
                "ublk id unavailable, taking another"
            ),
        }
    }
    build(-1).map_err(|e| Error::Ublk {
        op: "ADD_DEV",
        detail: describe(&e),
    })
}

/// The queue limits of a device-mapper-like disk: 512-byte logical blocks, a
/// volatile cache with FUA, discard and write-zeroes.
fn params(spec: &DeviceSpec) -> sys::ublk_params {
    let mut attrs = sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA;
    if spec.read_only {
        attrs |= sys::UBLK_ATTR_READ_ONLY;
    }
    sys::ublk_params {
        types: sys::UBLK_PARAM_TYPE_BASIC | sys::UBLK_PARAM_TYPE_DISCARD,
        basic: sys::ublk_param_basic {
            attrs,
            logical_bs_shift: 9,
            physical_bs_shift: 12,
            io_opt_shift: 12,
            io_min_shift: 12,
            dev_sectors: spec.size_bytes >> 9,
            ..Default::default()
        },
        discard: sys::ublk_param_discard {
            discard_granularity: 4096,
            max_discard_sectors: MAX_DISCARD_SECTORS,
            max_write_zeroes_sectors: MAX_DISCARD_SECTORS,
            max_discard_segments: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The started device's thread: serve resize requests until told to stop, then
/// stop the device (the queue threads see their commands aborted and exit).
fn control_loop(ctrl: &UblkCtrl, commands: &Mutex<mpsc::Receiver<Command>>) {
    let rx = commands.lock().unwrap_or_else(|p| p.into_inner());
    // Until told to stop (or the handle is gone).
    while let Ok(Command::Resize(bytes, reply)) = rx.recv() {
        let r = ctrl
            .update_size(bytes)
            .map(|_| ())
            .map_err(|e| describe(&e));
        let _ = reply.send(r);
    }
    if let Err(e) = ctrl.kill_dev() {
        tracing::warn!(ublk = ctrl.dev_info().dev_id, error = %describe(&e), "ublk STOP_DEV failed");
    }
}

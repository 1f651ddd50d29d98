//! The engine's contracts for targets that own their I/O, shown with small test
//! targets over RAM and fault-injecting devices: a write cloned to every leg, a
//! failed read retried on the other leg from end_io, a bio requeued across a
//! noflush suspend and a reload, completion from a timer thread, the pieces of a
//! split in flight together, the order of the suspend and resume hooks, and a
//! noflush suspend that still waits for writes in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use udm_core::testdev::{Dir, Fault, FaultDev, FaultRule, RamDev};
use udm_core::{
    Bio, BlockDev, DevRef, EndIo, Engine, EngineConfig, Errno, Mapped, Op, Registry, Sector,
    Services, StatusType, TableError, Target, TargetCtx, TargetType,
};

/// Devices the test targets find by name (instead of opening paths).
fn devs() -> &'static Mutex<HashMap<String, Arc<dyn BlockDev>>> {
    static D: OnceLock<Mutex<HashMap<String, Arc<dyn BlockDev>>>> = OnceLock::new();
    D.get_or_init(|| Mutex::new(HashMap::new()))
}

fn put(name: &str, d: Arc<dyn BlockDev>) {
    devs().lock().unwrap().insert(name.to_string(), d);
}

fn get(ctx: &TargetCtx<'_>, name: &str) -> Result<Arc<dyn BlockDev>, TableError> {
    devs()
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .ok_or_else(|| ctx.err(format!("no test device {name}")))
}

// ------------------------------------------------------------------ legs: a mirror shape

/// `legs <dev>...`: writes go to every leg; reads to the first healthy leg, and
/// a failed read marks that leg dead and is retried on the next.
struct Legs {
    legs: Vec<Arc<dyn BlockDev>>,
    dead: Vec<AtomicBool>,
    services: Services,
}

fn legs_ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    let legs = args
        .iter()
        .map(|a| get(ctx, a))
        .collect::<Result<Vec<_>, _>>()?;
    let dead = legs.iter().map(|_| AtomicBool::new(false)).collect();
    Ok(Box::new(Legs {
        legs,
        dead,
        services: ctx.services.clone(),
    }))
}

impl Legs {
    fn healthy(&self) -> Option<usize> {
        self.dead.iter().position(|d| !d.load(Ordering::SeqCst))
    }
}

impl Target for Legs {
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        if bio.op == Op::Read {
            return match self.healthy() {
                Some(i) => {
                    let s = bio.sector;
                    Mapped::Remap(bio, &*self.legs[i], s)
                }
                None => Mapped::Kill(bio, Errno::EIO),
            };
        }
        let s = bio.sector;
        Mapped::Clone(bio, self.legs.iter().map(|l| (&**l, s)).collect())
    }

    fn end_io(&self, bio: Bio, dest: usize, r: Result<(), Errno>) -> EndIo {
        if r.is_ok() {
            return EndIo::Done(bio, r);
        }
        let leg = if bio.op == Op::Read {
            self.healthy().unwrap_or(dest)
        } else {
            dest
        };
        self.dead[leg].store(true, Ordering::SeqCst);
        self.services.raise_event();
        if bio.op == Op::Read {
            EndIo::Retry(bio)
        } else {
            // The other legs have it: the write succeeded.
            EndIo::Done(bio, Ok(()))
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn status(&self, _k: StatusType, out: &mut String) {
        for d in &self.dead {
            out.push(if d.load(Ordering::SeqCst) { 'D' } else { 'A' });
        }
    }
}

// ------------------------------------------------------------------ hold: requeue on demand

/// Test devices whose `hold` targets requeue now.
static REQUEUE: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn requeue(dev: &str, on: bool) {
    let mut r = REQUEUE.lock().unwrap();
    r.retain(|d| d != dev);
    if on {
        r.push(dev.to_string());
    }
}

/// `hold <dev>`: linear, but end_io pushes bios back while REQUEUE names its device.
struct Hold {
    name: String,
    dev: Arc<dyn BlockDev>,
}

fn hold_ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    Ok(Box::new(Hold {
        name: args[0].clone(),
        dev: get(ctx, &args[0])?,
    }))
}

impl Target for Hold {
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        let s = bio.sector;
        Mapped::Remap(bio, &*self.dev, s)
    }
    fn end_io(&self, bio: Bio, _d: usize, r: Result<(), Errno>) -> EndIo {
        if REQUEUE.lock().unwrap().contains(&self.name) {
            EndIo::Requeue(bio)
        } else {
            EndIo::Done(bio, r)
        }
    }
    fn status(&self, _k: StatusType, _o: &mut String) {}
}

// ------------------------------------------------------------------ later: timer completion

/// `later`: reads fill 0xab and complete 20 ms later from the timer thread.
struct Later {
    services: Services,
}

fn later_ctr(ctx: &TargetCtx<'_>, _args: &[String]) -> Result<Box<dyn Target>, TableError> {
    Ok(Box::new(Later {
        services: ctx.services.clone(),
    }))
}

static COMPLETED_ON: Mutex<Option<String>> = Mutex::new(None);

impl Target for Later {
    fn map<'s>(&'s self, mut bio: Bio) -> Mapped<'s> {
        if let Some(d) = bio.data_mut() {
            d.fill(0xab);
        }
        self.services
            .schedule(Instant::now() + Duration::from_millis(20), move || {
                *COMPLETED_ON.lock().unwrap() = std::thread::current().name().map(String::from);
                bio.complete(Ok(()));
            });
        Mapped::Submitted
    }
    fn status(&self, _k: StatusType, _o: &mut String) {}
}

// ------------------------------------------------------------------ hooks: the order of hooks

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
static FAIL_PRERESUME: AtomicBool = AtomicBool::new(false);

fn log(s: String) {
    LOG.lock().unwrap().push(s);
}

/// `hooks <id> <dev>`: linear; records its hooks, I/O ends and drop in LOG.
struct Hooks {
    id: String,
    dev: Arc<dyn BlockDev>,
}

fn hooks_ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    Ok(Box::new(Hooks {
        id: args[0].clone(),
        dev: get(ctx, &args[1])?,
    }))
}

impl Target for Hooks {
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        let s = bio.sector;
        Mapped::Remap(bio, &*self.dev, s)
    }
    fn end_io(&self, bio: Bio, _d: usize, r: Result<(), Errno>) -> EndIo {
        log(format!("{} end_io", self.id));
        EndIo::Done(bio, r)
    }
    fn presuspend(&self) {
        log(format!("{} presuspend", self.id));
    }
    fn postsuspend(&self) {
        log(format!("{} postsuspend", self.id));
    }
    fn preresume(&self) -> Result<(), udm_core::DmError> {
        log(format!("{} preresume", self.id));
        if FAIL_PRERESUME.load(Ordering::SeqCst) {
            return Err(udm_core::DmError::new(Errno::EIO, "refused"));
        }
        Ok(())
    }
    fn resume(&self) {
        log(format!("{} resume", self.id));
    }
    fn status(&self, _k: StatusType, _o: &mut String) {}
}

impl Drop for Hooks {
    fn drop(&mut self) {
        log(format!("{} drop", self.id));
    }
}

// ------------------------------------------------------------------ peer: find another device's target

/// `peer <device name>`: at preresume, finds the named device's `legs` target
/// and remembers how many legs it has (as a snapshot finds its origin).
struct Peer {
    services: Services,
    name: String,
    found: Mutex<Option<usize>>,
}

fn peer_ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    Ok(Box::new(Peer {
        services: ctx.services.clone(),
        name: args[0].clone(),
        found: Mutex::new(None),
    }))
}

impl Target for Peer {
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        Mapped::Kill(bio, Errno::EIO)
    }
    fn preresume(&self) -> Result<(), udm_core::DmError> {
        let other = self
            .services
            .find_device(&self.name)
            .and_then(|d| d.live_table())
            .ok_or_else(|| udm_core::DmError::new(Errno::ENXIO, "no such device"))?;
        let legs = other.targets()[0]
            .target
            .as_any()
            .and_then(|a| a.downcast_ref::<Legs>())
            .ok_or_else(|| udm_core::DmError::new(Errno::EINVAL, "not a legs target"))?;
        *self.found.lock().unwrap() = Some(legs.legs.len());
        Ok(())
    }
    fn status(&self, _k: StatusType, out: &mut String) {
        if let Some(n) = *self.found.lock().unwrap() {
            out.push_str(&format!("{} has {n} legs", self.name));
        }
    }
}

// ------------------------------------------------------------------ plumbing

/// `rr <chunk> <dev>...`: round-robin striping over named test devices.
struct Rr {
    chunk: Sector,
    devs: Vec<Arc<dyn BlockDev>>,
}

fn rr_ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    let chunk = Sector(ctx.u64_arg(args, 0, "chunk")?);
    let devs = args[1..]
        .iter()
        .map(|a| get(ctx, a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(Rr { chunk, devs }))
}

impl Target for Rr {
    fn max_io_len(&self, offset: Sector) -> Sector {
        self.chunk - offset % self.chunk
    }
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        let n = self.devs.len() as u64;
        let c = bio.sector / self.chunk;
        let s = self.chunk * (c / n) + bio.sector % self.chunk;
        let d = &*self.devs[(c % n) as usize];
        Mapped::Remap(bio, d, s)
    }
    fn status(&self, _k: StatusType, _o: &mut String) {}
}

fn engine() -> Engine {
    let mut r = Registry::new();
    for (name, ctr) in [
        ("legs", legs_ctr as udm_core::registry::Constructor),
        ("hold", hold_ctr),
        ("later", later_ctr),
        ("hooks", hooks_ctr),
        ("rr", rr_ctr),
        ("peer", peer_ctr),
    ] {
        r.register(TargetType {
            name,
            version: [1, 0, 0],
            ctr,
        });
    }
    Engine::new(r, EngineConfig::default())
}

fn device(e: &Engine, name: &str, table: &str) -> Arc<udm_core::Device> {
    let r = DevRef::name(name);
    e.create(name, None, None).unwrap();
    e.load_text(&r, table, false).unwrap();
    e.resume(&r, false).unwrap();
    e.device(&r).unwrap()
}

/// Submit an owned-buffer bio; the receiver gets its result and buffer.
fn submit(
    dev: &udm_core::Device,
    op: Op,
    sector: u64,
    buf: Vec<u8>,
) -> mpsc::Receiver<(Result<(), Errno>, Vec<u8>)> {
    let (tx, rx) = mpsc::channel();
    dev.submit(Bio::with_buffer(op, sector, buf, move |r, b| {
        let _ = tx.send((r, b));
    }));
    rx
}

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn writes_are_cloned_to_every_leg_and_failed_reads_retry_on_another() {
    let (a, b) = (RamDev::new(64, 1), RamDev::new(64, 2));
    let fa = FaultDev::new(a.clone());
    put("mir-a", fa.clone());
    put("mir-b", b.clone());
    let e = engine();
    let dev = device(&e, "mir", "0 64 legs mir-a mir-b");

    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    dev.write(8, &data, false).unwrap();
    assert_eq!(&a.contents()[4096..8192], &data[..], "leg a has the write");
    assert_eq!(&b.contents()[4096..8192], &data[..], "leg b has the write");

    fa.add(FaultRule {
        dir: Dir::Reads,
        start: Sector(0),
        len: Sector(64),
        fault: Fault::Fail(Errno::EIO),
    });
    let before = dev.event_nr();
    let mut back = vec![0u8; 4096];
    dev.read(8, &mut back).unwrap();
    assert_eq!(back, data, "the read was retried on leg b");
    let st = e
        .status(&DevRef::name("mir"), false, StatusType::Info)
        .unwrap();
    assert_eq!(st.1[0].text, "DA");
    assert!(dev.event_nr() > before, "the leg failure raised an event");
}

#[test]
fn a_requeued_bio_waits_across_a_noflush_suspend_and_goes_to_the_new_table() {
    let (a, b) = (RamDev::new(64, 3), RamDev::new(64, 4));
    let slow = FaultDev::new(a.clone());
    slow.add(FaultRule {
        dir: Dir::Writes,
        start: Sector(0),
        len: Sector(64),
        fault: Fault::Hold,
    });
    put("rq-a", slow.clone());
    put("rq-b", b.clone());
    let e = engine();
    let r = DevRef::name("rq");
    let dev = device(&e, "rq", "0 64 hold rq-a");

    let rx = submit(&dev, Op::Write, 0, vec![0x5a; 512]);
    while slow.parked() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    requeue("rq-a", true);
    // The suspend waits for the write in flight; release it once the suspend
    // has closed the gate: its end_io then requeues it into the held queue.
    let releaser = {
        let slow = slow.clone();
        let dev = dev.clone();
        std::thread::spawn(move || {
            while !dev.io_blocked() {
                std::thread::sleep(Duration::from_millis(1));
            }
            slow.release();
        })
    };
    e.suspend(&r, true).unwrap();
    releaser.join().unwrap();
    assert!(rx.try_recv().is_err(), "requeued, not completed");

    e.load_text(&r, "0 64 hold rq-b", false).unwrap();
    requeue("rq-a", false);
    e.resume(&r, true).unwrap();
    let (res, _) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(res, Ok(()));
    assert_eq!(
        &b.contents()[..512],
        &[0x5a; 512][..],
        "it went to the new table"
    );
}

#[test]
fn a_bio_requeued_during_a_flushing_suspend_fails() {
    let a = RamDev::new(64, 5);
    let slow = FaultDev::new(a.clone());
    slow.add(FaultRule {
        dir: Dir::Writes,
        start: Sector(0),
        len: Sector(64),
        fault: Fault::Hold,
    });
    put("rqf-a", slow.clone());
    let e = engine();
    let dev = device(&e, "rqf", "0 64 hold rqf-a");
    let rx = submit(&dev, Op::Write, 0, vec![1; 512]);
    while slow.parked() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    requeue("rqf-a", true);
    let t = {
        let slow = slow.clone();
        let dev = dev.clone();
        std::thread::spawn(move || {
            while !dev.io_blocked() {
                std::thread::sleep(Duration::from_millis(1));
            }
            slow.release();
        })
    };
    e.suspend(&DevRef::name("rqf"), false).unwrap();
    t.join().unwrap();
    requeue("rqf-a", false);
    let (res, _) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(res, Err(Errno::EIO));
    e.resume(&DevRef::name("rqf"), false).unwrap();
}

#[test]
fn a_bio_completes_from_a_timer_thread() {
    let e = engine();
    let dev = device(&e, "later", "0 64 later");
    let mut buf = vec![0u8; 1024];
    dev.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xab));
    assert_eq!(COMPLETED_ON.lock().unwrap().as_deref(), Some("udm-timer"));
}

#[test]
fn the_pieces_of_a_split_bio_are_in_flight_together() {
    let legs: Vec<_> = (0..4)
        .map(|i| {
            let f = FaultDev::new(RamDev::new(2048, 10 + i));
            f.add(FaultRule {
                dir: Dir::Reads,
                start: Sector(0),
                len: Sector(2048),
                fault: Fault::Hold,
            });
            put(&format!("sp{i}"), f.clone());
            f
        })
        .collect();
    let e = engine();
    let dev = device(&e, "split", "0 8192 rr 128 sp0 sp1 sp2 sp3");
    // 1 MiB over 4 legs in 64 KiB chunks: 16 pieces, 4 per leg.
    let rx = submit(&dev, Op::Read, 0, vec![0u8; 1 << 20]);
    let start = Instant::now();
    while legs.iter().map(|l| l.parked()).sum::<usize>() < 16 {
        assert!(start.elapsed() < WAIT, "not all 16 pieces were issued");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(rx.try_recv().is_err());
    for l in &legs {
        l.release();
    }
    let (res, _) = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(res, Ok(()));
}

#[test]
fn suspend_and_resume_run_the_hooks_in_the_kernels_order() {
    let a = RamDev::new(64, 20);
    put("hk-a", a.clone());
    let e = engine();
    let r = DevRef::name("hk");
    let dev = device(&e, "hk", "0 64 hooks old hk-a");
    e.load_text(&r, "0 64 hooks new hk-a", false).unwrap();
    LOG.lock().unwrap().clear();
    e.suspend(&r, false).unwrap();
    // Held while suspended: completes after the new table's resume hook.
    let rx = submit(&dev, Op::Write, 0, vec![2; 512]);
    e.resume(&r, false).unwrap();
    rx.recv_timeout(WAIT).unwrap().0.unwrap();
    let got = LOG.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            "old presuspend",
            "old postsuspend",
            "new preresume",
            "new resume",
            "old drop",
            "new end_io"
        ]
    );

    // A failing preresume leaves the device suspended with the old table.
    e.load_text(&r, "0 64 hooks bad hk-a", false).unwrap();
    FAIL_PRERESUME.store(true, Ordering::SeqCst);
    LOG.lock().unwrap().clear();
    let err = e.resume(&r, false).unwrap_err();
    FAIL_PRERESUME.store(false, Ordering::SeqCst);
    assert_eq!(err.errno(), Errno::EIO);
    let info = dev.info(false);
    assert!(info.suspended && !info.inactive_present);
    e.resume(&r, false).unwrap();
    let got = LOG.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            "new presuspend",
            "new postsuspend",
            "bad preresume",
            "bad drop",
            "new preresume",
            "new resume"
        ]
    );
}

#[test]
fn a_noflush_suspend_waits_for_writes_in_flight() {
    let a = RamDev::new(256, 30);
    let slow = FaultDev::new(a.clone());
    slow.add(FaultRule {
        dir: Dir::Writes,
        start: Sector(0),
        len: Sector(256),
        fault: Fault::Delay(Duration::from_millis(300)),
    });
    put("nf-a", slow.clone());
    let e = engine();
    let r = DevRef::name("nf");
    let dev = device(&e, "nf", "0 256 hold nf-a");
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..8u64 {
        let done = done.clone();
        dev.submit(Bio::with_buffer(
            Op::Write,
            i * 8,
            vec![3; 4096],
            move |r, _| {
                assert_eq!(r, Ok(()));
                done.fetch_add(1, Ordering::SeqCst);
            },
        ));
    }
    e.suspend(&r, true).unwrap();
    assert_eq!(
        done.load(Ordering::SeqCst),
        8,
        "suspend returned before writes ended"
    );
    let reached = slow.writes_done.load(Ordering::SeqCst);
    assert_eq!(reached, 8);
    // New writes are held: nothing reaches the device while suspended.
    let rx = submit(&dev, Op::Write, 100, vec![4; 512]);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(slow.writes_done.load(Ordering::SeqCst), reached);
    assert!(rx.try_recv().is_err());
    e.resume(&r, false).unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap().0, Ok(()));
}

#[test]
fn a_target_finds_a_target_of_another_device() {
    put("pr-a", RamDev::new(64, 50));
    put("pr-b", RamDev::new(64, 51));
    let e = engine();
    device(&e, "pr-mirror", "0 64 legs pr-a pr-b");
    device(&e, "pr-peer", "0 8 peer pr-mirror");
    let st = e
        .status(&DevRef::name("pr-peer"), false, StatusType::Info)
        .unwrap();
    assert_eq!(st.1[0].text, "pr-mirror has 2 legs");
    // A device that is not a legs target is refused at resume.
    e.create("pr-bad", None, None).unwrap();
    e.load_text(&DevRef::name("pr-bad"), "0 8 peer pr-peer", false)
        .unwrap();
    let err = e.resume(&DevRef::name("pr-bad"), false).unwrap_err();
    assert_eq!(err.errno(), Errno::EINVAL);
}

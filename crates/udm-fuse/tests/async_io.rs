//! Asynchronous I/O through the mapper directory: requests that a file holds (as a
//! suspended device or a `delay` target holds bios) hold no FUSE thread, so many more of
//! them than the mount has threads are in flight at once while the directory, other files
//! and the blocking path keep working; released, each is answered with the right data.

mod common;

use std::fs::{self, File, OpenOptions};
use std::num::NonZeroU64;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{fuse_available, Rng};
use parking_lot::Mutex;
use udm_fuse::ram::RamFile;
use udm_fuse::{mount, Done, IoDone, MappedFile, MapperSource, MountOptions};

const SIZE: usize = 1 << 20;
const READS: usize = 40;
const WRITES: usize = 16;
const BLOCK: usize = 4096;
/// Generous bound for anything that must not hang (a busy 2-core CI machine).
const BOUND: Duration = Duration::from_secs(30);

enum Held {
    Read(u64, Vec<u8>, IoDone),
    Write(u64, Vec<u8>, IoDone),
    Flush(Done),
}

/// A file whose asynchronous requests wait until the test releases them; its blocking
/// methods (the unaligned path) run at once.
struct HoldingFile {
    data: Mutex<Vec<u8>>,
    held: Mutex<Vec<Held>>,
    arrived: AtomicUsize,
    /// Set when the test ends: requests are no longer held.
    open: AtomicBool,
}

impl HoldingFile {
    fn new(data: Vec<u8>) -> Self {
        HoldingFile {
            data: Mutex::new(data),
            held: Mutex::new(Vec::new()),
            arrived: AtomicUsize::new(0),
            open: AtomicBool::new(false),
        }
    }

    fn hold(&self, h: Held) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        if self.open.load(Ordering::SeqCst) {
            return self.answer(h);
        }
        self.held.lock().push(h);
    }

    /// Carries out and answers every held request, from the calling thread.
    fn release(&self) -> usize {
        let held = std::mem::take(&mut *self.held.lock());
        let n = held.len();
        for h in held {
            self.answer(h);
        }
        n
    }

    fn answer(&self, h: Held) {
        {
            match h {
                Held::Read(off, mut buf, done) => {
                    let r = self.read(off, &mut buf);
                    done(r, buf);
                }
                Held::Write(off, buf, done) => {
                    let r = self.write(off, &buf);
                    done(r, buf);
                }
                Held::Flush(done) => done(Ok(())),
            }
        }
    }
}

impl MappedFile for HoldingFile {
    fn size(&self) -> u64 {
        self.data.lock().len() as u64
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), i32> {
        let off = offset as usize;
        let data = self.data.lock();
        let src = data.get(off..off + buf.len()).ok_or(libc::EINVAL)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&self, offset: u64, buf: &[u8]) -> Result<(), i32> {
        let off = offset as usize;
        let mut data = self.data.lock();
        let dst = data.get_mut(off..off + buf.len()).ok_or(libc::EINVAL)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<(), i32> {
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> Result<(), i32> {
        Err(libc::EOPNOTSUPP)
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> Result<(), i32> {
        Err(libc::EOPNOTSUPP)
    }
    fn async_granularity(&self) -> Option<NonZeroU64> {
        NonZeroU64::new(512)
    }
    fn read_async(&self, offset: u64, buf: Vec<u8>, done: IoDone) {
        self.hold(Held::Read(offset, buf, done));
    }
    fn write_async(&self, offset: u64, buf: Vec<u8>, done: IoDone) {
        self.hold(Held::Write(offset, buf, done));
    }
    fn flush_async(&self, done: Done) {
        self.hold(Held::Flush(done));
    }
}

/// Releases whatever is still held when the test ends, also when it fails: a request
/// left unanswered would keep this process's own threads in the kernel, waiting on a
/// mount that only this process serves, and the test would hang instead of failing.
struct ReleaseOnDrop(Arc<HoldingFile>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.open.store(true, Ordering::SeqCst);
        self.0.release();
    }
}

/// "held" (id 0) and "ram" (id 1).
struct Source {
    held: Arc<HoldingFile>,
    ram: Arc<RamFile>,
}

impl MapperSource for Source {
    fn list(&self) -> Vec<(u64, String)> {
        vec![(0, "held".into()), (1, "ram".into())]
    }
    fn open(&self, id: u64) -> Option<Arc<dyn MappedFile>> {
        match id {
            0 => Some(self.held.clone()),
            1 => Some(self.ram.clone()),
            _ => None,
        }
    }
}

/// What one request thread does.
#[derive(Clone)]
enum Req {
    Read { off: usize, len: usize },
    Write { off: usize, data: Vec<u8> },
    Fsync,
}

type Answers = mpsc::Receiver<(usize, std::io::Result<Option<Vec<u8>>>)>;

/// One thread per request, each on a file of its own; they answer on the channel.
fn start(path: &Path, reqs: &[Req]) -> Answers {
    let (tx, rx) = mpsc::channel();
    for (i, req) in reqs.iter().cloned().enumerate() {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let r = match req {
                Req::Read { off, len } => {
                    let mut buf = vec![0u8; len];
                    f.read_exact_at(&mut buf, off as u64).map(|()| Some(buf))
                }
                Req::Write { off, data } => f.write_all_at(&data, off as u64).map(|()| None),
                Req::Fsync => f.sync_all().map(|()| None),
            };
            let _ = tx.send((i, r));
        });
    }
    rx
}

/// Waits until `n` requests in all have reached `file`.
fn wait_arrived(file: &HoldingFile, n: usize) {
    let t0 = Instant::now();
    while file.arrived.load(Ordering::SeqCst) < n {
        assert!(
            t0.elapsed() < BOUND,
            "only {} of {n} requests reached the file: FUSE threads are held",
            file.arrived.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Releases held requests until every one of `reqs` is answered (an unaligned write
/// comes back with its next step); reads must return `content`, writes must land.
fn finish(file: &HoldingFile, rx: &Answers, reqs: &[Req], content: &[u8]) {
    let t0 = Instant::now();
    let mut answered = 0;
    while answered < reqs.len() {
        file.release();
        let (i, r) = match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(a) => a,
            Err(_) => {
                assert!(t0.elapsed() < BOUND, "a released request hung");
                continue;
            }
        };
        answered += 1;
        let got = r.unwrap_or_else(|e| panic!("request {i}: {e}"));
        if let (Req::Read { off, len }, Some(buf)) = (&reqs[i], got) {
            assert!(
                buf == content[*off..off + len],
                "read {i} returned wrong data"
            );
        }
    }
    let data = file.data.lock();
    for (i, req) in reqs.iter().enumerate() {
        if let Req::Write { off, data: d } = req {
            assert!(data[*off..off + d.len()] == d[..], "write {i} did not land");
            // An unaligned write (a read-modify-write of its edge sectors) keeps the
            // bytes next to it.
            assert!(
                off % 512 == 0
                    || data[off - 7..*off] == content[off - 7..*off]
                        && data[off + d.len()..off + d.len() + 7]
                            == content[off + d.len()..off + d.len() + 7],
                "write {i} changed the bytes around it"
            );
        }
    }
}

fn lseek_data(f: &File, offset: i64) -> std::io::Result<i64> {
    // SAFETY: lseek on an open descriptor touches no memory.
    let r = unsafe { libc::lseek(f.as_raw_fd(), offset, libc::SEEK_DATA) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[test]
fn held_requests_hold_no_fuse_thread() {
    if !fuse_available() {
        return;
    }
    let mut rng = Rng::new(11);
    let content = rng.bytes(SIZE);
    let held = Arc::new(HoldingFile::new(content.clone()));
    let ram = Arc::new(RamFile::new(64 << 10, false));
    let ram_content = rng.bytes(64 << 10);
    ram.fill(0, &ram_content);
    let source = Arc::new(Source {
        held: held.clone(),
        ram,
    });
    let dir = tempfile::tempdir().unwrap();
    // Two threads: far fewer than the requests that will be in flight.
    let opts = MountOptions {
        threads: 2,
        ..MountOptions::default()
    };
    let mnt = mount(dir.path(), source, opts).unwrap();
    let _release = ReleaseOnDrop(held.clone());
    let path = mnt.path().join("held");

    // Reads and writes, aligned and not, all held at once: 40 aligned reads, 16 aligned
    // writes, then 4 reads and 2 writes off the sector grid (each write is held at its
    // first edge read).
    let mut reqs: Vec<Req> = (0..READS)
        .map(|i| Req::Read {
            off: i * BLOCK,
            len: BLOCK,
        })
        .collect();
    reqs.extend((0..WRITES).map(|w| Req::Write {
        off: (READS + w) * BLOCK,
        data: rng.bytes(BLOCK),
    }));
    let odd = READS + WRITES;
    reqs.extend((0..4).map(|k| Req::Read {
        off: (odd + k) * BLOCK + 100,
        len: 1000,
    }));
    reqs.extend((0..2).map(|k| Req::Write {
        off: (odd + 4 + k) * BLOCK + 7,
        data: rng.bytes(3000),
    }));
    let rx = start(&path, &reqs);
    wait_arrived(&held, reqs.len());
    assert!(rx.try_recv().is_err(), "a held request was answered");

    // With every request held: the directory and another file answer (in a thread, so
    // that a hang is reported, not waited out).
    let (ok_tx, ok_rx) = mpsc::channel();
    let (mnt_dir, held_path) = (mnt.path().to_path_buf(), path.clone());
    std::thread::spawn(move || {
        let mut names: Vec<String> = fs::read_dir(&mnt_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let size = fs::metadata(&held_path).unwrap().len();
        let ram = fs::read(mnt_dir.join("ram")).unwrap();
        let _ = ok_tx.send((names, size, ram));
    });
    let (names, size, ram_back) = ok_rx
        .recv_timeout(BOUND)
        .expect("the mount stopped answering while requests were held");
    assert_eq!(names, ["held", "ram"]);
    assert_eq!(size, SIZE as u64);
    assert!(ram_back == ram_content, "the other file read back wrong");
    assert!(rx.try_recv().is_err(), "a held request was answered");
    finish(&held, &rx, &reqs, &content);

    // With reads held, the blocking path of the same file (lseek, which the kernel does
    // not send while a write holds the file) answers.
    let content = held.data.lock().clone();
    let arrived = held.arrived.load(Ordering::SeqCst);
    let reqs = [
        Req::Read { off: 0, len: BLOCK },
        Req::Read {
            off: 333,
            len: 4444,
        },
    ];
    let rx = start(&path, &reqs);
    wait_arrived(&held, arrived + reqs.len());
    let (ok_tx, ok_rx) = mpsc::channel();
    let held_path = path.clone();
    std::thread::spawn(move || {
        let _ = ok_tx.send(lseek_data(&File::open(&held_path).unwrap(), 100).unwrap());
    });
    let data_at = ok_rx
        .recv_timeout(BOUND)
        .expect("lseek hung while reads of the file were held");
    assert_eq!(data_at, 100);
    assert!(rx.try_recv().is_err(), "a held request was answered");
    finish(&held, &rx, &reqs, &content);

    // An fsync is held too (the kernel sends it once no write is in flight).
    let arrived = held.arrived.load(Ordering::SeqCst);
    let reqs = [Req::Read { off: 0, len: BLOCK }, Req::Fsync];
    let rx = start(&path, &reqs);
    wait_arrived(&held, arrived + reqs.len());
    assert!(rx.try_recv().is_err(), "a held request was answered");
    finish(&held, &rx, &reqs, &content);
    drop(mnt);
}

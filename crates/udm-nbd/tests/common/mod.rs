//! Shared test harness: a server on a Unix socket in a temporary directory, real NBD
//! clients found on the PATH, and a hand-written raw protocol client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use udm_nbd::{Export, ExportMap, Server, ServerConfig};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub exports: Arc<ExportMap>,
    pub server: Server,
}

impl Harness {
    pub fn new(exports: &[(&str, Arc<dyn Export>)]) -> Self {
        Self::with_config(exports, ServerConfig::default())
    }

    pub fn with_config(exports: &[(&str, Arc<dyn Export>)], config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nbd.sock");
        let map = Arc::new(ExportMap::new());
        for (name, e) in exports {
            map.insert(name, &format!("test export {name}"), Arc::clone(e));
        }
        let server = Server::new(map.clone(), config);
        server.listen_unix(&sock).unwrap();
        Harness {
            dir,
            sock,
            exports: map,
            server,
        }
    }

    pub fn uri(&self, name: &str) -> String {
        format!("nbd+unix:///{name}?socket={}", self.sock.display())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(&self.sock)
    }
}

/// Whether a client program is installed. Missing, it fails the test under
/// UDM_REQUIRE_CLIENTS=1, else prints "skipped: ..." (see udm-testkit).
#[track_caller]
pub fn have(tool: &str) -> bool {
    udm_testkit::have_tool(tool)
}

/// A client command, with /usr/bin first on PATH (nbdsh needs the system python).
pub fn cmd(tool: &str) -> Command {
    let mut c = Command::new(tool);
    let path = std::env::var("PATH").unwrap_or_default();
    c.env("PATH", format!("/usr/bin:{path}"));
    c
}

/// Run a command that must succeed; returns its output.
pub fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(c: &mut Command) -> String {
    String::from_utf8(run(c).stdout).unwrap()
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ----- the raw client: protocol bytes written by hand from doc/proto.md -----

pub const NBD_OPT_EXPORT_NAME: u32 = 1;
pub const NBD_OPT_ABORT: u32 = 2;
pub const NBD_OPT_LIST: u32 = 3;
pub const NBD_OPT_STARTTLS: u32 = 5;
pub const NBD_OPT_INFO: u32 = 6;
pub const NBD_OPT_GO: u32 = 7;
pub const NBD_OPT_STRUCTURED_REPLY: u32 = 8;
pub const NBD_OPT_LIST_META_CONTEXT: u32 = 9;
pub const NBD_OPT_SET_META_CONTEXT: u32 = 10;
pub const NBD_REP_ACK: u32 = 1;
pub const NBD_REP_SERVER: u32 = 2;
pub const NBD_REP_INFO: u32 = 3;
pub const NBD_REP_META_CONTEXT: u32 = 4;
pub const NBD_REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const NBD_REP_ERR_INVALID: u32 = 0x8000_0003;
pub const NBD_REP_ERR_UNKNOWN: u32 = 0x8000_0006;
pub const NBD_CMD_READ: u16 = 0;
pub const NBD_CMD_WRITE: u16 = 1;
pub const NBD_CMD_DISC: u16 = 2;
pub const NBD_CMD_FLUSH: u16 = 3;
pub const NBD_CMD_TRIM: u16 = 4;
pub const NBD_CMD_CACHE: u16 = 5;
pub const NBD_CMD_WRITE_ZEROES: u16 = 6;
pub const NBD_CMD_BLOCK_STATUS: u16 = 7;
pub const NBD_CMD_FLAG_FUA: u16 = 1;
pub const NBD_CMD_FLAG_NO_HOLE: u16 = 2;
pub const NBD_CMD_FLAG_DF: u16 = 4;
pub const NBD_CMD_FLAG_REQ_ONE: u16 = 8;
pub const NBD_CMD_FLAG_FAST_ZERO: u16 = 16;
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

pub struct Raw {
    pub s: UnixStream,
}

/// An option reply.
#[derive(Debug)]
pub struct OptReply {
    pub magic: u64,
    pub option: u32,
    pub typ: u32,
    pub data: Vec<u8>,
}

/// A reply of the transmission phase, simple or one structured chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Simple {
        error: u32,
        cookie: u64,
    },
    Chunk {
        flags: u16,
        typ: u16,
        cookie: u64,
        payload: Vec<u8>,
    },
}

impl Raw {
    pub fn connect(path: &Path) -> Raw {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw { s }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.s.read_exact(&mut v).unwrap();
        v
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.bytes(2).try_into().unwrap())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.bytes(4).try_into().unwrap())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.bytes(8).try_into().unwrap())
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Read the greeting and answer with client flags.
    pub fn greet(&mut self, client_flags: u32) {
        let g = self.bytes(18);
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..], &[0, 3], "FIXED_NEWSTYLE | NO_ZEROES");
        self.send(&client_flags.to_be_bytes());
    }

    pub fn option(&mut self, option: u32, data: &[u8]) {
        let mut m = b"IHAVEOPT".to_vec();
        m.extend_from_slice(&option.to_be_bytes());
        m.extend_from_slice(&(data.len() as u32).to_be_bytes());
        m.extend_from_slice(data);
        self.send(&m);
    }

    pub fn opt_reply(&mut self) -> OptReply {
        let magic = self.u64();
        let option = self.u32();
        let typ = self.u32();
        let len = self.u32() as usize;
        let data = self.bytes(len);
        assert_eq!(magic, 0x3e889045565a9, "option reply magic");
        OptReply {
            magic,
            option,
            typ,
            data,
        }
    }

    /// Data of NBD_OPT_INFO/GO.
    pub fn info_data(name: &str, requests: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(requests.len() as u16).to_be_bytes());
        for r in requests {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    /// Data of NBD_OPT_{LIST,SET}_META_CONTEXT.
    pub fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q.as_bytes());
        }
        d
    }

    /// Handshake into transmission with NBD_OPT_GO; returns (size, transmission flags).
    pub fn go(&mut self, name: &str, structured: bool, meta: bool) -> (u64, u16) {
        self.greet(3);
        if structured {
            self.option(NBD_OPT_STRUCTURED_REPLY, &[]);
            assert_eq!(self.opt_reply().typ, NBD_REP_ACK);
        }
        if meta {
            self.option(
                NBD_OPT_SET_META_CONTEXT,
                &Self::meta_data(name, &["base:allocation"]),
            );
            let r = self.opt_reply();
            assert_eq!(r.typ, NBD_REP_META_CONTEXT);
            assert_eq!(&r.data[4..], b"base:allocation");
            assert_eq!(self.opt_reply().typ, NBD_REP_ACK);
        }
        self.option(NBD_OPT_GO, &Self::info_data(name, &[]));
        let mut export = None;
        loop {
            let r = self.opt_reply();
            match r.typ {
                NBD_REP_INFO => {
                    let t = u16::from_be_bytes([r.data[0], r.data[1]]);
                    if t == 0 {
                        assert_eq!(r.data.len(), 12);
                        let size = u64::from_be_bytes(r.data[2..10].try_into().unwrap());
                        let flags = u16::from_be_bytes([r.data[10], r.data[11]]);
                        export = Some((size, flags));
                    }
                }
                NBD_REP_ACK => break,
                t => panic!(
                    "NBD_OPT_GO failed with {t:#x}: {:?}",
                    String::from_utf8_lossy(&r.data)
                ),
            }
        }
        export.expect("NBD_INFO_EXPORT")
    }

    pub fn request(&mut self, flags: u16, cmd: u16, cookie: u64, offset: u64, len: u32) {
        self.request_with(flags, cmd, cookie, offset, len, &[]);
    }

    pub fn request_with(
        &mut self,
        flags: u16,
        cmd: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        let mut m = 0x2560_9513u32.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&cmd.to_be_bytes());
        m.extend_from_slice(&cookie.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        m.extend_from_slice(payload);
        self.send(&m);
    }

    /// The next reply header (simple) or chunk (structured), without read data.
    pub fn reply(&mut self) -> Reply {
        match self.u32() {
            0x6744_6698 => {
                let error = self.u32();
                let cookie = self.u64();
                Reply::Simple { error, cookie }
            }
            0x668e_33ef => {
                let flags = self.u16();
                let typ = self.u16();
                let cookie = self.u64();
                let len = self.u32() as usize;
                let payload = self.bytes(len);
                Reply::Chunk {
                    flags,
                    typ,
                    cookie,
                    payload,
                }
            }
            m => panic!("bad reply magic {m:#x}"),
        }
    }

    /// Expect a simple reply and return its error.
    pub fn simple_error(&mut self, cookie: u64) -> u32 {
        match self.reply() {
            Reply::Simple { error, cookie: c } => {
                assert_eq!(c, cookie);
                error
            }
            r => panic!("expected a simple reply, got {r:?}"),
        }
    }

    /// Expect a structured error chunk (final) and return its error and message.
    pub fn chunk_error(&mut self, cookie: u64) -> (u32, String) {
        match self.reply() {
            Reply::Chunk {
                flags,
                typ,
                cookie: c,
                payload,
            } => {
                assert_eq!(c, cookie);
                assert_eq!(typ, 0x8001, "NBD_REPLY_TYPE_ERROR");
                assert_eq!(flags, 1, "NBD_REPLY_FLAG_DONE");
                let e = u32::from_be_bytes(payload[..4].try_into().unwrap());
                let n = u16::from_be_bytes([payload[4], payload[5]]) as usize;
                assert_eq!(payload.len(), 6 + n);
                (e, String::from_utf8(payload[6..].to_vec()).unwrap())
            }
            r => panic!("expected an error chunk, got {r:?}"),
        }
    }

    /// The peer closed the connection: the next read sees end of file (or a reset).
    pub fn expect_closed(&mut self) {
        let mut b = [0u8; 1];
        match self.s.read(&mut b) {
            Ok(0) => {}
            Ok(_) => panic!("expected the server to close, got data"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
                "expected a close, got {e}"
            ),
        }
    }
}

// ----- a test export that can hold reads back and fail on demand -----

use std::sync::{Condvar, Mutex};
use udm_nbd::{BlockSize, Errno, Extent, MemExport};

/// Wraps a [`MemExport`]: reads at `gate_offset` wait until [`TestExport::release`],
/// and reads fail with `fail_reads` when set.
pub struct TestExport {
    pub mem: MemExport,
    pub gate_offset: Option<u64>,
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default)]
struct GateState {
    released: bool,
    waiting: usize,
    fail_reads: Option<Errno>,
}

impl TestExport {
    pub fn new(mem: MemExport, gate_offset: Option<u64>) -> Self {
        TestExport {
            mem,
            gate_offset,
            state: Mutex::new(GateState::default()),
            cv: Condvar::new(),
        }
    }

    pub fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.cv.notify_all();
    }

    pub fn fail_reads(&self, e: Option<Errno>) {
        self.state.lock().unwrap().fail_reads = e;
    }

    /// Wait until `n` reads are held at the gate.
    pub fn wait_for_waiters(&self, n: usize) {
        let mut g = self.state.lock().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while g.waiting < n {
            assert!(
                std::time::Instant::now() < deadline,
                "reads never reached the gate"
            );
            g = self
                .cv
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
}

impl Export for TestExport {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read_only(&self) -> bool {
        Export::read_only(&self.mem)
    }
    fn can_multi_conn(&self) -> bool {
        self.mem.can_multi_conn()
    }
    fn block_size(&self) -> BlockSize {
        Export::block_size(&self.mem)
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        {
            let mut g = self.state.lock().unwrap();
            if let Some(e) = g.fail_reads {
                return Err(e);
            }
            if Some(offset) == self.gate_offset {
                g.waiting += 1;
                self.cv.notify_all();
                while !g.released {
                    g = self.cv.wait(g).unwrap();
                }
                g.waiting -= 1;
            }
        }
        self.mem.read(offset, buf)
    }
    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> Result<(), Errno> {
        self.mem.write(offset, buf, fua)
    }
    fn flush(&self) -> Result<(), Errno> {
        self.mem.flush()
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), Errno> {
        self.mem.trim(offset, len, fua)
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fast_only: bool,
        fua: bool,
    ) -> Result<(), Errno> {
        self.mem.write_zeroes(offset, len, may_trim, fast_only, fua)
    }
    fn cache(&self, offset: u64, len: u64) -> Result<(), Errno> {
        self.mem.cache(offset, len)
    }
    fn extents(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), Errno> {
        self.mem.extents(offset, len, out)
    }
}

/// Opens the gate when dropped, so a failing test ends instead of leaving the server
/// waiting on a held read forever.
pub struct ReleaseOnDrop(pub Arc<TestExport>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

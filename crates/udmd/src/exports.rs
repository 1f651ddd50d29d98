//! Glue between the engine and the exports: every device is an NBD export (named
//! after the device) and a file in the FUSE mapper directory. Byte-granular
//! requests are turned into sector I/O here.

use std::sync::Arc;

use parking_lot::Mutex;
use udm_core::engine::EngineEvent;
use udm_core::{
    Bio, DevNumber, DevRef, Device, Engine, Errno, ExtentKind, Op, OpenHandle, SECTOR_SIZE,
};

const SECTOR: u64 = SECTOR_SIZE;

/// Sector I/O at byte granularity on one device.
#[derive(Clone)]
pub struct ByteDevice {
    dev: Arc<Device>,
}

impl ByteDevice {
    pub fn new(dev: Arc<Device>) -> Self {
        ByteDevice { dev }
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    pub fn size(&self) -> u64 {
        self.dev.size_sectors() * SECTOR
    }

    /// Byte-granular I/O; aligned requests go straight through as sector I/O.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.dev.read_bytes(offset, buf)
    }

    pub fn write(&self, offset: u64, buf: &[u8], fua: bool) -> Result<(), Errno> {
        self.dev.write_bytes(offset, buf, fua)
    }

    /// Whole sectors inside `[offset, offset+len)`: (first sector, count).
    fn inner_sectors(offset: u64, len: u64) -> (u64, u64) {
        let first = offset.div_ceil(SECTOR);
        let end = (offset + len) / SECTOR;
        (first, end.saturating_sub(first))
    }

    /// Discard is advisory: partial sectors at the edges are left alone.
    pub fn discard(&self, offset: u64, len: u64, fua: bool) -> Result<(), Errno> {
        let (s, n) = Self::inner_sectors(offset, len);
        if n > 0 {
            self.dev.discard(s, n)?;
        }
        if fua {
            self.dev.flush()?;
        }
        Ok(())
    }

    /// Zero a byte range: whole sectors with write-zeroes, the edges with writes.
    pub fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_unmap: bool,
        fua: bool,
    ) -> Result<(), Errno> {
        let (s, n) = Self::inner_sectors(offset, len);
        if n == 0 {
            return self.dev.write_bytes(offset, &vec![0u8; len as usize], fua);
        }
        let head = s * SECTOR - offset;
        if head > 0 {
            self.dev
                .write_bytes(offset, &vec![0u8; head as usize], fua)?;
        }
        self.dev.write_zeroes(s, n, may_unmap, fua)?;
        let tail_start = (s + n) * SECTOR;
        let tail = offset + len - tail_start;
        if tail > 0 {
            self.dev
                .write_bytes(tail_start, &vec![0u8; tail as usize], fua)?;
        }
        Ok(())
    }

    /// (bytes, hole, zero) runs from `offset`, covering at least one byte.
    pub fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, bool, bool)>, Errno> {
        let first = offset / SECTOR;
        let last = (offset + len).div_ceil(SECTOR);
        let runs = self.dev.extents(first, last - first)?;
        let mut out = Vec::with_capacity(runs.len());
        let mut pos = first * SECTOR;
        for (kind, sectors) in runs {
            let start = pos.max(offset);
            pos += sectors * SECTOR;
            let end = pos.min(offset + len);
            if end > start {
                let (hole, zero) = match kind {
                    ExtentKind::Data => (false, false),
                    ExtentKind::Zero => (false, true),
                    ExtentKind::Hole => (true, true),
                };
                out.push((end - start, hole, zero));
            }
        }
        if out.is_empty() {
            out.push((len, false, false));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------- NBD

struct NbdExport {
    bytes: ByteDevice,
    size: u64,
}

/// NBD's preferred block size from the table's optimal I/O size (a striped
/// table's full stripe): a power of two from 4 KiB to 2 MiB, else 4 KiB.
fn preferred_block(io_opt: u32) -> u32 {
    if io_opt.is_power_of_two() {
        io_opt.clamp(4096, 2 << 20)
    } else {
        4096
    }
}

fn nbd_err(e: Errno) -> udm_nbd::Errno {
    udm_nbd::Errno(if e == Errno::EROFS { libc::EPERM } else { e.0 })
}

/// The end of a bio without data answers `done`.
fn answer(done: udm_nbd::Done) -> impl FnOnce(Result<(), Errno>) + Send + 'static {
    move |r| done.complete(r.map_err(nbd_err), Vec::new())
}

/// Flush `dev` and answer `done`.
fn flush_then_answer(dev: &Device, done: udm_nbd::Done) {
    dev.submit(Bio::without_data(Op::Flush, 0, 0, answer(done)));
}

impl NbdExport {
    /// NBD_CMD_TRIM as bios: the whole sectors inside the range (discard is
    /// advisory), then with FUA a flush, as [`ByteDevice::discard`] does.
    fn submit_trim(&self, io: &udm_nbd::Io, done: udm_nbd::Done) {
        let dev = &self.bytes.dev;
        let (s, n) = ByteDevice::inner_sectors(io.offset, io.len);
        if n == 0 {
            if io.fua {
                flush_then_answer(dev, done);
            } else {
                done.complete(Ok(()), Vec::new());
            }
            return;
        }
        // Weak: the bio may wait in the device's own queue (a suspend).
        let then_flush = io.fua.then(|| Arc::downgrade(dev));
        let mut bio = Bio::without_data(Op::Discard, s, n, move |r| match (r, then_flush) {
            (Ok(()), Some(dev)) => match dev.upgrade() {
                Some(dev) => flush_then_answer(&dev, done),
                None => done.complete(Err(udm_nbd::Errno::ESHUTDOWN), Vec::new()),
            },
            (r, _) => done.complete(r.map_err(nbd_err), Vec::new()),
        });
        bio.may_unmap = true;
        dev.submit(bio);
    }
}

impl udm_nbd::Export for NbdExport {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        self.bytes.dev.read_only()
    }
    fn can_multi_conn(&self) -> bool {
        // Every connection reaches the same device and a flush is device-wide.
        true
    }
    fn block_size(&self) -> udm_nbd::BlockSize {
        let hints = self
            .bytes
            .dev
            .live_table()
            .map(|t| t.io_hints())
            .unwrap_or_default();
        udm_nbd::BlockSize {
            min: 512,
            preferred: preferred_block(hints.io_opt),
            max: 32 << 20,
        }
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), udm_nbd::Errno> {
        self.bytes.read(offset, buf).map_err(nbd_err)
    }
    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> Result<(), udm_nbd::Errno> {
        self.bytes.write(offset, buf, fua).map_err(nbd_err)
    }
    fn flush(&self) -> Result<(), udm_nbd::Errno> {
        self.bytes.dev.flush().map_err(nbd_err)
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), udm_nbd::Errno> {
        self.bytes.discard(offset, len, fua).map_err(nbd_err)
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fast_only: bool,
        fua: bool,
    ) -> Result<(), udm_nbd::Errno> {
        if fast_only {
            // FAST_ZERO: only when every sector can be zeroed without writing zeros
            // (partial sectors at the edges would need writes); else ENOTSUP.
            let (s, n) = ByteDevice::inner_sectors(offset, len);
            if n * SECTOR != len {
                return Err(udm_nbd::Errno(libc::EOPNOTSUPP));
            }
            return self
                .bytes
                .dev
                .write_zeroes_fast_only(s, n, may_trim, fua)
                .map_err(nbd_err);
        }
        self.bytes
            .write_zeroes(offset, len, may_trim, fua)
            .map_err(nbd_err)
    }
    fn cache(&self, _offset: u64, _len: u64) -> Result<(), udm_nbd::Errno> {
        Ok(())
    }
    fn extents(
        &self,
        offset: u64,
        len: u64,
        out: &mut Vec<udm_nbd::Extent>,
    ) -> Result<(), udm_nbd::Errno> {
        for (length, hole, zero) in self.bytes.extents(offset, len).map_err(nbd_err)? {
            out.push(udm_nbd::Extent { length, hole, zero });
        }
        Ok(())
    }

    /// Sector-aligned requests become bios answered when they end, holding no
    /// thread meanwhile (a suspended device or a delay target keeps them queued);
    /// unaligned byte ranges take the blocking byte path.
    fn submit(&self, io: udm_nbd::Io, buf: Vec<u8>, done: udm_nbd::Done) {
        use udm_nbd::Op as Nbd;
        let dev = &self.bytes.dev;
        let aligned = (io.offset | io.len) % SECTOR == 0;
        let sector = io.offset / SECTOR;
        match io.op {
            Nbd::Read | Nbd::Write if aligned && buf.len() as u64 == io.len => {
                let op = if io.op == Nbd::Read {
                    Op::Read
                } else {
                    Op::Write
                };
                let mut bio = Bio::with_buffer(op, sector, buf, move |r, buf| {
                    done.complete(r.map_err(nbd_err), buf)
                });
                bio.fua = io.fua && op == Op::Write;
                dev.submit(bio);
            }
            Nbd::Flush => flush_then_answer(dev, done),
            Nbd::Trim => self.submit_trim(&io, done),
            Nbd::WriteZeroes if io.fast_only && !aligned => {
                // FAST_ZERO: partial sectors at the edges would need writes.
                done.complete(Err(udm_nbd::Errno(libc::EOPNOTSUPP)), buf);
            }
            Nbd::WriteZeroes if aligned => {
                let mut bio =
                    Bio::without_data(Op::WriteZeroes, sector, io.len / SECTOR, answer(done));
                bio.fua = io.fua;
                bio.may_unmap = io.may_trim;
                bio.fast_only = io.fast_only;
                dev.submit(bio);
            }
            Nbd::Cache => done.complete(Ok(()), buf),
            _ => {
                let mut buf = buf;
                let r = udm_nbd::blocking(self, &io, &mut buf);
                done.complete(r, buf);
            }
        }
    }
}

/// Every udm device, by name, as an NBD export.
pub struct NbdBackend {
    engine: Engine,
}

impl NbdBackend {
    pub fn new(engine: Engine) -> Self {
        NbdBackend { engine }
    }
}

impl udm_nbd::Backend for NbdBackend {
    fn list(&self) -> Vec<(String, String)> {
        self.engine
            .list()
            .iter()
            .filter(|d| d.size_sectors() > 0)
            .map(|d| {
                let desc = format!(
                    "udm device {} ({} sectors)",
                    d.dev_number(),
                    d.size_sectors()
                );
                (d.name(), desc)
            })
            .collect()
    }

    fn open(&self, name: &str) -> Option<Arc<dyn udm_nbd::Export>> {
        let dev = self.engine.device(&DevRef::name(name)).ok()?;
        let bytes = ByteDevice::new(dev);
        let size = bytes.size();
        if size == 0 {
            return None;
        }
        Some(Arc::new(NbdExport { bytes, size }))
    }
}

/// Start an NBD server over the engine; removed devices close their connections.
pub fn start_nbd(engine: &Engine, config: udm_nbd::ServerConfig) -> udm_nbd::Server {
    let server = udm_nbd::Server::new(Arc::new(NbdBackend::new(engine.clone())), config);
    let s2 = server.clone();
    engine.subscribe(move |ev| match ev {
        EngineEvent::Removed { name, .. } | EngineEvent::Renamed { old: name, .. } => {
            s2.close_export(name)
        }
        EngineEvent::Created { .. } => {}
    });
    server
}

// ---------------------------------------------------------------------------- FUSE

struct FuseFile {
    bytes: ByteDevice,
    opens: Mutex<Vec<OpenHandle>>,
}

impl FuseFile {
    /// A FUSE data completion, as a bio's.
    fn io_done(done: udm_fuse::IoDone) -> impl FnOnce(Result<(), Errno>, Vec<u8>) + Send {
        move |r, buf| done(r.map_err(|e| e.0), buf)
    }

    /// A FUSE completion without data, as a bio's.
    fn done(done: udm_fuse::Done) -> impl FnOnce(Result<(), Errno>) + Send {
        move |r| done(r.map_err(|e| e.0))
    }

    /// Zeroes whole sectors with a bio whose completion answers `done`.
    fn submit_zeroes(&self, offset: u64, len: u64, may_unmap: bool, done: udm_fuse::Done) {
        let (sector, sectors) = (offset / SECTOR, len / SECTOR);
        let mut bio = udm_core::Bio::without_data(
            udm_core::Op::WriteZeroes,
            sector,
            sectors,
            Self::done(done),
        );
        bio.may_unmap = may_unmap;
        self.bytes.dev.submit(bio);
    }
}

/// The FUSE side is asynchronous for whole sectors: a request becomes a bio over an owned
/// buffer, and its completion answers FUSE, so a bio that the device holds (suspended, or
/// a `delay` target) holds no thread. Unaligned ranges keep the blocking byte I/O below.
impl udm_fuse::MappedFile for FuseFile {
    fn size(&self) -> u64 {
        self.bytes.size()
    }
    fn read_only(&self) -> bool {
        self.bytes.dev.read_only()
    }
    fn async_granularity(&self) -> Option<std::num::NonZeroU64> {
        std::num::NonZeroU64::new(SECTOR)
    }
    fn read_async(&self, offset: u64, buf: Vec<u8>, done: udm_fuse::IoDone) {
        let op = udm_core::Op::Read;
        let bio = udm_core::Bio::with_buffer(op, offset / SECTOR, buf, Self::io_done(done));
        self.bytes.dev.submit(bio);
    }
    fn write_async(&self, offset: u64, buf: Vec<u8>, done: udm_fuse::IoDone) {
        let op = udm_core::Op::Write;
        let bio = udm_core::Bio::with_buffer(op, offset / SECTOR, buf, Self::io_done(done));
        self.bytes.dev.submit(bio);
    }
    fn flush_async(&self, done: udm_fuse::Done) {
        let op = udm_core::Op::Flush;
        let bio = udm_core::Bio::without_data(op, 0, 0, Self::done(done));
        self.bytes.dev.submit(bio);
    }
    fn discard_async(&self, offset: u64, len: u64, done: udm_fuse::Done) {
        // As `discard`: zeroes that may deallocate.
        self.submit_zeroes(offset, len, true, done);
    }
    fn write_zeroes_async(&self, offset: u64, len: u64, done: udm_fuse::Done) {
        self.submit_zeroes(offset, len, false, done);
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), i32> {
        self.bytes.read(offset, buf).map_err(|e| e.0)
    }
    fn write(&self, offset: u64, buf: &[u8]) -> Result<(), i32> {
        self.bytes.write(offset, buf, false).map_err(|e| e.0)
    }
    fn flush(&self) -> Result<(), i32> {
        self.bytes.dev.flush().map_err(|e| e.0)
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), i32> {
        // A punched hole must read back as zeros, which a discard does not promise.
        self.bytes
            .write_zeroes(offset, len, true, false)
            .map_err(|e| e.0)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), i32> {
        self.bytes
            .write_zeroes(offset, len, false, false)
            .map_err(|e| e.0)
    }
    fn discard_zeroes(&self) -> bool {
        true
    }
    fn seek(&self, offset: u64, kind: udm_fuse::SeekKind) -> Result<u64, i32> {
        let size = self.bytes.size();
        if offset >= size {
            return Err(libc::ENXIO);
        }
        let runs = self.bytes.extents(offset, size - offset).map_err(|e| e.0)?;
        let mut pos = offset;
        for (len, hole, _) in runs {
            let want = match kind {
                udm_fuse::SeekKind::Data => !hole,
                udm_fuse::SeekKind::Hole => hole,
            };
            if want {
                return Ok(pos);
            }
            pos += len;
        }
        match kind {
            udm_fuse::SeekKind::Data => Err(libc::ENXIO),
            udm_fuse::SeekKind::Hole => Ok(size),
        }
    }
    fn opened(&self) {
        if let Ok(h) = self.bytes.dev.open() {
            self.opens.lock().push(h);
        }
    }
    fn released(&self) {
        self.opens.lock().pop();
    }
}

/// Every udm device as a file of the mapper directory; the inode id is the minor.
pub struct FuseSource {
    engine: Engine,
}

impl FuseSource {
    pub fn new(engine: Engine) -> Self {
        FuseSource { engine }
    }
}

impl udm_fuse::MapperSource for FuseSource {
    fn list(&self) -> Vec<(u64, String)> {
        self.engine
            .list()
            .iter()
            .map(|d| (d.id(), d.name()))
            .collect()
    }

    fn open(&self, id: u64) -> Option<Arc<dyn udm_fuse::MappedFile>> {
        let minor = u32::try_from(id).ok()?;
        let major = self.engine.config().major;
        let dev = self
            .engine
            .device(&DevRef::Number(DevNumber::new(major, minor)))
            .ok()?;
        Some(Arc::new(FuseFile {
            bytes: ByteDevice::new(dev),
            opens: Mutex::new(Vec::new()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::preferred_block;

    #[test]
    fn the_preferred_nbd_block_follows_the_full_stripe() {
        assert_eq!(preferred_block(0), 4096);
        assert_eq!(preferred_block(131072), 131072);
        assert_eq!(preferred_block(24576), 4096);
        assert_eq!(preferred_block(512), 4096);
        assert_eq!(preferred_block(1 << 30), 2 << 20);
    }
}

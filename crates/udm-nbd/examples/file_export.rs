//! Serve one file over NBD on a Unix socket (or TCP): the benchmark subject of
//! `bench/nbd-peers.sh`.
//!
//! `file_export FILE SOCKET [--name NAME] [--read-only] [--threads N] [--tcp ADDR]`

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use udm_nbd::{BlockSize, Errno, Export, ExportMap, Extent, Server, ServerConfig};

struct FileExport {
    file: File,
    size: u64,
    read_only: bool,
}

/// Most extents one block-status call reports; the client asks again for the rest.
const MAX_EXTENTS: usize = 1024;

impl FileExport {
    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> Result<(), Errno> {
        // SAFETY: fallocate on an fd we own; it takes no pointers.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(Errno::from_io(&std::io::Error::last_os_error()))
        }
    }

    fn seek(&self, offset: u64, whence: libc::c_int) -> Result<u64, Errno> {
        // SAFETY: lseek on an fd we own; it takes no pointers.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), offset as libc::off_t, whence) };
        if r < 0 {
            Err(Errno::from_io(&std::io::Error::last_os_error()))
        } else {
            Ok(r as u64)
        }
    }

    fn sync(&self, fua: bool) -> Result<(), Errno> {
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

impl Export for FileExport {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn can_multi_conn(&self) -> bool {
        // One page cache behind every connection: a flush anywhere covers all.
        true
    }
    fn block_size(&self) -> BlockSize {
        BlockSize::default()
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        Ok(self.file.read_exact_at(buf, offset)?)
    }
    fn write(&self, offset: u64, buf: &[u8], fua: bool) -> Result<(), Errno> {
        self.file.write_all_at(buf, offset)?;
        self.sync(fua)
    }
    fn flush(&self) -> Result<(), Errno> {
        Ok(self.file.sync_data()?)
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), Errno> {
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            // Trim is advisory: a file system without hole punching ignores it.
            Ok(()) | Err(Errno(libc::EOPNOTSUPP)) => self.sync(fua),
            Err(e) => Err(e),
        }
    }
    fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_trim: bool,
        fast_only: bool,
        fua: bool,
    ) -> Result<(), Errno> {
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let zero = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        let fast = if may_trim {
            self.fallocate(punch, offset, len)
        } else {
            // ZERO_RANGE keeps the blocks; where it is missing (tmpfs), punching and
            // reallocating is just as fast.
            self.fallocate(zero, offset, len).or_else(|_| {
                self.fallocate(punch, offset, len)?;
                self.fallocate(libc::FALLOC_FL_KEEP_SIZE, offset, len)
            })
        };
        match fast {
            Ok(()) => return self.sync(fua),
            Err(_) if fast_only => return Err(Errno::ENOTSUP),
            Err(_) => {}
        }
        let zeroes = vec![0u8; len.min(1 << 20) as usize];
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = (end - at).min(zeroes.len() as u64) as usize;
            self.file.write_all_at(&zeroes[..n], at)?;
            at += n as u64;
        }
        self.sync(fua)
    }
    fn cache(&self, offset: u64, len: u64) -> Result<(), Errno> {
        // SAFETY: posix_fadvise on an fd we own; it takes no pointers.
        let r = unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(Errno(r))
        }
    }
    fn extents(&self, offset: u64, len: u64, out: &mut Vec<Extent>) -> Result<(), Errno> {
        let end = offset + len;
        let mut at = offset;
        let data = |length| Extent {
            length,
            hole: false,
            zero: false,
        };
        let hole = |length| Extent {
            length,
            hole: true,
            zero: true,
        };
        while at < end && out.len() < MAX_EXTENTS {
            let next_data = match self.seek(at, libc::SEEK_DATA) {
                Ok(d) => d.min(end),
                Err(Errno(libc::ENXIO)) => end,
                // No SEEK_DATA here: everything counts as data.
                Err(_) => {
                    out.push(data(end - at));
                    break;
                }
            };
            if next_data > at {
                out.push(hole(next_data - at));
                at = next_data;
                continue;
            }
            let next_hole = self.seek(at, libc::SEEK_HOLE).unwrap_or(end).min(end);
            out.push(data(next_hole.max(at + 1) - at));
            at = next_hole.max(at + 1);
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut name = String::new();
    let mut read_only = false;
    let mut tcp = None;
    let mut config = ServerConfig::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => name = args.next().context("--name needs a value")?,
            "--read-only" => read_only = true,
            "--threads" => {
                config.threads_per_conn = args.next().context("--threads needs a value")?.parse()?
            }
            "--tcp" => tcp = Some(args.next().context("--tcp needs an address")?),
            "-h" | "--help" => {
                println!("usage: file_export FILE SOCKET [--name NAME] [--read-only] [--threads N] [--tcp ADDR]");
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown option {s}"),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [path, socket] = positional.as_slice() else {
        bail!(
            "usage: file_export FILE SOCKET [--name NAME] [--read-only] [--threads N] [--tcp ADDR]"
        );
    };
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    let exports = Arc::new(ExportMap::new());
    exports.insert(
        &name,
        &path.display().to_string(),
        Arc::new(FileExport {
            file,
            size,
            read_only,
        }),
    );
    let server = Server::new(exports, config);
    server.listen_unix(socket)?;
    if let Some(addr) = tcp {
        let bound = server.listen_tcp(&addr)?;
        eprintln!("listening on {bound}");
    }
    loop {
        std::thread::park();
    }
}

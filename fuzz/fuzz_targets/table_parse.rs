//! Table text through the parser, then through validation and binding with every
//! real target type (devices resolve to a small in-memory disk), then a few reads:
//! any input must give a table or a line-numbered error, never a panic.
#![no_main]

use std::io;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use udm_core::target::DevResolver;
use udm_core::{BlockDev, DevNumber, DmError, Errno, Table, TargetSpec};

struct MemDisk;

impl BlockDev for MemDisk {
    fn size_sectors(&self) -> u64 {
        1 << 20
    }
    fn dev_number(&self) -> DevNumber {
        DevNumber::new(7, 0)
    }
    fn display_name(&self) -> String {
        "7:0".into()
    }
    fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64, _fua: bool) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn write_zeroes(
        &self,
        _offset: u64,
        _len: u64,
        _may_unmap: bool,
        _fast_only: bool,
    ) -> io::Result<()> {
        Ok(())
    }
}

struct Resolver(Arc<dyn BlockDev>);

impl DevResolver for Resolver {
    fn open(&self, spec: &str, _read_only: bool) -> Result<Arc<dyn BlockDev>, DmError> {
        if spec.starts_with('/') || spec.contains(':') {
            Ok(self.0.clone())
        } else {
            Err(DmError::new(Errno(libc_enoent()), "no such device"))
        }
    }
}

fn libc_enoent() -> i32 {
    2
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let specs = match TargetSpec::parse_text(text) {
        Ok(s) => s,
        Err(e) => {
            assert!(e.line as usize <= text.split('\n').count());
            return;
        }
    };
    let registry = udm_targets::registry();
    let services = udm_core::Services::detached();
    match Table::build(
        &specs,
        &registry,
        &Resolver(Arc::new(MemDisk)),
        &services,
        false,
    ) {
        Ok(table) => {
            let size = table.size().get();
            assert!(size > 0);
            let _ = table.status_lines(udm_core::StatusType::Table);
            let _ = table.status_lines(udm_core::StatusType::Info);
            let _ = table.status_lines(udm_core::StatusType::Ima);
            // Reads go in without waiting for them (a delay target may hold them
            // for days); dropping the device drops the table, which sends on
            // whatever a target still holds.
            let dev = udm_core::Device::standalone("fuzz", table);
            for probe in [0, size / 3, size.saturating_sub(8)] {
                let n = (size - probe).min(8);
                let buf = vec![0u8; (n * 512) as usize];
                dev.submit(udm_core::Bio::with_buffer(
                    udm_core::Op::Read,
                    probe,
                    buf,
                    |_, _| {},
                ));
            }
            drop(dev);
        }
        Err(e) => {
            assert!(e.line as usize <= specs.iter().map(|s| s.line as usize).max().unwrap_or(0))
        }
    }
});

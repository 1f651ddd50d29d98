//! The persistent exception store's on-disk format (Linux's dm-snap-persistent),
//! byte for byte: the header in chunk 0, metadata areas of little-endian
//! (old_chunk, new_chunk) pairs each followed by the data chunks it describes,
//! the terminator rule and the allocation that skips metadata slots. Only the
//! format and its arithmetic live here; the store that commits through it is
//! built on top.

use thiserror::Error;
use udm_core::Sector;

/// "SnAp", little-endian.
pub const MAGIC: u32 = 0x7041_6e53;
/// `SNAPSHOT_DISK_VERSION`.
pub const VERSION: u32 = 1;
/// Bytes of one exception on disk.
pub const EXCEPTION_BYTES: usize = 16;
/// The first chunk a new store allocates: after the header (0) and area 0 (1).
pub const FIRST_DATA_CHUNK: u64 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DiskError {
    #[error("invalid or corrupt snapshot: magic {0:#010x}")]
    BadMagic(u32),
    #[error("unsupported snapshot version {0}")]
    BadVersion(u32),
    #[error("chunk size {0} is not a power of two of at least one sector")]
    BadChunkSize(u32),
    #[error("metadata area {area} entry {entry}: new chunk {new} is a metadata or header chunk")]
    BadEntry { area: u64, entry: usize, new: u64 },
    #[error("buffer of {got} bytes where {want} were needed")]
    Short { got: usize, want: usize },
}

impl DiskError {
    /// The errno the kernel answers with: ENXIO for a foreign header, EINVAL else.
    pub fn errno(&self) -> udm_core::Errno {
        match self {
            DiskError::BadMagic(_) => udm_core::Errno::ENXIO,
            _ => udm_core::Errno::EINVAL,
        }
    }
}

/// The 16-byte header at the start of chunk 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub valid: bool,
    pub chunk_size: Sector,
}

impl Header {
    pub fn pack(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&u32::from(self.valid).to_le_bytes());
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.chunk_size.get() as u32).to_le_bytes());
        b
    }

    /// `None` for a new store (magic 0: nothing written yet).
    pub fn unpack(b: &[u8]) -> Result<Option<Header>, DiskError> {
        if b.len() < 16 {
            return Err(DiskError::Short {
                got: b.len(),
                want: 16,
            });
        }
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        match word(0) {
            0 => return Ok(None),
            MAGIC => {}
            m => return Err(DiskError::BadMagic(m)),
        }
        if word(8) != VERSION {
            return Err(DiskError::BadVersion(word(8)));
        }
        let chunk = word(12);
        if chunk == 0 || !chunk.is_power_of_two() {
            return Err(DiskError::BadChunkSize(chunk));
        }
        Ok(Some(Header {
            valid: word(4) != 0,
            chunk_size: Sector(u64::from(chunk)),
        }))
    }
}

/// One exception: origin chunk `old` lives in COW chunk `new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Exception {
    pub old: u64,
    pub new: u64,
}

/// Where things are for one chunk size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub chunk_size: Sector,
}

impl Layout {
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_size.bytes() as usize
    }

    /// Exceptions per metadata area (E).
    pub fn per_area(&self) -> u64 {
        (self.chunk_bytes() / EXCEPTION_BYTES) as u64
    }

    /// The chunk holding metadata area `a`: `1 + a * (E + 1)`.
    pub fn area_chunk(&self, a: u64) -> u64 {
        1 + a * (self.per_area() + 1)
    }

    /// Whether `chunk` is a metadata area's chunk.
    pub fn is_metadata(&self, chunk: u64) -> bool {
        chunk % (self.per_area() + 1) == 1
    }

    /// The next free chunk from `next`, skipping a metadata slot.
    pub fn skip_metadata(&self, next: u64) -> u64 {
        if self.is_metadata(next) {
            next + 1
        } else {
            next
        }
    }

    /// Sector of chunk `c` on the COW device.
    pub fn sector(&self, c: u64) -> Sector {
        self.chunk_size * c
    }

    /// Whether a store of `cow` sectors has room for allocating `next_free`
    /// (the kernel refuses when `cow < (next_free + 1) * chunk`).
    pub fn has_room(&self, cow: Sector, next_free: u64) -> bool {
        cow >= self.chunk_size * (next_free + 1)
    }

    /// Read area `a`'s entries up to the terminator; `true` when it is full (all
    /// E entries used, so reading continues with the next area).
    pub fn parse_area(&self, a: u64, buf: &[u8]) -> Result<(Vec<Exception>, bool), DiskError> {
        let want = self.chunk_bytes();
        if buf.len() < want {
            return Err(DiskError::Short {
                got: buf.len(),
                want,
            });
        }
        let mut out = Vec::new();
        for (i, e) in buf[..want].chunks_exact(EXCEPTION_BYTES).enumerate() {
            let old = u64::from_le_bytes(e[0..8].try_into().unwrap_or_default());
            let new = u64::from_le_bytes(e[8..16].try_into().unwrap_or_default());
            if new == 0 {
                return Ok((out, false));
            }
            if self.is_metadata(new) {
                return Err(DiskError::BadEntry {
                    area: a,
                    entry: i,
                    new,
                });
            }
            out.push(Exception { old, new });
        }
        Ok((out, true))
    }

    /// Put exception `i` into an area buffer.
    pub fn write_entry(&self, buf: &mut [u8], i: usize, e: Exception) {
        let at = i * EXCEPTION_BYTES;
        buf[at..at + 8].copy_from_slice(&e.old.to_le_bytes());
        buf[at + 8..at + 16].copy_from_slice(&e.new.to_le_bytes());
    }

    /// `next_free` after loading these exceptions: one past the highest chunk
    /// used (at least the first data chunk), then past a metadata slot.
    pub fn next_free_after(&self, exceptions: &[Exception]) -> u64 {
        let next = exceptions
            .iter()
            .map(|e| e.new + 1)
            .max()
            .unwrap_or(FIRST_DATA_CHUNK)
            .max(FIRST_DATA_CHUNK);
        self.skip_metadata(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_are_the_kernels() {
        // What Linux 6.12 wrote for a valid store with 16-sector chunks.
        let h = Header {
            valid: true,
            chunk_size: Sector(16),
        };
        assert_eq!(
            h.pack(),
            [0x53, 0x6e, 0x41, 0x70, 1, 0, 0, 0, 1, 0, 0, 0, 0x10, 0, 0, 0]
        );
        assert_eq!(Header::unpack(&h.pack()), Ok(Some(h)));
        assert_eq!(Header::unpack(&[0u8; 16]), Ok(None));
        let mut bad = h.pack();
        bad[0] = 0x54;
        assert_eq!(
            Header::unpack(&bad).map_err(|e| e.errno()),
            Err(udm_core::Errno::ENXIO)
        );
        let mut v2 = h.pack();
        v2[8] = 2;
        assert_eq!(Header::unpack(&v2), Err(DiskError::BadVersion(2)));
        let mut invalid = h.pack();
        invalid[4] = 0;
        assert_eq!(
            Header::unpack(&invalid),
            Ok(Some(Header {
                valid: false,
                chunk_size: Sector(16)
            }))
        );
    }

    #[test]
    fn areas_and_allocation_skip_metadata_slots() {
        // 8-sector (4 KiB) chunks: 256 exceptions per area.
        let l = Layout {
            chunk_size: Sector(8),
        };
        assert_eq!(l.per_area(), 256);
        assert_eq!(
            (l.area_chunk(0), l.area_chunk(1), l.area_chunk(2)),
            (1, 258, 515)
        );
        assert!(l.is_metadata(258) && !l.is_metadata(257) && !l.is_metadata(259));
        assert_eq!(l.skip_metadata(258), 259);
        assert_eq!(l.skip_metadata(257), 257);
        assert_eq!(l.next_free_after(&[]), 2);
        assert_eq!(l.next_free_after(&[Exception { old: 9, new: 257 }]), 259);
        assert!(l.has_room(Sector(8 * 3), 2));
        assert!(!l.has_room(Sector(8 * 3 - 1), 2));
    }

    #[test]
    fn an_area_ends_at_the_first_zero_new_chunk() {
        let l = Layout {
            chunk_size: Sector(1),
        };
        assert_eq!(l.per_area(), 32);
        let mut buf = vec![0u8; 512];
        l.write_entry(&mut buf, 0, Exception { old: 5, new: 2 });
        l.write_entry(&mut buf, 1, Exception { old: 7, new: 3 });
        assert_eq!(
            &buf[16..32],
            &[7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]
        );
        let (ex, full) = l.parse_area(0, &buf).unwrap();
        assert_eq!(
            ex,
            vec![Exception { old: 5, new: 2 }, Exception { old: 7, new: 3 }]
        );
        assert!(!full);
        for i in 0..32 {
            l.write_entry(
                &mut buf,
                i,
                Exception {
                    old: i as u64,
                    new: 2 + i as u64,
                },
            );
        }
        assert!(l.parse_area(0, &buf).unwrap().1);
        // An entry pointing at a metadata chunk (34 = area 1 here) is corrupt.
        l.write_entry(&mut buf, 3, Exception { old: 1, new: 34 });
        assert!(matches!(
            l.parse_area(0, &buf),
            Err(DiskError::BadEntry { entry: 3, .. })
        ));
    }
}

//! Sectors: the 512-byte unit every table, target and ioctl speaks in.
//! A newtype so that sectors and bytes are never mixed by accident.

use std::fmt;

pub const SECTOR_SHIFT: u32 = 9;
pub const SECTOR_SIZE: u64 = 1 << SECTOR_SHIFT;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sector(pub u64);

impl Sector {
    pub const fn bytes(self) -> u64 {
        self.0 << SECTOR_SHIFT
    }
    /// The sector containing byte `b` (rounded down).
    pub const fn from_bytes(b: u64) -> Sector {
        Sector(b >> SECTOR_SHIFT)
    }
}

impl fmt::Display for Sector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Sector {
    fn from(v: u64) -> Self {
        Sector(v)
    }
}

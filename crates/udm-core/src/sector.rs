//! Sectors: the 512-byte unit every table, target and ioctl speaks in.
//! A newtype so that sectors and bytes are never mixed by accident: positions and
//! lengths in sectors are `Sector`; bytes are plain integers, reached only through
//! [`Sector::bytes`] and [`Sector::from_bytes`].

use std::fmt;
use std::ops::{Add, AddAssign, Div, Mul, Rem, Sub, SubAssign};

pub const SECTOR_SHIFT: u32 = 9;
pub const SECTOR_SIZE: u64 = 1 << SECTOR_SHIFT;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sector(pub u64);

impl Sector {
    pub const ZERO: Sector = Sector(0);
    pub const MAX: Sector = Sector(u64::MAX);

    /// The number of sectors (or the sector number) as a plain integer.
    pub const fn get(self) -> u64 {
        self.0
    }
    /// In bytes.
    pub const fn bytes(self) -> u64 {
        self.0 << SECTOR_SHIFT
    }
    /// The sector containing byte `b` (rounded down).
    pub const fn from_bytes(b: u64) -> Sector {
        Sector(b >> SECTOR_SHIFT)
    }
    pub fn checked_add(self, o: Sector) -> Option<Sector> {
        self.0.checked_add(o.0).map(Sector)
    }
    pub fn saturating_add(self, o: Sector) -> Sector {
        Sector(self.0.saturating_add(o.0))
    }
    pub fn saturating_sub(self, o: Sector) -> Sector {
        Sector(self.0.saturating_sub(o.0))
    }
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub fn is_power_of_two(self) -> bool {
        self.0.is_power_of_two()
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

impl Add for Sector {
    type Output = Sector;
    fn add(self, o: Sector) -> Sector {
        Sector(self.0 + o.0)
    }
}

impl Sub for Sector {
    type Output = Sector;
    fn sub(self, o: Sector) -> Sector {
        Sector(self.0 - o.0)
    }
}

impl AddAssign for Sector {
    fn add_assign(&mut self, o: Sector) {
        self.0 += o.0;
    }
}

impl SubAssign for Sector {
    fn sub_assign(&mut self, o: Sector) {
        self.0 -= o.0;
    }
}

/// The offset inside a unit of `o` sectors (a chunk, a block).
impl Rem for Sector {
    type Output = Sector;
    fn rem(self, o: Sector) -> Sector {
        Sector(self.0 % o.0)
    }
}

/// How many whole units of `o` sectors.
impl Div for Sector {
    type Output = u64;
    fn div(self, o: Sector) -> u64 {
        self.0 / o.0
    }
}

/// `n` units of this many sectors.
impl Mul<u64> for Sector {
    type Output = Sector;
    fn mul(self, n: u64) -> Sector {
        Sector(self.0 * n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_stays_in_sectors() {
        let chunk = Sector(128);
        let o = Sector(1000);
        assert_eq!(o / chunk, 7);
        assert_eq!(o % chunk, Sector(104));
        assert_eq!(chunk * 3 + Sector(5), Sector(389));
        assert_eq!(Sector(8).bytes(), 4096);
        assert_eq!(Sector::from_bytes(4097), Sector(8));
        assert_eq!(Sector(3).saturating_sub(Sector(5)), Sector::ZERO);
    }
}

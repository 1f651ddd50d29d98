//! dev_t as the ioctl structures carry it (the kernel's `huge_encode_dev`,
//! libdm's `MKDEV`): 12 bits of major, 20 bits of minor, split around it.

/// `(minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)`.
pub fn encode_dev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// `(major, minor)` of an encoded dev_t: major = bits 8..20, minor = bits
/// 0..8 and 20..32.
pub fn decode_dev(dev: u64) -> (u32, u32) {
    let major = ((dev & 0xfff00) >> 8) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

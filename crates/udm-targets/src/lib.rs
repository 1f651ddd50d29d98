//! The target types udm ships, and the registry that holds them all.

use udm_core::Registry;

pub mod delay;
pub mod dust;
pub mod error;
pub mod flakey;
pub mod linear;
pub mod snapshot;
pub mod striped;
pub mod zero;

/// A registry with every target type, registered in the kernel's order so that
/// `targets` lists them as the kernel does (newest first).
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(error::TYPE);
    r.register(linear::TYPE);
    r.register(striped::TYPE);
    r.register(zero::TYPE);
    r.register(delay::TYPE);
    r.register(flakey::TYPE);
    r.register(dust::TYPE);
    r
}

//! The target registry: type name -> constructor and version, like the kernel's
//! `dm_register_target`. Listing order is newest registration first, as the kernel's.

use crate::error::TableError;
use crate::target::{Target, TargetCtx};

pub type Constructor = fn(&TargetCtx<'_>, &[String]) -> Result<Box<dyn Target>, TableError>;

#[derive(Clone)]
pub struct TargetType {
    pub name: &'static str,
    pub version: [u32; 3],
    pub ctr: Constructor,
}

#[derive(Clone, Default)]
pub struct Registry {
    types: Vec<TargetType>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers a target type; a later registration of the same name replaces it.
    pub fn register(&mut self, t: TargetType) {
        self.types.retain(|x| x.name != t.name);
        self.types.push(t);
    }

    pub fn get(&self, name: &str) -> Option<&TargetType> {
        self.types.iter().find(|t| t.name == name)
    }

    /// Newest first, as `dmsetup targets` prints them.
    pub fn list(&self) -> impl Iterator<Item = &TargetType> {
        self.types.iter().rev()
    }
}

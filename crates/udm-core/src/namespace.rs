//! The device namespace: devices by name and by minor, looked up and changed
//! under the engine's namespace lock, and the kernel's rules for names and uuids.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::device::Device;
use crate::engine::{DevRef, NAME_MAX, UUID_MAX};
use crate::error::{DmError, Errno, Result};

#[derive(Default)]
pub(crate) struct Namespace {
    pub(crate) by_name: BTreeMap<String, Arc<Device>>,
    pub(crate) by_minor: BTreeMap<u32, Arc<Device>>,
}

impl Namespace {
    /// The device `r` names, looked up under the namespace lock held by the caller.
    pub(crate) fn find(&self, r: &DevRef, major: u32) -> Option<Arc<Device>> {
        match r {
            DevRef::Name(n) => self.by_name.get(n).cloned(),
            DevRef::Uuid(u) => self
                .by_name
                .values()
                .find(|d| !u.is_empty() && *d.uuid.read() == *u)
                .cloned(),
            DevRef::Number(n) if n.major == major => self.by_minor.get(&n.minor).cloned(),
            DevRef::Number(_) => None,
        }
    }
}

pub(crate) fn no_device(r: &DevRef) -> DmError {
    DmError::NoDevice(match r {
        DevRef::Name(n) | DevRef::Uuid(n) => n.clone(),
        DevRef::Number(n) => n.to_string(),
    })
}

pub(crate) fn dev_err(errno: Errno, msg: impl Into<String>) -> DmError {
    DmError::new(errno, msg)
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(dev_err(Errno::EINVAL, "device name is empty"));
    }
    if name.len() > NAME_MAX {
        return Err(dev_err(
            Errno::EINVAL,
            format!("device name longer than {NAME_MAX} bytes"),
        ));
    }
    if name.contains('/') || name == "control" || name == "." || name == ".." {
        return Err(dev_err(
            Errno::EINVAL,
            format!("invalid device name '{name}'"),
        ));
    }
    Ok(())
}

pub(crate) fn check_uuid(uuid: &str) -> Result<()> {
    if uuid.len() > UUID_MAX {
        return Err(dev_err(
            Errno::EINVAL,
            format!("uuid longer than {UUID_MAX} bytes"),
        ));
    }
    Ok(())
}

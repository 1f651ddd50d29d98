//! udmd as a library: the dm-ioctl dispatcher over the engine, the control
//! socket server, and the glue that exports devices over NBD and FUSE.

pub mod control;
pub mod demo;
pub mod exports;
pub mod server;
pub mod stdio;

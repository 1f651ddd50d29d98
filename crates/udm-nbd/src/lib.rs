//! udm-nbd: an NBD server library (newstyle-fixed handshake, structured replies,
//! `base:allocation` block status, multi-conn) built on threads, with no dependency on
//! the rest of udm.
//!
//! A [`Server`] serves the [`Export`]s a [`Backend`] names. Each connection gets
//! [`ServerConfig::threads_per_conn`] threads that share its socket, read requests and
//! hand them to the export ([`Export::submit`]); replies go out in completion order.
//! An export may answer a request later, from any thread, through its [`Done`]: the
//! request then holds no server thread while in flight. The protocol is
//! NetworkBlockDevice/nbd `doc/proto.md`.

mod budget;
mod conn;
pub mod error;
pub mod export;
mod handshake;
pub mod mem;
mod proto;
mod server;
mod stream;
mod transmission;

pub use error::ConnError;
pub use export::{blocking, Backend, BlockSize, Done, Errno, Export, ExportMap, Extent, Io, Op};
pub use mem::MemExport;
pub use server::{remove_stale_socket, Server, ServerConfig};

//! udm-nbd: an NBD server library (newstyle-fixed handshake, structured replies,
//! `base:allocation` block status, multi-conn) built on threads, with no dependency on
//! the rest of udm.
//!
//! A [`Server`] serves the [`Export`]s a [`Backend`] names. Each connection gets
//! [`ServerConfig::threads_per_conn`] threads that share its socket and answer
//! requests out of order. The protocol is NetworkBlockDevice/nbd `doc/proto.md`.

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

//! udmsetup: dmsetup for udm. The same commands, options (anywhere on the
//! line), table syntax and output, byte for byte, spoken over udmd's
//! control socket instead of /dev/mapper/control; plus `--json`.
//!
//! The library holds everything; `main.rs` only calls [`run`].

pub mod args;
pub mod client;
pub mod commands;
pub mod format;
pub mod mangle;
pub mod table_text;

pub use client::default_socket_path;
pub use commands::run;

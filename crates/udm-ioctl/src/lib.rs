//! The dm-ioctl v4 wire format, byte for byte: `struct dm_ioctl` and the
//! payloads that follow it (target specs, name lists, target versions,
//! deps, messages), plus the framing of udm's control socket.
//!
//! No I/O happens here, so every decoder can be fuzzed; none of them panics
//! on any input. The dm structures use host byte order, as an ioctl buffer
//! does; the socket frames are little-endian.

mod command;
mod deps;
mod dev;
mod error;
pub mod flags;
mod frame;
mod header;
mod names;
pub mod rundir;
mod strings;
mod table;
mod versions;
mod wire;

pub use command::Command;
pub use deps::{decode_deps, encode_deps};
pub use dev::{decode_dev, encode_dev};
pub use error::DecodeError;
pub use frame::{ReplyFrame, RequestFrame, FRAME_MAGIC, MAX_FRAME};
pub use header::{
    check_name, check_uuid, decode_version, encode_version, reply_buffer, request_buffer,
    split_buffer, DmIoctl, HEADER_MIN, HEADER_SIZE, MAX_DATA_SIZE, MAX_TYPE_NAME, NAME_LEN,
    UUID_LEN, VERSION, VERSION_LEN,
};
pub use names::{
    decode_name_list, encode_name_list, NameListEntry, NAME_LIST_FLAG_DOESNT_HAVE_UUID,
    NAME_LIST_FLAG_HAS_UUID,
};
pub use strings::{decode_string, decode_target_msg, encode_string, encode_target_msg};
pub use table::{
    decode_table_load, decode_table_load_request, decode_table_status, encode_table_load,
    encode_table_status, TargetSpec, MAX_TARGETS, SPEC_SIZE,
};
pub use versions::{decode_versions, encode_versions, TargetVersion};

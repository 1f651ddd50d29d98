//! Snapshots (`snapshot-origin`, `snapshot`, `snapshot-merge`): so far the
//! persistent exception store's on-disk format; the targets come on top of it.

pub mod disk;

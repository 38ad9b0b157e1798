//! Downloading and unpacking images: `ImportJob` (one HTTP GET), the shared unpacker,
//! and the importers built on them.

pub mod job;
pub mod qcow2;
pub mod unpack;
pub mod verify;

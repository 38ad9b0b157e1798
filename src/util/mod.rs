//! Small helpers shared by every part of the tool.

pub mod btrfs;
pub mod error;
pub mod escape;
pub mod format;
pub mod fs;
pub mod image;
pub mod log;
pub mod names;
pub mod notify;
pub mod oci_ref;
pub mod test_seams;
pub mod validate;

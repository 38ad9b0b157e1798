//! File-system helpers for the importers: temporary names, `mkdir -p`, safe renames and
//! recursive removal, faithful tree and file copies, xattrs, times, sparse writes and
//! "make read-only".
//!
//! Everything that walks a tree does so relative to directory file descriptors, never
//! follows symbolic links and never crosses into another mount, so a hostile image
//! cannot redirect a removal or a copy outside the tree it was asked to touch. The
//! importers call these from worker threads; nothing here depends on the current
//! directory (beyond resolving the relative paths it is given) or on global state.
//!
//! Operations that combine steps return our errno-carrying `Error`; the single calls
//! (times, one xattr, the mount check) return nix's `Errno`, as nix does, so callers of
//! either style can use them. This module may use `util::btrfs` (a leaf of ioctls);
//! btrfs never uses it.

mod copy;
mod data;
mod mkdir;
mod mode;
mod open;
mod remove;
mod rename;
mod stat;
mod temp;
mod times;
mod xattr;

pub use copy::{copy_as_directory, copy_top_metadata, copy_tree, snapshot_or_copy};
pub use data::{can_share_extents, copy_file_data, sparse_write};
pub use mkdir::{mkdir_p, mkdir_parents};
pub(crate) use mode::drop_write_bits;
pub use mode::{
    chattr_nocow, make_read_only, make_very_read_only, make_very_read_only_fd, set_immutable,
};
pub(crate) use open::{open_dir, open_dir_at, split_parent};
pub use remove::{rm_rf, rm_rf_at, subvol_remove};
pub use rename::{rename_exchange, rename_noreplace};
pub use stat::{is_loop_device, is_mount_root};
pub use temp::{process_token, random_u64, temp_owner, tempfn_random};
pub use times::{copy_times, set_mtime, set_mtime_at, set_times};
pub use xattr::{copy_xattrs, read_xattrs, read_xattrs_at, set_xattr_at};

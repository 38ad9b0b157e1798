//! `systemd-import-fs run DIRECTORY [NAME]`: a directory tree made an image: a snapshot
//! where DIRECTORY is a btrfs subvolume on the same file system, else a new subvolume
//! (btrfs) or directory filled with a faithful copy (data reflinked where the file
//! system can), marked read-only if asked and moved into place as `<root>/<NAME>`. With
//! `--btrfs-subvol=no` always a plain directory filled by a copy.
//!
//! Deviation from systemd 252: its last line, "Directory '…' successfully installed.
//! Exiting.", is followed here by the runner's "Operation completed successfully." and
//! "Exiting." like every other verb.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::{mark_read_only, sync_fs, ImportRequest, Target};
use crate::import::store;
use crate::log_error_errno;
use crate::util::error::Result;
use crate::util::fs;

/// The whole import; blocks (a task of the runner).
pub(super) fn run(req: ImportRequest, cancel: &AtomicBool) -> Result<()> {
    // The directory the command line opened, by a path that stays valid whatever
    // happens to its name meanwhile.
    let source = PathBuf::from(format!("/proc/self/fd/{}", req.input.as_raw_fd()));
    let target = Target::new(&req, &req.local);
    if target.is_direct() && req.force {
        fs::rm_rf(target.path())?;
    }
    target.make_parents();
    // --btrfs-subvol=no: a plain directory, never a snapshot or a subvolume.
    let copied = if req.btrfs_subvol {
        fs::snapshot_or_copy(&source, target.path(), false, Some(cancel))
    } else {
        fs::copy_as_directory(&source, target.path(), Some(cancel))
    };
    copied.map_err(|e| log_error_errno!(e.clone(), "Failed to copy directory: {}", e))?;
    if req.btrfs_subvol && req.btrfs_quota {
        store::assign_quota_group(target.path(), true);
    }
    let tree = fs::open_dir(target.path())?;
    if req.sync {
        sync_fs(&tree).map_err(|e| log_error_errno!(e.clone(), "Failed to sync: {}", e))?;
    }
    let final_path = target.final_path().to_path_buf();
    target.install().map_err(|e| {
        log_error_errno!(
            e.clone(),
            "Failed install directory as '{}': {}",
            final_path.display(),
            e
        )
    })?;
    // Now: an immutable directory cannot be renamed.
    mark_read_only(req.read_only, &tree)?;
    log::info!(
        "Directory '{} successfully installed.",
        final_path.display()
    );
    Ok(())
}

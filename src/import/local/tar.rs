//! `systemd-import tar FILE [NAME]`: a tarball (plain, xz, gzip, bzip2 or zstd, detected
//! from its first bytes) unpacked with the pullers' unpacker into a new tree (a
//! subvolume on btrfs unless `--btrfs-subvol=no`), marked read-only if asked, and moved
//! into place as `<root>/<NAME>`.
//!
//! Deviations from systemd 252, which pipes the stream into GNU tar: the unpacker's
//! (any extraction error fails the import, a hostile archive cannot write outside the
//! tree, see `unpack`); the tree is not rearranged when it holds a single OS tree one
//! level down (`import_mangle_os_tree`).

use std::os::fd::AsFd;
use std::sync::atomic::AtomicBool;

use super::{decompressed, input_size, mark_read_only, sync_fs, ImportRequest, Progress, Target};
use crate::import::store;
use crate::import::unpack::{self, Mode};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::fs;

/// The whole import; blocks (a task of the runner).
pub(super) fn run(req: ImportRequest, cancel: &AtomicBool, progress: &Progress) -> Result<()> {
    if let Some(size) = input_size(&req.input) {
        progress.set_total(size);
    }
    let target = Target::new(&req, &req.local);
    if target.is_direct() && req.force {
        fs::rm_rf(target.path())?;
    }
    target.make_parents();
    let tree = match store::create_tree_as(target.path(), req.btrfs_subvol) {
        Ok(tree) => {
            // Only a tree made here (not a --direct one that was there).
            if req.btrfs_subvol && req.btrfs_quota {
                store::assign_quota_group(target.path(), true);
            }
            tree
        }
        // --direct may extract into an existing directory.
        Err(e) if e.errno() == libc::EEXIST && target.is_direct() => fs::open_dir(target.path())
            .map_err(|e| {
                log_error_errno!(
                    e.clone(),
                    "Failed to open {}: {}",
                    target.path().display(),
                    e
                )
            })?,
        Err(e) => {
            return Err(log_error_errno!(
                e.clone(),
                "{}",
                e.msg().unwrap_or_default()
            ))
        }
    };
    let mut stream = decompressed(req.input, progress, cancel)?;
    unpack::unpack(
        tree.as_fd(),
        &mut stream,
        &unpack::Options::new(Mode::Plain),
    )?;
    if req.sync {
        sync_fs(&tree).map_err(|e| log_error_errno!(e.clone(), "Failed to sync: {}", e))?;
    }
    let final_path = target.final_path().to_path_buf();
    target.install().map_err(|e: Error| {
        log_error_errno!(
            e.clone(),
            "Failed to move '{}' into place: {}",
            final_path.display(),
            e
        )
    })?;
    // Now: an immutable directory cannot be renamed.
    mark_read_only(req.read_only, &tree)
}

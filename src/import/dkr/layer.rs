//! Layer storage (spec §4.5, §4.9): every layer is kept as `<root>/.dkr-<id>`, the *merged*
//! tree of that layer and all below it, read-only. A new layer is made in a temporary
//! `<root>/.#.dkr-<id><16 hex>` from a writable copy of its parent, the layer archive is
//! applied on top (aufs whiteouts and opaque directories included), and the result is
//! sealed read-only and renamed into place.
//!
//! On btrfs the layers are subvolumes: the copy of the parent is a snapshot and
//! "read-only" is the subvolume flag, as in the C tool. Elsewhere (a deliberate extension:
//! v219 required btrfs) they are plain directories: the parent is copied (with reflinks
//! where the file system has them) and "read-only" means the top directory lost its write
//! bits, which the copy for the next layer gives back to its owner.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::import::job::{StreamConsumer, StreamContext};
use crate::import::store;
use crate::import::unpack::{self, Mode as UnpackMode};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::{btrfs, fs};

/// The consumer of a layer download, run on the job's worker thread when the first body
/// byte arrives (where the C tool's `on_open_disk` forked tar): make the temporary tree at
/// `temp` (owned by the importer's `TempPath`, which removes it on failure) from `base`,
/// the parent layer, or empty for the first layer, then apply the archive to it.
///
/// Any extraction error fails the layer (decision Q6); the unpacker logs it, naming the
/// member. A cancelled download is not logged again.
pub fn apply_consumer(temp: PathBuf, base: Option<PathBuf>) -> StreamConsumer {
    Box::new(move |ctx: &StreamContext, body: &mut dyn std::io::Read| {
        make_tree(&temp, base.as_deref(), &ctx.cancel)?;
        let dir = fs::open_dir(&temp)
            .map_err(|e| log_error_errno!(e.clone(), "Failed to open {}: {}", temp.display(), e))?;
        let options = unpack::Options {
            cancel: Some(ctx.cancel.clone()),
            ..unpack::Options::new(UnpackMode::Aufs)
        };
        unpack::unpack(dir.as_fd(), body, &options)?;
        Ok(())
    })
}

/// Make the tree a layer is applied to, at `temp` (which must not exist).
fn make_tree(temp: &Path, base: Option<&Path>, cancel: &AtomicBool) -> Result<()> {
    // As the C tool: the image root and its parents are made on demand, private to root,
    // and a failure shows up in the next step.
    let _ = fs::mkdir_parents(temp, 0o700);
    let made = match base {
        Some(base) => fs::snapshot_or_copy(base, temp, false, Some(cancel)),
        // The first layer starts empty: a new subvolume on btrfs, a directory elsewhere.
        None => store::create_tree(temp).map(drop),
    };
    made.map_err(|e| {
        if cancel.load(Ordering::Acquire) {
            // SIGINT or another failure: the pull is already over and said why.
            e
        } else {
            log_error_errno!(
                e.clone(),
                "Failed to make btrfs subvolume {}: {}",
                temp.display(),
                e
            )
        }
    })
}

/// Seal a finished layer: read-only (the subvolume flag, or the top directory's write
/// bits), then renamed from `temp` to `final_path`. A failed rename fails the pull
/// (decision Q7; the C tool reported success). The messages are the seed's, typos
/// included ("snapshort", "snaphsot"; v219 fixed the first).
pub fn seal(temp: &Path, final_path: &Path) -> Result<()> {
    make_read_only(temp)
        .map_err(|e| log_error_errno!(e.clone(), "Failed to mark snapshort read-only: {}", e))?;
    fs::rename_noreplace(temp, final_path)
        .map_err(|e| log_error_errno!(e.clone(), "Failed to rename snaphsot: {}", e))
}

fn make_read_only(path: &Path) -> Result<()> {
    let fd = fs::open_dir(path)?;
    if btrfs::is_subvolume(fd.as_fd())? {
        btrfs::subvol_set_read_only(fd.as_fd(), true)
    } else {
        fs::drop_write_bits(fd.as_fd())
    }
}

/// `<root>/.dkr-<id>`.
pub fn layer_path(image_root: &Path, id: &str) -> PathBuf {
    image_root.join(format!(".dkr-{id}"))
}

/// Whether the layer exists already (`laccess(F_OK)`: a dangling symlink counts).
pub fn layer_exists(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => {
            let e = Error::from(e);
            Err(log_error_errno!(
                e.clone(),
                "Failed to check for container: {}",
                e
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Making, sealing and copying layers is covered end to end in tests/pull_dkr.rs, on a
    // loop-mounted btrfs and on a loop-mounted ext4.
    #[test]
    fn a_missing_parent_layer_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let temp = root.path().join(".#.dkr-bb0123456789abcdef");
        let e = make_tree(
            &temp,
            Some(&root.path().join(".dkr-aa")),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert_eq!(e.errno(), libc::ENOENT);
        assert_eq!(
            e.msg().unwrap(),
            format!(
                "Failed to make btrfs subvolume {}: No such file or directory",
                temp.display()
            )
        );
        assert!(!temp.exists());
        assert!(!layer_exists(&root.path().join(".dkr-bb")).unwrap());
    }
}

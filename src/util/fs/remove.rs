//! Recursive removal (`rm -rf`) that stays inside the tree it was given: symlinks are
//! removed, never followed, mounts are left alone, and btrfs subvolumes (read-only and
//! nested ones too) are deleted as subvolumes.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::sys::stat::Mode;

use super::open::{component, open_dir, open_dir_at, read_dir_names, split_parent};
use super::stat::{stat_at, stat_fd, FileKind, Meta};
use crate::log_debug_errno;
use crate::util::btrfs;
use crate::util::error::{Error, Result};

/// `rm -rf path`, safely: nothing to do if it does not exist; symlinks are removed, never
/// followed; mounts inside the tree are left alone (EBUSY, and so are their parent
/// directories); btrfs subvolumes are deleted as such, read-only ones and nested ones
/// too. Removal continues past errors and returns the first one. `/` is refused
/// (EPERM).
pub fn rm_rf(path: &Path) -> Result<()> {
    if path.has_root()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::CurDir))
    {
        return Err(log_debug_errno!(
            Error::new(libc::EPERM),
            "Refusing to remove the root directory."
        ));
    }
    let (parent, name) = split_parent(path)?;
    let dir = match open_dir(parent) {
        Ok(dir) => dir,
        Err(e) if e.errno() == libc::ENOENT => return Ok(()),
        Err(e) => return Err(e),
    };
    rm_rf_at(dir.as_fd(), name)
}

/// [`rm_rf`] of the entry `name` in the directory `dir`.
pub fn rm_rf_at(dir: BorrowedFd<'_>, name: impl AsRef<OsStr>) -> Result<()> {
    let name = component(name.as_ref())?;
    let dir_meta = stat_fd(dir)?;
    remove_entry(dir, &dir_meta, &name, false)
}

/// Remove `name` from `dir` (whose metadata is `dir_meta`). `dir_is_ours` says whether
/// `dir` itself is being removed, so that its permissions may be loosened.
fn remove_entry(
    dir: BorrowedFd<'_>,
    dir_meta: &Meta,
    name: &CStr,
    dir_is_ours: bool,
) -> Result<()> {
    let meta = match stat_at(dir, name) {
        Ok(meta) => meta,
        Err(e) if e.errno() == libc::ENOENT => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.kind() != FileKind::Directory {
        return unlink_entry(dir, name, false, dir_is_ours);
    }
    if meta.is_mount_below(dir_meta) {
        return Err(log_debug_errno!(
            Error::new(libc::EBUSY),
            "Not removing {}: a file system is mounted there.",
            name.to_string_lossy()
        ));
    }
    if meta.ino == 256 {
        // On btrfs every subvolume root is inode 256; elsewhere this fails with
        // ENOTTY (not btrfs) or EINVAL (not a subvolume) and we go on as for a
        // directory. So we do after EPERM (no privilege to destroy subvolumes): an
        // emptied subvolume can still be removed with rmdir.
        match subvol_remove(dir, OsStr::from_bytes(name.to_bytes())) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.errno(), libc::ENOTTY | libc::EINVAL | libc::EPERM) => {}
            Err(e) if e.errno() == libc::ENOENT => return Ok(()),
            Err(e) => return Err(e),
        }
    }

    let sub = match open_dir_at(dir, name) {
        Err(e) if e.errno() == libc::EACCES => {
            // Unreadable directory (only possible without CAP_DAC_OVERRIDE).
            let _ = nix::sys::stat::fchmodat(
                dir,
                name,
                Mode::from_bits_truncate((meta.mode & 0o7777) | 0o700),
                nix::sys::stat::FchmodatFlags::NoFollowSymlink,
            );
            open_dir_at(dir, name)?
        }
        other => other?,
    };
    let sub_meta = stat_fd(sub.as_fd())?;
    if sub_meta.hardlink_key() != meta.hardlink_key() {
        // Replaced between stat and open: do not touch what we did not inspect.
        return Err(Error::new(libc::ESTALE));
    }
    // A read-only image made by systemd-pull off btrfs is immutable (chattr +i): neither
    // its entries nor itself can go until the flag is cleared (needs CAP_LINUX_IMMUTABLE).
    let _ = super::mode::set_immutable(sub.as_fd(), false);
    let children = remove_children(sub.as_fd(), &sub_meta);
    let this = unlink_entry(dir, name, true, dir_is_ours);
    children.and(this)
}

/// Remove everything inside the directory `dir`; returns the first error.
fn remove_children(dir: BorrowedFd<'_>, dir_meta: &Meta) -> Result<()> {
    let mut first_error = None;
    for name in read_dir_names(dir)? {
        if let Err(e) = remove_entry(dir, dir_meta, &name, true) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn unlink_entry(dir: BorrowedFd<'_>, name: &CStr, is_dir: bool, dir_is_ours: bool) -> Result<()> {
    let flags = if is_dir {
        nix::unistd::UnlinkatFlags::RemoveDir
    } else {
        nix::unistd::UnlinkatFlags::NoRemoveDir
    };
    match nix::unistd::unlinkat(dir, name, flags) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EACCES) if dir_is_ours => {
            // A directory without write permission (only matters without
            // CAP_DAC_OVERRIDE): it is going away anyway, so open it up.
            let mode = stat_fd(dir)?.mode & 0o7777;
            nix::sys::stat::fchmod(dir, Mode::from_bits_truncate(mode | 0o300))?;
            Ok(nix::unistd::unlinkat(dir, name, flags)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Delete the btrfs subvolume `name` in `dir`, also when it is read-only and when other
/// subvolumes are nested inside it (those are deleted first, depth first). ENOTTY when
/// `dir` is not on btrfs, EINVAL when `name` is not a subvolume, ENOENT when it does not
/// exist.
pub fn subvol_remove(dir: BorrowedFd<'_>, name: impl AsRef<OsStr>) -> Result<()> {
    let name = name.as_ref();
    let subvol = open_dir_at(dir, name)?;
    if !btrfs::is_fs_btrfs(subvol.as_fd())? {
        return Err(Error::new(libc::ENOTTY));
    }
    btrfs::check_subvolume_root(subvol.as_fd())?;
    remove_subvol_tree(dir, name, subvol.as_fd())
}

/// Remove subvolume `name` in `dir` (already opened as `subvol`) with its nested
/// subvolumes.
fn remove_subvol_tree(dir: BorrowedFd<'_>, name: &OsStr, subvol: BorrowedFd<'_>) -> Result<()> {
    // The common case, no nested subvolumes: one ioctl.
    match btrfs::subvol_destroy(dir, name) {
        Err(e) if e.errno() == libc::ENOTEMPTY => {}
        other => return other,
    }

    let id = btrfs::subvol_id(subvol)?;
    let children = btrfs::child_subvols(subvol, id)?;
    if children.is_empty() {
        return Err(Error::new(libc::ENOTEMPTY));
    }
    // Unlinking a child needs a writable parent; it is deleted right after anyway.
    btrfs::subvol_set_read_only(subvol, false)?;
    for child in children {
        let holder_path = btrfs::dir_path_in_subvol(subvol, id, child.dirid)?;
        let holder = if holder_path.is_empty() {
            subvol.try_clone_to_owned()?
        } else {
            open_dir_at(subvol, OsStr::from_bytes(&holder_path))?
        };
        let child_name = OsStr::from_bytes(&child.name);
        let child_fd = open_dir_at(holder.as_fd(), child_name)?;
        if btrfs::subvol_id(child_fd.as_fd())? != child.id {
            // Renamed or replaced under us: better to fail than delete something else.
            return Err(Error::new(libc::ESTALE));
        }
        remove_subvol_tree(holder.as_fd(), child_name, child_fd.as_fd())?;
    }
    btrfs::subvol_destroy(dir, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn rm_rf_removes_trees_and_refuses_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        std::fs::create_dir_all(top.join("a/b/c")).unwrap();
        std::fs::write(top.join("a/b/c/file"), b"x").unwrap();
        std::fs::write(top.join("file"), b"x").unwrap();
        std::fs::set_permissions(top.join("a/b"), std::fs::Permissions::from_mode(0o500)).unwrap();
        std::fs::set_permissions(top.join("a"), std::fs::Permissions::from_mode(0o000)).unwrap();
        rm_rf(&top).unwrap();
        assert!(!top.exists());
        // Missing is fine, also below a missing parent.
        rm_rf(&top).unwrap();
        rm_rf(&top.join("x/y")).unwrap();
        // A single file.
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        rm_rf(&tmp.path().join("f")).unwrap();
        assert!(!tmp.path().join("f").exists());

        for root in ["/", "//", "/."] {
            assert_eq!(
                rm_rf(Path::new(root)).unwrap_err().errno(),
                libc::EPERM,
                "{root}"
            );
        }
        assert_eq!(rm_rf(Path::new("")).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(
            rm_rf(&tmp.path().join("..")).unwrap_err().errno(),
            libc::EINVAL
        );
        let dir = File::open(tmp.path()).unwrap();
        for name in [".", "..", "a/b", ""] {
            assert_eq!(
                rm_rf_at(dir.as_fd(), name).unwrap_err().errno(),
                libc::EINVAL,
                "{name:?}"
            );
        }
    }
}

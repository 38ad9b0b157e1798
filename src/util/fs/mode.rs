//! Permission bits and inode flags: making a finished image read-only (a subvolume's
//! flag or the write bits), giving the write bit back, and btrfs's NOCOW flag.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::stat::stat_fd;
use crate::log_error_errno;
use crate::util::btrfs;
use crate::util::error::{Error, Result};
use crate::util::sys;

/// `FS_NOCOW_FL` from `linux/fs.h`: no copy-on-write for this file (btrfs).
const FS_NOCOW_FL: libc::c_int = 0x0080_0000;
/// `FS_IMMUTABLE_FL`: the inode may not be changed, renamed, linked to or deleted.
const FS_IMMUTABLE_FL: libc::c_int = 0x0000_0010;

/// Drop the write bits of the inode `fd` (`chmod a-w`), keeping setuid/setgid/sticky.
pub(crate) fn drop_write_bits(fd: BorrowedFd<'_>) -> Result<()> {
    let meta = stat_fd(fd)?;
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7555))?;
    Ok(())
}

/// Give the owner back the write bit [`drop_write_bits`] took: a writable copy of a
/// read-only plain directory must be an ordinary writable tree.
pub(super) fn add_owner_write(fd: BorrowedFd<'_>) -> Result<()> {
    let meta = stat_fd(fd)?;
    if meta.mode & 0o200 == 0 {
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate((meta.mode & 0o7777) | 0o200))?;
    }
    Ok(())
}

/// `path` opened read-only to change its flags, a failure logged as the C tools do.
fn open_logged(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e)
    })
}

/// Make a finished image read-only (spec §5.3): a btrfs subvolume gets its read-only
/// flag; anything else (a plain directory, a raw file) loses its write bits, on that
/// inode only. Errors are logged with the C tool's messages.
pub fn make_read_only(path: &Path) -> Result<()> {
    let fd = open_logged(path)?;
    make_read_only_fd(fd.as_fd())
}

/// [`make_read_only`] of an open file or directory.
fn make_read_only_fd(fd: BorrowedFd<'_>) -> Result<()> {
    match btrfs::subvol_set_read_only(fd, true) {
        Ok(()) => Ok(()),
        // Not a subvolume (or not btrfs): fall back to the mode bits.
        Err(e) if matches!(e.errno(), libc::ENOTTY | libc::ENOTDIR | libc::EINVAL) => {
            let meta = stat_fd(fd).map_err(|e| {
                log_error_errno!(e.clone(), "Failed to stat temporary image: {}", e)
            })?;
            nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7555)).map_err(
                |e| {
                    let e = Error::from(e);
                    log_error_errno!(e.clone(), "Failed to chmod() final image: {}", e)
                },
            )?;
            Ok(())
        }
        Err(e) => Err(log_error_errno!(
            e.clone(),
            "Failed to make subvolume read-only: {}",
            e
        )),
    }
}

/// systemd 252's `fs_make_very_read_only()`: a btrfs subvolume gets its read-only flag, any
/// other directory `FS_IMMUTABLE_FL` (`chattr +i`, the top directory only), a regular
/// file loses its write bits.
pub fn make_very_read_only(path: &Path) -> Result<()> {
    let fd = open_logged(path)?;
    make_very_read_only_fd(fd.as_fd()).map_err(|e| {
        if e.msg().is_some() {
            return e;
        }
        log_error_errno!(
            e.clone(),
            "Failed to mark {} read-only: {}",
            path.display(),
            e
        )
    })
}

/// [`make_very_read_only`] of an open image (errors of the flags unlogged).
pub fn make_very_read_only_fd(fd: BorrowedFd<'_>) -> Result<()> {
    let meta = stat_fd(fd)?;
    if meta.mode & libc::S_IFMT != libc::S_IFDIR {
        return make_read_only_fd(fd);
    }
    match btrfs::subvol_set_read_only(fd, true) {
        Err(e) if matches!(e.errno(), libc::ENOTTY | libc::ENOTDIR | libc::EINVAL) => {
            set_immutable(fd, true)
        }
        r => r,
    }
}

/// Set or clear `FS_IMMUTABLE_FL` on `fd`.
pub fn set_immutable(fd: BorrowedFd<'_>, on: bool) -> Result<()> {
    let flags = sys::inode_flags(fd)?;
    let new = if on {
        flags | FS_IMMUTABLE_FL
    } else {
        flags & !FS_IMMUTABLE_FL
    };
    if new != flags {
        sys::set_inode_flags(fd, new)?;
    }
    Ok(())
}

/// Set `FS_NOCOW_FL` on `fd` (btrfs: no copy-on-write, for disk images). Errors are
/// returned (ENOTTY/EOPNOTSUPP where the file system has no such flag); the importers
/// only warn about them.
pub fn chattr_nocow(fd: BorrowedFd<'_>) -> Result<()> {
    let flags = sys::inode_flags(fd)?;
    if flags & FS_NOCOW_FL == 0 {
        sys::set_inode_flags(fd, flags | FS_NOCOW_FL)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn make_read_only_drops_write_bits_of_that_inode_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("image");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1775)).unwrap();
        let inner = dir.join("inner");
        std::fs::write(&inner, b"x").unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o644)).unwrap();
        let raw = tmp.path().join("image.raw");
        std::fs::write(&raw, b"x").unwrap();
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o4764)).unwrap();

        make_read_only(&dir).unwrap();
        make_read_only(&raw).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o1555);
        assert_eq!(mode(&inner), 0o644);
        assert_eq!(mode(&raw), 0o4544);

        let err = make_read_only(&tmp.path().join("missing")).unwrap_err();
        assert_eq!(err.errno(), libc::ENOENT);
        assert!(
            err.msg().unwrap().starts_with("Failed to open "),
            "{:?}",
            err.msg()
        );
    }
}

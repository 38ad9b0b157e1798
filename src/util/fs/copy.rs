//! Copies of whole directory trees: [`copy_tree`] (faithful: owners, modes, xattrs,
//! times, hard links, holes) and [`snapshot_or_copy`] (a btrfs snapshot when it can be
//! one, else a new subvolume or directory filled by that copy).
//!
//! The walk is relative to directory file descriptors, never follows symbolic links and
//! never enters another mount, so a hostile image cannot redirect the copy outside the
//! tree it was asked to copy.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use super::data::copy_data_extents;
use super::mode::{add_owner_write, drop_write_bits};
use super::open::{component, open_dir, open_dir_at, open_parent, read_dir_names, split_parent};
use super::remove::{rm_rf_at, subvol_remove};
use super::stat::{stat_at, stat_fd, FileKind, Meta};
use super::times::{set_times, set_times_at};
use super::xattr::{copy_xattrs, copy_xattrs_at};
use crate::log_debug_errno;
use crate::util::btrfs;
use crate::util::error::{Error, Result};

fn cancelled(cancel: Option<&AtomicBool>) -> bool {
    cancel.is_some_and(|c| c.load(Ordering::Relaxed))
}

/// Copy the tree at `src` to `dst`, which must not exist (EEXIST), faithfully: regular
/// files (reflinked where the file system allows, else only their data extents, so
/// holes stay holes), directories, symlinks, device nodes and FIFOs; sockets are
/// skipped. Owners, modes (setuid/setgid/sticky included), all xattrs and
/// access/modification times are kept (directories get theirs after their children),
/// and hard links inside the tree stay hard links. Mounts inside `src` are not entered
/// (their mount points are left out). `cancel`, when set, stops the copy with
/// ECANCELED. On failure nothing is left at `dst`.
pub fn copy_tree(src: &Path, dst: &Path, cancel: Option<&AtomicBool>) -> Result<()> {
    let (src_parent, src_name) = split_parent(src)?;
    let (dst_parent, dst_name) = split_parent(dst)?;
    let src_dir = open_dir(src_parent)?;
    let dst_dir = open_dir(dst_parent)?;
    let src_name = component(src_name)?;
    let dst_name = component(dst_name)?;
    let meta = stat_at(src_dir.as_fd(), &src_name)?;

    let mut copier = TreeCopier::new(cancel, &meta);
    let result = copier.copy_entry(
        src_dir.as_fd(),
        &src_name,
        &meta,
        dst_dir.as_fd(),
        &dst_name,
    );
    if result.is_err() && copier.created_top {
        let _ = rm_rf_at(dst_dir.as_fd(), OsStr::from_bytes(dst_name.to_bytes()));
    }
    result.map_err(|e| {
        log_debug_errno!(
            e.clone(),
            "Failed to copy {} to {}: {}",
            src.display(),
            dst.display(),
            e
        )
    })
}

/// Copy the contents of the open directory `src` into the existing, empty directory
/// `dst` and give `dst` the owner, mode, xattrs and times of `src` (what [`copy_tree`]
/// does below its top; used to fill a freshly made btrfs subvolume). On failure `dst` is
/// left partially filled for the caller to remove.
fn copy_dir_into(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let meta = stat_fd(src)?;
    if meta.kind() != FileKind::Directory {
        return Err(Error::new(libc::ENOTDIR));
    }
    let mut copier = TreeCopier::new(cancel, &meta);
    copier.dst_root = Some(dst.try_clone_to_owned()?);
    copier.dst_root_key = Some(stat_fd(dst)?.hardlink_key());
    copier.copy_dir_contents(src, dst)?;
    copier.copy_inode_metadata(src, dst, &meta)
}

/// Give the directory `dst` the owner, mode, xattrs and times of the directory `src`, as
/// a copy of `src` would have at its top; `writable` adds the owner's write bit as
/// [`snapshot_or_copy`] does for a writable copy. For a tree made by other means (the
/// same archive unpacked twice) that is to look like a copy of `src`.
pub fn copy_top_metadata(src: &Path, dst: &Path, writable: bool) -> Result<()> {
    let src_fd = open_dir(src)?;
    let dst_fd = open_dir(dst)?;
    let meta = stat_fd(src_fd.as_fd())?;
    let mut copier = TreeCopier::new(None, &meta);
    copier.copy_inode_metadata(src_fd.as_fd(), dst_fd.as_fd(), &meta)?;
    if writable {
        add_owner_write(dst_fd.as_fd())?;
    }
    Ok(())
}

/// Make `dst` a copy of the directory tree `src`, as cheaply as the file systems allow:
///
/// * `src` is a subvolume and `dst` is on the same btrfs: a snapshot (instant);
/// * otherwise, `dst` on btrfs: a new subvolume filled like [`copy_dir_into`]
///   (data reflinked where possible), so that `dst` can be snapshotted later;
/// * otherwise a plain directory filled the same way ([`copy_tree`]'s copy).
///
/// `read_only` makes the result a read-only subvolume, or drops the write bits of a
/// plain directory's top (as [`make_read_only`](super::make_read_only) does); otherwise
/// the top is writable for its owner even if the source's was not. `dst` must not
/// exist; on failure nothing is left at `dst`. `cancel` aborts a copy with ECANCELED.
pub fn snapshot_or_copy(
    src: &Path,
    dst: &Path,
    read_only: bool,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let (src_fd, dst_dir, dst_name) = open_ends(src, dst)?;

    if btrfs::is_subvolume(src_fd.as_fd())? {
        match btrfs::subvol_snapshot(src_fd.as_fd(), dst_dir.as_fd(), dst_name, read_only) {
            Ok(()) => return Ok(()),
            // Another file system (or another btrfs): copy instead.
            Err(e) if matches!(e.errno(), libc::ENOTTY | libc::EXDEV | libc::EOPNOTSUPP) => {}
            Err(e) => {
                return Err(log_debug_errno!(
                    e.clone(),
                    "Failed to snapshot {} to {}: {}",
                    src.display(),
                    dst.display(),
                    e
                ))
            }
        }
    }

    // No snapshot possible: a container (a subvolume on btrfs, so it can be
    // snapshotted later; else a directory), filled by a copy.
    let on_btrfs = btrfs::is_fs_btrfs(dst_dir.as_fd())?;
    create_and_fill(
        &src_fd,
        src,
        (&dst_dir, dst_name, dst),
        on_btrfs,
        read_only,
        cancel,
    )
}

/// [`snapshot_or_copy`] without the snapshot and without a subvolume, writable: `dst` is
/// always a new plain directory filled by a copy (`--btrfs-subvol=no`).
pub fn copy_as_directory(src: &Path, dst: &Path, cancel: Option<&AtomicBool>) -> Result<()> {
    let (src_fd, dst_dir, dst_name) = open_ends(src, dst)?;
    create_and_fill(
        &src_fd,
        src,
        (&dst_dir, dst_name, dst),
        false,
        false,
        cancel,
    )
}

/// The source directory, and the destination's parent directory and name.
fn open_ends<'a>(src: &Path, dst: &'a Path) -> Result<(OwnedFd, OwnedFd, &'a OsStr)> {
    let src_fd = open_dir(src)
        .map_err(|e| log_debug_errno!(e.clone(), "Failed to open {}: {}", src.display(), e))?;
    let (dst_dir, dst_name) = open_parent(dst).map_err(|e| {
        log_debug_errno!(
            e.clone(),
            "Failed to open parent of {}: {}",
            dst.display(),
            e
        )
    })?;
    Ok((src_fd, dst_dir, dst_name))
}

/// Create `dst` (a subvolume if `on_btrfs`, else a directory) and fill it with a copy of
/// `src`; on failure nothing is left at `dst`.
fn create_and_fill(
    src_fd: &OwnedFd,
    src: &Path,
    (dst_dir, dst_name, dst): (&OwnedFd, &OsStr, &Path),
    on_btrfs: bool,
    read_only: bool,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let created = if on_btrfs {
        btrfs::subvol_make(dst_dir.as_fd(), dst_name)
    } else {
        nix::sys::stat::mkdirat(dst_dir.as_fd(), dst_name, Mode::S_IRWXU).map_err(Error::from)
    };
    created
        .map_err(|e| log_debug_errno!(e.clone(), "Failed to create {}: {}", dst.display(), e))?;
    let filled = open_dir_at(dst_dir.as_fd(), dst_name).and_then(|dst_fd| {
        copy_dir_into(src_fd.as_fd(), dst_fd.as_fd(), cancel).map_err(|e| {
            log_debug_errno!(
                e.clone(),
                "Failed to copy {} into {}: {}",
                src.display(),
                dst.display(),
                e
            )
        })?;
        match (read_only, on_btrfs) {
            // The copy carries the source's mode; a read-only plain directory (whose
            // write bits were dropped) must come out writable when asked for writable.
            (false, _) => add_owner_write(dst_fd.as_fd()),
            (true, true) => btrfs::subvol_set_read_only(dst_fd.as_fd(), true),
            (true, false) => drop_write_bits(dst_fd.as_fd()),
        }
    });
    if let Err(e) = filled {
        let _ = if on_btrfs {
            subvol_remove(dst_dir.as_fd(), dst_name)
        } else {
            rm_rf_at(dst_dir.as_fd(), dst_name)
        };
        return Err(e);
    }
    Ok(())
}

/// How reflinks have worked out so far in one copy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reflinks {
    /// Try them.
    Try,
    /// The file systems cannot share extents; do not ask again for every file.
    Unsupported,
}

/// A copy of a file we already copied under another name.
struct HardlinkTarget {
    /// Relative to the destination root.
    path: PathBuf,
    /// Links not yet seen; the entry is dropped at zero.
    links_left: u32,
}

/// State of one [`copy_tree`] walk.
struct TreeCopier<'a> {
    cancel: Option<&'a AtomicBool>,
    /// The source's root inode, for the mount check.
    src_root: Meta,
    /// The destination root once it exists, for hard links (`linkat` relative to it).
    dst_root: Option<OwnedFd>,
    /// Device and inode of the destination root: if it lies inside the source, the walk
    /// must not copy the copy into itself.
    dst_root_key: Option<(u32, u32, u64)>,
    /// Path of the directory being filled, relative to `dst_root`.
    rel_path: PathBuf,
    hardlinks: HashMap<(u32, u32, u64), HardlinkTarget>,
    reflinks: Reflinks,
    buffer: Vec<u8>,
    /// Whether the top-level destination was created (and so is ours to clean up).
    created_top: bool,
}

impl<'a> TreeCopier<'a> {
    fn new(cancel: Option<&'a AtomicBool>, src_root: &Meta) -> Self {
        TreeCopier {
            cancel,
            src_root: *src_root,
            dst_root: None,
            dst_root_key: None,
            rel_path: PathBuf::new(),
            hardlinks: HashMap::new(),
            reflinks: Reflinks::Try,
            buffer: Vec::new(),
            created_top: false,
        }
    }

    fn copy_dir_contents(&mut self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<()> {
        for name in read_dir_names(src)? {
            let meta = match stat_at(src, &name) {
                Ok(meta) => meta,
                // Deleted since the listing.
                Err(e) if e.errno() == libc::ENOENT => continue,
                Err(e) => return Err(e),
            };
            self.copy_entry(src, &name, &meta, dst, &name)
                .map_err(|e| {
                    let path = self.rel_path.join(OsStr::from_bytes(name.to_bytes()));
                    match e.msg() {
                        Some(_) => e,
                        None => {
                            log_debug_errno!(e.clone(), "Failed to copy {}: {}", path.display(), e)
                        }
                    }
                })?;
        }
        Ok(())
    }

    /// Copy `src_dir/src_name` (described by `meta`) to `dst_dir/dst_name`.
    fn copy_entry(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
        meta: &Meta,
        dst_dir: BorrowedFd<'_>,
        dst_name: &CStr,
    ) -> Result<()> {
        if cancelled(self.cancel) {
            return Err(Error::new(libc::ECANCELED));
        }
        let is_top = self.dst_root.is_none();
        // Sockets cannot be copied; other mounts are not part of the tree; and a
        // destination inside the source must not be copied into itself.
        if meta.kind() == FileKind::Socket
            || (!is_top && meta.is_mount_below(&self.src_root))
            || Some(meta.hardlink_key()) == self.dst_root_key
        {
            return Ok(());
        }
        if meta.kind() == FileKind::Directory {
            return self.copy_directory(src_dir, src_name, meta, dst_dir, dst_name);
        }
        if meta.nlink > 1 && self.link_to_earlier_copy(meta, dst_dir, dst_name)? {
            return Ok(());
        }
        match meta.kind() {
            FileKind::Regular => self.copy_regular(src_dir, src_name, meta, dst_dir, dst_name)?,
            FileKind::Symlink => {
                let target = nix::fcntl::readlinkat(src_dir, src_name)?;
                nix::unistd::symlinkat(target.as_os_str(), dst_dir, dst_name)?;
                self.created_top |= is_top;
                self.copy_unopened_metadata(src_dir, src_name, meta, dst_dir, dst_name, false)?;
            }
            _ => {
                let kind = SFlag::from_bits_truncate(meta.mode & libc::S_IFMT);
                nix::sys::stat::mknodat(
                    dst_dir,
                    dst_name,
                    kind,
                    Mode::from_bits_truncate(meta.mode & 0o777),
                    meta.rdev,
                )?;
                self.created_top |= is_top;
                self.copy_unopened_metadata(src_dir, src_name, meta, dst_dir, dst_name, true)?;
            }
        }
        if meta.nlink > 1 {
            self.hardlinks.insert(
                meta.hardlink_key(),
                HardlinkTarget {
                    path: self.rel_path.join(OsStr::from_bytes(dst_name.to_bytes())),
                    links_left: meta.nlink - 1,
                },
            );
        }
        Ok(())
    }

    /// If this inode was copied before, hard-link `dst_name` to that copy.
    fn link_to_earlier_copy(
        &mut self,
        meta: &Meta,
        dst_dir: BorrowedFd<'_>,
        dst_name: &CStr,
    ) -> Result<bool> {
        let (Some(root), Some(target)) =
            (&self.dst_root, self.hardlinks.get_mut(&meta.hardlink_key()))
        else {
            return Ok(false);
        };
        nix::unistd::linkat(
            root,
            target.path.as_path(),
            dst_dir,
            dst_name,
            AtFlags::empty(),
        )?;
        target.links_left -= 1;
        if target.links_left == 0 {
            self.hardlinks.remove(&meta.hardlink_key());
        }
        Ok(true)
    }

    fn copy_directory(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
        meta: &Meta,
        dst_dir: BorrowedFd<'_>,
        dst_name: &CStr,
    ) -> Result<()> {
        let src = open_dir_at(src_dir, src_name)?;
        nix::sys::stat::mkdirat(dst_dir, dst_name, Mode::S_IRWXU)?;
        let dst = open_dir_at(dst_dir, dst_name)?;
        let below_top = self.dst_root.is_some();
        if below_top {
            self.rel_path.push(OsStr::from_bytes(dst_name.to_bytes()));
        } else {
            self.created_top = true;
            self.dst_root_key = Some(stat_fd(dst.as_fd())?.hardlink_key());
            self.dst_root = Some(dst.try_clone()?);
        }
        self.copy_dir_contents(src.as_fd(), dst.as_fd())?;
        if below_top {
            self.rel_path.pop();
        }
        // After the children, whose creation changed the directory's times.
        self.copy_inode_metadata(src.as_fd(), dst.as_fd(), meta)
    }

    fn copy_regular(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
        meta: &Meta,
        dst_dir: BorrowedFd<'_>,
        dst_name: &CStr,
    ) -> Result<()> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        // O_NOATIME keeps the source's atime as we found it; it needs ownership or
        // CAP_FOWNER, so retry without.
        let src = match openat(src_dir, src_name, flags | OFlag::O_NOATIME, Mode::empty()) {
            Err(Errno::EPERM) => openat(src_dir, src_name, flags, Mode::empty())?,
            other => other?,
        };
        let dst = openat(
            dst_dir,
            dst_name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            // The final permission bits (less the umask): usually no chmod needed later.
            Mode::from_bits_truncate(meta.mode & 0o777),
        )?;
        self.created_top |= self.dst_root.is_none();
        if meta.size > 0 {
            self.copy_data(src.as_fd(), dst.as_fd(), meta)?;
        }
        self.copy_inode_metadata(src.as_fd(), dst.as_fd(), meta)
    }

    fn copy_data(&mut self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, meta: &Meta) -> Result<()> {
        if self.reflinks == Reflinks::Try {
            match btrfs::reflink(src, dst) {
                Ok(()) => return Ok(()),
                // Per-file refusals (e.g. NOCOW against COW): copy this one.
                Err(e) if e.errno() == libc::EINVAL => {}
                Err(_) => self.reflinks = Reflinks::Unsupported,
            }
        }
        copy_data_extents(src, dst, meta, &mut self.buffer, self.cancel)
    }

    /// Owner, mode, xattrs, then times, on an open copy. The owner comes first because
    /// `chown` clears setuid/setgid bits and file capabilities.
    fn copy_inode_metadata(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        meta: &Meta,
    ) -> Result<()> {
        // Each change is a journal transaction, so only what differs is changed (a
        // fresh inode often has the right owner and mode already).
        let created = stat_fd(dst)?;
        if (created.uid, created.gid) != (meta.uid, meta.gid) {
            nix::unistd::fchown(
                dst,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )?;
        }
        // Entries are created without setuid/setgid bits, so `chown` did not change
        // the mode.
        if created.permissions() != meta.permissions() {
            nix::sys::stat::fchmod(dst, meta.permissions())?;
        }
        copy_xattrs(src, dst)?;
        Ok(set_times(dst, meta.atime, meta.mtime)?)
    }

    /// The same for a symlink or device node, which we do not open.
    fn copy_unopened_metadata(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
        meta: &Meta,
        dst_dir: BorrowedFd<'_>,
        dst_name: &CStr,
        has_mode: bool,
    ) -> Result<()> {
        let created = stat_at(dst_dir, dst_name)?;
        if (created.uid, created.gid) != (meta.uid, meta.gid) {
            nix::unistd::fchownat(
                dst_dir,
                dst_name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        if has_mode && created.permissions() != meta.permissions() {
            // Not a symlink, so following is harmless (symlinks have no mode).
            nix::sys::stat::fchmodat(
                dst_dir,
                dst_name,
                meta.permissions(),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )?;
        }
        copy_xattrs_at(src_dir, src_name, dst_dir, dst_name)?;
        Ok(set_times_at(dst_dir, dst_name, meta.atime, meta.mtime)?)
    }
}

//! File-system helpers for the importers: temporary names, `mkdir -p`, safe recursive
//! removal, faithful tree and file copies, xattrs, sparse writes and "make read-only".
//!
//! Everything that walks a tree does so relative to directory file descriptors, never
//! follows symbolic links and never crosses into another mount, so a hostile image
//! cannot redirect a removal or a copy outside the tree it was asked to touch. The
//! importers call these from worker threads; nothing here depends on the current
//! directory or on global state.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, Whence};

use crate::util::btrfs;
use crate::util::error::{Error, Result};
use crate::{log_debug_errno, log_error_errno};

/// `FS_NOCOW_FL` from `linux/fs.h`: no copy-on-write for this file (btrfs).
const FS_NOCOW_FL: libc::c_int = 0x0080_0000;

/// Buffer size for copies that have to go through user space.
const COPY_BUFFER_SIZE: usize = 256 * 1024;

/// A NUL-terminated copy of `s`; EINVAL if it contains a NUL.
fn c_string(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::new(libc::EINVAL))
}

/// Check that `name` is one path component that can be created or removed.
fn component(name: &OsStr) -> Result<CString> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(Error::new(libc::EINVAL));
    }
    c_string(name)
}

fn is_dot_or_dotdot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

fn cancelled(cancel: Option<&AtomicBool>) -> bool {
    cancel.is_some_and(|c| c.load(Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------
// Temporary names and directories
// ---------------------------------------------------------------------------------

/// 64 random bits from the kernel (`getrandom(2)`).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let mut filled = 0;
    while filled < bytes.len() {
        let rest = &mut bytes[filled..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            // No getrandom (pre-3.17 kernel): std's per-process random hash keys
            // still give a name nobody can predict.
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(u64::from_ne_bytes(bytes));
            return hasher.finish();
        }
        filled += n as usize;
    }
    u64::from_ne_bytes(bytes)
}

/// A random temporary name next to `path`: `<dir>/.#<basename><16 hex digits>`. The
/// random number is written low nibble first, as systemd's `tempfn_random` does.
pub fn tempfn_random(path: &Path) -> PathBuf {
    temp_name(path, random_u64())
}

fn temp_name(path: &Path, mut r: u64) -> PathBuf {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut name = b".#".to_vec();
    name.extend_from_slice(path.file_name().unwrap_or_default().as_bytes());
    for _ in 0..16 {
        name.push(HEX[(r & 0xf) as usize]);
        r >>= 4;
    }
    let name = OsString::from_vec(name);
    match path.file_name() {
        Some(_) => path.with_file_name(name),
        None => path.join(name),
    }
}

/// `mkdir -p path` with `mode` for every directory created. An existing directory (or
/// symlink to one) is fine; an existing non-directory gives ENOTDIR.
pub fn mkdir_p(path: &Path, mode: u32) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    let mode = Mode::from_bits_truncate(mode);
    match nix::unistd::mkdir(path, mode) {
        Ok(()) => return Ok(()),
        Err(Errno::EEXIST) => return require_directory(path),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(parent) = path.parent() {
        mkdir_p(parent, mode.bits())?;
    }
    match nix::unistd::mkdir(path, mode) {
        Ok(()) => Ok(()),
        // Created by someone else meanwhile.
        Err(Errno::EEXIST) => require_directory(path),
        Err(e) => Err(e.into()),
    }
}

fn require_directory(path: &Path) -> Result<()> {
    if nix::sys::stat::stat(path)?.st_mode & libc::S_IFMT == libc::S_IFDIR {
        Ok(())
    } else {
        Err(Error::new(libc::ENOTDIR))
    }
}

/// Create the parent directories of `path` (not `path` itself), like systemd's
/// `mkdir_parents` (the importers use mode 0700).
pub fn mkdir_parents(path: &Path, mode: u32) -> Result<()> {
    match path.parent() {
        Some(parent) => mkdir_p(parent, mode),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------
// Inode metadata (statx)
// ---------------------------------------------------------------------------------

/// The file types a tree can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// What we need to know about an inode, from one `statx` call.
#[derive(Clone, Copy)]
pub(crate) struct Meta {
    /// Full `st_mode`, type bits included.
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) nlink: u32,
    pub(crate) ino: u64,
    pub(crate) dev: (u32, u32),
    pub(crate) rdev: libc::dev_t,
    pub(crate) size: u64,
    /// 512-byte blocks allocated.
    pub(crate) blocks: u64,
    pub(crate) atime: libc::timespec,
    pub(crate) mtime: libc::timespec,
    /// The mount the inode was reached through (`None` before Linux 5.8).
    pub(crate) mnt_id: Option<u64>,
}

impl Meta {
    pub(crate) fn kind(&self) -> FileKind {
        match self.mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            _ => FileKind::Regular,
        }
    }

    /// Permission bits including setuid, setgid and sticky.
    pub(crate) fn permissions(&self) -> Mode {
        Mode::from_bits_truncate(self.mode & 0o7777)
    }

    /// Whether this inode (reached from the directory `parent`) is the root of another
    /// mount. Without mount ids (old kernels) a change of device is taken as a mount,
    /// except for btrfs subvolumes (inode 256), which have their own device numbers.
    pub(crate) fn is_mount_below(&self, parent: &Meta) -> bool {
        match (self.mnt_id, parent.mnt_id) {
            (Some(own), Some(parents)) => own != parents,
            _ => self.dev != parent.dev && self.ino != 256,
        }
    }

    fn hardlink_key(&self) -> (u32, u32, u64) {
        (self.dev.0, self.dev.1, self.ino)
    }
}

fn statx_raw(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> Result<Meta> {
    let mut stx = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `name` is NUL-terminated, `stx` is valid for writes of a `struct statx`.
    let r = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: statx succeeded and filled the structure (it was zeroed before anyway).
    let stx = unsafe { stx.assume_init() };
    let timespec = |t: libc::statx_timestamp| libc::timespec {
        tv_sec: t.tv_sec,
        tv_nsec: t.tv_nsec.into(),
    };
    Ok(Meta {
        mode: u32::from(stx.stx_mode),
        uid: stx.stx_uid,
        gid: stx.stx_gid,
        nlink: stx.stx_nlink,
        ino: stx.stx_ino,
        dev: (stx.stx_dev_major, stx.stx_dev_minor),
        rdev: libc::makedev(stx.stx_rdev_major, stx.stx_rdev_minor),
        size: stx.stx_size,
        blocks: stx.stx_blocks,
        atime: timespec(stx.stx_atime),
        mtime: timespec(stx.stx_mtime),
        mnt_id: (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id),
    })
}

/// Metadata of `name` in `dir`, not following a final symlink.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<Meta> {
    statx_raw(dir, name, 0)
}

/// Metadata of the inode `fd` refers to.
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> Result<Meta> {
    statx_raw(fd, c"", libc::AT_EMPTY_PATH)
}

/// Open the directory `name` in `dir`, refusing a symlink.
pub(crate) fn open_dir_at<P: ?Sized + nix::NixPath>(
    dir: BorrowedFd<'_>,
    name: &P,
) -> Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// Open the directory `path` (symlinks followed).
pub(crate) fn open_dir(path: &Path) -> Result<OwnedFd> {
    Ok(nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// The directory holding `path` and `path`'s final component (EINVAL if it has none,
/// like `/` or `a/..`).
pub(crate) fn split_parent(path: &Path) -> Result<(&Path, &OsStr)> {
    let name = path.file_name().ok_or_else(|| Error::new(libc::EINVAL))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

/// The names in directory `dir`, without `.` and `..`. Read completely before the
/// caller changes anything, so removals and creations cannot confuse the listing.
fn read_dir_names(dir: BorrowedFd<'_>) -> Result<Vec<CString>> {
    // The stream gets its own descriptor (sharing the offset, which only it uses).
    let mut stream = nix::dir::Dir::from_fd(dir.try_clone_to_owned()?)?;
    let mut names = Vec::new();
    for entry in stream.iter() {
        let entry = entry?;
        if !is_dot_or_dotdot(entry.file_name()) {
            names.push(entry.file_name().to_owned());
        }
    }
    Ok(names)
}

// ---------------------------------------------------------------------------------
// Recursive removal
// ---------------------------------------------------------------------------------

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
        match btrfs::subvol_remove(dir, OsStr::from_bytes(name.to_bytes())) {
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

// ---------------------------------------------------------------------------------
// Extended attributes
// ---------------------------------------------------------------------------------

/// Where xattr calls go: an open file, or a path that must not be followed (symlinks
/// and device nodes, which we never open).
enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    NoFollowPath(CString),
}

impl XattrTarget<'_> {
    /// `name` in `dir`, addressed through `/proc/self/fd` since there are no
    /// `*xattrat()` calls on the kernels we support.
    fn at(dir: BorrowedFd<'_>, name: &CStr) -> Result<XattrTarget<'static>> {
        let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.to_bytes());
        Ok(XattrTarget::NoFollowPath(
            CString::new(path).map_err(|_| Error::new(libc::EINVAL))?,
        ))
    }

    /// Call a size-probing xattr function twice (size, then data), growing on ERANGE.
    fn read_sized(&self, call: impl Fn(*mut libc::c_void, usize) -> isize) -> Result<Vec<u8>> {
        loop {
            let size = call(std::ptr::null_mut(), 0);
            if size < 0 {
                return Err(Error::last_os_error());
            }
            let mut buf = vec![0u8; size as usize];
            if buf.is_empty() {
                return Ok(buf);
            }
            let n = call(buf.as_mut_ptr().cast(), buf.len());
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            if Errno::last() != Errno::ERANGE {
                return Err(Error::last_os_error());
            }
        }
    }

    fn list(&self) -> Result<Vec<CString>> {
        let raw = self.read_sized(|buf, size| match self {
            // SAFETY: `buf` is null with size 0 or valid for `size` bytes of writes.
            XattrTarget::Fd(fd) => unsafe { libc::flistxattr(fd.as_raw_fd(), buf.cast(), size) },
            // SAFETY: as above; the path is NUL-terminated.
            XattrTarget::NoFollowPath(p) => unsafe {
                libc::llistxattr(p.as_ptr(), buf.cast(), size)
            },
        })?;
        Ok(raw
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| CString::new(n).expect("split at NUL"))
            .collect())
    }

    fn get(&self, name: &CStr) -> Result<Vec<u8>> {
        self.read_sized(|buf, size| match self {
            // SAFETY: `name` is NUL-terminated; `buf` is null with size 0 or valid for
            // `size` bytes of writes.
            XattrTarget::Fd(fd) => unsafe {
                libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf, size)
            },
            // SAFETY: as above; the path is NUL-terminated.
            XattrTarget::NoFollowPath(p) => unsafe {
                libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf, size)
            },
        })
    }

    fn set(&self, name: &CStr, value: &[u8]) -> Result<()> {
        let r = match self {
            // SAFETY: `name` is NUL-terminated and `value` valid for its length.
            XattrTarget::Fd(fd) => unsafe {
                libc::fsetxattr(
                    fd.as_raw_fd(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            },
            // SAFETY: as above; the path is NUL-terminated.
            XattrTarget::NoFollowPath(p) => unsafe {
                libc::lsetxattr(
                    p.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            },
        };
        if r < 0 {
            return Err(Error::last_os_error());
        }
        Ok(())
    }

    /// Copy every xattr of `self` to `dst`.
    fn copy_all_to(&self, dst: &XattrTarget<'_>) -> Result<()> {
        for name in self.list()? {
            let value = match self.get(&name) {
                Ok(value) => value,
                // Removed since it was listed.
                Err(e) if e.errno() == libc::ENODATA => continue,
                Err(e) => return Err(e),
            };
            dst.set(&name, &value)?;
        }
        Ok(())
    }
}

/// The names of all extended attributes of `fd`.
pub fn flistxattr(fd: BorrowedFd<'_>) -> Result<Vec<OsString>> {
    Ok(XattrTarget::Fd(fd)
        .list()?
        .into_iter()
        .map(|n| OsString::from_vec(n.into_bytes()))
        .collect())
}

/// The value of the extended attribute `name` of `fd` (ENODATA if it has none).
pub fn fgetxattr(fd: BorrowedFd<'_>, name: impl AsRef<OsStr>) -> Result<Vec<u8>> {
    XattrTarget::Fd(fd).get(&c_string(name.as_ref())?)
}

/// Set the extended attribute `name` of `fd` to `value`.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: impl AsRef<OsStr>, value: &[u8]) -> Result<()> {
    XattrTarget::Fd(fd).set(&c_string(name.as_ref())?, value)
}

/// Set the extended attribute `name` of `fd` to the string `value` (without a NUL), as
/// the importers record `user.source_url` and the like.
pub fn fsetxattr_str(fd: BorrowedFd<'_>, name: &str, value: &str) -> Result<()> {
    fsetxattr(fd, name, value.as_bytes())
}

/// Copy every extended attribute of `src` to `dst` (including `trusted.*`,
/// `security.*` and ACLs, as far as the caller's privileges allow).
pub fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<()> {
    XattrTarget::Fd(src).copy_all_to(&XattrTarget::Fd(dst))
}

/// Give `dst` the access and modification times of `src`.
pub fn copy_times(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<()> {
    let meta = stat_fd(src)?;
    set_times_fd(dst, &meta)
}

fn set_times_fd(fd: BorrowedFd<'_>, meta: &Meta) -> Result<()> {
    nix::sys::stat::futimens(fd, &TimeSpec::from(meta.atime), &TimeSpec::from(meta.mtime))?;
    Ok(())
}

/// Set `FS_NOCOW_FL` on `fd` (btrfs: no copy-on-write, for disk images). Errors are
/// returned (ENOTTY/EOPNOTSUPP where the file system has no such flag); the importers
/// only warn about them.
pub fn chattr_nocow(fd: BorrowedFd<'_>) -> Result<()> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int (the kernel uses int despite the ioctl
    // number's `long`) to `flags`, which is valid for writes.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } < 0 {
        return Err(Error::last_os_error());
    }
    if flags & FS_NOCOW_FL != 0 {
        return Ok(());
    }
    flags |= FS_NOCOW_FL;
    // SAFETY: FS_IOC_SETFLAGS reads one int from `flags`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } < 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// File data
// ---------------------------------------------------------------------------------

/// Copy all of `src`'s data to the start of the (empty) file `dst`: a reflink when the
/// file system can share extents, otherwise a copy of the data extents only, so holes
/// stay holes. `dst` ends up exactly as long as `src`, trailing hole included. The
/// file offsets of both descriptors may change.
pub fn copy_file_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<()> {
    let meta = stat_fd(src)?;
    if meta.size == 0 || btrfs::reflink(src, dst).is_ok() {
        return Ok(());
    }
    let mut buffer = Vec::new();
    copy_data_extents(src, dst, &meta, &mut buffer)
}

/// Copy the data extents of `src` (of which `meta` is the metadata) to the same offsets
/// in `dst`, then set `dst`'s size.
fn copy_data_extents(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    meta: &Meta,
    buffer: &mut Vec<u8>,
) -> Result<()> {
    let size = meta.size as i64;
    // Fewer allocated blocks than the size needs means holes (or compression): look
    // for the data; otherwise skip the two lseeks per extent.
    let maybe_sparse = meta.blocks.saturating_mul(512) < meta.size;
    if maybe_sparse {
        let mut pos = 0i64;
        while pos < size {
            let data = match nix::unistd::lseek(src, pos, Whence::SeekData) {
                Ok(data) => data,
                // No data after `pos`: the rest is a hole.
                Err(Errno::ENXIO) => break,
                // No SEEK_DATA support: copy everything.
                Err(Errno::EINVAL | Errno::EOPNOTSUPP) if pos == 0 => {
                    copy_range(src, dst, 0, meta.size, buffer)?;
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            if data >= size {
                break;
            }
            let hole = nix::unistd::lseek(src, data, Whence::SeekHole)?.min(size);
            copy_range(src, dst, data as u64, (hole - data) as u64, buffer)?;
            pos = hole;
        }
        // A trailing hole is not written: the size must be set.
        nix::unistd::ftruncate(dst, size)?;
    } else {
        copy_range(src, dst, 0, meta.size, buffer)?;
    }
    Ok(())
}

/// Copy `len` bytes at `offset` from `src` to the same offset in `dst`, in the kernel
/// when it can (`copy_file_range`), else through `buffer`.
fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    offset: u64,
    len: u64,
    buffer: &mut Vec<u8>,
) -> Result<()> {
    let mut off_in = offset as i64;
    let mut off_out = offset as i64;
    let mut left = len;
    while left > 0 {
        let chunk = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
        // SAFETY: both offsets point to live i64s the kernel updates; no buffers.
        let r = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        match Errno::result(r).map(|n| n as usize) {
            // The source got shorter: copy what there is.
            Ok(0) => return Ok(()),
            Ok(n) => left -= n as u64,
            Err(Errno::EINTR) => {}
            Err(Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                return copy_range_by_read_write(src, dst, off_in as u64, left, buffer);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_by_read_write(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    offset: u64,
    len: u64,
    buffer: &mut Vec<u8>,
) -> Result<()> {
    buffer.resize(COPY_BUFFER_SIZE, 0);
    let mut offset = offset as i64;
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let n = match nix::sys::uio::pread(src, &mut buffer[..want], offset) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut written = 0;
        while written < n {
            match nix::sys::uio::pwrite(dst, &buffer[written..n], offset + written as i64) {
                Ok(0) => return Err(Error::new(libc::EIO)),
                Ok(w) => written += w,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        offset += n as i64;
        left -= n as u64;
    }
    Ok(())
}

/// Write `buf` at the current offset of `fd`, seeking over runs of NUL bytes instead of
/// writing them when a run is longer than `run_length` or touches either end of `buf`
/// (spec §3.4; the download job uses 64). The caller sets the final size with
/// `ftruncate`, since a trailing run is never written. Returns `buf.len()`; a short
/// write is EIO.
pub fn sparse_write(fd: BorrowedFd<'_>, buf: &[u8], run_length: usize) -> Result<usize> {
    let end = buf.len();
    // `written` is where the pending (not yet written) data starts, `pos` the scan.
    let mut written = 0;
    let mut pos = 0;
    while pos < end {
        let zeros = buf[pos..].iter().take_while(|b| **b == 0).count();
        if zeros == 0 {
            // Jump to the next NUL byte.
            pos += buf[pos..].iter().position(|b| *b == 0).unwrap_or(end - pos);
            continue;
        }
        let run_end = pos + zeros;
        if zeros > run_length || pos == 0 || run_end == end {
            write_exact(fd, &buf[written..pos])?;
            nix::unistd::lseek(fd, zeros as i64, Whence::SeekCur)?;
            written = run_end;
        }
        pos = run_end;
    }
    write_exact(fd, &buf[written..end])?;
    Ok(end)
}

/// One `write()`; a short write is EIO (as in the C job, which has no retry loop).
fn write_exact(fd: BorrowedFd<'_>, data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let n = nix::unistd::write(fd, data)?;
    if n != data.len() {
        return Err(Error::new(libc::EIO));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Read-only images
// ---------------------------------------------------------------------------------

/// Drop the write bits of the inode `fd` (`chmod a-w`), keeping setuid/setgid/sticky.
pub(crate) fn drop_write_bits(fd: BorrowedFd<'_>) -> Result<()> {
    let meta = stat_fd(fd)?;
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7555))?;
    Ok(())
}

/// Give the owner back the write bit [`drop_write_bits`] took: a writable copy of a
/// read-only plain directory must be an ordinary writable tree.
pub(crate) fn add_owner_write(fd: BorrowedFd<'_>) -> Result<()> {
    let meta = stat_fd(fd)?;
    if meta.mode & 0o200 == 0 {
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate((meta.mode & 0o7777) | 0o200))?;
    }
    Ok(())
}

/// Make a finished image read-only (spec §5.3): a btrfs subvolume gets its read-only
/// flag; anything else (a plain directory, a raw file) loses its write bits, on that
/// inode only. Errors are logged with the C tool's messages.
pub fn make_read_only(path: &Path) -> Result<()> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e)
    })?;
    make_read_only_fd(fd.as_fd())
}

/// [`make_read_only`] of an open file or directory.
pub fn make_read_only_fd(fd: BorrowedFd<'_>) -> Result<()> {
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

// ---------------------------------------------------------------------------------
// Tree copies
// ---------------------------------------------------------------------------------

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

/// Copy the contents of the directory `src` into the existing, empty directory `dst`
/// and give `dst` the owner, mode, xattrs and times of `src` (what [`copy_tree`] does
/// below its top; used to fill a freshly made btrfs subvolume). On failure `dst` is
/// left partially filled for the caller to remove.
pub fn copy_tree_into(src: &Path, dst: &Path, cancel: Option<&AtomicBool>) -> Result<()> {
    let src_fd = open_dir(src)?;
    let dst_fd = open_dir(dst)?;
    copy_dir_into(src_fd.as_fd(), dst_fd.as_fd(), cancel).map_err(|e| {
        log_debug_errno!(
            e.clone(),
            "Failed to copy {} into {}: {}",
            src.display(),
            dst.display(),
            e
        )
    })
}

/// [`copy_tree_into`] on open directories.
pub fn copy_dir_into(
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
        copy_data_extents(src, dst, meta, &mut self.buffer)
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
        set_times_fd(dst, meta)
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
        XattrTarget::at(src_dir, src_name)?.copy_all_to(&XattrTarget::at(dst_dir, dst_name)?)?;
        nix::sys::stat::utimensat(
            dst_dir,
            dst_name,
            &TimeSpec::from(meta.atime),
            &TimeSpec::from(meta.mtime),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn temp_names_put_the_low_nibble_first() {
        assert_eq!(
            temp_name(
                Path::new("/var/lib/machines/.raw-x.raw"),
                0x0123_4567_89ab_cdef
            ),
            Path::new("/var/lib/machines/.#.raw-x.rawfedcba9876543210")
        );
        assert_eq!(
            temp_name(Path::new("foo"), 1),
            Path::new(".#foo1000000000000000")
        );
        let a = tempfn_random(Path::new("/x/image"));
        let b = tempfn_random(Path::new("/x/image"));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        let hex = name.strip_prefix(".#image").unwrap();
        assert_eq!(hex.len(), 16);
        assert!(hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(a.parent(), Some(Path::new("/x")));
    }

    #[test]
    fn mkdir_parents_creates_only_the_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("a/b/c/leaf");
        mkdir_parents(&target, 0o700).unwrap();
        let meta = std::fs::metadata(tmp.path().join("a/b/c")).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        assert!(!target.exists());
        // Existing parents are fine.
        mkdir_parents(&target, 0o700).unwrap();
        // A file in the way is ENOTDIR.
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        let err = mkdir_parents(&tmp.path().join("file/x/y"), 0o700).unwrap_err();
        assert_eq!(err.errno(), libc::ENOTDIR);
        let err = mkdir_parents(&tmp.path().join("file/y"), 0o700).unwrap_err();
        assert_eq!(err.errno(), libc::ENOTDIR);
    }

    /// The seek decisions of `sparse_write`, observed on a pipe, where any seek fails.
    #[test]
    fn sparse_write_seeks_exactly_over_long_and_edge_runs() {
        let write_to_pipe = |buf: &[u8]| {
            let (r, w) = nix::unistd::pipe().unwrap();
            let result = sparse_write(w.as_fd(), buf, 64);
            drop(w);
            let mut out = Vec::new();
            File::from(r).read_to_end(&mut out).unwrap();
            (result, out)
        };
        let mut middle_64 = vec![1u8];
        middle_64.extend([0; 64]);
        middle_64.push(2);
        let mut middle_65 = vec![1u8];
        middle_65.extend([0; 65]);
        middle_65.push(2);

        // Written as is: no runs, or short runs in the middle (up to the run length).
        for buf in [&b"abc"[..], b"a\0b", b"a\0\0\0b", &middle_64] {
            let (result, out) = write_to_pipe(buf);
            assert_eq!(result.unwrap(), buf.len(), "buffer {buf:?}");
            assert_eq!(out, buf);
        }
        // Seeked (ESPIPE on a pipe): a run at either end, or longer than the run length.
        for buf in [&b"\0a"[..], b"a\0", b"\0", &middle_65] {
            let (result, _) = write_to_pipe(buf);
            assert_eq!(result.unwrap_err().errno(), libc::ESPIPE, "buffer {buf:?}");
        }
        // What precedes the first seek has been written.
        let (_, out) = write_to_pipe(&middle_65);
        assert_eq!(out, [1]);
        // An empty buffer does nothing.
        assert_eq!(write_to_pipe(b"").0.unwrap(), 0);
    }

    #[test]
    fn sparse_write_leaves_holes_in_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut file = File::create_new(tmp.path().join("sparse")).unwrap();
        let mut expected = Vec::new();
        // Two calls, as the download job makes: the second starts where the first ended.
        let mut first = vec![7u8; 4096];
        first.extend(vec![0u8; 4 << 20]);
        first.extend(b"middle\0\0\0data");
        let mut second = vec![0u8; 2 << 20];
        second.extend(vec![9u8; 4096]);
        second.extend(vec![0u8; 1 << 20]);
        for buf in [&first, &second] {
            assert_eq!(sparse_write(file.as_fd(), buf, 64).unwrap(), buf.len());
            expected.extend_from_slice(buf);
        }
        assert_eq!(file.stream_position().unwrap(), expected.len() as u64);
        // The trailing run was skipped: the job truncates to the size it counted.
        file.set_len(expected.len() as u64).unwrap();
        file.sync_all().unwrap();

        let mut content = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut content).unwrap();
        assert!(
            content == expected,
            "file content differs from what was written"
        );
        let allocated = file.metadata().unwrap().blocks() * 512;
        assert!(
            allocated <= 64 * 1024,
            "{allocated} bytes allocated for about 8 KiB of data in a 7 MiB file"
        );
    }

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

//! The unpacker's system calls in the shape it needs them: `openat2` confined to the
//! root (with the EAGAIN retry), `openat`, `fstat`/`fstatat`, the depth of a directory,
//! and chmod of a node without following it (`fchmodat2`, with its fallback). Times and
//! xattrs are set with `util::fs`; the raw calls nix lacks are in `util::sys`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};

/// How often `openat2` is retried when the kernel reports a concurrent rename or mount
/// (EAGAIN), before giving up.
const OPENAT2_RETRIES: usize = 16;

/// `openat2(dirfd, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
pub fn open_in_root(dirfd: BorrowedFd<'_>, path: &CStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(dirfd, path, how) {
            Err(Errno::EAGAIN) if tries < OPENAT2_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// `fchmodat2(dirfd, name, mode, AT_SYMLINK_NOFOLLOW)` (Linux 6.6+), for nodes that have
/// no fd we could open for writing (devices, FIFOs). On older kernels: an `O_PATH`
/// fd of the node (not following it), checked not to be a symlink, and chmod through
/// its `/proc/thread-self/fd` link.
pub fn chmod_at_nofollow(dirfd: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<(), Errno> {
    let r = crate::util::sys::fchmodat2(dirfd, name, mode, AtFlags::AT_SYMLINK_NOFOLLOW);
    if r != Err(Errno::ENOSYS) {
        return r;
    }
    let node = open_at(dirfd, name, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0)?;
    if file_type(&fstat(node.as_fd())?) == libc::S_IFLNK {
        return Err(Errno::EOPNOTSUPP);
    }
    let path = CString::new(format!("/proc/thread-self/fd/{}", node.as_raw_fd()))
        .map_err(|_| Errno::EINVAL)?;
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path.as_c_str(),
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
}

/// How many directories deep `fd` lies below `/`: the components of the path the kernel
/// gives for it. ENAMETOOLONG when that path does not fit a page (a tree deeper than
/// any path can name); ENOENT without `/proc`.
pub fn depth(fd: BorrowedFd<'_>) -> Result<usize, Errno> {
    let link = format!("/proc/thread-self/fd/{}", fd.as_raw_fd());
    let path = nix::fcntl::readlink(link.as_str())?;
    Ok(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .count())
}

/// `fstat` of an open fd.
pub fn fstat(fd: BorrowedFd<'_>) -> Result<libc::stat, Errno> {
    nix::sys::stat::fstat(fd)
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`.
pub fn lstat_at(dirfd: BorrowedFd<'_>, name: &CStr) -> Result<libc::stat, Errno> {
    nix::sys::stat::fstatat(dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// `openat(dirfd, name, flags | O_CLOEXEC, mode)`.
pub fn open_at(
    dirfd: BorrowedFd<'_>,
    name: &CStr,
    flags: OFlag,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        dirfd,
        name,
        flags | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(mode),
    )
}

/// The file type bits of a stat mode.
pub fn file_type(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

pub fn is_dir(st: &libc::stat) -> bool {
    file_type(st) == libc::S_IFDIR
}

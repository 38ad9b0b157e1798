//! Access and modification times: setting them on an open file or on a node that is not
//! followed, and copying them from one inode to another. Times are nix `TimeSpec`s;
//! `TimeSpec::UTIME_OMIT` leaves one alone.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use nix::sys::stat::UtimensatFlags;
use nix::sys::time::TimeSpec;

use super::stat::stat_fd;
use crate::util::error::Result;

/// Set the access and modification times of the open file `fd`.
pub fn set_times(fd: BorrowedFd<'_>, atime: TimeSpec, mtime: TimeSpec) -> nix::Result<()> {
    nix::sys::stat::futimens(fd, &atime, &mtime)
}

/// Set the modification time of the open file `fd`, leaving its access time alone (GNU
/// tar does the same).
pub fn set_mtime(fd: BorrowedFd<'_>, mtime: TimeSpec) -> nix::Result<()> {
    set_times(fd, TimeSpec::UTIME_OMIT, mtime)
}

/// Set the access and modification times of `dir/name` without following `name`.
pub(super) fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: TimeSpec,
    mtime: TimeSpec,
) -> nix::Result<()> {
    nix::sys::stat::utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
}

/// Set the modification time of `dir/name` without following `name`, leaving its
/// access time alone.
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &CStr, mtime: TimeSpec) -> nix::Result<()> {
    set_times_at(dir, name, TimeSpec::UTIME_OMIT, mtime)
}

/// Give `dst` the access and modification times of `src`.
pub fn copy_times(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<()> {
    let meta = stat_fd(src)?;
    Ok(set_times(dst, meta.atime, meta.mtime)?)
}

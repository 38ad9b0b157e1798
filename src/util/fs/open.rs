//! Opening directories and naming their entries: `open_dir`/`open_dir_at`, splitting a
//! path into parent and name, checked single components, and directory listings.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::util::error::{Error, Result};

/// A NUL-terminated copy of `s`; EINVAL if it contains a NUL.
fn c_string(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::new(libc::EINVAL))
}

/// Check that `name` is one path component that can be created or removed.
pub(super) fn component(name: &OsStr) -> Result<CString> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(Error::new(libc::EINVAL));
    }
    c_string(name)
}

fn is_dot_or_dotdot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
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

/// The parent directory of `path` (opened) and `path`'s final component.
pub(super) fn open_parent(path: &Path) -> Result<(OwnedFd, &OsStr)> {
    let (parent, name) = split_parent(path)?;
    Ok((open_dir(parent)?, name))
}

/// The names in directory `dir`, without `.` and `..`. Read completely before the
/// caller changes anything, so removals and creations cannot confuse the listing.
pub(super) fn read_dir_names(dir: BorrowedFd<'_>) -> Result<Vec<CString>> {
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

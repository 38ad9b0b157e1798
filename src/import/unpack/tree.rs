//! Path operations on the target tree, all relative to the root fd.
//!
//! Paths handed in are normalized member paths (`a/b/c`: no leading `/`, no `.` or
//! `..` components, `""` for the root). They are resolved with `openat2` and
//! `RESOLVE_IN_ROOT`, so a symlink met on the way (`/x`, `../../x`, a chain of them)
//! is interpreted with the root as `/` and never leads out; the final component is
//! then operated on with `*at` calls that do not follow it.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode as Perm;
use nix::unistd::UnlinkatFlags;

use super::sys;
use crate::util::fs;

/// A normalized path as a C string for `openat2` (`"."` for the root).
fn c_path(path: &[u8]) -> CString {
    if path.is_empty() {
        c".".to_owned()
    } else {
        // Member paths never contain NUL: header fields stop at the first NUL and PAX
        // values with one are refused.
        CString::new(path).expect("member paths contain no NUL")
    }
}

/// Open a directory by member path, following intermediate symlinks inside the root.
/// With `O_NOFOLLOW` in `flags` the final component must itself be a directory.
pub fn open_dir(root: BorrowedFd<'_>, path: &[u8], flags: OFlag) -> Result<OwnedFd, Errno> {
    sys::open_in_root(root, &c_path(path), flags | OFlag::O_DIRECTORY)
}

/// Open the directory `path` for use as a parent, creating missing components with mode
/// 0777 minus the umask (what GNU tar gives directories the archive does not list).
/// Before the first component is created, `before_create` is asked with the deepest
/// existing ancestor and the number of levels about to be created (an error stops it).
/// `created` is called with each component path that had to be created. On failure
/// returns the errno and the component path that failed.
pub fn make_parents(
    root: BorrowedFd<'_>,
    path: &[u8],
    mut created: impl FnMut(&[u8]),
    mut before_create: impl FnMut(BorrowedFd<'_>, usize) -> Result<(), Errno>,
) -> Result<OwnedFd, (Errno, Vec<u8>)> {
    match open_dir(root, path, OFlag::O_PATH) {
        Err(Errno::ENOENT) => {}
        other => return other.map_err(|e| (e, path.to_vec())),
    }
    let mut current = open_dir(root, b"", OFlag::O_PATH).map_err(|e| (e, Vec::new()))?;
    let mut creating = false;
    let mut end = 0;
    while end < path.len() {
        let start = if end == 0 { 0 } else { end + 1 };
        end = path[start..]
            .iter()
            .position(|&b| b == b'/')
            .map_or(path.len(), |i| start + i);
        let prefix = &path[..end];
        let component = CString::new(&path[start..end]).expect("no NUL");
        if !creating {
            match open_dir(root, prefix, OFlag::O_PATH) {
                Ok(fd) => {
                    current = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {
                    let levels = path[start..].split(|&b| b == b'/').count();
                    before_create(current.as_fd(), levels).map_err(|e| (e, prefix.to_vec()))?;
                    creating = true;
                }
                Err(e) => return Err((e, prefix.to_vec())),
            }
        }
        nix::sys::stat::mkdirat(
            current.as_fd(),
            component.as_c_str(),
            Perm::from_bits_truncate(0o777),
        )
        .map_err(|e| (e, prefix.to_vec()))?;
        created(prefix);
        current = sys::open_at(
            current.as_fd(),
            &component,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            0,
        )
        .map_err(|e| (e, prefix.to_vec()))?;
    }
    Ok(current)
}

/// The names in an open directory, without `.` and `..`.
pub fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<CString>, Errno> {
    let mut d = nix::dir::Dir::openat(
        dir,
        c".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Perm::empty(),
    )?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Remove `dir/name` and, for a directory, everything below it; never follows symlinks
/// and refuses (EXDEV) to remove or enter a mount point.
pub fn remove_all(dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    let st = sys::lstat_at(dir, name)?;
    if !sys::is_dir(&st) {
        return nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
    if fs::is_mount_root(dir, name)? {
        return Err(Errno::EXDEV);
    }
    let sub = sys::open_at(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        0,
    )?;
    for child in list_dir(sub.as_fd())? {
        match remove_all(sub.as_fd(), &child) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// Split a normalized path into its parent path and last component.
pub fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    }
}

/// `parent/name` for a normalized parent path.
pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        p.extend_from_slice(parent);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// True if directory `dir` is `path` or one of its ancestors.
pub fn is_ancestor_or_self(dir: &[u8], path: &[u8]) -> bool {
    dir.is_empty()
        || (path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_helpers() {
        assert_eq!(split_last(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a/b", b"x"), b"a/b/x");
        assert!(is_ancestor_or_self(b"", b"x"));
        assert!(is_ancestor_or_self(b"a", b"a/b"));
        assert!(is_ancestor_or_self(b"a/b", b"a/b"));
        assert!(!is_ancestor_or_self(b"a", b"ab"));
        assert!(!is_ancestor_or_self(b"a/b", b"a"));
    }
}

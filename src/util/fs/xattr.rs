//! Extended attributes: reading or copying all of them from one inode to another, and
//! setting one on a node that is not opened (a symlink or device node, addressed as
//! `dir` + name).
//! An open file's single attribute is set with `util::sys::fsetxattr`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

use crate::util::sys;

/// Where xattr calls go: an open file, or a path that must not be followed (symlinks
/// and device nodes, which we never open).
enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    NoFollowPath(CString),
}

impl XattrTarget<'_> {
    /// `name` in `dir`, addressed through `/proc/thread-self/fd`, which names exactly
    /// that open directory, since there are no `*xattrat()` calls on the kernels we
    /// support.
    fn at(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<XattrTarget<'static>> {
        let mut path = format!("/proc/thread-self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.to_bytes());
        Ok(XattrTarget::NoFollowPath(
            CString::new(path).map_err(|_| Errno::EINVAL)?,
        ))
    }

    /// Call a size-probing xattr function twice (size, then data), growing on ERANGE.
    fn read_sized(&self, call: impl Fn(&mut [u8]) -> nix::Result<usize>) -> nix::Result<Vec<u8>> {
        loop {
            let size = call(&mut [])?;
            let mut buf = vec![0u8; size];
            if buf.is_empty() {
                return Ok(buf);
            }
            match call(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                // Grown since we asked for the size.
                Err(Errno::ERANGE) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn list(&self) -> nix::Result<Vec<CString>> {
        let raw = self.read_sized(|buf| match self {
            XattrTarget::Fd(fd) => sys::flistxattr(*fd, buf),
            XattrTarget::NoFollowPath(p) => sys::llistxattr(p, buf),
        })?;
        Ok(raw
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| CString::new(n).expect("split at NUL"))
            .collect())
    }

    fn get(&self, name: &CStr) -> nix::Result<Vec<u8>> {
        self.read_sized(|buf| match self {
            XattrTarget::Fd(fd) => sys::fgetxattr(*fd, name, buf),
            XattrTarget::NoFollowPath(p) => sys::lgetxattr(p, name, buf),
        })
    }

    fn set(&self, name: &CStr, value: &[u8]) -> nix::Result<()> {
        match self {
            XattrTarget::Fd(fd) => sys::fsetxattr(*fd, name, value),
            XattrTarget::NoFollowPath(p) => sys::lsetxattr(p, name, value),
        }
    }

    /// Every xattr of `self`, in the order the file system lists them.
    fn read_all(&self) -> nix::Result<Vec<(CString, Vec<u8>)>> {
        let mut out = Vec::new();
        for name in self.list()? {
            match self.get(&name) {
                Ok(value) => out.push((name, value)),
                // Removed since it was listed.
                Err(Errno::ENODATA) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Copy every xattr of `self` to `dst`.
    fn copy_all_to(&self, dst: &XattrTarget<'_>) -> nix::Result<()> {
        for (name, value) in self.read_all()? {
            dst.set(&name, &value)?;
        }
        Ok(())
    }
}

/// Every extended attribute of the open file `fd` (name, value), as far as the
/// caller's privileges let it see them.
pub fn read_xattrs(fd: BorrowedFd<'_>) -> nix::Result<Vec<(CString, Vec<u8>)>> {
    XattrTarget::Fd(fd).read_all()
}

/// [`read_xattrs`] of `dir/name`, without following `name` (symlinks, devices, FIFOs).
pub fn read_xattrs_at(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<Vec<(CString, Vec<u8>)>> {
    XattrTarget::at(dir, name)?.read_all()
}

/// Copy every extended attribute of `src` to `dst` (including `trusted.*`,
/// `security.*` and ACLs, as far as the caller's privileges allow).
pub fn copy_xattrs(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> nix::Result<()> {
    XattrTarget::Fd(src).copy_all_to(&XattrTarget::Fd(dst))
}

/// [`copy_xattrs`] between two nodes that are not opened, `src_dir/src_name` and
/// `dst_dir/dst_name`; neither name is followed.
pub(super) fn copy_xattrs_at(
    src_dir: BorrowedFd<'_>,
    src_name: &CStr,
    dst_dir: BorrowedFd<'_>,
    dst_name: &CStr,
) -> nix::Result<()> {
    XattrTarget::at(src_dir, src_name)?.copy_all_to(&XattrTarget::at(dst_dir, dst_name)?)
}

/// Set the extended attribute `key` of `dir/name` to `value`, without following `name`
/// (for symlinks, devices and FIFOs: nodes no writable fd is held for).
pub fn set_xattr_at(dir: BorrowedFd<'_>, name: &CStr, key: &CStr, value: &[u8]) -> nix::Result<()> {
    XattrTarget::at(dir, name)?.set(key, value)
}

//! Setting and reading the metadata tests stage and compare: xattrs, times, owners and
//! device nodes, always on the path itself (a final symlink is not followed). Every
//! helper panics with the path and the OS error when the call fails, so a fixture that
//! could not be built never passes for a tree that was.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn check(r: libc::c_int, call: &str, path: &Path) {
    assert_eq!(
        r,
        0,
        "{call} {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// All xattrs of `path`, name → value.
pub fn lxattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let p = c_path(path);
    let mut names = vec![0u8; 65536];
    // SAFETY: `p` is NUL-terminated and `names` is valid for its length.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(
        n >= 0,
        "llistxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 65536];
        // SAFETY: both strings are NUL-terminated, `value` is valid for its length.
        let len = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(
            len >= 0,
            "lgetxattr {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        value.truncate(len as usize);
        out.insert(name.to_vec(), value);
    }
    out
}

/// Set one xattr.
pub fn set_lxattr(path: &Path, name: &str, value: &[u8]) {
    let p = c_path(path);
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated, `value` is valid for its length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(r, &format!("lsetxattr {name} on"), path);
}

fn utimens(path: &Path, atime: libc::timespec, mtime: libc::timespec) {
    let p = c_path(path);
    let times = [atime, mtime];
    // SAFETY: `p` is NUL-terminated and `times` holds two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(r, "utimensat", path);
}

fn timespec((tv_sec, tv_nsec): (i64, i64)) -> libc::timespec {
    libc::timespec { tv_sec, tv_nsec }
}

/// Set atime and mtime, each as (seconds, nanoseconds).
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    utimens(path, timespec(atime), timespec(mtime));
}

/// Set the mtime (seconds, nanoseconds) and leave the atime alone.
pub fn set_mtime(path: &Path, mtime: (i64, i64)) {
    utimens(path, timespec((0, libc::UTIME_OMIT)), timespec(mtime));
}

/// `chown -h`.
pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
}

/// `mknod` of a device node or FIFO (`kind` is `S_IFCHR`, `S_IFBLK` or `S_IFIFO`).
pub fn mknod(path: &Path, kind: libc::mode_t, mode: libc::mode_t, major: u32, minor: u32) {
    let p = c_path(path);
    // SAFETY: `p` is NUL-terminated.
    let r = unsafe { libc::mknod(p.as_ptr(), kind | mode, libc::makedev(major, minor)) };
    check(r, "mknod", path);
}

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

/// The data segments `(offset, length)` of the file at `path`, as `SEEK_DATA` and
/// `SEEK_HOLE` report them (what a copy that keeps holes would write).
pub fn data_map(path: &Path) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let size = f.metadata().unwrap().len() as i64;
    let fd = f.as_raw_fd();
    let mut map = Vec::new();
    let mut pos = 0i64;
    while pos < size {
        // SAFETY: `fd` is open for the duration of the loop.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENXIO),
                "SEEK_DATA {}",
                path.display()
            );
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) }.min(size);
        assert!(
            hole >= data,
            "SEEK_HOLE {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        map.push((data as u64, (hole - data) as u64));
        pos = hole;
    }
    map
}

/// Bytes allocated to the file at `path` (`st_blocks` × 512).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().blocks() * 512
}

/// A SHA-256 of a file's content that costs nothing for its holes: the size, then every
/// 4 KiB block of its data segments that is not all zeros, with its offset. Two files
/// have the same digest exactly when they hold the same bytes, wherever their holes
/// are (a hole reads as zeros), so a 9 GiB sparse file is compared by reading its data.
pub fn content_digest(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let size = f.metadata().unwrap().len();
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    const B: u64 = 4096;
    let mut buf = vec![0u8; 1 << 20];
    // The next aligned block not hashed yet (segments may share a block).
    let mut next = 0u64;
    for (offset, len) in data_map(path) {
        // Every aligned block the segment touches, read whole (hole parts read as zero).
        let mut at = (offset / B * B).max(next);
        let end = (offset + len).div_ceil(B) * B;
        while at < end {
            let want = ((end - at) as usize).min(buf.len());
            let n = f.read_at(&mut buf[..want], at).unwrap();
            if n == 0 {
                break; // the last block was partial: end of file
            }
            for (i, block) in buf[..n].chunks(B as usize).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    h.update((at + i as u64 * B).to_le_bytes());
                    h.update(block);
                }
            }
            at += n as u64;
        }
        next = end;
    }
    format!("{:x}", h.finalize())
}

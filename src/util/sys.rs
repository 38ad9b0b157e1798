//! The raw system calls nix does not wrap, each written once: `getrandom`, `statx`,
//! `fchmodat2`, the xattr calls, the inode-flag ioctls, `pidfd_open`, `sync_file_range`,
//! `F_DUPFD_CLOEXEC` with a descriptor nix leaves raw,
//! glibc's `strerror_r`, the terminal size (`TIOCGWINSZ`) and `localtime_r`.
//!
//! Every function here is a safe, thin shape of one call: it takes borrowed fds, C
//! strings and slices, and returns nix's `Errno` on failure, like nix itself. The
//! policy (retries, fallbacks, error messages) lives with the callers, mostly in
//! `util::fs`. This module imports nothing else from `util`, so anything may use it.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::AtFlags;

/// Fill `buf` with random bytes from the kernel (`getrandom(2)`, no flags). Returns how
/// many bytes were written (fewer than asked when interrupted by a signal).
pub fn getrandom(buf: &mut [u8]) -> nix::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    Errno::result(n).map(|n| n as usize)
}

/// `pidfd_open(pid, 0)`: a descriptor (close-on-exec) that becomes readable when the
/// process exits. `pid` should be an unreaped child of ours, so that it cannot be reused.
pub fn pidfd_open(pid: libc::pid_t) -> nix::Result<OwnedFd> {
    // SAFETY: the call takes a pid and flags and returns a new descriptor or -1; a new
    // descriptor is owned by nobody else, so wrapping it once is sound.
    unsafe {
        let fd = Errno::result(libc::syscall(libc::SYS_pidfd_open, pid, 0))?;
        Ok(OwnedFd::from_raw_fd(fd as i32))
    }
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: a duplicate of `fd` numbered `min` or higher.
pub fn dup_at_least(fd: BorrowedFd<'_>, min: libc::c_int) -> nix::Result<OwnedFd> {
    // SAFETY: the call takes a descriptor and two integers; a new descriptor is owned by
    // nobody else, so wrapping it once is sound.
    unsafe {
        let dup = Errno::result(libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min))?;
        Ok(OwnedFd::from_raw_fd(dup))
    }
}

/// Start writing out the dirty pages of the whole file `fd` without waiting for them
/// (`sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)`).
pub fn start_writeback(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: the call takes a descriptor, offsets and flags; no memory is passed.
    let r = unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    Errno::result(r).map(drop)
}

/// `statx(dir, name, flags, mask)`. The fields the kernel did not fill are zero; check
/// `stx_mask` for the ones that are optional.
pub fn statx(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: AtFlags,
    mask: u32,
) -> nix::Result<libc::statx> {
    // SAFETY: `name` is NUL-terminated and `stx` is valid for writes of a
    // `struct statx`; the structure is plain data, and it is zeroed before the call, so
    // it is initialised whatever the kernel fills in.
    unsafe {
        let mut stx = MaybeUninit::<libc::statx>::zeroed();
        Errno::result(libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags.bits(),
            mask,
            stx.as_mut_ptr(),
        ))?;
        Ok(stx.assume_init())
    }
}

/// `fchmodat2(dir, name, mode, flags)` (Linux 6.6+; ENOSYS before): unlike glibc's
/// `fchmodat`, it honours `AT_SYMLINK_NOFOLLOW` in the kernel.
pub fn fchmodat2(dir: BorrowedFd<'_>, name: &CStr, mode: u32, flags: AtFlags) -> nix::Result<()> {
    // SAFETY: a plain system call; `name` is NUL-terminated and the fd is open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::c_uint,
            flags.bits(),
        )
    };
    Errno::result(r).map(drop)
}

/// `flistxattr(fd, buf)`: the NUL-separated names of `fd`'s extended attributes. With an
/// empty `buf`, the size they need; ERANGE when `buf` is too small.
pub fn flistxattr(fd: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes (none when empty).
    let n = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    Errno::result(n).map(|n| n as usize)
}

/// `llistxattr(path, buf)`: as [`flistxattr`], for a path whose final symlink is not
/// followed.
pub fn llistxattr(path: &CStr, buf: &mut [u8]) -> nix::Result<usize> {
    // SAFETY: `path` is NUL-terminated; `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    Errno::result(n).map(|n| n as usize)
}

/// `fgetxattr(fd, name, buf)`: the value of one extended attribute. With an empty `buf`,
/// its size; ERANGE when `buf` is too small, ENODATA when there is no such attribute.
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> nix::Result<usize> {
    // SAFETY: `name` is NUL-terminated; `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    Errno::result(n).map(|n| n as usize)
}

/// `lgetxattr(path, name, buf)`: as [`fgetxattr`], for a path whose final symlink is not
/// followed.
pub fn lgetxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> nix::Result<usize> {
    // SAFETY: `path` and `name` are NUL-terminated; `buf` is valid for writes of
    // `buf.len()` bytes.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    Errno::result(n).map(|n| n as usize)
}

/// `fsetxattr(fd, name, value, 0)`: create or replace one extended attribute.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: `name` is NUL-terminated and `value` is valid for reads of its length.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

/// `lsetxattr(path, name, value, 0)`: as [`fsetxattr`], for a path whose final symlink
/// is not followed.
pub fn lsetxattr(path: &CStr, name: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: `path` and `name` are NUL-terminated; `value` is valid for reads of its
    // length.
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

/// The inode flags of `fd` (`FS_IOC_GETFLAGS`, the flags chattr(1) shows). ENOTTY where
/// the file system has none.
pub fn inode_flags(fd: BorrowedFd<'_>) -> nix::Result<libc::c_int> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int (the kernel uses int despite the ioctl
    // number's `long`) to `flags`, which is valid for writes.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    Errno::result(r)?;
    Ok(flags)
}

/// Set the inode flags of `fd` (`FS_IOC_SETFLAGS`).
pub fn set_inode_flags(fd: BorrowedFd<'_>, flags: libc::c_int) -> nix::Result<()> {
    // SAFETY: FS_IOC_SETFLAGS reads one int from `flags`, which lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) };
    Errno::result(r).map(drop)
}

/// glibc's text for `errno` (`strerror_r`, the XSI variant), or `None` for a number it
/// does not know.
pub fn strerror(errno: i32) -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of its length; on success the XSI `strerror_r`
    // leaves a NUL-terminated message in it and returns 0.
    if unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let text = CStr::from_bytes_until_nul(&buf).ok()?;
    Some(text.to_string_lossy().into_owned())
}

/// End the process as a C program does when it writes to a pipe nobody reads: restore
/// SIGPIPE's default action (Rust's runtime ignores it), unblock it and raise it. Used
/// only on the way out (the pulls themselves rely on EPIPE, e.g. towards gpg). Returns
/// only if the signal could not be delivered.
pub fn die_of_sigpipe() {
    use nix::sys::signal::{raise, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
    // SAFETY: SIG_DFL installs no handler code, so nothing can run in a signal context;
    // no other thread changes SIGPIPE's disposition.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    let _ = raise(Signal::SIGPIPE);
}

/// The size of the terminal behind `fd` as (rows, columns) (`TIOCGWINSZ`), or `None` when
/// it is no terminal or reports no width.
pub fn terminal_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` to `ws`, which is valid for writes.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// A moment in the local time zone (`localtime_r`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalTime {
    pub year: i32,
    /// 1–12.
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
    /// The zone's abbreviation (`UTC`, `CET`).
    pub zone: String,
}

/// `secs` since the epoch in the local time zone (`TZ`, else /etc/localtime).
pub fn localtime(secs: i64) -> Option<LocalTime> {
    let t: libc::time_t = secs;
    // SAFETY: an all-zero `struct tm` is valid (integers and a null `tm_zone`);
    // localtime_r fills it from `t`, both valid for the call, and returns null on
    // failure. On success `tm_zone` is null or points at the zone name in glibc's
    // static tzname storage, a NUL-terminated string that lives for the whole process.
    let (tm, zone) = unsafe {
        let mut tm = MaybeUninit::<libc::tm>::zeroed().assume_init();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        let zone = if tm.tm_zone.is_null() {
            String::new()
        } else {
            CStr::from_ptr(tm.tm_zone).to_string_lossy().into_owned()
        };
        (tm, zone)
    };
    let field = |v: libc::c_int| u32::try_from(v).ok();
    Some(LocalTime {
        year: tm.tm_year + 1900,
        month: field(tm.tm_mon)? + 1,
        day: field(tm.tm_mday)?,
        hour: field(tm.tm_hour)?,
        minute: field(tm.tm_min)?,
        second: field(tm.tm_sec)?,
        weekday: field(tm.tm_wday)?,
        zone,
    })
}

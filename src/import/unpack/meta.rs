//! The metadata of extracted nodes: owner, extended attributes, mode and modification
//! time, and what the process turned out not to be allowed to set.
//!
//! Order per node: owner, then xattrs (chown drops `security.capability`), then mode
//! (chown drops setuid/setgid), then mtime. Directories get their owner, mode and mtime
//! only when the stream leaves them (`dirs.rs`); until then they stay writable.
//!
//! chown without privilege (EPERM) or with an id not mapped here (EINVAL), and xattrs
//! the file system or the process may not set, are warned about once and skipped from
//! then on; every other failure fails the unpack.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::Mode as Perm;
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use super::entry::Entry;
use super::{failed, refuse, show, sys};
use crate::util::error::Result;
use crate::util::fs;

/// An archive time (seconds, nanoseconds) as the time-setting calls take it.
fn timespec((sec, nsec): (i64, u32)) -> TimeSpec {
    TimeSpec::new(sec, nsec as _)
}

/// Owner, mode and mtime of a directory, applied when the stream leaves it.
pub struct DirAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
}

impl DirAttrs {
    pub fn of(entry: &Entry) -> Self {
        DirAttrs {
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime: entry.mtime,
        }
    }
}

/// Where to set extended attributes.
pub enum XattrTarget<'f> {
    Fd(BorrowedFd<'f>),
    At(BorrowedFd<'f>, &'f CStr),
}

/// Sets metadata; remembers what is not permitted.
pub struct Meta {
    /// False after chown failed with EPERM/EINVAL once (warned once, then skipped).
    can_chown: bool,
    /// True after setting an xattr was refused once (warned once, then ignored).
    xattr_warned: bool,
}

impl Meta {
    pub fn new() -> Self {
        Meta {
            can_chown: true,
            xattr_warned: false,
        }
    }

    /// A regular file whose content was just written.
    pub fn file(&mut self, file: &File, entry: &Entry) -> Result<()> {
        // Most members (root's files, extracted by root under the default umask) already
        // have the owner and mode they ask for. chown and chmod are skipped then: each
        // is an inode update, a transaction join on btrfs, for every small file. chown
        // clears set-id bits and an ACL xattr rewrites the mode, so after either the
        // mode is always set.
        let st = nix::sys::stat::fstat(file)
            .map_err(|e| failed(e, &entry.name, "cannot stat new file"))?;
        let chown = st.st_uid != entry.uid || st.st_gid != entry.gid;
        if chown {
            self.chown_fd(file.as_fd(), entry.uid, entry.gid, &entry.name)?;
        }
        self.xattrs(XattrTarget::Fd(file.as_fd()), entry)?;
        if chown || !entry.xattrs.is_empty() || st.st_mode & 0o7777 != entry.mode & 0o7777 {
            nix::sys::stat::fchmod(file.as_fd(), Perm::from_bits_truncate(entry.mode))
                .map_err(|e| failed(e, &entry.name, "cannot change mode"))?;
        }
        fs::set_mtime(file.as_fd(), timespec(entry.mtime))
            .map_err(|e| failed(e, &entry.name, "cannot set modification time"))
    }

    /// The delayed attributes of a directory the stream has left (`name` for messages;
    /// `st` its state now). The owner is skipped when it matches already, as for files
    /// (see [`Meta::file`]); the mode is set (directories are made 0700 while they fill)
    /// unless it matches too, and the time always (entries made inside changed it).
    pub fn directory(
        &mut self,
        fd: BorrowedFd<'_>,
        st: &libc::stat,
        attrs: &DirAttrs,
        name: &[u8],
    ) -> Result<()> {
        let chown = st.st_uid != attrs.uid || st.st_gid != attrs.gid;
        if chown {
            self.chown_fd(fd, attrs.uid, attrs.gid, name)?;
        }
        if chown || st.st_mode & 0o7777 != attrs.mode & 0o7777 {
            nix::sys::stat::fchmod(fd, Perm::from_bits_truncate(attrs.mode))
                .map_err(|e| failed(e, name, "cannot change mode"))?;
        }
        fs::set_mtime(fd, timespec(attrs.mtime))
            .map_err(|e| failed(e, name, "cannot set modification time"))
    }

    /// Metadata of a node we hold no fd for (symlink, device, FIFO), just created, by
    /// name without following it. Symlinks have no mode of their own (`chmod` false).
    /// Owner and mode are set only when they differ, as for files (see [`Meta::file`]):
    /// a symlink made by root is root's already.
    pub fn node(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &CStr,
        entry: &Entry,
        chmod: bool,
    ) -> Result<()> {
        let st = sys::lstat_at(parent, base)
            .map_err(|e| failed(e, &entry.name, "cannot stat new file"))?;
        let chown = self.can_chown && (st.st_uid != entry.uid || st.st_gid != entry.gid);
        if chown {
            let r = nix::unistd::fchownat(
                parent,
                base,
                Some(Uid::from_raw(entry.uid)),
                Some(Gid::from_raw(entry.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            self.chown_result(r, &entry.name)?;
        }
        self.xattrs(XattrTarget::At(parent, base), entry)?;
        let mode_differs = st.st_mode & 0o7777 != entry.mode & 0o7777;
        if chmod && (chown || !entry.xattrs.is_empty() || mode_differs) {
            sys::chmod_at_nofollow(parent, base, entry.mode)
                .map_err(|e| failed(e, &entry.name, "cannot change mode"))?;
        }
        fs::set_mtime_at(parent, base, timespec(entry.mtime))
            .map_err(|e| failed(e, &entry.name, "cannot set modification time"))
    }

    fn chown_fd(&mut self, fd: BorrowedFd<'_>, uid: u32, gid: u32, name: &[u8]) -> Result<()> {
        if !self.can_chown {
            return Ok(());
        }
        let r = nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        self.chown_result(r, name)
    }

    /// EPERM (not privileged) or EINVAL (id not mapped here) turns chown off for the rest
    /// of the run, with one warning.
    fn chown_result(&mut self, r: std::result::Result<(), Errno>, name: &[u8]) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e @ (Errno::EPERM | Errno::EINVAL)) => {
                log::warn!(
                    "Cannot change file ownership ({}), keeping the extracting user as owner, starting with '{}'.",
                    e.desc(),
                    show(name)
                );
                self.can_chown = false;
                Ok(())
            }
            Err(e) => Err(failed(e, name, "cannot change ownership")),
        }
    }

    /// The entry's extended attributes, in archive order.
    pub fn xattrs(&mut self, target: XattrTarget<'_>, entry: &Entry) -> Result<()> {
        for (key, value) in &entry.xattrs {
            let ckey = CString::new(key.as_slice()).map_err(|_| {
                refuse(libc::EBADMSG, &entry.name, "xattr name contains a NUL byte")
            })?;
            let r = match &target {
                XattrTarget::Fd(fd) => crate::util::sys::fsetxattr(*fd, &ckey, value),
                XattrTarget::At(dir, base) => fs::set_xattr_at(*dir, base, &ckey, value),
            };
            match r {
                Ok(()) => {}
                Err(e @ (Errno::EPERM | Errno::EACCES | Errno::ENOTSUP)) => {
                    if !self.xattr_warned {
                        self.xattr_warned = true;
                        log::warn!(
                            "Cannot set extended attribute '{}' on '{}' ({}), ignoring this and further xattr failures.",
                            show(key),
                            show(&entry.name),
                            e.desc()
                        );
                    }
                }
                Err(e) => {
                    return Err(failed(
                        e,
                        &entry.name,
                        format_args!("cannot set extended attribute '{}'", show(key)),
                    ))
                }
            }
        }
        Ok(())
    }
}

//! Inode metadata from one `statx` call ([`Meta`], [`FileKind`]), the mount checks the
//! tree walks make with it, and whether a block device is a loop device.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use nix::fcntl::AtFlags;
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;

use crate::util::error::Result;
use crate::util::sys;

/// The file types a tree can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FileKind {
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
pub(super) struct Meta {
    /// Full `st_mode`, type bits included.
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) nlink: u32,
    pub(super) ino: u64,
    pub(super) dev: (u32, u32),
    pub(super) rdev: libc::dev_t,
    pub(super) size: u64,
    /// 512-byte blocks allocated.
    pub(super) blocks: u64,
    pub(super) atime: TimeSpec,
    pub(super) mtime: TimeSpec,
    /// The mount the inode was reached through (`None` before Linux 5.8).
    pub(super) mnt_id: Option<u64>,
}

impl Meta {
    pub(super) fn kind(&self) -> FileKind {
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
    pub(super) fn permissions(&self) -> Mode {
        Mode::from_bits_truncate(self.mode & 0o7777)
    }

    /// Whether this inode (reached from the directory `parent`) is the root of another
    /// mount. Without mount ids (old kernels) a change of device is taken as a mount,
    /// except for btrfs subvolumes (inode 256), which have their own device numbers.
    pub(super) fn is_mount_below(&self, parent: &Meta) -> bool {
        match (self.mnt_id, parent.mnt_id) {
            (Some(own), Some(parents)) => own != parents,
            _ => self.dev != parent.dev && self.ino != 256,
        }
    }

    /// Device and inode: what identifies the inode (and its hard links).
    pub(super) fn hardlink_key(&self) -> (u32, u32, u64) {
        (self.dev.0, self.dev.1, self.ino)
    }
}

fn statx_meta(dir: BorrowedFd<'_>, name: &CStr, flags: AtFlags) -> Result<Meta> {
    let stx = sys::statx(
        dir,
        name,
        flags | AtFlags::AT_SYMLINK_NOFOLLOW,
        libc::STATX_BASIC_STATS | libc::STATX_MNT_ID,
    )?;
    let timespec = |t: libc::statx_timestamp| TimeSpec::new(t.tv_sec, t.tv_nsec.into());
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
pub(super) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<Meta> {
    statx_meta(dir, name, AtFlags::empty())
}

/// Metadata of the inode `fd` refers to.
pub(super) fn stat_fd(fd: BorrowedFd<'_>) -> Result<Meta> {
    statx_meta(fd, c"", AtFlags::AT_EMPTY_PATH)
}

/// Whether `dir/name` (not followed) is the root of a mount, as the kernel marks it
/// (`STATX_ATTR_MOUNT_ROOT`; false on kernels before 5.8, which do not say).
pub fn is_mount_root(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<bool> {
    let stx = sys::statx(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW, libc::STATX_TYPE)?;
    let flag = libc::STATX_ATTR_MOUNT_ROOT as u64;
    Ok(stx.stx_attributes_mask & flag != 0 && stx.stx_attributes & flag != 0)
}

/// Whether `fd` is a loop block device: a block device whose sysfs entry has a `loop`
/// directory (`/sys/dev/block/MAJOR:MINOR/loop`). False for anything else, and when sysfs
/// is not there to say.
pub fn is_loop_device(fd: BorrowedFd<'_>) -> bool {
    let Ok(stx) = sys::statx(fd, c"", AtFlags::AT_EMPTY_PATH, libc::STATX_TYPE) else {
        return false;
    };
    if u32::from(stx.stx_mode) & libc::S_IFMT != libc::S_IFBLK {
        return false;
    }
    let sysfs = format!(
        "/sys/dev/block/{}:{}/loop",
        stx.stx_rdev_major, stx.stx_rdev_minor
    );
    std::path::Path::new(&sysfs).is_dir()
}

//! Real file systems for tests: a fresh btrfs (or ext4) on a loop device, one per test.
//!
//! Each fixture makes a sparse image file under /var/tmp, formats it, attaches it to a
//! free loop device and mounts it on a new directory; dropping it unmounts (lazily if
//! something still holds it), detaches the loop device and deletes the image. Tests in
//! one process and parallel test processes each get their own mount. Needs root, and
//! fails loudly (never skips) when a tool is missing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Deref;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::fsmeta::lxattrs;

/// The file system to put on the loop device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    Btrfs,
    Ext4,
}

/// A file system on a loop device, mounted at [`LoopMount::path`].
pub struct LoopMount {
    kind: FsKind,
    mount_point: PathBuf,
    device: String,
    /// Deleted on drop, after the loop device is gone.
    _image: tempfile::NamedTempFile,
}

/// Find an executable in PATH or the sbin directories (which a plain user's PATH may
/// lack), or panic with what to install.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .map(PathBuf::from),
    );
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{name}` not found: install it (Debian: apt-get install {package})");
}

/// Run a command; panic with its output if it fails.
fn run(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if !output.status.success() {
        panic!(
            "{} {} failed ({}):\n{}{}",
            program.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl LoopMount {
    /// Make, format and mount a new file system of `size` bytes.
    pub fn new(kind: FsKind, size: u64) -> LoopMount {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "loop-mounted file system tests must run as root"
        );
        let (mkfs, mkfs_args, package): (_, &[&str], _) = match kind {
            FsKind::Btrfs => ("mkfs.btrfs", &["-q", "-f"], "btrfs-progs"),
            FsKind::Ext4 => ("mkfs.ext4", &["-q", "-F"], "e2fsprogs"),
        };
        let mkfs = tool(mkfs, package);
        let losetup = tool("losetup", "mount");
        let mount = tool("mount", "mount");
        assert!(
            Path::new("/dev/loop-control").exists(),
            "/dev/loop-control is missing: the loop driver is needed (modprobe loop)"
        );

        let image = tempfile::Builder::new()
            .prefix("systemd-import-test-")
            .suffix(".img")
            .tempfile_in("/var/tmp")
            .expect("cannot create an image file in /var/tmp");
        image
            .as_file()
            .set_len(size)
            .expect("cannot size the image");
        let image_path = image.path().to_str().expect("UTF-8 temp path").to_string();
        let mut args = mkfs_args.to_vec();
        args.push(&image_path);
        run(&mkfs, &args);

        let device = run(&losetup, &["--find", "--show", &image_path]);
        assert!(
            device.starts_with("/dev/loop"),
            "losetup printed {device:?}"
        );

        // A plain directory, not a TempDir: its recursive cleanup must never run while
        // something could still be mounted there.
        let mount_point = tempfile::Builder::new()
            .prefix("systemd-import-mnt-")
            .tempdir_in("/var/tmp")
            .expect("cannot create a mount point")
            .keep();
        let fs_type = match kind {
            FsKind::Btrfs => "btrfs",
            FsKind::Ext4 => "ext4",
        };
        // noatime: reading a tree must not change the times the tests compare.
        let mounted = Command::new(&mount)
            .args(["-t", fs_type, "-o", "noatime", &device])
            .arg(&mount_point)
            .output()
            .expect("cannot run mount");
        if !mounted.status.success() {
            let _ = Command::new(&losetup).args(["-d", &device]).status();
            let _ = std::fs::remove_dir(&mount_point);
            panic!(
                "mount -t {fs_type} {device} failed: {}",
                String::from_utf8_lossy(&mounted.stderr)
            );
        }
        LoopMount {
            kind,
            mount_point,
            device,
            _image: image,
        }
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    pub fn kind(&self) -> FsKind {
        self.kind
    }

    /// The loop device (`/dev/loopN`).
    pub fn device(&self) -> &str {
        &self.device
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let umount = tool("umount", "mount");
        let clean = Command::new(&umount)
            .arg(&self.mount_point)
            .output()
            .is_ok_and(|o| o.status.success());
        if !clean {
            // Busy (a test failed with something still open): detach it lazily.
            let _ = Command::new(&umount)
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
        let _ = Command::new(tool("losetup", "mount"))
            .args(["-d", &self.device])
            .output();
        // Non-recursive on purpose: the directory is empty once unmounted.
        let _ = std::fs::remove_dir(&self.mount_point);
    }
}

/// A fresh 1 GiB btrfs.
pub struct BtrfsMount(LoopMount);

// A fixture that formats and mounts a file system is not a sensible `Default`.
#[allow(clippy::new_without_default)]
impl BtrfsMount {
    pub fn new() -> BtrfsMount {
        BtrfsMount(LoopMount::new(FsKind::Btrfs, 1 << 30))
    }
}

impl Deref for BtrfsMount {
    type Target = LoopMount;
    fn deref(&self) -> &LoopMount {
        &self.0
    }
}

/// A fresh 256 MiB ext4 (a file system without reflinks or subvolumes, with user
/// xattrs and holes), independent of what the host's /var/tmp happens to be.
pub struct Ext4Mount(LoopMount);

#[allow(clippy::new_without_default)]
impl Ext4Mount {
    pub fn new() -> Ext4Mount {
        Ext4Mount(LoopMount::new(FsKind::Ext4, 256 << 20))
    }
}

impl Deref for Ext4Mount {
    type Target = LoopMount;
    fn deref(&self) -> &LoopMount {
        &self.0
    }
}

// ---------------------------------------------------------------------------------
// Inspecting trees and files (shared by the util_* tests)
// ---------------------------------------------------------------------------------

/// Everything a faithful copy must keep about one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryDesc {
    pub kind: &'static str,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files and symlinks only (directory sizes are file-system specific).
    pub size: u64,
    pub mtime: (i64, i64),
    pub atime: (i64, i64),
    pub rdev: u64,
    pub symlink_target: Option<PathBuf>,
    pub content: Option<Vec<u8>>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

fn kind_name(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    }
}

/// Describe one entry without following a symlink.
pub fn describe(path: &Path) -> EntryDesc {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let kind = kind_name(&meta.file_type());
    EntryDesc {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: if kind == "dir" { 0 } else { meta.size() },
        mtime: (meta.mtime(), meta.mtime_nsec()),
        atime: (meta.atime(), meta.atime_nsec()),
        rdev: meta.rdev(),
        symlink_target: (kind == "symlink").then(|| std::fs::read_link(path).unwrap()),
        content: (kind == "file").then(|| std::fs::read(path).unwrap()),
        xattrs: lxattrs(path)
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect(),
    }
}

/// Describe a whole tree, keyed by path relative to `root` ("" is the root). Mount
/// points inside the tree are described but not entered.
pub fn describe_tree(root: &Path) -> BTreeMap<PathBuf, EntryDesc> {
    let root_dev = std::fs::symlink_metadata(root).unwrap().dev();
    let mut out = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let path = root.join(&rel);
        let desc = describe(&path);
        let is_dir = desc.kind == "dir";
        out.insert(rel.clone(), desc);
        if is_dir && (rel.as_os_str().is_empty() || !is_mount_point(&path, root_dev)) {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(rel.join(entry.unwrap().file_name()));
            }
        }
    }
    out
}

fn is_mount_point(path: &Path, root_dev: u64) -> bool {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let parent = std::fs::symlink_metadata(path.parent().unwrap()).unwrap();
    meta.dev() != root_dev
        || meta.dev() != parent.dev()
        || Command::new(tool("mountpoint", "util-linux"))
            .arg("-q")
            .arg(path)
            .status()
            .unwrap()
            .success()
}

/// The sets of paths (relative to `root`, two or more) that are hard links of one inode.
pub fn hardlink_groups(root: &Path) -> BTreeSet<BTreeSet<PathBuf>> {
    let mut by_inode: HashMap<(u64, u64), BTreeSet<PathBuf>> = HashMap::new();
    for rel in describe_tree(root).keys() {
        let meta = std::fs::symlink_metadata(root.join(rel)).unwrap();
        if !meta.is_dir() {
            by_inode
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .insert(rel.clone());
        }
    }
    by_inode.into_values().filter(|g| g.len() > 1).collect()
}

/// Bytes allocated on disk for `path`.
pub fn allocated(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().blocks() * 512
}

/// A file of `size` bytes with data only in the given (offset, length) ranges, each
/// filled with a different non-zero byte; the rest are holes. Returns its content.
pub fn make_sparse_file(path: &Path, size: u64, data: &[(u64, usize)]) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create_new(path).unwrap();
    file.set_len(size).unwrap();
    let mut expected = vec![0u8; size as usize];
    for (i, &(offset, len)) in data.iter().enumerate() {
        let chunk = vec![i as u8 + 1; len];
        file.write_all_at(&chunk, offset).unwrap();
        expected[offset as usize..offset as usize + len].copy_from_slice(&chunk);
    }
    file.sync_all().unwrap();
    expected
}

/// `mount --bind src dst`.
pub fn bind_mount(src: &Path, dst: &Path) {
    run(
        &tool("mount", "mount"),
        &["--bind", src.to_str().unwrap(), dst.to_str().unwrap()],
    );
}

/// `umount path`.
pub fn umount(path: &Path) {
    run(&tool("umount", "mount"), &[path.to_str().unwrap()]);
}

/// One extent as FIEMAP reports it.
#[derive(Clone, Copy, Debug)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

/// FIEMAP_EXTENT_SHARED: the extent is shared with another file (reflink/snapshot).
pub const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

/// The extents of a file (FS_IOC_FIEMAP, after a sync).
pub fn fiemap(path: &Path) -> Vec<Extent> {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct RawExtent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [RawExtent; 256],
    }
    const FIEMAP_FLAG_SYNC: u32 = 1;
    // _IOWR('f', 11, struct fiemap) with the 32-byte header as the size.
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;

    let file = std::fs::File::open(path).unwrap();
    let empty = RawExtent {
        logical: 0,
        physical: 0,
        length: 0,
        reserved64: [0; 2],
        flags: 0,
        reserved: [0; 3],
    };
    let mut map = Fiemap {
        start: 0,
        length: u64::MAX,
        flags: FIEMAP_FLAG_SYNC,
        mapped_extents: 0,
        extent_count: 256,
        reserved: 0,
        extents: [empty; 256],
    };
    use std::os::fd::AsRawFd;
    // SAFETY: `map` is a `struct fiemap` with room for `extent_count` extents.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut map) };
    assert_eq!(
        r,
        0,
        "FIEMAP {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    map.extents[..map.mapped_extents as usize]
        .iter()
        .map(|e| Extent {
            logical: e.logical,
            physical: e.physical,
            length: e.length,
            flags: e.flags,
        })
        .collect()
}

/// The subvolume id of `path` (`btrfs inspect-internal rootid`).
pub fn rootid(path: &Path) -> String {
    let id = Command::new("btrfs")
        .args(["inspect-internal", "rootid"])
        .arg(path)
        .output()
        .unwrap();
    assert!(id.status.success(), "rootid {}: {id:?}", path.display());
    String::from_utf8_lossy(&id.stdout).trim().to_string()
}

/// What [`parent_qgroup`] gives for the new subvolume at `path` after an import with
/// `--btrfs-quota=` `quota`: systemd's `255/<its id>`, or `-` for none.
pub fn expected_parent_qgroup(path: &Path, quota: bool) -> String {
    if quota {
        format!("255/{}", rootid(path))
    } else {
        "-".into()
    }
}

/// The parent qgroup of the subvolume at `path` (`255/<id>` as systemd sets it up, `-`
/// for none), from `btrfs qgroup show`.
pub fn parent_qgroup(mount: &Path, path: &Path) -> String {
    let own = format!("0/{}", rootid(path));
    let out = Command::new("btrfs")
        .args(["qgroup", "show", "-p", "--raw"])
        .arg(mount)
        .output()
        .unwrap();
    assert!(out.status.success(), "qgroup show: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|t| t.first() == Some(&own.as_str()))
        .and_then(|t| t.get(3).map(|p| p.to_string()))
        .unwrap_or_else(|| panic!("no qgroup {own}"))
}

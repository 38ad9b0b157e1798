//! btrfs subvolumes, snapshots, reflinks and the copy fallbacks, on real loop-mounted
//! btrfs and ext4 file systems. Runs as root.

mod common;

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::btrfs::*;
use common::fsmeta::set_times;
use systemd_import::util::btrfs::*;
use systemd_import::util::fs::{
    chattr_nocow, copy_tree, is_loop_device, make_read_only, rm_rf, snapshot_or_copy, subvol_remove,
};

fn open(path: &Path) -> File {
    File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn is_subvol(path: &Path) -> bool {
    is_subvolume(open(path).as_fd()).unwrap()
}

fn read_only(path: &Path) -> bool {
    subvol_get_read_only(open(path).as_fd()).unwrap()
}

fn make_subvol(path: &Path) {
    let parent = open(path.parent().unwrap());
    subvol_make(parent.as_fd(), path.file_name().unwrap()).unwrap();
}

fn set_read_only(path: &Path, ro: bool) {
    subvol_set_read_only(open(path).as_fd(), ro).unwrap();
}

fn write_error(path: &Path) -> i32 {
    fs::write(path, b"x").unwrap_err().raw_os_error().unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn subvolumes_are_made_recognised_and_refused_elsewhere() {
    let btrfs = BtrfsMount::new();
    let ext4 = Ext4Mount::new();
    let sv = btrfs.path().join("sv");
    make_subvol(&sv);
    fs::create_dir(btrfs.path().join("plain")).unwrap();
    fs::write(btrfs.path().join("file"), b"x").unwrap();

    assert!(is_fs_btrfs(open(btrfs.path()).as_fd()).unwrap());
    assert!(!is_fs_btrfs(open(ext4.path()).as_fd()).unwrap());
    assert!(is_subvol(&sv));
    assert!(
        is_subvol(btrfs.path()),
        "the top-level subvolume is one too"
    );
    assert!(!is_subvol(&btrfs.path().join("plain")));
    assert!(!is_subvol(&btrfs.path().join("file")));
    assert!(!is_subvol(ext4.path()));

    let root = open(btrfs.path());
    assert_eq!(
        subvol_make(root.as_fd(), "sv").unwrap_err().errno(),
        libc::EEXIST
    );
    for bad in ["", ".", "..", "a/b"] {
        assert_eq!(
            subvol_make(root.as_fd(), bad).unwrap_err().errno(),
            libc::EINVAL,
            "{bad:?}"
        );
    }
    let err = subvol_make(open(ext4.path()).as_fd(), "sv").unwrap_err();
    assert_eq!(err.errno(), libc::ENOTTY, "callers fall back on ENOTTY");
}

#[test]
fn device_paths_names_the_file_systems_block_device() {
    let btrfs = BtrfsMount::new();
    let ext4 = Ext4Mount::new();
    fs::create_dir(btrfs.path().join("dir")).unwrap();
    // From any directory of the file system: the loop device it was mounted from, which
    // the pull's flush thread opens and flushes.
    for dir in [btrfs.path().to_path_buf(), btrfs.path().join("dir")] {
        let paths = device_paths(open(&dir).as_fd()).unwrap();
        assert_eq!(paths, [Path::new(btrfs.device())], "{}", dir.display());
    }
    let device = open(Path::new(btrfs.device()));
    nix::unistd::fsync(device.as_fd()).expect("a block device opened read-only is flushed");
    // The flush thread flushes loop devices only: this one, not a character device, a
    // directory or a regular file.
    assert!(is_loop_device(device.as_fd()), "{}", btrfs.device());
    let dev_null = open(Path::new("/dev/null"));
    assert!(!is_loop_device(dev_null.as_fd()));
    assert!(!is_loop_device(open(btrfs.path()).as_fd()));
    fs::write(btrfs.path().join("file"), b"x").unwrap();
    assert!(!is_loop_device(open(&btrfs.path().join("file")).as_fd()));
    // A block device that is not a loop device (the machine's disk): a node of it made
    // here, looked at through an O_PATH descriptor (nothing is opened on the disk).
    let disk = fs::read_dir("/sys/dev/block")
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.join("loop").exists())
        .expect("a block device other than a loop device");
    let name = disk.file_name().unwrap().to_str().unwrap();
    let (major, minor) = name.split_once(':').unwrap();
    let dev = nix::sys::stat::makedev(major.parse().unwrap(), minor.parse().unwrap());
    let node = btrfs.path().join("disk");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::S_IRUSR,
        dev,
    )
    .unwrap();
    let path_fd = nix::fcntl::open(
        &node,
        nix::fcntl::OFlag::O_PATH,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    assert!(!is_loop_device(path_fd.as_fd()), "{}", disk.display());
    let err = device_paths(open(ext4.path()).as_fd()).unwrap_err();
    assert_eq!(err.errno(), libc::ENOTTY, "not btrfs");
}

#[test]
fn snapshots_and_the_read_only_flag() {
    let btrfs = BtrfsMount::new();
    let sv = btrfs.path().join("sv");
    make_subvol(&sv);
    fs::create_dir(sv.join("etc")).unwrap();
    fs::write(sv.join("etc/os-release"), b"ID=test\n").unwrap();
    let parent = open(btrfs.path());

    subvol_snapshot(open(&sv).as_fd(), parent.as_fd(), "rw-snap", false).unwrap();
    subvol_snapshot(open(&sv).as_fd(), parent.as_fd(), "ro-snap", true).unwrap();
    let rw = btrfs.path().join("rw-snap");
    let ro = btrfs.path().join("ro-snap");
    for snap in [&rw, &ro] {
        assert!(is_subvol(snap));
        assert_eq!(fs::read(snap.join("etc/os-release")).unwrap(), b"ID=test\n");
    }
    assert!(!read_only(&rw));
    assert!(read_only(&ro));
    fs::write(rw.join("new"), b"x").unwrap();
    assert_eq!(write_error(&ro.join("new")), libc::EROFS);
    assert!(
        !sv.join("new").exists(),
        "a snapshot is independent of its source"
    );

    set_read_only(&rw, true);
    assert!(read_only(&rw));
    assert_eq!(write_error(&rw.join("other")), libc::EROFS);
    set_read_only(&rw, true); // no change is fine
    set_read_only(&rw, false);
    assert!(!read_only(&rw));
    fs::write(rw.join("other"), b"x").unwrap();

    // Not a subvolume: EISDIR (snapshot source), EINVAL (flags).
    fs::create_dir(btrfs.path().join("plain")).unwrap();
    let plain = open(&btrfs.path().join("plain"));
    let err = subvol_snapshot(plain.as_fd(), parent.as_fd(), "x", false).unwrap_err();
    assert_eq!(err.errno(), libc::EISDIR);
    assert_eq!(
        subvol_get_read_only(plain.as_fd()).unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        subvol_set_read_only(plain.as_fd(), true)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    let err = subvol_snapshot(open(&sv).as_fd(), parent.as_fd(), "rw-snap", false).unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
}

#[test]
fn subvolumes_are_removed_even_read_only_and_nested() {
    let btrfs = BtrfsMount::new();
    let root = open(btrfs.path());

    make_subvol(&btrfs.path().join("simple"));
    subvol_remove(root.as_fd(), "simple").unwrap();
    assert!(!btrfs.path().join("simple").exists());

    let ro = btrfs.path().join("ro");
    make_subvol(&ro);
    fs::write(ro.join("f"), b"x").unwrap();
    set_read_only(&ro, true);
    subvol_remove(root.as_fd(), "ro").unwrap();
    assert!(!ro.exists());

    // outer (read-only) ⊃ {inner at the top, deep/er/inner2 (read-only) ⊃ innermost}.
    let outer = btrfs.path().join("outer");
    make_subvol(&outer);
    make_subvol(&outer.join("inner"));
    fs::create_dir_all(outer.join("deep/er")).unwrap();
    make_subvol(&outer.join("deep/er/inner2"));
    make_subvol(&outer.join("deep/er/inner2/innermost"));
    fs::write(outer.join("deep/er/inner2/innermost/f"), b"x").unwrap();
    set_read_only(&outer.join("deep/er/inner2"), true);
    set_read_only(&outer, true);
    subvol_remove(root.as_fd(), "outer").unwrap();
    assert!(!outer.exists());

    fs::create_dir(btrfs.path().join("plain")).unwrap();
    assert_eq!(
        subvol_remove(root.as_fd(), "plain").unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        subvol_remove(root.as_fd(), "missing").unwrap_err().errno(),
        libc::ENOENT
    );
    let ext4 = Ext4Mount::new();
    fs::create_dir(ext4.path().join("d")).unwrap();
    let err = subvol_remove(open(ext4.path()).as_fd(), "d").unwrap_err();
    assert_eq!(err.errno(), libc::ENOTTY);
}

fn shared_extents(path: &Path) -> Vec<Extent> {
    fiemap(path)
        .into_iter()
        .filter(|e| e.flags & FIEMAP_EXTENT_SHARED != 0)
        .collect()
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

#[test]
fn reflink_and_clone_range_share_extents() {
    let btrfs = BtrfsMount::new();
    let src_path = btrfs.path().join("src");
    let data = pattern(1 << 20, 1);
    fs::write(&src_path, &data).unwrap();
    open(&src_path).sync_all().unwrap();
    assert!(shared_extents(&src_path).is_empty(), "nothing shared yet");

    let dst_path = btrfs.path().join("dst");
    let dst = File::create_new(&dst_path).unwrap();
    reflink(open(&src_path).as_fd(), dst.as_fd()).unwrap();
    assert_eq!(fs::read(&dst_path).unwrap(), data);
    let src_extents = fiemap(&src_path);
    let dst_extents = fiemap(&dst_path);
    assert!(!dst_extents.is_empty());
    assert!(
        dst_extents
            .iter()
            .all(|e| e.flags & FIEMAP_EXTENT_SHARED != 0),
        "{dst_extents:?}"
    );
    assert_eq!(
        src_extents.iter().map(|e| e.physical).collect::<Vec<_>>(),
        dst_extents.iter().map(|e| e.physical).collect::<Vec<_>>()
    );

    // Three blocks from offset 8 KiB of src to offset 0 of a new file.
    let part_path = btrfs.path().join("part");
    let part = File::create_new(&part_path).unwrap();
    clone_range(open(&src_path).as_fd(), 8192, part.as_fd(), 0, 3 * 4096).unwrap();
    assert_eq!(fs::read(&part_path).unwrap(), &data[8192..8192 + 3 * 4096]);
    let part_extents = shared_extents(&part_path);
    assert_eq!(part_extents.iter().map(|e| e.length).sum::<u64>(), 3 * 4096);

    // Unaligned ranges are refused.
    let err = clone_range(open(&src_path).as_fd(), 100, part.as_fd(), 0, 4096).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);

    // Across file systems: EXDEV; on ext4: not supported.
    let ext4 = Ext4Mount::new();
    let other = File::create_new(ext4.path().join("dst")).unwrap();
    let err = reflink(open(&src_path).as_fd(), other.as_fd()).unwrap_err();
    assert_eq!(err.errno(), libc::EXDEV);
    fs::write(ext4.path().join("src"), &data).unwrap();
    let err = reflink(open(&ext4.path().join("src")).as_fd(), other.as_fd()).unwrap_err();
    assert_eq!(err.errno(), libc::EOPNOTSUPP);
}

#[test]
fn chattr_nocow_sets_the_flag() {
    let btrfs = BtrfsMount::new();
    let file = File::create_new(btrfs.path().join("disk.raw")).unwrap();
    chattr_nocow(file.as_fd()).unwrap();
    chattr_nocow(file.as_fd()).unwrap();
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    assert_eq!(r, 0);
    assert_ne!(flags & 0x0080_0000, 0, "FS_NOCOW_FL not set: {flags:#x}");
}

/// A small tree with a file large enough to have real extents.
fn populate(dir: &Path) -> Vec<u8> {
    let data = pattern(256 * 1024, 7);
    fs::create_dir_all(dir.join("usr/lib")).unwrap();
    fs::write(dir.join("usr/lib/libdata.so"), &data).unwrap();
    fs::write(dir.join("etc-hostname"), b"container\n").unwrap();
    fs::set_permissions(dir.join("etc-hostname"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("usr/lib", dir.join("lib")).unwrap();
    set_times(&dir.join("usr"), (10, 0), (20, 0));
    data
}

fn assert_same_content(a: &Path, b: &Path) {
    let (da, db) = (describe_tree(a), describe_tree(b));
    assert_eq!(da.keys().collect::<Vec<_>>(), db.keys().collect::<Vec<_>>());
    for (rel, want) in &da {
        if rel.as_os_str().is_empty() {
            continue;
        }
        let got = &db[rel];
        assert_eq!(
            (got.kind, got.mode, got.mtime),
            (want.kind, want.mode, want.mtime),
            "{}",
            rel.display()
        );
        assert!(got.content == want.content, "content of {}", rel.display());
        assert_eq!(got.symlink_target, want.symlink_target);
    }
}

#[test]
fn snapshot_or_copy_on_btrfs() {
    let btrfs = BtrfsMount::new();
    let cache = btrfs.path().join(".tar-cache");
    make_subvol(&cache);
    populate(&cache);
    set_read_only(&cache, true);

    // Subvolume source: a snapshot, writable or read-only as asked.
    let local = btrfs.path().join("local");
    snapshot_or_copy(&cache, &local, false, None).unwrap();
    assert!(is_subvol(&local));
    assert!(!read_only(&local));
    assert_same_content(&cache, &local);
    assert!(
        !shared_extents(&local.join("usr/lib/libdata.so")).is_empty(),
        "a snapshot shares its data"
    );
    let layer = btrfs.path().join(".dkr-layer");
    snapshot_or_copy(&cache, &layer, true, None).unwrap();
    assert!(read_only(&layer));

    // Plain directory source on btrfs: a new subvolume, filled by a reflinking copy.
    let plain = btrfs.path().join("plain");
    fs::create_dir(&plain).unwrap();
    populate(&plain);
    let copy = btrfs.path().join("copy");
    snapshot_or_copy(&plain, &copy, true, None).unwrap();
    assert!(is_subvol(&copy));
    assert!(read_only(&copy));
    assert_same_content(&plain, &copy);
    assert!(
        !shared_extents(&copy.join("usr/lib/libdata.so")).is_empty(),
        "data was reflinked"
    );

    // Source on ext4, destination on btrfs: still a subvolume.
    let ext4 = Ext4Mount::new();
    let foreign = ext4.path().join("tree");
    fs::create_dir(&foreign).unwrap();
    populate(&foreign);
    let imported = btrfs.path().join("imported");
    snapshot_or_copy(&foreign, &imported, false, None).unwrap();
    assert!(is_subvol(&imported));
    assert_same_content(&foreign, &imported);

    // An existing destination is EEXIST and stays as it was.
    let err = snapshot_or_copy(&plain, &copy, false, None).unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
    assert!(read_only(&copy));
    // A failed copy leaves no subvolume behind.
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let err = snapshot_or_copy(
        &plain,
        &btrfs.path().join("cancelled"),
        false,
        Some(&cancel),
    )
    .unwrap_err();
    assert_eq!(err.errno(), libc::ECANCELED);
    assert!(!btrfs.path().join("cancelled").exists());
}

#[test]
fn snapshot_or_copy_on_ext4() {
    let ext4 = Ext4Mount::new();
    let src = ext4.path().join("src");
    fs::create_dir(&src).unwrap();
    populate(&src);
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();

    let rw = ext4.path().join("rw");
    snapshot_or_copy(&src, &rw, false, None).unwrap();
    assert_same_content(&src, &rw);
    assert_eq!(mode(&rw), 0o755);
    let ro = ext4.path().join("ro");
    snapshot_or_copy(&src, &ro, true, None).unwrap();
    assert_same_content(&src, &ro);
    assert_eq!(
        mode(&ro),
        0o555,
        "read-only drops the top directory's write bits"
    );
    assert_eq!(
        mode(&ro.join("etc-hostname")),
        0o600,
        "and nothing below it"
    );
    let err = snapshot_or_copy(&src, &ro, false, None).unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
    assert_eq!(mode(&ro), 0o555, "an existing destination is left alone");
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let cancelled = ext4.path().join("cancelled");
    let err = snapshot_or_copy(&src, &cancelled, false, Some(&cancel)).unwrap_err();
    assert_eq!(err.errno(), libc::ECANCELED);
    assert!(!cancelled.exists());

    // A btrfs subvolume copied onto ext4: no snapshot possible, a plain copy.
    let btrfs = BtrfsMount::new();
    let sv = btrfs.path().join("sv");
    make_subvol(&sv);
    populate(&sv);
    let from_btrfs = ext4.path().join("from-btrfs");
    snapshot_or_copy(&sv, &from_btrfs, false, None).unwrap();
    assert!(!is_subvol(&from_btrfs));
    assert_same_content(&sv, &from_btrfs);
}

#[test]
fn make_read_only_both_ways() {
    let btrfs = BtrfsMount::new();
    let sv = btrfs.path().join("sv");
    make_subvol(&sv);
    fs::set_permissions(&sv, fs::Permissions::from_mode(0o755)).unwrap();
    make_read_only(&sv).unwrap();
    assert!(read_only(&sv));
    assert_eq!(
        mode(&sv),
        0o755,
        "a subvolume keeps its mode and gets the flag"
    );

    let dir = btrfs.path().join("dir");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    make_read_only(&dir).unwrap();
    assert_eq!(mode(&dir), 0o555);

    let raw = btrfs.path().join("image.raw");
    fs::write(&raw, b"raw").unwrap();
    fs::set_permissions(&raw, fs::Permissions::from_mode(0o644)).unwrap();
    make_read_only(&raw).unwrap();
    assert_eq!(mode(&raw), 0o444);

    let ext4 = Ext4Mount::new();
    let plain = ext4.path().join("dir");
    fs::create_dir(&plain).unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o775)).unwrap();
    make_read_only(&plain).unwrap();
    assert_eq!(mode(&plain), 0o555);
}

#[test]
fn rm_rf_removes_read_only_and_nested_subvolumes() {
    let btrfs = BtrfsMount::new();
    let tree = btrfs.path().join("tree");
    fs::create_dir_all(tree.join("plain/dir")).unwrap();
    fs::write(tree.join("plain/dir/f"), b"x").unwrap();
    let ro = tree.join("plain/ro-subvol");
    make_subvol(&ro);
    make_subvol(&ro.join("nested"));
    fs::write(ro.join("nested/f"), b"x").unwrap();
    fs::create_dir(ro.join("d")).unwrap();
    set_read_only(&ro.join("nested"), true);
    set_read_only(&ro, true);
    let rw = tree.join("rw-subvol");
    make_subvol(&rw);
    fs::write(rw.join("f"), b"x").unwrap();

    rm_rf(&tree).unwrap();
    assert!(!tree.exists());

    // A read-only subvolume as the top.
    let top = btrfs.path().join("top");
    make_subvol(&top);
    make_subvol(&top.join("child"));
    set_read_only(&top, true);
    rm_rf(&top).unwrap();
    assert!(!top.exists());
}

#[test]
fn copy_tree_on_btrfs_reflinks_file_data() {
    let btrfs = BtrfsMount::new();
    let src = btrfs.path().join("src");
    fs::create_dir(&src).unwrap();
    let data = populate(&src);
    open(&src.join("usr/lib/libdata.so")).sync_all().unwrap();
    let dst = btrfs.path().join("dst");
    copy_tree(&src, &dst, None).unwrap();
    assert_eq!(fs::read(dst.join("usr/lib/libdata.so")).unwrap(), data);
    assert!(!shared_extents(&dst.join("usr/lib/libdata.so")).is_empty());
    assert_eq!(
        fs::metadata(dst.join("usr")).unwrap().mtime(),
        20,
        "directory times are set after the children"
    );
}

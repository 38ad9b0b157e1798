//! Tree copies, safe removal and sparse file copies on a real (loop-mounted) ext4.
//! Runs as root: it sets owners, trusted.* and security.capability xattrs, makes device
//! nodes and bind mounts.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use common::btrfs::*;
use common::fsmeta::{lchown, mknod, set_lxattr, set_times};
use systemd_import::util::fs::{copy_file_data, copy_tree, rm_rf, rm_rf_at};

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A `security.capability` value: revision 2, effective, CAP_NET_BIND_SERVICE.
fn capability_blob() -> Vec<u8> {
    let mut blob = Vec::new();
    blob.extend(0x0200_0001u32.to_le_bytes());
    blob.extend((1u32 << 10).to_le_bytes()); // permitted
    blob.extend(0u32.to_le_bytes()); // inheritable
    blob.extend([0u8; 8]); // upper 32 capabilities
    blob
}

/// Build a tree with every file type, odd modes, owners, xattrs, hard links, sparse
/// files and explicit times. Returns the paths of its sparse files.
fn build_rich_tree(root: &Path) -> Vec<PathBuf> {
    fs::create_dir(root).unwrap();
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();

    let file = root.join("dir/setuid-file");
    fs::write(&file, b"#!/bin/sh\necho hello\n").unwrap();
    lchown(&file, 123, 456);
    chmod(&file, 0o4755);
    set_lxattr(&file, "user.origin", b"test");
    set_lxattr(&file, "trusted.overlay.opaque", b"y");
    set_lxattr(&file, "security.capability", &capability_blob());
    // Hard link groups: two names, and three names in different directories.
    fs::hard_link(&file, root.join("link-to-setuid")).unwrap();
    fs::write(root.join("h1"), b"shared content").unwrap();
    fs::hard_link(root.join("h1"), root.join("dir/h2")).unwrap();
    fs::hard_link(root.join("h1"), root.join("dir/sub/h3")).unwrap();

    fs::write(root.join("empty-file"), b"").unwrap();
    let big: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("big"), &big).unwrap();
    chmod(&root.join("big"), 0o600);

    let sparse = root.join("sparse");
    make_sparse_file(&sparse, 5 << 20, &[(1 << 20, 8192), (3 << 20, 4096)]);
    let sparse_start = root.join("dir/sparse-data-at-start");
    make_sparse_file(&sparse_start, 2 << 20, &[(0, 4096)]);

    std::os::unix::fs::symlink("dir/setuid-file", root.join("symlink")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dir/dangling")).unwrap();
    lchown(&root.join("symlink"), 7, 8);
    set_lxattr(&root.join("symlink"), "trusted.symlink-note", b"kept");

    mknod(&root.join("dir/null"), libc::S_IFCHR, 0o666, 1, 3);
    mknod(&root.join("dir/loop200"), libc::S_IFBLK, 0o660, 7, 200);
    lchown(&root.join("dir/loop200"), 0, 6);
    mknod(&root.join("fifo"), libc::S_IFIFO, 0o640, 0, 0);
    set_lxattr(&root.join("fifo"), "trusted.fifo", b"1");
    // A socket: not copyable, skipped.
    let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();

    chmod(&root.join("sticky"), 0o1777);
    lchown(&root.join("dir/sub"), 1000, 1001);
    chmod(&root.join("dir/sub"), 0o2750);
    set_lxattr(&root.join("dir"), "user.dir-note", b"directory xattr");
    chmod(root, 0o755);

    // Times last, children before their directories, all distinct.
    let mut t = 1_000_000_000i64;
    let mut all: Vec<PathBuf> = describe_tree(root)
        .keys()
        .map(|rel| root.join(rel))
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in all {
        t += 1000;
        set_times(&path, (t, 123_456_789), (t + 7, 987_654_321));
    }
    vec![sparse, sparse_start]
}

fn without_sockets(mut tree: BTreeMap<PathBuf, EntryDesc>) -> BTreeMap<PathBuf, EntryDesc> {
    tree.retain(|_, d| d.kind != "socket");
    tree
}

fn assert_same_trees(
    expected: &BTreeMap<PathBuf, EntryDesc>,
    actual: &BTreeMap<PathBuf, EntryDesc>,
) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !actual.contains_key(*k))
        .collect();
    let extra: Vec<_> = actual
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (path, want) in expected {
        let got = &actual[path];
        // Compare without the (long) contents first for a readable message.
        let strip = |d: &EntryDesc| EntryDesc {
            content: None,
            ..d.clone()
        };
        assert_eq!(strip(got), strip(want), "entry {}", path.display());
        assert!(
            got.content == want.content,
            "content of {} differs",
            path.display()
        );
    }
}

#[test]
fn copy_tree_is_faithful() {
    let fs = Ext4Mount::new();
    let src = fs.path().join("src");
    let sparse_files = build_rich_tree(&src);
    let before = without_sockets(describe_tree(&src));
    let links_before = hardlink_groups(&src);
    assert_eq!(
        links_before.len(),
        2,
        "test tree should have two hard link groups"
    );

    let dst = fs.path().join("dst");
    copy_tree(&src, &dst, None).unwrap();

    assert_same_trees(&before, &describe_tree(&dst));
    assert_eq!(hardlink_groups(&dst), links_before);
    assert!(!dst.join("socket").exists());
    for sparse in sparse_files {
        let copy = dst.join(sparse.strip_prefix(&src).unwrap());
        assert_eq!(
            allocated(&copy),
            allocated(&sparse),
            "allocation of {} differs: holes were filled",
            copy.display()
        );
        assert!(allocated(&copy) < fs::metadata(&copy).unwrap().len() / 4);
    }
    // The source is untouched by the copy.
    assert_same_trees(&before, &without_sockets(describe_tree(&src)));
}

#[test]
fn copy_tree_of_single_entries_and_errors() {
    let fs = Ext4Mount::new();
    let base = fs.path();
    fs::write(base.join("file"), b"data").unwrap();
    chmod(&base.join("file"), 0o640);
    set_times(&base.join("file"), (5, 0), (6, 0));
    copy_tree(&base.join("file"), &base.join("file-copy"), None).unwrap();
    assert_eq!(
        describe(&base.join("file-copy")),
        describe(&base.join("file"))
    );

    std::os::unix::fs::symlink("file", base.join("link")).unwrap();
    copy_tree(&base.join("link"), &base.join("link-copy"), None).unwrap();
    assert_eq!(
        fs::read_link(base.join("link-copy")).unwrap(),
        Path::new("file")
    );

    // An existing destination is EEXIST and left alone.
    fs::create_dir(base.join("src")).unwrap();
    fs::write(base.join("src/a"), b"a").unwrap();
    fs::create_dir(base.join("exists")).unwrap();
    fs::write(base.join("exists/keep"), b"keep").unwrap();
    let err = copy_tree(&base.join("src"), &base.join("exists"), None).unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST);
    assert_eq!(fs::read(base.join("exists/keep")).unwrap(), b"keep");
    assert!(!base.join("exists/a").exists());

    let err = copy_tree(&base.join("missing"), &base.join("x"), None).unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
    assert!(!base.join("x").exists());
}

#[test]
fn copy_tree_cancelled_leaves_nothing_behind() {
    let fs = Ext4Mount::new();
    let src = fs.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/f"), b"x").unwrap();
    let cancel = AtomicBool::new(true);
    let err = copy_tree(&src, &fs.path().join("dst"), Some(&cancel)).unwrap_err();
    assert_eq!(err.errno(), libc::ECANCELED);
    assert!(!fs.path().join("dst").exists());
}

#[test]
fn copy_tree_into_its_own_subdirectory_terminates() {
    let fs = Ext4Mount::new();
    let src = fs.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/f"), b"x").unwrap();
    copy_tree(&src, &src.join("copy"), None).unwrap();
    assert_eq!(fs::read(src.join("copy/a/f")).unwrap(), b"x");
    assert!(!src.join("copy/copy").exists());
}

#[test]
fn copy_tree_does_not_enter_mounts() {
    let fs = Ext4Mount::new();
    let outside = fs.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"not part of the tree").unwrap();
    let src = fs.path().join("src");
    fs::create_dir_all(src.join("mnt")).unwrap();
    fs::write(src.join("file"), b"x").unwrap();
    bind_mount(&outside, &src.join("mnt"));

    let result = copy_tree(&src, &fs.path().join("dst"), None);
    umount(&src.join("mnt"));
    result.unwrap();
    assert_eq!(fs::read(fs.path().join("dst/file")).unwrap(), b"x");
    assert!(!fs.path().join("dst/mnt").exists());
}

#[test]
fn rm_rf_never_follows_symlinks() {
    let fs = Ext4Mount::new();
    let outside = fs.path().join("outside");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("sub/precious"), b"keep me").unwrap();
    let tree = fs.path().join("tree");
    fs::create_dir_all(tree.join("deep/er")).unwrap();
    std::os::unix::fs::symlink(&outside, tree.join("link-to-dir")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("sub/precious"),
        tree.join("deep/er/link-to-file"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../../../outside", tree.join("deep/er/relative")).unwrap();

    rm_rf(&tree).unwrap();
    assert!(!tree.exists());
    assert_eq!(fs::read(outside.join("sub/precious")).unwrap(), b"keep me");

    // A symlink given as the top is removed itself, not what it points to.
    std::os::unix::fs::symlink(&outside, fs.path().join("top-link")).unwrap();
    rm_rf(&fs.path().join("top-link")).unwrap();
    assert!(fs::symlink_metadata(fs.path().join("top-link")).is_err());
    assert_eq!(fs::read(outside.join("sub/precious")).unwrap(), b"keep me");
}

#[test]
fn rm_rf_never_crosses_a_mount() {
    let fs = Ext4Mount::new();
    let outside = fs.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("precious"), b"keep me").unwrap();
    let tree = fs.path().join("tree");
    fs::create_dir_all(tree.join("a/mnt")).unwrap();
    fs::write(tree.join("a/file"), b"x").unwrap();
    fs::write(tree.join("other"), b"x").unwrap();
    bind_mount(&outside, &tree.join("a/mnt"));

    let result = rm_rf(&tree);
    let survived = fs::read(outside.join("precious"));
    let mount_point_kept = tree.join("a/mnt/precious").exists();
    umount(&tree.join("a/mnt"));

    assert_eq!(result.unwrap_err().errno(), libc::EBUSY);
    assert_eq!(survived.unwrap(), b"keep me");
    assert!(mount_point_kept);
    // Everything else went.
    assert!(!tree.join("other").exists());
    assert!(!tree.join("a/file").exists());
    // With the mount gone, the rest can be removed.
    rm_rf(&tree).unwrap();
    assert!(!tree.exists());

    // A mount point as the top is refused outright.
    fs::create_dir(fs.path().join("mp")).unwrap();
    bind_mount(&outside, &fs.path().join("mp"));
    let dir = fs::File::open(fs.path()).unwrap();
    let result = rm_rf_at(dir.as_fd(), "mp");
    umount(&fs.path().join("mp"));
    assert_eq!(result.unwrap_err().errno(), libc::EBUSY);
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep me");
}

/// (offset, length) of data in a sparse test file.
type DataRange = (u64, usize);

#[test]
fn copy_file_data_keeps_holes_and_size() {
    let fs = Ext4Mount::new();
    let cases: [(&str, u64, &[DataRange]); 4] = [
        ("middle", 4 << 20, &[(1 << 20, 4096), (2 << 20, 12288)]),
        ("trailing-hole", 3 << 20, &[(0, 4096)]),
        ("all-hole", 1 << 20, &[]),
        ("dense", 1 << 20, &[(0, 1 << 20)]),
    ];
    for (name, size, data) in cases {
        let src = fs.path().join(name);
        let expected = make_sparse_file(&src, size, data);
        let dst_path = fs.path().join(format!("{name}.copy"));
        let dst = fs::File::create_new(&dst_path).unwrap();
        let src_file = fs::File::open(&src).unwrap();
        copy_file_data(src_file.as_fd(), dst.as_fd(), None).unwrap();
        dst.sync_all().unwrap();
        assert!(
            fs::read(&dst_path).unwrap() == expected,
            "{name}: content differs"
        );
        assert_eq!(fs::metadata(&dst_path).unwrap().len(), size, "{name}: size");
        assert_eq!(allocated(&dst_path), allocated(&src), "{name}: allocation");
    }
}

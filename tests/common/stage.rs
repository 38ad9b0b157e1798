//! The tree the differential tests stage ([`stage`]): every kind of entry and
//! attribute an archive can carry, and the facts about it that must survive a trip
//! through an archive ([`check_staged_facts`]), so that a comparison of two extracted
//! trees cannot pass by both sides losing the same thing. Used by the unpacker's and
//! the exporter's differential tests.

use std::fs;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::fsmeta::{lchown, mknod, set_lxattr, set_mtime};
use super::tarball;

/// Create the file `p` with `content` and then `mode` (set-id bits included).
pub fn write(p: &Path, content: &[u8], mode: u32) {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .unwrap();
    fs::write(p, content).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A capability set in the kernel's v2 xattr format: cap_net_bind_service (bit 10),
/// permitted and effective.
pub fn capability_xattr() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes()); // VFS_CAP_REVISION_2 | EFFECTIVE
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted, high word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high word
    v
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Stage the tree: [`populate`], then [`set_dir_times`].
pub fn stage(root: &Path, full: bool) {
    populate(root, full);
    set_dir_times(root);
}

/// Create the entries of the tree. `full` adds what ustar cannot represent: long names,
/// ids above 2097151, negative mtimes.
pub fn populate(root: &Path, full: bool) {
    let d = |p: &str| {
        let path = root.join(p);
        fs::create_dir_all(&path).unwrap();
        path
    };
    let files = d("files");
    write(&files.join("empty"), b"", 0o644);
    write(&files.join("small"), b"hello\n", 0o644);
    lchown(&files.join("small"), 1000, 1000);
    write(&files.join("large"), &noise(3 << 20, 7), 0o600);
    write(&files.join("suid"), b"#!/bin/true\n", 0o4755);
    write(&files.join("sgid"), b"x", 0o2755);
    write(&files.join("sticky"), b"x", 0o1644);
    write(&files.join("all-bits"), b"x", 0o7777);
    write(&files.join("nobody"), b"n", 0o640);
    lchown(&files.join("nobody"), 65534, 65534);
    write(&files.join(".wh.not-a-whiteout"), b"plain", 0o644);
    if full {
        write(&files.join("bigid"), b"b", 0o644);
        lchown(&files.join("bigid"), 3_000_000, 3_000_001);
    }

    let dirs = d("dirs");
    for (name, mode) in [
        ("d0700", 0o700),
        ("d0555", 0o555),
        ("d1777", 0o1777),
        ("d2755", 0o2755),
    ] {
        let p = dirs.join(name);
        fs::create_dir(&p).unwrap();
        write(&p.join("f"), name.as_bytes(), 0o644);
        lchown(&p, 1000, 2000);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    d("dirs/empty");

    let links = d("links");
    symlink("../files/small", links.join("rel")).unwrap();
    symlink("/etc/passwd", links.join("abs")).unwrap();
    symlink("nowhere/x", links.join("dangling")).unwrap();
    symlink("../dirs", links.join("dir")).unwrap();
    lchown(&links.join("rel"), 1000, 1000);

    let hard = d("hard");
    write(&hard.join("a"), b"shared content\n", 0o640);
    fs::hard_link(hard.join("a"), hard.join("b")).unwrap();
    d("hard/sub");
    fs::hard_link(hard.join("a"), hard.join("sub/c")).unwrap();
    write(&hard.join("solo"), b"one link\n", 0o644);

    let dev = d("dev");
    mknod(&dev.join("null"), libc::S_IFCHR, 0o666, 1, 3);
    mknod(&dev.join("loop9"), libc::S_IFBLK, 0o660, 7, 9);
    mknod(&dev.join("big"), libc::S_IFCHR, 0o600, 259, 65536 + 7);
    mknod(&dev.join("fifo"), libc::S_IFIFO, 0o620, 0, 0);
    lchown(&dev.join("loop9"), 0, 6);

    let x = d("xattr");
    write(&x.join("f"), b"attributes", 0o755);
    set_lxattr(&x.join("f"), "user.test", b"abc");
    set_lxattr(&x.join("f"), "user.binary", b"\0\x01\xff");
    set_lxattr(&x.join("f"), "trusted.t", b"trusted value");
    set_lxattr(&x.join("f"), "security.capability", &capability_xattr());
    let xd = d("xattr/d");
    set_lxattr(&xd, "user.dir", b"1");
    set_lxattr(&xd, "trusted.dir", b"2");
    symlink("f", x.join("l")).unwrap();
    set_lxattr(&x.join("l"), "trusted.sym", b"s");
    write(&x.join("suid-cap"), b"c", 0o4755);
    lchown(&x.join("suid-cap"), 1000, 1000);
    set_lxattr(
        &x.join("suid-cap"),
        "security.capability",
        &capability_xattr(),
    );
    fs::set_permissions(x.join("suid-cap"), fs::Permissions::from_mode(0o4755)).unwrap();

    let t = d("times");
    write(&t.join("old"), b"o", 0o644);
    set_mtime(&t.join("old"), (86400, 0));
    write(&t.join("future"), b"f", 0o644);
    set_mtime(&t.join("future"), (4_102_444_800, 0));
    write(&t.join("frac"), b"f", 0o644);
    set_mtime(&t.join("frac"), (1_600_000_000, 123_456_789));
    symlink("old", t.join("link")).unwrap();
    set_mtime(&t.join("link"), (1_500_000_000, 0));
    if full {
        write(&t.join("negative"), b"n", 0o644);
        set_mtime(&t.join("negative"), (-86400 * 365, 0));
    }

    let s = d("sparse");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(s.join("holes")).unwrap();
        f.write_all_at(&noise(4096, 1), 0).unwrap();
        f.write_all_at(&noise(8192, 2), 1 << 20).unwrap();
        f.write_all_at(&noise(100, 3), 3 << 20).unwrap();
        f.set_len(8 << 20).unwrap();
        let g = fs::File::create(s.join("all-hole")).unwrap();
        g.set_len(1 << 20).unwrap();
    }

    // Over 100 bytes but splittable at a '/': ustar stores it with the name prefix.
    let prefixed = d(&format!("prefix/{}", "p".repeat(70)));
    write(&prefixed.join("q".repeat(60)), b"prefixed name", 0o644);

    if full {
        let long = "a".repeat(150);
        let l = d("long");
        write(&l.join(&long), b"long name", 0o644);
        let mut deep = l.clone();
        for i in 0..5 {
            deep = deep.join(format!("{i}{}", "d".repeat(59)));
        }
        fs::create_dir_all(&deep).unwrap();
        write(&deep.join("file-at-the-bottom"), b"deep", 0o644);
        symlink(&long, l.join("to-long")).unwrap();
        symlink("x".repeat(200), l.join("long-target")).unwrap();
        fs::hard_link(l.join(&long), deep.join("hard-to-long")).unwrap();
    }
}

/// Give every directory below `root` (and `root`) its own mtime: last, deepest first,
/// so creating children does not undo them.
pub fn set_dir_times(root: &Path) {
    let mut all_dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
        all_dirs.push(p);
    }
    for (i, p) in all_dirs.iter().rev().enumerate() {
        set_mtime(p, (1_000_000_000 + i as i64 * 1000, 0));
    }
}

/// Run a command (GNU tar, mostly) and fail the test unless it succeeds.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e}; install GNU tar (apt-get install tar)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Which xattrs an archive was made to carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Xattrs {
    None,
    All,
    /// All but `trusted.*` (an export, as Debian's `systemd-export` makes them).
    AllButTrusted,
}

/// Facts about the staged tree that must survive extraction, so the comparison cannot
/// pass by both sides losing the same thing.
pub fn check_staged_facts(label: &str, tree: &tarball::Snapshot, xattrs: Xattrs) {
    let node = |p: &str| {
        tree.get(Path::new(p))
            .unwrap_or_else(|| panic!("{label}: {p} missing"))
    };
    assert_eq!(node("./files/suid").mode, 0o4755, "{label}");
    assert_eq!(node("./files/all-bits").mode, 0o7777, "{label}");
    assert_eq!(
        (node("./files/small").uid, node("./files/small").gid),
        (1000, 1000),
        "{label}"
    );
    assert_eq!(node("./dirs/d0555").mode, 0o555, "{label}");
    assert_eq!(node("./dirs/d1777").mode, 0o1777, "{label}");
    assert_eq!(
        node("./hard/sub/c").link_group.as_deref(),
        Some(Path::new("./hard/a")),
        "{label}"
    );
    assert_eq!(
        node("./links/abs").link.as_deref(),
        Some(&b"/etc/passwd"[..]),
        "{label}"
    );
    assert_eq!(node("./dev/null").kind, "chr", "{label}");
    assert_eq!(
        node("./dev/big").rdev,
        libc::makedev(259, 65536 + 7),
        "{label}"
    );
    assert_eq!(node("./dev/fifo").kind, "fifo", "{label}");
    assert_eq!(node("./sparse/holes").size, 8 << 20, "{label}");
    assert_eq!(node("./times/future").mtime.0, 4_102_444_800, "{label}");
    let prefixed = format!("./prefix/{}/{}", "p".repeat(70), "q".repeat(60));
    assert_eq!(node(&prefixed).size, 13, "{label}");
    if xattrs != Xattrs::None {
        let x = &node("./xattr/f").xattrs;
        assert!(
            x.contains_key(&b"security.capability"[..]),
            "{label}: {x:?}"
        );
        let trusted = xattrs == Xattrs::All;
        assert_eq!(x.contains_key(&b"trusted.t"[..]), trusted, "{label}: {x:?}");
        assert_eq!(
            x.get(&b"user.binary"[..]).map(Vec::as_slice),
            Some(&b"\0\x01\xff"[..]),
            "{label}"
        );
        assert_eq!(node("./xattr/suid-cap").mode, 0o4755, "{label}");
        assert!(
            node("./xattr/suid-cap")
                .xattrs
                .contains_key(&b"security.capability"[..]),
            "{label}"
        );
        assert_eq!(
            node("./times/frac").mtime,
            (1_600_000_000, 123_456_789),
            "{label}"
        );
    }
}

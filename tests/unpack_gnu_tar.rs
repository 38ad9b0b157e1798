//! Differential test: on benign archives our unpacker must produce the tree GNU
//! `tar --numeric-owner -px --xattrs --xattrs-include='*'` produces.
//!
//! A staged tree covering every kind of member and attribute is archived by GNU tar in
//! each format it writes (ustar, gnu, oldgnu, posix; with and without `--sparse`, all
//! three PAX sparse versions), and hand-crafted archives cover what GNU tar does not
//! write by itself (PAX overrides, base-256, global headers, duplicates). Each archive
//! is extracted by GNU tar into A and by us into B, and the trees are compared: type,
//! mode, uid, gid, size, content sha256, link target, rdev, xattrs, mtime with
//! nanoseconds, hard-link groups.
//!
//! Needs root and GNU tar (Debian: `tar`), and a file system with user/trusted/security
//! xattrs under /var/tmp.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::fsmeta::{lchown, mknod, set_lxattr, set_mtime};
use common::tarball::{self, base256, Header, Tarball};
use systemd_import::import::unpack::Mode;

fn write(p: &Path, content: &[u8], mode: u32) {
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
fn capability_xattr() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes()); // VFS_CAP_REVISION_2 | EFFECTIVE
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted, high word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high word
    v
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
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

/// Stage the tree. `full` adds what ustar cannot represent: long names, ids above
/// 2097151, negative mtimes.
fn stage(root: &Path, full: bool) {
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

    // Directory times last, deepest first, so creating children does not undo them.
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

fn run(cmd: &mut Command) {
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

/// Extract `archive` with GNU tar into `a` and with us into `b`, compare, and return
/// the tree both produced.
fn compare(work: &Path, label: &str, archive: &[u8]) -> tarball::Snapshot {
    let a = work.join(format!("{label}.gnu"));
    let b = work.join(format!("{label}.ours"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let file = work.join(format!("{label}.tar"));
    fs::write(&file, archive).unwrap();
    run(Command::new("tar")
        .args([
            "--numeric-owner",
            "-px",
            "--xattrs",
            "--xattrs-include=*",
            "-C",
        ])
        .arg(&a)
        .arg("-f")
        .arg(&file));
    tarball::unpack_bytes(&b, archive, Mode::Plain)
        .unwrap_or_else(|e| panic!("{label}: unpack failed: {e:?}"));
    let expected = tarball::snapshot(&a);
    let actual = tarball::snapshot(&b);
    let differences = tarball::diff(&expected, &actual);
    assert!(
        differences.is_empty(),
        "{label}: trees differ:\n{}",
        differences.join("\n")
    );
    // The comparison must have something to compare.
    assert!(expected.len() > 1, "{label}: GNU tar extracted nothing");
    fs::remove_dir_all(&a).unwrap();
    fs::remove_dir_all(&b).unwrap();
    expected
}

/// Facts about the staged tree that must survive extraction, so the comparison cannot
/// pass by both sides losing the same thing.
fn check_staged_facts(label: &str, tree: &tarball::Snapshot, with_xattrs: bool) {
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
    if with_xattrs {
        let x = &node("./xattr/f").xattrs;
        assert!(
            x.contains_key(&b"security.capability"[..]),
            "{label}: {x:?}"
        );
        assert!(x.contains_key(&b"trusted.t"[..]), "{label}: {x:?}");
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

#[test]
fn gnu_tar_formats_agree() {
    let work = tarball::scratch();
    let basic = work.path().join("stage-basic");
    let full = work.path().join("stage-full");
    fs::create_dir(&basic).unwrap();
    fs::create_dir(&full).unwrap();
    stage(&basic, false);
    stage(&full, true);
    let xattrs = ["--xattrs", "--xattrs-include=*"];
    let variants: Vec<(&str, &Path, Vec<&str>)> = vec![
        ("ustar", &basic, vec!["--format=ustar"]),
        ("v7", &basic, vec!["--format=v7"]),
        ("gnu", &full, vec!["--format=gnu"]),
        ("oldgnu", &full, vec!["--format=oldgnu"]),
        ("posix", &full, [&["--format=posix"][..], &xattrs].concat()),
        ("gnu-sparse", &full, vec!["--format=gnu", "--sparse"]),
        ("oldgnu-sparse", &full, vec!["--format=oldgnu", "--sparse"]),
        (
            "pax-sparse-0.0",
            &full,
            [
                &["--format=posix", "--sparse", "--sparse-version=0.0"][..],
                &xattrs,
            ]
            .concat(),
        ),
        (
            "pax-sparse-0.1",
            &full,
            [
                &["--format=posix", "--sparse", "--sparse-version=0.1"][..],
                &xattrs,
            ]
            .concat(),
        ),
        (
            "pax-sparse-1.0",
            &full,
            [
                &["--format=posix", "--sparse", "--sparse-version=1.0"][..],
                &xattrs,
            ]
            .concat(),
        ),
    ];
    for (label, stage_dir, args) in variants {
        let archive = work.path().join(format!("{label}.created.tar"));
        let mut cmd = Command::new("tar");
        cmd.args(["--numeric-owner", "-c", "-f"])
            .arg(&archive)
            .args(&args)
            .arg("-C")
            .arg(stage_dir)
            .arg(".");
        if label == "v7" {
            // v7 cannot hold devices, FIFOs or long names; GNU tar skips them with an
            // error status but writes the rest.
            let _ = cmd
                .output()
                .expect("cannot run tar; install GNU tar (apt-get install tar)");
        } else {
            run(&mut cmd);
        }
        let bytes = fs::read(&archive).unwrap();
        let tree = compare(work.path(), label, &bytes);
        if label != "v7" {
            check_staged_facts(label, &tree, args.contains(&"--xattrs"));
        }
    }
}

/// Hand-crafted archives for what GNU tar does not write by itself.
#[test]
fn hand_crafted_archives_agree() {
    let work = tarball::scratch();
    let root = Header::dir("./").mtime(1_234_567_890).mode(0o751);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();

    // PAX overrides of path, linkpath, size, uid, gid, mtime; the header fields lie.
    let long_path = format!("dir/{}", "p".repeat(250));
    let mut t = Tarball::new();
    t.entry(&root, b"").dir("dir");
    t.pax(&[
        ("path", long_path.as_bytes()),
        ("uid", b"4000000"),
        ("gid", b"4000001"),
        ("mtime", b"1700000000.5"),
        ("size", b"11"),
    ]);
    t.entry(&Header::file("dir/short-name").size(3), b"hello world");
    t.pax(&[
        ("linkpath", "t".repeat(400).as_bytes()),
        ("mtime", b"-100.25"),
    ]);
    t.entry(&Header::symlink("dir/sym", "wrong"), b"");
    t.pax(&[("linkpath", long_path.as_bytes())]);
    t.entry(&Header::hardlink("dir/hard", "wrong"), b"");
    cases.push(("pax-overrides", t.finish()));

    // TARmageddon shape: the ustar size covers what the PAX size says is the next
    // header. PAX wins, so the "hidden" member is extracted, as GNU tar does.
    let mut hidden = Tarball::new();
    hidden.file("hidden", b"seen by both");
    let mut t = Tarball::new();
    t.entry(&root, b"");
    t.pax(&[("size", b"0")]);
    t.entry(&Header::file("outer").size(hidden.data.len() as i64), b"");
    t.raw(&hidden.data);
    t.file("after", b"a");
    cases.push(("pax-size-wins", t.finish()));

    // Base-256 numbers in GNU headers: size, ids, negative and huge mtimes.
    let mut t = Tarball::new();
    t.entry(&root, b"");
    t.entry(
        &Header::file("b256")
            .gnu()
            .patch(124, base256(5, 12))
            .patch(108, base256(2_097_152, 8))
            .patch(116, base256(9_999_999, 8)),
        b"12345",
    );
    t.entry(&Header::file("neg-mtime").gnu().mtime(-1_000_000), b"n");
    t.entry(&Header::file("far-mtime").gnu().mtime(1 << 34), b"f");
    cases.push(("base256", t.finish()));

    // A global header applies to every later member unless a local one overrides it.
    let mut t = Tarball::new();
    t.entry(&root, b"");
    t.pax_raw(
        b'g',
        &[
            tarball::pax_record("uid", b"1234"),
            tarball::pax_record("mtime", b"1500000000.25"),
        ]
        .concat(),
    );
    t.file("g1", b"one");
    t.pax(&[("uid", b"42")]);
    t.file("g2", b"two");
    t.dir("gdir");
    cases.push(("global-pax", t.finish()));

    // GNU long name and long link for symlinks and hard links.
    let long = "L".repeat(180);
    let mut t = Tarball::new();
    t.entry(&root, b"");
    t.gnu_long(b'L', long.as_bytes());
    t.entry(
        &Header::file("truncated-name").gnu(),
        b"content of the long one",
    );
    t.gnu_long(b'K', long.as_bytes());
    t.entry(&Header::symlink("sym-to-long", "x").gnu(), b"");
    t.gnu_long(b'K', long.as_bytes());
    t.entry(&Header::hardlink("hard-to-long", "x").gnu(), b"");
    cases.push(("gnu-long", t.finish()));

    // Duplicates: a later member replaces an earlier one; dir over dir keeps children.
    let mut t = Tarball::new();
    t.entry(&root, b"");
    t.file("dup", b"first").file("dup", b"second");
    t.file("file-then-dir", b"x")
        .entry(&Header::dir("file-then-dir").mode(0o700), b"");
    // GNU tar replaces only an empty directory by a file; a non-empty one is an
    // error there and replaced recursively by us (tests/unpack_layers.rs).
    t.dir("dir-then-file").file("dir-then-file", b"now a file");
    t.dir("d")
        .file("d/kept", b"k")
        .entry(&Header::dir("d").mode(0o711).mtime(1_111_111_111), b"");
    // (A relative target: GNU tar defers symlinks with absolute or '..' targets to the
    // end of the run, so for those the earlier symlink would win there; the later
    // member wins here.)
    t.symlink("sym-then-file", "dup")
        .file("sym-then-file", b"replaced the link");
    cases.push(("duplicates", t.finish()));

    // Odd types: unknown flag (regular), regular with a trailing slash (directory),
    // contiguous file, hard link with a non-zero size field and no data, old-style
    // V7 header without magic.
    let mut t = Tarball::new();
    t.entry(&root, b"");
    t.entry(&Header::new("unknown", b'Z'), b"zzz");
    t.entry(&Header::new("slash-dir/", b'0').mode(0o750), b"");
    t.entry(&Header::new("contiguous", b'7'), b"seven");
    t.file("target", b"t");
    t.entry(&Header::hardlink("hard-with-size", "target").size(600), b"");
    let mut v7 = Header::file("v7-file").patch(257, [0u8; 8]);
    v7.patches.push((329, vec![0u8; 16]));
    t.entry(&v7, b"old");
    cases.push(("odd-types", t.finish()));

    // Names with leading '/' and './' and repeated slashes.
    let mut t = Tarball::new();
    t.entry(&root, b"");
    // (GNU tar decides lexically which delayed directories a member is inside, so
    // members of one directory are spelled alike here.)
    t.entry(&Header::dir("/abs"), b"")
        .file("/abs/file", b"a")
        .file("/abs//slash", b"d");
    t.entry(&Header::hardlink("/abs/hl", "/abs/file"), b"");
    t.file("./dot-file", b"d").file(".//dot-slash", b"e");
    cases.push(("leading-slash", t.finish()));

    for (label, archive) in cases {
        compare(work.path(), label, &archive);
    }
}

/// Sparse members are written as holes, not as zeros.
#[test]
fn sparse_files_keep_their_holes() {
    use std::os::unix::fs::MetadataExt;
    let work = tarball::scratch();
    let stage_dir = work.path().join("stage");
    fs::create_dir(&stage_dir).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(stage_dir.join("holes")).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", 8 << 20).unwrap();
        f.set_len(16 << 20).unwrap();
    }
    for version in [
        "--format=gnu",
        "--sparse-version=0.0",
        "--sparse-version=0.1",
        "--sparse-version=1.0",
    ] {
        let archive = work.path().join("sparse.tar");
        let mut cmd = Command::new("tar");
        cmd.args(["-c", "--sparse", "-f"]).arg(&archive);
        if version != "--format=gnu" {
            cmd.arg("--format=posix");
        }
        run(cmd.arg(version).arg("-C").arg(&stage_dir).arg("holes"));
        let out = work.path().join("out");
        fs::create_dir(&out).unwrap();
        tarball::unpack_bytes(&out, &fs::read(&archive).unwrap(), Mode::Plain).unwrap();
        let md = fs::metadata(out.join("holes")).unwrap();
        assert_eq!(md.len(), 16 << 20, "{version}");
        assert!(
            md.blocks() * 512 < 1 << 20,
            "{version}: {} bytes allocated",
            md.blocks() * 512
        );
        assert_eq!(
            tarball::sha256_file(&out.join("holes")),
            tarball::sha256_file(&stage_dir.join("holes")),
            "{version}"
        );
        fs::remove_dir_all(&out).unwrap();
    }
}

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
use std::path::Path;
use std::process::Command;

use common::stage::{check_staged_facts, run, stage, Xattrs};
use common::tarball::{self, base256, Header, Tarball};
use systemd_import::import::unpack::Mode;

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
            let xattrs = if args.contains(&"--xattrs") {
                Xattrs::All
            } else {
                Xattrs::None
            };
            check_staged_facts(label, &tree, xattrs);
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

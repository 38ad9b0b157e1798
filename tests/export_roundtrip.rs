//! Round trip of the exporter: an image with every kind of entry and attribute
//! (`common::export::stage_image`) is exported by our library in every format, then
//! extracted by GNU tar (`--numeric-owner -xp --xattrs --xattrs-include=*` with the
//! format's decompressor) and by our own unpacker; both trees must equal the source
//! (type, mode, owner, size, content, link target, device, xattrs, mtime with
//! nanoseconds, hard-link groups), less what the export leaves out on purpose (the
//! socket, `trusted.*` xattrs, links between devices or FIFOs), and every sparse file
//! must keep its data segments.
//!
//! Needs root, GNU tar, xz, gzip, bzip2, zstd and setcap (Debian: tar xz-utils gzip
//! bzip2 zstd libcap2-bin), and ext4/xfs/btrfs under /var/tmp.

mod common;

use std::fs;
use std::path::Path;

use common::export::{
    assert_holes_kept, assert_same_tree, expected, export_tar, extract_gnu, extract_ours,
    long_path, stage_image,
};
use common::stage::{check_staged_facts, Xattrs};
use common::tarball;
use systemd_import::import::stream::Compression;

/// What the export must carry, checked on an extracted tree.
fn check_export_facts(label: &str, tree: &tarball::Snapshot) {
    check_staged_facts(label, tree, Xattrs::AllButTrusted);
    let node = |p: &str| {
        tree.get(Path::new(p))
            .unwrap_or_else(|| panic!("{label}: {p} missing"))
    };
    assert!(!tree.contains_key(Path::new("./export/socket")), "{label}");
    let labels = &node("./export/labels").xattrs;
    assert!(labels.contains_key(&b"security.selinux"[..]), "{label}");
    assert!(
        labels.contains_key(&b"system.posix_acl_access"[..]),
        "{label}"
    );
    assert!(labels.contains_key(&b"user.kept"[..]), "{label}");
    assert!(
        !labels.keys().any(|k| k.starts_with(b"trusted.")),
        "{label}"
    );
    assert!(node("./export/ping")
        .xattrs
        .contains_key(&b"security.capability"[..]));
    assert_eq!(
        node("./export/abs-out").link.as_deref(),
        Some(&b"/etc/shadow"[..])
    );
    assert_eq!(
        node("./export/target-120").link.as_ref().unwrap().len(),
        120
    );
    assert_eq!(node(&long_path()).size, 13, "{label}");
    assert!(node("./export/hard-to-300").link_group.is_some(), "{label}");
    assert!(node("./export/sym-b").link_group.is_some(), "{label}");
    assert!(node("./export/fifo-b").link_group.is_none(), "{label}");
    assert!(node("./export/null-b").link_group.is_none(), "{label}");
    assert_eq!(node("./sparse/huge").size, 9 << 30, "{label}");
    assert_eq!(
        node("./export/frac-negative").mtime,
        (-1000, 250_000_000),
        "{label}"
    );
}

#[test]
fn every_format_extracts_to_the_source_tree_with_gnu_tar_and_with_our_unpacker() {
    let work = tarball::scratch();
    let image = work.path().join("image");
    stage_image(&image, true);
    let source = expected(&image);
    check_export_facts("source", &source);

    for compression in Compression::ALL {
        let name = compression.format_name();
        let archive = work.path().join(format!("export.{name}"));
        let stats = export_tar(&image, compression, &archive);
        assert_eq!(stats.skipped, 1, "{name}: the socket");
        assert_eq!(stats.output_bytes, fs::metadata(&archive).unwrap().len());
        // The 9 GiB file costs its data, not its size.
        assert!(stats.bytes_written < 64 << 20, "{name}: {stats:?}");

        for (how, extract) in [
            ("gnu", extract_gnu as fn(&Path, Compression, &Path)),
            ("ours", extract_ours),
        ] {
            let label = format!("{name}/{how}");
            let out = work.path().join(format!("{name}.{how}"));
            extract(&archive, compression, &out);
            let tree = tarball::snapshot(&out);
            assert_same_tree(&label, &source, &tree);
            check_export_facts(&label, &tree);
            assert_holes_kept(&label, &image, &out);
            fs::remove_dir_all(&out).unwrap();
        }
        fs::remove_file(&archive).unwrap();
    }
}

/// The same tree gives the same bytes: the walk is sorted and nothing time-dependent
/// goes into the archive.
#[test]
fn exports_are_deterministic() {
    let work = tarball::scratch();
    let image = work.path().join("image");
    stage_image(&image, false);
    let a = work.path().join("a.tar");
    let b = work.path().join("b.tar");
    export_tar(&image, Compression::Uncompressed, &a);
    export_tar(&image, Compression::Uncompressed, &b);
    assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap());
    assert_eq!(fs::metadata(&a).unwrap().len() % 10240, 0, "whole records");
}

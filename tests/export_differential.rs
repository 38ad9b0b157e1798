//! Differential test against Debian 12's own exporter: the same image exported by
//! `/lib/systemd/systemd-export tar NAME FILE` (systemd 252, which runs GNU tar) and by
//! our library must extract, with GNU tar (`--numeric-owner -xp --xattrs
//! --xattrs-include=*`), to the same tree: type, mode, owner, size, content, link
//! target, device, xattrs, mtime with nanoseconds, hard-link groups. The archives' bytes
//! differ (order, PAX records, owner names, holes) and are not compared.
//!
//! Debian's tool only finds images below /var/lib/machines, so it runs in a private
//! mount namespace (`unshare -m`) with the test's directory bound over that path; the
//! host's /var/lib/machines is never touched.
//!
//! Found (see `src/import/export/tar.rs`): Debian's exports lose `trusted.*` xattrs
//! (its tar runs with CAP_DAC_OVERRIDE only) and turn hard-linked FIFOs and devices
//! into separate nodes (GNU tar links only files and symlinks), and so do ours; its
//! sparse files come back dense, ours keep their holes; it knows no `.zst` suffix
//! (systemd 258 does, as we do).
//!
//! Needs root, util-linux's unshare, Debian's systemd-container (systemd-export), GNU
//! tar, xz, gzip, bzip2 and setcap.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::export::{
    assert_holes_kept, assert_same_tree, export_tar, extract_gnu, long_path, stage_image,
};
use common::fsmeta;
use common::stage::run;
use common::tarball;
use systemd_import::import::stream::{Compression, MAGIC_MAX};

const DEBIAN_EXPORT: &str = "/lib/systemd/systemd-export";

/// The image's name below the machines directory.
const NAME: &str = "exportdiff";

/// Export `machines/NAME` with Debian's tool to `out`, with `--format=FORMAT` if given.
fn debian_export(machines: &Path, out: &Path, format: Option<&str>) {
    assert!(
        Path::new(DEBIAN_EXPORT).exists(),
        "{DEBIAN_EXPORT} missing: apt-get install systemd-container"
    );
    assert!(
        Path::new("/var/lib/machines").is_dir(),
        "/var/lib/machines must exist to be bound over"
    );
    let format = format.map(|f| format!("--format={f}"));
    run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$1" /var/lib/machines && shift && exec "$@""#)
        .arg("sh")
        .arg(machines)
        .arg(DEBIAN_EXPORT)
        .args(format.as_deref())
        .args(["tar", NAME])
        .arg(out));
}

fn compression_of(file: &Path) -> Compression {
    let bytes = fs::read(file).unwrap();
    Compression::detect(&bytes[..bytes.len().min(MAGIC_MAX)])
}

#[test]
fn debian_and_our_exports_extract_to_the_same_tree() {
    let work = tarball::scratch();
    let machines = work.path().join("machines");
    fs::create_dir(&machines).unwrap();
    let image = machines.join(NAME);
    stage_image(&image, false);

    // Debian 12's formats (its systemd has no zstd export).
    for compression in [
        Compression::Uncompressed,
        Compression::Xz,
        Compression::Gzip,
        Compression::Bzip2,
    ] {
        let name = compression.format_name();
        let theirs = work.path().join(format!("debian.{name}"));
        let ours = work.path().join(format!("ours.{name}"));
        debian_export(&machines, &theirs, Some(name));
        export_tar(&image, compression, &ours);
        assert_eq!(compression_of(&theirs), compression, "{name}");

        let (a, b) = (
            work.path().join(format!("{name}.debian")),
            work.path().join(format!("{name}.ours")),
        );
        extract_gnu(&theirs, compression, &a);
        extract_gnu(&ours, compression, &b);
        let expected = tarball::snapshot(&a);
        assert_same_tree(name, &expected, &tarball::snapshot(&b));

        // What both must have kept, so that the comparison has teeth.
        let node = |p: &str| &expected[Path::new(p)];
        assert!(node("./export/ping")
            .xattrs
            .contains_key(&b"security.capability"[..]));
        assert!(node("./export/labels")
            .xattrs
            .contains_key(&b"system.posix_acl_access"[..]));
        assert!(!node("./export/labels")
            .xattrs
            .keys()
            .any(|k| k.starts_with(b"trusted.")));
        assert_eq!(node(&long_path()).size, 13);
        assert!(node("./hard/sub/c").link_group.is_some());
        assert!(!expected.contains_key(Path::new("./export/socket")));

        // The one difference in the trees: holes. Debian's come back as written zeros.
        assert_holes_kept(name, &image, &b);
        let holes = Path::new("sparse/holes");
        assert!(fsmeta::allocated(&a.join(holes)) >= 8 << 20, "{name}");

        for p in [theirs, ours, a, b] {
            if p.is_dir() {
                fs::remove_dir_all(p).unwrap();
            } else {
                fs::remove_file(p).unwrap();
            }
        }
    }
}

/// Without `--format=`, the output file's suffix decides, as Debian's tool decides it
/// (for the suffixes it knows; `.zst` is systemd 258's).
#[test]
fn the_default_format_follows_the_suffix_as_debian_does() {
    let work = tarball::scratch();
    let machines = work.path().join("machines");
    fs::create_dir(&machines).unwrap();
    let image = machines.join(NAME);
    fs::create_dir(&image).unwrap();
    fs::write(image.join("file"), b"content").unwrap();
    for suffix in [
        "tar", "tar.xz", "tar.gz", "tar.bz2", "tgz", "tar.XZ", "xz.tar",
    ] {
        let file = work.path().join(format!("image.{suffix}"));
        debian_export(&machines, &file, None);
        let theirs = compression_of(&file);
        assert_eq!(
            Compression::from_file_name(Some(file.as_os_str())),
            theirs,
            "{suffix}"
        );
        fs::remove_file(&file).unwrap();
    }
    let zst = work.path().join("image.tar.zst");
    debian_export(&machines, &zst, None);
    assert_eq!(compression_of(&zst), Compression::Uncompressed, "v252");
    assert_eq!(
        Compression::from_file_name(Some(zst.as_os_str())),
        Compression::Zstd,
        "v258+"
    );
}

//! The exporter facing images that point outside themselves or change under it: a
//! symlink out of the image (absolute, `../..`, to a directory) is archived as a
//! symlink and never followed; entries removed during the walk are skipped with a
//! warning; a directory swapped for a symlink during the walk is archived as that
//! symlink; a file that shrinks while it is read, a cancel and a full output end the
//! export with an error, never a panic or a stream that looks complete.

mod common;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use common::export::extract_gnu;
use common::stage::{noise, write};
use common::tarball;
use systemd_import::import::export::{self, Source, Stats};
use systemd_import::import::stream::Compression;
use systemd_import::util::error::Result;

/// Export `root` uncompressed into `archive`, calling `hook` with every progress report.
fn export_with(
    root: &Path,
    archive: &Path,
    compression: Compression,
    cancel: &AtomicBool,
    hook: &mut dyn FnMut(&Stats),
) -> Result<Stats> {
    let dir = fs::File::open(root).unwrap();
    let mut out = fs::File::create(archive).unwrap();
    export::run(
        Source::Tree(dir.as_fd()),
        compression,
        &mut out,
        cancel,
        hook,
    )
}

fn names(tree: &tarball::Snapshot) -> Vec<String> {
    tree.keys().map(|p| p.display().to_string()).collect()
}

#[test]
fn symlinks_out_of_the_image_are_archived_as_symlinks_never_followed() {
    let work = tarball::scratch();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let marker = b"SECRET-OUTSIDE-THE-IMAGE-7f3a";
    write(&outside.join("secret"), marker, 0o644);
    let image = work.path().join("images/image");
    fs::create_dir_all(&image).unwrap();
    let secret = outside.join("secret");
    symlink(&secret, image.join("abs")).unwrap();
    symlink("../../outside/secret", image.join("up")).unwrap();
    symlink("../../outside", image.join("up-dir")).unwrap();
    symlink("../../../../../../../..", image.join("root")).unwrap();
    symlink("/", image.join("slash")).unwrap();
    fs::create_dir(image.join("sub")).unwrap();
    symlink("../../../outside/secret", image.join("sub/deeper")).unwrap();

    let archive = work.path().join("out.tar");
    let stats = export_with(
        &image,
        &archive,
        Compression::Uncompressed,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(stats.bytes_read, 0, "no file data was read: {stats:?}");
    let bytes = fs::read(&archive).unwrap();
    assert!(
        !bytes.windows(marker.len()).any(|w| w == marker),
        "the archive holds data from outside the image"
    );

    let out = work.path().join("extracted");
    extract_gnu(&archive, Compression::Uncompressed, &out);
    let tree = tarball::snapshot(&out);
    assert_eq!(
        names(&tree),
        [
            ".",
            "./abs",
            "./root",
            "./slash",
            "./sub",
            "./sub/deeper",
            "./up",
            "./up-dir"
        ]
    );
    let link = |p: &str| tree[Path::new(p)].link.clone().unwrap();
    assert_eq!(link("./abs"), secret.as_os_str().as_encoded_bytes());
    assert_eq!(link("./up-dir"), b"../../outside");
    assert_eq!(link("./root"), b"../../../../../../../..");
    assert_eq!(link("./slash"), b"/");
}

/// A tree with directories `a` and `d`, files `b`, `c` and `a/x`, `d/y`.
fn small_tree(root: &Path) {
    fs::create_dir_all(root.join("a")).unwrap();
    fs::create_dir_all(root.join("d")).unwrap();
    for f in ["a/x", "b", "c", "d/y"] {
        write(&root.join(f), f.as_bytes(), 0o644);
    }
}

#[test]
fn entries_removed_during_the_walk_are_skipped() {
    let work = tarball::scratch();
    let image = work.path().join("image");
    small_tree(&image);
    let archive = work.path().join("out.tar");
    // After "./" and "./a/" (the root's listing is read by then), c and d go away.
    let mut removed = false;
    let stats = export_with(
        &image,
        &archive,
        Compression::Gzip,
        &AtomicBool::new(false),
        &mut |stats| {
            if stats.entries == 2 && !removed {
                fs::remove_file(image.join("c")).unwrap();
                fs::remove_dir_all(image.join("d")).unwrap();
                removed = true;
            }
        },
    )
    .unwrap();
    assert!(removed);
    assert_eq!(stats.skipped, 2, "{stats:?}");
    let out = work.path().join("extracted");
    extract_gnu(&archive, Compression::Gzip, &out);
    assert_eq!(
        names(&tarball::snapshot(&out)),
        [".", "./a", "./a/x", "./b"]
    );
}

#[test]
fn a_directory_swapped_for_a_symlink_during_the_walk_is_archived_as_the_symlink() {
    let work = tarball::scratch();
    let image = work.path().join("image");
    small_tree(&image);
    let archive = work.path().join("out.tar");
    let mut swapped = false;
    export_with(
        &image,
        &archive,
        Compression::Uncompressed,
        &AtomicBool::new(false),
        &mut |stats| {
            if stats.entries == 2 && !swapped {
                fs::rename(image.join("d"), work.path().join("d-moved")).unwrap();
                symlink("/etc", image.join("d")).unwrap();
                swapped = true;
            }
        },
    )
    .unwrap();
    let out = work.path().join("extracted");
    extract_gnu(&archive, Compression::Uncompressed, &out);
    let tree = tarball::snapshot(&out);
    assert_eq!(names(&tree), [".", "./a", "./a/x", "./b", "./c", "./d"]);
    assert_eq!(tree[Path::new("./d")].link.as_deref(), Some(&b"/etc"[..]));
}

#[test]
fn a_file_that_shrinks_while_it_is_read_fails_the_export() {
    let work = tarball::scratch();
    let image = work.path().join("image");
    fs::create_dir(&image).unwrap();
    write(&image.join("big"), &noise(4 << 20, 5), 0o644);
    let archive = work.path().join("out.tar.xz");
    let mut cut = false;
    let err = export_with(
        &image,
        &archive,
        Compression::Xz,
        &AtomicBool::new(false),
        &mut |stats| {
            if stats.bytes_read > 0 && !cut {
                fs::File::options()
                    .write(true)
                    .open(image.join("big"))
                    .unwrap()
                    .set_len(1000)
                    .unwrap();
                cut = true;
            }
        },
    )
    .unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(err.msg(), Some("'./big' shrank while it was archived."));
    // The stream was abandoned, not ended: xz reports it truncated.
    let status = std::process::Command::new("xz")
        .arg("-t")
        .arg(&archive)
        .status()
        .unwrap();
    assert!(!status.success(), "a failed export must not look complete");
}

#[test]
fn a_cancel_stops_the_export() {
    let work = tarball::scratch();
    let image = work.path().join("image");
    small_tree(&image);
    let cancel = AtomicBool::new(false);
    let err = export_with(
        &image,
        &work.path().join("out.tar.zst"),
        Compression::Zstd,
        &cancel,
        &mut |_| cancel.store(true, Ordering::Relaxed),
    )
    .unwrap_err();
    assert_eq!(err.errno(), libc::ECANCELED);
}

#[test]
fn a_full_output_is_reported_as_such() {
    let work = tarball::scratch();
    let image = work.path().join("image");
    fs::create_dir(&image).unwrap();
    write(&image.join("big"), &noise(2 << 20, 9), 0o644);
    let dir = fs::File::open(&image).unwrap();
    let mut full = fs::File::options().write(true).open("/dev/full").unwrap();
    let err = export::run(
        Source::Tree(dir.as_fd()),
        Compression::Uncompressed,
        &mut full,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(err.errno(), libc::ENOSPC);
    assert_eq!(
        err.msg(),
        Some("Failed to write output file: No space left on device")
    );
}

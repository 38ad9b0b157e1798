//! The export tests' image: the differential tests' tree ([`super::stage`]) plus what an
//! export must also carry or deliberately drop (a socket, `trusted.*` xattrs, an ACL, a
//! SELinux label, a capability set by `setcap`, a 300-byte path, a 120-byte symlink
//! target, symlinks out of the image, a file with a 9 GiB hole), and the helpers that
//! export it with our library, extract it with GNU tar or our unpacker, and compare.

use std::fs;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, FileExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use super::fsmeta::{self, set_lxattr, set_mtime};
use super::stage::{noise, populate, run, set_dir_times, write};
use super::tarball::{self, Snapshot};
use systemd_import::import::export;
use systemd_import::import::stream::Compression;
use systemd_import::import::unpack::{self, Mode};

/// A POSIX ACL in the kernel's xattr format (version 2): user::rw-, user:1000:r--,
/// group::r--, mask::r--, other::r--.
fn acl_xattr() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// The 300-byte archive name of the deep file ([`stage_image`]).
pub fn long_path() -> String {
    format!("./long300/{}/{}", "c".repeat(150), "d".repeat(139))
}

/// Stage the image below `root` (created here). `huge` adds `sparse/huge`: 9 GiB, with
/// 4 KiB of data at its start and at 8.5 GiB (more than ustar's 8 GiB size field).
pub fn stage_image(root: &Path, huge: bool) {
    fs::create_dir(root).unwrap();
    populate(root, true);

    let e = root.join("export");
    fs::create_dir(&e).unwrap();
    // Not archived: a socket, and trusted.* xattrs (as Debian's systemd-export).
    let sock = std::os::unix::net::UnixListener::bind(e.join("socket")).unwrap();
    drop(sock);
    write(&e.join("labels"), b"labelled", 0o644);
    set_lxattr(&e.join("labels"), "trusted.overlay.opaque", b"y");
    set_lxattr(&e.join("labels"), "user.kept", b"yes");
    set_lxattr(
        &e.join("labels"),
        "security.selinux",
        b"system_u:object_r:bin_t:s0\0",
    );
    set_lxattr(&e.join("labels"), "system.posix_acl_access", &acl_xattr());
    write(&e.join("ping"), b"\x7fELF pretend", 0o755);
    run(Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(e.join("ping")));
    // Symlinks out of the image, never followed.
    symlink("/etc/shadow", e.join("abs-out")).unwrap();
    symlink("../../../../../etc", e.join("up-out")).unwrap();
    symlink("t".repeat(120), e.join("target-120")).unwrap();
    // The 300-byte path, and a hard link to it (a 300-byte link target).
    let long = root.join(long_path());
    fs::create_dir_all(long.parent().unwrap()).unwrap();
    write(&long, b"three hundred", 0o640);
    assert_eq!(long_path().len(), 300);
    fs::hard_link(&long, e.join("hard-to-300")).unwrap();
    // A hard-linked symlink stays linked; a hard-linked FIFO or device becomes separate
    // nodes (as GNU tar archives them).
    symlink("target", e.join("sym-a")).unwrap();
    fs::hard_link(e.join("sym-a"), e.join("sym-b")).unwrap();
    fsmeta::mknod(&e.join("fifo-a"), libc::S_IFIFO, 0o600, 0, 0);
    fs::hard_link(e.join("fifo-a"), e.join("fifo-b")).unwrap();
    fsmeta::mknod(&e.join("null-a"), libc::S_IFCHR, 0o666, 1, 3);
    fs::hard_link(e.join("null-a"), e.join("null-b")).unwrap();
    write(&e.join("frac-negative"), b"-", 0o644);
    set_mtime(&e.join("frac-negative"), (-1000, 250_000_000));
    if huge {
        let f = fs::File::create(root.join("sparse/huge")).unwrap();
        f.write_all_at(&noise(4096, 11), 0).unwrap();
        f.write_all_at(&noise(4096, 12), 17 << 29).unwrap();
        f.set_len(9 << 30).unwrap();
    }
    set_dir_times(root);
}

/// The tree an extraction of the export of `root` must give: its snapshot without the
/// socket, without `trusted.*` xattrs, and with hard-linked devices and FIFOs apart.
pub fn expected(root: &Path) -> Snapshot {
    let mut tree = tarball::snapshot(root);
    tree.retain(|_, node| node.kind != "socket");
    for node in tree.values_mut() {
        node.xattrs.retain(|name, _| !name.starts_with(b"trusted."));
        if matches!(node.kind, "fifo" | "chr" | "blk") {
            node.link_group = None;
        }
    }
    tree
}

/// Export `root` with our library into `out` and return the stats.
pub fn export_tar(root: &Path, compression: Compression, out: &Path) -> export::Stats {
    let dir = fs::File::open(root).unwrap();
    let mut file = fs::File::create(out).unwrap();
    export::run(
        export::Source::Tree(dir.as_fd()),
        compression,
        &mut file,
        &AtomicBool::new(false),
        &mut |_| {},
    )
    .unwrap_or_else(|e| panic!("export of {} failed: {e:?}", root.display()))
}

/// GNU tar's option for reading `compression`.
pub fn tar_flag(compression: Compression) -> Option<&'static str> {
    match compression {
        Compression::Uncompressed => None,
        Compression::Xz => Some("--xz"),
        Compression::Gzip => Some("--gzip"),
        Compression::Bzip2 => Some("--bzip2"),
        Compression::Zstd => Some("--zstd"),
    }
}

/// Extract `archive` with GNU tar (`--numeric-owner -xp --xattrs --xattrs-include=*`)
/// into the new directory `dir`.
pub fn extract_gnu(archive: &Path, compression: Compression, dir: &Path) {
    fs::create_dir(dir).unwrap();
    let mut cmd = Command::new("tar");
    cmd.args(["--numeric-owner", "-xp", "--xattrs", "--xattrs-include=*"]);
    cmd.args(tar_flag(compression));
    run(cmd.arg("-C").arg(dir).arg("-f").arg(archive));
}

/// Extract `archive` with our unpacker (after our decoder) into the new directory `dir`.
pub fn extract_ours(archive: &Path, compression: Compression, dir: &Path) {
    fs::create_dir(dir).unwrap();
    let file = fs::File::open(archive).unwrap();
    let mut input: Box<dyn Read + Send> = Box::new(compression.decoder(file).unwrap());
    let root = fs::File::open(dir).unwrap();
    unpack::unpack(root.as_fd(), &mut input, &unpack::Options::new(Mode::Plain))
        .unwrap_or_else(|e| panic!("unpack of {} failed: {e:?}", archive.display()));
}

/// Fail with the differences unless `actual` is `expected`.
pub fn assert_same_tree(label: &str, expected: &Snapshot, actual: &Snapshot) {
    let differences = tarball::diff(expected, actual);
    assert!(
        differences.is_empty(),
        "{label}: trees differ:\n{}",
        differences.join("\n")
    );
}

/// The regular files of a tree that have holes (allocated less than their size).
pub fn sparse_files(root: &Path) -> Vec<PathBuf> {
    tarball::snapshot(root)
        .into_iter()
        .filter(|(p, n)| n.kind == "file" && fsmeta::allocated(&root.join(p)) < n.size)
        .map(|(p, _)| p)
        .collect()
}

/// Holes stayed holes: every sparse file of `source` has the same data segments in
/// `extracted`.
pub fn assert_holes_kept(label: &str, source: &Path, extracted: &Path) {
    let sparse = sparse_files(source);
    assert!(!sparse.is_empty(), "{label}: the source has no sparse file");
    for rel in sparse {
        let (a, b) = (source.join(&rel), extracted.join(&rel));
        assert_eq!(
            fsmeta::data_map(&b),
            fsmeta::data_map(&a),
            "{label}: {} lost its holes ({} bytes allocated of {})",
            rel.display(),
            fsmeta::allocated(&b),
            fs::metadata(&b).unwrap().len()
        );
    }
}

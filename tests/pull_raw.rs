//! pull-raw through the real binary against a local HTTPS server (spec §1.5, §5.1, §5.2,
//! §5.4, §5.5, §6.6): messages in order, compressed and sparse images, qcow2 v2/v3 with
//! compressed clusters against `qemu-img convert`, the cache and its ETags, `--force`,
//! every failure with its message and nothing left behind, signals in every phase,
//! progress, and btrfs reflinks.
//!
//! Needs root, gnupg, gzip, xz-utils, bzip2, zstd, qemu-utils and (for the btrfs tests)
//! btrfs-progs.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use common::btrfs::{allocated, fiemap, make_sparse_file, BtrfsMount, FIEMAP_EXTENT_SHARED};
use common::cli::{run, spawn_watch, CliOutput, TempRoot};
use common::gpg::TestKey;
use common::pull::{
    assert_aborted, assert_checksum_pull_log, assert_failed_cleanly, assert_log, compress,
    download_lines, is_progress_line, names, pull, pull_cmd, sorted, temporaries, DirWatch,
    ImageServer, NotifyListener,
};
use common::qemu::qemu_img;
use common::tarball::xattrs;
use systemd_import::import::store::{cache_path, CacheKind};

const DIR: &str = "/images";
const MIB: u64 = 1 << 20;

fn cache_name(url: &str, etag: Option<&str>) -> String {
    cache_path(Path::new("/"), CacheKind::Raw, url, etag)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A disk image of `size` bytes with a little data at a few places (holes elsewhere),
/// written to `dir/name`; returns its path and content.
fn sparse_image(dir: &Path, name: &str, size: u64) -> (PathBuf, Vec<u8>) {
    let path = dir.join(name);
    let data = make_sparse_file(
        &path,
        size,
        &[(0, 4096), (size / 3, 70_000), (size - 8192, 8192)],
    );
    (path, data)
}

#[test]
fn a_verified_pull_logs_every_line_in_order_and_makes_cache_and_local_image() {
    let work = tempfile::tempdir().unwrap();
    let (_, image) = sparse_image(work.path(), "disk", 4 * MIB);
    let body = compress("xz", &image);
    let server = ImageServer::new();
    let key = TestKey::generate("raw-signer");
    let name = "sdimport-rawtest-signed.raw.xz";
    let (sums_len, sig_len) = server.put_verified(DIR, name, &body, Some(&key));
    let path = format!("{DIR}/{name}");
    server.set_etag(&path, Some("\"r1\""));
    server.shape(&path, |r| {
        r.header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
    });
    let url = server.url(&path);
    let root = TempRoot::new();

    let out = pull(&server, root.path(), Some(&key), &["pull-raw", &url]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let local = "sdimport-rawtest-signed";
    assert_log(
        &out,
        &[&format!("Pulling '{url}', saving as '{local}'.")],
        &[
            download_lines(&url, body.len()),
            download_lines(&server.url("/images/SHA256SUMS"), sums_len),
            download_lines(&server.url("/images/SHA256SUMS.gpg"), sig_len),
        ],
        &[
            &format!("SHA256 checksum of {url} is valid."),
            "Signature verification succeeded.",
            &format!("Created new local image '{local}'."),
            "Operation completed successfully.",
            "Exiting.",
        ],
        true,
    );
    let cache = root.path().join(cache_name(&url, Some("\"r1\"")));
    let copy = root.path().join(format!("{local}.raw"));
    assert_eq!(
        names(root.path()),
        sorted(vec![
            cache_name(&url, Some("\"r1\"")),
            format!("{local}.raw")
        ])
    );
    assert_eq!(fs::read(&cache).unwrap(), image);
    assert_eq!(fs::read(&copy).unwrap(), image);
    assert_eq!(mode(&cache), 0o444);
    assert_eq!(mode(&copy), 0o664);
    // The job's metadata, carried over to the local copy.
    for p in [&cache, &copy] {
        let x = xattrs(p);
        assert_eq!(x[&b"user.source_url".to_vec()], url.as_bytes());
        assert_eq!(x[&b"user.source_etag".to_vec()], b"\"r1\"");
        let mtime = 1_445_412_480i64;
        assert_eq!(fs::metadata(p).unwrap().mtime(), mtime, "{}", p.display());
        assert_eq!(
            x[&b"user.crtime_usec".to_vec()],
            (mtime as u64 * 1_000_000).to_le_bytes()
        );
    }
}

#[test]
fn every_compression_decodes_and_suffixes_are_stripped_repeatedly() {
    let work = tempfile::tempdir().unwrap();
    let (_, image) = sparse_image(work.path(), "disk", MIB);
    let server = ImageServer::new();
    for (file, tool) in [
        ("sdimport-rawtest-fmt.raw", None),
        ("sdimport-rawtest-fmt.img.gz", Some("gzip")),
        ("sdimport-rawtest-fmt.raw.xz", Some("xz")),
        ("sdimport-rawtest-fmt.bin.bz2", Some("bzip2")),
        ("sdimport-rawtest-fmt.qcow2.raw.img", None),
        // zstd is our addition; its suffix is not stripped, so LOCAL is given.
        ("sdimport-rawtest-fmt.raw.zst", Some("zstd")),
    ] {
        let body = tool.map_or_else(|| image.clone(), |t| compress(t, &image));
        server.put(&format!("{DIR}/{file}"), body);
        let url = server.url(&format!("{DIR}/{file}"));
        let root = TempRoot::new();
        let mut args = vec!["--verify=no", "pull-raw", &url];
        if file.ends_with(".zst") {
            args.push("sdimport-rawtest-fmt");
        }
        let out = pull(&server, root.path(), None, &args);
        assert_eq!(out.status, 0, "{file}: {}", out.stderr);
        assert_eq!(
            out.stderr_lines[0],
            format!("Pulling '{url}', saving as 'sdimport-rawtest-fmt'.")
        );
        let copy = root.path().join("sdimport-rawtest-fmt.raw");
        assert_eq!(fs::read(&copy).unwrap(), image, "{file}");
    }
}

#[test]
fn sparse_images_stay_sparse_in_the_cache_and_the_local_copy() {
    let work = tempfile::tempdir().unwrap();
    let size = 256 * MIB;
    let (_, image) = sparse_image(work.path(), "disk", size);
    let server = ImageServer::new();
    let name = "sdimport-rawtest-sparse.raw.zst";
    server.put_verified(DIR, name, &compress("zstd", &image), None);
    let url = server.url(&format!("{DIR}/{name}"));
    let root = TempRoot::new();
    let local = "sdimport-rawtest-sparse";
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=checksum", "pull-raw", &url, local],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let cache = root.path().join(cache_name(&url, None));
    let copy = root.path().join(format!("{local}.raw"));
    for p in [&cache, &copy] {
        assert_eq!(fs::metadata(p).unwrap().len(), size);
        assert!(
            allocated(p) < MIB,
            "{} has {} bytes allocated",
            p.display(),
            allocated(p)
        );
    }
    assert!(fs::read(&copy).unwrap() == image);
}

/// Compare two files' bytes, reading the data extents only where `actual` has holes
/// (a multi-GiB sparse file is compared quickly and without much memory).
fn assert_same_content(actual: &Path, expected: &Path) {
    use std::os::unix::fs::FileExt;
    let (a, e) = (
        fs::File::open(actual).unwrap(),
        fs::File::open(expected).unwrap(),
    );
    let len = a.metadata().unwrap().len();
    assert_eq!(
        len,
        e.metadata().unwrap().len(),
        "{}: size",
        actual.display()
    );
    // Where either file has data, the bytes must match; elsewhere both read as zeros.
    let data_ranges = |f: &fs::File| {
        use std::os::fd::AsRawFd;
        let mut ranges = Vec::new();
        let mut pos = 0i64;
        loop {
            // SAFETY: lseek on an open file.
            let data = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_DATA) };
            if data < 0 || data as u64 >= len {
                break;
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
            ranges.push((data as u64, hole as u64));
            pos = hole;
        }
        ranges
    };
    let mut ranges = data_ranges(&a);
    ranges.extend(data_ranges(&e));
    let (mut x, mut y) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    for (start, end) in ranges {
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(x.len());
            a.read_exact_at(&mut x[..n], off).unwrap();
            e.read_exact_at(&mut y[..n], off).unwrap();
            assert!(x[..n] == y[..n], "{}: differs near {off}", actual.display());
            off += n as u64;
        }
    }
}

/// Make a qcow2 image of `raw` with qemu-img, compressed clusters, version `compat`.
fn qcow2_of(raw: &Path, compat: &str, out: &Path) {
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        "-o",
        &format!("compat={compat}"),
        raw.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
}

#[test]
fn qcow2_images_become_the_raw_bytes_qemu_img_makes_with_holes_kept() {
    let work = tempfile::tempdir().unwrap();
    // Large virtual size, little data (in several clusters, compressible and not).
    let raw = work.path().join("disk");
    let file = fs::File::create_new(&raw).unwrap();
    file.set_len(8192 * MIB).unwrap();
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (offset, data) in [
        (0, &b"boot sector"[..]),
        (3000 * MIB + 12_345, &noise[..]),
        (5000 * MIB, &[0x55; 200_000][..]),
        (8192 * MIB - 4096, &[1; 4096][..]),
    ] {
        std::os::unix::fs::FileExt::write_all_at(&file, data, offset).unwrap();
    }
    drop(file);
    let server = ImageServer::new();
    for compat in ["0.10", "1.1"] {
        let qcow2 = work.path().join(format!("disk-{compat}.qcow2"));
        qcow2_of(&raw, compat, &qcow2);
        let expected = work.path().join(format!("expected-{compat}.raw"));
        qemu_img(&[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            qcow2.to_str().unwrap(),
            expected.to_str().unwrap(),
        ]);
        let body = fs::read(&qcow2).unwrap();
        let name = format!("sdimport-rawtest-qcow-{}.qcow2", compat.replace('.', ""));
        let (sums_len, _) = server.put_verified(DIR, &name, &body, None);
        let url = server.url(&format!("{DIR}/{name}"));
        let local = format!("sdimport-rawtest-qcow-{}", compat.replace('.', ""));
        let root = TempRoot::new();
        let out = pull(
            &server,
            root.path(),
            None,
            &["--verify=checksum", "pull-raw", &url],
        );
        assert_eq!(out.status, 0, "{}", out.stderr);
        assert_checksum_pull_log(
            &out,
            &url,
            Some(&local),
            (body.len(), sums_len),
            &[
                &format!("SHA256 checksum of {url} is valid."),
                "Unpacking QCOW2 file.",
                &format!("Created new local image '{local}'."),
                "Operation completed successfully.",
                "Exiting.",
            ],
        );
        let cache = root.path().join(cache_name(&url, None));
        let copy = root.path().join(format!("{local}.raw"));
        assert_eq!(
            names(root.path()),
            sorted(vec![cache_name(&url, None), format!("{local}.raw")])
        );
        assert_same_content(&cache, &expected);
        assert_same_content(&copy, &expected);
        assert_eq!(mode(&cache), 0o444);
        for p in [&cache, &copy] {
            assert!(
                allocated(p) <= allocated(&expected) + 256 * 1024,
                "{}: {} allocated, qemu-img's output {}",
                p.display(),
                allocated(p),
                allocated(&expected)
            );
        }
        // The converted image still says where it came from.
        assert_eq!(xattrs(&cache)[&b"user.source_url".to_vec()], url.as_bytes());
    }
}

#[test]
fn etags_skip_the_download_and_a_new_one_adds_a_cache_entry() {
    let work = tempfile::tempdir().unwrap();
    let (_, one) = sparse_image(work.path(), "one", MIB);
    let two = vec![9u8; 100_000];
    let server = ImageServer::new();
    let name = "sdimport-rawtest-etag.raw";
    let path = format!("{DIR}/{name}");
    let url = server.url(&path);
    let root = TempRoot::new();
    let local = "sdimport-rawtest-etag";
    let args = ["--verify=checksum", "--force", "pull-raw", &url, local];

    let (sums_len, _) = server.put_verified(DIR, name, &one, None);
    server.set_etag(&path, Some("W/\"1\""));
    assert_eq!(pull(&server, root.path(), None, &args).status, 0);
    for honour in [true, false] {
        if !honour {
            server.ignore_if_none_match(&path);
        }
        let out = pull(&server, root.path(), None, &args);
        assert_eq!(out.status, 0, "{}", out.stderr);
        assert_log(
            &out,
            &[&format!("Pulling '{url}', saving as '{local}'.")],
            &[
                vec![
                    "Image already downloaded. Skipping download.".to_string(),
                    format!("Download of {url} complete."),
                ],
                download_lines(&server.url("/images/SHA256SUMS"), sums_len),
            ],
            &[
                &format!("Created new local image '{local}'."),
                "Operation completed successfully.",
                "Exiting.",
            ],
            false,
        );
        assert_eq!(
            server
                .requests_for(&path)
                .last()
                .unwrap()
                .header("If-None-Match"),
            Some("W/\"1\"")
        );
        assert!(temporaries(root.path()).is_empty());
    }
    assert_eq!(
        server.bodies_sent(&path),
        2,
        "only the ignored If-None-Match sent it"
    );

    server.put_verified(DIR, name, &two, None);
    server.set_etag(&path, Some("\"2\""));
    let out = pull(&server, root.path(), None, &args);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(
        names(root.path()),
        sorted(vec![
            cache_name(&url, Some("W/\"1\"")),
            cache_name(&url, Some("\"2\"")),
            format!("{local}.raw"),
        ])
    );
    assert_eq!(
        fs::read(root.path().join(cache_name(&url, Some("W/\"1\"")))).unwrap(),
        one
    );
    assert_eq!(
        fs::read(root.path().join(format!("{local}.raw"))).unwrap(),
        two
    );
}

#[test]
fn force_replaces_local_raw_images_but_never_a_directory_image_of_the_same_name() {
    let server = ImageServer::new();
    let image = vec![5u8; 50_000];
    let url = server.url("/images/sdimport-rawtest-force.raw");
    server.put("/images/sdimport-rawtest-force.raw", image.clone());
    let local = "sdimport-rawtest-force";

    // An existing raw image: refused without --force (Q9: found under --image-root),
    // replaced with it.
    let root = TempRoot::new();
    let target = root.path().join(format!("{local}.raw"));
    fs::write(&target, b"old image").unwrap();
    let before = names(root.path());
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-raw", &url],
    );
    assert_eq!(out.stderr, format!("Image '{local}' already exists.\n"));
    assert_failed_cleanly(&out, root.path(), &before);
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "--force", "pull-raw", &url],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(fs::read(&target).unwrap(), image);
    assert_eq!(mode(&target), 0o664);
    assert_eq!(
        names(root.path()),
        sorted(vec![cache_name(&url, None), format!("{local}.raw")])
    );

    // A directory at <local>.raw is no image, so the pre-check passes; the copy then
    // refuses to replace it without --force (the C tool would have renamed over an
    // empty one), and replaces it with --force (the C tool removed it first).
    let root = TempRoot::new();
    fs::create_dir(target_in(&root, local)).unwrap();
    fs::write(target_in(&root, local).join("inside"), b"old").unwrap();
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-raw", &url],
    );
    assert_eq!(
        out.stderr_lines[out.stderr_lines.len() - 2..],
        [
            "Failed to move writable image into place: File exists",
            "Exiting."
        ]
    );
    assert_eq!(out.status, 1);
    assert_eq!(
        fs::read(target_in(&root, local).join("inside")).unwrap(),
        b"old"
    );
    assert!(temporaries(root.path()).is_empty());
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "--force", "pull-raw", &url],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(fs::read(target_in(&root, local)).unwrap(), image);
    assert!(temporaries(root.path()).is_empty());

    // A directory image called <local>: --force makes <local>.raw and leaves it alone.
    let root = TempRoot::new();
    fs::create_dir(root.path().join(local)).unwrap();
    fs::write(root.path().join(local).join("mine"), b"keep").unwrap();
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-raw", &url],
    );
    assert_eq!(out.stderr, format!("Image '{local}' already exists.\n"));
    assert_eq!(out.status, 1);
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "--force", "pull-raw", &url],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(
        fs::read(root.path().join(local).join("mine")).unwrap(),
        b"keep"
    );
    assert_eq!(
        fs::read(root.path().join(format!("{local}.raw"))).unwrap(),
        image
    );
}

fn target_in(root: &TempRoot, local: &str) -> PathBuf {
    root.path().join(format!("{local}.raw"))
}

#[test]
fn the_local_image_is_0664_whatever_the_umask() {
    let server = ImageServer::new();
    server.put("/images/sdimport-rawtest-umask.raw", vec![1u8; 10_000]);
    let url = server.url("/images/sdimport-rawtest-umask.raw");
    let root = TempRoot::new();
    let mut cmd = pull_cmd(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-raw", &url],
    );
    // SAFETY: umask() is async-signal-safe and touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let out = run(&mut cmd);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(mode(&root.path().join("sdimport-rawtest-umask.raw")), 0o664);
    // The cache entry follows the umask, as in the C tool (0644 & ~077, then read-only).
    assert_eq!(mode(&root.path().join(cache_name(&url, None))), 0o400);
}

/// A root holding a good earlier pull (cache entry with ETag "good", local image).
fn earlier_pull(server: &ImageServer, name: &str, local: &str) -> (TempRoot, Vec<String>) {
    let path = format!("{DIR}/{name}");
    server.put_verified(DIR, name, b"good image", None);
    server.set_etag(&path, Some("\"good\""));
    let root = TempRoot::new();
    let out = pull(
        server,
        root.path(),
        None,
        &["--verify=checksum", "pull-raw", &server.url(&path), local],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let before = names(root.path());
    (root, before)
}

fn assert_intact(out: &CliOutput, root: &Path, before: &[String], local: &str) {
    assert_failed_cleanly(out, root, before);
    assert_eq!(
        fs::read(root.join(format!("{local}.raw"))).unwrap(),
        b"good image"
    );
}

#[test]
fn a_bad_checksum_a_broken_qcow2_and_a_cut_transfer_leave_nothing() {
    let server = ImageServer::new();
    let name = "sdimport-rawtest-fail.raw";
    let local = "sdimport-rawtest-fail";
    let path = format!("{DIR}/{name}");
    let url = server.url(&path);
    let (root, before) = earlier_pull(&server, name, local);
    let args = ["--verify=checksum", "--force", "pull-raw", &url, local];
    let sums_len = 64 + 2 + name.len() + 1;

    // Bad checksum: SHA256SUMS still lists the good image.
    server.put(&path, b"evil image".to_vec());
    server.set_etag(&path, Some("\"evil\""));
    let out = pull(&server, root.path(), None, &args);
    assert_checksum_pull_log(
        &out,
        &url,
        Some(local),
        (10, sums_len),
        &[
            "Checksum did not check out, payload has been tempered with.",
            "Exiting.",
        ],
    );
    assert_intact(&out, root.path(), &before, local);

    // A qcow2 header with a version we do not know: the conversion fails.
    let mut qcow2 = b"QFI\xfb".to_vec();
    qcow2.extend_from_slice(&7u32.to_be_bytes());
    qcow2.resize(4096, 0);
    let (sums_len, _) = server.put_verified(DIR, name, &qcow2, None);
    server.set_etag(&path, Some("\"broken\""));
    let out = pull(&server, root.path(), None, &args);
    assert_checksum_pull_log(
        &out,
        &url,
        Some(local),
        (qcow2.len(), sums_len),
        &[
            &format!("SHA256 checksum of {url} is valid."),
            "Unpacking QCOW2 file.",
            "Failed to convert qcow2 image: Operation not supported",
            "Exiting.",
        ],
    );
    assert_intact(&out, root.path(), &before, local);

    // A transfer cut off (the connection dropped mid-body).
    let big = vec![3u8; 512 << 10];
    server.put(&path, big.clone());
    server.shape(&path, |r| r.truncate_after(100 << 10));
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "--force", "pull-raw", &url, local],
    );
    let lines: Vec<&String> = out
        .stderr_lines
        .iter()
        .filter(|l| !is_progress_line(l))
        .collect();
    assert_eq!(
        lines,
        [
            &format!("Pulling '{url}', saving as '{local}'."),
            &format!("Downloading 512.0K for {url}."),
            "Transfer failed: Failure when receiving data from the peer",
            "Failed to retrieve image file. (Wrong URL?)",
            "Exiting.",
        ]
    );
    assert_intact(&out, root.path(), &before, local);

    // A 404.
    let missing = server.url("/images/sdimport-rawtest-none.raw");
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-raw", &missing, "-"],
    );
    assert_eq!(
        out.stderr_lines,
        [
            format!("Pulling '{missing}'."),
            format!("HTTP request to {missing} failed with code 404."),
            "Failed to retrieve image file. (Wrong URL?)".into(),
            "Exiting.".into(),
        ]
    );
    assert_intact(&out, root.path(), &before, local);
}

#[test]
fn an_invalid_local_name_is_refused() {
    let server = ImageServer::new();
    let root = TempRoot::new();
    let url = server.url("/images/x.raw");
    for (local, expected) in [
        ("a..b.raw", "Local image name 'a..b' is not valid."),
        // Stripped repeatedly down to nothing.
        (".raw.xz", "Local image name '' is not valid."),
    ] {
        let out = pull(&server, root.path(), None, &["pull-raw", &url, local]);
        assert_eq!(out.status, 1);
        assert_eq!(out.stderr, format!("{expected}\n"));
    }
    assert!(server.http.requests().is_empty());
    assert!(names(root.path()).is_empty());
}

#[test]
fn sigint_during_the_download_leaves_nothing_behind() {
    let server = ImageServer::new();
    let path = "/images/sdimport-rawtest-sigint.raw";
    server.put(path, vec![7u8; 1 << 20]);
    server.shape(path, |r| r.stall_after(64 << 10, Duration::from_secs(600)));
    let root = TempRoot::new();
    let mut watch = DirWatch::new(root.path());
    let run = spawn_watch(&mut pull_cmd(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-raw", &server.url(path)],
    ));
    // Body bytes reached the temporary file.
    watch.wait_for(
        libc::IN_MODIFY,
        |n| n.starts_with(".#"),
        Duration::from_secs(60),
    );
    run.signal(Signal::SIGINT);
    let out = run.wait();
    assert_aborted(&out);
    assert!(root.list_all().is_empty(), "{:?}", root.list_all());
}

/// Start a pull that holds (test seam) in `phase`, wait until it is there, SIGTERM it.
fn sigterm_in_phase(phase: &str, qcow2: bool) {
    let work = tempfile::tempdir().unwrap();
    let (raw, image) = sparse_image(work.path(), "disk", 64 * MIB);
    let body = if qcow2 {
        let q = work.path().join("disk.qcow2");
        qcow2_of(&raw, "1.1", &q);
        fs::read(&q).unwrap()
    } else {
        image
    };
    let server = ImageServer::new();
    server.put("/images/sdimport-rawtest-term.img", body);
    let url = server.url("/images/sdimport-rawtest-term.img");
    let root = TempRoot::new();
    let mut cmd = pull_cmd(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-raw", &url],
    );
    cmd.env("SYSTEMD_IMPORT_TEST_HOLD", phase);
    let run = spawn_watch(&mut cmd);
    run.wait_for_stderr_line(
        |l| l.starts_with("Holding in phase"),
        Duration::from_secs(60),
    );
    let held = temporaries(root.path());
    run.signal(Signal::SIGTERM);
    let out = run.wait();
    assert_aborted(&out);
    let n = out.stderr_lines.len();
    assert_eq!(
        out.stderr_lines[n - 3],
        format!("Holding in phase '{phase}' until cancelled (SYSTEMD_IMPORT_TEST_HOLD).")
    );
    let left = names(root.path());
    if phase == "qcow2" {
        // Both the download and the converted file existed, and both are gone.
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(left.is_empty(), "{left:?}");
    } else {
        // The cache entry was complete before the copy began; the copy is gone.
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(left, [cache_name(&url, None)]);
    }
}

#[test]
fn sigterm_during_the_qcow2_conversion_leaves_nothing_behind() {
    sigterm_in_phase("qcow2", true);
}

#[test]
fn sigterm_during_the_local_copy_leaves_no_copy_behind() {
    sigterm_in_phase("local-copy", false);
}

#[test]
fn progress_reaches_systemd_importd_at_the_v219_milestones() {
    let server = ImageServer::new();
    let name = "sdimport-rawtest-progress.raw";
    server.put_verified(DIR, name, &[4u8; 30_000], None);
    let url = server.url(&format!("{DIR}/{name}"));
    server.set_etag(&format!("{DIR}/{name}"), Some("\"p\""));
    let root = TempRoot::new();
    for expected in [&[80, 85, 90, 95][..], &[95]] {
        let notify = NotifyListener::new();
        let mut cmd = pull_cmd(
            &server,
            root.path(),
            None,
            &["--verify=checksum", "pull-raw", &url, "-"],
        );
        cmd.env("NOTIFY_SOCKET", notify.path());
        let out = run(&mut cmd);
        assert_eq!(out.status, 0, "{}", out.stderr);
        let progress = notify.progress();
        assert!(progress.ends_with(expected), "{progress:?}");
        assert!(progress.iter().all(|p| *p <= 95), "{progress:?}");
    }
}

#[test]
fn on_btrfs_the_cache_file_is_nocow_and_the_local_copy_a_reflink() {
    let fs_ = BtrfsMount::new();
    let root = fs_.path().join("machines");
    let work = tempfile::tempdir().unwrap();
    let (_, image) = sparse_image(work.path(), "disk", 16 * MIB);
    let server = ImageServer::new();
    let name = "sdimport-rawtest-btrfs.raw.gz";
    server.put_verified(DIR, name, &compress("gzip", &image), None);
    let url = server.url(&format!("{DIR}/{name}"));
    let out = pull(
        &server,
        &root,
        None,
        &["--verify=checksum", "pull-raw", &url],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("Failed to set file attributes"),
        "{}",
        out.stderr
    );
    let cache = root.join(cache_name(&url, None));
    let copy = root.join("sdimport-rawtest-btrfs.raw");
    assert_eq!(fs::read(&copy).unwrap(), image);
    assert_eq!(mode(&cache), 0o444);
    assert_eq!(mode(&copy), 0o664);
    for p in [&cache, &copy] {
        let out = std::process::Command::new("lsattr")
            .arg(p)
            .output()
            .unwrap();
        let attrs = String::from_utf8_lossy(&out.stdout);
        assert!(
            attrs.split_whitespace().next().unwrap_or("").contains('C'),
            "NOCOW on {}: {attrs}",
            p.display()
        );
        let extents = fiemap(p);
        assert!(!extents.is_empty());
        assert!(
            extents.iter().all(|e| e.flags & FIEMAP_EXTENT_SHARED != 0),
            "reflinked: {extents:?}"
        );
        assert!(allocated(p) < 2 * MIB);
    }
}

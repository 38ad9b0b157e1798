//! pull-tar through the real binary against a local HTTPS server (spec §1.5, §5.1–5.3,
//! §6.6): messages in order, the cache and its ETags, verification, every failure with
//! its message and nothing left behind, signals, progress, and btrfs subvolumes.
//!
//! Needs root, gnupg, gzip, xz-utils, bzip2, zstd and (for the btrfs tests) btrfs-progs.

mod common;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use common::btrfs::{fiemap, BtrfsMount, FIEMAP_EXTENT_SHARED};
use common::cli::{run, spawn_watch, CliOutput, TempRoot};
use common::gpg::TestKey;
use common::pull::{
    assert_aborted, assert_checksum_pull_log, assert_failed_cleanly, assert_log, compress,
    download_lines, names, pull, pull_cmd, sorted, temporaries, DirWatch, ImageServer,
    NotifyListener,
};
use common::tarball::{self, diff, scratch, snapshot, Header, Snapshot, Tarball};
use systemd_import::import::store::{cache_path, CacheKind};
use systemd_import::import::unpack::Mode;
use systemd_import::util::btrfs;

const DIR: &str = "/images";

/// A small root file system with what must survive the trip: a hard link, xattrs, a
/// device node, a FIFO, a symlink, modes, owners and times.
fn sample_tar(marker: &str) -> Vec<u8> {
    let mut t = Tarball::new();
    t.entry(&Header::dir("./").mode(0o755).mtime(1_500_000_000), b"");
    t.entry(&Header::dir("./etc").mode(0o755).mtime(1_500_000_001), b"");
    t.entry(
        &Header::file("./etc/os-release").mtime(1_500_000_002),
        format!("ID={marker}\n").as_bytes(),
    );
    t.hardlink("./etc/os-release.link", "./etc/os-release");
    t.symlink("./etc/alias", "os-release");
    t.pax(&[
        ("SCHILY.xattr.user.origin", b"tarball"),
        ("SCHILY.xattr.trusted.secret", b"s3cret"),
    ]);
    t.entry(
        &Header::file("./etc/shadow").mode(0o640).owner(0, 42),
        b"root:*:1::::::\n",
    );
    t.entry(&Header::dir("./dev").mode(0o755), b"");
    t.entry(&Header::new("./dev/null", b'3').mode(0o666).dev(1, 3), b"");
    t.entry(&Header::new("./dev/fifo", b'6').mode(0o600), b"");
    t.finish()
}

/// The tree the unpacker makes of `tar` (without its root, whose mode the cache changes
/// on file systems without subvolumes).
fn expected_tree(tar: &[u8]) -> Snapshot {
    let dir = scratch();
    tarball::unpack_bytes(dir.path(), tar, Mode::Plain).unwrap();
    without_root(snapshot(dir.path()))
}

fn without_root(mut s: Snapshot) -> Snapshot {
    s.remove(Path::new("."));
    s
}

fn assert_tree(path: &Path, expected: &Snapshot) {
    let d = diff(expected, &without_root(snapshot(path)));
    assert!(d.is_empty(), "{}:\n{}", path.display(), d.join("\n"));
}

fn os_release(image: &Path) -> String {
    fs::read_to_string(image.join("etc/os-release")).unwrap()
}

fn cache_name(url: &str, etag: Option<&str>) -> String {
    cache_path(Path::new("/"), CacheKind::Tar, url, etag)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_verified_pull_logs_every_line_in_order_and_makes_cache_and_local_image() {
    let server = ImageServer::new();
    let key = TestKey::generate("tar-signer");
    let tar = sample_tar("signed");
    let body = compress("xz", &tar);
    let name = "sdimport-tartest-signed.tar.xz";
    let (sums_len, sig_len) = server.put_verified(DIR, name, &body, Some(&key));
    server.set_etag(&format!("{DIR}/{name}"), Some("\"v1\""));
    let url = server.url(&format!("{DIR}/{name}"));
    let root = TempRoot::new();

    let out = pull(&server, root.path(), Some(&key), &["pull-tar", &url]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let local = "sdimport-tartest-signed";
    let sums = server.url(&format!("{DIR}/SHA256SUMS"));
    let sig = server.url(&format!("{DIR}/SHA256SUMS.gpg"));
    assert_log(
        &out,
        &[&format!("Pulling '{url}', saving as '{local}'.")],
        &[
            download_lines(&url, body.len()),
            download_lines(&sums, sums_len),
            download_lines(&sig, sig_len),
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
    let cache = cache_name(&url, Some("\"v1\""));
    assert_eq!(
        names(root.path()),
        sorted(vec![cache.clone(), local.into()])
    );
    let expected = expected_tree(&tar);
    assert_tree(&root.path().join(&cache), &expected);
    assert_tree(&root.path().join(local), &expected);
    // Not btrfs here: the cache entry is a directory without write permission.
    let mode = fs::metadata(root.path().join(&cache)).unwrap().mode();
    assert_eq!(mode & 0o222, 0, "cache entry mode {mode:o}");
    assert_eq!(os_release(&root.path().join(local)), "ID=signed\n");
}

/// Serve a tarball (no companions) and return its URL.
fn serve(server: &ImageServer, name: &str, body: &[u8], etag: Option<&str>) -> String {
    let path = format!("{DIR}/{name}");
    server.put(&path, body.to_vec());
    server.set_etag(&path, etag);
    server.url(&path)
}

#[test]
fn verify_modes_fetch_only_what_they_check() {
    let server = ImageServer::new();
    let tar = sample_tar("modes");
    let name = "sdimport-tartest-modes.tar";
    let (sums_len, _) = server.put_verified(DIR, name, &tar, None);
    let url = server.url(&format!("{DIR}/{name}"));

    let root = TempRoot::new();
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-tar", &url, "-"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_log(
        &out,
        &[&format!("Pulling '{url}'.")],
        &[download_lines(&url, tar.len())],
        &["Operation completed successfully.", "Exiting."],
        false,
    );
    assert!(server.requests_for("/images/SHA256SUMS").is_empty());
    assert_eq!(names(root.path()), [cache_name(&url, None)]);

    let root = TempRoot::new();
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=checksum", "pull-tar", &url, "-"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_checksum_pull_log(
        &out,
        &url,
        None,
        (tar.len(), sums_len),
        &[
            &format!("SHA256 checksum of {url} is valid."),
            "Operation completed successfully.",
            "Exiting.",
        ],
    );
    assert_eq!(server.requests_for("/images/SHA256SUMS").len(), 1);
    assert!(server.requests_for("/images/SHA256SUMS.gpg").is_empty());
    // The seed's name for the mode works too.
    let root = TempRoot::new();
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=sum", "pull-tar", &url, "-"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stderr.contains("SHA256 checksum of"), "{}", out.stderr);
}

#[test]
fn every_compression_unpacks_and_the_suffix_names_the_image() {
    let server = ImageServer::new();
    let tar = sample_tar("formats");
    let expected = expected_tree(&tar);
    for (suffix, tool) in [
        (".tar", None),
        (".tar.gz", Some("gzip")),
        (".tgz", Some("gzip")),
        (".tar.xz", Some("xz")),
        (".tar.bz2", Some("bzip2")),
        // Not a suffix the C tool strips (zstd is our addition): LOCAL is given.
        (".tar.zst", Some("zstd")),
    ] {
        let body = tool.map_or_else(|| tar.clone(), |t| compress(t, &tar));
        let file = format!("sdimport-tartest-fmt{suffix}");
        let (sums_len, _) = server.put_verified(DIR, &file, &body, None);
        let url = server.url(&format!("{DIR}/{file}"));
        let root = TempRoot::new();
        let mut args = vec!["--verify=checksum", "pull-tar", &url];
        if suffix == ".tar.zst" {
            args.push("sdimport-tartest-fmt");
        }
        let out = pull(&server, root.path(), None, &args);
        assert_eq!(out.status, 0, "{suffix}: {}", out.stderr);
        assert_checksum_pull_log(
            &out,
            &url,
            Some("sdimport-tartest-fmt"),
            (body.len(), sums_len),
            &[
                &format!("SHA256 checksum of {url} is valid."),
                "Created new local image 'sdimport-tartest-fmt'.",
                "Operation completed successfully.",
                "Exiting.",
            ],
        );
        assert_tree(&root.path().join("sdimport-tartest-fmt"), &expected);
    }
}

#[test]
fn a_query_string_is_dropped_for_sha256sums_but_kept_for_the_image() {
    let server = ImageServer::new();
    let tar = sample_tar("query");
    let (sums_len, _) = server.put_verified("/q", "box.tar", &tar, None);
    let url = server.url("/q/box.tar?token=abc&x=1");
    let root = TempRoot::new();
    let out = pull(
        &server,
        root.path(),
        None,
        &[
            "--verify=checksum",
            "pull-tar",
            &url,
            "sdimport-tartest-query",
        ],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_log(
        &out,
        &[&format!(
            "Pulling '{url}', saving as 'sdimport-tartest-query'."
        )],
        &[
            download_lines(&url, tar.len()),
            download_lines(&server.url("/q/SHA256SUMS"), sums_len),
        ],
        &[
            &format!("SHA256 checksum of {url} is valid."),
            "Created new local image 'sdimport-tartest-query'.",
            "Operation completed successfully.",
            "Exiting.",
        ],
        false,
    );
    assert_eq!(server.requests_for("/q/box.tar")[0].query, "token=abc&x=1");
    let sums = server.requests_for("/q/SHA256SUMS");
    assert_eq!(sums.len(), 1);
    assert_eq!(
        sums[0].query, "",
        "Q14: SHA256SUMS is fetched without the query"
    );
    // The cache is named after the whole URL.
    assert!(root.path().join(cache_name(&url, None)).is_dir());
}

/// A pull of `url` to `local` with --force, checked to succeed.
fn pull_ok(server: &ImageServer, root: &Path, url: &str, local: &str) -> CliOutput {
    let out = pull(
        server,
        root,
        None,
        &["--verify=checksum", "--force", "pull-tar", url, local],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    out
}

#[test]
fn the_same_etag_downloads_nothing_whether_the_server_answers_304_or_not() {
    let server = ImageServer::new();
    let tar = sample_tar("etag");
    let name = "sdimport-tartest-etag.tar";
    let (sums_len, _) = server.put_verified(DIR, name, &tar, None);
    let path = format!("{DIR}/{name}");
    server.set_etag(&path, Some("\"e1\""));
    let url = server.url(&path);
    let root = TempRoot::new();
    pull_ok(&server, root.path(), &url, "sdimport-tartest-a");
    let cache = root.path().join(cache_name(&url, Some("\"e1\"")));
    let cache_ino = fs::metadata(&cache).unwrap().ino();
    assert_eq!(server.bodies_sent(&path), 1);

    let sums = server.url("/images/SHA256SUMS");
    for honour in [true, false] {
        if !honour {
            // Some servers ignore If-None-Match: the ETag of the 200 still matches.
            server.ignore_if_none_match(&path);
        }
        let local = if honour {
            "sdimport-tartest-b"
        } else {
            "sdimport-tartest-c"
        };
        let out = pull_ok(&server, root.path(), &url, local);
        let last = server.requests_for(&path).pop().unwrap();
        assert_eq!(last.header("If-None-Match"), Some("\"e1\""));
        // Skipped: no checksum check, the local image comes from the cache entry.
        assert_log(
            &out,
            &[&format!("Pulling '{url}', saving as '{local}'.")],
            &[
                vec![
                    "Image already downloaded. Skipping download.".to_string(),
                    format!("Download of {url} complete."),
                ],
                download_lines(&sums, sums_len),
            ],
            &[
                &format!("Created new local image '{local}'."),
                "Operation completed successfully.",
                "Exiting.",
            ],
            false,
        );
        assert_eq!(fs::metadata(&cache).unwrap().ino(), cache_ino);
        assert_tree(&root.path().join(local), &expected_tree(&tar));
    }
    assert_eq!(
        server.bodies_sent(&path),
        2,
        "only the ignored If-None-Match sent it"
    );
    assert!(temporaries(root.path()).is_empty());
}

#[test]
fn a_new_etag_downloads_again_and_both_cache_entries_stay() {
    let server = ImageServer::new();
    let name = "sdimport-tartest-new.tar";
    let path = format!("{DIR}/{name}");
    let url = server.url(&path);
    let root = TempRoot::new();
    let local = "sdimport-tartest-new";

    server.put_verified(DIR, name, &sample_tar("one"), None);
    server.set_etag(&path, Some("\"one\""));
    pull_ok(&server, root.path(), &url, local);
    server.put_verified(DIR, name, &sample_tar("two"), None);
    server.set_etag(&path, Some("\"two\""));
    pull_ok(&server, root.path(), &url, local);

    assert_eq!(
        server.requests_for(&path)[1].header("If-None-Match"),
        Some("\"one\"")
    );
    assert_eq!(server.bodies_sent(&path), 2);
    let one = root.path().join(cache_name(&url, Some("\"one\"")));
    let two = root.path().join(cache_name(&url, Some("\"two\"")));
    assert_eq!(os_release(&one), "ID=one\n");
    assert_eq!(os_release(&two), "ID=two\n");
    assert_eq!(os_release(&root.path().join(local)), "ID=two\n");
    assert_eq!(
        names(root.path()),
        sorted(vec![
            cache_name(&url, Some("\"one\"")),
            cache_name(&url, Some("\"two\"")),
            local.into()
        ])
    );
}

#[test]
fn without_an_etag_a_second_pull_replaces_the_cache_entry() {
    let server = ImageServer::new();
    let name = "sdimport-tartest-noetag.tar";
    let url = server.url(&format!("{DIR}/{name}"));
    let root = TempRoot::new();
    server.put_verified(DIR, name, &sample_tar("old"), None);
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=checksum", "pull-tar", &url, "-"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    server.put_verified(DIR, name, &sample_tar("new"), None);
    // Q10: the C tool failed here (a directory cannot be renamed over another).
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=checksum", "pull-tar", &url, "-"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(names(root.path()), [cache_name(&url, None)]);
    assert_eq!(
        os_release(&root.path().join(cache_name(&url, None))),
        "ID=new\n"
    );
}

#[test]
fn dash_or_empty_local_means_cache_only() {
    let server = ImageServer::new();
    let tar = sample_tar("nolocal");
    let url = serve(&server, "sdimport-tartest-nolocal.tar", &tar, None);
    for local in ["-", ""] {
        let root = TempRoot::new();
        let out = pull(
            &server,
            root.path(),
            None,
            &["--verify=no", "pull-tar", &url, local],
        );
        assert_eq!(out.status, 0, "{}", out.stderr);
        assert_eq!(out.stderr_lines[0], format!("Pulling '{url}'."));
        assert!(!out.stderr.contains("Created new local image"));
        assert_eq!(names(root.path()), [cache_name(&url, None)]);
    }
}

#[test]
fn an_existing_image_is_refused_without_force_and_replaced_with_it() {
    let server = ImageServer::new();
    let tar = sample_tar("forced");
    let url = serve(
        &server,
        "sdimport-tartest-force.tar.gz",
        &compress("gzip", &tar),
        None,
    );
    let root = TempRoot::new();
    let local = root.path().join("sdimport-tartest-force");
    fs::create_dir(&local).unwrap();
    fs::write(local.join("mine"), b"keep").unwrap();
    let before = names(root.path());

    // Q9: the image is only under --image-root, and still found.
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-tar", &url],
    );
    assert_eq!(out.status, 1);
    assert_eq!(
        out.stderr,
        format!("Image 'sdimport-tartest-force' already exists.\n")
    );
    assert_eq!(names(root.path()), before);
    assert!(server.http.requests().is_empty(), "nothing was downloaded");

    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "--force", "pull-tar", &url],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(!local.join("mine").exists());
    assert_tree(&local, &expected_tree(&tar));
    assert!(temporaries(root.path()).is_empty());
}

#[test]
fn an_invalid_local_name_is_refused_before_anything_is_fetched() {
    let server = ImageServer::new();
    let url = serve(&server, "x.tar", &sample_tar("x"), None);
    let root = TempRoot::new();
    for (local, expected) in [
        ("a..b", "Local image name 'a..b' is not valid."),
        (
            "host:port.tar.gz",
            "Local image name 'host:port' is not valid.",
        ),
        // Stripping leaves nothing: Q11 reports EINVAL, not "Out of memory.".
        (
            ".tar",
            "Failed to strip tar suffixes from '.tar': Invalid argument",
        ),
    ] {
        let out = pull(&server, root.path(), None, &["pull-tar", &url, local]);
        assert_eq!(out.status, 1, "{local}");
        assert_eq!(out.stderr, format!("{expected}\n"), "{local}");
    }
    assert!(server.http.requests().is_empty());
    assert!(names(root.path()).is_empty());
}

/// A root holding a good earlier pull (cache entry with ETag "good", local image), for
/// checking that failed pulls leave it alone.
struct Earlier {
    root: TempRoot,
    before: Vec<String>,
    local: &'static str,
}

fn earlier_pull(server: &ImageServer, name: &str) -> Earlier {
    let path = format!("{DIR}/{name}");
    server.put_verified(DIR, name, &sample_tar("good"), None);
    server.set_etag(&path, Some("\"good\""));
    let root = TempRoot::new();
    let local = "sdimport-tartest-fail";
    pull_ok(server, root.path(), &server.url(&path), local);
    let before = names(root.path());
    assert_eq!(before.len(), 2);
    Earlier {
        root,
        before,
        local,
    }
}

impl Earlier {
    /// Nothing new, nothing lost.
    fn assert_intact(&self, out: &CliOutput) {
        assert_failed_cleanly(out, self.root.path(), &self.before);
        assert_eq!(os_release(&self.root.path().join(self.local)), "ID=good\n");
    }
}

#[test]
fn a_bad_checksum_fails_and_keeps_nothing_of_the_download() {
    let server = ImageServer::new();
    let name = "sdimport-tartest-badsum.tar";
    let path = format!("{DIR}/{name}");
    let earlier = earlier_pull(&server, name);
    let url = server.url(&path);
    // A new image, but SHA256SUMS still lists the old one.
    let tar = sample_tar("evil");
    server.put(&path, tar.clone());
    server.set_etag(&path, Some("\"evil\""));
    let out = pull(
        &server,
        earlier.root.path(),
        None,
        &[
            "--verify=checksum",
            "--force",
            "pull-tar",
            &url,
            earlier.local,
        ],
    );
    assert_checksum_pull_log(
        &out,
        &url,
        Some(earlier.local),
        (tar.len(), 64 + 2 + name.len() + 1),
        &[
            "Checksum did not check out, payload has been tempered with.",
            "Exiting.",
        ],
    );
    earlier.assert_intact(&out);
}

#[test]
fn a_bad_signature_fails_and_keeps_nothing_of_the_download() {
    let server = ImageServer::new();
    let trusted = TestKey::generate("trusted");
    let forger = TestKey::generate("forger");
    let name = "sdimport-tartest-badsig.tar";
    let earlier = earlier_pull(&server, name);
    let path = format!("{DIR}/{name}");
    let url = server.url(&path);
    let tar = sample_tar("forged");
    let (sums_len, sig_len) = server.put_verified(DIR, name, &tar, Some(&forger));
    server.set_etag(&path, Some("\"forged\""));
    let out = pull(
        &server,
        earlier.root.path(),
        Some(&trusted),
        &["--force", "pull-tar", &url, earlier.local],
    );
    assert_log(
        &out,
        &[&format!("Pulling '{url}', saving as '{}'.", earlier.local)],
        &[
            download_lines(&url, tar.len()),
            download_lines(&server.url("/images/SHA256SUMS"), sums_len),
            download_lines(&server.url("/images/SHA256SUMS.gpg"), sig_len),
        ],
        &[
            &format!("SHA256 checksum of {url} is valid."),
            // gpg cannot find the forger's key in the keyring.
            "gpg failed with error code 2.",
            "Signature verification failed.",
            "Exiting.",
        ],
        true,
    );
    earlier.assert_intact(&out);
}

/// The lines of a failed run after "Pulling …", without those of the jobs that were still
/// running when the failure ended the pull (their progress is a race).
fn lines_without(out: &CliOutput, racing_urls: &[String]) -> Vec<String> {
    out.stderr_lines
        .iter()
        .skip(1)
        .filter(|l| !common::pull::is_progress_line(l))
        .filter(|l| {
            !racing_urls
                .iter()
                .any(|u| l.ends_with(&format!(" {u}.")) || l.ends_with(&format!("{u} complete.")))
        })
        .cloned()
        .collect()
}

#[test]
fn a_missing_sha256sums_fails_the_pull() {
    let server = ImageServer::new();
    let name = "sdimport-tartest-nosums.tar";
    let earlier = earlier_pull(&server, name);
    let url = server.url(&format!("{DIR}/{name}"));
    server.set_etag(&format!("{DIR}/{name}"), Some("\"new\""));
    server.remove("/images/SHA256SUMS");
    let sums = server.url("/images/SHA256SUMS");
    let out = pull(
        &server,
        earlier.root.path(),
        None,
        &[
            "--verify=checksum",
            "--force",
            "pull-tar",
            &url,
            earlier.local,
        ],
    );
    assert_eq!(
        lines_without(&out, &[url]),
        [
            format!("HTTP request to {sums} failed with code 404."),
            "Failed to retrieve SHA256 checksum, cannot verify. (Try --verify=no?)".into(),
            "Exiting.".into(),
        ],
        "{}",
        out.stderr
    );
    earlier.assert_intact(&out);
}

#[test]
fn a_missing_image_fails_the_pull() {
    let server = ImageServer::new();
    let root = TempRoot::new();
    let url = server.url("/images/sdimport-tartest-nothere.tar");
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-tar", &url],
    );
    assert_eq!(
        out.stderr_lines,
        [
            format!("Pulling '{url}', saving as 'sdimport-tartest-nothere'."),
            format!("HTTP request to {url} failed with code 404."),
            "Failed to retrieve image file. (Wrong URL?)".into(),
            "Exiting.".into(),
        ]
    );
    assert_failed_cleanly(&out, root.path(), &[]);
}

/// An `https` URL whose server speaks plain HTTP: the message names the URL and the cause,
/// and nothing about registries (pull-tar has no registries.conf).
#[test]
fn https_to_a_plain_http_server_names_the_url_and_the_cause() {
    let plain = common::http::HttpServer::start(None, |_: &common::http::Request| {
        common::http::Response::ok(b"not tls".to_vec())
    });
    let server = ImageServer::new();
    let root = TempRoot::new();
    let url = format!("https://{}/images/sdimport-tartest-plain.tar", plain.host());
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-tar", &url],
    );
    let line =
        format!("TLS handshake with {url} failed: the server does not speak TLS (plain HTTP?).");
    assert!(out.stderr_lines.contains(&line), "{}", out.stderr);
    assert!(!out.stderr.contains("registries.conf"), "{}", out.stderr);
    assert_failed_cleanly(&out, root.path(), &[]);
}

#[test]
fn a_truncated_body_fails_and_removes_the_partial_tree() {
    let server = ImageServer::new();
    let name = "sdimport-tartest-cut.tar";
    let earlier = earlier_pull(&server, name);
    let path = format!("{DIR}/{name}");
    let url = server.url(&path);
    let mut t = Tarball::new();
    t.file("./big", &vec![7u8; 256 << 10]);
    let tar = t.finish();
    server.put(&path, tar.clone());
    // A Content-Length promising more than comes, then an orderly close.
    let promised = tar.len() + 1000;
    server.shape(&path, move |r| {
        r.header("Content-Length", &promised.to_string())
            .header("Connection", "close")
    });
    let out = pull(
        &server,
        earlier.root.path(),
        None,
        &["--verify=no", "--force", "pull-tar", &url, earlier.local],
    );
    assert_eq!(
        lines_without(&out, &[]),
        [
            format!(
                "Downloading {} for {url}.",
                systemd_import::util::format::format_bytes(promised as u64)
            ),
            "Download truncated.".into(),
            "Failed to retrieve image file. (Wrong URL?)".into(),
            "Exiting.".into(),
        ]
    );
    earlier.assert_intact(&out);
}

/// Pull `t` with a `../escape` member appended (to the local image `local` if given):
/// the pull fails as a failed download does and leaves nothing, inside the root or out.
fn pull_hostile(mut t: Tarball, name: &str, local: Option<&str>) -> CliOutput {
    let server = ImageServer::new();
    let root = TempRoot::new();
    t.file("../escape", b"nope");
    let url = serve(&server, name, &t.finish(), None);
    let mut args = vec!["--verify=no", "pull-tar", &url];
    args.extend(local);
    let out = pull(&server, root.path(), None, &args);
    let n = out.stderr_lines.len();
    assert_eq!(
        out.stderr_lines[n - 2..],
        ["Failed to retrieve image file. (Wrong URL?)", "Exiting."]
    );
    assert_failed_cleanly(&out, root.path(), &[]);
    assert!(!root.path().parent().unwrap().join("escape").exists());
    out
}

#[test]
fn a_hostile_tarball_fails_the_pull() {
    let mut t = Tarball::new();
    t.file("./ok", b"fine");
    let out = pull_hostile(t, "sdimport-tartest-evil.tar", None);
    assert!(
        out.stderr_lines
            .iter()
            .any(|l| l.starts_with("Refusing to extract '../escape'")),
        "{}",
        out.stderr
    );
}

/// With a local name the hostile archive is refused by both unpackers (the cache entry's
/// and the local image's, made in the same pass off btrfs), said once, and nothing stays.
#[test]
fn a_hostile_tarball_with_a_local_name_is_refused_once_and_leaves_nothing() {
    let mut t = Tarball::new();
    for i in 0..64 {
        t.file(&format!("./f{i}"), &vec![i as u8; 64 << 10]);
    }
    let name = "sdimport-tartest-evil2";
    let out = pull_hostile(t, &format!("{name}.tar"), Some(name));
    let refused: Vec<_> = out
        .stderr_lines
        .iter()
        .filter(|l| l.contains("../escape"))
        .collect();
    assert_eq!(
        refused,
        ["Refusing to extract '../escape': member name contains '..'."],
        "{}",
        out.stderr
    );
}

/// Off btrfs (no snapshots, no shared extents on the test machines' ext4) the local image
/// is unpacked in the same pass as the cache entry, not copied from it afterwards: its
/// files are all born before the cache entry was moved into place (which changes the
/// entry's inode). The result is what a copy would be.
#[test]
fn off_btrfs_the_local_image_is_unpacked_with_the_cache_entry_not_copied() {
    let server = ImageServer::new();
    let root = TempRoot::new();
    assert!(!btrfs::is_fs_btrfs(open(root.path()).as_fd()).unwrap());
    let tar = sample_tar("onepass");
    let url = serve(&server, "sdimport-tartest-onepass.tar", &tar, None);
    let local = "sdimport-tartest-onepass";
    let out = pull(
        &server,
        root.path(),
        None,
        &["--verify=no", "pull-tar", &url, local],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stderr_lines
            .contains(&format!("Created new local image '{local}'.")),
        "{}",
        out.stderr
    );
    let cache = root.path().join(cache_name(&url, None));
    let image = root.path().join(local);
    let expected = expected_tree(&tar);
    assert_tree(&cache, &expected);
    assert_tree(&image, &expected);
    // The top: the cache entry's attributes, writable for the owner, as a copy's.
    let (cache_md, image_md) = (fs::metadata(&cache).unwrap(), fs::metadata(&image).unwrap());
    assert_eq!(cache_md.mode() & 0o7777, 0o555);
    assert_eq!(image_md.mode() & 0o7777, 0o755);
    assert_eq!(
        (image_md.mtime(), image_md.mtime_nsec()),
        (cache_md.mtime(), cache_md.mtime_nsec())
    );
    let installed = cache_md.ctime() as i128 * 1_000_000_000 + cache_md.ctime_nsec() as i128;
    let mut files = 0;
    for entry in fs::read_dir(image.join("etc")).unwrap() {
        let md = entry.unwrap().metadata().unwrap();
        let born = md.created().unwrap();
        let born = born
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        assert!(
            born < installed,
            "born {born}, cache entry installed {installed}"
        );
        files += 1;
    }
    assert!(files > 0);
}

/// Serve a tarball whose body stalls after its first 64 KiB, start pulling it, and wait
/// until the temporary tree exists in `root`.
fn start_stalled_pull(server: &ImageServer, root: &Path, name: &str) -> common::cli::Watched {
    let mut t = Tarball::new();
    for i in 0..16 {
        t.file(&format!("./f{i}"), &vec![i as u8 + 1; 64 << 10]);
    }
    let url = serve(server, name, &t.finish(), None);
    server.shape(&format!("{DIR}/{name}"), |r| {
        r.stall_after(64 << 10, Duration::from_secs(600))
    });
    let mut watch = DirWatch::new(root);
    let run = spawn_watch(&mut pull_cmd(
        server,
        root,
        None,
        &["--verify=no", "pull-tar", &url, "sdimport-tartest-sig"],
    ));
    watch.wait_for(
        libc::IN_CREATE,
        |n| n.starts_with(".#") && !common::pull::is_owner_lock(n),
        Duration::from_secs(60),
    );
    run
}

#[test]
fn sigint_during_the_download_leaves_nothing_behind() {
    signal_during_the_download_leaves_nothing_behind(Signal::SIGINT, "sdimport-tartest-sigint.tar");
}

/// SIGTERM off btrfs: the temporary directory (not a subvolume) goes.
#[test]
fn sigterm_during_the_download_leaves_nothing_behind() {
    signal_during_the_download_leaves_nothing_behind(
        Signal::SIGTERM,
        "sdimport-tartest-sigterm.tar",
    );
}

/// On the temporary root's file system (the root file system: ext4 on the test machines),
/// where the local image is unpacked in the same pass as the cache entry: both temporary
/// trees go.
fn signal_during_the_download_leaves_nothing_behind(signal: Signal, name: &str) {
    let server = ImageServer::new();
    let root = TempRoot::new();
    let run = start_stalled_pull(&server, root.path(), name);
    // The local image's tree is made right after the cache entry's.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while temporaries(root.path()).len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let temp = sorted(temporaries(root.path()));
    assert_eq!(temp.len(), 2, "{temp:?}");
    assert!(temp[0].starts_with(".#.tar-https:"), "{temp:?}");
    assert!(temp[1].starts_with(".#sdimport-tartest-sig"), "{temp:?}");
    assert!(temp.iter().all(|t| root.path().join(t).is_dir()));
    assert!(!btrfs::is_fs_btrfs(open(root.path()).as_fd()).unwrap());
    run.signal(signal);
    let out = run.wait();
    assert_aborted(&out);
    assert!(root.list_all().is_empty(), "{:?}", root.list_all());
}

#[test]
fn progress_reaches_systemd_importd_at_the_v219_milestones() {
    let server = ImageServer::new();
    let key = TestKey::generate("progress");
    let name = "sdimport-tartest-progress.tar";
    // About 3 s at 100 KiB/s, so the download share is sampled on the way.
    let mut t = Tarball::new();
    t.file("./data", &vec![1u8; 300 << 10]);
    let tar = t.finish();
    server.put_verified(DIR, name, &tar, Some(&key));
    let path = format!("{DIR}/{name}");
    server.shape(&path, |r| r.slow(100 << 10));
    server.set_etag(&path, Some("\"p\""));
    let url = server.url(&path);
    let root = TempRoot::new();
    let notify = NotifyListener::new();
    let mut cmd = pull_cmd(&server, root.path(), Some(&key), &["pull-tar", &url, "-"]);
    cmd.env("NOTIFY_SOCKET", notify.path());
    let out = run(&mut cmd);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let progress = notify.progress();
    assert!(
        progress.windows(2).all(|w| w[0] < w[1]),
        "sent once per value, rising: {progress:?}"
    );
    assert!(
        progress.iter().any(|p| (1..85).contains(p)),
        "the download share is reported: {progress:?}"
    );
    assert_eq!(progress[progress.len() - 3..], [85, 90, 95], "{progress:?}");
    assert!(
        out.stderr.contains(&format!("% of {url}.")),
        "{}",
        out.stderr
    );

    // A skipped download only copies.
    let notify = NotifyListener::new();
    let mut cmd = pull_cmd(&server, root.path(), Some(&key), &["pull-tar", &url, "-"]);
    cmd.env("NOTIFY_SOCKET", notify.path());
    let out = run(&mut cmd);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(notify.progress().last(), Some(&95));
    assert!(!notify.progress().contains(&90));
}

// ---------------------------------------------------------------------------------
// btrfs
// ---------------------------------------------------------------------------------

fn open(path: &Path) -> fs::File {
    fs::File::open(path).unwrap()
}

fn is_subvolume(path: &Path) -> bool {
    btrfs::is_subvolume(open(path).as_fd()).unwrap()
}

fn is_read_only_subvolume(path: &Path) -> bool {
    btrfs::subvol_get_read_only(open(path).as_fd()).unwrap()
}

#[test]
fn on_btrfs_the_cache_is_a_read_only_subvolume_and_the_image_a_writable_snapshot() {
    let fs_ = BtrfsMount::new();
    let root: PathBuf = fs_.path().join("machines");
    let server = ImageServer::new();
    let tar = sample_tar("btrfs");
    let name = "sdimport-tartest-btrfs.tar.zst";
    server.put_verified(DIR, name, &compress("zstd", &tar), None);
    let path = format!("{DIR}/{name}");
    let url = server.url(&path);
    let local = "sdimport-tartest-btrfs";
    // The root does not exist yet: it is made (0700 parents, as the C tool).
    let out = pull(
        &server,
        &root,
        None,
        &["--verify=checksum", "pull-tar", &url, local],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let cache = root.join(cache_name(&url, None));
    assert!(is_subvolume(&cache) && is_read_only_subvolume(&cache));
    let image = root.join(local);
    assert!(is_subvolume(&image) && !is_read_only_subvolume(&image));
    let expected = expected_tree(&tar);
    assert_tree(&cache, &expected);
    assert_tree(&image, &expected);
    // Subvolumes keep the tarball's mode on the top directory.
    assert_eq!(fs::metadata(&cache).unwrap().mode() & 0o7777, 0o755);
    fs::write(image.join("etc/new"), b"writable").unwrap();
    assert!(fs::write(cache.join("etc/new"), b"x").is_err());

    // Q10 on btrfs: the read-only subvolume is replaced; --force replaces the snapshot.
    server.put_verified(DIR, name, &compress("zstd", &sample_tar("again")), None);
    let out = pull(
        &server,
        &root,
        None,
        &["--verify=checksum", "--force", "pull-tar", &url, local],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(os_release(&cache), "ID=again\n");
    assert_eq!(os_release(&image), "ID=again\n");
    assert!(!image.join("etc/new").exists());
    assert!(is_read_only_subvolume(&cache) && !is_read_only_subvolume(&image));
    assert_eq!(
        names(&root),
        sorted(vec![cache_name(&url, None), local.into()])
    );
    assert_eq!(
        fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

/// Whether every extent of `path` is shared with another file (FIEMAP, after a sync).
fn all_extents_shared(path: &Path) -> bool {
    let extents = fiemap(path);
    !extents.is_empty() && extents.iter().all(|e| e.flags & FIEMAP_EXTENT_SHARED != 0)
}

/// Issue 15: on btrfs the local image costs no second pass over the data. With the cache
/// kept, the image is a snapshot of the cache entry (its data shared, not written again);
/// with `--keep-download=no` the tarball is extracted once, straight into the tree that
/// becomes the image (no cache entry, nothing shares its data).
#[test]
fn on_btrfs_the_local_image_is_never_a_second_copy_of_the_data() {
    let fs_ = BtrfsMount::new();
    let root: PathBuf = fs_.path().join("machines");
    let server = ImageServer::new();
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let tar = Tarball::new()
        .dir("usr/")
        .file("usr/data.bin", &data)
        .finish();
    server.put(&format!("{DIR}/big.tar.gz"), compress("gzip", &tar));
    let url = server.url(&format!("{DIR}/big.tar.gz"));

    let out = pull(
        &server,
        &root,
        None,
        &["--verify=no", "pull-tar", &url, "kept"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    let cache = root.join(cache_name(&url, None));
    assert_eq!(fs::read(root.join("kept/usr/data.bin")).unwrap(), data);
    assert!(
        all_extents_shared(&root.join("kept/usr/data.bin")),
        "the local image shares the cache entry's data"
    );
    assert!(all_extents_shared(&cache.join("usr/data.bin")));

    let out = run(common::cli::systemd_pull()
        .arg(format!("--image-root={}", root.display()))
        .args(["--verify=no", "--keep-download=no", "tar", &url, "once"])
        .env("SSL_CERT_FILE", server.ca.ca_pem_path()));
    assert_eq!(out.status, 0, "{}", out.stderr);
    let image = root.join("once");
    assert!(is_subvolume(&image) && !is_read_only_subvolume(&image));
    assert_eq!(fs::read(image.join("usr/data.bin")).unwrap(), data);
    assert!(
        fiemap(&image.join("usr/data.bin"))
            .iter()
            .all(|e| e.flags & FIEMAP_EXTENT_SHARED == 0),
        "extracted once: nothing else holds the data"
    );
    assert_eq!(
        names(&root),
        sorted(vec![cache_name(&url, None), "kept".into(), "once".into()])
    );
}

#[test]
fn on_btrfs_sigint_removes_the_temporary_subvolume() {
    let fs_ = BtrfsMount::new();
    let root = fs_.path().join("machines");
    fs::create_dir(&root).unwrap();
    let server = ImageServer::new();
    let run = start_stalled_pull(&server, &root, "sdimport-tartest-btrfs-sigint.tar");
    let temp = temporaries(&root);
    assert_eq!(temp.len(), 1);
    assert!(is_subvolume(&root.join(&temp[0])));
    run.signal(Signal::SIGTERM);
    let out = run.wait();
    assert_aborted(&out);
    assert!(names(&root).is_empty(), "{:?}", names(&root));
}

#[test]
fn a_missing_signature_fails_the_pull() {
    let server = ImageServer::new();
    let key = TestKey::generate("nosig");
    let name = "sdimport-tartest-nosig.tar";
    server.put_verified(DIR, name, &sample_tar("nosig"), None);
    let url = server.url(&format!("{DIR}/{name}"));
    let sums = server.url("/images/SHA256SUMS");
    let sig = server.url("/images/SHA256SUMS.gpg");
    let root = TempRoot::new();
    let out = pull(&server, root.path(), Some(&key), &["pull-tar", &url, "-"]);
    assert_eq!(
        lines_without(&out, &[url, sums]),
        [
            format!("HTTP request to {sig} failed with code 404."),
            "Failed to retrieve signature file, cannot verify. (Try --verify=no?)".into(),
            "Exiting.".into(),
        ],
        "{}",
        out.stderr
    );
    assert_failed_cleanly(&out, root.path(), &[]);
}

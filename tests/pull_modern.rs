//! What systemd-pull's options do, beyond what tests/pull_differential.rs compares file
//! by file with Debian's 252:
//!
//! * `--sync=`: which flushes happen, counted with strace, for ours and Debian's alike;
//! * `--direct` into a block device (a loop device), with and without `--offset=`, the
//!   same as Debian's, and a missing `--offset=` target;
//! * `--class=` and `--keep-download=` (systemd 256, which Debian 12 lacks): which files
//!   appear under which image root, as documented (modern-systemd.md §1.2, §1.6).
//!
//! Needs root, strace, util-linux (unshare, losetup) and Debian's systemd-container.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::cli::TempRoot;
use common::http::{HttpServer, Response};

const DEBIAN_PULL: &str = "/lib/systemd/systemd-pull";

/// A plain-HTTP server of fixed files that counts the bodies it sent per path.
struct Files {
    server: HttpServer,
    bodies: Arc<Mutex<HashMap<String, usize>>>,
}

impl Files {
    fn serve(files: Vec<(&str, Vec<u8>)>) -> Files {
        let files: HashMap<String, Vec<u8>> = files
            .into_iter()
            .map(|(n, c)| (format!("/{n}"), c))
            .collect();
        let bodies: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counted = Arc::clone(&bodies);
        let server = HttpServer::start(None, move |req| match files.get(&req.path) {
            Some(body) => {
                *counted.lock().unwrap().entry(req.path.clone()).or_default() += 1;
                Response::ok(body.clone())
            }
            None => Response::not_found(),
        });
        Files { server, bodies }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.server.base_url())
    }

    fn bodies(&self, name: &str) -> usize {
        let bodies = self.bodies.lock().unwrap();
        bodies.get(&format!("/{name}")).copied().unwrap_or(0)
    }
}

fn os_tree_tar() -> Vec<u8> {
    common::tarball::Tarball::new()
        .dir("etc")
        .file("etc/os-release", b"ID=modern\n")
        .file("etc/data", &[3u8; 5000])
        .finish()
}

/// A disk image with data, a long run of zeros and data again.
fn disk_image() -> Vec<u8> {
    let mut disk = vec![0u8; 300_000];
    disk[..5000].fill(b'X');
    disk[250_000..].fill(b'Y');
    disk
}

/// Run Debian's systemd-pull (`debian`) or ours as `systemd-pull`, under `prefix`
/// (strace, env …), with `args`. Debian's can hang when two downloads complete in one
/// event (spec §9 Q1): it gets a timeout and up to six tries.
fn pull(debian: bool, prefix: &[&str], args: &[&str]) -> Output {
    if !debian {
        return run_with_prefix(prefix, args);
    }
    for _ in 0..6 {
        let mut cmd = common::cli::program(prefix.first().copied().unwrap_or("env"));
        cmd.args(prefix.iter().skip(1))
            .args(["timeout", "15", DEBIAN_PULL])
            .args(args);
        let out = cmd.output().unwrap();
        if out.status.code() != Some(124) {
            return out;
        }
        eprintln!("Debian's systemd-pull hung (Q1), retrying");
    }
    panic!("Debian's systemd-pull hung six times: {args:?}");
}

/// Run ours as `systemd-pull` under `prefix` (strace, env …).
fn run_with_prefix(prefix: &[&str], args: &[&str]) -> Output {
    let mut cmd = common::cli::program(prefix.first().copied().unwrap_or("env"));
    cmd.args(prefix.iter().skip(1))
        .args([
            "bash",
            "-c",
            r#"exec -a /usr/lib/systemd/systemd-pull "$@""#,
            "bash",
        ])
        .arg(env!("CARGO_BIN_EXE_systemd-import"))
        .args(args);
    cmd.output().unwrap()
}

fn stderr_lines(out: &Output) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !(l.starts_with("Got ") && l.contains("% of ")))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The flushing system calls a run made, as strace logged them to `log`.
fn syncs(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| {
            let call = l.split_whitespace().nth(1).unwrap_or("");
            [
                "fsync(",
                "fdatasync(",
                "syncfs(",
                "sync(",
                "sync_file_range(",
            ]
            .iter()
            .any(|c| call.starts_with(c))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn sync_yes_flushes_before_success_and_sync_no_never_flushes() {
    assert!(
        Path::new(DEBIAN_PULL).exists(),
        "apt-get install systemd-container"
    );
    let files = Files::serve(vec![("img.tar", os_tree_tar()), ("disk.raw", disk_image())]);
    let (tar, raw) = (files.url("img.tar"), files.url("disk.raw"));
    let cases: [(&str, &[&str], bool); 6] = [
        ("tar", &["--sync=yes", "tar", &tar, "t"], true),
        ("tar --sync=no", &["--sync=no", "tar", &tar, "t"], false),
        ("raw", &["raw", &raw, "r"], true),
        ("raw --sync=no", &["--sync=no", "raw", &raw, "r"], false),
        ("raw --direct", &["--direct", "raw", &raw, "d"], true),
        (
            "raw --direct --sync=no",
            &["--sync=no", "--direct", "raw", &raw, "d"],
            false,
        ),
    ];
    for debian in [true, false] {
        for (what, args, synced) in &cases {
            let dir = TempRoot::new();
            let root = format!("--image-root={}", dir.path().join("root").display());
            let log = dir.path().join("strace.log");
            let log_arg = log.to_str().unwrap();
            let mut all = vec!["--verify=no", root.as_str()];
            all.extend_from_slice(args);
            let strace = [
                "strace",
                "-f",
                "-qq",
                "-e",
                "trace=fsync,fdatasync,syncfs,sync,sync_file_range",
                "-o",
                log_arg,
            ];
            let out = pull(debian, &strace, &all);
            let who = if debian { "Debian" } else { "ours" };
            assert_eq!(out.status.code(), Some(0), "{who} {what}: {out:?}");
            let calls = syncs(&log);
            assert_eq!(!calls.is_empty(), *synced, "{who} {what}: {calls:?}");
            let said = String::from_utf8_lossy(&out.stderr)
                .contains("File system synchronization on completion is off.");
            assert_eq!(said, !synced, "{who} {what}");
        }
    }
    // $SYSTEMD_IMPORT_SYNC=0 is the default the option overrides.
    for (option, synced) in [(None, false), (Some("--sync=yes"), true)] {
        let dir = TempRoot::new();
        let root = format!("--image-root={}", dir.path().display());
        let log = dir.path().join("strace.log");
        let mut args = vec!["--verify=no", root.as_str()];
        args.extend(option);
        args.extend(["raw", raw.as_str(), "r"]);
        let strace = [
            "env",
            "SYSTEMD_IMPORT_SYNC=0",
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=fsync,fdatasync,syncfs,sync",
            "-o",
            log.to_str().unwrap(),
        ];
        let out = run_with_prefix(&strace, &args);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(!syncs(&log).is_empty(), synced, "{option:?}");
    }
}

/// A loop device over a file of `size` bytes of `fill`; detached when dropped.
struct LoopDevice {
    device: String,
    _file: tempfile::NamedTempFile,
}

impl LoopDevice {
    fn new(size: usize, fill: u8) -> LoopDevice {
        let file = tempfile::Builder::new()
            .prefix("systemd-import-direct-")
            .tempfile_in("/var/tmp")
            .unwrap();
        fs::write(file.path(), vec![fill; size]).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        LoopDevice {
            device,
            _file: file,
        }
    }

    fn fill(&self, size: usize, fill: u8) {
        fs::write(&self.device, vec![fill; size]).unwrap();
    }

    fn content(&self) -> Vec<u8> {
        fs::read(&self.device).unwrap()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

#[test]
fn direct_writes_a_block_device_in_place_as_debian_does() {
    assert!(
        Path::new(DEBIAN_PULL).exists(),
        "apt-get install systemd-container"
    );
    const SIZE: usize = 1 << 20;
    let disk = disk_image();
    let xz = {
        use std::io::Write;
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(&disk).unwrap();
        e.finish().unwrap()
    };
    let files = Files::serve(vec![("disk.raw.xz", xz)]);
    let url = files.url("disk.raw.xz");
    let dev = LoopDevice::new(SIZE, b'B');
    let root = TempRoot::new();
    let root_arg = format!("--image-root={}", root.path().display());
    for offset in [None, Some(8192usize)] {
        let offset_arg = offset.map(|o| format!("--offset={o}"));
        let mut args = vec!["--verify=no", root_arg.as_str(), "--direct"];
        args.extend(offset_arg.as_deref());
        args.extend(["raw", url.as_str(), dev.device.as_str()]);
        let mut results = Vec::new();
        for debian in [true, false] {
            dev.fill(SIZE, b'B');
            let out = pull(debian, &[], &args);
            assert_eq!(out.status.code(), Some(0), "debian={debian}: {out:?}");
            results.push((stderr_lines(&out), dev.content()));
        }
        assert_eq!(results[0].0, results[1].0, "messages, offset {offset:?}");
        assert!(
            results[0].1 == results[1].1,
            "device content, offset {offset:?}"
        );
        // The image at the offset, zeros written (a device has no holes), the rest kept.
        let start = offset.unwrap_or(0);
        let content = &results[1].1;
        assert!(content[..start].iter().all(|&b| b == b'B'));
        assert!(content[start..start + disk.len()] == disk[..]);
        assert!(content[start + disk.len()..].iter().all(|&b| b == b'B'));
        assert!(fs::read_dir(root.path()).unwrap().next().is_none());
    }
}

#[test]
fn direct_at_an_offset_needs_an_existing_file_and_size_max_bounds_it() {
    let files = Files::serve(vec![("disk.raw", disk_image())]);
    let url = files.url("disk.raw");
    let root = TempRoot::new();
    let root_arg = format!("--image-root={}", root.path().display());
    let out = run_with_prefix(
        &[],
        &[
            "--verify=no",
            &root_arg,
            "--direct",
            "--offset=10",
            "raw",
            &url,
            "vm",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let target = root.path().join("vm");
    assert!(
        stderr.contains(&format!(
            "Failed to open destination '{}': No such file or directory",
            target.display()
        )),
        "{stderr}"
    );
    assert!(!target.exists());
    assert_eq!(files.bodies("disk.raw"), 0, "nothing downloaded");

    // --size-max: a larger image fails the pull.
    let out = run_with_prefix(
        &[],
        &[
            "--verify=no",
            &root_arg,
            "--direct",
            "--size-max=1000",
            "raw",
            &url,
            "vm",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("File overly large, refusing."), "{stderr}");
    // Within the bound it is written whole.
    let out = run_with_prefix(
        &[],
        &[
            "--verify=no",
            &root_arg,
            "--direct",
            "--size-max=300000",
            "raw",
            &url,
            "vm",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(fs::read(&target).unwrap() == disk_image());
}

/// `ls -A` of a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The class roots (`/var/lib/machines` …), made in a temporary directory bound over
/// `/var/lib` in each run's private mount namespace.
struct ClassRoots {
    var_lib: tempfile::TempDir,
}

impl ClassRoots {
    const DIRS: [&'static str; 4] = ["machines", "portables", "extensions", "confexts"];

    fn new() -> ClassRoots {
        let var_lib = tempfile::tempdir().unwrap();
        for d in Self::DIRS {
            fs::create_dir(var_lib.path().join(d)).unwrap();
        }
        ClassRoots { var_lib }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.var_lib.path().join(name)
    }

    /// Empty every root (immutable cache trees included).
    fn clear(&self) {
        for d in Self::DIRS {
            for e in fs::read_dir(self.dir(d)).unwrap() {
                systemd_import::util::fs::rm_rf(&e.unwrap().path()).unwrap();
            }
        }
    }

    /// Pull with ours, run as systemd-pull in a namespace where these are the roots.
    fn pull(&self, args: &[&str]) -> Output {
        let mut cmd = common::cli::program("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "bash", "-c"])
            .arg(r#"mount --bind "$1" /var/lib && shift && exec -a /usr/lib/systemd/systemd-pull "$@""#)
            .arg("bash")
            .arg(self.var_lib.path())
            .arg(env!("CARGO_BIN_EXE_systemd-import"))
            .args(args);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        out
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn immutable(path: &Path) -> bool {
    let out = Command::new("lsattr").arg("-d").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .contains('i')
}

#[test]
fn class_and_keep_download_decide_the_root_and_what_stays_there() {
    let nspawn = b"[Exec]\nBoot=yes\n".to_vec();
    let files = Files::serve(vec![
        ("img.tar", os_tree_tar()),
        ("img.nspawn", nspawn.clone()),
        ("disk.raw", disk_image()),
        ("disk.nspawn", nspawn.clone()),
        ("disk.roothash", b"abcd\n".to_vec()),
        ("disk.verity", vec![5u8; 4096]),
    ]);
    let (tar, raw) = (files.url("img.tar"), files.url("disk.raw"));
    let roots = ClassRoots::new();
    let cache_tar = |names: &[String]| names.iter().filter(|n| n.starts_with(".tar-")).count();
    let cache_raw = |names: &[String]| names.iter().filter(|n| n.starts_with(".raw-")).count();

    // machine (the default): keep-download and settings on; a read-only cache entry with
    // its side files, and the local copies, in /var/lib/machines.
    roots.pull(&["--verify=no", "tar", &tar, "box"]);
    let machines = roots.dir("machines");
    let listed = names(&machines);
    assert_eq!(cache_tar(&listed), 2, "tree and .nspawn: {listed:?}");
    assert!(listed.contains(&"box".into()) && listed.contains(&"box.nspawn".into()));
    let entry = listed
        .iter()
        .find(|n| n.starts_with(".tar-") && !n.ends_with(".nspawn"));
    assert!(immutable(&machines.join(entry.unwrap())));
    assert!(!immutable(&machines.join("box")));
    assert_eq!(fs::read(machines.join("box.nspawn")).unwrap(), nspawn);
    roots.pull(&["--verify=no", "raw", &raw, "vm"]);
    let listed = names(&machines);
    for suffix in [".raw", ".nspawn", ".roothash", ".verity"] {
        assert!(
            listed.contains(&format!("vm{suffix}")),
            "{suffix}: {listed:?}"
        );
        let cached = listed
            .iter()
            .find(|n| n.starts_with(".raw-") && n.ends_with(suffix))
            .unwrap_or_else(|| panic!("cached {suffix}: {listed:?}"));
        assert_eq!(mode(&machines.join(cached)), 0o444, "{cached}");
    }
    assert_eq!(cache_raw(&listed), 4, "{listed:?}");
    for d in ["portables", "extensions", "confexts"] {
        assert!(names(&roots.dir(d)).is_empty(), "{d}");
    }
    roots.clear();

    // machine, --keep-download=no: the download becomes the image; nothing cached, so the
    // next pull downloads again.
    let before = files.bodies("img.tar");
    for name in ["one", "two"] {
        roots.pull(&["--verify=no", "--keep-download=no", "tar", &tar, name]);
    }
    assert_eq!(files.bodies("img.tar"), before + 2);
    assert_eq!(names(&machines), ["one", "one.nspawn", "two", "two.nspawn"]);
    assert!(!immutable(&machines.join("one")));
    roots.clear();

    // portable (keep-download and settings off by default): only the image and the raw
    // side files that are not settings, in /var/lib/portables.
    roots.pull(&["--verify=no", "--class=portable", "tar", &tar, "svc"]);
    roots.pull(&["--verify=no", "--class=portable", "raw", &raw, "app"]);
    assert_eq!(
        names(&roots.dir("portables")),
        ["app.raw", "app.roothash", "app.verity", "svc"]
    );
    assert_eq!(mode(&roots.dir("portables").join("app.raw")) & 0o200, 0o200);
    assert!(names(&machines).is_empty());
    roots.clear();

    // sysext with --keep-download=yes --read-only: a read-only cache entry and a
    // read-only image in /var/lib/extensions.
    roots.pull(&[
        "--verify=no",
        "--class=sysext",
        "--keep-download=yes",
        "--read-only",
        "raw",
        &raw,
        "ext",
    ]);
    let extensions = roots.dir("extensions");
    let listed = names(&extensions);
    assert_eq!(
        cache_raw(&listed),
        3,
        "image, .roothash, .verity: {listed:?}"
    );
    assert!(listed.contains(&"ext.raw".into()), "{listed:?}");
    assert_eq!(mode(&extensions.join("ext.raw")), 0o444);
    assert!(!listed.iter().any(|n| n.ends_with(".nspawn")), "{listed:?}");
    roots.clear();

    // confext without a local name: the download stays as a writable cache entry in
    // /var/lib/confexts (nothing else would keep it).
    roots.pull(&["--verify=no", "--class=confext", "tar", &tar, "-"]);
    let confexts = roots.dir("confexts");
    let listed = names(&confexts);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].starts_with(".tar-"));
    assert!(!immutable(&confexts.join(&listed[0])));
    assert_eq!(
        fs::symlink_metadata(confexts.join(&listed[0]))
            .unwrap()
            .mode()
            & 0o200,
        0o200
    );
    roots.clear();
}

/// What a pull made under `root`, with the cache entries' names (they contain the URL),
/// times and the `user.source_url` xattrs (the URL itself) left out, contents digested.
fn made(root: &Path) -> Vec<String> {
    common::btrfs::describe_tree(root)
        .into_iter()
        .filter(|(rel, _)| !rel.as_os_str().is_empty())
        .map(|(rel, mut d)| {
            // Where it came from, and the file's time (http: none; file: the file's).
            d.xattrs.remove("user.source_url");
            d.xattrs.remove("user.crtime_usec");
            d.mtime = (0, 0);
            d.atime = (0, 0);
            let digest = d.content.take().map(|c| {
                use sha2::{Digest, Sha256};
                Sha256::digest(c)
            });
            let name = rel.to_string_lossy().into_owned();
            let name = match name.split_once('/') {
                Some((top, rest)) if top.starts_with(".tar-") => format!("CACHE/{rest}"),
                _ if name.starts_with(".tar-") => "CACHE".into(),
                _ if name.starts_with(".raw-") => {
                    format!("CACHE{}", &name[name.rfind('.').unwrap()..])
                }
                _ => name,
            };
            format!("{name}: {d:?} {digest:x?}")
        })
        .collect()
}

#[test]
fn file_urls_pull_as_http_urls_do() {
    let tar = os_tree_tar();
    let disk = disk_image();
    let sums = |name: &str, data: &[u8]| {
        use sha2::{Digest, Sha256};
        let hex: String = Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{hex}  {name}\n").into_bytes()
    };
    let served = vec![
        ("img.tar", tar.clone()),
        ("img.tar.sha256", sums("img.tar", &tar)),
        ("disk.raw", disk.clone()),
        // No disk.raw.sha256: SHA256SUMS after it is found missing, as after a 404.
        ("SHA256SUMS", sums("disk.raw", &disk)),
    ];
    let dir = TempRoot::new();
    let files_dir = dir.path().join("files");
    fs::create_dir(&files_dir).unwrap();
    for (name, content) in &served {
        fs::write(files_dir.join(name), content).unwrap();
    }
    let http = Files::serve(served.clone());
    let file_url = |name: &str| format!("file://{}/{name}", files_dir.display());
    let mut results = Vec::new();
    let http_url = |name: &str| http.url(name);
    type UrlOf<'a> = &'a dyn Fn(&str) -> String;
    let schemes: [(&str, UrlOf); 2] = [("http", &http_url), ("file", &file_url)];
    for (scheme, url) in schemes {
        let root = dir.path().join(scheme);
        let root_arg = format!("--image-root={}", root.display());
        for (verb, name, local) in [("tar", "img.tar", "foo"), ("raw", "disk.raw", "vm")] {
            let out = run_with_prefix(
                &[],
                &["--verify=checksum", &root_arg, verb, &url(name), local],
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{scheme} {verb}: {stderr}");
            assert!(
                stderr.contains(&format!("SHA256 checksum of {} is valid.", url(name))),
                "{stderr}"
            );
        }
        results.push(made(&root));
    }
    assert_eq!(results[0], results[1]);
    assert!(results[1]
        .iter()
        .any(|l| l.starts_with("foo/etc/os-release")));
    assert!(results[1].iter().any(|l| l.starts_with("vm.raw")));

    // A missing file fails the pull as a missing http file does.
    let root = dir.path().join("missing");
    let out = run_with_prefix(
        &[],
        &[
            "--verify=no",
            &format!("--image-root={}", root.display()),
            "raw",
            &file_url("nothere.raw"),
            "vm",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Failed to retrieve image file."),
        "{stderr}"
    );
    assert!(
        names(&root).iter().all(|n| n.starts_with(".#")),
        "{:?}",
        names(&root)
    );
}

#[test]
fn btrfs_quota_puts_each_new_subvolume_in_its_own_group_as_debian_does() {
    assert!(
        Path::new(DEBIAN_PULL).exists(),
        "apt-get install systemd-container"
    );
    let fs = common::btrfs::BtrfsMount::new();
    let enabled = Command::new("btrfs")
        .args(["quota", "enable"])
        .arg(fs.path())
        .status()
        .unwrap();
    assert!(enabled.success());
    let files = Files::serve(vec![("img.tar", os_tree_tar())]);
    let url = files.url("img.tar");
    for debian in [true, false] {
        for quota in [true, false] {
            let root = fs.path().join(format!("{debian}-{quota}"));
            let root_arg = format!("--image-root={}", root.display());
            let mut args = vec!["--verify=no", "--settings=no", root_arg.as_str()];
            if !quota {
                args.push("--btrfs-quota=no");
            }
            args.extend(["tar", url.as_str(), "quotatest"]);
            let out = pull(debian, &[], &args);
            let who = if debian { "Debian" } else { "ours" };
            assert_eq!(out.status.code(), Some(0), "{who}: {out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("quota hierarchy"), "{who}: {stderr}");
            let listed = names(&root);
            let cache = listed.iter().find(|n| n.starts_with(".tar-")).unwrap();
            for entry in [cache.as_str(), "quotatest"] {
                let path = root.join(entry);
                let expected = common::btrfs::expected_parent_qgroup(&path, quota);
                assert_eq!(
                    common::btrfs::parent_qgroup(fs.path(), &path),
                    expected,
                    "{who}, quota {quota}: {entry}"
                );
            }
            for e in fs::read_dir(&root).unwrap() {
                systemd_import::util::fs::rm_rf(&e.unwrap().path()).unwrap();
            }
        }
    }
}

//! Our systemd-importd's `PullTarEx`/`PullRawEx` end to end with the real worker run as
//! `systemd-pull` (as installed): the daemon passes `--read-only`, `--keep-download=` and
//! `--class=`, and the worker acts on them: a read-only local tree is immutable (off
//! btrfs), a read-only raw image has no write bits, `--keep-download=no` (class machine
//! without the keep-download flag) leaves no cache entry, the keep-download flag keeps
//! one, and class `portable` pulls into /var/lib/portables (a temporary directory bound
//! over it in the daemon's namespace).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::importd::{start_pull, Importd, Options, SignalRecorder};
use common::pull::ImageServer;
use common::tarball::Tarball;

const FLAG_READ_ONLY: u64 = 2;
const FLAG_KEEP_DOWNLOAD: u64 = 4;

/// Our binary under the name `systemd-pull` (a symlink), as `SYSTEMD_PULL_PATH`.
fn pull_worker() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("systemd-pull");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_systemd-import"), &link).unwrap();
    (dir, link)
}

fn lsattr(path: &Path) -> String {
    let out = Command::new("lsattr").arg("-d").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn clear_immutable(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let _ = systemd_import::util::fs::rm_rf(&e.unwrap().path());
    }
}

#[test]
fn pull_ex_flags_reach_the_worker_and_take_effect() {
    let server = ImageServer::new();
    let tar = Tarball::new()
        .dir("./")
        .dir("etc/")
        .file("etc/os-release", b"ID=ex\n")
        .finish();
    server.put("/img/demo.tar", tar);
    server.put("/img/disk.raw", vec![0x5a; 65536]);
    let (_worker_dir, worker) = pull_worker();
    let portables = tempfile::tempdir().unwrap();
    assert!(
        Path::new("/var/lib/portables").is_dir(),
        "/var/lib/portables to bind over"
    );
    let mut opts = Options::trusting(&server.ca.ca_pem_path()).worker(&worker);
    opts.binds.push((
        portables.path().to_path_buf(),
        PathBuf::from("/var/lib/portables"),
    ));
    let d = Importd::start(opts);
    let signals = SignalRecorder::start(&d.bus);
    let conn = d.connect();
    let machines = d.machines.path().to_path_buf();

    // Class machine, read-only, keep-download: a cache entry and an immutable local tree.
    let url = server.url("/img/demo.tar");
    let (id, _) = start_pull(
        &conn,
        "PullTarEx",
        (
            url.as_str(),
            "ro",
            "machine",
            "no",
            FLAG_READ_ONLY | FLAG_KEEP_DOWNLOAD,
        ),
    );
    assert_eq!(signals.removed(id), "done", "{:?}", d.log());
    assert!(
        lsattr(&machines.join("ro")).contains('i'),
        "{}",
        lsattr(&machines.join("ro"))
    );
    assert!(
        names(&machines).iter().any(|n| n.starts_with(".tar-")),
        "{:?}",
        names(&machines)
    );
    clear_immutable(&machines);

    // Class machine without keep-download: the download becomes the local image.
    let (id, _) = start_pull(
        &conn,
        "PullTarEx",
        (url.as_str(), "moved", "machine", "no", 0u64),
    );
    assert_eq!(signals.removed(id), "done", "{:?}", d.log());
    assert_eq!(names(&machines), ["moved"]);
    assert_eq!(
        std::fs::read_to_string(machines.join("moved/etc/os-release")).unwrap(),
        "ID=ex\n"
    );
    clear_immutable(&machines);

    // A read-only raw image, class portable: into /var/lib/portables, no cache there
    // (portable's keep-download default is no).
    let url = server.url("/img/disk.raw");
    let (id, _) = start_pull(
        &conn,
        "PullRawEx",
        (url.as_str(), "disk", "portable", "no", FLAG_READ_ONLY),
    );
    assert_eq!(signals.removed(id), "done", "{:?}", d.log());
    assert_eq!(names(portables.path()), ["disk.raw"]);
    let mode = std::fs::metadata(portables.path().join("disk.raw"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0, "{mode:o}");
    assert!(names(&machines).is_empty(), "{:?}", names(&machines));

    // With keep-download, class portable keeps the read-only cache entry.
    let (id, _) = start_pull(
        &conn,
        "PullRawEx",
        (url.as_str(), "kept", "portable", "no", FLAG_KEEP_DOWNLOAD),
    );
    assert_eq!(signals.removed(id), "done", "{:?}", d.log());
    let listed = names(portables.path());
    assert!(listed.iter().any(|n| n.starts_with(".raw-")), "{listed:?}");
    assert!(listed.contains(&"kept.raw".to_string()), "{listed:?}");
    let mode = std::fs::metadata(portables.path().join("kept.raw"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "{mode:o}");
}

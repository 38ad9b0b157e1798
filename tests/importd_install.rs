//! The install step (`scripts/install.sh`) and the installed pair in place of systemd's:
//! the files land at systemd's paths under DESTDIR; then, in a mount namespace where the
//! installed daemon and worker are bind-mounted over Debian's own
//! `/usr/lib/systemd/systemd-importd` and `systemd-pull`, the daemon started by its
//! installed path (no `SYSTEMD_PULL_PATH`) with the installed D-Bus policy serves Debian
//! 12's `machinectl pull-tar`, `list-transfers` and `cancel-transfer`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::importd::{Importd, Options, PATIENCE};
use common::pull::ImageServer;
use common::tarball::Tarball;

fn install(destdir: &Path, prefix: &str) {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_systemd-importd"))
        .parent()
        .unwrap();
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh"))
        .arg("--no-build")
        .env("DESTDIR", destdir)
        .env("PREFIX", prefix)
        .env("BIN_DIR", bin_dir)
        .output()
        .expect("install.sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn data(name: &str) -> Vec<u8> {
    std::fs::read(common::dbus::data_dir().join(name)).unwrap()
}

#[test]
fn the_install_step_puts_every_file_where_systemd_has_it() {
    let dest = tempfile::tempdir().unwrap();
    install(dest.path(), "/usr");
    let at = |p: &str| dest.path().join(p.trim_start_matches('/'));
    for bin in [
        "systemd-pull",
        "systemd-import",
        "systemd-import-fs",
        "systemd-export",
        "systemd-importd",
    ] {
        assert_eq!(
            mode(&at(&format!("/usr/lib/systemd/{bin}"))),
            0o755,
            "{bin}"
        );
    }
    assert_eq!(mode(&at("/usr/bin/importctl")), 0o755);
    assert_eq!(
        std::fs::read(at("/usr/bin/importctl")).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_importctl")).unwrap()
    );
    let worker = std::fs::read(env!("CARGO_BIN_EXE_systemd-import")).unwrap();
    assert_eq!(
        std::fs::read(at("/usr/lib/systemd/systemd-pull")).unwrap(),
        worker
    );
    assert_eq!(
        std::fs::read(at("/usr/lib/systemd/systemd-import")).unwrap(),
        worker
    );
    for (path, name) in [
        (
            "/usr/lib/systemd/system/systemd-importd.service",
            "systemd-importd.service",
        ),
        (
            "/usr/share/dbus-1/system-services/org.freedesktop.import1.service",
            "org.freedesktop.import1.service",
        ),
        (
            "/usr/share/dbus-1/system.d/org.freedesktop.import1.conf",
            "org.freedesktop.import1.conf",
        ),
        (
            "/usr/share/polkit-1/actions/org.freedesktop.import1.policy",
            "org.freedesktop.import1.policy",
        ),
    ] {
        assert_eq!(std::fs::read(at(path)).unwrap(), data(name), "{path}");
        assert_eq!(mode(&at(path)), 0o644, "{path}");
    }
    let alias = at("/usr/lib/systemd/system/dbus-org.freedesktop.import1.service");
    assert_eq!(
        std::fs::read_link(alias).unwrap(),
        Path::new("systemd-importd.service")
    );

    // Another prefix: the unit runs the daemon from there and points it at the worker.
    let dest = tempfile::tempdir().unwrap();
    install(dest.path(), "/opt/sd");
    let unit = std::fs::read_to_string(
        dest.path()
            .join("opt/sd/lib/systemd/system/systemd-importd.service"),
    )
    .unwrap();
    assert!(unit.contains("\nExecStart=/opt/sd/lib/systemd/systemd-importd\n"));
    assert!(unit.contains("\nEnvironment=SYSTEMD_PULL_PATH=/opt/sd/lib/systemd/systemd-pull\n"));
    assert!(dest.path().join("opt/sd/lib/systemd/systemd-pull").exists());
}

/// `/proc/<pid>/exe` is the file `installed` (same device and inode).
fn runs(pid: i32, installed: &Path) -> bool {
    let exe = std::fs::metadata(format!("/proc/{pid}/exe")).unwrap();
    let file = std::fs::metadata(installed).unwrap();
    (exe.dev(), exe.ino()) == (file.dev(), file.ino())
}

#[test]
fn the_installed_pair_serves_machinectl_in_place_of_systemds() {
    let dest = tempfile::tempdir().unwrap();
    install(dest.path(), "/usr");
    let installed = |name: &str| dest.path().join("usr/lib/systemd").join(name);
    let system = |name: &str| PathBuf::from("/usr/lib/systemd").join(name);

    let server = ImageServer::new();
    let tar = Tarball::new()
        .dir("./")
        .dir("etc/")
        .file("etc/os-release", b"ID=installed\n")
        .finish();
    server.put("/i/small.tar", tar);
    let mut big = Tarball::new();
    big.dir("./").file("big", &vec![3u8; 3 << 20]);
    server.put("/i/big.tar", big.finish());
    server.shape("/i/big.tar", |r| r.slow(128 * 1024));

    let mut opts = Options::trusting(&server.ca.ca_pem_path());
    opts.daemon = system("systemd-importd");
    opts.worker = None;
    opts.policy = dest
        .path()
        .join("usr/share/dbus-1/system.d/org.freedesktop.import1.conf");
    opts.binds = vec![
        (installed("systemd-importd"), system("systemd-importd")),
        (installed("systemd-pull"), system("systemd-pull")),
    ];
    let d = Importd::start(opts);
    assert!(runs(d.pid(), &installed("systemd-importd")));

    let url = server.url("/i/small.tar");
    let out = d.machinectl(&["pull-tar", "--verify=no", &url, "small"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out
        .stderr_lines
        .contains(&"Operation completed successfully.".to_string()));
    let os_release = d.machines.path().join("small/etc/os-release");
    assert_eq!(
        std::fs::read_to_string(os_release).unwrap(),
        "ID=installed\n"
    );

    // A long one: the worker running is ours, listed, and cancelled.
    let url = server.url("/i/big.tar");
    let pull = d.machinectl_spawn(&["pull-tar", "--verify=no", &url, "big"]);
    let deadline = Instant::now() + PATIENCE;
    let worker = loop {
        if let [pid] = d.workers()[..] {
            break pid;
        }
        assert!(Instant::now() < deadline, "no worker");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(runs(worker, &installed("systemd-pull")));
    let out = d.machinectl(&["list-transfers", "--no-legend"]);
    assert!(
        out.stdout.contains("pull-tar") && out.stdout.contains("big"),
        "{}",
        out.stdout
    );
    let out = d.machinectl(&["cancel-transfer", "2"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let out = pull.wait();
    assert_eq!(out.status, 1, "{}", out.stderr);
    // The cancelled pull left nothing (the first one's image and its download cache stay).
    let left = d.machines.list_all();
    let top: Vec<String> = left
        .iter()
        .filter(|p| p.components().count() == 1)
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(top.len(), 2, "{top:?}");
    assert!(top.contains(&"small".to_string()), "{top:?}");
    assert!(top.iter().any(|n| n.starts_with(".tar-")), "{top:?}");
}

//! Our worker as a packager would install it under Debian 12's own daemon: Debian's real
//! `/lib/systemd/systemd-importd` (systemd 252) on a private bus, in a mount namespace
//! where our binary is bind-mounted over `/lib/systemd/systemd-pull` (so it runs as
//! `systemd-pull`, the modern personality), driven by Debian's `machinectl`:
//! * pull-tar with a `.nspawn` next to the image installs it next to the local image;
//! * `list-transfers` shows a percentage (Debian's own worker sends a bare `NN`, which
//!   importd 252 rejects, so it shows `n/a`; ours sends `NN%`);
//! * cancel-transfer ends the pull and leaves nothing behind.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::importd::{Importd, Options, PATIENCE};
use common::pull::ImageServer;
use common::tarball::Tarball;

const DEBIAN_IMPORTD: &str = "/lib/systemd/systemd-importd";
const ENQUEUED: &str = "Press C-c to continue download in background.";

/// Debian's daemon with our worker over its `systemd-pull`, trusting the server's CA.
/// `run_systemd` is bound over /run/systemd (where importd 252 makes its notify socket).
fn debian_daemon(server: &ImageServer, run_systemd: &tempfile::TempDir) -> Importd {
    assert!(
        std::path::Path::new(DEBIAN_IMPORTD).exists(),
        "apt-get install systemd-container"
    );
    let mut opts = Options::trusting(&server.ca.ca_pem_path());
    opts.daemon = PathBuf::from(DEBIAN_IMPORTD);
    opts.worker = None;
    opts.binds = vec![
        (
            run_systemd.path().to_path_buf(),
            PathBuf::from("/run/systemd"),
        ),
        (
            PathBuf::from(env!("CARGO_BIN_EXE_systemd-import")),
            PathBuf::from("/lib/systemd/systemd-pull"),
        ),
    ];
    Importd::start(opts)
}

#[test]
fn debian_importd_pull_tar_installs_the_settings_file() {
    let server = ImageServer::new();
    let tar = Tarball::new()
        .dir("./")
        .dir("etc/")
        .file("etc/os-release", b"ID=debian-importd\n")
        .finish();
    server.put("/img/demo.tar", tar);
    server.put("/img/demo.nspawn", b"[Exec]\nBoot=yes\n".to_vec());
    let run_systemd = tempfile::tempdir().unwrap();
    let d = debian_daemon(&server, &run_systemd);

    let url = server.url("/img/demo.tar");
    let out = d.machinectl(&["pull-tar", "--verify=no", &url, "demo"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    for line in [
        format!("Pulling '{url}', saving as 'demo'."),
        "Created new local image 'demo'.".to_string(),
        format!(
            "Created new settings file {}.",
            "/var/lib/machines/demo.nspawn"
        ),
        "Operation completed successfully.".to_string(),
    ] {
        assert!(out.stderr_lines.contains(&line), "{line}: {}", out.stderr);
    }
    let machines = d.machines.path();
    assert_eq!(
        std::fs::read_to_string(machines.join("demo/etc/os-release")).unwrap(),
        "ID=debian-importd\n"
    );
    assert_eq!(
        std::fs::read_to_string(machines.join("demo.nspawn")).unwrap(),
        "[Exec]\nBoot=yes\n"
    );
}

#[test]
fn debian_importd_lists_a_percentage_and_cancels() {
    let server = ImageServer::new();
    let mut t = Tarball::new();
    t.dir("./").file("big", &vec![1u8; 3 << 20]);
    let path = "/slow/big.tar";
    server.put(path, t.finish());
    server.shape(path, |r| r.slow(128 * 1024));
    let url = server.url(path);
    let run_systemd = tempfile::tempdir().unwrap();
    let d = debian_daemon(&server, &run_systemd);

    let pull = d.machinectl_spawn(&["pull-tar", "--verify=no", &url, "big"]);
    pull.wait_for_stderr_line(|l| l.contains(ENQUEUED), PATIENCE);
    let deadline = Instant::now() + PATIENCE;
    let row = loop {
        let out = d.machinectl(&["list-transfers"]);
        assert_eq!(out.status, 0, "{}", out.stderr);
        let row = out
            .stdout
            .lines()
            .find(|l| l.contains("pull-tar"))
            .map(str::to_string);
        if let Some(row) = row.filter(|r| {
            r.split_whitespace()
                .nth(1)
                .is_some_and(|c| c.ends_with('%'))
        }) {
            break row;
        }
        assert!(Instant::now() < deadline, "no percentage: {}", out.stdout);
        std::thread::sleep(Duration::from_millis(100));
    };
    let percent: u32 = row
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(percent < 100, "{row}");
    assert!(
        !d.log()
            .iter()
            .any(|l| l.contains("Got invalid percent value")),
        "{:?}",
        d.log()
    );

    let out = d.machinectl(&["cancel-transfer", "1"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let out = pull.wait();
    assert!(
        out.stderr_lines.iter().any(|l| l == "Transfer aborted."),
        "{}",
        out.stderr
    );
    let deadline = Instant::now() + PATIENCE;
    while !d.machines.list_all().is_empty() {
        assert!(Instant::now() < deadline, "{:?}", d.machines.list_all());
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = d.machinectl(&["list-transfers"]);
    assert_eq!((out.status, out.stdout.trim()), (0, "No transfers."));
}

//! systemd-importd with Debian 12's own `machinectl` (systemd 252) as the client, the
//! real worker, and a local HTTPS server: pull-tar and pull-raw with and without
//! checksum verification (the worker's lines relayed exactly as it prints them),
//! list-transfers during a throttled download, cancel-transfer, and a failing pull.

mod common;

use std::time::Duration;

use common::cli::CliOutput;
use common::importd::{relayed_lines, Importd, Options, Seen, SignalRecorder, ENQUEUED};
use common::pull::{
    assert_aborted, assert_checksum_pull_log, assert_log, download_lines, is_progress_line,
    ImageServer,
};
use common::tarball::{os_release_tar, Tarball};

fn daemon(server: &ImageServer) -> Importd {
    Importd::start(Options::trusting(&server.ca.ca_pem_path()))
}

/// machinectl's output after its first line (`Enqueued transfer job ID. …`): the worker's
/// lines as relayed (checked against the daemon's `(transferID) …` lines).
fn relayed(d: &Importd, out: &CliOutput, id: u32) -> CliOutput {
    let lines = relayed_lines(d, &out.stderr_lines, id, |_| false);
    CliOutput {
        status: out.status,
        stdout: String::new(),
        stderr: lines.join("\n"),
        stderr_lines: lines,
    }
}

#[test]
fn machinectl_pulls_tar_and_raw_images_verified_by_checksum() {
    let server = ImageServer::new();
    let tar = os_release_tar("checksum");
    let (tar_sums, _) = server.put_verified("/tar", "demo.tar", &tar, None);
    let raw = vec![0x5a; 100_000];
    let (raw_sums, _) = server.put_verified("/raw", "disk.raw", &raw, None);
    let d = daemon(&server);

    let url = server.url("/tar/demo.tar");
    let out = d.machinectl(&["pull-tar", "--verify=checksum", &url, "demo"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_checksum_pull_log(
        &relayed(&d, &out, 1),
        &url,
        Some("demo"),
        (tar.len(), tar_sums),
        &[
            &format!("SHA256 checksum of {url} is valid."),
            "Created new local image 'demo'.",
            "Operation completed successfully.",
            "Exiting.",
        ],
    );
    let os_release = std::fs::read_to_string(d.machines.path().join("demo/etc/os-release"));
    assert_eq!(os_release.unwrap(), "ID=checksum\n");

    let url = server.url("/raw/disk.raw");
    let out = d.machinectl(&["pull-raw", "--verify=checksum", &url, "disk"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_checksum_pull_log(
        &relayed(&d, &out, 2),
        &url,
        Some("disk"),
        (raw.len(), raw_sums),
        &[
            &format!("SHA256 checksum of {url} is valid."),
            "Created new local image 'disk'.",
            "Operation completed successfully.",
            "Exiting.",
        ],
    );
    assert_eq!(
        std::fs::read(d.machines.path().join("disk.raw")).unwrap(),
        raw
    );
    // Both ended: nothing is listed any more.
    let out = d.machinectl(&["list-transfers"]);
    assert_eq!((out.status, out.stdout.trim()), (0, "No transfers."));
}

#[test]
fn machinectl_pulls_tar_and_raw_images_without_verification() {
    let server = ImageServer::new();
    let tar = os_release_tar("unverified");
    server.put("/t/plain.tar", tar.clone());
    let raw = vec![7u8; 64 * 1024];
    server.put("/r/plain.raw", raw.clone());
    let d = daemon(&server);
    for (id, verb, path, local, len) in [
        (1, "pull-tar", "/t/plain.tar", "plain", tar.len()),
        (2, "pull-raw", "/r/plain.raw", "plainraw", raw.len()),
    ] {
        let url = server.url(path);
        let out = d.machinectl(&[verb, "--verify=no", &url, local]);
        assert_eq!(out.status, 0, "{}", out.stderr);
        assert_log(
            &relayed(&d, &out, id),
            &[&format!("Pulling '{url}', saving as '{local}'.")],
            &[download_lines(&url, len)],
            &[
                &format!("Created new local image '{local}'."),
                "Operation completed successfully.",
                "Exiting.",
            ],
            false,
        );
    }
    assert!(d.machines.path().join("plain/etc/os-release").exists());
    assert_eq!(
        std::fs::read(d.machines.path().join("plainraw.raw")).unwrap(),
        raw
    );
}

#[test]
fn list_transfers_shows_progress_and_cancel_transfer_ends_the_pull() {
    let server = ImageServer::new();
    let mut t = Tarball::new();
    t.dir("./").file("big", &vec![1u8; 3 << 20]);
    let path = "/slow/big.tar";
    server.put(path, t.finish());
    server.shape(path, |r| r.slow(128 * 1024));
    let url = server.url(path);
    let d = daemon(&server);
    let signals = SignalRecorder::start(&d.bus);

    let pull = d.machinectl_spawn(&["pull-tar", "--verify=no", &url, "big"]);
    pull.wait_for_stderr_line(|l| l.contains(ENQUEUED), common::importd::PATIENCE);
    // The worker reports progress as it downloads; list-transfers shows it.
    let deadline = std::time::Instant::now() + common::importd::PATIENCE;
    let listing = loop {
        let out = d.machinectl(&["list-transfers"]);
        assert_eq!(out.status, 0, "{}", out.stderr);
        let row = out
            .stdout
            .lines()
            .find(|l| l.contains("pull-tar"))
            .map(str::to_string);
        if let Some(row) = row.filter(|r| r.contains('%')) {
            break (out.stdout.clone(), row);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress: {}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let (table, row) = listing;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "PERCENT", "TYPE", "LOCAL", "REMOTE"],
        "{table}"
    );
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.len(), 5, "{row}");
    assert_eq!(
        (cells[0], cells[2], cells[3], cells[4]),
        ("1", "pull-tar", "big", url.as_str())
    );
    let percent: u32 = cells[1]
        .trim_end_matches('%')
        .parse()
        .expect("a percentage");
    assert!(percent < 100, "{row}");
    assert!(table.contains("\n1 transfers listed."), "{table}");

    let out = d.machinectl(&["cancel-transfer", "1"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let out = pull.wait();
    // The worker's last lines; its "Got N% of …" lines come from its download threads and
    // one may follow them.
    let stderr_lines = out
        .stderr_lines
        .iter()
        .filter(|l| !is_progress_line(l))
        .cloned()
        .collect();
    assert_aborted(&CliOutput {
        stderr_lines,
        ..out
    });
    assert_eq!(signals.removed(1), "canceled");
    d.wait_log(|l| l == "Transfer process failed with exit code 1.");
    // The worker removed everything it had started.
    assert!(
        d.machines.list_all().is_empty(),
        "{:?}",
        d.machines.list_all()
    );
    assert!(
        signals
            .seen()
            .iter()
            .any(|s| matches!(s, Seen::Progress(p, v) if p.ends_with("/_1") && *v >= 0.0)),
        "{:?}",
        signals.seen()
    );
    // Unknown and malformed ids.
    let out = d.machinectl(&["cancel-transfer", "1"]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr
            .contains("Could not cancel transfer: No transfer by id 1"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_failing_pull_relays_the_workers_error_and_exits_1() {
    let server = ImageServer::new();
    server.put("/t/exists.tar", os_release_tar("x"));
    let d = daemon(&server);
    std::fs::create_dir(d.machines.path().join("taken")).unwrap();
    let signals = SignalRecorder::start(&d.bus);
    let url = server.url("/t/exists.tar");
    let out = d.machinectl(&["pull-tar", "--verify=no", &url, "taken"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    let lines = relayed(&d, &out, 1).stderr_lines;
    assert!(
        lines.contains(&"Image 'taken' already exists.".to_string()),
        "{lines:?}"
    );
    assert_eq!(signals.removed(1), "failed");
    d.wait_log(|l| l == "Transfer process failed with exit code 1.");
    // Error priority travels with the line.
    let path = "/org/freedesktop/import1/transfer/_1";
    assert!(signals
        .log_lines(path)
        .contains(&(3, "Image 'taken' already exists.".to_string())));
}

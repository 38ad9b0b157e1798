//! importctl end to end: every usage error (with no bus at all: nothing is called), every
//! verb against our systemd-importd on a private bus with the real worker (pull-tar,
//! pull-raw, pull-oci, pull-dkr, list-transfers, list-images, cancel-transfer, `-q`,
//! Ctrl-C leaving the transfer running), and against Debian's own systemd-importd 252
//! (pull-tar and pull-raw through the legacy members, list-transfers through
//! `ListTransfers`, cancel-transfer, and the clear refusal of pull-oci).
//!
//! Output goes to pipes here, so importctl prints plain lines; the live display is
//! tested in a terminal by `importctl_tty.rs`.

mod common;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::cli::{spawn_watch, CliOutput};
use common::dkr_registry::DkrRegistry;
use common::importd::{
    importctl_on, relayed_lines, Importd, Options, SignalRecorder, ENQUEUED, PATIENCE,
};
use common::oci::{base_layer, Codec, ImageBuilder};
use common::pull::ImageServer;
use common::registry::{Registry, RegistryOptions};
use common::tarball::{os_release_tar, Tarball};

/// importctl's plain progress lines (`Total: …`, or `Download: …` from relayed lines).
fn is_plain_progress(line: &str) -> bool {
    line.starts_with("Total: ") || line.starts_with("Download: ")
}

/// importctl's stderr after `Enqueued transfer job ID. …`, without its progress lines:
/// the daemon's `(transferID) …` lines (checked).
fn relayed(d: &Importd, out: &CliOutput, id: u32) -> Vec<String> {
    relayed_lines(d, &out.stderr_lines, id, is_plain_progress)
}

/// A file holding every CA PEM given, for a daemon whose workers talk to several servers.
fn ca_bundle(dir: &std::path::Path, pems: &[std::path::PathBuf]) -> std::path::PathBuf {
    let mut all = Vec::new();
    for p in pems {
        all.extend(std::fs::read(p).expect("CA PEM"));
    }
    let path = dir.join("ca-bundle.pem");
    std::fs::write(&path, all).expect("write CA bundle");
    path
}

// -------------------------------------------------------------------------------------
// Usage errors: checked before anything is called (the bus address leads nowhere).

#[test]
fn usage_errors_have_upstreams_messages_and_exit_1() {
    let no_bus = "unix:path=/nonexistent/bus.sock";
    let class_list = "No image class specified, retry with --class= set to one of: \
                      machine (downloads to /var/lib/machines/), portable (downloads to \
                      /var/lib/portables/), sysext (downloads to /var/lib/extensions/), \
                      confext (downloads to /var/lib/confexts/).";
    let dkr = ["-m", "--verify=no", "--dkr-index-url=https://index.test"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--frob"], "importctl: unrecognized option '--frob'"),
        (vec!["-x"], "importctl: invalid option -- 'x'"),
        (
            vec!["--class"],
            "importctl: option '--class' requires an argument",
        ),
        (
            vec!["--force=yes"],
            "importctl: option '--force' doesn't allow an argument",
        ),
        (
            vec!["--no"],
            "importctl: option '--no' is ambiguous; possibilities: '--no-pager' \
             '--no-legend' '--no-ask-password'",
        ),
        (vec!["--class=vm"], "Failed to parse --class= parameter: vm"),
        (
            vec!["--verify=sum"],
            "Failed to parse --verify= setting: sum",
        ),
        (
            vec!["--json=yaml"],
            "Unknown argument to --json= switch: yaml",
        ),
        (
            vec!["--keep-download=maybe"],
            "Failed to parse --keep-download= value: maybe",
        ),
        (
            vec!["--dkr-index-url=ftp://x"],
            "Index URL is invalid: ftp://x",
        ),
        (
            vec!["xyzzyxyzzyxyzzy"],
            "Unknown command verb 'xyzzyxyzzyxyzzy'.",
        ),
        (
            vec!["pull-tra"],
            "Unknown command verb 'pull-tra', did you mean 'pull-tar'?",
        ),
        (vec!["pull-tar"], "Too few arguments."),
        (vec!["-m", "pull-raw", "a", "b", "c"], "Too many arguments."),
        (vec!["list-transfers", "x"], "Too many arguments."),
        (vec!["list-images", "x"], "Too many arguments."),
        (vec!["cancel-transfer"], "Too few arguments."),
        (vec!["pull-tar", "https://h/x.tar"], class_list),
        (vec!["pull-oci", "a/b"], class_list),
        (
            vec!["-m", "pull-tar", "ftp://h/x.tar"],
            "URL 'ftp://h/x.tar' is not valid.",
        ),
        (
            vec!["-S", "pull-raw", "https://h/x.raw", ".#tmp"],
            "Local name .#tmp is not a suitable image name.",
        ),
        (
            vec!["-m", "pull-tar", "https://h/.tar"],
            "Local name  is not a suitable image name.",
        ),
        (
            vec!["-m", "pull-oci", "Bad Ref"],
            "Ref 'Bad Ref' is not valid.",
        ),
        (
            vec!["-m", "pull-oci", "quay.io/a/b", "x/y"],
            "Local name x/y is not a suitable image name.",
        ),
        (
            vec!["-m", "pull-dkr", "a/b"],
            "Imports from DKR do not support image verification, please pass --verify=no.",
        ),
        (
            vec!["-m", "--verify=no", "pull-dkr", "a/b"],
            "Please specify an index URL with --dkr-index-url=",
        ),
        (
            [&dkr[..], &["pull-dkr", "debian"]].concat(),
            "DKR name 'debian' is invalid.",
        ),
        (
            [&dkr[..], &["pull-dkr", "a/b:x/y"]].concat(),
            "DKR tag 'x/y' is invalid.",
        ),
        (
            [&dkr[..], &["-P", "pull-dkr", "a/b"]].concat(),
            "pull-dkr only supports --class=machine.",
        ),
        (
            vec!["cancel-transfer", "1", "x"],
            "Failed to parse transfer id: x",
        ),
    ];
    for (args, want) in cases {
        let out = spawn_watch(&mut importctl_on(no_bus, &args)).wait();
        assert_eq!(
            (out.status, out.stderr.as_str(), out.stdout.as_str()),
            (1, format!("{want}\n").as_str(), ""),
            "{args:?}"
        );
    }
    // Asked for, printed, exit 0.
    for (args, want) in [
        (vec!["--verify=help"], "no\nchecksum\nsignature\n"),
        (vec!["--json=help"], "pretty\nshort\noff\n"),
    ] {
        let out = spawn_watch(&mut importctl_on(no_bus, &args)).wait();
        assert_eq!((out.status, out.stdout.as_str()), (0, want), "{args:?}");
    }
    for args in [vec!["-h"], vec!["--help", "--frob"], vec!["help"]] {
        let out = spawn_watch(&mut importctl_on(no_bus, &args)).wait();
        assert_eq!(out.status, 0, "{args:?}: {}", out.stderr);
        assert!(
            out.stdout
                .starts_with("importctl [OPTIONS...] COMMAND ...\n"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("  pull-oci REF [NAME]"),
            "{}",
            out.stdout
        );
    }
    let out = spawn_watch(&mut importctl_on(no_bus, &["--version"])).wait();
    assert_eq!(out.status, 0);
    assert!(out.stdout.starts_with("systemd 260\n"), "{}", out.stdout);
    // A valid command line does get to the bus, which is not there.
    let out = spawn_watch(&mut importctl_on(no_bus, &[])).wait();
    assert_eq!(out.status, 1);
    assert!(
        out.stderr
            .starts_with("Failed to connect to system scope bus via local transport: "),
        "{}",
        out.stderr
    );
}

// -------------------------------------------------------------------------------------
// Our daemon

#[test]
fn pull_tar_and_raw_relay_the_workers_lines_and_list_the_images() {
    let server = ImageServer::new();
    let tar = os_release_tar("importctl");
    server.put("/t/demo.tar", tar);
    let raw = vec![0x5a; 100_000];
    server.put("/r/disk.raw.xz", common::pull::compress("xz", &raw));
    let d = Importd::start(Options::trusting(&server.ca.ca_pem_path()));

    let url = server.url("/t/demo.tar");
    let out = d.importctl(&["-m", "--verify=no", "pull-tar", &url]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let lines = relayed(&d, &out, 1);
    for want in [
        format!("Pulling '{url}', saving as 'demo'."),
        "Created new local image 'demo'.".to_string(),
        "Operation completed successfully.".to_string(),
        "Exiting.".to_string(),
    ] {
        assert!(lines.contains(&want), "{want} not in {lines:?}");
    }
    let os_release = d.machines.path().join("demo/etc/os-release");
    assert_eq!(
        std::fs::read_to_string(os_release).unwrap(),
        "ID=importctl\n"
    );

    // pull-raw: the name loses its suffixes; `-q` keeps only notice and worse.
    let url = server.url("/r/disk.raw.xz");
    let out = d.importctl(&["-m", "--verify=no", "-q", "pull-raw", &url]);
    assert_eq!((out.status, out.stderr.as_str()), (0, ""), "{}", out.stderr);
    assert_eq!(
        std::fs::read(d.machines.path().join("disk.raw")).unwrap(),
        raw
    );
    let logged = d.log();
    assert!(
        logged.contains(&"(transfer2) Created new local image 'disk'.".to_string()),
        "{logged:?}"
    );

    // A failing pull: its error is relayed (also with -q) and importctl exits 1.
    let out = d.importctl(&[
        "-m",
        "--verify=no",
        "-q",
        "pull-tar",
        &server.url("/t/demo.tar"),
    ]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(out.stderr_lines, ["Image 'demo' already exists."]);

    // list-images: table, footer, JSON.
    let out = d.importctl(&["list-images"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let table: Vec<&str> = out.stdout.lines().collect();
    let header: Vec<&str> = table[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["CLASS", "NAME", "TYPE", "PATH", "RO", "CRTIME", "MTIME", "USAGE", "LIMIT"]
    );
    let rows: Vec<Vec<&str>> = table[1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let names: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[0], r[1], r[2])).collect();
    assert!(
        names.contains(&("machine", "demo", "directory")),
        "{table:?}"
    );
    assert!(names.contains(&("machine", "disk", "raw")), "{table:?}");
    assert!(
        out.stdout
            .ends_with(&format!("\n\n{} images listed.\n", rows.len())),
        "{}",
        out.stdout
    );
    let out = d.importctl(&["-m", "--json=short", "list-images"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let disk = json
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "disk")
        .expect("disk listed");
    assert_eq!(disk["type"], "raw");
    assert_eq!(disk["ro"], false);
    assert!(disk["mtime"].as_u64().unwrap() > 0, "{disk}");
    assert!(disk.get("usage-exclusive").is_some(), "{disk}");
    let out = d.importctl(&["-P", "list-images"]);
    assert_eq!((out.status, out.stdout.as_str()), (0, "No images.\n"));
}

#[test]
fn ctrl_c_leaves_the_transfer_running_and_cancel_transfer_ends_it() {
    let server = ImageServer::new();
    let mut t = Tarball::new();
    t.dir("./").file("big", &vec![1u8; 3 << 20]);
    server.put("/slow/big.tar", t.finish());
    server.shape("/slow/big.tar", |r| r.slow(256 * 1024));
    let url = server.url("/slow/big.tar");
    let d = Importd::start(Options::trusting(&server.ca.ca_pem_path()));
    let signals = SignalRecorder::start(&d.bus);

    let pull = d.importctl_spawn(&["-m", "--verify=no", "pull-tar", &url, "big"]);
    pull.wait_for_stderr_line(|l| l.contains(ENQUEUED), PATIENCE);
    // Progress reaches importctl's plain progress lines once the worker reports it.
    pull.wait_for_stderr_line(|l| l.starts_with("Total: "), PATIENCE);
    pull.signal(Signal::SIGINT);
    let out = pull.wait();
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(
        out.stderr_lines.last().map(String::as_str),
        Some("Continuing download in the background. Use \"importctl cancel-transfer 1\" to abort transfer.")
    );

    // Still running: listed, with its progress.
    let out = d.importctl(&["list-transfers"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "PROGRESS", "TYPE", "CLASS", "LOCAL", "REMOTE"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        (row[0], row[2], row[3], row[4], row[5]),
        ("1", "pull-tar", "machine", "big", url.as_str()),
        "{}",
        out.stdout
    );
    assert!(row[1].ends_with('%') || row[1] == "-", "{}", out.stdout);
    assert_eq!(&lines[2..], ["", "1 transfers listed."]);
    let out = d.importctl(&["--no-legend", "list-transfers"]);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let out = d.importctl(&["--json=short", "-P", "list-transfers"]);
    assert_eq!((out.status, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    let out = d.importctl(&["--json=pretty", "list-transfers"]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(json[0]["id"], 1);
    assert_eq!(json[0]["local"], "big");
    assert!(
        out.stdout.contains("\n\t{\n\t\t\"id\" : 1,\n"),
        "{}",
        out.stdout
    );

    // cancel-transfer ends it; an unknown id is the daemon's error.
    let out = d.importctl(&["cancel-transfer", "1"]);
    assert_eq!((out.status, out.stderr.as_str()), (0, ""), "{}", out.stderr);
    assert_eq!(signals.removed(1), "canceled");
    let out = d.importctl(&["cancel-transfer", "1"]);
    assert_eq!(
        (out.status, out.stderr.as_str()),
        (1, "Could not cancel transfer: No transfer by id 1\n")
    );
    let out = d.importctl(&[]);
    assert_eq!((out.status, out.stdout.as_str()), (0, "No transfers.\n"));

    // SIGTERM leaves the transfer running just the same.
    let pull = d.importctl_spawn(&["-m", "--verify=no", "pull-tar", &url, "big2"]);
    pull.wait_for_stderr_line(|l| l.contains("Enqueued transfer job 2."), PATIENCE);
    pull.signal(Signal::SIGTERM);
    let out = pull.wait();
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(
        out.stderr_lines.last().map(String::as_str),
        Some("Continuing download in the background. Use \"importctl cancel-transfer 2\" to abort transfer.")
    );
    let out = d.importctl(&["--no-legend", "list-transfers"]);
    assert!(out.stdout.contains("big2"), "{}", out.stdout);
    let out = d.importctl(&["cancel-transfer", "2"]);
    assert_eq!((out.status, out.stderr.as_str()), (0, ""), "{}", out.stderr);
    assert_eq!(signals.removed(2), "canceled");
}

#[test]
fn pull_oci_and_pull_dkr_through_our_daemon() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(os_release_tar("top"), Codec::Zstd)
        .build();
    image.push(&reg, "tests/importctl", Some("v1"));
    let dkr = DkrRegistry::new();
    let layer = dkr.add_layer("base", None, &os_release_tar("dkr"));
    dkr.tag("test/one", "latest", &layer);
    let dir = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(dir.path(), &[reg.ca().ca_pem_path(), dkr.ca.ca_pem_path()]);
    let d = Importd::start(Options::trusting(&bundle).with(
        "SYSTEMD_IMPORT_TEST_DKR_REGISTRY_PORT",
        &dkr.registry.port().to_string(),
    ));

    let reference = format!("{}/tests/importctl:v1", reg.host());
    let out = d.importctl(&["-m", "pull-oci", &reference]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let lines = relayed(&d, &out, 1);
    assert!(
        lines.contains(&format!("Pulling '{reference}', saving as 'importctl'.")),
        "{lines:?}"
    );
    let os_release = d.machines.path().join("importctl/etc/os-release");
    assert_eq!(std::fs::read_to_string(os_release).unwrap(), "ID=top\n");

    let index = dkr.index_url();
    let out = d.importctl(&[
        "-m",
        "--verify=no",
        &format!("--dkr-index-url={index}"),
        "pull-dkr",
        "test/one",
        "dkrt",
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let lines = relayed(&d, &out, 2);
    let want = "Pulling 'test/one' with tag 'latest', saving as 'dkrt'.";
    assert!(lines.iter().any(|l| l == want), "{lines:?}");
    let os_release = d.machines.path().join("dkrt/etc/os-release");
    assert_eq!(std::fs::read_to_string(os_release).unwrap(), "ID=dkr\n");
}

// -------------------------------------------------------------------------------------
// Debian's systemd-importd 252

#[test]
fn debians_importd_pulls_lists_and_cancels_through_the_legacy_members() {
    let server = ImageServer::new();
    server.put("/t/deb.tar", os_release_tar("debian-daemon"));
    let raw = vec![7u8; 64 * 1024];
    server.put("/r/debraw.raw", raw.clone());
    let mut t = Tarball::new();
    t.dir("./").file("big", &vec![1u8; 3 << 20]);
    server.put("/slow/big.tar", t.finish());
    server.shape("/slow/big.tar", |r| r.slow(256 * 1024));
    let d = Importd::start(Options::debian(&server.ca.ca_pem_path()));

    // -m asks for PullTarEx (keep-download defaults to yes for machines); the 252
    // daemon has only PullTar, whose worker keeps the download anyway.
    let url = server.url("/t/deb.tar");
    let out = d.importctl(&["-m", "--verify=no", "pull-tar", &url]);
    assert_eq!(
        out.status,
        0,
        "{}\ndaemon:\n{}",
        out.stderr,
        d.log().join("\n")
    );
    let lines = relayed(&d, &out, 1);
    assert!(
        lines.contains(&"Created new local image 'deb'.".to_string()),
        "{lines:?}"
    );
    let os_release = d.machines.path().join("deb/etc/os-release");
    assert_eq!(
        std::fs::read_to_string(os_release).unwrap(),
        "ID=debian-daemon\n"
    );

    let url = server.url("/r/debraw.raw");
    let out = d.importctl(&["-m", "--verify=no", "pull-raw", &url]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    relayed(&d, &out, 2);
    assert_eq!(
        std::fs::read(d.machines.path().join("debraw.raw")).unwrap(),
        raw
    );

    // What the legacy members cannot express, and what the daemon lacks, is refused.
    let out = d.importctl(&["-m", "--verify=no", "--read-only", "pull-tar", &url]);
    assert_eq!(
        (out.status, out.stderr.as_str()),
        (
            1,
            "The import service lacks PullTarEx() (systemd before 256), so it cannot \
             honour --read-only.\n"
        )
    );
    let out = d.importctl(&["-m", "pull-oci", "quay.io/a/b"]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr
            .starts_with("The import service cannot pull OCI images: it lacks PullOci()"),
        "{}",
        out.stderr
    );

    // A slow pull: listed through ListTransfers (no classes: machine), then cancelled.
    let url = server.url("/slow/big.tar");
    let pull = d.importctl_spawn(&["-m", "--verify=no", "pull-tar", &url, "big"]);
    pull.wait_for_stderr_line(|l| l.contains(ENQUEUED), PATIENCE);
    let deadline = Instant::now() + PATIENCE;
    let listing = loop {
        let out = d.importctl(&["list-transfers"]);
        assert_eq!(out.status, 0, "{}", out.stderr);
        if out.stdout.contains("pull-tar") {
            break out.stdout;
        }
        assert!(Instant::now() < deadline, "{}", out.stdout);
        std::thread::sleep(Duration::from_millis(50));
    };
    let row: Vec<&str> = listing.lines().nth(1).unwrap().split_whitespace().collect();
    // 252 refuses the bare X_IMPORT_PROGRESS=N workers send: no percentage.
    assert_eq!(
        row,
        ["3", "-", "pull-tar", "machine", "big", url.as_str()],
        "{listing}"
    );
    let out = d.importctl(&["cancel-transfer", "3"]);
    assert_eq!((out.status, out.stderr.as_str()), (0, ""));
    let out = pull.wait();
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr_lines.iter().any(|l| l == "Transfer aborted."),
        "{}",
        out.stderr
    );
    let out = d.importctl(&["list-transfers"]);
    assert_eq!(out.stdout, "No transfers.\n");
}

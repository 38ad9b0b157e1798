//! The `systemd-pull` personality's command line through the real binary run under that
//! name: help, version, option and verb errors with systemd 252's messages, and the
//! output closed early (`--help | true`) for both personalities.

mod common;

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::cli::{run, systemd_import, systemd_pull};

/// Exit status 1 and exactly these lines on stderr, nothing on stdout.
fn assert_fails_with(args: &[&str], lines: &[&str]) {
    let out = run(systemd_pull().args(args));
    assert_eq!(out.status, 1, "{args:?}: {}", out.stderr);
    let want: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(out.stderr, want, "{args:?}");
    assert_eq!(out.stdout, "");
}

#[test]
fn help_and_version_name_systemd_252() {
    let out = run(systemd_pull().arg("--help"));
    assert_eq!(out.status, 0);
    assert!(out.stdout.starts_with("systemd-pull [OPTIONS...] {COMMAND} ...\n\nDownload container or virtual machine images.\n"), "{}", out.stdout);
    for option in [
        "--keep-download=BOOL",
        "--class=CLASS",
        "--verity=BOOL",
        "--size-max=BYTES",
    ] {
        assert!(out.stdout.contains(option), "{option}");
    }
    let out = run(systemd_pull().arg("--version"));
    assert_eq!(out.status, 0);
    let first = out.stdout.lines().next().unwrap();
    assert!(first.starts_with("systemd 252 (systemd-import "), "{first}");
}

#[test]
fn usage_errors_have_the_v252_messages() {
    assert_fails_with(&[], &["Command verb required."]);
    assert_fails_with(
        &["pull-tar", "http://x/y"],
        &["Unknown command verb pull-tar."],
    );
    assert_fails_with(&["tar"], &["Too few arguments."]);
    assert_fails_with(&["raw", "a", "b", "c"], &["Too many arguments."]);
    assert_fails_with(
        &["--verify=sum", "tar", "http://x/y"],
        &["Invalid verification setting: sum"],
    );
    assert_fails_with(
        &["--verify=abcd", "tar", "http://x/y"],
        &["64 hex character SHA256 hash required when specifying explicit checksum, 4 specified"],
    );
    assert_fails_with(
        &["--settings=maybe", "tar", "http://x/y"],
        &["Failed to parse boolean argument to --settings=: maybe."],
    );
    assert_fails_with(
        &["--offset=5", "raw", "http://x/y"],
        &["File offset only supported in --direct mode."],
    );
    assert_fails_with(
        &["--size-max=lots", "raw", "http://x/y"],
        &["Failed to parse --size-max= argument: lots"],
    );
    assert_fails_with(
        &["--class=vm", "raw", "http://x/y"],
        &["Failed to parse --class= argument: vm"],
    );
    assert_fails_with(&["tar", "ftp://x/y"], &["URL 'ftp://x/y' is not valid."]);
    assert_fails_with(
        &["tar", "http://x/y.tar", "not_valid"],
        &["Local image name 'not_valid' is not valid."],
    );
    let exe = "/usr/lib/systemd/systemd-pull";
    let out = run(systemd_pull().arg("--frobnicate"));
    assert_eq!(out.status, 1);
    assert_eq!(
        out.stderr,
        format!("{exe}: unrecognized option '--frobnicate'\n")
    );
}

#[test]
fn every_modern_option_is_accepted() {
    // Up to the network: the pull starts (and fails to connect) with all of them given.
    let root = tempfile::tempdir().unwrap();
    let hex = "0".repeat(64);
    let out = run(systemd_pull().args([
        "--force",
        &format!("--image-root={}", root.path().display()),
        "--verify=no",
        "--settings=no",
        "--roothash=no",
        "--roothash-signature=no",
        "--verity=no",
        "--read-only",
        "--btrfs-subvol=no",
        "--btrfs-quota=no",
        "--convert-qcow2=no",
        "--sync=no",
        "--size-max=1G",
        "--class=machine",
        "--keep-download=yes",
        "--system",
        &format!("--verify={hex}"),
        "raw",
        "http://127.0.0.1:1/x.raw",
        "img",
    ]));
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .starts_with("Pulling 'http://127.0.0.1:1/x.raw', saving as 'img'.\n"),
        "{}",
        out.stderr
    );
}

/// Run `cmd` with its stdout a pipe whose reading end is already closed.
fn run_into_closed_pipe(cmd: &mut Command) -> std::process::ExitStatus {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(read);
    cmd.stdout(Stdio::from(write)).stderr(Stdio::piped());
    let out = cmd.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "no panic message");
    out.status
}

#[test]
fn output_closed_early_ends_like_a_c_program() {
    // `systemd-import --help | true`: the C program dies of SIGPIPE (status 141 in a shell).
    for mut cmd in [systemd_import(), systemd_pull()] {
        for arg in ["--help", "--version"] {
            let status = run_into_closed_pipe(cmd.arg(arg));
            assert_eq!(status.signal(), Some(libc::SIGPIPE), "{arg}: {status:?}");
        }
    }
    let status = run_into_closed_pipe(systemd_import().arg("help"));
    assert_eq!(status.signal(), Some(libc::SIGPIPE));
}

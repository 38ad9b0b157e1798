//! The command line, through the real binary: help, usage errors, validation messages and
//! exit statuses (spec §1).

use std::process::Command;

struct Out {
    status: i32,
    stdout: String,
    stderr: String,
}

fn run_in(root: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_systemd-import"));
    cmd.arg(format!("--image-root={}", root.display()))
        .args(args)
        .env_remove("SYSTEMD_LOG_LEVEL")
        .env_remove("SYSTEMD_LOG_TARGET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run systemd-import");
    Out {
        status: out.status.code().expect("exited normally"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(args: &[&str]) -> Out {
    let root = tempfile::tempdir().unwrap();
    run_in(root.path(), args, &[])
}

/// Exit status 1 and exactly this one line on stderr.
fn assert_fails_with(args: &[&str], line: &str) {
    let out = run(args);
    assert_eq!(out.status, 1, "{args:?}: {}", out.stderr);
    assert_eq!(out.stderr, format!("{line}\n"), "{args:?}");
    assert_eq!(out.stdout, "");
}

const HELP: &str = "\
systemd-import [OPTIONS...] {COMMAND} ...

Import container or virtual machine image.

  -h --help                   Show this help
     --version                Show package version
     --force                  Force creation of image
     --verify=                Verify downloaded image, one of: 'no', 'sum'
                              'signature'.
     --image-root=            Image root directory
     --dkr-index-url=URL      Specify index URL to use for downloads
     --platform=OS/ARCH[/VARIANT]
                              Platform to pull for pull-oci
     --max-concurrent-downloads=N
                              Layers pull-oci downloads at once (default 6)
     --registry-config=DIR    Read pull-oci's registry configuration below DIR
                              only (DIR/etc/containers/registries.conf, ...)
     --layer-size-max=BYTES   Most one layer of pull-oci may expand to
                              (default 8G)
     --download-ranges=N      Parts of a big layer pull-oci fetches at once
                              ('no' or 1: one stream; default 4)
     --download-range-size=BYTES
                              Size of those parts; bigger layers are fetched
                              in parts (default 16M)

Commands:
  pull-tar URL [NAME]         Download a TAR image
  pull-raw URL [NAME]         Download a RAW image
  pull-dkr REMOTE [NAME]      Download a DKR image
  pull-oci REF [NAME]         Download an OCI image
  tar FILE [NAME]             Import a TAR image (FILE: a file or '-' for stdin)
  raw FILE [NAME]             Import a RAW image (FILE: a file or '-' for stdin)

Options of tar and raw (an HTTP(S) URL as FILE pulls instead, as pull-tar/pull-raw):
     --read-only              Create a read-only image
     --direct                 Import directly to specified file
     --btrfs-subvol=BOOL      Controls whether to create a btrfs subvolume
                              instead of a directory
     --btrfs-quota=BOOL       Controls whether to set up quota for btrfs
                              subvolume
     --convert-qcow2=BOOL     Controls whether to convert QCOW2 images to
                              regular disk images
     --sync=BOOL              Controls whether to sync() before completing
     --offset=BYTES           Offset to seek to in destination
     --size-max=BYTES         Maximum number of bytes to write to destination
     --class=CLASS            Image class: machine, portable, sysext, confext
";

#[test]
fn help_goes_to_stdout_and_exits_0_wherever_it_is_asked_for() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["help", "x", "y"],
        &["pull-tar", "--help"],
        &["pull-tar", "http://x/y", "-h"],
    ] {
        let out = run(args);
        assert_eq!(out.status, 0, "{args:?}");
        assert_eq!(out.stdout, HELP, "{args:?}");
        assert_eq!(out.stderr, "");
    }
}

#[test]
fn version_prints_the_package_string_and_features() {
    let out = run(&["--version"]);
    assert_eq!(out.status, 0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "systemd 219");
    assert!(
        lines[1].contains("+XZ") && lines[1].contains("+ZSTD"),
        "{}",
        lines[1]
    );
}

#[test]
fn usage_errors_have_the_c_messages_and_exit_1() {
    assert_fails_with(&[], "Requires operation parameter.");
    assert_fails_with(&["frobnicate"], "Unknown operation frobnicate.");
    assert_fails_with(&["pull-tar"], "Too few arguments.");
    assert_fails_with(&["pull-raw", "http://a/b", "c", "d"], "Too many arguments.");
    assert_fails_with(&["pull-dkr"], "Too few arguments.");
    assert_fails_with(
        &["--verify=maybe", "pull-raw", "http://a/b"],
        "Invalid verification setting 'maybe'",
    );
    assert_fails_with(
        &["--dkr-index-url=ftp://x", "pull-dkr", "a/b"],
        "Index URL is not valid: ftp://x",
    );
}

#[test]
fn getopt_diagnostics_name_the_program() {
    let exe = env!("CARGO_BIN_EXE_systemd-import");
    assert_fails_with(
        &["--frobnicate"],
        &format!("{exe}: unrecognized option '--frobnicate'"),
    );
    assert_fails_with(&["-x"], &format!("{exe}: invalid option -- 'x'"));
    assert_fails_with(
        &["pull-tar", "--verify"],
        &format!("{exe}: option '--verify' requires an argument"),
    );
    assert_fails_with(
        &["--force=1", "pull-tar"],
        &format!("{exe}: option '--force' doesn't allow an argument"),
    );
    assert_fails_with(
        &["--ver", "pull-tar"],
        &format!("{exe}: option '--ver' is ambiguous; possibilities: '--version' '--verify'"),
    );
}

#[test]
fn tar_and_raw_validate_url_and_local_name() {
    assert_fails_with(
        &["pull-tar", "ftp://x/y.tar"],
        "URL 'ftp://x/y.tar' is not valid.",
    );
    assert_fails_with(&["pull-raw", "http://"], "URL 'http://' is not valid.");
    assert_fails_with(
        &["pull-raw", "https://x/a.raw", "foo..bar"],
        "Local image name 'foo..bar' is not valid.",
    );
    // The suffixes are stripped from an explicit local name too (spec §1.5 step 4).
    assert_fails_with(
        &["pull-raw", "https://x/a.raw", ".foo.raw"],
        "Local image name '.foo' is not valid.",
    );
    assert_fails_with(
        &["pull-tar", "https://x/a.tar", "a:b.tar"],
        "Local image name 'a:b' is not valid.",
    );
    // Q11: an empty result of the tar suffix strip is EINVAL, not "Out of memory."
    assert_fails_with(
        &["pull-tar", "https://x/a.tar", ".tar"],
        "Failed to strip tar suffixes from '.tar': Invalid argument",
    );
    // The derived name comes from the last URL component, query dropped.
    let long = format!("https://x/{}.raw.xz?x=1", "a".repeat(65));
    assert_fails_with(
        &["pull-raw", &long],
        &format!("Local image name '{}' is not valid.", "a".repeat(65)),
    );
}

#[test]
fn an_existing_local_image_is_refused_without_force() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("fedora")).unwrap();
    std::fs::write(root.path().join("disk.raw"), b"").unwrap();
    let out = run_in(root.path(), &["pull-tar", "https://x/fedora.tar.xz"], &[]);
    assert_eq!(out.status, 1);
    assert_eq!(out.stderr, "Image 'fedora' already exists.\n");
    let out = run_in(root.path(), &["pull-raw", "https://x/disk.qcow2"], &[]);
    assert_eq!(out.status, 1);
    assert_eq!(out.stderr, "Image 'disk' already exists.\n");
}

#[test]
fn dkr_validates_index_verify_name_tag_and_local() {
    assert_fails_with(
        &["--verify=no", "pull-dkr", "a/b"],
        "Please specify an index URL with --dkr-index-url=",
    );
    let idx = "--dkr-index-url=https://index.example";
    assert_fails_with(
        &[idx, "pull-dkr", "a/b"],
        "Imports from dkr do not support image verification, please pass --verify=no.",
    );
    assert_fails_with(
        &[idx, "--verify=no", "pull-dkr", "debian"],
        "Remote name 'debian' is not valid.",
    );
    assert_fails_with(
        &[idx, "--verify=no", "pull-dkr", "a/b/c"],
        "Remote name 'a/b/c' is not valid.",
    );
    assert_fails_with(
        &[idx, "--verify=no", "pull-dkr", "a/b:x/y"],
        "Tag name 'x/y' is not valid.",
    );
    assert_fails_with(
        &[idx, "--verify=no", "pull-dkr", "a/b:"],
        "Tag name '' is not valid.",
    );
    assert_fails_with(
        &[idx, "--verify=no", "pull-dkr", "a/b", "x..y"],
        "Local image name 'x..y' is not valid.",
    );
    // The default local name is the part after the slash.
    assert_fails_with(
        &[idx, "--verify=no", "pull-dkr", "a/.hidden"],
        "Local image name '.hidden' is not valid.",
    );
}

#[test]
fn console_prefixed_logging_carries_the_priority() {
    let root = tempfile::tempdir().unwrap();
    let out = run_in(
        root.path(),
        &["frobnicate"],
        &[("SYSTEMD_LOG_TARGET", "console-prefixed")],
    );
    assert_eq!(out.stderr, "<3>Unknown operation frobnicate.\n");
    let out = run_in(
        root.path(),
        &["frobnicate"],
        &[("SYSTEMD_LOG_LEVEL", "crit")],
    );
    assert_eq!(out.stderr, "", "errors are below crit");
}

/// `FDSize:` of a process (the size of its descriptor table).
fn fd_table_size(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
    line["FDSize:".len()..].trim().parse().unwrap()
}

#[test]
fn the_descriptor_table_is_sized_before_any_thread_starts() {
    // A server that accepts and never answers holds the pull in its download.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/image.raw", server.local_addr().unwrap());
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_systemd-import"))
        .arg(format!("--image-root={}", root.path().display()))
        .args(["pull-raw", "--verify=no", &url, "image"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_conn, _) = server.accept().unwrap();
    // Inherited across fork and exec: what our table was before the child ran.
    let ours = fd_table_size(std::process::id());
    let size = fd_table_size(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        ours < 1024,
        "the test process's own table is already {ours}"
    );
    assert!(size >= 1024, "the pull's descriptor table holds {size}");
}

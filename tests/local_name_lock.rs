//! Two processes writing one local name (issue 12): while another process holds the
//! name's lock (`.#local-<name>.lock`, here a `flock(1)` child of this test), pull-tar, pull-raw and a local
//! import to that name fail at once with one message and fetch or write nothing; once
//! the lock is free they succeed and leave no lock file behind.

mod common;

use std::path::Path;

use common::cli::{run, systemd_import, CliOutput, TempRoot};
use common::pull::{names, pull, ImageServer};
use common::tarball::Tarball;

/// A process holding the lock of local name `name` in `root`, as a running pull does;
/// dropping it kills the holder, which frees the lock.
///
/// The holder is a child process (`flock(1)` on an fd of a shell that becomes `sleep`),
/// not an fd of this test: every process the other tests of this binary spawn meanwhile
/// would inherit such an fd until its exec, and with it the lock, so a pull started right
/// after the drop could still be refused.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hold(root: &Path, name: &str) -> Holder {
    let path = root.join(format!(".#local-{name}.lock"));
    // The shell takes the lock on fd 9 and then becomes `sleep`, so the child itself
    // holds it and killing the child frees it.
    let mut child = std::process::Command::new("sh")
        .args([
            "-c",
            "exec 9>\"$1\" && flock -x 9 && echo locked && exec sleep 3600",
        ])
        .arg("sh")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n", "flock(1) did not take {}", path.display());
    Holder(child)
}

fn assert_refused(out: &CliOutput, name: &str) {
    assert_eq!(out.status, 1, "{}", out.stderr);
    let line =
        format!("Local image '{name}' is being pulled or imported by another process, refusing.");
    assert!(
        out.stderr_lines.iter().any(|l| l == &line),
        "{}",
        out.stderr
    );
}

#[test]
fn pull_tar_and_pull_raw_refuse_a_name_being_pulled() {
    let server = ImageServer::new();
    let tar = Tarball::new().file("./hello", b"hi\n").finish();
    server.put("/images/lockt.tar", tar);
    server.put("/images/lockr.raw", vec![7u8; 64 << 10]);
    let root = TempRoot::new();
    for (verb, path, name) in [
        ("pull-tar", "/images/lockt.tar", "lockt"),
        ("pull-raw", "/images/lockr.raw", "lockr"),
    ] {
        let url = server.url(path);
        let args = ["--verify=no", verb, &url, name];
        let lock = hold(root.path(), name);
        let out = pull(&server, root.path(), None, &args);
        assert_refused(&out, name);
        assert!(server.requests_for(path).is_empty(), "nothing fetched");
        drop(lock);
        let out = pull(&server, root.path(), None, &args);
        assert_eq!(out.status, 0, "{}", out.stderr);
    }
    let left = names(root.path());
    assert!(left.iter().all(|n| !n.starts_with(".#local-")), "{left:?}");
}

#[test]
fn a_local_import_refuses_a_name_being_written() {
    let root = TempRoot::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("image.tar");
    std::fs::write(&file, Tarball::new().file("./hello", b"hi\n").finish()).unwrap();
    let import = || {
        run(systemd_import()
            .arg("tar")
            .arg(format!("--image-root={}", root.path().display()))
            .arg(&file)
            .arg("imported"))
    };
    let lock = hold(root.path(), "imported");
    assert_refused(&import(), "imported");
    assert!(!root.path().join("imported").exists());
    drop(lock);
    let out = import();
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(root.path().join("imported/hello").exists());
    assert!(!root.path().join(".#local-imported.lock").exists());
}

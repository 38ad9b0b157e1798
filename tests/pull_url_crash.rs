//! pull-tar and pull-raw killed with SIGKILL in the middle of a download (issue 12): the
//! next pull removes what the dead process left, resumes the partial download it kept
//! (`.#url-<url>.partial`, with its ETag) with a Range request, and succeeds, leaving
//! what a clean pull leaves. A changed ETag or a server ignoring ranges starts over; a
//! partial another process holds is waited for, never touched; two pulls of one URL at
//! once download it once.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::cli::{spawn_watch, TempRoot, Watched};
use common::pull::{compress, is_owner_lock, names, pull, pull_cmd, DirWatch, ImageServer};
use common::tarball::Tarball;

/// What the worker reads from curl at most at once: a resumed pull may fetch this much
/// more than what was missing.
const CHUNK: u64 = 256 << 10;
/// Bytes the server sends the first pull before it stalls.
const STALL_AT: usize = 300_000;

/// `n` bytes that do not compress.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A gzip'd tarball of 1 MiB of noise in four files.
fn tarball(seed: u64) -> Vec<u8> {
    let mut t = Tarball::new();
    for i in 0..4 {
        t.file(&format!("./f{i}"), &noise(256 << 10, seed + i));
    }
    compress("gzip", &t.finish())
}

/// The partial download in `root`, if there is one.
fn partial_in(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(".#url-") && n.ends_with(".partial")
        })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Wait until `root`'s partial download holds `n` bytes; returns its path.
fn wait_for_partial(root: &Path, n: u64) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(p) = partial_in(root).filter(|p| file_len(p) >= n) {
            return p;
        }
        assert!(Instant::now() < deadline, "the partial never grew");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One image on the server and the pulls of it.
struct Case {
    server: ImageServer,
    path: String,
    args: Vec<String>,
}

impl Case {
    fn new(verb: &str, name: &str, body: Vec<u8>, local: &str) -> Case {
        let server = ImageServer::new();
        let path = format!("/images/{name}");
        server.put_verified("/images", name, &body, None);
        server.set_etag(&path, Some("\"v1\""));
        let args = vec![
            "--verify=checksum".to_string(),
            verb.to_string(),
            server.url(&path),
            local.to_string(),
        ];
        Case { server, path, args }
    }

    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    fn spawn(&self, root: &Path) -> Watched {
        spawn_watch(&mut pull_cmd(&self.server, root, None, &self.args()))
    }

    /// Pull with the server stalling after [`STALL_AT`] bytes, and kill -9 the pull once
    /// its partial holds them all. Returns the partial's length.
    fn killed(&self, root: &Path) -> u64 {
        self.server.shape(&self.path, |r| {
            r.stall_after(STALL_AT, Duration::from_secs(600))
        });
        let run = self.spawn(root);
        let partial = wait_for_partial(root, STALL_AT as u64);
        run.signal(Signal::SIGKILL);
        let _ = run.wait();
        self.server.shape(&self.path, |r| r);
        file_len(&partial)
    }

    /// Pull to completion; returns the stderr and the image bytes the server sent.
    fn pulled(&self, root: &Path) -> (String, u64) {
        let before = self.server.bytes_sent(&self.path);
        let out = pull(&self.server, root, None, &self.args());
        assert_eq!(out.status, 0, "{}", out.stderr);
        (out.stderr, self.server.bytes_sent(&self.path) - before)
    }

    /// `root` holds what a clean pull leaves: the cache entry, the image, nothing else.
    fn assert_as_clean(&self, root: &Path, stderr: &str) {
        let clean = TempRoot::new();
        self.pulled(clean.path());
        assert_eq!(names(root), names(clean.path()), "{stderr}");
        assert!(
            names(root).iter().all(|n| !n.starts_with(".#")),
            "{:?}",
            names(root)
        );
    }
}

fn assert_tree(root: &Path, local: &str, seed: u64) {
    for i in 0..4 {
        let got = std::fs::read(root.join(local).join(format!("f{i}"))).unwrap();
        assert!(got == noise(256 << 10, seed + i), "f{i} differs");
    }
}

/// Kill -9 a pull of `case` mid-download, pull again: it resumes, the server sends at
/// most what was not on disk plus a chunk. Returns the root and the second pull's stderr.
fn killed_then_resumed(case: &Case, total: usize) -> (TempRoot, String) {
    let root = TempRoot::new();
    let kept = case.killed(root.path());
    let (stderr, sent) = case.pulled(root.path());
    let missing = total as u64 - kept;
    assert!(
        sent <= missing + CHUNK,
        "sent {sent} bytes again, {missing} were missing: {stderr}"
    );
    assert!(stderr.contains("Resuming download of "), "{stderr}");
    (root, stderr)
}

/// Kill -9 a pull of `case` mid-download, let `change` change the server, pull again: the
/// whole file (`whole` bytes) is sent again. Returns the root and the second stderr.
fn killed_then_pulled_whole(
    case: &Case,
    change: impl FnOnce(&Case),
    whole: usize,
) -> (TempRoot, String) {
    let root = TempRoot::new();
    case.killed(root.path());
    change(case);
    let (stderr, sent) = case.pulled(root.path());
    assert_eq!(sent, whole as u64, "{stderr}");
    (root, stderr)
}

#[test]
fn pull_tar_killed_mid_download_resumes() {
    let body = tarball(1);
    let total = body.len();
    let case = Case::new("pull-tar", "sdimport-tarcrash.tar.gz", body, "tarcrash");
    let (root, stderr) = killed_then_resumed(&case, total);
    assert_tree(root.path(), "tarcrash", 1);
    case.assert_as_clean(root.path(), &stderr);
}

#[test]
fn pull_raw_killed_mid_download_resumes() {
    let body = noise(1 << 20, 7);
    let case = Case::new(
        "pull-raw",
        "sdimport-rawcrash.raw",
        body.clone(),
        "rawcrash",
    );
    let (root, stderr) = killed_then_resumed(&case, body.len());
    assert!(std::fs::read(root.path().join("rawcrash.raw")).unwrap() == body);
    case.assert_as_clean(root.path(), &stderr);
}

/// The file changed between the runs (a new ETag): the kept bytes are not used, the new
/// file is downloaded whole and is what the image holds.
#[test]
fn a_changed_etag_starts_over_with_the_new_file() {
    let case = Case::new("pull-tar", "sdimport-changed.tar.gz", tarball(2), "changed");
    let new = tarball(3);
    let change = |case: &Case| {
        case.server
            .put_verified("/images", "sdimport-changed.tar.gz", &new, None);
        case.server.set_etag(&case.path, Some("\"v2\""));
    };
    let (root, stderr) = killed_then_pulled_whole(&case, change, new.len());
    assert_eq!(case.server.bodies_sent(&case.path), 2, "{stderr}");
    assert_tree(root.path(), "changed", 3);
    case.assert_as_clean(root.path(), &stderr);
}

/// A server that answers a Range request with the whole file (200): the pull starts over
/// and the result is right.
#[test]
fn a_server_ignoring_ranges_starts_over() {
    let body = noise(1 << 20, 4);
    let case = Case::new("pull-raw", "sdimport-norange.raw", body.clone(), "norange");
    let ignore = |case: &Case| case.server.ignore_range(&case.path);
    let (root, stderr) = killed_then_pulled_whole(&case, ignore, body.len());
    assert!(std::fs::read(root.path().join("norange.raw")).unwrap() == body);
    case.assert_as_clean(root.path(), &stderr);
}

/// A partial another (live) process holds is not touched: the pull waits for it, says
/// so, and resumes it once that process is gone.
#[test]
fn a_live_processes_partial_is_waited_for_then_resumed() {
    use std::os::fd::AsRawFd;
    let body = noise(1 << 20, 5);
    let case = Case::new("pull-raw", "sdimport-live.raw", body.clone(), "live");
    let root = TempRoot::new();
    let kept = case.killed(root.path());
    let partial = partial_in(root.path()).unwrap();
    let before = std::fs::read(&partial).unwrap();
    // Another process: this test, holding the partial's lock.
    let lock = std::fs::File::open(&partial).unwrap();
    // SAFETY: a plain flock on an fd we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let sent_before = case.server.bytes_sent(&case.path);
    let run = case.spawn(root.path());
    run.wait_for_stderr_line(
        |l| l.starts_with("Waiting for another process downloading "),
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(std::fs::read(&partial).unwrap() == before, "touched");
    assert_eq!(case.server.bytes_sent(&case.path), sent_before);
    drop(lock);
    let out = run.wait();
    assert_eq!(out.status, 0, "{}", out.stderr);
    let sent = case.server.bytes_sent(&case.path) - sent_before;
    assert!(
        sent <= body.len() as u64 - kept + CHUNK,
        "{sent}: {}",
        out.stderr
    );
    assert!(std::fs::read(root.path().join("live.raw")).unwrap() == body);
    case.assert_as_clean(root.path(), &out.stderr);
}

/// Two pulls of one URL at once (to two local names): the file is served once, the
/// second pull waits for the first and makes its image from the first one's cache entry.
#[test]
fn two_pulls_of_one_url_download_it_once() {
    let case = Case::new("pull-tar", "sdimport-twice.tar.gz", tarball(6), "first");
    case.server.shape(&case.path, |r| {
        r.slow(1 << 20).delay(Duration::from_millis(200))
    });
    let root = TempRoot::new();
    let first = case.spawn(root.path());
    wait_for_partial(root.path(), 1);
    let mut args = case.args();
    args[3] = "second";
    let second = pull(&case.server, root.path(), None, &args);
    let first = first.wait();
    assert_eq!(first.status, 0, "{}", first.stderr);
    assert_eq!(second.status, 0, "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("Waiting for another process downloading "),
        "{}",
        second.stderr
    );
    assert_eq!(case.server.bodies_sent(&case.path), 1, "{}", second.stderr);
    assert_tree(root.path(), "first", 6);
    assert_tree(root.path(), "second", 6);
    assert!(
        names(root.path())
            .iter()
            .all(|n| !n.starts_with(".#") || is_owner_lock(n)),
        "{:?}",
        names(root.path())
    );
}

/// A partial without an ETag is not resumed: the server's file had none, so the bytes
/// were never kept.
#[test]
fn without_an_etag_nothing_is_kept_and_the_pull_starts_over() {
    let body = noise(1 << 20, 8);
    let case = Case::new("pull-raw", "sdimport-noetag.raw", body.clone(), "noetag");
    case.server.set_etag(&case.path, None);
    let root = TempRoot::new();
    let mut watch = DirWatch::new(root.path());
    case.server.shape(&case.path, |r| {
        r.stall_after(STALL_AT, Duration::from_secs(600))
    });
    let run = case.spawn(root.path());
    watch.wait_for(
        libc::IN_MODIFY,
        |n| n.starts_with(".#.raw-"),
        Duration::from_secs(60),
    );
    run.signal(Signal::SIGKILL);
    let _ = run.wait();
    assert_eq!(partial_in(root.path()).map(|p| file_len(&p)), Some(0));
    case.server.shape(&case.path, |r| r);
    let (stderr, sent) = case.pulled(root.path());
    assert_eq!(sent, body.len() as u64, "{stderr}");
    assert!(!stderr.contains("Resuming"), "{stderr}");
    case.assert_as_clean(root.path(), &stderr);
}

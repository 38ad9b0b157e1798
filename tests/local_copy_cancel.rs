//! A signal during a multi-GiB local copy ends the pull within a second (issue 12 item 7:
//! the copy looks at its cancel flag between chunks), and the copy is removed.

mod common;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::cli::{spawn_watch, TempRoot};
use common::pull::{assert_aborted, names, pull, pull_cmd, ImageServer};
use systemd_import::import::store::{cache_path, CacheKind};

/// Bytes of the cache entry the local copy is made from (allocated, not sparse, so the
/// copy cannot skip it as a hole). Its blocks are really taken on the disk under the test
/// root, so it is no larger than the CI machine's free space allows beside a build. The
/// copy's speed is the kernel's and varies tenfold with the page cache's state (0.3 to
/// 3 GiB/s here), so the test measures it before it signals: see [`MIN_LEFT`].
const BIG: i64 = 4 << 30;
/// How long an uncancelled copy must still have to run when the signal comes, at least:
/// the test then asserts the pull ended in under half of that, which a copy that does not
/// look at its cancel flag cannot do.
const MIN_LEFT: Duration = Duration::from_millis(500);

#[test]
fn sigterm_during_a_large_local_raw_copy_ends_within_a_second() {
    let server = ImageServer::new();
    let path = "/images/sdimport-rawtest-big.raw";
    let etag = "\"big\"";
    server.put_with_etag(path, vec![1u8; 4096], etag);
    let url = server.url(path);
    let root = TempRoot::new();
    let local = "sdimport-rawtest-big";
    let args = ["--verify=no", "pull-raw", &url, local];
    let out = pull(&server, root.path(), None, &args);
    assert_eq!(out.status, 0, "{}", out.stderr);
    // The cache entry becomes large: the next pull's ETag matches and copies it.
    let cache = cache_path(root.path(), CacheKind::Raw, &url, Some(etag));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&cache)
        .unwrap();
    nix::fcntl::fallocate(file.as_fd(), nix::fcntl::FallocateFlags::empty(), 0, BIG).unwrap();
    drop(file);
    std::fs::remove_file(root.path().join(format!("{local}.raw"))).unwrap();

    let mut cmd = pull_cmd(&server, root.path(), None, &args);
    let run = spawn_watch(&mut cmd);
    let copy = wait_for_copy(root.path(), local);
    let left = time_left(&copy);
    assert!(
        left > MIN_LEFT,
        "the copy would end in {left:?} anyway: raise BIG so that cancelling it proves something"
    );
    let start = Instant::now();
    run.signal(Signal::SIGTERM);
    let out = run.wait();
    let took = start.elapsed();
    assert_aborted(&out);
    assert!(
        took < Duration::from_secs(1) && took < left / 2,
        "took {took:?} (the copy had {left:?} to go):\n{}",
        out.stderr
    );
    let cache_name = cache.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        names(root.path()),
        [cache_name],
        "only the cache entry is left"
    );
}

/// Wait until the copy's temporary file exists and has data; its path.
fn wait_for_copy(root: &Path, local: &str) -> PathBuf {
    let prefix = format!(".#{local}.raw");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let copying = std::fs::read_dir(root).unwrap().flatten().find(|e| {
            e.file_name().to_string_lossy().starts_with(&prefix)
                && e.metadata().is_ok_and(|m| m.len() > 0)
        });
        if let Some(entry) = copying {
            return entry.path();
        }
        assert!(Instant::now() < deadline, "no copy started");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How long the copy into `copy` would still run uncancelled, from its rate over 50 ms.
fn time_left(copy: &Path) -> Duration {
    let len = || std::fs::metadata(copy).unwrap().len();
    let (t0, len0) = (Instant::now(), len());
    std::thread::sleep(Duration::from_millis(50));
    let (t1, len1) = (Instant::now(), len());
    assert!(len1 > len0, "the copy made no progress in 50 ms");
    let rate = (len1 - len0) as f64 / (t1 - t0).as_secs_f64();
    Duration::from_secs_f64((BIG as u64).saturating_sub(len1) as f64 / rate)
}

//! A signal during a multi-GiB local copy ends the pull within a second (issue 12 item 7:
//! the copy looks at its cancel flag between chunks), and the copy is removed.

mod common;

use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::cli::{spawn_watch, TempRoot};
use common::pull::{assert_aborted, names, pull, pull_cmd, ImageServer};
use systemd_import::import::store::{cache_path, CacheKind};

/// Bytes of the cache entry the local copy is made from (allocated, not sparse).
const BIG: i64 = 6 << 30;

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
    wait_for_copy(root.path(), local);
    let start = Instant::now();
    run.signal(Signal::SIGTERM);
    let out = run.wait();
    let took = start.elapsed();
    assert_aborted(&out);
    assert!(
        took < Duration::from_secs(1),
        "took {took:?}:\n{}",
        out.stderr
    );
    let cache_name = cache.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        names(root.path()),
        [cache_name],
        "only the cache entry is left"
    );
}

/// Wait until the copy's temporary file exists and has data.
fn wait_for_copy(root: &Path, local: &str) {
    let prefix = format!(".#{local}.raw");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let copying = std::fs::read_dir(root).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(&prefix)
                && e.metadata().is_ok_and(|m| m.len() > 0)
        });
        if copying {
            return;
        }
        assert!(Instant::now() < deadline, "no copy started");
        std::thread::sleep(Duration::from_millis(5));
    }
}

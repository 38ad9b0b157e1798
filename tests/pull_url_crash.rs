//! pull-tar and pull-raw killed with SIGKILL in the middle of a download (issue 12): the
//! next pull removes what the dead process left and succeeds, leaving what a clean pull
//! leaves.

mod common;

use std::time::Duration;

use nix::sys::signal::Signal;

use common::cli::{spawn_watch, TempRoot};
use common::pull::{is_owner_lock, names, pull, pull_cmd, temporaries, DirWatch, ImageServer};
use common::tarball::Tarball;

fn killed_then_pulled_again(verb: &str, path: &str, body: Vec<u8>, local: &str, mask: u32) {
    let server = ImageServer::new();
    server.put(path, body);
    server.shape(path, |r| r.stall_after(64 << 10, Duration::from_secs(600)));
    let url = server.url(path);
    let args = ["--verify=no", verb, &url, local];
    let root = TempRoot::new();
    let mut watch = DirWatch::new(root.path());
    let run = spawn_watch(&mut pull_cmd(&server, root.path(), None, &args));
    watch.wait_for(
        mask,
        |n| n.starts_with(".#") && !is_owner_lock(n),
        Duration::from_secs(60),
    );
    run.signal(Signal::SIGKILL);
    let _ = run.wait();
    assert!(!temporaries(root.path()).is_empty());

    server.shape(path, |r| r);
    let out = pull(&server, root.path(), None, &args);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let clean = TempRoot::new();
    assert_eq!(pull(&server, clean.path(), None, &args).status, 0);
    assert_eq!(names(root.path()), names(clean.path()), "{}", out.stderr);
    assert!(
        names(root.path()).iter().all(|n| !n.starts_with(".#")),
        "{:?}",
        names(root.path())
    );
}

#[test]
fn pull_tar_killed_mid_download_then_pulled_again() {
    let mut t = Tarball::new();
    for i in 0..16 {
        t.file(&format!("./f{i}"), &vec![i as u8 + 1; 64 << 10]);
    }
    killed_then_pulled_again(
        "pull-tar",
        "/images/sdimport-tarcrash.tar",
        t.finish(),
        "sdimport-tarcrash",
        libc::IN_CREATE,
    );
}

#[test]
fn pull_raw_killed_mid_download_then_pulled_again() {
    killed_then_pulled_again(
        "pull-raw",
        "/images/sdimport-rawcrash.raw",
        vec![7u8; 1 << 20],
        "sdimport-rawcrash",
        libc::IN_MODIFY,
    );
}

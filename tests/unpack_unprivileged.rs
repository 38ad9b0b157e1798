//! Unpacking without privileges: chown and device nodes are skipped with one warning
//! each, everything else is extracted.
//!
//! Privileges are dropped in one thread only, with raw setresuid/setresgid/setgroups
//! system calls (the libc wrappers would change every thread of the process). This test
//! binary holds a single test so the log capture sees only its own messages.

mod common;

use std::fs;
use std::io::Cursor;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::Mutex;

use common::tarball::{self, Header, Tarball};
use systemd_import::import::unpack::{unpack, Mode, Options};

static LINES: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LINES
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

const NOBODY: u32 = 65534;

fn drop_privileges() {
    // SAFETY: raw system calls that change only the calling thread's credentials.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, NOBODY),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY),
            0
        );
    }
}

#[test]
fn unprivileged_unpack_skips_chown_and_devices_once_each() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Warn);

    let work = tarball::scratch();
    let root = work.path().join("root");
    fs::create_dir(&root).unwrap();
    std::os::unix::fs::chown(&root, Some(NOBODY), Some(NOBODY)).unwrap();

    let mut t = Tarball::new();
    t.entry(&Header::dir("d").owner(1000, 1000).mode(0o750), b"");
    t.entry(&Header::file("d/a").owner(1000, 1000).mode(0o640), b"a");
    t.entry(&Header::file("d/b").owner(0, 0).mode(0o4755), b"b");
    t.entry(&Header::new("d/null", b'3').dev(1, 3), b"");
    t.entry(&Header::new("d/loop", b'4').dev(7, 0), b"");
    t.entry(&Header::new("d/fifo", b'6').mode(0o600), b"");
    t.symlink("d/link", "a").hardlink("d/hard", "d/a");
    t.pax(&[("SCHILY.xattr.user.ok", b"1")]).file("d/x", b"x");
    let data = t.finish();

    let dir = fs::File::open(&root).unwrap();
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            drop_privileges();
            unpack(
                dir.as_fd(),
                &mut Cursor::new(&data),
                &Options::new(Mode::Plain),
            )
        })
        .join()
        .unwrap()
    });
    let stats = result.unwrap();
    assert_eq!(stats.skipped, 2, "two device nodes");

    let md = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    for p in ["d", "d/a", "d/b", "d/fifo", "d/link", "d/x"] {
        assert_eq!((md(p).uid(), md(p).gid()), (NOBODY, NOBODY), "{p}");
    }
    assert_eq!(md("d").mode() & 0o7777, 0o750);
    assert_eq!(md("d/a").mode() & 0o7777, 0o640);
    assert_eq!(md("d/b").mode() & 0o7777, 0o4755);
    assert!(md("d/fifo").file_type().is_fifo());
    assert_eq!(md("d/hard").ino(), md("d/a").ino());
    assert!(!root.join("d/null").exists() && !root.join("d/loop").exists());
    assert_eq!(
        tarball::xattrs(&root.join("d/x"))
            .get(&b"user.ok"[..])
            .map(Vec::as_slice),
        Some(&b"1"[..])
    );

    let lines = LINES.lock().unwrap();
    let warnings: Vec<&String> = lines
        .iter()
        .filter(|(l, _)| *l == log::Level::Warn)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        warnings
            .iter()
            .filter(|m| m.contains("Cannot change file ownership"))
            .count(),
        1,
        "{warnings:?}"
    );
    assert_eq!(
        warnings
            .iter()
            .filter(|m| m.contains("Cannot create device nodes"))
            .count(),
        1,
        "{warnings:?}"
    );
    assert_eq!(warnings.len(), 2, "{warnings:?}");
}

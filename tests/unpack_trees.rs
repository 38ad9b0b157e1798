//! `unpack_trees`: one tar stream unpacked into two trees at once (pull-tar's cache entry
//! and local image where they cannot share data). Both trees come out as one unpack
//! makes them; every failure, of the input, of the archive or of one tree alone, fails
//! the whole with that failure's error.

mod common;

use std::fs;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::tarball::{self, diff, scratch, snapshot, Header, Tarball};
use systemd_import::import::unpack::{self, Mode, Options, Stats};
use systemd_import::util::error::{Error, Result};
use systemd_import::util::fs as ufs;

/// Files of every kind, a hard link, xattrs, owners and times, and enough data (a few
/// MiB) that the stream crosses many of the buffers handed to the unpackers.
fn rich_tar() -> Vec<u8> {
    let mut t = Tarball::new();
    t.entry(&Header::dir("./").mode(0o755).mtime(1_600_000_000), b"");
    t.entry(&Header::dir("./etc").mode(0o750).mtime(1_600_000_001), b"");
    t.entry(
        &Header::file("./etc/passwd").owner(0, 42).mode(0o640),
        b"root:x:0:0::/root:/bin/sh\n",
    );
    t.hardlink("./etc/passwd.link", "./etc/passwd");
    t.symlink("./etc/alias", "passwd");
    t.pax(&[("SCHILY.xattr.user.origin", b"tarball")]);
    t.file("./etc/tagged", b"x");
    t.entry(&Header::new("./fifo", b'6').mode(0o600), b"");
    t.entry(&Header::dir("./data").mode(0o755).mtime(1_600_000_002), b"");
    for i in 0..40u8 {
        let body: Vec<u8> = (0..(100_000 + u32::from(i) * 997))
            .map(|n| (n as u8) ^ i)
            .collect();
        t.file(&format!("./data/f{i}"), &body);
    }
    t.finish()
}

/// Unpack `input` into two fresh directories; returns them with the result.
fn unpack_two(
    input: &mut dyn Read,
    options: &Options,
) -> (tempfile::TempDir, tempfile::TempDir, Result<Stats>) {
    let (a, b) = (scratch(), scratch());
    let result = {
        let (fa, fb) = (
            fs::File::open(a.path()).unwrap(),
            fs::File::open(b.path()).unwrap(),
        );
        unpack::unpack_trees(&[fa.as_fd(), fb.as_fd()], input, options)
    };
    (a, b, result)
}

fn assert_same(expected: &Path, actual: &Path) {
    let d = diff(&snapshot(expected), &snapshot(actual));
    assert!(d.is_empty(), "{}:\n{}", actual.display(), d.join("\n"));
}

#[test]
fn both_trees_are_the_tree_one_unpack_makes() {
    let tar = rich_tar();
    let single = scratch();
    let alone = tarball::unpack_bytes(single.path(), &tar, Mode::Plain).unwrap();
    let options = Options::new(Mode::Plain);
    let (a, b, result) = unpack_two(&mut io::Cursor::new(&tar), &options);
    let stats = result.unwrap();
    assert_eq!(stats, alone);
    assert_eq!(stats.bytes, tar.len() as u64);
    assert_same(single.path(), a.path());
    assert_same(single.path(), b.path());
    // One tree works the same way (the stream read on this thread, unpacked on another).
    let one = scratch();
    let root = fs::File::open(one.path()).unwrap();
    let stats = unpack::unpack_trees(&[root.as_fd()], &mut io::Cursor::new(&tar), &options);
    assert_eq!(stats.unwrap(), alone);
    assert_same(single.path(), one.path());
}

/// Three thousand small files, then big ones: 40 MiB in all, more than the queues between
/// the reader and the unpackers hold (16 MiB each), read much faster than it is
/// unpacked, so that the reader waits on full queues and the unpackers drain at
/// different speeds.
fn long_tar() -> Vec<u8> {
    let mut t = Tarball::new();
    t.entry(&Header::dir("./").mode(0o755), b"");
    for d in 0..30 {
        t.entry(&Header::dir(format!("./small{d}")).mode(0o755), b"");
        for f in 0..100 {
            t.file(&format!("./small{d}/f{f}"), format!("{d}/{f}\n").as_bytes());
        }
    }
    for i in 0..5u8 {
        let body: Vec<u8> = (0..(8 << 20) as u32).map(|n| (n >> 9) as u8 ^ i).collect();
        t.file(&format!("./big{i}"), &body);
    }
    t.finish()
}

#[test]
fn a_stream_longer_than_the_queues_makes_the_same_trees() {
    let tar = long_tar();
    assert!(tar.len() > 40 << 20);
    let single = scratch();
    let alone = tarball::unpack_bytes(single.path(), &tar, Mode::Plain).unwrap();
    let (a, b, result) = unpack_two(&mut io::Cursor::new(&tar), &Options::new(Mode::Plain));
    assert_eq!(result.unwrap(), alone);
    assert_same(single.path(), a.path());
    assert_same(single.path(), b.path());
}

#[test]
fn one_tree_failing_on_a_long_stream_fails_the_whole_and_stops_reading() {
    // The broken tree fails at its first member while the reader is ahead of it; the
    // other tree is stopped and the reader reads no further than the queues allow.
    let tar = long_tar();
    let dirs = [scratch(), scratch()];
    let fds = dirs.each_ref().map(|d| fs::File::open(d.path()).unwrap());
    ufs::set_immutable(fds[1].as_fd(), true).unwrap();
    let mut input = io::Cursor::new(&tar);
    let result = unpack::unpack_trees(
        &[fds[0].as_fd(), fds[1].as_fd()],
        &mut input,
        &Options::new(Mode::Plain),
    );
    ufs::set_immutable(fds[1].as_fd(), false).unwrap();
    assert_eq!(result.unwrap_err().errno(), libc::EPERM);
    assert_eq!(fs::read_dir(dirs[1].path()).unwrap().count(), 0);
    assert!(input.position() < tar.len() as u64, "read to the end");
}

/// The first `limit` bytes of `data`, then `error`.
struct FailingAfter {
    data: io::Cursor<Vec<u8>>,
    limit: u64,
    error: Option<io::Error>,
}

impl Read for FailingAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.limit - self.data.position();
        if left == 0 {
            return Err(self
                .error
                .take()
                .unwrap_or_else(|| io::Error::other("again")));
        }
        let n = buf.len().min(left as usize);
        self.data.read(&mut buf[..n])
    }
}

#[test]
fn an_input_failure_is_the_result_as_the_input_said_it() {
    // An error the input dealt with already (ours, inside the io::Error) comes out as it
    // was, with its message, from both unpackers.
    let ours = Error::with_message(libc::ECONNRESET, "Connection reset.");
    let mut input = FailingAfter {
        data: io::Cursor::new(rich_tar()),
        limit: 1 << 20,
        error: Some(io::Error::new(io::ErrorKind::ConnectionReset, ours)),
    };
    let (_a, _b, result) = unpack_two(&mut input, &Options::new(Mode::Plain));
    let e = result.unwrap_err();
    assert_eq!(e.errno(), libc::ECONNRESET);
    assert_eq!(e.msg(), Some("Connection reset."));
    // A bare errno is the unpacker's to report, as with one tree.
    let mut input = FailingAfter {
        data: io::Cursor::new(rich_tar()),
        limit: 1 << 20,
        error: Some(io::Error::from_raw_os_error(libc::EIO)),
    };
    let (_a, _b, result) = unpack_two(&mut input, &Options::new(Mode::Plain));
    assert_eq!(result.unwrap_err().errno(), libc::EIO);
}

#[test]
fn a_hostile_member_fails_the_whole_as_it_fails_one_unpack() {
    let mut t = Tarball::new();
    t.file("./ok", &vec![1u8; 1 << 20]);
    t.file("../escape", b"nope");
    let tar = t.finish();
    let single = scratch();
    let alone = tarball::unpack_bytes(single.path(), &tar, Mode::Plain).unwrap_err();
    let (a, b, result) = unpack_two(&mut io::Cursor::new(&tar), &Options::new(Mode::Plain));
    assert_eq!(result.unwrap_err().errno(), alone.errno());
    for dir in [a.path(), b.path()] {
        assert!(!dir.parent().unwrap().join("escape").exists());
    }
}

/// Unpack the rich archive into two trees of which tree `broken` is immutable (nothing
/// can be created there, not even by root): the whole fails with that tree's EPERM.
fn one_tree_failing_alone(broken: usize) {
    let tar = rich_tar();
    let dirs = [scratch(), scratch()];
    let fds = dirs.each_ref().map(|d| fs::File::open(d.path()).unwrap());
    ufs::set_immutable(fds[broken].as_fd(), true).unwrap();
    let result = unpack::unpack_trees(
        &[fds[0].as_fd(), fds[1].as_fd()],
        &mut io::Cursor::new(&tar),
        &Options::new(Mode::Plain),
    );
    ufs::set_immutable(fds[broken].as_fd(), false).unwrap();
    assert_eq!(result.unwrap_err().errno(), libc::EPERM);
    assert_eq!(fs::read_dir(dirs[broken].path()).unwrap().count(), 0);
}

#[test]
fn the_second_tree_failing_alone_fails_the_whole_with_its_error() {
    one_tree_failing_alone(1);
}

#[test]
fn the_first_tree_failing_alone_fails_the_whole_with_its_error() {
    one_tree_failing_alone(0);
}

#[test]
fn a_cancelled_unpack_stops_both_trees() {
    let cancel = Arc::new(AtomicBool::new(true));
    let options = Options {
        cancel: Some(cancel),
        ..Options::new(Mode::Plain)
    };
    let (_a, _b, result) = unpack_two(&mut io::Cursor::new(rich_tar()), &options);
    assert_eq!(result.unwrap_err().errno(), libc::ECANCELED);
}

//! `Options::written`: every regular file the unpacker wrote is handed over (complete:
//! content and metadata set) instead of being closed, so pull-oci on btrfs can start its
//! writeback on another thread; a full queue never makes the unpacker wait.

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;

use common::tarball::{self, Header, Tarball};
use systemd_import::import::unpack::{Mode, Options, Written};

fn layer() -> Vec<u8> {
    let mut t = Tarball::new();
    t.dir("etc/")
        .file("etc/hostname", b"box\n")
        .entry(&Header::file("etc/shadow").mode(0o600), b"root:*:\n")
        .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
        .hardlink("etc/hostname.bak", "etc/hostname")
        .file("big", &vec![7u8; 3 << 20]);
    t.finish()
}

/// Unpack [`layer`] in `mode` with a queue of `room` files nobody receives from until the
/// unpack is over; returns the scratch tree and the files queued.
fn unpack_offering(mode: Mode, room: usize) -> (tempfile::TempDir, Vec<Written>) {
    let work = tarball::scratch();
    let (tx, rx) = mpsc::sync_channel(room);
    let options = Options {
        written: Some(tx),
        ..Options::new(mode)
    };
    tarball::unpack_with(work.path(), &mut std::io::Cursor::new(layer()), &options).unwrap();
    drop(options);
    (work, rx.iter().collect())
}

#[test]
fn every_written_file_is_handed_over_complete() {
    let (work, files) = unpack_offering(Mode::Oci, 16);
    let got: Vec<(u64, u32)> = files
        .iter()
        .map(|w| {
            let m = w.file.metadata().unwrap();
            // The size handed over is the file's.
            assert_eq!(w.len, m.len());
            (m.len(), m.mode() & 0o7777)
        })
        .collect();
    // The regular files in stream order (not the directory, symlink or hard link), each
    // with its whole content and its mode already set.
    assert_eq!(got, [(4, 0o644), (8, 0o600), (3 << 20, 0o644)]);
    assert_eq!(
        std::fs::read(work.path().join("etc/hostname")).unwrap(),
        b"box\n"
    );
}

#[test]
fn a_full_queue_closes_the_file_instead_of_waiting() {
    let (work, files) = unpack_offering(Mode::Plain, 1);
    assert_eq!(files.len(), 1);
    assert_eq!(
        std::fs::metadata(work.path().join("big")).unwrap().len(),
        3 << 20
    );
}

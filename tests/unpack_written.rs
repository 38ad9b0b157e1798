//! `Options::written`: every regular file the unpacker wrote is handed over (complete:
//! content and metadata set) instead of being closed, in batches (a few small files, or
//! up to a big one), so pull-oci on btrfs can start its writeback on another thread; a
//! full queue never makes the unpacker wait.

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
        .file("big", &vec![7u8; 3 << 20])
        .file("big2", &vec![8u8; 2 << 20]);
    t.finish()
}

/// Unpack `tar` in `mode` with a queue of `room` batches nobody receives from until the
/// unpack is over; returns the scratch tree and the batches queued.
fn unpack_offering(tar: &[u8], mode: Mode, room: usize) -> (tempfile::TempDir, Vec<Vec<Written>>) {
    let work = tarball::scratch();
    let (tx, rx) = mpsc::sync_channel(room);
    let options = Options {
        written: Some(tx),
        ..Options::new(mode)
    };
    tarball::unpack_with(work.path(), &mut std::io::Cursor::new(tar), &options).unwrap();
    drop(options);
    (work, rx.iter().collect())
}

#[test]
fn every_written_file_is_handed_over_complete() {
    let (work, batches) = unpack_offering(&layer(), Mode::Oci, 16);
    let got: Vec<(u64, u32)> = batches
        .iter()
        .flatten()
        .map(|w| {
            let m = w.file.metadata().unwrap();
            // The size handed over is the file's.
            assert_eq!(w.len, m.len());
            (m.len(), m.mode() & 0o7777)
        })
        .collect();
    // The regular files in stream order (not the directory, symlink or hard link), each
    // with its whole content and its mode already set.
    assert_eq!(
        got,
        [(4, 0o644), (8, 0o600), (3 << 20, 0o644), (2 << 20, 0o644)]
    );
    // A file of a MiB or more ends its batch, so its writeback starts at once: the
    // small files went with the first big one, the second big one alone.
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 1]);
    assert_eq!(
        std::fs::read(work.path().join("etc/hostname")).unwrap(),
        b"box\n"
    );
}

#[test]
fn small_files_go_in_batches_and_the_last_one_at_the_end() {
    let mut t = Tarball::new();
    for i in 0..70 {
        t.file(&format!("f{i:02}"), format!("{i}\n").as_bytes());
    }
    let (work, batches) = unpack_offering(&t.finish(), Mode::Oci, 16);
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [32, 32, 6]);
    // Every file once, in stream order.
    let handed: Vec<u64> = batches
        .iter()
        .flatten()
        .map(|w| w.file.metadata().unwrap().ino())
        .collect();
    let expected: Vec<u64> = (0..70)
        .map(|i| {
            std::fs::metadata(work.path().join(format!("f{i:02}")))
                .unwrap()
                .ino()
        })
        .collect();
    assert_eq!(handed, expected);
}

#[test]
fn a_full_queue_closes_the_batch_instead_of_waiting() {
    let (work, batches) = unpack_offering(&layer(), Mode::Plain, 1);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].len(), 3);
    // The batch that found no room was closed, its file complete.
    assert_eq!(
        std::fs::read(work.path().join("big2")).unwrap(),
        vec![8u8; 2 << 20]
    );
}

//! btrfs: a layer's data on its way to the disk while the layer is still being applied.
//!
//! The read-only snapshot that keeps an applied layer as its chain (made in `apply.rs`)
//! cannot finish before the tree's data is on the disk: it writes out the dirty pages,
//! waits for them, commits, and the commit ends with a flush of the devices' write caches
//! (a loop device writes its whole backing file out then). All of it after the layer's
//! last byte, on the critical path. So each layer has a *writeback* thread, handed the
//! regular files the unpacker has written, in batches of a few small files or one big one
//! (`unpack::Written`; one wake-up per batch): it starts each file's writeback
//! (`sync_file_range`, not waiting), and once [`FLUSH_EVERY`] bytes were started before
//! the file it is handed it asks a *flush* thread to flush the file system's loop devices
//! (`fsync` of each, the flush the commit ends with, without the commit). The snapshot then
//! finds the data written and the devices holding only what came since the last flush.
//! Neither thread is ever waited for by the unpacker: a full queue closes the batch
//! instead, and a flush asked for while one is pending is not asked for twice; one still
//! pending when the layer is applied is not made (the snapshot, waiting for these threads,
//! would only wait for a flush its commit makes anyway). Neither changes what the snapshot
//! holds: they only move work it would do itself to an earlier time and the other core.
//!
//! The flushes go to the block devices, not through the file system: `fdatasync` of a file
//! flushes too, but its log-tree commits held the unpacker up (waits for metadata
//! reservations and tree locks), as a `syncfs` would with whole commits. Only loop
//! devices are flushed (`/var/lib/machines.raw`, the loopback btrfs importd sets up since
//! v220, or the benchmarks' file systems): there a flush is an `fsync` of the backing file,
//! real work worth starting early. A disk's flush only empties its write cache, which the
//! commit's own flush does quickly, and one every few MiB would interrupt every other user
//! of the disk (slow on rotating disks). A device that is not a loop device or cannot be
//! opened (no device node, no permission) means no flushes, only the writeback.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::import::unpack::Written;
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::{btrfs, fs, sys};

/// Batches of files queued for the writeback thread at most (of up to 32 files each,
/// `unpack::Written`): a full queue closes the next batch instead (its data is written
/// out by the snapshot, as without this thread). Each file is an open descriptor, hence
/// the bound.
const QUEUE: usize = 8;
/// Bytes of file data started between two flushes asked for, at least.
const FLUSH_EVERY: u64 = 8 << 20;

/// The writeback thread of one layer. Dropping it lets the thread finish its queue and the
/// flush under way, and joins it.
pub struct Writeback {
    queue: SyncSender<Vec<Written>>,
    thread: Option<JoinHandle<()>>,
}

impl Writeback {
    /// Start the threads for the tree `tree` (its devices are the ones flushed).
    pub fn start(tree: OwnedFd) -> Result<Writeback> {
        let (queue, files) = mpsc::sync_channel::<Vec<Written>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("oci-writeback".into())
            .spawn(move || write_back(&files, tree))
            .map_err(|e| {
                let e = Error::from(e);
                log_error_errno!(e.clone(), "Failed to start writeback thread: {}", e)
            })?;
        Ok(Writeback {
            queue,
            thread: Some(thread),
        })
    }

    /// Where the unpacker hands the files it has written (`unpack::Options::written`).
    pub fn queue(&self) -> SyncSender<Vec<Written>> {
        self.queue.clone()
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        // The unpacker's clone of the sender went with its options.
        let (closed, _) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.queue, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writeback thread: start each file's writeback; now and then have the devices
/// flushed.
fn write_back(batches: &Receiver<Vec<Written>>, tree: OwnedFd) {
    // One flush pending at most: while one runs the data keeps going out, and the next
    // flush covers it.
    let (flush, requests) = mpsc::sync_channel::<()>(1);
    let applied = Arc::new(AtomicBool::new(false));
    let flusher = {
        let applied = applied.clone();
        std::thread::Builder::new()
            .name("oci-flush".into())
            .spawn(move || flush_devices(&requests, &loop_devices(&tree), &applied))
            // Without it the data still goes out early; only the flushes are the snapshot's.
            .ok()
    };
    let (mut started, mut since_flush) = (0u32, 0u64);
    for Written { file, len } in batches.iter().flatten() {
        // A flush covers the files started before this one, whose writes have had time to
        // reach the device; not this file's, which would make the flush wait for them (a
        // layer of one big file would then wait for its flush as it would for the
        // snapshot's). Full: a flush is pending already and covers them.
        if since_flush >= FLUSH_EVERY && flush.try_send(()).is_ok() {
            since_flush = 0;
        }
        // Only an early start: the snapshot writes out whatever this missed.
        let _ = sys::start_writeback(file.as_fd());
        started += 1;
        since_flush += len;
    }
    // The layer is applied and the snapshot waits for this thread: a flush still pending
    // would only come before the commit's own.
    applied.store(true, Ordering::Release);
    drop(flush);
    let flushed = flusher.map_or(0, |t| t.join().unwrap_or(0));
    log::debug!("Writeback started for {started} files; {flushed} device flushes.");
}

/// The loop devices of the file system `tree` is on, open (none if they cannot be found
/// or opened).
fn loop_devices(tree: &OwnedFd) -> Vec<File> {
    match btrfs::device_paths(tree.as_fd()) {
        Ok(paths) => paths
            .iter()
            .filter_map(|p| File::open(p).ok())
            .filter(|f| fs::is_loop_device(f.as_fd()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The flush thread: flush `devices` once per request, until the requests end or the layer
/// is `applied`; returns how many flushes it made.
fn flush_devices(requests: &Receiver<()>, devices: &[File], applied: &AtomicBool) -> u32 {
    if devices.is_empty() {
        return 0;
    }
    let mut count = 0;
    for () in requests {
        if applied.load(Ordering::Acquire) {
            break;
        }
        for device in devices {
            // Only an early start, as the writeback: the snapshot's commit flushes anyway.
            let _ = nix::unistd::fsync(device.as_fd());
        }
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_still_pending_when_the_layer_is_applied_is_not_made() {
        let file = tempfile::tempfile().unwrap();
        let devices = [file];
        let (flush, requests) = mpsc::sync_channel::<()>(1);
        flush.send(()).unwrap();
        drop(flush);
        assert_eq!(
            flush_devices(&requests, &devices, &AtomicBool::new(true)),
            0
        );

        let (flush, requests) = mpsc::sync_channel::<()>(1);
        flush.send(()).unwrap();
        drop(flush);
        assert_eq!(
            flush_devices(&requests, &devices, &AtomicBool::new(false)),
            1
        );
    }
}

//! Written regular files handed to another thread in batches (`Options::written`).
//!
//! The receiver (pull-oci's writeback thread on btrfs) does little per file and so waits
//! for the next one most of the time: handed each file on its own, it was woken once per
//! file and, woken, took the core from the unpacker at once (5,000 switches away per
//! debian layer, the unpacker's most frequent reason to leave the core). A batch of files
//! costs one wake-up. Batches are sent once they hold [`FILES`] files or [`BYTES`] of
//! data, so a big file's writeback still starts as soon as it is written, and at the end
//! of the stream. Never waited for: a batch that finds the queue full is closed instead.

use std::fs::File;
use std::sync::mpsc::SyncSender;

/// A regular file the unpacker has written, with its size (so the receiver need not
/// stat it again).
#[derive(Debug)]
pub struct Written {
    pub file: File,
    /// The file's size in bytes (holes included).
    pub len: u64,
}

/// Files in a batch at most: each is an open descriptor until the receiver is done.
const FILES: usize = 32;
/// Bytes of data in a batch at most (the file that reaches it is the batch's last).
const BYTES: u64 = 1 << 20;

/// The unpacker's end of the queue: the batch being filled.
pub struct Handoff {
    queue: SyncSender<Vec<Written>>,
    batch: Vec<Written>,
    bytes: u64,
}

impl Handoff {
    pub fn new(queue: SyncSender<Vec<Written>>) -> Self {
        Handoff {
            queue,
            batch: Vec::with_capacity(FILES),
            bytes: 0,
        }
    }

    /// Add a file written completely (content and metadata); the batch goes when full.
    pub fn offer(&mut self, file: File, len: u64) {
        self.batch.push(Written { file, len });
        self.bytes += len;
        if self.batch.len() >= FILES || self.bytes >= BYTES {
            self.send();
        }
    }

    /// Send what the batch holds (at the end of the stream). A full queue (or a receiver
    /// gone) closes the files here. Files of a batch never sent, after a failure, are
    /// closed when the unpacker goes.
    pub fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(FILES));
        self.bytes = 0;
        let _ = self.queue.try_send(batch);
    }
}

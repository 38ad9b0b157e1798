//! The content writer: a thread that writes small regular files the unpacker has created,
//! so the unpacking thread goes on with the next member meanwhile (on btrfs a small
//! file's `write` and `futimens` cost about as much as everything else the unpacker does
//! for it).
//!
//! The unpacking thread keeps all the work that depends on the tar's order: it creates
//! the file (`O_EXCL`, replacing what is there), sets its owner and mode, and only then
//! hands over the open file, its content (already read from the stream) and its mtime.
//! The writer writes the content, sets the mtime and hands the file on (`Options::written`)
//! or closes it. A later member that replaces, removes or links the path works on names
//! while the writer works on the inode: a hard link is to the same inode and sees its
//! final content once the unpack is over; a replaced or removed file's inode is written
//! and then dropped. The unpack returns only after the writer finished every file.
//!
//! Only files the order of operations cannot matter for go this way: no xattrs and no
//! set-id bits (a write drops `security.capability` and may drop set-id bits, so those
//! are set after the content, on the unpacking thread), not sparse, and at most
//! [`SMALL`] bytes. At most [`QUEUE`] files wait, so at most `SMALL * QUEUE` bytes of
//! content are in flight; a full queue makes the unpacker wait.
//!
//! Errors: the writer never logs (a second tree's unpacker has its lines held back,
//! `fanout.rs`, and that is per thread). It keeps its first failure, closes every later
//! file unwritten, and the unpacking thread turns the failure into the usual message
//! before its next member, or at the end.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::time::TimeSpec;

use super::{failed, Written};
use crate::util::error::{Error, Result};
use crate::util::fs;

/// Files of at most this many bytes go to the writer.
pub const SMALL: u64 = 1 << 20;
/// Files waiting for the writer at most.
const QUEUE: usize = 16;

/// One file for the writer.
pub struct Job {
    pub file: File,
    pub content: Vec<u8>,
    pub mtime: (i64, u32),
    /// The member name, for the message should this fail.
    pub name: Vec<u8>,
}

/// The writer's first failure: the error, the member name, what failed.
type Failure = (Error, Vec<u8>, &'static str);

#[derive(Default)]
struct Shared {
    failed: AtomicBool,
    failure: Mutex<Option<Failure>>,
}

/// The writer thread of one unpack. Dropping it closes the queue and joins the thread.
pub struct Writer {
    jobs: Option<SyncSender<Job>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Start the thread; None when it cannot be started (the unpacker then writes every
    /// file itself). Written files go to `written` when given.
    pub fn start(written: Option<SyncSender<Written>>) -> Option<Writer> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("unpack-write".into())
            .spawn(move || write_files(&queue, &thread_shared, written.as_ref()))
            .ok()?;
        Some(Writer {
            jobs: Some(jobs),
            shared,
            thread: Some(thread),
        })
    }

    /// Queue `job`, waiting while the queue is full. Fails with the writer's first
    /// failure, if it had one.
    pub fn write(&mut self, job: Job) -> Result<()> {
        self.check()?;
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        let name = match sent {
            Some(Ok(())) => return Ok(()),
            Some(Err(mpsc::SendError(job))) => job.name,
            None => Vec::new(),
        };
        // The thread is gone (it panicked): report what it left, else EIO.
        self.finish()?;
        Err(failed(Errno::EIO, &name, "cannot write"))
    }

    /// The writer's first failure, logged, if it had one.
    pub fn check(&self) -> Result<()> {
        if !self.shared.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let failure = self.shared.failure.lock().map(|mut f| f.take());
        match failure {
            Ok(Some((error, name, what))) => Err(failed(error, &name, what)),
            // Reported once already; the unpack has stopped since.
            _ => Err(Error::new(libc::EIO)),
        }
    }

    /// Wait until every queued file is written; then as [`Writer::check`].
    pub fn finish(&mut self) -> Result<()> {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.check()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The unpack failed elsewhere: the files still queued need not be written.
        self.shared.failed.store(true, Ordering::Release);
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_files(queue: &Receiver<Job>, shared: &Shared, written: Option<&SyncSender<Written>>) {
    for job in queue {
        if shared.failed.load(Ordering::Acquire) {
            continue;
        }
        match write_one(&job) {
            Ok(()) => {
                if let Some(written) = written {
                    let len = job.content.len() as u64;
                    // A full queue (or a receiver gone) closes it here.
                    let _ = written.try_send(Written {
                        file: job.file,
                        len,
                    });
                }
            }
            Err((error, what)) => {
                if let Ok(mut failure) = shared.failure.lock() {
                    *failure = Some((error, job.name, what));
                }
                shared.failed.store(true, Ordering::Release);
            }
        }
    }
}

fn write_one(job: &Job) -> std::result::Result<(), (Error, &'static str)> {
    (&job.file)
        .write_all(&job.content)
        .map_err(|e| (Error::from(e), "cannot write"))?;
    let (sec, nsec) = job.mtime;
    fs::set_mtime(job.file.as_fd(), TimeSpec::new(sec, nsec as _))
        .map_err(|e| (Error::from(e), "cannot set modification time"))
}

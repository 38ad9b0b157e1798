//! One tar stream unpacked into one or more trees at once, each by an unpacker of its own
//! on a thread of its own: pull-tar's cache entry and local image made in the same pass
//! where the file system cannot share extents (the alternative, a copy of the finished
//! cache tree, reads and writes every file a second time, on the critical path).
//!
//! The calling thread reads the input (the job's decompressing reader, so decompression
//! stays there) into fixed-size buffers and hands each buffer, shared, to every unpacker
//! over a bounded queue; a buffer goes back to the pool once every unpacker has copied it
//! out. Even with one tree this overlaps decompression with extraction on two cores.
//! The queues are deep ([`QUEUE`]: 16 MiB of stream) and a buffer goes first to every
//! unpacker with room for it, only then does the reader wait for a full queue: an
//! unpacker slowed by a run of small files (or a journal wait) lets the reader and the
//! other trees run on for that long instead of stopping them at once (with 1 MiB queues
//! the reader spent a quarter to a third of its time blocked on full queues, in two to
//! three times as many waits; bench/README.md). Memory: the queues hold suffixes of the same
//! sequence of shared buffers, so at most `QUEUE` buffers plus the ones being read and
//! filled exist at once, 17 MiB.
//!
//! Every unpacker parses and checks the stream itself ([`unpack`]), so each tree has the
//! hostile-input guarantees of a single unpack. The first tree's unpacker logs as usual;
//! the others' lines are held back ([`log::holding`]) because on the same stream they
//! would say the same things. A failure stops the whole: the other unpackers are handed an
//! error in place of data, which they pass through without a word; the held error lines of
//! a later tree are printed only when that tree failed on its own (no space left there,
//! say) while the first did not. The result is the first failure, or the first tree's
//! statistics.

use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use super::{unpack, Options, Stats};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::log::{self, HeldLine, LOG_ERR};

/// Size of the buffers handed to the unpackers.
const CHUNK: usize = 256 << 10;
/// Buffers queued for each unpacker at most (16 MiB of stream).
const QUEUE: usize = 64;

/// A buffer and how many of its bytes hold data.
type Filled = (Arc<Vec<u8>>, usize);

/// What the unpackers' queues carry: data, or the error each is to read in its place.
type Item = std::result::Result<Filled, Failure>;

/// A read error of the input, kept so that every unpacker reads it as the one reader of
/// the input would have: errors the input has dealt with already (our [`Error`] carried
/// inside, a cancellation, a failed transfer) pass through the unpacker silently, others
/// it reports.
#[derive(Clone, Debug)]
enum Failure {
    /// Our own error, carried inside the `io::Error`.
    Ours(Error),
    /// A bare errno.
    Errno(i32),
    /// Anything else: its kind and text.
    Other(io::ErrorKind, String),
}

impl Failure {
    fn of(e: &io::Error) -> Self {
        if let Some(ours) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            return Failure::Ours(ours.clone());
        }
        match e.raw_os_error() {
            Some(errno) => Failure::Errno(errno),
            None => Failure::Other(e.kind(), e.to_string()),
        }
    }

    fn to_io(&self) -> io::Error {
        match self {
            Failure::Ours(e) => {
                let kind = io::Error::from_raw_os_error(e.errno()).kind();
                io::Error::new(kind, e.clone())
            }
            Failure::Errno(errno) => io::Error::from_raw_os_error(*errno),
            Failure::Other(kind, text) => io::Error::new(*kind, text.clone()),
        }
    }
}

/// What one unpacker thread hands back: its result and the lines it held back.
type Outcome = (Result<Stats>, Vec<HeldLine>);

/// Unpack `input` into each tree of `roots` (directory fds), as [`unpack`] would into
/// one, on one thread per tree; the calling thread reads `input` to its end (or to the
/// first failure). Errors are logged once.
pub fn unpack_trees(
    roots: &[BorrowedFd<'_>],
    input: &mut dyn Read,
    options: &Options,
) -> Result<Stats> {
    std::thread::scope(|scope| {
        let mut feeds = Vec::with_capacity(roots.len());
        let mut threads = Vec::with_capacity(roots.len());
        for (i, root) in roots.iter().copied().enumerate() {
            let (tx, rx) = mpsc::sync_channel::<Item>(QUEUE);
            let options = options.clone();
            let spawned = std::thread::Builder::new()
                .name("import-unpack".into())
                .spawn_scoped(scope, move || -> Outcome {
                    let mut reader = QueueReader::new(rx);
                    if i == 0 {
                        (unpack(root, &mut reader, &options), Vec::new())
                    } else {
                        log::holding(LOG_ERR, || unpack(root, &mut reader, &options))
                    }
                });
            match spawned {
                Ok(thread) => {
                    feeds.push(Some(tx));
                    threads.push(thread);
                }
                Err(e) => {
                    // The threads started stop at the end of their (closed) queues.
                    drop(feeds);
                    let e = Error::from(e);
                    return Err(log_error_errno!(
                        e.clone(),
                        "Failed to start unpacking thread: {}",
                        e
                    ));
                }
            }
        }
        let fed = feed(input, &mut feeds);
        drop(feeds);
        let outcomes: Vec<Outcome> = threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| (Err(Error::new(libc::EIO)), Vec::new()))
            })
            .collect();
        settle(fed, outcomes)
    })
}

/// How feeding ended.
enum Fed {
    /// The input ended and every unpacker took all of it.
    All,
    /// Reading the input failed; every unpacker was handed the error.
    InputFailed(Failure),
    /// Unpacker `i` stopped taking data (it failed); the others were handed a
    /// cancellation.
    Stopped(usize),
}

/// Read `input` into buffers and queue each to every unpacker, until the input ends or
/// fails or an unpacker stops.
fn feed(input: &mut dyn Read, feeds: &mut [Option<SyncSender<Item>>]) -> Fed {
    let mut pool: Vec<Arc<Vec<u8>>> = Vec::new();
    loop {
        // A buffer no unpacker holds any more, or a new one.
        let mut buf = match pool.iter().position(|b| Arc::strong_count(b) == 1) {
            Some(i) => pool.swap_remove(i),
            None => Arc::new(vec![0; CHUNK]),
        };
        let Some(data) = Arc::get_mut(&mut buf) else {
            unreachable!("a buffer taken from the pool is held nowhere else");
        };
        let mut filled = 0;
        while filled < CHUNK {
            match input.read(&mut data[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let failure = Failure::of(&e);
                    for tx in feeds.iter().flatten() {
                        let _ = tx.send(Err(failure.clone()));
                    }
                    return Fed::InputFailed(failure);
                }
            }
        }
        if filled == 0 {
            return Fed::All;
        }
        if let Some(i) = queue_to_all(feeds, &buf, filled) {
            // That unpacker returned before the end of the input: it failed.
            feeds[i] = None;
            for tx in feeds.iter().flatten() {
                let _ = tx.send(Err(Failure::Ours(Error::new(libc::ECANCELED))));
            }
            return Fed::Stopped(i);
        }
        pool.push(buf);
    }
}

/// Queue `buf` to every unpacker: first to those with room, then (waiting) to the
/// others, so that one unpacker's full queue does not hold back the rest. Returns the
/// first unpacker that no longer takes data (it returned: it failed).
fn queue_to_all(
    feeds: &[Option<SyncSender<Item>>],
    buf: &Arc<Vec<u8>>,
    filled: usize,
) -> Option<usize> {
    let mut full = Vec::new();
    for (i, tx) in feeds.iter().enumerate() {
        let Some(tx) = tx else { continue };
        match tx.try_send(Ok((buf.clone(), filled))) {
            Ok(()) => {}
            Err(TrySendError::Full(item)) => full.push((i, tx, item)),
            Err(TrySendError::Disconnected(_)) => return Some(i),
        }
    }
    full.into_iter()
        .find_map(|(i, tx, item)| tx.send(item).is_err().then_some(i))
}

/// The pull's result from how feeding ended and what each unpacker returned: the first
/// tree's failure, else a later tree's own failure (its held error lines printed), else
/// the input's failure, else the first tree's statistics.
fn settle(fed: Fed, outcomes: Vec<Outcome>) -> Result<Stats> {
    let stopped_first = match fed {
        Fed::Stopped(i) => Some(i),
        _ => None,
    };
    // A tree handed a cancellation because another failed did not fail on its own.
    let own_failure = |i: usize, r: &Result<Stats>| {
        r.is_err() && (stopped_first.is_none() || stopped_first == Some(i))
    };
    let mut outcomes = outcomes.into_iter().enumerate();
    let Some((_, (first, _))) = outcomes.next() else {
        return Err(Error::new(libc::EINVAL));
    };
    if own_failure(0, &first) {
        return first;
    }
    for (i, (result, held)) in outcomes {
        if own_failure(i, &result) {
            log::release(&held);
            return result;
        }
    }
    if let Fed::InputFailed(failure) = fed {
        return Err(Error::from(failure.to_io()));
    }
    first
}

/// The unpacker's side of its queue: a reader over the shared buffers.
struct QueueReader {
    queue: Receiver<Item>,
    /// The buffer being read (released when the next one comes).
    current: Option<Arc<Vec<u8>>>,
    /// Bytes of `current` that hold data.
    len: usize,
    pos: usize,
}

impl QueueReader {
    fn new(queue: Receiver<Item>) -> Self {
        QueueReader {
            queue,
            current: None,
            len: 0,
            pos: 0,
        }
    }
}

impl Read for QueueReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos >= self.len {
            // Give the spent buffer back before waiting for the next one.
            self.current = None;
            match self.queue.recv() {
                // The input ended (the feeder dropped its end).
                Err(_) => return Ok(0),
                Ok(Err(failure)) => return Err(failure.to_io()),
                Ok(Ok((next, len))) => {
                    self.current = Some(next);
                    self.len = len;
                    self.pos = 0;
                }
            }
        }
        let Some(current) = &self.current else {
            return Ok(0);
        };
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

//! The job's worker thread: everything heavy that happens to a download's bytes.
//!
//! The loop thread only queues the body chunks curl hands it ([`Channel`]); the worker
//! detects the compression, hashes the bytes as served (SHA-256 for SHA256SUMS and
//! digests), decompresses, enforces the uncompressed limit, and feeds the [`Sink`]: a
//! memory buffer, a (sparse) file, or a stream consumer such as the unpacker. So many
//! downloads progress at once and a slow disk or codec never stalls the loop. The
//! pieces of that pipeline are `import::stream`'s; this file owns the queue, the limit
//! and the C job's messages.
//!
//! Back-pressure: when more than the job's queue limit ([`DEFAULT_QUEUE_LIMIT`] unless the
//! owner chose another) is queued, the write callback pauses the transfer; the worker wakes
//! the loop (eventfd) once it has drained the queue to a quarter of the limit, and the loop
//! unpauses. Memory per job is therefore bounded.
//!
//! Gathering: curl hands the body over one TLS record (at most 16 KiB) per callback; the
//! queue appends them to buffers of [`GATHER`] bytes (reused once emptied) and wakes a
//! waiting worker only once [`WAKE_AT`] bytes are queued (or after [`WAKE_AFTER`]), so
//! the worker reads, writes and wakes its readers per quarter MiB, not per record.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use nix::unistd::Whence;
use sha2::{Digest, Sha256};

use super::spool::{SpoolTo, SpooledInput};
use super::{ResponseMeta, Sink, StreamContext};
use crate::import::stream::{self, Compression, Decoder, HashingReader};
use crate::log_error_errno;
use crate::util::dialect::Dialect;
use crate::util::error::{Error, Result};
use crate::util::{fs, sys};

/// Pause the transfer when this many bytes wait for the worker (per job).
pub const DEFAULT_QUEUE_LIMIT: usize = 4 << 20;
/// Block size for reading the decompressed stream into files and memory.
const BLOCK: usize = 256 << 10;
/// Runs of NUL bytes longer than this are written as holes (the C job's value).
const SPARSE_RUN: usize = 64;
/// Body chunks are gathered into buffers of this size (curl hands over a TLS record, at
/// most 16 KiB, per callback): the worker takes, and writes, up to this much at a time.
const GATHER: usize = 256 << 10;
/// A waiting worker is woken once this much is queued (or the queue limit's quarter, if
/// smaller), not for every callback ...
const WAKE_AT: usize = 64 << 10;
/// ... and takes what is queued after this long anyway, so a slow body still flows.
const WAKE_AFTER: Duration = Duration::from_millis(20);
/// Emptied buffers kept for the producer to fill again.
const SPARE: usize = 2;

/// How the body ended, as the loop saw it.
#[derive(Debug)]
pub(crate) enum InputEnd {
    /// curl delivered the whole body.
    Complete,
    /// The transfer failed or was abandoned; the worker must stop with this error.
    Aborted(Error),
}

/// What the worker hands back when it has consumed the whole body.
#[derive(Default, Debug)]
pub(crate) struct WorkerOutput {
    /// Lowercase hex SHA-256 of the bytes as served, if asked for.
    pub checksum: Option<String>,
    /// Lowercase hex SHA-256 of the decompressed stream, if asked for.
    pub uncompressed_checksum: Option<String>,
    pub written_uncompressed: u64,
    /// The body, for [`Sink::Memory`].
    pub payload: Vec<u8>,
    pub compression: Option<Compression>,
    /// Where the bytes of this transfer start in the whole (a resumed download's offset;
    /// 0 when the server sent everything).
    pub resumed_from: u64,
}

/// State shared by the loop thread (producer) and the worker (consumer).
pub(crate) struct ChannelState {
    pub meta: Option<ResponseMeta>,
    /// The body as queued, in order; the producer appends to the last buffer while it
    /// has room (see [`GATHER`]).
    chunks: VecDeque<Vec<u8>>,
    /// Bytes in `chunks`.
    queued: usize,
    /// Buffers the worker emptied, for the producer to reuse (at most [`SPARE`]).
    spare: Vec<Vec<u8>>,
    pub input_end: Option<InputEnd>,
    /// The loop paused the transfer and wants a wake-up once the queue drained.
    pub paused: bool,
    /// The worker is blocked waiting for input (so the producer must notify).
    worker_waiting: bool,
    /// Set once by the worker when it is done, either way.
    pub outcome: Option<Result<WorkerOutput>>,
}

/// The queue between the loop and the worker, plus the wake-up eventfd.
pub(crate) struct Channel {
    state: Mutex<ChannelState>,
    /// Pause at this many queued bytes, resume at a quarter of it.
    high_water: usize,
    low_water: usize,
    /// Wake a waiting worker once this many bytes are queued.
    wake_at: usize,
    cond: Condvar,
    /// Set to stop the worker early; shared with stream sinks (the unpacker polls it).
    pub cancel: Arc<AtomicBool>,
    /// Readable when the loop should look at the job (queue drained, or worker finished).
    pub wake: EventFd,
    /// The worker thread, once spawned; joined by the job.
    pub thread: Mutex<Option<JoinHandle<()>>>,
}

impl Channel {
    pub fn new(queue_limit: usize) -> Result<Arc<Channel>> {
        let wake =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Arc::new(Channel {
            state: Mutex::new(ChannelState {
                meta: None,
                chunks: VecDeque::new(),
                queued: 0,
                spare: Vec::new(),
                input_end: None,
                paused: false,
                worker_waiting: false,
                outcome: None,
            }),
            high_water: queue_limit.max(1),
            low_water: queue_limit / 4,
            wake_at: (queue_limit / 4).clamp(1, WAKE_AT),
            cond: Condvar::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            wake,
            thread: Mutex::new(None),
        }))
    }

    pub fn lock(&self) -> MutexGuard<'_, ChannelState> {
        // A worker that panicked poisons the lock; its state is still consistent enough to
        // report failure, and we must never panic on the loop thread because of it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Producer side: queue a chunk unless the queue is full. Returns false (and marks the
    /// channel paused) when the caller must pause the transfer.
    pub fn push(&self, chunk: &[u8]) -> bool {
        let mut st = self.lock();
        if st.queued >= self.high_water {
            st.paused = true;
            return false;
        }
        st.queued += chunk.len();
        match st.chunks.back_mut() {
            Some(last) if last.capacity() - last.len() >= chunk.len() => {
                last.extend_from_slice(chunk)
            }
            _ => {
                let mut buf = st
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(GATHER.max(chunk.len())));
                buf.extend_from_slice(chunk);
                st.chunks.push_back(buf);
            }
        }
        if st.worker_waiting && st.queued >= self.wake_at {
            self.cond.notify_one();
        }
        true
    }

    /// Producer side: no more input.
    pub fn end(&self, end: InputEnd) {
        let mut st = self.lock();
        if st.input_end.is_none() {
            st.input_end = Some(end);
        }
        self.cond.notify_all();
    }

    /// Stop the worker as soon as possible.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
        self.end(InputEnd::Aborted(Error::new(libc::ECANCELED)));
    }

    /// Ask the loop to look at this job.
    fn wake_loop(&self) {
        // A full counter (EAGAIN) is still readable: the loop wakes either way.
        let _ = self.wake.write(1);
    }

    /// Loop side: consume the wake-up (EAGAIN: there was none).
    pub fn clear_wake(&self) {
        let _ = self.wake.read();
    }

    /// Join the worker thread if one was spawned.
    pub fn join(&self) {
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

/// Reads the queued body chunks, blocking until more arrive.
struct ChannelReader {
    channel: Arc<Channel>,
    /// The chunk being read and the offset into it.
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos >= self.current.len() {
            let mut st = self.channel.lock();
            loop {
                if self.channel.cancel.load(Ordering::Acquire) {
                    return Err(handled(Error::new(libc::ECANCELED)));
                }
                if let Some(chunk) = st.chunks.pop_front() {
                    st.queued -= chunk.len();
                    if st.paused && st.queued <= self.channel.low_water {
                        st.paused = false;
                        self.channel.wake_loop();
                    }
                    let mut done = std::mem::replace(&mut self.current, chunk);
                    if done.capacity() == GATHER && st.spare.len() < SPARE {
                        done.clear();
                        st.spare.push(done);
                    }
                    self.pos = 0;
                    break;
                }
                match &st.input_end {
                    Some(InputEnd::Complete) => return Ok(0),
                    Some(InputEnd::Aborted(e)) => return Err(handled(e.clone())),
                    None => {}
                }
                st.worker_waiting = true;
                st = self
                    .channel
                    .cond
                    .wait_timeout(st, WAKE_AFTER)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                st.worker_waiting = false;
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// An error the job has already dealt with (a cancellation, a failed transfer), carried
/// inside the `io::Error` so that stream consumers see our `Error` and pass it on without
/// logging it again (the unpacker's contract); a bare errno would look like a new failure.
fn handled(e: Error) -> io::Error {
    let kind = io::Error::from_raw_os_error(e.errno()).kind();
    io::Error::new(kind, e)
}

/// The decoded stream as the job checks it: turns codec failures into the C job's
/// "Decompression error." and enforces the uncompressed limit, logging each once at the
/// failure site.
struct Checked<'a> {
    inner: Decoder<'a>,
    /// Decompressed bytes handed out.
    count: u64,
    max: u64,
    /// What exceeding `max` says: v219 has no full stop there, v252 has.
    too_large: &'static str,
}

/// The decompressed stream, hashed if asked for.
type Decompressed<'a> = HashingReader<Checked<'a>, Option<Sha256>>;

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                // Errors of our own (cancel, a failed transfer) pass through unchanged.
                if !stream::is_codec_error(&e) {
                    return Err(e);
                }
                log::debug!("Decoder failed: {e}");
                let err = log_error_errno!(Error::new(libc::EIO), "Decompression error.");
                return Err(err.into());
            }
        };
        let total = self.count.checked_add(n as u64).ok_or_else(|| {
            io::Error::from(log_error_errno!(
                Error::new(libc::EOVERFLOW),
                "File too large, overflow"
            ))
        })?;
        if total > self.max {
            let err = log_error_errno!(Error::new(libc::EFBIG), "{}", self.too_large);
            return Err(err.into());
        }
        self.count = total;
        Ok(n)
    }
}

/// Everything the worker needs, moved into its thread.
pub(crate) struct WorkerSpec {
    pub url: String,
    pub sink: Sink,
    /// Sniff the compression (the C behaviour) or take the bytes as they are.
    pub detect_compression: bool,
    pub calc_checksum: bool,
    /// Seed for the checksum when resuming a partial download.
    pub checksum_seed: Option<Sha256>,
    pub hash_uncompressed: bool,
    pub uncompressed_max: u64,
    /// Offset the transfer was asked to resume from (Range request), if any.
    pub resume_from: Option<u64>,
    /// The inclusive end of the range asked for, if not the body's end.
    pub range_end: Option<u64>,
    /// Whose messages the worker logs.
    pub dialect: Dialect,
    /// Keep the bytes as served in this partial download (and resume after what it
    /// holds): see `spool.rs`.
    pub spool: Option<SpoolTo>,
}

/// Spawn the worker thread for `channel`.
pub(crate) fn spawn(channel: &Arc<Channel>, spec: WorkerSpec) -> Result<()> {
    let ch = channel.clone();
    let thread = std::thread::Builder::new()
        .name("import-job".into())
        .spawn(move || {
            // A panic (a bug, never an expected outcome) must still end the job: without an
            // outcome the loop would wait for this worker forever.
            let url = spec.url.clone();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&ch, spec)))
                .unwrap_or_else(|_| {
                    Err(log_error_errno!(
                        Error::new(libc::EIO),
                        "Internal error while processing {url}."
                    ))
                });
            ch.lock().outcome = Some(outcome);
            ch.wake_loop();
        })
        .map_err(Error::from)?;
    *channel.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
    Ok(())
}

/// The pipeline. Errors are logged where they are detected.
fn run(channel: &Arc<Channel>, spec: WorkerSpec) -> Result<WorkerOutput> {
    let meta = channel
        .lock()
        .meta
        .clone()
        .ok_or_else(|| Error::new(libc::EPROTO))?;

    let mut resume_from = spec.resume_from;
    let mut seed = spec.checksum_seed;
    if let Some(offset) = resume_from {
        // A 206 must continue exactly where we asked; a 200 means the server ignored the
        // Range header and sends everything again, so start over.
        if meta.status == 206 {
            let range = meta
                .header("Content-Range")
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('/').next())
                .and_then(|v| v.split_once('-'));
            let number = |v: &str| v.trim().parse::<u64>().ok();
            if range.and_then(|(s, _)| number(s)) != Some(offset) {
                return Err(log_error_errno!(
                    Error::new(libc::EPROTO),
                    "Server resumed {} at the wrong offset (asked for {}).",
                    spec.url,
                    offset
                ));
            }
            if let Some(end) = spec.range_end {
                if range.and_then(|(_, e)| number(e)) != Some(end) {
                    return Err(log_error_errno!(
                        Error::new(libc::EPROTO),
                        "Server answered the range {offset}-{end} of {} with another one.",
                        spec.url
                    ));
                }
            }
        } else {
            log::debug!(
                "Server ignored the range request for {}, starting over.",
                spec.url
            );
            resume_from = None;
            seed = None;
        }
    }

    let queue = ChannelReader {
        channel: channel.clone(),
        current: Vec::new(),
        pos: 0,
    };
    let reader = match spec.spool {
        Some(spool) => SpooledInput::new(queue, channel.cancel.clone(), spool, &meta, &spec.url)?,
        None => SpooledInput::plain(queue, channel.cancel.clone()),
    };
    let hasher = (spec.calc_checksum || seed.is_some()).then(|| seed.unwrap_or_default());
    let mut served = HashingReader::new(reader, hasher);

    let (compression, decoder) = if spec.detect_compression {
        let (c, input) = stream::sniff(&mut served).map_err(Error::from)?;
        c.log_detection();
        let decoder = c.decoder(input).map_err(|e| {
            log::debug!("{e}");
            log_error_errno!(
                Error::new(libc::EIO),
                "Failed to initialize {} decoder.",
                c.label()
            )
        })?;
        (Some(c), decoder)
    } else {
        let passthrough = Compression::Uncompressed.decoder(&mut served);
        (None, passthrough.map_err(Error::from)?)
    };
    let checked = Checked {
        inner: decoder,
        count: 0,
        max: spec.uncompressed_max,
        too_large: match spec.dialect {
            Dialect::V219 => "File overly large, refusing",
            Dialect::V252 => "File overly large, refusing.",
        },
    };
    let mut decoded = HashingReader::new(checked, spec.hash_uncompressed.then(Sha256::new));

    let mut out = WorkerOutput {
        compression,
        resumed_from: resume_from.unwrap_or(0),
        ..Default::default()
    };
    match spec.sink {
        Sink::Memory => {
            decoded.read_to_end(&mut out.payload).map_err(Error::from)?;
        }
        Sink::File(fd) => write_file(fd, &mut decoded, &meta, resume_from, false)?,
        Sink::FileAt(fd, offset) => write_file(fd, &mut decoded, &meta, Some(offset), true)?,
        Sink::Stream(consume) => {
            let ctx = StreamContext {
                meta: meta.clone(),
                cancel: channel.cancel.clone(),
            };
            consume(&ctx, &mut decoded)?;
            // Whatever the consumer left (a tar archive's trailing blocks) still counts
            // for the limits and the checksums.
            io::copy(&mut decoded, &mut io::sink()).map_err(Error::from)?;
        }
    }
    out.written_uncompressed = decoded.get_ref().count;
    out.uncompressed_checksum = decoded.into_parts().1.map(stream::hex);
    out.checksum = served.into_parts().1.map(stream::hex);
    if let Some(sum) = &out.checksum {
        log::debug!("SHA256 of {} is {}.", spec.url, sum);
    }
    Ok(out)
}

/// Disk mode: write the decompressed stream to `fd`, sparse when it is a regular file, and
/// finish it like the C job does: truncate to the size written, record the source in
/// xattrs and the server's Last-Modified as mtime. `in_place` writes at `resume_from`
/// of an existing file and does none of that finishing ([`Sink::FileAt`]).
fn write_file(
    fd: OwnedFd,
    stream: &mut Decompressed<'_>,
    meta: &ResponseMeta,
    resume_from: Option<u64>,
    in_place: bool,
) -> Result<()> {
    let start = resume_from.unwrap_or(0);
    // Seekable means a regular file: write sparse. A pipe gives ESPIPE: plain writes.
    let allow_sparse = match nix::unistd::lseek(&fd, start as i64, Whence::SeekSet) {
        Ok(_) => true,
        Err(Errno::ESPIPE) => false,
        Err(e) => {
            let e = Error::from(e);
            return Err(log_error_errno!(
                e.clone(),
                "Failed to seek on file descriptor: {}",
                e
            ));
        }
    };
    // In place the zeros must be written: what was there before is not a hole.
    let allow_sparse = allow_sparse && !in_place;
    if allow_sparse && resume_from.is_none() {
        // A restart after a resume attempt: drop what the earlier attempt wrote.
        nix::unistd::ftruncate(&fd, 0).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to truncate file: {}", e)
        })?;
    }
    let mut buf = vec![0u8; BLOCK];
    let mut file = std::fs::File::from(fd);
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        let data = &buf[..n];
        let r = if allow_sparse {
            fs::sparse_write(file.as_fd(), data, SPARSE_RUN).map(|_| ())
        } else {
            file.write_all(data).map_err(Error::from)
        };
        if let Err(e) = r {
            return Err(log_error_errno!(e.clone(), "Failed to write file: {}", e));
        }
    }
    if allow_sparse {
        let size = start + stream.get_ref().count;
        nix::unistd::ftruncate(&file, size as i64).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to truncate file: {}", e)
        })?;
        let fd = file.as_fd();
        // Errors here are ignored, as in the C job: the metadata is a courtesy.
        if let Some(etag) = &meta.etag {
            let _ = sys::fsetxattr(fd, c"user.source_etag", etag.as_bytes());
        }
        let _ = sys::fsetxattr(fd, c"user.source_url", meta.url.as_bytes());
        if let Some(mtime) = meta.last_modified {
            let ts = TimeSpec::from(Duration::from_micros(mtime));
            let _ = fs::set_times(fd, ts, ts);
            let _ = sys::fsetxattr(fd, c"user.crtime_usec", &mtime.to_le_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_or_failed_body_reads_as_an_error_consumers_pass_on() {
        let cancelled = Channel::new(DEFAULT_QUEUE_LIMIT).unwrap();
        cancelled.cancel();
        let failed = Channel::new(DEFAULT_QUEUE_LIMIT).unwrap();
        failed.end(InputEnd::Aborted(Error::with_message(
            libc::EIO,
            "Download truncated.",
        )));
        for (channel, errno) in [(cancelled, libc::ECANCELED), (failed, libc::EIO)] {
            let mut reader = ChannelReader {
                channel,
                current: Vec::new(),
                pos: 0,
            };
            let e = reader.read(&mut [0u8; 8]).unwrap_err();
            // The unpacker checks exactly this before it logs a read error.
            assert!(e.get_ref().is_some_and(|inner| inner.is::<Error>()));
            assert_eq!(Error::from(e).errno(), errno);
        }
    }

    #[test]
    fn the_queue_pauses_at_its_limit_and_wakes_the_loop_at_a_quarter() {
        // Chunks bigger than a gathering buffer each get their own.
        const BIG: usize = GATHER + 1;
        let channel = Channel::new(3 * BIG).unwrap();
        assert!(channel.push(&[1u8; 2 * BIG]));
        assert!(
            channel.push(&[2u8; 2 * BIG]),
            "below the limit before this push"
        );
        assert!(!channel.push(&[3u8; 1]), "4 BIG queued: full");
        assert!(channel.lock().paused);
        let mut reader = ChannelReader {
            channel: channel.clone(),
            current: Vec::new(),
            pos: 0,
        };
        let mut buf = vec![0u8; 2 * BIG];
        reader.read_exact(&mut buf).unwrap();
        assert!(channel.lock().paused, "2 BIG queued: above a quarter");
        reader.read_exact(&mut buf).unwrap();
        assert!(
            !channel.lock().paused,
            "drained: the loop is woken to unpause"
        );
        assert_eq!(channel.wake.read(), Ok(1), "the eventfd was signalled");
    }

    #[test]
    fn callbacks_are_gathered_into_big_reads_and_a_trickle_still_flows() {
        let channel = Channel::new(DEFAULT_QUEUE_LIMIT).unwrap();
        // Twenty TLS records' worth: one buffer and a bit of the next.
        for i in 0..20u8 {
            assert!(channel.push(&[i; 16 << 10]));
        }
        assert_eq!(channel.lock().chunks.len(), 2);
        let mut reader = ChannelReader {
            channel: channel.clone(),
            current: Vec::new(),
            pos: 0,
        };
        let mut buf = vec![0u8; 1 << 20];
        assert_eq!(reader.read(&mut buf).unwrap(), GATHER);
        assert!(buf[..GATHER]
            .chunks(16 << 10)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| usize::from(b) == i)));
        assert_eq!(reader.read(&mut buf).unwrap(), 4 * (16 << 10));
        // The emptied buffer is filled again rather than a new one allocated.
        assert_eq!(channel.lock().spare.len(), 1);
        assert!(channel.push(&[7u8; 10]));
        assert_eq!(channel.lock().spare.len(), 0);
        // A waiting worker is not woken for 10 bytes, yet takes them within a moment.
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let mut small = [0u8; 64];
            // The 10 bytes queued before: taken at once.
            let first = reader.read(&mut small).unwrap();
            // Then it waits: 3 bytes pushed below come without a notification.
            let second = reader.read(&mut small).unwrap();
            tx.send((first, second)).unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(channel.push(&[8u8; 3]));
        let got = rx.recv_timeout(Duration::from_secs(5));
        assert_eq!(got, Ok((10, 3)), "a trickle waits at most {WAKE_AFTER:?}");
        worker.join().unwrap();
    }
}

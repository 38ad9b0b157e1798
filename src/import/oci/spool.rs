//! Spool files: a layer blob on its way from the network to the unpacker.
//!
//! The download job's worker writes the blob, as served, into a file under the image root
//! ([`consumer`]); the layer's apply task reads it back *while it grows*
//! ([`SpoolReader`]), so a layer is decompressed and unpacked during its own download
//! instead of after it. The reader sees the end of the file only once the loop has
//! verified the blob's size and digest ([`Spool::complete`]); if the blob is refused or
//! the pull abandoned, the reader gets an error instead ([`Spool::abort`]). Nothing the
//! reader produced becomes visible before that, so streaming costs no safety.
//!
//! Retries keep the file: a resumed attempt (206) appends at its offset, an attempt that
//! starts over (200) rewrites it from the start, and a reader that is further along waits
//! until the rewrite passes its position (if the new bytes differ, the digest and DiffID
//! checks fail the pull).
//!
//! A blob fetched in ranges ([`ranges`](super::ranges)) is written out of order: each part
//! reports the bytes it put on disk ([`Spool::extend`]) and `written` is the contiguous
//! prefix of them, all readers ever see; the parts beyond it wait in `ahead`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::import::job::StreamConsumer;
use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// Size of the writes into and the reads from the file.
const CHUNK: usize = 256 << 10;

struct SpoolState {
    /// Bytes of the file that hold data of the current attempt (a ranged fetch: the
    /// contiguous prefix of its parts).
    written: u64,
    /// A ranged fetch's extents beyond `written`, start to end (each part's bytes from its
    /// start; written by the parts' workers).
    ahead: BTreeMap<u64, u64>,
    /// `Some(Ok)`: complete and verified; `Some(Err)`: abandoned.
    end: Option<Result<()>>,
}

/// What the writer, the readers and the loop share about one spool file.
pub struct Spool {
    state: Mutex<SpoolState>,
    cond: Condvar,
}

impl Spool {
    pub fn new() -> Arc<Spool> {
        Arc::new(Spool {
            state: Mutex::new(SpoolState {
                written: 0,
                ahead: BTreeMap::new(),
                end: None,
            }),
            cond: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SpoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file holds `written` bytes of the current attempt (a blob found whole on disk:
    /// all of them).
    pub fn set_written(&self, written: u64) {
        let mut st = self.lock();
        st.written = written;
        st.ahead.clear();
        self.cond.notify_all();
    }

    /// A ranged fetch put bytes `start..end` on disk (a part, from its start): the prefix
    /// grows when they join it.
    pub fn extend(&self, start: u64, end: u64) {
        let mut st = self.lock();
        if start <= st.written {
            st.written = st.written.max(end);
        } else {
            let e = st.ahead.entry(start).or_insert(end);
            *e = (*e).max(end);
        }
        let before = st.written;
        while let Some((&s, &e)) = st.ahead.first_key_value() {
            if s > st.written {
                break;
            }
            st.written = st.written.max(e);
            st.ahead.remove(&s);
        }
        if st.written > before || start <= before {
            self.cond.notify_all();
        }
    }

    /// The contiguous prefix and all bytes on disk (prefix and extents beyond it).
    pub fn written(&self) -> (u64, u64) {
        let st = self.lock();
        let ahead: u64 = st.ahead.iter().map(|(s, e)| e - s).sum();
        (st.written, st.written + ahead)
    }

    /// Wait up to `timeout` for the prefix to pass `pos`: `Ok(Some(prefix))` when it did,
    /// `Ok(None)` on timeout, the error of an abandoned spool.
    pub fn wait_past(&self, pos: u64, timeout: std::time::Duration) -> Result<Option<u64>> {
        let mut st = self.lock();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if st.written > pos {
                return Ok(Some(st.written));
            }
            if let Some(Err(e)) = &st.end {
                return Err(e.clone());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            st = self
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The blob is complete and verified: readers may reach its end.
    pub fn complete(&self) {
        let mut st = self.lock();
        st.end.get_or_insert(Ok(()));
        self.cond.notify_all();
    }

    /// Block until the blob is known to be complete and verified (`Ok`) or abandoned (the
    /// abort's error). A reader that found the bytes malformed asks this before it says
    /// so: bytes of a blob that failed its digest check are the digest's failure to report.
    pub fn wait_end(&self) -> Result<()> {
        let mut st = self.lock();
        loop {
            if let Some(end) = &st.end {
                return end.clone();
            }
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The blob will not be completed: readers fail with `error` (which should carry a
    /// message, so that nobody logs it again).
    pub fn abort(&self, error: Error) {
        let mut st = self.lock();
        if !matches!(st.end, Some(Ok(()))) {
            st.end = Some(Err(error));
        }
        self.cond.notify_all();
    }
}

/// The job's stream consumer for one attempt: write the body into `file` (the spool at
/// `path`, opened by the caller so that its removal cannot race with the worker), after the
/// `resume_from` bytes already there if the server answered 206, else from the start.
pub fn consumer(
    file: File,
    path: PathBuf,
    spool: Arc<Spool>,
    resume_from: Option<u64>,
) -> StreamConsumer {
    Box::new(move |ctx, input| {
        // The job checked that a 206 starts where we asked; anything else starts over.
        let mut offset = match resume_from {
            Some(n) if ctx.meta.status == 206 => n,
            _ => {
                // Readers must not look past the new end before it is cut.
                spool.set_written(0);
                file.set_len(0).map_err(|e| {
                    let e = Error::from(e);
                    log_error_errno!(e.clone(), "Failed to truncate {}: {}", path.display(), e)
                })?;
                0
            }
        };
        spool.set_written(offset);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The download failed or was cancelled; the job reports it.
                Err(e) => return Err(Error::from(e)),
            };
            file.write_all_at(&buf[..n], offset).map_err(|e| {
                let e = Error::from(e);
                log_error_errno!(e.clone(), "Failed to write {}: {}", path.display(), e)
            })?;
            offset += n as u64;
            spool.set_written(offset);
        }
    })
}

/// Reads a spool file from the start while it is being written; blocks for more data,
/// and ends only when the blob was verified.
pub struct SpoolReader {
    file: File,
    spool: Arc<Spool>,
    pos: u64,
}

impl SpoolReader {
    pub fn open(path: &std::path::Path, spool: Arc<Spool>) -> Result<SpoolReader> {
        let file = File::open(path).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e)
        })?;
        Ok(SpoolReader {
            file,
            spool,
            pos: 0,
        })
    }
}

impl SpoolReader {
    /// The spool this reads, to ask whether the blob checked out ([`Spool::wait_end`]).
    pub fn spool(&self) -> Arc<Spool> {
        self.spool.clone()
    }
}

impl Read for SpoolReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let available = {
                let mut st = self.spool.lock();
                loop {
                    if st.written > self.pos {
                        break st.written - self.pos;
                    }
                    match &st.end {
                        Some(Ok(())) => return Ok(0),
                        Some(Err(e)) => return Err(e.clone().into()),
                        None => st = self.spool.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
                    }
                }
            };
            let want = buf
                .len()
                .min(usize::try_from(available).unwrap_or(usize::MAX));
            let n = self.file.read_at(&mut buf[..want], self.pos)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            // The file was cut for a restarted download just now: wait for the rewrite.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_reader_follows_the_writer_and_ends_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut f = File::create(&path).unwrap();
        let spool = Spool::new();
        let mut reader = SpoolReader::open(&path, spool.clone()).unwrap();
        let writer_spool = spool.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..50u8 {
                f.write_all(&[i; 1000]).unwrap();
                writer_spool.set_written((u64::from(i) + 1) * 1000);
            }
            writer_spool.complete();
        });
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        writer.join().unwrap();
        assert_eq!(out.len(), 50_000);
        assert!(out
            .chunks(1000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|b| usize::from(*b) == i)));
    }

    #[test]
    fn the_prefix_grows_only_when_the_parts_join_it() {
        let spool = Spool::new();
        spool.extend(20, 25);
        spool.extend(10, 15);
        assert_eq!(spool.written(), (0, 10));
        spool.extend(0, 8);
        assert_eq!(spool.written(), (8, 18));
        spool.extend(0, 10);
        assert_eq!(spool.written(), (15, 20));
        spool.extend(15, 20);
        assert_eq!(spool.written(), (25, 25));
        let t = std::time::Duration::from_millis(1);
        assert_eq!(spool.wait_past(24, t).unwrap(), Some(25));
        assert_eq!(spool.wait_past(25, t).unwrap(), None);
        spool.extend(40, 50);
        spool.set_written(25);
        assert_eq!(
            spool.written(),
            (25, 25),
            "a restart forgets the parts ahead"
        );
        spool.abort(Error::new(libc::EIO));
        assert_eq!(spool.wait_past(25, t).unwrap_err().errno(), libc::EIO);
    }

    #[test]
    fn an_aborted_spool_fails_its_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        std::fs::write(&path, b"abc").unwrap();
        let spool = Spool::new();
        spool.set_written(3);
        let mut reader = SpoolReader::open(&path, spool.clone()).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(reader.read(&mut buf).unwrap(), 3);
        spool.abort(Error::with_message(libc::ECANCELED, "gone"));
        let e = reader.read(&mut buf).unwrap_err();
        assert_eq!(Error::from(e).errno(), libc::ECANCELED);
        // A completed spool stays complete.
        let spool = Spool::new();
        spool.complete();
        spool.abort(Error::new(libc::EIO));
        let mut reader = SpoolReader::open(&path, spool).unwrap();
        assert_eq!(reader.read(&mut buf).unwrap(), 0);
    }
}

//! Keeping a job's bytes as served in a partial download, so that a pull killed
//! mid-download (`kill -9`, a power cut, the OOM killer) is resumed by the next one
//! instead of starting over (pull-tar and pull-raw; issue 12).
//!
//! The worker still decodes the body as it arrives (nothing waits for the whole file);
//! [`SpooledInput`] only sits between the queue and the decoder: every chunk it hands on
//! is first written to the partial file. The response's strong ETag is recorded with it
//! (the `user.source_etag` xattr): that is what makes the bytes trustworthy later.
//!
//! A resumed job ([`SpoolTo::have`] > 0) asks for `Range: bytes=<have - 1>-` with
//! `If-Range: <ETag>`: the server always has at least one byte to send (no `416` for a
//! file that was complete when the process died), and sends the whole object instead
//! (`200`) when it changed or ignores ranges. On a `206` that starts where asked and
//! carries the same ETag, the decoder reads the bytes on disk first, then the new ones
//! (the checksum covers the whole file as before: it is computed over what the decoder
//! reads). Anything else starts over: the file is cut and written from the start.
//!
//! Nothing is synced: a process killed keeps every byte it wrote (the page cache survives
//! it); after a power cut the file holds what the file system had written back, as the
//! journalling file systems (ext4's `data=ordered`, xfs, btrfs) extend a file's size on
//! disk only over data that reached it; the checksum of a verified pull covers the rest.
//!
//! Without a strong ETag nothing proves that bytes on disk are the object a later
//! response sends (a `Last-Modified` date has a resolution of a second and a weak ETag
//! does not vouch for the bytes), so such a body is not kept: the partial stays empty.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::ResponseMeta;
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::sys;

/// The xattr holding the ETag of the bytes in a partial.
const ETAG_XATTR: &std::ffi::CStr = c"user.source_etag";

/// Where a job keeps the bytes as served (see the module documentation).
#[derive(Debug)]
pub struct SpoolTo {
    /// The partial download, open to read and write, locked by the caller.
    pub file: File,
    /// Bytes of it kept from an earlier run, all of [`etag`](Self::etag)'s object: 0, or
    /// the length of a file whose ETag is known.
    pub have: u64,
    /// The strong ETag of those bytes (`Some` when `have` > 0).
    pub etag: Option<String>,
}

impl SpoolTo {
    /// The partial `file` as found: its bytes are resumed if it records a strong ETag,
    /// else it starts empty.
    pub fn found(file: File) -> SpoolTo {
        let have = file.metadata().map_or(0, |m| m.len());
        let etag = read_etag(&file).filter(|e| is_strong(e));
        match etag {
            Some(etag) if have > 0 => SpoolTo {
                file,
                have,
                etag: Some(etag),
            },
            _ => SpoolTo {
                file,
                have: 0,
                etag: None,
            },
        }
    }

    /// The byte the request should start at, and its `If-Range` value: `None` to ask for
    /// everything.
    pub fn range(&self) -> Option<(u64, &str)> {
        let etag = self.etag.as_deref()?;
        (self.have > 0).then(|| (self.have - 1, etag))
    }
}

/// A strong entity tag (`"…"`, not `W/"…"`): the only validator `If-Range` accepts.
pub fn is_strong(etag: &str) -> bool {
    etag.len() >= 2 && etag.starts_with('"') && etag.ends_with('"') && !etag.contains('\0')
}

/// The ETag recorded with a partial, if any.
fn read_etag(file: &File) -> Option<String> {
    let mut buf = [0u8; 1024];
    let n = sys::fgetxattr(file.as_fd(), ETAG_XATTR, &mut buf).ok()?;
    String::from_utf8(buf.get(..n)?.to_vec()).ok()
}

/// The body as the decoder reads it: the bytes kept on disk first (a resumed download),
/// then the queued chunks, each written to the partial before it is handed on.
pub(crate) struct SpooledInput<R> {
    queue: R,
    /// The job's cancel flag (checked between reads of the kept bytes too).
    cancel: Arc<AtomicBool>,
    /// The partial; `None` when the body is not kept.
    file: Option<File>,
    /// Next byte of the file to read (below `kept`) or to write (from `kept` on).
    pos: u64,
    /// Bytes of the file the decoder reads before the queue.
    kept: u64,
}

impl<R: Read> SpooledInput<R> {
    /// Decide, now that the response is known, what the spool holds: resumed after
    /// `spool.have - 1` bytes on a matching 206, else cut and kept from the start if the
    /// response has a strong ETag, else not kept at all.
    pub fn new(
        queue: R,
        cancel: Arc<AtomicBool>,
        spool: SpoolTo,
        meta: &ResponseMeta,
        url: &str,
    ) -> Result<SpooledInput<R>> {
        let mut input = SpooledInput {
            queue,
            cancel,
            file: None,
            pos: 0,
            kept: 0,
        };
        if let Some((start, etag)) = spool.range() {
            if meta.status == 206 {
                let from = content_range_start(meta);
                if from != Some(start) || meta.etag.as_deref() != Some(etag) {
                    return Err(log_error_errno!(
                        Error::new(libc::EPROTO),
                        "Server resumed {} at the wrong offset or with another ETag (asked for byte {} of {}).",
                        url,
                        start,
                        etag
                    ));
                }
                input.kept = start;
                input.file = Some(spool.file);
                return Ok(input);
            }
            log::debug!(
                "Server sent all of {url} again (changed, or it ignores ranges), starting over."
            );
        }
        // Cut first, then say whose bytes follow: a kill in between leaves an empty file.
        spool.file.set_len(0).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to truncate partial download: {}", e)
        })?;
        let etag = meta.etag.as_deref().filter(|e| is_strong(e)).unwrap_or("");
        // A file system without user xattrs cannot vouch for the bytes: not kept.
        let recorded = sys::fsetxattr(spool.file.as_fd(), ETAG_XATTR, etag.as_bytes()).is_ok();
        if recorded && !etag.is_empty() {
            input.file = Some(spool.file);
        }
        Ok(input)
    }

    /// The body as it comes, not kept anywhere.
    pub fn plain(queue: R, cancel: Arc<AtomicBool>) -> SpooledInput<R> {
        SpooledInput {
            queue,
            cancel,
            file: None,
            pos: 0,
            kept: 0,
        }
    }
}

/// The first byte of a 206's `Content-Range: bytes S-E/L`.
fn content_range_start(meta: &ResponseMeta) -> Option<u64> {
    meta.header("Content-Range")?
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

impl<R: Read> Read for SpooledInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Acquire) {
            // Our error inside, so that consumers pass it on without logging it.
            let kind = io::Error::from_raw_os_error(libc::ECANCELED).kind();
            return Err(io::Error::new(kind, Error::new(libc::ECANCELED)));
        }
        if let (Some(file), true) = (&self.file, self.pos < self.kept) {
            let want = buf.len().min((self.kept - self.pos) as usize);
            let n = file.read_at(&mut buf[..want], self.pos).map_err(|e| {
                let e = Error::from(e);
                io::Error::from(log_error_errno!(
                    e.clone(),
                    "Failed to read partial download: {}",
                    e
                ))
            })?;
            if n == 0 {
                // Cut by someone else meanwhile: the checksum or the decoder will tell.
                self.kept = self.pos;
            } else {
                self.pos += n as u64;
                return Ok(n);
            }
        }
        let n = self.queue.read(buf)?;
        if let Some(file) = &self.file {
            file.write_all_at(&buf[..n], self.pos).map_err(|e| {
                let e = Error::from(e);
                io::Error::from(log_error_errno!(
                    e.clone(),
                    "Failed to write partial download: {}",
                    e
                ))
            })?;
            self.pos += n as u64;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strong_etags_make_bytes_resumable() {
        for (etag, strong) in [
            ("\"abc\"", true),
            ("\"\"", true),
            ("W/\"abc\"", false),
            ("\"", false),
            ("abc", false),
        ] {
            assert_eq!(is_strong(etag), strong, "{etag}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = |len| {
            let f = File::create(dir.path().join("p")).unwrap();
            f.set_len(len).unwrap();
            f
        };
        let spool = |have, etag: Option<&str>| SpoolTo {
            file: file(have),
            have,
            etag: etag.map(str::to_string),
        };
        // One byte back: a whole file still gets a byte, never a 416.
        assert_eq!(spool(10, Some("\"e\"")).range(), Some((9, "\"e\"")));
        assert_eq!(spool(0, Some("\"e\"")).range(), None);
        assert_eq!(spool(10, None).range(), None);
        // Bytes without a recorded ETag are not trusted.
        assert_eq!(SpoolTo::found(file(10)).range(), None);
    }
}

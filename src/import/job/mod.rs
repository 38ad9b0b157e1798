//! ImportJob: one HTTP GET, from request to verified bytes in their destination.
//!
//! States as in the C `import-job.c`: `Init` → [`begin`](ImportJob::begin) → `Analyzing`
//! (waiting for the first body bytes, which tell the compression) → `Running` (bytes flow
//! to the destination) → `Done` | `Failed`.
//!
//! The work is split across two threads (see [`worker`]): curl's callbacks on the loop
//! thread check the compressed-size limits and queue the chunks; a worker thread detects
//! the compression, decompresses, hashes and writes to the [`Sink`]. The job is complete
//! when curl has finished *and* the worker has consumed everything.
//!
//! The owner (an importer, which is also the loop's data `D`) implements [`JobOwner`]; its
//! [`JobSet`] routes two kinds of events to the job and tells the owner when the job
//! became complete: curl's completion ([`ImportJob::on_curl_done`]) and the worker's
//! wake-up ([`ImportJob::on_wake`]).
//!
//! Deviations from the C job, all deliberate (spec §9): headers are matched
//! case-insensitively (Q2) and only those of the final 2xx/304 response count (Q3); short
//! and empty bodies are fine (Q4); concatenated compressed streams decode as one and
//! nothing can hang (Q5); a body cut short is reported as "Download truncated." also when
//! libcurl itself noticed (it says "Transferred a partial file"); an error response's body
//! never reaches the destination.

mod expect;
mod handler;
mod options;
pub mod retry;
mod set;
mod spool;
mod worker;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use curl::multi::Easy2Handle;

use crate::curl_glue::{self, CurlGlue};
use crate::event::{EventLoop, SourceId, EPOLLIN};
use crate::log_error_errno;
use crate::util::dialect::Dialect;
use crate::util::error::{Error, Result};
use crate::util::format::format_bytes;
use handler::JobHandler;
use worker::{Channel, InputEnd, WorkerSpec};

pub use worker::DEFAULT_QUEUE_LIMIT;

pub use crate::import::stream::Compression;
pub use expect::{Expected, Mismatch, Wording};
pub use options::JobOptions;
pub use set::{JobOwner, JobSet};
pub use spool::SpoolTo;

/// The C job's default limit on compressed and uncompressed sizes: 8 GiB.
pub const DEFAULT_SIZE_MAX: u64 = 8 << 30;

/// The job's state, as `ImportJobState` in the C tool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum JobState {
    /// Created, not started.
    Init,
    /// Request sent; still waiting for the first body bytes to know what we have.
    Analyzing,
    /// Bytes flow to the destination.
    Running,
    /// Complete and successful (possibly skipped because the ETag matched).
    Done,
    /// Complete and failed; see [`ImportJob::error`].
    Failed,
}

impl JobState {
    /// Done or failed.
    pub fn is_complete(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// The response a body belongs to, as seen when its first byte arrived.
#[derive(Clone, Debug, Default)]
pub struct ResponseMeta {
    pub url: String,
    pub status: u32,
    pub etag: Option<String>,
    pub content_length: Option<u64>,
    /// `Last-Modified`, µs since the epoch.
    pub last_modified: Option<u64>,
    pub headers: Vec<(String, String)>,
}

impl ResponseMeta {
    /// A header of the response, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// The last header called `name` (case-insensitively: Q2, HTTP/2 sends lowercase names).
fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// What a stream consumer gets besides the body.
pub struct StreamContext {
    pub meta: ResponseMeta,
    /// Turns true when the job is cancelled (SIGINT, a failure elsewhere): stop promptly.
    pub cancel: Arc<AtomicBool>,
}

/// A consumer of the decompressed body, run on the job's worker thread. It may stop
/// reading early; the rest is drained for the checksums.
pub type StreamConsumer =
    Box<dyn FnOnce(&StreamContext, &mut dyn std::io::Read) -> Result<()> + Send>;

/// Where the decompressed body goes.
pub enum Sink {
    /// Memory mode: the body ends up in [`ImportJob::payload`].
    Memory,
    /// Disk mode: written to this fd — sparse, truncated to size and given the source
    /// xattrs and mtime if it is a regular file; plain writes to a pipe.
    File(OwnedFd),
    /// Disk mode at an offset of an existing file (systemd-pull's `--offset=`): written
    /// there, zeros included; nothing else of the file is touched (no truncation, no
    /// xattrs).
    FileAt(OwnedFd, u64),
    /// Handed to a consumer on the worker thread (the unpacker, for example).
    Stream(StreamConsumer),
}

/// One download. See the module documentation.
pub struct ImportJob {
    url: String,
    state: JobState,
    /// Consumed by `begin`.
    options: Option<JobOptions>,
    /// Set by `begin`; never reused by the glue.
    token: Option<usize>,
    /// Some between `begin` and curl's completion.
    handle: Option<Easy2Handle<JobHandler>>,
    /// The handler, once detached from curl: results live here.
    finished: Option<curl::easy::Easy2<JobHandler>>,
    channel: Option<Arc<Channel>>,
    /// The io source watching the worker's eventfd.
    wake_source: Option<SourceId>,
    /// curl has finished successfully; we wait for the worker.
    curl_done: bool,
    response_code: u32,
    error: Option<Error>,
    /// curl's own error, when the transfer itself failed (for owners that retry).
    transfer_error: Option<curl::Error>,
    /// Set from the options by `new`: see [`JobOptions::quiet_failures`].
    quiet_failures: bool,
    /// One part of a blob fetched in parts ([`JobOptions::range_end`]): its download lines
    /// are debug output, as the owner announces the blob once.
    part: bool,
    /// The job failed with a message it did not log (`quiet_failures`).
    unlogged: bool,
    dialect: Dialect,
    quiet_not_found: bool,
    /// Set from the options by `new`: see [`JobOptions::allow_insecure_redirects`].
    allow_insecure_redirects: bool,
    /// Checked once the body is complete (taken from the options by `new`).
    expected: Option<Expected>,
    /// The body was complete but not what `expected` said.
    mismatch: bool,
    // Results of the worker.
    payload: Vec<u8>,
    checksum: Option<String>,
    uncompressed_checksum: Option<String>,
    written_uncompressed: u64,
    compression: Option<Compression>,
}

impl ImportJob {
    /// A job for `url`; nothing happens until [`begin`](Self::begin).
    pub fn new(url: &str, mut options: JobOptions) -> Self {
        let expected = options.expected.take();
        if expected.as_ref().is_some_and(Expected::needs_checksum) {
            options.calc_checksum = true;
        }
        ImportJob {
            url: url.to_string(),
            state: JobState::Init,
            quiet_failures: options.quiet_failures,
            part: options.range_end.is_some() && options.resume_from.is_some(),
            unlogged: false,
            dialect: options.dialect,
            quiet_not_found: options.quiet_not_found,
            allow_insecure_redirects: options.allow_insecure_redirects,
            expected,
            mismatch: false,
            options: Some(options),
            token: None,
            handle: None,
            finished: None,
            channel: None,
            wake_source: None,
            curl_done: false,
            response_code: 0,
            error: None,
            transfer_error: None,
            payload: Vec::new(),
            checksum: None,
            uncompressed_checksum: None,
            written_uncompressed: 0,
            compression: None,
        }
    }

    /// Send the request. Fails with EBUSY unless the job is new.
    fn begin<D: JobOwner>(&mut self, lp: &mut EventLoop<D>, glue: &mut CurlGlue) -> Result<()> {
        if self.state != JobState::Init {
            return Err(Error::new(libc::EBUSY));
        }
        let mut options = self.options.take().ok_or_else(|| Error::new(libc::EBUSY))?;
        if options.spool.is_some() && options.resume_from.is_some() {
            return Err(Error::new(libc::EINVAL));
        }
        let channel = Channel::new(options.queue_limit)?;
        let spool_range = options
            .spool
            .as_ref()
            .and_then(|s| s.range())
            .map(|(start, etag)| (start, etag.to_string()));
        let spec = WorkerSpec {
            url: self.url.clone(),
            sink: options.sink,
            detect_compression: options.detect_compression && options.resume_from.is_none(),
            calc_checksum: options.calc_checksum,
            checksum_seed: options.checksum_seed,
            hash_uncompressed: options.hash_uncompressed,
            uncompressed_max: options.uncompressed_max,
            resume_from: options.resume_from,
            range_end: options.range_end.filter(|_| options.resume_from.is_some()),
            dialect: options.dialect,
            spool: options.spool.take(),
        };
        let mut handler = JobHandler::new(
            &self.url,
            channel.clone(),
            spec,
            options.old_etags.clone(),
            options.compressed_max,
            options.dialect,
        );
        handler.resumed_from = options
            .resume_from
            .or(spool_range.as_ref().map(|(start, _)| *start))
            .unwrap_or(0);
        handler.part = self.part;
        let mut easy = glue.make(&self.url, &options.transport, handler)?;
        if options.allow_insecure_redirects {
            curl_glue::allow_insecure_redirects(&mut easy)?;
        }
        let eio = |e: curl::Error| Error::with_message(libc::EIO, e.to_string());
        let mut list = curl::easy::List::new();
        for h in &options.headers {
            list.append(h).map_err(eio)?;
        }
        if !options.old_etags.is_empty() {
            list.append(&format!("If-None-Match: {}", options.old_etags.join(", ")))
                .map_err(eio)?;
        }
        if let Some((_, etag)) = &spool_range {
            list.append(&format!("If-Range: {etag}")).map_err(eio)?;
        }
        easy.http_headers(list).map_err(eio)?;
        if let Some(form) = &options.post_form {
            easy.post(true).map_err(eio)?;
            easy.post_fields_copy(form.as_bytes()).map_err(eio)?;
        }
        easy.progress(true).map_err(eio)?;
        // Larger reads mean fewer callbacks and queue operations per byte.
        easy.buffer_size(256 << 10).map_err(eio)?;
        if let Some(offset) = options.resume_from.or(spool_range.map(|(start, _)| start)) {
            // A plain Range header, not CURLOPT_RESUME_FROM: with the latter libcurl fails
            // a 200 answer itself, and we want to start over in that case.
            let end = options.range_end.map_or(String::new(), |e| e.to_string());
            easy.range(&format!("{offset}-{end}")).map_err(eio)?;
        }
        if options.own_connection {
            // CURLOPT_HTTP_VERSION holds for the whole transfer: a redirect to blob storage
            // elsewhere is fetched over HTTP/1.1 too.
            easy.http_version(curl::easy::HttpVersion::V11)
                .map_err(eio)?;
        }
        let (handle, token) = glue.add(lp, easy)?;
        let wake = lp.add_io(
            channel.wake.as_raw_fd(),
            EPOLLIN,
            move |lp, d: &mut D, _, _| {
                set::on_worker_wake(lp, d, token);
                Ok(())
            },
        );
        let wake = match wake {
            Ok(w) => w,
            Err(e) => {
                let _ = glue.remove(lp, handle);
                return Err(e);
            }
        };
        lp.set_description(wake, "job-worker");
        self.handle = Some(handle);
        self.token = Some(token);
        self.channel = Some(channel);
        self.wake_source = Some(wake);
        self.state = JobState::Analyzing;
        Ok(())
    }

    /// curl finished this job's transfer (routed by the owner's [`JobSet`]). Returns true
    /// if the job just became complete.
    fn on_curl_done<D: JobOwner>(
        &mut self,
        lp: &mut EventLoop<D>,
        glue: &mut CurlGlue,
        result: std::result::Result<(), curl::Error>,
    ) -> bool {
        if self.state.is_complete() {
            return false;
        }
        let Some(handle) = self.handle.take() else {
            return false;
        };
        let mut easy = match glue.remove(lp, handle) {
            Ok(e) => e,
            Err(e) => return self.finish(lp, Err(e)),
        };
        self.response_code = easy.response_code().unwrap_or(0);
        let h = easy.get_mut();
        let failure = h.failure.take();
        let etag_exists = h.etag_exists;
        let content_length = h.content_length;
        let written = h.written_compressed;
        let status = h.status;
        let redirect = h.redirect.take();
        let effective_url = easy.effective_url().ok().flatten().map(str::to_string);
        // curl's detail of a failure (the multi interface's result carries none).
        let detail = easy.take_error_buf().unwrap_or_default();
        self.finished = Some(easy);

        if let Some(e) = failure {
            // Already logged where it happened.
            return self.finish(lp, Err(e));
        }
        if etag_exists {
            return self.finish(lp, Ok(()));
        }
        if let Err(e) = result {
            self.transfer_error = Some(e.clone());
            if (300..400).contains(&self.response_code) {
                // A redirect is not an answer: the transfer failed before one came.
                self.response_code = 0;
            }
            if let Some(message) = self.describe_transfer_error(&e, &detail, redirect.as_ref()) {
                let (errno, line) = message;
                let e = self.failure(errno, line);
                return self.finish(lp, Err(e));
            }
            if e.is_file_couldnt_read_file() && self.quiet_not_found {
                // A missing `file:` file is what a 404 is to http (v260 falls back alike).
                return self.finish(lp, Err(Error::new(libc::ENOMEDIUM)));
            }
            let e = if e.is_partial_file() && content_length.is_some() {
                self.failure(libc::EIO, "Download truncated.".to_string())
            } else {
                self.failure(libc::EIO, format!("Transfer failed: {}", e.description()))
            };
            return self.finish(lp, Err(e));
        }
        if let Some(effective) = effective_url.filter(|u| self.downgrades_to(u)) {
            // Cannot happen with the redirect protocols curl is given; checked anyway.
            let e = self.failure(libc::EPROTO, downgrade_message(&self.url, &effective));
            return self.finish(lp, Err(e));
        }
        let code = if self.response_code != 0 {
            self.response_code
        } else {
            status
        };
        if code == 304 {
            log::info!("Image already downloaded. Skipping download.");
            if let Some(h) = self.finished.as_mut().map(|e| e.get_mut()) {
                h.etag_exists = true;
            }
            return self.finish(lp, Ok(()));
        }
        if code >= 300 {
            let errno = match self.dialect {
                Dialect::V252 if code == 404 => libc::ENOMEDIUM,
                _ => libc::EIO,
            };
            if code == 404 && self.quiet_not_found {
                return self.finish(lp, Err(Error::new(libc::ENOMEDIUM)));
            }
            let message = format!("HTTP request to {} failed with code {}.", self.url, code);
            let e = self.failure(errno, message);
            return self.finish(lp, Err(e));
        }
        if code < 200 {
            let message = format!(
                "HTTP request to {} finished with unexpected code {}.",
                self.url, code
            );
            let e = self.failure(libc::EIO, message);
            return self.finish(lp, Err(e));
        }
        if content_length.is_some_and(|len| len != written) {
            let e = self.failure(libc::EIO, "Download truncated.".to_string());
            return self.finish(lp, Err(e));
        }
        let Some(channel) = self.channel.clone() else {
            return self.finish(lp, Ok(()));
        };
        let handler = self.finished.as_ref().map(|e| e.get_ref());
        if handler.is_some_and(|h| h.state == JobState::Analyzing) {
            // Empty body (Q4: that is a valid, empty payload): run the worker on it so the
            // sink still sees a (empty) stream and checksums are computed.
            let handler = self.finished.as_mut().map(|e| e.get_mut());
            if let Some(h) = handler {
                if let Some(spec) = h.spec.take() {
                    channel.lock().meta = Some(h.meta());
                    if let Err(e) = worker::spawn(&channel, spec) {
                        return self.finish(lp, Err(e));
                    }
                    h.state = JobState::Running;
                }
            }
        }
        self.state = JobState::Running;
        self.curl_done = true;
        channel.end(InputEnd::Complete);
        // The worker reports through its eventfd; it may already have finished.
        self.on_wake(lp, glue)
    }

    /// The worker signalled (routed by the owner's [`JobSet`]). Returns true if the job
    /// just became complete.
    fn on_wake<D: JobOwner>(&mut self, lp: &mut EventLoop<D>, glue: &mut CurlGlue) -> bool {
        if self.state.is_complete() {
            return false;
        }
        let Some(channel) = self.channel.clone() else {
            return false;
        };
        channel.clear_wake();
        let outcome = {
            let mut st = channel.lock();
            match &st.outcome {
                // An early failure is taken at once; success only counts once curl is done.
                Some(Err(_)) => st.outcome.take(),
                Some(Ok(_)) if self.curl_done => st.outcome.take(),
                _ => None,
            }
        };
        match outcome {
            Some(Ok(out)) => {
                self.payload = out.payload;
                self.checksum = out.checksum;
                self.uncompressed_checksum = out.uncompressed_checksum;
                self.written_uncompressed = out.written_uncompressed;
                self.compression = out.compression;
                channel.join();
                let size = out.resumed_from + self.written_compressed();
                let checked = match &self.expected {
                    Some(expected) => expected.check(size, self.checksum.as_deref()),
                    None => Ok(()),
                };
                self.mismatch = checked.is_err();
                if checked.is_ok() && self.dialect == Dialect::V252 {
                    log::info!("Acquired {}.", format_bytes(self.written_uncompressed));
                }
                self.finish(lp, checked)
            }
            Some(Err(e)) => {
                // Stop the transfer if it still runs; the worker logged the reason.
                if let Some(handle) = self.handle.take() {
                    if let Ok(easy) = glue.remove(lp, handle) {
                        self.finished = Some(easy);
                    }
                }
                self.finish(lp, Err(e))
            }
            None => {
                let h = self.handle.as_mut();
                if let Some(handle) = h {
                    if handle.get_ref().paused && !channel.lock().paused {
                        handle.get_mut().paused = false;
                        let handle = self.handle.as_ref().unwrap_or_else(|| unreachable!());
                        if let Err(e) = glue.unpause_write(lp, handle) {
                            return self.finish(
                                lp,
                                Err(log_error_errno!(
                                    e.clone(),
                                    "Failed to resume transfer: {}",
                                    e
                                )),
                            );
                        }
                    }
                }
                false
            }
        }
    }

    /// `https` for this job, `url` plain `http`, and that not allowed.
    fn downgrades_to(&self, url: &str) -> bool {
        !self.allow_insecure_redirects && is_https(&self.url) && !is_https(url)
    }

    /// The transfer errors whose cause we can name: a refused downgrade, a redirect loop,
    /// a TLS handshake with a server that speaks plain HTTP. `None`: curl's words it is.
    fn describe_transfer_error(
        &self,
        e: &curl::Error,
        detail: &str,
        redirect: Option<&(String, String)>,
    ) -> Option<(i32, String)> {
        if e.is_unsupported_protocol() {
            let (from, to) = redirect.filter(|(_, to)| self.downgrades_to(to))?;
            return Some((libc::EPROTO, downgrade_message(from, to)));
        }
        if e.is_too_many_redirects() {
            let last = redirect.map_or(String::new(), |(_, to)| format!(", the last to {to}"));
            return Some((
                libc::ELOOP,
                format!(
                    "Too many redirects for {} (more than {}{last}): is the server redirecting in a loop?",
                    self.url,
                    curl_glue::MAX_REDIRECTS
                ),
            ));
        }
        // OpenSSL's words for a first answer that is no TLS record.
        let plain = [
            "wrong version number",
            "packet length too long",
            "record layer failure",
        ]
        .iter()
        .any(|w| detail.contains(w));
        if e.is_ssl_connect_error() && plain {
            let url = redirect.map_or(self.url.as_str(), |(_, to)| to.as_str());
            return Some((
                libc::EPROTO,
                format!(
                    "TLS handshake with {url} failed: the server does not speak TLS (plain HTTP?)."
                ),
            ));
        }
        None
    }

    /// A failure the job found itself, with its message: logged at error level here unless
    /// the owner reports it ([`JobOptions::quiet_failures`]).
    fn failure(&mut self, errno: i32, message: String) -> Error {
        if self.quiet_failures {
            self.unlogged = true;
            return Error::with_message(errno, message);
        }
        log_error_errno!(Error::new(errno), "{}", message)
    }

    /// `import_job_finish()`: complete the job once; later calls are no-ops (returns false).
    fn finish<D: JobOwner>(&mut self, lp: &mut EventLoop<D>, r: Result<()>) -> bool {
        if self.state.is_complete() {
            return false;
        }
        match r {
            Ok(()) => {
                self.state = JobState::Done;
                let level = if self.part {
                    log::Level::Debug
                } else {
                    log::Level::Info
                };
                log::log!(level, "Download of {} complete.", self.url);
            }
            Err(e) => {
                self.state = JobState::Failed;
                self.error = Some(e);
                if let Some(ch) = &self.channel {
                    ch.cancel();
                }
            }
        }
        if let Some(w) = self.wake_source.take() {
            lp.remove(w);
        }
        true
    }

    /// Stop the job now (the owner gives up, e.g. another job failed). Marks it failed with
    /// ECANCELED without logging; the worker is told to stop and joined when dropped.
    fn cancel<D: JobOwner>(&mut self, lp: &mut EventLoop<D>, glue: &mut CurlGlue) {
        if let Some(mut handle) = self.handle.take() {
            handle.get_mut().detaching = true;
            if let Ok(easy) = glue.remove(lp, handle) {
                self.finished = Some(easy);
            }
        }
        self.finish(lp, Err(Error::new(libc::ECANCELED)));
    }

    fn handler(&self) -> Option<&JobHandler> {
        self.handle
            .as_ref()
            .map(|h| h.get_ref())
            .or_else(|| self.finished.as_ref().map(|e| e.get_ref()))
    }

    pub fn url(&self) -> &str {
        &self.url
    }
    /// The glue token, once begun.
    fn token(&self) -> Option<usize> {
        self.token
    }
    pub fn state(&self) -> JobState {
        self.state
    }
    pub fn is_complete(&self) -> bool {
        self.state.is_complete()
    }
    /// Why the job failed.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
    /// The message of the job's failure when the job did not log it
    /// ([`JobOptions::quiet_failures`]): the owner's to report.
    pub fn unlogged_failure(&self) -> Option<&str> {
        self.error.as_ref().filter(|_| self.unlogged)?.msg()
    }
    /// The body arrived whole but its size or digest was not the expected one (the job
    /// logged which): nothing another attempt or another source should be asked for.
    pub fn content_mismatch(&self) -> bool {
        self.mismatch
    }
    /// curl's error if the transfer itself failed (connection, TLS, timeout, truncation),
    /// so an owner can tell transient failures from permanent ones.
    pub fn transfer_error(&self) -> Option<&curl::Error> {
        self.transfer_error.as_ref()
    }
    /// The final response's ETag.
    pub fn etag(&self) -> Option<&str> {
        self.handler().and_then(|h| h.etag.as_deref())
    }
    /// The download was skipped: the ETag matched or the server answered 304.
    pub fn etag_exists(&self) -> bool {
        self.handler().is_some_and(|h| h.etag_exists)
    }
    /// `Last-Modified`, µs since the epoch.
    pub fn mtime(&self) -> Option<u64> {
        self.handler().and_then(|h| h.last_modified)
    }
    pub fn content_length(&self) -> Option<u64> {
        self.handler().and_then(|h| h.content_length)
    }
    /// The HTTP status of the final response (0 before completion).
    pub fn response_code(&self) -> u32 {
        self.response_code
    }
    /// A header of the final response, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.handler().and_then(|h| h.header(name))
    }
    /// All headers of the final response, in order.
    pub fn headers(&self) -> &[(String, String)] {
        self.handler().map(|h| h.headers.as_slice()).unwrap_or(&[])
    }
    /// Memory mode: the decompressed body.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }
    /// The (bounded) body of a non-2xx response.
    pub fn error_body(&self) -> &[u8] {
        self.handler()
            .map(|h| h.error_body.as_slice())
            .unwrap_or(&[])
    }
    /// SHA-256 (lowercase hex) of the bytes as served, if requested.
    pub fn checksum(&self) -> Option<&str> {
        self.checksum.as_deref()
    }
    /// SHA-256 (lowercase hex) of the decompressed bytes, if requested.
    pub fn uncompressed_checksum(&self) -> Option<&str> {
        self.uncompressed_checksum.as_deref()
    }
    pub fn written_compressed(&self) -> u64 {
        self.handler().map_or(0, |h| h.written_compressed)
    }
    pub fn written_uncompressed(&self) -> u64 {
        self.written_uncompressed
    }
    /// The compression detected in the body (None if detection was off or no body came).
    pub fn compression(&self) -> Option<Compression> {
        self.compression
    }
    /// Download progress in percent (of the compressed size, when known).
    pub fn progress_percent(&self) -> u32 {
        match self.state {
            JobState::Done => 100,
            _ => self.handler().map_or(0, |h| h.progress_percent),
        }
    }
}

impl Drop for ImportJob {
    fn drop(&mut self) {
        // Stop the worker first, then let the easy handle go (its Drop detaches it from
        // the multi handle; the glue flushes the resulting socket updates on its next
        // call), then wait for the worker so its cleanup has happened when we return.
        if let Some(ch) = &self.channel {
            ch.cancel();
        }
        if let Some(handle) = self.handle.as_mut() {
            handle.get_mut().detaching = true;
        }
        self.handle = None;
        if let Some(ch) = &self.channel {
            ch.join();
        }
    }
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

fn downgrade_message(from: &str, to: &str) -> String {
    format!(
        "Refusing the redirect from {from} to {to}: it leaves HTTPS for plain HTTP \
         (only an endpoint configured insecure may)."
    )
}

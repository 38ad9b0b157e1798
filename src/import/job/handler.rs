//! `JobHandler`: the curl callbacks of one download (headers, body, progress).
//!
//! These run on the loop thread *inside* libcurl, so they only change state they own and
//! return; they never call into the multi handle or into the job's owner. A failure is
//! stored in `failure` (the "callback error slot") and the transfer aborted by returning
//! an error value; the job reads the slot when curl reports completion.

use std::sync::Arc;

use curl::easy::{Handler, WriteError};

use super::worker::{self, Channel, WorkerSpec};
use super::{JobState, ResponseMeta};
use crate::event::{self, Clock};
use crate::log_error_errno;
use crate::util::dialect::Dialect;
use crate::util::error::Error;
use crate::util::format::{format_bytes, format_timespan, parse_http_time};

const USEC_PER_SEC: u64 = 1_000_000;
/// Bytes of an error response's body we keep (for registry error messages).
const ERROR_BODY_MAX: usize = 64 << 10;

/// Per-transfer state, owned by the curl easy handle.
pub(crate) struct JobHandler {
    pub url: String,
    /// Mirrors the job's state while the transfer runs: Analyzing until the first body
    /// byte, Running after.
    pub state: JobState,
    pub channel: Arc<Channel>,
    /// Moved into the worker thread at the first body byte.
    pub spec: Option<WorkerSpec>,

    /// The current response (reset on every status line, so redirect hops and `100
    /// Continue` never leak into the final response: decision Q3).
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub etag: Option<String>,
    pub content_length: Option<u64>,
    pub last_modified: Option<u64>,

    pub old_etags: Vec<String>,
    /// v252 names the matching ETag in "Skipping download.".
    dialect: Dialect,
    /// The server's ETag matched one we have: the download is skipped.
    pub etag_exists: bool,
    pub compressed_max: u64,
    pub written_compressed: u64,
    /// Where the request asked the body to start (a resumed download or a part): in a
    /// 206 answer the bytes before it count toward `compressed_max` too.
    pub resumed_from: u64,
    /// A part of a blob fetched in parts: "Downloading …" is debug output.
    pub part: bool,
    /// The body of a non-2xx response (bounded), which never goes to the sink.
    pub error_body: Vec<u8>,
    /// Why we aborted the transfer; wins over curl's generic "write error".
    pub failure: Option<Error>,
    /// The last redirect seen: the URL that answered 3xx and its `Location` (made
    /// absolute), for the messages about refused or looping redirects.
    pub redirect: Option<(String, String)>,
    /// We returned `WriteError::Pause`; the job unpauses once the worker drained.
    pub paused: bool,

    pub progress_percent: u32,
    start_usec: u64,
    last_status_usec: u64,
    /// Set by the job just before the easy handle leaves the multi handle unfinished
    /// (cancel, drop): libcurl then runs a last, forced progress update (`multi_done()`),
    /// whose `Got N% of …` line would follow "Exiting." on SIGTERM. Nothing is logged
    /// once it is set.
    pub detaching: bool,
}

impl JobHandler {
    pub fn new(
        url: &str,
        channel: Arc<Channel>,
        spec: WorkerSpec,
        old_etags: Vec<String>,
        compressed_max: u64,
        dialect: Dialect,
    ) -> Self {
        JobHandler {
            url: url.to_string(),
            state: JobState::Analyzing,
            channel,
            spec: Some(spec),
            // A `file:` transfer has no status line: its body is the payload.
            status: if url
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("file:"))
            {
                200
            } else {
                0
            },
            headers: Vec::new(),
            etag: None,
            content_length: None,
            last_modified: None,
            old_etags,
            dialect,
            etag_exists: false,
            compressed_max,
            written_compressed: 0,
            resumed_from: 0,
            part: false,
            error_body: Vec::new(),
            failure: None,
            redirect: None,
            paused: false,
            progress_percent: 0,
            start_usec: event::now(Clock::Monotonic),
            last_status_usec: 0,
            detaching: false,
        }
    }

    /// Headers we act on come only from a final 2xx or 304 response.
    fn status_counts(&self) -> bool {
        (200..300).contains(&self.status) || self.status == 304
    }

    /// Look a header of the current response up, case-insensitively (Q2: HTTP/2 sends
    /// lowercase names).
    pub fn header(&self, name: &str) -> Option<&str> {
        super::find_header(&self.headers, name)
    }

    pub fn meta(&self) -> ResponseMeta {
        ResponseMeta {
            url: self.url.clone(),
            status: self.status,
            etag: self.etag.clone(),
            content_length: self.content_length,
            last_modified: self.last_modified,
            headers: self.headers.clone(),
        }
    }

    fn fail(&mut self, e: Error) {
        if self.failure.is_none() {
            self.failure = Some(e);
        }
    }

    /// The first body byte of a successful response: hand the response to a new worker.
    fn start_worker(&mut self) -> Result<(), Error> {
        self.channel.lock().meta = Some(self.meta());
        let Some(spec) = self.spec.take() else {
            return Err(Error::new(libc::EBUSY));
        };
        worker::spawn(&self.channel, spec)?;
        self.state = JobState::Running;
        Ok(())
    }

    /// Bytes of the resource before this response's body: what the request resumed
    /// after, if the server honoured it (206); none for a whole body.
    fn resumed(&self) -> u64 {
        if self.status == 206 {
            self.resumed_from
        } else {
            0
        }
    }

    /// The C job's checks on compressed bytes, before they are queued.
    fn check_compressed(&self, n: usize) -> Result<(), Error> {
        let total = self
            .written_compressed
            .checked_add(n as u64)
            .and_then(|t| t.checked_add(self.resumed()))
            .ok_or_else(|| {
                log_error_errno!(Error::new(libc::EOVERFLOW), "File too large, overflow")
            })?;
        if total > self.compressed_max {
            return Err(log_error_errno!(
                Error::new(libc::EFBIG),
                "File overly large, refusing."
            ));
        }
        if self
            .content_length
            .is_some_and(|len| total - self.resumed() > len)
        {
            return Err(log_error_errno!(
                Error::new(libc::EFBIG),
                "Content length incorrect."
            ));
        }
        Ok(())
    }
}

/// Split a raw header line into name and value: the value without leading blanks and
/// without trailing whitespace (the CRLF included). Lines with a NUL byte are ignored, as
/// in the C `curl_header_strdup`.
fn parse_header_line(line: &[u8]) -> Option<(String, String)> {
    if line.contains(&0) {
        return None;
    }
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, rest) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() {
        return None;
    }
    let value = std::str::from_utf8(rest).ok()?;
    let value = value.trim_start_matches([' ', '\t', '\r', '\n']).trim_end();
    let name = std::str::from_utf8(name).ok()?.trim();
    Some((name.to_string(), value.to_string()))
}

/// The status code of a status line (`HTTP/1.1 200 OK`, `HTTP/2 304`).
fn parse_status_line(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("HTTP/")?;
    let code = rest.split_whitespace().nth(1)?;
    code.parse().ok()
}

/// `location` as an absolute URL, relative to `base` (an absolute one, or one starting
/// with `//` or `/`; anything else is taken as relative to `base`'s directory).
fn absolute_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    if let Some(authority_path) = location.strip_prefix("//") {
        return format!("{scheme}://{authority_path}");
    }
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..host_end]);
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let path = rest[host_end..].split(['?', '#']).next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    format!("{origin}{dir}{location}")
}

impl Handler for JobHandler {
    fn header(&mut self, data: &[u8]) -> bool {
        if self.failure.is_some() || self.etag_exists {
            return false;
        }
        if let Some(status) = parse_status_line(data) {
            self.status = status;
            self.headers.clear();
            self.etag = None;
            self.content_length = None;
            self.last_modified = None;
            return true;
        }
        let Some((name, value)) = parse_header_line(data) else {
            return true;
        };
        let counts = self.status_counts();
        if (300..400).contains(&self.status) && name.eq_ignore_ascii_case("Location") {
            let from = self
                .redirect
                .take()
                .map_or_else(|| self.url.clone(), |(_, to)| to);
            let to = absolute_location(&from, &value);
            self.redirect = Some((from, to));
        }
        if counts && name.eq_ignore_ascii_case("ETag") {
            if self.old_etags.contains(&value) {
                match self.dialect {
                    Dialect::V219 => log::info!("Image already downloaded. Skipping download."),
                    Dialect::V252 => {
                        log::info!("Image already downloaded. Skipping download. ({value})")
                    }
                }
                self.etag = Some(value.clone());
                self.headers.push((name, value));
                self.etag_exists = true;
                // Abort the transfer; the job treats this as success.
                return false;
            }
            self.etag = Some(value.clone());
        } else if counts && name.eq_ignore_ascii_case("Content-Length") {
            // An unparsable length stays unknown, as in the C job.
            if let Ok(len) = value.parse::<u64>() {
                if len.saturating_add(self.resumed()) > self.compressed_max {
                    self.fail(log_error_errno!(
                        Error::new(libc::EFBIG),
                        "Content too large."
                    ));
                    return false;
                }
                self.content_length = Some(len);
                if self.status != 304 {
                    let level = if self.part {
                        log::Level::Debug
                    } else {
                        log::Level::Info
                    };
                    log::log!(level, "Downloading {} for {}.", format_bytes(len), self.url);
                }
            }
        } else if counts && name.eq_ignore_ascii_case("Last-Modified") {
            self.last_modified = parse_http_time(&value).ok();
        }
        self.headers.push((name, value));
        true
    }

    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        if self.failure.is_some() || self.etag_exists || self.state.is_complete() {
            return Ok(0);
        }
        if !(200..300).contains(&self.status) {
            // An error page (or anything that is not the payload) never reaches the sink:
            // keep a bounded copy for the owner's error message and let the transfer end.
            let room = ERROR_BODY_MAX.saturating_sub(self.error_body.len());
            self.error_body
                .extend_from_slice(&data[..data.len().min(room)]);
            return Ok(data.len());
        }
        if let Err(e) = self.check_compressed(data.len()) {
            self.fail(e);
            return Ok(0);
        }
        if self.state == JobState::Analyzing {
            if let Err(e) = self.start_worker() {
                let e = log_error_errno!(e.clone(), "Failed to start download worker: {}", e);
                self.fail(e);
                return Ok(0);
            }
        }
        {
            // A worker that already gave up (bad archive, disk full) ends the transfer.
            let st = self.channel.lock();
            if let Some(Err(e)) = &st.outcome {
                let e = e.clone();
                drop(st);
                self.fail(e);
                return Ok(0);
            }
        }
        if !self.channel.push(data) {
            self.paused = true;
            return Err(WriteError::Pause);
        }
        self.written_compressed += data.len() as u64;
        Ok(data.len())
    }

    fn progress(&mut self, dltotal: f64, dlnow: f64, _ultotal: f64, _ulnow: f64) -> bool {
        if dltotal <= 0.0 || self.detaching {
            return true;
        }
        let percent = (100.0 * dlnow / dltotal) as u32;
        let n = event::now(Clock::Monotonic);
        if n > self.last_status_usec + USEC_PER_SEC
            && percent != self.progress_percent
            && dlnow < dltotal
        {
            if n > self.start_usec + USEC_PER_SEC && dlnow > 0.0 {
                let done = (n - self.start_usec) as f64;
                let left = done * dltotal / dlnow - done;
                let rate = dlnow * USEC_PER_SEC as f64 / done;
                log::info!(
                    "Got {}% of {}. {} left at {}/s.",
                    percent,
                    self.url,
                    format_timespan(left as u64, USEC_PER_SEC),
                    format_bytes(rate as u64)
                );
            } else {
                log::info!("Got {}% of {}.", percent, self.url);
            }
            self.progress_percent = percent;
            self.last_status_usec = n;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_are_made_absolute() {
        let base = "https://r.example:5000/v2/a/blobs/x?q=1";
        assert_eq!(
            absolute_location(base, "http://s.example/y"),
            "http://s.example/y"
        );
        assert_eq!(
            absolute_location(base, "//s.example/y"),
            "https://s.example/y"
        );
        assert_eq!(absolute_location(base, "/z"), "https://r.example:5000/z");
        assert_eq!(
            absolute_location(base, "z"),
            "https://r.example:5000/v2/a/blobs/z"
        );
        assert_eq!(absolute_location("https://h", "z"), "https://h/z");
    }

    #[test]
    fn header_lines_are_split_and_trimmed() {
        assert_eq!(
            parse_header_line(b"ETag: \"abc\"\r\n"),
            Some(("ETag".into(), "\"abc\"".into()))
        );
        assert_eq!(
            parse_header_line(b"content-length:\t42 \r\n"),
            Some(("content-length".into(), "42".into()))
        );
        assert_eq!(
            parse_header_line(b"X-Empty:\r\n"),
            Some(("X-Empty".into(), "".into()))
        );
        assert_eq!(parse_header_line(b"X-Nul: a\0b\r\n"), None);
        assert_eq!(parse_header_line(b"X\0Nul: ab\r\n"), None);
        assert_eq!(parse_header_line(b"\r\n"), None);
    }

    #[test]
    fn a_detaching_handler_reports_no_progress() {
        let spec = WorkerSpec {
            url: "http://x/y".into(),
            sink: crate::import::job::Sink::Memory,
            detect_compression: false,
            calc_checksum: false,
            checksum_seed: None,
            hash_uncompressed: false,
            uncompressed_max: u64::MAX,
            resume_from: None,
            range_end: None,
            dialect: Dialect::V219,
            spool: None,
        };
        let channel = Channel::new(super::super::worker::DEFAULT_QUEUE_LIMIT).unwrap();
        let mut h = JobHandler::new(
            "http://x/y",
            channel,
            spec,
            Vec::new(),
            u64::MAX,
            Dialect::V219,
        );
        h.detaching = true;
        assert!(Handler::progress(&mut h, 100.0, 42.0, 0.0, 0.0));
        assert_eq!((h.progress_percent, h.last_status_usec), (0, 0));
        h.detaching = false;
        assert!(Handler::progress(&mut h, 100.0, 42.0, 0.0, 0.0));
        assert_eq!(h.progress_percent, 42);
    }

    #[test]
    fn status_lines_of_every_http_version_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/2 304\r\n"), Some(304));
        assert_eq!(parse_status_line(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(parse_status_line(b"ETag: x\r\n"), None);
    }

    /// Mutation campaign (`util::mutate`; `MUTATION_ITERATIONS` for long runs):
    /// sequences of mutated status and header lines go through one handler's header
    /// callback. No panic; a split header has a name without ':' and a value without
    /// surrounding blanks, and neither holds a NUL; a status code only comes from an
    /// `HTTP/` line; a stored length never exceeds the limit; a failure carries an errno
    /// and its message.
    #[test]
    fn mutated_header_lines() {
        use crate::import::job::Sink;
        use crate::util::mutate::{mutate_bytes, Campaign, Sources};
        const MAX: u64 = 1 << 30;
        let seeds: Vec<Vec<u8>> = [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"HTTP/2 304\r\n",
            b"HTTP/1.0 404 Not Found\r\n",
            b"HTTP/1.1 100 Continue\r\n",
            b"ETag: \"abc\"\r\n",
            b"etag: W/\"old\"\r\n",
            b"Content-Length: 42\r\n",
            b"content-length:\t18446744073709551616 \r\n",
            b"Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
            b"Location: http://x/\r\n",
            b"X-Empty:\r\n",
            b"\r\n",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        let tokens: [&[u8]; 10] = [
            b":",
            b"HTTP/",
            b" 200 ",
            b"\r\n",
            b"\0",
            b"\t",
            b"ETag",
            b"Content-Length",
            b"99999999999",
            b"\xff",
        ];
        let src = Sources {
            corpus: &seeds,
            dictionary: &tokens,
            max_len: 2048,
        };
        Campaign::new("http-headers", 20_000).run(
            |rng| {
                // Several lines, each a mutated seed, as curl hands them over one by one.
                let mut input = Vec::new();
                for _ in 0..rng.between(1, 6) {
                    let mut line = rng.pick(&seeds).clone();
                    if rng.chance(2, 3) {
                        mutate_bytes(rng, &mut line, &src, 3);
                    }
                    input.extend_from_slice(&line);
                    input.push(b'\n');
                }
                input
            },
            |input| {
                let spec = WorkerSpec {
                    url: "http://x/y".into(),
                    sink: Sink::Memory,
                    detect_compression: true,
                    calc_checksum: false,
                    checksum_seed: None,
                    hash_uncompressed: false,
                    uncompressed_max: MAX,
                    resume_from: None,
                    range_end: None,
                    dialect: Dialect::V219,
                    spool: None,
                };
                let channel =
                    Channel::new(super::worker::DEFAULT_QUEUE_LIMIT).map_err(|e| e.to_string())?;
                let mut h = JobHandler::new(
                    "http://x/y",
                    channel,
                    spec,
                    vec!["\"old\"".into()],
                    MAX,
                    Dialect::V219,
                );
                for line in input.split_inclusive(|&b| b == b'\n') {
                    if let Some((name, value)) = parse_header_line(line) {
                        let blank = |c: char| c == ' ' || c == '\t';
                        if name.contains([':', '\0'])
                            || value.contains('\0')
                            || value.starts_with(blank)
                            || value.ends_with(char::is_whitespace)
                        {
                            return Err(format!("{line:?} split into {name:?} and {value:?}"));
                        }
                    }
                    if parse_status_line(line).is_some() && !line.starts_with(b"HTTP/") {
                        return Err(format!("{line:?} read as a status line"));
                    }
                    let go_on = Handler::header(&mut h, line);
                    if h.content_length.is_some_and(|l| l > MAX) {
                        return Err(format!("content length {:?} stored", h.content_length));
                    }
                    if let Some(e) = &h.failure {
                        if e.errno() <= 0 || e.msg().is_none() {
                            return Err(format!("failure {e:?}"));
                        }
                    }
                    if !go_on {
                        break;
                    }
                }
                Ok(())
            },
        );
    }
}

//! [`JobOptions`]: what an owner asks of one download (sink, limits, resumption, headers,
//! logging), consumed when the job begins.

use sha2::Sha256;

use super::worker::DEFAULT_QUEUE_LIMIT;
use super::{Expected, Sink, SpoolTo, DEFAULT_SIZE_MAX};
use crate::curl_glue::Transport;
use crate::util::dialect::Dialect;

/// How to run a job.
pub struct JobOptions {
    pub sink: Sink,
    /// ETags of copies we already have: sent as `If-None-Match`; a match skips the download.
    pub old_etags: Vec<String>,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// SHA-256 of the bytes as served (for SHA256SUMS and digests).
    pub calc_checksum: bool,
    /// SHA-256 of the decompressed bytes.
    pub hash_uncompressed: bool,
    /// Sniff and undo compression (the C behaviour). Off: the bytes are taken as served.
    pub detect_compression: bool,
    pub compressed_max: u64,
    pub uncompressed_max: u64,
    /// Resume a partial download: request `Range: bytes=N-`, expect a 206 starting there,
    /// and continue the checksum from `checksum_seed`; a 200 starts over. Needs a file sink
    /// and no compression detection.
    pub resume_from: Option<u64>,
    /// With `resume_from`: ask for `Range: bytes=N-END` (END inclusive) and expect a 206
    /// whose `Content-Range` is exactly that; a 200 is handed on as it is. Such a request
    /// is one of several parts fetched at once (and asks for [`Self::own_connection`]).
    pub range_end: Option<u64>,
    /// Send the request over HTTP/1.1, on every hop of a redirect, so that it has a TCP
    /// connection of its own while it runs: for bulk downloads that run side by side (an
    /// image's layers, the parts of a big one). Over HTTP/2 libcurl multiplexes every
    /// transfer to one host on one connection, and a limit per connection (a CDN's or a
    /// proxy's throttle, the window of a long round trip) then bounds all of them
    /// together. Off (small requests: manifests, tokens): HTTP/2 where the server speaks
    /// it, one connection for all of them.
    pub own_connection: bool,
    pub checksum_seed: Option<Sha256>,
    /// Don't log the failures the job finds itself (an HTTP error status, a transfer that
    /// failed or was cut short): the owner reports them, as registries answer with JSON
    /// error bodies worth showing and an owner with another source to try reports a
    /// failure there as a step, not as an error. The job's error carries the message
    /// ([`ImportJob::unlogged_failure`]).
    pub quiet_failures: bool,
    /// Bytes that may wait for the worker before the transfer is paused. An owner running
    /// many jobs at once lowers it so their sum stays bounded.
    pub queue_limit: usize,
    /// The size and digest the bytes as served must have (a resumed download's counted
    /// from its start); the job fails by itself when they do not.
    pub expected: Option<Expected>,
    /// Whose messages the job logs: v252 adds the ETag to "Skipping download.", logs
    /// "Acquired …" when a body is complete, and fails a 404 with ENOMEDIUM.
    pub dialect: Dialect,
    /// A 404 fails the job with ENOMEDIUM without a message: the owner tries another
    /// URL or reports the file as absent itself.
    pub quiet_not_found: bool,
    /// What the request adds to the glue's curl settings (a registry endpoint's TLS).
    pub transport: Transport,
    /// Send this form (`application/x-www-form-urlencoded`) with `POST` instead of a `GET`.
    pub post_form: Option<String>,
    /// Follow a redirect from an `https` URL to plain `http` (an endpoint configured
    /// insecure); by default it is refused with a message naming both URLs.
    pub allow_insecure_redirects: bool,
    /// Keep the bytes as served in a partial download, resuming after what it holds
    /// (pull-tar, pull-raw): see [`SpoolTo`]. Not with `resume_from`.
    pub spool: Option<SpoolTo>,
}

impl JobOptions {
    /// The C defaults: compression detected, 8 GiB limits, no checksum.
    pub fn new(sink: Sink) -> Self {
        JobOptions {
            sink,
            old_etags: Vec::new(),
            headers: Vec::new(),
            calc_checksum: false,
            hash_uncompressed: false,
            detect_compression: true,
            compressed_max: DEFAULT_SIZE_MAX,
            uncompressed_max: DEFAULT_SIZE_MAX,
            resume_from: None,
            range_end: None,
            own_connection: false,
            checksum_seed: None,
            quiet_failures: false,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            expected: None,
            dialect: Dialect::V219,
            quiet_not_found: false,
            transport: Transport::default(),
            post_form: None,
            allow_insecure_redirects: false,
            spool: None,
        }
    }
}

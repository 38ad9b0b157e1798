//! `OciImport`: the pull-oci state machine.
//!
//! ```text
//! ping /v2/ ─┬─ 200 ───────────────────────────────┐
//!            └─ 401 ─ Bearer: token ─ Basic: creds ─┴─ manifest ─┬─ index: pick platform ─ manifest
//!                                                                └─ image ─ config ─ layers ─ finish
//! ```
//!
//! Every request is an [`ImportJob`] on the one loop. After the config, all missing layer
//! blobs download in parallel (up to `--max-concurrent-downloads`, base layers first),
//! each into a spool file under the image root ([`spool`]), its size and sha256 checked
//! when the job completes. Layers are applied in order by a task ([`apply`]) that
//! decompresses and unpacks on two threads and checks the DiffID: layer i starts as soon
//! as layer i-1 is applied and its own download has begun, reading the spool as it grows
//! (it reaches the end only once the blob was verified). Downloads of the layers above
//! carry on meanwhile; the loop thread only moves bytes and reacts to completions.
//!
//! Storage: on btrfs every applied layer is kept as a read-only subvolume
//! `.oci-chain-<ChainID hex>` (shared by every image with the same base; layers whose chain
//! exists are not downloaded at all) and the local image is a writable snapshot of the
//! top. Elsewhere the layers are applied into one temporary directory that becomes the
//! local image. Nothing gets a final name before its digests checked out.
//!
//! Failures: 5xx, 429, 408 and transport errors are retried (four attempts, backoff
//! doubling from 1 s; a blob resumes with a Range request from what its spool holds); a
//! 401 gets a new token (or Basic credentials) once per request; anything else fails the
//! pull with one message, and dropping the importer removes every temporary file.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::apply::{self, ApplyWork, Target};
use super::auth::{self, Authorization, Credentials};
use super::config::{self, ImageConfig};
use super::digest::Digest;
use super::manifest::{self, Descriptor, Document, ImageManifest};
use super::platform::Platform;
use super::reference::Reference;
use super::registry_error;
use super::spool::{self, Spool, SpoolReader};

use crate::curl_glue::{CurlGlue, CurlSettings};
use crate::event::{Clock, EventLoop, SourceId, TaskHandle, TimerAction};
use crate::import::common::{self, TempPath};
use crate::import::job::{ImportJob, JobOptions, JobOwner, JobSet, JobState, Sink};
use crate::import::{operation_finished, Importer};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::format::{format_bytes, format_timespan};
use crate::util::{btrfs, fs, notify, test_seams, validate};

/// Attempts per request before a retryable failure becomes final.
const ATTEMPTS_MAX: u32 = 4;
/// Delay before the first retry; doubles with each attempt.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest `Retry-After` we honour.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// Default number of blobs downloading at once (containers/image's choice).
pub const DEFAULT_CONCURRENT_DOWNLOADS: usize = 6;
/// Body bytes all layer downloads together may queue for their workers (a share per
/// download, so the peak stays bounded at any `--max-concurrent-downloads`).
const BLOB_QUEUE_BUDGET: usize = 24 << 20;
/// Largest image config we accept (real ones are KiBs; history can make them larger).
const CONFIG_MAX: u64 = 16 << 20;
/// Largest ping or token response we read.
const SMALL_BODY_MAX: u64 = 1 << 20;
/// How often the overall progress is recomputed while layers download.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// Name prefix of the cached layer subvolumes (distinct from systemd v260's
/// `.oci-sha256:<hex>` unflattened layers).
pub const CHAIN_PREFIX: &str = ".oci-chain-";

/// What to pull, validated by the command line.
pub struct PullRequest {
    pub reference: Reference,
    /// `None`: layers only (kept on btrfs), no local image.
    pub local: Option<String>,
    pub image_root: PathBuf,
    pub force: bool,
    pub platform: Platform,
    pub max_downloads: usize,
    /// From the auth files, with the file they came from.
    pub credentials: Option<(Credentials, PathBuf)>,
    /// What the easy handles get.
    pub curl: CurlSettings,
}

/// The requests of a pull, as keys of the job set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Key {
    Ping,
    Token,
    Manifest,
    Config,
    Blob(usize),
}

/// Retry bookkeeping of one request.
#[derive(Default, Clone, Copy)]
struct RequestState {
    /// Attempts begun so far.
    attempts: u32,
    /// The authorization generation the last attempt was sent with.
    auth_generation: u32,
    /// A 401 already made us re-authorize this request once.
    auth_retried: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BlobState {
    /// Waiting for a download slot.
    Queued,
    Fetching,
    /// Waiting for a retry timer.
    RetryWait,
    /// Hashing what the spool holds, to resume after it.
    Hashing,
    /// Complete; size and sha256 verified.
    Verified,
}

/// One blob to download (a layer digest may appear in several layers).
struct Blob {
    /// Hashes the spool's prefix before a resumed attempt; dropped (joined) before `spool`.
    prefix_task: Option<TaskHandle>,
    /// `.#oci-…` under the image root, once the download started.
    spool_path: Option<PathBuf>,
    /// Its owner: removes it after the last layer using it is applied (moved into that
    /// layer's apply task).
    spool: Option<TempPath>,
    /// Shared with the download's writer and the apply task's reader.
    spool_state: Arc<Spool>,
    descriptor: Descriptor,
    state: BlobState,
    /// Bytes already in the spool and their hash, for the next attempt's Range request.
    resume: Option<(u64, Sha256)>,
    /// Index into `descriptor.urls` being tried; `urls.len()` means the registry.
    source: usize,
    /// Layers that still have to be applied from this blob.
    uses_left: usize,
}

/// One layer of the image.
struct Layer {
    digest: Digest,
    diff_id: Digest,
    chain_id: Digest,
    /// `None` when its chain subvolume exists already (not downloaded).
    blob: Option<usize>,
}

/// Where the applied layers go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Storage {
    /// One read-only subvolume per layer chain, shared between images.
    BtrfsChains,
    /// One temporary directory, all layers applied into it in turn.
    Directory,
}

/// A body kept in memory by a job's stream consumer.
type BodySlot = Arc<Mutex<Vec<u8>>>;

/// The importer. Field order is drop order: jobs and tasks first (their threads are
/// stopped and joined), then temporary paths, the glue last.
pub struct OciImport {
    jobs: JobSet<Key>,
    apply_task: Option<TaskHandle>,
    finish_task: Option<TaskHandle>,
    /// btrfs: the layer subvolume being built; otherwise the image directory.
    apply_temp: Option<TempPath>,
    blobs: Vec<Blob>,
    glue: CurlGlue,

    req: PullRequest,
    storage: Storage,
    /// Set when the pull is abandoned: stops the apply and finish work promptly.
    cancel: Arc<AtomicBool>,
    finished: bool,

    auth: Authorization,
    /// Bumped whenever `auth` changes, so a request knows whether to retry with it.
    auth_generation: u32,
    /// The Bearer challenge's realm and service, once seen.
    bearer: Option<(String, Option<String>)>,
    /// Requests waiting for the token request to finish.
    token_waiters: Vec<Key>,
    requests: HashMap<Key, RequestState>,
    timers: Vec<SourceId>,
    progress_timer: Option<SourceId>,
    progress_last: Option<u32>,

    /// Where the manifest job writes its body.
    manifest_body: BodySlot,
    /// What the manifest job asks for: the reference's tag or digest, then the digest the
    /// index chose.
    manifest_target: String,
    /// The index entry being fetched, to verify the manifest against.
    manifest_expected: Option<Descriptor>,
    /// The manifest was chosen from an index for our platform (else the config's
    /// platform is compared with ours, and a mismatch warned about).
    from_index: bool,
    manifest: Option<ImageManifest>,
    config_body: BodySlot,
    config_bytes: Vec<u8>,
    config: Option<ImageConfig>,
    layers: Vec<Layer>,
    /// The next layer to apply.
    next_apply: usize,
    /// Layers that need applying (not already present).
    apply_total: usize,
    apply_done: usize,
}

impl OciImport {
    pub fn new(req: PullRequest) -> Result<Self> {
        let manifest_target = req.reference.manifest_reference();
        Ok(OciImport {
            jobs: JobSet::new(),
            apply_task: None,
            finish_task: None,
            apply_temp: None,
            blobs: Vec::new(),
            glue: CurlGlue::new(req.curl.clone())?,
            req,
            storage: Storage::Directory,
            cancel: Arc::new(AtomicBool::new(false)),
            finished: false,
            auth: Authorization::Anonymous,
            auth_generation: 0,
            bearer: None,
            token_waiters: Vec::new(),
            requests: HashMap::new(),
            timers: Vec::new(),
            progress_timer: None,
            progress_last: None,
            manifest_body: Arc::default(),
            manifest_target,
            manifest_expected: None,
            from_index: false,
            manifest: None,
            config_body: Arc::default(),
            config_bytes: Vec::new(),
            config: None,
            layers: Vec::new(),
            next_apply: 0,
            apply_total: 0,
            apply_done: 0,
        })
    }

    fn registry_url(&self, path: &str) -> String {
        format!("https://{}/v2/{}", self.req.reference.registry_host(), path)
    }

    fn chain_path(&self, chain: &Digest) -> PathBuf {
        self.req
            .image_root
            .join(format!("{CHAIN_PREFIX}{}", chain.hex()))
    }

    // --- Requests -------------------------------------------------------------------------

    /// Begin (or re-begin) the request `key`.
    fn begin(&mut self, lp: &mut EventLoop<Self>, key: Key) -> Result<()> {
        let job = self.make_job(key)?;
        let generation = self.auth_generation;
        let st = self.requests.entry(key).or_default();
        st.attempts += 1;
        st.auth_generation = generation;
        if let Key::Blob(b) = key {
            self.blobs[b].state = BlobState::Fetching;
        }
        let OciImport { jobs, glue, .. } = self;
        jobs.begin(lp, glue, key, job)
            .map_err(|e| log_error_errno!(e.clone(), "Failed to start download: {}", e))
    }

    fn make_job(&mut self, key: Key) -> Result<ImportJob> {
        let mut headers = Vec::new();
        let registry_auth = self.auth.header();
        let (url, sink, max) = match key {
            Key::Ping => (self.registry_url(""), Sink::Memory, SMALL_BODY_MAX),
            Key::Token => {
                let (realm, service) = self
                    .bearer
                    .clone()
                    .ok_or_else(|| Error::new(libc::EINVAL))?;
                let scope = format!("repository:{}:pull", self.req.reference.repository());
                if let Some((creds, _)) = &self.req.credentials {
                    headers.push(format!("Authorization: {}", creds.basic()));
                }
                let url = auth::token_url(&realm, service.as_deref(), &[scope]);
                (url, Sink::Memory, SMALL_BODY_MAX)
            }
            Key::Manifest => {
                headers.push(manifest::ACCEPT.to_string());
                headers.extend(registry_auth);
                let url = self.registry_url(&format!(
                    "{}/manifests/{}",
                    self.req.reference.repository(),
                    self.manifest_target
                ));
                let what = format!(
                    "Manifest of '{}' is larger than {}, refusing.",
                    self.req.reference,
                    format_bytes(manifest::MANIFEST_MAX)
                );
                let sink = bounded_sink(manifest::MANIFEST_MAX, self.manifest_body.clone(), what);
                (url, sink, crate::import::job::DEFAULT_SIZE_MAX)
            }
            Key::Config => {
                headers.extend(registry_auth);
                let config = &self.manifest_ref()?.config;
                let url = self.registry_url(&format!(
                    "{}/blobs/{}",
                    self.req.reference.repository(),
                    config.digest
                ));
                let what = format!(
                    "Image config {} is larger than announced, refusing.",
                    config.digest
                );
                let sink = bounded_sink(config.size, self.config_body.clone(), what);
                (url, sink, crate::import::job::DEFAULT_SIZE_MAX)
            }
            Key::Blob(b) => return self.make_blob_job(b, registry_auth),
        };
        let mut options = JobOptions::new(sink);
        options.headers = headers;
        options.calc_checksum = true;
        options.detect_compression = false;
        options.quiet_http_errors = true;
        options.compressed_max = max;
        options.uncompressed_max = max;
        Ok(ImportJob::new(&url, options))
    }

    fn make_blob_job(&mut self, b: usize, registry_auth: Option<String>) -> Result<ImportJob> {
        let registry_url = self.registry_url(&format!(
            "{}/blobs/{}",
            self.req.reference.repository(),
            self.blobs[b].descriptor.digest
        ));
        let root = self.req.image_root.clone();
        let blob = &mut self.blobs[b];
        let from_registry = blob.source >= blob.descriptor.urls.len();
        let url = if from_registry {
            registry_url
        } else {
            blob.descriptor.urls[blob.source].clone()
        };
        let resume = blob.resume.take();
        // Created on the first attempt and opened here for every attempt, so the worker
        // writes through an fd that stays valid whatever happens to the name.
        let first_attempt = blob.spool_path.is_none();
        let path = match &blob.spool_path {
            Some(path) => path.clone(),
            None => {
                let spool = TempPath::new(fs::tempfn_random(
                    &root.join(format!("oci-{}", &blob.descriptor.digest.hex()[..12])),
                ));
                let path = spool.path().to_path_buf();
                blob.spool_path = Some(path.clone());
                blob.spool = Some(spool);
                path
            }
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(first_attempt)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                let e = Error::from(e);
                log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e)
            })?;
        let consumer = spool::consumer(
            file,
            path,
            blob.spool_state.clone(),
            resume.as_ref().map(|r| r.0),
        );
        let mut options = JobOptions::new(Sink::Stream(consumer));
        // Credentials go to the registry only, never to a descriptor's URLs.
        if from_registry {
            options.headers.extend(registry_auth);
        }
        options.calc_checksum = true;
        options.detect_compression = false;
        options.quiet_http_errors = true;
        // All downloads together queue at most BLOB_QUEUE_BUDGET, however many run at once.
        options.queue_limit = (BLOB_QUEUE_BUDGET / self.req.max_downloads.max(1))
            .clamp(256 << 10, crate::import::job::DEFAULT_QUEUE_LIMIT);
        options.compressed_max = blob.descriptor.size;
        options.uncompressed_max = blob.descriptor.size;
        if let Some((offset, hasher)) = resume {
            log::info!(
                "Resuming download of layer {} at byte {}.",
                blob.descriptor.digest,
                offset
            );
            options.resume_from = Some(offset);
            options.checksum_seed = Some(hasher);
        }
        Ok(ImportJob::new(&url, options))
    }

    fn manifest_ref(&self) -> Result<&ImageManifest> {
        self.manifest
            .as_ref()
            .ok_or_else(|| Error::new(libc::EINVAL))
    }

    fn on_request_failed(&mut self, lp: &mut EventLoop<Self>, key: Key) -> Result<()> {
        let job = self.jobs.get(key).ok_or_else(|| Error::new(libc::EINVAL))?;
        let code = job.response_code();
        let error = job
            .error()
            .cloned()
            .unwrap_or_else(|| Error::new(libc::EIO));
        let transient = match job.transfer_error() {
            // Connection trouble is worth another try; TLS verification, protocol and
            // our own (write) errors are not.
            Some(e) => {
                e.is_couldnt_connect()
                    || e.is_operation_timedout()
                    || e.is_partial_file()
                    || e.is_recv_error()
                    || e.is_send_error()
                    || e.is_got_nothing()
                    || e.is_http2_error()
                    || e.is_http2_stream_error()
            }
            // A body shorter than its Content-Length, noticed by the job.
            None => error.errno() == libc::EIO,
        };
        let url = job.url().to_string();
        let description = registry_error::describe(code, job.error_body());
        let retry_after = job.header("Retry-After").and_then(parse_retry_after);
        let challenges = job
            .headers()
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>();
        let foreign = matches!(key, Key::Blob(b) if self.blobs[b].source < self.blobs[b].descriptor.urls.len());

        if code == 401 && !foreign {
            return match key {
                Key::Ping => self.on_ping_challenge(lp, &challenges),
                Key::Token => Err(log_error_errno!(
                    Error::new(libc::EACCES),
                    "Token server refused {}: {}.",
                    self.credentials_description(),
                    description
                )),
                _ => self.on_unauthorized(lp, key, &challenges, &description),
            };
        }
        let attempts = self.requests.get(&key).map_or(1, |s| s.attempts);
        let retryable = match code {
            408 | 429 | 500..=599 => true,
            c if c >= 300 => false,
            // The job logged what happened.
            _ => transient,
        };
        if retryable && attempts < ATTEMPTS_MAX {
            // The test seam shortens our own backoff, never the server's Retry-After.
            let base = test_seams::retry_delay().unwrap_or(RETRY_DELAY);
            let delay = match retry_after {
                Some(after) => after.min(RETRY_AFTER_MAX),
                None => base * 2u32.pow(attempts - 1),
            };
            let why = if code >= 300 {
                format!("{url} answered {description}")
            } else {
                format!("Download of {url} failed")
            };
            log::info!(
                "{why}, retrying in {} (attempt {} of {ATTEMPTS_MAX}).",
                format_timespan(delay.as_micros() as u64, 1000),
                attempts + 1
            );
            return self.schedule_retry(lp, key, delay);
        }
        if let (Key::Blob(b), true) = (key, foreign) {
            let blob = &mut self.blobs[b];
            log::info!(
                "Could not fetch layer {} from {}, trying the next source.",
                blob.descriptor.digest,
                url
            );
            blob.source += 1;
            blob.resume = None;
            if let Some(s) = self.requests.get_mut(&key) {
                s.attempts = 0;
            }
            // The next source starts from scratch (the job truncates the spool).
            drop(self.jobs.remove(key));
            return self.begin(lp, key);
        }
        if code < 300 {
            // Already logged by the job.
            return Err(error);
        }
        let what = match key {
            Key::Ping => format!(
                "Failed to reach registry {}",
                self.req.reference.registry_host()
            ),
            Key::Token => "Failed to get a token".to_string(),
            Key::Manifest => format!("Failed to fetch manifest of '{}'", self.req.reference),
            Key::Config => "Failed to fetch the image config".to_string(),
            Key::Blob(b) => format!("Failed to fetch layer {}", self.blobs[b].descriptor.digest),
        };
        if key == Key::Ping && code == 404 {
            return Err(log_error_errno!(
                Error::new(libc::EPROTONOSUPPORT),
                "Registry {} does not speak the Registry v2 API (HTTP 404 for /v2/).",
                self.req.reference.registry_host()
            ));
        }
        Err(log_error_errno!(
            Error::new(libc::EIO),
            "{what}: {description}."
        ))
    }

    fn credentials_description(&self) -> String {
        match &self.req.credentials {
            Some((c, path)) => format!("the credentials of '{}' from {}", c.user, path.display()),
            None => "anonymous access".to_string(),
        }
    }

    /// Retry `key` after `delay` (a blob first hashes what its spool already holds).
    fn schedule_retry(
        &mut self,
        lp: &mut EventLoop<Self>,
        key: Key,
        delay: Duration,
    ) -> Result<()> {
        if let Key::Blob(b) = key {
            // Stop the failed job's worker now: the spool must be quiet before it is hashed.
            drop(self.jobs.remove(key));
            self.blobs[b].state = BlobState::RetryWait;
        }
        let timer = lp.add_timer_in(Clock::Monotonic, delay, move |lp, d: &mut Self, id, _| {
            d.timers.retain(|t| *t != id);
            if !d.finished {
                if let Err(e) = d.retry(lp, key) {
                    d.finish(lp, Err(e));
                }
            }
            Ok(TimerAction::Drop)
        })?;
        self.timers.push(timer);
        Ok(())
    }

    fn retry(&mut self, lp: &mut EventLoop<Self>, key: Key) -> Result<()> {
        let Key::Blob(b) = key else {
            return self.begin(lp, key);
        };
        let Some(spool) = self.blobs[b].spool_path.clone() else {
            return self.begin(lp, key);
        };
        // Hash the bytes we have on a task (the loop never waits on disk); then resume
        // after them. An empty spool simply starts over.
        self.blobs[b].state = BlobState::Hashing;
        let task = lp.spawn_task(
            "oci-resume",
            move |cancel| hash_prefix(&spool, cancel),
            move |lp, d: &mut Self, result| {
                d.blobs[b].prefix_task = None;
                if d.finished {
                    return;
                }
                let r = match result {
                    Ok(prefix) => {
                        d.blobs[b].resume = prefix;
                        d.begin(lp, key)
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    d.finish(lp, Err(e));
                }
            },
        )?;
        self.blobs[b].prefix_task = Some(task);
        Ok(())
    }

    // --- Authentication -------------------------------------------------------------------

    fn on_ping_done(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        // The registry lets anyone in.
        self.begin(lp, Key::Manifest)
    }

    fn on_ping_challenge(&mut self, lp: &mut EventLoop<Self>, headers: &[String]) -> Result<()> {
        let challenges: Vec<auth::Challenge> = headers
            .iter()
            .flat_map(|h| auth::parse_challenges(h))
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            self.use_bearer(bearer)?;
            self.token_waiters.push(Key::Manifest);
            return self.begin(lp, Key::Token);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some((creds, _)) = &self.req.credentials else {
                return Err(self.no_credentials());
            };
            self.auth = Authorization::Basic(creds.basic());
            self.auth_generation += 1;
            return self.begin(lp, Key::Manifest);
        }
        Err(log_error_errno!(
            Error::new(libc::EPROTONOSUPPORT),
            "Registry {} asks for an authentication scheme we do not support ({}).",
            self.req.reference.registry_host(),
            headers
                .first()
                .map_or("no WWW-Authenticate header", String::as_str)
        ))
    }

    fn no_credentials(&self) -> Error {
        log_error_errno!(
            Error::new(libc::EACCES),
            "Registry {} requires a login, but no credentials for it were found in {}.",
            self.req.reference.registry_host(),
            super::credentials::describe_paths()
        )
    }

    /// Remember a Bearer challenge's realm and service (the realm must be https: Basic
    /// credentials may go there).
    fn use_bearer(&mut self, challenge: &auth::Challenge) -> Result<()> {
        let Some(realm) = challenge
            .param("realm")
            .filter(|r| r.starts_with("https://") && r.len() > 8)
        else {
            return Err(log_error_errno!(
                Error::new(libc::EPROTO),
                "Registry {} sent a Bearer challenge without an https realm, refusing.",
                self.req.reference.registry_host()
            ));
        };
        if realm.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(log_error_errno!(
                Error::new(libc::EPROTO),
                "Registry {} sent an invalid token realm, refusing.",
                self.req.reference.registry_host()
            ));
        }
        self.bearer = Some((
            realm.to_string(),
            challenge.param("service").map(str::to_string),
        ));
        Ok(())
    }

    /// A registry request got 401: get a new token (or use Basic credentials) and retry
    /// it, once.
    fn on_unauthorized(
        &mut self,
        lp: &mut EventLoop<Self>,
        key: Key,
        challenges: &[String],
        description: &str,
    ) -> Result<()> {
        let st = self.requests.entry(key).or_default();
        if st.auth_retried {
            return Err(log_error_errno!(
                Error::new(libc::EACCES),
                "Registry {} refused access to {} with {}: {}.",
                self.req.reference.registry_host(),
                self.req.reference.repository(),
                self.credentials_description(),
                description
            ));
        }
        st.auth_retried = true;
        st.attempts = st.attempts.saturating_sub(1);
        let sent_with = st.auth_generation;
        if let Key::Blob(b) = key {
            drop(self.jobs.remove(key));
            self.blobs[b].state = BlobState::RetryWait;
        }
        if sent_with < self.auth_generation {
            // Another request already got a newer token.
            return self.begin(lp, key);
        }
        if !self.token_waiters.is_empty() {
            self.token_waiters.push(key);
            return Ok(());
        }
        let parsed: Vec<auth::Challenge> = challenges
            .iter()
            .flat_map(|h| auth::parse_challenges(h))
            .collect();
        if let Some(bearer) = parsed.iter().find(|c| c.scheme == "bearer") {
            log::info!(
                "Registry {} asks for a new token, getting one.",
                self.req.reference.registry_host()
            );
            self.use_bearer(bearer)?;
            self.token_waiters.push(key);
            self.requests.remove(&Key::Token);
            return self.begin(lp, Key::Token);
        }
        match (&self.req.credentials, &self.auth) {
            (Some((creds, _)), a) if !matches!(a, Authorization::Basic(_)) => {
                self.auth = Authorization::Basic(creds.basic());
                self.auth_generation += 1;
                self.begin(lp, key)
            }
            (None, _) => Err(self.no_credentials()),
            _ => Err(log_error_errno!(
                Error::new(libc::EACCES),
                "Registry {} refused {}: {}.",
                self.req.reference.registry_host(),
                self.credentials_description(),
                description
            )),
        }
    }

    fn on_token_done(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let job = self
            .jobs
            .get(Key::Token)
            .ok_or_else(|| Error::new(libc::EINVAL))?;
        let token = auth::parse_token_response(job.payload()).ok_or_else(|| {
            log_error_errno!(
                Error::new(libc::EBADMSG),
                "Token server sent no usable token."
            )
        })?;
        self.auth = Authorization::Bearer(token);
        self.auth_generation += 1;
        for key in std::mem::take(&mut self.token_waiters) {
            self.begin(lp, key)?;
        }
        Ok(())
    }

    // --- Manifest and config --------------------------------------------------------------

    fn on_manifest_done(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let job = self
            .jobs
            .get(Key::Manifest)
            .ok_or_else(|| Error::new(libc::EINVAL))?;
        let body =
            std::mem::take(&mut *self.manifest_body.lock().unwrap_or_else(|e| e.into_inner()));
        let content_type = job.header("Content-Type").map(str::to_string);
        let served_digest = job.header("Docker-Content-Digest").map(str::to_string);
        let digest = job
            .checksum()
            .and_then(Digest::from_hex)
            .ok_or_else(|| Error::new(libc::EIO))?;
        let reference = &self.req.reference;
        let what = match &self.manifest_expected {
            Some(entry) => format!("manifest {}", entry.digest),
            None => format!("manifest of '{reference}'"),
        };

        // Verify: against the index entry, or the digest the user asked for, or (by tag)
        // the digest the registry claims.
        let expected = self
            .manifest_expected
            .as_ref()
            .map(|e| (&e.digest, Some(e.size)));
        let expected = expected.or(reference.digest().map(|d| (d, None)));
        if let Some((want, size)) = expected {
            if *want != digest {
                return Err(log_error_errno!(
                    Error::new(libc::EBADMSG),
                    "Digest mismatch for {what}: expected {want}, got {digest}."
                ));
            }
            if size.is_some_and(|s| s != body.len() as u64) {
                return Err(log_error_errno!(
                    Error::new(libc::EBADMSG),
                    "Size mismatch for {what}: expected {} bytes, got {}.",
                    size.unwrap_or(0),
                    body.len()
                ));
            }
        } else if let Some(served) = served_digest.filter(|s| s.starts_with("sha256:")) {
            if served != digest.to_string() {
                return Err(log_error_errno!(
                    Error::new(libc::EBADMSG),
                    "Digest mismatch for {what}: the registry says {served}, the content is {digest}."
                ));
            }
        }

        let document = manifest::parse(content_type.as_deref(), &body).map_err(|why| {
            log_error_errno!(Error::new(libc::EBADMSG), "Refusing {what}: {why}.")
        })?;
        match document {
            Document::Index(entries) => {
                if self.manifest_expected.is_some() {
                    return Err(log_error_errno!(
                        Error::new(libc::EBADMSG),
                        "Refusing {what}: nested indexes are not supported."
                    ));
                }
                let platform = &self.req.platform;
                let entry = manifest::select(&entries, platform)
                    .map_err(|why| {
                        log_error_errno!(
                            Error::new(libc::ENOENT),
                            "No image for {platform} in the index of '{reference}': {why}."
                        )
                    })?
                    .clone();
                if entry.size > manifest::MANIFEST_MAX {
                    return Err(log_error_errno!(
                        Error::new(libc::EFBIG),
                        "Manifest {} is larger than {}, refusing.",
                        entry.digest,
                        format_bytes(manifest::MANIFEST_MAX)
                    ));
                }
                log::info!("Using manifest {} for {platform}.", entry.digest);
                self.manifest_target = entry.digest.to_string();
                self.manifest_expected = Some(entry);
                self.from_index = true;
                self.requests.remove(&Key::Manifest);
                self.begin(lp, Key::Manifest)
            }
            Document::Image(m) => {
                log::info!("Manifest {digest} lists {} layers.", m.layers.len());
                let config = m.config.clone();
                self.manifest = Some(m);
                if config.size > CONFIG_MAX {
                    return Err(log_error_errno!(
                        Error::new(libc::EFBIG),
                        "Image config {} is larger than {}, refusing.",
                        config.digest,
                        format_bytes(CONFIG_MAX)
                    ));
                }
                match config.data {
                    // Inline config (OCI 1.1 `data`): no request needed.
                    Some(data) => {
                        let digest = Digest::of(&data);
                        self.use_config(lp, data, digest)
                    }
                    None => self.begin(lp, Key::Config),
                }
            }
        }
    }

    fn on_config_done(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let body = std::mem::take(&mut *self.config_body.lock().unwrap_or_else(|e| e.into_inner()));
        // The job hashed the body on its worker thread.
        let digest = self
            .jobs
            .get(Key::Config)
            .and_then(|j| j.checksum())
            .and_then(Digest::from_hex)
            .ok_or_else(|| Error::new(libc::EIO))?;
        self.use_config(lp, body, digest)
    }

    /// Verify and parse the config (`got` is its digest), then decide which layers to
    /// fetch and start.
    fn use_config(&mut self, lp: &mut EventLoop<Self>, bytes: Vec<u8>, got: Digest) -> Result<()> {
        let manifest = self.manifest_ref()?;
        let want = &manifest.config;
        if bytes.len() as u64 != want.size || got != want.digest {
            return Err(log_error_errno!(
                Error::new(libc::EBADMSG),
                "Image config digest mismatch: expected {} ({} bytes), got {} ({} bytes).",
                want.digest,
                want.size,
                got,
                bytes.len()
            ));
        }
        let config = config::parse(&bytes).map_err(|why| {
            log_error_errno!(
                Error::new(libc::EBADMSG),
                "Refusing image config {}: {why}.",
                want.digest
            )
        })?;
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(log_error_errno!(
                Error::new(libc::EBADMSG),
                "Image config {} lists {} layer DiffIDs, but the manifest has {} layers, refusing.",
                want.digest,
                config.diff_ids.len(),
                manifest.layers.len()
            ));
        }
        if !self.from_index {
            let matches = self.req.platform.matches(
                config.os.as_deref(),
                config.architecture.as_deref(),
                config.variant.as_deref(),
            );
            if !matches {
                log::warn!(
                    "Image '{}' is for {}/{}, not {}.",
                    self.req.reference,
                    config.os.as_deref().unwrap_or("?"),
                    config.architecture.as_deref().unwrap_or("?"),
                    self.req.platform
                );
            }
        }
        self.plan_layers(&config)?;
        self.config = Some(config);
        self.config_bytes = bytes;
        self.report_progress();
        self.start_downloads(lp)?;
        self.progress_timer = Some(lp.add_timer_in(
            Clock::Monotonic,
            PROGRESS_INTERVAL,
            |_, d: &mut Self, _, _| {
                if d.finished {
                    return Ok(TimerAction::Drop);
                }
                d.report_progress();
                Ok(TimerAction::ToDuration(PROGRESS_INTERVAL))
            },
        )?);
        self.advance(lp)
    }

    /// Compute ChainIDs, find the layers already present (btrfs), and list the blobs to
    /// download.
    fn plan_layers(&mut self, config: &ImageConfig) -> Result<()> {
        let root_fd = fs::open_dir(&self.req.image_root).map_err(|e| {
            log_error_errno!(
                e.clone(),
                "Failed to open {}: {}",
                self.req.image_root.display(),
                e
            )
        })?;
        self.storage = if btrfs::is_fs_btrfs(std::os::fd::AsFd::as_fd(&root_fd))? {
            Storage::BtrfsChains
        } else {
            Storage::Directory
        };
        let manifest = self
            .manifest
            .take()
            .ok_or_else(|| Error::new(libc::EINVAL))?;
        let chain_ids = Digest::chain_ids(&config.diff_ids);
        // On btrfs, the highest existing chain is the base we start from.
        let present = match self.storage {
            Storage::BtrfsChains => chain_ids
                .iter()
                .rposition(|c| self.chain_path(c).is_dir())
                .map_or(0, |i| i + 1),
            Storage::Directory => 0,
        };
        for (i, d) in manifest.layers.iter().enumerate() {
            let blob = if i < present {
                log::info!("Layer {} already exists, skipping.", d.digest);
                None
            } else if let Some(b) = self
                .blobs
                .iter()
                .position(|b| b.descriptor.digest == d.digest)
            {
                self.blobs[b].uses_left += 1;
                Some(b)
            } else {
                let mut descriptor = d.clone();
                descriptor.urls.retain(|u| validate::http_url_is_valid(u));
                self.blobs.push(Blob {
                    prefix_task: None,
                    spool_path: None,
                    spool: None,
                    spool_state: Spool::new(),
                    descriptor,
                    state: BlobState::Queued,
                    resume: None,
                    source: 0,
                    uses_left: 1,
                });
                Some(self.blobs.len() - 1)
            };
            self.layers.push(Layer {
                digest: d.digest.clone(),
                diff_id: config.diff_ids[i].clone(),
                chain_id: chain_ids[i].clone(),
                blob,
            });
        }
        self.next_apply = present;
        self.apply_total = self.layers.len() - present;
        log::info!(
            "Image {} has {} layers, {} already present.",
            self.req.reference,
            self.layers.len(),
            present
        );
        self.manifest = Some(manifest);
        Ok(())
    }

    // --- Layers ---------------------------------------------------------------------------

    /// Begin queued blob downloads up to the concurrency limit, base layers first.
    fn start_downloads(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        loop {
            let active = self
                .blobs
                .iter()
                .filter(|b| {
                    matches!(
                        b.state,
                        BlobState::Fetching | BlobState::RetryWait | BlobState::Hashing
                    )
                })
                .count();
            if active >= self.req.max_downloads {
                return Ok(());
            }
            let Some(b) = self.blobs.iter().position(|b| b.state == BlobState::Queued) else {
                return Ok(());
            };
            self.begin(lp, Key::Blob(b))?;
        }
    }

    fn on_blob_done(&mut self, lp: &mut EventLoop<Self>, b: usize) -> Result<()> {
        let job = self
            .jobs
            .remove(Key::Blob(b))
            .ok_or_else(|| Error::new(libc::EINVAL))?;
        let blob = &mut self.blobs[b];
        let digest = &blob.descriptor.digest;
        let spool = blob
            .spool_path
            .as_ref()
            .ok_or_else(|| Error::new(libc::EINVAL))?;
        let size = std::fs::metadata(spool).map(|m| m.len()).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to stat {}: {}", spool.display(), e)
        })?;
        if size != blob.descriptor.size {
            return Err(log_error_errno!(
                Error::new(libc::EBADMSG),
                "Layer {digest} size mismatch: expected {} bytes, got {size}.",
                blob.descriptor.size
            ));
        }
        let got = job
            .checksum()
            .and_then(Digest::from_hex)
            .ok_or_else(|| Error::new(libc::EIO))?;
        if got != *digest {
            return Err(log_error_errno!(
                Error::new(libc::EBADMSG),
                "Layer {digest} digest mismatch: the content is {got}."
            ));
        }
        blob.state = BlobState::Verified;
        // Only now may the apply task reach the end of the layer.
        blob.spool_state.complete();
        self.start_downloads(lp)?;
        self.advance(lp)
    }

    /// Apply the next layer if it can go now, or finish when all are applied.
    fn advance(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        if self.apply_task.is_some() || self.finish_task.is_some() {
            return Ok(());
        }
        if self.next_apply == self.layers.len() {
            return self.start_finishing(lp);
        }
        let i = self.next_apply;
        let b = self.layers[i]
            .blob
            .ok_or_else(|| Error::new(libc::EINVAL))?;
        // The layer is applied while it downloads, as soon as its spool exists.
        if self.blobs[b].spool_path.is_none() {
            return Ok(());
        }
        let target = match self.storage {
            Storage::BtrfsChains => {
                let temp = TempPath::new(fs::tempfn_random(
                    &self.chain_path(&self.layers[i].chain_id),
                ));
                let path = temp.path().to_path_buf();
                self.apply_temp = Some(temp);
                Target::Subvolume {
                    parent: (i > 0).then(|| self.chain_path(&self.layers[i - 1].chain_id)),
                    path,
                }
            }
            Storage::Directory => match &self.apply_temp {
                Some(t) => Target::Directory {
                    path: t.path().to_path_buf(),
                    create: false,
                },
                None => {
                    let name = self.req.local.as_deref().unwrap_or("oci-image");
                    let temp = TempPath::next_to(&self.req.image_root.join(name));
                    let path = temp.path().to_path_buf();
                    self.apply_temp = Some(temp);
                    Target::Directory { path, create: true }
                }
            },
        };
        let blob = &mut self.blobs[b];
        blob.uses_left -= 1;
        let path = blob
            .spool_path
            .clone()
            .ok_or_else(|| Error::new(libc::EINVAL))?;
        let input = SpoolReader::open(&path, blob.spool_state.clone())?;
        let work = ApplyWork {
            layer: self.layers[i].digest.clone(),
            diff_id: self.layers[i].diff_id.clone(),
            input,
            spool_owned: if blob.uses_left == 0 {
                blob.spool.take()
            } else {
                None
            },
            target,
            cancel: self.cancel.clone(),
        };
        let task = lp.spawn_task(
            "oci-apply",
            move |_| apply::apply(work),
            move |lp, d: &mut Self, result| {
                d.apply_task = None;
                if d.finished {
                    return;
                }
                if let Err(e) = result.and_then(|()| d.on_layer_applied(lp, i)) {
                    d.finish(lp, Err(e));
                }
            },
        )?;
        self.apply_task = Some(task);
        Ok(())
    }

    fn on_layer_applied(&mut self, lp: &mut EventLoop<Self>, i: usize) -> Result<()> {
        if self.storage == Storage::BtrfsChains {
            let temp = self
                .apply_temp
                .take()
                .ok_or_else(|| Error::new(libc::EINVAL))?;
            let chain = self.chain_path(&self.layers[i].chain_id);
            match fs::rename_noreplace(temp.path(), &chain) {
                Ok(()) => {
                    temp.keep();
                }
                // Another pull made the same (verified) chain meanwhile: use theirs; ours
                // goes with `temp`.
                Err(e) if e.errno() == libc::EEXIST => {}
                Err(e) => {
                    return Err(log_error_errno!(
                        e.clone(),
                        "Failed to move layer into place as {}: {}",
                        chain.display(),
                        e
                    ))
                }
            }
        }
        self.apply_done += 1;
        log::info!(
            "Applied layer {}/{} {}.",
            i + 1,
            self.layers.len(),
            self.layers[i].digest
        );
        self.next_apply += 1;
        self.report_progress();
        self.advance(lp)
    }

    // --- Finishing ------------------------------------------------------------------------

    /// Make the local image and its settings files, on a task.
    fn start_finishing(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        if let Some(t) = self.progress_timer.take() {
            lp.remove(t);
        }
        notify::progress(&mut self.progress_last, 95);
        let root = self.req.image_root.clone();
        let local = self.req.local.clone();
        let force = self.req.force;
        let exec = self
            .config
            .as_ref()
            .and_then(|c| c.exec.clone())
            .unwrap_or_default();
        let config_bytes = std::mem::take(&mut self.config_bytes);
        let source = match self.storage {
            Storage::BtrfsChains => {
                let top = self.layers.last().map(|l| self.chain_path(&l.chain_id));
                Source::Chain(top.ok_or_else(|| Error::new(libc::EINVAL))?)
            }
            Storage::Directory => Source::Directory(
                self.apply_temp
                    .take()
                    .ok_or_else(|| Error::new(libc::EINVAL))?,
            ),
        };
        let cancel = self.cancel.clone();
        let task = lp.spawn_task(
            "oci-finish",
            move |_| {
                finish_image(
                    source,
                    &root,
                    local.as_deref(),
                    force,
                    &exec,
                    &config_bytes,
                    &cancel,
                )
            },
            |lp, d: &mut Self, result| {
                d.finish_task = None;
                if result.is_ok() {
                    notify::progress(&mut d.progress_last, 100);
                }
                d.finish(lp, result);
            },
        )?;
        self.finish_task = Some(task);
        Ok(())
    }

    /// Overall progress for systemd-importd: 5 % for manifest and config, 45 % for the
    /// bytes downloaded, 45 % for the layers applied, the rest for the local image.
    fn report_progress(&mut self) {
        let total: u64 = self.blobs.iter().map(|b| b.descriptor.size).sum();
        let mut done: u64 = 0;
        for (i, b) in self.blobs.iter().enumerate() {
            done += match b.state {
                BlobState::Verified => b.descriptor.size,
                BlobState::Queued => 0,
                _ => self
                    .jobs
                    .get(Key::Blob(i))
                    .map_or(0, |j| j.written_compressed())
                    .min(b.descriptor.size),
            };
        }
        let download = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        let applied = if self.apply_total == 0 {
            1.0
        } else {
            self.apply_done as f64 / self.apply_total as f64
        };
        let percent = 5.0 + 45.0 * download + 45.0 * applied;
        // Never go backwards (a restarted download would).
        let percent = (percent as u32).max(self.progress_last.unwrap_or(0));
        notify::progress(&mut self.progress_last, percent);
    }

    /// `import_finish()`: once, stop everything that still runs and report.
    fn finish(&mut self, lp: &mut EventLoop<Self>, result: Result<()>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if result.is_err() {
            self.abandon();
        }
        let OciImport { jobs, glue, .. } = self;
        jobs.cancel_all(lp, glue);
        for t in self.timers.drain(..).chain(self.progress_timer.take()) {
            lp.remove(t);
        }
        operation_finished(lp, &result);
    }
}

impl OciImport {
    /// Make running tasks stop at once: the unpack sees the cancel flag, readers of
    /// spools still being written get an error.
    fn abandon(&self) {
        self.cancel.store(true, Ordering::Release);
        for blob in &self.blobs {
            blob.spool_state
                .abort(Error::with_message(libc::ECANCELED, "Pull abandoned."));
        }
    }
}

impl Drop for OciImport {
    fn drop(&mut self) {
        // Before the fields go, so joining the tasks (when `apply_task` drops) is quick.
        self.abandon();
    }
}

/// What the local image is made from.
enum Source {
    /// btrfs: the top layer's chain subvolume, snapshotted.
    Chain(PathBuf),
    /// The directory the layers were applied into, moved into place.
    Directory(TempPath),
}

/// The finishing task: the local image, then `<local>.nspawn` and `<local>.oci-config`.
fn finish_image(
    source: Source,
    root: &Path,
    local: Option<&str>,
    force: bool,
    exec: &config::ExecConfig,
    config_bytes: &[u8],
    cancel: &AtomicBool,
) -> Result<()> {
    let Some(local) = local else {
        // No local image: the layers stay cached on btrfs; a plain directory goes.
        if let Source::Directory(temp) = source {
            log::info!("No local image name given and no layer cache on this file system, not keeping the image.");
            drop(temp);
        }
        return Ok(());
    };
    match source {
        Source::Chain(top) => common::make_local_copy(&top, root, local, force, Some(cancel))?,
        Source::Directory(temp) => {
            let target = root.join(local);
            let installed = if force {
                common::install_replacing(temp.path(), &target)
            } else {
                fs::rename_noreplace(temp.path(), &target)
            };
            installed
                .map_err(|e| log_error_errno!(e.clone(), "Failed to create local image: {}", e))?;
            temp.keep();
            log::info!("Created new local image '{local}'.");
        }
    }
    let nspawn = root.join(format!("{local}.nspawn"));
    write_atomically(&nspawn, config::nspawn_settings(exec).as_bytes())?;
    log::info!(
        "systemd-nspawn settings file written to '{}'.",
        nspawn.display()
    );
    let oci_config = root.join(format!("{local}.oci-config"));
    write_atomically(&oci_config, config_bytes)?;
    log::info!("OCI config written to '{}'.", oci_config.display());
    Ok(())
}

/// Write `path` through a temporary file and a rename, replacing what was there.
fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let temp = TempPath::next_to(path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp.path())
        .and_then(|mut f| std::io::Write::write_all(&mut f, content))
        .and_then(|()| std::fs::rename(temp.path(), path));
    written.map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to write {}: {}", path.display(), e)
    })?;
    temp.keep();
    Ok(())
}

/// The length of the spool and the sha256 of its bytes (`None` if it is empty).
fn hash_prefix(path: &Path, cancel: &AtomicBool) -> Result<Option<(u64, Sha256)>> {
    let mut file = std::fs::File::open(path).map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e)
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut len = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::new(libc::ECANCELED));
        }
        let n = file.read(&mut buf).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to read {}: {}", path.display(), e)
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len > 0).then_some((len, hasher)))
}

/// A job sink that keeps at most `limit` bytes in memory and fails with `too_large`
/// (logged) beyond that, without reading further.
fn bounded_sink(limit: u64, slot: BodySlot, too_large: String) -> Sink {
    Sink::Stream(Box::new(move |ctx, input| {
        let refuse = || log_error_errno!(Error::new(libc::EFBIG), "{}", too_large);
        if ctx.meta.content_length.is_some_and(|len| len > limit) {
            return Err(refuse());
        }
        let mut body = Vec::new();
        input
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(Error::from)?;
        if body.len() as u64 > limit {
            return Err(refuse());
        }
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = body;
        Ok(())
    }))
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = crate::util::format::parse_http_time(value).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_micros() as u64;
    Some(Duration::from_micros(at.saturating_sub(now)))
}

impl JobOwner for OciImport {
    type Key = Key;

    fn glue_and_jobs(&mut self) -> (&mut CurlGlue, &mut JobSet<Key>) {
        (&mut self.glue, &mut self.jobs)
    }

    /// A request finished, one way or the other.
    fn on_job_done(&mut self, lp: &mut EventLoop<Self>, key: Key) {
        if self.finished {
            return;
        }
        let Some(job) = self.jobs.get(key) else {
            return;
        };
        let r = if job.state() == JobState::Done {
            match key {
                Key::Ping => self.on_ping_done(lp),
                Key::Token => self.on_token_done(lp),
                Key::Manifest => self.on_manifest_done(lp),
                Key::Config => self.on_config_done(lp),
                Key::Blob(b) => self.on_blob_done(lp, b),
            }
        } else {
            self.on_request_failed(lp, key)
        };
        if let Err(e) = r {
            self.finish(lp, Err(e));
        }
    }
}

impl Importer for OciImport {
    fn start(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        fs::mkdir_p(&self.req.image_root, 0o700).map_err(|e| {
            log_error_errno!(
                e.clone(),
                "Failed to create {}: {}",
                self.req.image_root.display(),
                e
            )
        })?;
        notify::progress(&mut self.progress_last, 0);
        self.begin(lp, Key::Ping)
    }
}

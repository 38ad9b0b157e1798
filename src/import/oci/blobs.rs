//! The layer blobs of a pull: each [`Blob`] (its spool file, the places it may come from,
//! where a retry resumes) and the [`BlobQueue`] that starts their downloads, base layers
//! first, up to the concurrency limit.
//!
//! A blob is queued, active (waiting for another process, downloading, waiting to retry,
//! or hashing its spool to resume) or verified. The queue keeps the three as sets of blob
//! indices, so picking the next blob, counting the running ones and summing the progress
//! never scan the whole list. A blob shared by several layers of the image is downloaded
//! once.
//!
//! The spool of a blob is a partial download named after its digest
//! (`.#oci-blob-sha256-<hex>.partial`, a [`Partial`]): a blob is started by claiming it
//! ([`BlobQueue::claim`]). Claimed empty, it is downloaded; claimed with bytes in it (left
//! by a killed pull, or verified by a concurrent one), they are hashed first: a whole blob
//! whose digest checks out is used as it is, a prefix is resumed with a Range request.
//! Claimed by another process that writes it, the blob waits (the importer claims it
//! again now and then) and is reused once verified, or resumed if that process died.
//!
//! A big blob from the registry is fetched in parts ([`ranges`](super::ranges)) while it
//! may be: the queue holds its [`RangedFetch`] and makes the parts' jobs; a spool such a
//! fetch left counts only as far as its recorded prefix ([`hash_prefix`]).

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::manifest::Descriptor;
use super::ranges::{self, RangePlan, RangedFetch};
use super::spool::{self, Spool, SpoolReader};
use crate::curl_glue::Transport;
use crate::event::TaskHandle;
use crate::import::job::{Expected, ImportJob, JobOptions, Sink, DEFAULT_QUEUE_LIMIT};
use crate::import::store::{self, Claim, Partial, PartialMode as Mode, Waiter};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::validate;

/// Body bytes all layer downloads together may queue for their workers (a share per
/// download, so the peak stays bounded at any `--max-concurrent-downloads`).
const QUEUE_BUDGET: usize = 24 << 20;

/// The length of a spool's valid prefix and the sha256 of those bytes.
pub type Prefix = (u64, Sha256);

/// How the registry endpoint in use is asked for a blob.
pub struct FromRegistry {
    pub url: String,
    /// The authorization and the endpoint's headers, `Name: value` each.
    pub headers: Vec<String>,
    pub transport: Transport,
}

/// One blob to download.
pub struct Blob {
    /// Hashes the spool's prefix before a resumed attempt; dropped (joined) before `spool`.
    prefix_task: Option<TaskHandle>,
    pub descriptor: Descriptor,
    /// `.#oci-blob-sha256-<hex>.partial` under the image root.
    spool_path: PathBuf,
    /// Set by [`BlobQueue::claim`] once the spool is ours (to write, or to read when
    /// another process verified it): from then on the layer may be applied.
    claimed: bool,
    /// The lock on the spool, from the claim until the blob is verified and its last
    /// layer's apply task has a clone of it (the last clone dropped removes the spool,
    /// unless another process uses it).
    spool: Option<Partial>,
    /// While another process writes the spool: tells it we want the blob.
    waiter: Option<Waiter>,
    /// Shared with the download's writer and the apply task's reader.
    spool_state: Arc<Spool>,
    /// Bytes already in the spool and their hash, for the next attempt's Range request.
    resume: Option<Prefix>,
    /// Index into `descriptor.urls` being tried; `urls.len()` means the registry.
    source: usize,
    /// Layers that still have to be applied from this blob.
    uses_left: usize,
    /// While it is fetched in parts.
    ranged: Option<RangedFetch>,
    /// Fetched in one stream from now on (the server refused ranges, a part failed for
    /// good, or the spool cannot record its prefix).
    no_ranges: bool,
}

impl Blob {
    /// The download currently comes from a descriptor's URL, not the registry.
    pub fn is_foreign(&self) -> bool {
        self.source < self.descriptor.urls.len()
    }
}

/// The blobs of an image and where each stands.
pub struct BlobQueue {
    blobs: Vec<Blob>,
    by_digest: HashMap<Digest, usize>,
    queued: BTreeSet<usize>,
    active: BTreeSet<usize>,
    verified: BTreeSet<usize>,
    /// Most blobs active at once.
    limit: usize,
    total_size: u64,
    verified_size: u64,
    /// How big blobs are fetched in parts.
    ranges: RangePlan,
}

impl BlobQueue {
    /// An empty queue running at most `limit` downloads at once.
    pub fn new(limit: usize) -> Self {
        BlobQueue {
            blobs: Vec::new(),
            by_digest: HashMap::new(),
            queued: BTreeSet::new(),
            active: BTreeSet::new(),
            verified: BTreeSet::new(),
            limit: limit.max(1),
            total_size: 0,
            verified_size: 0,
            ranges: RangePlan::OFF,
        }
    }

    /// Fetch big blobs from the registry in parts, as `plan` says.
    pub fn set_ranges(&mut self, plan: RangePlan) {
        self.ranges = plan;
    }

    /// Queue the blob of a layer (or count one more use of a blob already queued);
    /// returns its index. Its spool file will be `.#oci-blob-sha256-<hex>.partial` under
    /// `root`.
    pub fn add(&mut self, descriptor: &Descriptor, root: &Path) -> usize {
        if let Some(&b) = self.by_digest.get(&descriptor.digest) {
            self.blobs[b].uses_left += 1;
            return b;
        }
        let mut descriptor = descriptor.clone();
        descriptor.urls.retain(|u| validate::http_url_is_valid(u));
        let spool_path = store::partial_path(
            root,
            &format!("oci-blob-sha256-{}", descriptor.digest.hex()),
        );
        let b = self.blobs.len();
        self.total_size += descriptor.size;
        self.by_digest.insert(descriptor.digest.clone(), b);
        self.queued.insert(b);
        self.blobs.push(Blob {
            prefix_task: None,
            descriptor,
            spool: None,
            waiter: None,
            spool_path,
            claimed: false,
            spool_state: Spool::new(),
            resume: None,
            source: 0,
            uses_left: 1,
            ranged: None,
            no_ranges: false,
        });
        b
    }

    pub fn get(&self, b: usize) -> &Blob {
        &self.blobs[b]
    }

    /// The next blob to start (the lowest queued index: base layers first), if one is
    /// queued and fewer than the limit are active; it counts as active from now on.
    pub fn start_next(&mut self) -> Option<usize> {
        if self.active.len() >= self.limit {
            return None;
        }
        let b = self.queued.pop_first()?;
        self.active.insert(b);
        Some(b)
    }

    /// Its spool is ours: its download has begun, or it was found complete (it may be
    /// read while it grows).
    pub fn is_started(&self, b: usize) -> bool {
        self.blobs[b].claimed
    }

    /// Take the spool of blob `b` (just started) or wait for it: see [`Claimed`].
    pub fn claim(&mut self, b: usize) -> Result<Claimed> {
        let blob = &mut self.blobs[b];
        let partial = match Partial::claim(&blob.spool_path)? {
            Claim::Got(p) => p,
            Claim::Busy => {
                if blob.waiter.is_none() {
                    log::info!(
                        "Waiting for another process downloading layer {}.",
                        blob.descriptor.digest
                    );
                    blob.waiter = Waiter::register(&blob.spool_path);
                }
                return Ok(Claimed::Busy);
            }
        };
        let found = partial.mode() == Mode::Read || partial.bytes() > 0;
        blob.waiter = None;
        blob.spool = Some(partial);
        blob.claimed = true;
        Ok(if found {
            Claimed::Hash(blob.spool_path.clone())
        } else {
            Claimed::Empty
        })
    }

    /// Its download completed and was verified.
    pub fn is_verified(&self, b: usize) -> bool {
        self.verified.contains(&b)
    }

    /// The blob's download completed (the job checked its size and digest): the readers of its spool may reach the end.
    pub fn verified(&mut self, b: usize) {
        if self.active.remove(&b) && self.verified.insert(b) {
            self.verified_size += self.blobs[b].descriptor.size;
        }
        let blob = &mut self.blobs[b];
        if let Some(p) = &blob.spool {
            // Other processes may read it now.
            p.share();
        }
        if blob.uses_left == 0 {
            // The last apply task holds it.
            blob.spool = None;
        }
        blob.spool_state.complete();
    }

    /// Bytes of blob `b` a fetch in parts has on disk (`None`: not fetched in parts).
    pub fn ranged_bytes(&self, b: usize) -> Option<u64> {
        let blob = &self.blobs[b];
        blob.ranged.as_ref().map(|_| blob.spool_state.written().1)
    }

    /// Bytes downloaded (verified blobs whole, active ones as far as `written` says) and
    /// the total to download.
    pub fn progress(&self, written: impl Fn(usize) -> u64) -> (u64, u64) {
        let active: u64 = self
            .active
            .iter()
            .map(|&b| written(b).min(self.blobs[b].descriptor.size))
            .sum();
        (self.verified_size + active, self.total_size)
    }

    /// Make every reader of a spool that is not complete fail with `error` (the pull is
    /// abandoned).
    pub fn abort_all(&self, error: &Error) {
        for blob in &self.blobs {
            blob.spool_state.abort(error.clone());
        }
    }

    /// The blob's current source failed for good: try the next one (a descriptor URL, then
    /// the registry), from scratch.
    pub fn next_source(&mut self, b: usize, failed_url: &str) {
        let blob = &mut self.blobs[b];
        log::info!(
            "Could not fetch layer {} from {}, trying the next source.",
            blob.descriptor.digest,
            failed_url
        );
        blob.source += 1;
        blob.resume = None;
    }

    /// The download job for blob `b`'s next attempt: from its current source, into its
    /// spool, resumed after the prefix a retry hashed (if any). `registry` is how the
    /// registry endpoint in use is asked; a descriptor's URL gets none of it (no
    /// credentials, no endpoint headers or TLS settings).
    pub fn job(&mut self, b: usize, registry: FromRegistry) -> Result<ImportJob> {
        let limit = self.limit;
        let blob = &mut self.blobs[b];
        let from_registry = !blob.is_foreign();
        let url = if from_registry {
            registry.url.clone()
        } else {
            blob.descriptor.urls[blob.source].clone()
        };
        let resume = blob.resume.take();
        // The worker writes through an fd of its own, valid whatever happens to the name.
        let path = &blob.spool_path;
        let Some(file) = blob.spool.as_ref().map(Partial::file).transpose()? else {
            return Err(log_error_errno!(
                Error::new(libc::EBADF),
                "Failed to open {}: not claimed",
                path.display()
            ));
        };
        let consumer = spool::consumer(
            file,
            path.clone(),
            blob.spool_state.clone(),
            resume.as_ref().map(|r| r.0),
        );
        let mut options = JobOptions::new(Sink::Stream(consumer));
        // Credentials go to the registry only, never to a descriptor's URLs.
        if from_registry {
            options.headers = registry.headers;
            options.transport = registry.transport;
        }
        options.calc_checksum = true;
        options.detect_compression = false;
        options.quiet_failures = true;
        // All downloads together queue at most QUEUE_BUDGET, however many run at once.
        options.queue_limit = (QUEUE_BUDGET / limit).clamp(256 << 10, DEFAULT_QUEUE_LIMIT);
        options.compressed_max = blob.descriptor.size;
        options.uncompressed_max = blob.descriptor.size;
        options.expected = Some(expectation(&blob.descriptor));
        // Each blob download on a connection of its own (HTTP/1.1), as Go's clients
        // (skopeo, podman, containerd) fetch them: behind a limit per connection, layers
        // multiplexed on one HTTP/2 connection would share one limit (bench/README.md,
        // "Slow links": one stream per layer 5.89 s -> 3.50 s for 112 MiB at 20 MB/s per
        // connection; the extra TLS handshakes cost no measurable CPU).
        options.own_connection = true;
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

    /// Blob `b`'s next attempt fetches it in parts: it comes from the registry, is ours
    /// to write, and what is left is bigger than one part.
    pub fn wants_ranges(&self, b: usize) -> bool {
        let blob = &self.blobs[b];
        let from = blob.resume.as_ref().map_or(0, |r| r.0);
        !blob.no_ranges
            && !blob.is_foreign()
            && blob.ranged.is_none()
            && blob.spool.as_ref().map(Partial::mode) == Some(Mode::Write)
            && self
                .ranges
                .applies(blob.descriptor.size.saturating_sub(from))
    }

    /// Begin fetching blob `b` in parts, after the prefix a retry hashed (if any): what
    /// the follower task needs (the spool's path and state, the prefix), or `None` if the
    /// spool cannot record its prefix (the blob then goes in one stream).
    pub fn start_ranged(&mut self, b: usize) -> Result<Option<(PathBuf, Arc<Spool>, Prefix)>> {
        let plan = self.ranges;
        let blob = &mut self.blobs[b];
        let file = blob.spool.as_ref().map(Partial::file).transpose()?;
        let Some(file) = file else {
            return Ok(None);
        };
        let from = blob.resume.as_ref().map_or(0, |r| r.0);
        if let Err(e) = ranges::record_prefix(&file, from) {
            log::debug!(
                "Cannot record a prefix on {} ({e}): fetching it in one stream.",
                blob.spool_path.display()
            );
            blob.no_ranges = true;
            return Ok(None);
        }
        let prefix = blob.resume.take().unwrap_or_default();
        blob.spool_state.set_written(from);
        let fetch = RangedFetch::new(from, blob.descriptor.size, plan);
        log::info!(
            "Fetching layer {} in {} parts, {} at once.",
            blob.descriptor.digest,
            fetch.part_count(),
            plan.connections
        );
        blob.ranged = Some(fetch);
        Ok(Some((
            blob.spool_path.clone(),
            blob.spool_state.clone(),
            prefix,
        )))
    }

    /// Blob `b`'s fetch in parts, while it runs.
    pub fn ranged_mut(&mut self, b: usize) -> Option<&mut RangedFetch> {
        self.blobs[b].ranged.as_mut()
    }

    /// The job for part `i` of blob `b` (`None`: the blob is no longer fetched in parts).
    pub fn part_job(
        &mut self,
        b: usize,
        i: usize,
        registry: FromRegistry,
    ) -> Result<Option<ImportJob>> {
        let limit = self.limit;
        let blob = &mut self.blobs[b];
        let Some(fetch) = &blob.ranged else {
            return Ok(None);
        };
        let file = blob.spool.as_ref().map(Partial::file).transpose()?;
        let Some(file) = file else {
            return Ok(None);
        };
        let queue_limit = (QUEUE_BUDGET / limit / self.ranges.connections.max(1))
            .clamp(256 << 10, DEFAULT_QUEUE_LIMIT);
        Ok(Some(fetch.part_job(
            i,
            file,
            blob.spool_path.clone(),
            blob.spool_state.clone(),
            &registry.url,
            registry.headers,
            registry.transport,
            queue_limit,
            blob.descriptor.size,
        )))
    }

    /// Blob `b`'s fetch in parts is over (its jobs are gone): the fetch, to drop (which
    /// stops its follower). With `fallback`, the blob goes on in one stream: its spool
    /// is cut to the contiguous prefix, which a retry hashes and resumes after.
    pub fn end_ranged(&mut self, b: usize, fallback: bool) -> Result<Option<RangedFetch>> {
        let blob = &mut self.blobs[b];
        let fetch = blob.ranged.take();
        if !fallback || fetch.is_none() {
            return Ok(fetch);
        }
        blob.no_ranges = true;
        // The follower must stop before the file is cut.
        drop(fetch);
        let (prefix, _) = blob.spool_state.written();
        if let Some(file) = blob.spool.as_ref().map(Partial::file).transpose()? {
            file.set_len(prefix).map_err(|e| {
                let e = Error::from(e);
                log_error_errno!(
                    e.clone(),
                    "Failed to truncate {}: {}",
                    blob.spool_path.display(),
                    e
                )
            })?;
            // Contiguous from now on: all of it counts.
            let _ = ranges::record_prefix(&file, blob.descriptor.size);
        }
        blob.spool_state.set_written(prefix);
        Ok(None)
    }

    /// Before a retry: the spool to hash so the next attempt resumes after what it holds
    /// (`None`: nothing was written yet, start over).
    pub fn spool_to_resume(&self, b: usize) -> Option<PathBuf> {
        let blob = &self.blobs[b];
        (blob.spool.as_ref().map(Partial::mode) == Some(Mode::Write))
            .then(|| blob.spool_path.clone())
    }

    /// The task hashing blob `b`'s spool (kept so that dropping the queue stops it).
    pub fn set_prefix_task(&mut self, b: usize, task: TaskHandle) {
        self.blobs[b].prefix_task = Some(task);
    }

    /// The hashing is done: what the spool holds decides what comes next.
    pub fn resume_after(&mut self, b: usize, prefix: Option<Prefix>) -> Hashed {
        let blob = &mut self.blobs[b];
        blob.prefix_task = None;
        let size = blob.descriptor.size;
        if let Some((len, hasher)) = &prefix {
            if *len == size
                && format!("{:x}", hasher.clone().finalize()) == blob.descriptor.digest.hex()
            {
                log::info!(
                    "Layer {} is complete on disk, not downloading it.",
                    blob.descriptor.digest
                );
                blob.spool_state.set_written(size);
                return Hashed::Complete;
            }
        }
        if blob.spool.as_ref().map(Partial::mode) != Some(Mode::Write) {
            // Another process shared what does not check out (it failed meanwhile): let
            // go of it and claim it again, to write this time.
            blob.spool = None;
            blob.claimed = false;
            return Hashed::Claim;
        }
        // A prefix is resumed; what is too long or whole but wrong starts over.
        blob.resume = prefix.filter(|(len, _)| *len < size);
        Hashed::Download
    }

    /// For applying one layer from blob `b`: a reader of its spool (which may still be
    /// downloading), and the spool's lock if this is the blob's last use.
    pub fn open_for_apply(&mut self, b: usize) -> Result<(SpoolReader, Option<Partial>)> {
        let blob = &mut self.blobs[b];
        let input = SpoolReader::open(&blob.spool_path, blob.spool_state.clone())?;
        blob.uses_left -= 1;
        let verified = self.verified.contains(&b);
        let owner = match blob.uses_left {
            // A download still running needs it too.
            0 if !verified => blob.spool.clone(),
            0 => blob.spool.take(),
            _ => None,
        };
        Ok((input, owner))
    }
}

impl Drop for BlobQueue {
    /// A blob still waited for is no longer wanted (its layers were taken from the chains
    /// another process made, or the pull ended): once whole, the process that wrote it
    /// left it for us, so it goes now unless somebody else uses or waits for it. (A part
    /// stays for the pull that resumes it.)
    fn drop(&mut self) {
        for blob in &mut self.blobs {
            let whole = |b: &Blob| {
                std::fs::metadata(&b.spool_path).is_ok_and(|m| m.len() == b.descriptor.size)
            };
            if blob.waiter.take().is_some() && whole(blob) {
                if let Ok(Claim::Got(unused)) = Partial::claim(&blob.spool_path) {
                    drop(unused);
                }
            }
        }
    }
}

/// What [`BlobQueue::claim`] found.
#[derive(Debug)]
pub enum Claimed {
    /// An empty spool, ours: download the blob.
    Empty,
    /// A spool with bytes (ours, or verified by another process): hash them
    /// ([`hash_prefix`]), then [`BlobQueue::resume_after`].
    Hash(PathBuf),
    /// Another process is writing it: claim it again later.
    Busy,
}

/// What [`BlobQueue::resume_after`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Hashed {
    /// The spool holds the whole blob and its digest checks out: it is verified.
    Complete,
    /// Download it (resumed after the prefix, or from the start).
    Download,
    /// Claim it again (what another process shared was not the blob).
    Claim,
}

/// What a blob must be: its descriptor's size and digest (a resumed download counted from
/// its start), in pull-oci's words.
fn expectation(descriptor: &Descriptor) -> Expected {
    let digest = descriptor.digest.clone();
    Expected::new(Some(descriptor.size), Some(digest.hex().to_string())).worded(move |m| {
        if m.size_differs() {
            format!(
                "Layer {digest} size mismatch: expected {} bytes, got {}.",
                m.expected_size.unwrap_or(0),
                m.size
            )
        } else {
            digest_mismatch(&digest, m.sha256.unwrap_or_default())
        }
    })
}

/// The message of a blob whose bytes are not its descriptor's.
pub fn digest_mismatch(digest: &Digest, hex: &str) -> String {
    format!("Layer {digest} digest mismatch: the content is sha256:{hex}.")
}

/// The length of the spool and the sha256 of its bytes (`None` if it is empty): run on a
/// task before a blob's retry. A spool a fetch in parts wrote counts only as far as its
/// recorded prefix (beyond it may be holes).
pub fn hash_prefix(path: &Path, cancel: &AtomicBool) -> Result<Option<Prefix>> {
    let file = std::fs::File::open(path).map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e)
    })?;
    let limit = ranges::recorded_prefix(&file).unwrap_or(u64::MAX);
    let mut file = file.take(limit);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(content: &[u8]) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: Digest::of(content),
            size: content.len() as u64,
            urls: Vec::new(),
            platform: None,
            data: None,
        }
    }

    #[test]
    fn base_layers_start_first_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut q = BlobQueue::new(2);
        let (a, b, c) = (descriptor(b"a"), descriptor(b"bb"), descriptor(b"ccc"));
        assert_eq!(q.add(&a, root), 0);
        assert_eq!(q.add(&b, root), 1);
        // A blob used by two layers is queued once.
        assert_eq!(q.add(&a, root), 0);
        assert_eq!(q.add(&c, root), 2);
        assert!(!q.is_started(0));
        assert_eq!(q.start_next(), Some(0));
        assert_eq!(q.start_next(), Some(1));
        assert_eq!(q.start_next(), None, "two at once");
        // Started once its spool is ours.
        assert!(!q.is_started(1));
        assert!(matches!(q.claim(1).unwrap(), Claimed::Empty));
        assert!(q.is_started(1) && !q.is_started(2));
        q.verified(0);
        assert_eq!(q.start_next(), Some(2));
        assert_eq!(q.start_next(), None, "none left");
        // Verified whole, active as far as written (never beyond the size).
        assert_eq!(q.progress(|b| if b == 1 { 1 } else { 99 }), (1 + 1 + 3, 6));
        q.verified(1);
        q.verified(2);
        q.verified(2);
        assert_eq!(q.progress(|_| 0), (6, 6));
    }

    #[test]
    fn the_last_use_of_a_spool_owns_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = BlobQueue::new(1);
        let a = descriptor(b"a");
        q.add(&a, dir.path());
        q.add(&a, dir.path());
        assert_eq!(q.spool_to_resume(0), None);
        assert_eq!(q.start_next(), Some(0));
        assert!(matches!(q.claim(0).unwrap(), Claimed::Empty));
        let registry = FromRegistry {
            url: "https://registry.invalid/".into(),
            headers: Vec::new(),
            transport: Transport::default(),
        };
        let _job = q.job(0, registry).unwrap();
        let spool = q.spool_to_resume(0).unwrap();
        assert!(spool.exists());
        let (_, owner) = q.open_for_apply(0).unwrap();
        assert!(owner.is_none(), "another layer still needs it");
        let (_, owner) = q.open_for_apply(0).unwrap();
        drop(owner);
        assert!(spool.exists(), "still downloading");
        q.verified(0);
        assert!(!spool.exists(), "removed after its last use");
    }
}

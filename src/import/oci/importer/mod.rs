//! `OciImport`: the pull-oci state machine.
//!
//! ```text
//! Ping ─┬─ 200 ────────────────────────────────────────┐
//!       ├─ 401 Basic ─────────────────────────────────┤
//!       └─ 401 Bearer ─ Auth (first token) ────────────┴─ Manifest ─┬─ index: Manifest (entry)
//!                                                                   └─ image ─ Config ─ Layers ─ Finishing
//! ```
//!
//! Each `Stage` owns what is valid in it: the index entry a manifest request is for, the
//! manifest while its config is fetched, the blobs and layers while they download and
//! apply. Every request is an [`ImportJob`] on the one loop; a completion (or a retry
//! timer, or a task's result) is dispatched by one `match` on the request and the stage,
//! and one that does not belong to the current stage is stale and ignored. Finishing once,
//! the progress timer and the finishing step are the importer [`Lifecycle`]'s; the
//! authorization and what becomes of a failed request are the [`Session`]'s.
//!
//! After the config, all missing layer blobs download in parallel (up to
//! `--max-concurrent-downloads`, base layers first: [`BlobQueue`](super::blobs::BlobQueue)),
//! each into a spool file under the image root ([`spool`](super::spool)), its size and
//! sha256 checked by the job itself. A spool is a partial download named after the
//! blob's digest: one a killed pull left is hashed and resumed, one another process is
//! writing is waited for (a timer claims it again) and reused
//! ([`blobs`](super::blobs)). Layers are applied in order by a task
//! ([`apply`]) that decompresses and unpacks on two threads and checks the DiffID: layer i
//! starts as soon as layer i-1 is applied and its own download has begun, reading the spool
//! as it grows (it reaches the end only once the blob was verified). A big blob is fetched
//! as several ranges at once ([`ranged`], [`ranges`](super::ranges)), the spool's prefix
//! hashed as it grows. Downloads of the
//! layers above carry on meanwhile; the loop thread only moves bytes and reacts to
//! completions.
//!
//! Storage ([`layers`](super::layers)): the layers are applied into one temporary tree that
//! becomes the local image ([`finish`](super::finish)). On btrfs it is a subvolume and every
//! applied layer leaves a read-only snapshot of it, `.oci-chain-<ChainID hex>` (shared by
//! every image with the same base; layers whose chain exists are not downloaded at all,
//! and the tree starts as a writable snapshot of the highest one; a chain another process
//! is making is waited for and taken, not applied again). Nothing gets a final name
//! before its digests checked out.
//!
//! Failures ([`session`](super::session)): 5xx, 429, 408 and transport errors are retried
//! (a blob resumes with a Range request from what its spool holds); a 401 gets a new token
//! (or Basic credentials) once per request; anything else fails the pull with one message,
//! and dropping the importer removes every temporary file.
//!
//! Endpoints ([`route`](super::route)): requests go to the route's current endpoint (a
//! mirror, or the registry); one that fails there while another endpoint may take over
//! moves the pull on to it (`Next::NextSource`, as a layer moves on from a descriptor's
//! URL): a new [`Session`] with that host's credentials, a new ping while the manifest is
//! still being looked for, else the request simply goes again. Requests still running at
//! the endpoint left behind are sent again at the new one if they fail. Which endpoint
//! served the manifest and each layer is logged.
//!
//! The importer's code is in four files by concern: this one holds the state, sending
//! requests and dispatching their completions, the layers and the finishing;
//! [`discovery`] finds the image (ping, first token, manifest, config); [`recovery`]
//! carries out what becomes of a failed request (retry, resume, next endpoint); [`ranged`]
//! runs the parts of a blob fetched in ranges.

mod discovery;
mod ranged;
mod recovery;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::apply::{self, ApplyWork};
use super::blobs::{Claimed, FromRegistry};
use super::layers::{ChainClaim, Layers};
use super::manifest::{Descriptor, ImageManifest};
use super::request::{self, BodySlot, Key, PullRequest};
use super::route::Route;
use super::session::{Failure, Logins, Session};
use crate::curl_glue::CurlGlue;
use crate::event::{Clock, EventLoop, SourceId, TimerAction};
use crate::import::job::retry::RetryPolicy;
use crate::import::job::{ImportJob, JobOwner, JobSet, JobState};
use crate::import::store::TempPath;
use crate::import::{Importer, Lifecycle};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::fs;

/// Largest image config we accept (real ones are KiBs; history can make them larger).
const CONFIG_MAX: u64 = 16 << 20;
/// How often a blob another process downloads is claimed again.
const CLAIM_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Where the pull is, with what is valid there.
enum Stage {
    /// `GET /v2/`: is it a Registry v2, does it want credentials?
    Ping,
    /// The ping asked for a Bearer token: the first token request runs; the manifest
    /// request follows it.
    Auth,
    /// The manifest (or index) request runs.
    Manifest(ManifestFetch),
    /// The image config request runs.
    Config(ConfigFetch),
    /// Layer blobs download and layers are applied.
    Layers(Box<Layers>),
    /// The local image and its settings files are made (the lifecycle's step).
    Finishing,
    /// Over, everything the pull owned stopped and removed: late completions are ignored.
    Finished,
}

impl Stage {
    /// The stage, leaving `Finished` in its place (to move its data into the next one).
    fn take(&mut self) -> Stage {
        std::mem::replace(self, Stage::Finished)
    }
}

/// The manifest request of the [`Stage::Manifest`].
struct ManifestFetch {
    /// The index entry it fetches (the job verifies the manifest against it), if an index
    /// chose it; else the reference's manifest is fetched.
    entry: Option<Descriptor>,
    body: BodySlot,
}

/// The config request of the [`Stage::Config`].
struct ConfigFetch {
    manifest: ImageManifest,
    /// The manifest was chosen from an index for our platform (else the config's platform
    /// is compared with ours, and a mismatch warned about).
    from_index: bool,
    body: BodySlot,
}

/// The importer. Field order is drop order: the finishing step and the jobs first (their
/// threads are stopped and joined), then the stage's tasks and temporary paths, the glue
/// last.
pub struct OciImport {
    lifecycle: Lifecycle,
    jobs: JobSet<Key>,
    stage: Stage,
    /// Timers of requests waiting to be retried (and of the ones below).
    timers: Vec<SourceId>,
    /// The timer that looks again whether a layer another process applies is done.
    advance_timer: Option<SourceId>,
    glue: CurlGlue,

    req: PullRequest,
    /// The endpoints and the one in use.
    route: Route,
    /// The authorization at the current endpoint.
    session: Session,
    /// The endpoint each running request was sent to (by its index in the route).
    sent_to: HashMap<Key, usize>,
    /// Credentials found per endpoint host.
    logins: Logins,
    /// Set when the pull is abandoned: stops the apply and finish work promptly.
    cancel: Arc<AtomicBool>,
}

impl OciImport {
    pub fn new(req: PullRequest) -> Result<Self> {
        let route = Route::new(&req.resolution, &req.curl)?;
        let retry = RetryPolicy::with_first_delay(req.retry_delay);
        let mut logins = Logins::new(req.credentials.clone(), retry);
        let session = logins.session_for(&route.current().1.endpoint);
        Ok(OciImport {
            lifecycle: Lifecycle::new(),
            jobs: JobSet::new(),
            stage: Stage::Ping,
            timers: Vec::new(),
            advance_timer: None,
            glue: CurlGlue::new(req.curl.clone())?,
            req,
            route,
            session,
            sent_to: HashMap::new(),
            logins,
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    // --- Requests -------------------------------------------------------------------------

    /// Send (or send again) the request `key`, if it belongs to the current stage.
    fn begin(&mut self, lp: &mut EventLoop<Self>, key: Key) -> Result<()> {
        if let (Key::Blob(b), Stage::Layers(l)) = (key, &self.stage) {
            if l.blobs.wants_ranges(b) && self.begin_ranged(lp, b)? {
                return Ok(());
            }
        }
        let authorization = self.session.header();
        let (index, src) = self.route.current();
        let job = match (key, &mut self.stage) {
            (Key::Ping, Stage::Ping) => request::ping(src),
            (Key::Token, _) => match self.session.bearer() {
                Some(b) => request::token(
                    src,
                    &b.realm,
                    b.service.as_deref(),
                    self.session.token_grant(),
                ),
                None => return Ok(()),
            },
            (Key::Manifest, Stage::Manifest(f)) => {
                request::manifest(src, authorization, f.entry.as_ref(), f.body.clone())
            }
            (Key::Config, Stage::Config(f)) => {
                request::config(src, authorization, &f.manifest.config, f.body.clone())
            }
            (Key::Blob(b) | Key::Part(b, _), Stage::Layers(l)) => {
                let registry = FromRegistry {
                    url: src.endpoint.blob_url(&l.blobs.get(b).descriptor.digest),
                    headers: authorization.into_iter().chain(src.headers()).collect(),
                    transport: src.transport.clone(),
                };
                match key {
                    Key::Part(_, i) => match l.blobs.part_job(b, i, registry)? {
                        Some(job) => job,
                        // The blob went back to one stream meanwhile.
                        None => return Ok(()),
                    },
                    _ => l.blobs.job(b, registry)?,
                }
            }
            // A request of another stage (a retry timer that fired late): nothing to send.
            _ => return Ok(()),
        };
        self.sent_to.insert(key, index);
        self.session.begun(key);
        let OciImport { jobs, glue, .. } = self;
        jobs.begin(lp, glue, key, job)
            .map_err(|e| log_error_errno!(e.clone(), "Failed to start download: {}", e))
    }

    /// Request `key` finished well: go on.
    fn on_done(&mut self, lp: &mut EventLoop<Self>, key: Key, job: &ImportJob) -> Result<()> {
        match key {
            Key::Ping => self.on_ping(lp, None),
            Key::Token => self.on_token(lp, job.payload()),
            Key::Manifest => self.on_manifest(lp, job),
            Key::Config => self.on_config(lp),
            Key::Blob(b) => self.on_blob(lp, b),
            Key::Part(b, i) => self.on_part_done(lp, b, i),
        }
    }

    // --- Layers ---------------------------------------------------------------------------

    /// Begin queued blob downloads up to the concurrency limit, base layers first.
    fn start_downloads(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        loop {
            let Stage::Layers(l) = &mut self.stage else {
                return Ok(());
            };
            let Some(b) = l.blobs.start_next() else {
                return Ok(());
            };
            self.claim_blob(lp, b)?;
        }
    }

    /// Take blob `b`'s spool: download into it, hash what it holds first, or wait for the
    /// process writing it (claiming it again every [`CLAIM_INTERVAL`]).
    fn claim_blob(&mut self, lp: &mut EventLoop<Self>, b: usize) -> Result<()> {
        let Stage::Layers(l) = &mut self.stage else {
            return Ok(());
        };
        match l.blobs.claim(b)? {
            Claimed::Empty => self.begin(lp, Key::Blob(b)),
            Claimed::Hash(spool) => self.hash_spool(lp, b, spool),
            Claimed::Busy => {
                let timer = lp.add_timer_in(
                    Clock::Monotonic,
                    CLAIM_INTERVAL,
                    move |lp, d: &mut Self, id, _| {
                        d.timers.retain(|t| *t != id);
                        // Once claimed, the layer may be applied.
                        if let Err(e) = d.claim_blob(lp, b).and_then(|()| d.advance(lp)) {
                            d.finish(lp, Err(e));
                        }
                        Ok(TimerAction::Drop)
                    },
                )?;
                self.timers.push(timer);
                Ok(())
            }
        }
    }

    /// Blob `b` is complete, its size and digest verified by the job.
    fn on_blob(&mut self, lp: &mut EventLoop<Self>, b: usize) -> Result<()> {
        let Stage::Layers(l) = &mut self.stage else {
            return Ok(());
        };
        let blob = l.blobs.get(b);
        if !blob.is_foreign() {
            if let Some(&i) = self.sent_to.get(&Key::Blob(b)) {
                let from = &self.route.get(i).endpoint;
                log::info!("Fetched layer {} from {from}.", blob.descriptor.digest);
            }
        }
        // Only now may the apply task reach the end of the layer.
        l.blobs.verified(b);
        self.start_downloads(lp)?;
        self.advance(lp)
    }

    /// Apply the next layer if it can go now, or finish when all are applied.
    fn advance(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let Stage::Layers(l) = &mut self.stage else {
            return Ok(());
        };
        if l.applying.is_some() {
            return Ok(());
        }
        // btrfs: another process pulling the same layers made their chains meanwhile.
        if let Some(n) = l.chain_made_elsewhere() {
            l.take_chain(n);
        }
        let i = l.next;
        let Some(layer) = l.todo.get(i) else {
            return self.start_finishing(lp);
        };
        // The layer is applied while it downloads, as soon as its download has begun.
        if !l.blobs.is_started(layer.blob) {
            return Ok(());
        }
        match l.claim_chain(i)? {
            ChainClaim::Ours => {}
            ChainClaim::Made(n) => {
                l.take_chain(n);
                return self.advance(lp);
            }
            // Another process applies it: look again in a while (its chain may appear,
            // or it may fail and leave the layer to us).
            ChainClaim::Busy => return self.advance_later(lp),
        }
        let layer = &l.todo[i];
        let (layer, diff_id, blob) = (layer.digest.clone(), layer.diff_id.clone(), layer.blob);
        let (target, subvolume) = l.target(i);
        let (input, spool_owned) = l.blobs.open_for_apply(blob)?;
        let work = ApplyWork {
            layer,
            diff_id,
            input: input.into(),
            spool_owned,
            target,
            size_max: self.req.layer_size_max,
            cancel: self.cancel.clone(),
        };
        let task = lp.spawn_task(
            "oci-apply",
            move |_| apply::apply(work).map(|()| subvolume),
            move |lp, d: &mut Self, result| d.on_layer_applied(lp, i, result),
        )?;
        l.applying = Some(task);
        Ok(())
    }

    /// Call [`advance`](Self::advance) again after [`CLAIM_INTERVAL`] (one timer at a
    /// time).
    fn advance_later(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        if self.advance_timer.is_some() {
            return Ok(());
        }
        let timer = lp.add_timer_in(
            Clock::Monotonic,
            CLAIM_INTERVAL,
            move |lp, d: &mut Self, id, _| {
                d.timers.retain(|t| *t != id);
                d.advance_timer = None;
                if let Err(e) = d.advance(lp) {
                    d.finish(lp, Err(e));
                }
                Ok(TimerAction::Drop)
            },
        )?;
        self.timers.push(timer);
        self.advance_timer = Some(timer);
        Ok(())
    }

    /// Layer `todo[i]` was applied (into `subvolume` on btrfs, to be kept).
    fn on_layer_applied(
        &mut self,
        lp: &mut EventLoop<Self>,
        i: usize,
        result: Result<Option<TempPath>>,
    ) {
        let Stage::Layers(l) = &mut self.stage else {
            return;
        };
        l.applying = None;
        let kept = result.and_then(|subvolume| match subvolume {
            Some(s) => l.keep_chain(i, s),
            None => Ok(()),
        });
        if kept.is_ok() {
            l.next += 1;
            log::info!(
                "Applied layer {}/{} {}.",
                l.present + i + 1,
                l.total(),
                l.todo[i].digest
            );
            self.report_progress();
        }
        if let Err(e) = kept.and_then(|()| self.advance(lp)) {
            self.finish(lp, Err(e));
        }
    }

    // --- Finishing ------------------------------------------------------------------------

    /// Every layer is applied: make the local image and its settings files (a step on a
    /// task).
    fn start_finishing(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let layers = match self.stage.take() {
            Stage::Layers(l) => l,
            other => {
                self.stage = other;
                return Ok(());
            }
        };
        self.lifecycle.stop_progress_timer(lp);
        self.lifecycle.report_progress(95);
        let work = layers.into_finish(self.req.local.clone(), self.req.force);
        self.stage = Stage::Finishing;
        self.run_step(
            lp,
            "oci-finish",
            move |cancel| work.run(cancel),
            |d, lp, ()| {
                d.lifecycle.report_progress(100);
                d.finish(lp, Ok(()));
            },
        );
        Ok(())
    }

    /// Make running tasks stop at once: the unpack sees the cancel flag, readers of
    /// spools still being written get an error.
    fn abandon(&self) {
        self.cancel.store(true, Ordering::Release);
        if let Stage::Layers(l) = &self.stage {
            l.blobs
                .abort_all(&Error::with_message(libc::ECANCELED, "Pull abandoned."));
        }
    }
}

impl Drop for OciImport {
    fn drop(&mut self) {
        // Before the fields go, so joining the tasks (when the stage drops) is quick.
        self.abandon();
    }
}

impl JobOwner for OciImport {
    type Key = Key;

    fn glue_and_jobs(&mut self) -> (&mut CurlGlue, &mut JobSet<Key>) {
        (&mut self.glue, &mut self.jobs)
    }

    /// A request finished, one way or the other.
    fn on_job_done(&mut self, lp: &mut EventLoop<Self>, key: Key) {
        if self.lifecycle.is_finished() {
            return;
        }
        let Some(job) = self.jobs.remove(key) else {
            return;
        };
        let current = self.route.current().0;
        let stale = self.sent_to.get(&key).is_some_and(|&i| i != current);
        let r = if stale && matches!(key, Key::Ping | Key::Token) {
            // For an endpoint left behind.
            return;
        } else if stale && job.state() != JobState::Done {
            // Sent to an endpoint left behind: send it again at the current one.
            drop(job);
            self.begin(lp, key)
        } else if job.state() == JobState::Done {
            self.on_done(lp, key, &job)
        } else {
            let failure = Failure::of(&job);
            // Stop its worker before the request is sent again.
            drop(job);
            self.on_failed(lp, key, failure)
        };
        if let Err(e) = r {
            self.finish(lp, Err(e));
        }
    }
}

impl Importer for OciImport {
    fn image_root(&self) -> &std::path::Path {
        &self.req.image_root
    }

    fn local_name(&self) -> Option<&str> {
        self.req.local.as_deref()
    }

    fn start(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        fs::mkdir_p(&self.req.image_root, 0o700).map_err(|e| {
            log_error_errno!(
                e.clone(),
                "Failed to create {}: {}",
                self.req.image_root.display(),
                e
            )
        })?;
        self.lifecycle.report_progress(0);
        self.begin(lp, Key::Ping)
    }

    fn lifecycle(&mut self) -> &mut Lifecycle {
        &mut self.lifecycle
    }

    /// Overall progress for systemd-importd: 5 % for manifest and config, 45 % for the
    /// bytes downloaded, 45 % for the layers applied, the rest for the local image; with
    /// the bytes and each layer's state as extended fields.
    fn report_progress(&mut self) {
        let Stage::Layers(l) = &self.stage else {
            return;
        };
        let jobs = &self.jobs;
        let written = |b: usize| {
            l.blobs
                .ranged_bytes(b)
                .unwrap_or_else(|| jobs.get(Key::Blob(b)).map_or(0, |j| j.written_compressed()))
        };
        let (done, total) = l.blobs.progress(written);
        let share = |done: f64, total: f64| if total == 0.0 { 1.0 } else { done / total };
        let download = share(done as f64, total as f64);
        let applied = share(l.next as f64, l.todo.len() as f64);
        let percent = 5.0 + 45.0 * download + 45.0 * applied;
        // Never go backwards (a restarted download would).
        let percent = (percent as u32).max(self.lifecycle.last_progress().unwrap_or(0));
        let layers = l.progress(written);
        self.lifecycle
            .report_details(percent, Some((done, Some(total))), layers);
    }

    /// The pull is over: a failure makes the running tasks stop at once; retries are off;
    /// the stage's tasks are joined and its temporary files removed.
    fn on_finish(&mut self, lp: &mut EventLoop<Self>, result: &Result<()>) {
        if result.is_err() {
            self.abandon();
        }
        for t in self.timers.drain(..) {
            lp.remove(t);
        }
        self.advance_timer = None;
        self.stage = Stage::Finished;
    }
}

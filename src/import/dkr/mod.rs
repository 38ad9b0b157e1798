//! pull-dkr: the Docker registry v1 importer (spec §4), a port of the seed's
//! `import-dkr.c`.
//!
//! [`DkrImport`] chains five HTTP jobs from their completion events:
//!
//! 1. **images**: `GET <index>/v1/repositories/<name>/images` with `X-Docker-Token:
//!    true`; the index answers with a token and the registry endpoints in headers;
//! 2. **tags**: `GET https://<registry>/v1/repositories/<name>/tags/<tag>`: the image id;
//! 3. **ancestry** and **json**, concurrently: the image's layer ids, top first (the json
//!    body is fetched and ignored, as the C tool did);
//! 4. **layer**, once per missing layer, strictly one after the other from the base: each
//!    is applied to a copy of its parent and kept as `<root>/.dkr-<id>` ([`layer`]);
//! 5. a writable local copy of the top layer at `<root>/<local>`.
//!
//! Every request carries `Accept: application/json` and, once the index gave us one,
//! `Authorization: Token <token>` (before that, `X-Docker-Token: true`).
//!
//! Deviations from the C tool (all deliberate, see the crate's README): headers are
//! matched case-insensitively (Q2); the endpoint list is checked when the images body
//! starts, after all headers, rather than per header line; layer archives are applied
//! in-process with opaque directories honoured and missing whiteout victims ignored (Q6,
//! Q8); a failed rename fails the pull (Q7); layers also work off btrfs, as plain
//! directories; progress is reported for all phases through `X_IMPORT_PROGRESS` (v219).

mod index;
mod json;
mod layer;

use std::path::PathBuf;

use crate::curl_glue::{CurlGlue, CurlSettings};
use crate::event::EventLoop;
use crate::import::job::{ImportJob, JobOptions, JobOwner, JobSet, JobState, Sink, StreamContext};
use crate::import::store::{self, TempPath};
use crate::import::{Importer, Lifecycle};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::validate;

/// Registries are always spoken to over HTTPS.
const PROTOCOL_PREFIX: &str = "https://";

/// What pull-dkr is asked to do, validated by the command line.
#[derive(Debug, Clone)]
pub struct DkrRequest {
    pub index_url: String,
    pub name: String,
    pub tag: String,
    /// The local image name, `None` for "layers only".
    pub local: Option<String>,
    pub image_root: PathBuf,
    /// Replace an existing local image.
    pub force: bool,
    /// What the easy handles get.
    pub curl: CurlSettings,
    /// Test setting: the port of the registry the index names.
    pub registry_port: Option<u16>,
}

/// The five jobs, by what they fetch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum JobKind {
    Images,
    Tags,
    Ancestry,
    Json,
    Layer,
}

impl JobKind {
    /// For "Failed to start … job".
    fn name(self) -> &'static str {
        match self {
            JobKind::Images => "images",
            JobKind::Tags => "tags",
            JobKind::Ancestry => "ancestry",
            JobKind::Json => "json",
            JobKind::Layer => "layer",
        }
    }

    /// What the C tool logged when this job failed. The job itself already logged the
    /// cause (HTTP status, truncation, a refused archive member…).
    fn failure_message(self) -> &'static str {
        match self {
            JobKind::Images => "Failed to retrieve images list. (Wrong index URL?)",
            JobKind::Tags => "Failed to retrieve tags list.",
            JobKind::Ancestry => "Failed to retrieve ancestry list.",
            JobKind::Json => "Failed to retrieve json data.",
            JobKind::Layer => "Failed to retrieve layer data.",
        }
    }
}

/// How far the pull is. Also selects the progress weights (v219's `DkrProgress`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Asking the index where the repository is (0–5 %).
    Searching,
    /// Resolving the tag to an image id (5–10 %).
    Resolving,
    /// Fetching the ancestry and json (10–20 %).
    Metadata,
    /// Pulling layers (20–95 %, an equal share per layer).
    Downloading,
    /// Making the local copy (95 %).
    Copying,
}

/// One `pull-dkr`. See the module documentation.
pub struct DkrImport {
    // Field order is drop order: the copy task and the jobs (their workers cancelled and
    // joined) first, then the temporary layer tree they may have been writing, and the
    // glue after every job.
    /// Runs the local copy, the last step.
    lifecycle: Lifecycle,
    jobs: JobSet<JobKind>,
    /// The layer being pulled, under its temporary name. Set before the layer job begins
    /// (its worker creates the tree); kept only once renamed into place.
    temp: Option<TempPath>,
    glue: CurlGlue,

    /// The index URL without its trailing `/` (one is removed, as in the C tool).
    index_url: String,
    image_root: PathBuf,
    name: String,
    tag: String,
    local: Option<String>,
    force_local: bool,
    /// Test setting: appended to the registry host (see [`DkrImport::registry_url`]).
    registry_port: Option<u16>,

    /// The image id the tag resolved to (set by the tags job).
    id: Option<String>,
    /// The index's token and registry list (set by the images job).
    token: Option<String>,
    registries: Vec<String>,
    /// Layer ids, base first (set by the ancestry job), and the one being pulled.
    ancestry: Vec<String>,
    current: usize,
    /// `<root>/.dkr-<current layer>` while a layer job runs.
    final_path: Option<PathBuf>,

    stage: Stage,
}

impl DkrImport {
    /// `dkr_import_new()`: refuses an index URL that is not http(s) (EINVAL).
    pub fn new(req: DkrRequest) -> Result<Self> {
        if !validate::http_url_is_valid(&req.index_url) {
            return Err(Error::new(libc::EINVAL));
        }
        let mut index_url = req.index_url;
        if index_url.ends_with('/') {
            index_url.pop();
        }
        Ok(DkrImport {
            lifecycle: Lifecycle::new(),
            jobs: JobSet::new(),
            temp: None,
            glue: CurlGlue::new(req.curl)?,
            index_url,
            image_root: req.image_root,
            name: req.name,
            tag: req.tag,
            local: req.local,
            force_local: req.force,
            registry_port: req.registry_port,
            id: None,
            token: None,
            registries: Vec::new(),
            ancestry: Vec::new(),
            current: 0,
            final_path: None,
            stage: Stage::Searching,
        })
    }

    /// `https://<first registry>`, plus `:<port>` with the test setting
    /// ([`crate::util::test_seams::TestSettings::dkr_registry_port`]).
    fn registry_url(&self) -> String {
        let port = self
            .registry_port
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        format!("{PROTOCOL_PREFIX}{}{port}", self.registries[0])
    }

    /// A job for `url` with the dkr request headers (spec §4.2).
    fn job(&self, url: &str, sink: Sink) -> ImportJob {
        let auth = match &self.token {
            Some(token) => format!("Authorization: Token {token}"),
            None => format!("{}: true", index::HEADER_TOKEN),
        };
        let mut options = JobOptions::new(sink);
        options.headers = vec!["Accept: application/json".to_string(), auth];
        ImportJob::new(url, options)
    }

    /// A sink for bodies we fetch but do not use: the worker drains them.
    fn discard() -> Sink {
        Sink::Stream(Box::new(|_, _| Ok(())))
    }

    /// Create and begin the `kind` job for `url`.
    fn start_job(
        &mut self,
        lp: &mut EventLoop<Self>,
        kind: JobKind,
        url: &str,
        sink: Sink,
    ) -> Result<()> {
        let job = self.job(url, sink);
        self.jobs
            .begin(lp, &mut self.glue, kind, job)
            .map_err(|e| log_error_errno!(e.clone(), "Failed to start {} job: {}", kind.name(), e))
    }

    /// The body of a completed memory-mode job.
    fn payload(&self, kind: JobKind) -> &[u8] {
        self.jobs.get(kind).map_or(&[][..], ImportJob::payload)
    }

    /// React to one completed job. Errors were logged where they happened.
    fn advance(&mut self, lp: &mut EventLoop<Self>, kind: JobKind) -> Result<()> {
        if let Some(e) = self.jobs.get(kind).and_then(|j| j.error()) {
            let e = e.clone();
            log::error!("{}", kind.failure_message());
            return Err(e.message(kind.failure_message()));
        }
        match kind {
            JobKind::Images => self.on_images_done(lp),
            JobKind::Tags => self.on_tags_done(lp),
            JobKind::Ancestry => self.on_ancestry_done(lp),
            JobKind::Layer => self.on_layer_done(lp),
            // Fetched only to be complete; `is_done()` waits for it.
            JobKind::Json => Ok(()),
        }
    }

    /// The index answered: remember token and registries, resolve the tag.
    fn on_images_done(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        debug_assert!(self.jobs.get(JobKind::Tags).is_none());
        let headers = self.jobs.get(JobKind::Images).map(|j| j.headers().to_vec());
        // Normally checked already when the body began (see `start`); this is the same
        // check for an answer that had no body to begin.
        let reply = index::parse_headers(&headers.unwrap_or_default())
            .map_err(|e| log_error_errno!(e, "Registry hostname is not valid."))?;
        self.token = reply.token;
        self.registries = reply.registries;
        let Some(registry) = self.registries.first() else {
            return Err(log_error_errno!(
                Error::new(libc::EBADMSG),
                "Didn't get registry information."
            ));
        };
        log::info!("Index lookup succeeded, directed to registry {registry}.");
        self.set_stage(Stage::Resolving);

        let url = format!(
            "{}/v1/repositories/{}/tags/{}",
            self.registry_url(),
            self.name,
            self.tag
        );
        self.start_job(lp, JobKind::Tags, &url, Sink::Memory)
    }

    /// The tag resolved to an image id: fetch its ancestry and json, concurrently.
    fn on_tags_done(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        debug_assert!(self.jobs.get(JobKind::Ancestry).is_none());
        let id = json::parse_id(self.payload(JobKind::Tags))
            .map_err(|e| log_error_errno!(e, "Failed to parse JSON id."))?;
        log::info!("Tag lookup succeeded, resolved to layer {id}.");
        self.set_stage(Stage::Metadata);

        let base = format!("{}/v1/images/{id}", self.registry_url());
        self.id = Some(id);
        self.start_job(
            lp,
            JobKind::Ancestry,
            &format!("{base}/ancestry"),
            Sink::Memory,
        )?;
        self.start_job(lp, JobKind::Json, &format!("{base}/json"), Self::discard())
    }

    /// The ancestry arrived: check it and start pulling layers from the base.
    fn on_ancestry_done(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        debug_assert!(self.jobs.get(JobKind::Layer).is_none());
        // The C tool used the tags job's message here too.
        let ancestry = json::parse_ancestry(self.payload(JobKind::Ancestry))
            .map_err(|e| log_error_errno!(e, "Failed to parse JSON id."))?;
        if ancestry.last() != self.id.as_ref() {
            return Err(log_error_errno!(
                Error::new(libc::EBADMSG),
                "Ancestry doesn't end in main layer."
            ));
        }
        // The C message ends in "\n", which systemd's logger drops (it prints each line
        // of a message separately and skips empty ones), so the output is this line.
        log::info!("Ancestor lookup succeeded, requires layers:");
        for layer in &ancestry {
            log::info!("\t{layer}");
        }
        self.ancestry = ancestry;
        self.current = 0;
        self.set_stage(Stage::Downloading);
        self.pull_layer(lp)
    }

    /// Start the first layer from the cursor on that does not exist yet; nothing if none
    /// is left.
    fn pull_layer(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        debug_assert!(self.jobs.get(JobKind::Layer).is_none());
        debug_assert!(self.temp.is_none() && self.final_path.is_none());
        let (layer, final_path) = loop {
            let Some(layer) = self.ancestry.get(self.current) else {
                return Ok(());
            };
            let path = layer::layer_path(&self.image_root, layer);
            if !layer::layer_exists(&path)? {
                break (layer.clone(), path);
            }
            log::info!("Layer {layer} already exists, skipping.");
            self.current += 1;
        };
        log::info!("Pulling layer {layer}...");

        let temp = TempPath::next_to(&final_path);
        let base = self
            .current
            .checked_sub(1)
            .map(|i| layer::layer_path(&self.image_root, &self.ancestry[i]));
        let sink = Sink::Stream(layer::apply_consumer(temp.path().to_path_buf(), base));
        self.temp = Some(temp);
        self.final_path = Some(final_path);
        let url = format!("{}/v1/images/{layer}/layer", self.registry_url());
        self.start_job(lp, JobKind::Layer, &url, sink)
    }

    /// A layer was downloaded and applied: seal it under its final name, pull the next.
    fn on_layer_done(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        self.jobs.remove(JobKind::Layer);
        let (Some(temp), Some(final_path)) = (self.temp.as_ref(), self.final_path.take()) else {
            return Err(Error::new(libc::EINVAL));
        };
        layer::seal(temp.path(), &final_path)?;
        if let Some(temp) = self.temp.take() {
            temp.keep();
        }
        log::info!("Completed writing to layer {}.", final_path.display());
        self.current += 1;
        self.pull_layer(lp)
    }

    /// `dkr_import_is_done()`: every job done and no layer left.
    fn is_done(&self) -> bool {
        let done = |k| {
            self.jobs
                .get(k)
                .is_some_and(|j| j.state() == JobState::Done)
        };
        done(JobKind::Images)
            && done(JobKind::Tags)
            && done(JobKind::Ancestry)
            && done(JobKind::Json)
            && self.jobs.get(JobKind::Layer).is_none()
            && self.current >= self.ancestry.len()
            && self.stage == Stage::Downloading
    }

    /// The last step: the local image, in a task (a copy off btrfs takes long).
    fn make_local_copy(&mut self, lp: &mut EventLoop<Self>) {
        self.set_stage(Stage::Copying);
        let (Some(local), Some(id)) = (self.local.clone(), self.id.as_deref()) else {
            return self.finish(lp, Ok(()));
        };
        let top_layer = layer::layer_path(&self.image_root, id);
        let root = self.image_root.clone();
        let force = self.force_local;
        self.run_step(
            lp,
            "dkr-local-copy",
            move |cancel| store::copy_tree(&top_layer, &root, &local, force, Some(cancel)),
            |me, lp, ()| me.finish(lp, Ok(())),
        );
    }

    fn set_stage(&mut self, stage: Stage) {
        self.stage = stage;
        self.report_progress();
    }

    /// v219's `dkr_pull_report_progress()`.
    fn progress_percent(&self) -> u32 {
        let job = |k| self.jobs.get(k).map_or(0, ImportJob::progress_percent);
        match self.stage {
            Stage::Searching => job(JobKind::Images) * 5 / 100,
            Stage::Resolving => 5 + job(JobKind::Tags) * 5 / 100,
            Stage::Metadata => 10 + job(JobKind::Ancestry) * 5 / 100 + job(JobKind::Json) * 5 / 100,
            Stage::Downloading => {
                let n = self.ancestry.len().max(1) as u32;
                let done = self.current.min(self.ancestry.len()) as u32;
                20 + 75 * done / n + job(JobKind::Layer) * 75 / n / 100
            }
            Stage::Copying => 95,
        }
    }
}

impl JobOwner for DkrImport {
    type Key = JobKind;

    fn glue_and_jobs(&mut self) -> (&mut CurlGlue, &mut JobSet<JobKind>) {
        (&mut self.glue, &mut self.jobs)
    }

    /// A job completed (either way): the C `dkr_import_job_on_finished()`.
    fn on_job_done(&mut self, lp: &mut EventLoop<Self>, kind: JobKind) {
        if self.lifecycle.is_finished() {
            return;
        }
        let advanced = self.advance(lp, kind);
        match advanced {
            Err(e) => self.finish(lp, Err(e)),
            Ok(()) if self.is_done() => self.make_local_copy(lp),
            Ok(()) => {}
        }
    }
}

impl Importer for DkrImport {
    fn image_root(&self) -> &std::path::Path {
        &self.image_root
    }

    fn local_name(&self) -> Option<&str> {
        self.local.as_deref()
    }

    /// `dkr_import_pull()`: re-check the request (EINVAL), refuse a second start (EBUSY),
    /// and ask the index.
    fn start(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        if !validate::dkr_name_is_valid(&self.name)
            || !validate::dkr_tag_is_valid(&self.tag)
            || self
                .local
                .as_deref()
                .is_some_and(|l| !validate::machine_name_is_valid(l))
        {
            return Err(Error::new(libc::EINVAL));
        }
        if self.jobs.get(JobKind::Images).is_some() {
            return Err(Error::new(libc::EBUSY));
        }
        let url = format!("{}/v1/repositories/{}/images", self.index_url, self.name);
        // The endpoint list is checked as soon as the body begins, so a bad one fails the
        // job (as the C header hook did) instead of completing it first.
        let check_endpoints = Sink::Stream(Box::new(|ctx: &StreamContext, _| {
            index::parse_headers(&ctx.meta.headers)
                .map(|_| ())
                .map_err(|e| log_error_errno!(e, "Registry hostname is not valid."))
        }));
        // Errors are reported by the caller ("Failed to pull image: …"), as in C.
        let job = self.job(&url, check_endpoints);
        self.jobs.begin(lp, &mut self.glue, JobKind::Images, job)?;
        self.lifecycle.start_progress_timer(lp)
    }

    fn lifecycle(&mut self) -> &mut Lifecycle {
        &mut self.lifecycle
    }

    fn report_progress(&mut self) {
        let percent = self.progress_percent();
        self.lifecycle.report_progress(percent);
    }
}

//! What pull-tar and pull-raw share:
//! * [`UrlDownloads`]: the image download with its `SHA256SUMS` and `SHA256SUMS.gpg`
//!   companions (spec §5.2), the per-job failure messages, the checksum check, and the
//!   download share of the `X_IMPORT_PROGRESS=` reports of systemd v219 (spec §6.6);
//! * [`UrlImport`]: the importer both are, apart from their [`Flavor`]: it starts the
//!   downloads, names the cache entry after the response's ETag, verifies a fresh
//!   download (or goes straight to the local image when the cache had it), and reports
//!   progress by [`Stage`]. The flavor takes over from there.
//!
//! The three downloads run at once on the importer's one curl multi handle; the importer
//! acts only when all of them are done, and the first one to fail ends the pull.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::job::{ImportJob, JobOptions, JobOwner, JobSet, Sink};
use super::store::{cache_path, find_old_etags, CacheKind, TempPath};
use super::verify;
use super::{Importer, Lifecycle};
use crate::curl_glue::{CurlGlue, CurlSettings};
use crate::event::EventLoop;
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::names;
use crate::util::test_seams::{self, Hold};

/// `--verify=` modes. `sum` (seed) and `checksum` (v219) are the same.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verify {
    No,
    Checksum,
    Signature,
}

impl Verify {
    /// Parse a `--verify=` value.
    pub fn parse(s: &str) -> Option<Verify> {
        match s {
            "no" => Some(Verify::No),
            "sum" | "checksum" => Some(Verify::Checksum),
            "signature" => Some(Verify::Signature),
            _ => None,
        }
    }
}

/// What pull-tar or pull-raw is asked to do, validated by the command line.
#[derive(Clone, Debug)]
pub struct UrlRequest {
    pub url: String,
    /// The local image name, `None` for "download into the cache only".
    pub local: Option<String>,
    pub image_root: PathBuf,
    /// Replace an existing local image.
    pub force: bool,
    pub verify: Verify,
    /// What the easy handles get.
    pub curl: CurlSettings,
    /// Test setting: the keyring gpg is given instead of the system's.
    pub keyring: Option<PathBuf>,
    /// Test setting: where a step's task waits to be cancelled.
    pub hold: Option<Hold>,
}

/// The companions are small text files: 1 MiB is plenty (the C tool's limit).
const VERIFY_FILE_MAX: u64 = 1 << 20;
/// Share of the overall progress each companion download stands for (v219).
const COMPANION_SHARE: u32 = 5;

/// The jobs of one tar or raw pull.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UrlJob {
    /// The image itself.
    Image,
    /// `SHA256SUMS` next to it.
    Checksum,
    /// `SHA256SUMS.gpg` next to it.
    Signature,
}

/// Where a tar or raw pull is, one step after the other; also what its progress means
/// (the phases systemd v219 reports to systemd-importd).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage {
    Downloading,
    Verifying,
    /// raw only: the qcow2 check and conversion.
    Unpacking,
    Finalizing,
    Copying,
}

/// Where each phase starts, in percent (spec §6.6): tar and raw differ only in how much
/// the download is worth.
#[derive(Clone, Copy, Debug)]
pub struct ProgressPlan {
    /// The downloads together are worth this much; it is also where verifying starts.
    pub download: u32,
    /// Where the qcow2 conversion starts (raw).
    pub unpacking: u32,
}

impl ProgressPlan {
    /// pull-tar: download 85 %, verifying 85, finalizing 90, copying 95.
    pub const TAR: ProgressPlan = ProgressPlan {
        download: 85,
        unpacking: 85,
    };
    /// pull-raw: download 80 %, verifying 80, unpacking 85, finalizing 90, copying 95.
    pub const RAW: ProgressPlan = ProgressPlan {
        download: 80,
        unpacking: 85,
    };
}

/// The image download and its verification companions.
pub struct UrlDownloads {
    /// The jobs (dropping them stops and joins their workers).
    pub jobs: JobSet<UrlJob>,
    url: String,
    verify: Verify,
    plan: ProgressPlan,
}

impl UrlDownloads {
    pub fn new(url: &str, verify: Verify, plan: ProgressPlan) -> Self {
        UrlDownloads {
            jobs: JobSet::new(),
            url: url.to_string(),
            verify,
            plan,
        }
    }

    /// Create the companion jobs the `--verify` mode asks for and begin all jobs: the
    /// image, then `SHA256SUMS`, then `SHA256SUMS.gpg` (the C order). `image` is the image
    /// job's options; it gets `calc_checksum` here.
    pub fn begin<D: JobOwner>(
        &mut self,
        lp: &mut EventLoop<D>,
        glue: &mut CurlGlue,
        mut image: JobOptions,
    ) -> Result<()> {
        image.calc_checksum = self.verify != Verify::No;
        let mut companions = Vec::new();
        if self.verify != Verify::No {
            // The query string is dropped here (Q14, as in the C tool).
            companions.push((
                UrlJob::Checksum,
                names::url_change_last_component(&self.url, "SHA256SUMS")?,
            ));
        }
        if self.verify == Verify::Signature {
            companions.push((
                UrlJob::Signature,
                names::url_change_last_component(&self.url, "SHA256SUMS.gpg")?,
            ));
        }
        let url = self.url.clone();
        self.jobs
            .begin(lp, glue, UrlJob::Image, ImportJob::new(&url, image))?;
        for (key, url) in companions {
            let mut options = JobOptions::new(Sink::Memory);
            options.compressed_max = VERIFY_FILE_MAX;
            options.uncompressed_max = VERIFY_FILE_MAX;
            self.jobs
                .begin(lp, glue, key, ImportJob::new(&url, options))?;
        }
        Ok(())
    }

    /// A job became complete. `Some(Ok)` when every job is done, `Some(Err)` when this one
    /// failed (the pull is over; the reason is logged here), `None` while others still run.
    pub fn on_job_complete(&self, key: UrlJob) -> Option<Result<()>> {
        let job = self.jobs.get(key)?;
        if let Some(e) = job.error() {
            let e = match key {
                UrlJob::Checksum => log_error_errno!(
                    e.clone(),
                    "Failed to retrieve SHA256 checksum, cannot verify. (Try --verify=no?)"
                ),
                UrlJob::Signature => log_error_errno!(
                    e.clone(),
                    "Failed to retrieve signature file, cannot verify. (Try --verify=no?)"
                ),
                UrlJob::Image => {
                    log_error_errno!(e.clone(), "Failed to retrieve image file. (Wrong URL?)")
                }
            };
            return Some(Err(e));
        }
        let all_done = self.jobs.iter().all(|(_, j)| j.is_complete());
        all_done.then_some(Ok(()))
    }

    /// The image job.
    pub fn image(&self) -> Option<&ImportJob> {
        self.jobs.get(UrlJob::Image)
    }

    /// The image was not downloaded because we have it already (ETag match or 304).
    pub fn skipped(&self) -> bool {
        self.image().is_some_and(|j| j.etag_exists())
    }

    /// The ETag of the image response (also of a 304).
    pub fn etag(&self) -> Option<String> {
        self.image().and_then(|j| j.etag()).map(str::to_string)
    }

    /// Spec §5.2 checksum check of a fresh download (nothing to do for `--verify=no`).
    /// Cheap: a search through a file of at most 1 MiB.
    pub fn verify_checksum(&self) -> Result<()> {
        if self.verify == Verify::No {
            return Ok(());
        }
        let sums = self
            .jobs
            .get(UrlJob::Checksum)
            .map(|j| j.payload())
            .unwrap_or_default();
        let sha256 = self
            .image()
            .and_then(|j| j.checksum())
            .ok_or_else(|| log_error_errno!(Error::new(libc::EIO), "Failed to get checksum."))?;
        verify::verify_checksum(sums, &self.url, sha256)
    }

    /// What the gpg check needs (`SHA256SUMS`, then its signature), for
    /// `--verify=signature` only.
    pub fn signature_inputs(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.verify != Verify::Signature {
            return None;
        }
        let payload = |key| {
            self.jobs
                .get(key)
                .map(|j| j.payload().to_vec())
                .unwrap_or_default()
        };
        Some((payload(UrlJob::Checksum), payload(UrlJob::Signature)))
    }

    /// Overall progress while downloading: each companion is worth 5 %, the image the rest
    /// of the plan's download share.
    fn download_percent(&self) -> u32 {
        let mut image_share = self.plan.download;
        let mut percent = 0;
        for (key, job) in self.jobs.iter() {
            if key != UrlJob::Image {
                percent += job.progress_percent() * COMPANION_SHARE / 100;
                image_share -= COMPANION_SHARE;
            }
        }
        if let Some(image) = self.image() {
            percent += image.progress_percent() * image_share / 100;
        }
        percent
    }

    /// The overall progress at `stage`, in percent.
    pub fn percent(&self, stage: Stage) -> u32 {
        match stage {
            Stage::Downloading => self.download_percent(),
            Stage::Verifying => self.plan.download,
            Stage::Unpacking => self.plan.unpacking,
            Stage::Finalizing => 90,
            Stage::Copying => 95,
        }
    }
}

/// `gpg --verify` of `SHA256SUMS` against `keyring` (blocks; run it in a task).
fn verify_signature_task(
    inputs: (Vec<u8>, Vec<u8>),
    keyring: &Path,
    cancel: &AtomicBool,
) -> Result<()> {
    let (sums, signature) = inputs;
    verify::verify_signature(&sums, &signature, keyring, Some(cancel))
}

/// The test setting `hold` for a task at `at`: returns ECANCELED once the task was
/// cancelled there, `Ok` when it was not to be held there.
pub fn test_hold(hold: Option<Hold>, at: Hold, cancel: &AtomicBool) -> Result<()> {
    if test_seams::hold_at(hold, at, cancel) {
        return Err(Error::new(libc::ECANCELED));
    }
    Ok(())
}

/// What makes pull-tar and pull-raw different; the rest of their pull is [`UrlImport`]'s.
pub trait Flavor: Default + Sized + 'static {
    /// The kind of cache entry the download becomes.
    const CACHE: CacheKind;
    /// What each stage is worth in the progress.
    const PLAN: ProgressPlan;
    /// The image job's options, for a download into `temp` (a reserved name the importer
    /// removes unless it is kept; nothing exists there yet).
    fn image_job(&mut self, temp: &Path) -> Result<JobOptions>;
    /// A fresh download was verified: continue from there to the end of the pull.
    fn verified(import: &mut UrlImport<Self>, lp: &mut EventLoop<UrlImport<Self>>);
    /// Make the local image from the cache entry, or finish if none was asked for.
    fn copy(import: &mut UrlImport<Self>, lp: &mut EventLoop<UrlImport<Self>>);
}

/// One pull-tar or pull-raw run. Field order is drop order: the step's task and the jobs
/// first (their threads are joined), then the temporary files they may have created,
/// then the glue.
pub struct UrlImport<F> {
    lifecycle: Lifecycle,
    pub downloads: UrlDownloads,
    /// The flavor's own state.
    pub flavor: F,
    /// The downloaded image, until it is moved into the cache.
    pub temp: Option<TempPath>,
    glue: CurlGlue,
    pub req: UrlRequest,
    /// The cache entry, once the image response is known.
    pub final_path: Option<PathBuf>,
    stage: Stage,
}

impl<F: Flavor> UrlImport<F> {
    pub fn new(req: UrlRequest) -> Result<Self> {
        Ok(UrlImport {
            lifecycle: Lifecycle::new(),
            downloads: UrlDownloads::new(&req.url, req.verify, F::PLAN),
            flavor: F::default(),
            temp: None,
            glue: CurlGlue::new(req.curl.clone())?,
            req,
            final_path: None,
            stage: Stage::Downloading,
        })
    }

    /// Move on to `stage` and report its progress; the sampling of the download progress
    /// stops with the download stage.
    pub fn enter(&mut self, lp: &mut EventLoop<Self>, stage: Stage) {
        self.stage = stage;
        if stage != Stage::Downloading {
            self.lifecycle.stop_progress_timer(lp);
        }
        self.report_progress();
    }

    /// Every download is done (spec §5.3 step 4, §5.4 step 3): name the cache entry after
    /// the response's ETag. A skipped download (ETag match or 304) goes on to the local
    /// image unverified, as in the C tool; a fresh one has its checksum checked here
    /// (cheap) and its signature in a task, then continues with the flavor.
    fn downloaded(&mut self, lp: &mut EventLoop<Self>) {
        let etag = self.downloads.etag();
        self.final_path = Some(cache_path(
            &self.req.image_root,
            F::CACHE,
            &self.req.url,
            etag.as_deref(),
        ));
        self.stage = Stage::Verifying;
        if self.downloads.skipped() {
            // The cache entry is the image; the unused temporary download goes.
            self.temp = None;
            return F::copy(self, lp);
        }
        self.enter(lp, Stage::Verifying);
        if let Err(e) = self.downloads.verify_checksum() {
            return self.finish(lp, Err(e));
        }
        match self.downloads.signature_inputs() {
            None => F::verified(self, lp),
            Some(inputs) => {
                let keyring = verify::keyring_path(self.req.keyring.as_deref());
                self.run_step(
                    lp,
                    "import-gpg",
                    move |cancel| verify_signature_task(inputs, &keyring, cancel),
                    |me, lp, ()| F::verified(me, lp),
                )
            }
        }
    }
}

impl<F: Flavor> JobOwner for UrlImport<F> {
    type Key = UrlJob;

    fn glue_and_jobs(&mut self) -> (&mut CurlGlue, &mut JobSet<UrlJob>) {
        (&mut self.glue, &mut self.downloads.jobs)
    }

    fn on_job_done(&mut self, lp: &mut EventLoop<Self>, key: UrlJob) {
        // A job that completes once the downloads are over (the pull failed) is ignored.
        if self.stage != Stage::Downloading || self.lifecycle.is_finished() {
            return;
        }
        match self.downloads.on_job_complete(key) {
            None => {}
            Some(Err(e)) => self.finish(lp, Err(e)),
            Some(Ok(())) => self.downloaded(lp),
        }
    }
}

impl<F: Flavor> Importer for UrlImport<F> {
    fn start(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let (root, url) = (&self.req.image_root, &self.req.url);
        let old_etags = find_old_etags(root, F::CACHE, url)?;
        // Reserved before anything can create it: the image job makes it.
        let temp = TempPath::next_to(&cache_path(root, F::CACHE, url, None));
        let path = temp.path().to_path_buf();
        self.temp = Some(temp);
        let mut options = self.flavor.image_job(&path)?;
        options.old_etags = old_etags;
        self.downloads.begin(lp, &mut self.glue, options)?;
        self.lifecycle.start_progress_timer(lp)
    }

    fn lifecycle(&mut self) -> &mut Lifecycle {
        &mut self.lifecycle
    }

    fn report_progress(&mut self) {
        let percent = self.downloads.percent(self.stage);
        self.lifecycle.report_progress(percent);
    }
}

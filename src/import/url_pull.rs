//! What pull-tar and pull-raw share: the image download with its `SHA256SUMS` and
//! `SHA256SUMS.gpg` companions (spec §5.2), the per-job failure messages, the checksum
//! check, and the `X_IMPORT_PROGRESS=` reports of systemd v219 (spec §6.6).
//!
//! The three downloads run at once on the importer's one curl multi handle; the importer
//! acts only when all of them are done, and the first one to fail ends the pull.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::job::{ImportJob, JobHost, JobOptions, JobOwner, JobSet, Sink};
use super::verify;
use crate::cli::Verify;
use crate::curl_glue::CurlGlue;
use crate::event::{Clock, EventLoop, SourceId, TaskHandle, TimerAction};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::{names, notify, test_seams};

/// The companions are small text files: 1 MiB is plenty (the C tool's limit).
const VERIFY_FILE_MAX: u64 = 1 << 20;
/// How often the download share of the progress is sampled.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
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

/// The phases systemd v219 reports to systemd-importd.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
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
    /// The last value sent as `X_IMPORT_PROGRESS=`.
    last_progress: Option<u32>,
    /// Samples the download progress while the downloads run.
    timer: Option<SourceId>,
}

impl UrlDownloads {
    pub fn new(url: &str, verify: Verify, plan: ProgressPlan) -> Self {
        UrlDownloads {
            jobs: JobSet::new(),
            url: url.to_string(),
            verify,
            plan,
            last_progress: None,
            timer: None,
        }
    }

    /// Create the companion jobs the `--verify` mode asks for and begin all jobs: the
    /// image, then `SHA256SUMS`, then `SHA256SUMS.gpg` (the C order). `image` is the image
    /// job's options; it gets `calc_checksum` here.
    pub fn begin<D: JobHost>(
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

    /// Stop every job that still runs (the pull is over).
    pub fn cancel_all<D: JobHost>(&mut self, lp: &mut EventLoop<D>, glue: &mut CurlGlue) {
        self.jobs.cancel_all(lp, glue);
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

    /// Send `X_IMPORT_PROGRESS=` for `phase` (only when the value changed). Leaving the
    /// download phase stops the sampling timer.
    pub fn report<D: 'static>(&mut self, lp: &mut EventLoop<D>, phase: Phase) {
        let percent = match phase {
            Phase::Downloading => self.download_percent(),
            Phase::Verifying => self.plan.download,
            Phase::Unpacking => self.plan.unpacking,
            Phase::Finalizing => 90,
            Phase::Copying => 95,
        };
        if phase != Phase::Downloading {
            self.stop_progress_timer(lp);
        }
        log::debug!("Combined progress {percent}%");
        notify::progress(&mut self.last_progress, percent);
    }

    /// Sample the download progress every second until [`report`](Self::report) moves
    /// past the download phase. `get` finds this object in the loop's data.
    pub fn start_progress_timer<D: 'static>(
        &mut self,
        lp: &mut EventLoop<D>,
        get: fn(&mut D) -> &mut UrlDownloads,
    ) -> Result<()> {
        let id = lp.add_timer_in(
            Clock::Monotonic,
            PROGRESS_INTERVAL,
            move |lp, data, _, _| {
                get(data).report(lp, Phase::Downloading);
                Ok(TimerAction::ToDuration(PROGRESS_INTERVAL))
            },
        )?;
        lp.set_description(id, "import-progress");
        self.timer = Some(id);
        Ok(())
    }

    fn stop_progress_timer<D: 'static>(&mut self, lp: &mut EventLoop<D>) {
        if let Some(id) = self.timer.take() {
            lp.remove(id);
        }
    }

    /// The pull is over: stop the jobs and the timer.
    pub fn shut_down<D: JobHost>(&mut self, lp: &mut EventLoop<D>, glue: &mut CurlGlue) {
        self.cancel_all(lp, glue);
        self.stop_progress_timer(lp);
    }
}

/// `gpg --verify` of `SHA256SUMS` (blocks; run it in a task).
pub fn verify_signature_task(inputs: (Vec<u8>, Vec<u8>), cancel: &AtomicBool) -> Result<()> {
    let (sums, signature) = inputs;
    verify::verify_signature(&sums, &signature, Some(cancel))
}

/// The test seam [`test_seams::hold`] for a task at `phase`: returns ECANCELED once the
/// task was cancelled there, `Ok` when no hold was asked for.
pub fn test_hold(phase: &str, cancel: &AtomicBool) -> Result<()> {
    if test_seams::hold(phase, cancel) {
        return Err(Error::new(libc::ECANCELED));
    }
    Ok(())
}

/// An importer of a URL (pull-tar, pull-raw): its downloads run together, and the steps
/// after them one at a time as tasks. Implementing this makes it a [`JobOwner`].
pub trait StepRunner: Sized + 'static {
    /// Where the running step's task is kept (dropping it cancels and joins the task).
    fn task_slot(&mut self) -> &mut Option<TaskHandle>;
    /// End the pull with this (already logged) error.
    fn fail(&mut self, lp: &mut EventLoop<Self>, e: Error);
    /// The curl glue and the importer's downloads, borrowed together.
    fn glue_and_downloads(&mut self) -> (&mut CurlGlue, &mut UrlDownloads);
    /// The importer's downloads.
    fn downloads(&mut self) -> &mut UrlDownloads {
        self.glue_and_downloads().1
    }
    /// Whether the pull is still in its download step (a job that completes later, while
    /// the importer is finishing, is ignored).
    fn downloading(&self) -> bool;
    /// Every download completed successfully.
    fn downloaded(&mut self, lp: &mut EventLoop<Self>);
}

impl<T: StepRunner> JobOwner for T {
    type Key = UrlJob;

    fn glue_and_jobs(&mut self) -> (&mut CurlGlue, &mut JobSet<UrlJob>) {
        let (glue, downloads) = self.glue_and_downloads();
        (glue, &mut downloads.jobs)
    }

    fn on_job_done(&mut self, lp: &mut EventLoop<Self>, key: UrlJob) {
        if !self.downloading() {
            return;
        }
        match self.downloads().on_job_complete(key) {
            None => {}
            Some(Err(e)) => self.fail(lp, e),
            Some(Ok(())) => self.downloaded(lp),
        }
    }
}

/// Every download is done (spec §5.3 step 4, §5.4 step 3): a skipped download (ETag match
/// or 304) continues with `skipped` unverified, as in the C tool; a fresh one has its
/// checksum checked here (cheap) and its signature in a task, then continues with
/// `verified`.
pub fn verify_download<D: StepRunner>(
    importer: &mut D,
    lp: &mut EventLoop<D>,
    skipped: fn(&mut D, &mut EventLoop<D>),
    verified: fn(&mut D, &mut EventLoop<D>),
) {
    let downloads = importer.downloads();
    if downloads.skipped() {
        return skipped(importer, lp);
    }
    downloads.report(lp, Phase::Verifying);
    if let Err(e) = downloads.verify_checksum() {
        return importer.fail(lp, e);
    }
    match downloads.signature_inputs() {
        None => verified(importer, lp),
        Some(inputs) => run_step(
            importer,
            lp,
            "import-gpg",
            move |cancel| verify_signature_task(inputs, cancel),
            move |me, lp, ()| verified(me, lp),
        ),
    }
}

/// Run `work` as the importer's current task; with its result, `next` continues the pull
/// on the loop thread, and an error ends the pull.
pub fn run_step<D, T, W>(
    importer: &mut D,
    lp: &mut EventLoop<D>,
    name: &str,
    work: W,
    next: impl FnOnce(&mut D, &mut EventLoop<D>, T) + 'static,
) where
    D: StepRunner,
    T: Send + 'static,
    W: FnOnce(&AtomicBool) -> Result<T> + Send + 'static,
{
    let spawned = lp.spawn_task(name, work, move |lp, importer: &mut D, result| {
        importer.task_slot().take();
        match result {
            Ok(value) => next(importer, lp, value),
            Err(e) => importer.fail(lp, e),
        }
    });
    match spawned {
        Ok(handle) => *importer.task_slot() = Some(handle),
        Err(e) => {
            let e = log_error_errno!(e.clone(), "Failed to start {} thread: {}", name, e);
            importer.fail(lp, e);
        }
    }
}

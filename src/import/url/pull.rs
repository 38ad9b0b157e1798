//! [`UrlImport`]: the importer pull-tar and pull-raw both are, apart from their
//! [`Flavor`]. It starts the downloads, names the cache entry after the response's ETag,
//! verifies a fresh download (or goes straight to the local image when the cache had
//! it), and reports progress by [`Stage`]; the flavor takes over from there.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::downloads::{self, ProgressPlan, Stage, UrlDownloads, UrlJob};
use super::{Direct, PullOptions, UrlRequest};
use crate::curl_glue::CurlGlue;
use crate::event::{Clock, EventLoop, TimerAction};
use crate::import::job::{JobOptions, JobOwner, JobSet, SpoolTo};
use crate::import::store::{
    self, cache_path, find_old_etags, CacheKind, Claim, Partial, PartialMode, TempPath,
};
use crate::import::{Importer, Lifecycle};
use crate::util::error::{Error, Result};
use crate::util::format::format_bytes;
use crate::util::test_seams::{self, Hold};

/// The test setting `hold` for a task at `at`: returns ECANCELED once the task was
/// cancelled there, `Ok` when it was not to be held there.
pub fn test_hold(hold: Option<Hold>, at: Hold, cancel: &AtomicBool) -> Result<()> {
    if test_seams::hold_at(hold, at, cancel) {
        return Err(Error::new(libc::ECANCELED));
    }
    Ok(())
}

/// How often a pull waiting for another process's download of its URL looks again.
const CLAIM_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// What makes pull-tar and pull-raw different; the rest of their pull is [`UrlImport`]'s.
pub trait Flavor: Default + Sized + 'static {
    /// The kind of cache entry the download becomes.
    const CACHE: CacheKind;
    /// What each stage is worth in the progress.
    const PLAN: ProgressPlan;
    /// The image's file name without the suffixes of this kind of image (names the side
    /// files).
    fn strip_suffixes(name: &str) -> String;
    /// The image job's options, for a download into `temp` (a reserved name the importer
    /// removes unless it is kept; nothing exists there yet), as the request's options say
    /// (raw's `--size-max=`, tar's `--btrfs-subvol=`).
    fn image_job(&mut self, temp: &Path, req: &UrlRequest) -> Result<JobOptions>;
    /// The image job's options for `--direct`: written in place, no cache (raw only; the
    /// command line refuses it for the others).
    fn direct_job(&mut self, _direct: &Direct, _options: &PullOptions) -> Result<JobOptions> {
        Err(Error::new(libc::EOPNOTSUPP))
    }
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
    pub(super) downloads: UrlDownloads,
    /// The flavor's own state.
    pub(super) flavor: F,
    /// The downloaded image, until it is moved into the cache.
    pub(super) temp: Option<TempPath>,
    /// The URL's partial download (`.#url-<url>.partial`), ours from the claim until the
    /// cache entry is made (or the pull ends): a second pull of the URL waits for it.
    partial: Option<Partial>,
    /// We said we wait for another process's download of the URL.
    waiting: bool,
    glue: CurlGlue,
    pub(super) req: UrlRequest,
    /// The cache entry, once the image response is known.
    pub(super) final_path: Option<PathBuf>,
    stage: Stage,
}

impl<F: Flavor> UrlImport<F> {
    pub fn new(req: UrlRequest) -> Result<Self> {
        Ok(UrlImport {
            lifecycle: Lifecycle::with_dialect(req.dialect),
            downloads: UrlDownloads::new(&req, F::PLAN, F::strip_suffixes),
            flavor: F::default(),
            temp: None,
            partial: None,
            waiting: false,
            glue: CurlGlue::new(req.curl.clone())?,
            req,
            final_path: None,
            stage: Stage::Downloading,
        })
    }

    /// Move on to `stage` and report its progress; the sampling of the download progress
    /// stops with the download stage.
    pub(super) fn enter(&mut self, lp: &mut EventLoop<Self>, stage: Stage) {
        self.stage = stage;
        if stage != Stage::Downloading {
            self.lifecycle.stop_progress_timer(lp);
        }
        if stage == Stage::Copying {
            // The cache entry is there: a pull waiting for the URL may use it now.
            self.partial = None;
        }
        self.report_progress();
    }

    /// The pull is done: with `--sync=yes` flush the image root's file system first (a
    /// task; the cache entry, the local image and its side files are all there), so that
    /// what the pull made is on disk when it reports success.
    pub(super) fn complete(&mut self, lp: &mut EventLoop<Self>) {
        if !self.req.options.sync {
            return self.finish(lp, Ok(()));
        }
        let root = self.req.image_root.clone();
        self.run_step(
            lp,
            "import-sync",
            move |_| store::sync_file_system(&root),
            |me, lp, ()| me.finish(lp, Ok(())),
        );
    }

    /// Every download is done (spec §5.3 step 4, §5.4 step 3): name the cache entry after
    /// the response's ETag. A skipped download (ETag match or 304) goes on to the local
    /// image unverified, as in the C tool; a fresh one has its checksum checked here
    /// (cheap) and its signature in a task, then continues with the flavor.
    fn downloaded(&mut self, lp: &mut EventLoop<Self>) {
        let etag = self.downloads.etag();
        if self.req.direct.is_none() {
            self.final_path = Some(cache_path(
                &self.req.image_root,
                F::CACHE,
                &self.req.url,
                etag.as_deref(),
            ));
        }
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
        match downloads::signature_check(&self.downloads, self.req.keyring.clone()) {
            None => F::verified(self, lp),
            Some(Err(e)) => self.finish(lp, Err(e)),
            Some(Ok(check)) => {
                self.run_step(lp, "import-gpg", check, |me, lp, ()| F::verified(me, lp))
            }
        }
    }
}

impl<F: Flavor> UrlImport<F> {
    /// Take the URL's partial download and begin the downloads, or wait for the process
    /// that holds it (claiming it again every [`CLAIM_INTERVAL`]): once that one is done,
    /// its cache entry is ours to use (or its partial ours to resume, if it died).
    fn claim_partial(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let path = store::url_partial_path(&self.req.image_root, &self.req.url);
        match Partial::claim(&path)? {
            Claim::Got(partial) if partial.mode() == PartialMode::Write => {
                let spool = SpoolTo::found(partial.file()?);
                self.partial = Some(partial);
                self.begin_downloads(lp, spool)
            }
            _ => {
                if !self.waiting {
                    self.waiting = true;
                    log::info!("Waiting for another process downloading {}.", self.req.url);
                }
                lp.add_timer_in(
                    Clock::Monotonic,
                    CLAIM_INTERVAL,
                    |lp, me: &mut Self, _, _| {
                        if !me.lifecycle.is_finished() {
                            if let Err(e) = me.claim_partial(lp) {
                                me.finish(lp, Err(e));
                            }
                        }
                        Ok(TimerAction::Drop)
                    },
                )?;
                Ok(())
            }
        }
    }

    /// Begin the image download (resumed after what `spool` holds, if anything) and its
    /// companions.
    fn begin_downloads(&mut self, lp: &mut EventLoop<Self>, spool: SpoolTo) -> Result<()> {
        let (root, url) = (&self.req.image_root, &self.req.url);
        let old_etags = find_old_etags(root, F::CACHE, url)?;
        // Reserved before anything can create it: the image job makes it.
        let temp = TempPath::next_to(&cache_path(root, F::CACHE, url, None));
        let path = temp.path().to_path_buf();
        self.temp = Some(temp);
        let mut options = self.flavor.image_job(&path, &self.req)?;
        options.old_etags = old_etags;
        if spool.have > 0 {
            log::info!(
                "Resuming download of {url} after the {} on disk.",
                format_bytes(spool.have)
            );
        }
        options.spool = Some(spool);
        self.downloads.begin(lp, &mut self.glue, options)
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
        match self.downloads.on_job_complete(lp, &mut self.glue, key) {
            None => {}
            Some(Err(e)) => self.finish(lp, Err(e)),
            Some(Ok(())) => self.downloaded(lp),
        }
    }
}

impl<F: Flavor> Importer for UrlImport<F> {
    fn image_root(&self) -> &std::path::Path {
        &self.req.image_root
    }

    fn local_name(&self) -> Option<&str> {
        self.req.local.as_deref()
    }

    fn start(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        if let Some(direct) = &self.req.direct {
            let options = self.flavor.direct_job(direct, &self.req.options)?;
            self.downloads.begin(lp, &mut self.glue, options)?;
            return self.lifecycle.start_progress_timer(lp);
        }
        self.claim_partial(lp)?;
        self.lifecycle.start_progress_timer(lp)
    }

    fn lifecycle(&mut self) -> &mut Lifecycle {
        &mut self.lifecycle
    }

    fn report_progress(&mut self) {
        let percent = self.downloads.percent(self.stage);
        let bytes = self.downloads.jobs.bytes();
        self.lifecycle
            .report_details(percent, Some(bytes), Vec::new());
    }
}

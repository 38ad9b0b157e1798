//! pull-tar: download a tarball, unpack it into the download cache, and make the local
//! image from it (spec §5.3).
//!
//! The flow, one step at a time:
//! 1. **Downloading**: the image job streams the decompressed tarball into the unpacker on
//!    its worker thread, into a temporary subvolume (btrfs) or directory created at the
//!    first body byte; `SHA256SUMS` and `SHA256SUMS.gpg` download at the same time.
//! 2. **Verifying** (fresh downloads only): the checksum on the loop, gpg in a task.
//! 3. **Finalizing**: the tree is made read-only and moved into the cache as
//!    `<root>/.tar-<url>[.<etag>]`, replacing a stale entry of the same name (Q10).
//! 4. **Copying**: `<root>/<local>` becomes a writable snapshot (btrfs) or copy of it.
//!
//! Every failure, SIGINT and SIGTERM leave no temporary tree behind: the temporary name is
//! reserved (a [`TempPath`]) before the download begins, and the importer's fields drop
//! the jobs (whose workers are joined) and tasks before that path.
//!
//! Deviations from the C tool: the unpacker replaces the `tar` child, and any extraction
//! error fails the pull (Q6); the temporary tree is named after the cache entry without
//! its ETag (the name is reserved before the response is known); on file systems without
//! subvolumes the local image is a copy instead of a failure ("Is a directory"); with
//! `--force` an existing image is replaced only once the new one is complete.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode as FileMode;

use super::common::{self, cache_path, find_old_etags, CacheKind, TempPath};
use super::job::{JobOptions, Sink, StreamContext};
use super::unpack::{self, Mode};
use super::url_pull::{run_step, verify_download, Phase, ProgressPlan, StepRunner, UrlDownloads};
use super::{operation_finished, Importer};
use crate::cli::{self, Settings, UrlRequest};
use crate::curl_glue::CurlGlue;
use crate::event::{EventLoop, TaskHandle};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::{btrfs, fs};

/// Where the pull is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Downloading,
    Verifying,
    Finalizing,
    Copying,
    Finished,
}

/// One pull-tar run.
pub struct TarImport {
    // Field order is drop order: jobs and the task first (their threads are joined),
    // then the temporary tree they may have created, then the glue.
    downloads: UrlDownloads,
    task: Option<TaskHandle>,
    /// The tree being unpacked, until it is moved into the cache.
    temp: Option<TempPath>,
    glue: CurlGlue,
    image_root: PathBuf,
    url: String,
    local: Option<String>,
    force: bool,
    /// The cache entry, once the image response is known.
    final_path: Option<PathBuf>,
    step: Step,
}

impl TarImport {
    pub fn new(settings: &Settings, req: UrlRequest) -> Result<Self> {
        Ok(TarImport {
            downloads: UrlDownloads::new(&req.url, settings.verify, ProgressPlan::TAR),
            task: None,
            temp: None,
            glue: CurlGlue::new(settings.curl.clone())?,
            image_root: settings.image_root.clone(),
            url: req.url,
            local: req.local,
            force: settings.force,
            final_path: None,
            step: Step::Downloading,
        })
    }

    /// The download was skipped: the cache entry named by the response's ETag is the image.
    /// As in the C tool, the checksum files were fetched but are not checked. The unused
    /// temporary tree goes.
    fn reuse_cached(&mut self, lp: &mut EventLoop<Self>) {
        self.temp = None;
        self.copy(lp)
    }

    /// Make the verified tree read-only and move it into the cache.
    fn finalize(&mut self, lp: &mut EventLoop<Self>) {
        self.step = Step::Finalizing;
        self.downloads.report(lp, Phase::Finalizing);
        let (Some(temp), Some(final_path)) = (&self.temp, &self.final_path) else {
            return self.finish(lp, Err(Error::new(libc::EINVAL)));
        };
        let (temp, final_path) = (temp.path().to_path_buf(), final_path.clone());
        // A task: replacing a stale entry removes its tree.
        run_step(
            self,
            lp,
            "import-finalize",
            move |_| install_into_cache(&temp, &final_path),
            |me, lp, ()| {
                if let Some(t) = me.temp.take() {
                    t.keep();
                }
                me.copy(lp)
            },
        );
    }

    /// Make the local image, if one was asked for.
    fn copy(&mut self, lp: &mut EventLoop<Self>) {
        self.step = Step::Copying;
        self.downloads.report(lp, Phase::Copying);
        let (Some(local), Some(final_path)) = (self.local.clone(), self.final_path.clone()) else {
            return self.finish(lp, Ok(()));
        };
        let (root, force) = (self.image_root.clone(), self.force);
        run_step(
            self,
            lp,
            "import-copy",
            move |cancel| common::make_local_copy(&final_path, &root, &local, force, Some(cancel)),
            |me, lp, ()| me.finish(lp, Ok(())),
        );
    }

    /// End the pull once: stop what still runs and report the result.
    fn finish(&mut self, lp: &mut EventLoop<Self>, result: Result<()>) {
        if self.step == Step::Finished {
            return;
        }
        self.step = Step::Finished;
        self.downloads.shut_down(lp, &mut self.glue);
        operation_finished(lp, &result);
    }
}

/// Drop the tree's write permission and move it to its cache name, atomically replacing
/// a stale entry of the same name (Q10: one without an ETag).
fn install_into_cache(temp: &Path, final_path: &Path) -> Result<()> {
    fs::make_read_only(temp)?;
    common::install_replacing(temp, final_path)
        .map_err(|e| log_error_errno!(e.clone(), "Failed to rename to final image name: {}", e))
}

/// The image job's stream consumer: create the temporary tree and unpack the body into
/// it. Runs on the job's worker thread.
fn unpack_into(temp: &Path, ctx: &StreamContext, body: &mut dyn Read) -> Result<()> {
    // As in the C tool a failure here is not reported: creating the tree reports it.
    let _ = fs::mkdir_parents(temp, 0o700);
    let tree = create_tree(temp)?;
    let mut options = unpack::Options::new(Mode::Plain);
    options.cancel = Some(ctx.cancel.clone());
    unpack::unpack(tree.as_fd(), body, &options)?;
    Ok(())
}

/// A new subvolume at `path`, or a directory (mode 0755) where the file system has no
/// subvolumes; returns it opened.
fn create_tree(path: &Path) -> Result<OwnedFd> {
    let (parent, name) = fs::split_parent(path)?;
    let dir = fs::open_dir(parent).map_err(|e| {
        log_error_errno!(
            e.clone(),
            "Failed to create directory {}: {}",
            path.display(),
            e
        )
    })?;
    match btrfs::subvol_make(dir.as_fd(), name) {
        Ok(()) => {}
        Err(e) if e.errno() == libc::ENOTTY => {
            nix::sys::stat::mkdirat(dir.as_fd(), name, FileMode::from_bits_truncate(0o755))
                .map_err(|e| {
                    let e = Error::from(e);
                    log_error_errno!(
                        e.clone(),
                        "Failed to create directory {}: {}",
                        path.display(),
                        e
                    )
                })?;
        }
        Err(e) => {
            return Err(log_error_errno!(
                e.clone(),
                "Failed to create subvolume {}: {}",
                path.display(),
                e
            ))
        }
    }
    fs::open_dir_at(dir.as_fd(), name)
        .map_err(|e| log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e))
}

impl StepRunner for TarImport {
    fn task_slot(&mut self) -> &mut Option<TaskHandle> {
        &mut self.task
    }
    fn fail(&mut self, lp: &mut EventLoop<Self>, e: Error) {
        self.finish(lp, Err(e));
    }
    fn glue_and_downloads(&mut self) -> (&mut CurlGlue, &mut UrlDownloads) {
        (&mut self.glue, &mut self.downloads)
    }
    fn downloading(&self) -> bool {
        self.step == Step::Downloading
    }
    /// Every download is done: name the cache entry after the response's ETag, then verify.
    fn downloaded(&mut self, lp: &mut EventLoop<Self>) {
        let etag = self.downloads.etag();
        self.final_path = Some(cache_path(
            &self.image_root,
            CacheKind::Tar,
            &self.url,
            etag.as_deref(),
        ));
        self.step = Step::Verifying;
        verify_download(self, lp, Self::reuse_cached, Self::finalize);
    }
}

impl Importer for TarImport {
    fn start(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let old_etags = find_old_etags(&self.image_root, CacheKind::Tar, &self.url)?;
        // Reserved before anything can create it: the job's worker makes the tree.
        let temp = TempPath::next_to(&cache_path(
            &self.image_root,
            CacheKind::Tar,
            &self.url,
            None,
        ));
        let temp_path = temp.path().to_path_buf();
        self.temp = Some(temp);
        let mut options = JobOptions::new(Sink::Stream(Box::new(move |ctx, body| {
            unpack_into(&temp_path, ctx, body)
        })));
        options.old_etags = old_etags;
        self.downloads.begin(lp, &mut self.glue, options)?;
        self.downloads
            .start_progress_timer(lp, |me: &mut TarImport| &mut me.downloads)
    }
}

/// Run the verb; returns the exit status.
pub fn pull(settings: &Settings, req: UrlRequest) -> i32 {
    match TarImport::new(settings, req) {
        Ok(importer) => cli::run_importer(importer),
        Err(e) => {
            log::error!("Failed to allocate importer: {e}");
            1
        }
    }
}

//! pull-raw: download a raw or qcow2 disk image into the download cache and make the
//! local image from it (spec §5.4, §5.5).
//!
//! The flow, one step at a time:
//! 1. **Downloading**: the image job writes the decompressed image sparsely into a
//!    temporary NOCOW file, which also gets the source URL/ETag xattrs and the server's
//!    mtime; `SHA256SUMS` and `SHA256SUMS.gpg` download at the same time.
//! 2. **Verifying** (fresh downloads only): the checksum on the loop, gpg in a task.
//! 3. **Unpacking**: a qcow2 image is converted to raw, into a second temporary file.
//! 4. **Finalizing**: the file becomes read-only and is renamed to
//!    `<root>/.raw-<url>[.<etag>].raw`.
//! 5. **Copying**: `<root>/<local>.raw` (mode 0664) is made as a reflink, or a copy that
//!    keeps the holes.
//!
//! Every failure, SIGINT and SIGTERM leave no temporary file behind (each is a
//! [`TempPath`] the importer holds from before the file is created).
//!
//! Deviations from the C tool: the download's temporary file is created when the pull
//! starts (the job writes to it) and is named after the cache entry without its ETag;
//! the converted qcow2 image keeps the source xattrs and mtime of the download; the local
//! copy keeps holes on file systems without reflinks, gets mode 0664 whatever the umask,
//! and is moved into place only when complete: with `--force` it then replaces the old
//! image atomically (the C tool deleted it first), without `--force` an image that
//! appeared meanwhile is left alone and the pull fails (the C tool overwrote it).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::common::{cache_path, find_old_etags, install_replacing};
use super::common::{CacheKind, TempPath};
use super::job::{JobOptions, Sink};
use super::qcow2;
use super::url_pull::{
    run_step, test_hold, verify_download, Phase, ProgressPlan, StepRunner, UrlDownloads,
};
use super::{operation_finished, Importer};
use crate::cli::{self, Settings, UrlRequest};
use crate::curl_glue::CurlGlue;
use crate::event::{EventLoop, TaskHandle};
use crate::util::error::{Error, Result};
use crate::util::fs;
use crate::{log_error_errno, log_warning_errno};

/// Mode of the local image: writable by owner and group, as in the C tool.
const LOCAL_IMAGE_MODE: u32 = 0o664;
/// Mode of the downloaded (and converted) file before it is made read-only.
const DOWNLOAD_MODE: u32 = 0o644;

/// Where the pull is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Downloading,
    Verifying,
    Unpacking,
    Finalizing,
    Copying,
    Finished,
}

/// One pull-raw run.
pub struct RawImport {
    // Field order is drop order: jobs and the task first (their threads are joined),
    // then the temporary files they may have created, then the glue.
    downloads: UrlDownloads,
    task: Option<TaskHandle>,
    /// The downloaded image (after a qcow2 conversion: the converted one), until it is
    /// moved into the cache.
    temp: Option<TempPath>,
    /// The qcow2 conversion's output while it is made.
    converted: Option<TempPath>,
    /// The local copy while it is made.
    copy_temp: Option<TempPath>,
    glue: CurlGlue,
    image_root: PathBuf,
    url: String,
    local: Option<String>,
    force: bool,
    /// The cache entry, once the image response is known.
    final_path: Option<PathBuf>,
    step: Step,
}

impl RawImport {
    pub fn new(settings: &Settings, req: UrlRequest) -> Result<Self> {
        Ok(RawImport {
            downloads: UrlDownloads::new(&req.url, settings.verify, ProgressPlan::RAW),
            task: None,
            temp: None,
            converted: None,
            copy_temp: None,
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
    /// temporary file goes.
    fn reuse_cached(&mut self, lp: &mut EventLoop<Self>) {
        self.temp = None;
        self.copy(lp)
    }

    /// Convert a qcow2 image to raw (a task); anything else stays as it is.
    fn unpack(&mut self, lp: &mut EventLoop<Self>) {
        self.step = Step::Unpacking;
        self.downloads.report(lp, Phase::Unpacking);
        let (Some(temp), Some(final_path)) = (&self.temp, &self.final_path) else {
            return self.finish(lp, Err(Error::new(libc::EINVAL)));
        };
        let source = temp.path().to_path_buf();
        let converted = TempPath::next_to(final_path);
        let target = converted.path().to_path_buf();
        self.converted = Some(converted);
        run_step(
            self,
            lp,
            "import-qcow2",
            move |cancel| convert_if_qcow2(&source, &target, cancel),
            |me, lp, converted| {
                if converted {
                    // The download itself is no longer needed (dropping it unlinks it).
                    me.temp = me.converted.take();
                } else {
                    me.converted = None;
                }
                me.finalize(lp)
            },
        );
    }

    /// Make the image read-only and move it into the cache (cheap: a chmod and a rename,
    /// which replaces a stale entry of the same name atomically).
    fn finalize(&mut self, lp: &mut EventLoop<Self>) {
        self.step = Step::Finalizing;
        self.downloads.report(lp, Phase::Finalizing);
        let (Some(temp), Some(final_path)) = (&self.temp, &self.final_path) else {
            return self.finish(lp, Err(Error::new(libc::EINVAL)));
        };
        let moved = fs::make_read_only(temp.path()).and_then(|()| {
            std::fs::rename(temp.path(), final_path).map_err(|e| {
                let e = Error::from(e);
                log_error_errno!(e.clone(), "Failed to move RAW file into place: {}", e)
            })
        });
        if let Err(e) = moved {
            return self.finish(lp, Err(e));
        }
        if let Some(t) = self.temp.take() {
            t.keep();
        }
        self.copy(lp)
    }

    /// Make the local image, if one was asked for (a task).
    fn copy(&mut self, lp: &mut EventLoop<Self>) {
        self.step = Step::Copying;
        self.downloads.report(lp, Phase::Copying);
        let (Some(local), Some(source)) = (self.local.clone(), self.final_path.clone()) else {
            return self.finish(lp, Ok(()));
        };
        let target = self.image_root.join(format!("{local}.raw"));
        let temp = TempPath::next_to(&target);
        let copy = LocalCopy {
            source,
            temp: temp.path().to_path_buf(),
            target,
            local,
            force: self.force,
        };
        self.copy_temp = Some(temp);
        run_step(
            self,
            lp,
            "import-copy",
            move |cancel| copy.run(cancel),
            |me, lp, ()| {
                if let Some(t) = me.copy_temp.take() {
                    t.keep();
                }
                me.finish(lp, Ok(()))
            },
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

/// Create an image file for writing (`O_EXCL`, `mode` subject to the umask) and turn
/// copy-on-write off for it (disk images are rewritten in place; a failure only warns).
fn create_image_file(path: &Path, flags: OFlag, mode: u32) -> Result<OwnedFd> {
    let flags = flags | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let fd = nix::fcntl::open(path, flags, Mode::from_bits_truncate(mode)).map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to create {}: {}", path.display(), e)
    })?;
    set_nocow(&fd, path);
    Ok(fd)
}

/// Turn copy-on-write off (btrfs). A file system without the flag (ext4, xfs, tmpfs) is
/// only worth a debug line, as in later systemd; other failures warn, as in the C tool.
fn set_nocow(fd: &OwnedFd, path: &Path) {
    match fs::chattr_nocow(fd.as_fd()) {
        Ok(()) => {}
        Err(e) if matches!(e.errno(), libc::EOPNOTSUPP | libc::ENOTTY) => {
            log::debug!("Failed to set file attributes on {}: {}", path.display(), e);
        }
        Err(e) => {
            log_warning_errno!(
                e.clone(),
                "Failed to set file attributes on {}: {}",
                path.display(),
                e
            );
        }
    }
}

fn open_read_only(path: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    Ok(nix::fcntl::open(path, flags, Mode::empty())?)
}

/// Spec §5.5: if `source` is a qcow2 image, convert it into the new file `target`.
/// Returns whether it did. Blocks; runs in a task.
fn convert_if_qcow2(source: &Path, target: &Path, cancel: &AtomicBool) -> Result<bool> {
    let detect_failed = |e: Error| {
        log_error_errno!(
            e.clone(),
            "Failed to detect whether this is a QCOW2 image: {}",
            e
        )
    };
    let src = open_read_only(source).map_err(detect_failed)?;
    if !qcow2::qcow2_detect(src.as_fd()).map_err(detect_failed)? {
        return Ok(false);
    }
    let dst = create_image_file(target, OFlag::O_RDWR, DOWNLOAD_MODE)?;
    log::info!("Unpacking QCOW2 file.");
    if let Err(e) = qcow2::qcow2_convert(src.as_fd(), dst.as_fd(), Some(cancel)) {
        // A cancelled conversion is not a failure to report: the user gave up.
        if e.errno() == libc::ECANCELED {
            return Err(e);
        }
        return Err(log_error_errno!(
            e.clone(),
            "Failed to convert qcow2 image: {}",
            e
        ));
    }
    // The converted image is what gets cached: let it carry where it came from, like a
    // downloaded raw image does (the C tool left this out). Best effort.
    let _ = fs::copy_xattrs(src.as_fd(), dst.as_fd());
    let _ = fs::copy_times(src.as_fd(), dst.as_fd());
    test_hold("qcow2", cancel)?;
    Ok(true)
}

/// The local copy of a cached raw image: `<root>/<local>.raw`.
struct LocalCopy {
    source: PathBuf,
    /// Where the copy is written, next to `target`.
    temp: PathBuf,
    target: PathBuf,
    local: String,
    force: bool,
}

impl LocalCopy {
    /// Blocks; runs in a task.
    fn run(&self, cancel: &AtomicBool) -> Result<()> {
        let src = open_read_only(&self.source)
            .map_err(|e| log_error_errno!(e.clone(), "Failed to open vendor image: {}", e))?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let create_failed = |e: Error| {
            log_error_errno!(e.clone(), "Failed to create writable copy of image: {}", e)
        };
        let dst = nix::fcntl::open(
            &self.temp,
            flags,
            Mode::from_bits_truncate(LOCAL_IMAGE_MODE),
        )
        .map_err(|e| create_failed(e.into()))?;
        // The umask must not make the image read-only for the group.
        nix::sys::stat::fchmod(dst.as_fd(), Mode::from_bits_truncate(LOCAL_IMAGE_MODE))
            .map_err(|e| create_failed(e.into()))?;
        set_nocow(&dst, &self.temp);
        fs::copy_file_data(src.as_fd(), dst.as_fd()).map_err(|e| {
            log_error_errno!(e.clone(), "Failed to make writable copy of image: {}", e)
        })?;
        // Best effort, as in the C tool.
        let _ = fs::copy_times(src.as_fd(), dst.as_fd());
        let _ = fs::copy_xattrs(src.as_fd(), dst.as_fd());
        drop(dst);
        test_hold("local-copy", cancel)?;
        if cancel.load(Ordering::Acquire) {
            // The user gave up: do not make a new image appear now.
            return Err(Error::new(libc::ECANCELED));
        }
        let moved = if self.force {
            install_replacing(&self.temp, &self.target)
        } else {
            fs::rename_noreplace(&self.temp, &self.target)
        };
        moved.map_err(|e| {
            log_error_errno!(e.clone(), "Failed to move writable image into place: {}", e)
        })?;
        log::info!("Created new local image '{}'.", self.local);
        Ok(())
    }
}

impl StepRunner for RawImport {
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
            CacheKind::Raw,
            &self.url,
            etag.as_deref(),
        ));
        self.step = Step::Verifying;
        verify_download(self, lp, Self::reuse_cached, Self::unpack);
    }
}

impl Importer for RawImport {
    fn start(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let old_etags = find_old_etags(&self.image_root, CacheKind::Raw, &self.url)?;
        let temp = TempPath::next_to(&cache_path(
            &self.image_root,
            CacheKind::Raw,
            &self.url,
            None,
        ));
        // As in the C tool a failure here is not reported: creating the file reports it.
        let _ = fs::mkdir_parents(temp.path(), 0o700);
        let path = temp.path().to_path_buf();
        self.temp = Some(temp);
        let fd = create_image_file(&path, OFlag::O_RDWR, DOWNLOAD_MODE)?;
        let mut options = JobOptions::new(Sink::File(fd));
        options.old_etags = old_etags;
        self.downloads.begin(lp, &mut self.glue, options)?;
        self.downloads
            .start_progress_timer(lp, |me: &mut RawImport| &mut me.downloads)
    }
}

/// Run the verb; returns the exit status.
pub fn pull(settings: &Settings, req: UrlRequest) -> i32 {
    match RawImport::new(settings, req) {
        Ok(importer) => cli::run_importer(importer),
        Err(e) => {
            log::error!("Failed to allocate importer: {e}");
            1
        }
    }
}

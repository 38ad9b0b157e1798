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

use super::common::{install_replacing, CacheKind, TempPath};
use super::job::{JobOptions, Sink};
use super::qcow2;
use super::url_pull::{test_hold, Flavor, ProgressPlan, Stage, UrlImport};
use super::Importer;
use crate::event::EventLoop;
use crate::util::error::{Error, Result};
use crate::util::fs;
use crate::{log_error_errno, log_warning_errno};

/// Mode of the local image: writable by owner and group, as in the C tool.
const LOCAL_IMAGE_MODE: u32 = 0o664;
/// Mode of the downloaded (and converted) file before it is made read-only.
const DOWNLOAD_MODE: u32 = 0o644;

/// What pull-raw adds to a URL pull: the image is a sparse file, converted from qcow2 if
/// it is one, and copied as a file.
#[derive(Default)]
pub struct Raw {
    /// The qcow2 conversion's output while it is made.
    converted: Option<TempPath>,
    /// The local copy while it is made.
    copy_temp: Option<TempPath>,
}

/// One pull-raw run.
pub type RawImport = UrlImport<Raw>;

impl Flavor for Raw {
    const CACHE: CacheKind = CacheKind::Raw;
    const PLAN: ProgressPlan = ProgressPlan::RAW;

    /// The job writes into a new NOCOW file at `temp`, created now.
    fn image_job(&mut self, temp: &Path) -> Result<JobOptions> {
        // As in the C tool a failure here is not reported: creating the file reports it.
        let _ = fs::mkdir_parents(temp, 0o700);
        let fd = create_image_file(temp, OFlag::O_RDWR, DOWNLOAD_MODE)?;
        Ok(JobOptions::new(Sink::File(fd)))
    }

    /// Convert a qcow2 image to raw (a task); anything else stays as it is.
    fn verified(me: &mut RawImport, lp: &mut EventLoop<RawImport>) {
        me.enter(lp, Stage::Unpacking);
        let (Some(temp), Some(final_path)) = (&me.temp, &me.final_path) else {
            return me.finish(lp, Err(Error::new(libc::EINVAL)));
        };
        let source = temp.path().to_path_buf();
        let converted = TempPath::next_to(final_path);
        let target = converted.path().to_path_buf();
        me.flavor.converted = Some(converted);
        me.run_step(
            lp,
            "import-qcow2",
            move |cancel| convert_if_qcow2(&source, &target, cancel),
            |me, lp, converted| {
                if converted {
                    // The download itself is no longer needed (dropping it unlinks it).
                    me.temp = me.flavor.converted.take();
                } else {
                    me.flavor.converted = None;
                }
                finalize(me, lp)
            },
        );
    }

    /// Make the local image, if one was asked for (a task).
    fn copy(me: &mut RawImport, lp: &mut EventLoop<RawImport>) {
        me.enter(lp, Stage::Copying);
        let (Some(local), Some(source)) = (me.local.clone(), me.final_path.clone()) else {
            return me.finish(lp, Ok(()));
        };
        let target = me.image_root.join(format!("{local}.raw"));
        let temp = TempPath::next_to(&target);
        let copy = LocalCopy {
            source,
            temp: temp.path().to_path_buf(),
            target,
            local,
            force: me.force,
        };
        me.flavor.copy_temp = Some(temp);
        me.run_step(
            lp,
            "import-copy",
            move |cancel| copy.run(cancel),
            |me, lp, ()| {
                if let Some(t) = me.flavor.copy_temp.take() {
                    t.keep();
                }
                me.finish(lp, Ok(()))
            },
        );
    }
}

/// Make the image read-only and move it into the cache (cheap: a chmod and a rename,
/// which replaces a stale entry of the same name atomically).
fn finalize(me: &mut RawImport, lp: &mut EventLoop<RawImport>) {
    me.enter(lp, Stage::Finalizing);
    let (Some(temp), Some(final_path)) = (&me.temp, &me.final_path) else {
        return me.finish(lp, Err(Error::new(libc::EINVAL)));
    };
    let moved = fs::make_read_only(temp.path()).and_then(|()| {
        std::fs::rename(temp.path(), final_path).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to move RAW file into place: {}", e)
        })
    });
    if let Err(e) = moved {
        return me.finish(lp, Err(e));
    }
    if let Some(t) = me.temp.take() {
        t.keep();
    }
    Raw::copy(me, lp)
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

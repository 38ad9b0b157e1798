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
//! Every failure, SIGINT and SIGTERM leave no temporary file behind: each is a
//! [`TempPath`] held, from before the file is created, by the importer (the download) or
//! by the task that writes it (the converted image, the local copy), whose thread the
//! importer joins.
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

use super::downloads::{ProgressPlan, Stage};
use super::pull::{test_hold, Flavor, UrlImport};
use super::qcow2;
use super::side::Side;
use super::side::{self, Fetched, Owner};
use super::{Direct, PullOptions, SideFiles, UrlRequest};
use crate::event::EventLoop;
use crate::import::job::{JobOptions, Sink};
use crate::import::store::{self, CacheKind, LocalImage, TempPath};
use crate::import::Importer;
use crate::log_error_errno;
use crate::util::dialect::Dialect;
use crate::util::error::{Error, Result};
use crate::util::test_seams::Hold;
use crate::util::{fs, names};

/// Mode of the downloaded (and converted) file before it is made read-only.
const DOWNLOAD_MODE: u32 = 0o644;
/// Mode of a file `--direct` creates, before the umask (as the C tool's).
const DIRECT_MODE: u32 = 0o664;

/// What pull-raw adds to a URL pull: the image is a sparse file, converted from qcow2 if
/// it is one, and copied as a file.
#[derive(Default)]
pub struct Raw {
    /// `--direct`: the target, open, from the start of the pull to its end (the job
    /// writes through its own copy of the descriptor).
    direct: Option<OwnedFd>,
}

/// One pull-raw run.
pub type RawImport = UrlImport<Raw>;

impl Flavor for Raw {
    const CACHE: CacheKind = CacheKind::Raw;
    const PLAN: ProgressPlan = ProgressPlan::RAW;

    fn strip_suffixes(name: &str) -> String {
        names::raw_strip_suffixes(name)
    }

    /// The job writes into a new NOCOW file at `temp`, created now.
    fn image_job(&mut self, temp: &Path, req: &UrlRequest) -> Result<JobOptions> {
        // As in the C tool a failure here is not reported: creating the file reports it.
        let _ = fs::mkdir_parents(temp, 0o700);
        let fd = store::create_image_file(temp, OFlag::O_RDWR, DOWNLOAD_MODE)?;
        Ok(with_size_max(JobOptions::new(Sink::File(fd)), &req.options))
    }

    /// `--direct`: the job writes into the file or block device named (or stdout), at
    /// `--offset=` if given. The file is kept open here too, to be synced at the end.
    fn direct_job(&mut self, direct: &Direct, options: &PullOptions) -> Result<JobOptions> {
        let fd = match &direct.path {
            Some(path) => open_direct(path, direct.offset.is_some())?,
            None => std::io::stdout().as_fd().try_clone_to_owned()?,
        };
        let regular = is_regular(&fd);
        self.direct = Some(fd.try_clone()?);
        // Anything but a whole regular file is written in place: a block device keeps its
        // size, and its old blocks are not holes.
        let sink = match direct.offset {
            None if regular || direct.path.is_none() => Sink::File(fd),
            offset => Sink::FileAt(fd, offset.unwrap_or(0)),
        };
        Ok(with_size_max(JobOptions::new(sink), options))
    }

    /// Convert a qcow2 image to raw (a task); anything else stays as it is.
    fn verified(me: &mut RawImport, lp: &mut EventLoop<RawImport>) {
        if me.req.direct.is_some() {
            return finish_direct(me, lp);
        }
        me.enter(lp, Stage::Unpacking);
        if !me.req.options.convert_qcow2 {
            return finalize(me, lp);
        }
        let (Some(temp), Some(final_path)) = (&me.temp, &me.final_path) else {
            return me.finish(lp, Err(Error::new(libc::EINVAL)));
        };
        let (source, final_path) = (temp.path().to_path_buf(), final_path.clone());
        let hold = me.req.hold;
        me.run_step(
            lp,
            "import-qcow2",
            move |cancel| convert_if_qcow2(&source, &final_path, hold, cancel),
            |me, lp, converted| {
                if let Some(converted) = converted {
                    // The download itself is no longer needed (dropping it unlinks it).
                    me.temp = Some(converted);
                }
                finalize(me, lp)
            },
        );
    }

    /// Make the local image `<root>/<local>.raw`, if one was asked for (a task).
    fn copy(me: &mut RawImport, lp: &mut EventLoop<RawImport>) {
        me.enter(lp, Stage::Copying);
        let (Some(local), Some(source)) = (me.req.local.clone(), me.final_path.clone()) else {
            return me.complete(lp);
        };
        let (root, force, hold) = (me.req.image_root.clone(), me.req.force, me.req.hold);
        let options = me.req.options;
        let exact_mode = me.req.dialect == Dialect::V219;
        me.run_step(
            lp,
            "import-copy",
            move |cancel| {
                let image = LocalImage::new(&root, &format!("{local}.raw"), &local, force);
                store::copy_file_with(&source, &image, exact_mode, cancel)?;
                if options.read_only {
                    fs::make_read_only(image.path())?;
                }
                test_hold(hold, Hold::LocalCopy, cancel)?;
                if cancel.load(Ordering::Acquire) {
                    // The user gave up: do not make a new image appear now.
                    return Err(Error::new(libc::ECANCELED));
                }
                image.install().map_err(|e| {
                    log_error_errno!(e.clone(), "Failed to move writable image into place: {}", e)
                })?;
                install_sides(
                    &options.side_files,
                    &side_base(&source),
                    None,
                    &root,
                    &local,
                    force,
                );
                Ok(())
            },
            |me, lp, ()| me.complete(lp),
        );
    }
}

/// The job's options with raw's `--size-max=` as the cap on the uncompressed image.
fn with_size_max(mut job: JobOptions, options: &PullOptions) -> JobOptions {
    if let Some(max) = options.size_max {
        job.uncompressed_max = max;
    }
    job
}

/// Open the `--direct` target: created (mode 0664 before the umask) and truncated,
/// NOCOW; at an offset it must exist and is only opened.
fn open_direct(path: &Path, at_offset: bool) -> Result<OwnedFd> {
    let mut flags = OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    if !at_offset {
        flags |= OFlag::O_CREAT | OFlag::O_TRUNC;
        // As in the C tool a failure here is not reported: opening the file reports it.
        let _ = fs::mkdir_parents(path, 0o700);
    }
    let fd = nix::fcntl::open(path, flags, Mode::from_bits_truncate(DIRECT_MODE)).map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(
            e.clone(),
            "Failed to open destination '{}': {}",
            path.display(),
            e
        )
    })?;
    if !at_offset && is_regular(&fd) {
        store::set_nocow(&fd, path);
    }
    Ok(fd)
}

fn is_regular(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

/// `--direct`: the verified image is where it was written. Make it read-only if asked
/// (a whole file only, not a region at an offset), sync it with `--sync=yes`, done. No
/// qcow2 conversion, no cache, no side files (as the C tool).
fn finish_direct(me: &mut RawImport, lp: &mut EventLoop<RawImport>) {
    me.enter(lp, Stage::Finalizing);
    let (Some(direct), Some(fd)) = (me.req.direct.clone(), me.flavor.direct.take()) else {
        return me.finish(lp, Err(Error::new(libc::EINVAL)));
    };
    let (read_only, sync) = (me.req.options.read_only, me.req.options.sync);
    me.run_step(
        lp,
        "import-finalize",
        move |_| {
            if read_only && direct.offset.is_none() && direct.path.is_some() {
                fs::make_very_read_only_fd(fd.as_fd())?;
            }
            if !sync {
                return Ok(());
            }
            // A pipe (stdout) cannot be synced; nothing to do then.
            match nix::unistd::fsync(fd.as_fd()) {
                Err(e) if e != nix::errno::Errno::EINVAL => {
                    let e = Error::from(e);
                    Err(log_error_errno!(
                        e.clone(),
                        "Failed to synchronize image: {}",
                        e
                    ))
                }
                _ => Ok(()),
            }
        },
        |me, lp, ()| me.finish(lp, Ok(())),
    );
}

/// What the side files of the cache entry `entry` (`.raw-<url>[.<etag>].raw`) are named
/// after: the entry without its `.raw`.
fn side_base(entry: &Path) -> PathBuf {
    let s = entry.as_os_str().as_encoded_bytes();
    let s = s.strip_suffix(b".raw").unwrap_or(s);
    PathBuf::from(String::from_utf8_lossy(s).into_owned())
}

/// Install the side files `wanted` next to `<root>/<local>.raw`: from `fetched` when
/// given (`--keep-download=no`), else from the copies next to the cache entry `entry`.
fn install_sides(
    wanted: &SideFiles,
    entry: &Path,
    fetched: Option<&[Fetched]>,
    root: &Path,
    local: &str,
    force: bool,
) {
    let fetched_content = |side| fetched.map(|f| f.iter().find(|f| f.side == side));
    for side in Side::ALL {
        let wanted = match side {
            Side::Settings => wanted.settings,
            Side::RootHash => wanted.roothash,
            Side::RootHashSignature => wanted.roothash_signature,
            Side::Verity => wanted.verity,
        };
        match (wanted, fetched_content(side)) {
            (false, _) | (true, Some(None)) => {}
            (true, Some(Some(content))) => {
                side::install(Owner::Raw, side, entry, Some(content), root, local, force)
            }
            (true, None) => side::install(Owner::Raw, side, entry, None, root, local, force),
        }
    }
}

/// Make the image read-only and move it into the cache with the side files next to it
/// (cheap: a chmod and a rename, which replaces a stale entry of the same name
/// atomically); with `--keep-download=no` move it to the local image instead.
fn finalize(me: &mut RawImport, lp: &mut EventLoop<RawImport>) {
    me.enter(lp, Stage::Finalizing);
    let (Some(temp), Some(final_path)) = (&me.temp, &me.final_path) else {
        return me.finish(lp, Err(Error::new(libc::EINVAL)));
    };
    let options = me.req.options;
    let sides = me.downloads.side_files();
    if let (false, Some(local)) = (options.keep_download, me.req.local.clone()) {
        let (root, force) = (&me.req.image_root, me.req.force);
        let target = root.join(format!("{local}.raw"));
        let moved = (|| {
            if options.read_only {
                fs::make_read_only(temp.path())?;
            }
            if force {
                store::install_replacing(temp.path(), &target)
            } else {
                fs::rename_noreplace(temp.path(), &target)
            }
        })()
        .map_err(|e| {
            log_error_errno!(
                e.clone(),
                "Failed to move local image into place '{}': {}",
                target.display(),
                e
            )
        });
        if let Err(e) = moved {
            return me.finish(lp, Err(e));
        }
        log::info!("Created new local image '{local}'.");
        if let Some(t) = me.temp.take() {
            t.keep();
        }
        install_sides(
            &options.side_files,
            final_path,
            Some(&sides),
            root,
            &local,
            force,
        );
        return me.complete(lp);
    }
    let read_only = options.keep_download;
    let moved = (|| {
        if read_only {
            fs::make_read_only(temp.path())?;
        }
        std::fs::rename(temp.path(), final_path).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to move RAW file into place: {}", e)
        })?;
        side::cache(&side_base(final_path), &sides, read_only)
    })();
    if let Err(e) = moved {
        return me.finish(lp, Err(e));
    }
    if let Some(t) = me.temp.take() {
        t.keep();
    }
    Raw::copy(me, lp)
}

/// Spec §5.5: if `source` is a qcow2 image, convert it into a new temporary file next to
/// `final_path`, and return that. Blocks; runs in a task.
fn convert_if_qcow2(
    source: &Path,
    final_path: &Path,
    hold: Option<Hold>,
    cancel: &AtomicBool,
) -> Result<Option<TempPath>> {
    let detect_failed = |e: Error| {
        log_error_errno!(
            e.clone(),
            "Failed to detect whether this is a QCOW2 image: {}",
            e
        )
    };
    let src = store::open_read_only(source).map_err(detect_failed)?;
    if !qcow2::qcow2_detect(src.as_fd()).map_err(detect_failed)? {
        return Ok(None);
    }
    let target = TempPath::next_to(final_path);
    let dst = store::create_image_file(target.path(), OFlag::O_RDWR, DOWNLOAD_MODE)?;
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
    test_hold(hold, Hold::Qcow2, cancel)?;
    Ok(Some(target))
}

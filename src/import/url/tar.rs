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
//! Where the file system can neither snapshot the cache entry nor share its extents
//! (ext4, tmpfs, xfs without reflink), a copy would read and write every file a second
//! time after the download. There the image job unpacks the stream into the local
//! image's temporary tree as well, in the same pass, on a second thread
//! ([`unpack::unpack_trees`]); step 4 then only gives its top the attributes a copy of
//! the finished cache entry would have and moves it into place. With
//! `--keep-download=no` there is one tree, moved into place as the local image.
//!
//! Every failure, SIGINT and SIGTERM leave no temporary tree behind: the temporary name is
//! reserved (a [`TempPath`](crate::import::store::TempPath)) before the download begins, and the importer's fields drop
//! the jobs (whose workers are joined) and tasks before that path.
//!
//! Deviations from the C tool: the unpacker replaces the `tar` child, and any extraction
//! error fails the pull (Q6); the temporary tree is named after the cache entry without
//! its ETag (the name is reserved before the response is known); on file systems without
//! subvolumes the local image is a copy instead of a failure ("Is a directory"); with
//! `--force` an existing image is replaced only once the new one is complete.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::downloads::{ProgressPlan, Stage};
use super::pull::{Flavor, UrlImport};
use super::side::Side;
use super::side::{self, Owner};
use super::{Direct, PullOptions, UrlRequest};
use crate::event::EventLoop;
use crate::import::job::{JobOptions, Sink, StreamContext};
use crate::import::store::{self, CacheKind, LocalImage, TempPath};
use crate::import::unpack::{self, Mode};
use crate::import::Importer;
use crate::log_error_errno;
use crate::util::dialect::Dialect;
use crate::util::error::{Error, Result};
use crate::util::{btrfs, fs, names};

/// What pull-tar adds to a URL pull: the body is unpacked as it arrives, and the tree is
/// installed as the cache entry.
#[derive(Default)]
pub struct Tar {
    /// The local image's temporary tree, reserved when the download begins (with a local
    /// name and the download kept); the image job unpacks into it too where the local
    /// image cannot share the cache entry's data, else it never exists. Taken by
    /// [`Flavor::copy`].
    local_tree: Option<TempPath>,
}

/// One pull-tar run.
pub type TarImport = UrlImport<Tar>;

impl Flavor for Tar {
    const CACHE: CacheKind = CacheKind::Tar;
    const PLAN: ProgressPlan = ProgressPlan::TAR;

    fn strip_suffixes(name: &str) -> String {
        names::tar_strip_suffixes(name).unwrap_or_else(|_| name.to_string())
    }

    /// The job streams the decompressed tarball into the unpacker, which creates the
    /// tree at `temp` when the first body byte arrives (and the local image's tree, if it
    /// is to be unpacked in the same pass).
    fn image_job(&mut self, temp: &Path, req: &UrlRequest) -> Result<JobOptions> {
        let temp = temp.to_path_buf();
        let options = &req.options;
        let tree = (options.btrfs_subvol, options.btrfs_quota);
        self.local_tree = match (&req.local, options.keep_download) {
            (Some(local), true) => Some(TempPath::next_to(&req.image_root.join(local))),
            _ => None,
        };
        let local = self.local_tree.as_ref().map(|t| t.path().to_path_buf());
        Ok(JobOptions::new(Sink::Stream(Box::new(move |ctx, body| {
            unpack_into(&temp, local.as_deref(), tree, ctx, body)
        }))))
    }

    /// `--direct`: the job unpacks into the directory named (removed first with
    /// `--force`; an existing one is unpacked over), no cache.
    fn direct_job(&mut self, direct: &Direct, options: &PullOptions) -> Result<JobOptions> {
        let path = direct
            .path
            .clone()
            .ok_or_else(|| Error::new(libc::EINVAL))?;
        let tree = (options.btrfs_subvol, options.btrfs_quota);
        let force = options.force;
        Ok(JobOptions::new(Sink::Stream(Box::new(move |ctx, body| {
            unpack_direct(&path, tree, force, ctx, body)
        }))))
    }

    /// Make the verified tree read-only and move it into the cache, with the side files
    /// next to it; with `--keep-download=no` move it to the local image instead. With
    /// `--direct` the tree is where it was unpacked: only made read-only if asked.
    fn verified(me: &mut TarImport, lp: &mut EventLoop<TarImport>) {
        me.enter(lp, Stage::Finalizing);
        if let Some(path) = me.req.direct.as_ref().and_then(|d| d.path.clone()) {
            let (read_only, sync) = (me.req.options.read_only, me.req.options.sync);
            return me.run_step(
                lp,
                "import-finalize",
                move |_| {
                    if read_only {
                        fs::make_very_read_only(&path)?;
                    }
                    if sync {
                        store::sync_file_system(&path)?;
                    }
                    Ok(())
                },
                |me, lp, ()| me.finish(lp, Ok(())),
            );
        }
        let (Some(temp), Some(final_path)) = (me.temp.take(), me.final_path.clone()) else {
            return me.finish(lp, Err(Error::new(libc::EINVAL)));
        };
        let options = me.req.options;
        let sides = me.downloads.side_files();
        let very = me.req.dialect == Dialect::V252;
        if let (false, Some(local)) = (options.keep_download, me.req.local.clone()) {
            let (root, force) = (me.req.image_root.clone(), me.req.force);
            return me.run_step(
                lp,
                "import-finalize",
                move |_| {
                    LocalImage::from_temp(temp, &root, &local, force)
                        .install()
                        .map_err(|e| {
                            log_error_errno!(
                                e.clone(),
                                "Failed to install local image '{}': {}",
                                local,
                                e
                            )
                        })?;
                    if options.read_only {
                        fs::make_very_read_only(&root.join(&local))?;
                    }
                    for f in &sides {
                        side::install(Owner::Tar, f.side, &root, Some(f), &root, &local, force);
                    }
                    Ok(())
                },
                |me, lp, ()| me.complete(lp),
            );
        }
        let read_only = options.keep_download;
        // A task: replacing a stale entry removes its tree.
        me.run_step(
            lp,
            "import-finalize",
            move |_| {
                install_into_cache(temp, &final_path, read_only, very)?;
                side::cache(&final_path, &sides, read_only)
            },
            |me, lp, ()| Self::copy(me, lp),
        );
    }

    /// Make the local image, if one was asked for, and install the side files next to it.
    fn copy(me: &mut TarImport, lp: &mut EventLoop<TarImport>) {
        me.enter(lp, Stage::Copying);
        let (Some(local), Some(final_path)) = (me.req.local.clone(), me.final_path.clone()) else {
            return me.complete(lp);
        };
        let (root, force) = (me.req.image_root.clone(), me.req.force);
        let options = me.req.options;
        let unpacked = me.flavor.local_tree.take();
        me.run_step(
            lp,
            "import-copy",
            move |cancel| {
                match unpacked.filter(|tree| tree.path().exists()) {
                    Some(tree) => {
                        install_unpacked(tree, &final_path, &root, &local, force, options)?;
                    }
                    None => store::copy_tree_as(
                        &final_path,
                        &root,
                        &local,
                        force,
                        (options.btrfs_subvol, options.btrfs_quota),
                        Some(cancel),
                    )?,
                }
                if options.read_only {
                    fs::make_very_read_only(&root.join(&local))?;
                }
                if options.side_files.settings {
                    side::install(
                        Owner::Tar,
                        Side::Settings,
                        &final_path,
                        None,
                        &root,
                        &local,
                        force,
                    );
                }
                Ok(())
            },
            |me, lp, ()| me.complete(lp),
        );
    }
}

/// Make the tree read-only (v219: no write bits; v252: immutable or a read-only
/// subvolume) unless `read_only` is off, and move it to its cache name, atomically
/// replacing a stale entry of the same name (Q10: one without an ETag).
fn install_into_cache(
    temp: TempPath,
    final_path: &Path,
    read_only: bool,
    very: bool,
) -> Result<()> {
    if read_only && !very {
        fs::make_read_only(temp.path())?;
    }
    if very {
        // A stale entry of the same name (one without an ETag) is replaced: its immutable
        // flag would forbid that.
        if let Ok(old) = fs::open_dir(final_path) {
            let _ = fs::set_immutable(old.as_fd(), false);
        }
    }
    store::install_replacing(temp.path(), final_path)
        .map_err(|e| log_error_errno!(e.clone(), "Failed to rename to final image name: {}", e))?;
    temp.keep();
    // An immutable directory cannot be renamed: v252's flag comes once it is in place.
    if read_only && very {
        fs::make_very_read_only(final_path)?;
    }
    Ok(())
}

/// The local image unpacked in the same pass as the cache entry `cache`: give its top
/// what a copy of `cache` would have there (the cache entry's owner, mode, xattrs and
/// times; writable for its owner, unless `--btrfs-subvol=no` asked for a plain copy) and
/// move it into place, with the messages of a copy.
fn install_unpacked(
    tree: TempPath,
    cache: &Path,
    root: &Path,
    local: &str,
    force: bool,
    options: PullOptions,
) -> Result<()> {
    let failed = |e: Error| log_error_errno!(e.clone(), "Failed to create local image: {}", e);
    fs::copy_top_metadata(cache, tree.path(), options.btrfs_subvol).map_err(failed)?;
    LocalImage::from_temp(tree, root, local, force)
        .install()
        .map_err(failed)
}

/// Whether a local image can share the data of the tree `tree` without a second pass
/// over it: a subvolume is snapshotted, and a copy on a file system with reflinks
/// shares the extents.
fn shares_data(tree: BorrowedFd<'_>) -> bool {
    btrfs::is_subvolume(tree).unwrap_or(false) || fs::can_share_extents(tree)
}

/// The `--direct` job's stream consumer: unpack into `path`, a new tree (a subvolume in
/// its qgroup if asked and possible) or the directory that is there; with `force` whatever is there is
/// removed first. What was unpacked stays if the pull fails, as upstream.
fn unpack_direct(
    path: &Path,
    (subvolume, quota): (bool, bool),
    force: bool,
    ctx: &StreamContext,
    body: &mut dyn Read,
) -> Result<()> {
    if force {
        match fs::rm_rf(path) {
            Err(e) if e.errno() != libc::ENOENT => {
                return Err(log_error_errno!(
                    e.clone(),
                    "Failed to remove {}: {}",
                    path.display(),
                    e
                ))
            }
            _ => {}
        }
    }
    let _ = fs::mkdir_parents(path, 0o700);
    let tree = match store::create_tree_as(path, subvolume) {
        Ok(tree) => {
            if subvolume && quota {
                store::assign_quota_group(path, true);
            }
            tree
        }
        Err(e) if e.errno() == libc::EEXIST => fs::open_dir(path)
            .map_err(|e| log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e))?,
        Err(e) => {
            return Err(log_error_errno!(
                e.clone(),
                "{}",
                e.msg().unwrap_or_default()
            ))
        }
    };
    let mut options = unpack::Options::new(Mode::Plain);
    options.cancel = Some(ctx.cancel.clone());
    unpack::unpack(tree.as_fd(), body, &options)?;
    Ok(())
}

/// The image job's stream consumer: create the temporary tree (a subvolume, in its
/// qgroup, as asked) and unpack the body into it; and into the local image's temporary
/// tree `local` too, in the same pass, where the local image could not share the first
/// tree's data. Runs on the job's worker thread (which decompresses), the unpackers on
/// threads of their own.
fn unpack_into(
    temp: &Path,
    local: Option<&Path>,
    (subvolume, quota): (bool, bool),
    ctx: &StreamContext,
    body: &mut dyn Read,
) -> Result<()> {
    // As in the C tool a failure here is not reported: creating the tree reports it.
    let _ = fs::mkdir_parents(temp, 0o700);
    let tree = store::make_tree_as(temp, subvolume)?;
    if subvolume && quota {
        store::assign_quota_group(temp, true);
    }
    let second = match local {
        Some(path) if !shares_data(tree.as_fd()) => Some(store::make_tree_as(path, false)?),
        _ => None,
    };
    let mut options = unpack::Options::new(Mode::Plain);
    options.cancel = Some(ctx.cancel.clone());
    let roots: Vec<BorrowedFd<'_>> = std::iter::once(tree.as_fd())
        .chain(second.as_ref().map(|t| t.as_fd()))
        .collect();
    unpack::unpack_trees(&roots, body, &options)?;
    Ok(())
}

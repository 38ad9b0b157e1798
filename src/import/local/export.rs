//! `systemd-export tar|raw NAME [FILE]`: an image written out through the export engine
//! ([`crate::import::export::run`]), compressed as `--format=` or FILE's suffix says.
//!
//! * A tree that is a writable btrfs subvolume is exported from a temporary read-only
//!   snapshot of it (`.#export.<NAME>…` next to it, removed afterwards), so a container
//!   writing to it meanwhile cannot change the archive under the walk.
//! * A raw image exported uncompressed into a regular file is reflinked where the file
//!   system can (btrfs, XFS); otherwise copied with its holes kept.
//!
//! Errors: a tar export of a raw image fails with ENOTDIR, a raw export of a tree with
//! EISDIR ("Failed to export image: …"), as systemd 252's.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::Progress;
use crate::import::export::{self, Source};
use crate::import::store::TempPath;
use crate::import::stream::Compression;
use crate::log_error_errno;
use crate::util::btrfs;
use crate::util::error::{Error, Result};
use crate::util::fs;

/// `tar` or `raw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportKind {
    Tar,
    Raw,
}

/// What `systemd-export` is asked to do, validated by the command line.
#[derive(Debug)]
pub struct ExportRequest {
    pub kind: ExportKind,
    /// The image found (a directory, or a `.raw` file).
    pub image: PathBuf,
    /// Where the archive goes (the file opened, or stdout).
    pub output: OwnedFd,
    pub compression: Compression,
}

/// The whole export; blocks (a task of the runner).
pub(super) fn run(req: ExportRequest, cancel: &AtomicBool, progress: &Progress) -> Result<()> {
    let failed = |e: Error| {
        if e.msg().is_some() || e.errno() == libc::ECANCELED {
            e
        } else {
            log_error_errno!(e.clone(), "Failed to export image: {}", e)
        }
    };
    let mut out = std::fs::File::from(req.output);
    let mut set_done = |s: &export::Stats| progress.set_done(s.bytes_read);
    match req.kind {
        ExportKind::Tar => {
            let tree = fs::open_dir(&req.image).map_err(failed)?;
            let (_snapshot, tree) = read_only_view(&req.image, tree).map_err(failed)?;
            export::run(
                Source::Tree(tree.as_fd()),
                req.compression,
                &mut out,
                cancel,
                &mut set_done,
            )
            .map_err(failed)?;
        }
        ExportKind::Raw => {
            let image = open_raw(&req.image).map_err(failed)?;
            let size = nix::sys::stat::fstat(image.as_fd())
                .map_err(Error::from)?
                .st_size;
            progress.set_total(size as u64);
            if req.compression == Compression::Uncompressed && reflinked(&image, &out) {
                progress.set_done(size as u64);
                return Ok(());
            }
            export::run(
                Source::Raw(image.as_fd()),
                req.compression,
                &mut out,
                cancel,
                &mut set_done,
            )
            .map_err(failed)?;
        }
    }
    Ok(())
}

/// A raw image: a regular file (EISDIR for a directory, as the C tool's).
fn open_raw(path: &std::path::Path) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let fd = nix::fcntl::open(path, flags, Mode::empty())?;
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Ok(fd),
        libc::S_IFDIR => Err(Error::new(libc::EISDIR)),
        _ => Err(Error::new(libc::EINVAL)),
    }
}

/// The tree to walk: a read-only snapshot of `tree` when it is a writable btrfs
/// subvolume (returned with the temporary name that removes it), else `tree` itself.
fn read_only_view(image: &std::path::Path, tree: OwnedFd) -> Result<(Option<TempPath>, OwnedFd)> {
    let writable_subvolume = btrfs::is_subvolume(tree.as_fd()).unwrap_or(false)
        && !btrfs::subvol_get_read_only(tree.as_fd()).unwrap_or(true);
    if !writable_subvolume {
        return Ok((None, tree));
    }
    let (parent, name) = fs::split_parent(image)?;
    let temp = TempPath::next_to(&parent.join(format!("export.{}", name.to_string_lossy())));
    let (_, temp_name) = fs::split_parent(temp.path())?;
    let parent_fd = fs::open_dir(parent)?;
    btrfs::subvol_snapshot(tree.as_fd(), parent_fd.as_fd(), temp_name, true)
        .map_err(|e| log_error_errno!(e.clone(), "Failed to create temporary snapshot: {}", e))?;
    let snapshot = fs::open_dir(temp.path())?;
    log::debug!(
        "Exporting from read-only snapshot {}.",
        temp.path().display()
    );
    Ok((Some(temp), snapshot))
}

/// Reflink `image` into `out` if `out` is an empty regular file on a file system that
/// can share the extents; whether it was done.
fn reflinked(image: &OwnedFd, out: &std::fs::File) -> bool {
    let Ok(st) = nix::sys::stat::fstat(out.as_fd()) else {
        return false;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size != 0 {
        return false;
    }
    btrfs::reflink(image.as_fd(), out.as_fd()).is_ok()
}

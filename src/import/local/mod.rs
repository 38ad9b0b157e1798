//! Local images in and out: `systemd-import tar|raw FILE [NAME]`, `systemd-import-fs run
//! DIRECTORY [NAME]` and `systemd-export tar|raw NAME [FILE]` (systemd 220+), and the
//! workers importd's `Import*`/`Export*` members run.
//!
//! Each is one blocking piece of work (read, decompress, unpack or copy; or walk, encode
//! and write) that runs as the one step of a [`LocalImport`] importer, so it shares the
//! runner of the pullers ([`crate::import::run`]): SIGINT/SIGTERM say "Transfer
//! aborted." and stop it, the step's task is cancelled and joined, and whatever it made
//! under a temporary name is removed; nothing partial ever appears under the final name.
//! The progress timer reports `Imported N%.`/`Exported N%.` and `X_IMPORT_PROGRESS=` from
//! the bytes the work counted so far against the input's size, where that is known.
//!
//! * `tar.rs`: a tarball (any compression) unpacked with the pullers' unpacker;
//! * `raw.rs`: a raw or qcow2 disk image (any compression), written sparsely and
//!   converted with the pullers' qcow2 code;
//! * `fs.rs`: a directory tree, as a btrfs snapshot or a copy with reflinks;
//! * `export.rs`: an image out, through the export engine ([`crate::import::export`]),
//!   from a read-only snapshot when the image is a btrfs subvolume.
//!
//! None of the four uses another; all use this file's [`Progress`] and [`Target`].

mod export;
mod fs;
mod raw;
mod tar;

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub use export::{ExportKind, ExportRequest};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::curl_glue::{CurlGlue, CurlSettings};
use crate::event::EventLoop;
use crate::import::job::{JobOwner, JobSet};
use crate::import::store::TempPath;
use crate::import::{Importer, Lifecycle};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::fs as ufs;

/// What kind of image a local import makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportKind {
    Tar,
    Raw,
    Fs,
}

/// What `systemd-import tar|raw` and `systemd-import-fs run` are asked to do, validated
/// by the command line.
#[derive(Debug)]
pub struct ImportRequest {
    pub kind: ImportKind,
    /// The file (tar, raw; stdin for `-`) or directory (fs) the command line opened.
    pub input: OwnedFd,
    /// The image's name (or, with `direct`, the path to write).
    pub local: String,
    pub image_root: PathBuf,
    /// `--direct`: write to `local` itself, as a path, without a temporary name.
    pub direct: bool,
    pub force: bool,
    pub read_only: bool,
    /// `--btrfs-subvol=`: make a tree a subvolume where the file system has them.
    pub btrfs_subvol: bool,
    /// `--btrfs-quota=`: a new subvolume gets systemd's qgroup layout.
    pub btrfs_quota: bool,
    /// `--convert-qcow2=`.
    pub convert_qcow2: bool,
    /// `--sync=`: flush the image's file system before it is installed.
    pub sync: bool,
    /// `--offset=` (raw): where to write in the target (with `--direct`).
    pub offset: Option<u64>,
    /// `--size-max=` (raw): the most bytes to write.
    pub size_max: Option<u64>,
}

/// Bytes done against the total, shared between the work (on its task) and the progress
/// timer (on the loop).
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    /// 0: unknown.
    total: AtomicU64,
}

impl Progress {
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_done(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }

    pub fn set_total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
    }

    /// The percentage, if the total is known.
    pub fn percent(&self) -> Option<u32> {
        let total = self.total.load(Ordering::Relaxed);
        (total > 0).then(|| {
            let done = self.done.load(Ordering::Relaxed).min(total);
            (u128::from(done) * 100 / u128::from(total)) as u32
        })
    }
}

/// How often a reader waiting on a pipe looks at the cancel flag.
const CANCEL_POLL_MS: u16 = 100;

/// The input file read by a local import: what is read is counted into a [`Progress`],
/// and a set `cancel` stops it with ECANCELED, also while it waits on a pipe or socket
/// that stays silent (stdin from importd or a shell).
pub struct Counting<'a> {
    file: std::fs::File,
    /// Set for inputs that can block (not regular files): waited on before each read.
    waiter: Option<Epoll>,
    progress: &'a Progress,
    cancel: &'a AtomicBool,
}

impl<'a> Counting<'a> {
    pub fn new(file: std::fs::File, progress: &'a Progress, cancel: &'a AtomicBool) -> Self {
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        let waiter = (!regular)
            .then(|| {
                let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok()?;
                let event = EpollEvent::new(EpollFlags::EPOLLIN, 0);
                epoll.add(&file, event).ok()?;
                Some(epoll)
            })
            .flatten();
        Counting {
            file,
            waiter,
            progress,
            cancel,
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let canceled = || io::Error::from(Error::new(libc::ECANCELED));
        if self.cancelled() {
            return Err(canceled());
        }
        if let Some(epoll) = &self.waiter {
            let mut events = [EpollEvent::empty()];
            // Readable, or hung up (then the read returns 0).
            while epoll.wait(&mut events, CANCEL_POLL_MS)? == 0 {
                if self.cancelled() {
                    return Err(canceled());
                }
            }
        }
        let n = self.file.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// The size of a regular file or block device behind `fd`, for the progress; `None` for
/// a pipe or anything else without one.
pub fn input_size(fd: &OwnedFd) -> Option<u64> {
    let st = nix::sys::stat::fstat(fd.as_fd()).ok()?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG if st.st_size > 0 => Some(st.st_size as u64),
        _ => None,
    }
}

/// Where a local import writes: a temporary name next to the final one, moved into
/// place when complete (replacing an existing image only with `--force`), or with
/// `--direct` the final path itself.
pub struct Target {
    /// The temporary object; `None` with `--direct`.
    temp: Option<TempPath>,
    final_path: PathBuf,
    force: bool,
}

impl Target {
    /// `<root>/<file_name>` through a temporary name, or `file_name` itself with `direct`.
    pub fn new(req: &ImportRequest, file_name: &str) -> Self {
        if req.direct {
            return Target {
                temp: None,
                final_path: PathBuf::from(&req.local),
                force: req.force,
            };
        }
        let final_path = req.image_root.join(file_name);
        Target {
            temp: Some(TempPath::next_to(&final_path)),
            final_path,
            force: req.force,
        }
    }

    /// Where to write now.
    pub fn path(&self) -> &Path {
        self.temp.as_ref().map_or(&self.final_path, |t| t.path())
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Whether the target is the final path itself (`--direct`).
    pub fn is_direct(&self) -> bool {
        self.temp.is_none()
    }

    /// Write to `temp` from now on (the old temporary object is removed).
    pub fn replace_temp(&mut self, temp: TempPath) {
        self.temp = Some(temp);
    }

    /// Make the parent directories of the target (the image root may not exist yet).
    pub fn make_parents(&self) {
        // A failure shows when the target itself is created.
        let _ = ufs::mkdir_parents(self.path(), 0o700);
    }

    /// Move the complete object into place (nothing to do with `--direct`). Errors are
    /// the caller's to log.
    pub fn install(self) -> Result<()> {
        let Some(temp) = self.temp else {
            return Ok(());
        };
        if self.force {
            crate::import::store::install_replacing(temp.path(), &self.final_path)?;
        } else {
            ufs::rename_noreplace(temp.path(), &self.final_path)?;
        }
        temp.keep();
        Ok(())
    }
}

/// The decompressed stream of `input` (compression detected from its first bytes), with
/// what is read of `input` counted into `progress`; a damaged stream fails with EIO,
/// logged as "Decompression error.", and a set `cancel` with ECANCELED.
pub fn decompressed<'a>(
    input: OwnedFd,
    progress: &'a Progress,
    cancel: &'a AtomicBool,
) -> Result<impl Read + 'a> {
    let counting = Counting::new(std::fs::File::from(input), progress, cancel);
    let (compression, sniffed) = crate::import::stream::sniff(counting)?;
    compression.log_detection();
    let decoder = compression.decoder(sniffed)?;
    Ok(Decoded(decoder))
}

/// A decoder whose codec errors are logged and become EIO.
struct Decoded<R>(R);

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if !crate::import::stream::is_codec_error(&e) {
                return e;
            }
            log::debug!("Decoder failed: {e}");
            log_error_errno!(Error::new(libc::EIO), "Decompression error.").into()
        })
    }
}

/// With `read_only`, mark the installed image read-only (systemd 252's way, see
/// [`ufs::make_very_read_only`]): after the move into place, as an immutable directory
/// cannot be renamed.
pub fn mark_read_only(read_only: bool, image: &OwnedFd) -> Result<()> {
    if !read_only {
        return Ok(());
    }
    ufs::make_very_read_only_fd(image.as_fd())
        .map_err(|e| log_error_errno!(e.clone(), "Failed to make image read-only: {}", e))
}

/// Flush the file system `fd` lives on (`--sync=yes`). Errors are returned.
pub fn sync_fs(fd: &OwnedFd) -> Result<()> {
    nix::unistd::syncfs(fd.as_fd()).map_err(Error::from)
}

/// The blocking work of one local import or export.
pub type Work = Box<dyn FnOnce(&AtomicBool, &Progress) -> Result<()> + Send>;

/// One local import or export: the event loop's data while its work runs as a step.
/// Field order is drop order: the lifecycle first (it cancels and joins the task, which
/// owns and removes the temporary objects), then the rest.
pub struct LocalImport {
    lifecycle: Lifecycle,
    work: Option<Work>,
    progress: Arc<Progress>,
    /// "Imported" or "Exported", for the progress lines.
    verb: &'static str,
    /// The last percentage logged.
    logged: Option<u32>,
    jobs: JobSet<()>,
    /// Unused: the runner's routing wants one (local work never downloads).
    glue: CurlGlue,
    /// Where the work makes its temporaries (the owner lock is taken there).
    image_root: PathBuf,
    /// The image's name in `image_root` (an import not `--direct`): locked while it runs.
    local: Option<String>,
}

impl LocalImport {
    /// Any blocking import or export `work` (also pull-oci's archive sources), with its
    /// temporaries below `image_root`; `verb` is "Imported" or "Exported"; `local` is the
    /// local image it makes, locked against other processes by the runner.
    pub fn new(
        verb: &'static str,
        image_root: PathBuf,
        local: Option<String>,
        work: Work,
    ) -> Result<Self> {
        Ok(LocalImport {
            lifecycle: Lifecycle::new(),
            work: Some(work),
            progress: Arc::new(Progress::default()),
            verb,
            logged: None,
            jobs: JobSet::new(),
            glue: CurlGlue::new(CurlSettings::default())?,
            image_root,
            local,
        })
    }

    /// A local import of `req`'s kind.
    pub fn import(req: ImportRequest) -> Result<Self> {
        let image_root = req.image_root.clone();
        let local = (!req.direct).then(|| req.local.clone());
        let work: Work = match req.kind {
            ImportKind::Tar => Box::new(move |cancel, progress| tar::run(req, cancel, progress)),
            ImportKind::Raw => Box::new(move |cancel, progress| raw::run(req, cancel, progress)),
            ImportKind::Fs => Box::new(move |cancel, _| fs::run(req, cancel)),
        };
        Self::new("Imported", image_root, local, work)
    }

    /// An export.
    pub fn export(req: ExportRequest) -> Result<Self> {
        // A writable subvolume is exported from a snapshot made next to it.
        let image_root = req
            .image
            .parent()
            .map_or_else(|| PathBuf::from("/"), PathBuf::from);
        Self::new(
            "Exported",
            image_root,
            None,
            Box::new(move |cancel, progress| export::run(req, cancel, progress)),
        )
    }
}

impl JobOwner for LocalImport {
    type Key = ();

    fn glue_and_jobs(&mut self) -> (&mut CurlGlue, &mut JobSet<()>) {
        (&mut self.glue, &mut self.jobs)
    }

    fn on_job_done(&mut self, _: &mut EventLoop<Self>, _: ()) {}
}

impl Importer for LocalImport {
    fn start(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let work = self.work.take().ok_or_else(|| Error::new(libc::EALREADY))?;
        let progress = self.progress.clone();
        self.lifecycle.start_progress_timer(lp)?;
        self.run_step(
            lp,
            "local",
            move |cancel| work(cancel, &progress),
            |me, lp, ()| {
                me.report_progress();
                me.finish(lp, Ok(()))
            },
        );
        Ok(())
    }

    fn image_root(&self) -> &Path {
        &self.image_root
    }

    fn local_name(&self) -> Option<&str> {
        self.local.as_deref()
    }

    fn lifecycle(&mut self) -> &mut Lifecycle {
        &mut self.lifecycle
    }

    fn report_progress(&mut self) {
        let Some(percent) = self.progress.percent() else {
            return;
        };
        if self.logged != Some(percent) {
            self.logged = Some(percent);
            log::info!("{} {}%.", self.verb, percent);
        }
        self.lifecycle.report_progress(percent);
    }
}

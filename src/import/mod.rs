//! Downloading and unpacking images: the [`Importer`] trait and the one runner ([`run`]),
//! with the command line above them and the importers and their building blocks below.
//!
//! Layers, each using only those below it:
//! * [`cli`]: argv → typed requests; it calls the importers' constructors and [`run`].
//!   Nothing else uses it;
//! * the importers: [`url`] (pull-tar, pull-raw), [`dkr`] (pull-dkr), [`oci`] (pull-oci);
//! * what they are built of: [`lifecycle`] (finish once, the progress timer, cancel all,
//!   steps as tasks), [`job`] (one HTTP GET and the routing of its events; retry
//!   policy), [`store`] (temporary names, installation, local copies, the download
//!   cache), [`stream`] (the byte pipeline), [`unpack`] (the tar unpacker);
//! * [`export`]: a tree or raw image streamed out as an archive (used by systemd-export).
//! * below this module: `curl_glue`, `event`, `util`.

pub mod cli;
pub mod dkr;
pub mod export;
pub mod job;
pub mod lifecycle;
pub mod local;
pub mod oci;
pub mod store;
pub mod stream;
pub mod unpack;
pub mod url;

use std::sync::atomic::AtomicBool;

use crate::event::EventLoop;
use crate::log_notice;
pub use crate::util::dialect::Dialect;
use crate::util::error::Result;
use job::JobOwner;
pub use lifecycle::Lifecycle;

/// An importer: the event loop's data for one pull. It owns its `CurlGlue`, its jobs
/// (routed to it as their [`JobOwner`]), its [`Lifecycle`] and its temporary files;
/// dropping it removes whatever temporary state is left.
pub trait Importer: JobOwner {
    /// Start pulling (the C `*_import_pull()`): validate, create the first jobs and begin
    /// them. An error ends the run ("Failed to pull image: …"); once started, the pull
    /// ends with [`finish`](Importer::finish).
    fn start(&mut self, lp: &mut EventLoop<Self>) -> Result<()>;

    /// The image root the pull writes to (where its owner lock is taken, and what dead
    /// processes left there is removed, before [`start`](Importer::start)).
    fn image_root(&self) -> &std::path::Path;

    /// The local image name the pull writes in its image root, if any: its lock
    /// ([`store::LocalLock`]) is taken before [`start`](Importer::start), so a second
    /// process pulling to the same name fails at once.
    fn local_name(&self) -> Option<&str> {
        None
    }

    /// The importer's lifecycle state.
    fn lifecycle(&mut self) -> &mut Lifecycle;

    /// Recompute the overall progress and send it ([`Lifecycle::report_progress`]); the
    /// progress timer calls this every second while it runs.
    fn report_progress(&mut self);

    /// The pull is over with `result`: stop what only this importer knows about (called
    /// once, by [`finish`](Importer::finish), before its jobs are cancelled).
    fn on_finish(&mut self, _lp: &mut EventLoop<Self>, _result: &Result<()>) {}

    /// End the pull once ([`lifecycle::finish`]).
    fn finish(&mut self, lp: &mut EventLoop<Self>, result: Result<()>) {
        lifecycle::finish(self, lp, result);
    }

    /// Run blocking work as the next step ([`lifecycle::run_step`]).
    fn run_step<T, W>(
        &mut self,
        lp: &mut EventLoop<Self>,
        name: &str,
        work: W,
        next: impl FnOnce(&mut Self, &mut EventLoop<Self>, T) + 'static,
    ) where
        T: Send + 'static,
        W: FnOnce(&AtomicBool) -> Result<T> + Send + 'static,
    {
        lifecycle::run_step(self, lp, name, work, next);
    }
}

/// Run an importer to completion on a fresh event loop, as the C tool's pull verbs do:
/// SIGINT/SIGTERM log "Transfer aborted." and stop the loop with EINTR; the importer's
/// completion stops it with its error; then "Exiting." and the importer is dropped, which
/// removes whatever temporary state it still holds. `importer` is what its constructor
/// returned. Returns the exit status: 0 on success, 1 on any failure, as the C tool's.
pub fn run<I: Importer>(importer: Result<I>) -> i32 {
    let mut importer = match importer {
        Ok(i) => i,
        Err(e) => {
            log::error!("Failed to allocate importer: {e}");
            return 1;
        }
    };
    let mut lp = match EventLoop::<I>::new() {
        Ok(lp) => lp,
        Err(e) => {
            log::error!("Failed to allocate event loop: {e}");
            return 1;
        }
    };
    for signo in [libc::SIGTERM, libc::SIGINT] {
        let r = lp.add_signal(signo, |lp, _, _, _| {
            log_notice!("Transfer aborted.");
            lp.exit(libc::EINTR);
            Ok(())
        });
        if let Err(e) = r {
            log::error!("Failed to install signal handler: {e}");
            return 1;
        }
    }
    // Held until the importer is gone: its temporaries are live while this is. A root
    // that cannot be used fails the pull with the importer's own message.
    let sweep = store::Sweep {
        keep: &store::is_partial,
    };
    let owner = store::Owner::claim(importer.image_root(), &sweep).ok();
    // Held until the importer is gone, like the owner lock.
    let local = match importer.local_name() {
        Some(name) if owner.is_some() => {
            match store::LocalLock::take(importer.image_root(), name) {
                Ok(lock) => Some(lock),
                Err(_) => return 1,
            }
        }
        _ => None,
    };
    if let Err(e) = importer.start(&mut lp) {
        log::error!("Failed to pull image: {e}");
        return 1;
    }
    let code = match lp.run(&mut importer) {
        Ok(code) => code,
        Err(e) => {
            log::error!("Failed to run event loop: {e}");
            return 1;
        }
    };
    log::info!("Exiting.");
    drop(importer);
    drop(local);
    drop(owner);
    if code == 0 {
        0
    } else {
        1
    }
}

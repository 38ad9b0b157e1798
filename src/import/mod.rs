//! Downloading and unpacking images: `ImportJob` (one HTTP GET), the shared unpacker,
//! and the importers built on them.

pub mod common;
pub mod job;
pub mod qcow2;
pub mod unpack;
pub mod verify;

use crate::cli::{DkrRequest, Settings, UrlRequest};
use crate::event::EventLoop;
use crate::util::error::Result;
use job::JobHost;

/// An importer: the event loop's data for one pull. It owns its `CurlGlue`, its jobs and
/// its temporary files; dropping it removes whatever temporary state is left.
pub trait Importer: JobHost {
    /// Start pulling (the C `*_import_pull()`): validate, create the first jobs and begin
    /// them. When the pull is over, the importer calls [`operation_finished`].
    fn start(&mut self, lp: &mut EventLoop<Self>) -> Result<()>;
}

/// The C tool's completion callback: log success, and stop the loop with the error (0 for
/// success). Failures were logged where they happened.
pub fn operation_finished<D: 'static>(lp: &mut EventLoop<D>, result: &Result<()>) {
    match result {
        Ok(()) => {
            log::info!("Operation completed successfully.");
            lp.exit(0);
        }
        Err(e) => lp.exit(e.errno()),
    }
}

fn not_implemented(verb: &str) -> i32 {
    log::error!("{verb} is not implemented yet.");
    1
}

/// `pull-tar`, after the command line was validated. Returns the exit status.
pub fn pull_tar(_settings: &Settings, _req: UrlRequest) -> i32 {
    not_implemented("pull-tar")
}

/// `pull-raw`, after the command line was validated. Returns the exit status.
pub fn pull_raw(_settings: &Settings, _req: UrlRequest) -> i32 {
    not_implemented("pull-raw")
}

/// `pull-dkr`, after the command line was validated. Returns the exit status.
pub fn pull_dkr(_settings: &Settings, _req: DkrRequest) -> i32 {
    not_implemented("pull-dkr")
}

/// `pull-oci REF [LOCAL]`. Returns the exit status.
pub fn pull_oci(_settings: &Settings, _args: &[String]) -> i32 {
    not_implemented("pull-oci")
}

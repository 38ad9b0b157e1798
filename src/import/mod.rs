//! Downloading and unpacking images: `ImportJob` (one HTTP GET), the shared unpacker,
//! and the importers built on them; and exporting them (`export`).

pub mod common;
pub mod dkr;
pub mod export;
pub mod job;
pub mod oci;
pub mod qcow2;
pub mod raw;
pub mod stream;
pub mod tar;
pub mod unpack;
pub mod url_pull;
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

/// `pull-tar`, after the command line was validated. Returns the exit status.
pub fn pull_tar(settings: &Settings, req: UrlRequest) -> i32 {
    tar::pull(settings, req)
}

/// `pull-raw`, after the command line was validated. Returns the exit status.
pub fn pull_raw(settings: &Settings, req: UrlRequest) -> i32 {
    raw::pull(settings, req)
}

/// `pull-dkr`, after the command line was validated. Returns the exit status.
pub fn pull_dkr(settings: &Settings, req: DkrRequest) -> i32 {
    dkr::pull(settings, req)
}

/// `pull-oci REF [LOCAL]` (the words after the verb). Returns the exit status.
pub fn pull_oci(settings: &Settings, args: &[String]) -> i32 {
    oci::pull(settings, args)
}

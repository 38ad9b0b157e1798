//! The downloads of a pull-tar or pull-raw: the image with its `SHA256SUMS` and
//! `SHA256SUMS.gpg` companions (spec §5.2), the per-job failure messages, the checksum
//! and signature checks of a fresh download, and the download share of the
//! `X_IMPORT_PROGRESS=` reports of systemd v219 (spec §6.6), by [`Stage`].
//!
//! The three downloads run at once on the importer's one curl multi handle; the importer
//! acts only when all of them are done, and the first one to fail ends the pull.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::{verify, Verify};
use crate::curl_glue::CurlGlue;
use crate::event::EventLoop;
use crate::import::job::{ImportJob, JobOptions, JobOwner, JobSet, Sink};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::names;

/// The companions are small text files: 1 MiB is plenty (the C tool's limit).
const VERIFY_FILE_MAX: u64 = 1 << 20;
/// Share of the overall progress each companion download stands for (v219).
const COMPANION_SHARE: u32 = 5;

/// The jobs of one tar or raw pull.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UrlJob {
    /// The image itself.
    Image,
    /// `SHA256SUMS` next to it.
    Checksum,
    /// `SHA256SUMS.gpg` next to it.
    Signature,
}

/// Where a tar or raw pull is, one step after the other; also what its progress means
/// (the phases systemd v219 reports to systemd-importd).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stage {
    Downloading,
    Verifying,
    /// raw only: the qcow2 check and conversion.
    Unpacking,
    Finalizing,
    Copying,
}

/// Where each phase starts, in percent (spec §6.6): tar and raw differ only in how much
/// the download is worth.
#[derive(Clone, Copy, Debug)]
pub struct ProgressPlan {
    /// The downloads together are worth this much; it is also where verifying starts.
    pub download: u32,
    /// Where the qcow2 conversion starts (raw).
    pub unpacking: u32,
}

impl ProgressPlan {
    /// pull-tar: download 85 %, verifying 85, finalizing 90, copying 95.
    pub const TAR: ProgressPlan = ProgressPlan {
        download: 85,
        unpacking: 85,
    };
    /// pull-raw: download 80 %, verifying 80, unpacking 85, finalizing 90, copying 95.
    pub const RAW: ProgressPlan = ProgressPlan {
        download: 80,
        unpacking: 85,
    };
}

/// The image download and its verification companions.
pub struct UrlDownloads {
    /// The jobs (dropping them stops and joins their workers).
    pub jobs: JobSet<UrlJob>,
    url: String,
    verify: Verify,
    plan: ProgressPlan,
}

impl UrlDownloads {
    pub fn new(url: &str, verify: Verify, plan: ProgressPlan) -> Self {
        UrlDownloads {
            jobs: JobSet::new(),
            url: url.to_string(),
            verify,
            plan,
        }
    }

    /// Create the companion jobs the `--verify` mode asks for and begin all jobs: the
    /// image, then `SHA256SUMS`, then `SHA256SUMS.gpg` (the C order). `image` is the image
    /// job's options; it gets `calc_checksum` here.
    pub fn begin<D: JobOwner>(
        &mut self,
        lp: &mut EventLoop<D>,
        glue: &mut CurlGlue,
        mut image: JobOptions,
    ) -> Result<()> {
        image.calc_checksum = self.verify != Verify::No;
        let mut companions = Vec::new();
        if self.verify != Verify::No {
            // The query string is dropped here (Q14, as in the C tool).
            companions.push((
                UrlJob::Checksum,
                names::url_change_last_component(&self.url, "SHA256SUMS")?,
            ));
        }
        if self.verify == Verify::Signature {
            companions.push((
                UrlJob::Signature,
                names::url_change_last_component(&self.url, "SHA256SUMS.gpg")?,
            ));
        }
        let url = self.url.clone();
        self.jobs
            .begin(lp, glue, UrlJob::Image, ImportJob::new(&url, image))?;
        for (key, url) in companions {
            let mut options = JobOptions::new(Sink::Memory);
            options.compressed_max = VERIFY_FILE_MAX;
            options.uncompressed_max = VERIFY_FILE_MAX;
            self.jobs
                .begin(lp, glue, key, ImportJob::new(&url, options))?;
        }
        Ok(())
    }

    /// A job became complete. `Some(Ok)` when every job is done, `Some(Err)` when this one
    /// failed (the pull is over; the reason is logged here), `None` while others still run.
    pub fn on_job_complete(&self, key: UrlJob) -> Option<Result<()>> {
        let job = self.jobs.get(key)?;
        if let Some(e) = job.error() {
            let e = match key {
                UrlJob::Checksum => log_error_errno!(
                    e.clone(),
                    "Failed to retrieve SHA256 checksum, cannot verify. (Try --verify=no?)"
                ),
                UrlJob::Signature => log_error_errno!(
                    e.clone(),
                    "Failed to retrieve signature file, cannot verify. (Try --verify=no?)"
                ),
                UrlJob::Image => {
                    log_error_errno!(e.clone(), "Failed to retrieve image file. (Wrong URL?)")
                }
            };
            return Some(Err(e));
        }
        let all_done = self.jobs.iter().all(|(_, j)| j.is_complete());
        all_done.then_some(Ok(()))
    }

    /// The image job.
    pub fn image(&self) -> Option<&ImportJob> {
        self.jobs.get(UrlJob::Image)
    }

    /// The image was not downloaded because we have it already (ETag match or 304).
    pub fn skipped(&self) -> bool {
        self.image().is_some_and(|j| j.etag_exists())
    }

    /// The ETag of the image response (also of a 304).
    pub fn etag(&self) -> Option<String> {
        self.image().and_then(|j| j.etag()).map(str::to_string)
    }

    /// Spec §5.2 checksum check of a fresh download (nothing to do for `--verify=no`).
    /// Cheap: a search through a file of at most 1 MiB.
    pub fn verify_checksum(&self) -> Result<()> {
        if self.verify == Verify::No {
            return Ok(());
        }
        let sums = self
            .jobs
            .get(UrlJob::Checksum)
            .map(|j| j.payload())
            .unwrap_or_default();
        let sha256 = self
            .image()
            .and_then(|j| j.checksum())
            .ok_or_else(|| log_error_errno!(Error::new(libc::EIO), "Failed to get checksum."))?;
        verify::verify_checksum(sums, &self.url, sha256)
    }

    /// What the gpg check needs (`SHA256SUMS`, then its signature), for
    /// `--verify=signature` only.
    fn signature_inputs(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.verify != Verify::Signature {
            return None;
        }
        let payload = |key| {
            self.jobs
                .get(key)
                .map(|j| j.payload().to_vec())
                .unwrap_or_default()
        };
        Some((payload(UrlJob::Checksum), payload(UrlJob::Signature)))
    }

    /// Overall progress while downloading: each companion is worth 5 %, the image the rest
    /// of the plan's download share.
    fn download_percent(&self) -> u32 {
        let mut image_share = self.plan.download;
        let mut percent = 0;
        for (key, job) in self.jobs.iter() {
            if key != UrlJob::Image {
                percent += job.progress_percent() * COMPANION_SHARE / 100;
                image_share -= COMPANION_SHARE;
            }
        }
        if let Some(image) = self.image() {
            percent += image.progress_percent() * image_share / 100;
        }
        percent
    }

    /// The overall progress at `stage`, in percent.
    pub fn percent(&self, stage: Stage) -> u32 {
        match stage {
            Stage::Downloading => self.download_percent(),
            Stage::Verifying => self.plan.download,
            Stage::Unpacking => self.plan.unpacking,
            Stage::Finalizing => 90,
            Stage::Copying => 95,
        }
    }
}

/// The gpg check of `SHA256SUMS`, as work for a task (it blocks), for
/// `--verify=signature` only. `test_keyring` replaces the system's keyring (a test
/// setting; see [`verify::keyring_path`]).
pub fn signature_check(
    downloads: &UrlDownloads,
    test_keyring: Option<PathBuf>,
) -> Option<impl FnOnce(&AtomicBool) -> Result<()> + Send + 'static> {
    let (sums, signature) = downloads.signature_inputs()?;
    Some(move |cancel: &AtomicBool| {
        let keyring = verify::keyring_path(test_keyring.as_deref());
        verify::verify_signature(&sums, &signature, &keyring, Some(cancel))
    })
}

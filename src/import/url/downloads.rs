//! The downloads of a pull-tar or pull-raw: the image with its `SHA256SUMS` and
//! `SHA256SUMS.gpg` companions (spec §5.2), the per-job failure messages, the checksum
//! and signature checks of a fresh download, and the download share of the
//! `X_IMPORT_PROGRESS=` reports of systemd v219 (spec §6.6), by [`Stage`].
//!
//! Under systemd-pull (v252, modern-systemd.md §1.5) the checksum file is
//! `<image>.sha256` first and `SHA256SUMS` after a 404; a missing signature matters only
//! for `SHA256SUMS` (a `.sha256` file is verified as inline-signed); the optional side
//! files (`.nspawn`, `.roothash`, `.roothash.p7s`, `.verity`) download alongside, a
//! failed one is "proceeding without", and each one fetched must be in the checksum
//! file too; a literal `--verify=<hex>` fetches no companion at all.
//!
//! All downloads run at once on the importer's one curl multi handle; the importer acts
//! only when all of them are done, and the first required one to fail ends the pull.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::side::{Fetched, Side};
use super::{verify, SideFiles, UrlRequest, Verify, COMPANION_SHARE};
use crate::curl_glue::CurlGlue;
use crate::event::EventLoop;
use crate::import::job::{ImportJob, JobOptions, JobOwner, JobSet, Sink};
use crate::log_error_errno;
use crate::util::dialect::Dialect;
use crate::util::error::{Error, Result};
use crate::util::names;

/// The companions are small text files: 1 MiB is plenty (the C tool's limit).
const VERIFY_FILE_MAX: u64 = 1 << 20;

/// The jobs of one tar or raw pull.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum UrlJob {
    /// The image itself.
    Image,
    /// `SHA256SUMS` (or `<image>.sha256`) next to it.
    Checksum,
    /// `SHA256SUMS.gpg` next to it.
    Signature,
    /// A side file (systemd-pull only).
    Side(Side),
}

/// Where the checksums come from (v252's "verification style").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ChecksumStyle {
    /// `<image>.sha256`, inline-signed.
    PerFile,
    /// `SHA256SUMS` with `SHA256SUMS.gpg`.
    PerDirectory,
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
    dialect: Dialect,
    /// The side files to fetch, and the image's name without its suffixes that their
    /// names are made of.
    side_files: SideFiles,
    stripped_name: Option<String>,
    style: ChecksumStyle,
}

impl UrlDownloads {
    /// The downloads of `req`; `strip` takes the suffixes off the image's file name
    /// (tar's or raw's rule) to name the side files.
    pub fn new(req: &UrlRequest, plan: ProgressPlan, strip: fn(&str) -> String) -> Self {
        let stripped_name = names::url_last_component(&req.url).ok().map(|n| strip(&n));
        UrlDownloads {
            jobs: JobSet::new(),
            url: req.url.clone(),
            verify: req.verify,
            plan,
            dialect: req.dialect,
            side_files: req.options.side_files,
            stripped_name,
            style: ChecksumStyle::PerDirectory,
        }
    }

    /// Whether a checksum (and maybe signature) file is fetched.
    fn wants_sums(&self) -> bool {
        matches!(self.verify, Verify::Checksum | Verify::Signature)
    }

    /// A small companion download (1 MiB at most).
    fn small_job(&self, url: &str, checksum: bool, quiet_not_found: bool) -> ImportJob {
        let mut options = JobOptions::new(Sink::Memory);
        options.compressed_max = VERIFY_FILE_MAX;
        options.uncompressed_max = VERIFY_FILE_MAX;
        options.calc_checksum = checksum;
        options.dialect = self.dialect;
        options.quiet_not_found = quiet_not_found;
        ImportJob::new(url, options)
    }

    /// Create the companion jobs the `--verify` mode and the side files ask for and
    /// begin all jobs: the image, then the checksum file, then `SHA256SUMS.gpg`, then the
    /// side files (the C order). `image` is the image job's options; it gets
    /// `calc_checksum` here.
    pub fn begin<D: JobOwner>(
        &mut self,
        lp: &mut EventLoop<D>,
        glue: &mut CurlGlue,
        mut image: JobOptions,
    ) -> Result<()> {
        image.calc_checksum = self.verify != Verify::No;
        image.dialect = self.dialect;
        let mut companions = Vec::new();
        if self.wants_sums() {
            // The query string is dropped here (Q14, as in the C tool).
            match self.dialect {
                Dialect::V219 => companions.push((
                    UrlJob::Checksum,
                    names::url_change_last_component(&self.url, "SHA256SUMS")?,
                    false,
                )),
                Dialect::V252 => {
                    let name = names::url_last_component(&self.url)?;
                    self.style = ChecksumStyle::PerFile;
                    companions.push((
                        UrlJob::Checksum,
                        names::url_change_last_component(&self.url, &format!("{name}.sha256"))?,
                        true,
                    ));
                }
            }
        }
        if self.verify == Verify::Signature {
            companions.push((
                UrlJob::Signature,
                names::url_change_last_component(&self.url, "SHA256SUMS.gpg")?,
                false,
            ));
        }
        let url = self.url.clone();
        self.jobs
            .begin(lp, glue, UrlJob::Image, ImportJob::new(&url, image))?;
        for (key, url, quiet) in companions {
            let job = self.small_job(&url, false, quiet);
            self.jobs.begin(lp, glue, key, job)?;
        }
        if let Some(stripped) = self.stripped_name.clone() {
            for side in Side::ALL {
                if side.wanted(&self.side_files) {
                    let url = names::url_change_last_component(
                        &self.url,
                        &format!("{stripped}{}", side.suffix()),
                    )?;
                    let job = self.small_job(&url, self.verify != Verify::No, false);
                    self.jobs.begin(lp, glue, UrlJob::Side(side), job)?;
                }
            }
        }
        Ok(())
    }

    /// A job became complete. `Some(Ok)` when every job is done, `Some(Err)` when this one
    /// failed and the pull is over (the reason is logged here), `None` while others still
    /// run. A `.sha256` file that is not there is replaced by `SHA256SUMS` (v252).
    pub fn on_job_complete<D: JobOwner>(
        &mut self,
        lp: &mut EventLoop<D>,
        glue: &mut CurlGlue,
        key: UrlJob,
    ) -> Option<Result<()>> {
        let job = self.jobs.get(key)?;
        if let Some(e) = job.error() {
            let e = e.clone();
            let url = job.url().to_string();
            match (key, self.dialect) {
                (UrlJob::Checksum, Dialect::V252)
                    if self.style == ChecksumStyle::PerFile && e.errno() == libc::ENOMEDIUM =>
                {
                    log::debug!("Got 404 for {url}, now trying to get SHA256SUMS instead.");
                    self.style = ChecksumStyle::PerDirectory;
                    let restarted = names::url_change_last_component(&self.url, "SHA256SUMS")
                        .and_then(|sums| {
                            let job = self.small_job(&sums, false, false);
                            self.jobs.begin(lp, glue, UrlJob::Checksum, job)
                        });
                    return restarted.err().map(Err);
                }
                (UrlJob::Checksum, _) => {
                    return Some(Err(log_error_errno!(
                        e,
                        "Failed to retrieve SHA256 checksum, cannot verify. (Try --verify=no?)"
                    )))
                }
                (UrlJob::Signature, Dialect::V219) => {
                    return Some(Err(log_error_errno!(
                        e,
                        "Failed to retrieve signature file, cannot verify. (Try --verify=no?)"
                    )))
                }
                (UrlJob::Signature, Dialect::V252) => {
                    log::debug!("Signature job for {url} failed, proceeding for now.");
                }
                // Debian's 252 says so for a 404 too: the "(Wrong URL?)" its code has for
                // ENOMEDIUM is never reached (observed by tests/pull_differential.rs).
                (UrlJob::Image, Dialect::V252) => {
                    return Some(Err(log_error_errno!(e, "Failed to retrieve image file.")))
                }
                (UrlJob::Image, _) => {
                    return Some(Err(log_error_errno!(
                        e,
                        "Failed to retrieve image file. (Wrong URL?)"
                    )))
                }
                (UrlJob::Side(side), _) => log::info!("{}", side.absent_message()),
            }
        }
        let all_done = self.jobs.iter().all(|(_, j)| j.is_complete());
        all_done.then_some(Ok(()))
    }

    /// The side files that were fetched, with their contents.
    pub fn side_files(&self) -> Vec<Fetched> {
        Side::ALL
            .into_iter()
            .filter_map(|side| {
                let job = self.jobs.get(UrlJob::Side(side))?;
                (job.error().is_none() && job.is_complete()).then(|| Fetched {
                    side,
                    content: job.payload().to_vec(),
                    url: job.url().to_string(),
                    etag: job.etag().map(str::to_string),
                })
            })
            .collect()
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

    /// Spec §5.2 checksum check of a fresh download (nothing to do for `--verify=no`):
    /// the image's, and under systemd-pull each fetched side file's, or the literal
    /// checksum. Cheap: a search through a file of at most 1 MiB.
    pub fn verify_checksum(&self) -> Result<()> {
        let sha256_of = |job: &ImportJob| {
            job.checksum()
                .map(str::to_string)
                .ok_or_else(|| log_error_errno!(Error::new(libc::EIO), "Failed to get checksum."))
        };
        let image = self
            .image()
            .ok_or_else(|| log_error_errno!(Error::new(libc::EIO), "Failed to get checksum."))?;
        // v252 finds a missing SHA256SUMS.gpg before it checks any checksum.
        if self.dialect == Dialect::V252 {
            if let Some(Err(e)) = self.signature_inputs() {
                return Err(e);
            }
        }
        match self.verify {
            Verify::No => Ok(()),
            Verify::Literal(expected) => {
                verify::verify_literal(&expected, &self.url, &sha256_of(image)?)
            }
            Verify::Checksum | Verify::Signature => {
                let sums = self
                    .jobs
                    .get(UrlJob::Checksum)
                    .map(|j| j.payload())
                    .unwrap_or_default();
                verify::verify_checksum_as(sums, &self.url, &sha256_of(image)?, self.dialect)?;
                for side in Side::ALL {
                    let Some(job) = self.jobs.get(UrlJob::Side(side)) else {
                        continue;
                    };
                    if job.error().is_none() {
                        verify::verify_checksum_as(
                            sums,
                            job.url(),
                            &sha256_of(job)?,
                            self.dialect,
                        )?;
                    }
                }
                Ok(())
            }
        }
    }

    /// What the gpg check needs (`SHA256SUMS`, then its signature, `None` for an
    /// inline-signed `.sha256`), for `--verify=signature` only. `Some(Err)` when the
    /// signature file is needed but could not be fetched.
    #[allow(clippy::type_complexity)]
    fn signature_inputs(&self) -> Option<Result<(Vec<u8>, Option<Vec<u8>>)>> {
        if self.verify != Verify::Signature {
            return None;
        }
        let payload = |key| {
            self.jobs
                .get(key)
                .map(|j| j.payload().to_vec())
                .unwrap_or_default()
        };
        let sums = payload(UrlJob::Checksum);
        if self.style == ChecksumStyle::PerFile {
            return Some(Ok((sums, None)));
        }
        if let Some(e) = self.jobs.get(UrlJob::Signature).and_then(|j| j.error()) {
            return Some(Err(log_error_errno!(
                e.clone(),
                "Failed to retrieve signature file, cannot verify. (Try --verify=no?)"
            )));
        }
        Some(Ok((sums, Some(payload(UrlJob::Signature)))))
    }

    /// Overall progress while downloading: each companion is worth 5 %, the image the rest
    /// of the plan's download share.
    fn download_percent(&self) -> u32 {
        let mut image_share = self.plan.download;
        let mut percent = 0;
        for (key, job) in self.jobs.iter() {
            let share = match key {
                UrlJob::Image => continue,
                UrlJob::Side(side) => side.share(),
                _ => COMPANION_SHARE,
            };
            percent += job.progress_percent() * share / 100;
            image_share = image_share.saturating_sub(share);
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

/// The gpg check of `SHA256SUMS` (or the inline-signed `.sha256`), as work for a task
/// (it blocks), for `--verify=signature` only. `test_keyring` replaces the system's
/// keyring (a test setting; see [`verify::keyring_path`]).
pub fn signature_check(
    downloads: &UrlDownloads,
    test_keyring: Option<PathBuf>,
) -> Option<Result<impl FnOnce(&AtomicBool) -> Result<()> + Send + 'static>> {
    let (sums, signature) = match downloads.signature_inputs()? {
        Ok(inputs) => inputs,
        Err(e) => return Some(Err(e)),
    };
    let dialect = downloads.dialect;
    Some(Ok(move |cancel: &AtomicBool| {
        let keyring = verify::keyring_path(test_keyring.as_deref());
        verify::verify_signature_as(&sums, signature.as_deref(), &keyring, Some(cancel), dialect)
    }))
}

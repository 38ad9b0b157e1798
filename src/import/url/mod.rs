//! pull-tar and pull-raw: images downloaded from a URL (spec §5), with their `SHA256SUMS`
//! and its signature, kept in a download cache under the image root.
//!
//! The files, each using only those listed after it:
//! * `tar.rs`, `raw.rs`: what each of the two adds ([`tar::Tar`], [`raw::Raw`]);
//! * `pull.rs`: the importer both are, [`pull::UrlImport`], apart from their flavor;
//! * `downloads.rs`: the image, `SHA256SUMS` and `SHA256SUMS.gpg` jobs, their failure
//!   messages, the checksum and signature checks, the download progress;
//! * `verify.rs`: the checks themselves (SHA256SUMS lines, gpg);
//! * `qcow2/`: the qcow2 → raw conversion pull-raw applies.

pub mod downloads;
pub mod pull;
pub mod qcow2;
pub mod raw;
pub mod tar;
pub mod verify;

use std::path::PathBuf;

use crate::curl_glue::CurlSettings;
use crate::util::test_seams::Hold;

pub use raw::RawImport;
pub use tar::TarImport;

/// `--verify=` modes. `sum` (seed) and `checksum` (v219) are the same.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verify {
    No,
    Checksum,
    Signature,
}

impl Verify {
    /// Parse a `--verify=` value.
    pub fn parse(s: &str) -> Option<Verify> {
        match s {
            "no" => Some(Verify::No),
            "sum" | "checksum" => Some(Verify::Checksum),
            "signature" => Some(Verify::Signature),
            _ => None,
        }
    }
}

/// What pull-tar or pull-raw is asked to do, validated by the command line.
#[derive(Clone, Debug)]
pub struct UrlRequest {
    pub url: String,
    /// The local image name, `None` for "download into the cache only".
    pub local: Option<String>,
    pub image_root: PathBuf,
    /// Replace an existing local image.
    pub force: bool,
    pub verify: Verify,
    /// What the easy handles get.
    pub curl: CurlSettings,
    /// Test setting: the keyring gpg is given instead of the system's.
    pub keyring: Option<PathBuf>,
    /// Test setting: where a step's task waits to be cancelled.
    pub hold: Option<Hold>,
}

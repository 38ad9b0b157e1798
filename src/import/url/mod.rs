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
pub mod side;
pub mod tar;
pub mod verify;

use std::path::PathBuf;

use crate::curl_glue::CurlSettings;
use crate::import::Dialect;
use crate::util::test_seams::Hold;

pub use raw::RawImport;
pub use tar::TarImport;

/// `--verify=` modes. `sum` (seed) and `checksum` (v219) are the same.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verify {
    No,
    Checksum,
    Signature,
    /// systemd-pull's literal SHA-256 of the download (`--verify=<64 hex>`): no checksum
    /// or signature file is fetched, the image's digest is compared with this one.
    Literal([u8; 32]),
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
    /// Whose messages and progress format the pull follows.
    pub dialect: Dialect,
    /// What systemd-pull's options add (the seed's pulls use [`PullOptions::SEED`]).
    pub options: PullOptions,
    /// systemd-pull's `--direct` (raw): the image is written in place, no cache.
    pub direct: Option<Direct>,
}

/// Where `--direct` writes a raw image: straight into a file or block device, without a
/// cache entry, a temporary name or side files (modern-systemd.md §1.2, §1.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Direct {
    /// The file or block device (created if missing unless at an offset), `None` for
    /// stdout.
    pub path: Option<PathBuf>,
    /// `--offset=`: write at this offset of an existing file, leaving the rest of it (its
    /// size, mode and xattrs) alone.
    pub offset: Option<u64>,
}

/// Share of the overall progress each companion download stands for (v219).
const COMPANION_SHARE: u32 = 5;

/// The side files systemd-pull fetches next to the image (all optional downloads).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SideFiles {
    /// `NAME.nspawn` (tar and raw).
    pub settings: bool,
    /// `NAME.roothash` (raw).
    pub roothash: bool,
    /// `NAME.roothash.p7s` (raw).
    pub roothash_signature: bool,
    /// `NAME.verity` (raw).
    pub verity: bool,
}

/// systemd-pull's options for a tar or raw pull (modern-systemd.md §1.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PullOptions {
    pub side_files: SideFiles,
    /// `--read-only`: the local image is made read-only too.
    pub read_only: bool,
    /// `--keep-download=`: keep the download as a read-only cache entry and copy it to
    /// the local image; without it the download is moved there.
    pub keep_download: bool,
    /// `--sync=`: sync what was written before finishing.
    pub sync: bool,
    /// `--convert-qcow2=` (raw).
    pub convert_qcow2: bool,
    /// `--btrfs-subvol=`, `--btrfs-quota=` (tar).
    pub btrfs_subvol: bool,
    pub btrfs_quota: bool,
    /// `--size-max=`: the cap on the uncompressed image (raw).
    pub size_max: Option<u64>,
    /// `--force` (tar `--direct` removes what is there first).
    pub force: bool,
}

impl PullOptions {
    /// What the seed's pull-tar and pull-raw do: no side files, a kept read-only cache.
    pub const SEED: PullOptions = PullOptions {
        side_files: SideFiles {
            settings: false,
            roothash: false,
            roothash_signature: false,
            verity: false,
        },
        read_only: false,
        keep_download: true,
        sync: true,
        convert_qcow2: true,
        btrfs_subvol: true,
        btrfs_quota: true,
        size_max: None,
        force: false,
    };
}

//! pull-oci: images from today's registries (Registry v2 / OCI distribution).
//!
//! `systemd-import pull-oci REF [LOCAL]` with `--image-root=`, `--force`,
//! `--platform=OS/ARCH[/VARIANT]` and `--max-concurrent-downloads=N`. REF follows docker's
//! grammar ([`reference`]); LOCAL defaults to the last path component, and `-` or an
//! empty LOCAL means "no local image" (on btrfs the verified layers are still cached).
//!
//! Modules, each below the ones after it:
//! * what is asked for: [`reference`], [`digest`], [`platform`];
//! * who we are: [`encoding`], [`auth`], [`credentials`];
//! * what the registry says: [`manifest`], [`config`], [`registry_error`];
//! * a layer on its way: [`spool`] (a blob between the network and the unpacker),
//!   [`apply`] (one layer onto the tree), [`finish`] (the local image and its settings
//!   files);
//! * the pull: [`request`] (what to pull, each request's job), [`session`] (authorization
//!   and what becomes of a failed request), [`blobs`] (the blob queue), [`layers`] (the
//!   layer stack and its storage), and [`importer`] (the state machine on the loop).
//!
//! Decisions (see also the README's compatibility section):
//! * registries are reached over https only, loopback ones too; a custom CA goes in
//!   `SSL_CERT_FILE`;
//! * OCI and Docker schema 2 manifests, indexes and lists; schema 1 is refused; a nested
//!   index is refused;
//! * layer compression is detected from the blob (gzip, zstd, xz, bzip2 or none) after the
//!   media type was checked to be a tar layer type;
//! * foreign layers' `urls` (http and https ones) are tried first, without credentials,
//!   then the registry;
//! * credential helpers (`credsStore`, `credHelpers`) are not run;
//! * `--verify=` does not apply: every digest is always verified;
//! * on btrfs the applied layers are cached as `.oci-chain-<ChainID hex>` read-only
//!   subvolumes (systemd v260 keeps unflattened `.oci-sha256:<hex>` directories instead);
//!   elsewhere nothing is cached, and `-` as LOCAL verifies the image and keeps nothing.

pub mod apply;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod credentials;
pub mod digest;
pub mod encoding;
pub mod finish;
pub mod importer;
pub mod layers;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod registry_error;
pub mod request;
pub mod session;
pub mod spool;

use crate::cli::Settings;
use importer::OciImport;
use platform::Platform;
use reference::{Reference, ReferenceError};
use request::{PullRequest, DEFAULT_CONCURRENT_DOWNLOADS};

/// Run the verb on its words (`REF [LOCAL]`); returns the exit status.
pub fn pull(settings: &Settings, args: &[String]) -> i32 {
    let Ok(req) = validate(settings, args) else {
        return 1;
    };
    match OciImport::new(req) {
        Ok(importer) => crate::cli::run_importer(importer),
        Err(e) => {
            log::error!("Failed to allocate importer: {e}");
            1
        }
    }
}

/// The command-line checks, in the style of the other verbs. `Err(())`: logged, exit 1.
fn validate(settings: &Settings, args: &[String]) -> Result<PullRequest, ()> {
    let text = args.first().map(String::as_str).unwrap_or("");
    let reference = Reference::parse(text).map_err(|e| match e {
        ReferenceError::Invalid => log::error!("Reference '{text}' is not valid."),
        ReferenceError::UnsupportedDigest(algorithm) => log::error!(
            "Reference '{text}' uses the digest algorithm '{algorithm}', only sha256 is supported."
        ),
    })?;
    let platform = match &settings.platform {
        Some(p) => Platform::parse(p).ok_or_else(|| {
            log::error!("Platform '{p}' is not valid, expected OS/ARCH[/VARIANT].");
        })?,
        None => Platform::native(),
    };
    let local = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| reference.local_name().to_string());
    let local = if local.is_empty() || local == "-" {
        log::info!("Pulling '{reference}'.");
        None
    } else {
        crate::cli::check_local(settings, &local)?;
        log::info!("Pulling '{reference}', saving as '{local}'.");
        Some(local)
    };
    let credentials = credentials::find(&reference);
    if let Some((c, path)) = &credentials {
        log::debug!("Using credentials of '{}' from {}.", c.user, path.display());
    }
    Ok(PullRequest {
        reference,
        local,
        image_root: settings.image_root.clone(),
        force: settings.force,
        platform,
        max_downloads: settings
            .max_concurrent_downloads
            .unwrap_or(DEFAULT_CONCURRENT_DOWNLOADS),
        credentials,
        curl: settings.curl.clone(),
    })
}

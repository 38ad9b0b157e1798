//! pull-oci: images from today's registries (Registry v2 / OCI distribution).
//!
//! `systemd-import pull-oci REF [LOCAL]` with `--image-root=`, `--force`,
//! `--platform=OS/ARCH[/VARIANT]` and `--max-concurrent-downloads=N`. REF follows docker's
//! grammar ([`reference`]); LOCAL defaults to the last path component, and `-` or an
//! empty LOCAL means "no local image" (on btrfs the verified layers are still cached).
//!
//! Modules: [`reference`], [`digest`] and [`platform`] (what is asked for), [`auth`],
//! [`credentials`] and [`encoding`] (who we are), [`manifest`], [`config`] and
//! [`registry_error`] (what the registry says), [`spool`] (a blob between the network and
//! the unpacker), [`apply`] (one layer onto the tree) and [`importer`] (the state machine
//! on the loop).
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
pub mod config;
pub mod credential_helper;
pub mod credentials;
pub mod digest;
pub mod encoding;
pub mod importer;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod registry;
pub mod registry_error;
pub mod spool;

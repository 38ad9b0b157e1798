//! pull-oci: images from today's registries (Registry v2 / OCI distribution).
//!
//! `systemd-import pull-oci REF [LOCAL]` with `--image-root=`, `--force`,
//! `--platform=OS/ARCH[/VARIANT]`, `--max-concurrent-downloads=N`,
//! `--download-ranges=N`, `--download-range-size=BYTES` and `--registry-config=DIR`. REF follows docker's
//! grammar ([`reference`](mod@reference)); LOCAL defaults to the last path component, and `-` or an
//! empty LOCAL means "no local image" (on btrfs the verified layers are still cached).
//!
//! Modules, each below the ones after it:
//! * what is asked for: [`reference`](mod@reference), [`digest`], [`platform`];
//! * who we are: [`encoding`], [`auth`], [`credentials`];
//! * what the registry says: [`manifest`], [`config`], [`registry_error`];
//! * a layer on its way: [`spool`] (a blob between the network and the unpacker),
//!   [`ranges`] (a big blob fetched as several ranges at once),
//!   [`apply`] (one layer onto the tree), [`writeback`] (btrfs: its data on the way to
//!   the disk while it is applied), [`finish`] (the local image and its settings
//!   files);
//! * where from: [`registry`] (registries.conf, hosts.toml, certs.d, systemd's
//!   `.oci-registry` maps: the candidates and endpoints of a reference),
//!   [`credential_helper`];
//! * the pull: [`request`] (what to pull, each request's job), [`route`] (which endpoint
//!   requests go to, and the next one when it fails), [`session`] (authorization and what
//!   becomes of a failed request), [`blobs`] (the blob queue), [`layers`] (the layer stack
//!   and its storage), and [`importer`] (the state machine on the loop).
//!
//! Decisions (see also the README's compatibility section):
//! * registries are reached over https only, loopback ones too, unless the registry
//!   configuration marks one `insecure`; a custom CA goes in `SSL_CERT_FILE`, or per host in
//!   certs.d or hosts.toml (added to the system trust);
//! * mirrors are tried before the registry, each once, a tag only where the configuration
//!   allows; whatever they send is verified by digest;
//! * OCI and Docker schema 2 manifests, indexes and lists; schema 1 is refused; a nested
//!   index is refused;
//! * layer compression is detected from the blob (gzip, zstd, xz, bzip2 or none) after the
//!   media type was checked to be a tar layer type;
//! * foreign layers' `urls` (http and https ones) are tried first, without credentials,
//!   then the registry;
//! * credential helpers (`credsStore`, `credHelpers`, registries.conf's
//!   `credential-helpers`) are run, per endpoint host; one that fails is a warning;
//! * `--verify=` does not apply: every digest is always verified;
//! * on btrfs the applied layers are cached as `.oci-chain-<ChainID hex>` read-only
//!   subvolumes (systemd v260 keeps unflattened `.oci-sha256:<hex>` directories instead);
//!   elsewhere nothing is cached, and `-` as LOCAL verifies the image and keeps nothing.

pub mod apply;
pub mod archive;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod credential_helper;
pub mod credentials;
pub mod digest;
pub mod encoding;
pub mod finish;
pub mod importer;
pub mod layers;
pub mod manifest;
pub mod platform;
pub mod ranges;
pub mod reference;
pub mod registry;
pub mod registry_error;
pub mod request;
pub mod route;
pub mod session;
pub mod spool;
pub mod writeback;

pub use importer::OciImport;
pub use request::{PullRequest, DEFAULT_CONCURRENT_DOWNLOADS};

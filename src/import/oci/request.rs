//! What pull-oci is asked to pull ([`PullRequest`]) and the registry requests it makes:
//! their keys ([`Key`]) and the [`ImportJob`] of each but the layer blobs (those are
//! [`blobs`](super::blobs)'): URL, headers, size limits and where the body goes.
//!
//! Small bodies (ping, token, manifest, config) stay in memory. The manifest and the config
//! go through a bounded sink that refuses more than a limit with pull-oci's own message
//! and hashes what it kept on the job's worker thread, so the loop thread never hashes.

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::auth;
use super::credentials::CredentialStore;
use super::digest::Digest;
use super::encoding::percent_encode;
use super::manifest::{self, Descriptor};
use super::platform::Platform;
use super::reference::Reference;
use super::registry::Resolution;
use super::route::Source;
use crate::curl_glue::{CurlSettings, Transport};
use crate::import::job::{Expected, ImportJob, JobOptions, Sink, DEFAULT_SIZE_MAX};
use crate::log_error_errno;
use crate::util::error::Error;
use crate::util::format::format_bytes;

/// Default number of blobs downloading at once (containers/image's choice).
pub const DEFAULT_CONCURRENT_DOWNLOADS: usize = 6;
/// Largest ping or token response we read.
const SMALL_BODY_MAX: u64 = 1 << 20;

/// What to pull, validated by the command line.
pub struct PullRequest {
    /// The reference as the user gave it (normalized): the default local name, messages.
    pub reference: Reference,
    /// Where it is pulled from: the registry configuration's candidates and endpoints.
    pub resolution: Resolution,
    /// `None`: layers only (kept on btrfs), no local image.
    pub local: Option<String>,
    pub image_root: PathBuf,
    pub force: bool,
    pub platform: Platform,
    pub max_downloads: usize,
    /// How big layer blobs are fetched in parts (`--download-ranges=`).
    pub ranges: super::ranges::RangePlan,
    /// What one layer may expand to (`--layer-size-max=`, default 8 GiB).
    pub layer_size_max: u64,
    /// The auth files and credential helpers credentials are looked up in, per endpoint.
    pub credentials: CredentialStore,
    /// What the easy handles get.
    pub curl: CurlSettings,
    /// Test setting: the first retry's delay (see `RetryPolicy::with_first_delay`).
    pub retry_delay: Option<Duration>,
}

/// The `client_id` of the OAuth2 token request.
const OAUTH_CLIENT_ID: &str = "systemd-import";

/// What a token request presents.
pub enum TokenGrant {
    Anonymous,
    /// `Basic …` of the user's password.
    Basic(String),
    /// An identity (refresh) token from a credential helper or an auth file.
    RefreshToken(String),
}

/// The requests of a pull, as keys of the job set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Key {
    Ping,
    Token,
    Manifest,
    Config,
    /// A layer blob, by its index in the blob queue.
    Blob(usize),
    /// A part of a layer blob fetched in ranges: the blob's index, the part's.
    Part(usize, usize),
}

/// A body kept in memory, with the digest of its bytes.
pub struct Body {
    pub bytes: Vec<u8>,
    pub digest: Digest,
}

impl Default for Body {
    /// The empty body (what a job that received nothing leaves).
    fn default() -> Self {
        Body {
            bytes: Vec::new(),
            digest: Digest::of(&[]),
        }
    }
}

/// Where a bounded sink leaves its body, for the loop thread to take.
pub type BodySlot = Arc<Mutex<Body>>;

/// Take what a bounded sink left in `slot`.
pub fn take_body(slot: &BodySlot) -> Body {
    std::mem::take(&mut *slot.lock().unwrap_or_else(|e| e.into_inner()))
}

/// `GET /v2/`: is it a Registry v2, does it want credentials?
pub fn ping(src: &Source) -> ImportJob {
    let options = small_job(src, Vec::new(), Sink::Memory, SMALL_BODY_MAX);
    ImportJob::new(&format!("{}/", src.endpoint.base_url), options)
}

/// The token request to a Bearer challenge's `realm` (with its `service`), for pulling the
/// repository at the endpoint. With a password the credentials go with it; an identity
/// token is traded for an access token with the OAuth2 form, `POST` to the realm.
pub fn token(src: &Source, realm: &str, service: Option<&str>, grant: TokenGrant) -> ImportJob {
    let scope = format!("repository:{}:pull", src.endpoint.repository);
    let (url, headers, form) = match grant {
        TokenGrant::Basic(basic) => (
            auth::token_url(realm, service, &[scope]),
            vec![format!("Authorization: {basic}")],
            None,
        ),
        TokenGrant::Anonymous => (auth::token_url(realm, service, &[scope]), Vec::new(), None),
        TokenGrant::RefreshToken(token) => {
            let mut form = format!(
                "grant_type=refresh_token&refresh_token={}",
                percent_encode(&token)
            );
            if let Some(service) = service {
                form.push_str(&format!("&service={}", percent_encode(service)));
            }
            form.push_str(&format!(
                "&scope={}&client_id={OAUTH_CLIENT_ID}",
                percent_encode(&scope)
            ));
            (realm.to_string(), Vec::new(), Some(form))
        }
    };
    let mut options = small_job(src, headers, Sink::Memory, SMALL_BODY_MAX);
    options.post_form = form;
    // The realm is another server: it gets the endpoint's trust, not its client
    // certificate, and is always verified (credentials may go there).
    options.transport = Transport {
        ca_bundle: src.transport.ca_bundle.clone(),
        connect_timeout: src.transport.connect_timeout,
        ..Transport::default()
    };
    ImportJob::new(&url, options)
}

/// The manifest (or index) of the reference, or the one an index `entry` names. A manifest
/// fetched by digest must have that digest (and the entry's size); the job checks it.
pub fn manifest(
    src: &Source,
    authorization: Option<String>,
    entry: Option<&Descriptor>,
    slot: BodySlot,
) -> ImportJob {
    let mut headers = vec![manifest::ACCEPT.to_string()];
    headers.extend(authorization);
    let target = match entry {
        Some(e) => e.digest.to_string(),
        None => src.image.manifest_reference(),
    };
    let too_large = format!(
        "Manifest of '{}' is larger than {}, refusing.",
        src.image,
        format_bytes(manifest::MANIFEST_MAX)
    );
    let sink = bounded_sink(manifest::MANIFEST_MAX, slot, too_large);
    let mut options = small_job(src, headers, sink, DEFAULT_SIZE_MAX);
    options.expected = manifest_expectation(&src.image, entry);
    ImportJob::new(&src.endpoint.manifest_url(&target), options)
}

/// What a manifest must be: the index entry it was chosen from, or the digest the
/// reference names. By tag nothing: the registry's claim is checked on arrival.
fn manifest_expectation(image: &Reference, entry: Option<&Descriptor>) -> Option<Expected> {
    let (want, size, what) = match entry {
        Some(e) => (
            e.digest.clone(),
            Some(e.size),
            format!("manifest {}", e.digest),
        ),
        None => (
            image.digest()?.clone(),
            None,
            format!("manifest of '{image}'"),
        ),
    };
    let hex = want.hex().to_string();
    Some(Expected::new(size, Some(hex)).worded(move |m| {
        if m.digest_differs() {
            format!(
                "Digest mismatch for {what}: expected {want}, got sha256:{}.",
                m.sha256.unwrap_or_default()
            )
        } else {
            format!(
                "Size mismatch for {what}: expected {} bytes, got {}.",
                m.expected_size.unwrap_or(0),
                m.size
            )
        }
    }))
}

/// The image config blob `config` describes; the job checks its size and digest.
pub fn config(
    src: &Source,
    authorization: Option<String>,
    config: &Descriptor,
    slot: BodySlot,
) -> ImportJob {
    let too_large = format!(
        "Image config {} is larger than announced, refusing.",
        config.digest
    );
    let sink = bounded_sink(config.size, slot, too_large);
    let headers = authorization.into_iter().collect();
    let mut options = small_job(src, headers, sink, DEFAULT_SIZE_MAX);
    options.expected = Some(config_expectation(config));
    ImportJob::new(&src.endpoint.blob_url(&config.digest), options)
}

/// What the config blob must be: its descriptor in the manifest (for an inline config
/// too, checked by the caller).
pub fn config_expectation(want: &Descriptor) -> Expected {
    let (digest, size) = (want.digest.clone(), want.size);
    Expected::new(Some(size), Some(digest.hex().to_string())).worded(move |m| {
        format!(
            "Image config digest mismatch: expected {digest} ({size} bytes), got sha256:{} ({} bytes).",
            m.sha256.unwrap_or_default(),
            m.size
        )
    })
}

/// The options of a small answer from `src`'s endpoint (or its token realm): taken as
/// served, HTTP errors left to us, the endpoint's headers and transport.
fn small_job(src: &Source, mut headers: Vec<String>, sink: Sink, max: u64) -> JobOptions {
    let mut options = JobOptions::new(sink);
    headers.extend(src.headers());
    options.headers = headers;
    options.transport = src.transport.clone();
    options.detect_compression = false;
    options.quiet_failures = true;
    options.compressed_max = max;
    options.uncompressed_max = max;
    options
}

/// A job sink that keeps at most `limit` bytes in memory and fails with `too_large`
/// (logged) beyond that, without reading further; what it keeps goes to `slot` with its
/// digest.
fn bounded_sink(limit: u64, slot: BodySlot, too_large: String) -> Sink {
    Sink::Stream(Box::new(move |ctx, input| {
        let refuse = || log_error_errno!(Error::new(libc::EFBIG), "{}", too_large);
        if ctx.meta.content_length.is_some_and(|len| len > limit) {
            return Err(refuse());
        }
        let mut bytes = Vec::new();
        input
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(Error::from)?;
        if bytes.len() as u64 > limit {
            return Err(refuse());
        }
        let digest = Digest::of(&bytes);
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Body { bytes, digest };
        Ok(())
    }))
}

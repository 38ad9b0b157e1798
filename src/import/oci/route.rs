//! Endpoint selection: which registry endpoint a pull's requests go to, and where they go
//! when it fails ([`Route`]).
//!
//! The endpoints are the registry configuration's [`Resolution`]: every candidate image
//! (more than one only for a short name) with its endpoints in order, mirrors first, the
//! registry last. The rules:
//! * **the manifest** named by the reference is asked for at the first endpoint that may
//!   answer it: for a tag only an endpoint with [`Endpoint::serves_tags`], for a digest
//!   any endpoint that serves content. An endpoint that fails (down, connect timeout,
//!   stalled past the low-speed limit, 5xx, 404, a login it cannot get) hands over to the
//!   next such endpoint, across candidates, until the last one, whose failure fails the
//!   pull with today's messages. Endpoints before the last are not retried: a mirror that
//!   fails is skipped at once;
//! * once it was fetched, its **candidate is fixed**: everything else is content by digest
//!   (an index's manifest, the config, the layers), fetched from the first endpoint of that
//!   candidate that serves content and has not failed yet (so a hosts.toml mirror with
//!   only `pull` serves the layers of a tag resolved at the registry), falling through to
//!   the next one of the candidate the same way;
//! * whatever a mirror sends is verified by digest, as from the registry.
//!
//! Each endpoint gets its own [`Transport`] (extra CAs, client certificate, no
//! verification, connect timeout) and its headers; credentials are looked up for its
//! `auth_host` only, by the importer, when it switches to it.

use std::sync::Arc;

use super::reference::Reference;
use super::registry::{Endpoint, Resolution};
use crate::curl_glue::{CurlSettings, Transport};
use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// One endpoint of one candidate, ready to be used.
pub struct Source {
    /// The candidate image it serves (its tag or digest is what a manifest request asks).
    pub image: Reference,
    candidate: usize,
    pub endpoint: Endpoint,
    pub transport: Transport,
    /// It failed: content is not asked from it again.
    failed: bool,
}

impl Source {
    /// The request headers this endpoint adds (hosts.toml `header`), `Name: value` each.
    pub fn headers(&self) -> impl Iterator<Item = String> + '_ {
        self.endpoint
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
    }
}

/// The endpoints of a pull and the one in use.
pub struct Route {
    sources: Vec<Source>,
    current: usize,
    /// The candidate whose manifest was fetched (then only its endpoints are used).
    chosen: Option<usize>,
}

impl Route {
    /// The endpoints of `resolution`, each with its transport built on `settings` (CA
    /// files are read now; one that cannot be read fails the pull).
    pub fn new(resolution: &Resolution, settings: &CurlSettings) -> Result<Route> {
        let mut ca_bundles: Vec<(Vec<std::path::PathBuf>, Arc<[u8]>)> = Vec::new();
        let mut sources = Vec::new();
        for (candidate, c) in resolution.candidates.iter().enumerate() {
            for endpoint in &c.endpoints {
                let tls = &endpoint.tls;
                let ca_bundle = match &tls.ca_files {
                    files if files.is_empty() => None,
                    files => match ca_bundles.iter().find(|(f, _)| f == files) {
                        Some((_, b)) => Some(b.clone()),
                        None => {
                            let b = Transport::trust_with(settings, files)
                                .map_err(|e| log_error_errno!(e.clone(), "{}.", e))?;
                            ca_bundles.push((files.clone(), b.clone()));
                            Some(b)
                        }
                    },
                };
                let transport = Transport {
                    ca_bundle,
                    client_cert: tls
                        .client_certs
                        .first()
                        .map(|c| (c.cert.clone(), c.key.clone())),
                    skip_verify: tls.skip_verify,
                    connect_timeout: endpoint.connect_timeout,
                };
                sources.push(Source {
                    image: c.image.clone(),
                    candidate,
                    endpoint: endpoint.clone(),
                    transport,
                    failed: false,
                });
            }
        }
        let mut route = Route {
            sources,
            current: 0,
            chosen: None,
        };
        route.current = route.eligible_from(0).ok_or_else(|| {
            log_error_errno!(
                Error::new(libc::ENODATA),
                "No configured endpoint may resolve '{}': every one lacks the 'resolve' capability.",
                resolution
                    .candidates
                    .first()
                    .map(|c| c.image.to_string())
                    .unwrap_or_default()
            )
        })?;
        Ok(route)
    }

    /// The endpoint in use and its index.
    pub fn current(&self) -> (usize, &Source) {
        (self.current, &self.sources[self.current])
    }

    pub fn get(&self, index: usize) -> &Source {
        &self.sources[index]
    }

    /// Whether another endpoint may take over if the current one fails.
    pub fn has_next(&self) -> bool {
        self.eligible_from(self.current + 1).is_some()
    }

    /// The current endpoint failed: use the next one (false: there is none).
    pub fn advance(&mut self) -> bool {
        self.sources[self.current].failed = true;
        match self.eligible_from(self.current + 1) {
            Some(next) => {
                self.current = next;
                true
            }
            None => false,
        }
    }

    /// The manifest the reference names was fetched from the current endpoint: its
    /// candidate is the one pulled, and content comes from the first endpoint of it that
    /// serves content and has not failed.
    pub fn choose_current(&mut self) {
        let candidate = self.sources[self.current].candidate;
        self.chosen = Some(candidate);
        if let Some(first) = self.eligible_from(0) {
            self.current = first;
        }
    }

    /// The first endpoint at or after `from` that may serve the next request.
    fn eligible_from(&self, from: usize) -> Option<usize> {
        (from..self.sources.len()).find(|&i| {
            let s = &self.sources[i];
            if s.failed || !s.endpoint.capabilities.pull {
                return false;
            }
            match self.chosen {
                Some(c) => s.candidate == c,
                None => s.image.digest().is_some() || s.endpoint.serves_tags,
            }
        })
    }

    /// Whether the manifest the reference names is still looked for (a tag then needs an
    /// endpoint that serves tags).
    pub fn is_resolving(&self) -> bool {
        self.chosen.is_none()
    }
}

//! A fault-injecting HTTPS reverse proxy in front of a [`Registry`]: every request goes to
//! a rule, which may forward it (and tamper with the answer) or answer by itself.
//!
//! ```ignore
//! let reg = Arc::new(Registry::start(RegistryOptions::plain()));
//! let proxy = FaultProxy::start(&reg, |req, upstream| {
//!     if req.path.ends_with("/manifests/latest") { Response::status(500) } else { upstream() }
//! });
//! // pull from proxy.host() with SSL_CERT_FILE=reg.ca().ca_pem_path()
//! ```
//!
//! The proxy presents the registry's certificate (same CA), so the program under test
//! trusts both alike. Its request log ([`FaultProxy::requests`]) is what the program sent.

use std::sync::Arc;

use super::http::{forward, HttpServer, Request, Response};
use super::registry::Registry;

/// A running proxy. Dropping it stops it.
pub struct FaultProxy {
    server: HttpServer,
}

impl FaultProxy {
    /// Start a proxy for `registry`. `rule(req, upstream)` answers each request; calling
    /// `upstream()` forwards it unchanged and returns the registry's answer.
    pub fn start(
        registry: &Arc<Registry>,
        rule: impl Fn(&Request, &dyn Fn() -> Response) -> Response + Send + Sync + 'static,
    ) -> FaultProxy {
        let reg = Arc::clone(registry);
        let server = HttpServer::start(Some(registry.ca()), move |req| {
            let upstream = || forward(req, &reg.url(), Some(reg.ca()));
            rule(req, &upstream)
        });
        FaultProxy { server }
    }

    /// A proxy in front of `registry` that answers every request for blob `digest` with a
    /// 307 to `location` (blob storage elsewhere, as registries behind a CDN do) and
    /// passes everything else on.
    pub fn redirecting_blob(
        registry: &Arc<Registry>,
        digest: &str,
        location: String,
    ) -> FaultProxy {
        let path = format!("/blobs/{digest}");
        FaultProxy::start(registry, move |req, upstream| {
            if req.path.ends_with(&path) {
                return Response::redirect(307, &location);
            }
            upstream()
        })
    }

    /// `127.0.0.1:PORT`: the registry part of references through the proxy.
    pub fn host(&self) -> String {
        self.server.host()
    }

    /// Every request the proxy received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    /// The requests whose path contains `needle`.
    pub fn requests_for(&self, needle: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(needle))
            .collect()
    }

    /// The underlying server.
    pub fn server(&self) -> &HttpServer {
        &self.server
    }
}

/// Forward `req` to `registry` without its `Range` header: the registry answers 200 with
/// the whole blob, as a server that ignores Range requests does.
pub fn forward_without_range(req: &Request, registry: &Registry) -> Response {
    let mut plain = req.clone();
    plain
        .headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("Range"));
    forward(&plain, &registry.url(), Some(registry.ca()))
}

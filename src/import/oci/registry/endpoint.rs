//! What resolving a reference yields: [`Endpoint`]s, each one base URL of the registry API
//! with everything needed to talk to it (TLS files, extra headers, the host credentials are
//! looked up for), and whether it may answer a tag or only content by digest.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::import::oci::digest::Digest;
use crate::import::oci::encoding::percent_encode;

/// `https` or plain `http`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// containerd's host capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch content by digest (manifests, blobs).
    pub pull: bool,
    /// Map a tag to a digest.
    pub resolve: bool,
    /// Accept uploads (never used by a puller; kept for messages).
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// A client certificate and its key (`None`: the key is in the certificate file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: Option<PathBuf>,
}

/// TLS settings for one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// Extra CA files, trusted in addition to the system's (as containerd and podman do).
    pub ca_files: Vec<PathBuf>,
    /// Client certificates, in preference order (libcurl presents one: the first).
    pub client_certs: Vec<ClientCert>,
    /// Do not verify the server's certificate (`insecure`, `skip_verify`).
    pub skip_verify: bool,
}

/// Whether an endpoint stands in for the registry or is the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Mirror,
    Origin,
}

/// One base URL to try, in the order [`super::RegistryConfig::resolve`] returns them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The API root without a trailing `/`: `https://host[:port]/v2`, or with a hosts.toml
    /// path (`https://harbor.example/v2/dockerhub`, as written with `override_path`).
    pub base_url: String,
    /// The scheme of `base_url`.
    pub scheme: Scheme,
    /// `host[:port]` of `base_url`.
    pub host: String,
    /// The repository path at this endpoint (a registries.conf location may rewrite it).
    pub repository: String,
    /// containerd's `ns=` query parameter (the registry a hosts.toml mirror stands in for).
    pub ns: Option<String>,
    /// The registry name credentials are looked up for: the endpoint's own host (Docker
    /// Hub's origin: `docker.io`). Credentials never go to another host.
    pub auth_host: String,
    pub tls: Tls,
    /// Extra request headers (hosts.toml `header`), in order; a name may repeat.
    pub headers: Vec<(String, String)>,
    pub capabilities: Capabilities,
    /// Whether a tag may be resolved here. A `digest-only` registries.conf mirror is never
    /// returned for a tag pull at all; a hosts.toml host without `resolve` is, with this
    /// false, to serve the content of a tag pull by digest once the tag was resolved at an
    /// endpoint where this is true.
    pub serves_tags: bool,
    pub role: Role,
    /// hosts.toml `dial_timeout`.
    pub connect_timeout: Option<Duration>,
    /// The file that configured this endpoint, if any.
    pub configured_by: Option<PathBuf>,
}

impl Endpoint {
    /// `<base>/<repository>/manifests/<reference>` (a tag or a digest), with `ns=`.
    pub fn manifest_url(&self, reference: &str) -> String {
        self.url(&format!("manifests/{reference}"))
    }

    /// `<base>/<repository>/blobs/<digest>`, with `ns=`.
    pub fn blob_url(&self, digest: &Digest) -> String {
        self.url(&format!("blobs/{digest}"))
    }

    fn url(&self, tail: &str) -> String {
        let mut url = format!("{}/{}/{tail}", self.base_url, self.repository);
        if let Some(ns) = &self.ns {
            url.push_str("?ns=");
            url.push_str(&percent_encode(ns));
        }
        url
    }
}

impl fmt::Display for Endpoint {
    /// For the log: `mirror https://m.example/v2 (from FILE)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            Role::Mirror => "mirror",
            Role::Origin => "registry",
        };
        write!(f, "{role} {}", self.base_url)?;
        if let Some(file) = &self.configured_by {
            write!(f, " (from {})", file.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_repository_and_ns() {
        let mut e = Endpoint {
            base_url: "https://m.example:5000/v2".into(),
            scheme: Scheme::Https,
            host: "m.example:5000".into(),
            repository: "library/debian".into(),
            ns: None,
            auth_host: "m.example:5000".into(),
            tls: Tls::default(),
            headers: Vec::new(),
            capabilities: Capabilities::ALL,
            serves_tags: true,
            role: Role::Mirror,
            connect_timeout: None,
            configured_by: Some("/etc/x.toml".into()),
        };
        assert_eq!(
            e.manifest_url("12"),
            "https://m.example:5000/v2/library/debian/manifests/12"
        );
        e.ns = Some("registry.example:5000".into());
        let d = Digest::of(b"x");
        assert_eq!(
            e.blob_url(&d),
            format!(
                "https://m.example:5000/v2/library/debian/blobs/{d}?ns=registry.example%3A5000"
            )
        );
        assert_eq!(
            e.to_string(),
            "mirror https://m.example:5000/v2 (from /etc/x.toml)"
        );
    }
}

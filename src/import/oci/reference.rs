//! Image references as docker and podman read them: `[host[:port]/]path[:tag][@digest]`.
//!
//! The grammar (distribution's) is checked by [`crate::util::oci_ref`], which systemd-importd
//! shares; a digest is `sha256:` and 64 lowercase hex digits (other algorithms are refused
//! by name).
//!
//! `docker.io` and `index.docker.io` (or no host) mean Docker Hub, reached at
//! `registry-1.docker.io`, where one-component names live under `library/`. With neither
//! tag nor digest the tag is `latest`; with both, the digest decides what is pulled and the
//! manifest is verified against it.
//!
//! [`ImageName`] is the text split into its parts as written, before that normalization:
//! the registry configuration ([`super::registry`]) needs to know whether a host was named
//! at all (a short name) and the path as typed (`fedora`, not `library/fedora`).

use std::fmt;

use super::digest::{Digest, DigestError};
use crate::util::oci_ref;
pub use crate::util::oci_ref::{domain_is_valid, path_is_valid, tag_is_valid};

/// Docker Hub as references name it.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API lives.
pub const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";

/// A parsed, normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, or [`DOCKER_HUB`].
    domain: String,
    /// The repository path, `library/` added for one-component Docker Hub names.
    repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a reference was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceError {
    /// The text does not follow the grammar.
    Invalid,
    /// The digest uses this algorithm, which we do not support.
    UnsupportedDigest(String),
}

/// A reference split into its parts as written, before Docker Hub normalization and
/// short-name resolution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageName {
    /// `host[:port]` if the text names a registry (distribution's rule), as written.
    pub domain: Option<String>,
    /// The repository path as written (no `library/` added).
    pub path: String,
    /// The tag, if one was written.
    pub tag: Option<String>,
    /// The digest, if one was written.
    pub digest: Option<Digest>,
}

impl ImageName {
    /// Split `s` into its parts, checking the grammar.
    pub fn parse(s: &str) -> Result<ImageName, ReferenceError> {
        let (name_and_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                let digest = Digest::parse(d).map_err(|e| match e {
                    DigestError::Invalid => ReferenceError::Invalid,
                    DigestError::UnsupportedAlgorithm(a) => ReferenceError::UnsupportedDigest(a),
                })?;
                (n, Some(digest))
            }
            None => (s, None),
        };
        let parts = oci_ref::split_name(name_and_tag).ok_or(ReferenceError::Invalid)?;
        let (domain, path, tag) = (parts.domain, parts.path, parts.tag);
        Ok(ImageName {
            domain: domain.map(str::to_string),
            path: path.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// Whether no registry was named (`fedora`, `library/fedora`, `user/app:1`).
    pub fn is_short(&self) -> bool {
        self.domain.is_none()
    }

    /// Docker's normalization: no host or `index.docker.io` means `docker.io`, where
    /// one-component names get `library/`; neither tag nor digest means `latest`.
    pub fn into_reference(self) -> Reference {
        let mut domain = self.domain.unwrap_or_else(|| DOCKER_HUB.to_string());
        let mut repository = self.path;
        if domain == DOCKER_HUB || domain == "index.docker.io" {
            domain = DOCKER_HUB.to_string();
            if !repository.contains('/') {
                repository = format!("library/{repository}");
            }
        }
        let tag = match (self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Reference {
            domain,
            repository,
            tag,
            digest: self.digest,
        }
    }
}

impl fmt::Display for ImageName {
    /// As written: `[host/]path[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.domain {
            write!(f, "{d}/")?;
        }
        f.write_str(&self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Reference {
    /// Parse and normalize `s`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        ImageName::parse(s).map(ImageName::into_reference)
    }

    /// `host[:port]` as written, or `docker.io`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The host (and port) the registry API is reached at.
    pub fn registry_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_REGISTRY
        } else {
            &self.domain
        }
    }

    pub fn is_docker_hub(&self) -> bool {
        self.domain == DOCKER_HUB
    }

    /// The repository path, e.g. `library/debian`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest if there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The default local image name: the last path component.
    pub fn local_name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// (domain, repository, tag, digest hex)
    type Parts = (String, String, Option<String>, Option<String>);

    fn ok(input: &str) -> Parts {
        let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e:?}"));
        (
            r.domain().to_string(),
            r.repository().to_string(),
            r.tag().map(str::to_string),
            r.digest().map(|d| d.hex().to_string()),
        )
    }

    #[test]
    fn valid_references_normalize_like_docker() {
        let s = |x: &str| Some(x.to_string());
        // (input, domain, repository, tag, digest hex)
        type Row<'a> = (&'a str, &'a str, &'a str, Option<String>, Option<String>);
        let table: &[Row] = &[
            ("debian", "docker.io", "library/debian", s("latest"), None),
            ("debian:12", "docker.io", "library/debian", s("12"), None),
            (
                "docker.io/debian",
                "docker.io",
                "library/debian",
                s("latest"),
                None,
            ),
            (
                "index.docker.io/debian:sid",
                "docker.io",
                "library/debian",
                s("sid"),
                None,
            ),
            (
                "docker.io/library/debian",
                "docker.io",
                "library/debian",
                s("latest"),
                None,
            ),
            ("user/app", "docker.io", "user/app", s("latest"), None),
            (
                "user/app/sub:v1.2",
                "docker.io",
                "user/app/sub",
                s("v1.2"),
                None,
            ),
            (
                "quay.io/org/img:tag_1",
                "quay.io",
                "org/img",
                s("tag_1"),
                None,
            ),
            ("localhost/img", "localhost", "img", s("latest"), None),
            (
                "localhost:5000/img",
                "localhost:5000",
                "img",
                s("latest"),
                None,
            ),
            (
                "127.0.0.1:5000/a/b:x",
                "127.0.0.1:5000",
                "a/b",
                s("x"),
                None,
            ),
            ("[::1]:5000/img:t", "[::1]:5000", "img", s("t"), None),
            ("[fe80::1]/img", "[fe80::1]", "img", s("latest"), None),
            ("Registry/img", "Registry", "img", s("latest"), None),
            (
                "a-b.example/x__y/z--w.v_u:T-1.2",
                "a-b.example",
                "x__y/z--w.v_u",
                s("T-1.2"),
                None,
            ),
            (
                &format!("img@sha256:{HEX}"),
                "docker.io",
                "library/img",
                None,
                s(HEX),
            ),
            (
                &format!("host:1/img:t@sha256:{HEX}"),
                "host:1",
                "img",
                s("t"),
                s(HEX),
            ),
            // Without a '/', "localhost:5000" is a name and a tag, as docker reads it.
            (
                "localhost:5000",
                "docker.io",
                "library/localhost",
                s("5000"),
                None,
            ),
        ];
        for (input, domain, repo, tag, digest) in table {
            assert_eq!(
                ok(input),
                (
                    domain.to_string(),
                    repo.to_string(),
                    tag.clone(),
                    digest.clone()
                ),
                "{input}"
            );
        }
    }

    #[test]
    fn invalid_references_are_refused() {
        let long_tag = format!("img:{}", "t".repeat(129));
        let long_name = format!("h.io/{}", "a".repeat(251));
        for bad in [
            "",
            ":tag",
            "img:",
            "Img",
            "host.io/Img",
            "a//b",
            "/img",
            "img/",
            "a..b",
            "a___b",
            "a_-b",
            "-a",
            "a-",
            ".a",
            "host:port/img",
            "host:0/img",
            "host:65536/img",
            "-host.io/img",
            "host-.io/img",
            "host..io/img",
            "[::1/img",
            "[nothex]/img",
            "img:.tag",
            "img:-tag",
            "img:t@g",
            "img@sha256:abc",
            "img@sha256:",
            &format!("img@sha256:{}", HEX.to_uppercase()),
            "img@",
            "img with space",
            "img\u{e9}",
            &long_tag,
            &long_name,
        ] {
            assert_eq!(
                Reference::parse(bad),
                Err(ReferenceError::Invalid),
                "{bad:?} must be refused"
            );
        }
        assert_eq!(
            Reference::parse(&format!("img@sha512:{HEX}{HEX}")),
            Err(ReferenceError::UnsupportedDigest("sha512".into()))
        );
        // At the limits: a 128-character tag and a 255-character name are fine.
        assert!(Reference::parse(&format!("img:{}", "t".repeat(128))).is_ok());
        assert!(Reference::parse(&format!("h.io/{}", "a".repeat(250))).is_ok());
    }

    #[test]
    fn image_names_keep_the_parts_as_written() {
        // (input, domain, path, tag, is_short); each displays as its input.
        type Row<'a> = (&'a str, Option<&'a str>, &'a str, Option<&'a str>, bool);
        let table: &[Row] = &[
            ("fedora", None, "fedora", None, true),
            (
                "library/fedora:39",
                None,
                "library/fedora",
                Some("39"),
                true,
            ),
            ("user/app", None, "user/app", None, true),
            ("docker.io/debian", Some("docker.io"), "debian", None, false),
            (
                "localhost/img:t",
                Some("localhost"),
                "img",
                Some("t"),
                false,
            ),
            ("h.io:5000/a/b", Some("h.io:5000"), "a/b", None, false),
        ];
        for (input, domain, path, tag, short) in table {
            let n = ImageName::parse(input).unwrap();
            assert_eq!(n.domain.as_deref(), *domain, "{input}");
            assert_eq!(n.path, *path, "{input}");
            assert_eq!(n.tag.as_deref(), *tag, "{input}");
            assert_eq!(n.is_short(), *short, "{input}");
            assert_eq!(n.to_string(), *input, "{input}");
            assert_eq!(n.into_reference(), Reference::parse(input).unwrap());
        }
        assert_eq!(ImageName::parse("Img"), Err(ReferenceError::Invalid));
    }

    #[test]
    fn hosts_local_names_and_display() {
        let r = Reference::parse("debian").unwrap();
        assert_eq!(r.registry_host(), "registry-1.docker.io");
        assert_eq!(r.local_name(), "debian");
        assert_eq!(r.manifest_reference(), "latest");
        assert_eq!(r.to_string(), "docker.io/library/debian:latest");

        let r = Reference::parse(&format!("127.0.0.1:5000/a/b-c:1@sha256:{HEX}")).unwrap();
        assert_eq!(r.registry_host(), "127.0.0.1:5000");
        assert_eq!(r.local_name(), "b-c");
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(
            r.to_string(),
            format!("127.0.0.1:5000/a/b-c:1@sha256:{HEX}")
        );
    }
}

//! systemd v260's registry map (`*.oci-registry` JSON files), applied to a reference before
//! anything else, as systemd-pull does: a machine set up for systemd's own pull-oci names
//! the same images with ours.
//!
//! Search directories, first hit wins: `/etc`, `/run`, `/usr/local/lib`, `/usr/lib`, each
//! with `/systemd/oci-registry/`. A reference naming a registry looks up
//! `registry.<urlescape(registry)>.oci-registry`; one without looks up
//! `image.<urlescape(path)>.oci-registry`, then `default.oci-registry`. urlescape keeps
//! `[A-Za-z0-9._-]` and writes every other byte as `%xx` (lowercase hex, as systemd's
//! `hexchar`). No file: the reference is left alone. A file is a JSON object (other keys
//! ignored, a non-string value is an error) with:
//!
//! | key | meaning |
//! |---|---|
//! | `defaultProtocol` | `https` (default) or `http` for the registry itself |
//! | `overrideRegistry` | the registry to use, replacing the one named |
//! | `defaultRegistry` | the registry when none was named |
//! | `overrideImage` | the repository path to use |
//! | `shortImagePrefix` | prepended to a path without `/` (unless `overrideImage`) |
//! | `defaultTag` | the tag when none was named (default `latest`) |
//!
//! Still no registry: `No suitable registry found.` (ENODATA). The registry
//! `registry-1.docker.io` that systemd's shipped files produce is Docker Hub's API host; we
//! name it `docker.io` again so that registries.conf and hosts.toml entries for Docker Hub
//! apply (its API is still reached at `registry-1.docker.io`).
//!
//! Two deliberate differences, both because our references follow docker's grammar (the
//! first component is a registry only if it looks like a host) while v260's first
//! component is always the registry:
//! * v260 falls back to `default.oci-registry` also for references that name a registry;
//!   its shipped default (`overrideRegistry` = `registry-1.docker.io`) thus sends
//!   `quay.io/org/app` to Docker Hub. We read `default.oci-registry` only for references
//!   without a registry.
//! * `user/app` has no registry here (v260: registry `user`, image `app`, which the shipped
//!   default turns into `library/app`, dropping the user); we look up
//!   `image.user%2fapp.oci-registry`, then the default, and keep `user/app`.
//!
//! `defaultProtocol` `file` (systemd's test hook) is refused: we only pull over HTTP(S).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::endpoint::Scheme;
use super::error::{read_optional, ConfigError, ErrorKind};
use crate::import::oci::reference::{
    domain_is_valid, path_is_valid, tag_is_valid, ImageName, Reference, DOCKER_HUB,
    DOCKER_HUB_REGISTRY,
};

/// A reference after the registry map was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    pub reference: Reference,
    /// `defaultProtocol`: how the registry itself is reached.
    pub scheme: Scheme,
    /// The map file that applied.
    pub file: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Rules {
    default_protocol: Option<String>,
    override_registry: Option<String>,
    default_registry: Option<String>,
    override_image: Option<String>,
    short_image_prefix: Option<String>,
    default_tag: Option<String>,
}

/// systemd's `urlescape()`.
pub fn urlescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// The first `dirs/name` that exists.
fn find_file(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The map file for `name`, if any (see the module documentation).
pub fn map_file(dirs: &[PathBuf], name: &ImageName) -> Option<PathBuf> {
    match &name.domain {
        Some(registry) => find_file(
            dirs,
            &format!("registry.{}.oci-registry", urlescape(registry)),
        ),
        None => find_file(
            dirs,
            &format!("image.{}.oci-registry", urlescape(&name.path)),
        )
        .or_else(|| find_file(dirs, "default.oci-registry")),
    }
}

fn read_rules(file: &Path) -> Result<Rules, ConfigError> {
    let text = read_optional(file)?.unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| ConfigError::invalid(file, e))
}

/// Apply the registry map to `name`. `Ok(None)`: no map file applies.
pub fn normalize(dirs: &[PathBuf], name: &ImageName) -> Result<Option<Normalized>, ConfigError> {
    let Some(file) = map_file(dirs, name) else {
        return Ok(None);
    };
    let rules = read_rules(&file)?;
    // An empty string sets nothing.
    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let scheme = match set(&rules.default_protocol).as_deref() {
        None | Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        Some(other) => {
            return Err(ConfigError::invalid(
                &file,
                format!("defaultProtocol '{other}' is not supported, only https and http are"),
            ))
        }
    };
    let registry = set(&rules.override_registry)
        .or_else(|| name.domain.clone())
        .or_else(|| set(&rules.default_registry));
    let Some(mut registry) = registry else {
        return Err(ConfigError::new(
            ErrorKind::Unresolved,
            format!(
                "No suitable registry found for '{name}' (with {}).",
                file.display()
            ),
        ));
    };
    if registry == DOCKER_HUB_REGISTRY {
        registry = DOCKER_HUB.to_string();
    }
    let path = match (set(&rules.override_image), set(&rules.short_image_prefix)) {
        (Some(image), _) => image,
        (None, Some(prefix)) if !name.path.contains('/') => format!("{prefix}{}", name.path),
        _ => name.path.clone(),
    };
    // A digest decides alone; only a reference with neither gets the default tag.
    let tag = match (&name.tag, &name.digest) {
        (Some(t), _) => Some(t.clone()),
        (None, None) => Some(set(&rules.default_tag).unwrap_or_else(|| "latest".to_string())),
        (None, Some(_)) => None,
    };
    if !domain_is_valid(&registry)
        || !path_is_valid(&path)
        || !tag.as_deref().is_none_or(tag_is_valid)
    {
        return Err(ConfigError::invalid(
            &file,
            format!(
                "applied to '{name}' it gives the invalid reference '{registry}/{path}{}'",
                tag.map(|t| format!(":{t}")).unwrap_or_default()
            ),
        ));
    }
    let reference = ImageName {
        domain: Some(registry),
        path,
        tag,
        digest: name.digest.clone(),
    }
    .into_reference();
    Ok(Some(Normalized {
        reference,
        scheme,
        file,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files systemd v260 installs into `/usr/lib/systemd/oci-registry/` (§5.2 of the
    /// reference), with `default.oci-registry` and the `image.*` names as copies of the
    /// files they link to.
    fn shipped(dir: &Path) {
        let docker = r#"{"shortImagePrefix":"library/","overrideRegistry":"registry-1.docker.io"}"#;
        let fedora = r#"{"defaultRegistry":"registry.fedoraproject.org"}"#;
        let files = [
            ("registry.docker.io.oci-registry", docker),
            ("registry.fedora.oci-registry", fedora),
            ("default.oci-registry", docker),
            ("image.alpine.oci-registry", docker),
            ("image.archlinux.oci-registry", docker),
            ("image.debian.oci-registry", docker),
            ("image.ubuntu.oci-registry", docker),
            ("image.fedora.oci-registry", fedora),
            ("image.fedora-minimal.oci-registry", fedora),
        ];
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    fn norm(dirs: &[PathBuf], s: &str) -> Result<Option<(String, Scheme, String)>, ConfigError> {
        Ok(normalize(dirs, &ImageName::parse(s).unwrap())?.map(|n| {
            (
                n.reference.to_string(),
                n.scheme,
                n.file.file_name().unwrap().to_string_lossy().into_owned(),
            )
        }))
    }

    #[test]
    fn urlescape_is_systemds() {
        assert_eq!(urlescape("docker.io"), "docker.io");
        assert_eq!(urlescape("a/b_c-d"), "a%2fb_c-d");
        assert_eq!(urlescape("host:5000"), "host%3a5000");
        assert_eq!(urlescape("x~y"), "x%7ey");
    }

    #[test]
    fn the_shipped_files_resolve_like_systemd_v260() {
        let root = tempfile::tempdir().unwrap();
        let usr = root.path().join("usr/lib/systemd/oci-registry");
        shipped(&usr);
        let dirs = [root.path().join("etc/systemd/oci-registry"), usr];
        let s = |r: &str, f: &str| Some((r.to_string(), Scheme::Https, f.to_string()));
        // (input, reference, file) — the examples of modern-systemd.md §5.1/§5.2.
        let table = [
            // A bare name: the default file, Docker Hub's API host with library/.
            (
                "nginx",
                s("docker.io/library/nginx:latest", "default.oci-registry"),
            ),
            (
                "debian:12",
                s("docker.io/library/debian:12", "image.debian.oci-registry"),
            ),
            (
                "fedora",
                s(
                    "registry.fedoraproject.org/fedora:latest",
                    "image.fedora.oci-registry",
                ),
            ),
            (
                "fedora-minimal:40",
                s(
                    "registry.fedoraproject.org/fedora-minimal:40",
                    "image.fedora-minimal.oci-registry",
                ),
            ),
            // library/nginx works as in v260 (there through the default file too).
            (
                "library/nginx",
                s("docker.io/library/nginx:latest", "default.oci-registry"),
            ),
            // docker.io given: its registry file.
            (
                "docker.io/debian",
                s(
                    "docker.io/library/debian:latest",
                    "registry.docker.io.oci-registry",
                ),
            ),
            // Deliberate differences: a user repository keeps its user, a named registry
            // without a file of its own is left alone.
            (
                "user/app",
                s("docker.io/user/app:latest", "default.oci-registry"),
            ),
            ("quay.io/org/app:1", None),
        ];
        for (input, expected) in table {
            assert_eq!(norm(&dirs, input).unwrap(), expected, "{input}");
        }
    }

    #[test]
    fn every_key_applies_and_etc_beats_usr() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        let usr = root.path().join("usr");
        std::fs::create_dir_all(&etc).unwrap();
        shipped(&usr);
        let write = |name: &str, text: &str| std::fs::write(etc.join(name), text).unwrap();
        write(
            "image.fedora.oci-registry",
            r#"{"defaultRegistry":"mirror.example:5000","defaultTag":"stable"}"#,
        );
        write(
            "registry.old.example.oci-registry",
            r#"{"overrideRegistry":"new.example","overrideImage":"fixed/name","shortImagePrefix":"ignored/"}"#,
        );
        write(
            "registry.plain.example%3a8080.oci-registry",
            r#"{"defaultProtocol":"http","unknownKey":1}"#,
        );
        write(
            "registry.files.example.oci-registry",
            r#"{"defaultProtocol":"file"}"#,
        );
        write(
            "registry.broken.example.oci-registry",
            r#"{"overrideRegistry":5}"#,
        );
        write("registry.nothing.example.oci-registry", "{");
        let dirs = [etc.clone(), usr];
        let s = |r: &str, scheme: Scheme, f: &str| Some((r.to_string(), scheme, f.to_string()));
        assert_eq!(
            norm(&dirs, "fedora").unwrap(),
            s(
                "mirror.example:5000/fedora:stable",
                Scheme::Https,
                "image.fedora.oci-registry"
            )
        );
        assert_eq!(
            norm(&dirs, "fedora:39").unwrap(),
            s(
                "mirror.example:5000/fedora:39",
                Scheme::Https,
                "image.fedora.oci-registry"
            )
        );
        assert_eq!(
            norm(&dirs, "old.example/whatever:2").unwrap(),
            s(
                "new.example/fixed/name:2",
                Scheme::Https,
                "registry.old.example.oci-registry"
            )
        );
        assert_eq!(
            norm(&dirs, "plain.example:8080/a").unwrap(),
            s(
                "plain.example:8080/a:latest",
                Scheme::Http,
                "registry.plain.example%3a8080.oci-registry"
            )
        );
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(
            norm(&dirs, &format!("fedora@sha256:{hex}"))
                .unwrap()
                .unwrap()
                .0,
            format!("mirror.example:5000/fedora@sha256:{hex}"),
            "a digest gets no default tag"
        );
        for (input, expected) in [
            (
                "files.example/a",
                "defaultProtocol 'file' is not supported, only https and http are",
            ),
            (
                "broken.example/a",
                "invalid type: integer `5`, expected a string",
            ),
            ("nothing.example/a", "EOF while parsing an object"),
        ] {
            let msg = norm(&dirs, input).unwrap_err().to_string();
            assert!(
                msg.contains(expected) && msg.contains(&etc.display().to_string()),
                "{input}: {msg}"
            );
        }
    }

    #[test]
    fn no_registry_at_all_is_enodata() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("default.oci-registry"),
            r#"{"defaultTag":"x"}"#,
        )
        .unwrap();
        let err = norm(&[dir.path().to_path_buf()], "app").unwrap_err();
        assert_eq!(err.errno(), libc::ENODATA);
        assert!(
            err.to_string()
                .starts_with("No suitable registry found for 'app'"),
            "{err}"
        );
        // No files at all: nothing applies.
        assert_eq!(norm(&[dir.path().join("none")], "app").unwrap(), None);
    }
}

//! `docker save` archives (`docker-archive:PATH`): `manifest.json` lists the images, each
//! with its config file and its layer files, base first. Files are verified by the digest
//! their name gives (`<hex>.json`, `<hex>.tar`, `blobs/sha256/<hex>`, as docker and
//! skopeo name them); an uncompressed layer otherwise by its DiffID; and every layer's
//! DiffID again while it is applied.

use serde::Deserialize;

use super::container::Container;
use super::{document, member, Resolved};
use crate::import::oci::digest::Digest;
use crate::import::oci::manifest::{Descriptor, ImageManifest, LAYERS_MAX};
use crate::import::stream::{self, Compression};
use crate::log_error_errno;
use crate::util::error::{Error, Result};

const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar";

#[derive(Deserialize)]
struct RawImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// The digest a file's name gives: `<hex>.json`, `<hex>.tar` or `blobs/sha256/<hex>`.
fn named_digest(name: &str) -> Option<Digest> {
    let name = name.strip_prefix("./").unwrap_or(name);
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex);
    }
    let hex = name
        .strip_suffix(".json")
        .or_else(|| name.strip_suffix(".tar"))?;
    Digest::from_hex(hex)
}

/// A repository tag as docker writes it: without `docker.io/` (and `library/`), with a
/// tag.
fn normalized(reference: &str) -> String {
    let r = reference.strip_prefix("docker.io/").unwrap_or(reference);
    let r = r.strip_prefix("library/").unwrap_or(r);
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') || last.contains('@') {
        r.to_string()
    } else {
        format!("{r}:latest")
    }
}

fn refuse(what: impl std::fmt::Display) -> Error {
    log_error_errno!(Error::new(libc::EBADMSG), "{what}")
}

/// Find the image (by REF: a tag or `@N`; without REF the archive must hold one) and
/// read its config.
pub fn resolve(c: &Container, reference: Option<&str>) -> Result<Resolved> {
    let source = c.path().display().to_string();
    let bytes = document(
        c,
        "manifest.json",
        "The docker archive's manifest.json",
        None,
    )?;
    let images: Vec<RawImage> = serde_json::from_slice(&bytes).map_err(|e| {
        refuse(format!(
            "Refusing the manifest.json of '{source}': not a docker archive manifest: {e}."
        ))
    })?;
    let image = match reference {
        None if images.len() == 1 => &images[0],
        None => {
            return Err(log_error_errno!(
                Error::new(libc::EINVAL),
                "'{source}' holds {} images, name one as {source}:REF.",
                images.len()
            ))
        }
        Some(r) => {
            let by_index = r
                .strip_prefix('@')
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| images.get(n));
            let by_tag = || {
                images.iter().find(|i| {
                    i.repo_tags
                        .iter()
                        .flatten()
                        .any(|t| normalized(t) == normalized(r))
                })
            };
            by_index.or_else(by_tag).ok_or_else(|| {
                log_error_errno!(
                    Error::new(libc::ENOENT),
                    "No image named '{r}' in '{source}'."
                )
            })?
        }
    };
    let image_name = match reference {
        Some(r) => format!("{source}:{r}"),
        None => source.clone(),
    };
    if image.layers.is_empty() || image.layers.len() > LAYERS_MAX {
        return Err(refuse(format!(
            "Refusing image '{image_name}': it has {} layers.",
            image.layers.len()
        )));
    }
    let config_name = &image.config;
    let config_digest = named_digest(config_name);
    let config = document(
        c,
        config_name,
        &format!("image config '{config_name}'"),
        None,
    )?;
    let actual = Digest::of(&config);
    if let Some(named) = &config_digest {
        if *named != actual {
            return Err(refuse(format!(
                "Digest mismatch for image config '{config_name}': expected {named}, got {actual}."
            )));
        }
    }
    let diff_ids = crate::import::oci::config::parse(&config)
        .map(|c| c.diff_ids)
        .unwrap_or_default();
    let mut layers = Vec::with_capacity(image.layers.len());
    let mut descriptors = Vec::with_capacity(image.layers.len());
    for (i, name) in image.layers.iter().enumerate() {
        let reader = member(c, name, &format!("Layer {}", i + 1))?;
        let size = reader.size();
        let plain = matches!(stream::sniff(reader), Ok((Compression::Uncompressed, _)));
        let want = named_digest(name).or_else(|| plain.then(|| diff_ids.get(i).cloned()).flatten());
        let Some(digest) = want.clone().or_else(|| diff_ids.get(i).cloned()) else {
            return Err(refuse(format!(
                "Refusing image '{image_name}': its config has no DiffID for layer {}.",
                i + 1
            )));
        };
        descriptors.push(Descriptor {
            media_type: LAYER_TYPE.to_string(),
            digest,
            size,
            urls: Vec::new(),
            platform: None,
            data: None,
        });
        layers.push((name.clone(), want));
    }
    log::info!("Found image '{image_name}' ({} layers).", layers.len());
    Ok(Resolved {
        image: image_name,
        manifest: ImageManifest {
            config: Descriptor {
                media_type: CONFIG_TYPE.to_string(),
                digest: actual,
                size: config.len() as u64,
                urls: Vec::new(),
                platform: None,
                data: None,
            },
            layers: descriptors,
        },
        config,
        from_index: false,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        let hex = "a".repeat(64);
        assert!(named_digest(&format!("{hex}.tar")).is_some());
        assert!(named_digest(&format!("blobs/sha256/{hex}")).is_some());
        assert!(named_digest(&format!("{hex}/layer.tar")).is_none());
        assert_eq!(normalized("docker.io/library/busybox"), "busybox:latest");
        assert_eq!(normalized("localhost:5000/x/y:1"), "localhost:5000/x/y:1");
        assert_eq!(
            normalized("localhost:5000/x/y"),
            "localhost:5000/x/y:latest"
        );
    }
}

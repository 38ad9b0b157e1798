//! OCI image layouts (`oci:DIR`, and `oci-archive:PATH`, the same in a tar archive):
//! `oci-layout` names the layout version, `index.json` lists the images, every blob is
//! `blobs/sha256/<hex>` of its own digest.

use serde::Deserialize;
use std::collections::HashMap;

use super::container::Container;
use super::{document, Resolved};
use crate::import::oci::digest::Digest;
use crate::import::oci::manifest::{self, Descriptor, Document, DOCKER_LIST, OCI_INDEX};
use crate::import::oci::platform::Platform;
use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// The annotation naming an index entry (what REF matches).
const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Deserialize)]
struct RawLayout {
    #[serde(rename = "imageLayoutVersion")]
    version: String,
}

#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Vec<RawEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

fn refuse(what: impl std::fmt::Display) -> Error {
    log_error_errno!(Error::new(libc::EBADMSG), "{what}")
}

/// The blob of `d`, read whole and verified.
fn blob(c: &Container, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    if let Some(data) = &d.data {
        if Digest::of(data) == d.digest {
            return Ok(data.clone());
        }
    }
    document(c, &blob_name(&d.digest), what, Some((&d.digest, d.size)))
}

pub fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Parse `bytes` as the document `d` says it is (its media type, else the document's own).
fn parse(bytes: &[u8], media_type: &str, what: &str) -> Result<Document> {
    let media_type = if media_type.is_empty() {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .unwrap_or_default()
    } else {
        media_type.to_string()
    };
    manifest::parse(Some(&media_type), bytes)
        .map_err(|why| refuse(format!("Refusing {what}: {why}.")))
}

/// Find the image: by REF, or the one image, or ours among several platforms.
pub fn resolve(c: &Container, reference: Option<&str>, platform: &Platform) -> Result<Resolved> {
    let source = c.path().display().to_string();
    let layout = document(c, "oci-layout", "The OCI layout marker 'oci-layout'", None)?;
    match serde_json::from_slice::<RawLayout>(&layout) {
        Ok(l) if l.version.starts_with("1.") => {}
        Ok(l) => {
            return Err(refuse(format!(
                "'{source}' is an OCI layout of version {}, only 1.x is supported.",
                l.version
            )))
        }
        Err(e) => return Err(refuse(format!("'{source}': invalid oci-layout: {e}."))),
    }
    let index_bytes = document(c, "index.json", "The OCI layout index 'index.json'", None)?;
    let what = format!("the index.json of '{source}'");
    let Document::Index(entries) = parse(&index_bytes, OCI_INDEX, &what)? else {
        return Err(refuse(format!("Refusing {what}: not an index.")));
    };
    let raw: RawIndex = serde_json::from_slice(&index_bytes)
        .map_err(|e| refuse(format!("Refusing {what}: {e}.")))?;
    let names: Vec<Option<&String>> = raw
        .manifests
        .iter()
        .map(|e| e.annotations.get(REF_NAME))
        .collect();
    let candidates: Vec<&Descriptor> = match reference {
        Some(r) => entries
            .iter()
            .zip(&names)
            .filter(|(_, n)| n.is_some_and(|n| n == r))
            .map(|(e, _)| e)
            .collect(),
        None => entries.iter().collect(),
    };
    let image = match reference {
        Some(r) => format!("{source}:{r}"),
        None => source.clone(),
    };
    let is_index = |d: &Descriptor| d.media_type == OCI_INDEX || d.media_type == DOCKER_LIST;
    let (chosen, from_index) = match candidates.as_slice() {
        [] => {
            return Err(log_error_errno!(
                Error::new(libc::ENOENT),
                "No image {} in '{source}'.",
                reference.map_or_else(|| "at all".to_string(), |r| format!("named '{r}'"))
            ))
        }
        // One image, or one nested index (skopeo copy --all): ours from it.
        [one] if is_index(one) => {
            let what = format!("index {}", one.digest);
            let bytes = blob(c, one, &what)?;
            let Document::Index(inner) = parse(&bytes, &one.media_type, &what)? else {
                return Err(refuse(format!("Refusing {what}: not an index.")));
            };
            (select(&inner, platform, &image)?, true)
        }
        [one] => ((*one).clone(), false),
        several => {
            let owned: Vec<Descriptor> = several.iter().map(|d| (*d).clone()).collect();
            if owned.iter().any(|d| d.platform.is_none()) {
                return Err(log_error_errno!(
                    Error::new(libc::EINVAL),
                    "'{source}' holds {} images, name one as {}:REF.",
                    owned.len(),
                    source
                ));
            }
            (select(&owned, platform, &image)?, true)
        }
    };
    let what = format!("manifest {}", chosen.digest);
    let bytes = blob(c, &chosen, &what)?;
    let manifest = match parse(&bytes, &chosen.media_type, &what)? {
        Document::Image(m) => m,
        Document::Index(_) => {
            return Err(refuse(format!(
                "Refusing {what}: nested indexes are not supported."
            )))
        }
    };
    log::info!("Found {what} in '{source}'.");
    let config = blob(
        c,
        &manifest.config,
        &format!("image config {}", manifest.config.digest),
    )?;
    let layers = manifest
        .layers
        .iter()
        .map(|d| (blob_name(&d.digest), Some(d.digest.clone())))
        .collect();
    Ok(Resolved {
        image,
        manifest,
        config,
        from_index,
        layers,
    })
}

fn select(entries: &[Descriptor], platform: &Platform, image: &str) -> Result<Descriptor> {
    manifest::select(entries, platform).cloned().map_err(|why| {
        log_error_errno!(
            Error::new(libc::ENOENT),
            "No image for {platform} in the index of '{image}': {why}."
        )
    })
}

//! Manifests and indexes: OCI image manifest and index, Docker schema 2 manifest and
//! manifest list. Parsing is strict where it matters for safety and lenient elsewhere:
//!
//! * the document kind comes from the response's `Content-Type` (parameters ignored), and
//!   a `mediaType` in the body must agree with it (CVE-2021-41190); an index must not carry
//!   `config`/`layers` and a manifest must not carry `manifests`;
//! * Docker schema 1 is refused, as are unknown content types;
//! * every digest must be `sha256:<64 hex>`; sizes must be non-negative;
//! * at most [`LAYERS_MAX`] layers, each of a tar media type we can apply; the config
//!   must be an OCI or Docker image config;
//! * unknown fields are ignored, as the image-spec asks.

use serde::Deserialize;

use super::digest::{Digest, DigestError};
use super::encoding::base64_decode;
use super::platform::Platform;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header of manifest requests (registry-protocols §1b, schema 1 left out).
pub const ACCEPT: &str = "Accept: application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index we read (the distribution spec asks clients to accept 4 MB).
pub const MANIFEST_MAX: u64 = 4 << 20;
/// Most layers an image may have (systemd's `LAYER_MAX`).
pub const LAYERS_MAX: usize = 4096;

/// Layer media types we apply: tar, optionally gzip- or zstd-compressed (OCI, including the
/// deprecated non-distributable types, and Docker's, including foreign layers). The actual
/// compression is detected from the blob's first bytes.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// A content descriptor, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Empty if the document did not say.
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// Other places the content may be fetched from (foreign layers).
    pub urls: Vec<String>,
    /// `os`, `architecture`, `variant` of an index entry.
    pub platform: Option<(Option<String>, Option<String>, Option<String>)>,
    /// Inline content (`data`, base64-decoded), still to be verified.
    pub data: Option<Vec<u8>>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Clone, Debug)]
pub struct ImageManifest {
    pub config: Descriptor,
    /// Base layer first.
    pub layers: Vec<Descriptor>,
}

/// What a manifest response turned out to be.
#[derive(Clone, Debug)]
pub enum Document {
    /// An OCI index or Docker manifest list.
    Index(Vec<Descriptor>),
    Image(ImageManifest),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
    urls: Option<Vec<String>>,
    platform: Option<RawPlatform>,
    data: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
}

/// The media type of a `Content-Type` value: parameters dropped, lowercased.
pub fn media_type_of(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn descriptor(raw: RawDescriptor, what: &str) -> Result<Descriptor, String> {
    let digest = Digest::parse(&raw.digest).map_err(|e| match e {
        DigestError::Invalid => format!("{what} has an invalid digest '{}'", raw.digest),
        DigestError::UnsupportedAlgorithm(a) => {
            format!("{what} uses the unsupported digest algorithm '{a}'")
        }
    })?;
    let size = u64::try_from(raw.size).map_err(|_| format!("{what} has a negative size"))?;
    let data = match raw.data {
        Some(text) => {
            Some(base64_decode(&text).ok_or_else(|| format!("{what} has invalid inline data"))?)
        }
        None => None,
    };
    Ok(Descriptor {
        media_type: raw.media_type.unwrap_or_default(),
        digest,
        size,
        urls: raw.urls.unwrap_or_default(),
        platform: raw.platform.map(|p| (p.os, p.architecture, p.variant)),
        data,
    })
}

/// Parse a manifest response. `Err` is the reason, for a message naming the manifest.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Document, String> {
    let media_type = content_type.map(media_type_of).unwrap_or_default();
    let is_index = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => {
            return Err("Docker schema 1 manifests are not supported".to_string())
        }
        "" => return Err("the registry sent no Content-Type".to_string()),
        other => return Err(format!("unexpected Content-Type '{other}'")),
    };
    let raw: RawDocument =
        serde_json::from_slice(body).map_err(|e| format!("not a valid manifest: {e}"))?;
    if raw.schema_version != Some(2) {
        return Err(format!(
            "unsupported schemaVersion {}",
            raw.schema_version
                .map_or_else(|| "(none)".to_string(), |v| v.to_string())
        ));
    }
    if let Some(body_type) = &raw.media_type {
        if *body_type != media_type {
            return Err(format!(
                "its mediaType '{body_type}' does not match its Content-Type '{media_type}'"
            ));
        }
    }
    if is_index {
        if raw.config.is_some() || raw.layers.is_some() {
            return Err("an index with config or layers is ambiguous".to_string());
        }
        let entries = raw
            .manifests
            .ok_or_else(|| "the index has no manifests".to_string())?;
        let entries = entries
            .into_iter()
            .map(|e| descriptor(e, "an index entry"))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Document::Index(entries));
    }
    if raw.manifests.is_some() {
        return Err("a manifest with manifests is ambiguous".to_string());
    }
    let config = descriptor(
        raw.config
            .ok_or_else(|| "the manifest has no config".to_string())?,
        "the config",
    )?;
    if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
        return Err(format!(
            "not a container image (config media type '{}')",
            config.media_type
        ));
    }
    let raw_layers = raw.layers.unwrap_or_default();
    if raw_layers.is_empty() {
        return Err("the image has no layers".to_string());
    }
    if raw_layers.len() > LAYERS_MAX {
        return Err(format!(
            "{} layers are more than the {LAYERS_MAX} we accept",
            raw_layers.len()
        ));
    }
    let mut layers = Vec::with_capacity(raw_layers.len());
    for (i, raw) in raw_layers.into_iter().enumerate() {
        let what = format!("layer {}", i + 1);
        let d = descriptor(raw, &what)?;
        if !LAYER_TYPES.contains(&d.media_type.as_str()) {
            return Err(format!(
                "{what} has the unsupported media type '{}'",
                d.media_type
            ));
        }
        layers.push(d);
    }
    Ok(Document::Image(ImageManifest { config, layers }))
}

/// The first index entry that is an image manifest for `platform`. `Err` lists what the
/// index offers instead.
pub fn select<'a>(
    entries: &'a [Descriptor],
    platform: &Platform,
) -> Result<&'a Descriptor, String> {
    let is_manifest =
        |d: &Descriptor| d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST;
    let found = entries.iter().find(|d| {
        let (os, arch, variant) = d.platform.clone().unwrap_or_default();
        is_manifest(d) && platform.matches(os.as_deref(), arch.as_deref(), variant.as_deref())
    });
    if let Some(d) = found {
        return Ok(d);
    }
    let mut offered: Vec<String> = entries
        .iter()
        .filter(|d| is_manifest(d))
        .filter_map(|d| d.platform.clone())
        .map(|(os, arch, variant)| {
            let mut s = format!(
                "{}/{}",
                os.unwrap_or_else(|| "?".into()),
                arch.unwrap_or_else(|| "?".into())
            );
            if let Some(v) = variant {
                s.push('/');
                s.push_str(&v);
            }
            s
        })
        .collect();
    offered.dedup();
    let nested = entries
        .iter()
        .any(|d| d.media_type == OCI_INDEX || d.media_type == DOCKER_LIST);
    let mut why = if offered.is_empty() {
        "it lists no image manifests".to_string()
    } else {
        format!("it has {}", offered.join(", "))
    };
    if nested {
        why.push_str(" (nested indexes are not followed)");
    }
    Err(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    fn manifest_json(media_type: Option<&str>, layer_type: &str, layers: usize) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = (0..layers)
            .map(|i| serde_json::json!({"mediaType": layer_type, "digest": d(i as u8), "size": 10}))
            .collect();
        let mut v = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": OCI_CONFIG, "digest": d(200), "size": 5},
            "layers": layers,
        });
        if let Some(m) = media_type {
            v["mediaType"] = serde_json::json!(m);
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn oci_and_docker_manifests_parse() {
        let body = manifest_json(Some(OCI_MANIFEST), LAYER_TYPES[1], 3);
        let Document::Image(m) = parse(
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            &body,
        )
        .unwrap() else {
            panic!("not an image");
        };
        assert_eq!(m.layers.len(), 3);
        assert_eq!(m.config.size, 5);
        assert_eq!(m.layers[2].digest.to_string(), d(2));

        // mediaType is optional in OCI manifests.
        let body = manifest_json(None, "application/vnd.oci.image.layer.v1.tar+zstd", 1);
        assert!(parse(Some(OCI_MANIFEST), &body).is_ok());

        let body = manifest_json(
            Some(DOCKER_MANIFEST),
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            2,
        );
        assert!(parse(Some(DOCKER_MANIFEST), &body).is_ok());
    }

    #[test]
    fn content_type_must_agree_with_media_type() {
        let body = manifest_json(Some(OCI_MANIFEST), LAYER_TYPES[1], 1);
        let e = parse(Some(DOCKER_MANIFEST), &body).unwrap_err();
        assert!(e.contains("does not match its Content-Type"), "{e}");
        let e = parse(Some(OCI_INDEX), &body).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        // Without a mediaType in the body, a manifest served as an index is still refused.
        let body = manifest_json(None, LAYER_TYPES[1], 1);
        let e = parse(Some(OCI_INDEX), &body).unwrap_err();
        assert!(e.contains("ambiguous"), "{e}");
        let e = parse(Some("application/json"), &body).unwrap_err();
        assert_eq!(e, "unexpected Content-Type 'application/json'");
        assert!(parse(None, &body).unwrap_err().contains("no Content-Type"));
        let e = parse(Some(DOCKER_SCHEMA1_SIGNED), b"{}").unwrap_err();
        assert!(e.contains("schema 1"), "{e}");
    }

    #[test]
    fn bad_documents_are_refused_with_a_reason() {
        let e = parse(Some(OCI_MANIFEST), b"{not json").unwrap_err();
        assert!(e.starts_with("not a valid manifest"), "{e}");
        let e = parse(Some(OCI_MANIFEST), br#"{"schemaVersion": 1}"#).unwrap_err();
        assert_eq!(e, "unsupported schemaVersion 1");
        let body = manifest_json(
            Some(OCI_MANIFEST),
            "application/vnd.oci.image.layer.v1.tar+xz",
            1,
        );
        let e = parse(Some(OCI_MANIFEST), &body).unwrap_err();
        assert!(e.contains("layer 1 has the unsupported media type"), "{e}");
        let body = manifest_json(Some(OCI_MANIFEST), LAYER_TYPES[0], 0);
        assert_eq!(
            parse(Some(OCI_MANIFEST), &body).unwrap_err(),
            "the image has no layers"
        );
        let body = manifest_json(Some(OCI_MANIFEST), LAYER_TYPES[0], LAYERS_MAX + 1);
        assert!(parse(Some(OCI_MANIFEST), &body)
            .unwrap_err()
            .contains("more than"));
        let body = manifest_json(Some(OCI_MANIFEST), LAYER_TYPES[0], LAYERS_MAX);
        assert!(parse(Some(OCI_MANIFEST), &body).is_ok());

        let mut v: serde_json::Value =
            serde_json::from_slice(&manifest_json(None, LAYER_TYPES[0], 1)).unwrap();
        v["layers"][0]["digest"] = serde_json::json!("sha256:../../etc/passwd");
        let e = parse(Some(OCI_MANIFEST), &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.contains("invalid digest"), "{e}");
        v["layers"][0]["digest"] = serde_json::json!(format!("sha512:{}", "ab".repeat(64)));
        let e = parse(Some(OCI_MANIFEST), &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.contains("unsupported digest algorithm 'sha512'"), "{e}");
        v["layers"][0]["digest"] = serde_json::json!(d(1));
        v["layers"][0]["size"] = serde_json::json!(-1);
        assert!(parse(Some(OCI_MANIFEST), &serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .contains("negative"));
        v["layers"][0]["size"] = serde_json::json!(1);
        v["config"]["mediaType"] = serde_json::json!("application/vnd.example.artifact");
        let e = parse(Some(OCI_MANIFEST), &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.contains("not a container image"), "{e}");
    }

    fn index_json(entries: &[(&str, &str, &str, Option<&str>)]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .enumerate()
            .map(|(i, (mt, os, arch, variant))| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = serde_json::json!(v);
                }
                serde_json::json!({"mediaType": mt, "digest": d(i as u8), "size": 100, "platform": p})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})).unwrap()
    }

    #[test]
    fn platform_selection_takes_the_first_match() {
        let body = index_json(&[
            (OCI_MANIFEST, "unknown", "unknown", None),
            (OCI_MANIFEST, "linux", "arm64", Some("v8")),
            (OCI_MANIFEST, "linux", "amd64", None),
            (OCI_MANIFEST, "linux", "amd64", Some("v3")),
            ("application/vnd.example+json", "linux", "riscv64", None),
            (OCI_INDEX, "linux", "s390x", None),
        ]);
        let Document::Index(entries) = parse(Some(OCI_INDEX), &body).unwrap() else {
            panic!("not an index");
        };
        let pick =
            |p: &str| select(&entries, &Platform::parse(p).unwrap()).map(|d| d.digest.to_string());
        assert_eq!(pick("linux/amd64").unwrap(), d(2));
        assert_eq!(pick("linux/amd64/v3").unwrap(), d(3));
        assert_eq!(pick("linux/arm64").unwrap(), d(1));
        let e = pick("linux/riscv64").unwrap_err();
        assert_eq!(
            e,
            "it has unknown/unknown, linux/arm64/v8, linux/amd64, linux/amd64/v3 (nested indexes are not followed)"
        );
        let e = pick("linux/s390x").unwrap_err();
        assert!(e.contains("nested"), "{e}");
    }

    #[test]
    fn index_and_docker_list_must_be_consistent() {
        let body = index_json(&[(DOCKER_MANIFEST, "linux", "amd64", None)]);
        let e = parse(Some(DOCKER_LIST), &body).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let v = serde_json::json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": []});
        let Document::Index(e) =
            parse(Some(DOCKER_LIST), &serde_json::to_vec(&v).unwrap()).unwrap()
        else {
            panic!()
        };
        assert!(e.is_empty());
        let v = serde_json::json!({"schemaVersion": 2, "manifests": [], "layers": []});
        assert!(parse(Some(OCI_INDEX), &serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .contains("ambiguous"));
    }
}

//! pull-oci verifies every document and blob against what refers to it: a manifest against
//! the digest asked for (or the registry's `Docker-Content-Digest` when pulling by tag) and
//! its index entry, the config against the manifest's descriptor and layer count, a layer
//! against its descriptor's size. A fault proxy in front of Debian's `docker-registry`
//! serves the wrong thing; every refusal is one exact error line, exit status 1, and
//! nothing left in the image root.

mod common;

use std::sync::Arc;

use common::fault_proxy::FaultProxy;
use common::http::Response;
use common::oci::{
    assert_failed_with, base_layer, big_file_layer, index, serve_manifest, Codec, Flavor,
    ImageBuilder, PullEnv, OCI_CONFIG,
};
use common::registry::{sha256_digest, Registry, RegistryOptions, OCI_MANIFEST};
use serde_json::{json, Value};

/// An image with a small base layer and a 256 KiB layer of noise on top.
fn two_layer_image() -> common::oci::Image {
    ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(big_file_layer("data/noise", 256 << 10), Codec::Gzip)
        .build()
}

#[test]
fn a_manifest_fetched_by_digest_must_have_that_digest() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    let asked = image.push(&reg, "bydigest/ocit-app", None);
    // Another manifest (valid, pushed too) answers for the digest asked for, claiming
    // that digest in its header.
    let other = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    other.push(&reg, "bydigest/ocit-app", Some("other"));
    let (body, claimed) = (other.manifest.clone(), asked.clone());
    let path = format!("/manifests/{asked}");
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&path) {
            return Response::ok(body.clone())
                .header("Content-Type", OCI_MANIFEST)
                .header("Docker-Content-Digest", &claimed);
        }
        upstream()
    });
    let env = PullEnv::new();
    let reference = format!("{}/bydigest/ocit-app@{asked}", proxy.host());
    let out = env.pull(&reg, &[&reference, "ocit-app"]);
    assert_failed_with(
        &out,
        &format!(
            "Digest mismatch for manifest of '{reference}': expected {asked}, got {}.",
            other.manifest_digest
        ),
    );
    assert!(proxy.requests_for("/blobs/").is_empty(), "nothing fetched");
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

#[test]
fn a_tag_whose_docker_content_digest_disagrees_is_refused() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push(&reg, "bytag/ocit-app", Some("v1"));
    let served = sha256_digest(b"what the registry claims");
    let header = served.clone();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        let mut resp = upstream();
        if req.path.contains("/manifests/") {
            resp.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("Docker-Content-Digest"));
            resp.headers
                .push(("Docker-Content-Digest".into(), header.clone()));
        }
        resp
    });
    let env = PullEnv::new();
    let reference = format!("{}/bytag/ocit-app:v1", proxy.host());
    let out = env.pull(&reg, &[&reference]);
    assert_failed_with(
        &out,
        &format!(
            "Digest mismatch for manifest of '{reference}': the registry says {served}, the content is {}.",
            image.manifest_digest
        ),
    );
    assert!(proxy.requests_for("/blobs/").is_empty(), "nothing fetched");
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

#[test]
fn a_manifest_must_have_the_size_its_index_entry_says() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push(&reg, "sized/ocit-app", None);
    let (body, _) = index(
        Flavor::Oci,
        &[(&image, "linux", common::oci::native_arch(), None)],
    );
    // The entry names the right digest but a wrong size.
    let mut entry: Value = serde_json::from_slice(&body).unwrap();
    let announced = image.manifest.len() - 1;
    entry["manifests"][0]["size"] = json!(announced);
    let body = serde_json::to_vec(&entry).unwrap();
    let digest = sha256_digest(&body);
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with("/manifests/multi") {
            return Response::ok(body.clone())
                .header("Content-Type", common::registry::OCI_INDEX)
                .header("Docker-Content-Digest", &digest);
        }
        upstream()
    });
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/sized/ocit-app:multi", proxy.host())]);
    assert_failed_with(
        &out,
        &format!(
            "Size mismatch for manifest {}: expected {announced} bytes, got {}.",
            image.manifest_digest,
            image.manifest.len()
        ),
    );
    assert!(proxy.requests_for("/blobs/").is_empty(), "nothing fetched");
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

#[test]
fn a_layer_shorter_or_longer_than_its_descriptor_is_refused() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push(&reg, "size/ocit-app", Some("latest"));
    let victim = image.layers[1].digest.clone();
    let blob = image.layers[1].blob.clone();
    let size = blob.len();
    let path = format!("/blobs/{victim}");
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if !req.path.ends_with(&path) {
            return upstream();
        }
        // The repository name tells the two pulls apart.
        let mut body = blob.clone();
        if req.path.contains("/short/") {
            body.truncate(size - 100);
        } else {
            body.extend_from_slice(&[0u8; 100]);
        }
        Response::ok(body)
    });
    // Both repositories hold the same image.
    image.push(&reg, "short/ocit-app", Some("latest"));
    image.push(&reg, "long/ocit-app", Some("latest"));
    let env = PullEnv::new();

    let out = env.pull(&reg, &[&format!("{}/short/ocit-app", proxy.host())]);
    assert_failed_with(
        &out,
        &format!(
            "Layer {victim} size mismatch: expected {size} bytes, got {}.",
            size - 100
        ),
    );
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());

    // A longer one is refused as soon as its Content-Length is seen.
    let out = env.pull(&reg, &[&format!("{}/long/ocit-app", proxy.host())]);
    assert_failed_with(&out, "Content too large.");
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

/// `image`'s manifest with its config descriptor replaced by `config`.
fn with_config(image: &common::oci::Image, config: Value) -> Vec<u8> {
    let mut manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["config"] = config;
    serde_json::to_vec_pretty(&manifest).unwrap()
}

#[test]
fn a_config_with_a_different_number_of_diff_ids_is_refused() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push_blobs(&reg, "count/ocit-app");
    // The config of a one-layer image, for the two layers of `image`.
    let single = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    single.push_blobs(&reg, "count/ocit-app");
    let manifest = with_config(
        &image,
        json!({"mediaType": OCI_CONFIG, "digest": single.config_digest, "size": single.config.len()}),
    );
    reg.push_manifest("count/ocit-app", "latest", OCI_MANIFEST, &manifest);
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/count/ocit-app", reg.host())]);
    assert_failed_with(
        &out,
        &format!(
            "Image config {} lists 1 layer DiffIDs, but the manifest has 2 layers, refusing.",
            single.config_digest
        ),
    );
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

#[test]
fn a_config_too_large_is_refused_before_it_is_fetched() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push_blobs(&reg, "cfgsize/ocit-app");
    let config = image.config_digest.clone();
    let manifest = with_config(
        &image,
        json!({"mediaType": OCI_CONFIG, "digest": config, "size": (16 << 20) + 1}),
    );
    let proxy = serve_manifest(&reg, "latest", manifest);
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/cfgsize/ocit-app", proxy.host())]);
    assert_failed_with(
        &out,
        &format!("Image config {config} is larger than 16.0M, refusing."),
    );
    assert!(proxy.requests_for("/blobs/").is_empty(), "nothing fetched");
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

#[test]
fn a_config_larger_than_announced_is_refused() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push(&reg, "cfglong/ocit-app", Some("latest"));
    let config = image.config_digest.clone();
    let mut longer = image.config.clone();
    longer.extend_from_slice(b"   ");
    let path = format!("/blobs/{config}");
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&path) {
            let resp = Response::ok(longer.clone()).header("Content-Type", OCI_CONFIG);
            // With and without a Content-Length: either way only what was announced is read.
            return if req.path.contains("/chunked/") {
                resp.chunked()
            } else {
                resp
            };
        }
        upstream()
    });
    image.push(&reg, "chunked/ocit-app", Some("latest"));
    let env = PullEnv::new();
    for repo in ["cfglong/ocit-app", "chunked/ocit-app"] {
        let out = env.pull(&reg, &[&format!("{}/{repo}", proxy.host())]);
        assert_failed_with(
            &out,
            &format!("Image config {config} is larger than announced, refusing."),
        );
        assert!(env.top_level().is_empty(), "{:?}", env.top_level());
    }
    // The layers were not asked for.
    for l in &image.layers {
        assert!(proxy.requests_for(&l.digest).is_empty());
    }
}

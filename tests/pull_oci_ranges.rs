//! pull-oci fetches a big layer blob in parallel ranges (`--download-ranges=`,
//! `--download-range-size=`): the requests the server sees, the fallback to one stream when
//! ranges are ignored, a part that fails or is corrupt, and the option that turns it off.
//! The registry is Debian's `docker-registry` (which honours Range) behind a fault proxy
//! that logs every request.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fault_proxy::FaultProxy;
use common::http::{forward, HttpServer, Request, Response, Router};
use common::oci::{
    assert_failed_with, assert_line, assert_success, base_layer, big_file_layer, read, Codec,
    Image, ImageBuilder,
};
use common::oci::{pull_oci, PullEnv};
use common::registry::{sha256_digest, Registry, RegistryOptions};

const MIB: u64 = 1 << 20;
/// The part size the tests set (the default is 16 MiB).
const PART: u64 = 4 * MIB;
const PART_OPTION: &str = "--download-range-size=4M";
/// The noise file of the big layer.
const NOISE: usize = 24 << 20;

/// An image whose top layer is 24 MiB of noise, uncompressed (its blob a little more, so
/// it is cut into 7 parts of 4 MiB).
fn big_image(reg: &Registry, repo: &str) -> Image {
    let image = ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(big_file_layer("data/noise", NOISE), Codec::None)
        .build();
    image.push(reg, repo, Some("latest"));
    image
}

/// The parts a blob of `len` bytes is cut into: `(start, inclusive end)`.
fn parts(len: u64) -> Vec<(u64, u64)> {
    (0..len)
        .step_by(PART as usize)
        .map(|s| (s, (s + PART).min(len) - 1))
        .collect()
}

/// The `Range: bytes=S-E` of a request, if it has one with both ends.
fn range(req: &Request) -> Option<(u64, u64)> {
    match req.byte_range() {
        Some((s, Some(e))) => Some((s, e)),
        _ => None,
    }
}

/// The pulled image holds the noise file, byte for byte, and nothing temporary is left.
fn assert_image(env: &PullEnv, image: &Image) {
    let noise = read(&env.path("ocit-app/data/noise"));
    assert_eq!(noise.len(), NOISE);
    // The layer is an uncompressed tar: the file's bytes are in the blob as they are.
    let blob = &image.layers[1].blob;
    let at = blob
        .windows(64)
        .position(|w| w == &noise[..64])
        .expect("the noise in the blob");
    assert!(blob[at..at + NOISE] == noise[..], "the noise differs");
    env.assert_no_temporaries();
}

#[test]
fn a_big_layer_is_fetched_in_parallel_ranges() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = big_image(&reg, "ranges/ocit-app");
    let big = image.layers[1].digest.clone();
    let len = image.layers[1].blob.len() as u64;
    let path = format!("/blobs/{big}");
    // When each request for the big blob arrived; every answer waits 300 ms, so requests
    // that arrive within that time of the first were sent before any answer came.
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&path) {
            seen.lock().unwrap().push(Instant::now());
            return upstream().delay(Duration::from_millis(300));
        }
        upstream()
    });
    let env = PullEnv::new();
    let out = env.pull(
        &reg,
        &[PART_OPTION, &format!("{}/ranges/ocit-app", proxy.host())],
    );
    assert_success(&out);
    let expected = parts(len);
    assert_eq!(expected.len(), 7);
    let asked: Vec<_> = proxy
        .requests_for(&format!("/blobs/{big}"))
        .iter()
        .map(|r| range(r).unwrap_or_else(|| panic!("no range: {:?}", r.headers)))
        .collect();
    let mut sorted = asked.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "{}", out.stderr);
    // Earliest first, four at once (the four connections may arrive in any order).
    let mut first = asked[..4].to_vec();
    first.sort();
    assert_eq!(first, &expected[..4]);
    let arrived = arrivals.lock().unwrap().clone();
    assert!(
        arrived[3] - arrived[0] < Duration::from_millis(300),
        "the first four parts are asked for at once: {arrived:?}"
    );
    assert_line(
        &out,
        &format!("Fetching layer {big} in 7 parts, 4 at once."),
    );
    // The small base layer goes in one request without a range.
    let base = proxy.requests_for(&format!("/blobs/{}", image.layers[0].digest));
    assert_eq!(base.len(), 1);
    assert_eq!(base[0].header("Range"), None);
    assert_image(&env, &image);
}

#[test]
fn a_server_ignoring_ranges_gets_one_stream() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = big_image(&reg, "norange/ocit-app");
    let big = image.layers[1].digest.clone();
    let path = format!("/blobs/{big}");
    let reg2 = reg.clone();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if !req.path.ends_with(&path) {
            return upstream();
        }
        // Without the Range header: the registry answers 200 with everything.
        let mut plain = req.clone();
        plain
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("Range"));
        forward(&plain, &reg2.url(), Some(reg2.ca()))
    });
    let env = PullEnv::new();
    let out = env.pull(
        &reg,
        &[PART_OPTION, &format!("{}/norange/ocit-app", proxy.host())],
    );
    assert_success(&out);
    let asked = proxy.requests_for(&format!("/blobs/{big}"));
    // The first four parts were asked for at once; the first answer (a 200) became the
    // one stream, nothing more was asked.
    assert!(asked.len() <= 4, "{} requests: {}", asked.len(), out.stderr);
    assert!(
        out.stderr
            .contains("ignores Range requests, fetching the layer in one stream."),
        "{}",
        out.stderr
    );
    assert_image(&env, &image);
}

#[test]
fn a_part_cut_short_is_resumed_within_its_range() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = big_image(&reg, "cut/ocit-app");
    let big = image.layers[1].digest.clone();
    let len = image.layers[1].blob.len() as u64;
    let path = format!("/blobs/{big}");
    let cut = Arc::new(AtomicUsize::new(0));
    let c = cut.clone();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&path)
            && range(req).map(|r| r.0) == Some(2 * PART)
            && c.fetch_add(1, Ordering::SeqCst) == 0
        {
            // The third part: 1 MB, then the connection drops.
            return upstream().slow(4_000_000).truncate_after(1_000_000);
        }
        upstream()
    });
    let env = PullEnv::new();
    let out = env.pull(
        &reg,
        &[PART_OPTION, &format!("{}/cut/ocit-app", proxy.host())],
    );
    assert_success(&out);
    let asked: Vec<_> = proxy
        .requests_for(&format!("/blobs/{big}"))
        .iter()
        .map(|r| range(r).expect("a range"))
        .collect();
    let expected = parts(len);
    assert_eq!(asked.len(), expected.len() + 1, "{}", out.stderr);
    let third: Vec<_> = asked.iter().filter(|r| r.1 == 3 * PART - 1).collect();
    assert_eq!(third.len(), 2, "{asked:?}");
    let resumed = third[1].0;
    assert!(
        resumed > 2 * PART && resumed <= 2 * PART + 1_000_000,
        "resumed at {resumed}"
    );
    // Nothing else was asked for twice: no full refetch.
    let mut others: Vec<_> = asked.iter().filter(|r| r.1 != 3 * PART - 1).collect();
    others.dedup();
    assert_eq!(others.len(), expected.len() - 1);
    assert!(
        out.stderr.contains("retrying in"),
        "the part is retried: {}",
        out.stderr
    );
    assert_image(&env, &image);
}

#[test]
fn a_corrupt_part_fails_the_digest_and_leaves_nothing() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = big_image(&reg, "corrupt/ocit-app");
    let big = image.layers[1].digest.clone();
    let mut tampered = image.layers[1].blob.clone();
    let at = (PART + 12345) as usize;
    tampered[at] ^= 0x55;
    let tampered_digest = sha256_digest(&tampered);
    let path = format!("/blobs/{big}");
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        let mut resp = upstream();
        if req.path.ends_with(&path) && range(req).map(|r| r.0) == Some(PART) {
            resp.body[12345] ^= 0x55;
        }
        resp
    });
    let env = PullEnv::new();
    let out = env.pull(
        &reg,
        &[PART_OPTION, &format!("{}/corrupt/ocit-app", proxy.host())],
    );
    assert_failed_with(
        &out,
        &format!("Layer {big} digest mismatch: the content is {tampered_digest}."),
    );
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

#[test]
fn one_download_range_means_one_request_per_blob() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = big_image(&reg, "single/ocit-app");
    let proxy = FaultProxy::start(&reg, |_, upstream| upstream());
    for option in ["--download-ranges=1", "--download-ranges=no"] {
        let env = PullEnv::new();
        let before = proxy.requests().len();
        let out = env.pull(
            &reg,
            &[
                option,
                PART_OPTION,
                &format!("{}/single/ocit-app", proxy.host()),
            ],
        );
        assert_success(&out);
        let blobs: Vec<_> = proxy.requests()[before..]
            .iter()
            .filter(|r| r.path.contains("/blobs/sha256:"))
            .cloned()
            .collect();
        // The config and the two layers, each once, none with a range.
        assert_eq!(blobs.len(), 3, "{option}: {blobs:?}");
        assert!(
            blobs.iter().all(|r| r.header("Range").is_none()),
            "{option}"
        );
        assert_image(&env, &image);
    }
}

#[test]
fn each_part_follows_a_redirect_to_the_blob_storage() {
    let reg = Arc::new(Registry::start(RegistryOptions::basic("alice", "s3cret")));
    let image = big_image(&reg, "cdn/ocit-app");
    let big = image.layers[1].digest.clone();
    let len = image.layers[1].blob.len() as u64;
    let storage = HttpServer::start(
        Some(reg.ca()),
        Router::new()
            .serve_bytes("/storage/big", image.layers[1].blob.clone())
            .into_handler(),
    );
    let location = storage.url("/storage/big?signature=abc");
    let path = format!("/blobs/{big}");
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&path) {
            return Response::redirect(307, &location);
        }
        upstream()
    });
    let env = PullEnv::new();
    common::oci::write_docker_config(env.home.path(), &proxy.host(), "alice", "s3cret");
    let out = env.pull(
        &reg,
        &[PART_OPTION, &format!("{}/cdn/ocit-app", proxy.host())],
    );
    assert_success(&out);
    let asked = proxy.requests_for(&format!("/blobs/{big}"));
    assert_eq!(asked.len(), 7, "{}", out.stderr);
    assert!(asked.iter().all(|r| r.basic_auth().is_some()));
    let mut served: Vec<_> = storage
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(
                r.header("Authorization"),
                None,
                "no credentials to the storage"
            );
            range(r).expect("the range follows the redirect")
        })
        .collect();
    served.sort();
    assert_eq!(served, parts(len));
    assert_image(&env, &image);
}

/// The command line of a pull, to check the option's validation.
#[test]
fn bad_download_range_options_are_refused() {
    let env = PullEnv::new();
    let reg = Registry::start(RegistryOptions::plain());
    for (option, line) in [
        (
            "--download-ranges=0",
            "Invalid number of download ranges '0', expected 1…16 or 'no'.",
        ),
        (
            "--download-ranges=yes",
            "Invalid number of download ranges 'yes', expected 1…16 or 'no'.",
        ),
        (
            "--download-range-size=1K",
            "Invalid download range size '1K', expected at least 64K (bytes with an optional K, M, G or T suffix).",
        ),
    ] {
        let out = common::oci::run_pull(&mut pull_oci(
            &reg.ca().ca_pem_path(),
            env.root(),
            env.home.path(),
            &[option, &format!("{}/x/y", reg.host())],
        ));
        assert_eq!(out.status, 1, "{option}");
        assert_line(&out, line);
    }
}

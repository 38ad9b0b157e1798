//! pull-oci when things go wrong: a fault-injecting proxy in front of Debian's
//! `docker-registry` tampers with answers, drops connections, fails requests and stalls.
//! Every failure must be reported in one clear line, exit 1, and leave nothing behind;
//! transient failures must be retried (and a partial layer resumed).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fault_proxy::{forward_without_range, FaultProxy};
use common::http::{HttpServer, Request, Response, Router};
use common::oci::run_pull;
use common::oci::{
    assert_failed_with, assert_line, assert_success, base_layer, big_file_layer,
    pull_interrupted_mid_layer, read, Codec, ImageBuilder, PullEnv, OCI_CONFIG,
};
use common::registry::{sha256_digest, Registry, RegistryOptions, OCI_INDEX, OCI_MANIFEST};
use common::tarball::Tarball;
use nix::sys::signal::Signal;

/// An image with a small base layer and a large second layer (1 MiB of noise).
fn two_layer_image() -> common::oci::Image {
    ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(big_file_layer("data/noise", 1 << 20), Codec::Gzip)
        .build()
}

/// Count calls per rule.
fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

#[test]
fn a_wrong_layer_digest_fails_the_pull_and_names_the_layer() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push(&reg, "ocit-bad/ocit-digest", Some("latest"));
    let victim = image.layers[1].digest.clone();
    let mut tampered = image.layers[1].blob.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let tampered_digest = sha256_digest(&tampered);
    let path = format!("/blobs/{victim}");
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&path) {
            return Response::ok(tampered.clone());
        }
        upstream()
    });
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/ocit-bad/ocit-digest", proxy.host())]);
    assert_failed_with(
        &out,
        &format!("Layer {victim} digest mismatch: the content is {tampered_digest}."),
    );
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

#[test]
fn a_wrong_diff_id_fails_the_pull_and_names_the_layer() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(Tarball::new().file("second", b"2").finish(), Codec::Zstd)
        .wrong_diff_id(1)
        .build();
    image.push(&reg, "ocit-bad/ocit-diffid", Some("latest"));
    let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    let claimed = config["rootfs"]["diff_ids"][1]
        .as_str()
        .unwrap()
        .to_string();
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/ocit-bad/ocit-diffid", reg.host())]);
    assert_failed_with(
        &out,
        &format!(
            "Layer {} DiffID mismatch: the image config says {claimed}, the layer is {}.",
            image.layers[1].digest, image.layers[1].diff_id
        ),
    );
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

/// The `N` of a request's `Range: bytes=N-`.
fn range_start(req: &Request) -> Option<u64> {
    req.byte_range().map(|(start, _)| start)
}

#[test]
fn a_connection_dropped_mid_layer_is_resumed_with_a_range_request() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push(&reg, "flaky/ocit-app", Some("latest"));
    let big = image.layers[1].digest.clone();
    let path = format!("/blobs/{big}");
    let calls = counter();
    let c = Arc::clone(&calls);
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&path) && c.fetch_add(1, Ordering::SeqCst) == 0 {
            // Two pieces with a pause after each, then the connection drops: what
            // arrived has reached the spool file by then.
            return upstream().slow(2_000_000).truncate_after(400_000);
        }
        upstream()
    });
    let env = PullEnv::new();
    let reference = format!("{}/flaky/ocit-app", proxy.host());
    let out = env.pull(&reg, &[&reference]);
    assert_success(&out);
    let requests = proxy.requests_for(&format!("/blobs/{big}"));
    assert_eq!(requests.len(), 2, "{}", out.stderr);
    assert_eq!(range_start(&requests[0]), None);
    let start = range_start(&requests[1])
        .unwrap_or_else(|| panic!("the retry asks for a range: {:?}", requests[1].headers));
    assert!(start > 0 && start <= 400_000, "resumed at {start}");
    assert_line(
        &out,
        &format!(
            "Download of https://{}/v2/flaky/ocit-app/blobs/{big} failed, retrying in 20ms (attempt 2 of 4).",
            proxy.host()
        ),
    );
    assert_line(
        &out,
        &format!("Resuming download of layer {big} at byte {start}."),
    );
    assert_eq!(read(&env.path("ocit-app/data/noise")).len(), 1 << 20);
    env.assert_no_temporaries();
}

#[test]
fn a_server_ignoring_the_range_makes_the_layer_start_over() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push(&reg, "norange/ocit-app", Some("latest"));
    let big = image.layers[1].digest.clone();
    let path = format!("/blobs/{big}");
    let calls = counter();
    let c = Arc::clone(&calls);
    let reg2 = Arc::clone(&reg);
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if !req.path.ends_with(&path) {
            return upstream();
        }
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            return upstream().slow(2_000_000).truncate_after(300_000);
        }
        forward_without_range(req, &reg2)
    });
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/norange/ocit-app", proxy.host())]);
    assert_success(&out);
    let requests = proxy.requests_for(&format!("/blobs/{big}"));
    assert_eq!(requests.len(), 2);
    assert!(range_start(&requests[1]).is_some());
    assert_eq!(read(&env.path("ocit-app/data/noise")).len(), 1 << 20);
    env.assert_no_temporaries();
}

#[test]
fn server_errors_are_retried_then_succeed() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push(&reg, "retry/ocit-app", Some("latest"));
    let base = image.layers[0].digest.clone();
    let config = image.config_digest.clone();
    let (manifests, blobs, configs) = (counter(), counter(), counter());
    let (m, b, c) = (manifests.clone(), blobs.clone(), configs.clone());
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with("/manifests/latest") && m.fetch_add(1, Ordering::SeqCst) == 0 {
            return Response::status(500).body("internal trouble\n");
        }
        if req.path.ends_with(&format!("/blobs/{base}")) && b.fetch_add(1, Ordering::SeqCst) < 2 {
            return Response::status(503)
                .header("Content-Type", "application/json")
                .body(r#"{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}"#);
        }
        if req.path.ends_with(&format!("/blobs/{config}")) && c.fetch_add(1, Ordering::SeqCst) == 0
        {
            return Response::status(429).header("Retry-After", "0");
        }
        upstream()
    });
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/retry/ocit-app", proxy.host())]);
    assert_success(&out);
    let url = |p: &str| format!("https://{}/v2/retry/ocit-app/{p}", proxy.host());
    assert_line(
        &out,
        &format!(
            "{} answered HTTP 500, retrying in 20ms (attempt 2 of 4).",
            url("manifests/latest")
        ),
    );
    assert_line(
        &out,
        &format!(
            "{} answered UNAVAILABLE: try later (HTTP 503), retrying in 40ms (attempt 3 of 4).",
            url(&format!("blobs/{}", image.layers[0].digest))
        ),
    );
    assert_line(
        &out,
        &format!(
            "{} answered HTTP 429, retrying in 0 (attempt 2 of 4).",
            url(&format!("blobs/{}", image.config_digest))
        ),
    );
    assert_eq!(blobs.load(Ordering::SeqCst), 3);
    assert!(env.path("ocit-app/etc/hostname").exists());
}

/// `secs` since the epoch as an HTTP date (IMF-fixdate).
fn http_date(secs: u64) -> String {
    let out = std::process::Command::new("date")
        .env("LC_ALL", "C")
        .args([
            "-u",
            "-d",
            &format!("@{secs}"),
            "+%a, %d %b %Y %H:%M:%S GMT",
        ])
        .output()
        .expect("run date");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn retry_after_in_seconds_and_as_a_date_is_waited_for() {
    // The test seam shortens our own backoff (20 ms here) but never a server's Retry-After.
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push(&reg, "after/ocit-app", Some("latest"));
    let config = image.config_digest.clone();
    let arrivals: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let log = Arc::clone(&arrivals);
    let date = Arc::new(Mutex::new(String::new()));
    let date_sent = Arc::clone(&date);
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        let kind = if req.path.ends_with("/manifests/latest") {
            "manifest"
        } else if req.path.ends_with(&format!("/blobs/{config}")) {
            "config"
        } else {
            return upstream();
        };
        let mut log = log.lock().unwrap();
        log.push((kind.to_string(), Instant::now()));
        if log.iter().filter(|(k, _)| k == kind).count() > 1 {
            return upstream();
        }
        if kind == "manifest" {
            return Response::status(503).header("Retry-After", "1");
        }
        // Two to three seconds from now, whole seconds as HTTP dates have.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let when = http_date(now + 3);
        *date_sent.lock().unwrap() = when.clone();
        Response::status(429).header("Retry-After", &when)
    });
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/after/ocit-app", proxy.host())]);
    assert_success(&out);
    let url = |p: &str| format!("https://{}/v2/after/ocit-app/{p}", proxy.host());
    assert_line(
        &out,
        &format!(
            "{} answered HTTP 503, retrying in 1s (attempt 2 of 4).",
            url("manifests/latest")
        ),
    );
    // The delay the date gives, as the pull printed it (e.g. "2.718s").
    let prefix = format!(
        "{} answered HTTP 429, retrying in ",
        url(&format!("blobs/{}", image.config_digest))
    );
    let line = out
        .stderr_lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no retry line for the config in:\n{}", out.stderr));
    let secs: f64 = line
        .strip_suffix("s (attempt 2 of 4).")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "unexpected delay in {line:?} (date {})",
                date.lock().unwrap()
            )
        });
    assert!((1.5..=3.0).contains(&secs), "{line}");
    // And the requests were that far apart.
    let arrivals = arrivals.lock().unwrap();
    let gap = |kind: &str| {
        let times: Vec<Instant> = arrivals
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(times.len(), 2, "{kind}: {}", out.stderr);
        times[1] - times[0]
    };
    assert!(
        gap("manifest") >= Duration::from_millis(950),
        "{:?}",
        gap("manifest")
    );
    assert!(
        gap("config") >= Duration::from_millis(1450),
        "{:?}",
        gap("config")
    );
    assert!(env.path("ocit-app/etc/hostname").exists());
}

#[test]
fn persistent_server_errors_fail_after_four_attempts() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.contains("/manifests/") {
            return Response::status(502);
        }
        upstream()
    });
    let env = PullEnv::new();
    let reference = format!("{}/down/ocit-app:1", proxy.host());
    let out = env.pull(&reg, &[&reference]);
    assert_failed_with(
        &out,
        &format!("Failed to fetch manifest of '{reference}': HTTP 502."),
    );
    assert_eq!(proxy.requests_for("/manifests/").len(), 4);
    assert!(env.top_level().is_empty());
}

#[test]
fn a_missing_manifest_is_reported_with_the_registry_error() {
    let reg = Registry::start(RegistryOptions::plain());
    two_layer_image().push(&reg, "ocit-there/ocit-app", Some("latest"));
    let env = PullEnv::new();
    let reference = format!("{}/ocit-there/ocit-app:nope", reg.host());
    let out = env.pull(&reg, &[&reference]);
    assert_failed_with(
        &out,
        &format!("Failed to fetch manifest of '{reference}': MANIFEST_UNKNOWN: manifest unknown (HTTP 404)."),
    );
    let reference = format!("{}/not/ocit-there", reg.host());
    let out = env.pull(&reg, &[&reference]);
    assert_eq!(out.status, 1);
    // distribution 2.8 says "manifest unknown" for unknown repositories too.
    assert_failed_with(
        &out,
        &format!("Failed to fetch manifest of '{reference}:latest': MANIFEST_UNKNOWN: manifest unknown (HTTP 404)."),
    );
    assert!(env.top_level().is_empty());
}

#[test]
fn a_manifest_whose_content_type_and_media_type_disagree_is_refused() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    two_layer_image().push(&reg, "confused/ocit-app", Some("latest"));
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        let mut resp = upstream();
        if req.path.contains("/manifests/") {
            resp.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("Content-Type"));
            resp.headers.push(("Content-Type".into(), OCI_INDEX.into()));
        }
        resp
    });
    let env = PullEnv::new();
    let reference = format!("{}/confused/ocit-app:latest", proxy.host());
    let out = env.pull(&reg, &[&reference]);
    assert_failed_with(
        &out,
        &format!("Refusing manifest of '{reference}': its mediaType '{OCI_MANIFEST}' does not match its Content-Type '{OCI_INDEX}'."),
    );
    assert!(env.top_level().is_empty());
}

#[test]
fn an_oversized_manifest_is_refused() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let huge = {
        let mut m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
        m.resize(m.len() + (5 << 20), b'a');
        m.extend_from_slice(br#""}}"#);
        m
    };
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        match req.path.rsplit('/').next() {
            Some("sized") => Response::ok(huge.clone()).header("Content-Type", OCI_MANIFEST),
            Some("chunked") => Response::ok(huge.clone())
                .header("Content-Type", OCI_MANIFEST)
                .chunked(),
            _ => upstream(),
        }
    });
    let env = PullEnv::new();
    for tag in ["sized", "chunked"] {
        let reference = format!("{}/big/ocit-app:{tag}", proxy.host());
        let out = env.pull(&reg, &[&reference]);
        assert_failed_with(
            &out,
            &format!("Manifest of '{reference}' is larger than 4.0M, refusing."),
        );
    }
    assert!(env.top_level().is_empty());
}

#[test]
fn a_tampered_config_is_refused() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = two_layer_image();
    image.push(&reg, "cfg/ocit-app", Some("latest"));
    let config = image.config_digest.clone();
    let mut tampered = image.config.clone();
    tampered[5] ^= 1;
    let tampered_digest = sha256_digest(&tampered);
    let size = tampered.len();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&format!("/blobs/{config}")) {
            return Response::ok(tampered.clone()).header("Content-Type", OCI_CONFIG);
        }
        upstream()
    });
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/cfg/ocit-app", proxy.host())]);
    assert_failed_with(
        &out,
        &format!(
            "Image config digest mismatch: expected {} ({size} bytes), got {tampered_digest} ({size} bytes).",
            image.config_digest
        ),
    );
    assert!(env.top_level().is_empty());
}

#[test]
fn sigint_mid_layer_leaves_nothing_behind() {
    interrupted_mid_layer_leaves_nothing_behind(Signal::SIGINT);
}

#[test]
fn sigterm_mid_layer_leaves_nothing_behind() {
    interrupted_mid_layer_leaves_nothing_behind(Signal::SIGTERM);
}

fn interrupted_mid_layer_leaves_nothing_behind(signal: Signal) {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let env = PullEnv::new();
    pull_interrupted_mid_layer(&reg, &env, "stall/ocit-app", signal, || {
        // The base layer sits in the temporary image while the top one stalls.
        assert!(
            env.top_level().iter().any(|n| n.starts_with(".#")),
            "temporaries exist while pulling: {:?}",
            env.top_level()
        );
    });
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

/// A second HTTPS server (another port, same CA) serving `content` at `path`.
fn blob_server(reg: &Registry, path: &str, content: Vec<u8>) -> HttpServer {
    HttpServer::start(
        Some(reg.ca()),
        Router::new().serve_bytes(path, content).into_handler(),
    )
}

#[test]
fn a_blob_redirect_to_another_port_gets_no_credentials() {
    let reg = Arc::new(Registry::start(RegistryOptions::basic("alice", "s3cret")));
    let image = two_layer_image();
    image.push(&reg, "redirect/ocit-app", Some("latest"));
    let big = image.layers[1].digest.clone();
    let storage = blob_server(&reg, "/storage/big", image.layers[1].blob.clone());
    let location = storage.url("/storage/big?signature=abc");
    let proxy = FaultProxy::redirecting_blob(&reg, &big, location);
    let env = PullEnv::new();
    common::oci::write_docker_config(env.home.path(), &proxy.host(), "alice", "s3cret");
    let out = env.pull(&reg, &[&format!("{}/redirect/ocit-app", proxy.host())]);
    assert_success(&out);
    let asked = proxy.requests_for(&format!("/blobs/{big}"));
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].basic_auth().is_some(),
        "the registry gets the credentials"
    );
    let redirected = storage.requests();
    assert_eq!(redirected.len(), 1);
    assert_eq!(redirected[0].path, "/storage/big");
    assert_eq!(
        redirected[0].header("Authorization"),
        None,
        "credentials must not follow a redirect to another host or port"
    );
    assert_eq!(read(&env.path("ocit-app/data/noise")).len(), 1 << 20);
}

/// A proxy serving `image`'s manifest as `latest` itself (distribution refuses manifests
/// with `urls` unless configured to allow them) and forwarding everything else.
fn serve_image_manifest(reg: &Arc<Registry>, image: &common::oci::Image) -> FaultProxy {
    common::oci::serve_manifest(reg, "latest", image.manifest.clone())
}

#[test]
fn foreign_layer_urls_are_fetched_without_credentials_then_the_registry() {
    let reg = Arc::new(Registry::start(RegistryOptions::basic("alice", "s3cret")));
    let foreign = Tarball::new().file("foreign", b"from elsewhere").finish();
    let probe = ImageBuilder::oci()
        .layer(foreign.clone(), Codec::Gzip)
        .build();
    let elsewhere = blob_server(&reg, "/layers/foreign.tar.gz", probe.layers[0].blob.clone());
    let image = ImageBuilder::oci()
        .layer(foreign.clone(), Codec::Gzip)
        .layer(base_layer(), Codec::Gzip)
        .layer_descriptor_extra(
            0,
            serde_json::json!({"urls": [
                "ftp://ignored.example/x",
                elsewhere.url("/layers/foreign.tar.gz"),
            ]}),
        )
        .build();
    image.push_blobs(&reg, "foreign/ocit-app");
    let proxy = serve_image_manifest(&reg, &image);
    let env = PullEnv::new();
    common::oci::write_docker_config(env.home.path(), &proxy.host(), "alice", "s3cret");
    let out = env.pull(&reg, &[&format!("{}/foreign/ocit-app", proxy.host())]);
    assert_success(&out);
    assert_eq!(read(&env.path("ocit-app/foreign")), b"from elsewhere");
    let got = elsewhere.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("Authorization"), None);
    assert!(
        proxy
            .requests_for(&format!("/blobs/{}", image.layers[0].digest))
            .is_empty(),
        "the registry was not asked for the foreign layer"
    );

    // A URL that does not have it: the registry is asked next.
    let missing = blob_server(&reg, "/other", b"x".to_vec());
    let image = ImageBuilder::oci()
        .layer(foreign, Codec::Zstd)
        .layer_descriptor_extra(
            0,
            serde_json::json!({"urls": [missing.url("/layers/gone")]}),
        )
        .build();
    image.push_blobs(&reg, "foreign/ocit-fallback");
    let proxy = serve_image_manifest(&reg, &image);
    common::oci::write_docker_config(env.home.path(), &proxy.host(), "alice", "s3cret");
    let out = env.pull(&reg, &[&format!("{}/foreign/ocit-fallback", proxy.host())]);
    assert_success(&out);
    assert_line(
        &out,
        &format!(
            "Could not fetch layer {} from {}, trying the next source.",
            image.layers[0].digest,
            missing.url("/layers/gone")
        ),
    );
    assert_eq!(missing.requests()[0].header("Authorization"), None);
    assert_eq!(
        proxy
            .requests_for(&format!("/blobs/{}", image.layers[0].digest))
            .len(),
        1
    );
    assert_eq!(read(&env.path("ocit-fallback/foreign")), b"from elsewhere");
}

#[test]
fn tls_verification_failures_are_not_retried() {
    let reg = Registry::start(RegistryOptions::plain());
    let other_ca = common::tls::TestCa::new();
    let env = PullEnv::new();
    let mut cmd = common::oci::pull_oci(
        &other_ca.ca_pem_path(),
        env.root(),
        env.home.path(),
        &[&format!("{}/any/ocit-app", reg.host())],
    );
    let out = run_pull(&mut cmd);
    assert_failed_with(
        &out,
        "Transfer failed: SSL peer certificate or SSH remote key was not OK",
    );
    assert!(!out.stderr.contains("retrying"), "{}", out.stderr);
    assert!(env.top_level().is_empty());
}

#[test]
fn a_server_without_the_v2_api_is_recognized() {
    let ca = common::tls::TestCa::new();
    let server = HttpServer::start(Some(&ca), |_| Response::not_found());
    let env = PullEnv::new();
    let mut cmd = common::oci::pull_oci(
        &ca.ca_pem_path(),
        env.root(),
        env.home.path(),
        &[&format!("{}/some/ocit-app", server.host())],
    );
    let out = run_pull(&mut cmd);
    assert_failed_with(
        &out,
        &format!(
            "Registry {} does not speak the Registry v2 API (HTTP 404 for /v2/).",
            server.host()
        ),
    );
    assert!(env.top_level().is_empty());
}

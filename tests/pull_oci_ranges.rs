//! pull-oci fetches a big layer blob in parallel ranges (`--download-ranges=`,
//! `--download-range-size=`): the requests the server sees, the fallback to one stream when
//! ranges are ignored, a part that fails or is corrupt, and the option that turns it off.
//! The registry is Debian's `docker-registry` (which honours Range) behind a fault proxy
//! that logs every request.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fault_proxy::{forward_without_range, FaultProxy};
use common::http::{forward, HttpServer, Request, Router};
use common::oci::{
    assert_failed_with, assert_line, assert_success, base_layer, big_file_layer, read, Codec,
    Image, ImageBuilder,
};
use common::oci::{pull_oci, PullEnv};
use common::registry::{sha256_digest, Registry, RegistryOptions, TokenOptions};

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
        forward_without_range(req, &reg2)
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
    let proxy = FaultProxy::redirecting_blob(&reg, &big, location);
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

#[test]
fn a_part_refused_with_401_gets_a_new_token() {
    let reg = Arc::new(Registry::start(RegistryOptions::token(
        TokenOptions::default(),
    )));
    let image = big_image(&reg, "token/ocit-app");
    let big = image.layers[1].digest.clone();
    let path = format!("/blobs/{big}");
    let once = Arc::new(AtomicUsize::new(0));
    let o = once.clone();
    let reg2 = reg.clone();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&path)
            && range(req).map(|r| r.0) == Some(2 * PART)
            && o.fetch_add(1, Ordering::SeqCst) == 0
        {
            // The registry's own 401 with its Bearer challenge, as for an expired token.
            let mut bare = req.clone();
            bare.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("Authorization"));
            return forward(&bare, &reg2.url(), Some(reg2.ca()));
        }
        upstream()
    });
    let env = PullEnv::new();
    let tokens_before = reg.token_server().requests().len();
    let out = env.pull(
        &reg,
        &[PART_OPTION, &format!("{}/token/ocit-app", proxy.host())],
    );
    assert_success(&out);
    let third: Vec<_> = proxy
        .requests_for(&format!("/blobs/{big}"))
        .into_iter()
        .filter(|r| range(r).map(|r| r.0) == Some(2 * PART))
        .collect();
    assert_eq!(third.len(), 2, "{}", out.stderr);
    assert_ne!(
        third[0].bearer_token(),
        third[1].bearer_token(),
        "sent again with a new token"
    );
    assert_eq!(
        reg.token_server().requests().len() - tokens_before,
        2,
        "{}",
        out.stderr
    );
    assert_image(&env, &image);
}

/// The value of the prefix record on a spool file (0 if there is none).
fn recorded_prefix(path: &std::path::Path) -> u64 {
    if !path.exists() {
        return 0;
    }
    common::fsmeta::lxattrs(path)
        .get(&b"user.systemd_import.prefix"[..])
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Killed while its parts were running (one stalled mid-way, parts after it complete,
/// two not begun): the spool has holes. The next pull resumes after the prefix the hash
/// covered, fetching at most what lies beyond it, and the image is right.
#[test]
fn kill_9_during_a_ranged_fetch_then_a_new_pull_resumes_after_the_recorded_prefix() {
    use std::sync::atomic::AtomicBool;
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = big_image(&reg, "kill/ocit-app");
    let big = image.layers[1].digest.clone();
    let len = image.layers[1].blob.len() as u64;
    let path = format!("/blobs/{big}");
    let first_run = Arc::new(AtomicBool::new(true));
    let first = first_run.clone();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        let resp = upstream();
        let start = range(req).map(|r| r.0);
        if first.load(Ordering::SeqCst) && req.path.ends_with(&path) {
            let stall = Duration::from_secs(120);
            return match start {
                Some(s) if s == 2 * PART => resp.stall_after(1_000_000, stall),
                Some(s) if s >= 5 * PART => resp.stall_after(0, stall),
                _ => resp,
            };
        }
        resp
    });
    let reference = format!("{}/kill/ocit-app", proxy.host());
    let env = PullEnv::new();
    let spool = env.path(&format!(
        ".#oci-blob-sha256-{}.partial",
        big.strip_prefix("sha256:").unwrap()
    ));
    let watched = common::cli::spawn_watch(&mut env.cmd(&reg, &[PART_OPTION, &reference]));
    // The prefix reaches 2 parts and 1 MB; its hash is recorded every 4 MiB.
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorded_prefix(&spool) < PART
        || proxy
            .requests_for(&format!("/blobs/{big}"))
            .iter()
            .all(|r| range(r).map(|r| r.0) != Some(5 * PART))
    {
        assert!(Instant::now() < deadline, "the prefix was never recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the hash catch up with the prefix (2 parts and 1 MB) before the kill.
    std::thread::sleep(Duration::from_millis(300));
    watched.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = watched.wait();
    let recorded = recorded_prefix(&spool);
    assert!(
        (PART..=2 * PART + 1_000_000).contains(&recorded),
        "recorded {recorded}"
    );

    first_run.store(false, Ordering::SeqCst);
    let before = proxy.requests().len();
    let out = env.pull(&reg, &[PART_OPTION, &reference]);
    assert_success(&out);
    let again: Vec<_> = proxy.requests()[before..]
        .iter()
        .filter(|r| r.path.ends_with(&format!("/blobs/{big}")))
        .map(|r| range(r).expect("a range"))
        .collect();
    let fetched: u64 = again.iter().map(|(s, e)| e - s + 1).sum();
    assert_eq!(
        again.iter().map(|r| r.0).min(),
        Some(recorded),
        "resumed at the recorded prefix: {again:?}"
    );
    assert_eq!(fetched, len - recorded, "{again:?}");
    assert_image(&env, &image);
}

/// SIGINT while parts run (one stalled) stops the parts and the follower at once and
/// leaves nothing behind.
#[test]
fn sigint_during_a_ranged_fetch_leaves_nothing_behind() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = big_image(&reg, "sigint/ocit-app");
    let big = image.layers[1].digest.clone();
    let path = format!("/blobs/{big}");
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        let resp = upstream();
        if req.path.ends_with(&path) && range(req).map(|r| r.0) == Some(PART) {
            return resp.stall_after(100_000, Duration::from_secs(120));
        }
        resp
    });
    let env = PullEnv::new();
    let reference = format!("{}/sigint/ocit-app", proxy.host());
    let watched = common::cli::spawn_watch(&mut env.cmd(&reg, &[PART_OPTION, &reference]));
    watched.wait_for_stderr_line(
        |l| l.starts_with("Fetching layer ") && l.contains(" in 7 parts"),
        Duration::from_secs(60),
    );
    // Let the other parts arrive (and the second stall).
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    watched.signal(nix::sys::signal::Signal::SIGINT);
    common::oci::assert_aborted(&watched.wait());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly"
    );
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

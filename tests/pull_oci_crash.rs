//! pull-oci under the faults of issue 12: a corrupt layer always reports its own error, a
//! redirect from https to http is refused, a layer expanding beyond the limit is stopped,
//! and the messages name the cause.

mod common;

use std::sync::Arc;

use common::fault_proxy::FaultProxy;
use common::http::{HttpServer, Request, Response, Router};
use common::oci::{assert_failed_with, base_layer, big_file_layer, Codec, ImageBuilder, PullEnv};
use common::registry::{sha256_digest, Registry, RegistryOptions};

/// A corrupt byte in a layer is found by the decoder (a gzip CRC, a broken deflate block)
/// often before the download's digest check: the pull must still report the digest
/// mismatch, whichever comes first, every time.
#[test]
fn a_corrupt_layer_reports_its_digest_mismatch_50_times_in_a_row() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(big_file_layer("data/noise", 256 << 10), Codec::Gzip)
        .build();
    image.push(&reg, "race/ocit-app", Some("latest"));
    let victim = image.layers[1].digest.clone();
    let blob = image.layers[1].blob.clone();
    // The trailer (CRC, size) and a byte in the middle of the deflate data.
    let tampered: Vec<Vec<u8>> = [blob.len() - 1, blob.len() / 2]
        .into_iter()
        .map(|at| {
            let mut t = blob.clone();
            t[at] ^= 0x55;
            t
        })
        .collect();
    let digests: Vec<String> = tampered.iter().map(|t| sha256_digest(t)).collect();
    let which = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w = which.clone();
    let path = format!("/blobs/{victim}");
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&path) {
            let i = w.load(std::sync::atomic::Ordering::SeqCst);
            return Response::ok(tampered[i].clone());
        }
        upstream()
    });
    let reference = format!("{}/race/ocit-app", proxy.host());
    for round in 0..50 {
        let i = round % 2;
        which.store(i, std::sync::atomic::Ordering::SeqCst);
        let env = PullEnv::new();
        let out = env.pull(&reg, &[&reference]);
        assert_failed_with(
            &out,
            &format!(
                "Layer {victim} digest mismatch: the content is {}.",
                digests[i]
            ),
        );
        assert!(
            env.top_level().is_empty(),
            "round {round}: {:?}",
            env.top_level()
        );
    }
}

/// A blob on another server, over plain HTTP: the registry's redirect to it is refused.
#[test]
fn a_redirect_from_https_to_http_is_refused() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push(&reg, "downgrade/ocit-app", Some("latest"));
    let blob = image.layers[0].digest.clone();
    let plain = HttpServer::start(
        None,
        Router::new()
            .serve_bytes("/storage/blob", image.layers[0].blob.clone())
            .into_handler(),
    );
    let location = plain.url("/storage/blob");
    let path = format!("/blobs/{blob}");
    let to = location.clone();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&path) {
            return Response::redirect(302, &to);
        }
        upstream()
    });
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/downgrade/ocit-app", proxy.host())]);
    assert_failed_with(
        &out,
        &format!(
            "Refusing the redirect from https://{}/v2/downgrade/ocit-app/blobs/{blob} to {location}: \
             it leaves HTTPS for plain HTTP (only an endpoint configured insecure may).",
            proxy.host()
        ),
    );
    assert!(
        plain.requests().is_empty(),
        "nothing was fetched in clear text"
    );
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

#[test]
fn a_redirect_loop_says_so() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let proxy = Arc::new(std::sync::OnceLock::<String>::new());
    let host = proxy.clone();
    let server = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.contains("/manifests/") {
            let other = if req.path.ends_with("/a") { "b" } else { "a" };
            let to = format!(
                "https://{}/v2/loop/ocit-app/manifests/{other}",
                host.get().unwrap()
            );
            return Response::redirect(302, &to);
        }
        upstream()
    });
    proxy.set(server.host()).unwrap();
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/loop/ocit-app:a", server.host())]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(out.errors.len(), 1, "{}", out.stderr);
    let expected = format!(
        "Too many redirects for https://{0}/v2/loop/ocit-app/manifests/a (more than 20, the last to https://{0}/v2/loop/ocit-app/manifests/",
        server.host()
    );
    assert!(out.errors[0].starts_with(&expected), "{}", out.stderr);
    assert!(
        out.errors[0].ends_with("): is the server redirecting in a loop?"),
        "{}",
        out.stderr
    );
}

/// A registry reached over TLS that answers in plain HTTP.
#[test]
fn tls_to_a_plain_http_server_names_the_cause() {
    let plain = HttpServer::start(None, |_: &Request| Response::ok(b"{}".to_vec()));
    let reg = Registry::start(RegistryOptions::plain());
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/plain/ocit-app", plain.host())]);
    assert_failed_with(
        &out,
        &format!(
            "TLS handshake with https://{}/v2/ failed: the server does not speak TLS (plain HTTP?); \
             plain HTTP registries need 'insecure = true' in registries.conf.",
            plain.host()
        ),
    );
}

#[test]
fn an_http_reference_says_why_it_is_not_valid() {
    let reg = Registry::start(RegistryOptions::plain());
    let env = PullEnv::new();
    let out = env.pull(&reg, &["http://registry.example/library/debian"]);
    assert_failed_with(
        &out,
        "Reference 'http://registry.example/library/debian' is not valid: a reference names a \
         registry host, not a URL (write it without 'http://'; plain HTTP registries need \
         'insecure = true' in registries.conf).",
    );
}

/// `gib` GiB of zeros as zstd (1 GiB compressed once, its frame repeated: concatenated
/// frames decode as one stream), and the sha256 of what it expands to (computed only
/// when `diff_id`).
fn zero_bomb(gib: usize, diff_id: bool) -> (Vec<u8>, String) {
    use std::io::Write as _;
    let zeros = vec![0u8; 1 << 20];
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    for _ in 0..1024 {
        enc.write_all(&zeros).unwrap();
    }
    let frame = enc.finish().unwrap();
    let blob = frame.repeat(gib);
    let digest = if diff_id {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for _ in 0..(gib << 10) {
            h.update(&zeros);
        }
        format!("sha256:{:x}", h.finalize())
    } else {
        // Never reached: the limit stops the layer first.
        sha256_digest(b"not computed")
    };
    (blob, digest)
}

fn bomb_image(reg: &Registry, repo: &str, gib: usize, diff_id: bool) {
    let (blob, diff_id) = zero_bomb(gib, diff_id);
    ImageBuilder::oci()
        .raw_layer(blob, &diff_id, Codec::Zstd)
        .build()
        .push(reg, repo, Some("latest"));
}

/// The pull failed with the limit's one message, and left nothing.
fn assert_refused_at(out: &common::oci::PullOutput, env: &PullEnv, limit: &str) {
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(out.errors.len(), 1, "{}", out.stderr);
    let tail = format!(
        " expands to more than {limit}, refusing (the limit is set with --layer-size-max=)."
    );
    assert!(out.errors[0].ends_with(&tail), "{}", out.stderr);
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

/// A small blob of 20 GiB of zeros stops at the default limit (8 GiB) with one message.
#[test]
fn a_20_gib_zero_bomb_stops_at_the_default_limit() {
    let reg = Registry::start(RegistryOptions::plain());
    bomb_image(&reg, "bomb/ocit-big", 20, false);
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/bomb/ocit-big", reg.host())]);
    assert_refused_at(&out, &env, "8.0G");
}

/// The option lowers and raises the limit (a 1 GiB bomb keeps this quick).
#[test]
fn the_layer_size_limit_is_set_with_an_option() {
    let reg = Registry::start(RegistryOptions::plain());
    bomb_image(&reg, "bomb/ocit-gib", 1, true);
    let reference = format!("{}/bomb/ocit-gib", reg.host());
    let env = PullEnv::new();
    let out = env.pull(&reg, &["--layer-size-max=512M", &reference]);
    assert_refused_at(&out, &env, "512.0M");
    let out = env.pull(&reg, &["--layer-size-max=2G", &reference]);
    common::oci::assert_success(&out);
    env.assert_no_temporaries();
}

/// When [`killed_then_pulled_again`] kills the pull.
enum KillAt {
    /// Once a line of its stderr matches.
    Line(fn(&str) -> bool),
    /// Once the top layer's partial download holds this many bytes.
    Spooled(u64),
}

/// The partial download of a layer blob in `env`'s root (`sha256:<hex>` digest).
fn partial_of(env: &PullEnv, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    env.path(&format!(".#oci-blob-sha256-{hex}.partial"))
}

/// Bytes of the file at `path` (0 if it is not there).
fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Pull `repo` through a proxy that stalls its 1 MiB top layer after 100 kB, `kill -9` the
/// pull at `at`, then pull again without the stall: the second pull succeeds, asks each
/// layer only for what is not on disk (the server sends at most that plus one chunk), and
/// the root holds what a clean pull leaves, nothing else.
fn killed_then_pulled_again(repo: &str, at: KillAt) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const CHUNK: u64 = 256 << 10;
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(big_file_layer("data/noise", 1 << 20), Codec::Gzip)
        .build();
    image.push(&reg, repo, Some("latest"));
    let path = format!("/blobs/{}", image.layers[1].digest);
    let stall = Arc::new(AtomicBool::new(true));
    let stalling = stall.clone();
    // Body bytes of blobs the proxy sent to the second pull.
    let sent = Arc::new(AtomicU64::new(0));
    let counted = sent.clone();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        // Requests of the killed pull (which may still be answered after the kill) do
        // not count.
        let first_run = stalling.load(Ordering::SeqCst);
        let resp = upstream();
        if first_run && req.path.ends_with(&path) {
            return resp.stall_after(100_000, std::time::Duration::from_secs(120));
        }
        if !first_run && req.path.contains("/blobs/") {
            counted.fetch_add(resp.body.len() as u64, Ordering::SeqCst);
        }
        resp
    });
    let reference = format!("{}/{repo}", proxy.host());
    let env = PullEnv::new();
    let watched = common::cli::spawn_watch(&mut env.cmd(&reg, &[&reference]));
    let top = partial_of(&env, &image.layers[1].digest);
    match at {
        KillAt::Line(when) => {
            watched.wait_for_stderr_line(when, std::time::Duration::from_secs(60));
        }
        KillAt::Spooled(n) => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while file_len(&top) < n {
                assert!(std::time::Instant::now() < deadline, "the spool never grew");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    watched.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = watched.wait();
    let left = env.top_level();
    assert!(left.iter().any(|n| n.starts_with(".#")), "{left:?}");
    let missing: u64 = image
        .layers
        .iter()
        .map(|l| l.blob.len() as u64 - file_len(&partial_of(&env, &l.digest)))
        .sum();

    stall.store(false, Ordering::SeqCst);
    let out = env.pull(&reg, &[&reference]);
    common::oci::assert_success(&out);
    let fetched = sent.load(Ordering::SeqCst);
    assert!(
        fetched <= missing + CHUNK,
        "fetched {fetched} bytes again, {missing} were missing: {}",
        out.stderr
    );
    let clean = PullEnv::new();
    common::oci::assert_success(&clean.pull(&reg, &[&reference]));
    assert_eq!(env.top_level(), clean.top_level(), "{}", out.stderr);
    let name = repo.rsplit('/').next().unwrap();
    assert_eq!(
        common::oci::read(&env.path(&format!("{name}/data/noise"))).len(),
        1 << 20
    );
}

#[test]
fn kill_9_early_then_a_new_pull_leaves_only_the_result() {
    killed_then_pulled_again(
        "kill/ocit-early",
        KillAt::Line(|l| l.starts_with("Image ") && l.contains(" layers, ")),
    );
}

#[test]
fn kill_9_while_applying_then_a_new_pull_leaves_only_the_result() {
    killed_then_pulled_again(
        "kill/ocit-apply",
        KillAt::Line(|l| l.starts_with("Applied layer 1/2 ")),
    );
}

/// Killed with 100 kB of the top layer on disk: the next pull hashes them and asks for
/// the rest with a Range request.
#[test]
fn kill_9_mid_layer_then_a_new_pull_resumes_it() {
    killed_then_pulled_again("kill/ocit-mid", KillAt::Spooled(100_000));
}

/// A temporary whose owner is alive (another process holds its owner lock) is left
/// alone by a pull; one whose owner is gone is removed.
#[test]
fn a_live_processes_temporaries_are_not_touched() {
    use std::os::fd::AsRawFd;
    let reg = Registry::start(RegistryOptions::plain());
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push(&reg, "live/ocit-app", Some("latest"));
    let env = PullEnv::new();
    // Another process: this test, holding the lock of token 12345678.
    let lock = std::fs::File::create(env.path(".#owner-12345678.lock")).unwrap();
    // SAFETY: a plain flock on an fd we own.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let live = env.path(".#ocit-otherabcdef0112345678");
    std::fs::create_dir(&live).unwrap();
    std::fs::write(live.join("f"), b"in use").unwrap();
    // Dead: its owner's lock is not held (or gone).
    std::fs::write(env.path(".#owner-87654321.lock"), b"").unwrap();
    let dead = env.path(".#ocit-deadabcdef0187654321");
    std::fs::create_dir(&dead).unwrap();
    let orphan = env.path(".#oci-0123456789ab0123456789abcdef");
    std::fs::write(&orphan, b"spool").unwrap();

    let out = {
        let mut cmd = env.cmd(
            &reg,
            &[&format!("{}/live/ocit-app", reg.host()), "ocit-two"],
        );
        common::oci::run_pull(cmd.env("SYSTEMD_LOG_LEVEL", "debug"))
    };
    common::oci::assert_success(&out);
    assert_eq!(std::fs::read(live.join("f")).unwrap(), b"in use");
    assert!(env.path(".#owner-12345678.lock").exists());
    assert!(!dead.exists() && !orphan.exists());
    assert!(!env.path(".#owner-87654321.lock").exists());
    common::oci::assert_line(
        &out,
        &format!(
            "Removing {}, left behind by a process that is gone.",
            dead.display()
        ),
    );
    drop(lock);
}

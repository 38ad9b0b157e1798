//! pull-oci against Debian's real `docker-registry`: manifests and indexes, compression,
//! layer semantics, references, authentication, local names, parallelism and progress, on
//! the file system of the temporary directory (no subvolumes). btrfs is in
//! `pull_oci_btrfs.rs`, failures in `pull_oci_faults.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::cli::run;
use common::fault_proxy::FaultProxy;
use common::http::Request;
use common::oci::{
    assert_failed_with, assert_layered_tree, assert_line, assert_success, base_layer, foreign_arch,
    index, layered_image, native_arch, read, run_pull, write_docker_config, Codec, Flavor,
    ImageBuilder, PullEnv, LAYERED_NSPAWN,
};
use common::registry::{
    Access, Credentials, Registry, RegistryOptions, TokenOptions, TokenValidity,
};
use common::tarball::Tarball;
use serde_json::json;

#[test]
fn oci_image_with_gzip_layers_by_tag() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = layered_image(ImageBuilder::oci(), [Codec::Gzip; 3]);
    image.push(&reg, "tests/ocit-layered", Some("v1"));
    let env = PullEnv::new();
    let reference = format!("{}/tests/ocit-layered:v1", reg.host());
    let out = env.pull(&reg, &[&reference]);
    assert_success(&out);
    assert_line(
        &out,
        &format!("Pulling '{reference}', saving as 'ocit-layered'."),
    );
    assert_line(
        &out,
        &format!("Image {reference} has 3 layers, 0 already present."),
    );
    for (i, l) in image.layers.iter().enumerate() {
        assert_line(&out, &format!("Applied layer {}/3 {}.", i + 1, l.digest));
    }
    assert_layered_tree(&env.path("ocit-layered"));
    assert_eq!(
        read(&env.path("ocit-layered.nspawn")),
        LAYERED_NSPAWN.as_bytes()
    );
    assert_eq!(read(&env.path("ocit-layered.oci-config")), image.config);
    let nspawn_line = format!(
        "systemd-nspawn settings file written to '{}'.",
        env.path("ocit-layered.nspawn").display()
    );
    let config_line = format!(
        "OCI config written to '{}'.",
        env.path("ocit-layered.oci-config").display()
    );
    let pos = |l: &str| out.stderr_lines.iter().position(|x| x == l);
    assert!(
        pos("Created new local image 'ocit-layered'.") < pos(&nspawn_line)
            && pos(&nspawn_line) < pos(&config_line)
            && pos(&config_line) < pos("Operation completed successfully."),
        "{}",
        out.stderr
    );
    // Without subvolumes there is no layer cache, and nothing temporary is left.
    assert_eq!(
        env.top_level(),
        [
            "ocit-layered",
            "ocit-layered.nspawn",
            "ocit-layered.oci-config"
        ]
    );
    let mode = env
        .path("ocit-layered")
        .metadata()
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o200, 0, "the local image is writable");
}

#[test]
fn docker_schema2_with_uncompressed_zstd_and_gzip_layers() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = layered_image(
        ImageBuilder::docker(),
        [Codec::None, Codec::Zstd, Codec::Gzip],
    );
    image.push(&reg, "docker/style", Some("latest"));
    let env = PullEnv::new();
    // No tag means latest; LOCAL given explicitly.
    let out = env.pull(
        &reg,
        &[&format!("{}/docker/style", reg.host()), "ocit-mybox"],
    );
    assert_success(&out);
    assert_layered_tree(&env.path("ocit-mybox"));
    assert_eq!(
        read(&env.path("ocit-mybox.nspawn")),
        LAYERED_NSPAWN.as_bytes()
    );
    assert_eq!(read(&env.path("ocit-mybox.oci-config")), image.config);
    env.assert_no_temporaries();

    // The same layers in OCI media types with zstd for all.
    let image = layered_image(ImageBuilder::oci(), [Codec::Zstd; 3]);
    image.push(&reg, "oci/ocit-zstd", Some("z"));
    let out = env.pull(&reg, &[&format!("{}/oci/ocit-zstd:z", reg.host())]);
    assert_success(&out);
    assert_layered_tree(&env.path("ocit-zstd"));
}

/// Two single-layer images whose `/arch` file names their architecture, behind an index.
fn push_multi_arch(reg: &Registry, repo: &str, flavor: Flavor) {
    let image_for = |arch: &str| {
        ImageBuilder::new(flavor)
            .platform("linux", arch, (arch == "arm64").then_some("v8"))
            .layer(
                Tarball::new().file("arch", arch.as_bytes()).finish(),
                Codec::Gzip,
            )
            .build()
    };
    let (amd64, arm64) = (image_for("amd64"), image_for("arm64"));
    amd64.push(reg, repo, None);
    arm64.push(reg, repo, None);
    let attestation = ImageBuilder::new(flavor)
        .platform("unknown", "unknown", None)
        .layer(Tarball::new().file("sbom", b"{}").finish(), Codec::None)
        .build();
    attestation.push(reg, repo, None);
    let (body, media_type) = index(
        flavor,
        &[
            (&attestation, "unknown", "unknown", None),
            (&arm64, "linux", "arm64", Some("v8")),
            (&amd64, "linux", "amd64", None),
        ],
    );
    reg.push_manifest(repo, "multi", media_type, &body);
}

#[test]
fn an_index_picks_this_machine_and_platform_picks_another() {
    let reg = Registry::start(RegistryOptions::plain());
    push_multi_arch(&reg, "multi/oci", Flavor::Oci);
    push_multi_arch(&reg, "multi/docker", Flavor::Docker);
    let env = PullEnv::new();
    for repo in ["multi/oci", "multi/docker"] {
        let reference = format!("{}/{repo}:multi", reg.host());
        let native = format!("{}-native", repo.replace('/', "-"));
        let out = env.pull(&reg, &[&reference, &native]);
        assert_success(&out);
        assert_eq!(
            read(&env.path(&format!("{native}/arch"))),
            native_arch().as_bytes()
        );

        let other = foreign_arch();
        let foreign = format!("{}-foreign", repo.replace('/', "-"));
        let platform = format!("--platform=linux/{other}");
        let out = env.pull(&reg, &[&platform, &reference, &foreign]);
        assert_success(&out);
        assert_eq!(
            read(&env.path(&format!("{foreign}/arch"))),
            other.as_bytes()
        );
    }

    let reference = format!("{}/multi/oci:multi", reg.host());
    let out = env.pull(&reg, &["--platform=linux/s390x", &reference, "ocit-none"]);
    assert_failed_with(
        &out,
        &format!(
            "No image for linux/s390x in the index of '{reference}': it has unknown/unknown, linux/arm64/v8, linux/amd64."
        ),
    );
    assert!(!env.path("ocit-none").exists());
    env.assert_no_temporaries();

    let out = run(&mut env.cmd(&reg, &["--platform=linux", &reference]));
    assert_eq!(out.status, 1);
    assert_eq!(
        out.stderr_lines,
        ["Platform 'linux' is not valid, expected OS/ARCH[/VARIANT]."]
    );
}

#[test]
fn pull_by_digest_verifies_the_manifest() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    // Pushed by digest only: no tag names it.
    let digest = image.push(&reg, "by/ocit-digest", None);
    let other = ImageBuilder::oci()
        .layer(Tarball::new().file("other", b"x").finish(), Codec::Gzip)
        .build();
    other.push(&reg, "by/ocit-digest", Some("v2"));

    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/by/ocit-digest@{digest}", reg.host())]);
    assert_success(&out);
    assert_eq!(read(&env.path("ocit-digest/etc/hostname")), b"base\n");

    // Tag and digest: the digest wins.
    let out = env.pull(
        &reg,
        &[
            &format!("{}/by/ocit-digest:v2@{digest}", reg.host()),
            "ocit-both",
        ],
    );
    assert_success(&out);
    assert!(env.path("ocit-both/etc/hostname").exists());
    assert!(!env.path("ocit-both/other").exists());

    // A digest the registry does not have.
    let missing = common::registry::sha256_digest(b"no such manifest");
    let reference = format!("{}/by/ocit-digest@{missing}", reg.host());
    let out = env.pull(&reg, &[&reference, "ocit-missing"]);
    assert_failed_with(
        &out,
        &format!("Failed to fetch manifest of '{reference}': MANIFEST_UNKNOWN: manifest unknown (HTTP 404)."),
    );
    assert!(!env.path("ocit-missing").exists());
    env.assert_no_temporaries();
}

#[test]
fn basic_auth_with_credentials_from_every_auth_file() {
    let reg = Registry::start(RegistryOptions::basic("alice", "s3cret"));
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push(&reg, "private/ocit-app", Some("latest"));
    let reference = format!("{}/private/ocit-app", reg.host());

    // No credentials anywhere.
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&reference]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(out.errors.len(), 1, "{}", out.stderr);
    assert!(
        out.stderr_lines.iter().any(|l| l.starts_with(&format!(
            "Registry {} requires a login, but no credentials for it were found in ",
            reg.host()
        ))),
        "{}",
        out.stderr
    );
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());

    // ~/.docker/config.json, keyed by https://host.
    write_docker_config(
        env.home.path(),
        &format!("https://{}", reg.host()),
        "alice",
        "s3cret",
    );
    let out = env.pull(&reg, &[&reference, "ocit-from-docker"]);
    assert_success(&out);
    assert!(env.path("ocit-from-docker/etc/hostname").exists());

    // $REGISTRY_AUTH_FILE wins over ~/.docker/config.json, and wrong credentials fail.
    let bad = env.home.path().join("bad-auth.json");
    let auth = openssl::base64::encode_block(b"alice:wrong");
    std::fs::write(
        &bad,
        json!({"auths": {reg.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let out = run_pull(
        env.cmd(&reg, &[&reference, "ocit-bad"])
            .env("REGISTRY_AUTH_FILE", &bad),
    );
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(out.errors.len(), 1, "{}", out.stderr);
    assert!(
        out.stderr_lines.iter().any(|l| l.starts_with(&format!(
            "Registry {} refused the credentials of 'alice' from {}: UNAUTHORIZED",
            reg.host(),
            bad.display()
        ))),
        "{}",
        out.stderr
    );
    assert!(!env.path("ocit-bad").exists());

    // $XDG_RUNTIME_DIR/containers/auth.json (podman's place).
    let runtime = tempfile::tempdir().unwrap();
    std::fs::create_dir(runtime.path().join("containers")).unwrap();
    let auth = openssl::base64::encode_block(b"alice:s3cret");
    std::fs::write(
        runtime.path().join("containers/auth.json"),
        json!({"auths": {reg.host(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    std::fs::remove_dir_all(env.home.path().join(".docker")).unwrap();
    let out = run(env
        .cmd(&reg, &[&reference, "ocit-from-podman"])
        .env("XDG_RUNTIME_DIR", runtime.path()));
    assert_success(&out);
    assert!(env.path("ocit-from-podman/etc/hostname").exists());
    env.assert_no_temporaries();
}

#[test]
fn bearer_token_flow_anonymous_and_with_credentials() {
    let reg = Registry::start(RegistryOptions::token(TokenOptions::default()));
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push(&reg, "public/ocit-app", Some("1.0"));
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/public/ocit-app:1.0", reg.host())]);
    assert_success(&out);
    assert!(env.path("ocit-app/etc/hostname").exists());
    let tokens = reg.token_server().requests();
    assert_eq!(tokens.len(), 1, "one token for the whole pull");
    assert_eq!(
        tokens[0].query_param("scope").as_deref(),
        Some("repository:public/ocit-app:pull")
    );
    assert_eq!(
        tokens[0].query_param("service").as_deref(),
        Some("test-registry")
    );
    assert_eq!(tokens[0].basic_auth(), None, "anonymous");

    // A token server that wants a user.
    let options = TokenOptions {
        credentials: Some(Credentials::new("bob", "hunter2")),
        anonymous_pull: false,
        ..TokenOptions::default()
    };
    let reg = Registry::start(RegistryOptions::token(options));
    image.push(&reg, "team/ocit-app", Some("1.0"));
    let reference = format!("{}/team/ocit-app:1.0", reg.host());
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&reference]);
    assert_failed_with(&out, "Token server refused anonymous access: HTTP 401.");
    assert!(env.top_level().is_empty());

    write_docker_config(env.home.path(), &reg.host(), "bob", "hunter2");
    let out = env.pull(&reg, &[&reference]);
    assert_success(&out);
    let tokens = reg.token_server().requests();
    let last = tokens.last().unwrap();
    assert_eq!(
        last.basic_auth(),
        Some(("bob".to_string(), "hunter2".to_string()))
    );
    assert!(env.path("ocit-app/etc/hostname").exists());
}

#[test]
fn a_token_that_expires_mid_pull_is_renewed() {
    let reg = Arc::new(Registry::start(RegistryOptions::token(
        TokenOptions::default(),
    )));
    let image = ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(Tarball::new().file("second", b"2").finish(), Codec::Gzip)
        .build();
    image.push(&reg, "expiring/ocit-app", Some("latest"));
    let first_layer = image.layers[0].digest.clone();
    let replaced = Arc::new(AtomicUsize::new(0));
    let proxy_reg = Arc::clone(&reg);
    let proxy_replaced = Arc::clone(&replaced);
    // The first request for the first layer goes upstream with an expired token, as if
    // the client's token had run out between the config and the layers.
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.ends_with(&format!("/blobs/{first_layer}"))
            && proxy_replaced.fetch_add(1, Ordering::SeqCst) == 0
        {
            let expired = proxy_reg.token_server().mint(
                "",
                &[Access::repository("expiring/ocit-app", &["pull"])],
                TokenValidity::Expired,
            );
            let mut tampered: Request = req.clone();
            tampered
                .headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("Authorization"));
            tampered
                .headers
                .push(("Authorization".into(), format!("Bearer {expired}")));
            return common::http::forward(&tampered, &proxy_reg.url(), Some(proxy_reg.ca()));
        }
        upstream()
    });
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/expiring/ocit-app", proxy.host())]);
    assert_success(&out);
    assert_line(
        &out,
        &format!(
            "Registry {} asks for a new token, getting one.",
            proxy.host()
        ),
    );
    assert_eq!(reg.token_server().requests().len(), 2);
    assert_eq!(
        proxy
            .requests_for(&format!("/blobs/{}", image.layers[0].digest))
            .len(),
        2
    );
    assert!(env.path("ocit-app/second").exists());
}

#[test]
fn local_names_existing_images_and_force() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = layered_image(ImageBuilder::oci(), [Codec::Gzip; 3]);
    image.push(&reg, "names/ocit-app", Some("latest"));
    let reference = format!("{}/names/ocit-app", reg.host());
    let env = PullEnv::new();

    let out = run(&mut env.cmd(&reg, &[&reference, "foo..bar"]));
    assert_eq!(out.status, 1);
    assert_eq!(
        out.stderr_lines,
        ["Local image name 'foo..bar' is not valid."]
    );

    // "-": verify everything, keep nothing (no layer cache off btrfs).
    let out = env.pull(&reg, &[&reference, "-"]);
    assert_success(&out);
    assert_line(&out, &format!("Pulling '{reference}:latest'."));
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());

    // An existing image is kept without --force…
    std::fs::create_dir(env.path("ocit-app")).unwrap();
    std::fs::write(env.path("ocit-app/mine"), b"keep").unwrap();
    std::fs::write(env.path("ocit-app.nspawn"), b"old").unwrap();
    let out = run(&mut env.cmd(&reg, &[&reference]));
    assert_eq!(out.status, 1);
    assert_eq!(out.stderr_lines, ["Image 'ocit-app' already exists."]);
    assert!(env.path("ocit-app/mine").exists());

    // …and replaced, settings files included, with it.
    let out = env.pull(&reg, &["--force", &reference]);
    assert_success(&out);
    assert!(!env.path("ocit-app/mine").exists());
    assert_layered_tree(&env.path("ocit-app"));
    assert_eq!(
        read(&env.path("ocit-app.nspawn")),
        LAYERED_NSPAWN.as_bytes()
    );
    assert_eq!(
        env.top_level(),
        ["ocit-app", "ocit-app.nspawn", "ocit-app.oci-config"]
    );
}

#[test]
fn invalid_references_are_refused_before_anything_happens() {
    let env = PullEnv::new();
    let ca = common::tls::TestCa::new();
    for (reference, message) in [
        ("UPPER/Case", "Reference 'UPPER/Case' is not valid.".to_string()),
        ("a..b", "Reference 'a..b' is not valid.".to_string()),
        ("img:", "Reference 'img:' is not valid.".to_string()),
        (
            "img@sha512:00",
            "Reference 'img@sha512:00' uses the digest algorithm 'sha512', only sha256 is supported.".to_string(),
        ),
    ] {
        let mut cmd = common::oci::pull_oci(&ca.ca_pem_path(), env.root(), env.home.path(), &[reference]);
        let out = run(&mut cmd);
        assert_eq!(out.status, 1, "{reference}");
        assert_eq!(out.stderr_lines, [message], "{reference}");
    }
    assert!(env.top_level().is_empty());
}

#[test]
fn layers_download_in_parallel_up_to_the_limit() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let mut builder = ImageBuilder::oci();
    for i in 0..3 {
        builder = builder.layer(
            Tarball::new()
                .file(&format!("f{i}"), format!("{i}").as_bytes())
                .finish(),
            Codec::Gzip,
        );
    }
    let image = builder.build();
    image.push(&reg, "parallel/ocit-app", Some("latest"));
    let layer_paths: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("/blobs/{}", l.digest))
        .collect();

    // Every layer request waits until all three arrived: only parallel downloads get through.
    let barrier = Arc::new(Barrier::new(3));
    let paths = layer_paths.clone();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if paths.iter().any(|p| req.path.ends_with(p)) {
            barrier.wait();
        }
        upstream()
    });
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/parallel/ocit-app", proxy.host())]);
    assert_success(&out);
    for i in 0..3 {
        assert!(env.path(&format!("ocit-app/f{i}")).exists());
    }

    // With one download at a time, requests never overlap.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (f, m) = (Arc::clone(&in_flight), Arc::clone(&most));
    let paths = layer_paths.clone();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if !paths.iter().any(|p| req.path.ends_with(p)) {
            return upstream();
        }
        let now = f.fetch_add(1, Ordering::SeqCst) + 1;
        m.fetch_max(now, Ordering::SeqCst);
        // Give a second request the chance to show up while this one is open.
        std::thread::sleep(Duration::from_millis(100));
        let response = upstream();
        f.fetch_sub(1, Ordering::SeqCst);
        response
    });
    let env = PullEnv::new();
    let out = env.pull(
        &reg,
        &[
            "--max-concurrent-downloads=1",
            &format!("{}/parallel/ocit-app", proxy.host()),
        ],
    );
    assert_success(&out);
    assert_eq!(most.load(Ordering::SeqCst), 1);
}

#[test]
fn progress_goes_to_the_notify_socket() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = layered_image(ImageBuilder::oci(), [Codec::Gzip; 3]);
    image.push(&reg, "progress/ocit-app", Some("latest"));
    let env = PullEnv::new();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let out = run(env
        .cmd(&reg, &[&format!("{}/progress/ocit-app", reg.host())])
        .env("NOTIFY_SOCKET", &socket_path));
    assert_success(&out);
    socket.set_nonblocking(true).unwrap();
    let mut values = Vec::new();
    let mut layer_counts = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        // X_IMPORT_PROGRESS= first when present, then the extended fields (bytes, rate,
        // one line per layer), which may come alone.
        for (i, line) in msg.lines().enumerate() {
            if let Some(v) = line.strip_prefix("X_IMPORT_PROGRESS=") {
                assert_eq!(i, 0, "{msg:?}");
                values.push(v.parse::<u32>().unwrap());
            } else if let Some(layer) = line.strip_prefix("X_IMPORT_LAYER=") {
                layer_counts.push(layer.split(['/', ':']).nth(1).unwrap().to_string());
            } else {
                assert!(
                    line.starts_with("X_IMPORT_PROGRESS_BYTES=")
                        || line.starts_with("X_IMPORT_PROGRESS_RATE="),
                    "unexpected line {line:?} in {msg:?}"
                );
            }
        }
    }
    assert!(!layer_counts.is_empty(), "no layer lines");
    assert!(layer_counts.iter().all(|c| c == "3"), "{layer_counts:?}");
    assert_eq!(values.first(), Some(&0), "{values:?}");
    assert_eq!(values.last(), Some(&100), "{values:?}");
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    assert!(values.contains(&95), "finishing is reported: {values:?}");
    assert!(
        values.iter().any(|v| (6..95).contains(v)),
        "layers are reported: {values:?}"
    );
}

#[test]
fn an_inline_config_is_used_without_a_request() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push_blobs(&reg, "inline/ocit-app");
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["config"]["data"] = json!(openssl::base64::encode_block(&image.config));
    let body = serde_json::to_vec(&manifest).unwrap();
    reg.push_manifest(
        "inline/ocit-app",
        "latest",
        common::registry::OCI_MANIFEST,
        &body,
    );
    let proxy = FaultProxy::start(&reg, |_, upstream| upstream());
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/inline/ocit-app", proxy.host())]);
    assert_success(&out);
    assert!(proxy
        .requests_for(&format!("/blobs/{}", image.config_digest))
        .is_empty());
    assert_eq!(read(&env.path("ocit-app.oci-config")), image.config);
    assert!(env.path("ocit-app/etc/hostname").exists());
}

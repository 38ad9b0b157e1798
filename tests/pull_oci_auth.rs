//! pull-oci's authentication edge cases: which auth file's credentials are used (the
//! README's order, every file), and the challenges it refuses to answer (a Bearer realm
//! that is not https, a scheme it does not speak). The registry is Debian's
//! `docker-registry`, behind a fault proxy where the challenge is forged.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::fault_proxy::FaultProxy;
use common::http::{HttpServer, Response};
use common::oci::{
    assert_failed_with, assert_success, base_layer, run_pull, Codec, ImageBuilder, PullEnv,
};
use common::registry::{Registry, RegistryOptions};
use serde_json::json;

/// Write an auth file at `path` (creating its directory) with `user:password` for `host`.
fn write_auth(path: &Path, host: &str, user: &str, password: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let auth = openssl::base64::encode_block(format!("{user}:{password}").as_bytes());
    std::fs::write(path, json!({"auths": {host: {"auth": auth}}}).to_string()).unwrap();
}

#[test]
fn auth_files_are_searched_in_the_documented_order() {
    let reg = Registry::start(RegistryOptions::basic("alice", "s3cret"));
    ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .build()
        .push(&reg, "order/ocit-app", Some("latest"));
    let reference = format!("{}/order/ocit-app", reg.host());
    let env = PullEnv::new();
    let dirs = tempfile::tempdir().unwrap();
    let home = env.home.path();
    let registry_auth_file = dirs.path().join("registry-auth.json");
    let runtime = dirs.path().join("runtime");
    let config_home = dirs.path().join("config");
    let docker_config = dirs.path().join("docker");
    // Highest priority first: the variable's file, then the default it replaces.
    let files: [(&str, PathBuf); 6] = [
        ("REGISTRY_AUTH_FILE", registry_auth_file.clone()),
        ("XDG_RUNTIME_DIR", runtime.join("containers/auth.json")),
        ("XDG_CONFIG_HOME", config_home.join("containers/auth.json")),
        ("", home.join(".config/containers/auth.json")),
        ("DOCKER_CONFIG", docker_config.join("config.json")),
        ("", home.join(".docker/config.json")),
    ];
    // Every file has credentials for the registry, each a different wrong password: the
    // refusal names the file that was used.
    for (i, (_, path)) in files.iter().enumerate() {
        write_auth(path, &reg.host(), "alice", &format!("wrong{i}"));
    }
    let vars = [
        ("REGISTRY_AUTH_FILE", registry_auth_file.as_path()),
        ("XDG_RUNTIME_DIR", runtime.as_path()),
        ("XDG_CONFIG_HOME", config_home.as_path()),
        ("DOCKER_CONFIG", docker_config.as_path()),
    ];
    let pull = |set: &[&str]| {
        let mut cmd: Command = env.cmd(&reg, &[&reference, "ocit-app"]);
        for (name, value) in vars {
            if set.contains(&name) {
                cmd.env(name, value);
            }
        }
        run_pull(&mut cmd)
    };
    let refused_with = |path: &Path| {
        format!(
            "Registry {} refused the credentials of 'alice' from {}: UNAUTHORIZED: authentication required (HTTP 401).",
            reg.host(),
            path.display()
        )
    };
    let mut set: Vec<&str> = vars.iter().map(|(n, _)| *n).collect();
    for (var, path) in &files {
        let out = pull(&set);
        assert_failed_with(&out, &refused_with(path));
        assert!(env.top_level().is_empty(), "{:?}", env.top_level());
        // Next: without this file (its variable unset, or a default file removed).
        if var.is_empty() {
            std::fs::remove_file(path).unwrap();
        }
        set.retain(|n| n != var);
    }
    // The last one, right: the pull succeeds.
    write_auth(&files[5].1, &reg.host(), "alice", "s3cret");
    assert_success(&pull(&set));
    assert!(env.path("ocit-app/etc/hostname").exists());
}

#[test]
fn registry_auth_file_is_the_only_file_read_when_set() {
    let reg = Registry::start(RegistryOptions::basic("alice", "s3cret"));
    ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .build()
        .push(&reg, "alone/ocit-app", Some("latest"));
    let reference = format!("{}/alone/ocit-app", reg.host());
    let env = PullEnv::new();
    // Good credentials in the default files…
    write_auth(
        &env.home.path().join(".docker/config.json"),
        &reg.host(),
        "alice",
        "s3cret",
    );
    write_auth(
        &env.home.path().join(".config/containers/auth.json"),
        &reg.host(),
        "alice",
        "s3cret",
    );
    // …and $REGISTRY_AUTH_FILE with credentials for another registry only.
    let dir = tempfile::tempdir().unwrap();
    let only = dir.path().join("auth.json");
    write_auth(&only, "registry.example", "bob", "x");
    let out = run_pull(
        env.cmd(&reg, &[&reference, "ocit-app"])
            .env("REGISTRY_AUTH_FILE", &only),
    );
    assert_failed_with(
        &out,
        &format!(
            "Registry {} requires a login, but no credentials for it were found in {}.",
            reg.host(),
            only.display()
        ),
    );
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());

    // A file later in the order is used when an earlier one has no entry for the registry.
    write_auth(
        &env.home.path().join(".config/containers/auth.json"),
        "registry.example",
        "bob",
        "x",
    );
    let out = run_pull(&mut env.cmd(&reg, &[&reference, "ocit-app"]));
    assert_success(&out);
}

/// A proxy in front of a plain registry whose `/v2/` answers 401 with `challenge` (no
/// `WWW-Authenticate` header if `None`).
fn challenging_proxy(reg: &Arc<Registry>, challenge: Option<String>) -> FaultProxy {
    FaultProxy::start(reg, move |req, upstream| {
        if req.path == "/v2/" {
            let resp = Response::status(401)
                .header("Content-Type", "application/json")
                .body(r#"{"errors":[{"code":"UNAUTHORIZED","message":"log in"}]}"#);
            return match &challenge {
                Some(c) => resp.header("WWW-Authenticate", c),
                None => resp,
            };
        }
        upstream()
    })
}

#[test]
fn a_bearer_challenge_without_an_https_realm_is_refused() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    // A token server over plain http: it must never be asked (credentials could go there).
    let token_server = HttpServer::start(None, |_| Response::json(&json!({"token": "t"})));
    let env = PullEnv::new();
    for realm in [token_server.url("/token"), "https://".to_string()] {
        let proxy = challenging_proxy(
            &reg,
            Some(format!(r#"Bearer realm="{realm}",service="test""#)),
        );
        common::oci::write_docker_config(env.home.path(), &proxy.host(), "alice", "s3cret");
        let out = env.pull(&reg, &[&format!("{}/realm/ocit-app", proxy.host())]);
        assert_failed_with(
            &out,
            &format!(
                "Registry {} sent a Bearer challenge without an https realm, refusing.",
                proxy.host()
            ),
        );
        assert_eq!(proxy.requests().len(), 1, "only the ping");
        assert!(env.top_level().is_empty(), "{:?}", env.top_level());
    }
    assert!(token_server.requests().is_empty());
}

#[test]
fn an_unsupported_authentication_scheme_is_refused() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let env = PullEnv::new();
    for (challenge, shown) in [
        (Some("Negotiate"), "Negotiate"),
        (
            Some(r#"Digest realm="registry", nonce="abc""#),
            r#"Digest realm="registry", nonce="abc""#,
        ),
        (None, "no WWW-Authenticate header"),
    ] {
        let proxy = challenging_proxy(&reg, challenge.map(str::to_string));
        let out = env.pull(&reg, &[&format!("{}/scheme/ocit-app", proxy.host())]);
        assert_failed_with(
            &out,
            &format!(
                "Registry {} asks for an authentication scheme we do not support ({shown}).",
                proxy.host()
            ),
        );
        assert_eq!(proxy.requests().len(), 1, "only the ping");
        assert!(env.top_level().is_empty(), "{:?}", env.top_level());
    }
}

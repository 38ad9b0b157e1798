//! pull-oci in a fleet: the registry configuration (`--registry-config=DIR`) wired into the
//! pull, against real servers on loopback: an origin `docker-registry` (TLS, htpasswd), a
//! pull-through cache in front of it, a plain-HTTP registry, a registry demanding a client
//! certificate, nginx serving a registry under a path prefix, and tinyproxy.
//!
//! The origin's CA is the pull's `SSL_CERT_FILE` (the "system" trust); every other server's
//! CA reaches the pull only through the configuration (certs.d or hosts.toml `ca`), which
//! so also shows that those CAs are added to the system trust, not put in its place.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::connect_proxy::ConnectProxy;
use common::daemon::eventually;
use common::fleet_registry::{logged_requests, ExtraRegistry, LoggedRequest};
use common::nginx::PathPrefixProxy;
use common::oci::PullOutput;
use common::oci::{assert_success, base_layer, run_pull, Codec, Image, ImageBuilder, PullEnv};
use common::registry::{Registry, RegistryOptions};
use serde_json::json;

/// Our User-Agent, as registries log it.
const OUR_AGENT: &str = "systemd-import/";

/// A configuration root for `--registry-config=`.
struct ConfigRoot(tempfile::TempDir);

impl ConfigRoot {
    fn new() -> ConfigRoot {
        ConfigRoot(tempfile::tempdir().expect("config root"))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Write `rel` (below the root) with `text`.
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `etc/containers/registries.conf`.
    fn registries_conf(&self, text: &str) -> PathBuf {
        self.write("etc/containers/registries.conf", text)
    }

    /// `ca` as the certs.d CA of `host`.
    fn trust(&self, host: &str, ca: &Path) {
        let text = std::fs::read_to_string(ca).unwrap();
        self.write(&format!("etc/containers/certs.d/{host}/ca.crt"), &text);
    }

    fn option(&self) -> String {
        format!("--registry-config={}", self.path().display())
    }
}

/// The origin: TLS and htpasswd (`alice`/`s3cret`), with `library/demo:v1` (and `demo:v1`).
struct Origin {
    reg: Registry,
    image: Image,
}

fn origin() -> Origin {
    origin_with(RegistryOptions::basic("alice", "s3cret"))
}

/// An origin with `options`, with `library/demo:v1`.
fn origin_with(options: RegistryOptions) -> Origin {
    let reg = Registry::start(options);
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push(&reg, "library/demo", Some("v1"));
    Origin { reg, image }
}

/// A pull environment with the origin's credentials in its `~/.docker/config.json`.
fn env_with_login(origin: &Registry) -> PullEnv {
    let env = PullEnv::new();
    let path = env.home.path().join(".docker/config.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let auth = openssl::base64::encode_block(b"alice:s3cret");
    let doc = json!({"auths": {origin.host(): {"auth": auth}}});
    std::fs::write(path, doc.to_string()).unwrap();
    env
}

fn pull(env: &PullEnv, origin: &Registry, root: &ConfigRoot, args: &[&str]) -> PullOutput {
    let option = root.option();
    let mut all = vec![option.as_str()];
    all.extend_from_slice(args);
    let mut cmd: Command = env.cmd(origin, &all);
    // Never a proxy of the machine the tests run on.
    for var in [
        "https_proxy",
        "HTTPS_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    run_pull(&mut cmd)
}

/// The requests a registry logged that came from us.
fn ours(log: &str) -> Vec<LoggedRequest> {
    logged_requests(log)
        .into_iter()
        .filter(|r| r.user_agent.starts_with(OUR_AGENT))
        .collect()
}

/// The pull made `demo` although an endpoint failed: without an error line, and with a
/// line containing `needle` (the failure, said as a step).
fn assert_left_for_the_next(env: &PullEnv, out: &PullOutput, needle: &str) {
    assert_success(out);
    assert!(env.path("demo/etc/hostname").exists());
    assert!(out.errors.is_empty(), "{}", out.stderr);
    assert_line_contains(out, needle);
}

fn assert_line_contains(out: &PullOutput, needle: &str) {
    assert!(
        out.stderr_lines.iter().any(|l| l.contains(needle)),
        "no line with {needle:?} in:\n{}",
        out.stderr
    );
}

#[test]
fn a_registries_conf_mirror_serves_the_pull_and_the_origin_takes_over_when_it_is_down() {
    let o = origin();
    let mut cache = ExtraRegistry::pull_through_cache(&o.reg);
    let root = ConfigRoot::new();
    let conf = root.registries_conf(&format!(
        "[[registry]]\nlocation = \"{}\"\n[[registry.mirror]]\nlocation = \"{}\"\n",
        o.reg.host(),
        cache.host()
    ));
    root.trust(&cache.host(), &cache.ca().unwrap().ca_pem_path());
    let reference = format!("{}/library/demo:v1", o.reg.host());

    let env = env_with_login(&o.reg);
    let out = pull(&env, &o.reg, &root, &[&reference, "demo"]);
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists());
    let mirror = format!("mirror {}/v2 (from {})", cache.url(), conf.display());
    assert_line_contains(&out, &format!("from {mirror}."));
    assert_line_contains(
        &out,
        &format!("Fetched layer {} from {mirror}", o.image.layers[0].digest),
    );
    // The origin saw the cache, never us.
    eventually("the cache to log our requests", || {
        (!ours(&cache.log()).is_empty()).then_some(())
    });
    assert!(ours(&o.reg.log()).is_empty(), "{:?}", ours(&o.reg.log()));
    assert!(logged_requests(&o.reg.log())
        .iter()
        .any(|r| r.uri.starts_with("/v2/library/demo/")));

    // The cache goes down: the origin serves the next machine, with its credentials.
    cache.stop();
    let env = env_with_login(&o.reg);
    let out = pull(&env, &o.reg, &root, &[&reference, "demo"]);
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists());
    // The mirror's failure is a step, not an error: one line naming it and why, then the
    // endpoint that takes over.
    assert!(out.errors.is_empty(), "{}", out.stderr);
    let using = format!(
        "Using registry {}/v2 (from {}).",
        o.reg.url(),
        conf.display()
    );
    let down = format!("Download of {}/v2/ failed: Transfer failed: ", cache.url());
    let lines = &out.stderr_lines;
    let at = lines
        .iter()
        .position(|l| l.starts_with(&down) && l.ends_with(". Trying the next endpoint."))
        .unwrap_or_else(|| panic!("no line for the mirror in:\n{}", out.stderr));
    assert_eq!(lines.get(at + 1), Some(&using), "{}", out.stderr);
    eventually("the origin to log our requests", || {
        ours(&o.reg.log())
            .iter()
            .any(|r| r.uri.contains("/blobs/") && r.status == 200)
            .then_some(())
    });
}

#[test]
fn a_digest_only_mirror_serves_digest_pulls_only() {
    mirror_serves("", "pull-from-mirror = \"digest-only\"\n", false, true);
}

#[test]
fn mirror_by_digest_only_on_the_registry_serves_digest_pulls_only() {
    mirror_serves("mirror-by-digest-only = true\n", "", false, true);
}

#[test]
fn a_tag_only_mirror_serves_tag_pulls_only() {
    mirror_serves("", "pull-from-mirror = \"tag-only\"\n", true, false);
}

/// A pull-through cache as the origin's one mirror, with `table` among its
/// `[[registry]]` keys and `mirror` among its `[[registry.mirror]]` keys: it serves the pull
/// by tag if `by_tag`, the pull by digest if `by_digest`; the origin serves the others, and
/// the mirror is then not asked at all.
fn mirror_serves(table: &str, mirror: &str, by_tag: bool, by_digest: bool) {
    let o = origin();
    let cache = ExtraRegistry::pull_through_cache(&o.reg);
    let root = ConfigRoot::new();
    root.registries_conf(&format!(
        "[[registry]]\nlocation = \"{}\"\n{table}[[registry.mirror]]\nlocation = \"{}\"\n{mirror}",
        o.reg.host(),
        cache.host()
    ));
    root.trust(&cache.host(), &cache.ca().unwrap().ca_pem_path());
    let by = [
        (":v1".to_string(), "v1".to_string(), by_tag),
        (
            format!("@{}", o.image.manifest_digest),
            o.image.manifest_digest.to_string(),
            by_digest,
        ),
    ];
    for (suffix, manifest, served) in by {
        let reference = format!("{}/library/demo{suffix}", o.reg.host());
        let manifest = format!("/v2/library/demo/manifests/{manifest}");
        let (cache_before, origin_before) = (ours(&cache.log()).len(), ours(&o.reg.log()).len());
        let env = env_with_login(&o.reg);
        let out = pull(&env, &o.reg, &root, &[&reference, "demo"]);
        assert_success(&out);
        assert!(env.path("demo/etc/hostname").exists());
        let served_by = if served { "mirror" } else { "registry" };
        assert_line_contains(
            &out,
            &format!("Fetched manifest of '{reference}' from {served_by} "),
        );
        let asked = |log: &str| ours(log).iter().any(|r| r.uri == manifest);
        let (server, log, before) = if served {
            eventually("the cache to log the manifest", || {
                asked(&cache.log()).then_some(())
            });
            ("the origin", o.reg.log(), origin_before)
        } else {
            eventually("the origin to log the manifest", || {
                asked(&o.reg.log()).then_some(())
            });
            ("the mirror", cache.log(), cache_before)
        };
        // Not asked at all.
        assert_eq!(
            ours(&log).len(),
            before,
            "{server} asked for {reference}: {log}"
        );
    }
}

#[test]
fn blocked_registries_are_refused_and_locations_rewrite_names() {
    let o = origin();
    let root = ConfigRoot::new();
    let conf = root.registries_conf(&format!(
        "[[registry]]\nprefix = \"fleet.example/team\"\nlocation = \"{}/library\"\n\n\
         [[registry]]\nlocation = \"blocked.example\"\nblocked = true\n",
        o.reg.host()
    ));
    let env = env_with_login(&o.reg);
    let out = pull(&env, &o.reg, &root, &["fleet.example/team/demo:v1"]);
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists(), "{}", out.stderr);

    let out = pull(&env, &o.reg, &root, &["blocked.example/x/demo:v1", "other"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(
        out.errors,
        [format!(
            "Registry 'blocked.example' is blocked in {}, refusing to pull 'blocked.example/x/demo:v1'.",
            conf.display()
        )]
    );
    assert!(!env.path("other").exists());
}

#[test]
fn an_insecure_plain_http_registry_is_used_only_when_configured() {
    let plain_origin = origin_with(RegistryOptions::plain()).reg;
    let http = ExtraRegistry::plain_http(&plain_origin);
    let reference = format!("{}/library/demo:v1", http.host());
    let root = ConfigRoot::new();

    // Not configured: https only, which it does not speak.
    let env = PullEnv::new();
    let out = pull(&env, &plain_origin, &root, &[&reference, "demo"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(
        out.errors,
        [format!(
            "TLS handshake with https://{}/v2/ failed: the server does not speak TLS (plain HTTP?); plain HTTP registries need 'insecure = true' in registries.conf.",
            http.host()
        )],
        "{}",
        out.stderr
    );
    assert!(!env.path("demo").exists());
    assert!(
        ours(&http.log()).is_empty(),
        "no HTTP request: {}",
        http.log()
    );

    root.registries_conf(&format!(
        "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
        http.host()
    ));
    let out = pull(&env, &plain_origin, &root, &[&reference, "demo"]);
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists());
    assert_line_contains(&out, &format!("from registry {}/v2", http.url()));
}

#[test]
fn short_names_follow_aliases_and_the_search_order_and_ambiguity_is_an_error() {
    let o = origin();
    o.image.push(&o.reg, "demo", Some("v1"));
    // The first search registry does not have it.
    let empty = Registry::start(RegistryOptions::plain());
    let root = ConfigRoot::new();
    root.trust(&empty.host(), &empty.ca().ca_pem_path());
    let conf = root.registries_conf(&format!(
        "unqualified-search-registries = [\"{}\", \"{}\"]\nshort-name-mode = \"permissive\"\n\
         [aliases]\n\"fleet-demo\" = \"{}/library/demo\"\n",
        empty.host(),
        o.reg.host(),
        o.reg.host()
    ));

    let env = env_with_login(&o.reg);
    let out = pull(&env, &o.reg, &root, &["demo:v1"]);
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists());
    assert_line_contains(
        &out,
        &format!(
            "Fetched manifest of '{}/demo:v1' from registry",
            o.reg.host()
        ),
    );
    // (distribution logs a 404 as "response completed with error").
    assert!(
        empty.log().contains(
            "http.request.uri=/v2/demo/manifests/v1 http.request.useragent=systemd-import/"
        ),
        "the first search registry was asked first: {}",
        empty.log()
    );

    let out = pull(&env, &o.reg, &root, &["fleet-demo:v1", "aliased"]);
    assert_success(&out);
    assert!(env.path("aliased/etc/hostname").exists());
    assert_line_contains(
        &out,
        &format!(
            "Fetched manifest of '{}/library/demo:v1' from registry",
            o.reg.host()
        ),
    );

    let conf_text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("permissive", "enforcing");
    std::fs::write(&conf, conf_text).unwrap();
    let out = pull(&env, &o.reg, &root, &["demo:v1", "third"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(
        out.errors,
        [format!(
            "Short name 'demo:v1' is ambiguous and short-name-mode is enforcing (in {}), which needs a prompt we never show; candidates: {}/demo:v1, {}/demo:v1. Use a fully qualified name or add an alias.",
            conf.display(),
            empty.host(),
            o.reg.host()
        )]
    );
}

#[test]
fn hosts_toml_override_path_mirror_with_its_own_ca_and_headers() {
    let plain_origin = origin_with(RegistryOptions::plain()).reg;
    let front = PathPrefixProxy::start(&plain_origin, "/mirror");
    let root = ConfigRoot::new();
    let host = plain_origin.host();
    root.write(
        &format!("etc/containerd/certs.d/{host}/hosts.toml"),
        &format!(
            "server = \"https://{host}\"\n\n[host.\"{}\"]\ncapabilities = [\"pull\", \"resolve\"]\noverride_path = true\nca = \"{}\"\n[host.\"{}\".header]\nX-Fleet = \"node-7\"\n",
            front.api_root(),
            front.ca().ca_pem_path().display(),
            front.api_root()
        ),
    );
    let env = PullEnv::new();
    let out = pull(
        &env,
        &plain_origin,
        &root,
        &[&format!("{host}/library/demo:v1"), "demo"],
    );
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists());
    let requests = eventually("nginx to log our requests", || {
        Some(front.requests()).filter(|r| r.iter().any(|q| q.uri.contains("/blobs/")))
    });
    let manifest = requests
        .iter()
        .find(|r| r.uri.starts_with("/mirror/v2/library/demo/manifests/v1"))
        .unwrap_or_else(|| panic!("{requests:?}"));
    assert_eq!(
        manifest.uri,
        format!(
            "/mirror/v2/library/demo/manifests/v1?ns={}",
            host.replace(':', "%3A")
        )
    );
    assert_eq!(
        (manifest.status, manifest.x_fleet.as_str()),
        (200, "node-7")
    );
    assert!(manifest.user_agent.starts_with(OUR_AGENT), "{manifest:?}");
    // Everything went through nginx: the registry saw `ns=` on each request of ours.
    let direct: Vec<LoggedRequest> = ours(&plain_origin.log())
        .into_iter()
        .filter(|r| r.uri != "/v2/" && !r.uri.contains("?ns="))
        .collect();
    assert!(direct.is_empty(), "{direct:?}");
}

#[test]
fn hosts_toml_client_certificate_and_default_directory() {
    let Origin {
        reg: plain_origin,
        image,
    } = origin_with(RegistryOptions::plain());
    let reg = ExtraRegistry::requiring_client_cert(&plain_origin);
    let reference = format!("{}/library/demo:v1", reg.host());
    let root = ConfigRoot::new();
    // Its CA alone: no client certificate, refused.
    root.trust(&reg.host(), &reg.ca().unwrap().ca_pem_path());
    let env = PullEnv::new();
    let out = pull(&env, &plain_origin, &root, &[&reference, "demo"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(!env.path("demo").exists());

    // hosts.toml for the host: CA and client certificate.
    root.write(
        &format!("etc/containerd/certs.d/{}/hosts.toml", reg.host()),
        &format!(
            "server = \"{}\"\nca = \"{}\"\nclient = [[\"{}\", \"{}\"]]\n",
            reg.url(),
            reg.ca().unwrap().ca_pem_path().display(),
            reg.client_cert_path().display(),
            reg.client_key_path().display()
        ),
    );
    let out = pull(&env, &plain_origin, &root, &[&reference, "demo"]);
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists());

    // `_default` applies to every registry: here a mirror (the client-cert registry) that
    // may only serve content, so the tag is resolved at the origin and the layers come
    // from the mirror.
    let root = ConfigRoot::new();
    root.write(
        "etc/containerd/certs.d/_default/hosts.toml",
        &format!(
            "[host.\"{}/v2\"]\ncapabilities = [\"pull\"]\nca = \"{}\"\nclient = [[\"{}\", \"{}\"]]\n",
            reg.url(),
            reg.ca().unwrap().ca_pem_path().display(),
            reg.client_cert_path().display(),
            reg.client_key_path().display()
        ),
    );
    let env = PullEnv::new();
    let reference = format!("{}/library/demo:v1", plain_origin.host());
    let out = pull(&env, &plain_origin, &root, &[&reference, "demo"]);
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists());
    assert_line_contains(
        &out,
        &format!(
            "Fetched layer {} from mirror {}/v2",
            image.layers[0].digest,
            reg.url()
        ),
    );
    let origin_saw = ours(&plain_origin.log());
    assert!(
        origin_saw
            .iter()
            .any(|r| r.uri == "/v2/library/demo/manifests/v1")
            && !origin_saw.iter().any(|r| r.uri.contains("/blobs/")),
        "{origin_saw:?}"
    );
}

#[test]
fn oci_registry_files_name_the_registry() {
    let o = origin();
    let root = ConfigRoot::new();
    // A reference without a registry: default.oci-registry's defaultRegistry.
    root.write(
        "etc/systemd/oci-registry/default.oci-registry",
        &json!({"defaultRegistry": o.reg.host()}).to_string(),
    );
    // A registry replaced by another.
    root.write(
        "usr/lib/systemd/oci-registry/registry.fleet.example.oci-registry",
        &json!({"overrideRegistry": o.reg.host()}).to_string(),
    );
    let env = env_with_login(&o.reg);
    let out = pull(&env, &o.reg, &root, &["library/demo:v1", "by-default"]);
    assert_success(&out);
    assert!(env.path("by-default/etc/hostname").exists());
    let out = pull(
        &env,
        &o.reg,
        &root,
        &["fleet.example/library/demo:v1", "by-override"],
    );
    assert_success(&out);
    assert!(env.path("by-override/etc/hostname").exists());
}

#[test]
fn https_proxy_is_used_and_no_proxy_bypasses_it() {
    let o = origin();
    let proxy = ConnectProxy::start();
    let root = ConfigRoot::new();
    let env = env_with_login(&o.reg);
    let reference = format!("{}/library/demo:v1", o.reg.host());
    let mut cmd = env.cmd(&o.reg, &[&root.option(), &reference, "proxied"]);
    cmd.env("https_proxy", proxy.url())
        .env_remove("no_proxy")
        .env_remove("NO_PROXY");
    assert_success(&run_pull(&mut cmd));
    assert!(env.path("proxied/etc/hostname").exists());
    let targets = proxy.connect_targets();
    assert!(
        !targets.is_empty() && targets.iter().all(|t| *t == o.reg.host()),
        "{}",
        proxy.log()
    );

    let seen = proxy.requests().len();
    let mut cmd = env.cmd(&o.reg, &[&root.option(), &reference, "direct"]);
    cmd.env("https_proxy", proxy.url())
        .env("NO_PROXY", "127.0.0.1");
    assert_success(&run_pull(&mut cmd));
    assert!(env.path("direct/etc/hostname").exists());
    assert_eq!(proxy.requests().len(), seen, "{}", proxy.log());
}

/// A directory with `docker-credential-<name>` scripts, for `PATH`.
struct Helpers(tempfile::TempDir);

impl Helpers {
    fn new() -> Helpers {
        Helpers(tempfile::tempdir().unwrap())
    }

    /// `docker-credential-<name>` running `body` (sh; the server is on stdin).
    fn add(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.path().join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\nread server\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `docker-credential-<name>` answering `user` and `secret` for `server`, and failing
    /// for any other.
    fn add_login(&self, name: &str, server: &str, user: &str, secret: &str) {
        self.add(
            name,
            &format!(
                "[ \"$server\" = \"{server}\" ] || exit 1\n\
                 echo '{{\"ServerURL\":\"{server}\",\"Username\":\"{user}\",\"Secret\":\"{secret}\"}}'"
            ),
        );
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.0.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

/// Pull `reference` from `reg` in a new environment whose `~/.docker/config.json` is
/// `config`, with `helpers` on `PATH`.
fn helper_pull(
    reg: &Registry,
    helpers: &Helpers,
    config: serde_json::Value,
    reference: &str,
) -> (PullEnv, PullOutput) {
    let env = PullEnv::new();
    let path = env.home.path().join(".docker/config.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, config.to_string()).unwrap();
    let root = ConfigRoot::new();
    let mut cmd = env.cmd(reg, &[&root.option(), reference]);
    cmd.env("PATH", helpers.path_var());
    let out = run_pull(&mut cmd);
    (env, out)
}

#[test]
fn credential_helpers_give_passwords_and_identity_tokens() {
    let o = origin();
    let helpers = Helpers::new();
    helpers.add_login("fleet", &o.reg.host(), "alice", "s3cret");
    let reference = format!("{}/library/demo:v1", o.reg.host());
    let (env, out) = helper_pull(
        &o.reg,
        &helpers,
        json!({"credHelpers": {o.reg.host(): "fleet"}}),
        &reference,
    );
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists());

    // An identity token, traded at the token server (OAuth2 refresh-token grant).
    let options = common::registry::TokenOptions {
        anonymous_pull: false,
        refresh_token: Some(("rt-fleet-7".to_string(), "bob".to_string())),
        ..Default::default()
    };
    let reg = Registry::start(RegistryOptions::token(options));
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push(&reg, "team/app", Some("1.0"));
    helpers.add(
        "vault",
        &format!(
            "echo '{{\"ServerURL\":\"{}\",\"Username\":\"<token>\",\"Secret\":\"rt-fleet-7\"}}'",
            reg.host()
        ),
    );
    let (env, out) = helper_pull(
        &reg,
        &helpers,
        json!({"credsStore": "vault"}),
        &format!("{}/team/app:1.0", reg.host()),
    );
    assert_success(&out);
    assert!(env.path("app/etc/hostname").exists());
    let tokens = reg.token_server().requests();
    assert!(
        tokens
            .iter()
            .all(|r| r.method == "POST" && r.basic_auth().is_none()),
        "{tokens:?}"
    );
    let form = String::from_utf8_lossy(&tokens[0].body).into_owned();
    assert!(
        form.starts_with("grant_type=refresh_token&refresh_token=rt-fleet-7&service=")
            && form.contains("&scope=repository%3Ateam%2Fapp%3Apull&client_id=systemd-import"),
        "{form}"
    );
}

#[test]
fn a_failing_or_missing_helper_is_one_warning_and_the_pull_goes_on_without_credentials() {
    let helpers = Helpers::new();
    helpers.add("broken", "echo 'keychain locked'\nexit 3");
    // The origin wants a login: without the helper's credentials the pull fails.
    let o = origin();
    let (_env, out) = helper_pull(
        &o.reg,
        &helpers,
        json!({"credHelpers": {o.reg.host(): "broken"}}),
        &format!("{}/library/demo:v1", o.reg.host()),
    );
    assert_eq!(out.status, 1, "{}", out.stderr);
    let warning = format!(
        "Credential helper docker-credential-broken for registry {} ",
        o.reg.host()
    );
    assert_eq!(
        out.stderr_lines
            .iter()
            .filter(|l| l.starts_with(&warning))
            .count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.errors
            .iter()
            .any(|e| e.starts_with(&format!("Registry {} requires a login", o.reg.host()))),
        "{}",
        out.stderr
    );

    // A registry without login: a missing helper is a warning, the pull succeeds.
    let open = origin_with(RegistryOptions::plain()).reg;
    let (_env, out) = helper_pull(
        &open,
        &helpers,
        json!({"credsStore": "nowhere"}),
        &format!("{}/library/demo:v1", open.host()),
    );
    assert_success(&out);
    assert!(
        out.stderr_lines.contains(&format!(
            "Credential helper docker-credential-nowhere for registry {} is not installed (not found in the search path).",
            open.host()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_mirror_answering_5xx_mid_pull_hands_over_to_the_registry_without_retries() {
    mirror_failing_blobs(|_| common::http::Response::status(503), &[]);
}

#[test]
fn a_mirror_stalling_below_the_low_speed_limit_hands_over_to_the_registry() {
    // The config blob (207 bytes) stalls after 16; the low-speed window is 1 s here.
    mirror_failing_blobs(
        |upstream| upstream().stall_after(16, Duration::from_secs(4)),
        &[("SYSTEMD_IMPORT_TEST_LOW_SPEED_TIME", "1")],
    );
}

/// A pull through a mirror that serves the manifest but answers every blob with `blob()`
/// (`vars` set for the pull): the registry must serve the blobs.
fn mirror_failing_blobs(
    blob: impl Fn(&dyn Fn() -> common::http::Response) -> common::http::Response + Send + Sync + 'static,
    vars: &[(&str, &str)],
) {
    // A mirror that has the manifest but fails every blob.
    let FaultPull {
        env,
        out,
        mirror,
        reg,
        image,
    } = pull_with_fault_mirror(
        move |req, upstream| {
            if req.path.contains("/blobs/") {
                blob(upstream)
            } else {
                upstream()
            }
        },
        vars,
    );
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists());
    assert_line_contains(
        &out,
        &format!(
            "Fetched manifest of '{}/library/demo:v1' from mirror https://{}/v2",
            reg.host(),
            mirror.host()
        ),
    );
    assert_line_contains(
        &out,
        &format!(
            "Fetched layer {} from registry {}/v2",
            image.layers[0].digest,
            reg.url()
        ),
    );
    assert!(out.errors.is_empty(), "{}", out.stderr);
    // One blob request reached the mirror: no retries there.
    assert_eq!(mirror.requests_for("/blobs/").len(), 1, "{}", out.stderr);
    assert!(
        !out.stderr.contains("larger than"),
        "the mirror failed the way it should: {}",
        out.stderr
    );
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn only_the_last_endpoints_failure_is_an_error() {
    let (mirror, registry) = (
        format!("127.0.0.1:{}", closed_port()),
        format!("127.0.0.1:{}", closed_port()),
    );
    let root = ConfigRoot::new();
    root.registries_conf(&format!(
        "[[registry]]\nlocation = \"{registry}\"\n[[registry.mirror]]\nlocation = \"{mirror}\"\n"
    ));
    let reg = Registry::start(RegistryOptions::plain());
    let env = PullEnv::new();
    let out = pull(&env, &reg, &root, &[&format!("{registry}/library/demo:v1")]);
    common::oci::assert_failed_with(&out, "Transfer failed: Could not connect to server");
    assert_line_contains(
        &out,
        &format!(
            "Download of https://{mirror}/v2/ failed: Transfer failed: Could not connect to server. Trying the next endpoint."
        ),
    );
}

#[test]
fn wildcard_prefixes_the_longest_prefix_and_drop_ins_choose_the_table() {
    let o = origin();
    let origin = o.reg.host();
    let root = ConfigRoot::new();
    let conf = root.registries_conf(&format!(
        "[[registry]]\nprefix = \"*.fleet.test\"\nlocation = \"{origin}\"\n\n\
         [[registry]]\nprefix = \"eu.fleet.test/library\"\nlocation = \"nowhere.test/library\"\nblocked = true\n\n\
         [[registry]]\nprefix = \"eu.fleet.test/library/demo\"\nlocation = \"{origin}/library/demo\"\n\n\
         [[registry]]\nprefix = \"fleet.example/team\"\nlocation = \"nowhere.test/team\"\nblocked = true\n"
    ));
    // A later drop-in replaces the main file's table with the same prefix.
    root.write(
        "etc/containers/registries.conf.d/10-first.conf",
        "[[registry]]\nprefix = \"fleet.example/team\"\nlocation = \"nowhere.test/first\"\nblocked = true\n",
    );
    root.write(
        "etc/containers/registries.conf.d/50-team.conf",
        &format!(
            "[[registry]]\nprefix = \"fleet.example/team\"\nlocation = \"{origin}/library\"\n"
        ),
    );
    let env = env_with_login(&o.reg);
    let pulled = |reference: &str, local: &str| {
        let out = pull(&env, &o.reg, &root, &[reference, local]);
        assert_success(&out);
        assert!(env.path(&format!("{local}/etc/hostname")).exists());
        out
    };
    // `*.fleet.test` matches a subdomain at any depth (the location rewrites the host, so
    // no name is ever resolved).
    let out = pulled("a.b.fleet.test/library/demo:v1", "wild");
    assert_line_contains(
        &out,
        &format!(
            "Fetched manifest of 'a.b.fleet.test/library/demo:v1' from registry {}/v2 (from {}).",
            o.reg.url(),
            conf.display()
        ),
    );
    // The longest prefix wins: over the wildcard, and over a shorter blocked table.
    pulled("eu.fleet.test/library/demo:v1", "longest");
    let out = pull(
        &env,
        &o.reg,
        &root,
        &["eu.fleet.test/library/other:v1", "x"],
    );
    assert_eq!(
        out.errors,
        [format!(
            "Registry 'eu.fleet.test/library' is blocked in {}, refusing to pull 'eu.fleet.test/library/other:v1'.",
            conf.display()
        )],
        "{}",
        out.stderr
    );
    // The main file blocks `fleet.example/team`, the last drop-in points it at the origin.
    pulled("fleet.example/team/demo:v1", "dropped-in");
}

#[test]
fn docker_and_containers_certs_d_give_the_ca_and_the_client_certificate() {
    let plain_origin = origin_with(RegistryOptions::plain()).reg;
    let reg = ExtraRegistry::requiring_client_cert(&plain_origin);
    let reference = format!("{}/library/demo:v1", reg.host());
    for dir in ["etc/docker/certs.d", "etc/containers/certs.d"] {
        let root = ConfigRoot::new();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        let host_dir = format!("{dir}/{}", reg.host());
        root.write(
            &format!("{host_dir}/ca.crt"),
            &read(&reg.ca().unwrap().ca_pem_path()),
        );
        root.write(
            &format!("{host_dir}/client.cert"),
            &read(&reg.client_cert_path()),
        );
        root.write(
            &format!("{host_dir}/client.key"),
            &read(&reg.client_key_path()),
        );
        let env = PullEnv::new();
        let out = pull(&env, &plain_origin, &root, &[&reference, "demo"]);
        assert_success(&out);
        assert!(env.path("demo/etc/hostname").exists(), "{dir}");
    }
}

#[test]
fn registries_conf_credential_helpers_are_asked_in_order() {
    let o = origin();
    let helpers = Helpers::new();
    helpers.add("broken", "echo 'keychain locked'\nexit 3");
    helpers.add_login("fleet", &o.reg.host(), "alice", "s3cret");
    let root = ConfigRoot::new();
    root.registries_conf(
        "credential-helpers = [\"broken\", \"fleet\", \"containers-auth.json\"]\n",
    );
    // No auth file at all: the credentials come from the second helper.
    let env = PullEnv::new();
    let reference = format!("{}/library/demo:v1", o.reg.host());
    let mut cmd = env.cmd(&o.reg, &[&root.option(), &reference]);
    cmd.env("PATH", helpers.path_var());
    let out = run_pull(&mut cmd);
    assert_success(&out);
    assert!(env.path("demo/etc/hostname").exists());
    // The failing first helper is not worth a line when another had credentials.
    assert!(
        !out.stderr.contains("docker-credential-broken"),
        "{}",
        out.stderr
    );
}

/// A port that accepts no connection and answers none: its listen queue is full, so the
/// kernel drops every new SYN (a blackholed address, on loopback).
struct Blackhole {
    listener: std::net::TcpListener,
    _queued: std::net::TcpStream,
}

impl Blackhole {
    fn new() -> Blackhole {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
        // Backlog 0 holds one connection: this one, never accepted.
        let queued = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        Blackhole {
            listener,
            _queued: queued,
        }
    }

    fn host(&self) -> String {
        self.listener.local_addr().unwrap().to_string()
    }
}

#[test]
fn a_blackholed_mirror_is_left_after_its_dial_timeout() {
    let o = origin();
    let hole = Blackhole::new();
    let root = ConfigRoot::new();
    root.write(
        &format!("etc/containerd/certs.d/{}/hosts.toml", o.reg.host()),
        &format!(
            "server = \"{}\"\n\n[host.\"https://{}\"]\ncapabilities = [\"pull\", \"resolve\"]\ndial_timeout = \"500ms\"\n",
            o.reg.url(),
            hole.host()
        ),
    );
    let env = env_with_login(&o.reg);
    let reference = format!("{}/library/demo:v1", o.reg.host());
    let started = std::time::Instant::now();
    let out = pull(&env, &o.reg, &root, &[&reference, "demo"]);
    let took = started.elapsed();
    assert_left_for_the_next(
        &env,
        &out,
        &format!(
            "Download of https://{}/v2/ failed: Transfer failed: ",
            hole.host()
        ),
    );
    // libcurl's own connect timeout is 300 s: the dial timeout is what ended the wait.
    assert!(took < Duration::from_secs(10), "{took:?}\n{}", out.stderr);
}

/// A pull of the origin's `library/demo:v1` (plain options) with a [`FaultProxy`] in front
/// of the origin as its registries.conf mirror, answering as `rule` says.
///
/// [`FaultProxy`]: common::fault_proxy::FaultProxy
struct FaultPull {
    env: PullEnv,
    out: PullOutput,
    mirror: common::fault_proxy::FaultProxy,
    reg: std::sync::Arc<Registry>,
    image: Image,
}

fn pull_with_fault_mirror(
    rule: impl Fn(&common::http::Request, &dyn Fn() -> common::http::Response) -> common::http::Response
        + Send
        + Sync
        + 'static,
    vars: &[(&str, &str)],
) -> FaultPull {
    let o = origin_with(RegistryOptions::plain());
    let reg = std::sync::Arc::new(o.reg);
    let mirror = common::fault_proxy::FaultProxy::start(&reg, rule);
    let root = ConfigRoot::new();
    root.registries_conf(&format!(
        "[[registry]]\nlocation = \"{}\"\n[[registry.mirror]]\nlocation = \"{}\"\n",
        reg.host(),
        mirror.host()
    ));
    let env = PullEnv::new();
    let reference = format!("{}/library/demo:v1", reg.host());
    let mut cmd = env.cmd(&reg, &[&root.option(), &reference]);
    cmd.envs(vars.iter().copied());
    let out = run_pull(&mut cmd);
    FaultPull {
        env,
        out,
        mirror,
        reg,
        image: o.image,
    }
}

#[test]
fn a_mirror_answering_5xx_from_the_first_request_is_left_at_once() {
    let FaultPull {
        env, out, mirror, ..
    } = pull_with_fault_mirror(|_, _| common::http::Response::status(503), &[]);
    assert_left_for_the_next(
        &env,
        &out,
        &format!(
            "https://{}/v2/ answered HTTP 503. Trying the next endpoint.",
            mirror.host()
        ),
    );
    // The ping, once: no retries at a mirror, nothing else asked there.
    assert_eq!(mirror.requests().len(), 1, "{}", out.stderr);
}

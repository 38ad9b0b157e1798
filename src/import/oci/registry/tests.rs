//! How the three configuration families combine: [`RegistryConfig::resolve`] on
//! configuration trees in temporary directories.

use std::path::{Path, PathBuf};

use super::*;

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A configuration root with `files` (paths relative to the root, as on a real system).
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new(files: &[(&str, &str)]) -> Root {
        Root {
            dir: error::temp_tree(files),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn config(&self) -> RegistryConfig {
        RegistryConfig::load(&ConfigPaths::under_root(self.dir.path())).unwrap()
    }

    fn resolve(&self, name: &str) -> Result<Resolution, ConfigError> {
        self.config().resolve(&ImageName::parse(name).unwrap())
    }

    /// `(base_url, repository, ns, role, serves_tags)` of every endpoint of the first
    /// candidate.
    fn plan(&self, name: &str) -> Vec<(String, String, Option<String>, Role, bool)> {
        let r = self.resolve(name).unwrap();
        r.candidates[0]
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.base_url.clone(),
                    e.repository.clone(),
                    e.ns.clone(),
                    e.role,
                    e.serves_tags,
                )
            })
            .collect()
    }
}

fn row(
    url: &str,
    repo: &str,
    ns: Option<&str>,
    role: Role,
    tags: bool,
) -> (String, String, Option<String>, Role, bool) {
    (url.into(), repo.into(), ns.map(str::to_string), role, tags)
}

const REGISTRIES_CONF: &str = "etc/containers/registries.conf";

#[test]
fn nothing_configured_is_todays_behaviour() {
    let root = Root::new(&[]);
    let r = root.resolve("debian").unwrap();
    assert_eq!(r.candidates.len(), 1);
    let c = &r.candidates[0];
    assert_eq!(c.image.to_string(), "docker.io/library/debian:latest");
    assert_eq!(c.endpoints.len(), 1);
    let e = &c.endpoints[0];
    assert_eq!(e.base_url, "https://registry-1.docker.io/v2");
    assert_eq!(e.host, "registry-1.docker.io");
    assert_eq!(e.auth_host, "docker.io");
    assert_eq!(
        (e.role, e.serves_tags, e.tls.skip_verify),
        (Role::Origin, true, false)
    );
    assert_eq!(e.configured_by, None);
    assert_eq!(
        e.manifest_url("latest"),
        "https://registry-1.docker.io/v2/library/debian/manifests/latest"
    );
    let e = &root.resolve("127.0.0.1:5000/a/b").unwrap().candidates[0].endpoints[0];
    assert_eq!(e.base_url, "https://127.0.0.1:5000/v2");
    assert_eq!(e.auth_host, "127.0.0.1:5000");
}

#[test]
fn registries_conf_mirrors_come_before_hosts_toml_mirrors_then_the_origin() {
    let root = Root::new(&[
        (
            REGISTRIES_CONF,
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n\
             [[registry.mirror]]\nlocation = \"cache.local:5000\"\n\
             [[registry.mirror]]\nlocation = \"harbor.local/hub\"\npull-from-mirror = \"digest-only\"\n",
        ),
        (
            "etc/containerd/certs.d/docker.io/hosts.toml",
            "[host.\"http://10.0.0.1:30020\"]\ncapabilities = [\"pull\"]\n\
             [host.\"https://push-only.local\"]\ncapabilities = [\"push\"]\n\
             [host.\"https://resolver.local/v2/hub\"]\ncapabilities = [\"pull\", \"resolve\"]\noverride_path = true\n",
        ),
    ]);
    let hub = Some("docker.io");
    // A tag pull: the digest-only mirror is left out, the pull-only P2P host stays with
    // serves_tags false, the push-only one is not a pull endpoint.
    assert_eq!(
        root.plan("debian:12"),
        [
            row(
                "https://cache.local:5000/v2",
                "library/debian",
                None,
                Role::Mirror,
                true
            ),
            row(
                "http://10.0.0.1:30020/v2",
                "library/debian",
                hub,
                Role::Mirror,
                false
            ),
            row(
                "https://resolver.local/v2/hub",
                "library/debian",
                hub,
                Role::Mirror,
                true
            ),
            row(
                "https://registry-1.docker.io/v2",
                "library/debian",
                None,
                Role::Origin,
                true
            ),
        ]
    );
    // A digest pull: the digest-only mirror (with its path) is in, second.
    let plan = root.plan(&format!("debian@sha256:{HEX}"));
    assert_eq!(plan.len(), 5);
    assert_eq!(
        plan[1],
        row(
            "https://harbor.local/v2",
            "hub/library/debian",
            None,
            Role::Mirror,
            true
        )
    );
    let r = root.resolve("debian").unwrap();
    let endpoints: Vec<&Endpoint> = r.endpoints().collect();
    assert_eq!(
        endpoints[1].blob_url(&crate::import::oci::digest::Digest::from_hex(HEX).unwrap()),
        format!("http://10.0.0.1:30020/v2/library/debian/blobs/sha256:{HEX}?ns=docker.io")
    );
    assert_eq!(endpoints[0].auth_host, "cache.local:5000");
    assert_eq!(endpoints[1].auth_host, "10.0.0.1:30020");
    assert_eq!(
        endpoints[0].configured_by.as_deref(),
        Some(root.path(REGISTRIES_CONF).as_path())
    );
    assert_eq!(
        endpoints[1].configured_by.as_deref(),
        Some(
            root.path("etc/containerd/certs.d/docker.io/hosts.toml")
                .as_path()
        )
    );
    assert_eq!(
        endpoints[1].to_string(),
        format!(
            "mirror http://10.0.0.1:30020/v2 (from {})",
            root.path("etc/containerd/certs.d/docker.io/hosts.toml")
                .display()
        )
    );
}

#[test]
fn location_rewrite_and_blocked_prefixes() {
    let root = Root::new(&[(
        REGISTRIES_CONF,
        "[[registry]]\nprefix = \"example.com/team\"\nlocation = \"internal.example/mirror/team\"\n\
         [[registry]]\nprefix = \"example.com/bad\"\nlocation = \"example.com/bad\"\nblocked = true\n",
    )]);
    assert_eq!(
        root.plan("example.com/team/app:1"),
        [row(
            "https://internal.example/v2",
            "mirror/team/app",
            None,
            Role::Origin,
            true
        )]
    );
    assert_eq!(
        root.resolve("example.com/team/app").unwrap().candidates[0]
            .image
            .to_string(),
        "example.com/team/app:latest"
    );
    let err = root.resolve("example.com/bad/app").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked);
}

#[test]
fn insecure_means_unverified_https_then_plain_http_and_hosts_toml_settings_win() {
    let root = Root::new(&[
        (
            REGISTRIES_CONF,
            "[[registry]]\nlocation = \"localhost:5001\"\ninsecure = true\n\
             [[registry]]\nlocation = \"strict.local:5002\"\ninsecure = true\n",
        ),
        (
            "etc/containerd/certs.d/strict.local:5002/hosts.toml",
            "skip_verify = false\nca = \"ca.pem\"\n",
        ),
    ]);
    let r = root.resolve("localhost:5001/app").unwrap();
    let e = &r.candidates[0].endpoints;
    assert_eq!(e.len(), 2);
    assert_eq!(
        (e[0].base_url.as_str(), e[0].tls.skip_verify),
        ("https://localhost:5001/v2", true)
    );
    assert_eq!(
        (e[1].base_url.as_str(), e[1].scheme),
        ("http://localhost:5001/v2", Scheme::Http)
    );
    // hosts.toml's explicit skip_verify = false wins over insecure; the plain-HTTP twin
    // still follows from insecure.
    let r = root.resolve("strict.local:5002/app").unwrap();
    let e = &r.candidates[0].endpoints;
    assert!(!e[0].tls.skip_verify);
    assert_eq!(
        e[0].tls.ca_files,
        [root.path("etc/containerd/certs.d/strict.local:5002/ca.pem")]
    );
    // Not configured insecure: HTTPS only.
    assert_eq!(root.plan("localhost:5003/app").len(), 1);
}

#[test]
fn hosts_toml_server_override_path_headers_and_client_certificates() {
    let root = Root::new(&[(
        "etc/containerd/certs.d/reg.example:5000/hosts.toml",
        r#"
server = "https://nginx.local:8443/registry"
ca = "server-ca.pem"
client = [["client.cert", "client.key"]]
[header]
  x-fleet = "yes"
[host."https://proxy.local/prefix/v2"]
  override_path = true
  skip_verify = true
  dial_timeout = "200ms"
  [host."https://proxy.local/prefix/v2".header]
    x-mirror = ["1", "2"]
"#,
    )]);
    let r = root.resolve("reg.example:5000/app").unwrap();
    let e = &r.candidates[0].endpoints;
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].base_url, "https://proxy.local/prefix/v2");
    assert_eq!(e[0].ns.as_deref(), Some("reg.example:5000"));
    assert!(e[0].tls.skip_verify);
    assert_eq!(
        e[0].connect_timeout,
        Some(std::time::Duration::from_millis(200))
    );
    assert_eq!(
        e[0].headers,
        [
            ("x-mirror".to_string(), "1".to_string()),
            ("x-mirror".to_string(), "2".to_string())
        ]
    );
    assert_eq!(e[1].base_url, "https://nginx.local:8443/registry/v2");
    assert_eq!(e[1].role, Role::Origin);
    assert_eq!(e[1].auth_host, "nginx.local:8443");
    assert_eq!(e[1].headers, [("x-fleet".to_string(), "yes".to_string())]);
    let dir = root.path("etc/containerd/certs.d/reg.example:5000");
    assert_eq!(e[1].tls.ca_files, [dir.join("server-ca.pem")]);
    assert_eq!(
        e[1].tls.client_certs,
        [ClientCert {
            cert: dir.join("client.cert"),
            key: Some(dir.join("client.key"))
        }]
    );
    assert_eq!(
        e[1].manifest_url("1"),
        "https://nginx.local:8443/registry/v2/app/manifests/1?ns=reg.example%3A5000"
    );
}

#[test]
fn the_default_host_directory_applies_to_every_registry() {
    // Spegel's layout: a node-local mirror for everything, pull-only unless told.
    let root = Root::new(&[(
        "etc/containerd/certs.d/_default/hosts.toml",
        "[host.\"http://127.0.0.1:30020\"]\ncapabilities = [\"pull\", \"resolve\"]\ndial_timeout = \"200ms\"\n",
    )]);
    assert_eq!(
        root.plan("quay.io/org/app"),
        [
            row(
                "http://127.0.0.1:30020/v2",
                "org/app",
                Some("quay.io"),
                Role::Mirror,
                true
            ),
            row("https://quay.io/v2", "org/app", None, Role::Origin, true),
        ]
    );
    assert_eq!(root.plan("debian")[0].2.as_deref(), Some("docker.io"));
}

#[test]
fn certs_d_supplies_tls_files_where_hosts_toml_gives_none() {
    let root = Root::new(&[
        ("etc/docker/certs.d/reg.example:5000/ca.crt", ""),
        ("etc/docker/certs.d/reg.example:5000/client.cert", ""),
        ("etc/docker/certs.d/reg.example:5000/client.key", ""),
        ("etc/containers/certs.d/docker.io/hub.crt", ""),
        ("etc/containers/certs.d/mirror.local/m.crt", ""),
        (
            REGISTRIES_CONF,
            "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"mirror.local\"\n",
        ),
    ]);
    let r = root.resolve("reg.example:5000/app").unwrap();
    let tls = &r.candidates[0].endpoints[0].tls;
    let d = root.path("etc/docker/certs.d/reg.example:5000");
    assert_eq!(tls.ca_files, [d.join("ca.crt")]);
    assert_eq!(
        tls.client_certs[0].key.as_deref(),
        Some(d.join("client.key").as_path())
    );
    // Docker Hub's directory is named docker.io; a mirror's by its own host.
    let r = root.resolve("docker.io/library/debian").unwrap();
    let e = &r.candidates[0].endpoints;
    assert_eq!(
        e[0].tls.ca_files,
        [root.path("etc/containers/certs.d/mirror.local/m.crt")]
    );
    assert_eq!(
        e[1].tls.ca_files,
        [root.path("etc/containers/certs.d/docker.io/hub.crt")]
    );
    // A broken certs.d directory is an error naming it.
    let bad = Root::new(&[("etc/docker/certs.d/bad.example/orphan.cert", "")]);
    let err = bad.resolve("bad.example/app").unwrap_err().to_string();
    assert!(err.contains("missing key orphan.key"), "{err}");
}

#[test]
fn the_registry_map_applies_first_then_registries_conf_and_hosts_toml() {
    let docker = r#"{"shortImagePrefix":"library/","overrideRegistry":"registry-1.docker.io"}"#;
    let root = Root::new(&[
        ("usr/lib/systemd/oci-registry/default.oci-registry", docker),
        ("usr/lib/systemd/oci-registry/registry.docker.io.oci-registry", docker),
        (
            "etc/systemd/oci-registry/image.tool.oci-registry",
            r#"{"defaultRegistry":"localhost:5001","defaultProtocol":"http"}"#,
        ),
        (
            REGISTRIES_CONF,
            "unqualified-search-registries = [\"quay.io\"]\n\
             [[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"cache.local\"\n",
        ),
    ]);
    // The map makes nginx Docker Hub's (not quay.io's, the search registry): then the
    // registries.conf mirror for docker.io applies.
    let r = root.resolve("nginx").unwrap();
    assert_eq!(r.candidates.len(), 1);
    assert_eq!(
        r.candidates[0].image.to_string(),
        "docker.io/library/nginx:latest"
    );
    assert!(
        r.candidates[0].how.starts_with("registry map "),
        "{}",
        r.candidates[0].how
    );
    assert_eq!(
        root.plan("nginx"),
        [
            row(
                "https://cache.local/v2",
                "library/nginx",
                None,
                Role::Mirror,
                true
            ),
            row(
                "https://registry-1.docker.io/v2",
                "library/nginx",
                None,
                Role::Origin,
                true
            ),
        ]
    );
    // defaultProtocol http: the registry itself over plain HTTP.
    assert_eq!(
        root.plan("tool:1"),
        [row(
            "http://localhost:5001/v2",
            "tool",
            None,
            Role::Origin,
            true
        )]
    );
    // A named registry without a map file of its own is left to registries.conf.
    assert_eq!(root.plan("quay.io/x")[0].0, "https://quay.io/v2");
}

#[test]
fn short_names_resolve_through_registries_conf_when_no_map_applies() {
    let root = Root::new(&[(
        REGISTRIES_CONF,
        "unqualified-search-registries = [\"blocked.example\", \"a.example\", \"b.example\"]\n\
         [[registry]]\nlocation = \"blocked.example\"\nblocked = true\n\
         [aliases]\n\"known\" = \"b.example/known\"\n",
    )]);
    let r = root.resolve("app:1").unwrap();
    let images: Vec<String> = r.candidates.iter().map(|c| c.image.to_string()).collect();
    // The blocked candidate is skipped, the others kept in order.
    assert_eq!(images, ["a.example/app:1", "b.example/app:1"]);
    assert!(r.candidates[0]
        .how
        .starts_with("unqualified-search-registries of "));
    assert_eq!(
        root.resolve("known").unwrap().candidates[0]
            .image
            .to_string(),
        "b.example/known:latest"
    );

    let enforcing = Root::new(&[(
        REGISTRIES_CONF,
        "short-name-mode = \"enforcing\"\nunqualified-search-registries = [\"a.example\", \"b.example\"]\n",
    )]);
    let err = enforcing.resolve("app").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Ambiguous);
    assert!(
        err.to_string()
            .contains("a.example/app:latest, b.example/app:latest"),
        "{err}"
    );

    let all_blocked = Root::new(&[(
        REGISTRIES_CONF,
        "unqualified-search-registries = [\"x.example\"]\n[[registry]]\nlocation = \"x.example\"\nblocked = true\n",
    )]);
    assert_eq!(
        all_blocked.resolve("app").unwrap_err().kind(),
        ErrorKind::Blocked
    );
}

#[test]
fn bad_files_fail_load_or_resolve_with_their_name() {
    let root = Root::new(&[(REGISTRIES_CONF, "short-name-mode = 1\n")]);
    let err = RegistryConfig::load(&ConfigPaths::under_root(root.dir.path())).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&root.path(REGISTRIES_CONF).display().to_string()),
        "{err}"
    );
    let root = Root::new(&[(
        "etc/containerd/certs.d/h.example/hosts.toml",
        "server = 1\n",
    )]);
    let err = root.resolve("h.example/x").unwrap_err().to_string();
    assert!(err.contains("hosts.toml:1: server: invalid type"), "{err}");
    let explicit = ConfigPaths {
        registries_conf: Path::new("/nonexistent/registries.conf").into(),
        registries_conf_required: true,
        ..ConfigPaths::under_root(Path::new("/nonexistent"))
    };
    assert!(RegistryConfig::load(&explicit).is_err());
}

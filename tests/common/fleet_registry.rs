//! More Debian `docker-registry` instances for the fleet tests, each beside an origin
//! [`Registry`]:
//!
//! * [`ExtraRegistry::pull_through_cache`]: a distribution registry in proxy mode
//!   (`proxy: remoteurl:` = the origin, with the origin's htpasswd credentials and trusting
//!   the origin's CA), over HTTPS with its own [`TestCa`], storage of its own; it answers
//!   anonymous clients;
//! * [`ExtraRegistry::requiring_client_cert`]: the origin's storage served over HTTPS that
//!   demands a client certificate (`http.tls.clientcas`); [`ExtraRegistry::client_cert_path`]
//!   and [`ExtraRegistry::client_key_path`] are a certificate it accepts;
//! * [`ExtraRegistry::plain_http`]: the origin's storage served over plain HTTP (the
//!   `localhost:5000` registry of many setups).
//!
//! The last two read the origin's storage directory, so push to the origin and pull here.
//! All bind `127.0.0.1` on a free port, keep their files in a temporary directory and are
//! killed on drop; [`ExtraRegistry::stop`] kills one early (a cache that went down).
//!
//! [`logged_requests`] reads the requests out of any registry's log, e.g. to see that the
//! origin was asked by the cache and not by the program under test.
//!
//! ```ignore
//! let origin = Registry::start(RegistryOptions::basic("alice", "pw"));
//! let cache = ExtraRegistry::pull_through_cache(&origin);
//! // registries.conf: [[registry]] location = origin.host(), mirror location = cache.host()
//! ```

use std::path::PathBuf;

use super::daemon::Daemon;
use super::registry::{config_yaml, start_registry, tls_yaml, Registry};
use super::tls::TestCa;

/// Which kind of [`ExtraRegistry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    PullThroughCache,
    ClientCert,
    PlainHttp,
}

/// A second `docker-registry serve` next to an origin [`Registry`]. Killed on drop.
pub struct ExtraRegistry {
    // Declared first so it is dropped first: the process dies before its files go away.
    process: Daemon,
    kind: Kind,
    port: u16,
    /// The server's CA (none for plain HTTP).
    ca: Option<TestCa>,
    /// The CA that signs accepted client certificates (client-cert registry only).
    client_ca: Option<TestCa>,
    dir: tempfile::TempDir,
}

impl ExtraRegistry {
    /// A pull-through cache of `origin` (which may use htpasswd: its credentials are the
    /// cache's upstream credentials). Its storage starts empty.
    pub fn pull_through_cache(origin: &Registry) -> ExtraRegistry {
        // distribution 2.8 keeps upstream credentials for Bearer realms only; for an
        // htpasswd (Basic) origin they ride in the URL, which Go's client turns into an
        // Authorization header on every request.
        let remote = match origin.credentials() {
            Some(c) => origin
                .url()
                .replace("https://", &format!("https://{}:{}@", c.user, c.password)),
            None => origin.url(),
        };
        let proxy = format!("proxy:\n  remoteurl: \"{remote}\"\n");
        let ca = TestCa::new();
        let dir = temp_dir("test-cache.");
        let (process, port) = start_registry(
            "docker-registry (pull-through cache)",
            |port| {
                let config = dir.path().join("config.yml");
                let yaml = config_yaml(dir.path(), port, &tls_yaml(&ca, None), &proxy);
                std::fs::write(&config, yaml).expect("write cache config");
                config
            },
            &[("SSL_CERT_FILE", origin.ca().ca_pem_path())],
        );
        ExtraRegistry {
            process,
            kind: Kind::PullThroughCache,
            port,
            ca: Some(ca),
            client_ca: None,
            dir,
        }
    }

    /// `origin`'s storage over HTTPS that only answers clients with a certificate signed by
    /// [`ExtraRegistry::client_cert_path`]'s CA.
    pub fn requiring_client_cert(origin: &Registry) -> ExtraRegistry {
        let ca = TestCa::new();
        let client_ca = TestCa::new();
        let dir = temp_dir("test-clientcert-registry.");
        // A certificate issued by the client CA (its key usage includes clientAuth).
        let client = client_ca.sign_server_cert_for(&["fleet-client"]);
        std::fs::write(
            dir.path().join("client.cert"),
            client.cert.to_pem().expect("encode client certificate"),
        )
        .expect("write client.cert");
        std::fs::write(
            dir.path().join("client.key"),
            client
                .key
                .private_key_to_pem_pkcs8()
                .expect("encode client key"),
        )
        .expect("write client.key");
        let tls = tls_yaml(&ca, Some(&client_ca.ca_pem_path()));
        let process = serve_storage(origin, &dir, "client certificate", &tls);
        ExtraRegistry {
            port: process.1,
            process: process.0,
            kind: Kind::ClientCert,
            ca: Some(ca),
            client_ca: Some(client_ca),
            dir,
        }
    }

    /// `origin`'s storage over plain HTTP, no authentication.
    pub fn plain_http(origin: &Registry) -> ExtraRegistry {
        let dir = temp_dir("test-http-registry.");
        let (process, port) = serve_storage(origin, &dir, "plain HTTP", "");
        ExtraRegistry {
            process,
            kind: Kind::PlainHttp,
            port,
            ca: None,
            client_ca: None,
            dir,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT` (`http://` for the plain-HTTP registry).
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The CA of the server certificate (`None` for plain HTTP).
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// The CA whose certificates the client-cert registry accepts.
    pub fn client_ca(&self) -> Option<&TestCa> {
        self.client_ca.as_ref()
    }

    /// A client certificate (PEM) the client-cert registry accepts.
    pub fn client_cert_path(&self) -> PathBuf {
        assert_eq!(
            self.kind,
            Kind::ClientCert,
            "only the client-cert registry has one"
        );
        self.dir.path().join("client.cert")
    }

    /// Its key (PKCS#8 PEM).
    pub fn client_key_path(&self) -> PathBuf {
        assert_eq!(
            self.kind,
            Kind::ClientCert,
            "only the client-cert registry has one"
        );
        self.dir.path().join("client.key")
    }

    /// Whether the blob `sha256:<hex>` is in this registry's own storage. A pull-through
    /// cache stores a blob in the background while it streams it to the first client (and
    /// fetches it from the origin twice for that); until then, a second request goes to the
    /// origin again.
    pub fn has_blob(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
            .is_file()
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Kill the registry now (its port stops answering); idempotent.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create registry temporary directory")
}

/// Serve `origin`'s storage with `http_tls` (empty: plain HTTP), config in `dir`.
fn serve_storage(
    origin: &Registry,
    dir: &tempfile::TempDir,
    what: &str,
    http_tls: &str,
) -> (Daemon, u16) {
    // config_yaml puts storage at `<dir>/storage`: point that at the origin's.
    std::os::unix::fs::symlink(origin.storage_dir(), dir.path().join("storage"))
        .expect("link the origin's storage");
    std::fs::create_dir_all(origin.storage_dir()).expect("create the origin's storage");
    start_registry(
        &format!("docker-registry ({what})"),
        |port| {
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(dir.path(), port, http_tls, ""))
                .expect("write registry config");
            config
        },
        &[],
    )
}

/// One request from a registry's log (distribution's `response completed` lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query, e.g. `/v2/library/demo/manifests/v1`.
    pub uri: String,
    pub user_agent: String,
    pub status: u16,
    /// The client's address and port (`127.0.0.1:41234`): one per TCP connection.
    pub remote_addr: String,
}

/// The requests a registry answered, in order, from its log text. distribution logs a
/// request after answering it: wait with [`super::daemon::eventually`] for what must be
/// there.
pub fn logged_requests(log: &str) -> Vec<LoggedRequest> {
    log.lines()
        .filter(|l| l.contains("msg=\"response completed\""))
        .filter_map(|line| {
            let fields = logfmt(line);
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            Some(LoggedRequest {
                method: get("http.request.method")?,
                uri: get("http.request.uri")?,
                user_agent: get("http.request.useragent").unwrap_or_default(),
                status: get("http.response.status")?.parse().ok()?,
                remote_addr: get("http.request.remoteaddr").unwrap_or_default(),
            })
        })
        .collect()
}

/// logrus' text format: `key=value` or `key="quoted \"value\""` pairs.
fn logfmt(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_string();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        out.push((key, value));
        rest = next.trim_start();
    }
    out
}

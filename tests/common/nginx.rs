//! nginx (Debian `nginx-light`) serving a registry under a path prefix over HTTPS, the way
//! Harbor projects and corporate front ends do: `https://127.0.0.1:PORT/PREFIX/v2/…` is
//! proxied to `UPSTREAM/v2/…`. For containerd's `override_path`:
//! `[host."https://127.0.0.1:PORT/PREFIX/v2"] override_path = true`.
//!
//! The access log records, per request, the method, the URI, the status, the `X-Fleet`
//! request header and the User-Agent ([`PathPrefixProxy::requests`]), so a test can see
//! hosts.toml `header` values arrive.
//!
//! ```ignore
//! let origin = Registry::start(RegistryOptions::plain());
//! let front = PathPrefixProxy::start(&origin, "/mirror");
//! // front.api_root() == "https://127.0.0.1:PORT/mirror/v2", trust front.ca()
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use super::daemon::{start_on_free_port, Daemon, Ready};
use super::registry::Registry;
use super::tls::TestCa;

/// The nginx binary of the Debian package.
const NGINX_BIN: &str = "/usr/sbin/nginx";

/// One access-log line of [`PathPrefixProxy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxiedRequest {
    pub method: String,
    pub uri: String,
    pub status: u16,
    /// The `X-Fleet` request header (`-` when absent, as nginx logs it).
    pub x_fleet: String,
    pub user_agent: String,
}

/// nginx reverse-proxying a registry under a path prefix. Killed on drop.
pub struct PathPrefixProxy {
    // Declared first so it is dropped first: the process dies before its files go away.
    process: Daemon,
    port: u16,
    prefix: String,
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl PathPrefixProxy {
    /// Serve `upstream` (over its HTTPS, verified against its CA) under `prefix` (e.g.
    /// `/mirror`, no trailing `/`).
    pub fn start(upstream: &Registry, prefix: &str) -> PathPrefixProxy {
        assert!(
            Path::new(NGINX_BIN).exists(),
            "{NGINX_BIN} not found: install Debian package nginx-light"
        );
        assert!(
            prefix.starts_with('/') && !prefix.ends_with('/'),
            "prefix like /mirror"
        );
        let ca = TestCa::new();
        let dir = tempfile::Builder::new()
            .prefix("test-nginx.")
            .tempdir()
            .expect("create nginx temporary directory");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("create nginx tmp");
        let config = dir.path().join("nginx.conf");
        let (process, port) = start_on_free_port("nginx", Ready::Accepting, |port| {
            let text = nginx_conf(dir.path(), port, prefix, upstream, &ca);
            std::fs::write(&config, text).expect("write nginx.conf");
            let mut cmd = Command::new(NGINX_BIN);
            // No master process and no daemon: one process, ours to kill. -e: the error log
            // before the configuration is read (not /var/log/nginx).
            cmd.arg("-e")
                .arg("stderr")
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&config)
                .args(["-g", "daemon off; master_process off;"]);
            cmd
        });
        PathPrefixProxy {
            process,
            port,
            prefix: prefix.to_string(),
            ca,
            dir,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:PORT/PREFIX/v2`: the registry API root behind the prefix.
    pub fn api_root(&self) -> String {
        format!("https://{}{}/v2", self.host(), self.prefix)
    }

    /// The CA of nginx's certificate.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The requests nginx answered so far, in order. nginx logs a request after answering
    /// it: wait with [`super::daemon::eventually`] for what must be there.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        let log = std::fs::read_to_string(self.access_log()).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let mut f = line.split('\t');
                Some(ProxiedRequest {
                    method: f.next()?.to_string(),
                    uri: f.next()?.to_string(),
                    status: f.next()?.parse().ok()?,
                    x_fleet: f.next()?.to_string(),
                    user_agent: f.next()?.to_string(),
                })
            })
            .collect()
    }

    /// nginx's own messages (errors, warnings).
    pub fn log(&self) -> String {
        self.process.log()
    }

    fn access_log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }
}

fn nginx_conf(dir: &Path, port: u16, prefix: &str, upstream: &Registry, ca: &TestCa) -> String {
    let d = dir.display();
    format!(
        "pid {d}/nginx.pid;
error_log stderr info;
events {{ worker_connections 256; }}
http {{
    log_format fleet '$request_method\t$request_uri\t$status\t$http_x_fleet\t$http_user_agent';
    access_log {d}/access.log fleet;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        client_max_body_size 0;
        location {prefix}/ {{
            proxy_pass {upstream}/;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_ssl_trusted_certificate {upstream_ca};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
        }}
    }}
}}
",
        cert = ca.server_cert_path().display(),
        key = ca.server_key_path().display(),
        upstream = upstream.url(),
        upstream_ca = upstream.ca().ca_pem_path().display(),
    )
}

//! How a registry host is reached: containerd's `certs.d/<host>/hosts.toml` and the
//! Docker-style certificate directories (`/etc/containers/certs.d/<host>/`,
//! `/etc/docker/certs.d/<host>/`).
//!
//! hosts.toml, for reference host `H` (`host[:port]`): under each hosts root in turn the
//! directories `H` with its port as `_port_` (`reg.example_5000_`, only with a port), `H`
//! itself, then `_default`; the first root that has one of them decides. In that directory
//! `hosts.toml` lists `[host."URL"]` mirrors in file order, then the `server` (default: `H`
//! itself). Each may set `capabilities` (`pull`, `resolve`, `push`; all when omitted),
//! `ca` (string or list), `client` (string, list, or list of `[cert, key]` pairs),
//! `skip_verify`, `header` (string or list per name), `override_path` (the URL path already
//! is the API root; otherwise `/v2` is appended unless the path ends in it) and
//! `dial_timeout` (a Go duration); top-level ones apply to the server. Relative file names
//! are relative to the directory. A URL without scheme is `https://`; its host must be a
//! host name or address with an optional port. A directory without
//! `hosts.toml` (or with an empty one) is read Docker-style instead. Unlike containerd,
//! which logs a hosts.toml it cannot decode and falls back to the Docker-style files, we
//! refuse it: silently dropping a CA or a mirror is worse than a clear error.
//!
//! Docker-style directories: `*.crt` are CA certificates, `*.cert` client certificates with
//! the key in the same-stem `*.key`. In the containers/docker directories (the first root
//! with a directory named `host[:port]` is used) a `.cert` without `.key` or a `.key`
//! without `.cert` is an error, as there; in a containerd hosts directory a lone `.cert`
//! holds its key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::endpoint::{Capabilities, ClientCert, Scheme};
use super::error::{files_in, parse_toml, read_optional, ConfigError};
use crate::import::oci::reference::domain_is_valid;

/// The settings of one host entry (or of the server, from the top level).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// `None`: not set (all capabilities).
    pub capabilities: Option<Capabilities>,
    pub ca_files: Vec<PathBuf>,
    pub client_certs: Vec<ClientCert>,
    pub skip_verify: Option<bool>,
    pub headers: Vec<(String, String)>,
    pub dial_timeout: Option<Duration>,
}

/// A parsed host URL: the API root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostUrl {
    pub scheme: Scheme,
    /// `host[:port]`.
    pub host: String,
    /// The API root path (`/v2`, `/prefix/v2`, or as written with `override_path`).
    pub path: String,
}

/// One `[host."URL"]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostEntry {
    pub url: HostUrl,
    pub settings: HostSettings,
}

/// A containerd host directory, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostsConfig {
    /// The directory (`…/certs.d/<host>` or `…/certs.d/_default`).
    pub dir: PathBuf,
    /// `hosts.toml`, when the directory had one (else it was read Docker-style).
    pub file: Option<PathBuf>,
    /// The mirrors, in file order.
    pub hosts: Vec<HostEntry>,
    /// `server`, if set; otherwise the reference's own host.
    pub server: Option<HostUrl>,
    /// The top-level settings: the server's.
    pub top: HostSettings,
}

impl HostsConfig {
    /// The file to name in messages: hosts.toml, or the directory.
    pub fn source(&self) -> &Path {
        self.file.as_deref().unwrap_or(&self.dir)
    }
}

// --- the file format ---------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ClientSpec {
    One(String),
    Many(Vec<OneOrMany>),
}

#[derive(Deserialize, Default)]
struct RawHost {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    client: Option<ClientSpec>,
    skip_verify: Option<bool>,
    header: Option<BTreeMap<String, OneOrMany>>,
    override_path: Option<bool>,
    dial_timeout: Option<String>,
}

/// The rest of the file; the top-level host settings are read as a [`RawHost`] from the
/// same text (serde's `flatten` would lose the line and key of a type error).
#[derive(Deserialize, Default)]
struct RawFile {
    server: Option<String>,
    /// Spans keep file order: the map itself is sorted by name.
    host: Option<BTreeMap<String, toml::Spanned<RawHost>>>,
}

impl RawFile {
    /// The `[host."…"]` entries in file order.
    fn hosts_in_order(&mut self) -> Vec<(String, RawHost)> {
        let mut hosts: Vec<(String, toml::Spanned<RawHost>)> =
            self.host.take().unwrap_or_default().into_iter().collect();
        hosts.sort_by_key(|(_, h)| h.span().start);
        hosts
            .into_iter()
            .map(|(k, h)| (k, h.into_inner()))
            .collect()
    }
}

/// A Go duration (`200ms`, `1.5s`, `1m30s`): decimal numbers with units ns, us, µs, ms,
/// s, m, h.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    (!text.is_empty()).then(|| Duration::from_secs_f64(total))
}

/// `path.Clean`-like: no empty or `.` segments, no trailing `/`.
fn clean_path(path: &str) -> String {
    let mut out = String::new();
    for segment in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        out.push('/');
        out.push_str(segment);
    }
    out
}

/// A `server` or `[host."…"]` value: `[scheme://]host[:port][/path]`.
fn parse_url(file: &Path, text: &str, override_path: bool) -> Result<HostUrl, ConfigError> {
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("https://{text}")
    };
    let bad =
        |why: &str| ConfigError::invalid(file, format!("unable to parse server '{text}': {why}"));
    let (scheme, rest) = with_scheme
        .split_once("://")
        .ok_or_else(|| bad("no scheme"))?;
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !domain_is_valid(host) {
        return Err(bad("no valid host"));
    }
    let mut path = clean_path(path);
    if !override_path && !path.ends_with("/v2") {
        path.push_str("/v2");
    }
    Ok(HostUrl {
        scheme,
        host: host.to_string(),
        path,
    })
}

fn parse_capabilities(file: &Path, list: Vec<String>) -> Result<Capabilities, ConfigError> {
    if list.is_empty() {
        return Ok(Capabilities::ALL);
    }
    let mut caps = Capabilities {
        pull: false,
        resolve: false,
        push: false,
    };
    for c in list {
        match c.to_ascii_lowercase().as_str() {
            "pull" => caps.pull = true,
            "resolve" => caps.resolve = true,
            "push" => caps.push = true,
            // Newer containerd: OCI referrers; not used by a puller.
            "referrers" => {}
            _ => {
                return Err(ConfigError::invalid(
                    file,
                    format!("unknown capability {c}"),
                ));
            }
        }
    }
    Ok(caps)
}

fn parse_settings(file: &Path, dir: &Path, raw: RawHost) -> Result<HostSettings, ConfigError> {
    let abs = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    };
    let capabilities = raw
        .capabilities
        .map(|list| parse_capabilities(file, list))
        .transpose()?;
    let ca_files = raw
        .ca
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .map(abs)
        .collect();
    let mut client_certs = Vec::new();
    match raw.client {
        None => {}
        Some(ClientSpec::One(cert)) => client_certs.push(ClientCert {
            cert: abs(cert),
            key: None,
        }),
        Some(ClientSpec::Many(items)) => {
            for item in items {
                match item {
                    OneOrMany::One(cert) => client_certs.push(ClientCert {
                        cert: abs(cert),
                        key: None,
                    }),
                    OneOrMany::Many(pair) => {
                        let [cert, key]: [String; 2] = pair.clone().try_into().map_err(|_| {
                            ConfigError::invalid(
                                file,
                                format!("invalid pair {pair:?} for \"client\""),
                            )
                        })?;
                        client_certs.push(ClientCert {
                            cert: abs(cert),
                            key: (!key.is_empty()).then(|| abs(key)),
                        });
                    }
                }
            }
        }
    }
    let mut headers = Vec::new();
    for (name, values) in raw.header.unwrap_or_default() {
        for value in values.into_vec() {
            headers.push((name.clone(), value));
        }
    }
    let dial_timeout =
        match raw.dial_timeout.as_deref() {
            None | Some("") => None,
            Some(t) => Some(parse_go_duration(t).ok_or_else(|| {
                ConfigError::invalid(file, format!("invalid dial_timeout \"{t}\""))
            })?),
        };
    Ok(HostSettings {
        capabilities,
        ca_files,
        client_certs,
        skip_verify: raw.skip_verify,
        headers,
        dial_timeout,
    })
}

/// Parse the text of `dir/hosts.toml`.
fn parse_hosts_toml(file: &Path, dir: &Path, text: &str) -> Result<HostsConfig, ConfigError> {
    let mut raw: RawFile = parse_toml(file, text)?;
    let top: RawHost = parse_toml(file, text)?;
    let hosts = raw.hosts_in_order();
    let top_override = top.override_path.unwrap_or(false);
    let server = raw
        .server
        .filter(|s| !s.is_empty())
        .map(|s| parse_url(file, &s, top_override))
        .transpose()?;
    let top = parse_settings(file, dir, top)?;
    let mut entries = Vec::new();
    for (url, raw) in hosts {
        let override_path = raw.override_path.unwrap_or(false);
        entries.push(HostEntry {
            url: parse_url(file, &url, override_path)?,
            settings: parse_settings(file, dir, raw)?,
        });
    }
    Ok(HostsConfig {
        dir: dir.to_path_buf(),
        file: Some(file.to_path_buf()),
        hosts: entries,
        server,
        top,
    })
}

/// The certificates of a Docker-style directory: CA files and client pairs. `strict`:
/// unpaired `.cert`/`.key` files are errors (docker, podman); otherwise a lone `.cert`
/// holds its key (containerd).
pub fn read_cert_dir(
    dir: &Path,
    strict: bool,
) -> Result<(Vec<PathBuf>, Vec<ClientCert>), ConfigError> {
    let ca_files = files_in(dir, ".crt")?;
    let stem = |p: &Path| {
        p.file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let mut client_certs = Vec::new();
    for cert in files_in(dir, ".cert")? {
        let key = cert.with_extension("key");
        let key = match (key.is_file(), strict) {
            (true, _) => Some(key),
            (false, false) => None,
            (false, true) => {
                let stem = stem(&cert);
                return Err(ConfigError::invalid(
                    dir,
                    format!(
                        "missing key {stem}.key for client certificate {stem}.cert. CA certificates must use the extension .crt"
                    ),
                ));
            }
        };
        client_certs.push(ClientCert { cert, key });
    }
    if strict {
        if let Some(key) = files_in(dir, ".key")?
            .into_iter()
            .find(|key| !key.with_extension("cert").is_file())
        {
            let stem = stem(&key);
            return Err(ConfigError::invalid(
                dir,
                format!("missing client certificate {stem}.cert for key {stem}.key"),
            ));
        }
    }
    Ok((ca_files, client_certs))
}

/// Read a containerd host directory: its hosts.toml, or Docker-style files.
pub fn load_host_dir(dir: &Path) -> Result<HostsConfig, ConfigError> {
    let file = dir.join("hosts.toml");
    match read_optional(&file)? {
        Some(text) if !text.trim().is_empty() => parse_hosts_toml(&file, dir, &text),
        _ => {
            let (ca_files, client_certs) = read_cert_dir(dir, false)?;
            Ok(HostsConfig {
                dir: dir.to_path_buf(),
                file: None,
                hosts: Vec::new(),
                server: None,
                top: HostSettings {
                    ca_files,
                    client_certs,
                    ..HostSettings::default()
                },
            })
        }
    }
}

/// containerd's directory name for `host[:port]`: the last `:port` as `_port_`.
fn port_dir_name(host: &str) -> Option<String> {
    let i = host.rfind(':').filter(|i| *i > 0)?;
    Some(format!("{}_{}_", &host[..i], &host[i + 1..]))
}

/// The host directory for `host` under the first of `roots` that has one.
pub fn find_host_dir(roots: &[PathBuf], host: &str) -> Option<PathBuf> {
    let names: Vec<String> = port_dir_name(host)
        .into_iter()
        .chain([host.to_string(), "_default".to_string()])
        .collect();
    roots
        .iter()
        .flat_map(|root| names.iter().map(move |n| root.join(n)))
        .find(|dir| dir.is_dir())
}

/// containerd's configuration for `host`, if a hosts root has a directory for it.
pub fn find(roots: &[PathBuf], host: &str) -> Result<Option<HostsConfig>, ConfigError> {
    find_host_dir(roots, host)
        .map(|dir| load_host_dir(&dir))
        .transpose()
}

/// The CA files and client certificates for `host` from the first Docker-style root with a
/// `host[:port]` directory (none: no extra TLS files).
pub fn certs_for(
    roots: &[PathBuf],
    host: &str,
) -> Result<(Vec<PathBuf>, Vec<ClientCert>), ConfigError> {
    match roots.iter().map(|r| r.join(host)).find(|d| d.is_dir()) {
        Some(dir) => read_cert_dir(&dir, true),
        None => Ok((Vec::new(), Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn url(scheme: Scheme, host: &str, path: &str) -> HostUrl {
        HostUrl {
            scheme,
            host: host.into(),
            path: path.into(),
        }
    }

    #[test]
    fn urls_get_a_scheme_and_v2_unless_overridden() {
        let f = Path::new("/h.toml");
        // (text, override_path, scheme, host, path)
        let table: &[(&str, bool, Scheme, &str, &str)] = &[
            (
                "mirror.example",
                false,
                Scheme::Https,
                "mirror.example",
                "/v2",
            ),
            (
                "http://10.0.0.1:30020",
                false,
                Scheme::Http,
                "10.0.0.1:30020",
                "/v2",
            ),
            (
                "https://m.example/v2",
                false,
                Scheme::Https,
                "m.example",
                "/v2",
            ),
            (
                "https://m.example/v2/",
                false,
                Scheme::Https,
                "m.example",
                "/v2",
            ),
            (
                "https://h.example/dockerhub",
                false,
                Scheme::Https,
                "h.example",
                "/dockerhub/v2",
            ),
            (
                "https://h.example/v2/dockerhub",
                true,
                Scheme::Https,
                "h.example",
                "/v2/dockerhub",
            ),
            (
                "https://h.example//a/./b/",
                true,
                Scheme::Https,
                "h.example",
                "/a/b",
            ),
            ("https://h.example", true, Scheme::Https, "h.example", ""),
        ];
        for (text, over, scheme, host, path) in table {
            assert_eq!(
                parse_url(f, text, *over).unwrap(),
                url(*scheme, host, path),
                "{text}"
            );
        }
        for bad in ["ftp://x", "https://", "https://u@h/"] {
            assert!(parse_url(f, bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("200ms", Some(ms(200))),
            ("1s", Some(ms(1000))),
            ("1.5s", Some(ms(1500))),
            ("1m30s", Some(ms(90_000))),
            ("2h", Some(ms(7_200_000))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            ("5", None),
            ("5x", None),
        ] {
            assert_eq!(parse_go_duration(text), expected, "{text}");
        }
    }

    #[test]
    fn hosts_toml_entries_keep_file_order_and_all_fields() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("docker.io");
        write(
            &d.join("hosts.toml"),
            r#"
server = "https://registry-1.docker.io"
ca = "server-ca.pem"
skip_verify = false

[host."https://z-first.example/v2/dockerhub"]
  capabilities = ["pull", "resolve"]
  override_path = true
  ca = ["/abs/ca.pem", "rel.pem"]
  client = [["c.cert", "c.key"], ["both.pem", ""]]
  dial_timeout = "200ms"
  [host."https://z-first.example/v2/dockerhub".header]
    x-custom = ["a", "b"]
    x-one = "c"

[host."http://a-second.example:30020"]
  capabilities = ["pull"]
  skip_verify = true
  client = "single.pem"
"#,
        );
        let c = load_host_dir(&d).unwrap();
        assert_eq!(c.file.as_deref(), Some(d.join("hosts.toml").as_path()));
        assert_eq!(
            c.server,
            Some(url(Scheme::Https, "registry-1.docker.io", "/v2"))
        );
        assert_eq!(c.top.ca_files, [d.join("server-ca.pem")]);
        assert_eq!(c.top.skip_verify, Some(false));
        assert_eq!(c.top.capabilities, None);
        assert_eq!(c.hosts.len(), 2);
        let first = &c.hosts[0];
        assert_eq!(
            first.url,
            url(Scheme::Https, "z-first.example", "/v2/dockerhub")
        );
        let s = &first.settings;
        assert_eq!(
            s.capabilities,
            Some(Capabilities {
                pull: true,
                resolve: true,
                push: false
            })
        );
        assert_eq!(
            s.ca_files,
            [PathBuf::from("/abs/ca.pem"), d.join("rel.pem")]
        );
        assert_eq!(
            s.client_certs,
            [
                ClientCert {
                    cert: d.join("c.cert"),
                    key: Some(d.join("c.key"))
                },
                ClientCert {
                    cert: d.join("both.pem"),
                    key: None
                },
            ]
        );
        assert_eq!(s.dial_timeout, Some(Duration::from_millis(200)));
        assert_eq!(
            s.headers,
            [
                ("x-custom".to_string(), "a".to_string()),
                ("x-custom".to_string(), "b".to_string()),
                ("x-one".to_string(), "c".to_string()),
            ]
        );
        let second = &c.hosts[1];
        assert_eq!(
            second.url,
            url(Scheme::Http, "a-second.example:30020", "/v2")
        );
        assert_eq!(second.settings.skip_verify, Some(true));
        assert_eq!(second.settings.capabilities.map(|c| c.resolve), Some(false));
        assert_eq!(second.settings.client_certs[0].cert, d.join("single.pem"));
    }

    #[test]
    fn bad_hosts_toml_is_an_error_naming_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let table: &[(&str, &str)] = &[
            ("[host.\"https://m\"]\ncapabilities = [\"pull\", \"fly\"]\n", "unknown capability fly"),
            ("[host.\"https://m\"]\nskip_verify = \"yes\"\n", "hosts.toml:2: host.https://m.skip_verify: invalid type: string \"yes\", expected a boolean"),
            ("server = \"ftp://x\"\n", "unable to parse server 'ftp://x': the scheme must be http or https"),
            ("[host.\"https://m\"]\nclient = [[\"a\", \"b\", \"c\"]]\n", "invalid pair [\"a\", \"b\", \"c\"] for \"client\""),
            ("[host.\"https://m\"]\ndial_timeout = \"soon\"\n", "invalid dial_timeout \"soon\""),
            ("x = 1\nskip_verify = \"yes\"\n", "hosts.toml:2: skip_verify: invalid type: string \"yes\", expected a boolean"),
        ];
        for (text, expected) in table {
            let d = dir.path().join("h");
            write(&d.join("hosts.toml"), text);
            let msg = load_host_dir(&d).unwrap_err().to_string();
            assert!(
                msg.starts_with(&d.join("hosts.toml").display().to_string()),
                "{msg}"
            );
            assert!(
                msg.ends_with(expected),
                "{text:?}\n got: {msg}\nwant: …{expected}"
            );
        }
    }

    #[test]
    fn host_directories_port_names_and_default() {
        let dir = tempfile::tempdir().unwrap();
        let root1 = dir.path().join("r1");
        let root2 = dir.path().join("r2");
        for d in [
            "r1/reg.example_5000_",
            "r1/reg.example:6000",
            "r2/other.example",
            "r2/_default",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let roots = [root1.clone(), root2.clone()];
        let found = |h: &str| find_host_dir(&roots, h);
        // (host, directory)
        assert_eq!(
            found("reg.example:5000"),
            Some(root1.join("reg.example_5000_"))
        );
        assert_eq!(
            found("reg.example:6000"),
            Some(root1.join("reg.example:6000"))
        );
        assert_eq!(found("other.example"), Some(root2.join("other.example")));
        assert_eq!(found("unknown.example"), Some(root2.join("_default")));
        assert_eq!(find_host_dir(&roots[..1], "unknown.example"), None);
        // `_default` of the first root beats an exact directory of a later root.
        std::fs::create_dir_all(root1.join("_default")).unwrap();
        assert_eq!(found("other.example"), Some(root1.join("_default")));
        assert_eq!(port_dir_name("h"), None);
        assert_eq!(port_dir_name("[::1]:5000").as_deref(), Some("[::1]_5000_"));
    }

    #[test]
    fn a_directory_without_hosts_toml_is_read_docker_style() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("reg.example");
        for f in [
            "ca.crt",
            "extra.crt",
            "client.cert",
            "client.key",
            "lone.cert",
        ] {
            write(&d.join(f), "");
        }
        write(&d.join("hosts.toml"), "  \n");
        let c = load_host_dir(&d).unwrap();
        assert_eq!(c.file, None);
        assert!(c.hosts.is_empty() && c.server.is_none());
        assert_eq!(c.top.ca_files, [d.join("ca.crt"), d.join("extra.crt")]);
        assert_eq!(
            c.top.client_certs,
            [
                ClientCert {
                    cert: d.join("client.cert"),
                    key: Some(d.join("client.key"))
                },
                ClientCert {
                    cert: d.join("lone.cert"),
                    key: None
                },
            ]
        );
    }

    #[test]
    fn certs_d_directories_are_strict_and_the_first_root_wins() {
        let dir = tempfile::tempdir().unwrap();
        let containers = dir.path().join("containers");
        let docker = dir.path().join("docker");
        write(&docker.join("reg.example:5000/ca.crt"), "");
        write(&docker.join("other.example/ca.crt"), "");
        write(&containers.join("other.example/mine.crt"), "");
        write(&containers.join("other.example/client.cert"), "");
        write(&containers.join("other.example/client.key"), "");
        let roots = [containers.clone(), docker.clone()];
        assert_eq!(
            certs_for(&roots, "reg.example:5000").unwrap(),
            (vec![docker.join("reg.example:5000/ca.crt")], vec![])
        );
        let (cas, clients) = certs_for(&roots, "other.example").unwrap();
        assert_eq!(cas, [containers.join("other.example/mine.crt")]);
        assert_eq!(
            clients[0].key.as_deref(),
            Some(containers.join("other.example/client.key").as_path())
        );
        assert_eq!(certs_for(&roots, "none.example").unwrap(), (vec![], vec![]));

        write(&docker.join("bad.example/client.cert"), "");
        let err = certs_for(&roots, "bad.example").unwrap_err().to_string();
        assert!(err.ends_with("missing key client.key for client certificate client.cert. CA certificates must use the extension .crt"), "{err}");
        write(&docker.join("bad2.example/orphan.key"), "");
        let err = certs_for(&roots, "bad2.example").unwrap_err().to_string();
        assert!(
            err.ends_with("missing client certificate orphan.cert for key orphan.key"),
            "{err}"
        );
    }
}

//! Registry configuration: where an image reference is pulled from, read from the files
//! podman, containerd and systemd already use, so a machine in a fleet pulls through the
//! mirrors, caches, CAs and client certificates its administrator configured.
//!
//! The entry points: [`RegistryConfig::load`] with a [`ConfigPaths`] (built by the command
//! line, the only layer that reads the environment, via [`ConfigPaths::from_env`]), then
//! [`RegistryConfig::resolve`] per reference. Files: [`registries_conf`] (names: prefixes,
//! rewrites, mirrors, short names), [`hosts_toml`] (hosts: containerd's `hosts.toml` and the
//! Docker-style certificate directories), [`oci_registry`] (systemd's registry map),
//! [`endpoint`] (the result), [`paths`], [`error`].
//!
//! How the three families combine (our decision; each step only sees the previous one's
//! result):
//! 1. **systemd's `.oci-registry` map first**, as systemd-pull normalizes a reference before
//!    anything else. If a map file applies, its result is the only candidate, and its
//!    `defaultProtocol` says how the registry itself is reached.
//! 2. **Short names** (no map file applied, no registry named): registries.conf aliases,
//!    then `unqualified-search-registries` under `short-name-mode` (we never prompt);
//!    neither configured: Docker Hub, as today.
//! 3. **registries.conf decides which names serve a candidate**: the matching table's
//!    mirrors (filtered for a tag or a digest pull), then its primary location; `blocked`
//!    refuses the candidate. No table: the candidate's own registry.
//! 4. **hosts.toml decides how each of those hosts is reached**: a host with a containerd
//!    host directory (its own or `_default`) gets the directory's `[host]` mirrors first,
//!    with `ns=<host>`, then its `server` (default: the host itself). For the endpoints it
//!    describes, what hosts.toml sets explicitly (`skip_verify`, CA and client files,
//!    headers, capabilities) wins over registries.conf's `insecure`; what it leaves unset
//!    comes from registries.conf (`insecure`) and step 5.
//! 5. **certs.d** (`~/.config/containers/`, `/etc/containers/`, `/etc/docker/`, the first
//!    with a directory for the endpoint's host) supplies the CA and client files of every
//!    endpoint that hosts.toml gave none.
//!
//! So when registries.conf and hosts.toml both speak about a registry, registries.conf's
//! mirrors are tried first, hosts.toml's next, the registry last; an `insecure` host with
//! no hosts.toml is tried over HTTPS without verification, then over plain HTTP.
//!
//! What part 2 (the importer) does with a [`Resolution`]: try the candidates in order and,
//! within one, the endpoints in order, falling through on connection errors, timeouts and
//! 5xx; resolve a tag only at an endpoint with `serves_tags`, then fetch manifests by
//! digest and blobs from that endpoint or, failing it, the next with `capabilities.pull`;
//! verify every digest as today; look credentials up for [`Endpoint::auth_host`] only;
//! log each endpoint with its `Display` (`mirror https://… (from FILE)`).

pub mod endpoint;
pub mod error;
pub mod hosts_toml;
pub mod oci_registry;
pub mod paths;
pub mod registries_conf;

pub use endpoint::{Capabilities, ClientCert, Endpoint, Role, Scheme, Tls};
pub use error::{ConfigError, ErrorKind};
pub use paths::ConfigPaths;

use std::path::PathBuf;

use super::reference::{ImageName, Reference, DOCKER_HUB, DOCKER_HUB_REGISTRY};
use hosts_toml::{HostSettings, HostUrl};
use registries_conf::{PullSource, RegistriesConf};

/// The loaded registry configuration.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    paths: ConfigPaths,
    /// The registries.conf family, read once; hosts.toml, certs.d and the registry map are
    /// read per host on [`RegistryConfig::resolve`].
    conf: RegistriesConf,
}

/// One fully qualified image to try, with its endpoints in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The image as configuration names it (the name the user means; logged, and the
    /// default local name is still taken from what the user typed).
    pub image: Reference,
    /// How the reference became this image, for the log (`as named`, `alias in FILE`, …).
    pub how: String,
    pub endpoints: Vec<Endpoint>,
}

/// The result of [`RegistryConfig::resolve`]: candidates in order (more than one only for
/// a short name with several search registries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub candidates: Vec<Candidate>,
}

impl Resolution {
    /// Every endpoint of every candidate, in order.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.candidates.iter().flat_map(|c| c.endpoints.iter())
    }
}

impl RegistryConfig {
    /// Read the registries.conf family from `paths` (the per-host files are read later).
    pub fn load(paths: &ConfigPaths) -> Result<RegistryConfig, ConfigError> {
        let conf = RegistriesConf::load(
            &paths.registries_conf,
            paths.registries_conf_required,
            &paths.registries_conf_dirs,
            paths.short_name_aliases.as_deref(),
        )?;
        Ok(RegistryConfig {
            paths: paths.clone(),
            conf,
        })
    }

    /// registries.conf's `credential-helpers`, if set.
    pub fn credential_helpers(&self) -> Option<&[String]> {
        self.conf.credential_helpers()
    }

    /// Where to pull `name` from (see the module documentation for the rules).
    pub fn resolve(&self, name: &ImageName) -> Result<Resolution, ConfigError> {
        let (images, origin_scheme) =
            match oci_registry::normalize(&self.paths.oci_registry_dirs, name)? {
                Some(n) => {
                    let how = format!("registry map {}", n.file.display());
                    (vec![(n.reference, how)], n.scheme)
                }
                None if name.is_short() => {
                    let r = self.conf.resolve_short_name(name)?;
                    let how = r.rationale;
                    let images = r.candidates.into_iter().map(|c| (c, how.clone())).collect();
                    (images, Scheme::Https)
                }
                None => (
                    vec![(name.clone().into_reference(), "as named".to_string())],
                    Scheme::Https,
                ),
            };
        let mut candidates = Vec::new();
        let mut blocked = None;
        for (image, how) in images {
            // One blocked candidate among several is skipped; all blocked is the error.
            let sources = match self.conf.pull_sources(&image) {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::Blocked => {
                    blocked.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut endpoints: Vec<Endpoint> = Vec::new();
            for source in &sources {
                for e in self.endpoints_for(source, origin_scheme)? {
                    let seen = endpoints.iter().any(|o| {
                        (&o.base_url, &o.repository, &o.ns) == (&e.base_url, &e.repository, &e.ns)
                    });
                    if !seen {
                        endpoints.push(e);
                    }
                }
            }
            candidates.push(Candidate {
                image,
                how,
                endpoints,
            });
        }
        match blocked {
            Some(e) if candidates.is_empty() => Err(e),
            _ => Ok(Resolution { candidates }),
        }
    }

    /// The endpoints that serve one registries.conf source (step 4 and 5).
    fn endpoints_for(
        &self,
        source: &PullSource,
        origin_scheme: Scheme,
    ) -> Result<Vec<Endpoint>, ConfigError> {
        let host = source.reference.domain();
        let role = if source.mirror {
            Role::Mirror
        } else {
            Role::Origin
        };
        // systemd's defaultProtocol is about the registry, not about its mirrors.
        let scheme = match role {
            Role::Origin => origin_scheme,
            Role::Mirror => Scheme::Https,
        };
        let default_url = HostUrl {
            scheme,
            host: if host == DOCKER_HUB {
                DOCKER_HUB_REGISTRY.to_string()
            } else {
                host.to_string()
            },
            path: "/v2".to_string(),
        };
        let mut out = Vec::new();
        let Some(hosts) = hosts_toml::find(&self.paths.hosts_dirs, host)? else {
            let plan = Plan {
                source,
                url: &default_url,
                settings: &HostSettings::default(),
                skip_verify: source.insecure,
                role,
                serves_tags: true,
                configured_by: source.file.clone(),
                ns: None,
            };
            out.push(self.endpoint(&plan)?);
            if source.insecure && scheme == Scheme::Https {
                out.push(self.plain_http(&plan)?);
            }
            return Ok(out);
        };
        let configured_by = Some(hosts.source().to_path_buf());
        let ns_for = |url: &HostUrl| {
            let same = url.host == host || (host == DOCKER_HUB && url.host == DOCKER_HUB_REGISTRY);
            (!same).then(|| host.to_string())
        };
        for entry in &hosts.hosts {
            let caps = entry.settings.capabilities.unwrap_or(Capabilities::ALL);
            if !caps.pull {
                continue;
            }
            out.push(self.endpoint(&Plan {
                source,
                url: &entry.url,
                settings: &entry.settings,
                skip_verify: entry.settings.skip_verify.unwrap_or(false),
                role: Role::Mirror,
                serves_tags: caps.resolve,
                configured_by: configured_by.clone(),
                ns: ns_for(&entry.url),
            })?);
        }
        // containerd gives the implicit server every capability.
        let (url, caps) = match &hosts.server {
            Some(url) => (url, hosts.top.capabilities.unwrap_or(Capabilities::ALL)),
            None => (&default_url, Capabilities::ALL),
        };
        if caps.pull {
            let plan = Plan {
                source,
                url,
                settings: &hosts.top,
                skip_verify: hosts.top.skip_verify.unwrap_or(source.insecure),
                role,
                serves_tags: caps.resolve,
                configured_by,
                ns: ns_for(url),
            };
            out.push(self.endpoint(&plan)?);
            if hosts.server.is_none() && source.insecure && scheme == Scheme::Https {
                out.push(self.plain_http(&plan)?);
            }
        }
        Ok(out)
    }

    /// Build one endpoint; CA and client files come from certs.d when the plan has none.
    fn endpoint(&self, plan: &Plan) -> Result<Endpoint, ConfigError> {
        let source_host = plan.source.reference.domain();
        // The registry's own (default) URL is looked up under the name references use.
        let own = plan.url.host == DOCKER_HUB_REGISTRY && source_host == DOCKER_HUB;
        let name = if own {
            source_host
        } else {
            plan.url.host.as_str()
        };
        let (mut ca_files, mut client_certs) = (
            plan.settings.ca_files.clone(),
            plan.settings.client_certs.clone(),
        );
        if ca_files.is_empty() && client_certs.is_empty() {
            (ca_files, client_certs) = hosts_toml::certs_for(&self.paths.certs_dirs, name)?;
        }
        let capabilities = plan.settings.capabilities.unwrap_or(Capabilities::ALL);
        Ok(Endpoint {
            base_url: format!(
                "{}://{}{}",
                plan.url.scheme.as_str(),
                plan.url.host,
                plan.url.path
            ),
            scheme: plan.url.scheme,
            host: plan.url.host.clone(),
            repository: plan.source.reference.repository().to_string(),
            ns: plan.ns.clone(),
            auth_host: name.to_string(),
            tls: Tls {
                ca_files,
                client_certs,
                skip_verify: plan.skip_verify,
            },
            headers: plan.settings.headers.clone(),
            capabilities,
            serves_tags: plan.serves_tags,
            role: plan.role,
            connect_timeout: plan.settings.dial_timeout,
            configured_by: plan.configured_by.clone(),
        })
    }

    /// The plain-HTTP twin an `insecure` registry gets after its HTTPS endpoint.
    fn plain_http(&self, plan: &Plan) -> Result<Endpoint, ConfigError> {
        let url = HostUrl {
            scheme: Scheme::Http,
            ..plan.url.clone()
        };
        self.endpoint(&Plan {
            url: &url,
            ..plan.clone()
        })
    }
}

/// What [`RegistryConfig::endpoint`] builds one endpoint from.
#[derive(Clone)]
struct Plan<'a> {
    source: &'a PullSource,
    url: &'a HostUrl,
    settings: &'a HostSettings,
    skip_verify: bool,
    role: Role,
    serves_tags: bool,
    configured_by: Option<PathBuf>,
    ns: Option<String>,
}

#[cfg(test)]
mod tests;

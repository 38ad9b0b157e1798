//! Registry configuration: where an image reference is pulled from, read from the files
//! podman, containerd and systemd already use. So far: [`registries_conf`] (names:
//! prefixes, rewrites, mirrors, short names), [`hosts_toml`] (hosts: containerd's
//! `hosts.toml` and the Docker-style certificate directories), [`oci_registry`] (systemd's
//! registry map), [`endpoint`] (what a resolution yields), [`paths`] (where the files
//! are), [`error`].

pub mod endpoint;
pub mod error;
pub mod hosts_toml;
pub mod oci_registry;
pub mod paths;
pub mod registries_conf;

pub use endpoint::{Capabilities, ClientCert, Endpoint, Role, Scheme, Tls};
pub use error::{ConfigError, ErrorKind};
pub use paths::ConfigPaths;

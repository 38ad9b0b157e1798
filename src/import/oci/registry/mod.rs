//! Registry configuration: where an image reference is pulled from, read from the files
//! podman, containerd and systemd already use. So far: [`registries_conf`] (names:
//! prefixes, rewrites, mirrors, short names), [`paths`] (where the files are), [`error`].

pub mod error;
pub mod paths;
pub mod registries_conf;

pub use error::{ConfigError, ErrorKind};
pub use paths::ConfigPaths;

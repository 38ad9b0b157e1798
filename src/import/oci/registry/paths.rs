//! Where the registry configuration lives: [`ConfigPaths`], every file and directory the
//! three configuration families are read from, and the one place that decides them from
//! the environment ([`ConfigPaths::from_env`]).
//!
//! The system locations, relative to a root (`/` normally):
//!
//! | what | path |
//! |---|---|
//! | registries.conf(5) | `etc/containers/registries.conf` |
//! | its drop-ins | `etc/containers/registries.conf.d/*.conf` |
//! | machine-written short-name aliases | `var/cache/containers/short-name-aliases.conf` |
//! | containerd hosts directories | `etc/containerd/certs.d/<host>/hosts.toml` |
//! | certificate directories | `etc/containers/certs.d/<host>/`, `etc/docker/certs.d/<host>/` |
//! | systemd's registry map | `etc`, `run`, `usr/local/lib`, `usr/lib` + `/systemd/oci-registry/` |
//!
//! [`ConfigPaths::under_root`] reads only the tree below a root: that is what the one
//! command-line option (proposed `--registry-config=DIR`, environment variable
//! `SYSTEMD_IMPORT_REGISTRY_CONFIG`) selects, for tests and for users without root who want
//! their own mirrors. Without it, [`ConfigPaths::from_env`] adds what podman reads for the
//! calling user: `$HOME/.config/containers/registries.conf` (which, when it exists, replaces
//! the system file and its drop-in directory, as containers/image does), the user's drop-ins
//! and certificate directory, the rootless short-name alias cache, and
//! `CONTAINERS_REGISTRIES_CONF` (else the older `REGISTRIES_CONFIG_PATH`) naming the main
//! file explicitly, which then must exist.

use std::path::{Path, PathBuf};

/// The environment variable that names a configuration root, like the command-line option.
pub const ROOT_ENV: &str = "SYSTEMD_IMPORT_REGISTRY_CONFIG";

/// Every location the registry configuration is read from. Built by the command line layer
/// (from its option and [`ConfigPaths::from_env`]) and passed down; nothing below reads the
/// environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPaths {
    /// The main registries.conf.
    pub registries_conf: PathBuf,
    /// Whether `registries_conf` was chosen explicitly: then a missing file is an error.
    pub registries_conf_required: bool,
    /// registries.conf drop-in directories, read in this order (each in lexical order).
    pub registries_conf_dirs: Vec<PathBuf>,
    /// The machine-written `short-name-aliases.conf` (read, never written: we never prompt).
    pub short_name_aliases: Option<PathBuf>,
    /// containerd hosts roots (`<root>/<host>/hosts.toml`), in order.
    pub hosts_dirs: Vec<PathBuf>,
    /// Docker-style certificate roots (`<root>/<host[:port]>/*.crt`, `*.cert` + `*.key`);
    /// the first root with a directory for a host is used.
    pub certs_dirs: Vec<PathBuf>,
    /// systemd's `.oci-registry` search directories, first hit wins.
    pub oci_registry_dirs: Vec<PathBuf>,
}

impl ConfigPaths {
    /// The system locations (root `/`), no per-user files.
    pub fn system() -> ConfigPaths {
        ConfigPaths::under_root(Path::new("/"))
    }

    /// The system locations below `root`, and nothing else.
    pub fn under_root(root: &Path) -> ConfigPaths {
        let at = |p: &str| root.join(p);
        ConfigPaths {
            registries_conf: at("etc/containers/registries.conf"),
            registries_conf_required: false,
            registries_conf_dirs: vec![at("etc/containers/registries.conf.d")],
            short_name_aliases: Some(at("var/cache/containers/short-name-aliases.conf")),
            hosts_dirs: vec![at("etc/containerd/certs.d")],
            certs_dirs: vec![at("etc/containers/certs.d"), at("etc/docker/certs.d")],
            oci_registry_dirs: ["etc", "run", "usr/local/lib", "usr/lib"]
                .iter()
                .map(|d| root.join(d).join("systemd/oci-registry"))
                .collect(),
        }
    }

    /// THE place the registry configuration's locations are taken from the environment.
    /// `root` is the command-line option's value; it wins over [`ROOT_ENV`], and either
    /// makes the result [`ConfigPaths::under_root`]. Otherwise: the system locations plus
    /// the calling user's (see the module documentation).
    pub fn from_env(root: Option<&Path>) -> ConfigPaths {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(root) = root
            .map(Path::to_path_buf)
            .or_else(|| var(ROOT_ENV).map(PathBuf::from))
        {
            return ConfigPaths::under_root(&root);
        }
        let home = var("HOME").map(PathBuf::from).or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        });
        let explicit = var("CONTAINERS_REGISTRIES_CONF").or_else(|| var("REGISTRIES_CONFIG_PATH"));
        let rootless = !nix::unistd::geteuid().is_root();
        ConfigPaths::system().with_user(UserEnv {
            home,
            explicit_registries_conf: explicit.map(PathBuf::from),
            cache_home: rootless
                .then(|| var("XDG_CACHE_HOME"))
                .flatten()
                .map(PathBuf::from),
            rootless,
        })
    }

    /// The system paths adjusted for a user, as podman does (see the module documentation).
    fn with_user(mut self, user: UserEnv) -> ConfigPaths {
        if let Some(home) = &user.home {
            let user_conf = home.join(".config/containers/registries.conf");
            let user_dir = home.join(".config/containers/registries.conf.d");
            if user.explicit_registries_conf.is_none() && user_conf.exists() {
                // The user's file replaces the system file and the system drop-ins.
                self.registries_conf = user_conf;
                self.registries_conf_dirs = vec![user_dir];
            } else {
                self.registries_conf_dirs.push(user_dir);
            }
            self.certs_dirs
                .insert(0, home.join(".config/containers/certs.d"));
        }
        if let Some(explicit) = user.explicit_registries_conf {
            self.registries_conf = explicit;
            self.registries_conf_required = true;
        }
        if user.rootless {
            self.short_name_aliases = user
                .cache_home
                .or_else(|| user.home.map(|h| h.join(".cache")))
                .map(|c| c.join("containers/short-name-aliases.conf"));
        }
        self
    }
}

/// What [`ConfigPaths::from_env`] took from the environment.
struct UserEnv {
    home: Option<PathBuf>,
    explicit_registries_conf: Option<PathBuf>,
    cache_home: Option<PathBuf>,
    rootless: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(home: &Path) -> UserEnv {
        UserEnv {
            home: Some(home.to_path_buf()),
            explicit_registries_conf: None,
            cache_home: None,
            rootless: false,
        }
    }

    #[test]
    fn system_paths_are_the_documented_ones() {
        let p = ConfigPaths::system();
        assert_eq!(
            p.registries_conf,
            Path::new("/etc/containers/registries.conf")
        );
        assert!(!p.registries_conf_required);
        assert_eq!(
            p.registries_conf_dirs,
            [Path::new("/etc/containers/registries.conf.d")]
        );
        assert_eq!(p.hosts_dirs, [Path::new("/etc/containerd/certs.d")]);
        assert_eq!(
            p.certs_dirs,
            [
                Path::new("/etc/containers/certs.d"),
                Path::new("/etc/docker/certs.d")
            ]
        );
        assert_eq!(
            p.oci_registry_dirs,
            [
                Path::new("/etc/systemd/oci-registry"),
                Path::new("/run/systemd/oci-registry"),
                Path::new("/usr/local/lib/systemd/oci-registry"),
                Path::new("/usr/lib/systemd/oci-registry"),
            ]
        );
        let r = ConfigPaths::under_root(Path::new("/tmp/r"));
        assert_eq!(
            r.registries_conf,
            Path::new("/tmp/r/etc/containers/registries.conf")
        );
        assert_eq!(
            r.short_name_aliases.as_deref(),
            Some(Path::new(
                "/tmp/r/var/cache/containers/short-name-aliases.conf"
            ))
        );
    }

    #[test]
    fn a_user_file_replaces_the_system_file_and_its_drop_ins() {
        let home = tempfile::tempdir().unwrap();
        // No user file: system file, system drop-ins then the user's.
        let p = ConfigPaths::system().with_user(user(home.path()));
        assert_eq!(
            p.registries_conf,
            Path::new("/etc/containers/registries.conf")
        );
        assert_eq!(
            p.registries_conf_dirs,
            [
                Path::new("/etc/containers/registries.conf.d").to_path_buf(),
                home.path().join(".config/containers/registries.conf.d"),
            ]
        );
        assert_eq!(
            p.certs_dirs[0],
            home.path().join(".config/containers/certs.d")
        );

        std::fs::create_dir_all(home.path().join(".config/containers")).unwrap();
        std::fs::write(home.path().join(".config/containers/registries.conf"), "").unwrap();
        let p = ConfigPaths::system().with_user(user(home.path()));
        assert_eq!(
            p.registries_conf,
            home.path().join(".config/containers/registries.conf")
        );
        assert_eq!(
            p.registries_conf_dirs,
            [home.path().join(".config/containers/registries.conf.d")]
        );
        assert!(!p.registries_conf_required);
    }

    #[test]
    fn an_explicit_file_is_required_and_keeps_the_drop_ins() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".config/containers")).unwrap();
        std::fs::write(home.path().join(".config/containers/registries.conf"), "").unwrap();
        let p = ConfigPaths::system().with_user(UserEnv {
            explicit_registries_conf: Some("/srv/my.conf".into()),
            ..user(home.path())
        });
        assert_eq!(p.registries_conf, Path::new("/srv/my.conf"));
        assert!(p.registries_conf_required);
        assert_eq!(p.registries_conf_dirs.len(), 2);
    }

    #[test]
    fn rootless_users_read_their_own_alias_cache() {
        let home = Path::new("/home/u");
        let p = ConfigPaths::system().with_user(UserEnv {
            rootless: true,
            ..user(home)
        });
        assert_eq!(
            p.short_name_aliases.as_deref(),
            Some(Path::new(
                "/home/u/.cache/containers/short-name-aliases.conf"
            ))
        );
        let p = ConfigPaths::system().with_user(UserEnv {
            rootless: true,
            cache_home: Some("/xdg".into()),
            ..user(home)
        });
        assert_eq!(
            p.short_name_aliases.as_deref(),
            Some(Path::new("/xdg/containers/short-name-aliases.conf"))
        );
    }
}

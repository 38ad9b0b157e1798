//! Registry credentials from the files docker and podman write on `login`.
//!
//! Searched in this order; the first file with an entry for the registry wins:
//! 1. `$REGISTRY_AUTH_FILE` — when set, the only file read (as podman does);
//! 2. `$XDG_RUNTIME_DIR/containers/auth.json`;
//! 3. `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config/…`);
//! 4. `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).
//!
//! Each has `{"auths": {KEY: {"auth": base64("user:password")}}}` (`username` and
//! `password` fields are accepted too). KEY is `host`, `host:port`, a URL such as
//! `https://host` or docker's `https://index.docker.io/v1/` (scheme and path ignored), or
//! `host/namespace[/…]` for credentials that apply to part of a registry (the longest
//! matching prefix wins). Docker Hub answers to `docker.io`, `index.docker.io` and
//! `registry-1.docker.io`. Credential helpers (`credsStore`, `credHelpers`) are not run.

use std::path::{Path, PathBuf};

use super::auth::Credentials;
use super::encoding::base64_decode;
use super::reference::Reference;

/// The auth files to read, in order (see the module documentation).
pub fn auth_file_paths() -> Vec<PathBuf> {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(file) = env("REGISTRY_AUTH_FILE") {
        return vec![file];
    }
    let home = env("HOME").or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    });
    let mut paths = Vec::new();
    if let Some(runtime) = env("XDG_RUNTIME_DIR") {
        paths.push(runtime.join("containers/auth.json"));
    }
    if let Some(config) =
        env("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config")))
    {
        paths.push(config.join("containers/auth.json"));
    }
    if let Some(docker) = env("DOCKER_CONFIG").or_else(|| home.as_ref().map(|h| h.join(".docker")))
    {
        paths.push(docker.join("config.json"));
    }
    paths
}

/// Credentials for `reference`'s registry from the first auth file that has them, with the
/// file they came from.
pub fn find(reference: &Reference) -> Option<(Credentials, PathBuf)> {
    let keys = lookup_keys(reference);
    for path in auth_file_paths() {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                log::warn!("Failed to read {}: {}, ignoring.", path.display(), e);
                continue;
            }
        };
        match lookup(&text, &keys) {
            Ok(Some(creds)) => return Some((creds, path)),
            Ok(None) => {}
            Err(why) => log::warn!("Failed to parse {}: {}, ignoring.", path.display(), why),
        }
    }
    None
}

/// The keys that may hold credentials for `reference`, most specific first:
/// `host/a/b`, `host/a`, `host` (and the Docker Hub aliases of `host`).
fn lookup_keys(reference: &Reference) -> Vec<String> {
    let hosts: Vec<&str> = if reference.is_docker_hub() {
        vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
    } else {
        vec![reference.domain()]
    };
    let components: Vec<&str> = reference.repository().split('/').collect();
    let mut keys = Vec::new();
    for n in (0..=components.len()).rev() {
        for host in &hosts {
            let mut key = host.to_string();
            for c in &components[..n] {
                key.push('/');
                key.push_str(c);
            }
            keys.push(key);
        }
    }
    keys
}

/// A key of an `auths` object as a comparable `host[/path]`.
fn normalize_key(key: &str) -> String {
    match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        // A URL: only its host counts (docker's legacy `https://index.docker.io/v1/`).
        Some(rest) => rest.split('/').next().unwrap_or("").to_string(),
        None => key.trim_end_matches('/').to_string(),
    }
}

/// Look `keys` up (in order) in an auth file's text. `Err` for a file that is not an
/// auth file at all.
fn lookup(text: &[u8], keys: &[String]) -> Result<Option<Credentials>, String> {
    let json: serde_json::Value = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let Some(obj) = json.as_object() else {
        return Err("not a JSON object".to_string());
    };
    let Some(auths) = obj.get("auths").and_then(|a| a.as_object()) else {
        if obj.contains_key("credsStore") || obj.contains_key("credHelpers") {
            log::debug!("Credential helpers are not supported, ignoring them.");
        }
        return Ok(None);
    };
    for key in keys {
        for (file_key, entry) in auths {
            if normalize_key(file_key) != *key {
                continue;
            }
            if let Some(creds) = entry_credentials(entry) {
                return Ok(Some(creds));
            }
        }
    }
    Ok(None)
}

fn entry_credentials(entry: &serde_json::Value) -> Option<Credentials> {
    if let Some(auth) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let decoded = base64_decode(auth.trim())?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        return Some(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        });
    }
    let user = entry.get("username")?.as_str()?;
    let password = entry.get("password")?.as_str()?;
    (!user.is_empty()).then(|| Credentials {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// For messages: where credentials would have been looked for.
pub fn describe_paths() -> String {
    auth_file_paths()
        .iter()
        .map(|p: &PathBuf| p.as_path())
        .map(Path::display)
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    fn find_in(text: &str, r: &str) -> Option<(String, String)> {
        lookup(text.as_bytes(), &lookup_keys(&reference(r)))
            .unwrap()
            .map(|c| (c.user, c.password))
    }

    // base64("alice:pw1"), base64("bob:pw:2"), base64("carol:pw3")
    const ALICE: &str = "YWxpY2U6cHcx";
    const BOB: &str = "Ym9iOnB3OjI=";
    const CAROL: &str = "Y2Fyb2w6cHcz";

    #[test]
    fn keys_match_hosts_ports_urls_and_namespaces() {
        let file = format!(
            r#"{{"auths": {{
                "registry.example:5000": {{"auth": "{ALICE}"}},
                "https://other.example/v2/": {{"auth": "{BOB}"}},
                "ns.example/team": {{"auth": "{CAROL}"}},
                "ns.example": {{"auth": "{ALICE}"}},
                "https://index.docker.io/v1/": {{"auth": "{BOB}"}}
            }}}}"#
        );
        let s = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(find_in(&file, "registry.example:5000/x"), s("alice", "pw1"));
        assert_eq!(
            find_in(&file, "registry.example/x"),
            None,
            "the port is part of the key"
        );
        assert_eq!(find_in(&file, "other.example/a/b"), s("bob", "pw:2"));
        assert_eq!(find_in(&file, "ns.example/team/app"), s("carol", "pw3"));
        assert_eq!(
            find_in(&file, "ns.example/elsewhere/app"),
            s("alice", "pw1")
        );
        assert_eq!(find_in(&file, "debian"), s("bob", "pw:2"));
        assert_eq!(find_in(&file, "docker.io/user/app"), s("bob", "pw:2"));
        assert_eq!(find_in(&file, "unknown.example/x"), None);
    }

    #[test]
    fn username_password_fields_and_bad_entries() {
        let file = r#"{"auths": {
            "a.example": {"username": "u", "password": "p"},
            "b.example": {"auth": "!!!"},
            "c.example": {"auth": ""},
            "d.example": {"identitytoken": "tok"}
        }, "credsStore": "desktop"}"#;
        assert_eq!(
            find_in(file, "a.example/x"),
            Some(("u".to_string(), "p".to_string()))
        );
        assert_eq!(find_in(file, "b.example/x"), None);
        assert_eq!(find_in(file, "c.example/x"), None);
        assert_eq!(find_in(file, "d.example/x"), None);
        assert!(lookup(b"[1]", &[]).is_err());
        assert!(lookup(b"{", &[]).is_err());
        assert_eq!(lookup(br#"{"credsStore": "x"}"#, &["a".into()]), Ok(None));
    }

    #[test]
    fn docker_hub_aliases_are_searched() {
        let keys = lookup_keys(&reference("library/debian"));
        assert_eq!(
            keys,
            [
                "docker.io/library/debian",
                "index.docker.io/library/debian",
                "registry-1.docker.io/library/debian",
                "docker.io/library",
                "index.docker.io/library",
                "registry-1.docker.io/library",
                "docker.io",
                "index.docker.io",
                "registry-1.docker.io",
            ]
        );
    }
}

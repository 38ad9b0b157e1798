//! Registry credentials from the files docker and podman write on `login`, and from the
//! credential helpers those files name.
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
//! `registry-1.docker.io`.
//!
//! [`find`] reads only those passwords (kept for its unit tests of the key rules).
//! [`CredentialStore`] (what the importer uses, per endpoint host) also runs the credential
//! helpers the files name, per file as docker does: `credHelpers[host]`, else
//! `credsStore`, then `auths` (where an `identitytoken` wins over the password). A helper
//! is `docker-credential-<name>` from the search path, run as `get` with the registry on
//! stdin (`host[:port]`; for Docker Hub `docker.io`, then docker's
//! `https://index.docker.io/v1/`). It answers `{"ServerURL","Username","Secret"}`, or exits
//! 1 with `credentials not found in native keychain` on stdout. Username `<token>` makes
//! `Secret` an identity token ([`Secret::IdentityToken`]): the importer trades it at the
//! Bearer realm for an access token, `POST <realm>` with the form
//! `grant_type=refresh_token&refresh_token=<token>&service=<service>&scope=<scope>&client_id=systemd-import`
//! (JSON answer `access_token`, or `token`); a Basic challenge cannot use one.
//! Credentials are only looked up for the host asked, and a helper answering for another
//! `ServerURL` is refused.
//!
//! A helper that is missing, fails or answers nonsense does not stop the search (podman
//! skips it as well); if nothing else has credentials, [`CredentialStore::lookup`] returns
//! that failure as one line naming the helper and the registry, for the caller to log.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::auth::Credentials;
use super::credential_helper;
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
    keys_for(reference.domain(), reference.repository())
}

/// Docker Hub's names.
const DOCKER_HUB_NAMES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// Whether two registry hosts name the same registry (Docker Hub has three names).
fn same_registry(a: &str, b: &str) -> bool {
    a == b || (DOCKER_HUB_NAMES.contains(&a) && DOCKER_HUB_NAMES.contains(&b))
}

/// [`lookup_keys`] for a registry host and a repository path at it.
fn keys_for(host: &str, repository: &str) -> Vec<String> {
    let hosts: Vec<&str> = if DOCKER_HUB_NAMES.contains(&host) {
        DOCKER_HUB_NAMES.to_vec()
    } else {
        vec![host]
    };
    let components: Vec<&str> = repository.split('/').filter(|c| !c.is_empty()).collect();
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

/// An auth file's text as a JSON object.
fn parse_auth_file(text: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_slice(text).map_err(|e| e.to_string())? {
        serde_json::Value::Object(obj) => Ok(obj),
        _ => Err("not a JSON object".to_string()),
    }
}

/// The first of `keys` (in order) whose `auths` entry `accept` yields something for.
fn auths_entry<T>(
    obj: &serde_json::Map<String, serde_json::Value>,
    keys: &[String],
    accept: impl Fn(&serde_json::Value) -> Option<T>,
) -> Option<T> {
    let auths = obj.get("auths")?.as_object()?;
    keys.iter().find_map(|key| {
        auths
            .iter()
            .filter(|(file_key, _)| normalize_key(file_key) == *key)
            .find_map(|(_, entry)| accept(entry))
    })
}

/// Look `keys` up (in order) in an auth file's text. `Err` for a file that is not an
/// auth file at all.
fn lookup(text: &[u8], keys: &[String]) -> Result<Option<Credentials>, String> {
    let obj = parse_auth_file(text)?;
    if !obj.contains_key("auths")
        && (obj.contains_key("credsStore") || obj.contains_key("credHelpers"))
    {
        log::debug!("Credential helpers are not supported, ignoring them.");
    }
    Ok(auths_entry(&obj, keys, entry_credentials))
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

/// An auth entry's identity token (with the user of its `auth`, if any), else its password.
fn entry_login(entry: &serde_json::Value) -> Option<(String, Secret)> {
    let token = entry
        .get("identitytoken")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty());
    match (token, entry_credentials(entry)) {
        (Some(token), creds) => Some((
            creds.map(|c| c.user).unwrap_or_default(),
            Secret::IdentityToken(token.to_string()),
        )),
        (None, Some(c)) => Some((c.user, Secret::Password(c.password))),
        (None, None) => None,
    }
}

// --- credential helpers ------------------------------------------------------------------

/// What a credential store holds for a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A password, for Basic auth and for the Bearer token request.
    Password(String),
    /// An identity (refresh) token, to be exchanged at the Bearer realm.
    IdentityToken(String),
}

/// Credentials found for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The user name (empty with an identity token from a helper).
    pub user: String,
    pub secret: Secret,
    /// Where they came from, for messages: a file, or `docker-credential-NAME (from FILE)`.
    pub source: String,
}

impl std::fmt::Debug for Login {
    // Never print a secret, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.secret {
            Secret::Password(_) => "password",
            Secret::IdentityToken(_) => "identity token",
        };
        write!(f, "Login({:?}, <{kind}>, {:?})", self.user, self.source)
    }
}

/// A credential helper that is missing or failed: one line naming it and the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperError {
    /// `docker-credential-NAME`.
    pub program: String,
    /// The registry it was asked about.
    pub registry: String,
    /// What went wrong, ending in a full stop.
    pub problem: String,
}

impl std::fmt::Display for HelperError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credential helper {} for registry {} {}",
            self.program, self.registry, self.problem
        )
    }
}

/// One credential source, in the order registries.conf's `credential-helpers` gives.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// The auth files (`containers-auth.json`), with the helpers they name.
    AuthFiles,
    /// A helper asked for every registry.
    Helper(String),
}

/// The auth files, the credential helpers and where helpers are found.
#[derive(Clone, Debug)]
pub struct CredentialStore {
    files: Vec<PathBuf>,
    /// `$PATH`-style directories the helpers are looked up in.
    search_path: OsString,
    sources: Vec<Source>,
    timeout: Duration,
}

impl CredentialStore {
    /// The auth `files` in lookup order; helpers from `search_path` (`PATH` syntax).
    pub fn new(files: Vec<PathBuf>, search_path: OsString) -> CredentialStore {
        CredentialStore {
            files,
            search_path,
            sources: vec![Source::AuthFiles],
            timeout: credential_helper::TIMEOUT,
        }
    }

    /// Today's auth files ([`auth_file_paths`]) and `$PATH`.
    pub fn from_env() -> CredentialStore {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        CredentialStore::new(auth_file_paths(), path)
    }

    /// registries.conf's `credential-helpers`: the sources in order, `containers-auth.json`
    /// meaning the auth files, any other NAME the helper `docker-credential-NAME` asked for
    /// every registry. Empty: the auth files alone.
    pub fn with_credential_helpers(mut self, names: &[String]) -> CredentialStore {
        self.sources = names
            .iter()
            .map(|n| match n.as_str() {
                "containers-auth.json" => Source::AuthFiles,
                other => Source::Helper(other.to_string()),
            })
            .collect();
        if self.sources.is_empty() {
            self.sources.push(Source::AuthFiles);
        }
        self
    }

    /// Credentials for `host` (`host[:port]`, Docker Hub as `docker.io`) and a repository at
    /// it; `Ok(None)`: none anywhere. A helper failure is returned only when no other source
    /// had credentials.
    pub fn lookup(&self, host: &str, repository: &str) -> Result<Option<Login>, HelperError> {
        let mut failure = None;
        for source in &self.sources {
            let found = match source {
                Source::AuthFiles => self.lookup_files(host, repository, &mut failure),
                Source::Helper(name) => self.ask(name, host, "registries.conf", &mut failure),
            };
            if found.is_some() {
                if let Some(e) = &failure {
                    log::debug!("{e} Using other credentials.");
                }
                return Ok(found);
            }
        }
        failure.map_or(Ok(None), Err)
    }

    /// The auth files in order: per file `credHelpers[host]`, else `credsStore`, then
    /// `auths`.
    fn lookup_files(
        &self,
        host: &str,
        repository: &str,
        failure: &mut Option<HelperError>,
    ) -> Option<Login> {
        let keys = keys_for(host, repository);
        for path in &self.files {
            let text = match std::fs::read(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    log::warn!("Failed to read {}: {}, ignoring.", path.display(), e);
                    continue;
                }
            };
            let obj = match parse_auth_file(&text) {
                Ok(obj) => obj,
                Err(why) => {
                    log::warn!("Failed to parse {}: {}, ignoring.", path.display(), why);
                    continue;
                }
            };
            let named = obj
                .get("credHelpers")
                .and_then(|h| h.as_object())
                .and_then(|h| {
                    h.iter()
                        .find(|(k, _)| same_registry(&normalize_key(k), host))
                        .and_then(|(_, v)| v.as_str())
                })
                .or_else(|| obj.get("credsStore").and_then(|s| s.as_str()))
                .filter(|n| !n.is_empty());
            let origin = path.display().to_string();
            if let Some(login) = named.and_then(|n| self.ask(n, host, &origin, failure)) {
                return Some(login);
            }
            if let Some((user, secret)) = auths_entry(&obj, &keys, entry_login) {
                return Some(Login {
                    user,
                    secret,
                    source: origin,
                });
            }
        }
        None
    }

    /// Ask helper `name` for `host`; a failure is kept in `failure` (the first one wins).
    fn ask(
        &self,
        name: &str,
        host: &str,
        origin: &str,
        failure: &mut Option<HelperError>,
    ) -> Option<Login> {
        let program = format!("docker-credential-{name}");
        let error = |problem: String| HelperError {
            program: program.clone(),
            registry: host.to_string(),
            problem,
        };
        // Docker Hub's credentials are stored under docker's legacy URL too.
        let mut servers = vec![host];
        if DOCKER_HUB_NAMES.contains(&host) {
            servers.push("https://index.docker.io/v1/");
        }
        for server in servers {
            match credential_helper::get(&program, &self.search_path, server, self.timeout) {
                Ok(None) => continue,
                Ok(Some(answer)) => {
                    let answered = normalize_key(&answer.server_url);
                    if !answer.server_url.is_empty() && !same_registry(&answered, host) {
                        failure.get_or_insert(error(format!(
                            "answered with credentials for {answered}, refusing them."
                        )));
                        return None;
                    }
                    let (user, secret) = match answer.username.as_str() {
                        "<token>" => (String::new(), Secret::IdentityToken(answer.secret)),
                        _ => (answer.username, Secret::Password(answer.secret)),
                    };
                    return Some(Login {
                        user,
                        secret,
                        source: format!("{program} (from {origin})"),
                    });
                }
                Err(problem) => {
                    failure.get_or_insert(error(problem));
                    return None;
                }
            }
        }
        None
    }
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

    // --- credential helpers --------------------------------------------------------------

    use std::os::unix::fs::PermissionsExt;

    /// Answers per server on stdin, and logs every server it is asked about.
    const TEST_HELPER: &str = r#"#!/bin/sh
server=$(cat)
echo "$server" >> "$0.asked"
case "$server" in
  good.example) printf '{"ServerURL":"good.example","Username":"alice","Secret":"pw1"}\n' ;;
  token.example:5000) printf '{"ServerURL":"https://token.example:5000","Username":"<token>","Secret":"refresh-1"}\n' ;;
  liar.example) printf '{"ServerURL":"docker.io","Username":"x","Secret":"y"}\n' ;;
  https://index.docker.io/v1/) printf '{"ServerURL":"https://index.docker.io/v1/","Username":"hub","Secret":"hubpw"}\n' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"#;

    const BROKEN_HELPER: &str = "#!/bin/sh\ncat >/dev/null\necho 'keychain is locked'\nexit 3\n";

    /// Helpers `docker-credential-test` and `-broken` in a directory, and auth `files`.
    struct Setup {
        dir: tempfile::TempDir,
    }

    impl Setup {
        fn new(files: &[(&str, &str)]) -> Setup {
            let dir = tempfile::tempdir().unwrap();
            for (name, script) in [("test", TEST_HELPER), ("broken", BROKEN_HELPER)] {
                let path = dir.path().join(format!("docker-credential-{name}"));
                std::fs::write(&path, script).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            for (name, text) in files {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            Setup { dir }
        }

        fn store(&self, files: &[&str]) -> CredentialStore {
            let files = files.iter().map(|f| self.dir.path().join(f)).collect();
            // A directory without helpers first, as in a real PATH.
            let path = std::env::join_paths(["/nonexistent", self.dir.path().to_str().unwrap()]);
            CredentialStore::new(files, path.unwrap())
        }

        /// The servers `docker-credential-test` was asked about, in order.
        fn asked(&self) -> Vec<String> {
            std::fs::read_to_string(self.dir.path().join("docker-credential-test.asked"))
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    /// `(user, secret kind, secret)` of a lookup's result.
    fn login(found: Option<Login>) -> Option<(String, &'static str, String)> {
        found.map(|l| match l.secret {
            Secret::Password(p) => (l.user, "password", p),
            Secret::IdentityToken(t) => (l.user, "token", t),
        })
    }

    #[test]
    fn cred_helpers_give_passwords_and_identity_tokens_for_their_host_only() {
        let config = r#"{"credHelpers": {"good.example": "test", "https://token.example:5000": "test",
            "liar.example": "test", "quiet.example": "test"}}"#;
        let s = Setup::new(&[("config.json", config)]);
        let store = s.store(&["config.json"]);
        let found = store.lookup("good.example", "team/app").unwrap();
        assert_eq!(
            found.as_ref().map(|l| l.source.clone()),
            Some(format!(
                "docker-credential-test (from {})",
                s.dir.path().join("config.json").display()
            ))
        );
        assert_eq!(
            login(found),
            Some(("alice".into(), "password", "pw1".into()))
        );
        assert_eq!(
            login(store.lookup("token.example:5000", "x").unwrap()),
            Some((String::new(), "token", "refresh-1".into()))
        );
        // Not found in the keychain is no error; a host without a helper is not asked.
        assert_eq!(store.lookup("quiet.example", "x").unwrap(), None);
        assert_eq!(store.lookup("other.example", "x").unwrap(), None);
        assert_eq!(
            s.asked(),
            ["good.example", "token.example:5000", "quiet.example"]
        );
        // A helper answering for another registry is refused.
        let err = store.lookup("liar.example", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Credential helper docker-credential-test for registry liar.example answered with credentials for docker.io, refusing them."
        );
        assert!(!format!("{:?}", store.lookup("good.example", "x")).contains("pw1"));
    }

    #[test]
    fn creds_store_serves_every_registry_and_docker_hub_under_its_legacy_url() {
        let s = Setup::new(&[(
            "config.json",
            r#"{"credsStore": "test", "auths": {"docker.io": {}}}"#,
        )]);
        let store = s.store(&["config.json"]);
        assert_eq!(
            login(store.lookup("docker.io", "library/debian").unwrap()),
            Some(("hub".into(), "password", "hubpw".into()))
        );
        assert_eq!(s.asked(), ["docker.io", "https://index.docker.io/v1/"]);
        assert_eq!(
            login(store.lookup("good.example", "x").unwrap()),
            Some(("alice".into(), "password", "pw1".into()))
        );
    }

    #[test]
    fn failing_and_missing_helpers_are_one_line_unless_something_else_has_credentials() {
        let auth = format!(r#"{{"auths": {{"bad.example": {{"auth": "{ALICE}"}}}}}}"#);
        let s = Setup::new(&[
            (
                "config.json",
                r#"{"credHelpers": {"bad.example": "broken", "gone.example": "absent", "sole.example": "broken"}}"#,
            ),
            ("auth.json", &auth),
        ]);
        let store = s.store(&["config.json", "auth.json"]);
        let err = store.lookup("sole.example", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Credential helper docker-credential-broken for registry sole.example failed: keychain is locked"
        );
        let err = store.lookup("gone.example", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Credential helper docker-credential-absent for registry gone.example is not installed (not found in the search path)."
        );
        assert_eq!(
            (err.program.as_str(), err.registry.as_str()),
            ("docker-credential-absent", "gone.example")
        );
        // The later auth.json has a password for bad.example: that wins over the failure.
        assert_eq!(
            login(store.lookup("bad.example", "x").unwrap()),
            Some(("alice".into(), "password", "pw1".into()))
        );
    }

    #[test]
    fn static_entries_identity_tokens_and_registries_conf_helpers() {
        let auth = format!(
            r#"{{"auths": {{"a.example": {{"auth": "{ALICE}", "identitytoken": "idt"}},
                "b.example/team": {{"auth": "{BOB}"}}}}}}"#
        );
        let s = Setup::new(&[("auth.json", &auth)]);
        let store = s.store(&["auth.json"]);
        assert_eq!(
            login(store.lookup("a.example", "x").unwrap()),
            Some(("alice".into(), "token", "idt".into()))
        );
        assert_eq!(
            login(store.lookup("b.example", "team/app").unwrap()),
            Some(("bob".into(), "password", "pw:2".into()))
        );
        assert_eq!(store.lookup("b.example", "other/app").unwrap(), None);
        // registries.conf's credential-helpers: a global helper before the files.
        let store = s
            .store(&["auth.json"])
            .with_credential_helpers(&["test".into(), "containers-auth.json".into()]);
        assert_eq!(
            login(store.lookup("good.example", "x").unwrap()),
            Some(("alice".into(), "password", "pw1".into()))
        );
        assert_eq!(
            store.lookup("a.example", "x").unwrap().map(|l| l.source),
            Some(s.dir.path().join("auth.json").display().to_string())
        );
        assert_eq!(s.asked(), ["good.example", "a.example"]);
    }
}

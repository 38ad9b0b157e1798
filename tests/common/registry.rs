//! A real OCI/Docker v2 registry for tests: Debian's `docker-registry` (distribution 2.8.2),
//! over HTTPS with a per-registry [`TestCa`], optionally behind htpasswd Basic auth or token
//! auth with an in-process [`TokenServer`].
//!
//! ```ignore
//! let reg = Registry::start(RegistryOptions::plain());
//! let layer = reg.push_blob("library/demo", b"layer bytes");
//! let digest = reg.push_manifest("library/demo", "latest", OCI_MANIFEST, &manifest_json);
//! // run the program under test with SSL_CERT_FILE=reg.ca().ca_pem_path() against reg.host()
//! ```
//!
//! The push helper (`push_blob`, `push_manifest`, `request`, `get`) authenticates by itself
//! (Basic credentials, or tokens minted in-process without touching the token server's log), so
//! only the program under test shows up in [`TokenServer::requests`].
//!
//! Needs the Debian packages `docker-registry` and, for Basic auth, `apache2-utils` (`htpasswd
//! -B` writes the bcrypt entry the registry insists on).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::ecdsa::EcdsaSig;
use sha2::{Digest, Sha256};

use super::daemon::{start_on_free_port, Daemon, Ready};
use super::http::{request, HttpReply, HttpServer, Request, Response};
use super::tls::{IssuedCert, TestCa};

/// The registry binary of the Debian package.
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// distribution accepts tokens up to this long past their `exp` (its clock-skew leeway).
const REGISTRY_TOKEN_LEEWAY_SECS: i64 = 60;
/// `expires_in` announced for the tokens the token server issues.
const TOKEN_LIFETIME_SECS: i64 = 300;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2 media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// `"sha256:<hex>"` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// base64url without padding, as JOSE wants it.
fn base64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A user name and password.
#[derive(Clone, Debug, PartialEq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl Credentials {
    /// `user` / `password`.
    pub fn new(user: &str, password: &str) -> Credentials {
        Credentials {
            user: user.to_string(),
            password: password.to_string(),
        }
    }

    /// The value of an `Authorization: Basic …` header for these credentials.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!("Basic {}", openssl::base64::encode_block(raw.as_bytes()))
    }
}

// ---------------------------------------------------------------------------------------------
// Token auth

/// Access to one resource, as in a token scope `type:name:actions` and a JWT `access` claim.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    /// `repository` (or `registry` for the catalog).
    pub kind: String,
    /// Repository name, e.g. `library/demo`.
    pub name: String,
    /// `pull`, `push`, `delete` or `*`.
    pub actions: Vec<String>,
}

impl Access {
    /// Access to repository `name` for `actions`.
    pub fn repository(name: &str, actions: &[&str]) -> Access {
        Access {
            kind: "repository".to_string(),
            name: name.to_string(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Parse one scope `type:name:action[,action…]`. The name may itself contain `:` (a
    /// registry host with a port), so the type ends at the first colon and the actions start
    /// after the last.
    pub fn parse_scope(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions.split(',').map(str::to_string).collect(),
        })
    }

    /// Back to scope syntax.
    pub fn scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// A parsed `WWW-Authenticate` challenge, e.g. `Bearer realm="…",service="…",scope="…"`.
#[derive(Clone, Debug, PartialEq)]
pub struct Challenge {
    /// `Bearer` or `Basic` (as sent).
    pub scheme: String,
    /// The auth-params in order, quotes removed.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parse one challenge (quoted values may contain commas and `\"` escapes).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if rest.is_empty() {
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next()? {
                        (i, '"') => break i,
                        (_, '\\') => value.push(chars.next()?.1),
                        (_, c) => value.push(c),
                    }
                };
                (value, &quoted[end + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            };
            params.push((key.trim().to_string(), value));
            rest = after;
        }
        Some(Challenge {
            scheme: scheme.to_string(),
            params,
        })
    }

    /// The value of auth-param `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Whether a minted token is usable or already rejected by the registry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TokenValidity {
    /// Valid for 300 s (announced as `expires_in`).
    Valid,
    /// Expired beyond the registry's leeway: the registry answers 401 to it.
    Expired,
}

/// How the token server and the registry's `auth.token` section are set up.
#[derive(Clone, Debug)]
pub struct TokenOptions {
    /// The one user the token server knows (Basic auth on the token request), if any.
    pub credentials: Option<Credentials>,
    /// Whether a token request without credentials gets a token (with only `pull` granted).
    pub anonymous_pull: bool,
    /// `service` the registry announces and the token server demands.
    pub service: String,
    /// `iss` of the tokens, as the registry expects.
    pub issuer: String,
    /// An identity (refresh) token the server accepts, and the user it stands for: a
    /// `POST /token` with the form `grant_type=refresh_token&refresh_token=…&service=…&scope=…`
    /// (the OAuth2 flow docker's identity tokens use) gets an `access_token` for that user.
    pub refresh_token: Option<(String, String)>,
}

impl Default for TokenOptions {
    /// Anonymous pulls allowed, no user, service `test-registry`, issuer `test-token-issuer`.
    fn default() -> Self {
        TokenOptions {
            credentials: None,
            anonymous_pull: true,
            service: "test-registry".to_string(),
            issuer: "test-token-issuer".to_string(),
            refresh_token: None,
        }
    }
}

/// Signs registry JWTs (ES256, certificate chain in `x5c`), shared with the server's handler.
struct TokenMinter {
    signer: IssuedCert,
    issuer: String,
    service: String,
    next_jti: AtomicU64,
}

impl TokenMinter {
    fn mint(&self, subject: &str, access: &[Access], validity: TokenValidity) -> String {
        let now = now_unix();
        let exp = match validity {
            TokenValidity::Valid => now + TOKEN_LIFETIME_SECS,
            TokenValidity::Expired => now - REGISTRY_TOKEN_LEEWAY_SECS - 60,
        };
        let der = self
            .signer
            .cert
            .to_der()
            .expect("encode signing certificate");
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [openssl::base64::encode_block(&der)],
        });
        let access: Vec<serde_json::Value> = access
            .iter()
            .map(|a| serde_json::json!({"type": a.kind, "name": a.name, "actions": a.actions}))
            .collect();
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": exp,
            "nbf": now - 3 * TOKEN_LIFETIME_SECS,
            "iat": now - 3 * TOKEN_LIFETIME_SECS,
            "jti": format!("test-{}", self.next_jti.fetch_add(1, Ordering::SeqCst)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let hash = openssl::sha::sha256(signing_input.as_bytes());
        let ec = self.signer.key.ec_key().expect("EC signing key");
        let sig = EcdsaSig::sign(&hash, &ec).expect("ECDSA sign");
        // JWS wants r and s as fixed-width big-endian integers, not DER.
        let mut raw = sig.r().to_vec_padded(32).expect("r");
        raw.extend(sig.s().to_vec_padded(32).expect("s"));
        format!("{signing_input}.{}", base64url(&raw))
    }
}

/// State the token endpoint consults on every request.
struct TokenPolicy {
    minter: TokenMinter,
    options: TokenOptions,
    /// How many of the next issued tokens come out already expired.
    expire_next: AtomicUsize,
}

impl TokenPolicy {
    fn handle(&self, req: &Request) -> Response {
        if req.path != "/token" {
            return Response::not_found();
        }
        let form;
        let (req, subject) = match req.method.as_str() {
            "GET" => (req, self.basic_subject(req)),
            "POST" => {
                // The OAuth2 form: its parameters are read like a query.
                form = Request {
                    query: String::from_utf8_lossy(&req.body).into_owned(),
                    ..req.clone()
                };
                let given = form.query_param("refresh_token");
                let subject = match (&self.options.refresh_token, given) {
                    _ if form.query_param("grant_type").as_deref() != Some("refresh_token") => {
                        Err(Response::status(400).body("unsupported grant_type\n"))
                    }
                    (Some((token, user)), Some(given)) if *token == given => Ok(Some(user.clone())),
                    _ => Err(Response::status(401).body("invalid refresh token\n")),
                };
                (&form, subject)
            }
            _ => return Response::not_found(),
        };
        let subject = match subject {
            Ok(s) => s,
            Err(refusal) => return refusal,
        };
        self.grant(req, subject)
    }

    /// The subject of a `GET` token request: its Basic credentials, or anonymous.
    fn basic_subject(&self, req: &Request) -> Result<Option<String>, Response> {
        Ok(match (req.basic_auth(), &self.options.credentials) {
            (Some((user, password)), Some(known))
                if user == known.user && password == known.password =>
            {
                Some(user)
            }
            (Some(_), _) => return Err(Response::status(401).body("bad credentials\n")),
            (None, _) if self.options.anonymous_pull => None,
            (None, _) => return Err(Response::status(401).body("credentials required\n")),
        })
    }

    /// A token for `subject` (`None`: anonymous, `pull` only) with the scopes asked for.
    fn grant(&self, req: &Request, subject: Option<String>) -> Response {
        if req.query_param("service").as_deref() != Some(self.options.service.as_str()) {
            return Response::status(400).body("unknown or missing service\n");
        }
        // Clients send one `scope=` per scope; some join several with spaces.
        let mut granted = Vec::new();
        for scope in req.query_params("scope") {
            for one in scope.split(' ').filter(|s| !s.is_empty()) {
                let Some(mut access) = Access::parse_scope(one) else {
                    return Response::status(400).body(format!("bad scope {one:?}\n"));
                };
                if subject.is_none() {
                    access.actions.retain(|a| a == "pull");
                }
                granted.push(access);
            }
        }
        let validity =
            match self
                .expire_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            {
                Ok(_) => TokenValidity::Expired,
                Err(_) => TokenValidity::Valid,
            };
        let token = self
            .minter
            .mint(subject.as_deref().unwrap_or(""), &granted, validity);
        Response::json(&serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_LIFETIME_SECS,
        }))
    }
}

/// An HTTPS token endpoint (`GET /token?service=…&scope=…`) issuing JWTs the registry accepts.
///
/// With credentials (Basic auth on the token request) every requested action is granted; an
/// anonymous request (when allowed) gets `pull` only. Wrong credentials get 401, a wrong or
/// missing `service` 400. Every request is logged (see [`TokenServer::requests`]).
pub struct TokenServer {
    policy: Arc<TokenPolicy>,
    server: HttpServer,
}

impl TokenServer {
    /// Start a token server presenting `ca`'s server certificate, signing with a new certificate
    /// issued by `ca` (so `ca.pem` is the registry's `rootcertbundle`).
    pub fn start(ca: &TestCa, options: TokenOptions) -> TokenServer {
        let policy = Arc::new(TokenPolicy {
            minter: TokenMinter {
                signer: ca.sign_server_cert_for(&["token-signer"]),
                issuer: options.issuer.clone(),
                service: options.service.clone(),
                next_jti: AtomicU64::new(1),
            },
            options,
            expire_next: AtomicUsize::new(0),
        });
        let handler_policy = Arc::clone(&policy);
        let server = HttpServer::start(Some(ca), move |req| handler_policy.handle(req));
        TokenServer { policy, server }
    }

    /// The realm URL, `https://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        self.server.url("/token")
    }

    /// The `service` the registry announces.
    pub fn service(&self) -> &str {
        &self.policy.options.service
    }

    /// The `iss` of the tokens.
    pub fn issuer(&self) -> &str {
        &self.policy.options.issuer
    }

    /// The token requests received so far (inspect `query_param("scope")`, `basic_auth()`, …).
    pub fn requests(&self) -> Vec<Request> {
        self.server.requests()
    }

    /// The underlying server, e.g. for [`HttpServer::wait_for_request`].
    pub fn server(&self) -> &HttpServer {
        &self.server
    }

    /// Issue the next `n` tokens already expired (the registry rejects them with 401), then
    /// valid ones again: to test that a client fetches a new token after a 401.
    pub fn expire_next_tokens(&self, n: usize) {
        self.policy.expire_next.store(n, Ordering::SeqCst);
    }

    /// Mint a token directly, without a request: e.g. for a proxy that swaps in an expired one.
    pub fn mint(&self, subject: &str, access: &[Access], validity: TokenValidity) -> String {
        self.policy.minter.mint(subject, access, validity)
    }
}

// ---------------------------------------------------------------------------------------------
// Registry

/// How the registry authenticates clients.
#[derive(Clone, Debug)]
pub enum RegistryAuth {
    /// No authentication.
    None,
    /// htpasswd Basic auth for one user.
    Basic(Credentials),
    /// Bearer tokens from an in-process [`TokenServer`].
    Token(TokenOptions),
}

/// Options for [`Registry::start`].
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// The authentication mode.
    pub auth: RegistryAuth,
}

impl RegistryOptions {
    /// No authentication.
    pub fn plain() -> RegistryOptions {
        RegistryOptions {
            auth: RegistryAuth::None,
        }
    }

    /// htpasswd Basic auth with one user.
    pub fn basic(user: &str, password: &str) -> RegistryOptions {
        RegistryOptions {
            auth: RegistryAuth::Basic(Credentials::new(user, password)),
        }
    }

    /// Token auth with the given token server options.
    pub fn token(options: TokenOptions) -> RegistryOptions {
        RegistryOptions {
            auth: RegistryAuth::Token(options),
        }
    }
}

/// A running `docker-registry serve` on `127.0.0.1:<port>` over HTTPS, with its storage, config
/// and certificates in a temporary directory. The process is killed and reaped on Drop.
pub struct Registry {
    // Declared first so it is dropped first: the process dies before its files go away.
    process: Daemon,
    port: u16,
    auth: RegistryAuth,
    token_server: Option<TokenServer>,
    ca: TestCa,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Start a registry and wait until it listens and answers `GET /v2/`. Panics (with the
    /// registry's log) if it does not within 30 s.
    pub fn start(opts: RegistryOptions) -> Registry {
        let ca = TestCa::new();
        let dir = tempfile::Builder::new()
            .prefix("test-registry.")
            .tempdir()
            .expect("create registry temporary directory");
        let token_server = match &opts.auth {
            RegistryAuth::Token(options) => Some(TokenServer::start(&ca, options.clone())),
            _ => None,
        };
        let auth_yaml = match (&opts.auth, &token_server) {
            (RegistryAuth::Basic(creds), _) => {
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, htpasswd_entry(creds)).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: test-registry\n    path: \"{}\"\n",
                    path.display()
                )
            }
            (_, Some(ts)) => format!(
                "auth:\n  token:\n    realm: \"{}\"\n    service: \"{}\"\n    issuer: \"{}\"\n    rootcertbundle: \"{}\"\n",
                ts.realm(),
                ts.service(),
                ts.issuer(),
                ca.ca_pem_path().display()
            ),
            _ => String::new(),
        };

        let config = dir.path().join("config.yml");
        let (process, port) = start_registry(
            "docker-registry",
            |port| {
                let tls = tls_yaml(&ca, None);
                std::fs::write(&config, config_yaml(dir.path(), port, &tls, &auth_yaml))
                    .expect("write registry config");
                config.clone()
            },
            &[],
        );
        let registry = Registry {
            process,
            port,
            auth: opts.auth,
            token_server,
            ca,
            dir,
        };
        registry.check_ping();
        registry
    }

    fn check_ping(&self) {
        let reply = request("GET", &self.url_for("/v2/"), &[], b"", Some(&self.ca))
            .unwrap_or_else(|e| panic!("GET /v2/: {e}\nregistry log:\n{}", self.log()));
        let expected = match self.auth {
            RegistryAuth::None => 200,
            _ => 401,
        };
        assert_eq!(
            reply.status,
            expected,
            "GET /v2/ answered {}: {}\nregistry log:\n{}",
            reply.status,
            reply.text(),
            self.log()
        );
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.host())
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the registry's (and token server's) certificate: pass
    /// `SSL_CERT_FILE=ca().ca_pem_path()` to the program under test.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The credentials of a Basic-auth registry, or the token server's user.
    pub fn credentials(&self) -> Option<&Credentials> {
        match &self.auth {
            RegistryAuth::None => None,
            RegistryAuth::Basic(c) => Some(c),
            RegistryAuth::Token(t) => t.credentials.as_ref(),
        }
    }

    /// The token server of a token-auth registry. Panics for other modes.
    pub fn token_server(&self) -> &TokenServer {
        self.token_server
            .as_ref()
            .expect("token_server() on a registry without token auth")
    }

    /// The registry's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The directory the registry stores blobs and manifests in.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn url_for(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("https://") || path_or_url.starts_with("http://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.url())
        }
    }

    /// The `Authorization` value the push helper uses for `path`: Basic credentials, or a token
    /// minted in-process granting everything on the repository named in the path.
    fn authorization_for(&self, path: &str) -> Option<String> {
        match &self.auth {
            RegistryAuth::None => None,
            RegistryAuth::Basic(c) => Some(c.basic_header()),
            RegistryAuth::Token(_) => {
                let access = access_for_path(path);
                let token = self
                    .token_server()
                    .mint("push-helper", &access, TokenValidity::Valid);
                Some(format!("Bearer {token}"))
            }
        }
    }

    /// An authenticated request (`path` like `/v2/…`, or a full URL on this registry). Panics
    /// on transport errors, not on HTTP errors.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpReply {
        let url = self.url_for(path);
        let authorization = self.authorization_for(&url);
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(a) = &authorization {
            all.push(("Authorization", a));
        }
        request(method, &url, &all, body, Some(&self.ca))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}\nregistry log:\n{}", self.log()))
    }

    /// An authenticated GET accepting every manifest type (OCI and Docker schema 2).
    pub fn get(&self, path: &str) -> HttpReply {
        let accept = [
            OCI_INDEX,
            OCI_MANIFEST,
            DOCKER_MANIFEST_LIST,
            DOCKER_MANIFEST,
        ]
        .join(", ");
        self.request("GET", path, &[("Accept", &accept)], b"")
    }

    /// Upload `bytes` as a blob of `repo` (POST an upload, then one monolithic PUT with
    /// `?digest=`). Returns its digest `sha256:…`.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let start = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(start.status, 202, "start upload: {}", start.text());
        let location = start.header("Location").expect("upload Location");
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{separator}digest={digest}");
        let done = self.request(
            "PUT",
            &put,
            &[("Content-Type", "application/octet-stream")],
            bytes,
        );
        assert_eq!(done.status, 201, "finish upload: {}", done.text());
        digest
    }

    /// Put `bytes` as manifest `reference` (a tag or digest) of `repo` with `media_type`.
    /// Returns the registry's `Docker-Content-Digest`.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let reply = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            bytes,
        );
        assert_eq!(reply.status, 201, "put manifest: {}", reply.text());
        reply
            .header("Docker-Content-Digest")
            .expect("Docker-Content-Digest")
            .to_string()
    }
}

/// What a token must grant for the push helper to reach `url`: everything on the repository
/// named in a `/v2/<name>/{blobs,manifests,tags}/…` path, or the catalog.
fn access_for_path(url: &str) -> Vec<Access> {
    let Some(start) = url.find("/v2/") else {
        return Vec::new();
    };
    let path = &url[start + "/v2/".len()..];
    if path.starts_with("_catalog") {
        return vec![Access {
            kind: "registry".to_string(),
            name: "catalog".to_string(),
            actions: vec!["*".to_string()],
        }];
    }
    // Repository names may contain "blobs" etc. as components, the reference part cannot contain
    // '/': the last marker is the real one.
    let end = ["/blobs/", "/manifests/", "/tags/"]
        .iter()
        .filter_map(|m| path.rfind(m))
        .max();
    match end {
        Some(end) => vec![Access::repository(&path[..end], &["*"])],
        None => Vec::new(),
    }
}

/// A bcrypt htpasswd line for `creds` (the only hash distribution's htpasswd auth accepts).
fn htpasswd_entry(creds: &Credentials) -> Vec<u8> {
    let out = Command::new("htpasswd")
        .args(["-B", "-b", "-n", &creds.user, &creds.password])
        .output()
        .unwrap_or_else(|e| panic!("run htpasswd ({e}): install Debian package apache2-utils"));
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Start `docker-registry serve CONFIG` (with `env` added to its environment) on a free
/// port once it listens; `config(port)` writes the configuration for that port and returns
/// its path.
pub fn start_registry(
    name: &str,
    mut config: impl FnMut(u16) -> PathBuf,
    env: &[(&str, PathBuf)],
) -> (Daemon, u16) {
    assert!(
        Path::new(REGISTRY_BIN).exists(),
        "{REGISTRY_BIN} not found: install Debian package docker-registry"
    );
    start_on_free_port(
        name,
        // distribution logs this right after binding, before serving: a real readiness
        // signal (`, tls` follows with TLS).
        |port| Ready::LogLine(format!("listening on 127.0.0.1:{port}")),
        |port| {
            let mut cmd = Command::new(REGISTRY_BIN);
            cmd.arg("serve").arg(config(port));
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
            cmd
        },
    )
}

/// The `http.tls` section serving `ca`'s server certificate; with `client_ca`, clients must
/// present a certificate that CA signed.
pub fn tls_yaml(ca: &TestCa, client_ca: Option<&Path>) -> String {
    let mut yaml = format!(
        "  tls:\n    certificate: \"{}\"\n    key: \"{}\"\n",
        ca.server_cert_path().display(),
        ca.server_key_path().display()
    );
    if let Some(client_ca) = client_ca {
        yaml.push_str(&format!(
            "    clientcas:\n      - \"{}\"\n",
            client_ca.display()
        ));
    }
    yaml
}

/// A registry configuration: storage in `dir/storage`, listening on `127.0.0.1:port`,
/// `http_tls` (from [`tls_yaml`], or empty for plain HTTP) and `extra` top-level sections
/// (`auth:`, `proxy:`).
pub fn config_yaml(dir: &Path, port: u16, http_tls: &str, extra: &str) -> String {
    let mut secret = [0u8; 24];
    openssl::rand::rand_bytes(&mut secret).expect("random secret");
    let secret = base64url(&secret);
    format!(
        "version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: \"{storage}\"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: \"{secret}\"
{http_tls}health:
  storagedriver:
    enabled: false
{extra}",
        storage = dir.join("storage").display(),
    )
}

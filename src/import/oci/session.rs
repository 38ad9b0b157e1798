//! The registry session: how requests are authorized (anonymous, the user's Basic
//! credentials, a Bearer token from the challenge's realm), and what becomes of a request
//! that failed ([`Session::on_failure`] → [`Next`]).
//!
//! Policy, in the order it is applied:
//! * a 401 from the registry gets a new token (or the Basic credentials) and is sent again,
//!   once per request; a request sent with an authorization that was since renewed is
//!   simply sent again; while a token request runs, others wait for it;
//! * 5xx, 429, 408 and transport errors are retried as the job layer's [`RetryPolicy`]
//!   says (four attempts, backoff doubling from 1 s, or the server's `Retry-After` up to
//!   60 s); a download whose size or digest is wrong is not;
//! * a layer fetched from a descriptor's URL falls back to the next URL, then the registry;
//! * a request to a registry endpoint that has a next one ([`super::route`]: a mirror
//!   before the registry) is not retried: whatever fails it (down, 5xx, 404, a login we
//!   cannot give) moves on to that endpoint, with one info line;
//! * anything else fails the pull with one message naming what was asked and the
//!   registry's answer.
//!
//! The jobs leave the report of their failures to us (`quiet_failures`): only the failure
//! that ends the pull is an error; a failed transfer sent again is a warning, one that
//! another endpoint takes over is said in that info line. A registry answering a TLS
//! handshake in plain HTTP gets the registries.conf hint added here (the job knows no
//! registries.conf).
//!
//! A session belongs to one endpoint: the importer makes a new one, with the credentials
//! of the new endpoint's host, when it moves on.

use std::collections::HashMap;
use std::time::Duration;

use super::auth::{self, Authorization, Credentials};
use super::credentials::{self, CredentialStore, Login, Secret};
use super::registry::Endpoint;
use super::registry_error;
use super::request::{Key, TokenGrant};
use crate::import::job::retry::{self, RetryPolicy};
use crate::import::job::ImportJob;
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::format::format_timespan;

/// A Bearer challenge's token endpoint.
pub struct Bearer {
    pub realm: String,
    pub service: Option<String>,
}

/// How the registry's answer to the ping is to be met.
pub enum Grant {
    /// Get a token first (the Bearer challenge is stored).
    Token,
    /// Requests may go now (with the Basic credentials, if the registry asked for them).
    Ready,
}

/// What to do with a request that failed.
#[derive(Debug)]
pub enum Next {
    /// Send it again after this delay (a blob resumes after what its spool holds).
    Retry(Duration),
    /// Send it again now: the authorization changed since it was sent.
    Reauthorize,
    /// Begin the token request (the challenge is stored); the request waits for the token.
    NeedToken,
    /// A token request already runs; the request is sent again when the token is there.
    Wait,
    /// The current source failed for good: try the next one (a layer's next URL, the next
    /// registry endpoint).
    NextSource,
    /// Give up: the pull fails with this error (logged).
    Fail(Error),
}

/// A failed request, as its job saw it.
pub struct Failure {
    /// HTTP status (0 if no response came).
    pub code: u32,
    /// The job's error.
    pub error: Error,
    /// The job's message for a failure of the transfer itself (connection, TLS,
    /// truncation), which the job left to us to report: an error when the pull fails, a
    /// warning or info line when another attempt or endpoint takes over.
    pub unlogged: Option<String>,
    /// The body came whole but was not what was expected (the job said so): final.
    pub mismatch: bool,
    /// Worth another attempt ([`retry::is_retryable`]).
    pub retryable: bool,
    pub url: String,
    /// The registry's error document in one line, with the status.
    pub description: String,
    pub retry_after: Option<Duration>,
    /// The `WWW-Authenticate` headers of the response.
    pub challenges: Vec<String>,
    /// No TLS session could be set up (the server speaks plain HTTP, or wants a client
    /// certificate).
    pub tls_handshake: bool,
}

impl Failure {
    /// Read what matters off a failed job.
    pub fn of(job: &ImportJob) -> Failure {
        let code = job.response_code();
        Failure {
            code,
            error: job
                .error()
                .cloned()
                .unwrap_or_else(|| Error::new(libc::EIO)),
            unlogged: job
                .unlogged_failure()
                .filter(|_| code < 300)
                .map(str::to_string),
            mismatch: job.content_mismatch(),
            retryable: retry::is_retryable(job),
            url: job.url().to_string(),
            description: registry_error::describe(code, job.error_body()),
            retry_after: retry::retry_after(job),
            challenges: job
                .headers()
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
                .map(|(_, v)| v.clone())
                .collect(),
            tls_handshake: job
                .transfer_error()
                .is_some_and(curl::Error::is_ssl_connect_error),
        }
    }
}

/// Retry bookkeeping of one request.
#[derive(Default, Clone, Copy)]
struct RequestState {
    /// Attempts begun so far.
    attempts: u32,
    /// The authorization generation the last attempt was sent with.
    auth_generation: u32,
    /// A 401 already made us re-authorize this request once.
    auth_retried: bool,
}

/// Where a failed request went.
#[derive(Clone, Copy)]
pub struct Route {
    /// To a descriptor's URL, not the registry.
    pub foreign: bool,
    /// Another source can take over (the next URL, the next registry endpoint).
    pub has_next: bool,
}

/// The authorization of one endpoint's requests, and their retry bookkeeping.
pub struct Session {
    /// The endpoint's host (for messages) and the repository pulled.
    host: String,
    repository: String,
    /// For the endpoint's host, from the auth files or a credential helper.
    login: Option<Login>,
    /// Attempts and delays of failed requests.
    retry: RetryPolicy,
    auth: Authorization,
    /// Bumped whenever `auth` changes, so a request knows whether to retry with it.
    generation: u32,
    /// The Bearer challenge's realm and service, once seen.
    bearer: Option<Bearer>,
    /// Requests waiting for the token request to finish.
    token_waiters: Vec<Key>,
    requests: HashMap<Key, RequestState>,
}

impl Session {
    /// A session for `repository` on `host`, anonymous until the registry asks, retrying
    /// failed requests as `retry` says.
    pub fn new(host: &str, repository: &str, login: Option<Login>, retry: RetryPolicy) -> Self {
        Session {
            host: host.to_string(),
            repository: repository.to_string(),
            login,
            retry,
            auth: Authorization::Anonymous,
            generation: 0,
            bearer: None,
            token_waiters: Vec::new(),
            requests: HashMap::new(),
        }
    }

    /// The `Authorization:` header line for registry requests, if any.
    pub fn header(&self) -> Option<String> {
        self.auth.header()
    }

    /// The Bearer challenge a token request goes to (once one was seen).
    pub fn bearer(&self) -> Option<&Bearer> {
        self.bearer.as_ref()
    }

    /// `Basic …` for the user's password, if there is one.
    pub fn basic(&self) -> Option<String> {
        match &self.login.as_ref()?.secret {
            Secret::Password(password) => Some(
                Credentials {
                    user: self.login.as_ref()?.user.clone(),
                    password: password.clone(),
                }
                .basic(),
            ),
            Secret::IdentityToken(_) => None,
        }
    }

    /// What the token request presents: the identity token, the password, or nothing.
    pub fn token_grant(&self) -> TokenGrant {
        match (&self.login, self.basic()) {
            (
                Some(Login {
                    secret: Secret::IdentityToken(t),
                    ..
                }),
                _,
            ) => TokenGrant::RefreshToken(t.clone()),
            (_, Some(basic)) => TokenGrant::Basic(basic),
            _ => TokenGrant::Anonymous,
        }
    }

    /// The requests waiting for a token (taken: the session is being replaced).
    pub fn take_waiters(&mut self) -> Vec<Key> {
        std::mem::take(&mut self.token_waiters)
    }

    /// The pull cannot go on here: with `has_next`, move on (one info line), else fail with
    /// `message` (logged as the error).
    fn give_up(&self, has_next: bool, errno: i32, message: String) -> Next {
        if has_next {
            log::info!("{message} Trying the next endpoint.");
            return Next::NextSource;
        }
        Next::Fail(log_error_errno!(Error::new(errno), "{message}"))
    }

    /// `key` was just sent (again), with the current authorization.
    pub fn begun(&mut self, key: Key) {
        let generation = self.generation;
        let st = self.requests.entry(key).or_default();
        st.attempts += 1;
        st.auth_generation = generation;
    }

    /// `key` names a new request from now on (the manifest an index chose): fresh attempts.
    pub fn forget(&mut self, key: Key) {
        self.requests.remove(&key);
    }

    /// The ping answered 401 with these `WWW-Authenticate` headers. `Err`: what to do
    /// instead ([`Next::NextSource`] or [`Next::Fail`], see `has_next`).
    pub fn on_ping_challenge(
        &mut self,
        headers: &[String],
        has_next: bool,
    ) -> std::result::Result<Grant, Next> {
        let challenges: Vec<auth::Challenge> = headers
            .iter()
            .flat_map(|h| auth::parse_challenges(h))
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            self.use_bearer(bearer, has_next)?;
            return Ok(Grant::Token);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some(basic) = self.basic() else {
                return Err(self.no_credentials(has_next));
            };
            self.auth = Authorization::Basic(basic);
            self.generation += 1;
            return Ok(Grant::Ready);
        }
        Err(self.give_up(
            has_next,
            libc::EPROTONOSUPPORT,
            format!(
                "Registry {} asks for an authentication scheme we do not support ({}).",
                self.host,
                headers
                    .first()
                    .map_or("no WWW-Authenticate header", String::as_str)
            ),
        ))
    }

    /// Decide what becomes of request `key` that failed as `f` after going where `route`
    /// says. `what` says what was asked for, for the message if the pull fails ("Failed to
    /// fetch the image config").
    pub fn on_failure(&mut self, key: Key, f: &Failure, route: Route, what: &str) -> Next {
        let Route { foreign, has_next } = route;
        if f.mismatch {
            // Logged by the job; no other attempt or source can make it right.
            return Next::Fail(f.error.clone());
        }
        if f.code == 401 && !foreign {
            if key == Key::Token {
                return self.give_up(
                    has_next,
                    libc::EACCES,
                    format!(
                        "Token server refused {}: {}.",
                        self.credentials_description(),
                        f.description
                    ),
                );
            }
            return self.on_unauthorized(key, f, has_next);
        }
        let attempts = self.requests.get(&key).map_or(1, |s| s.attempts);
        // A mirror is not retried: the next endpoint takes over at once.
        let delay = f
            .retryable
            .then_some(())
            .filter(|()| foreign || !has_next)
            .and_then(|()| self.retry.next_delay(attempts, f.retry_after));
        if let Some(delay) = delay {
            if let Some(cause) = &f.unlogged {
                log::warn!("{cause}");
            }
            let why = if f.code >= 300 {
                format!("{} answered {}", f.url, f.description)
            } else {
                format!("Download of {} failed", f.url)
            };
            log::info!(
                "{why}, retrying in {} (attempt {} of {}).",
                format_timespan(delay.as_micros() as u64, 1000),
                attempts + 1,
                self.retry.attempts_max
            );
            return Next::Retry(delay);
        }
        if foreign {
            if let Some(cause) = &f.unlogged {
                log::warn!("{cause}");
            }
            if let Some(s) = self.requests.get_mut(&key) {
                s.attempts = 0;
            }
            return Next::NextSource;
        }
        if has_next {
            self.requests.remove(&key);
            let why = match (f.code, &f.unlogged) {
                (300.., _) => format!("{} answered {}", f.url, f.description),
                (_, Some(cause)) => {
                    format!(
                        "Download of {} failed: {}",
                        f.url,
                        cause.trim_end_matches('.')
                    )
                }
                _ => format!("Download of {} failed", f.url),
            };
            return self.give_up(true, libc::EIO, format!("{why}."));
        }
        if f.code < 300 {
            let Some(cause) = &f.unlogged else {
                // Logged where it happened (the job's worker, its sink).
                return Next::Fail(f.error.clone());
            };
            // A TLS handshake answered in plain HTTP (the job said so; EPROTO): how to
            // allow such a registry is ours to say, the job knows no registries.conf.
            if f.tls_handshake && f.error.errno() == libc::EPROTO && key != Key::Token {
                return Next::Fail(log_error_errno!(
                    f.error.clone(),
                    "{}; plain HTTP registries need 'insecure = true' in registries.conf.",
                    cause.trim_end_matches('.')
                ));
            }
            return Next::Fail(log_error_errno!(f.error.clone(), "{cause}"));
        }
        if key == Key::Ping && f.code == 404 {
            return Next::Fail(log_error_errno!(
                Error::new(libc::EPROTONOSUPPORT),
                "Registry {} does not speak the Registry v2 API (HTTP 404 for /v2/).",
                self.host
            ));
        }
        Next::Fail(log_error_errno!(
            Error::new(libc::EIO),
            "{what}: {}.",
            f.description
        ))
    }

    /// A registry request got 401: get a new token (or use the Basic credentials) and send
    /// it again, once.
    fn on_unauthorized(&mut self, key: Key, f: &Failure, has_next: bool) -> Next {
        let st = self.requests.entry(key).or_default();
        if st.auth_retried {
            let message = format!(
                "Registry {} refused access to {} with {}: {}.",
                self.host,
                self.repository,
                self.credentials_description(),
                f.description
            );
            return self.give_up(has_next, libc::EACCES, message);
        }
        st.auth_retried = true;
        st.attempts = st.attempts.saturating_sub(1);
        if st.auth_generation < self.generation {
            // Another request already got a newer token.
            return Next::Reauthorize;
        }
        if !self.token_waiters.is_empty() {
            self.token_waiters.push(key);
            return Next::Wait;
        }
        let parsed: Vec<auth::Challenge> = f
            .challenges
            .iter()
            .flat_map(|h| auth::parse_challenges(h))
            .collect();
        if let Some(bearer) = parsed.iter().find(|c| c.scheme == "bearer") {
            log::info!("Registry {} asks for a new token, getting one.", self.host);
            if let Err(next) = self.use_bearer(bearer, has_next) {
                return next;
            }
            self.token_waiters.push(key);
            self.requests.remove(&Key::Token);
            return Next::NeedToken;
        }
        match (self.basic(), &self.auth) {
            (Some(basic), a) if !matches!(a, Authorization::Basic(_)) => {
                self.auth = Authorization::Basic(basic);
                self.generation += 1;
                Next::Reauthorize
            }
            (None, _) => self.no_credentials(has_next),
            _ => self.give_up(
                has_next,
                libc::EACCES,
                format!(
                    "Registry {} refused {}: {}.",
                    self.host,
                    self.credentials_description(),
                    f.description
                ),
            ),
        }
    }

    /// The token request answered `body`: use its token from now on. Returns the requests
    /// that waited for it, to send again.
    pub fn on_token(&mut self, body: &[u8]) -> Result<Vec<Key>> {
        let token = auth::parse_token_response(body).ok_or_else(|| {
            log_error_errno!(
                Error::new(libc::EBADMSG),
                "Token server sent no usable token."
            )
        })?;
        self.auth = Authorization::Bearer(token);
        self.generation += 1;
        Ok(std::mem::take(&mut self.token_waiters))
    }

    /// Remember a Bearer challenge's realm and service (the realm must be https: Basic
    /// credentials may go there). `Err`: what to do instead.
    fn use_bearer(
        &mut self,
        challenge: &auth::Challenge,
        has_next: bool,
    ) -> std::result::Result<(), Next> {
        let Some(realm) = challenge
            .param("realm")
            .filter(|r| r.starts_with("https://") && r.len() > 8)
        else {
            return Err(self.give_up(
                has_next,
                libc::EPROTO,
                format!(
                    "Registry {} sent a Bearer challenge without an https realm, refusing.",
                    self.host
                ),
            ));
        };
        if realm.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(self.give_up(
                has_next,
                libc::EPROTO,
                format!(
                    "Registry {} sent an invalid token realm, refusing.",
                    self.host
                ),
            ));
        }
        self.bearer = Some(Bearer {
            realm: realm.to_string(),
            service: challenge.param("service").map(str::to_string),
        });
        Ok(())
    }

    fn no_credentials(&self, has_next: bool) -> Next {
        let message = format!(
            "Registry {} requires a login, but no credentials for it were found in {}.",
            self.host,
            credentials::describe_paths()
        );
        self.give_up(has_next, libc::EACCES, message)
    }

    fn credentials_description(&self) -> String {
        match &self.login {
            Some(l) => format!("the credentials of '{}' from {}", l.user, l.source),
            None => "anonymous access".to_string(),
        }
    }
}

/// Sessions for endpoints, with the credentials of each endpoint's host: looked up once
/// per host and repository (a helper may be slow); a helper that fails is one warning,
/// and the pull goes on without credentials there.
pub struct Logins {
    store: CredentialStore,
    retry: RetryPolicy,
    found: HashMap<String, Option<Login>>,
}

impl Logins {
    pub fn new(store: CredentialStore, retry: RetryPolicy) -> Logins {
        Logins {
            store,
            retry,
            found: HashMap::new(),
        }
    }

    /// A new session for endpoint `e`.
    pub fn session_for(&mut self, e: &Endpoint) -> Session {
        let store = &self.store;
        let login = self
            .found
            .entry(format!("{}/{}", e.auth_host, e.repository))
            .or_insert_with(|| {
                let found = store
                    .lookup(&e.auth_host, &e.repository)
                    .unwrap_or_else(|err| {
                        log::warn!("{err}");
                        None
                    });
                if let Some(l) = &found {
                    log::debug!("Using credentials of '{}' from {}.", l.user, l.source);
                }
                found
            })
            .clone();
        Session::new(&e.host, &e.repository, login, self.retry)
    }
}

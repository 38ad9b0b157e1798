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
//! * anything else fails the pull with one message naming what was asked and the
//!   registry's answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::auth::{self, Authorization, Credentials};
use super::credentials;
use super::registry_error;
use super::request::Key;
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
    /// The layer's current source failed for good: try the next one.
    NextSource,
    /// Give up: the pull fails with this error (logged).
    Fail(Error),
}

/// A failed request, as its job saw it.
pub struct Failure {
    /// HTTP status (0 if no response came).
    pub code: u32,
    /// The job's error (logged already if the failure was not an HTTP status).
    pub error: Error,
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

/// The authorization of one pull's requests, and their retry bookkeeping.
pub struct Session {
    /// The registry's host (for messages) and the repository pulled.
    host: String,
    repository: String,
    /// From the auth files, with the file they came from.
    credentials: Option<(Credentials, PathBuf)>,
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
    pub fn new(
        host: &str,
        repository: &str,
        credentials: Option<(Credentials, PathBuf)>,
        retry: RetryPolicy,
    ) -> Self {
        Session {
            host: host.to_string(),
            repository: repository.to_string(),
            credentials,
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

    /// The ping answered 401 with these `WWW-Authenticate` headers.
    pub fn on_ping_challenge(&mut self, headers: &[String]) -> Result<Grant> {
        let challenges: Vec<auth::Challenge> = headers
            .iter()
            .flat_map(|h| auth::parse_challenges(h))
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            self.use_bearer(bearer)?;
            return Ok(Grant::Token);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            let Some((creds, _)) = &self.credentials else {
                return Err(self.no_credentials());
            };
            self.auth = Authorization::Basic(creds.basic());
            self.generation += 1;
            return Ok(Grant::Ready);
        }
        Err(log_error_errno!(
            Error::new(libc::EPROTONOSUPPORT),
            "Registry {} asks for an authentication scheme we do not support ({}).",
            self.host,
            headers
                .first()
                .map_or("no WWW-Authenticate header", String::as_str)
        ))
    }

    /// Decide what becomes of request `key` that failed as `f`. `foreign`: it went to a
    /// descriptor's URL, not the registry. `what` says what was asked for, for the message
    /// if the pull fails ("Failed to fetch the image config").
    pub fn on_failure(&mut self, key: Key, f: &Failure, foreign: bool, what: &str) -> Next {
        if f.mismatch {
            // Logged by the job; no other attempt or source can make it right.
            return Next::Fail(f.error.clone());
        }
        if f.code == 401 && !foreign {
            if key == Key::Token {
                return Next::Fail(log_error_errno!(
                    Error::new(libc::EACCES),
                    "Token server refused {}: {}.",
                    self.credentials_description(),
                    f.description
                ));
            }
            return self.on_unauthorized(key, f);
        }
        let attempts = self.requests.get(&key).map_or(1, |s| s.attempts);
        let delay = f
            .retryable
            .then(|| self.retry.next_delay(attempts, f.retry_after))
            .flatten();
        if let Some(delay) = delay {
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
            if let Some(s) = self.requests.get_mut(&key) {
                s.attempts = 0;
            }
            return Next::NextSource;
        }
        if f.code < 300 {
            // Already logged by the job.
            return Next::Fail(f.error.clone());
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
    fn on_unauthorized(&mut self, key: Key, f: &Failure) -> Next {
        let st = self.requests.entry(key).or_default();
        if st.auth_retried {
            return Next::Fail(log_error_errno!(
                Error::new(libc::EACCES),
                "Registry {} refused access to {} with {}: {}.",
                self.host,
                self.repository,
                self.credentials_description(),
                f.description
            ));
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
            if let Err(e) = self.use_bearer(bearer) {
                return Next::Fail(e);
            }
            self.token_waiters.push(key);
            self.requests.remove(&Key::Token);
            return Next::NeedToken;
        }
        match (&self.credentials, &self.auth) {
            (Some((creds, _)), a) if !matches!(a, Authorization::Basic(_)) => {
                self.auth = Authorization::Basic(creds.basic());
                self.generation += 1;
                Next::Reauthorize
            }
            (None, _) => Next::Fail(self.no_credentials()),
            _ => Next::Fail(log_error_errno!(
                Error::new(libc::EACCES),
                "Registry {} refused {}: {}.",
                self.host,
                self.credentials_description(),
                f.description
            )),
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
    /// credentials may go there).
    fn use_bearer(&mut self, challenge: &auth::Challenge) -> Result<()> {
        let Some(realm) = challenge
            .param("realm")
            .filter(|r| r.starts_with("https://") && r.len() > 8)
        else {
            return Err(log_error_errno!(
                Error::new(libc::EPROTO),
                "Registry {} sent a Bearer challenge without an https realm, refusing.",
                self.host
            ));
        };
        if realm.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(log_error_errno!(
                Error::new(libc::EPROTO),
                "Registry {} sent an invalid token realm, refusing.",
                self.host
            ));
        }
        self.bearer = Some(Bearer {
            realm: realm.to_string(),
            service: challenge.param("service").map(str::to_string),
        });
        Ok(())
    }

    fn no_credentials(&self) -> Error {
        log_error_errno!(
            Error::new(libc::EACCES),
            "Registry {} requires a login, but no credentials for it were found in {}.",
            self.host,
            credentials::describe_paths()
        )
    }

    fn credentials_description(&self) -> String {
        match &self.credentials {
            Some((c, path)) => format!("the credentials of '{}' from {}", c.user, path.display()),
            None => "anonymous access".to_string(),
        }
    }
}

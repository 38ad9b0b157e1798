//! What becomes of a failed request of the pull: sent again after a delay (a blob first
//! hashes what its spool holds and resumes after it, as it does when it finds a spool
//! left by a killed pull or verified by a concurrent one), sent again with new credentials, or
//! moved on to the next source or endpoint; else the pull fails. The [`Session`] decides;
//! this part of [`OciImport`] carries the decision out.

use std::time::Duration;

use super::{OciImport, Stage};
use crate::event::{Clock, EventLoop, TimerAction};
use crate::import::oci::blobs::{self, Hashed, Prefix};
use crate::import::oci::request::Key;
use crate::import::oci::session::{self, Failure, Next};
use crate::import::Importer;
use crate::log_error_errno;
use crate::util::error::{Error, Result};

impl OciImport {
    /// The current endpoint failed for good: move on to the next one (there is one) and
    /// send what waited there again: the ping while the manifest is looked for, else
    /// `key` and the requests that waited for a token.
    pub(super) fn next_endpoint(&mut self, lp: &mut EventLoop<Self>, key: Key) -> Result<()> {
        if !self.route.advance() {
            return Err(log_error_errno!(
                Error::new(libc::EIO),
                "No registry endpoint left for '{}'.",
                self.req.reference
            ));
        }
        self.use_current_endpoint(lp, key)
    }

    /// Requests go to the route's current endpoint from now on: a new session for it;
    /// `key` (and whatever waited for a token) is sent there.
    pub(super) fn use_current_endpoint(
        &mut self,
        lp: &mut EventLoop<Self>,
        key: Key,
    ) -> Result<()> {
        let mut waiters = self.session.take_waiters();
        self.session = self.logins.session_for(&self.route.current().1.endpoint);
        log::info!("Using {}.", self.route.current().1.endpoint);
        if self.route.is_resolving() {
            // The manifest is still looked for: start over at the new endpoint.
            self.stage = Stage::Ping;
            return self.begin(lp, Key::Ping);
        }
        waiters.retain(|k| *k != key);
        waiters.insert(0, key);
        for k in waiters {
            if k != Key::Token {
                self.begin(lp, k)?;
            }
        }
        Ok(())
    }

    /// Request `key` failed: the session decides whether it is sent again, waits for a
    /// token, moves on to the next source, or fails the pull.
    pub(super) fn on_failed(
        &mut self,
        lp: &mut EventLoop<Self>,
        key: Key,
        f: Failure,
    ) -> Result<()> {
        let (key, f) = match key {
            Key::Part(b, i) => match self.on_part_failed(lp, b, i, f)? {
                Some(next) => next,
                None => return Ok(()),
            },
            _ => (key, f),
        };
        let src = self.route.current().1;
        let reference = &src.image;
        let (what, foreign) = match (key, &self.stage) {
            // A 401 to the ping is an answer: the registry wants credentials.
            (Key::Ping, Stage::Ping) if f.code == 401 => {
                return self.on_ping(lp, Some(&f.challenges))
            }
            (Key::Ping, Stage::Ping) => (
                format!("Failed to reach registry {}", src.endpoint.host),
                false,
            ),
            (Key::Token, _) => ("Failed to get a token".to_string(), false),
            (Key::Manifest, Stage::Manifest(_)) => {
                (format!("Failed to fetch manifest of '{reference}'"), false)
            }
            (Key::Config, Stage::Config(_)) => {
                ("Failed to fetch the image config".to_string(), false)
            }
            (Key::Blob(b) | Key::Part(b, _), Stage::Layers(l)) => {
                let blob = l.blobs.get(b);
                (
                    format!("Failed to fetch layer {}", blob.descriptor.digest),
                    blob.is_foreign(),
                )
            }
            _ => return Ok(()),
        };
        let route = session::Route {
            foreign,
            has_next: foreign || self.route.has_next(),
        };
        // After the failure's own line (the session logs it). EPROTO: that line already
        // says the server speaks plain HTTP, and how to allow it.
        let hint = (key == Key::Ping
            && f.tls_handshake
            && !route.has_next
            && f.error.errno() != libc::EPROTO)
            .then(|| src.endpoint.host.clone());
        let next = self.session.on_failure(key, &f, route, &what);
        if let (Some(host), Next::Fail(_)) = (hint, &next) {
            log::error!(
                "The TLS handshake with registry {host} failed: a registry that speaks plain HTTP must be marked 'insecure = true' in registries.conf, one that wants a client certificate needs it in certs.d or hosts.toml."
            );
        }
        match next {
            Next::Retry(delay) => self.schedule_retry(lp, key, delay),
            Next::Reauthorize => self.begin(lp, key),
            Next::NeedToken => self.begin(lp, Key::Token),
            Next::Wait => Ok(()),
            Next::NextSource if foreign => {
                if let (Key::Blob(b), Stage::Layers(l)) = (key, &mut self.stage) {
                    // The next source starts from scratch (the job truncates the spool).
                    l.blobs.next_source(b, &f.url);
                }
                self.begin(lp, key)
            }
            Next::NextSource => self.next_endpoint(lp, key),
            Next::Fail(e) => Err(e),
        }
    }

    /// Send `key` again after `delay`.
    pub(super) fn schedule_retry(
        &mut self,
        lp: &mut EventLoop<Self>,
        key: Key,
        delay: Duration,
    ) -> Result<()> {
        let timer = lp.add_timer_in(Clock::Monotonic, delay, move |lp, d: &mut Self, id, _| {
            d.timers.retain(|t| *t != id);
            if let Err(e) = d.retry(lp, key) {
                d.finish(lp, Err(e));
            }
            Ok(TimerAction::Drop)
        })?;
        self.timers.push(timer);
        Ok(())
    }

    /// The retry timer of `key` fired. A blob first hashes what its spool holds (on a task:
    /// the loop never waits on disk), then resumes after it.
    pub(super) fn retry(&mut self, lp: &mut EventLoop<Self>, key: Key) -> Result<()> {
        let (Key::Blob(b), Stage::Layers(l)) = (key, &mut self.stage) else {
            return self.begin(lp, key);
        };
        let Some(spool) = l.blobs.spool_to_resume(b) else {
            return self.begin(lp, key);
        };
        self.hash_spool(lp, b, spool)
    }

    /// Hash what blob `b`'s spool holds, on a task (the loop never waits on disk); then
    /// [`on_prefix_hashed`](Self::on_prefix_hashed).
    pub(super) fn hash_spool(
        &mut self,
        lp: &mut EventLoop<Self>,
        b: usize,
        spool: std::path::PathBuf,
    ) -> Result<()> {
        let Stage::Layers(l) = &mut self.stage else {
            return Ok(());
        };
        let task = lp.spawn_task(
            "oci-resume",
            move |cancel| blobs::hash_prefix(&spool, cancel),
            move |lp, d: &mut Self, result| d.on_prefix_hashed(lp, b, result),
        )?;
        l.blobs.set_prefix_task(b, task);
        Ok(())
    }

    pub(super) fn on_prefix_hashed(
        &mut self,
        lp: &mut EventLoop<Self>,
        b: usize,
        result: Result<Option<Prefix>>,
    ) {
        let Stage::Layers(l) = &mut self.stage else {
            return;
        };
        let r = match result.map(|prefix| l.blobs.resume_after(b, prefix)) {
            Ok(Hashed::Download) => self.begin(lp, Key::Blob(b)),
            // Verified without a download.
            Ok(Hashed::Complete) => self.on_blob(lp, b),
            Ok(Hashed::Claim) => self.claim_blob(lp, b),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            self.finish(lp, Err(e));
        }
    }
}

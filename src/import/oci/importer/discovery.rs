//! Finding the image: the ping, the first token, the manifest (or index, then the entry
//! for our platform) and the config, up to the start of the layers stage.

use super::{ConfigFetch, ManifestFetch, OciImport, Stage, CONFIG_MAX};
use crate::event::EventLoop;
use crate::import::job::ImportJob;
use crate::import::oci::config;
use crate::import::oci::digest::Digest;
use crate::import::oci::layers::{Layers, Plan};
use crate::import::oci::manifest::{self, Descriptor, Document, ImageManifest};
use crate::import::oci::request::{self, BodySlot, Key};
use crate::import::oci::session::{Grant, Next};
use crate::import::Importer;
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::format::format_bytes;

impl OciImport {
    // --- Authentication -------------------------------------------------------------------

    /// The ping answered: 200 (`challenges` is `None`) or 401 with these challenges.
    pub(super) fn on_ping(
        &mut self,
        lp: &mut EventLoop<Self>,
        challenges: Option<&[String]>,
    ) -> Result<()> {
        if !matches!(self.stage, Stage::Ping) {
            return Ok(());
        }
        let grant = match challenges {
            Some(headers) => match self
                .session
                .on_ping_challenge(headers, self.route.has_next())
            {
                Ok(grant) => grant,
                Err(Next::Fail(e)) => return Err(e),
                // The session moves on (it gives nothing else for a challenge).
                Err(_) => return self.next_endpoint(lp, Key::Ping),
            },
            // The registry lets anyone in.
            None => Grant::Ready,
        };
        match grant {
            Grant::Token => {
                self.stage = Stage::Auth;
                self.begin(lp, Key::Token)
            }
            Grant::Ready => self.fetch_manifest(lp, None),
        }
    }

    pub(super) fn on_token(&mut self, lp: &mut EventLoop<Self>, body: &[u8]) -> Result<()> {
        let waiters = self.session.on_token(body)?;
        if matches!(self.stage, Stage::Auth) {
            self.fetch_manifest(lp, None)?;
        }
        for key in waiters {
            self.begin(lp, key)?;
        }
        Ok(())
    }

    // --- Manifest and config --------------------------------------------------------------

    /// Enter the manifest stage: the reference's manifest, or the index `entry`'s.
    pub(super) fn fetch_manifest(
        &mut self,
        lp: &mut EventLoop<Self>,
        entry: Option<Descriptor>,
    ) -> Result<()> {
        self.stage = Stage::Manifest(ManifestFetch {
            entry,
            body: BodySlot::default(),
        });
        self.session.forget(Key::Manifest);
        self.begin(lp, Key::Manifest)
    }

    pub(super) fn on_manifest(&mut self, lp: &mut EventLoop<Self>, job: &ImportJob) -> Result<()> {
        let Stage::Manifest(fetch) = &self.stage else {
            return Ok(());
        };
        let body = request::take_body(&fetch.body);
        let entry = fetch.entry.clone();
        let digest = &body.digest;
        let (served_by, src) = self.route.current();
        let reference = &src.image.clone();
        let endpoint = src.endpoint.to_string();
        let what = match &entry {
            Some(entry) => format!("manifest {}", entry.digest),
            None => format!("manifest of '{reference}'"),
        };

        // The job verified it against the index entry or the digest the user asked for
        // (`request::manifest`); by tag, the digest the registry claims is checked here.
        let by_tag = entry.is_none() && reference.digest().is_none();
        let served = job
            .header("Docker-Content-Digest")
            .filter(|s| by_tag && s.starts_with("sha256:"));
        if let Some(served) = served {
            if served != digest.to_string() {
                return Err(log_error_errno!(
                    Error::new(libc::EBADMSG),
                    "Digest mismatch for {what}: the registry says {served}, the content is {digest}."
                ));
            }
        }

        let document = manifest::parse(job.header("Content-Type"), &body.bytes).map_err(|why| {
            log_error_errno!(Error::new(libc::EBADMSG), "Refusing {what}: {why}.")
        })?;
        log::info!("Fetched {what} from {endpoint}.");
        if entry.is_none() {
            // The image is found: its content comes from the first endpoint that serves it.
            self.route.choose_current();
            if self.route.current().0 != served_by {
                self.session = self.logins.session_for(&self.route.current().1.endpoint);
                log::info!("Using {} for the content.", self.route.current().1.endpoint);
            }
        }
        match document {
            Document::Index(entries) => {
                if entry.is_some() {
                    return Err(log_error_errno!(
                        Error::new(libc::EBADMSG),
                        "Refusing {what}: nested indexes are not supported."
                    ));
                }
                let platform = &self.req.platform;
                let chosen = manifest::select(&entries, platform).map_err(|why| {
                    log_error_errno!(
                        Error::new(libc::ENOENT),
                        "No image for {platform} in the index of '{reference}': {why}."
                    )
                })?;
                if chosen.size > manifest::MANIFEST_MAX {
                    return Err(log_error_errno!(
                        Error::new(libc::EFBIG),
                        "Manifest {} is larger than {}, refusing.",
                        chosen.digest,
                        format_bytes(manifest::MANIFEST_MAX)
                    ));
                }
                log::info!("Using manifest {} for {platform}.", chosen.digest);
                let chosen = chosen.clone();
                self.fetch_manifest(lp, Some(chosen))
            }
            Document::Image(m) => {
                log::info!("Manifest {digest} lists {} layers.", m.layers.len());
                let config = &m.config;
                if config.size > CONFIG_MAX {
                    return Err(log_error_errno!(
                        Error::new(libc::EFBIG),
                        "Image config {} is larger than {}, refusing.",
                        config.digest,
                        format_bytes(CONFIG_MAX)
                    ));
                }
                let from_index = entry.is_some();
                match config.data.clone() {
                    // Inline config (OCI 1.1 `data`): no request needed, the same check.
                    Some(data) => {
                        let digest = Digest::of(&data);
                        request::config_expectation(config)
                            .check(data.len() as u64, Some(digest.hex()))?;
                        self.use_config(lp, &m, from_index, data)
                    }
                    None => {
                        self.stage = Stage::Config(ConfigFetch {
                            manifest: m,
                            from_index,
                            body: BodySlot::default(),
                        });
                        self.begin(lp, Key::Config)
                    }
                }
            }
        }
    }

    pub(super) fn on_config(&mut self, lp: &mut EventLoop<Self>) -> Result<()> {
        let fetch = match self.stage.take() {
            Stage::Config(fetch) => fetch,
            other => {
                self.stage = other;
                return Ok(());
            }
        };
        // The job verified its size and digest (`request::config`).
        let body = request::take_body(&fetch.body);
        self.use_config(lp, &fetch.manifest, fetch.from_index, body.bytes)
    }

    /// Parse the (verified) config, then enter the layers stage: decide which layers to
    /// fetch, and start.
    pub(super) fn use_config(
        &mut self,
        lp: &mut EventLoop<Self>,
        manifest: &ImageManifest,
        from_index: bool,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let config = config::checked(
            &bytes,
            manifest,
            &self.req.platform,
            from_index,
            &self.req.reference,
        )?;
        let plan = Plan {
            image_root: &self.req.image_root,
            local: self.req.local.as_deref(),
            max_downloads: self.req.max_downloads,
            image: self.route.current().1.image.to_string(),
        };
        let mut layers = Layers::plan(plan, manifest, &config, bytes)?;
        layers.blobs.set_ranges(self.req.ranges);
        self.stage = Stage::Layers(Box::new(layers));
        self.report_progress();
        self.start_downloads(lp)?;
        self.lifecycle.start_progress_timer(lp)?;
        self.advance(lp)
    }
}

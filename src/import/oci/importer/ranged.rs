//! The importer's side of a blob fetched in parts ([`ranges`]): the parts and the follower
//! that hashes the prefix are started, a free connection takes the next part, the blob is
//! verified when the follower hashed all of it; a server that refuses ranges or a part
//! that cannot be fetched so sends the blob back to one stream, resumed after the prefix.

use super::{OciImport, Stage};
use crate::event::EventLoop;
use crate::import::oci::blobs::{self, Prefix};
use crate::import::oci::ranges::{self, PartEnd, RangedFetch};
use crate::import::oci::request::Key;
use crate::import::oci::session::Failure;
use crate::import::Importer;
use crate::log_error_errno;
use crate::util::error::{Error, Result};

impl OciImport {
    /// Begin fetching blob `b` in parts (instead of its one request): false if its spool
    /// cannot record a prefix (one stream then).
    pub(super) fn begin_ranged(&mut self, lp: &mut EventLoop<Self>, b: usize) -> Result<bool> {
        let Stage::Layers(l) = &mut self.stage else {
            return Ok(false);
        };
        let Some((path, spool, from)) = l.blobs.start_ranged(b)? else {
            return Ok(false);
        };
        let size = l.blobs.get(b).descriptor.size;
        let task = lp.spawn_task(
            "oci-hash",
            move |cancel| ranges::follow(&path, &spool, from, size, cancel),
            move |lp, d: &mut Self, result| d.on_ranged_hashed(lp, b, result),
        )?;
        if let Some(fetch) = l.blobs.ranged_mut(b) {
            fetch.set_follower(task);
        }
        self.sent_to.insert(Key::Blob(b), self.route.current().0);
        self.start_parts(lp, b)?;
        Ok(true)
    }

    /// Give blob `b`'s free connections their next parts.
    fn start_parts(&mut self, lp: &mut EventLoop<Self>, b: usize) -> Result<()> {
        loop {
            let Stage::Layers(l) = &mut self.stage else {
                return Ok(());
            };
            let Some(i) = l.blobs.ranged_mut(b).and_then(RangedFetch::next_part) else {
                return Ok(());
            };
            self.begin(lp, Key::Part(b, i))?;
        }
    }

    /// Part `i` of blob `b` completed.
    pub(super) fn on_part_done(
        &mut self,
        lp: &mut EventLoop<Self>,
        b: usize,
        i: usize,
    ) -> Result<()> {
        let Stage::Layers(l) = &mut self.stage else {
            return Ok(());
        };
        let Some(fetch) = l.blobs.ranged_mut(b) else {
            // The blob went back to one stream, or is verified.
            return Ok(());
        };
        match fetch.part_done(i) {
            PartEnd::Complete | PartEnd::Whole => self.start_parts(lp, b),
            PartEnd::Short => {
                log::info!(
                    "A part of layer {} ended early, fetching the rest in one stream.",
                    l.blobs.get(b).descriptor.digest
                );
                self.fall_back(b)?;
                self.retry(lp, Key::Blob(b))
            }
        }
    }

    /// Part `i` of blob `b` failed: `None` if that is dealt with here (a part stopped, the
    /// blob back to one stream), else the request and failure for the session to decide on
    /// (the part itself: retried, with a new token, at the next endpoint; or the blob's one
    /// stream, which failed).
    pub(super) fn on_part_failed(
        &mut self,
        lp: &mut EventLoop<Self>,
        b: usize,
        i: usize,
        f: Failure,
    ) -> Result<Option<(Key, Failure)>> {
        let Stage::Layers(l) = &mut self.stage else {
            return Ok(None);
        };
        let digest = l.blobs.get(b).descriptor.digest.clone();
        let Some(fetch) = l.blobs.ranged_mut(b) else {
            return Ok(None);
        };
        match fetch.whole_part() {
            Some(w) if w != i => {
                // Stopped: another part streams the whole blob.
                fetch.part_stopped(i);
                return Ok(None);
            }
            Some(_) => {
                // The one stream failed: retried as the blob's own request.
                self.fall_back(b)?;
                return Ok(Some((Key::Blob(b), f)));
            }
            None => {}
        }
        let refused = fetch.is_refused();
        // A range the server cannot serve (416, a wrong Content-Range): not in parts.
        let unusable =
            f.code == 416 || (f.code < 300 && f.error.errno() == libc::EPROTO && !f.tls_handshake);
        if !refused && !unusable {
            return Ok(Some((Key::Part(b, i), f)));
        }
        log::info!(
            "{} cannot serve layer {digest} in parts, fetching it in one stream.",
            f.url
        );
        self.fall_back(b)?;
        self.retry(lp, Key::Blob(b)).map(|()| None)
    }

    /// Blob `b` goes back to one stream: its parts' jobs stop, its spool is cut to the
    /// contiguous prefix (a retry hashes and resumes after it).
    fn fall_back(&mut self, b: usize) -> Result<()> {
        self.stop_parts(b);
        let Stage::Layers(l) = &mut self.stage else {
            return Ok(());
        };
        l.blobs.end_ranged(b, true).map(drop)
    }

    /// Drop the jobs of blob `b`'s parts (their workers are joined).
    fn stop_parts(&mut self, b: usize) {
        let Stage::Layers(l) = &mut self.stage else {
            return;
        };
        let Some(fetch) = l.blobs.ranged_mut(b) else {
            return;
        };
        for i in 0..fetch.part_count() {
            drop(self.jobs.remove(Key::Part(b, i)));
        }
    }

    /// The follower hashed all of blob `b`: it is verified if the digest checks out.
    fn on_ranged_hashed(&mut self, lp: &mut EventLoop<Self>, b: usize, result: Result<Prefix>) {
        let Stage::Layers(l) = &mut self.stage else {
            return;
        };
        if l.blobs.ranged_mut(b).is_none() {
            // Back to one stream: that stream's job verifies it.
            return;
        }
        let digest = l.blobs.get(b).descriptor.digest.clone();
        let r = result.and_then(|(_, hasher)| {
            let hex = ranges::hex(hasher);
            if hex != digest.hex() {
                return Err(log_error_errno!(
                    Error::new(libc::EBADMSG),
                    "{}",
                    blobs::digest_mismatch(&digest, &hex)
                ));
            }
            // All bytes are there: what parts still run have nothing left to add.
            self.stop_parts(b);
            if let Stage::Layers(l) = &mut self.stage {
                drop(l.blobs.end_ranged(b, false)?);
            }
            self.on_blob(lp, b)
        });
        if let Err(e) = r {
            self.finish(lp, Err(e));
        }
    }
}

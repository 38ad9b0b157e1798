//! pull-oci from files: `oci-archive:PATH[:REF]`, `docker-archive:PATH[:REF]` and
//! `oci:DIR[:REF]` as the source of `systemd-import pull-oci` (podman's and skopeo's
//! transport names; PATH ends at the first `:`, as theirs do).
//!
//! * `oci:DIR` is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`);
//!   `oci-archive:PATH` is the same in a tar archive ([`layout`]). REF picks the
//!   `index.json` entry whose `org.opencontainers.image.ref.name` it is; without REF the
//!   index must hold one image, or entries for several platforms (ours is chosen, as
//!   from a registry's index).
//! * `docker-archive:PATH` is `docker save`'s format: `manifest.json` naming each image's
//!   config and layer files ([`docker`]); REF is one of its `RepoTags`, or `@N` for its
//!   N-th image.
//!
//! Verified as from a registry, before anything is applied: every document and layer
//! against its digest (an OCI blob's name and its descriptor; a docker-archive file named
//! by its digest, and an uncompressed docker-archive layer against its DiffID), and every
//! layer's DiffID while it is applied. The rest is pull-oci's own: the platform choice
//! ([`super::manifest::select`]), the layer stack and its ChainID cache on btrfs
//! ([`super::layers`]), layer application ([`super::apply`]) and the local image with its
//! `.nspawn` and `.oci-config` files ([`super::finish`]).
//!
//! A tar archive is indexed once and its members are read by offset, nothing is extracted;
//! a compressed one is decompressed into a spool file first ([`container`]). The work is
//! one blocking step (importd's worker or the command line's task), off the loop thread.

mod container;
mod docker;
mod layout;

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use self::container::{Container, MemberReader};
use super::apply::{self, ApplyWork, LayerBlob};
use super::config;
use super::digest::Digest;
use super::layers::{Layers, Plan};
use super::manifest::ImageManifest;
use super::platform::Platform;
use crate::import::local::Progress;
use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// Largest manifest, index or config read from a source.
const DOCUMENT_MAX: u64 = 16 << 20;

/// Which format the source is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `oci:DIR`
    OciLayout,
    /// `oci-archive:PATH`
    OciArchive,
    /// `docker-archive:PATH`
    DockerArchive,
}

/// A source argument of pull-oci that names a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSource {
    pub transport: Transport,
    pub path: PathBuf,
    pub reference: Option<String>,
}

impl ArchiveSource {
    /// `oci-archive:PATH[:REF]`, `docker-archive:PATH[:REF]`, `oci:DIR[:REF]`; `None` for
    /// anything else (a registry reference).
    pub fn parse(text: &str) -> Option<ArchiveSource> {
        let (scheme, rest) = text.split_once(':')?;
        let transport = match scheme {
            "oci" => Transport::OciLayout,
            "oci-archive" => Transport::OciArchive,
            "docker-archive" => Transport::DockerArchive,
            _ => return None,
        };
        let (path, reference) = match rest.split_once(':') {
            Some((p, r)) => (p, (!r.is_empty()).then(|| r.to_string())),
            None => (rest, None),
        };
        Some(ArchiveSource {
            transport,
            path: PathBuf::from(path),
            reference,
        })
    }

    /// The default local name: a docker-archive REF's last path component without tag or
    /// digest, else the file's name without its suffixes.
    pub fn local_name(&self) -> String {
        let docker_ref = self
            .reference
            .as_deref()
            .filter(|r| self.transport == Transport::DockerArchive && !r.starts_with('@'));
        if let Some(r) = docker_ref {
            let last = r.rsplit('/').next().unwrap_or(r);
            let last = last.split(['@', ':']).next().unwrap_or(last);
            if !last.is_empty() {
                return last.to_string();
            }
        }
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        name.split('.').next().unwrap_or_default().to_string()
    }
}

/// What to import, validated by the command line.
#[derive(Debug)]
pub struct ArchiveRequest {
    pub source: ArchiveSource,
    pub local: Option<String>,
    pub image_root: PathBuf,
    pub force: bool,
    pub platform: Platform,
    pub layer_size_max: u64,
}

/// An image found in a source: its manifest (or, for a docker-archive, one made from
/// `manifest.json`), its verified config, and where each layer's blob is.
pub struct Resolved {
    /// The image as named in messages.
    pub image: String,
    pub manifest: ImageManifest,
    pub config: Vec<u8>,
    /// Chosen from an index for our platform.
    pub from_index: bool,
    /// Per layer, base first: the file, and the sha256 its content must have (`None`: a
    /// compressed docker-archive layer not named by its digest; its DiffID is checked).
    pub layers: Vec<(String, Option<Digest>)>,
}

/// A file of the source, or one line saying it is missing.
fn member(c: &Container, name: &str, what: &str) -> Result<MemberReader> {
    c.member(name)?.ok_or_else(|| {
        log_error_errno!(
            Error::new(libc::ENOENT),
            "{what} is missing from '{}' (no file '{name}').",
            c.path().display()
        )
    })
}

/// Read a document (index, manifest, config) whole, checked against `want` (its digest
/// and size) if given.
fn document(
    c: &Container,
    name: &str,
    what: &str,
    want: Option<(&Digest, u64)>,
) -> Result<Vec<u8>> {
    let reader = member(c, name, what)?;
    if reader.size() > DOCUMENT_MAX {
        return Err(log_error_errno!(
            Error::new(libc::EFBIG),
            "{what} is larger than {DOCUMENT_MAX} bytes, refusing."
        ));
    }
    let mut bytes = Vec::with_capacity(reader.size() as usize);
    reader
        .take(DOCUMENT_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to read {what}: {e}")
        })?;
    if let Some((digest, size)) = want {
        let got = Digest::of(&bytes);
        if &got != digest || bytes.len() as u64 != size {
            return Err(log_error_errno!(
                Error::new(libc::EBADMSG),
                "Digest mismatch for {what}: expected {digest} ({size} bytes), got {got} ({} bytes).",
                bytes.len()
            ));
        }
    }
    Ok(bytes)
}

/// Hash a layer's file, counting into `progress`; checked against the descriptor's size
/// (`size`) and `want`, in pull-oci's words.
fn verify_layer(
    mut reader: MemberReader,
    digest: &Digest,
    want: &Digest,
    size: u64,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<()> {
    if reader.size() != size {
        return Err(log_error_errno!(
            Error::new(libc::EBADMSG),
            "Layer {digest} size mismatch: expected {size} bytes, got {}.",
            reader.size()
        ));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::new(libc::ECANCELED));
        }
        let n = reader.read(&mut buf).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to read layer {digest}: {e}")
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        progress.add(n as u64);
    }
    let got = Digest::from_hasher(hasher);
    if &got != want {
        return Err(log_error_errno!(
            Error::new(libc::EBADMSG),
            "Layer {digest} digest mismatch: the content is sha256:{}.",
            got.hex()
        ));
    }
    Ok(())
}

/// The whole import; blocks (a task of the runner).
pub fn run(req: ArchiveRequest, cancel: &AtomicBool, progress: &Progress) -> Result<()> {
    // apply's threads take a shared flag: it follows `cancel` while the work runs.
    let flag = Arc::new(AtomicBool::new(false));
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                if cancel.load(Ordering::Acquire) {
                    flag.store(true, Ordering::Release);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let result = import(&req, &flag, progress);
        done.store(true, Ordering::Release);
        result
    })
}

fn import(req: &ArchiveRequest, cancel: &Arc<AtomicBool>, progress: &Progress) -> Result<()> {
    let source = &req.source;
    let _ = crate::util::fs::mkdir_parents(&req.image_root.join("x"), 0o755);
    let container = Container::open(&source.path, &req.image_root, progress, cancel)?;
    let resolved = match source.transport {
        Transport::OciLayout | Transport::OciArchive => {
            layout::resolve(&container, source.reference.as_deref(), &req.platform)?
        }
        Transport::DockerArchive => docker::resolve(&container, source.reference.as_deref())?,
    };
    let Resolved {
        image,
        manifest,
        config: config_bytes,
        from_index,
        layers: files,
    } = resolved;
    let config = config::checked(&config_bytes, &manifest, &req.platform, from_index, &image)?;
    let plan = Plan {
        image_root: &req.image_root,
        local: req.local.as_deref(),
        max_downloads: 1,
        image,
    };
    let mut layers = Layers::plan(plan, &manifest, &config, config_bytes)?;
    // Every file there before anything is applied.
    let todo: Vec<_> = files[layers.present..]
        .iter()
        .zip(&manifest.layers[layers.present..])
        .map(|((name, want), d)| {
            let what = format!("Layer {}", d.digest);
            member(&container, name, &what).map(|r| (name, want, d, r.size()))
        })
        .collect::<Result<_>>()?;
    progress.set_total(todo.iter().map(|t| t.3).sum::<u64>() * 2);
    for (i, (name, want, d, _)) in todo.into_iter().enumerate() {
        if let Some(want) = want {
            let reader = member(&container, name, "Layer")?;
            verify_layer(reader, &d.digest, want, d.size, progress, cancel)?;
        }
        let reader = member(&container, name, "Layer")?;
        let size = reader.size();
        let (target, subvolume) = layers.target(i);
        apply::apply(ApplyWork {
            layer: d.digest.clone(),
            diff_id: layers.todo[i].diff_id.clone(),
            input: LayerBlob::Verified(Box::new(reader)),
            spool_owned: None,
            target,
            size_max: req.layer_size_max,
            cancel: cancel.clone(),
        })?;
        progress.add(size);
        if let Some(subvolume) = subvolume {
            layers.keep_chain(i, subvolume)?;
        }
    }
    layers.into_finish(req.local.clone(), req.force).run(cancel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_as_skopeo_writes_them() {
        let s = ArchiveSource::parse("oci-archive:/tmp/a.tar").unwrap();
        assert_eq!(
            (s.transport, s.path, s.reference),
            (Transport::OciArchive, PathBuf::from("/tmp/a.tar"), None)
        );
        let s = ArchiveSource::parse("docker-archive:img.tar:example.com/x/busybox:1").unwrap();
        assert_eq!(s.transport, Transport::DockerArchive);
        assert_eq!(s.path, PathBuf::from("img.tar"));
        assert_eq!(s.reference.as_deref(), Some("example.com/x/busybox:1"));
        assert_eq!(s.local_name(), "busybox");
        let s = ArchiveSource::parse("oci:/srv/layout:v2").unwrap();
        assert_eq!(
            (s.transport, s.reference.as_deref(), s.local_name()),
            (Transport::OciLayout, Some("v2"), "layout".to_string())
        );
        assert_eq!(
            ArchiveSource::parse("oci:/srv/base.d")
                .unwrap()
                .local_name(),
            "base"
        );
        assert!(ArchiveSource::parse("docker.io/library/busybox:1").is_none());
        assert!(ArchiveSource::parse("busybox").is_none());
    }
}

//! The layers of an image, once its config is known: which are there already (on btrfs,
//! a chain subvolume `.oci-chain-<ChainID hex>` per applied layer stack, shared between
//! images), which blobs must be downloaded ([`BlobQueue`]), where each layer is applied
//! ([`Storage`], [`Target`]) and how an applied one is kept.
//!
//! Layers are applied one at a time, base first, into one tree (a temporary name next to
//! the local image) that becomes the local image; the importer runs each application as
//! a task and asks [`Layers`] what comes next. On btrfs the tree is a subvolume (a writable
//! snapshot of the highest chain already present, if any) and each applied layer leaves a
//! read-only snapshot of it as its chain: one snapshot, so one transaction commit, per
//! layer (applying each layer into a writable snapshot of the one below and making it
//! read-only afterwards took two), and the local image is the tree itself, not one more
//! snapshot of the top chain.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::apply::{Make, Target};
use super::blobs::BlobQueue;
use super::config::{ExecConfig, ImageConfig};
use super::digest::Digest;
use super::finish::{Finish, Source};
use super::manifest::{Descriptor, ImageManifest};
use crate::event::TaskHandle;
use crate::import::store::TempPath;
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::progress::{LayerProgress, LayerState};
use crate::util::{btrfs, fs};

/// Name prefix of the cached layer subvolumes (distinct from systemd v260's
/// `.oci-sha256:<hex>` unflattened layers).
const CHAIN_PREFIX: &str = ".oci-chain-";

/// Where the applied layers go: one temporary tree, made by the first layer applied; all
/// are applied into it in turn, and it becomes the local image.
pub enum Storage {
    /// A subvolume, and one read-only snapshot of it per layer chain, shared between
    /// images; `top` is the ChainID of the whole image.
    BtrfsChains { top: Digest, tree: TempPath },
    /// A directory.
    Directory(TempPath),
}

/// A layer to apply.
pub struct Layer {
    pub digest: Digest,
    pub diff_id: Digest,
    /// Its blob in the queue.
    pub blob: usize,
}

/// The layers stage of a pull: the image's layers and blobs, and how far they got. Field
/// order is drop order: the running apply task stops (and is joined) before the blobs'
/// spool files and the image directory are removed.
pub struct Layers {
    /// Applies layer `next`; `None` between two layers.
    pub applying: Option<TaskHandle>,
    pub blobs: BlobQueue,
    pub storage: Storage,
    /// ChainIDs of all the image's layers, base first.
    chains: Vec<Digest>,
    /// How many layers at the bottom were there already (btrfs); none are downloaded.
    pub present: usize,
    /// The layers to apply, base first: layer `present + i` of the image is `todo[i]`.
    pub todo: Vec<Layer>,
    /// The next layer of `todo` to apply.
    pub next: usize,
    /// The config as served and its execution settings, for the settings files.
    pub config: Vec<u8>,
    pub exec: ExecConfig,
    image_root: PathBuf,
}

/// What the layer stage needs to know, from the request.
pub struct Plan<'a> {
    pub image_root: &'a Path,
    /// The local image's name, if any (for the temporary directory's name).
    pub local: Option<&'a str>,
    pub max_downloads: usize,
    /// For the log line.
    pub image: String,
}

impl Layers {
    /// Each layer's state for the extended progress fields, base first: the layers found
    /// present and those applied are done, the one being applied is applying once its
    /// blob is complete, a blob still arriving is downloading (`written` says how far),
    /// everything else waits.
    pub fn progress(&self, written: impl Fn(usize) -> u64) -> Vec<LayerProgress> {
        let count = u32::try_from(self.present + self.todo.len()).unwrap_or(u32::MAX);
        let index = |i: usize| u32::try_from(i + 1).unwrap_or(u32::MAX);
        let present = (0..self.present).map(|i| LayerProgress {
            index: index(i),
            count,
            state: LayerState::Done,
            done: 0,
            total: None,
        });
        let todo = self.todo.iter().enumerate().map(|(i, layer)| {
            let size = self.blobs.get(layer.blob).descriptor.size;
            let (state, done) = if i < self.next {
                (LayerState::Done, size)
            } else if !self.blobs.is_started(layer.blob) {
                (LayerState::Waiting, 0)
            } else if !self.blobs.is_verified(layer.blob) {
                (LayerState::Downloading, written(layer.blob).min(size))
            } else if i == self.next && self.applying.is_some() {
                (LayerState::Applying, size)
            } else {
                (LayerState::Waiting, size)
            };
            LayerProgress {
                index: index(self.present + i),
                count,
                state,
                done,
                total: Some(size),
            }
        });
        present.chain(todo).collect()
    }

    /// Compute the ChainIDs, find the layers already present (btrfs) and queue the blobs
    /// of the others. `manifest` and `config` are the image's, already checked to list as
    /// many layers as DiffIDs.
    pub fn plan(
        p: Plan<'_>,
        manifest: &ImageManifest,
        config: &ImageConfig,
        config_bytes: Vec<u8>,
    ) -> Result<Layers> {
        let root = p.image_root;
        let root_fd = fs::open_dir(root)
            .map_err(|e| log_error_errno!(e.clone(), "Failed to open {}: {}", root.display(), e))?;
        let chains = Digest::chain_ids(&config.diff_ids);
        let Some(top) = chains.last().cloned() else {
            return Err(log_error_errno!(
                Error::new(libc::EBADMSG),
                "Image {} has no layers, refusing.",
                p.image
            ));
        };
        let tree = TempPath::next_to(&root.join(p.local.unwrap_or("oci-image")));
        let (storage, present) = if btrfs::is_fs_btrfs(root_fd.as_fd())? {
            // The highest existing chain is the base we start from.
            let present = chains
                .iter()
                .rposition(|c| chain_path(root, c).is_dir())
                .map_or(0, |i| i + 1);
            (Storage::BtrfsChains { top, tree }, present)
        } else {
            (Storage::Directory(tree), 0)
        };
        let mut blobs = BlobQueue::new(p.max_downloads);
        let mut todo = Vec::with_capacity(manifest.layers.len() - present);
        for (i, d) in manifest.layers.iter().enumerate() {
            if i < present {
                log::info!("Layer {} already exists, skipping.", d.digest);
                continue;
            }
            todo.push(layer(d, &config.diff_ids[i], blobs.add(d, root)));
        }
        log::info!(
            "Image {} has {} layers, {} already present.",
            p.image,
            chains.len(),
            present
        );
        Ok(Layers {
            applying: None,
            blobs,
            storage,
            chains,
            present,
            todo,
            next: 0,
            config: config_bytes,
            exec: config.exec.clone().unwrap_or_default(),
            image_root: root.to_path_buf(),
        })
    }

    /// Layers in the image.
    pub fn total(&self) -> usize {
        self.chains.len()
    }

    /// Where `todo[i]` is applied: the tree (made by the first layer), and on btrfs a
    /// temporary name for the layer's chain snapshot (returned too: it is renamed once the
    /// layer checked out).
    pub fn target(&self, i: usize) -> (Target, Option<TempPath>) {
        let n = self.present + i;
        let make = |chains: bool| match i {
            0 if chains && n > 0 => Make::SnapshotOf(self.chain_path(n - 1)),
            0 => Make::New,
            _ => Make::Existing,
        };
        match &self.storage {
            Storage::BtrfsChains { tree, .. } => {
                let temp = TempPath::new(fs::tempfn_random(&self.chain_path(n)));
                let target = Target {
                    tree: tree.path().to_path_buf(),
                    make: make(true),
                    chain: Some(temp.path().to_path_buf()),
                };
                (target, Some(temp))
            }
            Storage::Directory(tree) => {
                let target = Target {
                    tree: tree.path().to_path_buf(),
                    make: make(false),
                    chain: None,
                };
                (target, None)
            }
        }
    }

    /// `todo[i]` was applied and its chain snapshot made as `subvolume` (btrfs): move it
    /// into place under its chain's name. If another pull made the same (verified) chain meanwhile, theirs is used and
    /// ours removed.
    pub fn keep_chain(&self, i: usize, subvolume: TempPath) -> Result<()> {
        let chain = self.chain_path(self.present + i);
        match fs::rename_noreplace(subvolume.path(), &chain) {
            Ok(()) => {
                subvolume.keep();
                Ok(())
            }
            Err(e) if e.errno() == libc::EEXIST => Ok(()),
            Err(e) => Err(log_error_errno!(
                e.clone(),
                "Failed to move layer into place as {}: {}",
                chain.display(),
                e
            )),
        }
    }

    /// The finishing work, once every layer is applied: the local image `local` (if any)
    /// from the tree, or from the top chain when every layer was there already, and the
    /// settings files.
    pub fn into_finish(self, local: Option<String>, force: bool) -> Finish {
        let source = match self.storage {
            Storage::BtrfsChains { top, .. } if self.todo.is_empty() => {
                Source::Chain(chain_path(&self.image_root, &top))
            }
            Storage::BtrfsChains { tree, .. } => Source::Tree { tree, cached: true },
            Storage::Directory(tree) => Source::Tree {
                tree,
                cached: false,
            },
        };
        Finish {
            source,
            image_root: self.image_root,
            local,
            force,
            exec: self.exec,
            config: self.config,
        }
    }

    /// The chain subvolume of layer `n` of the image.
    fn chain_path(&self, n: usize) -> PathBuf {
        chain_path(&self.image_root, &self.chains[n])
    }
}

fn layer(d: &Descriptor, diff_id: &Digest, blob: usize) -> Layer {
    Layer {
        digest: d.digest.clone(),
        diff_id: diff_id.clone(),
        blob,
    }
}

fn chain_path(root: &Path, chain: &Digest) -> PathBuf {
    root.join(format!("{CHAIN_PREFIX}{}", chain.hex()))
}

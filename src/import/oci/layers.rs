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
//!
//! Two processes pulling images that share layers make each chain once: the one applying
//! a layer holds a lock on its chain (`.#oci-chain-<hex>.partial`, a [`Partial`] used
//! only as a lock) until the chain has its name; the other waits for that lock instead of
//! applying the layer, then takes the chain as a re-pull does (the tree starts over as a
//! writable snapshot of it). A chain that appears meanwhile is taken the same way.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::apply::{Make, Target};
use super::blobs::BlobQueue;
use super::config::{ExecConfig, ImageConfig};
use super::digest::Digest;
use super::finish::{Finish, Source};
use super::manifest::{Descriptor, ImageManifest};
use crate::event::TaskHandle;
use crate::import::store::{self, Claim, Partial, TempPath};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::progress::{LayerProgress, LayerState};
use crate::util::{btrfs, fs};

/// Name prefix of the cached layer subvolumes (distinct from systemd v260's
/// `.oci-sha256:<hex>` unflattened layers).
const CHAIN_PREFIX: &str = ".oci-chain-";
/// What the lock of a chain being made is named after (`.#oci-chain-<hex>.partial`).
const CHAIN_LOCK_PREFIX: &str = "oci-chain-";

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
    /// The layer of `todo` whose application makes the tree (the tree is made from
    /// `base`); `todo.len()` when no layer is applied into it (the top chain is used).
    first: usize,
    /// The chain (index into `chains`) the tree is a writable snapshot of, if any (btrfs).
    base: Option<usize>,
    /// btrfs: the lock on the chain the layer being applied makes, held from before its
    /// application until the chain has its name; another process wanting that chain waits
    /// for it and takes it instead of applying the layer again.
    making: Option<Partial>,
    /// The layer whose chain another process is making, once its wait was logged.
    waiting: Option<usize>,
    /// The config as served and its execution settings, for the settings files.
    pub config: Vec<u8>,
    pub exec: ExecConfig,
    image_root: PathBuf,
    /// The final name the tree's temporary name is made from.
    tree_for: PathBuf,
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
        let tree_for = root.join(p.local.unwrap_or("oci-image"));
        let tree = TempPath::next_to(&tree_for);
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
            first: 0,
            base: present.checked_sub(1),
            making: None,
            waiting: None,
            config: config_bytes,
            exec: config.exec.clone().unwrap_or_default(),
            image_root: root.to_path_buf(),
            tree_for,
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
        let make = |chains: bool| match self.base {
            _ if i != self.first => Make::Existing,
            Some(base) if chains => Make::SnapshotOf(self.chain_path(base)),
            _ => Make::New,
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
    pub fn keep_chain(&mut self, i: usize, subvolume: TempPath) -> Result<()> {
        let chain = self.chain_path(self.present + i);
        // Whoever waits for it finds it under its name once the lock is released.
        let _making = self.making.take();
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
            // Nothing applied into the tree: every layer is in a chain.
            Storage::BtrfsChains { top, .. } if self.first == self.todo.len() => {
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

    /// btrfs: the highest chain at or above the next layer that another process made
    /// meanwhile (the chains below the next layer are there already), if any.
    pub fn chain_made_elsewhere(&self) -> Option<usize> {
        if !matches!(self.storage, Storage::BtrfsChains { .. }) {
            return None;
        }
        let from = self.present + self.next;
        (from..self.chains.len())
            .rev()
            .find(|&n| self.chain_path(n).is_dir())
    }

    /// Take chain `n`, made by another process, as the state after layer `n`: the layers
    /// up to it are not applied here, the tree is made again as a writable snapshot of it
    /// (or, when it is the top, the local image is).
    pub fn take_chain(&mut self, n: usize) {
        debug_assert!(self.applying.is_none() && n >= self.present + self.next);
        let Storage::BtrfsChains { tree, .. } = &mut self.storage else {
            return;
        };
        for layer in &self.todo[self.next..=n - self.present] {
            log::info!(
                "Layer {} was applied by another process meanwhile, using it.",
                layer.digest
            );
        }
        // What was applied here so far goes: the chain holds it.
        *tree = TempPath::next_to(&self.tree_for);
        self.next = n - self.present + 1;
        self.first = self.next;
        self.base = Some(n);
        self.waiting = None;
    }

    /// Before applying `todo[i]` (btrfs): lock the chain it makes, so that another process
    /// pulling the same layers waits for it instead of applying the layer too. `Busy`:
    /// another process is making it; `Made`: it was made meanwhile (its lock released).
    pub fn claim_chain(&mut self, i: usize) -> Result<ChainClaim> {
        if !matches!(self.storage, Storage::BtrfsChains { .. }) {
            return Ok(ChainClaim::Ours);
        }
        let n = self.present + i;
        let lock = store::partial_path(
            &self.image_root,
            &format!("{CHAIN_LOCK_PREFIX}{}", self.chains[n].hex()),
        );
        match Partial::claim(&lock)? {
            Claim::Busy => {
                if self.waiting != Some(i) {
                    log::info!(
                        "Waiting for another process applying layer {}.",
                        self.todo[i].digest
                    );
                    self.waiting = Some(i);
                }
                Ok(ChainClaim::Busy)
            }
            // Made while we looked: the lock goes (removed unless another holds it).
            Claim::Got(_) if self.chain_path(n).is_dir() => Ok(ChainClaim::Made(n)),
            Claim::Got(p) => {
                self.making = Some(p);
                Ok(ChainClaim::Ours)
            }
        }
    }

    /// The chain subvolume of layer `n` of the image.
    fn chain_path(&self, n: usize) -> PathBuf {
        chain_path(&self.image_root, &self.chains[n])
    }
}

/// What [`Layers::claim_chain`] found.
pub enum ChainClaim {
    /// Locked: this process applies the layer and makes its chain.
    Ours,
    /// Another process is making it: wait.
    Busy,
    /// It is there (made by another process meanwhile): take it.
    Made(usize),
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

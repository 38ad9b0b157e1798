//! Installing a pulled image (run on a task once every layer is applied): the local image
//! under its name (the tree the layers were applied into, moved into place; on btrfs, when
//! every layer was cached already, a writable snapshot of the top layer's chain
//! subvolume), then `<local>.nspawn` (the config's execution settings) and
//! `<local>.oci-config` (the config as served).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use super::config::{self, ExecConfig};
use crate::import::store::{self, LocalImage, TempPath};
use crate::log_error_errno;
use crate::util::error::Result;

/// What the local image is made from.
pub enum Source {
    /// btrfs: the top layer's chain subvolume, snapshotted.
    Chain(PathBuf),
    /// The tree the layers were applied into, moved into place; `cached` when a chain
    /// subvolume keeps each layer (btrfs).
    Tree { tree: TempPath, cached: bool },
}

/// The work of the finishing task.
pub struct Finish {
    pub source: Source,
    pub image_root: PathBuf,
    /// `None`: no local image (the layers stay cached on btrfs).
    pub local: Option<String>,
    pub force: bool,
    pub exec: ExecConfig,
    /// The config as served.
    pub config: Vec<u8>,
}

impl Finish {
    /// Make the local image and its settings files; errors are logged. A local copy stops
    /// early when `cancel` turns true.
    pub fn run(self, cancel: &AtomicBool) -> Result<()> {
        let Finish {
            source,
            image_root: root,
            local,
            force,
            exec,
            config,
        } = self;
        let Some(local) = local else {
            // No local image: the layers stay cached on btrfs; a plain directory goes.
            if let Source::Tree { tree, cached } = source {
                if !cached {
                    log::info!("No local image name given and no layer cache on this file system, not keeping the image.");
                }
                drop(tree);
            }
            return Ok(());
        };
        match source {
            Source::Chain(top) => store::copy_tree(&top, &root, &local, force, Some(cancel))?,
            Source::Tree { tree, .. } => LocalImage::from_temp(tree, &root, &local, force)
                .install()
                .map_err(|e| log_error_errno!(e.clone(), "Failed to create local image: {}", e))?,
        }
        let nspawn = root.join(format!("{local}.nspawn"));
        store::write_atomically(&nspawn, config::nspawn_settings(&exec).as_bytes())?;
        log::info!(
            "systemd-nspawn settings file written to '{}'.",
            nspawn.display()
        );
        let oci_config = root.join(format!("{local}.oci-config"));
        store::write_atomically(&oci_config, &config)?;
        log::info!("OCI config written to '{}'.", oci_config.display());
        Ok(())
    }
}

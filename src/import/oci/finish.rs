//! Installing a pulled image (run on a task once every layer is applied): the local image
//! under its name (a writable snapshot of the top layer's chain subvolume on btrfs, else the
//! directory the layers were applied into, moved into place), then `<local>.nspawn` (the
//! config's execution settings) and `<local>.oci-config` (the config as served).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::config::{self, ExecConfig};
use crate::import::common::{self, TempPath};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::fs;

/// What the local image is made from.
pub enum Source {
    /// btrfs: the top layer's chain subvolume, snapshotted.
    Chain(PathBuf),
    /// The directory the layers were applied into, moved into place.
    Directory(TempPath),
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
            if let Source::Directory(temp) = source {
                log::info!("No local image name given and no layer cache on this file system, not keeping the image.");
                drop(temp);
            }
            return Ok(());
        };
        match source {
            Source::Chain(top) => {
                common::make_local_copy(&top, &root, &local, force, Some(cancel))?
            }
            Source::Directory(temp) => {
                let target = root.join(&local);
                let installed = if force {
                    common::install_replacing(temp.path(), &target)
                } else {
                    fs::rename_noreplace(temp.path(), &target)
                };
                installed.map_err(|e| {
                    log_error_errno!(e.clone(), "Failed to create local image: {}", e)
                })?;
                temp.keep();
                log::info!("Created new local image '{local}'.");
            }
        }
        let nspawn = root.join(format!("{local}.nspawn"));
        write_atomically(&nspawn, config::nspawn_settings(&exec).as_bytes())?;
        log::info!(
            "systemd-nspawn settings file written to '{}'.",
            nspawn.display()
        );
        let oci_config = root.join(format!("{local}.oci-config"));
        write_atomically(&oci_config, &config)?;
        log::info!("OCI config written to '{}'.", oci_config.display());
        Ok(())
    }
}

/// Write `path` through a temporary file and a rename, replacing what was there.
fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let temp = TempPath::next_to(path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp.path())
        .and_then(|mut f| std::io::Write::write_all(&mut f, content))
        .and_then(|()| std::fs::rename(temp.path(), path));
    written.map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to write {}: {}", path.display(), e)
    })?;
    temp.keep();
    Ok(())
}

//! systemd-pull's side files on disk (modern-systemd.md §1.6): a fetched `.nspawn`,
//! `.roothash`, `.roothash.p7s` or `.verity` is kept in the cache next to the cache
//! entry (`<entry><suffix>`, named after the main download's URL and ETag, read-only like
//! the entry), and installed next to the local image (`<root>/<local><suffix>`): copied
//! from the cache (mode 0664 for tar's settings, 0644 for raw's files, whatever the
//! umask), or, with `--keep-download=no`, written there directly. An existing one is
//! kept unless `--force` ("already exists, not replacing").

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::downloads::Side;
use crate::import::store::TempPath;
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::fs;

/// Which importer's messages and modes the local side files get.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Owner {
    Tar,
    Raw,
}

impl Owner {
    fn local_mode(self) -> u32 {
        match self {
            Owner::Tar => 0o664,
            Owner::Raw => 0o644,
        }
    }
}

/// `<path><suffix>`.
pub fn with_suffix(path: &Path, side: Side) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(side.suffix());
    PathBuf::from(s)
}

/// Write `content` to `path` through a temporary file with `mode` (exactly), replacing
/// what is there only with `replace`. EEXIST when it exists and may not be replaced.
fn write_file(path: &Path, content: &[u8], mode: u32, replace: bool) -> Result<()> {
    let temp = TempPath::next_to(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temp.path())?;
    file.write_all(content)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    drop(file);
    if replace {
        std::fs::rename(temp.path(), path)?;
    } else {
        fs::rename_noreplace(temp.path(), path)?;
    }
    temp.keep();
    Ok(())
}

/// Keep the fetched side files next to the cache entry `entry`, read-only (0444) when
/// `read_only`, else writable (0644).
pub fn cache(entry: &Path, files: &[(Side, Vec<u8>)], read_only: bool) -> Result<()> {
    let mode = if read_only { 0o444 } else { 0o644 };
    for (side, content) in files {
        let path = with_suffix(entry, *side);
        write_file(&path, content, mode, true).map_err(|e| {
            log_error_errno!(
                e.clone(),
                "Failed to move '{}' into place: {}",
                path.display(),
                e
            )
        })?;
    }
    Ok(())
}

/// Install side file `side` next to the local image `<root>/<local>`, from `content` or,
/// when `None`, from the cache entry `entry`'s copy (skipped silently when there is
/// none). Failures are warnings: the image is there already.
pub fn install(
    owner: Owner,
    side: Side,
    entry: &Path,
    content: Option<&[u8]>,
    root: &Path,
    local: &str,
    force: bool,
) {
    let target = root.join(format!("{local}{}", side.suffix()));
    let content = match content {
        Some(c) => c.to_vec(),
        None => match std::fs::read(with_suffix(entry, side)) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match owner {
                    Owner::Tar => {
                        log::debug!("Skipping creation of settings file, since none was found.")
                    }
                    Owner::Raw => {
                        log::debug!("Skipping creation of auxiliary file, since none was found.")
                    }
                }
                return;
            }
            Err(e) => return warn_failed(owner, &target, &Error::from(e)),
        },
    };
    match write_file(&target, &content, owner.local_mode(), force) {
        Ok(()) => match owner {
            Owner::Tar => log::info!("Created new settings file {}.", target.display()),
            Owner::Raw => log::info!("Created new file {}.", target.display()),
        },
        Err(e) if e.errno() == libc::EEXIST => match owner {
            Owner::Tar => log::warn!(
                "Settings file {} already exists, not replacing.",
                target.display()
            ),
            Owner::Raw => log::warn!("File {} already exists, not replacing.", target.display()),
        },
        Err(e) => warn_failed(owner, &target, &e),
    }
}

fn warn_failed(owner: Owner, target: &Path, e: &Error) {
    match owner {
        Owner::Tar => log::warn!(
            "Failed to copy settings files {}, ignoring: {}",
            target.display(),
            e
        ),
        Owner::Raw => log::warn!("Failed to copy file {}, ignoring: {}", target.display(), e),
    }
}

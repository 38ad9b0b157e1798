//! systemd-pull's side files ([`Side`]: which there are, their names and messages) and
//! on disk (modern-systemd.md §1.6): a fetched `.nspawn`,
//! `.roothash`, `.roothash.p7s` or `.verity` is kept in the cache next to the cache
//! entry (`<entry><suffix>`, named after the main download's URL and ETag, read-only like
//! the entry), and installed next to the local image (`<root>/<local><suffix>`): copied
//! from the cache (mode 0664 for tar's settings, 0644 for raw's files, whatever the
//! umask), or, with `--keep-download=no`, written there directly. An existing one is
//! kept unless `--force` ("already exists, not replacing").

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{SideFiles, COMPANION_SHARE};
use crate::import::store::TempPath;
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::{fs, sys};

/// systemd-pull's side files, downloaded next to the image if present.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    Settings,
    RootHash,
    RootHashSignature,
    Verity,
}

impl Side {
    pub const ALL: [Side; 4] = [
        Side::Settings,
        Side::RootHash,
        Side::RootHashSignature,
        Side::Verity,
    ];

    /// The suffix of its name, on the server, in the cache and next to the local image.
    pub fn suffix(self) -> &'static str {
        match self {
            Side::Settings => ".nspawn",
            Side::RootHash => ".roothash",
            Side::RootHashSignature => ".roothash.p7s",
            Side::Verity => ".verity",
        }
    }

    /// Whether `files` asks for it.
    pub(super) fn wanted(self, files: &SideFiles) -> bool {
        match self {
            Side::Settings => files.settings,
            Side::RootHash => files.roothash,
            Side::RootHashSignature => files.roothash_signature,
            Side::Verity => files.verity,
        }
    }

    /// Its share of the download progress (v252).
    pub(super) fn share(self) -> u32 {
        match self {
            Side::Verity => 10,
            _ => COMPANION_SHARE,
        }
    }

    /// What is logged when it could not be fetched.
    pub(super) fn absent_message(self) -> &'static str {
        match self {
            Side::Settings => "Settings file could not be retrieved, proceeding without.",
            Side::RootHash => "Root hash file could not be retrieved, proceeding without.",
            Side::RootHashSignature => {
                "Root hash signature file could not be retrieved, proceeding without."
            }
            Side::Verity => "Verity integrity file could not be retrieved, proceeding without.",
        }
    }
}

/// Extended attributes, name and value.
type Xattrs = Vec<(CString, Vec<u8>)>;

/// A side file as downloaded: its content and where it came from (kept as the
/// `user.source_url` and `user.source_etag` xattrs, as systemd's jobs write them).
#[derive(Clone, Debug)]
pub struct Fetched {
    pub side: Side,
    pub content: Vec<u8>,
    pub url: String,
    pub etag: Option<String>,
}

impl Fetched {
    fn xattrs(&self) -> Xattrs {
        let mut x = Vec::new();
        if let Some(etag) = &self.etag {
            x.push((c"user.source_etag".to_owned(), etag.as_bytes().to_vec()));
        }
        x.push((c"user.source_url".to_owned(), self.url.as_bytes().to_vec()));
        x
    }
}

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

/// Write `content` to `path` through a temporary file with `mode` (exactly) and the
/// `xattrs` (best effort), replacing what is there only with `replace`. EEXIST when it
/// exists and may not be replaced.
fn write_file(
    path: &Path,
    content: &[u8],
    xattrs: &[(CString, Vec<u8>)],
    mode: u32,
    replace: bool,
) -> Result<()> {
    let temp = TempPath::next_to(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temp.path())?;
    file.write_all(content)?;
    for (key, value) in xattrs {
        let _ = sys::fsetxattr(file.as_fd(), key, value);
    }
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
pub fn cache(entry: &Path, files: &[Fetched], read_only: bool) -> Result<()> {
    let mode = if read_only { 0o444 } else { 0o644 };
    for f in files {
        let path = with_suffix(entry, f.side);
        write_file(&path, &f.content, &f.xattrs(), mode, true).map_err(|e| {
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
    fetched: Option<&Fetched>,
    root: &Path,
    local: &str,
    force: bool,
) {
    let target = root.join(format!("{local}{}", side.suffix()));
    let (content, xattrs) = match fetched {
        Some(f) => (f.content.clone(), f.xattrs()),
        None => match read_with_xattrs(&with_suffix(entry, side)) {
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
    match write_file(&target, &content, &xattrs, owner.local_mode(), force) {
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

/// A cached side file's content and xattrs.
fn read_with_xattrs(path: &Path) -> std::io::Result<(Vec<u8>, Xattrs)> {
    let file = std::fs::File::open(path)?;
    let xattrs = fs::read_xattrs(file.as_fd()).unwrap_or_default();
    let content = std::fs::read(path)?;
    Ok((content, xattrs))
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

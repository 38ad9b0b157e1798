//! Creating directories: `mkdir -p` and systemd's `mkdir_parents`.

use std::path::Path;

use nix::errno::Errno;
use nix::sys::stat::Mode;

use crate::util::error::{Error, Result};

/// `mkdir -p path` with `mode` for every directory created. An existing directory (or
/// symlink to one) is fine; an existing non-directory gives ENOTDIR.
pub fn mkdir_p(path: &Path, mode: u32) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Ok(());
    }
    let mode = Mode::from_bits_truncate(mode);
    match nix::unistd::mkdir(path, mode) {
        Ok(()) => return Ok(()),
        Err(Errno::EEXIST) => return require_directory(path),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(parent) = path.parent() {
        mkdir_p(parent, mode.bits())?;
    }
    match nix::unistd::mkdir(path, mode) {
        Ok(()) => Ok(()),
        // Created by someone else meanwhile.
        Err(Errno::EEXIST) => require_directory(path),
        Err(e) => Err(e.into()),
    }
}

fn require_directory(path: &Path) -> Result<()> {
    if nix::sys::stat::stat(path)?.st_mode & libc::S_IFMT == libc::S_IFDIR {
        Ok(())
    } else {
        Err(Error::new(libc::ENOTDIR))
    }
}

/// Create the parent directories of `path` (not `path` itself), like systemd's
/// `mkdir_parents` (the importers use mode 0700).
pub fn mkdir_parents(path: &Path, mode: u32) -> Result<()> {
    match path.parent() {
        Some(parent) => mkdir_p(parent, mode),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn mkdir_parents_creates_only_the_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("a/b/c/leaf");
        mkdir_parents(&target, 0o700).unwrap();
        let meta = std::fs::metadata(tmp.path().join("a/b/c")).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        assert!(!target.exists());
        // Existing parents are fine.
        mkdir_parents(&target, 0o700).unwrap();
        // A file in the way is ENOTDIR.
        std::fs::write(tmp.path().join("file"), b"").unwrap();
        let err = mkdir_parents(&tmp.path().join("file/x/y"), 0o700).unwrap_err();
        assert_eq!(err.errno(), libc::ENOTDIR);
        let err = mkdir_parents(&tmp.path().join("file/y"), 0o700).unwrap_err();
        assert_eq!(err.errno(), libc::ENOTDIR);
    }
}

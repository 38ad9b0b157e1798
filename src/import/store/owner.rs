//! Who owns the temporaries of an image root, so that what a killed process left behind
//! (`kill -9`, a power cut, the OOM killer) is removed and the work of a running one is
//! never touched.
//!
//! Every pull holds an owner lock for its whole run: the file `.#owner-<token>.lock` in
//! the image root, `flock(LOCK_EX)`ed, where the token is the one that ends every
//! temporary name the process makes (`util::fs::tempfn_random`). The lock file is made
//! under a temporary name, locked, and only then renamed into place, so it is locked
//! from the moment it can be seen. When a pull starts it sweeps the root: a `.#` entry
//! whose owner's lock is missing or can be taken (the owner is gone; a lock dies with its
//! process) is removed, with a debug line naming it; one whose owner's lock is held by
//! another process is left alone.
//!
//! A pull (or local import) to a local name also holds the name's lock,
//! `.#local-<name>.lock` ([`LocalLock`]), from before it fetches anything until it ends:
//! a second process writing the same name fails at once instead of downloading
//! everything and then finding the name taken. Entries with names of their own ([`Sweep::keep`]:
//! resumable partial downloads, guarded by locks of their own) are kept for the pull
//! that resumes them, unless nobody holds them and they are older than the retention
//! (`partial::expire`).

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::util::error::{Error, Result};
use crate::util::fs;
use crate::{log_debug_errno, log_error_errno};

const LOCK_PREFIX: &str = ".#owner-";
const LOCK_SUFFIX: &str = ".lock";
const LOCAL_PREFIX: &str = ".#local-";

/// This process's claim on a local image name in an image root. Dropped, the lock file
/// is removed (still locked: whoever takes a lock checks the name still leads to it).
#[derive(Debug)]
pub struct LocalLock {
    path: PathBuf,
    lock: Flock<File>,
}

impl LocalLock {
    /// Take the lock of local image `name` in `root` (which exists), without waiting: if
    /// another process holds it, fail with EBUSY and the message saying so.
    pub fn take(root: &Path, name: &str) -> Result<LocalLock> {
        let path = root.join(format!("{LOCAL_PREFIX}{name}{LOCK_SUFFIX}"));
        loop {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| {
                    let e = Error::from(e);
                    log_error_errno!(e.clone(), "Failed to create {}: {}", path.display(), e)
                })?;
            let Some(lock) = try_lock(file)? else {
                return Err(log_error_errno!(
                    Error::new(libc::EBUSY),
                    "Local image '{}' is being pulled or imported by another process, refusing.",
                    name
                ));
            };
            if same_file(&lock, &path) {
                return Ok(LocalLock { path, lock });
            }
            // Removed by its last holder after we opened it: again.
        }
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        if same_file(&self.lock, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Does `path` name the file `file` is open on?
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// This process's claim on an image root: its temporaries there are live while this is.
/// Dropped, the lock file is removed (a crash leaves it unlocked: stale for the next
/// sweep).
#[derive(Debug)]
pub struct Owner {
    path: PathBuf,
    _lock: Flock<File>,
}

/// What a sweep leaves alone besides live entries: names for which `keep` says true
/// (partial downloads: only those unused for longer than the retention are removed).
pub struct Sweep<'a> {
    pub keep: &'a dyn Fn(&str) -> bool,
}

impl Owner {
    /// Create `root` if needed (mode 0700), take this process's owner lock in it, then
    /// remove what dead processes left there. Errors are logged at debug level only: a
    /// root that cannot be used fails the pull later, with the importer's own message.
    pub fn claim(root: &Path, sweep: &Sweep<'_>) -> Result<Owner> {
        fs::mkdir_p(root, 0o700).map_err(|e| {
            log_debug_errno!(e.clone(), "Failed to create {}: {}", root.display(), e)
        })?;
        let path = lock_path(root, &fs::process_token());
        let lock = loop {
            match create_locked(&path) {
                Ok(Some(f)) => break f,
                // A sweep of another process took our half-made lock file: again.
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => {
                    return Err(log_debug_errno!(
                        e.clone(),
                        "Failed to create {}: {}",
                        path.display(),
                        e
                    ))
                }
            }
        };
        let owner = Owner { path, _lock: lock };
        sweep_root(root, sweep);
        Ok(owner)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Unlinked while still locked: nobody sees it unlocked.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock_path(root: &Path, token: &str) -> PathBuf {
    root.join(format!("{LOCK_PREFIX}{token}{LOCK_SUFFIX}"))
}

/// Make `path` a new lock file, locked before it appears under its name. `None`: another
/// process's sweep removed the file before it was renamed; try again.
fn create_locked(path: &Path) -> Result<Option<Flock<File>>> {
    let temp = fs::tempfn_random(path);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    let Some(lock) = try_lock(file)? else {
        // A sweep holds it and is about to remove it.
        return Ok(None);
    };
    match std::fs::rename(&temp, path) {
        Ok(()) => Ok(Some(lock)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e.into())
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: the lock if we got it, `None` if another process has it.
fn try_lock(file: File) -> Result<Option<Flock<File>>> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// Is `path` (an owner lock) held by a live process? A missing file is not.
fn is_held(path: &Path) -> bool {
    match File::open(path) {
        Ok(f) => matches!(try_lock(f), Ok(None)),
        Err(_) => false,
    }
}

/// Remove the `.#` entries of `root` that no live process owns.
fn sweep_root(root: &Path, sweep: &Sweep<'_>) {
    let ours = fs::process_token();
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(".#") {
            continue;
        }
        let path = root.join(name);
        if (sweep.keep)(name) {
            super::partial::expire(&path);
            continue;
        }
        if let Some(token) = name
            .strip_prefix(LOCK_PREFIX)
            .and_then(|r| r.strip_suffix(LOCK_SUFFIX))
        {
            if token != ours {
                remove_stale_lock(&path);
            }
            continue;
        }
        if name.starts_with(LOCAL_PREFIX) && name.ends_with(LOCK_SUFFIX) {
            remove_stale_lock(&path);
            continue;
        }
        let owner = fs::temp_owner(name);
        if owner == Some(ours.as_str()) || owner.is_some_and(|t| is_held(&lock_path(root, t))) {
            continue;
        }
        log::debug!(
            "Removing {}, left behind by a process that is gone.",
            path.display()
        );
        if let Err(e) = fs::rm_rf(&path) {
            log::warn!("Failed to remove {}: {}", path.display(), e);
        }
    }
}

/// Remove the lock at `path` if its process is gone (we can take the lock).
fn remove_stale_lock(path: &Path) {
    let Ok(file) = File::open(path) else { return };
    if let Ok(Some(lock)) = try_lock(file) {
        if !same_file(&lock, path) {
            return;
        }
        log::debug!("Removing {}, its process is gone.", path.display());
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP_NONE: Sweep<'static> = Sweep { keep: &|_| false };

    #[test]
    fn a_sweep_removes_the_dead_and_keeps_the_living() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A dead owner: its lock file is there but nobody holds it.
        std::fs::write(lock_path(root, "00000001"), b"").unwrap();
        std::fs::create_dir(root.join(".#image1234567800000001")).unwrap();
        // A live owner (this test holds its lock).
        let live = File::create(lock_path(root, "00000002")).unwrap();
        let live = try_lock(live).unwrap().unwrap();
        std::fs::write(root.join(".#oci-abc1234567800000002"), b"x").unwrap();
        // No owner at all, an unparsable name, a kept one, and a final image.
        std::fs::write(root.join(".#x1234567800000003"), b"").unwrap();
        std::fs::write(root.join(".#legacy"), b"").unwrap();
        std::fs::write(root.join(".#keep.partial"), b"kept").unwrap();
        std::fs::create_dir(root.join("image")).unwrap();

        let owner = Owner::claim(
            root,
            &Sweep {
                keep: &|n| n.ends_with(".partial"),
            },
        )
        .unwrap();
        let mut left: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let ours = lock_path(root, &fs::process_token());
        let ours = ours.file_name().unwrap().to_str().unwrap().to_string();
        let mut expected = vec![
            ".#keep.partial".to_string(),
            ".#oci-abc1234567800000002".to_string(),
            ".#owner-00000002.lock".to_string(),
            ours,
            "image".to_string(),
        ];
        expected.sort();
        assert_eq!(left, expected);
        // Our own temporaries survive our own sweep; the lock goes with the owner.
        let mine = fs::tempfn_random(&root.join("image"));
        std::fs::write(&mine, b"").unwrap();
        sweep_root(root, &KEEP_NONE);
        assert!(mine.exists());
        drop(owner);
        assert!(!lock_path(root, &fs::process_token()).exists());
        drop(live);
    }
}

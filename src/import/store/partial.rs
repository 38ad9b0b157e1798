//! Partial downloads that outlive the process: a blob on its way from the network lives
//! under a name derived from what it is (`.#oci-blob-sha256-<hex>.partial` for a layer,
//! `.#url-<escaped url>.partial` for the file of a pull-tar or pull-raw, whose ETag is
//! recorded with it), so that the next pull of the same thing finds the bytes a killed
//! one left, and two pulls of the same thing at once find each other.
//!
//! The file is its own lock (`flock` on the file itself):
//!
//! * **exclusive** while a process writes it (downloads into it, resumes it, restarts it);
//! * **shared** once the blob it holds was verified, while processes read it (apply it);
//! * **none**: nobody uses it. A killed process leaves it like that (a lock dies with its
//!   process): the next pull takes it over, re-hashes what it holds and resumes.
//!
//! A process that finds it being written waits ([`Waiter`]: a shared lock on the
//! partial's `-waiters` file, so the writer knows) and claims it again now and then.
//! A process done with it takes the lock exclusively (without waiting) and, if it got it
//! and nobody waits for it, removes the file; if another process holds it or waits for
//! it, that one removes it when it is done. So a verified blob stays until the processes
//! that wanted it took it, and no longer.
//! A lock is taken on an open file, so whoever takes one checks afterwards that the name
//! still leads to the file it locked (another process may have removed it meanwhile) and
//! opens the name again if not.
//!
//! Partials are left alone by the owner sweep ([`is_partial`]); one nobody holds whose
//! last write is older than [`RETENTION`], or that is empty, is removed by it
//! ([`expire`]): a crash leaves at most a few days of garbage, never an unbounded amount.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// How long a partial nobody uses is kept for a pull that may resume it.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

const PREFIX: &str = ".#";
const SUFFIX: &str = ".partial";

/// The partial download of `what` (a file name's worth of characters, no `/`) in `root`.
pub fn partial_path(root: &Path, what: &str) -> PathBuf {
    root.join(format!("{PREFIX}{what}{SUFFIX}"))
}

/// Is this entry of an image root a partial download (guarded by its own lock)?
pub fn is_partial(name: &str) -> bool {
    name.starts_with(PREFIX) && name.ends_with(SUFFIX) && name.len() > PREFIX.len() + SUFFIX.len()
}

/// How a partial was claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartialMode {
    /// Ours to write: nobody else uses it.
    Write,
    /// Another process reads it (it holds a verified blob): ours to read only.
    Read,
}

/// A partial download this process holds a lock on. Clones share the lock (the loop
/// writes the blob, a task applies it); when the last is dropped, the file is removed if
/// no other process holds it or waits for it.
#[derive(Debug, Clone)]
pub struct Partial(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    lock: Flock<File>,
    /// Claimed to read, or shared since ([`Partial::share`]).
    read: AtomicBool,
}

/// What [`Partial::claim`] found.
#[derive(Debug)]
pub enum Claim {
    Got(Partial),
    /// Another process is writing it.
    Busy,
}

impl Partial {
    /// Open (or create, empty) the partial at `path` and lock it without waiting: to write
    /// if nobody uses it, to read if other processes read it, else [`Claim::Busy`].
    pub fn claim(path: &Path) -> Result<Claim> {
        loop {
            let file = open_or_create(path).map_err(|e| {
                let e = Error::from(e);
                log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e)
            })?;
            let (lock, mode) = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => (lock, PartialMode::Write),
                Err((file, Errno::EWOULDBLOCK)) => {
                    match Flock::lock(file, FlockArg::LockSharedNonblock) {
                        Ok(lock) => (lock, PartialMode::Read),
                        Err((_, Errno::EWOULDBLOCK)) => return Ok(Claim::Busy),
                        Err((_, e)) => return Err(lock_failed(path, e)),
                    }
                }
                Err((_, e)) => return Err(lock_failed(path, e)),
            };
            if still_named(&lock, path) {
                return Ok(Claim::Got(Partial(Arc::new(Inner {
                    path: path.to_path_buf(),
                    lock,
                    read: AtomicBool::new(mode == PartialMode::Read),
                }))));
            }
            // Removed by its last user after we opened it: open the name again.
        }
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    pub fn mode(&self) -> PartialMode {
        if self.0.read.load(Ordering::Acquire) {
            PartialMode::Read
        } else {
            PartialMode::Write
        }
    }

    /// A second descriptor of the file (for a worker that writes it; it shares the lock).
    pub fn file(&self) -> Result<File> {
        self.0.lock.try_clone().map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to open {}: {}", self.0.path.display(), e)
        })
    }

    /// Its length now.
    pub fn bytes(&self) -> u64 {
        self.0.lock.metadata().map_or(0, |m| m.len())
    }

    /// The blob it holds was verified: other processes may read it too. (The conversion
    /// is not atomic: a writer that slips in between finds the blob complete.)
    pub fn share(&self) {
        if self.mode() == PartialMode::Write
            && self.0.lock.relock(FlockArg::LockSharedNonblock).is_ok()
        {
            self.0.read.store(true, Ordering::Release);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ours alone (or we are the last reader): remove it, still locked, so nobody
        // takes a lock on a file without a name. Else its other users remove it.
        if self.lock.relock(FlockArg::LockExclusiveNonblock).is_ok()
            && still_named(&self.lock, &self.path)
            && !has_waiters(&self.path)
        {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("Failed to remove {}: {}", self.path.display(), e);
            }
        }
    }
}

/// A process waiting for a partial another process writes: a shared lock on the
/// partial's `-waiters` file, which tells the writer to leave the blob for it.
#[derive(Debug)]
pub struct Waiter {
    path: PathBuf,
    lock: Flock<File>,
}

impl Waiter {
    /// Say we wait for the partial at `partial` (best effort: `None` if the file cannot
    /// be made; the writer may then remove the blob, and we download it again).
    pub fn register(partial: &Path) -> Option<Waiter> {
        let path = waiters_path(partial)?;
        loop {
            let file = open_or_create(&path).ok()?;
            let lock = Flock::lock(file, FlockArg::LockSharedNonblock).ok()?;
            if still_named(&lock, &path) {
                return Some(Waiter { path, lock });
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.lock.relock(FlockArg::LockExclusiveNonblock).is_ok()
            && still_named(&self.lock, &self.path)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `.#<what>-waiters.partial` for `.#<what>.partial`.
fn waiters_path(partial: &Path) -> Option<PathBuf> {
    let name = partial.file_name()?.to_str()?.strip_suffix(SUFFIX)?;
    Some(partial.with_file_name(format!("{name}-waiters{SUFFIX}")))
}

/// Does a process wait for the partial at `partial` (hold its waiters file)?
fn has_waiters(partial: &Path) -> bool {
    let Some(path) = waiters_path(partial) else {
        return false;
    };
    match File::open(path) {
        Ok(f) => matches!(
            Flock::lock(f, FlockArg::LockExclusiveNonblock),
            Err((_, Errno::EWOULDBLOCK))
        ),
        Err(_) => false,
    }
}

/// Open `path` to read and write, creating it (mode 0600) if it is not there.
fn open_or_create(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Does `path` still name the file `file` is open on?
fn still_named(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn lock_failed(path: &Path, e: Errno) -> Error {
    let e = Error::from(e);
    log_error_errno!(e.clone(), "Failed to lock {}: {}", path.display(), e)
}

/// Remove the partial at `path` if nobody holds it and it is empty or was last written
/// more than [`RETENTION`] ago (the owner sweep calls this for every partial it finds).
pub fn expire(path: &Path) {
    let Ok(file) = File::open(path) else { return };
    let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
        return;
    };
    let meta = lock.metadata().ok();
    let empty = meta.as_ref().is_some_and(|m| m.len() == 0);
    let old = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > RETENTION);
    if empty && still_named(&lock, path) {
        let _ = std::fs::remove_file(path);
    } else if old && still_named(&lock, path) {
        log::debug!(
            "Removing {}, a partial download unused for more than {} days.",
            path.display(),
            RETENTION.as_secs() / 86400
        );
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(path: &Path) -> Claim {
        Partial::claim(path).unwrap()
    }

    #[test]
    fn a_partial_is_written_by_one_and_read_by_many() {
        let dir = tempfile::tempdir().unwrap();
        let path = partial_path(dir.path(), "oci-blob-sha256-00");
        assert!(is_partial(path.file_name().unwrap().to_str().unwrap()));
        assert!(!is_partial(".#x0123456789abcdef"));
        let Claim::Got(writer) = claim(&path) else {
            panic!("nobody else has it")
        };
        assert_eq!(writer.mode(), PartialMode::Write);
        assert!(matches!(claim(&path), Claim::Busy), "being written");
        writer.share();
        let Claim::Got(reader) = claim(&path) else {
            panic!("it may be read now")
        };
        assert_eq!(reader.mode(), PartialMode::Read);
        drop(writer);
        assert!(path.exists(), "another process still reads it");
        drop(reader);
        assert!(!path.exists(), "the last one removes it");

        // A waiter keeps the blob for itself.
        let Claim::Got(writer) = claim(&path) else {
            panic!()
        };
        let waiter = Waiter::register(&path).unwrap();
        writer.share();
        drop(writer);
        assert!(path.exists(), "left for the waiter");
        drop(waiter);
        let Claim::Got(reader) = claim(&path) else {
            panic!()
        };
        drop(reader);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_removed_partial_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = partial_path(dir.path(), "x");
        std::fs::write(&path, b"old").unwrap();
        let Claim::Got(p) = claim(&path) else {
            panic!()
        };
        assert_eq!(p.bytes(), 3);
        drop(p);
        let Claim::Got(p) = claim(&path) else {
            panic!()
        };
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn only_old_unused_partials_expire() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = partial_path(dir.path(), "fresh");
        let old = partial_path(dir.path(), "old");
        let held = partial_path(dir.path(), "held");
        let empty = partial_path(dir.path(), "empty");
        for p in [&fresh, &old, &held] {
            std::fs::write(p, b"x").unwrap();
        }
        std::fs::write(&empty, b"").unwrap();
        let long_ago = SystemTime::now() - RETENTION - Duration::from_secs(60);
        for p in [&old, &held] {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let Claim::Got(_holder) = claim(&held) else {
            panic!()
        };
        for p in [&fresh, &old, &held, &empty] {
            expire(p);
        }
        assert!(fresh.exists() && held.exists() && !old.exists() && !empty.exists());
    }
}

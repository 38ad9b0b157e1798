//! The directories the unpacker keeps open: the parent it looked up last, and the stack
//! of directories the stream is inside, whose owner, mode and mtime wait until the
//! stream leaves them (GNU tar's "delayed set-stat": a directory stays writable while
//! its members are extracted).
//!
//! An open fd is only trusted while nothing has been removed from the tree since it
//! was opened ([`Dirs::invalidate`]); after that a delayed directory is reopened by
//! path and its attributes are applied only if it is still the same inode.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use super::meta::{DirAttrs, Meta};
use super::{failed, sys, tree};
use crate::util::error::Result;

/// How many directories of the delayed stack keep their fd open.
const MAX_OPEN_DIRS: usize = 256;

/// A directory entry whose attributes wait until the stream has left it.
struct DelayedDir {
    /// Normalized member path (`""` for the root).
    path: Vec<u8>,
    /// The directory, while no removal has happened since it was opened; otherwise it
    /// is reopened by path and checked against `dev`/`ino`.
    fd: Option<Rc<OwnedFd>>,
    dev: u64,
    ino: u64,
    /// Levels below the root (physical: symlinks on the way followed).
    depth: usize,
    attrs: DirAttrs,
}

/// The open directories.
pub struct Dirs {
    /// The last parent directory looked up, by normalized path, with its depth.
    cache: Option<(Vec<u8>, Rc<OwnedFd>, usize)>,
    /// Directories the stream is inside, outermost first (each an ancestor of the next).
    delayed: Vec<DelayedDir>,
}

impl Dirs {
    pub fn new() -> Self {
        Dirs {
            cache: None,
            delayed: Vec::new(),
        }
    }

    /// The open directory at `path` and its depth, if it is the last parent looked up
    /// or a directory the stream is inside (the usual case for a member's parent).
    pub fn lookup(&self, path: &[u8]) -> Option<(Rc<OwnedFd>, usize)> {
        match &self.cache {
            Some((p, fd, depth)) if p == path => Some((fd.clone(), *depth)),
            _ => self
                .delayed
                .iter()
                .rev()
                .find(|d| d.path == path)
                .and_then(|d| Some((d.fd.clone()?, d.depth))),
        }
    }

    /// Remember `fd` as the directory at `path` for the next lookup.
    pub fn remember(&mut self, path: &[u8], fd: Rc<OwnedFd>, depth: usize) {
        self.cache = Some((path.to_vec(), fd, depth));
    }

    /// Forget every cached directory fd: something was removed, and a cached fd might
    /// now point at a directory that is no longer in the tree.
    pub fn invalidate(&mut self) {
        self.cache = None;
        for d in &mut self.delayed {
            d.fd = None;
        }
    }

    /// A directory entry was opened (or created) at `path`: its attributes wait until
    /// the stream leaves it.
    pub fn entered(
        &mut self,
        path: &[u8],
        fd: OwnedFd,
        st: &libc::stat,
        depth: usize,
        attrs: DirAttrs,
    ) {
        // Deep trees: keep fds for the outer levels only, so a hostile nesting depth
        // cannot exhaust the fd table; deeper ones are reopened by path when needed.
        let fd = (self.delayed.len() < MAX_OPEN_DIRS).then(|| Rc::new(fd));
        // A duplicate of the directory the stream is in: the later member wins.
        if let Some(top) = self.delayed.last_mut() {
            if top.path == path {
                top.attrs = attrs;
                top.fd = fd;
                top.dev = st.st_dev;
                top.ino = st.st_ino;
                top.depth = depth;
                return;
            }
        }
        if let Some(fd) = &fd {
            self.cache = Some((path.to_vec(), fd.clone(), depth));
        }
        self.delayed.push(DelayedDir {
            path: path.to_vec(),
            fd,
            dev: st.st_dev,
            ino: st.st_ino,
            depth,
            attrs,
        });
    }

    /// Apply the attributes of delayed directories that are not ancestors of `path`
    /// (all of them for `None`), innermost first.
    pub fn leave(
        &mut self,
        path: Option<&[u8]>,
        root: BorrowedFd<'_>,
        meta: &mut Meta,
    ) -> Result<()> {
        while let Some(top) = self.delayed.last() {
            if path.is_some_and(|p| tree::is_ancestor_or_self(&top.path, p)) {
                break;
            }
            let dir = self.delayed.pop().expect("checked above");
            finish(root, dir, meta)?;
        }
        Ok(())
    }
}

fn finish(root: BorrowedFd<'_>, dir: DelayedDir, meta: &mut Meta) -> Result<()> {
    let name = if dir.path.is_empty() {
        &b"."[..]
    } else {
        &dir.path[..]
    };
    let fd = match dir.fd {
        Some(fd) => fd,
        None => match tree::open_dir(root, &dir.path, OFlag::O_RDONLY | OFlag::O_NOFOLLOW) {
            Ok(fd) => Rc::new(fd),
            // Replaced or removed by a later entry: its attributes died with it.
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(()),
            Err(e) => return Err(failed(e, name, "cannot reopen directory")),
        },
    };
    let st = sys::fstat(fd.as_fd()).map_err(|e| failed(e, name, "cannot stat directory"))?;
    if st.st_dev != dir.dev || st.st_ino != dir.ino {
        return Ok(());
    }
    meta.directory(fd.as_fd(), &st, &dir.attrs, name)
}

//! Writing a directory tree as a PAX tar stream ([`write_tree`]).
//!
//! # The walk
//! Depth first, each directory's entries sorted by name (bytes), a directory before its
//! contents; names are `./` for the root and `./a/b` below it, directories with a
//! trailing `/`. Every entry is first opened with `O_PATH | O_NOFOLLOW` relative to its
//! directory's fd and described by `fstat` of that fd, so what is archived is the inode
//! that was looked at; regular files and directories are then reopened for reading
//! through `/proc/thread-self/fd`, which reaches exactly that inode. A symlink is never
//! followed, wherever it points (`/`, `../..`): it is archived as a symlink, so nothing
//! outside the tree is ever read. Mount points inside the tree are entered, as
//! `tar -c` does. Each directory level of the walk holds one fd and its sorted listing,
//! so a tree nested deeper than the open-file limit allows fails with EMFILE.
//!
//! # What is archived, and how
//! Regular files, directories, symlinks, character and block devices and FIFOs, with
//! numeric owners, modes (setuid, setgid, sticky included), mtimes with nanoseconds and
//! xattrs (header encoding: `header.rs`). A regular file whose blocks do not cover its
//! size is scanned for holes and, if it has any, written as a sparse member (`sparse.rs`)
//! whose map has no more entries than our unpacker accepts by default. The second and
//! later names of a regular file or symlink with several links are hard-link members
//! naming the first. The archive ends with two zero blocks, padded to GNU tar's 10 KiB
//! record.
//!
//! # Where we match Debian 12's `systemd-export` rather than plain GNU tar
//! Debian's tool runs `tar -c --xattrs --xattrs-include=*` with only
//! `CAP_DAC_OVERRIDE`, so it cannot see `trusted.*` xattrs and its archives never hold
//! them: we leave them out too, so both exports extract to the same tree. Every other
//! namespace is kept (`user.*`, `security.*` with `security.capability` and
//! `security.selinux`, and the ACLs as `system.posix_acl_*`, which GNU tar stores the
//! same way with these options). Sockets are skipped with a warning, and the names of a
//! hard-linked device or FIFO become separate nodes, as GNU tar does both.
//! Unlike Debian's tool we write holes as holes and owners as numbers only (it names
//! owners and stores holes as zeros; both extract, with `--numeric-owner`, to the same
//! tree), in a deterministic order, and no atime/ctime records.
//!
//! # A tree that changes while it is archived
//! * an entry that disappears between the listing of its directory and its opening is
//!   skipped with a warning (counted in [`Stats::skipped`]);
//! * a file that shrinks while it is read fails the export with EIO: its header already
//!   promised the size; a file that grows is archived at the size it had when opened;
//! * anything else that fails (a read error, no `/proc`) fails the export, logged with
//!   the entry's name.
//!
//! Errors of the output writer are returned unlogged: its owner knows what it is. The
//! walk stops with ECANCELED (unlogged) soon after `cancel` is set: it is checked
//! before every entry and every read of file data.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

use super::data::{CopyError, DataCopier};
use super::header::{self, Kind, Member, BLOCK};
use super::sparse::sparse_map;
use super::Stats;
use crate::import::unpack::{show, Limits};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::fs::{read_xattrs, read_xattrs_at};

/// GNU tar's record: archives are padded to a multiple of it.
const RECORD: u64 = 20 * BLOCK as u64;

/// The most data segments a sparse member's map gets: one less than our unpacker
/// accepts, for the closing segment at the real size.
fn max_sparse_segments() -> usize {
    Limits::default().max_sparse_entries - 1
}

/// Write the tree below the directory `root` as an uncompressed tar stream to `out`.
///
/// Blocks; run it on a worker thread. `progress` is called after every member and after
/// every chunk of file data (256 KiB at most), with the totals so far. See the module
/// comment for what is archived and how changes during the walk are handled.
pub fn write_tree(
    root: BorrowedFd<'_>,
    out: &mut dyn Write,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&Stats),
) -> Result<Stats> {
    let mut w = TreeWriter {
        out,
        cancel,
        progress,
        stats: Stats::default(),
        links: HashMap::new(),
        header: Vec::with_capacity(4 * BLOCK),
        copier: DataCopier::new(),
    };
    let root_stat = fstat(root)?;
    let root_dir = w.directory(root.try_clone_to_owned()?, &root_stat, b"./")?;
    let mut stack = vec![root_dir];
    while let Some(level) = stack.last_mut() {
        let Some(name) = level.names.get(level.next) else {
            stack.pop();
            continue;
        };
        level.next += 1;
        let path = [&level.path[..], name.to_bytes()].concat();
        if let Some(child) = w.entry(level.fd.as_fd(), name, path)? {
            stack.push(child);
        }
    }
    w.end()?;
    Ok(w.stats)
}

/// One directory being walked.
struct Level {
    fd: OwnedFd,
    /// Its archive name, ending in `/`.
    path: Vec<u8>,
    /// Its entries, sorted; `next` is the one to archive next.
    names: Vec<CString>,
    next: usize,
}

struct TreeWriter<'a> {
    out: &'a mut dyn Write,
    cancel: &'a AtomicBool,
    progress: &'a mut dyn FnMut(&Stats),
    stats: Stats,
    /// (device, inode) of every non-directory with several links archived so far → its
    /// archive name and how many of its other names are still to come.
    links: HashMap<(u64, u64), (Vec<u8>, u64)>,
    /// Reused for each member's header blocks.
    header: Vec<u8>,
    /// Reads file data.
    copier: DataCopier,
}

/// Log a failure to read `path` from the tree and return the error.
fn failed(err: impl Into<Error>, path: &[u8], what: impl fmt::Display) -> Error {
    let err = err.into();
    log_error_errno!(
        Error::new(err.errno()),
        "Failed to archive '{}': {}: {}",
        show(path),
        what,
        err
    )
}

/// Reopen an `O_PATH` fd for reading, through the magic link that names its inode.
fn reopen(node: BorrowedFd<'_>, flags: OFlag) -> nix::Result<OwnedFd> {
    let path = format!("/proc/thread-self/fd/{}", node.as_raw_fd());
    nix::fcntl::open(
        path.as_str(),
        flags | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
}

/// The entries of directory `dir`, without `.` and `..`, sorted.
fn sorted_names(dir: BorrowedFd<'_>) -> nix::Result<Vec<CString>> {
    // The listing gets its own open file description, so `dir` keeps its offset.
    let mut listing = nix::dir::Dir::from_fd(reopen(dir, OFlag::O_DIRECTORY)?)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let name = entry?.file_name().to_owned();
        if !matches!(name.to_bytes(), b"." | b"..") {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// The xattrs we archive, sorted by name: all but `trusted.*` (see the module comment).
/// A file system without xattrs has none.
fn archived_xattrs(
    all: nix::Result<Vec<(CString, Vec<u8>)>>,
) -> nix::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let all = match all {
        Ok(all) => all,
        Err(Errno::EOPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut kept: Vec<(Vec<u8>, Vec<u8>)> = all
        .into_iter()
        .map(|(name, value)| (name.into_bytes(), value))
        .filter(|(name, _)| !name.starts_with(b"trusted."))
        .collect();
    kept.sort();
    Ok(kept)
}

fn kind_of(st: &FileStat) -> Option<Kind> {
    Some(
        match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            SFlag::S_IFCHR => Kind::Char,
            SFlag::S_IFBLK => Kind::Block,
            SFlag::S_IFIFO => Kind::Fifo,
            _ => return None,
        },
    )
}

/// A member for `st` with no content; the caller fills in what its kind needs.
fn member<'m>(path: &'m [u8], kind: Kind, st: &FileStat) -> Member<'m> {
    Member {
        path,
        kind,
        mode: st.st_mode & 0o7777,
        uid: u64::from(st.st_uid),
        gid: u64::from(st.st_gid),
        mtime: (st.st_mtime, st.st_mtime_nsec as u32),
        size: 0,
        link: b"",
        dev: (
            nix::sys::stat::major(st.st_rdev),
            nix::sys::stat::minor(st.st_rdev),
        ),
        xattrs: &[],
        sparse_size: None,
    }
}

impl TreeWriter<'_> {
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::new(libc::ECANCELED));
        }
        Ok(())
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.stats.bytes_written += bytes.len() as u64;
        Ok(())
    }

    /// Write the header blocks of `member`.
    fn emit_header(&mut self, member: &Member<'_>) -> Result<()> {
        let mut header = std::mem::take(&mut self.header);
        header.clear();
        header::encode(member, &mut header);
        let r = self.emit(&header);
        self.header = header;
        r
    }

    /// One member is done: count it and report.
    fn done(&mut self) {
        self.stats.entries += 1;
        (self.progress)(&self.stats);
    }

    /// Archive the directory `fd` (described by `st`) under `path` and return it as the
    /// next level of the walk.
    fn directory(&mut self, fd: OwnedFd, st: &FileStat, path: &[u8]) -> Result<Level> {
        let names =
            sorted_names(fd.as_fd()).map_err(|e| failed(e, path, "cannot list directory"))?;
        let xattrs = archived_xattrs(read_xattrs(fd.as_fd()))
            .map_err(|e| failed(e, path, "cannot read extended attributes"))?;
        let mut m = member(path, Kind::Dir, st);
        m.xattrs = &xattrs;
        self.emit_header(&m)?;
        self.done();
        Ok(Level {
            fd,
            path: path.to_vec(),
            names,
            next: 0,
        })
    }

    /// Archive `dir/name`, named `path` in the archive. Returns the next level of the walk
    /// if it is a directory.
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, path: Vec<u8>) -> Result<Option<Level>> {
        self.check_cancel()?;
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let node = match openat(dir, name, flags, Mode::empty()) {
            Ok(node) => node,
            Err(Errno::ENOENT) => return Ok(self.vanished(&path)),
            Err(e) => return Err(failed(e, &path, "cannot open")),
        };
        let st = fstat(&node).map_err(|e| failed(e, &path, "cannot stat"))?;
        let Some(kind) = kind_of(&st) else {
            log::warn!("Not archiving socket '{}'.", show(&path));
            self.stats.skipped += 1;
            return Ok(None);
        };
        if kind == Kind::Dir {
            let fd = reopen(node.as_fd(), OFlag::O_DIRECTORY)
                .map_err(|e| failed(e, &path, "cannot open directory"))?;
            let path = [&path[..], b"/"].concat();
            return self.directory(fd, &st, &path).map(Some);
        }
        // A later name of an inode already archived: a hard link, nothing to read.
        if let Some(first) = self.later_link(kind, &st) {
            let mut m = member(&path, Kind::HardLink, &st);
            m.link = &first;
            self.emit_header(&m)?;
            self.done();
            return Ok(None);
        }

        let file = match kind {
            Kind::File => Some(
                reopen(node.as_fd(), OFlag::empty())
                    .map_err(|e| failed(e, &path, "cannot open file"))?,
            ),
            _ => None,
        };
        let xattrs = match &file {
            Some(file) => read_xattrs(file.as_fd()),
            None => read_xattrs_at(dir, name),
        };
        let xattrs = match archived_xattrs(xattrs) {
            Ok(xattrs) => xattrs,
            Err(Errno::ENOENT) => return Ok(self.vanished(&path)),
            Err(e) => return Err(failed(e, &path, "cannot read extended attributes")),
        };
        match file {
            Some(file) => self.file(file.as_fd(), &st, &path, &xattrs)?,
            None => {
                let target = match kind {
                    Kind::Symlink => readlinkat(&node, "")
                        .map_err(|e| failed(e, &path, "cannot read symbolic link"))?
                        .into_vec(),
                    _ => Vec::new(),
                };
                let mut m = member(&path, kind, &st);
                m.link = &target;
                m.xattrs = &xattrs;
                self.emit_header(&m)?;
            }
        }
        if st.st_nlink > 1 && links_kept(kind) {
            // Forgotten once all its other names were seen (if they all are in the tree).
            let others = (st.st_nlink - 1) as u64;
            self.links.insert(inode(&st), (path, others));
        }
        self.done();
        Ok(None)
    }

    /// For a name of an inode archived before under another name: that name.
    fn later_link(&mut self, kind: Kind, st: &FileStat) -> Option<Vec<u8>> {
        if st.st_nlink < 2 || !links_kept(kind) {
            return None;
        }
        let key = inode(st);
        let (first, left) = self.links.get_mut(&key)?;
        *left -= 1;
        if *left == 0 {
            return self.links.remove(&key).map(|(first, _)| first);
        }
        Some(first.clone())
    }

    fn vanished(&mut self, path: &[u8]) -> Option<Level> {
        log::warn!(
            "'{}' disappeared while the tree was archived, skipping it.",
            show(path)
        );
        self.stats.skipped += 1;
        None
    }

    /// A regular file: header, then its data (sparse members: the map, then the data
    /// segments), then padding.
    fn file(
        &mut self,
        fd: BorrowedFd<'_>,
        st: &FileStat,
        path: &[u8],
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        let size = st.st_size as u64;
        let maybe_sparse = (st.st_blocks as u64).saturating_mul(512) < size;
        let map = if maybe_sparse {
            sparse_map(fd, size, max_sparse_segments())
                .map_err(|e| failed(e, path, "cannot find the holes"))?
        } else {
            None
        };
        let mut m = member(path, Kind::File, st);
        m.xattrs = xattrs;
        match &map {
            None => {
                m.size = size;
                self.emit_header(&m)?;
                self.copy(fd, path, 0, size)?;
            }
            Some(map) => {
                let data: u64 = map.iter().map(|&(_, len)| len).sum();
                m.size = header::sparse_map_len(map) + data;
                m.sparse_size = Some(size);
                self.emit_header(&m)?;
                let mut block = Vec::new();
                header::sparse_map_block(map, &mut block);
                self.emit(&block)?;
                for &(offset, len) in map {
                    self.copy(fd, path, offset, len)?;
                }
            }
        }
        self.pad()
    }

    /// Copy `len` bytes at `offset` of the file to the archive.
    fn copy(&mut self, fd: BorrowedFd<'_>, path: &[u8], offset: u64, len: u64) -> Result<()> {
        let stats = &mut self.stats;
        let progress = &mut self.progress;
        let r = self
            .copier
            .copy(fd, offset, len, &mut *self.out, self.cancel, &mut |n| {
                stats.bytes_read += n as u64;
                stats.bytes_written += n as u64;
                progress(stats);
            });
        r.map_err(|e| match e {
            CopyError::Cancelled => Error::new(libc::ECANCELED),
            CopyError::Shrank => log_error_errno!(
                Error::new(libc::EIO),
                "'{}' shrank while it was archived.",
                show(path)
            ),
            CopyError::Read(e) => failed(e, path, "cannot read"),
            CopyError::Write(e) => e,
        })
    }

    /// Zeros up to the next block boundary.
    fn pad(&mut self) -> Result<()> {
        let rem = (self.stats.bytes_written % BLOCK as u64) as usize;
        if rem != 0 {
            self.emit(&[0u8; BLOCK][rem..])?;
        }
        Ok(())
    }

    /// The end-of-archive marker, and zeros to the end of the record.
    fn end(&mut self) -> Result<()> {
        self.emit(&[0u8; 2 * BLOCK])?;
        let rem = self.stats.bytes_written % RECORD;
        if rem != 0 {
            let zeros = vec![0u8; (RECORD - rem) as usize];
            self.emit(&zeros)?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// Whether the names of an inode of this kind are archived as hard links: regular files
/// and symlinks, as GNU tar does; devices and FIFOs are archived once per name.
fn links_kept(kind: Kind) -> bool {
    matches!(kind, Kind::File | Kind::Symlink)
}

fn inode(st: &FileStat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

//! Applying entries to the tree: creation, replacement, metadata, and directory
//! attributes restored after their children (GNU tar's "delayed set-stat").
//!
//! Replacement rule (all modes): an existing entry at the path is looked at without
//! following it; a directory entry over a directory changes attributes only; anything
//! else removes what is there (a directory recursively, never crossing a mount point)
//! and creates the new entry. In the plain mode this is how duplicate members behave,
//! in the layer modes it is the image-spec rule.
//!
//! Metadata order per entry: owner, then xattrs (chown drops `security.capability`),
//! then mode (chown drops setuid/setgid), then mtime. Directories get owner, mode and
//! mtime when the stream leaves them; until then they stay writable.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode as Perm, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use super::entry::{Entry, Kind, SparseMap};
use super::layer::{self, Class, Layer};
use super::reader::{Reader, BUFFER_SIZE};
use super::{failed, refuse, show, sys, tree, Mode, Stats};
use crate::util::error::{Error, Result};
use crate::util::fs;

/// How many directories of the delayed stack keep their fd open.
const MAX_OPEN_DIRS: usize = 256;

/// Owner, mode and mtime of a directory, applied when the stream leaves it.
pub(super) struct DirAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
}

/// A directory entry whose attributes wait until the stream has left it.
pub(super) struct DelayedDir {
    /// Normalized member path (`""` for the root).
    pub path: Vec<u8>,
    /// The directory, while no removal has happened since it was opened; otherwise it
    /// is reopened by path and checked against `dev`/`ino`.
    pub fd: Option<Rc<OwnedFd>>,
    pub dev: u64,
    pub ino: u64,
    /// Levels below the root (physical: symlinks on the way followed).
    pub depth: usize,
    pub attrs: DirAttrs,
}

/// An archive time (seconds, nanoseconds) as the time-setting calls take it.
fn timespec((sec, nsec): (i64, u32)) -> TimeSpec {
    TimeSpec::new(sec, nsec as _)
}

/// Where to set extended attributes.
enum XattrTarget<'f> {
    Fd(BorrowedFd<'f>),
    At(BorrowedFd<'f>, &'f CStr),
}

pub(super) struct Unpacker<'a> {
    pub root: BorrowedFd<'a>,
    pub mode: Mode,
    /// The last parent directory looked up, by normalized path, with its depth.
    pub cache: Option<(Vec<u8>, Rc<OwnedFd>, usize)>,
    /// Directories the stream is inside, outermost first (each an ancestor of the next).
    pub delayed: Vec<DelayedDir>,
    /// Layer-mode state (`None` in the plain mode).
    pub layer: Option<Layer>,
    /// How deep the root lies below `/` (None without `/proc`, where the depth of the
    /// tree cannot be measured), and how deep below the root a member's parent may lie.
    root_depth: Option<usize>,
    max_depth: usize,
    /// False after chown failed with EPERM/EINVAL once (warned once, then skipped).
    can_chown: bool,
    /// False after mknod of a device failed with EPERM once (warned once, then skipped).
    can_mknod: bool,
    xattr_warned: bool,
    slash_warned: bool,
    link_slash_warned: bool,
    pub stats: Stats,
}

/// Convert a path component to a C string (components never contain NUL).
fn cstr(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("member paths contain no NUL")
}

impl<'a> Unpacker<'a> {
    pub fn new(root: BorrowedFd<'a>, mode: Mode, max_depth: usize) -> Result<Self> {
        let st =
            sys::fstat(root).map_err(|e| failed(e, b".", "cannot stat the target directory"))?;
        if !sys::is_dir(&st) {
            return Err(failed(
                Errno::ENOTDIR,
                b".",
                "the target is not a directory",
            ));
        }
        // Probe openat2 once, so a kernel without it fails with one clear line.
        if let Err(e) = sys::open_in_root(root, c".", OFlag::O_PATH | OFlag::O_DIRECTORY) {
            let what = if e == Errno::ENOSYS {
                "openat2() is not available (Linux 5.6 or newer is required)"
            } else {
                "cannot open the target directory"
            };
            return Err(failed(e, b".", what));
        }
        let root_depth = match sys::depth(root) {
            Ok(depth) => Some(depth),
            Err(Errno::ENOENT) => {
                log::debug!("/proc is not mounted: the depth of the tree is not checked.");
                None
            }
            Err(e) => return Err(failed(e, b".", "cannot determine the target's path")),
        };
        Ok(Unpacker {
            root,
            mode,
            cache: None,
            delayed: Vec::new(),
            layer: match mode {
                Mode::Plain => None,
                Mode::Aufs | Mode::Oci => Some(Layer::new()),
            },
            root_depth,
            max_depth,
            can_chown: true,
            can_mknod: true,
            xattr_warned: false,
            slash_warned: false,
            link_slash_warned: false,
            stats: Stats::default(),
        })
    }

    /// Apply every entry of the stream, then the attributes of the directories still open.
    pub fn run(&mut self, reader: &mut Reader<'_>) -> Result<Stats> {
        while let Some(entry) = reader.next_entry()? {
            self.stats.entries += 1;
            self.apply_entry(reader, &entry)?;
        }
        self.leave_dirs(None)?;
        Ok(self.stats.clone())
    }

    /// Remove what only exists while unpacking (the aufs pseudo-link stash).
    pub fn cleanup(&mut self) -> Result<()> {
        match self.layer.as_mut().and_then(|l| l.stash.take()) {
            Some(stash) => {
                drop(stash.fd);
                tree::remove_all(self.root, &stash.name).map_err(|e| {
                    failed(
                        e,
                        stash.name.to_bytes(),
                        "cannot remove the aufs pseudo-link stash",
                    )
                })
            }
            None => Ok(()),
        }
    }

    fn apply_entry(&mut self, reader: &mut Reader<'_>, entry: &Entry) -> Result<()> {
        let path = self.normalize(&entry.name, &entry.name, false)?;
        self.leave_dirs(Some(&path))?;
        if let Some(t) = entry.unknown_type {
            log::warn!(
                "'{}': unknown file type '{}', extracted as a regular file.",
                show(&entry.name),
                t.escape_ascii()
            );
        }
        match layer::classify(self.mode, &path)
            .map_err(|reason| refuse(libc::EINVAL, &entry.name, reason))?
        {
            Class::Extract => self.extract(reader, entry, &path),
            Class::Skip => {
                self.stats.skipped += 1;
                Ok(())
            }
            Class::Whiteout { victim } => self.whiteout(entry, &path, victim),
            Class::Opaque => self.opaque(entry, tree::split_last(&path).0),
            Class::Stash => self.stash(reader, entry, &path),
        }
    }

    /// Normalize a member name or hard-link target: strip leading `/` (warning once),
    /// drop `.` and empty components, refuse `..`.
    pub fn normalize(&mut self, name: &[u8], entry: &[u8], link: bool) -> Result<Vec<u8>> {
        let trimmed = {
            let n = name.iter().take_while(|&&b| b == b'/').count();
            &name[n..]
        };
        if trimmed.len() != name.len() {
            let warned = if link {
                &mut self.link_slash_warned
            } else {
                &mut self.slash_warned
            };
            if !*warned {
                *warned = true;
                if link {
                    log::warn!("Removing leading '/' from hard link targets.");
                } else {
                    log::warn!("Removing leading '/' from member names.");
                }
            }
        }
        let mut out = Vec::with_capacity(trimmed.len());
        for component in trimmed.split(|&b| b == b'/') {
            match component {
                b"" | b"." => {}
                b".." => {
                    let reason = if link {
                        format!("hard link target '{}' contains '..'", show(name))
                    } else {
                        "member name contains '..'".to_string()
                    };
                    return Err(refuse(libc::EINVAL, entry, reason));
                }
                c => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(c);
                }
            }
        }
        Ok(out)
    }

    /// Forget every cached directory fd: something was removed, and a cached fd might
    /// now point at a directory that is no longer in the tree.
    pub fn invalidate(&mut self) {
        self.cache = None;
        for d in &mut self.delayed {
            d.fd = None;
        }
    }

    /// The parent directory for a member and its depth below the root, from the cache
    /// or the delayed-directory stack (the usual case: the stream is inside it), else
    /// resolved in the root, creating missing components. A parent deeper than the
    /// limit is refused, and components that would lie deeper are never created.
    fn parent_dir(&mut self, parent: &[u8], entry: &[u8]) -> Result<(Rc<OwnedFd>, usize)> {
        let known = match &self.cache {
            Some((p, fd, depth)) if p == parent => Some((fd.clone(), *depth)),
            _ => self
                .delayed
                .iter()
                .rev()
                .find(|d| d.path == parent)
                .and_then(|d| Some((d.fd.clone()?, d.depth))),
        };
        if let Some((fd, depth)) = known {
            self.check_depth(depth, entry)?;
            self.cache = Some((parent.to_vec(), fd.clone(), depth));
            return Ok((fd, depth));
        }
        let mut created = Vec::new();
        // Where creation starts: the depth of the deepest existing ancestor, plus the
        // levels still to create, must stay within the limit.
        let mut creation_depth = None;
        let mut too_deep = false;
        let result = tree::make_parents(
            self.root,
            parent,
            |p| created.push(p.to_vec()),
            |existing, levels| {
                let depth = self.measure_depth(existing)?.saturating_add(levels);
                if depth > self.max_depth {
                    too_deep = true;
                    return Err(Errno::ENAMETOOLONG);
                }
                creation_depth = Some(depth);
                Ok(())
            },
        );
        if let Some(layer) = &mut self.layer {
            for p in &created {
                layer.record(p);
            }
        }
        if too_deep {
            return Err(self.too_deep(entry));
        }
        let fd = result.map_err(|(e, p)| {
            let what = if p.is_empty() {
                "cannot open the target directory".to_string()
            } else {
                format!("cannot open or create parent directory '{}'", show(&p))
            };
            failed(e, entry, what)
        })?;
        let depth = match creation_depth {
            Some(depth) => depth,
            None => self
                .measure_depth(fd.as_fd())
                .map_err(|e| failed(e, entry, "cannot determine the directory's path"))?,
        };
        self.check_depth(depth, entry)?;
        let fd = Rc::new(fd);
        self.cache = Some((parent.to_vec(), fd.clone(), depth));
        Ok((fd, depth))
    }

    /// Levels below the root of an open directory (0 when the depth cannot be measured,
    /// which `root_depth` says). A path too long for the kernel to name is deeper than
    /// any limit.
    fn measure_depth(&self, dir: BorrowedFd<'_>) -> std::result::Result<usize, Errno> {
        let Some(root_depth) = self.root_depth else {
            return Ok(0);
        };
        match sys::depth(dir) {
            Ok(depth) => Ok(depth.saturating_sub(root_depth)),
            Err(Errno::ENAMETOOLONG) => Ok(usize::MAX),
            Err(e) => Err(e),
        }
    }

    fn check_depth(&self, depth: usize, entry: &[u8]) -> Result<()> {
        if depth > self.max_depth {
            return Err(self.too_deep(entry));
        }
        Ok(())
    }

    fn too_deep(&self, entry: &[u8]) -> Error {
        refuse(
            libc::ENAMETOOLONG,
            entry,
            format_args!(
                "its directory would lie more than {} levels below the root",
                self.max_depth
            ),
        )
    }

    /// Apply the attributes of delayed directories that are not ancestors of `path`
    /// (all of them for `None`), innermost first.
    fn leave_dirs(&mut self, path: Option<&[u8]>) -> Result<()> {
        while let Some(top) = self.delayed.last() {
            if path.is_some_and(|p| tree::is_ancestor_or_self(&top.path, p)) {
                break;
            }
            let dir = self.delayed.pop().expect("checked above");
            self.finish_dir(dir)?;
        }
        Ok(())
    }

    fn finish_dir(&mut self, dir: DelayedDir) -> Result<()> {
        let name = if dir.path.is_empty() {
            &b"."[..]
        } else {
            &dir.path[..]
        };
        let fd = match dir.fd {
            Some(fd) => fd,
            None => match tree::open_dir(self.root, &dir.path, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)
            {
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
        self.chown_fd(fd.as_fd(), dir.attrs.uid, dir.attrs.gid, name)?;
        nix::sys::stat::fchmod(fd.as_fd(), Perm::from_bits_truncate(dir.attrs.mode))
            .map_err(|e| failed(e, name, "cannot change mode"))?;
        fs::set_mtime(fd.as_fd(), timespec(dir.attrs.mtime))
            .map_err(|e| failed(e, name, "cannot set modification time"))
    }

    fn extract(&mut self, reader: &mut Reader<'_>, entry: &Entry, path: &[u8]) -> Result<()> {
        if path.is_empty() {
            // The root itself: a directory entry sets its attributes; anything else
            // would replace the root (CVE-2021-29136: a `/.` symlink).
            if entry.kind != Kind::Directory {
                return Err(refuse(
                    libc::EINVAL,
                    &entry.name,
                    "the member names the root directory but is not a directory",
                ));
            }
            let fd = tree::open_dir(self.root, b"", OFlag::O_RDONLY)
                .map_err(|e| failed(e, &entry.name, "cannot open the target directory"))?;
            return self.directory_opened(fd, entry, path, 0);
        }
        let (parent_path, base) = tree::split_last(path);
        let base = cstr(base);
        let (parent, parent_depth) = self.parent_dir(parent_path, &entry.name)?;
        let created = match entry.kind {
            Kind::Directory => self.extract_dir(&parent, &base, entry, path, parent_depth + 1)?,
            Kind::Regular => {
                self.extract_file(reader, parent.as_fd(), &base, entry)?;
                true
            }
            Kind::Symlink => self.extract_symlink(&parent, &base, entry)?,
            Kind::HardLink => self.extract_hardlink(&parent, &base, entry)?,
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                self.extract_node(&parent, &base, entry)?
            }
        };
        if created {
            if let Some(layer) = &mut self.layer {
                layer.record(path);
            }
        }
        Ok(())
    }

    /// Run `create`; if the name is taken, remove what is there (unless `keep` says the
    /// existing node is already the wanted one) and run it once more.
    fn create_replacing(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &CStr,
        entry: &Entry,
        what: &str,
        keep: impl Fn(&libc::stat) -> bool,
        create: impl Fn() -> std::result::Result<(), Errno>,
    ) -> Result<()> {
        match create() {
            Err(Errno::EEXIST) => {}
            other => return other.map_err(|e| failed(e, &entry.name, what)),
        }
        let st = sys::lstat_at(parent, base)
            .map_err(|e| failed(e, &entry.name, "cannot stat existing file"))?;
        if keep(&st) {
            return Ok(());
        }
        self.remove_existing(parent, base, &st, &entry.name)?;
        create().map_err(|e| failed(e, &entry.name, what))
    }

    /// Remove the node at `parent/base` to make room for a new entry.
    pub fn remove_existing(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &CStr,
        st: &libc::stat,
        entry: &[u8],
    ) -> Result<()> {
        self.invalidate();
        let result = if sys::is_dir(st) {
            tree::remove_all(parent, base)
        } else {
            nix::unistd::unlinkat(parent, base, UnlinkatFlags::NoRemoveDir)
        };
        result.map_err(|e| {
            let what = if e == Errno::EXDEV {
                "cannot replace a mount point"
            } else {
                "cannot remove existing file"
            };
            failed(e, entry, what)
        })
    }

    /// Returns whether the directory was created (false: an existing one was kept).
    fn extract_dir(
        &mut self,
        parent: &OwnedFd,
        base: &CStr,
        entry: &Entry,
        path: &[u8],
        depth: usize,
    ) -> Result<bool> {
        let mkdir =
            || nix::sys::stat::mkdirat(parent.as_fd(), base, Perm::from_bits_truncate(0o700));
        self.create_replacing(
            parent.as_fd(),
            base,
            entry,
            "cannot create directory",
            sys::is_dir,
            mkdir,
        )?;
        let fd = sys::open_at(
            parent.as_fd(),
            base,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            0,
        )
        .map_err(|e| failed(e, &entry.name, "cannot open directory"))?;
        self.directory_opened(fd, entry, path, depth)?;
        Ok(true)
    }

    /// Set a directory's xattrs now and queue its owner, mode and mtime.
    fn directory_opened(
        &mut self,
        fd: OwnedFd,
        entry: &Entry,
        path: &[u8],
        depth: usize,
    ) -> Result<()> {
        let st =
            sys::fstat(fd.as_fd()).map_err(|e| failed(e, &entry.name, "cannot stat directory"))?;
        self.set_xattrs(XattrTarget::Fd(fd.as_fd()), entry)?;
        let attrs = DirAttrs {
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime: entry.mtime,
        };
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
                return Ok(());
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
        Ok(())
    }

    /// Create a regular file at `parent/base` (replacing what is there), write its
    /// content and set its metadata.
    pub fn extract_file(
        &mut self,
        reader: &mut Reader<'_>,
        parent: BorrowedFd<'_>,
        base: &CStr,
        entry: &Entry,
    ) -> Result<()> {
        // Created with the entry's permission bits (less the umask) so that the usual
        // member needs no chmod below; set-id bits only ever come from that chmod.
        let open = || {
            sys::open_at(
                parent,
                base,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                entry.mode & 0o777,
            )
        };
        let file = match open() {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => {
                let st = sys::lstat_at(parent, base)
                    .map_err(|e| failed(e, &entry.name, "cannot stat existing file"))?;
                self.remove_existing(parent, base, &st, &entry.name)?;
                open().map_err(|e| failed(e, &entry.name, "cannot create file"))?
            }
            Err(e) => return Err(failed(e, &entry.name, "cannot create file")),
        };
        let file = File::from(file);
        self.write_content(reader, &file, entry)?;
        // Most members (root's files, extracted by root under the default umask) already
        // have the owner and mode they ask for. chown and chmod are skipped then: each
        // is an inode update, a transaction join on btrfs, for every small file. chown
        // clears set-id bits and an ACL xattr rewrites the mode, so after either the
        // mode is always set.
        let st = nix::sys::stat::fstat(&file)
            .map_err(|e| failed(e, &entry.name, "cannot stat new file"))?;
        let chown = st.st_uid != entry.uid || st.st_gid != entry.gid;
        if chown {
            self.chown_fd(file.as_fd(), entry.uid, entry.gid, &entry.name)?;
        }
        self.set_xattrs(XattrTarget::Fd(file.as_fd()), entry)?;
        if chown || !entry.xattrs.is_empty() || st.st_mode & 0o7777 != entry.mode & 0o7777 {
            nix::sys::stat::fchmod(file.as_fd(), Perm::from_bits_truncate(entry.mode))
                .map_err(|e| failed(e, &entry.name, "cannot change mode"))?;
        }
        fs::set_mtime(file.as_fd(), timespec(entry.mtime))
            .map_err(|e| failed(e, &entry.name, "cannot set modification time"))
    }

    fn write_content(
        &mut self,
        reader: &mut Reader<'_>,
        mut file: &File,
        entry: &Entry,
    ) -> Result<()> {
        let write_failed = |e: std::io::Error| failed(Error::from(e), &entry.name, "cannot write");
        let Some(sparse) = &entry.sparse else {
            while reader.remaining() > 0 {
                let data = reader.data(BUFFER_SIZE, &entry.name)?;
                file.write_all(data).map_err(write_failed)?;
            }
            return Ok(());
        };
        let read_map;
        let map = match &sparse.map {
            SparseMap::Known(map) => map,
            SparseMap::InData => {
                read_map = reader.read_sparse_map(&entry.name, sparse.real_size)?;
                &read_map
            }
        };
        // Data segments go to their offsets; what lies between stays a hole.
        for &(offset, len) in map {
            let mut at = offset;
            let end = offset + len;
            while at < end {
                let data =
                    reader.data(((end - at).min(BUFFER_SIZE as u64)) as usize, &entry.name)?;
                file.write_all_at(data, at).map_err(write_failed)?;
                at += data.len() as u64;
            }
        }
        file.set_len(sparse.real_size).map_err(write_failed)
    }

    fn extract_symlink(&mut self, parent: &OwnedFd, base: &CStr, entry: &Entry) -> Result<bool> {
        if entry.link.is_empty() {
            return Err(refuse(
                libc::EINVAL,
                &entry.name,
                "symbolic link with an empty target",
            ));
        }
        // The target is data: stored as given, never resolved here.
        let target = cstr(&entry.link);
        let create = || nix::unistd::symlinkat(target.as_c_str(), parent.as_fd(), base);
        self.create_replacing(
            parent.as_fd(),
            base,
            entry,
            "cannot create symbolic link",
            |_| false,
            create,
        )?;
        self.node_metadata(parent.as_fd(), base, entry, false)?;
        Ok(true)
    }

    fn extract_hardlink(&mut self, parent: &OwnedFd, base: &CStr, entry: &Entry) -> Result<bool> {
        let target = self.normalize(&entry.link, &entry.name, true)?;
        let (source_dir, source_name) = match self.plnk_source(&target, entry)? {
            Some(found) => found,
            None => {
                if target.is_empty() {
                    return Err(refuse(
                        libc::EPERM,
                        &entry.name,
                        "hard link target is the root directory",
                    ));
                }
                let (tparent, tbase) = tree::split_last(&target);
                let dir = match tree::open_dir(self.root, tparent, OFlag::O_PATH) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT | Errno::ENOTDIR) => {
                        return Err(refuse(
                            libc::ENOENT,
                            &entry.name,
                            format_args!("hard link target '{}' does not exist", show(&entry.link)),
                        ))
                    }
                    Err(e) => {
                        return Err(failed(
                            e,
                            &entry.name,
                            "cannot open hard link target directory",
                        ))
                    }
                };
                (dir, cstr(tbase))
            }
        };
        let st = match sys::lstat_at(source_dir.as_fd(), &source_name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                return Err(refuse(
                    libc::ENOENT,
                    &entry.name,
                    format_args!("hard link target '{}' does not exist", show(&entry.link)),
                ))
            }
            Err(e) => return Err(failed(e, &entry.name, "cannot stat hard link target")),
        };
        if sys::is_dir(&st) {
            return Err(refuse(
                libc::EPERM,
                &entry.name,
                format_args!("hard link target '{}' is a directory", show(&entry.link)),
            ));
        }
        let link = || {
            nix::unistd::linkat(
                source_dir.as_fd(),
                source_name.as_c_str(),
                parent.as_fd(),
                base,
                AtFlags::empty(),
            )
        };
        // Linking a name to the inode it already is (GNU tar archives can do that) is a no-op.
        let same =
            |existing: &libc::stat| existing.st_dev == st.st_dev && existing.st_ino == st.st_ino;
        self.create_replacing(
            parent.as_fd(),
            base,
            entry,
            "cannot create hard link",
            same,
            link,
        )?;
        Ok(true)
    }

    /// Devices and FIFOs. Returns false when a device was skipped (not permitted).
    fn extract_node(&mut self, parent: &OwnedFd, base: &CStr, entry: &Entry) -> Result<bool> {
        let kind = match entry.kind {
            Kind::CharDevice => SFlag::S_IFCHR,
            Kind::BlockDevice => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let device = kind != SFlag::S_IFIFO;
        if device && !self.can_mknod {
            self.stats.skipped += 1;
            return Ok(false);
        }
        let dev = nix::sys::stat::makedev(u64::from(entry.dev_major), u64::from(entry.dev_minor));
        let perm = Perm::from_bits_truncate(entry.mode & 0o777);
        let mknod = || nix::sys::stat::mknodat(parent.as_fd(), base, kind, perm, dev);
        match mknod() {
            Err(Errno::EPERM) if device => {
                log::warn!(
                    "Cannot create device nodes (not permitted), skipping them, starting with '{}'.",
                    show(&entry.name)
                );
                self.can_mknod = false;
                self.stats.skipped += 1;
                return Ok(false);
            }
            Err(Errno::EEXIST) => {
                let st = sys::lstat_at(parent.as_fd(), base)
                    .map_err(|e| failed(e, &entry.name, "cannot stat existing file"))?;
                self.remove_existing(parent.as_fd(), base, &st, &entry.name)?;
                mknod().map_err(|e| failed(e, &entry.name, "cannot create node"))?;
            }
            other => other.map_err(|e| failed(e, &entry.name, "cannot create node"))?,
        }
        self.node_metadata(parent.as_fd(), base, entry, true)?;
        Ok(true)
    }

    /// Metadata of a node we hold no fd for (symlink, device, FIFO), by name without
    /// following it.
    fn node_metadata(
        &mut self,
        parent: BorrowedFd<'_>,
        base: &CStr,
        entry: &Entry,
        chmod: bool,
    ) -> Result<()> {
        if self.can_chown {
            let r = nix::unistd::fchownat(
                parent,
                base,
                Some(Uid::from_raw(entry.uid)),
                Some(Gid::from_raw(entry.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            self.chown_result(r, &entry.name)?;
        }
        self.set_xattrs(XattrTarget::At(parent, base), entry)?;
        if chmod {
            sys::chmod_at_nofollow(parent, base, entry.mode)
                .map_err(|e| failed(e, &entry.name, "cannot change mode"))?;
        }
        fs::set_mtime_at(parent, base, timespec(entry.mtime))
            .map_err(|e| failed(e, &entry.name, "cannot set modification time"))
    }

    fn chown_fd(&mut self, fd: BorrowedFd<'_>, uid: u32, gid: u32, name: &[u8]) -> Result<()> {
        if !self.can_chown {
            return Ok(());
        }
        let r = nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        self.chown_result(r, name)
    }

    /// EPERM (not privileged) or EINVAL (id not mapped here) turns chown off for the rest
    /// of the run, with one warning.
    fn chown_result(&mut self, r: std::result::Result<(), Errno>, name: &[u8]) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e @ (Errno::EPERM | Errno::EINVAL)) => {
                log::warn!(
                    "Cannot change file ownership ({}), keeping the extracting user as owner, starting with '{}'.",
                    e.desc(),
                    show(name)
                );
                self.can_chown = false;
                Ok(())
            }
            Err(e) => Err(failed(e, name, "cannot change ownership")),
        }
    }

    fn set_xattrs(&mut self, target: XattrTarget<'_>, entry: &Entry) -> Result<()> {
        for (key, value) in &entry.xattrs {
            let ckey = CString::new(key.as_slice()).map_err(|_| {
                refuse(libc::EBADMSG, &entry.name, "xattr name contains a NUL byte")
            })?;
            let r = match &target {
                XattrTarget::Fd(fd) => crate::util::sys::fsetxattr(*fd, &ckey, value),
                XattrTarget::At(dir, base) => fs::set_xattr_at(*dir, base, &ckey, value),
            };
            match r {
                Ok(()) => {}
                Err(e @ (Errno::EPERM | Errno::EACCES | Errno::ENOTSUP)) => {
                    if !self.xattr_warned {
                        self.xattr_warned = true;
                        log::warn!(
                            "Cannot set extended attribute '{}' on '{}' ({}), ignoring this and further xattr failures.",
                            show(key),
                            show(&entry.name),
                            e.desc()
                        );
                    }
                }
                Err(e) => {
                    return Err(failed(
                        e,
                        &entry.name,
                        format_args!("cannot set extended attribute '{}'", show(key)),
                    ))
                }
            }
        }
        Ok(())
    }
}

//! Extracting one member into the tree: creating it (file, directory, symlink, hard
//! link, device, FIFO), replacing what is in its way, and finding or creating its
//! parent directory within the depth limit.
//!
//! Replacement rule (all modes): an existing entry at the path is looked at without
//! following it; a directory entry over a directory changes attributes only; anything
//! else removes what is there (a directory recursively, never crossing a mount point)
//! and creates the new entry. In the plain mode this is how duplicate members behave,
//! in the layer modes it is the image-spec rule.
//!
//! The layer modes hook in through [`Overlay`] (implemented in `layer.rs`): they learn
//! which paths this archive created, and may supply the source of a hard link. This
//! file knows nothing else about layers.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode as Perm, SFlag};
use nix::unistd::UnlinkatFlags;

use super::dirs::Dirs;
use super::entry::{Entry, Kind, SparseMap};
use super::handoff::Handoff;
use super::meta::{DirAttrs, Meta, XattrTarget};
use super::reader::{Reader, BUFFER_SIZE};
use super::{failed, refuse, show, sys, tree, Stats};
use crate::util::error::{Error, Result};

/// What applying a layer adds to extracting a member. The plain mode adds nothing
/// ([`NoOverlay`]).
pub trait Overlay {
    /// This archive created `path`: a member, or a parent directory a member needed.
    fn created(&mut self, path: &[u8]);
    /// The source of a hard link to `target` (normalized) when the layer keeps it
    /// somewhere else than at `target`; None to link to `target` in the tree.
    fn link_source(&mut self, target: &[u8], entry: &Entry) -> Result<Option<(OwnedFd, CString)>>;
}

/// The plain mode: every member is extracted as it is.
pub struct NoOverlay;

impl Overlay for NoOverlay {
    fn created(&mut self, _path: &[u8]) {}

    fn link_source(
        &mut self,
        _target: &[u8],
        _entry: &Entry,
    ) -> Result<Option<(OwnedFd, CString)>> {
        Ok(None)
    }
}

/// Writes members into the tree below `root`.
pub struct Extractor<'a> {
    root: BorrowedFd<'a>,
    dirs: Dirs,
    meta: Meta,
    /// How deep the root lies below `/` (None without `/proc`, where the depth of the
    /// tree cannot be measured), and how deep below the root a member's parent may lie.
    root_depth: Option<usize>,
    max_depth: usize,
    /// False after mknod of a device failed with EPERM once (warned once, then skipped).
    can_mknod: bool,
    slash_warned: bool,
    link_slash_warned: bool,
    pub stats: Stats,
    /// Where written regular files go instead of being closed (`Options::written`).
    pub written: Option<Handoff>,
}

/// Convert a path component to a C string (components never contain NUL).
fn cstr(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("member paths contain no NUL")
}

impl<'a> Extractor<'a> {
    pub fn new(root: BorrowedFd<'a>, max_depth: usize) -> Result<Self> {
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
        Ok(Extractor {
            root,
            dirs: Dirs::new(),
            meta: Meta::new(),
            root_depth,
            max_depth,
            can_mknod: true,
            slash_warned: false,
            link_slash_warned: false,
            stats: Stats::default(),
            written: None,
        })
    }

    /// The directory everything is extracted into.
    pub fn root(&self) -> BorrowedFd<'a> {
        self.root
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

    /// The parent directory for a member and its depth below the root, from the cache
    /// or the delayed-directory stack (the usual case: the stream is inside it), else
    /// resolved in the root, creating missing components. A parent deeper than the
    /// limit is refused, and components that would lie deeper are never created.
    fn parent_dir(
        &mut self,
        parent: &[u8],
        entry: &[u8],
        overlay: &mut dyn Overlay,
    ) -> Result<(Rc<OwnedFd>, usize)> {
        if let Some((fd, depth)) = self.dirs.lookup(parent) {
            self.check_depth(depth, entry)?;
            self.dirs.remember(parent, fd.clone(), depth);
            return Ok((fd, depth));
        }
        // Where creation starts: the depth of the deepest existing ancestor, plus the
        // levels still to create, must stay within the limit.
        let mut creation_depth = None;
        let mut too_deep = false;
        let result = tree::make_parents(
            self.root,
            parent,
            |p| overlay.created(p),
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
        self.dirs.remember(parent, fd.clone(), depth);
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

    /// Apply the attributes of the directories the stream is in that are not ancestors
    /// of `path` (all of them for `None`), innermost first.
    pub fn leave_dirs(&mut self, path: Option<&[u8]>) -> Result<()> {
        self.dirs.leave(path, self.root, &mut self.meta)
    }

    /// Extract `entry` at its normalized `path`, telling `overlay` what was created.
    pub fn extract(
        &mut self,
        reader: &mut Reader<'_>,
        entry: &Entry,
        path: &[u8],
        overlay: &mut dyn Overlay,
    ) -> Result<()> {
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
        let (parent, parent_depth) = self.parent_dir(parent_path, &entry.name, overlay)?;
        let created = match entry.kind {
            Kind::Directory => self.extract_dir(&parent, &base, entry, path, parent_depth + 1)?,
            Kind::Regular => {
                self.extract_file(reader, parent.as_fd(), &base, entry)?;
                true
            }
            Kind::Symlink => self.extract_symlink(&parent, &base, entry)?,
            Kind::HardLink => self.extract_hardlink(&parent, &base, entry, overlay)?,
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                self.extract_node(&parent, &base, entry)?
            }
        };
        if created {
            overlay.created(path);
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
        self.dirs.invalidate();
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
        self.meta.xattrs(XattrTarget::Fd(fd.as_fd()), entry)?;
        self.dirs.entered(path, fd, &st, depth, DirAttrs::of(entry));
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
        let len = self.write_content(reader, &file, entry)?;
        self.meta.file(&file, entry)?;
        if let Some(handoff) = &mut self.written {
            handoff.offer(file, len);
        }
        Ok(())
    }

    /// Returns the file's size.
    fn write_content(
        &mut self,
        reader: &mut Reader<'_>,
        mut file: &File,
        entry: &Entry,
    ) -> Result<u64> {
        let write_failed = |e: std::io::Error| failed(Error::from(e), &entry.name, "cannot write");
        let Some(sparse) = &entry.sparse else {
            let mut len = 0;
            while reader.remaining() > 0 {
                let data = reader.data(BUFFER_SIZE, &entry.name)?;
                file.write_all(data).map_err(write_failed)?;
                len += data.len() as u64;
            }
            return Ok(len);
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
        file.set_len(sparse.real_size).map_err(write_failed)?;
        Ok(sparse.real_size)
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
        self.meta.node(parent.as_fd(), base, entry, false)?;
        Ok(true)
    }

    fn extract_hardlink(
        &mut self,
        parent: &OwnedFd,
        base: &CStr,
        entry: &Entry,
        overlay: &mut dyn Overlay,
    ) -> Result<bool> {
        let target = self.normalize(&entry.link, &entry.name, true)?;
        let (source_dir, source_name) = match overlay.link_source(&target, entry)? {
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
        self.meta.node(parent.as_fd(), base, entry, true)?;
        Ok(true)
    }
}

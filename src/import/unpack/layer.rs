//! Layer semantics for the `aufs` and `oci` modes: whiteouts, opaque directories and the
//! aufs pseudo-link directory.
//!
//! Whiteouts and opaque markers act on the *lower* layers only, whatever their position
//! in the archive. To know what is lower, the unpacker remembers every path this archive
//! created (and, implicitly, all their ancestors) in [`Layer::keep`], as 128-bit keyed
//! hashes of the normalized member path: 16 bytes per path, 20–40 with the hash
//! set's overhead. The rule is then one function, [`Unpacker::remove_lower`]: a
//! whiteout removes everything at and below its path that this archive did not
//! create. An opaque marker applies that to every child of its directory.
//!
//! Paths are compared as the archive spells them (normalized). A layer that reaches the
//! same directory under two spellings (through a symlink) is not recognized as the
//! same; that can only make a whiteout remove a file the same archive wrote through
//! the other spelling, never anything outside the root.
//!
//! Meta entries: in both modes `.wh..wh.*` names other than `.wh..wh..opq` are not
//! extracted (aufs' `.wh..wh.aufs`, `.wh..wh.orph/…`, and anything else of the kind).
//! In the aufs mode the regular files under `/.wh..wh.plnk/` are kept aside in a hidden
//! directory inside the root, so hard links that name them can be made to them; the
//! directory is removed at the end. A bare `.wh.` is an error in both modes, as is a
//! whiteout name used as a directory (`a/.wh.b/c`).

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::hash::{BuildHasher, Hasher};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode as Perm;

use super::apply::Unpacker;
use super::entry::{Entry, Kind};
use super::reader::Reader;
use super::{failed, refuse, sys, tree, Mode};
use crate::util::error::Result;
use crate::util::fs;

const WHITEOUT: &[u8] = b".wh.";
const META: &[u8] = b".wh..wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const PLNK: &[u8] = b".wh..wh.plnk";

/// What to do with a member, by its normalized path.
#[derive(Debug, PartialEq, Eq)]
pub enum Class<'p> {
    Extract,
    /// Not extracted (aufs/oci meta entries).
    Skip,
    /// `dir/.wh.NAME`: remove lower `dir/NAME`.
    Whiteout {
        victim: &'p [u8],
    },
    /// `dir/.wh..wh..opq`: remove the lower children of `dir`.
    Opaque,
    /// A regular file under `/.wh..wh.plnk/` (aufs): keep aside for hard links.
    Stash,
}

/// Classify a member. Errors are reasons for a refusal.
pub fn classify(mode: Mode, path: &[u8]) -> std::result::Result<Class<'_>, &'static str> {
    if mode == Mode::Plain {
        return Ok(Class::Extract);
    }
    let components: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let last = components.len() - 1;
    for (i, c) in components.iter().enumerate() {
        if c.starts_with(META) {
            if i == last && *c == OPAQUE {
                return Ok(Class::Opaque);
            }
            if mode == Mode::Aufs && i == 0 && *c == PLNK && last > 0 {
                return Ok(Class::Stash);
            }
            return Ok(Class::Skip);
        }
        if c.starts_with(WHITEOUT) {
            if i != last {
                return Err("a whiteout name is used as a directory");
            }
            if *c == WHITEOUT {
                return Err("whiteout with an empty name ('.wh.')");
            }
            // `.wh..` and `.wh...` would name the directory itself or its parent.
            if *c == b".wh.." || *c == b".wh..." {
                return Err("whiteout of '.' or '..'");
            }
            return Ok(Class::Whiteout {
                victim: &c[WHITEOUT.len()..],
            });
        }
    }
    Ok(Class::Extract)
}

/// The hidden directory holding aufs pseudo-link sources while unpacking.
pub struct Stash {
    pub name: CString,
    pub fd: OwnedFd,
    /// Its inode: whiteouts and opaque markers skip it by identity, since a symlink in
    /// the lower layer (`up -> ..`) can make the root a directory of any spelling.
    pub dev: u64,
    pub ino: u64,
}

/// Layer-mode state.
pub struct Layer {
    /// Keys for the path hashes (random per unpack, so an archive cannot aim collisions).
    keys: (RandomState, RandomState),
    /// Hashes of the paths this archive created and of all their ancestors.
    keep: HashSet<u128>,
    pub stash: Option<Stash>,
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            keys: (RandomState::new(), RandomState::new()),
            keep: HashSet::new(),
            stash: None,
        }
    }

    fn hash(&self, path: &[u8]) -> u128 {
        let mut a = self.keys.0.build_hasher();
        let mut b = self.keys.1.build_hasher();
        a.write(path);
        b.write(path);
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    }

    /// Remember that this archive created `path` (and so needs its ancestors).
    pub fn record(&mut self, path: &[u8]) {
        let mut p = path;
        // Ancestors of a recorded path are always recorded, so stop at the first known one.
        while !p.is_empty() && self.keep.insert(self.hash(p)) {
            p = tree::split_last(p).0;
        }
    }

    fn kept(&self, path: &[u8]) -> bool {
        self.keep.contains(&self.hash(path))
    }
}

/// The name of a stashed pseudo-link source, from its member path.
fn stash_file_name(layer: &Layer, path: &[u8]) -> CString {
    CString::new(format!("{:032x}", layer.hash(path))).expect("hex has no NUL")
}

impl Unpacker<'_> {
    /// `dir/.wh.NAME`: remove the lower `dir/NAME`. A missing victim (or directory) is
    /// ignored. The directory is resolved in the root; `NAME` itself is never followed.
    pub(super) fn whiteout(&mut self, entry: &Entry, path: &[u8], victim: &[u8]) -> Result<()> {
        self.stats.whiteouts += 1;
        let parent_path = tree::split_last(path).0;
        let parent = match tree::open_dir(self.root, parent_path, OFlag::O_RDONLY) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
            Err(e) => {
                return Err(failed(
                    e,
                    &entry.name,
                    "cannot open the whiteout's directory",
                ))
            }
        };
        let victim_path = tree::join(parent_path, victim);
        let victim = CString::new(victim).expect("no NUL");
        self.remove_lower(parent.as_fd(), &victim, &victim_path, &entry.name)
    }

    /// `dir/.wh..wh..opq`: remove every lower child of `dir`, keep this archive's.
    pub(super) fn opaque(&mut self, entry: &Entry, dir_path: &[u8]) -> Result<()> {
        self.stats.opaque += 1;
        let dir = match tree::open_dir(self.root, dir_path, OFlag::O_RDONLY) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
            Err(e) => return Err(failed(e, &entry.name, "cannot open the opaque directory")),
        };
        self.prune(dir.as_fd(), dir_path, &entry.name)
    }

    /// Remove `dir/name` (member path `path`) and everything below it that this archive
    /// did not create.
    fn remove_lower(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &[u8],
        entry: &[u8],
    ) -> Result<()> {
        let st = match sys::lstat_at(dir, name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(failed(e, entry, "cannot stat whiteout victim")),
        };
        let layer = self.layer.as_ref().expect("layer mode");
        if layer
            .stash
            .as_ref()
            .is_some_and(|s| s.dev == st.st_dev && s.ino == st.st_ino)
        {
            return Ok(());
        }
        if !layer.kept(path) {
            return self.remove_existing(dir, name, &st, entry);
        }
        if !sys::is_dir(&st) {
            return Ok(());
        }
        if fs::is_mount_root(dir, name)
            .map_err(|e| failed(e, entry, "cannot stat whiteout victim"))?
        {
            return Err(failed(
                Errno::EXDEV,
                entry,
                "a whiteout reaches into a mount point",
            ));
        }
        let sub = sys::open_at(
            dir,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            0,
        )
        .map_err(|e| failed(e, entry, "cannot open directory"))?;
        self.prune(sub.as_fd(), path, entry)
    }

    /// Apply [`Self::remove_lower`] to every child of an open directory.
    fn prune(&mut self, dir: BorrowedFd<'_>, path: &[u8], entry: &[u8]) -> Result<()> {
        let children =
            tree::list_dir(dir).map_err(|e| failed(e, entry, "cannot list directory"))?;
        for child in children {
            let child_path = tree::join(path, child.to_bytes());
            self.remove_lower(dir, &child, &child_path, entry)?;
        }
        Ok(())
    }

    /// The stash directory, created on first use.
    fn stash_dir(&mut self, entry: &[u8]) -> Result<BorrowedFd<'_>> {
        let root = self.root;
        let layer = self.layer.as_mut().expect("layer mode");
        if layer.stash.is_none() {
            let name = CString::new(format!(
                ".#unpack-plnk-{:016x}",
                layer.hash(b"\0stash") as u64
            ))
            .expect("no NUL");
            nix::sys::stat::mkdirat(root, name.as_c_str(), Perm::from_bits_truncate(0o700))
                .map_err(|e| failed(e, entry, "cannot create the aufs pseudo-link stash"))?;
            let fd = sys::open_at(
                root,
                &name,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
                0,
            )
            .map_err(|e| failed(e, entry, "cannot open the aufs pseudo-link stash"))?;
            let st = sys::fstat(fd.as_fd())
                .map_err(|e| failed(e, entry, "cannot stat the aufs pseudo-link stash"))?;
            layer.record(name.to_bytes());
            layer.stash = Some(Stash {
                name,
                fd,
                dev: st.st_dev,
                ino: st.st_ino,
            });
        }
        Ok(layer.stash.as_ref().expect("just created").fd.as_fd())
    }

    /// Keep a regular file from `/.wh..wh.plnk/` aside; other entries there are skipped.
    pub(super) fn stash(
        &mut self,
        reader: &mut Reader<'_>,
        entry: &Entry,
        path: &[u8],
    ) -> Result<()> {
        if entry.kind != Kind::Regular {
            self.stats.skipped += 1;
            return Ok(());
        }
        let name = stash_file_name(self.layer.as_ref().expect("layer mode"), path);
        let dir = self
            .stash_dir(&entry.name)?
            .try_clone_to_owned()
            .map_err(|e| {
                failed(
                    crate::util::error::Error::from(e),
                    &entry.name,
                    "cannot duplicate fd",
                )
            })?;
        self.extract_file(reader, dir.as_fd(), &name, entry)
    }

    /// For a hard link into `/.wh..wh.plnk/` (aufs), the stashed source. Fails if the
    /// archive did not carry it; None for any other target.
    pub(super) fn plnk_source(
        &mut self,
        target: &[u8],
        entry: &Entry,
    ) -> Result<Option<(OwnedFd, CString)>> {
        if self.mode != Mode::Aufs
            || !target.starts_with(PLNK)
            || target.get(PLNK.len()) != Some(&b'/')
        {
            return Ok(None);
        }
        let layer = self.layer.as_ref().expect("layer mode");
        let name = stash_file_name(layer, target);
        let Some(stash) = &layer.stash else {
            return Err(refuse(
                libc::ENOENT,
                &entry.name,
                "invalid aufs hard link: its pseudo-link source is not in the layer",
            ));
        };
        let fd = stash.fd.try_clone().map_err(|e| {
            failed(
                crate::util::error::Error::from(e),
                &entry.name,
                "cannot duplicate fd",
            )
        })?;
        if sys::lstat_at(fd.as_fd(), &name).is_err() {
            return Err(refuse(
                libc::ENOENT,
                &entry.name,
                "invalid aufs hard link: its pseudo-link source is not in the layer",
            ));
        }
        Ok(Some((fd, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify(Mode::Plain, b"a/.wh.b"), Ok(Class::Extract));
        assert_eq!(classify(Mode::Oci, b"a/b"), Ok(Class::Extract));
        assert_eq!(
            classify(Mode::Oci, b"a/.wh.b"),
            Ok(Class::Whiteout { victim: b"b" })
        );
        assert_eq!(
            classify(Mode::Oci, b".wh.b"),
            Ok(Class::Whiteout { victim: b"b" })
        );
        assert_eq!(classify(Mode::Oci, b"a/.wh..wh..opq"), Ok(Class::Opaque));
        assert_eq!(classify(Mode::Oci, b"a/.wh..wh.other"), Ok(Class::Skip));
        assert_eq!(classify(Mode::Oci, b".wh..wh.plnk/1.2"), Ok(Class::Skip));
        assert_eq!(classify(Mode::Aufs, b".wh..wh.plnk/1.2"), Ok(Class::Stash));
        assert_eq!(classify(Mode::Aufs, b".wh..wh.plnk"), Ok(Class::Skip));
        assert_eq!(classify(Mode::Aufs, b".wh..wh.aufs"), Ok(Class::Skip));
        assert_eq!(classify(Mode::Aufs, b".wh..wh.orph/x"), Ok(Class::Skip));
        assert!(classify(Mode::Oci, b"a/.wh.").is_err());
        assert!(classify(Mode::Aufs, b".wh.").is_err());
        assert!(classify(Mode::Oci, b"a/.wh.b/c").is_err());
        assert!(classify(Mode::Oci, b".wh..").is_err());
        assert!(classify(Mode::Aufs, b"a/.wh...").is_err());
    }

    #[test]
    fn record_keeps_ancestors() {
        let mut l = Layer::new();
        l.record(b"a/b/c");
        assert!(l.kept(b"a/b/c") && l.kept(b"a/b") && l.kept(b"a"));
        assert!(!l.kept(b"a/b/d") && !l.kept(b"b"));
        l.record(b"a/x");
        assert!(l.kept(b"a/x"));
        assert_eq!(l.keep.len(), 4);
    }
}

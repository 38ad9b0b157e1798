//! Layer semantics for the `aufs` and `oci` modes: whiteouts, opaque directories and the
//! aufs pseudo-link directory.
//!
//! Whiteouts and opaque markers act on the *lower* layers only, whatever their position
//! in the archive. To know what is lower, the layer remembers every path this archive
//! created (and, implicitly, all their ancestors) in [`Layer::keep`], as 128-bit keyed
//! hashes of the normalized member path: 16 bytes per path, 20–40 with the hash
//! set's overhead. The rule is then one function, [`Layer::remove_lower`]: a
//! whiteout removes everything at and below its path that this archive did not
//! create. An opaque marker applies that to every child of its directory.
//!
//! [`Layer`] owns all of this. The unpacker hands it each member ([`Layer::apply`]);
//! members that are extracted go to the [`Extractor`] with the layer as its
//! [`Overlay`], which tells the layer what the archive created and asks it for the
//! sources of aufs pseudo-link hard links.
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

use super::entry::{Entry, Kind};
use super::extract::{Extractor, Overlay};
use super::reader::Reader;
use super::{failed, refuse, sys, tree};
use crate::util::error::{Error, Result};
use crate::util::fs;

const WHITEOUT: &[u8] = b".wh.";
const META: &[u8] = b".wh..wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const PLNK: &[u8] = b".wh..wh.plnk";

/// Which layer format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// A Docker v1 layer (aufs whiteouts, `.wh..wh.plnk` pseudo-links).
    Aufs,
    /// An OCI image layer.
    Oci,
}

/// What to do with a member, by its normalized path.
#[derive(Debug, PartialEq, Eq)]
enum Class<'p> {
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
fn classify(flavour: Flavour, path: &[u8]) -> std::result::Result<Class<'_>, &'static str> {
    let components: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let last = components.len() - 1;
    for (i, c) in components.iter().enumerate() {
        if c.starts_with(META) {
            if i == last && *c == OPAQUE {
                return Ok(Class::Opaque);
            }
            if flavour == Flavour::Aufs && i == 0 && *c == PLNK && last > 0 {
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
struct Stash {
    name: CString,
    fd: OwnedFd,
    /// Its inode: whiteouts and opaque markers skip it by identity, since a symlink in
    /// the lower layer (`up -> ..`) can make the root a directory of any spelling.
    dev: u64,
    ino: u64,
}

/// One layer being applied.
pub struct Layer {
    flavour: Flavour,
    /// Keys for the path hashes (random per unpack, so an archive cannot aim collisions).
    keys: (RandomState, RandomState),
    /// Hashes of the paths this archive created and of all their ancestors.
    keep: HashSet<u128>,
    /// Created on the first pseudo-link source (aufs); removed by [`Layer::cleanup`].
    stash: Option<Stash>,
}

impl Layer {
    pub fn new(flavour: Flavour) -> Self {
        Layer {
            flavour,
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
    fn record(&mut self, path: &[u8]) {
        let mut p = path;
        // Ancestors of a recorded path are always recorded, so stop at the first known one.
        while !p.is_empty() && self.keep.insert(self.hash(p)) {
            p = tree::split_last(p).0;
        }
    }

    fn kept(&self, path: &[u8]) -> bool {
        self.keep.contains(&self.hash(path))
    }

    /// The name of a stashed pseudo-link source, from its member path.
    fn stash_file_name(&self, path: &[u8]) -> CString {
        CString::new(format!("{:032x}", self.hash(path))).expect("hex has no NUL")
    }

    /// Apply one member at its normalized `path`: extract it, or act on the lower
    /// layers (whiteout, opaque marker), or keep it aside (aufs pseudo-link source).
    pub fn apply(
        &mut self,
        x: &mut Extractor<'_>,
        reader: &mut Reader<'_>,
        entry: &Entry,
        path: &[u8],
    ) -> Result<()> {
        match classify(self.flavour, path)
            .map_err(|reason| refuse(libc::EINVAL, &entry.name, reason))?
        {
            Class::Extract => x.extract(reader, entry, path, self),
            Class::Skip => {
                x.stats.skipped += 1;
                Ok(())
            }
            Class::Whiteout { victim } => self.whiteout(x, entry, path, victim),
            Class::Opaque => self.opaque(x, entry, tree::split_last(path).0),
            Class::Stash => self.stash(x, reader, entry, path),
        }
    }

    /// Remove what only exists while unpacking (the aufs pseudo-link stash).
    pub fn cleanup(&mut self, root: BorrowedFd<'_>) -> Result<()> {
        match self.stash.take() {
            Some(stash) => {
                drop(stash.fd);
                tree::remove_all(root, &stash.name).map_err(|e| {
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

    /// `dir/.wh.NAME`: remove the lower `dir/NAME`. A missing victim (or directory) is
    /// ignored. The directory is resolved in the root; `NAME` itself is never followed.
    fn whiteout(
        &self,
        x: &mut Extractor<'_>,
        entry: &Entry,
        path: &[u8],
        victim: &[u8],
    ) -> Result<()> {
        x.stats.whiteouts += 1;
        let parent_path = tree::split_last(path).0;
        let parent = match tree::open_dir(x.root(), parent_path, OFlag::O_RDONLY) {
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
        self.remove_lower(x, parent.as_fd(), &victim, &victim_path, &entry.name)
    }

    /// `dir/.wh..wh..opq`: remove every lower child of `dir`, keep this archive's.
    fn opaque(&self, x: &mut Extractor<'_>, entry: &Entry, dir_path: &[u8]) -> Result<()> {
        x.stats.opaque += 1;
        let dir = match tree::open_dir(x.root(), dir_path, OFlag::O_RDONLY) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
            Err(e) => return Err(failed(e, &entry.name, "cannot open the opaque directory")),
        };
        self.prune(x, dir.as_fd(), dir_path, &entry.name)
    }

    /// Remove `dir/name` (member path `path`) and everything below it that this archive
    /// did not create.
    fn remove_lower(
        &self,
        x: &mut Extractor<'_>,
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
        if self
            .stash
            .as_ref()
            .is_some_and(|s| s.dev == st.st_dev && s.ino == st.st_ino)
        {
            return Ok(());
        }
        if !self.kept(path) {
            return x.remove_existing(dir, name, &st, entry);
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
        self.prune(x, sub.as_fd(), path, entry)
    }

    /// Apply [`Self::remove_lower`] to every child of an open directory.
    fn prune(
        &self,
        x: &mut Extractor<'_>,
        dir: BorrowedFd<'_>,
        path: &[u8],
        entry: &[u8],
    ) -> Result<()> {
        let children =
            tree::list_dir(dir).map_err(|e| failed(e, entry, "cannot list directory"))?;
        for child in children {
            let child_path = tree::join(path, child.to_bytes());
            self.remove_lower(x, dir, &child, &child_path, entry)?;
        }
        Ok(())
    }

    /// The stash directory, created on first use.
    fn stash_dir(&mut self, root: BorrowedFd<'_>, entry: &[u8]) -> Result<BorrowedFd<'_>> {
        let stash = match self.stash.take() {
            Some(stash) => stash,
            None => {
                let name = CString::new(format!(
                    ".#unpack-plnk-{:016x}",
                    self.hash(b"\0stash") as u64
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
                self.record(name.to_bytes());
                Stash {
                    name,
                    fd,
                    dev: st.st_dev,
                    ino: st.st_ino,
                }
            }
        };
        Ok(self.stash.insert(stash).fd.as_fd())
    }

    /// Keep a regular file from `/.wh..wh.plnk/` aside; other entries there are skipped.
    fn stash(
        &mut self,
        x: &mut Extractor<'_>,
        reader: &mut Reader<'_>,
        entry: &Entry,
        path: &[u8],
    ) -> Result<()> {
        if entry.kind != Kind::Regular {
            x.stats.skipped += 1;
            return Ok(());
        }
        let name = self.stash_file_name(path);
        let dir = self.stash_dir(x.root(), &entry.name)?;
        x.extract_file(reader, dir, &name, entry)
    }
}

impl Overlay for Layer {
    fn created(&mut self, path: &[u8]) {
        self.record(path);
    }

    /// For a hard link into `/.wh..wh.plnk/` (aufs), the stashed source. Fails if the
    /// archive did not carry it; None for any other target.
    fn link_source(&mut self, target: &[u8], entry: &Entry) -> Result<Option<(OwnedFd, CString)>> {
        if self.flavour != Flavour::Aufs
            || !target.starts_with(PLNK)
            || target.get(PLNK.len()) != Some(&b'/')
        {
            return Ok(None);
        }
        let name = self.stash_file_name(target);
        let Some(stash) = &self.stash else {
            return Err(refuse(
                libc::ENOENT,
                &entry.name,
                "invalid aufs hard link: its pseudo-link source is not in the layer",
            ));
        };
        let fd = stash
            .fd
            .try_clone()
            .map_err(|e| failed(Error::from(e), &entry.name, "cannot duplicate fd"))?;
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
        assert_eq!(classify(Flavour::Oci, b"a/b"), Ok(Class::Extract));
        assert_eq!(
            classify(Flavour::Oci, b"a/.wh.b"),
            Ok(Class::Whiteout { victim: b"b" })
        );
        assert_eq!(
            classify(Flavour::Oci, b".wh.b"),
            Ok(Class::Whiteout { victim: b"b" })
        );
        assert_eq!(classify(Flavour::Oci, b"a/.wh..wh..opq"), Ok(Class::Opaque));
        assert_eq!(classify(Flavour::Oci, b"a/.wh..wh.other"), Ok(Class::Skip));
        assert_eq!(classify(Flavour::Oci, b".wh..wh.plnk/1.2"), Ok(Class::Skip));
        assert_eq!(
            classify(Flavour::Aufs, b".wh..wh.plnk/1.2"),
            Ok(Class::Stash)
        );
        assert_eq!(classify(Flavour::Aufs, b".wh..wh.plnk"), Ok(Class::Skip));
        assert_eq!(classify(Flavour::Aufs, b".wh..wh.aufs"), Ok(Class::Skip));
        assert_eq!(classify(Flavour::Aufs, b".wh..wh.orph/x"), Ok(Class::Skip));
        assert!(classify(Flavour::Oci, b"a/.wh.").is_err());
        assert!(classify(Flavour::Aufs, b".wh.").is_err());
        assert!(classify(Flavour::Oci, b"a/.wh.b/c").is_err());
        assert!(classify(Flavour::Oci, b".wh..").is_err());
        assert!(classify(Flavour::Aufs, b"a/.wh...").is_err());
    }

    #[test]
    fn record_keeps_ancestors() {
        let mut l = Layer::new(Flavour::Oci);
        l.record(b"a/b/c");
        assert!(l.kept(b"a/b/c") && l.kept(b"a/b") && l.kept(b"a"));
        assert!(!l.kept(b"a/b/d") && !l.kept(b"b"));
        l.record(b"a/x");
        assert!(l.kept(b"a/x"));
        assert_eq!(l.keep.len(), 4);
    }
}

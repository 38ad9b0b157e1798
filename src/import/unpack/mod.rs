//! The in-process tar unpacker shared by `pull-tar`, `pull-dkr` and `pull-oci`.
//!
//! [`unpack`] reads one decompressed tar stream from a blocking reader and applies it to
//! the tree below a directory fd. It replaces the C tool's `tar --numeric-owner -px`
//! child plus its `nftw` whiteout pass, and it is built so that a hostile archive (or a
//! hostile lower layer) cannot touch anything outside that directory:
//!
//! * every path is resolved relative to the root fd with `openat2(RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS)`, and the last component is then handled with `*at` calls
//!   that never follow it; symlinks in the middle of a path are followed *inside* the
//!   root, as the container itself would see them (`tree.rs`);
//! * member names are normalized first: a leading `/` is stripped (one warning), `.`
//!   components are dropped, and any `..` component is refused;
//! * the stream is parsed here, with bounded memory (`reader.rs`, `header.rs`).
//!
//! # Modes
//! * [`Mode::Plain`] extracts everything as GNU tar would (`.wh.*` files are ordinary).
//! * [`Mode::Aufs`] and [`Mode::Oci`] apply a layer onto the lower layers already in the
//!   tree: whiteouts, opaque directories and replace-on-apply (`layer.rs`).
//!
//! # Error messages
//! Every failure is logged once, where it is detected, as one line naming the member:
//! `Refusing to extract 'NAME': REASON.` when the archive asks for something we do not
//! do (bad names, limits, malformed headers), and `Failed to extract 'NAME': WHAT: ERRNO`
//! when a system call fails. Errors that come out of the input stream (the download
//! failed or was cancelled) are passed through unchanged. On error the tree is left as it
//! is; the caller removes it.
//!
//! # Where the result differs from GNU tar (on purpose)
//! On benign archives the tree is the one `tar --numeric-owner -px --xattrs
//! --xattrs-include='*'` makes (`tests/unpack_gnu_tar.rs` proves it). The differences:
//! * a member name or hard-link target with a `..` component fails the unpack (GNU
//!   tar strips leading `../` and skips members with `..` inside);
//! * a non-directory member over a non-empty directory replaces it recursively (GNU
//!   tar removes only empty directories and reports an error otherwise);
//! * symlinks are created where they appear (GNU tar defers those with absolute or
//!   `..` targets to the end of the run, so with duplicate members its earlier symlink
//!   can win over a later member);
//! * which directories a member is inside is decided on the normalized path (GNU tar
//!   compares the names as spelled, so `a/x` after `./a/` restores `a`'s times early);
//! * device nodes without privilege, and chown without privilege, are skipped with one
//!   warning each for the whole run (GNU tar reports every member);
//! * a member whose parent directory would lie more than [`Limits::max_depth`] levels
//!   below the root (counted on the physical tree) fails the unpack, before any level
//!   beyond the limit is created. A name alone cannot spell that depth, but every
//!   symlink on the way adds up to a name's worth of levels; GNU tar builds such trees
//!   from a few dozen members, deep enough to overflow the stack of a recursive tree
//!   walk (our replacement of a directory, `rm_rf`, copies of a layer).
//!
//! PAX global headers (`g`) apply to every later member unless a local record
//! overrides them, as in GNU tar. Old GNU sparse (`S`) and PAX sparse 0.0, 0.1 and 1.0
//! are supported; holes are left as holes.
//!
//! # Memory
//! Constant apart from: the 1 MiB input buffer; one meta header at a time (≤
//! [`Limits::max_header_bytes`]); sparse maps (16 bytes per segment, ≤
//! [`Limits::max_sparse_entries`]); the delayed directory attributes of the directories
//! the stream is currently inside (a stack, one record per nesting level, as GNU tar);
//! and in the layer modes a hash set of the paths this archive created and their
//! ancestors (a 16-byte hash each; with the set's control bytes and load factor,
//! 20–40 bytes per path: about 2 MiB for a 50,000-file layer).
//!
//! # Files
//! Dependencies point one way (no two files import each other): `apply` uses `layer`,
//! `extract` and `handoff`; `layer` uses `extract`; `extract` uses `dirs`, `meta` and
//! `handoff`; `dirs` uses `meta`; below them all lie `tree` and `sys`. `reader` uses
//! `pax`, `header` and `entry`.
//! * `apply.rs`: the loop over the members; picks plain extraction or the layer;
//! * `layer.rs`: what a layer means (whiteouts, opaque directories, aufs pseudo-links);
//! * `extract.rs`: creating one member, replacing what is in its way, its parents;
//! * `dirs.rs`: open directories and their delayed attributes;
//! * `meta.rs`: owner, xattrs, mode and mtime of extracted nodes;
//! * `reader.rs`: the stream, with bounded memory; `entry.rs`: what it yields;
//!   `pax.rs`: PAX records; `header.rs`: header blocks;
//! * `tree.rs`: path operations confined to the root; `sys.rs`: system calls;
//! * `handoff.rs`: written files handed to another thread in batches;
//! * `fanout.rs`: one stream into several trees at once ([`unpack_trees`]), an unpacker
//!   per tree on threads of their own; it uses only [`unpack`].
//!
//! # Callers
//! `unpack` blocks: run it on a worker thread, never on the event loop. The reader is
//! the job's decompressed stream; a read error (download failed or cancelled) is
//! returned as it is. pull-tar uses [`Mode::Plain`] into a fresh directory; pull-dkr
//! [`Mode::Aufs`] and pull-oci [`Mode::Oci`] into a directory holding the merged lower
//! layers (a snapshot of the parent layer, or the same directory layer after layer).

mod apply;
mod dirs;
mod entry;
mod extract;
mod fanout;
mod handoff;
mod header;
mod index;
mod layer;
mod meta;
mod pax;
mod reader;
mod sys;
mod tree;

pub use fanout::unpack_trees;
pub use handoff::Written;
pub use index::{members, Member};

use std::fmt;
use std::io::Read;
use std::os::fd::BorrowedFd;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// How the archive is applied to the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A whole root file system (pull-tar): every member is extracted as it is.
    Plain,
    /// A Docker v1 layer (pull-dkr): aufs whiteouts, opaque markers and `.wh..wh.plnk`
    /// hard-link sources; the other `.wh..wh.*` meta entries are skipped.
    Aufs,
    /// An OCI image layer (pull-oci): image-spec whiteouts and opaque directories; a bare
    /// `.wh.` is an error; `.wh..wh.*` meta entries other than `.wh..wh..opq` are skipped.
    Oci,
}

/// Resource limits. Exceeding any of them fails the unpack with a message naming the
/// member and the limit.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes read from the (decompressed) stream in total. Stops decompression bombs.
    /// Default 256 GiB. (EFBIG)
    pub max_total_bytes: u64,
    /// Archive members (meta headers not counted). Default 10,000,000. (E2BIG)
    pub max_entries: u64,
    /// Length of a member name or link target in bytes. Default 4096, `PATH_MAX`.
    /// (ENAMETOOLONG)
    pub max_path_len: usize,
    /// Size of one GNU long name/link or PAX extended header. Default 1 MiB. (EFBIG)
    pub max_header_bytes: usize,
    /// Extended attributes per member. Default 1024. (EBADMSG)
    pub max_xattrs: usize,
    /// Size of one extended attribute value. Default 64 KiB, the kernel's `XATTR_SIZE_MAX`.
    /// (EBADMSG)
    pub max_xattr_size: usize,
    /// Segments in one sparse file's map. Default 65536 (1 MiB of map). (EFBIG/EBADMSG)
    pub max_sparse_entries: usize,
    /// Directory levels below the root at which a member's parent may lie, counted on
    /// the physical tree (symlinks in the lower layer or the archive followed). Default
    /// 2048, what a name of `PATH_MAX` bytes can spell. (ENAMETOOLONG)
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: 256 << 30,
            max_entries: 10_000_000,
            max_path_len: 4096,
            max_header_bytes: 1 << 20,
            max_xattrs: 1024,
            max_xattr_size: 64 << 10,
            max_sparse_entries: 65536,
            max_depth: 2048,
        }
    }
}

/// How to unpack.
#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    pub limits: Limits,
    /// Set by another thread (SIGINT) to stop the unpack with ECANCELED. Checked between
    /// members and every time the input buffer is refilled.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Regular files, once written (content and metadata), are offered here in batches
    /// instead of being closed: a thread may start their writeback early (pull-oci on
    /// btrfs). Never waited for: when the queue is full the files are closed as usual.
    pub written: Option<SyncSender<Vec<Written>>>,
}

impl Options {
    /// Default limits, no cancel flag.
    pub fn new(mode: Mode) -> Self {
        Options {
            mode,
            limits: Limits::default(),
            cancel: None,
            written: None,
        }
    }
}

/// What an unpack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Archive members processed (including whiteouts and skipped meta entries).
    pub entries: u64,
    /// Bytes read from the stream, up to and including its end.
    pub bytes: u64,
    /// Whiteout entries applied (layer modes).
    pub whiteouts: u64,
    /// Opaque markers applied (layer modes).
    pub opaque: u64,
    /// Members not extracted: aufs meta entries, and device nodes when not permitted.
    pub skipped: u64,
}

/// Apply one tar stream to the tree below `root` (a directory fd).
///
/// Reads `input` to its end (including anything after the end-of-archive marker), so a
/// wrapper that hashes the stream sees every byte. Runs on the calling thread and
/// blocks; call it from a worker thread.
pub fn unpack(root: BorrowedFd<'_>, input: &mut dyn Read, options: &Options) -> Result<Stats> {
    let mut reader = reader::Reader::new(input, &options.limits, options.cancel.clone());
    let mut unpacker = apply::Unpacker::new(root, options.mode, options.limits.max_depth)?;
    unpacker.hand_written_files_to(options.written.clone());
    let result = unpacker.run(&mut reader);
    let cleanup = unpacker.cleanup();
    let mut stats = result?;
    cleanup?;
    stats.bytes = reader.bytes_read();
    Ok(stats)
}

/// A member name for messages: lossy UTF-8, control characters escaped, and cut at 1024
/// bytes so a hostile name cannot flood the log.
pub(crate) fn show(name: &[u8]) -> String {
    let cut = &name[..name.len().min(1024)];
    let mut s = String::with_capacity(cut.len());
    for c in String::from_utf8_lossy(cut).chars() {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    if cut.len() < name.len() {
        s.push('…');
    }
    s
}

/// Log and build the error for a member the archive asks us to do something refused with.
pub(crate) fn refuse(errno: i32, name: &[u8], reason: impl fmt::Display) -> Error {
    log_error_errno!(
        Error::new(errno),
        "Refusing to extract '{}': {}.",
        show(name),
        reason
    )
}

/// Log and build the error for a system call that failed while extracting a member.
pub(crate) fn failed(err: impl Into<Error>, name: &[u8], what: impl fmt::Display) -> Error {
    let err = err.into();
    log_error_errno!(
        Error::new(err.errno()),
        "Failed to extract '{}': {}: {}",
        show(name),
        what,
        err
    )
}

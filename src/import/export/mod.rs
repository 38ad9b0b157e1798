//! Exports: an image written out as one stream, a tar archive of a directory tree or
//! the bytes of a raw disk image, compressed on a worker thread (upstream's
//! `systemd-export tar|raw`, importd's `ExportTar`/`ExportRaw`).
//!
//! [`run`] is the whole pipeline: it reads the image on the calling thread (blocking:
//! call it from a worker, never from the event loop) and hands the stream
//! to [`encode_on_worker`], whose encoder writes the output on a thread of its own; a
//! bounded queue between the two keeps memory bounded whatever the image's size. The
//! pieces are public too, for callers that build their own pipeline.
//!
//! * `tar.rs`: [`write_tree`], the walk of the tree and the members it writes (and
//!   where we match Debian's `systemd-export` rather than GNU tar);
//! * `header.rs`: the ustar and PAX header blocks and the sparse map's encoding;
//! * `sparse.rs`: where a file's data lies (`SEEK_DATA`/`SEEK_HOLE`), and the bounded
//!   sparse map;
//! * `data.rs`: copying file data into the stream (cancel, shrink, progress);
//! * `raw.rs`: [`copy`], a raw image into the stream.
//!
//! `tar.rs` and `raw.rs` use the three below them; no two siblings use each other
//! otherwise.

mod data;
mod header;
mod raw;
mod sparse;
mod tar;

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::sync::atomic::AtomicBool;

pub use raw::copy;
pub use tar::write_tree;

use crate::import::stream::{encode_on_worker, Encoding};
use crate::util::error::Result;

/// What an export did so far (passed to the progress callback) or in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Archive members written (tar; 0 for raw).
    pub entries: u64,
    /// Bytes of file data read from the image (tar: holes not counted; raw: the image's
    /// bytes passed on, holes included).
    pub bytes_read: u64,
    /// Bytes of the uncompressed stream produced so far.
    pub bytes_written: u64,
    /// Entries not archived: sockets, and entries that disappeared during the walk.
    pub skipped: u64,
    /// Bytes written to the output (compressed); known only at the end, 0 before.
    pub output_bytes: u64,
}

/// What to export.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A directory tree (an image of type directory or subvolume), as a tar archive.
    Tree(BorrowedFd<'a>),
    /// A raw disk image (a regular file), as its bytes.
    Raw(BorrowedFd<'a>),
}

/// Export `source` to `out`, compressed as `encoding` says: the whole pipeline. See
/// [`write_tree`] and [`copy`] for what they read and write, and [`encode_on_worker`]
/// for the compression and its error messages. Blocks until the output is written.
pub fn run(
    source: Source<'_>,
    encoding: impl Into<Encoding>,
    out: &mut (dyn Write + Send),
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&Stats),
) -> Result<Stats> {
    let (mut stats, output_bytes) =
        encode_on_worker(encoding.into(), out, |stream| match source {
            Source::Tree(root) => write_tree(root, stream, cancel, progress),
            Source::Raw(image) => copy(image, stream, cancel, progress),
        })?;
    stats.output_bytes = output_bytes;
    Ok(stats)
}

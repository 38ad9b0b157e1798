//! Applying one downloaded layer: the work of one task, on two threads.
//!
//! The layer's blob arrives in its spool file, possibly still downloading (the reader
//! reaches its end only once its size and sha256 were verified). The
//! *decompress* thread reads it, undoes gzip or zstd (detected from the first bytes) and
//! hands fixed-size buffers over a bounded queue to the calling thread, which hashes the
//! plain tar stream (the DiffID) while the unpacker applies it. Decompression and
//! extraction thus run on both cores at once, and memory stays at a few buffers whatever
//! the layer's size. Detection, decoders and hashing are `import::stream`'s; the threads
//! and the queue are this file's.
//!
//! The target is prepared here as well: on btrfs a snapshot of the parent layer's
//! subvolume (or a new subvolume for the base layer), made read-only once the DiffID
//! checked out; elsewhere the one directory the layers are applied into in turn. Nothing
//! here is visible under a final name: the caller renames after success, and removes the
//! temporary target on failure.

use std::io::{self, BufReader, Read};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::spool::SpoolReader;
use crate::import::store;
use crate::import::stream::{self, HashingReader};
use crate::import::unpack::{self, Mode};
use crate::log_error_errno;
use crate::util::btrfs;
use crate::util::error::{Error, Result};
use crate::util::format::format_bytes;
use crate::util::fs;

/// Size of the buffers between the two threads.
const CHUNK: usize = 256 << 10;
/// Buffers in flight: bounds the memory of one layer's pipeline to about 1.5 MiB.
const QUEUE: usize = 4;
/// Read buffer of the spool file.
const READ_BUFFER: usize = 256 << 10;

/// Where the layer goes.
pub enum Target {
    /// btrfs: `path` is created as a snapshot of `parent` (or as an empty subvolume for the
    /// base layer) and made read-only once the layer checked out.
    Subvolume {
        parent: Option<PathBuf>,
        path: PathBuf,
    },
    /// A plain directory that already holds the lower layers (created first if `create`).
    Directory { path: PathBuf, create: bool },
}

/// One layer to apply.
pub struct ApplyWork {
    /// The layer's digest (of the compressed blob), for messages.
    pub layer: Digest,
    /// The DiffID the config promises.
    pub diff_id: Digest,
    /// The blob, possibly still downloading.
    pub input: SpoolReader,
    /// The spool's lock when this is its last use: removed when the work ends (unless
    /// another process uses it).
    pub spool_owned: Option<store::Partial>,
    pub target: Target,
    /// Most bytes the layer may expand to (the decompressed tar stream).
    pub size_max: u64,
    pub cancel: Arc<AtomicBool>,
}

/// Apply the layer; errors are logged where they are detected.
pub fn apply(work: ApplyWork) -> Result<()> {
    let ApplyWork {
        layer,
        diff_id: expected,
        input,
        spool_owned,
        target,
        size_max,
        cancel,
    } = work;
    let root = prepare_target(&target)?;
    let result = unpack_stream(input, &layer, size_max, &root, &cancel);
    drop(spool_owned);
    let diff_id = result?;
    if diff_id != expected {
        return Err(log_error_errno!(
            Error::new(libc::EBADMSG),
            "Layer {} DiffID mismatch: the image config says {}, the layer is {}.",
            layer,
            expected,
            diff_id
        ));
    }
    if let Target::Subvolume { path, .. } = &target {
        btrfs::subvol_set_read_only(root.as_fd(), true).map_err(|e| {
            log_error_errno!(
                e.clone(),
                "Failed to make {} read-only: {}",
                path.display(),
                e
            )
        })?;
    }
    Ok(())
}

/// Create the target if needed and open it.
fn prepare_target(target: &Target) -> Result<std::os::fd::OwnedFd> {
    let created = match target {
        Target::Subvolume {
            parent: Some(parent),
            path,
        } => {
            let (dir, name) = fs::split_parent(path)?;
            let parent_fd = fs::open_dir(parent)?;
            btrfs::subvol_snapshot(parent_fd.as_fd(), fs::open_dir(dir)?.as_fd(), name, false)
                .map_err(|e| {
                    log_error_errno!(
                        e.clone(),
                        "Failed to snapshot {} to {}: {}",
                        parent.display(),
                        path.display(),
                        e
                    )
                })
                .map(|()| path)
        }
        // A new subvolume (btrfs) or directory (elsewhere).
        Target::Subvolume { parent: None, path } | Target::Directory { path, create: true } => {
            return store::make_tree(path)
        }
        Target::Directory {
            path,
            create: false,
        } => Ok(path),
    }?;
    fs::open_dir(created)
        .map_err(|e| log_error_errno!(e.clone(), "Failed to open {}: {}", created.display(), e))
}

/// Decompress the blob on a second thread and unpack it here; returns the DiffID.
fn unpack_stream(
    input: SpoolReader,
    layer: &Digest,
    size_max: u64,
    root: &std::os::fd::OwnedFd,
    cancel: &Arc<AtomicBool>,
) -> Result<Digest> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<Filled>>(QUEUE);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    let thread_layer = layer.clone();
    let thread_cancel = cancel.clone();
    let decompressor = std::thread::Builder::new()
        .name("oci-decompress".into())
        .spawn(move || {
            let limits = (&thread_layer, size_max);
            decompress(input, limits, &thread_cancel, &full_tx, &empty_rx)
        })
        .map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to start decompression thread: {}", e)
        })?;

    let queue = QueueReader {
        full: full_rx,
        empty: empty_tx,
        current: Vec::new(),
        len: 0,
        pos: 0,
    };
    let mut reader = HashingReader::new(queue, Sha256::new());
    let options = unpack::Options {
        cancel: Some(cancel.clone()),
        ..unpack::Options::new(Mode::Oci)
    };
    let result = unpack::unpack(root.as_fd(), &mut reader, &options);
    // Dropping the receiving end makes a decompressor blocked on a full queue stop.
    let (QueueReader { full, .. }, hasher) = reader.into_parts();
    drop(full);
    let _ = decompressor.join();
    result?;
    Ok(Digest::from_hasher(hasher))
}

/// The decompress thread: detect the compression, fill buffers from the decoder and queue
/// them; a decoder error is logged here and queued in place of data.
fn decompress(
    input: SpoolReader,
    (layer, size_max): (&Digest, u64),
    cancel: &AtomicBool,
    full: &SyncSender<Result<Filled>>,
    empty: &Receiver<Vec<u8>>,
) {
    let spool = input.spool();
    // Malformed bytes of a blob whose download failed its size or digest check are that
    // check's failure (already reported, or about to be): say nothing of them then.
    let settled = |report: &dyn Fn() -> Error| match spool.wait_end() {
        Err(e) => e,
        Ok(()) => report(),
    };
    let damaged = |what: String| {
        settled(&|| {
            log_error_errno!(
                Error::new(libc::EIO),
                "Failed to decompress layer {}: {}",
                layer,
                what
            )
        })
    };
    let input = BufReader::with_capacity(READ_BUFFER, input);
    let (compression, input) = match stream::sniff(input) {
        Ok(found) => found,
        Err(e) => {
            let _ = full.send(Err(Error::from(e)));
            return;
        }
    };
    let mut decoder = match compression.decoder(input) {
        Ok(d) => d,
        Err(e) => {
            let e = Error::from(e);
            let _ = full.send(Err(damaged(
                e.msg().map_or_else(|| e.strerror(), str::to_string),
            )));
            return;
        }
    };
    let mut expanded = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            let _ = full.send(Err(Error::with_message(libc::ECANCELED, "Cancelled.")));
            return;
        }
        // Recycled buffers keep their full length, so only a new one is zeroed.
        let mut buf = empty.try_recv().unwrap_or_else(|_| vec![0; CHUNK]);
        let mut filled = 0;
        while filled < CHUNK {
            match decoder.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The blob was refused or the pull cancelled: already reported.
                Err(e) if !stream::is_codec_error(&e) => {
                    let _ = full.send(Err(Error::from(e)));
                    return;
                }
                Err(e) => {
                    let _ = full.send(Err(damaged(e.to_string())));
                    return;
                }
            }
        }
        if filled == 0 {
            return;
        }
        expanded += filled as u64;
        if expanded > size_max {
            let _ = full.send(Err(settled(&|| {
                log_error_errno!(
                    Error::new(libc::EFBIG),
                    "Layer {} expands to more than {}, refusing (the limit is set with --layer-size-max=).",
                    layer,
                    format_bytes(size_max)
                )
            })));
            return;
        }
        if full.send(Ok((buf, filled))).is_err() {
            return;
        }
    }
}

/// A buffer of [`CHUNK`] bytes and how many of them hold data.
type Filled = (Vec<u8>, usize);

/// The unpacking side of the queue.
struct QueueReader {
    full: Receiver<Result<Filled>>,
    /// Spent buffers go back to the decompressor.
    empty: Sender<Vec<u8>>,
    current: Vec<u8>,
    /// Bytes of `current` that hold data.
    len: usize,
    pos: usize,
}

impl Read for QueueReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos >= self.len {
            match self.full.recv() {
                // The decompressor finished (it drops its sender).
                Err(_) => return Ok(0),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok((next, len))) => {
                    let spent = std::mem::replace(&mut self.current, next);
                    if !spent.is_empty() {
                        let _ = self.empty.send(spent);
                    }
                    self.len = len;
                    self.pos = 0;
                }
            }
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

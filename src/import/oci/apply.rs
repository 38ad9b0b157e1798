//! Applying one downloaded layer: the work of one task, on two threads.
//!
//! The layer's blob arrives in its spool file, possibly still downloading (the reader
//! reaches its end only once its size and sha256 were verified). The
//! *decompress* thread reads it, undoes gzip or zstd (detected from the first bytes) and
//! hands fixed-size buffers over a bounded queue to the *DiffID* thread, which hashes the
//! plain tar stream and passes each buffer on over a second bounded queue to the calling
//! thread, where the unpacker applies it. Decompression, hashing and extraction thus
//! spread over both cores whichever of them a layer makes the heaviest, and memory stays
//! at a few buffers whatever the layer's size. Detection and decoders are
//! `import::stream`'s; the threads and the queues are this file's.
//!
//! The target is prepared here as well: the one tree the layers are applied into in turn
//! (made by the first layer applied: on btrfs a subvolume, a writable snapshot of the
//! highest cached chain when there is one), and on btrfs, once the DiffID checked out, a
//! read-only snapshot of that tree as the layer's chain subvolume. One snapshot per layer
//! is one btrfs transaction commit (and a flush of the tree's dirty data) per layer; the
//! tree itself becomes the local image. So that the flush does not hold up the next layer,
//! the layer's data goes to the disk while the layer is still being applied
//! ([`Writeback`], on the other core), and the snapshot finds little left to write.
//! Nothing here is visible under a final name: the caller renames after success, and
//! removes the temporary tree and chain on failure.

use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::spool::SpoolReader;
use super::writeback::Writeback;
use crate::import::store;
use crate::import::stream;
use crate::import::unpack::{self, Mode};
use crate::log_error_errno;
use crate::util::btrfs;
use crate::util::error::{Error, Result};
use crate::util::format::format_bytes;
use crate::util::fs;

/// Size of the buffers between the pipeline's threads.
const CHUNK: usize = 256 << 10;
/// Buffers between the decompressor and the DiffID hasher, which keeps up easily.
const RAW_QUEUE: usize = 4;
/// Buffers between the hasher and the unpacker: 12 MiB, so that the two sides of the
/// pipeline run at their own pace through a layer's stretches of big files (where
/// inflating is the work and the unpacker waits) and of small ones (where the unpacker's
/// system calls are). With 4 buffers each side stalled on the other for about 0.1 s per
/// debian layer on btrfs, and the pull took 3-6 % longer (bench/README.md). Bounds the
/// memory of one layer's pipeline to about 14 MiB.
const FULL_QUEUE: usize = 48;
/// Read buffer of the spool file.
const READ_BUFFER: usize = 256 << 10;

/// Where the layer goes.
pub struct Target {
    /// The tree the layers are applied into in turn (a subvolume on btrfs).
    pub tree: PathBuf,
    /// How the tree comes to be, if this is the first layer applied.
    pub make: Make,
    /// btrfs: where the read-only snapshot of the tree goes once the layer checked out
    /// (a temporary name: the caller moves it into place as the layer's chain).
    pub chain: Option<PathBuf>,
}

/// How the tree comes to be.
pub enum Make {
    /// It holds the layers below already.
    Existing,
    /// A new subvolume (btrfs) or directory (elsewhere): the base layer.
    New,
    /// btrfs: a writable snapshot of the highest chain subvolume present.
    SnapshotOf(PathBuf),
}

/// A layer's blob as it is read here: a spool, possibly still downloading (pull-oci from a
/// registry), or a blob already verified and complete (an archive source's member).
pub enum LayerBlob {
    Spool(SpoolReader),
    Verified(Box<dyn Read + Send>),
}

impl From<SpoolReader> for LayerBlob {
    fn from(reader: SpoolReader) -> Self {
        LayerBlob::Spool(reader)
    }
}

impl Read for LayerBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LayerBlob::Spool(r) => r.read(buf),
            LayerBlob::Verified(r) => r.read(buf),
        }
    }
}

/// One layer to apply.
pub struct ApplyWork {
    /// The layer's digest (of the compressed blob), for messages.
    pub layer: Digest,
    /// The DiffID the config promises.
    pub diff_id: Digest,
    /// The blob, possibly still downloading.
    pub input: LayerBlob,
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
    let start = Instant::now();
    // btrfs: the chain snapshot below must first get the layer's data to the disk; threads
    // start that while the layer is applied, on the other core.
    let writeback = match target.chain.as_ref().map(|_| root.try_clone()) {
        Some(Ok(tree)) => Some(Writeback::start(tree)?),
        // Without a second descriptor the snapshot writes the data out itself.
        Some(Err(_)) | None => None,
    };
    let input = Input {
        blob: input,
        spool_owned,
        size_max,
    };
    let result = unpack_stream(input, &layer, &root, &cancel, writeback.as_ref());
    drop(writeback);
    log::debug!("Layer {layer} applied in {:.1?}.", start.elapsed());
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
    if let Some(chain) = &target.chain {
        let start = Instant::now();
        snapshot(root.as_fd(), &target.tree, chain, true)?;
        log::debug!(
            "Layer {layer}: chain snapshot taken in {:.1?}.",
            start.elapsed()
        );
    }
    Ok(())
}

/// Create the tree if needed and open it.
fn prepare_target(target: &Target) -> Result<OwnedFd> {
    let tree = &target.tree;
    match &target.make {
        Make::New => return store::make_tree(tree),
        Make::SnapshotOf(base) => {
            let base_fd = fs::open_dir(base).map_err(|e| {
                log_error_errno!(e.clone(), "Failed to open {}: {}", base.display(), e)
            })?;
            snapshot(base_fd.as_fd(), base, tree, false)?;
        }
        Make::Existing => {}
    }
    fs::open_dir(tree)
        .map_err(|e| log_error_errno!(e.clone(), "Failed to open {}: {}", tree.display(), e))
}

/// Snapshot the subvolume `src_fd` (at `src`) as `dst`; errors are logged.
fn snapshot(src_fd: BorrowedFd<'_>, src: &Path, dst: &Path, read_only: bool) -> Result<()> {
    let (dir, name) = fs::split_parent(dst)?;
    fs::open_dir(dir)
        .and_then(|dir| btrfs::subvol_snapshot(src_fd, dir.as_fd(), name, read_only))
        .map_err(|e| {
            log_error_errno!(
                e.clone(),
                "Failed to snapshot {} to {}: {}",
                src.display(),
                dst.display(),
                e
            )
        })
}

/// What the decompress thread reads.
struct Input {
    blob: LayerBlob,
    /// Removed by that thread once it has read the blob (or failed): freeing the spool
    /// overlaps the unpacker's last work instead of following it.
    spool_owned: Option<store::Partial>,
    /// Most bytes the layer may expand to.
    size_max: u64,
}

/// Decompress the blob on one thread, hash the tar stream on a second and unpack it on
/// this one; returns the DiffID.
fn unpack_stream(
    input: Input,
    layer: &Digest,
    root: &OwnedFd,
    cancel: &Arc<AtomicBool>,
    writeback: Option<&Writeback>,
) -> Result<Digest> {
    let (raw_tx, raw_rx) = mpsc::sync_channel::<Result<Filled>>(RAW_QUEUE);
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<Filled>>(FULL_QUEUE);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    let thread_failed = |e: io::Error| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to start decompression thread: {}", e)
    };
    let thread_layer = layer.clone();
    let thread_cancel = cancel.clone();
    let decompressor = std::thread::Builder::new()
        .name("oci-decompress".into())
        .spawn(move || {
            let limits = (&thread_layer, input.size_max);
            decompress(input.blob, limits, &thread_cancel, &raw_tx, &empty_rx);
            drop(input.spool_owned);
        })
        .map_err(thread_failed)?;
    let hasher = std::thread::Builder::new()
        .name("oci-diffid".into())
        .spawn(move || hash(&raw_rx, &full_tx))
        .map_err(thread_failed);
    let hasher = match hasher {
        Ok(h) => h,
        Err(e) => {
            // The decompressor stops at its first send.
            let _ = decompressor.join();
            return Err(e);
        }
    };

    let mut queue = QueueReader {
        full: full_rx,
        empty: empty_tx,
        current: Vec::new(),
        len: 0,
        pos: 0,
    };
    let options = unpack::Options {
        cancel: Some(cancel.clone()),
        written: writeback.map(Writeback::queue),
        ..unpack::Options::new(Mode::Oci)
    };
    let result = unpack::unpack(root.as_fd(), &mut queue, &options);
    // Dropping the receiving end makes the threads blocked on a full queue stop.
    drop(queue);
    let hashed = hasher.join();
    let _ = decompressor.join();
    result?;
    // The unpacker read to the end (it drains what follows the end-of-archive marker), so
    // the hasher saw every byte.
    let hasher = hashed.map_err(|_| Error::new(libc::EIO))?;
    Ok(Digest::from_hasher(hasher))
}

/// The DiffID thread: hash each buffer of the tar stream and pass it on to the unpacker.
/// Moving the hashing off the unpacking thread lets a layer of many small files (whose
/// unpacking is all system calls) and one of large files (whose decompression is the
/// work) both spread over two cores.
fn hash(raw: &Receiver<Result<Filled>>, full: &SyncSender<Result<Filled>>) -> Sha256 {
    let mut hasher = Sha256::new();
    while let Ok(item) = raw.recv() {
        if let Ok((buf, len)) = &item {
            hasher.update(&buf[..*len]);
        }
        if full.send(item).is_err() {
            break;
        }
    }
    hasher
}

/// The decompress thread: detect the compression, fill buffers from the decoder and queue
/// them; a decoder error is logged here and queued in place of data.
fn decompress(
    input: LayerBlob,
    (layer, size_max): (&Digest, u64),
    cancel: &AtomicBool,
    full: &SyncSender<Result<Filled>>,
    empty: &Receiver<Vec<u8>>,
) {
    let spool = match &input {
        LayerBlob::Spool(reader) => Some(reader.spool()),
        LayerBlob::Verified(_) => None,
    };
    // Malformed bytes of a blob whose download failed its size or digest check are that
    // check's failure (already reported, or about to be): say nothing of them then.
    let settled = |report: &dyn Fn() -> Error| match spool.as_ref().map(|s| s.wait_end()) {
        Some(Err(e)) => e,
        _ => report(),
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

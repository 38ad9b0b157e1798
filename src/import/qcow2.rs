//! qcow2 → raw conversion for `pull-raw` (systemd's `qcow2-util.c`, spec §5.5).
//!
//! Only what a downloaded cloud image needs: the active L1/L2 mapping of a version 2 or 3
//! image is walked and every allocated cluster lands at its guest offset in a raw file.
//! Backing files, internal snapshots, refcounts and header extensions are ignored, as in
//! the C tool. Everything read from the image is treated as hostile: offsets and sizes
//! are checked against the file size with overflow-checked arithmetic, and memory stays
//! bounded by a few clusters (at most 2 MiB each) whatever the image claims.
//!
//! Logging: like the C functions, these only return errors; the caller (`pull-raw`)
//! logs the user-visible line (`Failed to detect whether this is a QCOW2 image: %m`,
//! `Failed to convert qcow2 image: %m`). The reason a conversion failed is logged at
//! debug level and carried in [`Error::msg`].
//!
//! Differences from the C code, none of which changes the bytes of a valid image:
//! * clusters mapped at guest offsets at or beyond the virtual size (qemu keeps VM state
//!   of internal snapshots there) are skipped instead of being written past the end;
//! * a compressed cluster whose sector-rounded size runs past the end of the file is
//!   read up to the end of the file (qemu does the same) instead of failing with EIO;
//! * offsets pointing past the end of the file fail with EBADMSG rather than a short-read
//!   EIO;
//! * copied and inflated data is written sparsely: 4 KiB blocks that are all zero are
//!   not written, so the output has holes wherever the guest data is zero (qemu-img's
//!   raw output behaves the same; this matters for large clusters holding little data);
//! * runs of clusters that are contiguous in both files are cloned or copied in one go.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use flate2::{Decompress, FlushDecompress, Status};
use nix::errno::Errno;

use crate::log_debug_errno;
use crate::util::btrfs;
use crate::util::error::{Error, Result};

/// "QFI\xfb", big-endian.
const QCOW2_MAGIC: u32 = 0x5146_49fb;
/// The header as systemd reads it: the v2 fields plus the v3 ones, 104 bytes.
const HEADER_SIZE: usize = 104;
/// L1/L2 entry bit 63: refcount is exactly one (irrelevant for reading).
const ENTRY_COPIED: u64 = 1 << 63;
/// L1/L2 entry bit 62: compressed cluster (only valid in L2 entries).
const ENTRY_COMPRESSED: u64 = 1 << 62;
/// L2 entry bit 0 (v3): the cluster reads as zeros whatever its offset says.
const ENTRY_ZERO: u64 = 1;
/// Largest cluster_bits the C tool accepts (2 MiB clusters).
const MAX_CLUSTER_BITS: u32 = 21;
/// Smallest cluster_bits the C tool accepts (512-byte clusters).
const MIN_CLUSTER_BITS: u32 = 9;
/// Largest L1 table the C tool accepts, in entries.
const MAX_L1_SIZE: u32 = 32 * 1024 * 1024;
/// L1 entries read per pread (64 KiB): the table is streamed, never loaded whole.
const L1_CHUNK_ENTRIES: usize = 8192;
/// Upper bound of one coalesced clone/copy, so a cancellation is seen in good time and
/// one ioctl never covers an unbounded range.
const MAX_RUN: u64 = 64 * 1024 * 1024;
/// Copy buffer for the read/write fallback (or one cluster if that is larger).
const COPY_CHUNK: usize = 1024 * 1024;
/// Granularity of the all-zero check when writing: the usual file-system block size.
const SPARSE_BLOCK: u64 = 4096;

/// Whether the file starts with the qcow2 magic. Fewer than 4 bytes give EIO.
pub fn qcow2_detect(fd: BorrowedFd<'_>) -> Result<bool> {
    let mut magic = [0u8; 4];
    let n = pread_full(fd, &mut magic, 0)
        .map_err(|e| log_debug_errno!(e, "Failed to read qcow2 magic: {}", e))?;
    if n != magic.len() {
        return Err(log_debug_errno!(
            Errno::EIO,
            "File too short to carry a qcow2 magic ({n} bytes)."
        ));
    }
    Ok(u32::from_be_bytes(magic) == QCOW2_MAGIC)
}

/// Convert a qcow2 image into raw bytes written to `dst` (a fresh regular file, which is
/// truncated to the virtual size first so unwritten ranges stay holes).
///
/// Blocks (it is meant for a worker thread); `cancel` is polled between clusters and
/// copy chunks, and a set flag ends the conversion with ECANCELED.
pub fn qcow2_convert(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    Converter::new(src, dst, cancel)?.run()
}

/// The fields of the 104-byte header that the conversion uses or checks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    magic: u32,
    version: u32,
    cluster_bits: u32,
    /// Virtual disk size in bytes.
    size: u64,
    crypt_method: u32,
    /// Entries in the L1 table.
    l1_size: u32,
    l1_table_offset: u64,
    /// v3 only (garbage in v2, where header extensions start at offset 72).
    incompatible_features: u64,
    /// v3 only.
    header_length: u32,
}

impl Header {
    fn parse(b: &[u8; HEADER_SIZE]) -> Header {
        let be32 = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap());
        let be64 = |o: usize| u64::from_be_bytes(b[o..o + 8].try_into().unwrap());
        // Offsets of the packed on-disk layout; backing file, refcount table, snapshot,
        // compatible/autoclear and refcount_order fields are not needed.
        Header {
            magic: be32(0),
            version: be32(4),
            cluster_bits: be32(20),
            size: be64(24),
            crypt_method: be32(32),
            l1_size: be32(36),
            l1_table_offset: be64(40),
            incompatible_features: be64(72),
            header_length: be32(100),
        }
    }

    /// The C tool's checks, in its order and with its errnos.
    fn validate(&self) -> Result<()> {
        let fail = |errno: Errno, what: String| Err(log_debug_errno!(errno, "{what}"));
        if self.magic != QCOW2_MAGIC {
            return fail(
                Errno::EBADMSG,
                format!("Bad qcow2 magic 0x{:08x}.", self.magic),
            );
        }
        if self.version != 2 && self.version != 3 {
            return fail(
                Errno::ENOTSUP,
                format!("Unsupported qcow2 version {}.", self.version),
            );
        }
        if self.crypt_method != 0 {
            return fail(
                Errno::ENOTSUP,
                format!(
                    "Encrypted qcow2 images are not supported (method {}).",
                    self.crypt_method
                ),
            );
        }
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&self.cluster_bits) {
            return fail(
                Errno::EBADMSG,
                format!("Invalid qcow2 cluster_bits {}.", self.cluster_bits),
            );
        }
        // The C tool also refused a virtual size that is not a whole number of clusters,
        // but `qemu-img create` makes such images (it rounds to 512 bytes only); we convert
        // them, the last cluster cut at the virtual size.
        if self.l1_size > MAX_L1_SIZE {
            return fail(
                Errno::EBADMSG,
                format!("qcow2 L1 table too large ({} entries).", self.l1_size),
            );
        }
        if self.version == 3 {
            // Any incompatible feature (dirty, corrupt, external data file, non-zlib
            // compression, extended L2 entries, …) changes how the image must be read.
            if self.incompatible_features != 0 {
                return fail(
                    Errno::ENOTSUP,
                    format!(
                        "qcow2 image uses incompatible features 0x{:x}.",
                        self.incompatible_features
                    ),
                );
            }
            if (self.header_length as usize) < HEADER_SIZE {
                return fail(
                    Errno::EBADMSG,
                    format!("qcow2 header length {} is too short.", self.header_length),
                );
            }
        }
        Ok(())
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries in one L2 table (one cluster of u64).
    fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Guest bytes mapped by one L1 entry.
    fn bytes_per_l1_entry(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }

    /// L1 entries that map guest offsets below the virtual size; entries after them can
    /// only describe snapshot VM state.
    fn l1_entries_in_use(&self) -> u64 {
        let per = self.bytes_per_l1_entry();
        let needed = self.size / per + u64::from(self.size % per != 0);
        needed.min(u64::from(self.l1_size))
    }
}

/// Where the data of one guest cluster lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterMapping {
    /// Unallocated or zero-flagged: reads as zeros, already a hole in the output.
    Hole,
    /// Stored as is, one cluster at this host offset.
    Plain { host_offset: u64 },
    /// Raw-deflated, at most `compressed_size` bytes from this host offset.
    Compressed {
        host_offset: u64,
        compressed_size: u64,
    },
}

impl ClusterMapping {
    /// Decode a (big-endian-converted) L2 entry.
    fn from_l2_entry(entry: u64, cluster_bits: u32) -> ClusterMapping {
        if entry & ENTRY_COMPRESSED != 0 {
            // The bits above the host offset count the 512-byte sectors beyond the one
            // the data starts in; the result is an upper bound of the deflate stream.
            let size_shift = 62 - (cluster_bits - 8);
            let size_mask = (1u64 << (cluster_bits - 8)) - 1;
            let sectors = ((entry >> size_shift) & size_mask) + 1;
            let compressed_size = sectors * 512 - (entry & 511);
            let host_offset = entry & ((1u64 << size_shift) - 1);
            return ClusterMapping::Compressed {
                host_offset,
                compressed_size,
            };
        }
        // v2 images never set the zero bit; like the C code we do not distinguish.
        if entry & ENTRY_ZERO != 0 {
            return ClusterMapping::Hole;
        }
        match entry & !ENTRY_COPIED {
            0 => ClusterMapping::Hole,
            host_offset => ClusterMapping::Plain { host_offset },
        }
    }
}

/// Decode an L1 entry into the host offset of its L2 table (`None`: unallocated).
///
/// Spec §5.5 step 3. (The C code runs L1 entries through its L2 decoder, so a set bit 0,
/// reserved in L1 entries, also made it skip the table; qemu ignores that bit. Only a
/// corrupt image can tell the difference, and either way stays inside the file.)
fn l2_table_offset(entry: u64) -> Result<Option<u64>> {
    if entry & ENTRY_COMPRESSED != 0 {
        return Err(log_debug_errno!(
            Errno::ENOTSUP,
            "qcow2 L1 entry 0x{entry:016x} has the compressed bit set."
        ));
    }
    Ok(match entry & !ENTRY_COPIED {
        0 => None,
        offset => Some(offset),
    })
}

/// Whether FICLONERANGE is worth trying for the next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloneSupport {
    /// Not refused yet (the files may be on btrfs/XFS).
    Untried,
    /// The file system or the pair of files cannot share extents; copy from now on.
    Unsupported,
}

/// Guest clusters that are contiguous in both files, waiting to be cloned or copied.
#[derive(Debug, Clone, Copy)]
struct PlainRun {
    guest_offset: u64,
    host_offset: u64,
    length: u64,
}

/// One conversion: the two files, the parsed header, and the reused buffers.
struct Converter<'a> {
    src: BorrowedFd<'a>,
    dst: BorrowedFd<'a>,
    cancel: Option<&'a AtomicBool>,
    header: Header,
    /// Size of the qcow2 file, the bound for every offset read from it.
    src_size: u64,
    /// One L2 table (one cluster).
    l2_table: Vec<u8>,
    /// Read/write buffer for the copy fallback.
    copy_buffer: Vec<u8>,
    /// Compressed input (up to two clusters); allocated at the first compressed cluster.
    compressed: Vec<u8>,
    /// One inflated cluster; allocated at the first compressed cluster.
    inflated: Vec<u8>,
    /// Raw inflater; created at the first compressed cluster, reset per cluster.
    inflater: Option<Decompress>,
    /// Clusters waiting to be cloned/copied as one range.
    pending: Option<PlainRun>,
    clone_support: CloneSupport,
    /// Extents can only be shared in whole blocks of this size (the output's st_blksize).
    dst_block_size: u64,
}

impl<'a> Converter<'a> {
    fn new(
        src: BorrowedFd<'a>,
        dst: BorrowedFd<'a>,
        cancel: Option<&'a AtomicBool>,
    ) -> Result<Converter<'a>> {
        let mut raw = [0u8; HEADER_SIZE];
        let n = pread_full(src, &mut raw, 0)
            .map_err(|e| log_debug_errno!(e, "Failed to read qcow2 header: {}", e))?;
        if n != HEADER_SIZE {
            return Err(log_debug_errno!(
                Errno::EIO,
                "qcow2 header is truncated ({n} of {HEADER_SIZE} bytes)."
            ));
        }
        let header = Header::parse(&raw);
        header.validate()?;

        let src_size = nix::sys::stat::fstat(src)
            .map_err(|e| log_debug_errno!(e, "Failed to stat qcow2 image: {}", Error::from(e)))?
            .st_size as u64;
        let dst_block_size = nix::sys::stat::fstat(dst)
            .map_err(|e| log_debug_errno!(e, "Failed to stat raw image: {}", Error::from(e)))?
            .st_blksize
            .max(512) as u64;

        // The whole L1 table must lie in the file, even the entries we skip (the C
        // reads it whole and fails on a short read).
        let l1_bytes = u64::from(header.l1_size) * 8;
        if header
            .l1_table_offset
            .checked_add(l1_bytes)
            .is_none_or(|end| end > src_size)
        {
            return Err(log_debug_errno!(
                Errno::EBADMSG,
                "qcow2 L1 table ({} entries at offset {}) lies beyond the end of the file ({} bytes).",
                header.l1_size,
                header.l1_table_offset,
                src_size
            ));
        }

        let cluster_size = header.cluster_size() as usize;
        Ok(Converter {
            src,
            dst,
            cancel,
            src_size,
            l2_table: vec![0; cluster_size],
            copy_buffer: vec![0; COPY_CHUNK.max(cluster_size)],
            compressed: Vec::new(),
            inflated: Vec::new(),
            inflater: None,
            pending: None,
            clone_support: CloneSupport::Untried,
            dst_block_size,
            header,
        })
    }

    fn run(mut self) -> Result<()> {
        self.check_cancelled()?;
        let Ok(size) = libc::off_t::try_from(self.header.size) else {
            return Err(log_debug_errno!(
                Errno::EFBIG,
                "qcow2 virtual size {} is too large.",
                self.header.size
            ));
        };
        // Start from an empty file of the right size: everything not written below is
        // a hole, which is exactly what unallocated and zero clusters read as.
        nix::unistd::ftruncate(self.dst, 0)
            .and_then(|()| nix::unistd::ftruncate(self.dst, size))
            .map_err(|e| {
                let e = Error::from(e);
                log_debug_errno!(e.clone(), "Failed to resize output to {size} bytes: {}", e)
            })?;

        let in_use = self.header.l1_entries_in_use();
        let mut l1_chunk = vec![0u8; L1_CHUNK_ENTRIES.min(in_use as usize).max(1) * 8];
        let mut index = 0u64;
        while index < in_use {
            let count = (in_use - index).min(L1_CHUNK_ENTRIES as u64) as usize;
            let chunk = &mut l1_chunk[..count * 8];
            // Bounds were checked in new(); a short read means the file shrank.
            self.read_exact_at(chunk, self.header.l1_table_offset + index * 8, "L1 table")?;
            for (i, raw) in chunk.chunks_exact(8).enumerate() {
                let entry = u64::from_be_bytes(raw.try_into().unwrap());
                if let Some(l2_offset) = l2_table_offset(entry)? {
                    self.convert_l2_table(index + i as u64, l2_offset)?;
                }
            }
            index += count as u64;
        }
        self.flush_pending()
    }

    /// Convert the clusters of the L1 entry `l1_index`, whose L2 table is at `l2_offset`.
    fn convert_l2_table(&mut self, l1_index: u64, l2_offset: u64) -> Result<()> {
        self.check_cancelled()?;
        let cluster_size = self.header.cluster_size();
        self.check_in_file(l2_offset, cluster_size, "L2 table")?;
        let mut table = std::mem::take(&mut self.l2_table);
        let result = self
            .read_exact_at(&mut table, l2_offset, "L2 table")
            .and_then(|()| {
                let first_guest = l1_index * self.header.bytes_per_l1_entry();
                for (j, raw) in table.chunks_exact(8).enumerate() {
                    let guest_offset = first_guest + j as u64 * cluster_size;
                    if guest_offset >= self.header.size {
                        // Beyond the disk: snapshot VM state, not guest data.
                        break;
                    }
                    let entry = u64::from_be_bytes(raw.try_into().unwrap());
                    match ClusterMapping::from_l2_entry(entry, self.header.cluster_bits) {
                        ClusterMapping::Hole => {}
                        ClusterMapping::Plain { host_offset } => {
                            self.add_plain_cluster(guest_offset, host_offset)?
                        }
                        ClusterMapping::Compressed {
                            host_offset,
                            compressed_size,
                        } => self.inflate_cluster(guest_offset, host_offset, compressed_size)?,
                    }
                }
                Ok(())
            });
        self.l2_table = table;
        result
    }

    /// Queue a stored cluster, merging it into the pending run when it continues it in
    /// both files.
    fn add_plain_cluster(&mut self, guest_offset: u64, host_offset: u64) -> Result<()> {
        // Only the last cluster can be partial: the one the virtual size ends in.
        let length = self
            .header
            .cluster_size()
            .min(self.header.size - guest_offset);
        self.check_in_file(host_offset, length, "data cluster")?;
        if let Some(run) = &mut self.pending {
            if run.guest_offset + run.length == guest_offset
                && run.host_offset + run.length == host_offset
                && run.length + length <= MAX_RUN
            {
                run.length += length;
                return Ok(());
            }
        }
        self.flush_pending()?;
        self.pending = Some(PlainRun {
            guest_offset,
            host_offset,
            length,
        });
        Ok(())
    }

    /// Clone or copy the pending run, if any.
    fn flush_pending(&mut self) -> Result<()> {
        let Some(run) = self.pending.take() else {
            return Ok(());
        };
        self.check_cancelled()?;
        let block = self.dst_block_size;
        let aligned = [run.host_offset, run.guest_offset, run.length]
            .iter()
            .all(|v| v % block == 0);
        // Small clusters rarely line up with file-system blocks; don't ask in vain.
        if aligned && self.clone_support == CloneSupport::Untried {
            match btrfs::clone_range(
                self.src,
                run.host_offset,
                self.dst,
                run.guest_offset,
                run.length,
            ) {
                Ok(()) => return Ok(()),
                // The file system cannot share extents at all: stop asking.
                Err(e)
                    if [
                        libc::EOPNOTSUPP,
                        libc::ENOTTY,
                        libc::EXDEV,
                        libc::ENOSYS,
                        libc::EBADF,
                    ]
                    .contains(&e.errno()) =>
                {
                    self.clone_support = CloneSupport::Unsupported
                }
                // Anything else (EINVAL for ranges not aligned to the block size, …)
                // only concerns this run.
                Err(_) => {}
            }
        }
        self.copy_run(run)
    }

    /// The read/write fallback of a run, in `copy_buffer`-sized chunks.
    fn copy_run(&mut self, run: PlainRun) -> Result<()> {
        let mut buffer = std::mem::take(&mut self.copy_buffer);
        let mut done = 0u64;
        let result = loop {
            if done == run.length {
                break Ok(());
            }
            if let Err(e) = self.check_cancelled() {
                break Err(e);
            }
            let n = (run.length - done).min(buffer.len() as u64) as usize;
            let chunk = &mut buffer[..n];
            if let Err(e) = self.read_exact_at(chunk, run.host_offset + done, "data cluster") {
                break Err(e);
            }
            if let Err(e) = write_sparse(self.dst, chunk, run.guest_offset + done) {
                break Err(e);
            }
            done += n as u64;
        };
        self.copy_buffer = buffer;
        result
    }

    /// Inflate one compressed cluster into place.
    fn inflate_cluster(
        &mut self,
        guest_offset: u64,
        host_offset: u64,
        compressed_size: u64,
    ) -> Result<()> {
        self.check_cancelled()?;
        if host_offset >= self.src_size {
            return Err(log_debug_errno!(
                Errno::EBADMSG,
                "qcow2 compressed cluster at offset {host_offset} lies beyond the end of the file ({} bytes).",
                self.src_size
            ));
        }
        let cluster_size = self.header.cluster_size() as usize;
        // The size is sector-rounded and may run past the end of the file, where the
        // last compressed cluster usually is; the deflate stream itself must not.
        let available = compressed_size.min(self.src_size - host_offset) as usize;
        if self.inflater.is_none() {
            // compressed_size ≤ 2^(cluster_bits − 8) sectors = two clusters.
            self.compressed = vec![0; 2 * cluster_size];
            self.inflated = vec![0; cluster_size];
            // qemu deflates with a 4 KiB window (zlib windowBits −12), as the C inflates.
            self.inflater = Some(Decompress::new_with_window_bits(false, 12));
        }
        let mut input = std::mem::take(&mut self.compressed);
        let result = self
            .read_exact_at(&mut input[..available], host_offset, "compressed cluster")
            .and_then(|()| {
                let inflater = self.inflater.as_mut().expect("created above");
                inflater.reset(false);
                let status = inflater.decompress(
                    &input[..available],
                    &mut self.inflated,
                    FlushDecompress::Finish,
                );
                match status {
                    Ok(Status::StreamEnd) if inflater.total_out() == cluster_size as u64 => Ok(()),
                    _ => Err(log_debug_errno!(
                        Errno::EIO,
                        "qcow2 compressed cluster at guest offset {guest_offset} does not inflate to exactly one cluster."
                    )),
                }
            })
            .and_then(|()| {
                // The cluster the virtual size ends in is only written up to that end.
                let length = cluster_size.min((self.header.size - guest_offset) as usize);
                write_sparse(self.dst, &self.inflated[..length], guest_offset)
            });
        self.compressed = input;
        result
    }

    /// EBADMSG unless `[offset, offset + length)` lies inside the qcow2 file.
    fn check_in_file(&self, offset: u64, length: u64, what: &str) -> Result<()> {
        match offset.checked_add(length) {
            Some(end) if end <= self.src_size => Ok(()),
            _ => Err(log_debug_errno!(
                Errno::EBADMSG,
                "qcow2 {what} at offset {offset} lies beyond the end of the file ({} bytes).",
                self.src_size
            )),
        }
    }

    /// pread that must fill `buffer`; a short read (the file shrank under us) is EIO.
    fn read_exact_at(&self, buffer: &mut [u8], offset: u64, what: &str) -> Result<()> {
        let n = pread_full(self.src, buffer, offset)
            .map_err(|e| log_debug_errno!(e, "Failed to read qcow2 {what}: {}", e))?;
        if n != buffer.len() {
            return Err(log_debug_errno!(
                Errno::EIO,
                "Short read of qcow2 {what} at offset {offset}."
            ));
        }
        Ok(())
    }

    fn check_cancelled(&self) -> Result<()> {
        match self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(log_debug_errno!(
                Errno::ECANCELED,
                "qcow2 conversion cancelled."
            )),
            _ => Ok(()),
        }
    }
}

/// pread until `buffer` is full or the file ends; returns the bytes read.
fn pread_full(fd: BorrowedFd<'_>, buffer: &mut [u8], offset: u64) -> Result<usize> {
    let mut done = 0;
    while done < buffer.len() {
        let at = offset
            .checked_add(done as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or(Error::new(libc::EOVERFLOW))?;
        match nix::sys::uio::pread(fd, &mut buffer[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// pwrite all of `buffer`.
fn pwrite_all(fd: BorrowedFd<'_>, buffer: &[u8], offset: u64) -> Result<()> {
    let mut done = 0;
    while done < buffer.len() {
        let at =
            libc::off_t::try_from(offset + done as u64).map_err(|_| Error::new(libc::EOVERFLOW))?;
        match nix::sys::uio::pwrite(fd, &buffer[done..], at) {
            Ok(0) => return Err(Error::new(libc::EIO)),
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Write `buffer` at `offset` into a file that is zero there already, skipping the
/// [`SPARSE_BLOCK`]-aligned blocks that are all zero so they stay holes.
fn write_sparse(fd: BorrowedFd<'_>, buffer: &[u8], offset: u64) -> Result<()> {
    let mut start = 0usize;
    // Start of the pending run of non-zero blocks, relative to `buffer`.
    let mut data_from: Option<usize> = None;
    while start < buffer.len() {
        // Blocks are aligned to absolute file offsets, so holes are whole fs blocks.
        let block_end = ((offset + start as u64) / SPARSE_BLOCK + 1) * SPARSE_BLOCK;
        let end = ((block_end - offset) as usize).min(buffer.len());
        let zero = is_zero(&buffer[start..end]);
        match (zero, data_from) {
            (true, Some(from)) => {
                pwrite_all(fd, &buffer[from..start], offset + from as u64)
                    .map_err(|e| log_debug_errno!(e, "Failed to write raw image: {}", e))?;
                data_from = None;
            }
            (false, None) => data_from = Some(start),
            _ => {}
        }
        start = end;
    }
    if let Some(from) = data_from {
        pwrite_all(fd, &buffer[from..], offset + from as u64)
            .map_err(|e| log_debug_errno!(e, "Failed to write raw image: {}", e))?;
    }
    Ok(())
}

/// All bytes zero? (Word-wise OR without early exit, which the compiler vectorises.)
fn is_zero(bytes: &[u8]) -> bool {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder().iter().fold(0u8, |acc, b| acc | b);
    let body = words.fold(0u64, |acc, w| {
        acc | u64::from_ne_bytes(w.try_into().unwrap())
    });
    body == 0 && tail == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes(version: u32, cluster_bits: u32, size: u64) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&QCOW2_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&version.to_be_bytes());
        b[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        b[24..32].copy_from_slice(&size.to_be_bytes());
        b[36..40].copy_from_slice(&1u32.to_be_bytes());
        b[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
        b[100..104].copy_from_slice(&104u32.to_be_bytes());
        b
    }

    #[test]
    fn header_fields_are_read_big_endian_at_their_offsets() {
        let h = Header::parse(&header_bytes(3, 16, 1 << 30));
        assert_eq!(h.magic, QCOW2_MAGIC);
        assert_eq!(h.version, 3);
        assert_eq!(h.cluster_bits, 16);
        assert_eq!(h.size, 1 << 30);
        assert_eq!(h.l1_size, 1);
        assert_eq!(h.l1_table_offset, 0x30000);
        assert_eq!(h.header_length, 104);
        assert!(h.validate().is_ok());
    }

    #[test]
    fn header_checks_run_in_the_c_order() {
        // Both the version and the cluster bits are wrong: the version check wins.
        let mut h = Header::parse(&header_bytes(4, 30, 1 << 30));
        assert_eq!(h.validate().unwrap_err().errno(), libc::ENOTSUP);
        h.version = 2;
        assert_eq!(h.validate().unwrap_err().errno(), libc::EBADMSG);
        // v2 ignores the v3-only fields, whatever bytes are there.
        h.cluster_bits = 16;
        h.incompatible_features = 1;
        h.header_length = 0;
        assert!(h.validate().is_ok());
        h.version = 3;
        assert_eq!(h.validate().unwrap_err().errno(), libc::ENOTSUP);
        h.incompatible_features = 0;
        assert_eq!(h.validate().unwrap_err().errno(), libc::EBADMSG);
    }

    #[test]
    fn l2_entries_decode_like_the_qcow2_spec() {
        // Plain, with and without the COPIED bit.
        assert_eq!(
            ClusterMapping::from_l2_entry(0x5_0000, 16),
            ClusterMapping::Plain {
                host_offset: 0x5_0000
            }
        );
        assert_eq!(
            ClusterMapping::from_l2_entry(ENTRY_COPIED | 0x5_0000, 16),
            ClusterMapping::Plain {
                host_offset: 0x5_0000
            }
        );
        // Zero flag, even with an offset (qemu's "zero, allocated").
        assert_eq!(
            ClusterMapping::from_l2_entry(0x5_0000 | ENTRY_ZERO, 16),
            ClusterMapping::Hole
        );
        assert_eq!(ClusterMapping::from_l2_entry(0, 16), ClusterMapping::Hole);
        assert_eq!(
            ClusterMapping::from_l2_entry(ENTRY_COPIED, 16),
            ClusterMapping::Hole
        );
        // Compressed, 64 KiB clusters: size field at bits 54..61 (8 bits).
        // Data at 0x12345 spanning 3 more sectors: (3 + 1) * 512 - (0x12345 & 511).
        let e = ENTRY_COMPRESSED | (3u64 << 54) | 0x12345;
        assert_eq!(
            ClusterMapping::from_l2_entry(e, 16),
            ClusterMapping::Compressed {
                host_offset: 0x12345,
                compressed_size: 4 * 512 - 0x145
            }
        );
        // 512-byte clusters: one size bit (61), the largest value gives two clusters.
        let e = ENTRY_COMPRESSED | (1u64 << 61) | 0x400;
        assert_eq!(
            ClusterMapping::from_l2_entry(e, 9),
            ClusterMapping::Compressed {
                host_offset: 0x400,
                compressed_size: 1024
            }
        );
    }

    #[test]
    fn l1_entries_reject_compression_and_drop_the_copied_bit() {
        assert_eq!(l2_table_offset(0).unwrap(), None);
        assert_eq!(
            l2_table_offset(ENTRY_COPIED | 0x7_0000).unwrap(),
            Some(0x7_0000)
        );
        assert_eq!(
            l2_table_offset(ENTRY_COMPRESSED | 0x7_0000)
                .unwrap_err()
                .errno(),
            libc::ENOTSUP
        );
    }

    #[test]
    fn only_l1_entries_below_the_virtual_size_are_walked() {
        let mut h = Header::parse(&header_bytes(3, 16, 1 << 30));
        // 64 KiB clusters: one L1 entry maps 512 MiB.
        h.l1_size = 100;
        assert_eq!(h.l1_entries_in_use(), 2);
        h.size = (1 << 30) + (1 << 16);
        assert_eq!(h.l1_entries_in_use(), 3);
        h.l1_size = 1;
        assert_eq!(h.l1_entries_in_use(), 1);
    }

    #[test]
    fn zero_detection_covers_words_and_tail() {
        assert!(is_zero(&[0; 4096]));
        assert!(is_zero(&[]));
        let mut b = vec![0u8; 4099];
        b[4098] = 1;
        assert!(!is_zero(&b));
        b[4098] = 0;
        b[7] = 0x80;
        assert!(!is_zero(&b));
    }
}

//! The conversion itself: the L1 table is streamed, each L2 table read, and every
//! allocated cluster lands at its guest offset in the raw file: plain clusters cloned or
//! copied in contiguous runs, compressed ones inflated, zero blocks left as holes.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use flate2::{Decompress, FlushDecompress, Status};
use nix::errno::Errno;

use super::format::{l2_table_offset, pread_full, ClusterMapping, Header};
use crate::log_debug_errno;
use crate::util::btrfs;
use crate::util::error::{Error, Result};

/// L1 entries read per pread (64 KiB): the table is streamed, never loaded whole.
const L1_CHUNK_ENTRIES: usize = 8192;
/// Upper bound of one coalesced clone/copy, so a cancellation is seen in good time and
/// one ioctl never covers an unbounded range.
const MAX_RUN: u64 = 64 * 1024 * 1024;
/// Copy buffer for the read/write fallback (or one cluster if that is larger).
const COPY_CHUNK: usize = 1024 * 1024;
/// Granularity of the all-zero check when writing: the usual file-system block size.
const SPARSE_BLOCK: u64 = 4096;

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
        let header = Header::read(src)?;

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

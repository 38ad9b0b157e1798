//! What a qcow2 file says (spec §5.5): the magic, the header and its checks, and the
//! meaning of L1 and L2 table entries. Nothing here writes; everything read is checked
//! before it is believed (see `mod.rs`).

use std::os::fd::BorrowedFd;

use nix::errno::Errno;

use crate::log_debug_errno;
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

/// The fields of the 104-byte header that the conversion uses or checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) magic: u32,
    pub(super) version: u32,
    pub(super) cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub(super) size: u64,
    pub(super) crypt_method: u32,
    /// Entries in the L1 table.
    pub(super) l1_size: u32,
    pub(super) l1_table_offset: u64,
    /// v3 only (garbage in v2, where header extensions start at offset 72).
    pub(super) incompatible_features: u64,
    /// v3 only.
    pub(super) header_length: u32,
}

impl Header {
    /// Read and check the header at the start of `fd`.
    pub(super) fn read(fd: BorrowedFd<'_>) -> Result<Header> {
        let mut raw = [0u8; HEADER_SIZE];
        let n = pread_full(fd, &mut raw, 0)
            .map_err(|e| log_debug_errno!(e, "Failed to read qcow2 header: {}", e))?;
        if n != HEADER_SIZE {
            return Err(log_debug_errno!(
                Errno::EIO,
                "qcow2 header is truncated ({n} of {HEADER_SIZE} bytes)."
            ));
        }
        let header = Header::parse(&raw);
        header.validate()?;
        Ok(header)
    }

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

    pub(super) fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries in one L2 table (one cluster of u64).
    pub(super) fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// Guest bytes mapped by one L1 entry.
    pub(super) fn bytes_per_l1_entry(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }

    /// L1 entries that map guest offsets below the virtual size; entries after them can
    /// only describe snapshot VM state.
    pub(super) fn l1_entries_in_use(&self) -> u64 {
        let per = self.bytes_per_l1_entry();
        let needed = self.size / per + u64::from(self.size % per != 0);
        needed.min(u64::from(self.l1_size))
    }
}

/// Where the data of one guest cluster lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClusterMapping {
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
    pub(super) fn from_l2_entry(entry: u64, cluster_bits: u32) -> ClusterMapping {
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
pub(super) fn l2_table_offset(entry: u64) -> Result<Option<u64>> {
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

/// pread until `buffer` is full or the file ends; returns the bytes read.
pub(super) fn pread_full(fd: BorrowedFd<'_>, buffer: &mut [u8], offset: u64) -> Result<usize> {
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
}

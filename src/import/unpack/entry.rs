//! What the reader hands the unpacker: one archive member ([`Entry`]) with every
//! override applied, its [`Kind`], and for sparse files the map of where the data goes
//! ([`Sparse`]), with the checks a map must pass before any of it is used.

use super::refuse;
use crate::util::error::Result;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Regular,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

/// Where a sparse file's map lives.
#[derive(Debug, PartialEq, Eq)]
pub enum SparseMap {
    /// Known from the headers (old GNU `S`, PAX 0.0 and 0.1).
    Known(Vec<(u64, u64)>),
    /// PAX 1.0: a text map at the start of the content; read by `Reader::read_sparse_map`.
    InData,
}

/// A sparse file: its real size and where its data segments go.
#[derive(Debug)]
pub struct Sparse {
    pub real_size: u64,
    pub map: SparseMap,
}

/// One archive member, with all overrides (long names, PAX, global PAX) applied.
#[derive(Debug)]
pub struct Entry {
    /// The member name as the archive spells it (before normalization).
    pub name: Vec<u8>,
    /// Link target (symlink or hard link).
    pub link: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time: seconds and nanoseconds (0..1e9).
    pub mtime: (i64, u32),
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes from `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub sparse: Option<Sparse>,
    /// An unknown type flag that is extracted as a regular file (GNU tar does the same).
    pub unknown_type: Option<u8>,
}

/// Sparse segments must be in order, not overlap, lie within the real size, and their
/// data must fit into the stored content.
pub fn check_sparse_map(
    map: &[(u64, u64)],
    real_size: u64,
    stored: u64,
    name: &[u8],
) -> Result<()> {
    let mut end = 0u64;
    let mut data = 0u64;
    for &(offset, len) in map {
        let seg_end = offset
            .checked_add(len)
            .ok_or_else(|| refuse(libc::EBADMSG, name, "sparse map entry overflows"))?;
        if offset < end {
            return Err(refuse(
                libc::EBADMSG,
                name,
                "sparse map entries overlap or are out of order",
            ));
        }
        if seg_end > real_size {
            return Err(refuse(
                libc::EBADMSG,
                name,
                format_args!(
                    "sparse map entry {offset}+{len} lies beyond the file size {real_size}"
                ),
            ));
        }
        end = seg_end;
        data += len;
    }
    if data > stored {
        return Err(refuse(
            libc::EBADMSG,
            name,
            format_args!("sparse map describes {data} bytes but the entry stores {stored}"),
        ));
    }
    Ok(())
}

//! Indexing an archive without extracting it: the regular members' names and where their
//! content lies in the (uncompressed) stream, read with the unpacker's own header reader
//! and limits (PAX and GNU long names, checksums, truncation). pull-oci's archive sources
//! read a member by offset from this index.

use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::entry::Kind;
use super::reader::Reader;
use super::Limits;
use crate::util::error::Result;

/// One regular member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// As the archive spells it, without leading `./` and `/`.
    pub name: String,
    /// Stream offset of its first content byte.
    pub offset: u64,
    pub size: u64,
}

/// The regular, non-sparse members of the tar stream `input`, in archive order (a later
/// member of the same name comes after the earlier one). Names that are not UTF-8 are
/// left out. Errors are logged as the unpacker logs them.
pub fn members(
    input: &mut dyn Read,
    limits: &Limits,
    cancel: Option<Arc<AtomicBool>>,
) -> Result<Vec<Member>> {
    let mut reader = Reader::new(input, limits, cancel);
    let mut out = Vec::new();
    while let Some(entry) = reader.next_entry()? {
        if entry.kind != Kind::Regular || entry.sparse.is_some() || entry.unknown_type.is_some() {
            continue;
        }
        let Ok(name) = String::from_utf8(entry.name) else {
            continue;
        };
        let mut name = name.as_str();
        loop {
            let trimmed = name.trim_start_matches('/');
            let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
            if trimmed == name {
                break;
            }
            name = trimmed;
        }
        out.push(Member {
            name: name.to_string(),
            offset: reader.content_offset(),
            size: reader.remaining(),
        });
    }
    Ok(out)
}

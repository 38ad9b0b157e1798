//! The meaning of PAX extended header records: which keyword overrides which header
//! field, the `SCHILY.xattr.*` attributes and the `GNU.sparse.*` maps, each checked
//! against the [`Limits`] as it is read. The record syntax itself is parsed in
//! `header.rs`.

use super::header;
use super::{show, Limits};

/// Values from PAX records, applied in order: global ones first, then the local header.
#[derive(Default)]
pub struct Pax {
    pub path: Option<Vec<u8>>,
    pub linkpath: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub mtime: Option<(i64, u32)>,
    pub dev_major: Option<u64>,
    pub dev_minor: Option<u64>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub sparse_major: Option<u64>,
    pub sparse_minor: Option<u64>,
    pub sparse_name: Option<Vec<u8>>,
    pub sparse_real_size: Option<u64>,
    pub sparse_map: Vec<(u64, u64)>,
    /// A `GNU.sparse.offset` waiting for its `GNU.sparse.numbytes` (format 0.0).
    pub sparse_offset: Option<u64>,
    pub sparse_seen: bool,
}

impl Pax {
    /// Apply one record. Unknown keywords are ignored (POSIX says so).
    pub fn apply(&mut self, key: &[u8], value: &[u8], limits: &Limits) -> Result<(), String> {
        let number = |v: &[u8]| {
            header::parse_pax_u64(v).ok_or_else(|| {
                format!(
                    "PAX record '{}' has an invalid number '{}'",
                    show(key),
                    show(v)
                )
            })
        };
        let no_nul = |v: &[u8]| -> Result<Vec<u8>, String> {
            if v.contains(&0) {
                Err(format!("PAX record '{}' contains a NUL byte", show(key)))
            } else {
                Ok(v.to_vec())
            }
        };
        match key {
            b"path" => self.path = Some(no_nul(value)?),
            b"linkpath" => self.linkpath = Some(no_nul(value)?),
            b"size" => self.size = Some(number(value)?),
            b"uid" => self.uid = Some(number(value)?),
            b"gid" => self.gid = Some(number(value)?),
            b"mtime" => {
                self.mtime = Some(header::parse_pax_time(value).ok_or_else(|| {
                    format!("PAX record 'mtime' has an invalid time '{}'", show(value))
                })?)
            }
            b"SCHILY.devmajor" => self.dev_major = Some(number(value)?),
            b"SCHILY.devminor" => self.dev_minor = Some(number(value)?),
            b"GNU.sparse.major" => self.sparse_major = Some(number(value)?),
            b"GNU.sparse.minor" => self.sparse_minor = Some(number(value)?),
            b"GNU.sparse.name" => self.sparse_name = Some(no_nul(value)?),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                self.sparse_real_size = Some(number(value)?);
                self.sparse_seen = true;
            }
            b"GNU.sparse.numblocks" => {
                let n = number(value)?;
                if n > limits.max_sparse_entries as u64 {
                    return Err(format!(
                        "sparse map has {n} entries, more than the limit of {}",
                        limits.max_sparse_entries
                    ));
                }
                self.sparse_seen = true;
            }
            b"GNU.sparse.offset" => {
                if self.sparse_offset.is_some() {
                    return Err("GNU.sparse.offset without GNU.sparse.numbytes".into());
                }
                self.sparse_offset = Some(number(value)?);
                self.sparse_seen = true;
            }
            b"GNU.sparse.numbytes" => {
                let offset = self
                    .sparse_offset
                    .take()
                    .ok_or("GNU.sparse.numbytes without GNU.sparse.offset")?;
                self.push_sparse(offset, number(value)?, limits)?;
            }
            b"GNU.sparse.map" => {
                self.sparse_map.clear();
                let fields: Vec<&[u8]> = if value.is_empty() {
                    Vec::new()
                } else {
                    value.split(|&b| b == b',').collect()
                };
                if fields.len() % 2 != 0 {
                    return Err("GNU.sparse.map has an odd number of fields".into());
                }
                for pair in fields.chunks_exact(2) {
                    self.push_sparse(number(pair[0])?, number(pair[1])?, limits)?;
                }
                self.sparse_seen = true;
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if name.is_empty() || name.len() > 255 {
                        return Err(format!("invalid xattr name '{}'", show(name)));
                    }
                    if value.len() > limits.max_xattr_size {
                        return Err(format!(
                            "xattr '{}' has {} bytes, more than the limit of {}",
                            show(name),
                            value.len(),
                            limits.max_xattr_size
                        ));
                    }
                    match self.xattrs.iter_mut().find(|(n, _)| n == name) {
                        Some(slot) => slot.1 = value.to_vec(),
                        None => {
                            if self.xattrs.len() >= limits.max_xattrs {
                                return Err(format!("more than {} xattrs", limits.max_xattrs));
                            }
                            self.xattrs.push((name.to_vec(), value.to_vec()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn push_sparse(&mut self, offset: u64, len: u64, limits: &Limits) -> Result<(), String> {
        if self.sparse_map.len() >= limits.max_sparse_entries {
            return Err(format!(
                "sparse map has more than {} entries",
                limits.max_sparse_entries
            ));
        }
        self.sparse_map.push((offset, len));
        self.sparse_seen = true;
        Ok(())
    }
}

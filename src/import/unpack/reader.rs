//! The tar stream reader: turns a blocking byte stream into entries ([`Entry`], in
//! `entry.rs`) with bounded memory. Header blocks are decoded by `header.rs`, PAX
//! records interpreted by `pax.rs`; this file owns the buffer, the order of headers,
//! the limits on the stream and the sparse maps stored in the content.
//!
//! It owns one fixed-size buffer ([`BUFFER_SIZE`]). Meta headers (GNU `L`/`K` long
//! names, PAX `x`/`g` records, old GNU sparse extension blocks) are read into memory
//! only up to [`Limits::max_header_bytes`]; file content is handed out as slices of the
//! buffer so it goes straight from the input into the target file.
//!
//! Size rule (one rule everywhere, see CVE-2025-62518): the number of content bytes
//! that follow a header is the PAX `size` record if there is one (global or local),
//! else the header's size field, except that a hard link's header size is ignored
//! (GNU tar: "links have no data on tape") unless PAX gives one. Content is always
//! followed by padding to the next 512-byte boundary.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::entry::{check_sparse_map, Entry, Kind, Sparse, SparseMap};
use super::header::{self, Header, NumberError, BLOCK};
use super::pax::Pax;
use super::{refuse, show, Limits};
use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// Size of the input buffer, which is also the largest chunk written to a file at once.
pub const BUFFER_SIZE: usize = 1 << 20;

/// The streaming reader.
pub struct Reader<'r> {
    input: &'r mut dyn Read,
    limits: Limits,
    cancel: Option<Arc<AtomicBool>>,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
    /// Stream offset of `buf[pos]`.
    offset: u64,
    /// Bytes read from the input so far (checked against the total limit).
    read_total: u64,
    input_eof: bool,
    /// Content bytes of the current entry not yet handed out, and its padding.
    remaining: u64,
    padding: u64,
    /// Raw records of the last global PAX header (`g`), applied to every later entry.
    global: Vec<(Vec<u8>, Vec<u8>)>,
    entries: u64,
    finished: bool,
}

/// A name for messages about a header whose member name is not known yet.
fn at_offset(offset: u64) -> Vec<u8> {
    format!("<header at offset {offset}>").into_bytes()
}

impl<'r> Reader<'r> {
    pub fn new(input: &'r mut dyn Read, limits: &Limits, cancel: Option<Arc<AtomicBool>>) -> Self {
        Reader {
            input,
            limits: limits.clone(),
            cancel,
            buf: vec![0u8; BUFFER_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
            offset: 0,
            read_total: 0,
            input_eof: false,
            remaining: 0,
            padding: 0,
            global: Vec::new(),
            entries: 0,
            finished: false,
        }
    }

    /// Bytes read from the input so far.
    pub fn bytes_read(&self) -> u64 {
        self.read_total
    }

    /// Stream offset of the next byte to hand out: right after `next_entry`, the first
    /// content byte of the entry.
    pub fn content_offset(&self) -> u64 {
        self.offset
    }

    /// Fail with ECANCELED if the cancel flag is set.
    pub fn check_cancel(&self) -> Result<()> {
        match &self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(crate::log_debug_errno!(
                Error::new(libc::ECANCELED),
                "Unpacking cancelled."
            )),
            _ => Ok(()),
        }
    }

    /// Read more input into the buffer (compacting it first when it is full). Returns
    /// false at end of input.
    fn fill(&mut self, name: &[u8]) -> Result<bool> {
        self.check_cancel()?;
        if self.input_eof {
            return Ok(false);
        }
        if self.pos > 0 && (self.end == self.buf.len() || self.pos == self.end) {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        debug_assert!(self.end < self.buf.len());
        let n = loop {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(input_error(e, name)),
            }
        };
        if n == 0 {
            self.input_eof = true;
            return Ok(false);
        }
        self.end += n;
        self.read_total += n as u64;
        if self.read_total > self.limits.max_total_bytes {
            return Err(refuse(
                libc::EFBIG,
                name,
                format_args!(
                    "the archive exceeds the limit of {} bytes",
                    self.limits.max_total_bytes
                ),
            ));
        }
        Ok(true)
    }

    /// Make at least `n` (≤ buffer size) bytes available; false if the input ends first.
    fn want(&mut self, n: usize, name: &[u8]) -> Result<bool> {
        while self.end - self.pos < n {
            if !self.fill(name)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        self.offset += n as u64;
    }

    /// Read one block, or None at a clean end of input.
    fn read_block(&mut self, name: &[u8]) -> Result<Option<[u8; BLOCK]>> {
        if !self.want(BLOCK, name)? {
            if self.pos == self.end {
                return Ok(None);
            }
            return Err(refuse(
                libc::EBADMSG,
                name,
                "the archive ends inside a header block",
            ));
        }
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(&self.buf[self.pos..self.pos + BLOCK]);
        self.consume(BLOCK);
        Ok(Some(block))
    }

    /// Skip `n` bytes of the stream; error if it ends first.
    fn skip(&mut self, mut n: u64, name: &[u8]) -> Result<()> {
        while n > 0 {
            if self.pos == self.end && !self.fill(name)? {
                return Err(truncated(name));
            }
            let step = n.min((self.end - self.pos) as u64) as usize;
            self.consume(step);
            n -= step as u64;
        }
        Ok(())
    }

    /// Read the content of a meta header (long name, PAX) into memory, bounded.
    fn read_meta(&mut self, size: u64, what: &str, name: &[u8]) -> Result<Vec<u8>> {
        if size > self.limits.max_header_bytes as u64 {
            return Err(refuse(
                libc::EFBIG,
                name,
                format_args!(
                    "{what} of {size} bytes exceeds the limit of {} bytes",
                    self.limits.max_header_bytes
                ),
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        let mut left = size as usize;
        while left > 0 {
            if self.pos == self.end && !self.fill(name)? {
                return Err(truncated(name));
            }
            let step = left.min(self.end - self.pos);
            data.extend_from_slice(&self.buf[self.pos..self.pos + step]);
            self.consume(step);
            left -= step;
        }
        self.skip(padding_of(size), name)?;
        Ok(data)
    }

    /// Advance to the next entry, skipping what is left of the current one. Returns
    /// None after the end-of-archive marker (the rest of the stream is read and
    /// discarded, so a hashing wrapper sees every byte).
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.finished {
            return Ok(None);
        }
        self.check_cancel()?;
        let skip = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(skip, b"<end of previous entry>")?;

        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut local: Option<Vec<u8>> = None;
        loop {
            let offset = self.offset;
            let here = at_offset(offset);
            let Some(block) = self.read_block(&here)? else {
                // End of input without an end-of-archive marker: GNU tar accepts it.
                if long_name.is_some() || long_link.is_some() || local.is_some() {
                    return Err(truncated(&here));
                }
                self.finished = true;
                return Ok(None);
            };
            let h = Header(&block);
            if h.is_zero() {
                if long_name.is_some() || long_link.is_some() || local.is_some() {
                    return Err(refuse(
                        libc::EBADMSG,
                        &here,
                        "end-of-archive marker after an extended header",
                    ));
                }
                self.drain()?;
                return Ok(None);
            }
            if !h.checksum_ok() {
                return Err(refuse(libc::EBADMSG, &here, "header checksum mismatch"));
            }
            let size = h.size();
            let meta_size = || number(size, "size", &here);
            match h.typeflag() {
                b'L' => {
                    long_name = Some(cut_nul(self.read_meta(
                        meta_size()?,
                        "GNU long name",
                        &here,
                    )?))
                }
                b'K' => {
                    long_link = Some(cut_nul(self.read_meta(
                        meta_size()?,
                        "GNU long link name",
                        &here,
                    )?))
                }
                b'x' | b'X' => local = Some(self.read_meta(meta_size()?, "PAX header", &here)?),
                b'g' => {
                    let body = self.read_meta(meta_size()?, "global PAX header", &here)?;
                    let mut records = Vec::new();
                    header::parse_pax_records(&body, |k, v| {
                        records.push((k.to_vec(), v.to_vec()));
                        Ok(())
                    })
                    .map_err(|reason| refuse(libc::EBADMSG, &here, reason))?;
                    // Check them once now, so a bad global record fails here.
                    let mut probe = Pax::default();
                    for (k, v) in &records {
                        probe
                            .apply(k, v, &self.limits)
                            .map_err(|reason| refuse(libc::EBADMSG, &here, reason))?;
                    }
                    self.global = records;
                }
                b'V' | b'N' => {
                    // Volume label / old GNU long-name script: nothing to extract.
                    let size = meta_size()?;
                    self.skip(size + padding_of(size), &here)?;
                    long_name = None;
                    long_link = None;
                    local = None;
                }
                b'M' => {
                    return Err(refuse(
                        libc::EBADMSG,
                        &here,
                        "multi-volume continuation entries are not supported",
                    ))
                }
                _ => {
                    let entry = self.finish_entry(&h, size, long_name, long_link, local)?;
                    return Ok(Some(entry));
                }
            }
        }
    }

    /// Build the entry from its final header plus pending long names and PAX records.
    fn finish_entry(
        &mut self,
        h: &Header<'_>,
        header_size: Result<u64, NumberError>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        local: Option<Vec<u8>>,
    ) -> Result<Entry> {
        let mut name = long_name.unwrap_or_else(|| h.name());
        let mut pax = Pax::default();
        for (k, v) in &self.global {
            // Already validated when the global header was read.
            let _ = pax.apply(k, v, &self.limits);
        }
        if let Some(body) = &local {
            let limits = self.limits.clone();
            let result = header::parse_pax_records(body, |k, v| pax.apply(k, v, &limits));
            if let Err(reason) = result {
                let shown = pax.path.clone().unwrap_or(name);
                return Err(refuse(libc::EBADMSG, &shown, reason));
            }
        }
        if let Some(p) = pax.path.take() {
            name = p;
        }
        if let Some(p) = pax.sparse_name.take() {
            name = p;
        }
        if pax.sparse_offset.is_some() {
            return Err(refuse(
                libc::EBADMSG,
                &name,
                "GNU.sparse.offset without GNU.sparse.numbytes",
            ));
        }
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(refuse(
                libc::E2BIG,
                &name,
                format_args!(
                    "the archive has more than {} entries",
                    self.limits.max_entries
                ),
            ));
        }
        if name.len() > self.limits.max_path_len {
            return Err(refuse(
                libc::ENAMETOOLONG,
                &name[..64.min(name.len())],
                format_args!(
                    "member name of {} bytes exceeds the limit of {} bytes",
                    name.len(),
                    self.limits.max_path_len
                ),
            ));
        }
        let link = pax
            .linkpath
            .take()
            .or(long_link)
            .unwrap_or_else(|| h.link_name().to_vec());
        if link.len() > self.limits.max_path_len {
            return Err(refuse(
                libc::ENAMETOOLONG,
                &name,
                format_args!(
                    "link target of {} bytes exceeds the limit of {} bytes",
                    link.len(),
                    self.limits.max_path_len
                ),
            ));
        }

        let typeflag = h.typeflag();
        let mut unknown_type = None;
        let kind = match typeflag {
            // A regular file whose name ends in '/' is a directory (old archivers;
            // GNU tar reads it so).
            b'0' | 0 | b'7' if name.last() == Some(&b'/') => Kind::Directory,
            b'0' | 0 | b'7' | b'S' => Kind::Regular,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::CharDevice,
            b'4' => Kind::BlockDevice,
            b'5' | b'D' => Kind::Directory,
            b'6' => Kind::Fifo,
            other => {
                unknown_type = Some(other);
                Kind::Regular
            }
        };

        let mode = number(h.mode(), "mode", &name)? as u32 & 0o7777;
        let uid = id(
            pax.uid.map_or_else(|| number(h.uid(), "uid", &name), Ok)?,
            "uid",
            &name,
        )?;
        let gid = id(
            pax.gid.map_or_else(|| number(h.gid(), "gid", &name), Ok)?,
            "gid",
            &name,
        )?;
        let mtime = match pax.mtime {
            Some(t) => t,
            None => (
                h.mtime().map_err(|e| {
                    refuse(
                        libc::EBADMSG,
                        &name,
                        format_args!("mtime field is {}", e.describe()),
                    )
                })?,
                0,
            ),
        };
        let (dev_major, dev_minor) = if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
            let major = pax
                .dev_major
                .map_or_else(|| number(h.dev_major(), "devmajor", &name), Ok)?;
            let minor = pax
                .dev_minor
                .map_or_else(|| number(h.dev_minor(), "devminor", &name), Ok)?;
            (
                id(major, "device major", &name)?,
                id(minor, "device minor", &name)?,
            )
        } else {
            (0, 0)
        };

        // The one size rule (module docs).
        let size = match pax.size {
            Some(s) => s,
            None if kind == Kind::HardLink => 0,
            None => number(header_size, "size", &name)?,
        };
        // An entry that cannot fit into what the total limit still allows fails now,
        // before anything is created for it.
        let allowance = self.limits.max_total_bytes.saturating_sub(self.offset);
        if size > allowance {
            return Err(refuse(
                libc::EFBIG,
                &name,
                format_args!(
                    "size {size} exceeds what is left of the limit of {} bytes",
                    self.limits.max_total_bytes
                ),
            ));
        }

        let sparse = if typeflag == b'S' {
            Some(self.read_gnu_sparse(h, &name)?)
        } else if pax.sparse_seen || pax.sparse_major.is_some() {
            if kind != Kind::Regular {
                return Err(refuse(
                    libc::EBADMSG,
                    &name,
                    "sparse map on a non-regular entry",
                ));
            }
            let real_size = pax
                .sparse_real_size
                .ok_or_else(|| refuse(libc::EBADMSG, &name, "sparse file without a real size"))?;
            let map = match (pax.sparse_major, pax.sparse_minor) {
                (Some(1), Some(0)) => SparseMap::InData,
                (None, None) | (Some(0), _) => {
                    SparseMap::Known(std::mem::take(&mut pax.sparse_map))
                }
                (major, minor) => {
                    return Err(refuse(
                        libc::EBADMSG,
                        &name,
                        format_args!(
                            "unsupported sparse format {}.{}",
                            major.unwrap_or(0),
                            minor.unwrap_or(0)
                        ),
                    ))
                }
            };
            Some(Sparse { real_size, map })
        } else {
            None
        };
        if let Some(Sparse {
            real_size,
            map: SparseMap::Known(map),
        }) = &sparse
        {
            check_sparse_map(map, *real_size, size, &name)?;
        }

        self.remaining = size;
        self.padding = padding_of(size);
        Ok(Entry {
            name,
            link,
            kind,
            mode,
            uid,
            gid,
            mtime,
            dev_major,
            dev_minor,
            xattrs: pax.xattrs,
            sparse,
            unknown_type,
        })
    }

    /// The old GNU sparse map: four entries in the header, then extension blocks.
    fn read_gnu_sparse(&mut self, h: &Header<'_>, name: &[u8]) -> Result<Sparse> {
        let bad = |e: NumberError| {
            refuse(
                libc::EBADMSG,
                name,
                format_args!("sparse map field is {}", e.describe()),
            )
        };
        let (mut map, mut extended, real_size) = h.gnu_sparse().map_err(bad)?;
        while extended {
            let block = self.read_block(name)?.ok_or_else(|| truncated(name))?;
            let (more, next) = header::gnu_sparse_extension(&block).map_err(bad)?;
            map.extend(more);
            if map.len() > self.limits.max_sparse_entries {
                return Err(refuse(
                    libc::EFBIG,
                    name,
                    format_args!(
                        "sparse map has more than {} entries",
                        self.limits.max_sparse_entries
                    ),
                ));
            }
            extended = next;
        }
        Ok(Sparse {
            real_size,
            map: SparseMap::Known(map),
        })
    }

    /// Read the PAX 1.0 sparse map from the start of the content: decimal numbers, one
    /// per line (count, then offset/size pairs), padded to a block boundary.
    pub fn read_sparse_map(&mut self, name: &[u8], real_size: u64) -> Result<Vec<(u64, u64)>> {
        let start = self.remaining;
        let count = self.read_map_number(name)?;
        if count > self.limits.max_sparse_entries as u64 {
            return Err(refuse(
                libc::EFBIG,
                name,
                format_args!(
                    "sparse map has {count} entries, more than the limit of {}",
                    self.limits.max_sparse_entries
                ),
            ));
        }
        let mut map = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let offset = self.read_map_number(name)?;
            let len = self.read_map_number(name)?;
            map.push((offset, len));
        }
        let used = start - self.remaining;
        let pad = padding_of(used);
        if pad > self.remaining {
            return Err(refuse(
                libc::EBADMSG,
                name,
                "sparse map is larger than the entry",
            ));
        }
        self.skip(pad, name)?;
        self.remaining -= pad;
        check_sparse_map(&map, real_size, self.remaining, name)?;
        Ok(map)
    }

    fn read_map_number(&mut self, name: &[u8]) -> Result<u64> {
        let mut value: u64 = 0;
        let mut digits = 0;
        loop {
            // The map must end inside the entry's content: `data` hands out nothing
            // once the content is used up.
            if self.remaining == 0 {
                return Err(refuse(
                    libc::EBADMSG,
                    name,
                    "sparse map is larger than the entry",
                ));
            }
            let b = {
                let data = self.data(1, name)?;
                data[0]
            };
            match b {
                b'0'..=b'9' if digits < 20 => {
                    value = value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b - b'0')))
                        .ok_or_else(|| {
                            refuse(libc::EBADMSG, name, "sparse map number overflows")
                        })?;
                    digits += 1;
                }
                b'\n' if digits > 0 => return Ok(value),
                _ => return Err(refuse(libc::EBADMSG, name, "malformed sparse map")),
            }
        }
    }

    /// Content bytes of the current entry not yet handed out.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Hand out the next up to `max` content bytes of the current entry (at least one
    /// while any remain). Fails if the stream ends inside the content.
    pub fn data(&mut self, max: usize, name: &[u8]) -> Result<&[u8]> {
        debug_assert!(self.remaining > 0);
        if self.pos == self.end && !self.fill(name)? {
            return Err(truncated(name));
        }
        let n = (self.end - self.pos)
            .min(max)
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let start = self.pos;
        self.consume(n);
        self.remaining -= n as u64;
        Ok(&self.buf[start..start + n])
    }

    /// Read and discard everything after the end-of-archive marker.
    fn drain(&mut self) -> Result<()> {
        self.finished = true;
        let name = b"<end of archive>";
        loop {
            self.offset += (self.end - self.pos) as u64;
            self.pos = 0;
            self.end = 0;
            if !self.fill(name)? {
                return Ok(());
            }
        }
    }
}

/// Bytes of padding after `size` content bytes.
pub fn padding_of(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn cut_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(n) = v.iter().position(|&b| b == 0) {
        v.truncate(n);
    }
    v
}

fn number(v: Result<u64, NumberError>, field: &str, name: &[u8]) -> Result<u64> {
    v.map_err(|e| {
        refuse(
            libc::EBADMSG,
            name,
            format_args!("{field} field is {}", e.describe()),
        )
    })
}

fn id(v: u64, field: &str, name: &[u8]) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        refuse(
            libc::EBADMSG,
            name,
            format_args!("{field} {v} is out of range"),
        )
    })
}

fn truncated(name: &[u8]) -> Error {
    refuse(libc::EBADMSG, name, "unexpected end of archive")
}

/// An error from the input stream. Errors that carry our own `Error` (the download
/// job's failure or cancellation, already logged there) pass through unchanged;
/// others are logged here.
fn input_error(e: std::io::Error, name: &[u8]) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        return Error::from(e);
    }
    let err = Error::from(e);
    log_error_errno!(
        err.clone(),
        "Failed to read tar stream at '{}': {}",
        show(name),
        err.msg().map_or_else(|| err.strerror(), str::to_string)
    )
}

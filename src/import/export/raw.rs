//! Copying a raw disk image into an export stream ([`copy`]).
//!
//! The image must be a regular file (a directory is EISDIR, anything else EBADFD, as
//! upstream's check of the image). Its data is read with `pread`; the holes of a sparse
//! image (found with `SEEK_DATA`/`SEEK_HOLE`, only when its blocks do not cover its size)
//! are not read but written as zeros, since the output is a stream. Reading stops with
//! ECANCELED (unlogged) soon after `cancel` is set, and with EIO if the image shrinks
//! while it is read; a read error is logged with the C tool's `Failed to read raw file:`.
//! Errors of the output writer are returned unlogged.

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::sync::atomic::AtomicBool;

use nix::sys::stat::{fstat, SFlag};

use super::data::{CopyError, DataCopier};
use super::sparse::DataSegments;
use super::Stats;
use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// Copy all of the raw image `image` to `out`, uncompressed. `progress` is called after
/// every chunk with the totals so far; [`Stats::bytes_read`] counts the image's bytes
/// passed on, holes included, so that against the image's size it is the progress.
pub fn copy(
    image: BorrowedFd<'_>,
    out: &mut dyn Write,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(&Stats),
) -> Result<Stats> {
    let st = fstat(image)?;
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => {}
        SFlag::S_IFDIR => return Err(Error::new(libc::EISDIR)),
        _ => return Err(Error::new(libc::EBADFD)),
    }
    let size = st.st_size as u64;
    let mut stats = Stats::default();
    let mut copier = DataCopier::new();
    let mut chunk = |n: usize| {
        stats.bytes_read += n as u64;
        stats.bytes_written += n as u64;
        progress(&stats);
    };
    let sparse = (st.st_blocks as u64).saturating_mul(512) < size;
    let mut pos = 0;
    let result = (|| {
        if sparse {
            for segment in DataSegments::new(image, size) {
                let (offset, len) =
                    segment.map_err(|e| CopyError::Read(nix::errno::Errno::from_raw(e.errno())))?;
                copier.zeros(offset - pos, out, cancel, &mut chunk)?;
                copier.copy(image, offset, len, out, cancel, &mut chunk)?;
                pos = offset + len;
            }
            copier.zeros(size - pos, out, cancel, &mut chunk)
        } else {
            copier.copy(image, 0, size, out, cancel, &mut chunk)
        }
    })();
    result.map_err(|e| match e {
        CopyError::Cancelled => Error::new(libc::ECANCELED),
        CopyError::Shrank => log_error_errno!(
            Error::new(libc::EIO),
            "Raw image shrank while it was exported."
        ),
        CopyError::Read(e) => {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to read raw file: {}", e)
        }
        CopyError::Write(e) => e,
    })?;
    out.flush()?;
    Ok(stats)
}

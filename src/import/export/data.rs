//! Reading file data into an export stream: [`DataCopier`] copies a range of a file to a
//! writer through one reused buffer, checking the cancel flag before every read and
//! reporting each chunk, and tells a file that shrank from one that failed to read.

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;

use crate::util::error::Error;

/// Bytes read at once (and the granularity of progress reports).
pub const READ_SIZE: usize = 256 * 1024;

/// Why a copy stopped. The caller words the message: only it knows what the file is.
#[derive(Debug)]
pub enum CopyError {
    /// The cancel flag was set.
    Cancelled,
    /// The file ended before the range did.
    Shrank,
    /// Reading the file failed.
    Read(Errno),
    /// Writing to the output failed.
    Write(Error),
}

pub struct DataCopier {
    buf: Vec<u8>,
}

impl DataCopier {
    pub fn new() -> Self {
        DataCopier {
            buf: vec![0u8; READ_SIZE],
        }
    }

    /// Copy `len` bytes at `offset` of `fd` to `out`, calling `chunk` with the size of
    /// every piece written.
    pub fn copy(
        &mut self,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: u64,
        out: &mut dyn Write,
        cancel: &AtomicBool,
        chunk: &mut dyn FnMut(usize),
    ) -> Result<(), CopyError> {
        let end = offset + len;
        let mut at = offset;
        while at < end {
            if cancel.load(Ordering::Relaxed) {
                return Err(CopyError::Cancelled);
            }
            let want = (end - at).min(READ_SIZE as u64) as usize;
            let n = match nix::sys::uio::pread(fd, &mut self.buf[..want], at as i64) {
                Ok(0) => return Err(CopyError::Shrank),
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(CopyError::Read(e)),
            };
            out.write_all(&self.buf[..n])
                .map_err(|e| CopyError::Write(e.into()))?;
            at += n as u64;
            chunk(n);
        }
        Ok(())
    }

    /// Write `len` zero bytes to `out` (a hole of a raw image), in the same chunks.
    pub fn zeros(
        &mut self,
        len: u64,
        out: &mut dyn Write,
        cancel: &AtomicBool,
        chunk: &mut dyn FnMut(usize),
    ) -> Result<(), CopyError> {
        self.buf.fill(0);
        let mut left = len;
        while left > 0 {
            if cancel.load(Ordering::Relaxed) {
                return Err(CopyError::Cancelled);
            }
            let n = left.min(READ_SIZE as u64) as usize;
            out.write_all(&self.buf[..n])
                .map_err(|e| CopyError::Write(e.into()))?;
            left -= n as u64;
            chunk(n);
        }
        Ok(())
    }
}

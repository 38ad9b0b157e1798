//! (provisional; replaced by the util branch)

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::util::error::{Error, Result};

/// Provisional sparse write.
pub fn sparse_write(fd: BorrowedFd<'_>, buf: &[u8], _run_length: usize) -> Result<usize> {
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: valid buffer slice.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                buf[off..].as_ptr() as *const libc::c_void,
                buf.len() - off,
            )
        };
        if n < 0 {
            return Err(Error::last_os_error());
        }
        off += n as usize;
    }
    Ok(buf.len())
}

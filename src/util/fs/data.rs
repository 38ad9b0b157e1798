//! File data: copying a file's data (reflinked, or only its data extents so holes stay
//! holes) and writing a stream sparsely. Copies go in bounded chunks and look at their
//! cancel flag between two, so a signal stops a multi-GiB copy within a fraction of a
//! second.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::Whence;

use super::stat::{stat_fd, Meta};
use crate::util::btrfs;
use crate::util::error::{Error, Result};

/// Buffer size for copies that have to go through user space.
const COPY_BUFFER_SIZE: usize = 256 * 1024;
/// Most bytes one `copy_file_range` call copies (about 20-100 ms of disk): the cancel
/// flag is looked at between two.
const COPY_CHUNK: usize = 32 << 20;

/// ECANCELED once `cancel` is set.
fn check_cancel(cancel: Option<&AtomicBool>) -> Result<()> {
    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(Error::new(libc::ECANCELED));
    }
    Ok(())
}

/// Whether the file system of the directory `dir` can share extents between files
/// (reflinks: btrfs, xfs with reflink), tried on two unnamed temporary files in it, which
/// leave nothing behind.
pub fn can_share_extents(dir: BorrowedFd<'_>) -> bool {
    let tmpfile = || {
        let flags = OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        nix::fcntl::openat(dir, ".", flags, Mode::S_IRUSR | Mode::S_IWUSR)
    };
    let (Ok(src), Ok(dst)) = (tmpfile(), tmpfile()) else {
        return false;
    };
    nix::unistd::write(&src, b"x").is_ok() && btrfs::reflink(src.as_fd(), dst.as_fd()).is_ok()
}

/// Copy all of `src`'s data to the start of the (empty) file `dst`: a reflink when the
/// file system can share extents, otherwise a copy of the data extents only, so holes
/// stay holes. `dst` ends up exactly as long as `src`, trailing hole included. The
/// file offsets of both descriptors may change. `cancel`, when set, stops the copy with
/// ECANCELED.
pub fn copy_file_data(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let meta = stat_fd(src)?;
    if meta.size == 0 || btrfs::reflink(src, dst).is_ok() {
        return Ok(());
    }
    let mut buffer = Vec::new();
    copy_data_extents(src, dst, &meta, &mut buffer, cancel)
}

/// Copy the data extents of `src` (of which `meta` is the metadata) to the same offsets
/// in `dst`, then set `dst`'s size. `buffer` is reused across calls.
pub(super) fn copy_data_extents(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    meta: &Meta,
    buffer: &mut Vec<u8>,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let size = meta.size as i64;
    // Fewer allocated blocks than the size needs means holes (or compression): look
    // for the data; otherwise skip the two lseeks per extent.
    let maybe_sparse = meta.blocks.saturating_mul(512) < meta.size;
    if maybe_sparse {
        let mut pos = 0i64;
        while pos < size {
            let data = match nix::unistd::lseek(src, pos, Whence::SeekData) {
                Ok(data) => data,
                // No data after `pos`: the rest is a hole.
                Err(Errno::ENXIO) => break,
                // No SEEK_DATA support: copy everything.
                Err(Errno::EINVAL | Errno::EOPNOTSUPP) if pos == 0 => {
                    copy_range(src, dst, (0, meta.size), buffer, cancel)?;
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            if data >= size {
                break;
            }
            let hole = nix::unistd::lseek(src, data, Whence::SeekHole)?.min(size);
            copy_range(
                src,
                dst,
                (data as u64, (hole - data) as u64),
                buffer,
                cancel,
            )?;
            pos = hole;
        }
        // A trailing hole is not written: the size must be set.
        nix::unistd::ftruncate(dst, size)?;
    } else {
        copy_range(src, dst, (0, meta.size), buffer, cancel)?;
    }
    Ok(())
}

/// Copy `len` bytes at `offset` from `src` to the same offset in `dst`, in the kernel
/// when it can (`copy_file_range`), else through `buffer`.
fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    (offset, len): (u64, u64),
    buffer: &mut Vec<u8>,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let mut off_in = offset as i64;
    let mut off_out = offset as i64;
    let mut left = len;
    while left > 0 {
        check_cancel(cancel)?;
        let chunk = usize::try_from(left).unwrap_or(usize::MAX).min(COPY_CHUNK);
        match nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), chunk) {
            // The source got shorter: copy what there is.
            Ok(0) => return Ok(()),
            Ok(n) => left -= n as u64,
            Err(Errno::EINTR) => {}
            Err(Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                return copy_range_by_read_write(src, dst, (off_in as u64, left), buffer, cancel);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_by_read_write(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    (offset, len): (u64, u64),
    buffer: &mut Vec<u8>,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    buffer.resize(COPY_BUFFER_SIZE, 0);
    let mut offset = offset as i64;
    let mut left = len;
    while left > 0 {
        check_cancel(cancel)?;
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let n = match nix::sys::uio::pread(src, &mut buffer[..want], offset) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut written = 0;
        while written < n {
            match nix::sys::uio::pwrite(dst, &buffer[written..n], offset + written as i64) {
                Ok(0) => return Err(Error::new(libc::EIO)),
                Ok(w) => written += w,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        offset += n as i64;
        left -= n as u64;
    }
    Ok(())
}

/// Write `buf` at the current offset of `fd`, seeking over runs of NUL bytes instead of
/// writing them when a run is longer than `run_length` or touches either end of `buf`
/// (spec §3.4; the download job uses 64). The caller sets the final size with
/// `ftruncate`, since a trailing run is never written. Returns `buf.len()`; a short
/// write is EIO.
pub fn sparse_write(fd: BorrowedFd<'_>, buf: &[u8], run_length: usize) -> Result<usize> {
    let end = buf.len();
    // `written` is where the pending (not yet written) data starts, `pos` the scan.
    let mut written = 0;
    let mut pos = 0;
    while pos < end {
        let zeros = buf[pos..].iter().take_while(|b| **b == 0).count();
        if zeros == 0 {
            // Jump to the next NUL byte.
            pos += buf[pos..].iter().position(|b| *b == 0).unwrap_or(end - pos);
            continue;
        }
        let run_end = pos + zeros;
        if zeros > run_length || pos == 0 || run_end == end {
            write_exact(fd, &buf[written..pos])?;
            nix::unistd::lseek(fd, zeros as i64, Whence::SeekCur)?;
            written = run_end;
        }
        pos = run_end;
    }
    write_exact(fd, &buf[written..end])?;
    Ok(end)
}

/// One `write()`; a short write is EIO (as in the C job, which has no retry loop).
fn write_exact(fd: BorrowedFd<'_>, data: &[u8]) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let n = nix::unistd::write(fd, data)?;
    if n != data.len() {
        return Err(Error::new(libc::EIO));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    /// The seek decisions of `sparse_write`, observed on a pipe, where any seek fails.
    #[test]
    fn sparse_write_seeks_exactly_over_long_and_edge_runs() {
        let write_to_pipe = |buf: &[u8]| {
            let (r, w) = nix::unistd::pipe().unwrap();
            let result = sparse_write(w.as_fd(), buf, 64);
            drop(w);
            let mut out = Vec::new();
            File::from(r).read_to_end(&mut out).unwrap();
            (result, out)
        };
        let mut middle_64 = vec![1u8];
        middle_64.extend([0; 64]);
        middle_64.push(2);
        let mut middle_65 = vec![1u8];
        middle_65.extend([0; 65]);
        middle_65.push(2);

        // Written as is: no runs, or short runs in the middle (up to the run length).
        for buf in [&b"abc"[..], b"a\0b", b"a\0\0\0b", &middle_64] {
            let (result, out) = write_to_pipe(buf);
            assert_eq!(result.unwrap(), buf.len(), "buffer {buf:?}");
            assert_eq!(out, buf);
        }
        // Seeked (ESPIPE on a pipe): a run at either end, or longer than the run length.
        for buf in [&b"\0a"[..], b"a\0", b"\0", &middle_65] {
            let (result, _) = write_to_pipe(buf);
            assert_eq!(result.unwrap_err().errno(), libc::ESPIPE, "buffer {buf:?}");
        }
        // What precedes the first seek has been written.
        let (_, out) = write_to_pipe(&middle_65);
        assert_eq!(out, [1]);
        // An empty buffer does nothing.
        assert_eq!(write_to_pipe(b"").0.unwrap(), 0);
    }

    #[test]
    fn sparse_write_leaves_holes_in_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut file = File::create_new(tmp.path().join("sparse")).unwrap();
        let mut expected = Vec::new();
        // Two calls, as the download job makes: the second starts where the first ended.
        let mut first = vec![7u8; 4096];
        first.extend(vec![0u8; 4 << 20]);
        first.extend(b"middle\0\0\0data");
        let mut second = vec![0u8; 2 << 20];
        second.extend(vec![9u8; 4096]);
        second.extend(vec![0u8; 1 << 20]);
        for buf in [&first, &second] {
            assert_eq!(sparse_write(file.as_fd(), buf, 64).unwrap(), buf.len());
            expected.extend_from_slice(buf);
        }
        assert_eq!(file.stream_position().unwrap(), expected.len() as u64);
        // The trailing run was skipped: the job truncates to the size it counted.
        file.set_len(expected.len() as u64).unwrap();
        file.sync_all().unwrap();

        let mut content = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut content).unwrap();
        assert!(
            content == expected,
            "file content differs from what was written"
        );
        let allocated = file.metadata().unwrap().blocks() * 512;
        assert!(
            allocated <= 64 * 1024,
            "{allocated} bytes allocated for about 8 KiB of data in a 7 MiB file"
        );
    }
}

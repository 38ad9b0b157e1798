//! `systemd-import raw FILE [NAME]`: a raw or qcow2 disk image (plain, xz, gzip, bzip2
//! or zstd) written sparsely into a new NOCOW file (mode 0664 before the umask),
//! converted to raw with the pullers' qcow2 code if it is qcow2 (unless
//! `--convert-qcow2=no`), marked read-only if asked, and moved into place as
//! `<root>/<NAME>.raw`. With `--direct` NAME is the file to write, at `--offset=` if
//! given; `--size-max=` bounds what is written.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicBool;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::Whence;

use super::{decompressed, input_size, mark_read_only, sync_fs, ImportRequest, Progress, Target};
use crate::import::store::{self, TempPath};
use crate::import::url::qcow2;
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::format::format_bytes;
use crate::util::fs;

/// Mode of the new image file, before the umask (as the C tool's).
const IMAGE_MODE: u32 = 0o664;
/// Bytes read and written at a time.
const CHUNK: usize = 128 * 1024;
/// Runs of NUL bytes longer than this become holes.
const SPARSE_RUN: usize = 64;

/// The whole import; blocks (a task of the runner).
pub(super) fn run(req: ImportRequest, cancel: &AtomicBool, progress: &Progress) -> Result<()> {
    if let Some(size) = input_size(&req.input) {
        progress.set_total(size);
    }
    let mut target = Target::new(&req, &format!("{}.raw", req.local));
    target.make_parents();
    let out = if target.is_direct() {
        open_direct(&target, req.offset.is_some())?
    } else {
        store::create_image_file(target.path(), OFlag::O_RDWR, IMAGE_MODE)?
    };
    let offset = req.offset.unwrap_or(0);
    if offset > 0 {
        nix::unistd::lseek(out.as_fd(), offset as i64, Whence::SeekSet).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to seek to offset: {}", e)
        })?;
    }
    let stream = decompressed(req.input, progress, cancel)?;
    let written = write_sparse(stream, &out, req.size_max)?;
    if req.offset.is_none() {
        nix::unistd::ftruncate(out.as_fd(), written as i64).map_err(|e| {
            let e = Error::from(e);
            log_error_errno!(e.clone(), "Failed to truncate file: {}", e)
        })?;
    }

    let mut image = out;
    let converted = if req.convert_qcow2 && !target.is_direct() {
        convert_if_qcow2(&image, &target, cancel)?
    } else {
        None
    };
    match converted {
        Some((temp, fd)) => {
            target.replace_temp(temp);
            image = fd;
        }
        None => log::info!("Wrote {}.", format_bytes(written)),
    }
    if req.sync {
        sync_fs(&image).map_err(|e| log_error_errno!(e.clone(), "Failed to sync: {}", e))?;
    }
    target
        .install()
        .map_err(|e| log_error_errno!(e.clone(), "Failed to move image into place: {}", e))?;
    mark_read_only(req.read_only && req.offset.is_none(), &image)
}

/// `--direct`: open (create, or truncate unless writing at an offset) the file named.
fn open_direct(target: &Target, at_offset: bool) -> Result<OwnedFd> {
    let mut flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    if !at_offset {
        flags |= OFlag::O_TRUNC;
    }
    let path = target.path();
    nix::fcntl::open(path, flags, Mode::from_bits_truncate(IMAGE_MODE)).map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e)
    })
}

/// Copy `stream` into `out` at its offset, leaving holes for runs of zeros; at most
/// `max` bytes. Returns the bytes passed on.
fn write_sparse(mut stream: impl Read, out: &OwnedFd, max: Option<u64>) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from(e)),
        };
        if max.is_some_and(|max| written + n as u64 > max) {
            return Err(log_error_errno!(
                Error::new(libc::EFBIG),
                "Image larger than the maximum size of {}, refusing.",
                format_bytes(max.unwrap_or(0))
            ));
        }
        fs::sparse_write(out.as_fd(), &buf[..n], SPARSE_RUN)
            .map_err(|e| log_error_errno!(e.clone(), "Failed to write to file: {}", e))?;
        written += n as u64;
    }
}

/// If `image` is a qcow2 image, convert it into a new temporary file next to the target
/// and return that with its fd.
fn convert_if_qcow2(
    image: &OwnedFd,
    target: &Target,
    cancel: &AtomicBool,
) -> Result<Option<(TempPath, OwnedFd)>> {
    let is_qcow2 = qcow2::qcow2_detect(image.as_fd()).or_else(|e| {
        // Shorter than a qcow2 header: not one.
        if e.errno() == libc::EIO {
            Ok(false)
        } else {
            Err(log_error_errno!(
                e.clone(),
                "Failed to detect whether this is a QCOW2 image: {}",
                e
            ))
        }
    })?;
    if !is_qcow2 {
        return Ok(None);
    }
    log::info!("Unpacking QCOW2 file.");
    let temp = TempPath::next_to(target.final_path());
    let converted = store::create_image_file(temp.path(), OFlag::O_RDWR, IMAGE_MODE)?;
    qcow2::qcow2_convert(image.as_fd(), converted.as_fd(), Some(cancel)).map_err(|e| {
        if e.errno() == libc::ECANCELED {
            return e;
        }
        log_error_errno!(e.clone(), "Failed to convert qcow2 image: {}", e)
    })?;
    Ok(Some((temp, converted)))
}

//! Where an archive source's files are: a directory (an OCI layout) or a tar archive
//! (`oci-archive:`, `docker-archive:`), indexed once ([`crate::import::unpack::members`])
//! and then read member by member at their offsets, without extracting anything. A
//! compressed archive is first decompressed into a spool file next to the images (deleted
//! when the import ends): reading by offset needs a plain tar, and memory stays bounded.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::import::local::{Counting, Progress};
use crate::import::store::TempPath;
use crate::import::stream::{self, Compression};
use crate::import::unpack::{self, Limits};
use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// An opened source.
pub enum Container {
    Directory(PathBuf),
    Tar {
        /// The archive, as given.
        path: PathBuf,
        file: Arc<File>,
        /// Member name: (offset, size); the last member of a name wins, as with tar.
        members: HashMap<String, (u64, u64)>,
        /// The decompressed copy of a compressed archive.
        _spool: Option<TempPath>,
    },
}

/// One file of the source: `len` bytes, read from `offset` on.
pub struct MemberReader {
    file: Arc<File>,
    offset: u64,
    len: u64,
    pos: u64,
}

impl MemberReader {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }
}

impl Read for MemberReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len - self.pos;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self
            .file
            .read_at(&mut buf[..want], self.offset + self.pos)?;
        if n == 0 {
            return Err(io::Error::from(Error::with_message(
                libc::EBADMSG,
                "The archive was cut short while it was read.",
            )));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn open_failed(path: &Path, e: impl Into<Error>) -> Error {
    let e = e.into();
    log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e)
}

impl Container {
    /// Open `path`: a directory as it is, a file as a tar archive (decompressed first into
    /// a spool below `spool_dir` if compressed). What is read is counted into `progress`.
    pub fn open(
        path: &Path,
        spool_dir: &Path,
        progress: &Progress,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Container> {
        let md = std::fs::metadata(path).map_err(|e| open_failed(path, e))?;
        if md.is_dir() {
            return Ok(Container::Directory(path.to_path_buf()));
        }
        let open = || File::open(path).map_err(|e| open_failed(path, e));
        let (compression, _) = stream::sniff(open()?).map_err(|e| open_failed(path, e))?;
        let file = open()?;
        let (file, spool) = if compression == Compression::Uncompressed {
            (file, None)
        } else {
            let (file, spool) = decompress(file, path, spool_dir, progress, cancel)?;
            (file, Some(spool))
        };
        let mut input = Counting::new(file.try_clone().map_err(Error::from)?, progress, cancel);
        let index = unpack::members(&mut input, &Limits::default(), Some(cancel.clone()))?;
        let members = index
            .into_iter()
            .map(|m| (m.name, (m.offset, m.size)))
            .collect();
        Ok(Container::Tar {
            path: path.to_path_buf(),
            file: Arc::new(file),
            members,
            _spool: spool,
        })
    }

    /// The file `name` (a relative path with `/`), `None` if the source has none.
    pub fn member(&self, name: &str) -> Result<Option<MemberReader>> {
        match self {
            Container::Directory(dir) => {
                // Names come from the source's own documents: no way out of it.
                if name.starts_with('/') || name.split('/').any(|c| c == "..") {
                    return Ok(None);
                }
                let path = dir.join(name);
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(open_failed(&path, e)),
                };
                let md = file.metadata().map_err(|e| open_failed(&path, e))?;
                if !md.is_file() {
                    return Ok(None);
                }
                Ok(Some(MemberReader {
                    file: Arc::new(file),
                    offset: 0,
                    len: md.len(),
                    pos: 0,
                }))
            }
            Container::Tar { file, members, .. } => {
                let name = name.strip_prefix("./").unwrap_or(name);
                Ok(members.get(name).map(|&(offset, len)| MemberReader {
                    file: file.clone(),
                    offset,
                    len,
                    pos: 0,
                }))
            }
        }
    }

    /// The source as named in messages.
    pub fn path(&self) -> &Path {
        match self {
            Container::Directory(p) | Container::Tar { path: p, .. } => p,
        }
    }
}

/// Decompress `file` into a spool file below `dir`; returns it reopened for reading.
fn decompress(
    file: File,
    path: &Path,
    dir: &Path,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<(File, TempPath)> {
    let counting = Counting::new(file, progress, cancel);
    let (compression, sniffed) = stream::sniff(counting)?;
    compression.log_detection();
    let mut decoder = compression.decoder(sniffed)?;
    let _ = crate::util::fs::mkdir_parents(&dir.join("x"), 0o700);
    let spool = TempPath::new(crate::util::fs::tempfn_random(&dir.join("oci-archive")));
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(spool.path())
        .map_err(|e| open_failed(spool.path(), e))?;
    io::copy(&mut decoder, &mut out).map_err(|e| {
        let e = Error::from(e);
        if e.errno() == libc::ECANCELED {
            return e;
        }
        log_error_errno!(e.clone(), "Failed to decompress {}: {}", path.display(), e)
    })?;
    io::Seek::rewind(&mut out).map_err(Error::from)?;
    Ok((out, spool))
}

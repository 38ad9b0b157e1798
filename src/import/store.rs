//! Where images are kept, one implementation for every importer (tar, raw, dkr, oci):
//!
//! * **temporary names** ([`TempPath`]): everything an importer creates first gets a
//!   `.#` name next to its final one and is removed, subvolumes included, unless kept;
//! * **owners** ([`Owner`], in `owner`): a pull's lock on its image root, which tells the
//!   leftovers of a killed process (removed when the next pull starts) from the
//!   temporaries of a running one (left alone);
//! * **partial downloads** ([`Partial`], in `partial`): named after what they hold, locked
//!   by their users, resumed by the next pull after a crash, shared by concurrent pulls;
//! * **atomic installation** ([`install_replacing`], [`LocalImage::install`],
//!   [`write_atomically`]): nothing appears under a final name before it is complete, and
//!   a replaced object is swapped out in one step;
//! * **new trees** ([`make_tree`]): a subvolume where the file system has them, else a
//!   directory;
//! * **local images** (spec §4.7): [`copy_tree`] (a writable snapshot or copy of a
//!   directory image: tar, dkr, oci on btrfs), [`LocalImage`] (oci's applied tree moved
//!   into place), [`copy_file`] (raw's writable copy of a disk image);
//! * **the download cache** (spec §5.1): [`cache_path`] names tar and raw entries after
//!   their URL and ETag, [`find_old_etags`] finds the ETags of those we have.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::util::error::{Error, Result};
use crate::util::{btrfs, escape, fs, validate};

mod owner;
mod partial;
pub use owner::{LocalLock, Owner, Sweep};
pub use partial::{is_partial, partial_path, Claim, Partial, PartialMode, Waiter};

use crate::{log_error_errno, log_warning_errno};

/// The characters systemd escapes when it turns a URL or ETag into a file name.
const FILENAME_ESCAPE: &str = "/.#\"'";
/// Mode of a new tree's top directory where there are no subvolumes.
const TREE_MODE: u32 = 0o755;
/// Mode of a raw local image: writable by owner and group, as in the C tool.
const LOCAL_FILE_MODE: u32 = 0o664;

/// A temporary file, directory or subvolume that is removed (recursively, subvolumes
/// included) when dropped, unless [`keep`](TempPath::keep) was called. Importers hold one
/// for everything they create under a `.#` name, so an error or SIGINT never leaves
/// anything behind.
#[derive(Debug)]
pub struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    /// Take charge of `path` (it may or may not exist yet).
    pub fn new(path: PathBuf) -> Self {
        TempPath { path: Some(path) }
    }

    /// A fresh random temporary name next to `final_path` (`<dir>/.#<name><16 hex>`).
    pub fn next_to(final_path: &Path) -> Self {
        TempPath::new(fs::tempfn_random(final_path))
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// The object was moved into place or is wanted: do not remove it.
    pub fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = fs::rm_rf(&path) {
                log::warn!("Failed to remove {}: {}", path.display(), e);
            }
        }
    }
}

/// Move `from` into place as `to`, atomically replacing whatever is there (a directory or
/// subvolume too, which rename(2) cannot do): the two are exchanged and the old one is
/// removed afterwards. Readers see the old or the new object, never a mix or nothing
/// (decision Q10: a stale cache entry is replaced atomically).
pub fn install_replacing(from: &Path, to: &Path) -> Result<()> {
    match fs::rename_noreplace(from, to) {
        Err(e) if e.errno() == libc::EEXIST => {
            fs::rename_exchange(from, to)?;
            // `from` now names the old object.
            fs::rm_rf(from)
        }
        r => r,
    }
}

/// Write `path` through a temporary file (mode 0644) and a rename, replacing what was
/// there. Errors are logged.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let temp = TempPath::next_to(path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp.path())
        .and_then(|mut f| std::io::Write::write_all(&mut f, content))
        .and_then(|()| std::fs::rename(temp.path(), path));
    written.map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to write {}: {}", path.display(), e)
    })?;
    temp.keep();
    Ok(())
}

/// A new, empty tree at `path` (which must not exist): a subvolume where the file system
/// has them (btrfs), else a directory with mode 0755 whatever the umask; returned opened.
/// Errors are logged ("Failed to create subvolume/directory …", "Failed to open …").
pub fn make_tree(path: &Path) -> Result<OwnedFd> {
    make_tree_as(path, true)
}

/// [`make_tree`], with `subvolume` false making a plain directory on btrfs too
/// (`--btrfs-subvol=no`).
pub fn make_tree_as(path: &Path, subvolume: bool) -> Result<OwnedFd> {
    create_tree_as(path, subvolume).inspect_err(|e| log::error!("{}", e.msg().unwrap_or_default()))
}

/// [`make_tree`], with the errors' lines attached but not logged, for a caller that says
/// it in its own words.
pub fn create_tree(path: &Path) -> Result<OwnedFd> {
    create_tree_as(path, true)
}

/// [`create_tree`], with `subvolume` false making a plain directory on btrfs too
/// (`--btrfs-subvol=no`).
pub fn create_tree_as(path: &Path, subvolume: bool) -> Result<OwnedFd> {
    let failed = |what: &str, e: Error| {
        let line = format!("Failed to {what} {}: {}", path.display(), e);
        e.message(line)
    };
    let (parent, name) = fs::split_parent(path)?;
    let dir = fs::open_dir(parent).map_err(|e| failed("create directory", e))?;
    let made = if subvolume {
        btrfs::subvol_make(dir.as_fd(), name)
    } else {
        Err(Error::new(libc::ENOTTY))
    };
    let subvolume = match made {
        Ok(()) => true,
        Err(e) if e.errno() == libc::ENOTTY => {
            let mode = Mode::from_bits_truncate(TREE_MODE);
            nix::sys::stat::mkdirat(dir.as_fd(), name, mode)
                .map_err(|e| failed("create directory", e.into()))?;
            false
        }
        Err(e) => return Err(failed("create subvolume", e)),
    };
    let tree = fs::open_dir_at(dir.as_fd(), name).map_err(|e| failed("open", e))?;
    if !subvolume {
        // Independent of the umask.
        nix::sys::stat::fchmod(tree.as_fd(), Mode::from_bits_truncate(TREE_MODE))
            .map_err(|e| failed("create directory", e.into()))?;
    }
    Ok(tree)
}

/// A local image being made under a temporary name next to its final one, and moved
/// into place only once complete: with `force` an existing image is then replaced
/// atomically; without it an image that appeared meanwhile is left alone and
/// [`install`](Self::install) fails with EEXIST. Dropped uninstalled, it is removed.
pub struct LocalImage {
    temp: TempPath,
    target: PathBuf,
    /// The image's name, for "Created new local image '…'."
    local: String,
    force: bool,
}

impl LocalImage {
    /// `<root>/<file_name>` (`<local>` for a tree, `<local>.raw` for a disk image).
    pub fn new(root: &Path, file_name: &str, local: &str, force: bool) -> Self {
        let target = root.join(file_name);
        LocalImage {
            temp: TempPath::next_to(&target),
            target,
            local: local.to_string(),
            force,
        }
    }

    /// `<root>/<local>`, made already at `temp`.
    pub fn from_temp(temp: TempPath, root: &Path, local: &str, force: bool) -> Self {
        LocalImage {
            temp,
            target: root.join(local),
            local: local.to_string(),
            force,
        }
    }

    /// Where the image is written until it is installed.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// Move the complete image into place and say so. Errors are the caller's to log.
    pub fn install(self) -> Result<()> {
        if self.force {
            install_replacing(self.temp.path(), &self.target)?;
        } else {
            fs::rename_noreplace(self.temp.path(), &self.target)?;
        }
        self.temp.keep();
        log::info!("Created new local image '{}'.", self.local);
        Ok(())
    }
}

/// Spec §4.7 for directory images (tar, dkr, oci on btrfs): make `<root>/<local>` a
/// writable btrfs snapshot of `source`, or, on other file systems, a copy (with reflinks
/// where the file system has them; the C tool failed there with "Is a directory"), as a
/// [`LocalImage`]. Runs long on non-btrfs file systems: call it from a task, not the loop
/// thread.
pub fn copy_tree(
    source: &Path,
    root: &Path,
    local: &str,
    force: bool,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    copy_tree_as(source, root, local, force, (true, false), cancel)
}

/// [`copy_tree`], with `subvolume` false making the local image a plain directory, a
/// copy with reflinks where the file system has them, on btrfs too (`--btrfs-subvol=no`,
/// as the C tool's `copy_tree()` there); `quota` puts a new subvolume in its own qgroup
/// ([`btrfs::subvol_auto_qgroup`], `--btrfs-quota=`; quietly skipped where quota is off).
pub fn copy_tree_as(
    source: &Path,
    root: &Path,
    local: &str,
    force: bool,
    (subvolume, quota): (bool, bool),
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let image = LocalImage::new(root, local, local, force);
    let failed = |e: Error| log_error_errno!(e.clone(), "Failed to create local image: {}", e);
    let copied = if subvolume {
        fs::snapshot_or_copy(source, image.path(), false, cancel)
    } else {
        fs::copy_tree(source, image.path(), cancel)
    };
    copied.map_err(failed)?;
    if subvolume && quota {
        assign_quota_group(image.path(), false);
    }
    image.install().map_err(failed)
}

/// `--btrfs-quota=yes` for the new tree at `path`, if it is a subvolume: its qgroup
/// layout ([`btrfs::subvol_auto_qgroup`]). A failure (quota off on the file system) is
/// only warned about when `warn`, as systemd-pull does for the downloaded tree.
pub fn assign_quota_group(path: &Path, warn: bool) {
    let Ok(tree) = fs::open_dir(path) else {
        return;
    };
    if !btrfs::is_subvolume(tree.as_fd()).unwrap_or(false) {
        return;
    }
    if let Err(e) = btrfs::subvol_auto_qgroup(tree.as_fd()) {
        let line = format!(
            "Failed to set up default quota hierarchy for {}: {}",
            path.display(),
            e
        );
        if warn {
            log::warn!("{line}");
        } else {
            log::debug!("{line}");
        }
    }
}

/// Spec §5.4 for disk images (raw): write a writable copy of the file `source` (mode
/// 0664 whatever the umask, NOCOW, holes kept, times and xattrs kept where possible) to
/// the local image's temporary name. The caller installs it. Blocks: call it from a task.
pub fn copy_file(source: &Path, image: &LocalImage, cancel: &AtomicBool) -> Result<()> {
    copy_file_with(source, image, true, cancel)
}

/// [`copy_file`], with the mode 0664 subject to the umask unless `exact_mode` (systemd
/// 252 leaves it to the umask: 0644 under 022).
pub fn copy_file_with(
    source: &Path,
    image: &LocalImage,
    exact_mode: bool,
    cancel: &AtomicBool,
) -> Result<()> {
    let src = open_read_only(source)
        .map_err(|e| log_error_errno!(e.clone(), "Failed to open vendor image: {}", e))?;
    let path = image.path();
    let create_failed =
        |e: Error| log_error_errno!(e.clone(), "Failed to create writable copy of image: {}", e);
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
    let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let mode = Mode::from_bits_truncate(LOCAL_FILE_MODE);
    let dst = nix::fcntl::open(path, flags, mode).map_err(|e| create_failed(e.into()))?;
    if exact_mode {
        // The umask must not make the image read-only for the group.
        nix::sys::stat::fchmod(dst.as_fd(), mode).map_err(|e| create_failed(e.into()))?;
    }
    set_nocow(&dst, path);
    fs::copy_file_data(src.as_fd(), dst.as_fd(), Some(cancel)).map_err(|e| match e.errno() {
        // The pull was cancelled: the runner says so.
        libc::ECANCELED => e,
        libc::ENOSPC => log_error_errno!(
            e.clone(),
            "Failed to make writable copy of image at {}: {}",
            path.display(),
            e
        ),
        _ => log_error_errno!(e.clone(), "Failed to make writable copy of image: {}", e),
    })?;
    // Best effort, as in the C tool.
    let _ = fs::copy_times(src.as_fd(), dst.as_fd());
    let _ = fs::copy_xattrs(src.as_fd(), dst.as_fd());
    if !exact_mode {
        // systemd 252 also keeps the source's birth time, as `user.crtime_usec`
        // (little-endian microseconds).
        let born = std::fs::metadata(source).and_then(|m| m.created());
        if let Ok(usec) = born.map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64)
        }) {
            let _ =
                crate::util::sys::fsetxattr(dst.as_fd(), c"user.crtime_usec", &usec.to_le_bytes());
        }
    }
    Ok(())
}

/// Create a disk image file for writing (`O_EXCL`, `mode` subject to the umask) and turn
/// copy-on-write off for it (disk images are rewritten in place; a failure only warns).
pub fn create_image_file(path: &Path, flags: OFlag, mode: u32) -> Result<OwnedFd> {
    let flags = flags | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let fd = nix::fcntl::open(path, flags, Mode::from_bits_truncate(mode)).map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to create {}: {}", path.display(), e)
    })?;
    set_nocow(&fd, path);
    Ok(fd)
}

/// Turn copy-on-write off (btrfs). A file system without the flag (ext4, xfs, tmpfs) is
/// only worth a debug line, as in later systemd; other failures warn, as in the C tool.
pub fn set_nocow(fd: &OwnedFd, path: &Path) {
    match fs::chattr_nocow(fd.as_fd()) {
        Ok(()) => {}
        Err(e) if matches!(e.errno(), libc::EOPNOTSUPP | libc::ENOTTY) => {
            log::debug!("Failed to set file attributes on {}: {}", path.display(), e);
        }
        Err(e) => {
            log_warning_errno!(
                e.clone(),
                "Failed to set file attributes on {}: {}",
                path.display(),
                e
            );
        }
    }
}

/// Flush the file system `path` is on (`syncfs`; systemd-pull's `--sync=yes`). Errors
/// are logged.
pub fn sync_file_system(path: &Path) -> Result<()> {
    let synced = fs::open_dir(path).and_then(|dir| Ok(nix::unistd::syncfs(dir.as_fd())?));
    synced
        .map_err(|e| log_error_errno!(e.clone(), "Failed to synchronize {}: {}", path.display(), e))
}

/// Open a file read-only.
pub fn open_read_only(path: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    Ok(nix::fcntl::open(path, flags, Mode::empty())?)
}

/// The two kinds of download cache entries (spec §5.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CacheKind {
    /// `.tar-<url>[.<etag>]`: a read-only directory or subvolume.
    Tar,
    /// `.raw-<url>[.<etag>].raw`: a read-only sparse file.
    Raw,
}

impl CacheKind {
    fn prefix(self) -> &'static str {
        match self {
            CacheKind::Tar => ".tar-",
            CacheKind::Raw => ".raw-",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            CacheKind::Tar => "",
            CacheKind::Raw => ".raw",
        }
    }
}

/// `<root>/<prefix><escaped url>[.<escaped etag>]<suffix>`.
pub fn cache_path(image_root: &Path, kind: CacheKind, url: &str, etag: Option<&str>) -> PathBuf {
    let mut name = format!("{}{}", kind.prefix(), escape::xescape(url, FILENAME_ESCAPE));
    if let Some(etag) = etag {
        name.push('.');
        name.push_str(&escape::xescape(etag, FILENAME_ESCAPE));
    }
    name.push_str(kind.suffix());
    image_root.join(name)
}

/// `<root>/.#url-<escaped url>.partial`: the partial download of `url` (pull-tar and
/// pull-raw), escaped as the cache names are; its ETag is recorded with it.
pub fn url_partial_path(image_root: &Path, url: &str) -> PathBuf {
    partial_path(
        image_root,
        &format!("url-{}", escape::xescape(url, FILENAME_ESCAPE)),
    )
}

/// ETags of cache entries for `url` under `image_root`, to send as `If-None-Match`. A
/// missing root means none; entries of the wrong type or with an invalid ETag are ignored.
pub fn find_old_etags(image_root: &Path, kind: CacheKind, url: &str) -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(image_root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            let e = Error::from(e);
            return Err(log_error_errno!(
                e.clone(),
                "Failed to enumerate {}: {}",
                image_root.display(),
                e
            ));
        }
    };
    let head = format!(
        "{}{}.",
        kind.prefix(),
        escape::xescape(url, FILENAME_ESCAPE)
    );
    let mut etags = Vec::new();
    for entry in dir {
        let entry = entry.map_err(Error::from)?;
        let wanted_type = match entry.file_type() {
            Ok(t) => match kind {
                CacheKind::Tar => t.is_dir(),
                CacheKind::Raw => t.is_file(),
            },
            Err(_) => true,
        };
        if !wanted_type {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(middle) = name
            .strip_prefix(&head)
            .and_then(|rest| rest.strip_suffix(kind.suffix()))
        else {
            continue;
        };
        if let Ok(etag) = escape::cunescape(middle) {
            if validate::http_etag_is_valid(&etag) {
                etags.push(etag);
            }
        }
    }
    etags.sort();
    Ok(etags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_paths_match_the_spec_examples() {
        let root = Path::new("/var/lib/machines");
        assert_eq!(
            cache_path(root, CacheKind::Raw, "http://x/y.raw", Some("\"abc\"")),
            PathBuf::from(
                "/var/lib/machines/.raw-http:\\x2f\\x2fx\\x2fy\\x2eraw.\\x22abc\\x22.raw"
            )
        );
        assert_eq!(
            cache_path(
                root,
                CacheKind::Tar,
                "https://hub.nspawn.org/storage/debian/bullseye/tar/image.tar.xz",
                Some("\"2d9c858-5d07d4127fef9\"")
            ),
            PathBuf::from(
                "/var/lib/machines/.tar-https:\\x2f\\x2fhub\\x2enspawn\\x2eorg\\x2fstorage\\x2fdebian\\x2fbullseye\\x2ftar\\x2fimage\\x2etar\\x2exz.\\x222d9c858-5d07d4127fef9\\x22"
            )
        );
        assert_eq!(
            cache_path(root, CacheKind::Tar, "http://x/y", None),
            PathBuf::from("/var/lib/machines/.tar-http:\\x2f\\x2fx\\x2fy")
        );
    }

    #[test]
    fn old_etags_are_found_by_type_and_validity() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let url = "http://x/y.raw";
        std::fs::write(cache_path(r, CacheKind::Raw, url, Some("\"a\"")), b"").unwrap();
        std::fs::write(cache_path(r, CacheKind::Raw, url, Some("W/\"b\"")), b"").unwrap();
        // Not an ETag, another URL, the wrong type, no ETag part: all ignored.
        std::fs::write(cache_path(r, CacheKind::Raw, url, Some("bogus")), b"").unwrap();
        std::fs::write(
            cache_path(r, CacheKind::Raw, "http://x/z.raw", Some("\"c\"")),
            b"",
        )
        .unwrap();
        std::fs::create_dir(cache_path(r, CacheKind::Raw, url, Some("\"d\""))).unwrap();
        std::fs::write(cache_path(r, CacheKind::Raw, url, None), b"").unwrap();
        std::fs::create_dir(cache_path(r, CacheKind::Tar, url, Some("\"t\""))).unwrap();
        assert_eq!(
            find_old_etags(r, CacheKind::Raw, url).unwrap(),
            ["\"a\"", "W/\"b\""]
        );
        assert_eq!(find_old_etags(r, CacheKind::Tar, url).unwrap(), ["\"t\""]);
        assert!(find_old_etags(&r.join("missing"), CacheKind::Tar, url)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn temp_paths_clean_up_unless_kept() {
        let root = tempfile::tempdir().unwrap();
        let t = TempPath::next_to(&root.path().join("image"));
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        let p = t.path().to_path_buf();
        assert!(p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".#image"));
        drop(t);
        assert!(!p.exists());
        let t = TempPath::next_to(&root.path().join("image"));
        std::fs::write(t.path(), b"x").unwrap();
        let kept = t.keep();
        assert!(kept.exists());
    }

    #[test]
    fn install_replacing_swaps_directories_atomically() {
        let root = tempfile::tempdir().unwrap();
        let (new, old) = (root.path().join("new"), root.path().join("final"));
        std::fs::create_dir_all(new.join("n")).unwrap();
        std::fs::create_dir_all(old.join("o")).unwrap();
        assert_eq!(
            fs::rename_noreplace(&new, &old).unwrap_err().errno(),
            libc::EEXIST
        );
        install_replacing(&new, &old).unwrap();
        assert!(old.join("n").exists() && !old.join("o").exists());
        assert!(!new.exists(), "the old object was removed");
    }

    #[test]
    fn local_tree_copies_appear_whole_and_respect_force() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let image = r.join(".tar-image");
        std::fs::create_dir_all(image.join("etc")).unwrap();
        std::fs::write(image.join("etc/os-release"), b"ID=test\n").unwrap();
        copy_tree(&image, r, "box", false, None).unwrap();
        assert_eq!(
            std::fs::read(r.join("box/etc/os-release")).unwrap(),
            b"ID=test\n"
        );
        // Without force an existing image stays and the copy fails; no temp is left.
        std::fs::write(r.join("box/mine"), b"keep").unwrap();
        assert_eq!(
            copy_tree(&image, r, "box", false, None)
                .unwrap_err()
                .errno(),
            libc::EEXIST
        );
        assert!(r.join("box/mine").exists());
        // With force it is replaced by a complete new copy.
        copy_tree(&image, r, "box", true, None).unwrap();
        assert!(!r.join("box/mine").exists());
        assert!(r.join("box/etc/os-release").exists());
        let names: Vec<_> = std::fs::read_dir(r)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "only the image and the copy: {names:?}");
    }

    #[test]
    fn a_local_copy_of_a_read_only_directory_is_writable() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let image = r.join(".tar-image");
        std::fs::create_dir(&image).unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o755)).unwrap();
        fs::make_read_only(&image).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&image), 0o555);
        copy_tree(&image, r, "box", false, None).unwrap();
        assert_eq!(mode(&r.join("box")), 0o755);
    }

    #[test]
    fn new_trees_are_directories_of_mode_0755_off_btrfs() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("tree");
        let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
        let made = make_tree(&path);
        nix::sys::stat::umask(old);
        made.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        let e = create_tree(&path).unwrap_err();
        assert_eq!(e.errno(), libc::EEXIST);
        assert_eq!(
            e.msg().unwrap(),
            format!("Failed to create directory {}: File exists", path.display())
        );
    }

    #[test]
    fn raw_local_copies_are_group_writable_and_installed_whole() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let source = r.join(".raw-image.raw");
        std::fs::write(&source, b"disk").unwrap();
        let image = LocalImage::new(r, "box.raw", "box", false);
        copy_file(&source, &image, &AtomicBool::new(false)).unwrap();
        let temp = image.path().to_path_buf();
        image.install().unwrap();
        assert!(!temp.exists());
        let target = r.join("box.raw");
        assert_eq!(std::fs::read(&target).unwrap(), b"disk");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o664);
        // Without force an existing image stays, and the failed copy goes.
        std::fs::write(&source, b"other").unwrap();
        let image = LocalImage::new(r, "box.raw", "box", false);
        copy_file(&source, &image, &AtomicBool::new(false)).unwrap();
        let temp = image.path().to_path_buf();
        assert_eq!(image.install().unwrap_err().errno(), libc::EEXIST);
        assert_eq!(std::fs::read(&target).unwrap(), b"disk");
        assert!(!temp.exists());
    }
}

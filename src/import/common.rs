//! What the importers share: temporary objects that remove themselves, atomic
//! installation under a final name, the local copy of a directory image (spec §4.7), and
//! the tar/raw download cache's naming and ETag discovery (spec §5.1).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::{escape, fs, validate};

/// The characters systemd escapes when it turns a URL or ETag into a file name.
const FILENAME_ESCAPE: &str = "/.#\"'";

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

/// Spec §4.7 for directory images (tar, dkr, oci): make `<root>/<local>` a writable btrfs
/// snapshot of `final_path`, or, on other file systems, a copy (with reflinks where the
/// file system has them; the C tool failed there with "Is a directory").
///
/// The copy is built under a temporary name and moved into place, so no half-made image
/// is ever visible; with `force` an existing image is replaced only once the new one is
/// complete, atomically. Without `force`, an image that appeared meanwhile is left alone
/// and the copy fails with EEXIST. Runs long on non-btrfs file systems: call it from a
/// task, not the loop thread.
pub fn make_local_copy(
    final_path: &Path,
    image_root: &Path,
    local: &str,
    force: bool,
    cancel: Option<&AtomicBool>,
) -> Result<()> {
    let target = image_root.join(local);
    let temp = TempPath::next_to(&target);
    fs::snapshot_or_copy(final_path, temp.path(), false, cancel)
        .map_err(|e| log_error_errno!(e.clone(), "Failed to create local image: {}", e))?;
    let installed = if force {
        install_replacing(temp.path(), &target)
    } else {
        fs::rename_noreplace(temp.path(), &target)
    };
    installed.map_err(|e| log_error_errno!(e.clone(), "Failed to create local image: {}", e))?;
    temp.keep();
    log::info!("Created new local image '{local}'.");
    Ok(())
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
    fn local_copies_appear_whole_and_respect_force() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let image = r.join(".tar-image");
        std::fs::create_dir_all(image.join("etc")).unwrap();
        std::fs::write(image.join("etc/os-release"), b"ID=test\n").unwrap();
        make_local_copy(&image, r, "box", false, None).unwrap();
        assert_eq!(
            std::fs::read(r.join("box/etc/os-release")).unwrap(),
            b"ID=test\n"
        );
        // Without force an existing image stays and the copy fails; no temp is left.
        std::fs::write(r.join("box/mine"), b"keep").unwrap();
        assert_eq!(
            make_local_copy(&image, r, "box", false, None)
                .unwrap_err()
                .errno(),
            libc::EEXIST
        );
        assert!(r.join("box/mine").exists());
        // With force it is replaced by a complete new copy.
        make_local_copy(&image, r, "box", true, None).unwrap();
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
        make_local_copy(&image, r, "box", false, None).unwrap();
        assert_eq!(mode(&r.join("box")), 0o755);
    }
}

//! `ListImages`: the images of each class in its search path, as `(class, name, type,
//! path, read_only, crtime, mtime, usage, usage_exclusive, limit, limit_exclusive)`.
//!
//! An image is a directory (type `directory`, or `subvolume` for a btrfs subvolume) or a
//! regular file `NAME.raw` (type `raw`); hidden entries and names that are not valid image
//! names are skipped, and the first directory of the search path that has a name wins.
//! Times are µs since the epoch (0 when unknown).
//!
//! Deviations from systemd's image discovery (`discover-image.c`): no block devices, no
//! `.v/` version directories, no btrfs quota figures; a directory's usage and limits are
//! unknown (`UINT64_MAX`), a raw file's usage is its allocated size and its limit its
//! length; read-only means "no write permission bits", not the immutable flag or a
//! read-only subvolume.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

pub use crate::bus::import1::ImageRow;

use super::request::ImageClass;
use crate::util::error::Result;
use crate::util::validate::image_name_is_valid;

/// The root inode of every btrfs subvolume.
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;

/// Where each class's images live, in search order.
fn search_path(class: ImageClass) -> &'static [&'static str] {
    match class {
        ImageClass::Machine => &crate::util::image::IMAGE_SEARCH_PATH,
        ImageClass::Portable => &[
            "/etc/portables",
            "/run/portables",
            "/var/lib/portables",
            "/usr/local/lib/portables",
            "/usr/lib/portables",
        ],
        ImageClass::Sysext => &[
            "/etc/extensions",
            "/run/extensions",
            "/var/lib/extensions",
            "/usr/local/lib/extensions",
            "/usr/lib/extensions",
        ],
        ImageClass::Confext => &[
            "/run/confexts",
            "/var/lib/confexts",
            "/usr/local/lib/confexts",
            "/usr/lib/confexts",
        ],
    }
}

/// The images of `class`, or of every class.
pub fn discover(class: Option<ImageClass>) -> Result<Vec<ImageRow>> {
    let mut rows = Vec::new();
    for c in ImageClass::ALL
        .into_iter()
        .filter(|c| class.is_none_or(|want| want == *c))
    {
        let mut seen = std::collections::BTreeSet::new();
        for dir in search_path(c) {
            for row in images_in(c, Path::new(dir))? {
                if seen.insert(row.1.clone()) {
                    rows.push(row);
                }
            }
        }
    }
    Ok(rows)
}

/// The images directly in `dir` (none if it does not exist).
pub fn images_in(class: ImageClass, dir: &Path) -> Result<Vec<ImageRow>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut rows = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symlinks, as systemd does for images.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let (name, kind) = if meta.is_dir() {
            let subvolume = meta.ino() == BTRFS_FIRST_FREE_OBJECTID && on_btrfs(&path);
            (file_name, if subvolume { "subvolume" } else { "directory" })
        } else if meta.is_file() {
            match file_name.strip_suffix(".raw") {
                Some(stem) => (stem.to_string(), "raw"),
                None => continue,
            }
        } else {
            continue;
        };
        if !image_name_is_valid(&name) {
            continue;
        }
        let (usage, limit) = if kind == "raw" {
            (meta.blocks() * 512, meta.len())
        } else {
            (u64::MAX, u64::MAX)
        };
        rows.push((
            class.as_str().to_string(),
            name,
            kind.to_string(),
            path.to_string_lossy().into_owned(),
            meta.permissions().readonly(),
            micros(meta.created().ok()),
            micros(meta.modified().ok()),
            usage,
            usage,
            limit,
            limit,
        ));
    }
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(rows)
}

fn on_btrfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

fn micros(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_raw_files_are_images() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tree")).unwrap();
        std::fs::write(dir.path().join("disk.raw"), vec![0u8; 5000]).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::create_dir(dir.path().join(".#partial")).unwrap();
        let ro = dir.path().join("ro.raw");
        std::fs::write(&ro, b"r").unwrap();
        std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
        let rows = images_in(ImageClass::Machine, dir.path()).unwrap();
        let names: Vec<(&str, &str, bool)> = rows
            .iter()
            .map(|r| (r.1.as_str(), r.2.as_str(), r.4))
            .collect();
        assert_eq!(
            names,
            [
                ("disk", "raw", false),
                ("ro", "raw", true),
                ("tree", "directory", false)
            ]
        );
        let disk = &rows[0];
        assert_eq!(disk.0, "machine");
        assert!(disk.3.ends_with("/disk.raw"));
        assert_eq!(disk.9, 5000);
        assert!(disk.6 > 0);
        assert_eq!(rows[2].7, u64::MAX);
        assert!(images_in(ImageClass::Machine, &dir.path().join("none"))
            .unwrap()
            .is_empty());
    }
}

//! Finding an existing machine image by name: the "Image '%s' already exists." check
//! before a pull (spec §1.5 step 6, decision Q9).

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::util::error::{Error, Result};
use crate::util::validate::image_name_is_valid;

/// Where machined looks for images, in order (systemd's `image_search_path`).
pub const IMAGE_SEARCH_PATH: [&str; 4] = [
    "/var/lib/machines",
    "/var/lib/container",
    "/usr/local/lib/machines",
    "/usr/lib/machines",
];

/// The image classes of systemd 256+ (`--class=`), each with its default image root and
/// the directories `image_find()` searches for it (systemd's `image_search_path`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum ImageClass {
    #[default]
    Machine,
    Portable,
    Sysext,
    Confext,
}

impl ImageClass {
    /// The class called `s` (`machine`, `portable`, `sysext`, `confext`).
    pub fn parse(s: &str) -> Option<ImageClass> {
        match s {
            "machine" => Some(ImageClass::Machine),
            "portable" => Some(ImageClass::Portable),
            "sysext" => Some(ImageClass::Sysext),
            "confext" => Some(ImageClass::Confext),
            _ => None,
        }
    }

    /// Where pulls of this class put their images by default.
    pub fn default_root(self) -> &'static str {
        match self {
            ImageClass::Machine => "/var/lib/machines",
            ImageClass::Portable => "/var/lib/portables",
            ImageClass::Sysext => "/var/lib/extensions",
            ImageClass::Confext => "/var/lib/confexts",
        }
    }

    /// The directories an image of this class is looked for in, in order.
    pub fn search_path(self) -> &'static [&'static str] {
        match self {
            ImageClass::Machine => &[
                "/etc/machines",
                "/run/machines",
                "/var/lib/machines",
                "/var/lib/container",
                "/usr/local/lib/machines",
                "/usr/lib/machines",
            ],
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
}

/// Look for an image of `class` called `name` in the class's search path only, as
/// systemd 252+'s `systemd-pull` does (the image root is not consulted).
pub fn image_find_in_class(name: &str, class: ImageClass) -> Result<Option<PathBuf>> {
    if !image_name_is_valid(name) {
        return Ok(None);
    }
    for dir in class.search_path() {
        if let Some(found) = find_in(Path::new(dir), name)? {
            return Ok(Some(found));
        }
    }
    if class == ImageClass::Machine && name == ".host" {
        return Ok(Some(PathBuf::from("/")));
    }
    Ok(None)
}

/// Look for an image called `name`: in `image_root` first (the C tool did not, see Q9),
/// then in each directory of [`IMAGE_SEARCH_PATH`]. An image is an entry `name` that is
/// a directory (btrfs subvolumes included), or an entry `name.raw` that is a regular
/// file; symlinks are followed, as `fstatat(…, 0)` did. A missing search directory is
/// skipped; other errors are returned. Names that fail [`image_name_is_valid`] are
/// never found, and `.host` is the host's root directory, as in machined.
pub fn image_find(name: &str, image_root: &Path) -> Result<Option<PathBuf>> {
    if !image_name_is_valid(name) {
        return Ok(None);
    }
    let mut searched: Vec<&Path> = Vec::with_capacity(IMAGE_SEARCH_PATH.len() + 1);
    for dir in std::iter::once(image_root).chain(IMAGE_SEARCH_PATH.iter().map(Path::new)) {
        if searched.contains(&dir) {
            continue;
        }
        searched.push(dir);
        if let Some(found) = find_in(dir, name)? {
            return Ok(Some(found));
        }
    }
    if name == ".host" {
        return Ok(Some(PathBuf::from("/")));
    }
    Ok(None)
}

/// What kind of image an entry is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Directory,
    Regular,
    Other,
    Missing,
}

fn find_in(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    let dir_fd = match nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let kind_of = |entry: &str| -> Result<EntryKind> {
        match nix::sys::stat::fstatat(dir_fd.as_fd(), entry, AtFlags::empty()) {
            Ok(st) => Ok(match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => EntryKind::Directory,
                libc::S_IFREG => EntryKind::Regular,
                _ => EntryKind::Other,
            }),
            Err(nix::errno::Errno::ENOENT) => Ok(EntryKind::Missing),
            Err(e) => Err(Error::from(e)),
        }
    };
    if kind_of(name)? == EntryKind::Directory {
        return Ok(Some(dir.join(name)));
    }
    let mut raw = OsString::from(name);
    raw.push(".raw");
    let raw = raw.into_string().expect("UTF-8 name plus ASCII suffix");
    if kind_of(&raw)? == EntryKind::Regular {
        return Ok(Some(dir.join(raw)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn finds_directories_and_raw_files_in_the_image_root() {
        let root = tempfile::tempdir().unwrap();
        let unique = format!("imgtest-{}", std::process::id());
        fs::create_dir(root.path().join(format!("{unique}-dir"))).unwrap();
        fs::write(root.path().join(format!("{unique}-raw.raw")), b"x").unwrap();
        // A plain file without .raw, and a .raw that is a directory, are not images.
        fs::write(root.path().join(format!("{unique}-file")), b"x").unwrap();
        fs::create_dir(root.path().join(format!("{unique}-rawdir.raw"))).unwrap();
        std::os::unix::fs::symlink(
            root.path().join(format!("{unique}-dir")),
            root.path().join(format!("{unique}-link")),
        )
        .unwrap();

        let find = |n: &str| image_find(&format!("{unique}-{n}"), root.path()).unwrap();
        assert_eq!(find("dir"), Some(root.path().join(format!("{unique}-dir"))));
        assert_eq!(
            find("raw"),
            Some(root.path().join(format!("{unique}-raw.raw")))
        );
        assert_eq!(
            find("link"),
            Some(root.path().join(format!("{unique}-link")))
        );
        assert_eq!(find("file"), None);
        assert_eq!(find("rawdir"), None);
        assert_eq!(find("missing"), None);
    }

    #[test]
    fn invalid_names_are_never_found() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join(".#temp")).unwrap();
        assert_eq!(image_find(".#temp", root.path()).unwrap(), None);
        assert_eq!(image_find("..", root.path()).unwrap(), None);
        assert_eq!(image_find("", root.path()).unwrap(), None);
        assert_eq!(image_find("a/b", root.path()).unwrap(), None);
    }

    #[test]
    fn missing_root_is_skipped_and_host_is_special() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("does-not-exist");
        assert_eq!(
            image_find(
                &format!("nonexistent-image-{}", std::process::id()),
                &missing
            )
            .unwrap(),
            None
        );
        assert_eq!(
            image_find(".host", &missing).unwrap(),
            Some(PathBuf::from("/"))
        );
    }

    #[test]
    fn a_root_that_is_not_a_directory_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        fs::write(&file, b"").unwrap();
        assert_eq!(image_find("x", &file).unwrap_err().errno(), libc::ENOTDIR);
    }
}

//! The one error type of the registry configuration, and reading its files: a file that is
//! missing is "not configured", anything else that goes wrong is an error naming the file
//! (and, for TOML, the line and key) in one line.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// What kind of failure, for callers that react differently (and for the exit status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A configuration file is unreadable or says something invalid.
    Invalid,
    /// The registry of the reference is `blocked` in registries.conf.
    Blocked,
    /// A short name has several candidates and `short-name-mode` is `enforcing`.
    Ambiguous,
    /// A short name could not be resolved at all.
    Unresolved,
}

/// A registry configuration error: one line saying what and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    kind: ErrorKind,
    message: String,
}

impl ConfigError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ConfigError {
        ConfigError {
            kind,
            message: message.into(),
        }
    }

    /// An [`ErrorKind::Invalid`] error about `file`: `FILE: message`.
    pub fn invalid(file: &Path, message: impl fmt::Display) -> ConfigError {
        ConfigError::new(ErrorKind::Invalid, format!("{}: {message}", file.display()))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The errno a command exits with: EINVAL for bad configuration and ambiguity, EACCES
    /// for a blocked registry, ENODATA when nothing could resolve a name (as systemd's
    /// `No suitable registry found.`).
    pub fn errno(&self) -> i32 {
        match self.kind {
            ErrorKind::Invalid | ErrorKind::Ambiguous => libc::EINVAL,
            ErrorKind::Blocked => libc::EACCES,
            ErrorKind::Unresolved => libc::ENODATA,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The text of `path`, or `None` if it does not exist (or is a directory: a stray directory
/// where a file is expected configures nothing either).
pub fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ConfigError::invalid(path, "not UTF-8 text")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Ok(None),
        Err(e) => Err(ConfigError::invalid(path, e)),
    }
}

/// Decode TOML `text` from `path` into `T`. Unknown keys are ignored (as by podman and
/// containerd); a syntax or type error is `FILE:LINE: KEY: what`.
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|span| {
            1 + text.as_bytes()[..span.start.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
        });
        // The key path is only part of the error's rendering without the input.
        let mut bare = e.clone();
        bare.set_input(None);
        let rendered = bare.to_string();
        let key = rendered
            .lines()
            .find_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
            .map(str::to_string);
        let mut where_ = path.display().to_string();
        if let Some(line) = line {
            where_.push_str(&format!(":{line}"));
        }
        let message = match key {
            Some(key) => format!("{where_}: {key}: {}", e.message()),
            None => format!("{where_}: {}", e.message()),
        };
        ConfigError::new(ErrorKind::Invalid, message)
    })
}

/// Regular files in `dir` whose names end in `suffix`, in lexical order; a missing directory
/// has none.
pub fn files_in(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(Vec::new()),
        Err(e) => return Err(ConfigError::invalid(dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ConfigError::invalid(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // Follows symlinks, as stat(2) would: a link to a file counts as that file.
        let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        if name.ends_with(suffix) && is_file {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Test support: a temporary directory holding `files` (relative path, text), parents
/// created.
#[cfg(test)]
pub fn temp_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create parents");
        std::fs::write(path, text).expect("write a test file");
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Doc {
        flag: Option<bool>,
        table: Option<Inner>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        list: Option<Vec<String>>,
    }

    #[test]
    fn toml_errors_name_file_line_and_key_in_one_line() {
        let path = Path::new("/etc/x.conf");
        let cases = [
            (
                "other = 1\nflag = \"yes\"\n",
                "/etc/x.conf:2: flag: invalid type: string \"yes\", expected a boolean",
            ),
            (
                "[table]\n\nlist = \"a\"\n",
                "/etc/x.conf:3: table.list: invalid type: string \"a\", expected a sequence",
            ),
            ("flag = [\n", "/etc/x.conf:1: unclosed array, expected `]`"),
        ];
        for (text, expected) in cases {
            let err = parse_toml::<Doc>(path, text).unwrap_err();
            assert_eq!(err.to_string(), expected);
            assert_eq!(err.kind(), ErrorKind::Invalid);
            assert!(!err.to_string().contains('\n'));
        }
        // Unknown keys are fine.
        assert!(parse_toml::<Doc>(path, "unknown = 1\n[table]\nx = 2\n").is_ok());
    }

    #[test]
    fn files_are_listed_in_lexical_order_and_missing_dirs_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.conf", "a.conf", "c.ignore", "10.conf"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("d.conf")).unwrap();
        let names: Vec<String> = files_in(dir.path(), ".conf")
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10.conf", "a.conf", "b.conf"]);
        assert!(files_in(&dir.path().join("missing"), ".conf")
            .unwrap()
            .is_empty());
        assert_eq!(read_optional(&dir.path().join("missing")), Ok(None));
        assert_eq!(read_optional(&dir.path().join("d.conf")), Ok(None));
    }
}

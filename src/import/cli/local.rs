//! The local verbs: `systemd-import tar|raw FILE [NAME]` (a FILE that is not an HTTP(S)
//! URL; with a URL these two words stay v219's aliases of pull-tar and pull-raw),
//! `systemd-import-fs run DIRECTORY [NAME]` and `systemd-export tar|raw NAME [FILE]`,
//! with systemd 252's checks and messages. Each builds a request and runs it with
//! [`crate::import::run`].

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::options::Settings;
use crate::import;
use crate::import::local::{ExportKind, ExportRequest, ImportKind, ImportRequest, LocalImport};
use crate::import::stream::Compression;
use crate::util::{image, names, validate};

/// The help of `systemd-import-fs`.
pub fn import_fs_help(program: &str) -> String {
    format!(
        "{program} [OPTIONS...] {{COMMAND}} ...\n\
         \n\
         Import container images from a file system directories.\n\
         \n\
         Commands:\n\
         \x20 run DIRECTORY [NAME]        Import a directory\n\
         \n\
         Options:\n\
         \x20 -h --help                   Show this help\n\
         \x20    --version                Show package version\n\
         \x20    --force                  Force creation of image\n\
         \x20    --image-root=PATH        Image root directory\n\
         \x20    --read-only              Create a read-only image\n\
         \x20    --direct                 Import directly to specified directory\n\
         \x20    --btrfs-subvol=BOOL      Controls whether to create a btrfs subvolume\n\
         \x20                             instead of a directory\n\
         \x20    --btrfs-quota=BOOL       Controls whether to set up quota for btrfs\n\
         \x20                             subvolume\n\
         \x20    --sync=BOOL              Controls whether to sync() before completing\n\
         \x20    --class=CLASS            Image class: machine, portable, sysext, confext\n"
    )
}

/// The help of `systemd-export`.
pub fn export_help(program: &str) -> String {
    format!(
        "{program} [OPTIONS...] {{COMMAND}} ...\n\
         \n\
         Export container or virtual machine images.\n\
         \n\
         \x20 -h --help                    Show this help\n\
         \x20    --version                 Show package version\n\
         \x20    --format=FORMAT           Select format: uncompressed, xz, gzip, bzip2, zstd\n\
         \x20    --class=CLASS             Image class: machine, portable, sysext, confext\n\
         \n\
         Commands:\n\
         \x20 tar NAME [FILE]              Export a TAR image\n\
         \x20 raw NAME [FILE]              Export a RAW image\n"
    )
}

/// The lines `systemd-import --help` adds for the local verbs.
pub const IMPORT_HELP: &str = "\
\x20 tar FILE [NAME]             Import a TAR image (FILE: a file or '-' for stdin)\n\
\x20 raw FILE [NAME]             Import a RAW image (FILE: a file or '-' for stdin)\n\
\n\
Options of tar and raw (an HTTP(S) URL as FILE pulls instead, as pull-tar/pull-raw):\n\
\x20    --read-only              Create a read-only image\n\
\x20    --direct                 Import directly to specified file\n\
\x20    --btrfs-subvol=BOOL      Controls whether to create a btrfs subvolume\n\
\x20                             instead of a directory\n\
\x20    --btrfs-quota=BOOL       Controls whether to set up quota for btrfs\n\
\x20                             subvolume\n\
\x20    --convert-qcow2=BOOL     Controls whether to convert QCOW2 images to\n\
\x20                             regular disk images\n\
\x20    --sync=BOOL              Controls whether to sync() before completing\n\
\x20    --offset=BYTES           Offset to seek to in destination\n\
\x20    --size-max=BYTES         Maximum number of bytes to write to destination\n\
\x20    --class=CLASS            Image class: machine, portable, sysext, confext\n";

/// Whether `tar`/`raw` with this first argument is a local import rather than v219's
/// pull alias.
pub fn is_local_source(arg: &str) -> bool {
    !validate::http_url_is_valid(arg)
}

/// The image root: `--image-root=`, else the class's.
fn image_root(settings: &Settings) -> PathBuf {
    if settings.local.image_root_set {
        settings.image_root.clone()
    } else {
        PathBuf::from(settings.local.class.image_root())
    }
}

/// A duplicate of stdin or stdout, and the path it is open at (for the messages).
fn std_fd(fd: i32) -> Result<(OwnedFd, String), ()> {
    let borrowed = match fd {
        0 => std::io::stdin().as_fd().try_clone_to_owned(),
        _ => std::io::stdout().as_fd().try_clone_to_owned(),
    };
    let owned = borrowed.map_err(|e| log::error!("Failed to duplicate file descriptor: {e}"))?;
    let path = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("fd {fd}"));
    Ok((owned, path))
}

/// The personalities besides `systemd-import`/`systemd-pull`, by program name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Personality {
    ImportFs,
    Export,
}

impl Personality {
    pub fn from_program(short_name: &str) -> Option<Personality> {
        match short_name {
            "systemd-import-fs" => Some(Personality::ImportFs),
            "systemd-export" => Some(Personality::Export),
            _ => None,
        }
    }

    pub fn help(self, program: &str) -> String {
        match self {
            Personality::ImportFs => import_fs_help(program),
            Personality::Export => export_help(program),
        }
    }

    /// Run the verb in `args[0]` (systemd 252's verb table and messages).
    pub fn dispatch(self, program: &str, settings: &Settings, args: &[String]) -> i32 {
        let Some(verb) = args.first() else {
            log::error!("Command verb required.");
            return 1;
        };
        let known = match self {
            Personality::ImportFs => verb == "run",
            Personality::Export => verb == "tar" || verb == "raw",
        };
        if verb == "help" {
            print!("{}", self.help(program));
            return 0;
        }
        if !known {
            log::error!("Unknown command verb {verb}.");
            return 1;
        }
        if args.len() < 2 {
            log::error!("Too few arguments.");
            return 1;
        }
        if args.len() > 3 {
            log::error!("Too many arguments.");
            return 1;
        }
        match (self, verb.as_str()) {
            (Personality::ImportFs, _) => verb_import(ImportKind::Fs, settings, args),
            (Personality::Export, "tar") => verb_export(ExportKind::Tar, settings, args),
            _ => verb_export(ExportKind::Raw, settings, args),
        }
    }
}

/// `systemd-import tar|raw FILE [NAME]` and `systemd-import-fs run DIRECTORY [NAME]`.
pub fn verb_import(kind: ImportKind, settings: &Settings, args: &[String]) -> i32 {
    let Ok(req) = import_request(kind, settings, args) else {
        return 1;
    };
    import::run(LocalImport::import(req))
}

fn import_request(
    kind: ImportKind,
    settings: &Settings,
    args: &[String],
) -> Result<ImportRequest, ()> {
    let path = args.get(1).filter(|p| p.as_str() != "-");
    let given = args.get(2).filter(|l| !l.is_empty() && l.as_str() != "-");
    let local = match (given, path) {
        (Some(l), _) => Some(l.clone()),
        (None, Some(p)) => std::path::Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned()),
        (None, None) => None,
    };
    let root = image_root(settings);
    let local = if settings.local.direct {
        let Some(local) = local else {
            log::error!("No local path specified.");
            return Err(());
        };
        std::path::absolute(&local)
            .map(|p| p.display().to_string())
            .unwrap_or(local)
    } else if let Some(local) = local {
        let local = match kind {
            ImportKind::Tar => names::tar_strip_suffixes(&local).map_err(|e| {
                log::error!("Failed to strip tar suffixes from '{local}': {e}");
            })?,
            ImportKind::Raw => names::raw_strip_suffixes(&local),
            ImportKind::Fs => local,
        };
        if !validate::machine_name_is_valid(&local) {
            log::error!("Local image name '{local}' is not valid.");
            return Err(());
        }
        if !settings.force {
            match image::image_find(&local, &root) {
                Err(e) => {
                    log::error!("Failed to check whether image '{local}' exists: {e}");
                    return Err(());
                }
                Ok(Some(_)) => {
                    log::error!("Image '{local}' already exists.");
                    return Err(());
                }
                Ok(None) => {}
            }
        }
        local
    } else {
        "imported".to_string()
    };

    let (input, shown) = match path {
        Some(p) => {
            let mut flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
            if kind == ImportKind::Fs {
                flags |= OFlag::O_DIRECTORY;
            }
            let fd = nix::fcntl::open(p.as_str(), flags, Mode::empty()).map_err(|e| {
                if kind == ImportKind::Fs {
                    log::error!("Failed to open directory to import: {}", e.desc());
                } else {
                    log::error!("Failed to open source file '{p}': {}", e.desc());
                }
            })?;
            (fd, p.clone())
        }
        None => std_fd(0)?,
    };
    if kind == ImportKind::Fs && path.is_none() {
        let st = nix::sys::stat::fstat(input.as_fd()).map_err(|e| {
            log::error!("Failed to open directory to import: {}", e.desc());
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            log::error!("Failed to open directory to import: Not a directory");
            return Err(());
        }
    }
    log::info!("Importing '{shown}', saving as '{local}'.");
    let l = &settings.local;
    Ok(ImportRequest {
        kind,
        input,
        local,
        image_root: root,
        direct: l.direct,
        force: settings.force,
        read_only: l.read_only,
        btrfs_subvol: l.btrfs_subvol,
        convert_qcow2: l.convert_qcow2,
        sync: l.sync,
        offset: l.offset,
        size_max: l.size_max,
    })
}

/// `systemd-export tar|raw NAME [FILE]`.
pub fn verb_export(kind: ExportKind, settings: &Settings, args: &[String]) -> i32 {
    let Ok(req) = export_request(kind, settings, args) else {
        return 1;
    };
    import::run(LocalImport::export(req))
}

fn export_request(
    kind: ExportKind,
    settings: &Settings,
    args: &[String],
) -> Result<ExportRequest, ()> {
    let name = &args[1];
    let file = args.get(2).filter(|f| f.as_str() != "-");
    let compression = match &settings.local.format {
        Some(f) => Compression::from_format_name(f).ok_or_else(|| {
            log::error!("Unknown format: {f}");
        })?,
        None => Compression::from_file_name(file.map(std::ffi::OsStr::new)),
    };
    let found = image::image_find(name, &image_root(settings)).map_err(|e| {
        log::error!("Failed to find image '{name}': {e}");
    })?;
    let Some(image) = found else {
        log::error!("Machine image {name} not found.");
        return Err(());
    };
    let (output, shown) = match file {
        Some(f) => {
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_CLOEXEC
                | OFlag::O_NOCTTY;
            let fd = nix::fcntl::open(f.as_str(), flags, Mode::from_bits_truncate(0o666))
                .map_err(|e| log::error!("Failed to open output file '{f}': {}", e.desc()))?;
            (fd, f.clone())
        }
        None => std_fd(1)?,
    };
    log::info!(
        "Exporting '{}', saving to '{shown}' with compression '{}'.",
        image.display(),
        compression.format_name()
    );
    Ok(ExportRequest {
        kind,
        image,
        output,
        compression,
    })
}

//! The local verbs and personalities: `systemd-import tar|raw FILE [NAME]` (verbs of the
//! seed personality: a FILE that is not an HTTP(S) URL; with a URL these two words stay
//! v219's aliases of pull-tar and pull-raw), and the personalities `systemd-import-fs`
//! (`run DIRECTORY [NAME]`) and `systemd-export` (`tar|raw NAME [FILE]`), with systemd
//! 252's options, checks and messages (their options are systemd-pull's, parsed by
//! [`super::pull::apply`]). Each verb builds a request and runs it with
//! [`crate::import::run`].

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::options::{parse_with, LongOption, Opt, Parsed, Settings};
use super::personality::Personality;
use super::personality::{Invocation, VerbSpec};
use super::pull;
use super::verbs;
use crate::import;
use crate::import::local::{ExportKind, ExportRequest, ImportKind, ImportRequest, LocalImport};
use crate::import::stream::Compression;
use crate::import::Dialect;
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
    if settings.image_root_given {
        settings.image_root.clone()
    } else {
        PathBuf::from(settings.class.default_root())
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

/// `systemd-import-fs`.
pub const IMPORT_FS: Personality = Personality {
    program: "systemd-import-fs",
    dialect: Dialect::V252,
    version: "252",
    parse: parse_import_fs,
    help: import_fs_help,
    verbs: &[
        VerbSpec::new(&["help"], 0, None, verbs::help),
        VerbSpec::new(&["run"], 2, Some(3), run_fs),
    ],
};

/// `systemd-export`.
pub const EXPORT: Personality = Personality {
    program: "systemd-export",
    dialect: Dialect::V252,
    version: "252",
    parse: parse_export,
    help: export_help,
    verbs: &[
        VerbSpec::new(&["help"], 0, None, verbs::help),
        VerbSpec::new(&["tar"], 2, Some(3), export_tar),
        VerbSpec::new(&["raw"], 2, Some(3), export_raw),
    ],
};

const IMPORT_FS_OPTIONS: &[LongOption] = &[
    LongOption::flag("help", Opt::Help),
    LongOption::flag("version", Opt::Version),
    LongOption::flag("force", Opt::Force),
    LongOption::arg("image-root", Opt::ImageRoot),
    LongOption::flag("read-only", Opt::ReadOnly),
    LongOption::flag("direct", Opt::Direct),
    LongOption::arg("btrfs-subvol", Opt::BtrfsSubvol),
    LongOption::arg("btrfs-quota", Opt::BtrfsQuota),
    LongOption::arg("sync", Opt::Sync),
    LongOption::arg("class", Opt::Class),
    LongOption::flag("system", Opt::System),
];

const EXPORT_OPTIONS: &[LongOption] = &[
    LongOption::flag("help", Opt::Help),
    LongOption::flag("version", Opt::Version),
    LongOption::arg("format", Opt::Format),
    LongOption::arg("class", Opt::Class),
    LongOption::flag("system", Opt::System),
];

fn parse_local(argv0: &str, argv: &[String], table: &'static [LongOption]) -> Result<Parsed, ()> {
    match parse_with(argv0, argv, table, pull::env_defaults(), pull::apply)? {
        Parsed::Run { mut settings, args } => {
            pull::finish_settings(&mut settings)?;
            Ok(Parsed::Run { settings, args })
        }
        other => Ok(other),
    }
}

fn parse_import_fs(argv0: &str, argv: &[String]) -> Result<Parsed, ()> {
    parse_local(argv0, argv, IMPORT_FS_OPTIONS)
}

fn parse_export(argv0: &str, argv: &[String]) -> Result<Parsed, ()> {
    parse_local(argv0, argv, EXPORT_OPTIONS)
}

/// The seed's `tar`: a local import, or v219's alias of pull-tar for a URL.
pub fn tar(inv: &Invocation, args: &[String]) -> i32 {
    if !is_local_source(&args[1]) {
        return verbs::pull_tar(inv, args);
    }
    verb_import(ImportKind::Tar, inv.settings, args)
}

/// The seed's `raw`: a local import, or v219's alias of pull-raw for a URL.
pub fn raw(inv: &Invocation, args: &[String]) -> i32 {
    if !is_local_source(&args[1]) {
        return verbs::pull_raw(inv, args);
    }
    verb_import(ImportKind::Raw, inv.settings, args)
}

fn run_fs(inv: &Invocation, args: &[String]) -> i32 {
    verb_import(ImportKind::Fs, inv.settings, args)
}

fn export_tar(inv: &Invocation, args: &[String]) -> i32 {
    verb_export(ExportKind::Tar, inv.settings, args)
}

fn export_raw(inv: &Invocation, args: &[String]) -> i32 {
    verb_export(ExportKind::Raw, inv.settings, args)
}

/// `systemd-import tar|raw FILE [NAME]` and `systemd-import-fs run DIRECTORY [NAME]`.
fn verb_import(kind: ImportKind, settings: &Settings, args: &[String]) -> i32 {
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
    if settings.offset.is_some() && !settings.direct {
        log::error!("File offset only supported in --direct mode.");
        return Err(());
    }
    let local = if settings.direct {
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
        verbs::check_local(settings, &local)?;
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
    let l = settings;
    Ok(ImportRequest {
        kind,
        input,
        local,
        image_root: root,
        direct: l.direct,
        force: settings.force,
        read_only: l.read_only,
        btrfs_subvol: l.btrfs_subvol,
        btrfs_quota: l.btrfs_quota,
        convert_qcow2: l.convert_qcow2,
        sync: l.sync,
        offset: l.offset,
        size_max: l.size_max,
    })
}

/// `systemd-export tar|raw NAME [FILE]`.
fn verb_export(kind: ExportKind, settings: &Settings, args: &[String]) -> i32 {
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
    let compression = match &settings.format {
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

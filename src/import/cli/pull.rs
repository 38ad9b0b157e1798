//! The `systemd-pull` personality: systemd 252's command line and messages
//! (modern-systemd.md §1, §2), with the options v253–v260 added that a newer
//! `systemd-importd` passes (`--class=`, `--keep-download=`, `--system`), plus our
//! verbs `oci` (pull-oci) and `dkr` (pull-dkr, for our importd's `PullDkr`).
//!
//! The v219-era `systemd-pull` (verbs `tar`, `raw`, `dkr` under a v219 importd) is not
//! told apart: a binary run as `systemd-pull` is this one, whose `tar`/`raw`/`dkr` take
//! the same words; only its messages and progress format are v252's.

use std::path::PathBuf;

use super::options::parse_size;
use super::options::{parse_with, LongOption, Opt, Parsed, Settings, Verify};
use super::personality::Personality;
use super::personality::VerbSpec;
use super::verbs;
use crate::import::Dialect;
use crate::util::image::ImageClass;

/// `systemd-pull`.
pub const PULL: Personality = Personality {
    program: "systemd-pull",
    dialect: Dialect::V252,
    version: "252",
    parse,
    help: help_text,
    verbs: VERBS,
};

const OPTIONS: &[LongOption] = &[
    LongOption::flag("help", Opt::Help),
    LongOption::flag("version", Opt::Version),
    LongOption::flag("force", Opt::Force),
    LongOption::arg("image-root", Opt::ImageRoot),
    LongOption::arg("verify", Opt::Verify),
    LongOption::arg("settings", Opt::Settings),
    LongOption::arg("roothash", Opt::RootHash),
    LongOption::arg("roothash-signature", Opt::RootHashSignature),
    LongOption::arg("verity", Opt::Verity),
    LongOption::flag("read-only", Opt::ReadOnly),
    LongOption::flag("direct", Opt::Direct),
    LongOption::arg("btrfs-subvol", Opt::BtrfsSubvol),
    LongOption::arg("btrfs-quota", Opt::BtrfsQuota),
    LongOption::arg("convert-qcow2", Opt::ConvertQcow2),
    LongOption::arg("sync", Opt::Sync),
    LongOption::arg("offset", Opt::Offset),
    LongOption::arg("size-max", Opt::SizeMax),
    LongOption::arg("class", Opt::Class),
    LongOption::arg("keep-download", Opt::KeepDownload),
    LongOption::flag("system", Opt::System),
    LongOption::arg("dkr-index-url", Opt::DkrIndexUrl),
    LongOption::arg("platform", Opt::Platform),
    LongOption::arg("max-concurrent-downloads", Opt::MaxConcurrentDownloads),
    LongOption::arg("registry-config", Opt::RegistryConfig),
    LongOption::arg("layer-size-max", Opt::LayerSizeMax),
    LongOption::arg("download-ranges", Opt::DownloadRanges),
    LongOption::arg("download-range-size", Opt::DownloadRangeSize),
];

const VERBS: &[VerbSpec] = &[
    VerbSpec::new(&["help"], 0, None, verbs::help),
    VerbSpec::new(&["tar"], 2, Some(3), verbs::pull_tar),
    VerbSpec::new(&["raw"], 2, Some(3), verbs::pull_raw),
    VerbSpec::new(&["oci"], 2, Some(3), verbs::pull_oci),
    VerbSpec::new(&["dkr"], 2, Some(3), verbs::pull_dkr),
];

/// systemd's `parse_boolean()`.
fn parse_boolean(s: &str) -> Option<bool> {
    const YES: [&str; 6] = ["1", "yes", "y", "true", "t", "on"];
    const NO: [&str; 6] = ["0", "no", "n", "false", "f", "off"];
    if YES.iter().any(|y| y.eq_ignore_ascii_case(s)) {
        Some(true)
    } else if NO.iter().any(|n| n.eq_ignore_ascii_case(s)) {
        Some(false)
    } else {
        None
    }
}

/// A boolean option's value, or its error message.
fn boolean(option: &str, value: &str) -> Result<bool, ()> {
    parse_boolean(value).ok_or_else(|| {
        log::error!("Failed to parse boolean argument to {option}: {value}.");
    })
}

/// A size option's value (`--offset=`, `--size-max=`), or its error messages.
fn size(option: &str, value: &str) -> Result<u64, ()> {
    let n = parse_size(value).ok_or_else(|| {
        log::error!("Failed to parse {option} argument: {value}");
    })?;
    // FILE_SIZE_VALID(): at most 2^63 - 1.
    if n > i64::MAX as u64 {
        log::error!("Argument to {option} switch too large: {value}");
        return Err(());
    }
    Ok(n)
}

/// A boolean from the environment, read before the options (which override it); a bad
/// value is warned about and ignored.
fn env_boolean(name: &str, target: &mut bool) {
    let Ok(value) = std::env::var(name) else {
        return;
    };
    match parse_boolean(&value) {
        Some(b) => *target = b,
        None => log::warn!("Failed to parse ${name}: Invalid argument"),
    }
}

/// A literal `--verify=` checksum: 64 hex digits, any case.
fn literal_checksum(v: &str) -> Result<[u8; 32], ()> {
    let invalid = || log::error!("Invalid verification setting: {v}");
    if v.len() % 2 != 0 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        invalid();
        return Err(());
    }
    if v.len() != 64 {
        log::error!(
            "64 hex character SHA256 hash required when specifying explicit checksum, {} specified",
            v.len()
        );
        return Err(());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&v[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
    }
    Ok(out)
}

/// Parse `argv` (without argv[0]) as systemd-pull 252–260 does. `Err(())` means "exit
/// with status 1" (the reason is logged).
pub fn parse(argv0: &str, argv: &[String]) -> Result<Parsed, ()> {
    let parsed = parse_with(argv0, argv, OPTIONS, env_defaults(), apply)?;
    match parsed {
        Parsed::Run { mut settings, args } => {
            finish_settings(&mut settings)?;
            Ok(Parsed::Run { settings, args })
        }
        other => Ok(other),
    }
}

/// The settings before the options: `$SYSTEMD_IMPORT_BTRFS_SUBVOL`,
/// `$SYSTEMD_IMPORT_BTRFS_QUOTA`, `$SYSTEMD_IMPORT_SYNC` (systemd-pull, and the local
/// tools of `local.rs`).
pub(super) fn env_defaults() -> Settings {
    let mut settings = Settings::default();
    env_boolean("SYSTEMD_IMPORT_BTRFS_SUBVOL", &mut settings.btrfs_subvol);
    env_boolean("SYSTEMD_IMPORT_BTRFS_QUOTA", &mut settings.btrfs_quota);
    env_boolean("SYSTEMD_IMPORT_SYNC", &mut settings.sync);
    settings
}

/// One option of systemd-pull 252–260 (and of the local tools, which share these).
pub(super) fn apply(settings: &mut Settings, opt: Opt, value: Option<String>) -> Result<(), ()> {
    let v = value.clone().unwrap_or_default();
    match opt {
        Opt::Force => settings.force = true,
        Opt::ImageRoot => {
            settings.image_root = PathBuf::from(v);
            settings.image_root_given = true;
        }
        Opt::Verify => match v.as_str() {
            "no" => settings.verify = Verify::No,
            "checksum" => settings.verify = Verify::Checksum,
            "signature" => settings.verify = Verify::Signature,
            _ => {
                settings.verify = Verify::Literal(literal_checksum(&v)?);
                settings.settings = Some(false);
                settings.roothash = false;
                settings.roothash_signature = false;
                settings.verity = false;
            }
        },
        Opt::Settings => settings.settings = Some(boolean("--settings=", &v)?),
        Opt::RootHash => {
            settings.roothash = boolean("--roothash=", &v)?;
            // No root hash, no signature of it either.
            if !settings.roothash {
                settings.roothash_signature = false;
            }
        }
        Opt::RootHashSignature => {
            settings.roothash_signature = boolean("--roothash-signature=", &v)?;
        }
        Opt::Verity => settings.verity = boolean("--verity=", &v)?,
        Opt::ReadOnly => settings.read_only = true,
        Opt::Direct => {
            settings.direct = true;
            settings.settings = Some(false);
            settings.roothash = false;
            settings.roothash_signature = false;
            settings.verity = false;
        }
        Opt::BtrfsSubvol => settings.btrfs_subvol = boolean("--btrfs-subvol=", &v)?,
        Opt::BtrfsQuota => settings.btrfs_quota = boolean("--btrfs-quota=", &v)?,
        Opt::ConvertQcow2 => settings.convert_qcow2 = boolean("--convert-qcow2=", &v)?,
        Opt::Sync => settings.sync = boolean("--sync=", &v)?,
        Opt::Offset => settings.offset = Some(size("--offset=", &v)?),
        Opt::SizeMax => settings.size_max = Some(size("--size-max=", &v)?),
        Opt::Class => {
            settings.class = ImageClass::parse(&v).ok_or_else(|| {
                log::error!("Failed to parse --class= argument: {v}");
            })?;
        }
        Opt::KeepDownload => {
            settings.keep_download = Some(boolean("--keep-download=", &v)?);
        }
        // The system scope is the only one there is.
        Opt::System => {}
        Opt::DkrIndexUrl => verbs::set_dkr_index_url(settings, value)?,
        Opt::Platform => settings.platform = value,
        Opt::MaxConcurrentDownloads => verbs::set_max_downloads(settings, value)?,
        Opt::RegistryConfig => verbs::set_registry_config(settings, value)?,
        Opt::LayerSizeMax => verbs::set_layer_size_max(settings, value)?,
        Opt::DownloadRanges => verbs::set_download_ranges(settings, value)?,
        Opt::DownloadRangeSize => verbs::set_download_range_size(settings, value)?,
        Opt::Format => settings.format = value,
        // --help and --version are the engine's.
        Opt::Help | Opt::Version => {}
    }
    Ok(())
}

/// The checks after the options and the defaults that depend on the class.
pub(super) fn finish_settings(settings: &mut Settings) -> Result<(), ()> {
    if settings.offset.is_some() && !settings.direct {
        log::error!("File offset only supported in --direct mode.");
        return Err(());
    }
    if let (Some(offset), Some(max)) = (settings.offset, settings.size_max) {
        if offset
            .checked_add(max)
            .is_none_or(|end| end > i64::MAX as u64)
        {
            log::error!("File offset und maximum size out of range.");
            return Err(());
        }
    }
    let machine = settings.class == ImageClass::Machine;
    let side_files = settings.settings.unwrap_or(machine);
    settings.settings = Some(side_files);
    if matches!(settings.verify, Verify::Literal(_))
        && (side_files || settings.roothash || settings.roothash_signature || settings.verity)
    {
        log::error!(
            "Literal checksum verification only supported if no associated files are downloaded."
        );
        return Err(());
    }
    if settings.keep_download.is_none() {
        settings.keep_download = Some(machine);
    }
    if !settings.image_root_given {
        settings.image_root = PathBuf::from(settings.class.default_root());
    }
    Ok(())
}

/// The help text: systemd 252's, plus the options of later versions and our verbs.
pub fn help_text(program: &str) -> String {
    format!(
        "{program} [OPTIONS...] {{COMMAND}} ...\n\
         \n\
         Download container or virtual machine images.\n\
         \n\
         Commands:\n\
         \x20 tar URL [NAME]              Download a TAR image\n\
         \x20 raw URL [NAME]              Download a RAW image\n\
         \x20 oci REF [NAME]              Download an OCI image\n\
         \x20 dkr REMOTE [NAME]           Download a DKR image (--dkr-index-url=)\n\
         \n\
         Options:\n\
         \x20 -h --help                   Show this help\n\
         \x20    --version                Show package version\n\
         \x20    --force                  Force creation of image\n\
         \x20    --verify=MODE            Verify downloaded image, one of: 'no',\n\
         \x20                             'checksum', 'signature' or literal SHA256 hash\n\
         \x20    --settings=BOOL          Download settings file with image\n\
         \x20    --roothash=BOOL          Download root hash file with image\n\
         \x20    --roothash-signature=BOOL\n\
         \x20                             Download root hash signature file with image\n\
         \x20    --verity=BOOL            Download verity file with image\n\
         \x20    --image-root=PATH        Image root directory\n\
         \x20    --class=CLASS            Image class: machine, portable, sysext, confext\n\
         \x20    --keep-download=BOOL     Keep a pristine copy of the download\n\
         \x20    --system                 Operate on the system's images\n\
         \n\
         \x20    --read-only              Create a read-only image\n\
         \x20    --direct                 Download directly to specified file\n\
         \x20    --btrfs-subvol=BOOL      Controls whether to create a btrfs subvolume\n\
         \x20                             instead of a directory\n\
         \x20    --btrfs-quota=BOOL       Controls whether to set up quota for btrfs\n\
         \x20                             subvolume\n\
         \x20    --convert-qcow2=BOOL     Controls whether to convert QCOW2 images to\n\
         \x20                             regular disk images\n\
         \x20    --sync=BOOL              Controls whether to sync() before completing\n\
         \x20    --offset=BYTES           Offset to seek to in destination\n\
         \x20    --size-max=BYTES         Maximum number of bytes to write to destination\n\
         \x20    --dkr-index-url=URL      Index URL for dkr\n\
         \x20    --platform=OS/ARCH[/VARIANT]\n\
         \x20                             Platform to pull for oci\n\
         \x20    --max-concurrent-downloads=N\n\
         \x20                             Layers oci downloads at once (default 6)\\n\
         \x20    --registry-config=DIR    Read oci's registry configuration below DIR\n\
         \x20                             only (DIR/etc/containers/registries.conf, ...)\n\
         \x20    --layer-size-max=BYTES   Most one layer of oci may expand to\n\
         \x20                             (default 8G)\n\
         \x20    --download-ranges=N      Parts of a big layer oci fetches at once\n\
         \x20                             ('no' or 1: one stream; default 4)\n\
         \x20    --download-range-size=BYTES\n\
         \x20                             Size of those parts; bigger layers are fetched\n\
         \x20                             in parts (default 16M)\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::import::cli::options::test_words as words;

    fn run(s: &str) -> (Settings, Vec<String>) {
        crate::import::cli::options::test_run(parse, s)
    }

    #[test]
    fn defaults_follow_the_class() {
        let (s, _) = run("tar http://x/y.tar");
        assert_eq!(s.settings, Some(true));
        assert_eq!(s.keep_download, Some(true));
        assert_eq!(s.image_root, PathBuf::from("/var/lib/machines"));
        let (s, _) = run("--class=sysext raw http://x/y.raw");
        assert_eq!(s.settings, Some(false));
        assert_eq!(s.keep_download, Some(false));
        assert_eq!(s.image_root, PathBuf::from("/var/lib/extensions"));
        let (s, _) = run("--class=portable --image-root=/srv --settings=yes tar u");
        assert_eq!(s.settings, Some(true));
        assert_eq!(s.image_root, PathBuf::from("/srv"));
    }

    #[test]
    fn verify_forms() {
        let hex = "AB".repeat(32);
        let (s, _) = run(&format!("--verify={hex} raw u"));
        assert_eq!(s.verify, Verify::Literal([0xab; 32]));
        assert!(!s.roothash && !s.verity && s.settings == Some(false));
        assert!(parse("p", &words("--verify=sum tar u")).is_err());
        assert!(parse("p", &words("--verify=abcd tar u")).is_err());
        assert!(parse("p", &words(&format!("--verify={hex} --settings=yes tar u"))).is_err());
    }

    #[test]
    fn booleans_sizes_and_cross_checks() {
        let (s, _) = run("--roothash=no --sync=off --size-max=1.5K raw u");
        assert!(!s.roothash && !s.roothash_signature && !s.sync);
        assert_eq!(s.size_max, Some(1536));
        assert!(parse("p", &words("--sync=maybe raw u")).is_err());
        assert!(parse("p", &words("--offset=10 raw u")).is_err());
        let (s, _) = run("--direct --offset=1M raw u");
        assert_eq!(s.offset, Some(1 << 20));
        assert!(parse("p", &words("--class=foo raw u")).is_err());
        assert!(parse("p", &words("--user raw u")).is_err());
    }

    #[test]
    fn sizes_parse_as_systemd_does() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1G 512M"), Some((1 << 30) + (512 << 20)));
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("1X"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999E"), None);
    }
}

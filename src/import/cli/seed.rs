//! The seed personality: `systemd-import` as systemd v219 shipped it (spec §1), with
//! our additions (`pull-oci`, `--platform=`, `--max-concurrent-downloads=`). Its
//! messages, `--verify=` values, User-Agent (`/219`) and bare `X_IMPORT_PROGRESS=NN` are
//! v219's. It is what the binary is when run under any name but the ones in
//! [`super::personality::PERSONALITIES`].

use std::path::PathBuf;

use super::options::{parse_with, LongOption, Opt, Parsed, Verify};
use super::personality::Personality;
use super::personality::VerbSpec;
use super::verbs;
use super::{local, pull};
use crate::import::Dialect;

/// `systemd-import`.
pub const SEED: Personality = Personality {
    program: "systemd-import",
    dialect: Dialect::V219,
    version: "219",
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
    LongOption::arg("dkr-index-url", Opt::DkrIndexUrl),
    LongOption::arg("platform", Opt::Platform),
    LongOption::arg("max-concurrent-downloads", Opt::MaxConcurrentDownloads),
    LongOption::arg("registry-config", Opt::RegistryConfig),
    LongOption::arg("layer-size-max", Opt::LayerSizeMax),
    LongOption::arg("download-ranges", Opt::DownloadRanges),
    LongOption::arg("download-range-size", Opt::DownloadRangeSize),
    // The local tar and raw (systemd 220+), see `local.rs`.
    LongOption::flag("read-only", Opt::ReadOnly),
    LongOption::flag("direct", Opt::Direct),
    LongOption::arg("btrfs-subvol", Opt::BtrfsSubvol),
    LongOption::arg("btrfs-quota", Opt::BtrfsQuota),
    LongOption::arg("convert-qcow2", Opt::ConvertQcow2),
    LongOption::arg("sync", Opt::Sync),
    LongOption::arg("offset", Opt::Offset),
    LongOption::arg("size-max", Opt::SizeMax),
    LongOption::arg("class", Opt::Class),
];

/// The verbs: the seed's names, then v219's short aliases.
const VERBS: &[VerbSpec] = &[
    VerbSpec::new(&["help"], 0, None, verbs::help),
    VerbSpec::new(&["pull-tar"], 2, Some(3), verbs::pull_tar),
    VerbSpec::new(&["pull-raw"], 2, Some(3), verbs::pull_raw),
    // A local import, or with a URL v219's alias of pull-tar/pull-raw.
    VerbSpec::new(&["tar"], 2, Some(3), local::tar),
    VerbSpec::new(&["raw"], 2, Some(3), local::raw),
    VerbSpec::new(&["pull-dkr", "dkr"], 2, Some(3), verbs::pull_dkr),
    VerbSpec::new(&["pull-oci", "oci"], 2, Some(3), verbs::pull_oci),
];

/// Parse `argv` (without argv[0]). Diagnostics are printed to stderr as glibc's getopt
/// and systemd's parse_argv() would print them, prefixed with `argv0`; `Err(())` means
/// "exit with status 1".
pub fn parse(argv0: &str, argv: &[String]) -> Result<Parsed, ()> {
    parse_with(
        argv0,
        argv,
        OPTIONS,
        pull::env_defaults(),
        |settings, opt, value| {
            match opt {
                Opt::Force => settings.force = true,
                Opt::ImageRoot => {
                    settings.image_root = PathBuf::from(value.unwrap_or_default());
                    settings.image_root_given = true;
                }
                Opt::Verify => {
                    let v = value.unwrap_or_default();
                    match Verify::parse(&v) {
                        Some(mode) => settings.verify = mode,
                        None => {
                            log::error!("Invalid verification setting '{v}'");
                            return Err(());
                        }
                    }
                }
                Opt::DkrIndexUrl => verbs::set_dkr_index_url(settings, value)?,
                Opt::Platform => settings.platform = value,
                Opt::MaxConcurrentDownloads => verbs::set_max_downloads(settings, value)?,
                Opt::RegistryConfig => verbs::set_registry_config(settings, value)?,
                Opt::LayerSizeMax => verbs::set_layer_size_max(settings, value)?,
                Opt::DownloadRanges => verbs::set_download_ranges(settings, value)?,
                Opt::DownloadRangeSize => verbs::set_download_range_size(settings, value)?,
                // The local tar and raw's.
                _ => pull::apply(settings, opt, value)?,
            }
            Ok(())
        },
    )
}

/// The help text: the C tool's, plus our additions (pull-oci and its options).
pub fn help_text(program: &str) -> String {
    format!(
        "{program} [OPTIONS...] {{COMMAND}} ...\n\
         \n\
         Import container or virtual machine image.\n\
         \n\
         \x20 -h --help                   Show this help\n\
         \x20    --version                Show package version\n\
         \x20    --force                  Force creation of image\n\
         \x20    --verify=                Verify downloaded image, one of: 'no', 'sum'\n\
         \x20                             'signature'.\n\
         \x20    --image-root=            Image root directory\n\
         \x20    --dkr-index-url=URL      Specify index URL to use for downloads\n\
         \x20    --platform=OS/ARCH[/VARIANT]\n\
         \x20                             Platform to pull for pull-oci\n\
         \x20    --max-concurrent-downloads=N\n\
         \x20                             Layers pull-oci downloads at once (default 6)\n\
         \x20    --registry-config=DIR    Read pull-oci's registry configuration below DIR\n\
         \x20                             only (DIR/etc/containers/registries.conf, ...)\n\
         \x20    --layer-size-max=BYTES   Most one layer of pull-oci may expand to\n\
         \x20                             (default 8G)\n\
         \x20    --download-ranges=N      Parts of a big layer pull-oci fetches at once\n\
         \x20                             ('no' or 1: one stream; default 4)\n\
         \x20    --download-range-size=BYTES\n\
         \x20                             Size of those parts; bigger layers are fetched\n\
         \x20                             in parts (default 16M)\n\
         \n\
         Commands:\n\
         \x20 pull-tar URL [NAME]         Download a TAR image\n\
         \x20 pull-raw URL [NAME]         Download a RAW image\n\
         \x20 pull-dkr REMOTE [NAME]      Download a DKR image\n\
         \x20 pull-oci REF [NAME]         Download an OCI image\n\
         {}",
        local::IMPORT_HELP
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::import::cli::options::test_words as words;
    use crate::import::cli::Settings;

    fn run(s: &str) -> (Settings, Vec<String>) {
        crate::import::cli::options::test_run(parse, s)
    }

    #[test]
    fn options_may_appear_anywhere() {
        let (s, a) = run("pull-tar --force http://x/y.tar --image-root /srv --verify=no");
        assert!(s.force);
        assert_eq!(s.image_root, PathBuf::from("/srv"));
        assert_eq!(s.verify, Verify::No);
        assert_eq!(a, ["pull-tar", "http://x/y.tar"]);
    }

    #[test]
    fn double_dash_ends_options() {
        let (s, a) = run("pull-raw -- --force");
        assert!(!s.force);
        assert_eq!(a, ["pull-raw", "--force"]);
    }

    #[test]
    fn unique_prefixes_select_long_options() {
        let (s, _) = run("--forc --veri=sum x");
        assert!(s.force);
        assert_eq!(s.verify, Verify::Checksum);
    }

    #[test]
    fn ambiguous_unknown_and_missing_arguments_fail() {
        assert!(
            parse("p", &words("--ver x")).is_err(),
            "--ver: --version or --verify"
        );
        assert!(
            parse("p", &words("--ver=sum x")).is_err(),
            "still ambiguous with a value"
        );
        assert!(parse("p", &words("--frobnicate")).is_err());
        assert!(parse("p", &words("-x")).is_err());
        assert!(parse("p", &words("pull-tar --verify")).is_err());
        assert!(parse("p", &words("--force=yes")).is_err());
        assert!(parse("p", &words("--verify=maybe")).is_err());
        assert!(parse("p", &words("--dkr-index-url=ftp://x")).is_err());
    }

    #[test]
    fn help_and_version_win_over_the_verb() {
        assert!(matches!(
            parse("p", &words("pull-tar -h")),
            Ok(Parsed::Help)
        ));
        assert!(matches!(
            parse("p", &words("--version pull-tar")),
            Ok(Parsed::Version)
        ));
        assert!(
            matches!(parse("p", &words("-hx")), Ok(Parsed::Help)),
            "getopt stops at -h"
        );
    }

    #[test]
    fn verify_modes() {
        assert_eq!(Verify::parse("sum"), Some(Verify::Checksum));
        assert_eq!(Verify::parse("checksum"), Some(Verify::Checksum));
        assert_eq!(Verify::parse("signature"), Some(Verify::Signature));
        assert_eq!(Verify::parse("no"), Some(Verify::No));
        assert_eq!(Verify::parse("yes"), None);
    }
}

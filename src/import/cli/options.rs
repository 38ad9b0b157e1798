//! Command-line options, parsed as GNU `getopt_long()` does for the C tool: options may
//! appear anywhere (also after the verb), `--` ends them, long options take their argument
//! as `--opt=value` or as the next word, and an unambiguous prefix of a long option name
//! works (`--forc`). Errors are printed with glibc's wording and make the tool exit 1.

use std::path::PathBuf;

use crate::curl_glue::CurlSettings;
pub use crate::import::url::Verify;
use crate::util::test_seams::TestSettings;

/// Default for `--image-root=`.
pub const DEFAULT_IMAGE_ROOT: &str = "/var/lib/machines";

/// Everything the options set; the positional words are returned separately.
#[derive(Clone, Debug)]
pub struct Settings {
    pub image_root: PathBuf,
    pub force: bool,
    pub verify: Verify,
    /// `--dkr-index-url=`; validated when given. There is no built-in default (the C
    /// tool's `DEFAULT_DKR_INDEX_URL` is NULL unless configured).
    pub dkr_index_url: Option<String>,
    /// `--platform=OS/ARCH[/VARIANT]` for pull-oci.
    pub platform: Option<String>,
    /// `--max-concurrent-downloads=N` for pull-oci.
    pub max_concurrent_downloads: Option<usize>,
    /// `--layer-size-max=BYTES` for pull-oci: what one layer may expand to.
    pub layer_size_max: Option<u64>,
    /// What the importers' easy handles get (User-Agent, CA, low-speed window); set from
    /// argv[0] and the environment at start-up.
    pub curl: CurlSettings,
    /// The test-only settings, read from the environment once at start-up.
    pub test: TestSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image_root: PathBuf::from(DEFAULT_IMAGE_ROOT),
            force: false,
            verify: Verify::Signature,
            dkr_index_url: None,
            platform: None,
            max_concurrent_downloads: None,
            layer_size_max: None,
            curl: CurlSettings::default(),
            test: TestSettings::default(),
        }
    }
}

/// What parsing the command line decided.
#[derive(Debug)]
pub enum Parsed {
    /// Run the verb in `args[0]` with the rest as its arguments.
    Run {
        /// Boxed: it is large, and the other variants carry nothing.
        settings: Box<Settings>,
        args: Vec<String>,
    },
    /// `-h`/`--help` was given: print the help and exit 0 (the verb is not run).
    Help,
    /// `--version` was given.
    Version,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Opt {
    Help,
    Version,
    Force,
    ImageRoot,
    Verify,
    DkrIndexUrl,
    Platform,
    MaxConcurrentDownloads,
    LayerSizeMax,
}

struct LongOption {
    name: &'static str,
    opt: Opt,
    takes_arg: bool,
}

const LONG_OPTIONS: &[LongOption] = &[
    LongOption {
        name: "help",
        opt: Opt::Help,
        takes_arg: false,
    },
    LongOption {
        name: "version",
        opt: Opt::Version,
        takes_arg: false,
    },
    LongOption {
        name: "force",
        opt: Opt::Force,
        takes_arg: false,
    },
    LongOption {
        name: "image-root",
        opt: Opt::ImageRoot,
        takes_arg: true,
    },
    LongOption {
        name: "verify",
        opt: Opt::Verify,
        takes_arg: true,
    },
    LongOption {
        name: "dkr-index-url",
        opt: Opt::DkrIndexUrl,
        takes_arg: true,
    },
    LongOption {
        name: "platform",
        opt: Opt::Platform,
        takes_arg: true,
    },
    LongOption {
        name: "max-concurrent-downloads",
        opt: Opt::MaxConcurrentDownloads,
        takes_arg: true,
    },
    LongOption {
        name: "layer-size-max",
        opt: Opt::LayerSizeMax,
        takes_arg: true,
    },
];

/// Parse `argv` (without argv[0]). Diagnostics are printed to stderr as glibc's getopt
/// and systemd's parse_argv() would print them, prefixed with `argv0`; `Err(())` means
/// "exit with status 1".
pub fn parse(argv0: &str, argv: &[String]) -> Result<Parsed, ()> {
    let mut settings = Settings::default();
    let mut args = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let word = &argv[i];
        i += 1;
        if word == "--" {
            args.extend(argv[i..].iter().cloned());
            break;
        }
        let (opt, value) = if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let lo = find_long(argv0, name)?;
            let value = match (lo.takes_arg, inline) {
                (true, Some(v)) => Some(v),
                (true, None) => {
                    if i < argv.len() {
                        i += 1;
                        Some(argv[i - 1].clone())
                    } else {
                        eprintln!("{argv0}: option '--{}' requires an argument", lo.name);
                        return Err(());
                    }
                }
                (false, Some(_)) => {
                    eprintln!("{argv0}: option '--{}' doesn't allow an argument", lo.name);
                    return Err(());
                }
                (false, None) => None,
            };
            (lo.opt, value)
        } else if word.len() > 1 && word.starts_with('-') {
            // Short options: only -h exists; getopt handles a cluster letter by letter,
            // and -h ends parsing.
            match word[1..].chars().find(|&c| c != 'h') {
                Some(c) if !word[1..].starts_with('h') => {
                    eprintln!("{argv0}: invalid option -- '{c}'");
                    return Err(());
                }
                _ => (Opt::Help, None),
            }
        } else {
            args.push(word.clone());
            continue;
        };

        match opt {
            Opt::Help => return Ok(Parsed::Help),
            Opt::Version => return Ok(Parsed::Version),
            Opt::Force => settings.force = true,
            Opt::ImageRoot => settings.image_root = PathBuf::from(value.unwrap_or_default()),
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
            Opt::DkrIndexUrl => {
                let v = value.unwrap_or_default();
                if !crate::util::validate::http_url_is_valid(&v) {
                    log::error!("Index URL is not valid: {v}");
                    return Err(());
                }
                settings.dkr_index_url = Some(v);
            }
            Opt::Platform => settings.platform = value,
            Opt::MaxConcurrentDownloads => {
                let v = value.unwrap_or_default();
                match v.parse::<usize>() {
                    Ok(n) if (1..=64).contains(&n) => settings.max_concurrent_downloads = Some(n),
                    _ => {
                        log::error!("Invalid number of concurrent downloads '{v}', expected 1…64.");
                        return Err(());
                    }
                }
            }
            Opt::LayerSizeMax => {
                let v = value.unwrap_or_default();
                match parse_size(&v) {
                    Some(n) if n > 0 => settings.layer_size_max = Some(n),
                    _ => {
                        log::error!(
                            "Invalid layer size limit '{v}', expected bytes with an optional K, M, G or T suffix."
                        );
                        return Err(());
                    }
                }
            }
        }
    }
    Ok(Parsed::Run {
        settings: Box::new(settings),
        args,
    })
}

/// `N`, or `N` followed by `K`, `M`, `G` or `T` (powers of 1024).
fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'K') => (&s[..i], 10),
        (i, 'M') => (&s[..i], 20),
        (i, 'G') => (&s[..i], 30),
        (i, 'T') => (&s[..i], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// getopt_long's lookup: an exact name, else a unique prefix.
fn find_long(argv0: &str, name: &str) -> Result<&'static LongOption, ()> {
    if let Some(lo) = LONG_OPTIONS.iter().find(|lo| lo.name == name) {
        return Ok(lo);
    }
    let matches: Vec<&LongOption> = LONG_OPTIONS
        .iter()
        .filter(|lo| !name.is_empty() && lo.name.starts_with(name))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => {
            eprintln!("{argv0}: unrecognized option '--{name}'");
            Err(())
        }
        many => {
            let list: Vec<String> = many.iter().map(|lo| format!("'--{}'", lo.name)).collect();
            eprintln!(
                "{argv0}: option '--{name}' is ambiguous; possibilities: {}",
                list.join(" ")
            );
            Err(())
        }
    }
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
         \x20    --layer-size-max=BYTES   Most one layer of pull-oci may expand to\n\
         \x20                             (default 8G)\n\
         \n\
         Commands:\n\
         \x20 pull-tar URL [NAME]         Download a TAR image\n\
         \x20 pull-raw URL [NAME]         Download a RAW image\n\
         \x20 pull-dkr REMOTE [NAME]      Download a DKR image\n\
         \x20 pull-oci REF [NAME]         Download an OCI image\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(s: &str) -> (Settings, Vec<String>) {
        match parse("systemd-import", &words(s)) {
            Ok(Parsed::Run { settings, args }) => (*settings, args),
            other => panic!("{s}: {other:?}"),
        }
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
    fn the_layer_size_limit_takes_a_suffix() {
        assert_eq!(
            run("pull-oci --layer-size-max=100 x").0.layer_size_max,
            Some(100)
        );
        assert_eq!(
            run("pull-oci --layer-size-max=3G x").0.layer_size_max,
            Some(3 << 30)
        );
        assert_eq!(run("pull-oci x").0.layer_size_max, None);
        for bad in ["", "0", "G", "1.5G", "-1", "1P", "99999999999T"] {
            assert!(
                parse("x", &words(&format!("pull-oci --layer-size-max={bad} x"))).is_err(),
                "{bad}"
            );
        }
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

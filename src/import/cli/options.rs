//! The getopt engine every personality shares ([`walk`]), parsed as GNU `getopt_long()`
//! does for the C tools: options may appear anywhere (also after the verb), `--` ends
//! them, long options take their argument as `--opt=value` or as the next word, and an
//! unambiguous prefix of a long option name works (`--forc`). Errors are printed with
//! glibc's wording and make the tool exit 1. Also [`Settings`], what the options of any
//! personality set.

use std::path::PathBuf;

use crate::curl_glue::CurlSettings;
use crate::import::oci::registry::ConfigPaths;
pub use crate::import::url::Verify;
use crate::import::Dialect;
use crate::util::image::ImageClass;
use crate::util::test_seams::TestSettings;

/// Default for `--image-root=`.
pub const DEFAULT_IMAGE_ROOT: &str = "/var/lib/machines";

/// Everything the options of any personality set; the positional words are returned
/// separately. Options a personality does not know keep their defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Which systemd's messages and progress format the run follows.
    pub dialect: Dialect,
    pub image_root: PathBuf,
    /// `--image-root=` was given (else the class picks the root, systemd-pull).
    pub image_root_given: bool,
    pub force: bool,
    pub verify: Verify,
    /// `--dkr-index-url=`; validated when given. There is no built-in default (the C
    /// tool's `DEFAULT_DKR_INDEX_URL` is NULL unless configured).
    pub dkr_index_url: Option<String>,
    /// `--platform=OS/ARCH[/VARIANT]` for pull-oci.
    pub platform: Option<String>,
    /// `--max-concurrent-downloads=N` for pull-oci.
    pub max_concurrent_downloads: Option<usize>,
    /// systemd-pull's side files: `--settings=` (`None`: the class decides),
    /// `--roothash=`, `--roothash-signature=`, `--verity=`.
    pub settings: Option<bool>,
    pub roothash: bool,
    pub roothash_signature: bool,
    pub verity: bool,
    /// `--read-only`: the local image is made read-only.
    pub read_only: bool,
    /// `--direct`: no cache, no local copy: straight into NAME.
    pub direct: bool,
    pub btrfs_subvol: bool,
    pub btrfs_quota: bool,
    pub convert_qcow2: bool,
    pub sync: bool,
    /// `--offset=` (raw `--direct` only) and `--size-max=`.
    pub offset: Option<u64>,
    pub size_max: Option<u64>,
    /// `--class=`.
    pub class: ImageClass,
    /// `--keep-download=` (`None`: the class decides).
    pub keep_download: Option<bool>,
    /// `--registry-config=DIR` for pull-oci: read the registry configuration only below
    /// this root (else `$SYSTEMD_IMPORT_REGISTRY_CONFIG`, else the system and user files).
    pub registry_config: Option<PathBuf>,
    /// Where pull-oci's registry configuration is read, decided once at start-up from
    /// `registry_config` and the environment.
    pub registry_paths: ConfigPaths,
    /// systemd-export's `--format=` (`None`: from the output file's name).
    pub format: Option<String>,
    /// `--layer-size-max=BYTES` for pull-oci: what one layer may expand to.
    pub layer_size_max: Option<u64>,
    /// `--download-ranges=N|no` for pull-oci: parts of a big layer fetched at once.
    pub download_ranges: Option<usize>,
    /// `--download-range-size=BYTES` for pull-oci: the size of those parts.
    pub download_range_size: Option<u64>,
    /// What the importers' easy handles get (User-Agent, CA, low-speed window); set from
    /// argv[0] and the environment at start-up.
    pub curl: CurlSettings,
    /// The test-only settings, read from the environment once at start-up.
    pub test: TestSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dialect: Dialect::V219,
            image_root: PathBuf::from(DEFAULT_IMAGE_ROOT),
            image_root_given: false,
            force: false,
            verify: Verify::Signature,
            dkr_index_url: None,
            platform: None,
            max_concurrent_downloads: None,
            settings: None,
            roothash: true,
            roothash_signature: true,
            verity: true,
            read_only: false,
            direct: false,
            btrfs_subvol: true,
            btrfs_quota: true,
            convert_qcow2: true,
            sync: true,
            offset: None,
            size_max: None,
            class: ImageClass::Machine,
            keep_download: None,
            registry_config: None,
            registry_paths: ConfigPaths::system(),
            format: None,
            layer_size_max: None,
            download_ranges: None,
            download_range_size: None,
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

/// Every option any personality knows; each personality lists the ones it accepts in its
/// table of [`LongOption`]s.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Opt {
    Help,
    Version,
    Force,
    ImageRoot,
    Verify,
    DkrIndexUrl,
    Platform,
    MaxConcurrentDownloads,
    Settings,
    RootHash,
    RootHashSignature,
    Verity,
    ReadOnly,
    Direct,
    BtrfsSubvol,
    BtrfsQuota,
    ConvertQcow2,
    Sync,
    Offset,
    SizeMax,
    Class,
    KeepDownload,
    System,
    RegistryConfig,
    Format,
    LayerSizeMax,
    DownloadRanges,
    DownloadRangeSize,
}

/// One entry of a personality's `getopt_long()` table.
pub struct LongOption {
    pub name: &'static str,
    pub opt: Opt,
    pub takes_arg: bool,
}

impl LongOption {
    /// An option without an argument.
    pub const fn flag(name: &'static str, opt: Opt) -> Self {
        LongOption {
            name,
            opt,
            takes_arg: false,
        }
    }

    /// An option with a required argument.
    pub const fn arg(name: &'static str, opt: Opt) -> Self {
        LongOption {
            name,
            opt,
            takes_arg: true,
        }
    }
}

/// What one word (or two) of the command line is, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Word {
    /// An option of the table, with its argument if it takes one.
    Opt(Opt, Option<String>),
    /// A positional word (the verb and its arguments).
    Arg(String),
}

/// The getopt engine every personality shares: walk `argv` (without argv[0]) against
/// `table`, calling `each` for every option and positional word in order (`-h` is the
/// only short option, [`Opt::Help`]). Diagnostics are printed to stderr as glibc's
/// getopt prints them, prefixed with `argv0`; `Err(())` means "exit with status 1", as
/// does an `Err` of `each`. `each` returns `Ok(false)` to stop the walk (`--help`).
pub fn walk(
    argv0: &str,
    argv: &[String],
    table: &'static [LongOption],
    mut each: impl FnMut(Word) -> Result<bool, ()>,
) -> Result<(), ()> {
    let mut i = 0;
    while i < argv.len() {
        let word = &argv[i];
        i += 1;
        if word == "--" {
            for a in &argv[i..] {
                each(Word::Arg(a.clone()))?;
            }
            break;
        }
        let item = if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let lo = find_long(argv0, table, name)?;
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
            Word::Opt(lo.opt, value)
        } else if word.len() > 1 && word.starts_with('-') {
            // Short options: only -h exists; getopt handles a cluster letter by letter,
            // and -h ends parsing.
            match word[1..].chars().find(|&c| c != 'h') {
                Some(c) if !word[1..].starts_with('h') => {
                    eprintln!("{argv0}: invalid option -- '{c}'");
                    return Err(());
                }
                _ => Word::Opt(Opt::Help, None),
            }
        } else {
            Word::Arg(word.clone())
        };
        if !each(item)? {
            break;
        }
    }
    Ok(())
}

/// A personality's parse on the shared engine: `--help` and `--version` end the walk,
/// positional words are collected, every other option goes to `apply` with `settings`
/// (which starts as given). `Err(())` means "exit 1".
pub fn parse_with(
    argv0: &str,
    argv: &[String],
    table: &'static [LongOption],
    mut settings: Settings,
    mut apply: impl FnMut(&mut Settings, Opt, Option<String>) -> Result<(), ()>,
) -> Result<Parsed, ()> {
    let mut args = Vec::new();
    let mut outcome = None;
    walk(argv0, argv, table, |word| {
        match word {
            Word::Arg(a) => args.push(a),
            Word::Opt(Opt::Help, _) => outcome = Some(Parsed::Help),
            Word::Opt(Opt::Version, _) => outcome = Some(Parsed::Version),
            Word::Opt(opt, value) => apply(&mut settings, opt, value)?,
        }
        Ok(outcome.is_none())
    })?;
    Ok(outcome.unwrap_or(Parsed::Run {
        settings: Box::new(settings),
        args,
    }))
}

/// systemd's `parse_size(s, 1024)`: a decimal number, optionally with a fraction, and
/// an optional binary suffix (`B`, `K`, `M`, `G`, `T`, `P`, `E`); several may be summed
/// (`1G 512M`). `None` when it does not parse or overflows.
pub fn parse_size(s: &str) -> Option<u64> {
    const UNITS: [(char, u64); 7] = [
        ('E', 1 << 60),
        ('P', 1 << 50),
        ('T', 1 << 40),
        ('G', 1 << 30),
        ('M', 1 << 20),
        ('K', 1 << 10),
        ('B', 1),
    ];
    let mut rest = s.trim_start();
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let whole: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let mut frac = (0u64, 1u64);
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            if n == 0 {
                return None;
            }
            for d in r[..n].bytes().take(18) {
                frac = (frac.0 * 10 + u64::from(d - b'0'), frac.1 * 10);
            }
            rest = &r[n..];
        }
        rest = rest.trim_start();
        let factor = match rest.chars().next() {
            Some(c) => match UNITS.iter().find(|(u, _)| *u == c) {
                Some((_, f)) => {
                    rest = rest[1..].trim_start();
                    *f
                }
                None if c.is_ascii_digit() => 1,
                None => return None,
            },
            None => 1,
        };
        let part = whole
            .checked_mul(factor)?
            .checked_add(frac.0.checked_mul(factor)? / frac.1)?;
        total = total.checked_add(part)?;
    }
    Some(total)
}

/// getopt_long's lookup: an exact name, else a unique prefix.
fn find_long(
    argv0: &str,
    table: &'static [LongOption],
    name: &str,
) -> Result<&'static LongOption, ()> {
    if let Some(lo) = table.iter().find(|lo| lo.name == name) {
        return Ok(lo);
    }
    let matches: Vec<&LongOption> = table
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

/// Test helper: `s` split at white space into words.
#[cfg(test)]
pub fn test_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Test helper: what `parse` makes of the words of `s`, which must run a verb.
#[cfg(test)]
pub fn test_run(
    parse: fn(&str, &[String]) -> Result<Parsed, ()>,
    s: &str,
) -> (Settings, Vec<String>) {
    match parse("prog", &test_words(s)) {
        Ok(Parsed::Run { settings, args }) => (*settings, args),
        other => panic!("{s}: {other:?}"),
    }
}

//! The command line every personality shares: [`walk`] runs a personality's table of
//! long options (plus `-h`) through [`crate::util::getopt`], GNU `getopt_long()`'s rules
//! (options anywhere, also after the verb; `--` ends them; `--opt=value` or the next
//! word; an unambiguous prefix of a long name, `--forc`), printing its errors with
//! glibc's wording and making the tool exit 1. Also [`Settings`], what the options of any
//! personality set, and [`parse_size`].

use std::path::PathBuf;

use crate::curl_glue::CurlSettings;
use crate::import::oci::registry::ConfigPaths;
pub use crate::import::url::Verify;
use crate::import::Dialect;
use crate::util::getopt::{Getopt, HasArg, Item, OptSpec};
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

/// One entry of a personality's `getopt_long()` table (`LongOption::flag`,
/// `LongOption::arg`).
pub type LongOption = OptSpec<Opt>;

/// What one word (or two) of the command line is, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Word {
    /// An option of the table, with its argument if it takes one.
    Opt(Opt, Option<String>),
    /// A positional word (the verb and its arguments).
    Arg(String),
}

/// Walk `argv` (without argv[0]) against `table` with [`Getopt`], calling `each` for every
/// option and positional word in order; `-h` is the only short option ([`Opt::Help`],
/// whatever the table). Diagnostics are printed to stderr as glibc's getopt prints them,
/// prefixed with `argv0`; `Err(())` means "exit with status 1", as does an `Err` of
/// `each`. `each` returns `Ok(false)` to stop the walk (`--help`).
pub fn walk(
    argv0: &str,
    argv: &[String],
    table: &'static [LongOption],
    mut each: impl FnMut(Word) -> Result<bool, ()>,
) -> Result<(), ()> {
    let help = OptSpec {
        long: None,
        short: Some('h'),
        arg: HasArg::No,
        id: Opt::Help,
    };
    let specs: Vec<LongOption> = table.iter().copied().chain([help]).collect();
    for item in Getopt::new(argv0, &specs, argv) {
        let word = match item {
            Ok(Item::Opt(opt, value)) => Word::Opt(opt, value),
            Ok(Item::Positional(word)) => Word::Arg(word),
            Err(message) => {
                eprintln!("{message}");
                return Err(());
            }
        };
        if !each(word)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[LongOption] = &[
        LongOption::flag("help", Opt::Help),
        LongOption::flag("force", Opt::Force),
        LongOption::arg("format", Opt::Format),
    ];

    /// What [`walk`] hands on for the words of `s`, stopping after `--help`/`-h`.
    fn words(s: &str) -> Result<Vec<Word>, ()> {
        let mut out = Vec::new();
        walk("prog", &test_words(s), TABLE, |w| {
            let go = w != Word::Opt(Opt::Help, None);
            out.push(w);
            Ok(go)
        })?;
        Ok(out)
    }

    #[test]
    fn h_is_the_one_short_option_and_ends_the_walk() {
        let arg = |w: &str| Word::Arg(w.to_string());
        assert_eq!(words("-hx pull"), Ok(vec![Word::Opt(Opt::Help, None)]));
        assert_eq!(words("-xh"), Err(()));
        assert_eq!(words("-q"), Err(()));
        assert_eq!(words("--fo"), Err(()));
        assert_eq!(
            words("verb - --forc --format xz --format=gz -- -h --x"),
            Ok(vec![
                arg("verb"),
                arg("-"),
                Word::Opt(Opt::Force, None),
                Word::Opt(Opt::Format, Some("xz".into())),
                Word::Opt(Opt::Format, Some("gz".into())),
                arg("-h"),
                arg("--x"),
            ])
        );
    }
}

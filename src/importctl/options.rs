//! importctl's options (upstream's, v256–v260, minus the remote and user-scope ones),
//! parsed with getopt_long's rules ([`crate::util::getopt`]) and checked with upstream's
//! messages; every failure exits 1.

use std::os::fd::AsFd;

use super::table::JsonMode;
use crate::bus::import1::{ImageClass, Verify, FLAG_FORCE, FLAG_KEEP_DOWNLOAD, FLAG_READ_ONLY};
use crate::util::getopt::{Getopt, HasArg, Item, OptSpec};
use crate::util::validate;

/// Everything the options set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `--class=`, `-m`, `-P`, `-S`, `-C`; pulls refuse to run without one.
    pub class: Option<ImageClass>,
    pub verify: Verify,
    /// `FLAG_*` bits set by `--force`, `--read-only`, `--keep-download=`, `-N`.
    pub flags: u64,
    /// The bits of `flags` the command line decided (the rest get class defaults).
    pub flags_given: u64,
    /// `-q`.
    pub quiet: bool,
    /// Header and footer of the tables (`--no-legend`, and any `--json=` but `off`).
    pub legend: bool,
    /// Calls may wait for an interactive polkit authorization (`--no-ask-password`).
    pub ask_password: bool,
    pub json: JsonMode,
    /// `--dkr-index-url=` for pull-dkr.
    pub dkr_index_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            class: None,
            verify: Verify::Signature,
            flags: 0,
            flags_given: 0,
            quiet: false,
            legend: true,
            ask_password: true,
            json: JsonMode::Off,
            dkr_index_url: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Run the verb in `args[0]` (none: the default verb).
    Run(Box<Settings>, Vec<String>),
    /// `-h`, `--version`, `--verify=help`, `--json=help`: printed; exit 0.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    Help,
    Version,
    NoPager,
    NoLegend,
    NoAskPassword,
    ReadOnly,
    Quiet,
    Json,
    JsonAuto,
    Verify,
    Force,
    Class,
    Machine,
    Portable,
    Sysext,
    Confext,
    KeepDownload,
    NoKeepDownload,
    DkrIndexUrl,
}

const fn opt(
    long: Option<&'static str>,
    short: Option<char>,
    arg: HasArg,
    id: Opt,
) -> OptSpec<Opt> {
    OptSpec {
        long,
        short,
        arg,
        id,
    }
}

const OPTIONS: &[OptSpec<Opt>] = &[
    opt(Some("help"), Some('h'), HasArg::No, Opt::Help),
    opt(Some("version"), None, HasArg::No, Opt::Version),
    opt(Some("no-pager"), None, HasArg::No, Opt::NoPager),
    opt(Some("no-legend"), None, HasArg::No, Opt::NoLegend),
    opt(
        Some("no-ask-password"),
        None,
        HasArg::No,
        Opt::NoAskPassword,
    ),
    opt(Some("read-only"), None, HasArg::No, Opt::ReadOnly),
    opt(Some("quiet"), Some('q'), HasArg::No, Opt::Quiet),
    opt(Some("json"), None, HasArg::Required, Opt::Json),
    opt(None, Some('j'), HasArg::No, Opt::JsonAuto),
    opt(Some("verify"), None, HasArg::Required, Opt::Verify),
    opt(Some("force"), None, HasArg::No, Opt::Force),
    opt(Some("class"), None, HasArg::Required, Opt::Class),
    opt(None, Some('m'), HasArg::No, Opt::Machine),
    opt(None, Some('P'), HasArg::No, Opt::Portable),
    opt(None, Some('S'), HasArg::No, Opt::Sysext),
    opt(None, Some('C'), HasArg::No, Opt::Confext),
    opt(
        Some("keep-download"),
        None,
        HasArg::Required,
        Opt::KeepDownload,
    ),
    opt(None, Some('N'), HasArg::No, Opt::NoKeepDownload),
    opt(
        Some("dkr-index-url"),
        None,
        HasArg::Required,
        Opt::DkrIndexUrl,
    ),
];

/// systemd's `parse_boolean()`.
fn parse_boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// `-j`: pretty on a terminal, short elsewhere.
fn json_auto() -> JsonMode {
    if nix::unistd::isatty(std::io::stdout().as_fd()).unwrap_or(false) {
        JsonMode::Pretty
    } else {
        JsonMode::Short
    }
}

/// Parse `argv` (without argv[0]). Diagnostics go to stderr; `Err(())` means exit 1.
pub fn parse(argv0: &str, program: &str, argv: &[String]) -> Result<Parsed, ()> {
    let mut s = Settings::default();
    let mut args = Vec::new();
    let fail = |msg: String| {
        log::error!("{msg}");
    };
    for item in Getopt::new(argv0, OPTIONS, argv) {
        let (opt, value) = match item {
            Err(msg) => {
                // getopt's own words go straight to stderr, as glibc writes them.
                eprintln!("{msg}");
                return Err(());
            }
            Ok(Item::Positional(word)) => {
                args.push(word);
                continue;
            }
            Ok(Item::Opt(opt, value)) => (opt, value.unwrap_or_default()),
        };
        let set_flag = |s: &mut Settings, flag: u64, on: bool| {
            if on {
                s.flags |= flag;
            } else {
                s.flags &= !flag;
            }
            s.flags_given |= flag;
        };
        match opt {
            Opt::Help => {
                print!("{}", help_text(program));
                return Ok(Parsed::Done);
            }
            Opt::Version => {
                println!("systemd 260");
                println!(
                    "+OCI +DKR +PROGRESS (systemd-import {})",
                    env!("CARGO_PKG_VERSION")
                );
                return Ok(Parsed::Done);
            }
            Opt::NoPager => {}
            Opt::NoLegend => s.legend = false,
            Opt::NoAskPassword => s.ask_password = false,
            Opt::ReadOnly => set_flag(&mut s, FLAG_READ_ONLY, true),
            Opt::Quiet => s.quiet = true,
            Opt::Json => {
                s.json = match value.as_str() {
                    "help" => {
                        println!("pretty\nshort\noff");
                        return Ok(Parsed::Done);
                    }
                    "pretty" => JsonMode::Pretty,
                    "short" => JsonMode::Short,
                    "off" => JsonMode::Off,
                    _ => {
                        fail(format!("Unknown argument to --json= switch: {value}"));
                        return Err(());
                    }
                };
                s.legend = false;
            }
            Opt::JsonAuto => {
                s.json = json_auto();
                s.legend = false;
            }
            Opt::Verify => {
                if value == "help" {
                    for v in Verify::ALL {
                        println!("{}", v.as_str());
                    }
                    return Ok(Parsed::Done);
                }
                match Verify::from_name(&value) {
                    Some(v) => s.verify = v,
                    None => {
                        fail(format!("Failed to parse --verify= setting: {value}"));
                        return Err(());
                    }
                }
            }
            Opt::Force => set_flag(&mut s, FLAG_FORCE, true),
            Opt::Class => match ImageClass::from_name(&value) {
                Some(c) => s.class = Some(c),
                None => {
                    fail(format!("Failed to parse --class= parameter: {value}"));
                    return Err(());
                }
            },
            Opt::Machine => s.class = Some(ImageClass::Machine),
            Opt::Portable => s.class = Some(ImageClass::Portable),
            Opt::Sysext => s.class = Some(ImageClass::Sysext),
            Opt::Confext => s.class = Some(ImageClass::Confext),
            Opt::KeepDownload => match parse_boolean(&value) {
                Some(on) => set_flag(&mut s, FLAG_KEEP_DOWNLOAD, on),
                None => {
                    fail(format!("Failed to parse --keep-download= value: {value}"));
                    return Err(());
                }
            },
            Opt::NoKeepDownload => set_flag(&mut s, FLAG_KEEP_DOWNLOAD, false),
            Opt::DkrIndexUrl => {
                if !validate::http_url_is_valid(&value) {
                    fail(format!("Index URL is invalid: {value}"));
                    return Err(());
                }
                s.dkr_index_url = Some(value);
            }
        }
    }
    Ok(Parsed::Run(Box::new(s), args))
}

/// The help text (our own words; upstream's layout: usage, commands, options).
pub fn help_text(program: &str) -> String {
    format!(
        "{program} [OPTIONS...] COMMAND ...

Download disk images through systemd-importd and watch the transfers.

Commands:
  pull-tar URL [NAME]         Download a TAR container image
  pull-raw URL [NAME]         Download a RAW container or VM image
  pull-oci REF [NAME]         Download an OCI container image
  pull-dkr REMOTE[:TAG] [NAME]
                              Download an image from a Docker v1 registry
  list-transfers              Show the transfers in progress (default)
  cancel-transfer ID...       Cancel transfers
  list-images                 Show the installed images

Options:
  -h --help                   Show this help
     --version                Show package version
     --no-pager               Do not pipe output into a pager
     --no-legend              Do not show the headers and footers
     --no-ask-password        Do not ask for system passwords
  -q --quiet                  Suppress output
     --json=pretty|short|off  Generate JSON output
  -j                          Equivalent to --json=pretty (on a TTY) or
                              --json=short (otherwise)
     --verify=MODE            Verification mode for downloaded images (no,
                              checksum, signature)
     --force                  Install the image even if one already exists
     --class=TYPE             Install as machine, portable, sysext or confext
  -m                          Install as --class=machine, machine image
  -P                          Install as --class=portable, portable service image
  -S                          Install as --class=sysext, system extension image
  -C                          Install as --class=confext, configuration
                              extension image
     --read-only              Create a read-only image
     --keep-download=BOOL     Keep a pristine copy of the download
  -N                          Shortcut for --keep-download=no
     --dkr-index-url=URL      The index of a Docker v1 registry (pull-dkr)
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> (Settings, Vec<String>) {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        match parse("importctl", "importctl", &argv) {
            Ok(Parsed::Run(s, args)) => (*s, args),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn options_set_classes_flags_and_modes() {
        let (s, a) = run("pull-tar -m --force URL -N --read-only --verify=no -q");
        assert_eq!(a, ["pull-tar", "URL"]);
        assert_eq!(s.class, Some(ImageClass::Machine));
        assert_eq!(s.flags, FLAG_FORCE | FLAG_READ_ONLY);
        assert_eq!(
            s.flags_given,
            FLAG_FORCE | FLAG_READ_ONLY | FLAG_KEEP_DOWNLOAD
        );
        assert_eq!(s.verify, Verify::No);
        assert!(s.quiet);
        let (s, _) = run("-S --class=portable --keep-download=yes --json=short");
        assert_eq!(s.class, Some(ImageClass::Portable));
        assert_eq!(s.flags, FLAG_KEEP_DOWNLOAD);
        assert_eq!((s.json, s.legend), (JsonMode::Short, false));
        let (s, _) = run("--no-legend --no-ask-password --no-pager");
        assert!(!s.legend && !s.ask_password);
    }

    #[test]
    fn bad_values_fail() {
        for line in [
            "--class=vm",
            "--verify=sum",
            "--json=yaml",
            "--keep-download=maybe",
            "--dkr-index-url=ftp://x",
            "--frobnicate",
            "-x",
        ] {
            let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
            assert_eq!(parse("importctl", "importctl", &argv), Err(()), "{line}");
        }
    }
}

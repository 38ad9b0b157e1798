//! Export a directory tree (`tar`) or a raw image (`raw`) with the library, for the
//! benchmark (`bench/export.sh`) and for trying the exporter by hand until the
//! `systemd-export` command line exists:
//!
//! `cargo run --release --example export -- tar|raw SOURCE OUTPUT [FORMAT]`
//!
//! FORMAT is `--format=`'s (`uncompressed`, `xz`, `gzip`, `bzip2`, `zstd`); without it
//! the format follows OUTPUT's suffix. Prints the statistics to stderr.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use systemd_import::import::export;
use systemd_import::import::stream::Compression;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (verb, source, output) = match &args[..] {
        [verb, source, output] | [verb, source, output, _] => (verb, source, output),
        _ => {
            eprintln!("usage: export tar|raw SOURCE OUTPUT [FORMAT]");
            return ExitCode::from(2);
        }
    };
    let compression = match args.get(3) {
        Some(name) => match Compression::from_format_name(name) {
            Some(c) => c,
            None => {
                eprintln!("Unknown format: {name}");
                return ExitCode::from(2);
            }
        },
        None => Compression::from_file_name(Some(OsStr::new(output))),
    };
    let run = || -> std::io::Result<export::Stats> {
        let src = File::open(source)?;
        let mut out = File::create(output)?;
        let cancel = AtomicBool::new(false);
        let source = match verb.as_str() {
            "tar" => export::Source::Tree(src.as_fd()),
            "raw" => export::Source::Raw(src.as_fd()),
            _ => return Err(std::io::Error::other(format!("unknown verb {verb}"))),
        };
        Ok(export::run(
            source,
            compression,
            &mut out,
            &cancel,
            &mut |_| {},
        )?)
    };
    match run() {
        Ok(stats) => {
            eprintln!("{stats:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("export failed: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Command-line options parsed as GNU `getopt_long()` parses them, for the tools that
//! mimic systemd's: options may appear anywhere (also after positional words), `--` ends
//! them, short options cluster (`-qj`), a long option takes its argument as `--opt=value`
//! or as the next word, and an unambiguous prefix of a long name selects it (`--forc`).
//! Diagnostics use glibc's wording, prefixed with argv[0] as given.
//!
//! [`Getopt`] is an iterator: the caller acts on each option in order and stops at the
//! first error, so `--help --bogus` prints the help and `--bogus --help` fails, as with
//! getopt.

/// systemd's verb dispatch check: a verb's words (the verb included) number at least
/// `min` and at most `max` (`None`: any); otherwise `Too few arguments.` or `Too many
/// arguments.` is logged and false returned.
pub fn verb_arg_count_ok(words: usize, min: usize, max: Option<usize>) -> bool {
    if words < min {
        log::error!("Too few arguments.");
        return false;
    }
    if max.is_some_and(|max| words > max) {
        log::error!("Too many arguments.");
        return false;
    }
    true
}

/// Whether an option takes an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HasArg {
    No,
    Required,
}

/// One option: its long name and/or short letter, and what the caller calls it.
#[derive(Clone, Copy, Debug)]
pub struct OptSpec<T> {
    pub long: Option<&'static str>,
    pub short: Option<char>,
    pub arg: HasArg,
    pub id: T,
}

impl<T> OptSpec<T> {
    /// A long option without an argument.
    pub const fn flag(long: &'static str, id: T) -> Self {
        OptSpec {
            long: Some(long),
            short: None,
            arg: HasArg::No,
            id,
        }
    }

    /// A long option with a required argument.
    pub const fn arg(long: &'static str, id: T) -> Self {
        OptSpec {
            long: Some(long),
            short: None,
            arg: HasArg::Required,
            id,
        }
    }
}

/// What the command line holds, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item<T> {
    /// An option with its argument (for [`HasArg::Required`]).
    Opt(T, Option<String>),
    /// A word that is not an option.
    Positional(String),
}

/// Walks `argv` (without argv[0]); see the module documentation.
pub struct Getopt<'a, T> {
    argv0: &'a str,
    specs: &'a [OptSpec<T>],
    argv: &'a [String],
    next: usize,
    /// The rest of a short-option cluster being taken apart.
    cluster: Option<String>,
    /// After `--`: everything is positional.
    done: bool,
}

impl<'a, T: Copy> Getopt<'a, T> {
    pub fn new(argv0: &'a str, specs: &'a [OptSpec<T>], argv: &'a [String]) -> Self {
        Getopt {
            argv0,
            specs,
            argv,
            next: 0,
            cluster: None,
            done: false,
        }
    }

    fn take_word(&mut self) -> Option<String> {
        let w = self.argv.get(self.next).cloned();
        if w.is_some() {
            self.next += 1;
        }
        w
    }

    fn long(&mut self, text: &str) -> Result<Item<T>, String> {
        let (name, inline) = match text.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (text, None),
        };
        let spec = self.find_long(name)?;
        let long = spec.long.unwrap_or_default();
        match (spec.arg, inline) {
            (HasArg::Required, Some(v)) => Ok(Item::Opt(spec.id, Some(v))),
            (HasArg::Required, None) => match self.take_word() {
                Some(v) => Ok(Item::Opt(spec.id, Some(v))),
                None => Err(format!(
                    "{}: option '--{long}' requires an argument",
                    self.argv0
                )),
            },
            (HasArg::No, Some(_)) => Err(format!(
                "{}: option '--{long}' doesn't allow an argument",
                self.argv0
            )),
            (HasArg::No, None) => Ok(Item::Opt(spec.id, None)),
        }
    }

    /// An exact long name, else a unique prefix.
    fn find_long(&self, name: &str) -> Result<OptSpec<T>, String> {
        if let Some(spec) = self.specs.iter().find(|s| s.long == Some(name)) {
            return Ok(*spec);
        }
        let matches: Vec<&OptSpec<T>> = self
            .specs
            .iter()
            .filter(|s| !name.is_empty() && s.long.is_some_and(|l| l.starts_with(name)))
            .collect();
        match matches.as_slice() {
            [one] => Ok(**one),
            [] => Err(format!("{}: unrecognized option '--{name}'", self.argv0)),
            many => {
                let list: Vec<String> = many
                    .iter()
                    .map(|s| format!("'--{}'", s.long.unwrap_or_default()))
                    .collect();
                Err(format!(
                    "{}: option '--{name}' is ambiguous; possibilities: {}",
                    self.argv0,
                    list.join(" ")
                ))
            }
        }
    }

    /// The next letter of the current cluster.
    fn short(&mut self, cluster: String) -> Result<Item<T>, String> {
        let mut chars = cluster.chars();
        let c = chars.next().expect("clusters are not empty");
        let rest: String = chars.collect();
        let Some(spec) = self.specs.iter().find(|s| s.short == Some(c)).copied() else {
            self.cluster = (!rest.is_empty()).then_some(rest);
            return Err(format!("{}: invalid option -- '{c}'", self.argv0));
        };
        match spec.arg {
            HasArg::No => {
                self.cluster = (!rest.is_empty()).then_some(rest);
                Ok(Item::Opt(spec.id, None))
            }
            HasArg::Required if !rest.is_empty() => Ok(Item::Opt(spec.id, Some(rest))),
            HasArg::Required => match self.take_word() {
                Some(v) => Ok(Item::Opt(spec.id, Some(v))),
                None => Err(format!(
                    "{}: option requires an argument -- '{c}'",
                    self.argv0
                )),
            },
        }
    }
}

impl<T: Copy> Iterator for Getopt<'_, T> {
    type Item = Result<Item<T>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(cluster) = self.cluster.take() {
            return Some(self.short(cluster));
        }
        let word = self.take_word()?;
        if self.done {
            return Some(Ok(Item::Positional(word)));
        }
        if word == "--" {
            self.done = true;
            return self.next();
        }
        if let Some(long) = word.strip_prefix("--") {
            return Some(self.long(long));
        }
        match word.strip_prefix('-') {
            Some(cluster) if !cluster.is_empty() => Some(self.short(cluster.to_string())),
            _ => Some(Ok(Item::Positional(word))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum O {
        Force,
        Format,
        Quiet,
        Json,
        Class,
    }

    const SPECS: &[OptSpec<O>] = &[
        OptSpec {
            long: Some("force"),
            short: None,
            arg: HasArg::No,
            id: O::Force,
        },
        OptSpec {
            long: Some("format"),
            short: None,
            arg: HasArg::Required,
            id: O::Format,
        },
        OptSpec {
            long: Some("quiet"),
            short: Some('q'),
            arg: HasArg::No,
            id: O::Quiet,
        },
        OptSpec {
            long: None,
            short: Some('j'),
            arg: HasArg::No,
            id: O::Json,
        },
        OptSpec {
            long: Some("class"),
            short: Some('c'),
            arg: HasArg::Required,
            id: O::Class,
        },
    ];

    fn parse(line: &str) -> Vec<Result<Item<O>, String>> {
        let argv: Vec<String> = line.split_whitespace().map(String::from).collect();
        Getopt::new("prog", SPECS, &argv).collect()
    }

    fn opt(o: O, v: Option<&str>) -> Result<Item<O>, String> {
        Ok(Item::Opt(o, v.map(String::from)))
    }

    fn pos(w: &str) -> Result<Item<O>, String> {
        Ok(Item::Positional(w.into()))
    }

    #[test]
    fn options_anywhere_clusters_prefixes_and_double_dash() {
        assert_eq!(
            parse("verb --forc x -qj --format=xz --class machine -cportable - -- -q"),
            vec![
                pos("verb"),
                opt(O::Force, None),
                pos("x"),
                opt(O::Quiet, None),
                opt(O::Json, None),
                opt(O::Format, Some("xz")),
                opt(O::Class, Some("machine")),
                opt(O::Class, Some("portable")),
                pos("-"),
                pos("-q"),
            ]
        );
    }

    #[test]
    fn errors_have_glibcs_words() {
        let err = |line: &str| {
            parse(line)
                .into_iter()
                .find_map(Result::err)
                .unwrap_or_default()
        };
        assert_eq!(err("--frob"), "prog: unrecognized option '--frob'");
        assert_eq!(
            err("--fo"),
            "prog: option '--fo' is ambiguous; possibilities: '--force' '--format'"
        );
        assert_eq!(
            err("--format"),
            "prog: option '--format' requires an argument"
        );
        assert_eq!(
            err("--force=1"),
            "prog: option '--force' doesn't allow an argument"
        );
        assert_eq!(err("-x"), "prog: invalid option -- 'x'");
        assert_eq!(err("-qx"), "prog: invalid option -- 'x'");
        assert_eq!(err("-c"), "prog: option requires an argument -- 'c'");
        // Options before the bad one are still delivered first.
        assert_eq!(parse("-q --frob")[0], opt(O::Quiet, None));
    }
}

//! Verb dispatch (systemd's `dispatch_verb()`: the default verb, `Unknown command verb`
//! with a suggestion, `Too few`/`Too many arguments.`) and the checks each pull verb
//! makes before anything is called, with upstream importctl's messages; every failure
//! exits 1.

use super::list;
use super::options::{help_text, Settings};
use super::pull::{self, PullRequest};
use crate::bus::import1::{ImageClass, Verify, FLAG_FORCE, FLAG_KEEP_DOWNLOAD};
use crate::util::{getopt, names, oci_ref, validate};

/// A verb, its argument counts including the verb itself (`None`: any), and its code.
struct VerbSpec {
    name: &'static str,
    min_args: usize,
    max_args: Option<usize>,
    run: fn(&Ctx<'_>, &[String]) -> i32,
}

/// What every verb gets.
struct Ctx<'a> {
    settings: &'a Settings,
    /// `program_invocation_short_name`.
    program: &'a str,
}

const VERBS: &[VerbSpec] = &[
    VerbSpec {
        name: "help",
        min_args: 1,
        max_args: Some(1),
        run: |ctx, _| {
            print!("{}", help_text(ctx.program));
            0
        },
    },
    VerbSpec {
        name: "pull-tar",
        min_args: 2,
        max_args: Some(3),
        run: |ctx, args| checked(ctx, url_pull(ctx.settings, args, false)),
    },
    VerbSpec {
        name: "pull-raw",
        min_args: 2,
        max_args: Some(3),
        run: |ctx, args| checked(ctx, url_pull(ctx.settings, args, true)),
    },
    VerbSpec {
        name: "pull-oci",
        min_args: 2,
        max_args: Some(3),
        run: |ctx, args| checked(ctx, oci_pull(ctx.settings, args)),
    },
    VerbSpec {
        name: "pull-dkr",
        min_args: 2,
        max_args: Some(3),
        run: |ctx, args| checked(ctx, dkr_pull(ctx.settings, args)),
    },
    VerbSpec {
        name: "list-transfers",
        min_args: 1,
        max_args: Some(1),
        run: |ctx, _| list::list_transfers(ctx.settings),
    },
    VerbSpec {
        name: "cancel-transfer",
        min_args: 2,
        max_args: None,
        run: |ctx, args| list::cancel_transfer(ctx.settings, &args[1..]),
    },
    VerbSpec {
        name: "list-images",
        min_args: 1,
        max_args: Some(1),
        run: |ctx, _| list::list_images(ctx.settings),
    },
];

/// Run the verb `args[0]` (none: `list-transfers`); returns the exit status.
pub fn dispatch(program: &str, settings: &Settings, args: &[String]) -> i32 {
    let default = ["list-transfers".to_string()];
    let args = if args.is_empty() { &default[..] } else { args };
    let name = args[0].as_str();
    let Some(verb) = VERBS.iter().find(|v| v.name == name) else {
        let names: Vec<&str> = VERBS.iter().map(|v| v.name).collect();
        match closest(&names, name) {
            Some(guess) => {
                log::error!("Unknown command verb '{name}', did you mean '{guess}'?")
            }
            None => log::error!("Unknown command verb '{name}'."),
        }
        return 1;
    };
    if !getopt::verb_arg_count_ok(args.len(), verb.min_args, verb.max_args) {
        return 1;
    }
    (verb.run)(&Ctx { settings, program }, args)
}

/// systemd's `strv_find_closest()`: the shortest name `word` is a prefix of, else the
/// name nearest by edit distance, if at most 5 edits away.
fn closest<'a>(names: &[&'a str], word: &str) -> Option<&'a str> {
    if let Some(name) = names
        .iter()
        .filter(|n| n.starts_with(word))
        .min_by_key(|n| n.len())
    {
        return Some(name);
    }
    names
        .iter()
        .map(|n| (edit_distance(n, word), *n))
        .filter(|(d, _)| *d <= 5)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of two
/// neighbouring characters as one edit each.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Run a checked pull; a failed check was logged already.
fn checked(ctx: &Ctx<'_>, req: Result<PullRequest, ()>) -> i32 {
    match req {
        Ok(req) => pull::run(
            &req,
            ctx.settings.quiet,
            ctx.settings.ask_password,
            ctx.program,
        ),
        Err(()) => 1,
    }
}

/// Pulls need a class (upstream's `settle_image_class()`); the keep-download flag
/// defaults to on for machines only. Returns the class and the flags.
fn settle_class(s: &Settings) -> Result<(ImageClass, u64), ()> {
    let Some(class) = s.class else {
        let choices: Vec<String> = ImageClass::ALL
            .iter()
            .map(|c| format!("{} (downloads to {}/)", c.as_str(), c.root()))
            .collect();
        log::error!(
            "No image class specified, retry with --class= set to one of: {}.",
            choices.join(", ")
        );
        return Err(());
    };
    let mut flags = s.flags;
    if s.flags_given & FLAG_KEEP_DOWNLOAD == 0 && class == ImageClass::Machine {
        flags |= FLAG_KEEP_DOWNLOAD;
    }
    Ok((class, flags))
}

/// `""` and `-` mean "no local image".
fn empty_or_dash(s: String) -> String {
    if s == "-" {
        String::new()
    } else {
        s
    }
}

fn check_image_name(local: &str) -> Result<(), ()> {
    if !local.is_empty() && !validate::image_name_is_valid(local) {
        log::error!("Local name {local} is not a suitable image name.");
        return Err(());
    }
    Ok(())
}

/// pull-tar and pull-raw.
fn url_pull(s: &Settings, args: &[String], raw: bool) -> Result<PullRequest, ()> {
    let (class, flags) = settle_class(s)?;
    let url = &args[1];
    if !validate::http_url_is_valid(url) && !validate::file_url_is_valid(url) {
        log::error!("URL '{url}' is not valid.");
        return Err(());
    }
    let local = match args.get(2) {
        Some(l) => l.clone(),
        None => names::url_last_component(url).map_err(|e| {
            log::error!("Failed to get final component of URL: {e}");
        })?,
    };
    let mut local = empty_or_dash(local);
    if !local.is_empty() {
        local = if raw {
            names::raw_strip_suffixes(&local)
        } else {
            // A name that is all suffix leaves nothing: refused as a name below.
            names::tar_strip_suffixes(&local).unwrap_or_default()
        };
        if local.is_empty() {
            log::error!("Local name  is not a suitable image name.");
            return Err(());
        }
        check_image_name(&local)?;
    }
    Ok(PullRequest::Url {
        raw,
        url: url.clone(),
        local,
        class,
        verify: s.verify,
        flags,
    })
}

fn oci_pull(s: &Settings, args: &[String]) -> Result<PullRequest, ()> {
    let (class, flags) = settle_class(s)?;
    let reference = &args[1];
    let name = reference
        .split_once('@')
        .map_or(reference.as_str(), |(n, _)| n);
    let parts = oci_ref::split_name(name).filter(|_| oci_ref::reference_is_valid(reference));
    let Some(parts) = parts else {
        log::error!("Ref '{reference}' is not valid.");
        return Err(());
    };
    let local = match args.get(2) {
        Some(l) => l.clone(),
        None => parts
            .path
            .rsplit('/')
            .next()
            .unwrap_or(parts.path)
            .to_string(),
    };
    let local = empty_or_dash(local);
    check_image_name(&local)?;
    Ok(PullRequest::Oci {
        reference: reference.clone(),
        local,
        class,
        flags,
    })
}

/// pull-dkr, with v219 machinectl's checks (class machine only: `PullDkr` has none).
fn dkr_pull(s: &Settings, args: &[String]) -> Result<PullRequest, ()> {
    let (class, _) = settle_class(s)?;
    if class != ImageClass::Machine {
        log::error!("pull-dkr only supports --class=machine.");
        return Err(());
    }
    if s.verify != Verify::No {
        log::error!("Imports from DKR do not support image verification, please pass --verify=no.");
        return Err(());
    }
    let Some(index_url) = s.dkr_index_url.clone() else {
        log::error!("Please specify an index URL with --dkr-index-url=");
        return Err(());
    };
    let (remote, tag) = match args[1].split_once(':') {
        Some((r, t)) => (r.to_string(), t.to_string()),
        None => (args[1].clone(), String::new()),
    };
    if !validate::dkr_name_is_valid(&remote) {
        log::error!("DKR name '{remote}' is invalid.");
        return Err(());
    }
    if !tag.is_empty() && !validate::dkr_tag_is_valid(&tag) {
        log::error!("DKR tag '{tag}' is invalid.");
        return Err(());
    }
    let local = match args.get(2) {
        Some(l) => l.clone(),
        None => remote
            .split_once('/')
            .map_or(remote.as_str(), |(_, rest)| rest)
            .to_string(),
    };
    let local = empty_or_dash(local);
    check_image_name(&local)?;
    Ok(PullRequest::Dkr {
        index_url,
        remote,
        tag,
        local,
        verify: Verify::No,
        force: s.flags & FLAG_FORCE != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_prefer_prefixes_then_few_edits() {
        let names = ["aaa", "aaaa", "bbb", "ccc"];
        for (word, want) in [
            ("a", Some("aaa")),
            ("aaaa", Some("aaaa")),
            ("aab", Some("aaa")),
            ("abb", Some("bbb")),
            ("cbbb", Some("bbb")),
            ("sfajosajfosdjaofjdsaf", None),
        ] {
            assert_eq!(closest(&names, word), want, "{word}");
        }
        let verbs: Vec<&str> = VERBS.iter().map(|v| v.name).collect();
        assert_eq!(closest(&verbs, "pull-tra"), Some("pull-tar"));
        assert_eq!(closest(&verbs, "list"), Some("list-images"));
        assert_eq!(edit_distance("ab", "ba"), 1);
    }

    fn settings(class: Option<ImageClass>) -> Settings {
        Settings {
            class,
            verify: Verify::No,
            ..Settings::default()
        }
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn pulls_derive_local_names_and_class_defaults() {
        let machine = settings(Some(ImageClass::Machine));
        let r = url_pull(&machine, &words("pull-tar https://h/d/img.tar.xz"), false).unwrap();
        assert_eq!(
            r,
            PullRequest::Url {
                raw: false,
                url: "https://h/d/img.tar.xz".into(),
                local: "img".into(),
                class: ImageClass::Machine,
                verify: Verify::No,
                flags: FLAG_KEEP_DOWNLOAD,
            }
        );
        let sysext = settings(Some(ImageClass::Sysext));
        match url_pull(&sysext, &words("pull-raw https://h/x.raw.xz -"), true).unwrap() {
            PullRequest::Url { local, flags, .. } => assert_eq!((local.as_str(), flags), ("", 0)),
            other => panic!("{other:?}"),
        }
        match oci_pull(
            &machine,
            &words("pull-oci quay.io/org/app:1@sha256:".to_string().as_str()),
        ) {
            Err(()) => {}
            other => panic!("{other:?}"),
        }
        match oci_pull(&machine, &words("pull-oci quay.io/org/app:1")).unwrap() {
            PullRequest::Oci { local, .. } => assert_eq!(local, "app"),
            other => panic!("{other:?}"),
        }
        match dkr_pull(
            &Settings {
                dkr_index_url: Some("https://index".into()),
                ..machine.clone()
            },
            &words("pull-dkr library/debian:sid"),
        )
        .unwrap()
        {
            PullRequest::Dkr {
                remote, tag, local, ..
            } => assert_eq!(
                (remote.as_str(), tag.as_str(), local.as_str()),
                ("library/debian", "sid", "debian")
            ),
            other => panic!("{other:?}"),
        }
        assert!(url_pull(&settings(None), &words("pull-tar https://h/x.tar"), false).is_err());
        assert!(url_pull(&machine, &words("pull-tar https://h/.tar"), false).is_err());
        assert!(url_pull(&machine, &words("pull-tar ftp://h/x.tar"), false).is_err());
    }
}

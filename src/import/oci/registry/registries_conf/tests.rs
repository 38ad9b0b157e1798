//! registries.conf rules, table by table: prefix matching, rewrites, mirrors, blocked,
//! drop-in merging, short names and validation.

use super::*;

/// A configuration tree in a temporary directory: `files` are (relative path, text).
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new(files: &[(&str, &str)]) -> Tree {
        Tree {
            dir: super::super::error::temp_tree(files),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn load(&self) -> Result<RegistriesConf, ConfigError> {
        RegistriesConf::load(
            &self.path("registries.conf"),
            false,
            &[self.path("d1"), self.path("d2")],
            Some(&self.path("aliases.conf")),
        )
    }
}

fn conf(text: &str) -> RegistriesConf {
    Tree::new(&[("registries.conf", text)]).load().unwrap()
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

/// `(reference, insecure, mirror)` of a source.
type Source = (String, bool, bool);

/// Each source of `r`, as [`Source`].
fn sources(c: &RegistriesConf, r: &str) -> Vec<Source> {
    c.pull_sources(&reference(r))
        .unwrap()
        .into_iter()
        .map(|s| (s.reference.to_string(), s.insecure, s.mirror))
        .collect()
}

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn prefix_matching_rules() {
    // (reference, prefix, match length)
    let table: &[(&str, &str, Option<usize>)] = &[
        ("example.com/foo:1", "example.com", Some(11)),
        ("example.com", "example.com", Some(11)),
        ("example.com/foo", "example.com/foo", Some(15)),
        ("example.com/foobar", "example.com/foo", None),
        ("example.com/foo@sha256:x", "example.com/foo", Some(15)),
        ("example.com:5000/foo", "example.com", Some(11)), // upstream's kept quirk
        ("example.community/x", "example.com", None),
        ("a.example.com/x", "*.example.com", Some(13)),
        ("a.b.example.com:5000/x", "*.example.com", Some(15)),
        ("example.com/x", "*.example.com", None),
        ("a.example.com.evil/x", "*.example.com", None),
        ("evil.io/a.example.com/x", "*.example.com", None),
    ];
    for (r, prefix, expected) in table {
        assert_eq!(prefix_match(r, prefix), *expected, "{r} vs {prefix}");
    }
}

#[test]
fn the_longest_prefix_wins_and_locations_are_rewritten() {
    let c = conf(
        r#"
[[registry]]
prefix = "example.com"
location = "primary.example.com"

[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/bar/"

[[registry]]
prefix = "*.corp.example"
location = "mirror.corp.example/all"

[[registry]]
prefix = "*.plain.example"
insecure = true

[[registry]]
location = "docker.io/library"
[[registry.mirror]]
location = "hub-mirror.local/dockerhub/library"
"#,
    );
    let s = |r: &str, i: bool, m: bool| (r.to_string(), i, m);
    // (input, sources)
    let table: Vec<(&str, Vec<Source>)> = vec![
        (
            "example.com/x:1",
            vec![s("primary.example.com/x:1", false, false)],
        ),
        (
            "example.com/foo/img:2",
            vec![s("internal.example.com/bar/img:2", false, false)],
        ),
        (
            "a.b.corp.example/team/app",
            vec![s("mirror.corp.example/all/team/app:latest", false, false)],
        ),
        (
            "x.plain.example/app",
            vec![s("x.plain.example/app:latest", true, false)],
        ),
        (
            "debian:12",
            vec![
                s("hub-mirror.local/dockerhub/library/debian:12", false, true),
                s("docker.io/library/debian:12", false, false),
            ],
        ),
        // docker.io/library does not cover user repositories.
        (
            "user/app",
            vec![s("docker.io/user/app:latest", false, false)],
        ),
        ("quay.io/a/b", vec![s("quay.io/a/b:latest", false, false)]),
    ];
    for (input, expected) in table {
        assert_eq!(sources(&c, input), expected, "{input}");
    }
}

#[test]
fn mirror_order_pull_from_mirror_and_digest_only() {
    let c = conf(
        r#"
[[registry]]
location = "r.example"
[[registry.mirror]]
location = "all.mirror"
[[registry.mirror]]
location = "digest.mirror"
pull-from-mirror = "digest-only"
insecure = true
[[registry.mirror]]
location = "tag.mirror"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "all2.mirror"
pull-from-mirror = "all"

[[registry]]
location = "d.example"
mirror-by-digest-only = true
[[registry.mirror]]
location = "one.mirror"
[[registry.mirror]]
location = "two.mirror"
"#,
    );
    let hosts = |r: &str| -> Vec<String> {
        c.pull_sources(&reference(r))
            .unwrap()
            .iter()
            .map(|s| s.reference.domain().to_string())
            .collect()
    };
    let digest = format!("@sha256:{HEX}");
    let table: Vec<(String, Vec<&str>)> = vec![
        (
            "r.example/img:1".into(),
            vec!["all.mirror", "tag.mirror", "all2.mirror", "r.example"],
        ),
        (
            format!("r.example/img{digest}"),
            vec!["all.mirror", "digest.mirror", "all2.mirror", "r.example"],
        ),
        // A tag and a digest: a digest pull.
        (
            format!("r.example/img:1{digest}"),
            vec!["all.mirror", "digest.mirror", "all2.mirror", "r.example"],
        ),
        ("d.example/img:1".into(), vec!["d.example"]),
        (
            format!("d.example/img{digest}"),
            vec!["one.mirror", "two.mirror", "d.example"],
        ),
    ];
    for (input, expected) in table {
        assert_eq!(hosts(&input), expected, "{input}");
    }
    let s = c
        .pull_sources(&reference(&format!("r.example/img{digest}")))
        .unwrap();
    assert!(s[1].insecure && s[1].mirror && !s[0].insecure);
    assert!(!s[3].mirror);
}

#[test]
fn blocked_registries_are_refused_with_the_file() {
    let t = Tree::new(&[(
        "registries.conf",
        "[[registry]]\nprefix = \"evil.example\"\nlocation = \"evil.example\"\nblocked = true\n",
    )]);
    let c = t.load().unwrap();
    let err = c.pull_sources(&reference("evil.example/x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Blocked);
    assert_eq!(err.errno(), libc::EACCES);
    let msg = err.to_string();
    assert!(msg.contains("'evil.example'"), "{msg}");
    assert!(
        msg.contains(&t.path("registries.conf").display().to_string()),
        "{msg}"
    );
    assert!(c.pull_sources(&reference("good.example/x")).is_ok());
}

#[test]
fn drop_ins_override_in_lexical_order() {
    let t = Tree::new(&[
        (
            "registries.conf",
            r#"
unqualified-search-registries = ["a.example"]
short-name-mode = "enforcing"
credential-helpers = ["one"]
[[registry]]
location = "r.example"
[[registry.mirror]]
location = "main.mirror"
[[registry]]
location = "keep.example"
insecure = true
[aliases]
"x" = "a.example/x"
"y" = "a.example/y"
"#,
        ),
        // Later in the same directory, and the second directory after the first.
        (
            "d1/20-b.conf",
            "[[registry]]\nlocation = \"r.example\"\n[[registry.mirror]]\nlocation = \"b.mirror\"\n",
        ),
        (
            "d1/10-a.conf",
            "unqualified-search-registries = []\n\
             [[registry]]\nlocation = \"r.example\"\n[[registry.mirror]]\nlocation = \"a.mirror\"\n",
        ),
        ("d1/30-ignored.txt", "this is not TOML ["),
        (
            "d2/00-last.conf",
            "short-name-mode = \"disabled\"\n[aliases]\n\"x\" = \"\"\n\"z\" = \"c.example/z\"\n",
        ),
    ]);
    let c = t.load().unwrap();
    // 20-b.conf replaced the table of registries.conf and of 10-a.conf.
    assert_eq!(
        sources(&c, "r.example/i:1"),
        [
            ("b.mirror/i:1".to_string(), false, true),
            ("r.example/i:1".to_string(), false, false),
        ]
    );
    assert!(sources(&c, "keep.example/i:1")[0].1);
    // The explicit [] of 10-a.conf cleared the search list.
    let err = c
        .resolve_short_name(&ImageName::parse("q").unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unresolved);
    assert!(err.to_string().contains("10-a.conf"), "{err}");
    assert_eq!(c.short_name_mode(), ShortNameMode::Disabled);
    assert_eq!(c.credential_helpers(), Some(&["one".to_string()][..]));
    // "x" deleted, "y" kept, "z" added.
    let alias = |n: &str| {
        c.resolve_short_name(&ImageName::parse(n).unwrap())
            .map(|r| r.candidates[0].to_string())
    };
    assert!(alias("x").is_err());
    assert_eq!(alias("y").unwrap(), "a.example/y:latest");
    assert_eq!(alias("z").unwrap(), "c.example/z:latest");
}

#[test]
fn a_repeated_prefix_keeps_the_first_table_of_a_file() {
    let c = conf(
        "[[registry]]\nlocation = \"r.example\"\n[[registry.mirror]]\nlocation = \"first.mirror\"\n\
         [[registry]]\nlocation = \"r.example\"\n[[registry.mirror]]\nlocation = \"second.mirror\"\n",
    );
    assert_eq!(sources(&c, "r.example/x")[0].0, "first.mirror/x:latest");
}

#[test]
fn missing_files_are_empty_unless_required() {
    let t = Tree::new(&[]);
    let c = t.load().unwrap();
    assert_eq!(
        sources(&c, "a.example/x"),
        [("a.example/x:latest".to_string(), false, false)]
    );
    let err = RegistriesConf::load(&t.path("registries.conf"), true, &[], None).unwrap_err();
    assert!(err.to_string().contains("No such file"), "{err}");
}

#[test]
fn short_names_follow_aliases_then_search_order() {
    let t = Tree::new(&[
        (
            "registries.conf",
            r#"
unqualified-search-registries = ["registry.fedoraproject.org", "docker.io", "localhost:5000"]
[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"library/app" = "quay.io/org/app"
"cached" = "quay.io/from-conf"
"#,
        ),
        (
            "aliases.conf",
            "[aliases]\n\"cached\" = \"quay.io/from-machine-file\"\n",
        ),
    ]);
    let c = t.load().unwrap();
    let resolve = |n: &str| {
        let r = c.resolve_short_name(&ImageName::parse(n).unwrap()).unwrap();
        (
            r.candidates
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>(),
            r.rationale,
        )
    };
    let (c1, why) = resolve("fedora:39");
    assert_eq!(c1, ["registry.fedoraproject.org/fedora:39"]);
    assert!(
        why.starts_with("alias in ") && why.ends_with("registries.conf"),
        "{why}"
    );
    assert_eq!(resolve("library/app").0, ["quay.io/org/app:latest"]);
    let (c3, why) = resolve("cached");
    assert_eq!(c3, ["quay.io/from-machine-file:latest"]);
    assert!(why.ends_with("aliases.conf"), "{why}");
    let digest = format!("@sha256:{HEX}");
    assert_eq!(
        resolve(&format!("fedora{digest}")).0,
        [format!("registry.fedoraproject.org/fedora{digest}")]
    );
    // No alias: every search registry in order (permissive is the default).
    let (c4, why) = resolve("busybox:1");
    assert_eq!(
        c4,
        [
            "registry.fedoraproject.org/busybox:1",
            "docker.io/library/busybox:1",
            "localhost:5000/busybox:1",
        ]
    );
    assert!(
        why.starts_with("unqualified-search-registries of "),
        "{why}"
    );
}

#[test]
fn enforcing_mode_refuses_ambiguity_and_lists_the_candidates() {
    let c = conf(
        "unqualified-search-registries = [\"a.example\", \"b.example\"]\nshort-name-mode = \"enforcing\"\n\
         [aliases]\n\"known\" = \"a.example/known\"\n",
    );
    let err = c
        .resolve_short_name(&ImageName::parse("app:1").unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Ambiguous);
    let msg = err.to_string();
    assert!(
        msg.contains("candidates: a.example/app:1, b.example/app:1."),
        "{msg}"
    );
    assert!(msg.contains("enforcing"), "{msg}");
    // An alias is never ambiguous; one search registry neither.
    assert!(c
        .resolve_short_name(&ImageName::parse("known").unwrap())
        .is_ok());
    let one =
        conf("unqualified-search-registries = [\"a.example\"]\nshort-name-mode = \"enforcing\"\n");
    assert_eq!(
        one.resolve_short_name(&ImageName::parse("app").unwrap())
            .unwrap()
            .candidates
            .len(),
        1
    );
    // Disabled: all candidates, no error.
    let disabled = conf(
        "unqualified-search-registries = [\"a.example\", \"b.example\"]\nshort-name-mode = \"disabled\"\n",
    );
    assert_eq!(
        disabled
            .resolve_short_name(&ImageName::parse("app").unwrap())
            .unwrap()
            .candidates
            .len(),
        2
    );
}

#[test]
fn without_search_registries_a_short_name_is_docker_hub() {
    let c = conf("");
    let r = c
        .resolve_short_name(&ImageName::parse("debian:12").unwrap())
        .unwrap();
    assert_eq!(r.candidates, [reference("docker.io/library/debian:12")]);
    assert!(r.rationale.contains("Docker Hub"));
}

#[test]
fn v1_files_are_converted_and_drop_ins_must_be_v2() {
    let c = conf(
        "[registries.search]\nregistries = [\"a.example\"]\n\
         [registries.insecure]\nregistries = [\"ins.example\"]\n\
         [registries.block]\nregistries = [\"bad.example\"]\n",
    );
    assert!(sources(&c, "ins.example/x")[0].1);
    assert!(c.pull_sources(&reference("bad.example/x")).is_err());
    assert_eq!(
        c.resolve_short_name(&ImageName::parse("x").unwrap())
            .unwrap()
            .candidates,
        [reference("a.example/x")]
    );
    let t = Tree::new(&[(
        "d1/a.conf",
        "[registries.search]\nregistries = [\"a.example\"]\n",
    )]);
    let err = t.load().unwrap_err();
    assert!(
        err.to_string()
            .ends_with("registry must be in v2 format but is in v1"),
        "{err}"
    );
}

#[test]
fn invalid_files_are_reported_with_file_and_reason() {
    // (file text, expected end of the message)
    let table: &[(&str, &str)] = &[
        ("[[registry]]\nlocation = \"https://x.example\"\n", "invalid location 'https://x.example': URI schemes are not supported"),
        ("[[registry]]\ninsecure = true\n", "invalid condition: both location and prefix are unset"),
        ("[[registry]]\nprefix = \"x.example\"\n", "invalid condition: location is unset and prefix is not in the format: *.example.com"),
        ("[[registry]]\nprefix = \"*.x.example/foo\"\n", "Wildcarded prefix should be in the format: *.example.com. Current prefix \"*.x.example/foo\" is incorrectly formatted"),
        ("[[registry]]\nlocation = \"x.example\"\n[[registry.mirror]]\ninsecure = true\n", "invalid condition: mirror location is unset"),
        ("[[registry]]\nlocation = \"x.example\"\npull-from-mirror = \"all\"\n", "pull-from-mirror must not be set for a non-mirror registry \"x.example\""),
        ("[[registry]]\nlocation = \"x.example\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"all\"\n", "cannot set mirror usage mirror-by-digest-only for the registry (\"x.example\") and pull-from-mirror for per-mirror (\"m\") at the same time"),
        ("[[registry]]\nlocation = \"x.example\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"sometimes\"\n", "unsupported pull-from-mirror value \"sometimes\" for mirror \"m\""),
        ("[[registry]]\nprefix = \"a\"\nlocation = \"x.example\"\n[[registry]]\nprefix = \"b\"\nlocation = \"x.example\"\ninsecure = true\n", "registry 'x.example' is defined multiple times with conflicting 'insecure' setting"),
        ("[[registry]]\nprefix = \"a\"\nlocation = \"x.example\"\nblocked = true\n[[registry]]\nprefix = \"b\"\nlocation = \"x.example\"\n", "registry 'x.example' is defined multiple times with conflicting 'blocked' setting"),
        ("short-name-mode = \"prompt\"\n", "invalid short-name mode: \"prompt\""),
        ("unqualified-search-registries = [\"not a host\"]\n", "Invalid unqualified-search-registries entry \"not a host\""),
        ("[aliases]\n\"quay.io/x\" = \"quay.io/x\"\n", "invalid short name \"quay.io/x\": must not contain registry"),
        ("[aliases]\n\"x:1\" = \"quay.io/x\"\n", "invalid short name \"x:1\": must not contain tag"),
        ("[aliases]\n\"x\" = \"x/y\"\n", "invalid alias \"x/y\": must contain registry and repository"),
        ("[aliases]\n\"x\" = \"quay.io/x:1\"\n", "invalid alias \"quay.io/x:1\": must not contain tag"),
        ("short-name-mode = \"enforcing\"\n[registries.search]\nregistries = [\"a\"]\n", "mixing sysregistry v1/v2 is not supported"),
        ("[[registry]]\nlocation = \"x.example\"\ninsecure = \"yes\"\n", "registries.conf:3: registry.insecure: invalid type: string \"yes\", expected a boolean"),
    ];
    for (text, expected) in table {
        let t = Tree::new(&[("registries.conf", text)]);
        let err = t.load().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{text}");
        let msg = err.to_string();
        assert!(
            msg.ends_with(expected),
            "{text:?}\n got: {msg}\nwant: …{expected}"
        );
        assert!(
            msg.starts_with(&t.path("registries.conf").display().to_string()),
            "{msg}"
        );
    }
}

#[test]
fn unknown_keys_are_ignored() {
    let c = conf(
        "future-key = 1\nadditional-layer-store-auth-helper = \"x\"\n[[registry]]\nlocation = \"r.example\"\nnew = true\n",
    );
    assert_eq!(sources(&c, "r.example/x").len(), 1);
}

//! containers-registries.conf(5), version 2, as podman, skopeo and CRI-O read it: which
//! registries serve a name (prefix tables, location rewrites, mirrors, `blocked`,
//! `insecure`) and what a short name means (aliases, `unqualified-search-registries`,
//! `short-name-mode`).
//!
//! Files: the main file, then the drop-ins of each directory in lexical order (`*.conf`
//! regular files, no recursion), then nothing else; the machine-written
//! `short-name-aliases.conf` is consulted before the merged `[aliases]`. Merging, later file
//! wins: `unqualified-search-registries`, `short-name-mode` and `credential-helpers` replace
//! earlier values when present (an explicit `[]` clears); `[[registry]]` tables replace
//! earlier ones with the same `prefix`; `[aliases]` merge per key and `""` deletes one.
//! Within one file a repeated prefix keeps the first table. Drop-ins must be v2; a main
//! file in the v1 format (`[registries.search]`, `.insecure`, `.block`) is converted.
//!
//! Choosing the table: the longest `prefix` that matches the fully qualified reference
//! (`docker.io/library/x:tag`) wins; a plain prefix matches when the reference continues
//! with nothing, `/`, `:` or `@` after it (so `example.com` also matches
//! `example.com:5000/…`, a quirk podman keeps); `*.example.com` matches any subdomain,
//! not `example.com` itself. Pull sources are the mirrors in file order (all of them only
//! for digest references with `mirror-by-digest-only`; otherwise `digest-only` mirrors
//! are left out of tag pulls and `tag-only` ones out of digest pulls), then the primary
//! location, each reference rewritten as `location + reference[prefix..]`.
//!
//! Short names (no registry named): an alias is used alone; else each search registry
//! gives a candidate. Nothing prompts here: `enforcing` with more than one candidate is an
//! error listing them, `permissive` and `disabled` try them all in order. Deliberate
//! difference from podman: when no file sets `unqualified-search-registries` at all, a
//! short name means Docker Hub (as docker and earlier versions of this tool read it); an
//! explicit empty list still refuses short names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{files_in, parse_toml, read_optional, ConfigError, ErrorKind};
use crate::import::oci::reference::{domain_is_valid, ImageName, Reference};

/// `pull-from-mirror`: which pulls a mirror may serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFromMirror {
    All,
    DigestOnly,
    TagOnly,
}

/// `short-name-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShortNameMode {
    Enforcing,
    Permissive,
    Disabled,
}

/// One `[[registry.mirror]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    pub insecure: bool,
    pub pull_from: PullFromMirror,
}

/// One `[[registry]]` table after validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryTable {
    pub prefix: String,
    /// Where the primary is; empty only for a `*.` prefix (then the reference is kept).
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<Mirror>,
    /// The file the table comes from.
    pub file: PathBuf,
}

/// One place a pull may come from, in the order to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullSource {
    /// The reference rewritten for this source (its domain is the host to contact).
    pub reference: Reference,
    /// `insecure`: TLS is not verified and plain HTTP is allowed.
    pub insecure: bool,
    /// A mirror (as opposed to the primary location).
    pub mirror: bool,
    /// The file that configured it (`None`: no table matched).
    pub file: Option<PathBuf>,
}

/// What a short name resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShortNameResolution {
    /// Fully qualified references to try, in order.
    pub candidates: Vec<Reference>,
    /// Why, for the log: "alias in FILE", "unqualified-search-registries of FILE", ….
    pub rationale: String,
}

/// A value and the file that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FromFile<T> {
    value: T,
    file: PathBuf,
}

/// The merged registries.conf family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// Unique prefixes, sorted by prefix (as containers/image keeps them).
    registries: Vec<RegistryTable>,
    search: Option<FromFile<Vec<String>>>,
    mode: Option<FromFile<ShortNameMode>>,
    credential_helpers: Option<Vec<String>>,
    /// `None` values delete an alias set by an earlier file.
    aliases: BTreeMap<String, FromFile<Option<String>>>,
    /// From `short-name-aliases.conf`, consulted first.
    machine_aliases: BTreeMap<String, FromFile<Option<String>>>,
}

// --- the file format ---------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    unqualified_search_registries: Option<Vec<String>>,
    short_name_mode: Option<String>,
    credential_helpers: Option<Vec<String>>,
    additional_layer_store_auth_helper: Option<String>,
    registry: Option<Vec<RawRegistry>>,
    aliases: Option<BTreeMap<String, String>>,
    /// The v1 format: `[registries.search]` etc.
    registries: Option<RawV1>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    prefix: Option<String>,
    location: Option<String>,
    insecure: Option<bool>,
    blocked: Option<bool>,
    mirror_by_digest_only: Option<bool>,
    pull_from_mirror: Option<String>,
    mirror: Option<Vec<RawMirror>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    location: Option<String>,
    insecure: Option<bool>,
    pull_from_mirror: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Deserialize, Default)]
struct RawV1List {
    registries: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RawAliasFile {
    aliases: Option<BTreeMap<String, String>>,
}

impl RawFile {
    fn v1_is_set(&self) -> bool {
        self.registries.as_ref().is_some_and(|v1| {
            [&v1.search, &v1.insecure, &v1.block]
                .iter()
                .any(|l| l.as_ref().is_some_and(|l| l.registries.is_some()))
        })
    }

    fn v2_is_set(&self) -> bool {
        self.unqualified_search_registries.is_some()
            || self.short_name_mode.is_some()
            || self.credential_helpers.is_some()
            || self.additional_layer_store_auth_helper.is_some()
            || self.registry.is_some()
            || self.aliases.is_some()
    }

    /// A v1 file as v2: search → `unqualified-search-registries`, block and insecure →
    /// `[[registry]] location = …` with the flag.
    fn convert_v1(&mut self) {
        let v1 = self.registries.take().unwrap_or_default();
        let list = |l: Option<RawV1List>| l.and_then(|l| l.registries).unwrap_or_default();
        let mut tables: Vec<RawRegistry> = Vec::new();
        let mut flag = |location: String, set: &dyn Fn(&mut RawRegistry)| {
            let location = location.trim_end_matches('/').to_string();
            let i = match tables
                .iter()
                .position(|t| t.location.as_deref() == Some(location.as_str()))
            {
                Some(i) => i,
                None => {
                    tables.push(RawRegistry {
                        location: Some(location),
                        ..RawRegistry::default()
                    });
                    tables.len() - 1
                }
            };
            set(&mut tables[i]);
        };
        for l in list(v1.block) {
            flag(l, &|t| t.blocked = Some(true));
        }
        for l in list(v1.insecure) {
            flag(l, &|t| t.insecure = Some(true));
        }
        self.unqualified_search_registries = v1.search.and_then(|l| l.registries);
        self.registry = Some(tables);
    }
}

/// One file after validation, before merging.
struct FileConf {
    registries: Vec<RegistryTable>,
    search: Option<Vec<String>>,
    mode: Option<ShortNameMode>,
    credential_helpers: Option<Vec<String>>,
    aliases: BTreeMap<String, Option<String>>,
}

/// `location` and `prefix` values: trailing `/` trimmed, no URL scheme.
fn parse_location(file: &Path, value: &str) -> Result<String, ConfigError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        return Err(ConfigError::invalid(
            file,
            format!("invalid location '{value}': URI schemes are not supported"),
        ));
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn parse_pull_from(
    file: &Path,
    value: Option<&str>,
    mirror: &str,
) -> Result<PullFromMirror, ConfigError> {
    match value.unwrap_or("") {
        "" | "all" => Ok(PullFromMirror::All),
        "digest-only" => Ok(PullFromMirror::DigestOnly),
        "tag-only" => Ok(PullFromMirror::TagOnly),
        other => Err(ConfigError::invalid(
            file,
            format!("unsupported pull-from-mirror value \"{other}\" for mirror \"{mirror}\""),
        )),
    }
}

fn parse_mode(file: &Path, value: &str) -> Result<ShortNameMode, ConfigError> {
    match value {
        "enforcing" => Ok(ShortNameMode::Enforcing),
        "permissive" => Ok(ShortNameMode::Permissive),
        "disabled" => Ok(ShortNameMode::Disabled),
        other => Err(ConfigError::invalid(
            file,
            format!("invalid short-name mode: \"{other}\""),
        )),
    }
}

fn parse_table(file: &Path, raw: RawRegistry) -> Result<RegistryTable, ConfigError> {
    let location = parse_location(file, raw.location.as_deref().unwrap_or(""))?;
    let prefix = match raw.prefix.as_deref() {
        None | Some("") if location.is_empty() => {
            return Err(ConfigError::invalid(
                file,
                "invalid condition: both location and prefix are unset",
            ))
        }
        None | Some("") => location.clone(),
        Some(p) => parse_location(file, p)?,
    };
    if location.is_empty() && !prefix.starts_with("*.") {
        return Err(ConfigError::invalid(
            file,
            "invalid condition: location is unset and prefix is not in the format: *.example.com",
        ));
    }
    if prefix.starts_with("*.") && prefix.contains(['/', '@', ':']) {
        return Err(ConfigError::invalid(
            file,
            format!(
                "Wildcarded prefix should be in the format: *.example.com. Current prefix \"{prefix}\" is incorrectly formatted"
            ),
        ));
    }
    if raw.pull_from_mirror.is_some() {
        return Err(ConfigError::invalid(
            file,
            format!("pull-from-mirror must not be set for a non-mirror registry \"{prefix}\""),
        ));
    }
    let mirror_by_digest_only = raw.mirror_by_digest_only.unwrap_or(false);
    let mut mirrors = Vec::new();
    for m in raw.mirror.unwrap_or_default() {
        let location = parse_location(file, m.location.as_deref().unwrap_or(""))?;
        if location.is_empty() {
            return Err(ConfigError::invalid(
                file,
                "invalid condition: mirror location is unset",
            ));
        }
        if mirror_by_digest_only && m.pull_from_mirror.is_some() {
            return Err(ConfigError::invalid(
                file,
                format!(
                    "cannot set mirror usage mirror-by-digest-only for the registry (\"{prefix}\") and pull-from-mirror for per-mirror (\"{location}\") at the same time"
                ),
            ));
        }
        let pull_from = parse_pull_from(file, m.pull_from_mirror.as_deref(), &location)?;
        mirrors.push(Mirror {
            location,
            insecure: m.insecure.unwrap_or(false),
            pull_from,
        });
    }
    Ok(RegistryTable {
        prefix,
        location,
        insecure: raw.insecure.unwrap_or(false),
        blocked: raw.blocked.unwrap_or(false),
        mirror_by_digest_only,
        mirrors,
        file: file.to_path_buf(),
    })
}

/// The `[aliases]` of one file, validated: keys are short names without tag or digest,
/// values qualified names without tag or digest, or `""` (delete).
fn parse_aliases(
    file: &Path,
    raw: BTreeMap<String, String>,
) -> Result<BTreeMap<String, Option<String>>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        let bad =
            |why: &str| ConfigError::invalid(file, format!("invalid short name \"{name}\": {why}"));
        let key = ImageName::parse(&name).map_err(|_| bad("not a valid name"))?;
        if !key.is_short() {
            return Err(bad("must not contain registry"));
        }
        if key.tag.is_some() {
            return Err(bad("must not contain tag"));
        }
        if key.digest.is_some() {
            return Err(bad("must not contain digest"));
        }
        if value.is_empty() {
            out.insert(name, None);
            continue;
        }
        let bad =
            |why: &str| ConfigError::invalid(file, format!("invalid alias \"{value}\": {why}"));
        let target = ImageName::parse(&value).map_err(|_| bad("not a valid reference"))?;
        if target.is_short() {
            return Err(bad("must contain registry and repository"));
        }
        if target.tag.is_some() {
            return Err(bad("must not contain tag"));
        }
        if target.digest.is_some() {
            return Err(bad("must not contain digest"));
        }
        out.insert(name, Some(value));
    }
    Ok(out)
}

/// Parse and validate one file (`force_v2` for drop-ins).
fn parse_file(file: &Path, text: &str, force_v2: bool) -> Result<FileConf, ConfigError> {
    let mut raw: RawFile = parse_toml(file, text)?;
    if raw.v1_is_set() {
        if force_v2 {
            return Err(ConfigError::invalid(
                file,
                "registry must be in v2 format but is in v1",
            ));
        }
        if raw.v2_is_set() {
            return Err(ConfigError::invalid(
                file,
                "mixing sysregistry v1/v2 is not supported",
            ));
        }
        raw.convert_v1();
    }
    let mut registries: Vec<RegistryTable> = Vec::new();
    for table in raw.registry.unwrap_or_default() {
        let table = parse_table(file, table)?;
        // Tables for one registry must agree on its security settings.
        let key = |t: &RegistryTable| {
            if t.location.is_empty() {
                t.prefix.clone()
            } else {
                t.location.clone()
            }
        };
        for other in registries.iter().filter(|o| key(o) == key(&table)) {
            for (what, differs) in [
                ("insecure", other.insecure != table.insecure),
                ("blocked", other.blocked != table.blocked),
            ] {
                if differs {
                    return Err(ConfigError::invalid(
                        file,
                        format!(
                            "registry '{}' is defined multiple times with conflicting '{what}' setting",
                            table.location
                        ),
                    ));
                }
            }
        }
        // The first table with a prefix wins within a file.
        if !registries.iter().any(|o| o.prefix == table.prefix) {
            registries.push(table);
        }
    }
    let search = match raw.unqualified_search_registries {
        None => None,
        Some(list) => {
            let mut out = Vec::new();
            for entry in list {
                let entry = parse_location(file, &entry)?;
                if !domain_is_valid(&entry) {
                    return Err(ConfigError::invalid(
                        file,
                        format!("Invalid unqualified-search-registries entry \"{entry}\""),
                    ));
                }
                out.push(entry);
            }
            Some(out)
        }
    };
    let mode = match raw.short_name_mode.as_deref() {
        None | Some("") => None,
        Some(m) => Some(parse_mode(file, m)?),
    };
    let aliases = parse_aliases(file, raw.aliases.unwrap_or_default())?;
    Ok(FileConf {
        registries,
        search,
        mode,
        credential_helpers: raw.credential_helpers,
        aliases,
    })
}

/// `Some(n)`: `reference` matches `prefix`, and `reference[n..]` is what follows the match.
fn prefix_match(reference: &str, prefix: &str) -> Option<usize> {
    let boundary = |rest: &str| rest.is_empty() || rest.starts_with(['/', ':', '@']);
    if let Some(domain) = prefix.strip_prefix('*') {
        // `.example.com` before the first '/', followed by a boundary.
        let at = reference.find(domain)?;
        let end = at + domain.len();
        return (!reference[..at].contains('/') && boundary(&reference[end..])).then_some(end);
    }
    let rest = reference.strip_prefix(prefix)?;
    boundary(rest).then_some(prefix.len())
}

impl RegistryTable {
    /// `text` (a reference this table matched, `len` bytes of it matching the prefix) as
    /// this table rewrites it for a source at `location`.
    fn rewrite(&self, text: &str, len: usize, location: &str) -> Result<Reference, ConfigError> {
        let rewritten = match location {
            "" => text.to_string(),
            _ => format!("{location}{}", &text[len..]),
        };
        ImageName::parse(&rewritten)
            .ok()
            .filter(|n| !n.is_short())
            .map(ImageName::into_reference)
            .ok_or_else(|| {
                ConfigError::invalid(
                    &self.file,
                    format!(
                        "rewriting '{text}' for prefix '{}' gives the invalid reference '{rewritten}'",
                        self.prefix
                    ),
                )
            })
    }
}

impl RegistriesConf {
    /// Read the main file (`required`: it must exist), the drop-ins of `dirs`, and the
    /// machine-written alias file.
    pub fn load(
        main: &Path,
        required: bool,
        dirs: &[PathBuf],
        machine_aliases: Option<&Path>,
    ) -> Result<RegistriesConf, ConfigError> {
        let mut conf = RegistriesConf::default();
        match read_optional(main)? {
            Some(text) => conf.merge(main, parse_file(main, &text, false)?),
            None if required => {
                return Err(ConfigError::invalid(
                    main,
                    "loading registries configuration: No such file or directory",
                ))
            }
            None => {}
        }
        for dir in dirs {
            for file in files_in(dir, ".conf")? {
                // A drop-in removed since the listing is no error.
                if let Some(text) = read_optional(&file)? {
                    let parsed = parse_file(&file, &text, true)?;
                    conf.merge(&file, parsed);
                }
            }
        }
        if let Some(file) = machine_aliases {
            if let Some(text) = read_optional(file)? {
                let raw: RawAliasFile = parse_toml(file, &text)?;
                for (name, value) in parse_aliases(file, raw.aliases.unwrap_or_default())? {
                    let value = FromFile {
                        value,
                        file: file.to_path_buf(),
                    };
                    conf.machine_aliases.insert(name, value);
                }
            }
        }
        Ok(conf)
    }

    /// Merge one later file into this configuration.
    fn merge(&mut self, file: &Path, later: FileConf) {
        for table in later.registries {
            match self
                .registries
                .iter_mut()
                .find(|t| t.prefix == table.prefix)
            {
                Some(existing) => *existing = table,
                None => self.registries.push(table),
            }
        }
        self.registries.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        let from = |value| FromFile {
            value,
            file: file.to_path_buf(),
        };
        if let Some(search) = later.search {
            self.search = Some(from(search));
        }
        if let Some(mode) = later.mode {
            self.mode = Some(FromFile {
                value: mode,
                file: file.to_path_buf(),
            });
        }
        if later.credential_helpers.is_some() {
            self.credential_helpers = later.credential_helpers;
        }
        for (name, value) in later.aliases {
            self.aliases.insert(
                name,
                FromFile {
                    value,
                    file: file.to_path_buf(),
                },
            );
        }
    }

    /// The table with the longest prefix matching `reference` (`host/path[:tag][@digest]`),
    /// and how many bytes of `reference` the prefix matched.
    pub fn find(&self, reference: &str) -> Option<(&RegistryTable, usize)> {
        let mut best: Option<(&RegistryTable, usize)> = None;
        for table in &self.registries {
            if let Some(len) = prefix_match(reference, &table.prefix) {
                if best.is_none_or(|(b, _)| table.prefix.len() > b.prefix.len()) {
                    best = Some((table, len));
                }
            }
        }
        best
    }

    /// Where to pull `reference` from, in order: mirrors (as allowed for a tag or a digest
    /// pull), then the primary. A blocked registry is an error.
    pub fn pull_sources(&self, reference: &Reference) -> Result<Vec<PullSource>, ConfigError> {
        let text = reference.to_string();
        let Some((table, len)) = self.find(&text) else {
            return Ok(vec![PullSource {
                reference: reference.clone(),
                insecure: false,
                mirror: false,
                file: None,
            }]);
        };
        if table.blocked {
            return Err(ConfigError::new(
                ErrorKind::Blocked,
                format!(
                    "Registry '{}' is blocked in {}, refusing to pull '{reference}'.",
                    table.prefix,
                    table.file.display()
                ),
            ));
        }
        let by_digest = reference.digest().is_some();
        let mirrors = table.mirrors.iter().filter(|m| {
            if table.mirror_by_digest_only {
                return by_digest;
            }
            match m.pull_from {
                PullFromMirror::All => true,
                PullFromMirror::DigestOnly => by_digest,
                PullFromMirror::TagOnly => !by_digest,
            }
        });
        let mut sources = Vec::new();
        for m in mirrors {
            sources.push(PullSource {
                reference: table.rewrite(&text, len, &m.location)?,
                insecure: m.insecure,
                mirror: true,
                file: Some(table.file.clone()),
            });
        }
        sources.push(PullSource {
            reference: table.rewrite(&text, len, &table.location)?,
            insecure: table.insecure,
            mirror: false,
            file: Some(table.file.clone()),
        });
        Ok(sources)
    }

    /// The effective `short-name-mode` (default `permissive`).
    pub fn short_name_mode(&self) -> ShortNameMode {
        self.mode
            .as_ref()
            .map_or(ShortNameMode::Permissive, |m| m.value)
    }

    /// `credential-helpers`, if any file set it (part 2: the credential sources' order).
    pub fn credential_helpers(&self) -> Option<&[String]> {
        self.credential_helpers.as_deref()
    }

    /// The alias for `path` (a short name as written, without tag or digest): the machine
    /// file first, then the merged `[aliases]`. `Some(None)`: explicitly deleted.
    fn alias(&self, path: &str) -> Option<&FromFile<Option<String>>> {
        self.machine_aliases
            .get(path)
            .or_else(|| self.aliases.get(path))
    }

    /// What the short name `name` (no registry) means.
    pub fn resolve_short_name(&self, name: &ImageName) -> Result<ShortNameResolution, ConfigError> {
        debug_assert!(name.is_short());
        let with_parts = |qualified: &str| {
            let mut text = qualified.to_string();
            if let Some(t) = &name.tag {
                text.push_str(&format!(":{t}"));
            }
            if let Some(d) = &name.digest {
                text.push_str(&format!("@{d}"));
            }
            ImageName::parse(&text).map(ImageName::into_reference)
        };
        if let Some(FromFile {
            value: Some(target),
            file,
        }) = self.alias(&name.path)
        {
            // Validated on load; with a valid tag or digest appended it stays valid.
            let reference = with_parts(target)
                .map_err(|_| ConfigError::invalid(file, format!("invalid alias \"{target}\"")))?;
            return Ok(ShortNameResolution {
                candidates: vec![reference],
                rationale: format!("alias in {}", file.display()),
            });
        }
        let Some(search) = &self.search else {
            return Ok(ShortNameResolution {
                candidates: vec![name.clone().into_reference()],
                rationale: "Docker Hub, no unqualified-search-registries are configured".into(),
            });
        };
        if search.value.is_empty() {
            return Err(ConfigError::new(
                ErrorKind::Unresolved,
                format!(
                    "Short name '{name}' did not resolve to an alias and no unqualified-search registries are defined in {}.",
                    search.file.display()
                ),
            ));
        }
        let mut candidates = Vec::new();
        for registry in &search.value {
            let qualified = format!("{registry}/{}", name.path);
            let reference = with_parts(&qualified).map_err(|_| {
                ConfigError::invalid(
                    &search.file,
                    format!("unqualified-search registry '{registry}' makes the invalid reference '{qualified}'"),
                )
            })?;
            candidates.push(reference);
        }
        let rationale = format!("unqualified-search-registries of {}", search.file.display());
        if candidates.len() > 1 && self.short_name_mode() == ShortNameMode::Enforcing {
            let list: Vec<String> = candidates.iter().map(|c| c.to_string()).collect();
            let mode_file = self.mode.as_ref().map(|m| m.file.display().to_string());
            return Err(ConfigError::new(
                ErrorKind::Ambiguous,
                format!(
                    "Short name '{name}' is ambiguous and short-name-mode is enforcing (in {}), which needs a prompt we never show; candidates: {}. Use a fully qualified name or add an alias.",
                    mode_file.unwrap_or_default(),
                    list.join(", ")
                ),
            ));
        }
        Ok(ShortNameResolution {
            candidates,
            rationale,
        })
    }
}

#[cfg(test)]
mod tests;

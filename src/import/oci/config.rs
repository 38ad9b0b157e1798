//! The image configuration (OCI `config.md`, compatible with Docker's image JSON): the
//! layers' DiffIDs, and the execution settings turned into a systemd-nspawn settings file
//! as systemd v260's pull-oci does (spec §7.1).

use serde::Deserialize;

use super::digest::Digest;
use super::manifest::ImageManifest;
use super::platform::Platform;
use crate::log_error_errno;
use crate::util::error::{Error, Result as ErrnoResult};

/// What we use of an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
    /// `rootfs.diff_ids`, base layer first.
    pub diff_ids: Vec<Digest>,
    /// `config`, when present and not empty.
    pub exec: Option<ExecConfig>,
}

/// The `config` object's execution settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ExecConfig {
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
    config: Option<serde_json::Value>,
    rootfs: Option<RawRootfs>,
}

/// Parse a config blob. `Err` is the reason, for a message naming the config.
pub fn parse(bytes: &[u8]) -> Result<ImageConfig, String> {
    let raw: RawConfig =
        serde_json::from_slice(bytes).map_err(|e| format!("not a valid image config: {e}"))?;
    let rootfs = raw.rootfs.ok_or_else(|| "it has no rootfs".to_string())?;
    if rootfs.kind != "layers" {
        return Err(format!("unsupported rootfs type '{}'", rootfs.kind));
    }
    let diff_ids = rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|_| format!("invalid DiffID '{d}'")))
        .collect::<Result<Vec<_>, _>>()?;
    let exec = match raw.config {
        Some(v) if v.as_object().is_some_and(|o| !o.is_empty()) => Some(
            serde_json::from_value::<ExecConfig>(v)
                .map_err(|e| format!("invalid execution config: {e}"))?,
        ),
        _ => None,
    };
    Ok(ImageConfig {
        os: raw.os,
        architecture: raw.architecture,
        variant: raw.variant,
        diff_ids,
        exec,
    })
}

/// The config `bytes` of `manifest` (already verified against its descriptor), parsed and
/// checked to list as many DiffIDs as the manifest has layers; a config for another
/// platform than `platform` is warned about unless an index chose the image for it.
/// Errors are logged; `image` names the image in the warning.
pub fn checked(
    bytes: &[u8],
    manifest: &ImageManifest,
    platform: &Platform,
    from_index: bool,
    image: &dyn std::fmt::Display,
) -> ErrnoResult<ImageConfig> {
    let want = &manifest.config;
    let config = parse(bytes).map_err(|why| {
        log_error_errno!(
            Error::new(libc::EBADMSG),
            "Refusing image config {}: {why}.",
            want.digest
        )
    })?;
    if config.diff_ids.len() != manifest.layers.len() {
        return Err(log_error_errno!(
            Error::new(libc::EBADMSG),
            "Image config {} lists {} layer DiffIDs, but the manifest has {} layers, refusing.",
            want.digest,
            config.diff_ids.len(),
            manifest.layers.len()
        ));
    }
    let matches = platform.matches(
        config.os.as_deref(),
        config.architecture.as_deref(),
        config.variant.as_deref(),
    );
    if !from_index && !matches {
        log::warn!(
            "Image '{}' is for {}/{}, not {}.",
            image,
            config.os.as_deref().unwrap_or("?"),
            config.architecture.as_deref().unwrap_or("?"),
            platform
        );
    }
    Ok(config)
}

/// Quote one word for a settings-file list (`Environment=`, `Parameters=`), the way
/// systemd splits them: bare if it only has harmless characters, else in single quotes,
/// with `'` written as `"'"`. `None` for words a settings file cannot carry (control
/// characters, newlines above all).
pub fn quote_word(word: &str) -> Option<String> {
    if word.chars().any(|c| c.is_control()) {
        return None;
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return Some(word.to_string());
    }
    let mut out = String::from("'");
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\"'\"'");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Some(out)
}

/// A StopSignal as systemd names signals (`SIGTERM`): accepts `SIGTERM`, `TERM`, `15` and
/// `SIGRTMIN+N`. `None` if it is none of these.
fn signal_name(s: &str) -> Option<String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .ok()
            .map(|sig| sig.as_str().to_string());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Some(n) = name
        .strip_prefix("SIGRTMIN+")
        .or_else(|| name.strip_prefix("SIGRTMAX-"))
    {
        return n.parse::<u8>().ok().map(|_| name.clone());
    }
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|sig| sig.as_str().to_string())
}

/// The `.nspawn` settings file for `exec` (spec §7.1): `[Exec]` with `Boot=no`,
/// `KillSignal=` (StopSignal, default SIGTERM), `User=` unless root, `WorkingDirectory=`
/// unless `/`, one `Environment=` per variable and `Parameters=` from Entrypoint + Cmd.
/// Entries a settings file cannot express are left out with a warning.
pub fn nspawn_settings(exec: &ExecConfig) -> String {
    let mut out = String::from("[Exec]\nBoot=no\n");
    let kill = match exec.stop_signal.as_deref().filter(|s| !s.is_empty()) {
        None => "SIGTERM".to_string(),
        Some(s) => signal_name(s).unwrap_or_else(|| {
            log::warn!("Ignoring unknown StopSignal '{s}', using SIGTERM.");
            "SIGTERM".to_string()
        }),
    };
    out.push_str(&format!("KillSignal={kill}\n"));
    if let Some(user) = exec.user.as_deref() {
        // "user[:group]": nspawn has no group setting.
        let user = user.split(':').next().unwrap_or("");
        if !user.is_empty() && user != "root" && user != "0" {
            match quote_word(user) {
                Some(q) => out.push_str(&format!("User={q}\n")),
                None => log::warn!("Ignoring unrepresentable User in the image config."),
            }
        }
    }
    if let Some(dir) = exec.working_dir.as_deref() {
        if !dir.is_empty() && dir != "/" {
            match quote_word(dir) {
                Some(q) => out.push_str(&format!("WorkingDirectory={q}\n")),
                None => log::warn!("Ignoring unrepresentable WorkingDir in the image config."),
            }
        }
    }
    for var in exec.env.iter().flatten() {
        let valid_name = var.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        match quote_word(var).filter(|_| valid_name) {
            Some(q) => out.push_str(&format!("Environment={q}\n")),
            None => log::warn!(
                "Ignoring environment entry that cannot be expressed in a settings file."
            ),
        }
    }
    let words: Vec<&String> = exec
        .entrypoint
        .iter()
        .flatten()
        .chain(exec.cmd.iter().flatten())
        .collect();
    if !words.is_empty() {
        let quoted: Option<Vec<String>> = words.iter().map(|w| quote_word(w)).collect();
        match quoted {
            Some(q) => out.push_str(&format!("Parameters={}\n", q.join(" "))),
            None => {
                log::warn!("Ignoring Entrypoint/Cmd that cannot be expressed in a settings file.")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::of(&[n]).to_string()
    }

    #[test]
    fn parses_diff_ids_and_exec_settings() {
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux",
                "config":{{"User":"app","Env":["PATH=/usr/bin"],"Cmd":["sh"],"Entrypoint":null,"WorkingDir":"/srv"}},
                "rootfs":{{"type":"layers","diff_ids":["{}","{}"]}},
                "history":[{{"created_by":"x"}}]}}"#,
            d(1),
            d(2)
        );
        let c = parse(json.as_bytes()).unwrap();
        assert_eq!(c.os.as_deref(), Some("linux"));
        assert_eq!(c.architecture.as_deref(), Some("amd64"));
        assert_eq!(c.diff_ids.len(), 2);
        assert_eq!(c.diff_ids[1].to_string(), d(2));
        let exec = c.exec.unwrap();
        assert_eq!(exec.user.as_deref(), Some("app"));
        assert_eq!(exec.entrypoint, None);
        assert_eq!(exec.cmd, Some(vec!["sh".to_string()]));

        let c = parse(br#"{"config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
        assert_eq!(c.exec, None, "an empty config is no configuration");
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(parse(b"[]")
            .unwrap_err()
            .starts_with("not a valid image config"));
        assert_eq!(parse(b"{}").unwrap_err(), "it has no rootfs");
        assert_eq!(
            parse(br#"{"rootfs":{"type":"other","diff_ids":[]}}"#).unwrap_err(),
            "unsupported rootfs type 'other'"
        );
        assert_eq!(
            parse(br#"{"rootfs":{"type":"layers","diff_ids":["sha256:zz"]}}"#).unwrap_err(),
            "invalid DiffID 'sha256:zz'"
        );
    }

    #[test]
    fn words_are_quoted_for_settings_files() {
        assert_eq!(quote_word("/bin/sh").unwrap(), "/bin/sh");
        assert_eq!(quote_word("PATH=/a:/b").unwrap(), "PATH=/a:/b");
        assert_eq!(quote_word("").unwrap(), "''");
        assert_eq!(quote_word("echo hi").unwrap(), "'echo hi'");
        assert_eq!(quote_word("it's").unwrap(), "'it'\"'\"'s'");
        assert_eq!(quote_word(r#"a\b"c$d"#).unwrap(), r#"'a\b"c$d'"#);
        assert_eq!(quote_word("two\nlines"), None);
    }

    #[test]
    fn nspawn_file_as_systemd_writes_it() {
        let exec = ExecConfig {
            user: Some("app:staff".into()),
            env: Some(vec![
                "PATH=/usr/local/bin:/usr/bin".into(),
                "GREETING=hello world".into(),
                "BROKEN".into(),
            ]),
            entrypoint: Some(vec!["/docker-entrypoint.sh".into()]),
            cmd: Some(vec!["nginx".into(), "-g".into(), "daemon off;".into()]),
            working_dir: Some("/srv/app".into()),
            stop_signal: Some("SIGQUIT".into()),
        };
        assert_eq!(
            nspawn_settings(&exec),
            "[Exec]\n\
             Boot=no\n\
             KillSignal=SIGQUIT\n\
             User=app\n\
             WorkingDirectory=/srv/app\n\
             Environment=PATH=/usr/local/bin:/usr/bin\n\
             Environment='GREETING=hello world'\n\
             Parameters=/docker-entrypoint.sh nginx -g 'daemon off;'\n"
        );
        let root = ExecConfig {
            user: Some("0".into()),
            working_dir: Some("/".into()),
            stop_signal: Some("9".into()),
            ..Default::default()
        };
        assert_eq!(
            nspawn_settings(&root),
            "[Exec]\nBoot=no\nKillSignal=SIGKILL\n"
        );
        assert_eq!(
            nspawn_settings(&ExecConfig::default()),
            "[Exec]\nBoot=no\nKillSignal=SIGTERM\n"
        );
        for (given, expected) in [
            ("TERM", "SIGTERM"),
            ("sigint", "SIGINT"),
            ("SIGRTMIN+3", "SIGRTMIN+3"),
            ("BOGUS", "SIGTERM"),
        ] {
            let e = ExecConfig {
                stop_signal: Some(given.into()),
                ..Default::default()
            };
            assert!(
                nspawn_settings(&e).contains(&format!("KillSignal={expected}\n")),
                "{given}"
            );
        }
    }
}

//! Platforms (`os/architecture[/variant]`) with Go's names, as image indexes use them, and
//! the choice of one manifest from an index.
//!
//! Matching follows containerd's normalization: `x86_64` is `amd64`, `aarch64` is `arm64`,
//! and an arm64 entry without a variant is `v8`. A wanted platform without a variant takes
//! the first entry of its OS and architecture, whatever its variant (the image-spec says the
//! first match should be used).

use std::fmt;

/// A platform as an index entry or `--platform=` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// linux and this machine's architecture (and, for arm, variant) in Go's names.
    pub fn native() -> Platform {
        let little = cfg!(target_endian = "little");
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" if cfg!(target_feature = "v7") => ("arm", Some("v7")),
            "arm" => ("arm", Some("v6")),
            "powerpc64" if little => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "mips64" if little => ("mips64le", None),
            "mips" if little => ("mipsle", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parse `OS/ARCH[/VARIANT]` (what `--platform=` takes), normalizing common aliases.
    pub fn parse(s: &str) -> Option<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let word_ok = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| word_ok(p)) {
            return None;
        }
        Some(Platform::normalized(
            parts[0],
            parts[1],
            parts.get(2).copied(),
        ))
    }

    /// A platform with the names normalized (lowercase, Go's architecture names).
    pub fn normalized(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        let os = os.to_ascii_lowercase();
        let arch = architecture.to_ascii_lowercase();
        let mut variant = variant
            .filter(|v| !v.is_empty())
            .map(str::to_ascii_lowercase);
        let architecture = match arch.as_str() {
            "x86_64" | "x86-64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            "i386" | "i486" | "i586" | "i686" => "386".to_string(),
            "armhf" => {
                variant.get_or_insert_with(|| "v7".to_string());
                "arm".to_string()
            }
            "armel" => {
                variant.get_or_insert_with(|| "v6".to_string());
                "arm".to_string()
            }
            _ => arch,
        };
        if architecture == "arm64" && variant.is_none() {
            variant = Some("v8".to_string());
        }
        Platform {
            os,
            architecture,
            variant,
        }
    }

    /// Whether an index entry for (`os`, `architecture`, `variant`) suits this platform.
    /// Absent fields in the entry match anything.
    pub fn matches(
        &self,
        os: Option<&str>,
        architecture: Option<&str>,
        variant: Option<&str>,
    ) -> bool {
        let entry = Platform::normalized(
            os.unwrap_or(&self.os),
            architecture.unwrap_or(&self.architecture),
            variant,
        );
        if entry.os != self.os || entry.architecture != self.architecture {
            return false;
        }
        match (&self.variant, &entry.variant) {
            (Some(want), Some(have)) => want == have,
            // We insist on a variant the entry does not name (arm64's implied v8 was
            // filled in by `normalized`).
            (Some(_), None) => false,
            (None, _) => true,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_uses_go_names() {
        let p = Platform::native();
        assert_eq!(p.os, "linux");
        let expected = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        if matches!(std::env::consts::ARCH, "x86_64" | "aarch64") {
            assert_eq!(p.architecture, expected);
        }
    }

    #[test]
    fn parse_normalizes_aliases() {
        let p = |s| Platform::parse(s);
        assert_eq!(p("linux/amd64").unwrap().to_string(), "linux/amd64");
        assert_eq!(p("linux/x86_64").unwrap().to_string(), "linux/amd64");
        assert_eq!(p("Linux/AArch64").unwrap().to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/arm/v7").unwrap().to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armhf").unwrap().to_string(), "linux/arm/v7");
        assert_eq!(p("linux/i686").unwrap().to_string(), "linux/386");
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v1/x",
            "linux/am d64",
            "a//b",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn matching_rules() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        assert!(amd64.matches(Some("linux"), Some("amd64"), None));
        assert!(amd64.matches(Some("linux"), Some("amd64"), Some("v3")));
        assert!(amd64.matches(None, None, None));
        assert!(!amd64.matches(Some("linux"), Some("arm64"), None));
        assert!(!amd64.matches(Some("windows"), Some("amd64"), None));
        assert!(!amd64.matches(Some("unknown"), Some("unknown"), None));

        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert!(arm64.matches(Some("linux"), Some("arm64"), None));
        assert!(arm64.matches(Some("linux"), Some("arm64"), Some("v8")));
        assert!(!arm64.matches(Some("linux"), Some("arm64"), Some("v9")));

        let armv7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(armv7.matches(Some("linux"), Some("arm"), Some("v7")));
        assert!(!armv7.matches(Some("linux"), Some("arm"), Some("v6")));
        assert!(!armv7.matches(Some("linux"), Some("arm"), None));
    }
}

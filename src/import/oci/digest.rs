//! Content digests (`sha256:<64 lowercase hex>`) and ChainIDs.
//!
//! Only sha256 is accepted: it is what every registry and image uses, and a digest with
//! another algorithm is refused by name rather than mistaken for a bad string. A digest is
//! only ever built from validated text or from a hash we computed, so its hex part is safe
//! to use in URLs and file names (CVE-2024-3727 came from digests used unvalidated).

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A validated sha256 digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Digest {
    /// 64 lowercase hex digits.
    hex: String,
}

/// Why a string is not a digest we accept.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DigestError {
    /// Not of the form `algorithm:hex` at all, or a malformed sha256 value.
    Invalid,
    /// Well-formed, but an algorithm other than sha256 (named here).
    UnsupportedAlgorithm(String),
}

impl Digest {
    /// Parse `sha256:<64 lowercase hex>`. Other well-formed algorithms (the OCI grammar
    /// `[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+`) give `UnsupportedAlgorithm`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (algorithm, encoded) = s.split_once(':').ok_or(DigestError::Invalid)?;
        if algorithm == "sha256" {
            return Digest::from_hex(encoded).ok_or(DigestError::Invalid);
        }
        let algorithm_ok = !algorithm.is_empty()
            && algorithm.split(['+', '.', '_', '-']).all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        let encoded_ok = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
        if algorithm_ok && encoded_ok {
            Err(DigestError::UnsupportedAlgorithm(algorithm.to_string()))
        } else {
            Err(DigestError::Invalid)
        }
    }

    /// A digest from 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Digest {
            hex: hex.to_string(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher computed.
    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The ChainID of a layer stack: `ChainID(L0) = DiffID(L0)`, and
    /// `ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln))` (image-spec
    /// config.md). Returns one ChainID per layer.
    pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
        let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
        for diff_id in diff_ids {
            let next = match chain.last() {
                None => diff_id.clone(),
                Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
            };
            chain.push(next);
        }
        chain
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_sha256_and_names_other_algorithms() {
        let d = Digest::parse(&format!("sha256:{EMPTY}")).unwrap();
        assert_eq!(d.hex(), EMPTY);
        assert_eq!(d.to_string(), format!("sha256:{EMPTY}"));
        assert_eq!(d, Digest::of(b""));
        for bad in [
            "",
            "sha256",
            "sha256:",
            &format!("sha256:{}", &EMPTY[..63]),
            &format!("sha256:{EMPTY}0"),
            &format!("sha256:{}", EMPTY.to_uppercase()),
            &format!("sha256:../{}", &EMPTY[3..]),
            &format!("SHA256:{EMPTY}"),
            "sha512:..",
            ":abc",
        ] {
            assert_eq!(Digest::parse(bad), Err(DigestError::Invalid), "{bad:?}");
        }
        assert_eq!(
            Digest::parse(&format!("sha512:{EMPTY}{EMPTY}")),
            Err(DigestError::UnsupportedAlgorithm("sha512".into()))
        );
        assert_eq!(
            Digest::parse("blake3:abcd"),
            Err(DigestError::UnsupportedAlgorithm("blake3".into()))
        );
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = Digest::of(b"layer a");
        let b = Digest::of(b"layer b");
        let c = Digest::of(b"layer c");
        let chain = Digest::chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(chain[0], a);
        let ab = Digest::of(format!("sha256:{} sha256:{}", a.hex(), b.hex()).as_bytes());
        assert_eq!(chain[1], ab);
        let abc = Digest::of(format!("sha256:{} sha256:{}", ab.hex(), c.hex()).as_bytes());
        assert_eq!(chain[2], abc);
        assert!(Digest::chain_ids(&[]).is_empty());
    }
}

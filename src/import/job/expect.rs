//! What a download must turn out to be: its size and the SHA-256 of its bytes as served
//! (pull-job.c's `expected_content_length` and `expected_checksum`), checked by the job
//! itself once the body is complete, and the one line logged when it is not.
//!
//! The words default to pull-job.c's; an owner whose users know other words (pull-oci
//! names the layer or manifest and both digests) gives its own [`Wording`].

use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// How a mismatch is put in words: one line, without the errno.
pub type Wording = Box<dyn Fn(&Mismatch<'_>) -> String + Send>;

/// What was expected and what came, for a [`Wording`].
#[derive(Clone, Copy, Debug)]
pub struct Mismatch<'a> {
    pub expected_size: Option<u64>,
    pub size: u64,
    /// Lowercase hex.
    pub expected_sha256: Option<&'a str>,
    /// Lowercase hex of the bytes as served (`None` if nothing was hashed).
    pub sha256: Option<&'a str>,
}

impl Mismatch<'_> {
    pub fn size_differs(&self) -> bool {
        self.expected_size.is_some_and(|s| s != self.size)
    }

    pub fn digest_differs(&self) -> bool {
        self.expected_sha256.is_some_and(|e| Some(e) != self.sha256)
    }
}

/// A download's expected size and digest. A job given one hashes what it receives and
/// fails with EBADMSG, logging the [`Wording`]'s line, when either differs.
pub struct Expected {
    pub size: Option<u64>,
    /// Lowercase hex SHA-256 of the bytes as served.
    pub sha256: Option<String>,
    wording: Option<Wording>,
}

impl Expected {
    /// Expect this size and/or digest, in pull-job.c's words.
    pub fn new(size: Option<u64>, sha256: Option<String>) -> Self {
        Expected {
            size,
            sha256,
            wording: None,
        }
    }

    /// Say a mismatch this way instead.
    pub fn worded(mut self, wording: impl Fn(&Mismatch<'_>) -> String + Send + 'static) -> Self {
        self.wording = Some(Box::new(wording));
        self
    }

    /// Whether a digest is expected (the job must then hash the body).
    pub fn needs_checksum(&self) -> bool {
        self.sha256.is_some()
    }

    /// Check `size` bytes hashing to `sha256`: `Ok`, or EBADMSG with the line logged.
    pub fn check(&self, size: u64, sha256: Option<&str>) -> Result<()> {
        let m = Mismatch {
            expected_size: self.size,
            size,
            expected_sha256: self.sha256.as_deref(),
            sha256,
        };
        if !m.size_differs() && !m.digest_differs() {
            return Ok(());
        }
        let line = match &self.wording {
            Some(wording) => wording(&m),
            None => pull_job_wording(&m),
        };
        Err(log_error_errno!(Error::new(libc::EBADMSG), "{}", line))
    }
}

/// pull-job.c's lines: the size first, as it checks it first.
fn pull_job_wording(m: &Mismatch<'_>) -> String {
    if m.size_differs() {
        "Content does not have expected size.".to_string()
    } else {
        "Checksum of downloaded resource does not match expected checksum, yikes.".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aa";
    const B: &str = "bb";

    #[test]
    fn only_what_is_expected_is_checked() {
        assert!(Expected::new(None, None).check(7, None).is_ok());
        assert!(Expected::new(Some(7), None).check(7, Some(B)).is_ok());
        assert!(Expected::new(None, Some(A.into()))
            .check(9, Some(A))
            .is_ok());
        assert!(Expected::new(Some(7), Some(A.into()))
            .check(7, Some(A))
            .is_ok());
    }

    #[test]
    fn mismatches_fail_with_pull_job_words_size_first() {
        let e = Expected::new(Some(7), Some(A.into()))
            .check(8, Some(B))
            .unwrap_err();
        assert_eq!(e.errno(), libc::EBADMSG);
        assert_eq!(e.msg(), Some("Content does not have expected size."));
        let e = Expected::new(Some(7), Some(A.into()))
            .check(7, None)
            .unwrap_err();
        assert_eq!(
            e.msg(),
            Some("Checksum of downloaded resource does not match expected checksum, yikes.")
        );
    }

    #[test]
    fn an_owner_words_its_own_mismatches() {
        let expected = Expected::new(Some(7), Some(A.into())).worded(|m| {
            format!(
                "{} ({} bytes) is not {} ({} bytes).",
                m.sha256.unwrap_or("?"),
                m.size,
                m.expected_sha256.unwrap_or("?"),
                m.expected_size.unwrap_or(0)
            )
        });
        let e = expected.check(8, Some(B)).unwrap_err();
        assert_eq!(e.msg(), Some("bb (8 bytes) is not aa (7 bytes)."));
    }
}

//! pull-tar: download a tarball and unpack it (spec §5.3).

use crate::cli::{Settings, UrlRequest};

/// Run the verb; returns the exit status.
pub fn pull(settings: &Settings, req: UrlRequest) -> i32 {
    let _ = (settings, req);
    super::not_implemented("pull-tar")
}

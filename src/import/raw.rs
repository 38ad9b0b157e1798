//! pull-raw: download a raw or qcow2 disk image (spec §5.4).

use crate::cli::{Settings, UrlRequest};

/// Run the verb; returns the exit status.
pub fn pull(settings: &Settings, req: UrlRequest) -> i32 {
    let _ = (settings, req);
    super::not_implemented("pull-raw")
}

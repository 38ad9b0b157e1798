//! pull-dkr: the Docker registry v1 importer (spec §4).

use crate::cli::{DkrRequest, Settings};

/// Run the verb; returns the exit status.
pub fn pull(settings: &Settings, req: DkrRequest) -> i32 {
    let _ = (settings, req);
    super::not_implemented("pull-dkr")
}

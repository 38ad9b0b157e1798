//! pull-oci: Registry v2 / OCI distribution.

use crate::cli::Settings;

/// Run the verb; returns the exit status.
pub fn pull(settings: &Settings, args: &[String]) -> i32 {
    let _ = (settings, args);
    super::not_implemented("pull-oci")
}

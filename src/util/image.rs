//! (provisional; replaced by the util branch)

use std::path::{Path, PathBuf};

use crate::util::error::Result;

/// Provisional: looks in `image_root` only.
pub fn image_find(name: &str, image_root: &Path) -> Result<Option<PathBuf>> {
    for candidate in [
        image_root.join(name),
        image_root.join(format!("{name}.raw")),
    ] {
        if candidate.symlink_metadata().is_ok() {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

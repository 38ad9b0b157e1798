//! Renames that must not lose anything: `renameat2` with `RENAME_NOREPLACE` (fail if the
//! target exists) and `RENAME_EXCHANGE` (swap two names atomically).

use std::path::Path;

use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};

use crate::util::error::Result;

/// Rename `from` to `to`, failing with EEXIST if `to` exists. Relative paths are
/// resolved against the current directory, as rename(2) does.
pub fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    Ok(renameat2(
        AT_FDCWD,
        from,
        AT_FDCWD,
        to,
        RenameFlags::RENAME_NOREPLACE,
    )?)
}

/// Swap `a` and `b` atomically (both must exist; ENOENT otherwise): each name then
/// refers to what the other named before.
pub fn rename_exchange(a: &Path, b: &Path) -> Result<()> {
    Ok(renameat2(
        AT_FDCWD,
        a,
        AT_FDCWD,
        b,
        RenameFlags::RENAME_EXCHANGE,
    )?)
}

//! qcow2 → raw conversion for `pull-raw` (systemd's `qcow2-util.c`, spec §5.5):
//! `format.rs` reads what the file says, `convert.rs` writes the raw image from it.
//!
//! Only what a downloaded cloud image needs: the active L1/L2 mapping of a version 2 or 3
//! image is walked and every allocated cluster lands at its guest offset in a raw file.
//! Backing files, internal snapshots, refcounts and header extensions are ignored, as in
//! the C tool. Everything read from the image is treated as hostile: offsets and sizes
//! are checked against the file size with overflow-checked arithmetic, and memory stays
//! bounded by a few clusters (at most 2 MiB each) whatever the image claims.
//!
//! Logging: like the C functions, these only return errors; the caller (`pull-raw`)
//! logs the user-visible line (`Failed to detect whether this is a QCOW2 image: %m`,
//! `Failed to convert qcow2 image: %m`). The reason a conversion failed is logged at
//! debug level and carried in [`Error::msg`](crate::util::error::Error::msg).
//!
//! Differences from the C code, none of which changes the bytes of a valid image:
//! * clusters mapped at guest offsets at or beyond the virtual size (qemu keeps VM state
//!   of internal snapshots there) are skipped instead of being written past the end;
//! * a compressed cluster whose sector-rounded size runs past the end of the file is
//!   read up to the end of the file (qemu does the same) instead of failing with EIO;
//! * offsets pointing past the end of the file fail with EBADMSG rather than a short-read
//!   EIO;
//! * copied and inflated data is written sparsely: 4 KiB blocks that are all zero are
//!   not written, so the output has holes wherever the guest data is zero (qemu-img's
//!   raw output behaves the same; this matters for large clusters holding little data);
//! * runs of clusters that are contiguous in both files are cloned or copied in one go.

mod convert;
mod format;

pub use convert::qcow2_convert;
pub use format::qcow2_detect;

//! Small helpers shared by every part of the tool. Nothing here uses a module above
//! `util`; inside it, `sys` and `btrfs` are leaves that `fs` builds on.

pub mod btrfs; // btrfs ioctls: subvolumes, snapshots, the read-only flag, reflinks (a leaf)
pub mod error; // the errno-carrying `Error`, printed as `%m` is
pub mod escape; // systemd's C escaping of URLs and ETags into file names, and back
pub mod format; // human-readable sizes and durations; HTTP dates
pub mod fs; // fd-relative file-system operations: open, stat, mkdir, rename, remove, copy…
pub mod getopt; // command lines parsed as GNU getopt_long() parses them
pub mod image; // finding an existing machine image by name
pub mod log; // logging as systemd's command-line tools do it
#[cfg(test)]
pub(crate) mod mutate; // the mutation-test engine (tests only; tests/common includes it)
pub mod names; // local image names and SHA256SUMS URLs derived from URLs
pub mod notify; // sd_notify() state messages
pub mod oci_ref; // the grammar of image references (shared by pull-oci and systemd-importd)
pub mod progress; // the extended progress fields a worker sends beside X_IMPORT_PROGRESS
pub mod sys; // the raw system calls nix lacks, each once, each `unsafe` with its SAFETY
pub mod test_seams; // the test-only settings, read once at start-up (TestSettings)
pub mod validate; // syntax checks for URLs, names, tags, ids and ETags

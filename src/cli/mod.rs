//! The `systemd-import` command line.

/// Entry point; returns the process exit status.
pub fn main() -> i32 {
    crate::util::log::init();
    1
}

//! Running the qemu tools (Debian: qemu-utils) that make and inspect test images.

use std::process::Command;

/// Run a qemu tool and return its stdout; panics with its stderr when it fails, or with
/// what to install when it is missing.
pub fn qemu(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install the Debian package qemu-utils")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-img ARGS…`, as [`qemu`].
pub fn qemu_img(args: &[&str]) -> String {
    qemu("qemu-img", args)
}

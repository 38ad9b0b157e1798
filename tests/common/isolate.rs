//! Running one test in a process of its own: for tests that change process-wide state
//! (a file size limit, signal dispositions) that would otherwise reach the other tests of
//! the binary, and libtest's own output: under `RLIMIT_FSIZE`, a write to a captured
//! stdout that is a regular file longer than the limit fails with EFBIG.

use std::process::Command;

const CHILD: &str = "SYSTEMD_IMPORT_TEST_ISOLATED";

/// Run `body` as the test `name` in a child process (this test binary again, with only
/// that test selected; its stdout and stderr are pipes) and fail unless it passed. In the
/// child, `body` runs directly.
pub fn in_own_process(name: &str, body: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        return body();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Through print!/eprint!, so that libtest captures it like the test's own output.
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed in its own process ({})",
        out.status
    );
}

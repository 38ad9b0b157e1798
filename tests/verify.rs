//! `--verify` checks (spec §5.2): SHA256SUMS matching and gpg signature verification.
//!
//! Signature tests need `gpg` and `gpgconf` (Debian package `gnupg`). They share
//! process-wide state (PATH, `/tmp/sig*`), so they hold
//! [`GPG_LOCK`]. A wrapper script put first on PATH passes everything to the real gpg,
//! except when a marker file sits next to the keyring it is given: then it hangs
//! (`.hang`, a FIFO it reports its pid through), kills itself (`.die`), or exits 0
//! without reading its input (`.exit0`).

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use common::gpg::{gpg_binary, TestKey};
use systemd_import::import::url::verify::{
    keyring_path, verify_checksum, verify_signature, USER_KEYRING_PATH, VENDOR_KEYRING_PATH,
};
use systemd_import::util::error::Error;
use tempfile::TempDir;

const HASH: &str = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";
const OTHER_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn assert_failure(result: Result<(), Error>, errno: i32, message: &str) {
    let e = result.expect_err("expected a failure");
    assert_eq!(e.errno(), errno, "{e:?}");
    assert_eq!(e.msg(), Some(message));
}

// ---------------------------------------------------------------------------------------
// Checksums

#[test]
fn checksum_with_binary_separator_checks_out() {
    let sums = format!("{HASH} *image.raw.xz\n");
    verify_checksum(
        sums.as_bytes(),
        "https://example.com/dir/image.raw.xz",
        HASH,
    )
    .unwrap();
}

#[test]
fn checksum_with_text_separator_checks_out() {
    let sums = format!("{OTHER_HASH}  other.raw\n{HASH}  image.raw.xz\n");
    verify_checksum(sums.as_bytes(), "https://example.com/image.raw.xz", HASH).unwrap();
}

#[test]
fn last_line_without_newline_is_accepted() {
    let sums = format!("{OTHER_HASH} *other.raw\n{HASH} *image.raw.xz");
    verify_checksum(sums.as_bytes(), "https://example.com/image.raw.xz", HASH).unwrap();
}

#[test]
fn wrong_hash_is_tampering() {
    let sums = format!("{OTHER_HASH} *image.raw.xz\n");
    assert_failure(
        verify_checksum(sums.as_bytes(), "https://example.com/image.raw.xz", HASH),
        libc::EBADMSG,
        "Checksum did not check out, payload has been tempered with.",
    );
}

#[test]
fn missing_or_partial_lines_do_not_count() {
    let url = "https://example.com/image.raw.xz";
    let tampered = "Checksum did not check out, payload has been tempered with.";
    for sums in [
        format!("{HASH} *other.raw.xz\n"),
        // The name only as a prefix of a longer one, or the hash inside a longer word.
        format!("{HASH} *image.raw.xz.old\n"),
        format!("x{HASH} *image.raw.xz\n"),
        // Not at the start of a line.
        format!("# {HASH} *image.raw.xz\n"),
        // Other separators and cases.
        format!("{HASH} image.raw.xz\n"),
        format!("{} *image.raw.xz\n", HASH.to_uppercase()),
        format!("{HASH} *image.raw.xz\r\n"),
    ] {
        assert_failure(
            verify_checksum(sums.as_bytes(), url, HASH),
            libc::EBADMSG,
            tampered,
        );
    }
}

#[test]
fn query_string_is_not_part_of_the_file_name() {
    let url = "https://example.com/dir/image.raw.xz?token=abc/def";
    let sums = format!("{HASH} *image.raw.xz\n");
    verify_checksum(sums.as_bytes(), url, HASH).unwrap();
    let sums = format!("{HASH} *image.raw.xz?token=abc/def\n");
    assert_failure(
        verify_checksum(sums.as_bytes(), url, HASH),
        libc::EBADMSG,
        "Checksum did not check out, payload has been tempered with.",
    );
}

#[test]
fn url_ending_in_a_slash_names_the_last_directory() {
    // "http://h/dir/" → "dir" (trailing slashes are dropped), a valid file name.
    let sums = format!("{HASH} *dir\n");
    verify_checksum(sums.as_bytes(), "https://example.com/dir/", HASH).unwrap();
}

#[test]
fn empty_sums_cannot_verify() {
    assert_failure(
        verify_checksum(b"", "https://example.com/image.raw.xz", HASH),
        libc::EBADMSG,
        "Checksum is empty, cannot verify.",
    );
}

#[test]
fn invalid_server_side_file_name_cannot_verify() {
    let sums = format!("{HASH} *..\n");
    for url in ["https://example.com/..", "https://example.com/.", "/", "?x"] {
        assert_failure(
            verify_checksum(sums.as_bytes(), url, HASH),
            libc::EBADMSG,
            "Cannot verify checksum, could not determine valid server-side file name.",
        );
    }
}

// ---------------------------------------------------------------------------------------
// Signatures

static GPG_LOCK: Mutex<()> = Mutex::new(());

/// Serialise signature tests and install the gpg wrapper first on PATH (once).
fn gpg_test() -> MutexGuard<'static, ()> {
    static WRAPPER: Once = Once::new();
    WRAPPER.call_once(|| {
        let real = gpg_binary();
        // Outlives the test run (PATH points here); rewritten by each run.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("verify-gpg-wrapper");
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            r#"#!/bin/sh
ring=
for arg in "$@"; do
    case "$arg" in --keyring=*) ring="${{arg#--keyring=}}" ;; esac
done
if [ -n "$ring" ] && [ -p "$ring.hang" ]; then
    echo $$ > "$ring.hang"
    exec sleep 3600
fi
if [ -n "$ring" ] && [ -e "$ring.die" ]; then
    kill -KILL $$
fi
if [ -n "$ring" ] && [ -e "$ring.exit0" ]; then
    exit 0
fi
exec '{}' "$@"
"#,
            real.display()
        );
        // Written aside and renamed, so a concurrent run never executes half a script.
        let staged = dir.join(format!("gpg.{}", std::process::id()));
        std::fs::write(&staged, script).unwrap();
        std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::rename(&staged, dir.join("gpg")).unwrap();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir];
        dirs.extend(std::env::split_paths(&path));
        // Before any test spawns anything: every spawning test passes through here.
        std::env::set_var("PATH", std::env::join_paths(dirs).unwrap());
    });
    GPG_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `/tmp/sig*` and `/tmp/gpghome*` entries, to prove none is left behind.
fn tmp_leftovers() -> BTreeSet<String> {
    std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sig") || n.starts_with("gpghome"))
        .collect()
}

/// Run `verify_signature` against `keyring` (as the keyring test setting gives it) and
/// check that it leaves no temporary files.
fn verify_with(
    keyring: &Path,
    sums: &[u8],
    signature: &[u8],
    cancel: Option<&AtomicBool>,
) -> Result<(), Error> {
    let before = tmp_leftovers();
    let result = verify_signature(sums, signature, &keyring_path(Some(keyring)), cancel);
    let after = tmp_leftovers();
    assert!(
        after.is_subset(&before),
        "temporary files left behind: {:?}",
        after.difference(&before).collect::<Vec<_>>()
    );
    result
}

fn sums_payload() -> Vec<u8> {
    format!("{HASH} *image.raw.xz\n{OTHER_HASH} *image.tar.xz\n").into_bytes()
}

const FAILED: &str = "Signature verification failed.";

#[test]
fn good_signature_verifies() {
    let _lock = gpg_test();
    let key = TestKey::generate("good");
    let sums = sums_payload();
    verify_with(&key.keyring, &sums, &key.sign(&sums), None).unwrap();
}

#[test]
fn large_payload_is_streamed_to_gpg() {
    let _lock = gpg_test();
    let key = TestKey::generate("large");
    // Much more than a pipe holds, so writes block (EAGAIN) and resume while gpg reads.
    let mut sums = Vec::new();
    while sums.len() < 8 << 20 {
        sums.extend_from_slice(format!("{HASH} *file{}\n", sums.len()).as_bytes());
    }
    let signature = key.sign(&sums);
    let not_cancelled = AtomicBool::new(false);
    verify_with(&key.keyring, &sums, &signature, Some(&not_cancelled)).unwrap();
    verify_with(&key.keyring, &sums, &signature, None).unwrap();
}

#[test]
fn signature_by_another_key_fails() {
    let _lock = gpg_test();
    let trusted = TestKey::generate("trusted");
    let stranger = TestKey::generate("stranger");
    let sums = sums_payload();
    let result = verify_with(&trusted.keyring, &sums, &stranger.sign(&sums), None);
    assert_failure(result, libc::EBADMSG, FAILED);
}

#[test]
fn modified_sums_fail() {
    let _lock = gpg_test();
    let key = TestKey::generate("modified");
    let sums = sums_payload();
    let signature = key.sign(&sums);
    let mut tampered = sums.clone();
    tampered[0] ^= 1;
    assert_failure(
        verify_with(&key.keyring, &tampered, &signature, None),
        libc::EBADMSG,
        FAILED,
    );
}

#[test]
fn corrupted_signature_fails() {
    let _lock = gpg_test();
    let key = TestKey::generate("corrupt");
    let sums = sums_payload();
    let mut signature = key.sign(&sums);
    let last = signature.len() - 1;
    signature[last] ^= 0xff;
    signature[last / 2] ^= 0xff;
    assert_failure(
        verify_with(&key.keyring, &sums, &signature, None),
        libc::EBADMSG,
        FAILED,
    );
    // Not a signature at all.
    let result = verify_with(&key.keyring, &sums, b"this is no signature", None);
    assert_failure(result, libc::EBADMSG, FAILED);
}

#[test]
fn missing_keyring_fails() {
    let _lock = gpg_test();
    let key = TestKey::generate("nokeyring");
    let sums = sums_payload();
    let absent = key.keyring.with_file_name("absent.gpg");
    assert_failure(
        verify_with(&absent, &sums, &key.sign(&sums), None),
        libc::EBADMSG,
        FAILED,
    );
}

#[test]
fn empty_signature_cannot_verify() {
    let _lock = gpg_test();
    let result = verify_with(Path::new("/nonexistent"), &sums_payload(), b"", None);
    assert_failure(result, libc::EBADMSG, "Signature is empty, cannot verify.");
}

#[test]
fn cancellation_kills_gpg() {
    let _lock = gpg_test();
    let key = TestKey::generate("cancel");
    let sums = sums_payload();
    let signature = key.sign(&sums);
    let fifo = marker(&key.keyring, "hang");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

    let cancel = AtomicBool::new(false);
    let (pid, result) = std::thread::scope(|s| {
        let worker = s.spawn(|| verify_with(&key.keyring, &sums, &signature, Some(&cancel)));
        // Opening blocks until the wrapper opens the FIFO: gpg is running.
        let mut pid = String::new();
        std::fs::File::open(&fifo)
            .unwrap()
            .read_to_string(&mut pid)
            .unwrap();
        cancel.store(true, Ordering::Relaxed);
        (pid.trim().parse::<i32>().unwrap(), worker.join().unwrap())
    });
    let e = result.unwrap_err();
    assert_eq!(e.errno(), libc::ECANCELED, "{e:?}");
    // Killed and reaped: the pid no longer exists (not even as a zombie).
    let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None);
    assert_eq!(gone, Err(nix::errno::Errno::ESRCH));
}

#[test]
fn gpg_killed_by_a_signal_is_eproto() {
    let _lock = gpg_test();
    let key = TestKey::generate("die");
    let sums = sums_payload();
    let signature = key.sign(&sums);
    std::fs::write(marker(&key.keyring, "die"), b"").unwrap();
    let result = verify_with(&key.keyring, &sums, &signature, None);
    assert_failure(result, libc::EPROTO, "gpg terminated by signal KILL.");
}

#[test]
fn gpg_succeeding_without_reading_everything_is_not_trusted() {
    let _lock = gpg_test();
    let key = TestKey::generate("exit0");
    // More than a pipe buffer, so some of it can never be delivered.
    let sums = vec![b'x'; 4 << 20];
    std::fs::write(marker(&key.keyring, "exit0"), b"").unwrap();
    let result = verify_with(&key.keyring, &sums, b"signature", None);
    assert_failure(result, libc::EPIPE, "Failed to write to pipe: Broken pipe");
}

#[test]
fn missing_gpg_binary_is_reported() {
    let _lock = gpg_test();
    let empty = TempDir::new().unwrap();
    let path = std::env::var_os("PATH").unwrap();
    std::env::set_var("PATH", empty.path());
    let result = verify_with(Path::new("/nonexistent"), &sums_payload(), b"sig", None);
    std::env::set_var("PATH", path);
    assert_failure(
        result,
        libc::ENOENT,
        "Failed to execute gpg: No such file or directory",
    );
}

#[test]
fn keyring_follows_the_test_setting_then_the_v219_rule() {
    let _lock = gpg_test();
    let ring = Path::new("/some/where/ring.gpg");
    assert_eq!(keyring_path(Some(ring)), ring);
    // Relative paths are made absolute (gpg would look them up in its home).
    assert_eq!(
        keyring_path(Some(Path::new("ring.gpg"))),
        std::env::current_dir().unwrap().join("ring.gpg")
    );
    let expected = if Path::new(USER_KEYRING_PATH).exists() {
        USER_KEYRING_PATH
    } else {
        VENDOR_KEYRING_PATH
    };
    assert_eq!(keyring_path(None), PathBuf::from(expected));
}

fn marker(keyring: &Path, kind: &str) -> PathBuf {
    let mut name = keyring.as_os_str().to_owned();
    name.push(".");
    name.push(kind);
    PathBuf::from(name)
}

//! Throwaway gpg keys for signature tests (needs `gpg` and `gpgconf`: Debian package
//! `gnupg`).
//!
//! Each [`TestKey`] lives in its own temporary GNUPGHOME, has no passphrase, and is an
//! ed25519 key (generated in milliseconds). Its public half is exported as a binary
//! keyring file, the format `/usr/lib/systemd/import-pubring.gpg` has.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use tempfile::TempDir;

/// A signing key and its exported public keyring.
pub struct TestKey {
    /// Holds `home/` (the GNUPGHOME) and `pubring.gpg`.
    dir: TempDir,
    /// The exported public key, a binary OpenPGP keyring.
    pub keyring: PathBuf,
}

impl TestKey {
    /// Generate a key for `name` (any text; used as the user id).
    pub fn generate(name: &str) -> TestKey {
        let dir = TempDir::new().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let key = TestKey {
            keyring: dir.path().join("pubring.gpg"),
            dir,
        };
        let uid = format!("{name} <{name}@example.invalid>");
        key.gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            &uid,
            "ed25519",
            "sign",
            "never",
        ]);
        key.gpg(&["--export", "--output", key.keyring.to_str().unwrap()]);
        assert!(
            std::fs::metadata(&key.keyring).unwrap().len() > 0,
            "gpg exported an empty keyring"
        );
        key
    }

    /// A detached binary signature of `data`, as `SHA256SUMS.gpg` is.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let input = self.dir.path().join("to-sign");
        let output = self.dir.path().join("to-sign.sig");
        std::fs::write(&input, data).unwrap();
        let _ = std::fs::remove_file(&output);
        self.gpg(&[
            "--detach-sign",
            "--output",
            output.to_str().unwrap(),
            input.to_str().unwrap(),
        ]);
        std::fs::read(&output).unwrap()
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn gpg(&self, args: &[&str]) {
        let out = Command::new(gpg_binary())
            .arg("--homedir")
            .arg(self.home())
            .args(["--batch", "--yes", "--quiet"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestKey {
    fn drop(&mut self) {
        // Key generation and signing started a gpg-agent for this home; stop it so no
        // daemon outlives the test.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home())
            .args(["--kill", "gpg-agent"])
            .stderr(Stdio::null())
            .status();
    }
}

/// Absolute path of the real `gpg`, looked up on PATH at the first call (so a test may
/// put a wrapper first on PATH afterwards); panics with what to install if missing.
pub fn gpg_binary() -> PathBuf {
    static REAL_GPG: OnceLock<PathBuf> = OnceLock::new();
    REAL_GPG
        .get_or_init(|| {
            find_in_path("gpg").expect("gpg not found on PATH: install the Debian package gnupg")
        })
        .clone()
}

/// Look `name` up in PATH like execvp does (first executable match).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

//! Running a docker credential helper (`docker-credential-<name> get`, the protocol of
//! docker-credential-helpers): the server on stdin; on success a JSON object
//! `{"ServerURL","Username","Secret"}` on stdout; exit status 1 with
//! `credentials not found in native keychain` on stdout when it has nothing (not an
//! error); any other failure's message on stdout (or stderr). Which helper to ask for
//! which registry is [`super::credentials`]' business.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a helper may take (a keychain may wait for an unlock that never comes).
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What a helper's `get` printed on success.
#[derive(serde::Deserialize)]
pub struct Answer {
    /// The server the credentials are for (may be empty).
    #[serde(rename = "ServerURL", default)]
    pub server_url: String,
    /// The user, or `<token>`: then `secret` is an identity token.
    #[serde(rename = "Username", default)]
    pub username: String,
    #[serde(rename = "Secret", default)]
    pub secret: String,
}

/// Run `program get` (found in `search_path`, `PATH` syntax) with `server` on stdin.
/// `Ok(None)`: it has no credentials; `Err`: why it failed, as the end of a sentence
/// that starts with the helper's name.
pub fn get(
    program: &str,
    search_path: &OsStr,
    server: &str,
    timeout: Duration,
) -> Result<Option<Answer>, String> {
    if program.contains('/') {
        return Err("is not a valid helper name.".to_string());
    }
    let Some(path) = std::env::split_paths(search_path)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    else {
        return Err("is not installed (not found in the search path).".to_string());
    };
    let output = run_with_timeout(&path, server.as_bytes(), timeout)?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        if stdout == "credentials not found in native keychain" {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let said = [stdout, stderr]
            .into_iter()
            .find(|s| !s.is_empty())
            .map(|s| s.lines().next().unwrap_or_default().to_string())
            .unwrap_or_else(|| output.status.to_string());
        return Err(format!("failed: {said}"));
    }
    let answer: Answer = serde_json::from_str(&stdout)
        .map_err(|_| "printed something that is not a credentials object.".to_string())?;
    Ok((!answer.secret.is_empty()).then_some(answer))
}

/// Run `program get`, feed `input` to its stdin, collect its output; killed after
/// `timeout`.
fn run_with_timeout(
    program: &Path,
    input: &[u8],
    timeout: Duration,
) -> Result<std::process::Output, String> {
    let mut attempts = 0;
    let mut child = loop {
        let spawned = Command::new(program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => break child,
            // Written a moment ago and still open for writing in a child another thread
            // forked meanwhile: wait for that child to exec.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("could not be started: {e}.")),
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading closes the pipe: not our failure.
        let _ = stdin.write_all(input);
    }
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                // Not reaped yet, so killing it cannot hit another process.
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("did not answer within {timeout:?}."));
            }
            Err(e) => break Err(format!("failed: {e}.")),
        }
    };
    let output = std::process::Output {
        status: status?,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper(dir: &Path, name: &str, script: &str) {
        let path = dir.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn answers_not_found_failures_and_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        helper(d, "ok", "#!/bin/sh\n[ \"$1\" = get ] || exit 9\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"u\",\"Secret\":\"s\"}' \"$(cat)\"\n");
        helper(
            d,
            "none",
            "#!/bin/sh\necho 'credentials not found in native keychain'\nexit 1\n",
        );
        helper(
            d,
            "stderr",
            "#!/bin/sh\necho 'only on stderr' >&2\nexit 1\n",
        );
        helper(d, "silent", "#!/bin/sh\nexit 4\n");
        helper(d, "junk", "#!/bin/sh\necho 'not json'\n");
        helper(d, "slow", "#!/bin/sh\nexec sleep 10\n");
        std::fs::write(d.join("plain"), "#!/bin/sh\n").unwrap();
        let get = |name: &str| {
            get(
                name,
                d.as_os_str(),
                "reg.example:5000",
                Duration::from_millis(300),
            )
        };
        let answer = get("ok").unwrap().unwrap();
        assert_eq!(
            (
                answer.server_url.as_str(),
                answer.username.as_str(),
                answer.secret.as_str()
            ),
            ("reg.example:5000", "u", "s")
        );
        assert!(get("none").unwrap().is_none());
        assert_eq!(
            get("stderr").err().as_deref(),
            Some("failed: only on stderr")
        );
        assert_eq!(
            get("silent").err().as_deref(),
            Some("failed: exit status: 4")
        );
        assert_eq!(
            get("junk").err().as_deref(),
            Some("printed something that is not a credentials object.")
        );
        let started = Instant::now();
        assert_eq!(
            get("slow").err().as_deref(),
            Some("did not answer within 300ms.")
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        for missing in ["plain", "absent", "../ok"] {
            assert!(get(missing).is_err(), "{missing}");
        }
    }
}

//! A real HTTP proxy for the proxy tests: Debian's `tinyproxy`, on `127.0.0.1`, allowing
//! `CONNECT` to any port (no `ConnectPort` line: tinyproxy then allows all), so HTTPS to a
//! loopback registry goes through it as `https_proxy=http://127.0.0.1:PORT` makes libcurl
//! send it.
//!
//! ```ignore
//! let proxy = ConnectProxy::start();
//! // run the program with https_proxy = proxy.url(), then:
//! assert_eq!(proxy.connect_targets(), [registry.host()]);
//! ```

use std::path::Path;
use std::process::Command;

use super::daemon::{start_on_free_port, Daemon, Ready};

/// The tinyproxy binary of the Debian package.
const TINYPROXY_BIN: &str = "/usr/bin/tinyproxy";

/// tinyproxy in the foreground. Killed on drop.
pub struct ConnectProxy {
    // Declared first so it is dropped first: the process dies before its files go away.
    process: Daemon,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ConnectProxy {
    /// Start tinyproxy on a free port; it logs every request (to its stdout, captured).
    pub fn start() -> ConnectProxy {
        assert!(
            Path::new(TINYPROXY_BIN).exists(),
            "{TINYPROXY_BIN} not found: install Debian package tinyproxy"
        );
        let dir = tempfile::Builder::new()
            .prefix("test-tinyproxy.")
            .tempdir()
            .expect("create tinyproxy temporary directory");
        let config = dir.path().join("tinyproxy.conf");
        let (process, port) = start_on_free_port("tinyproxy", Ready::Accepting, |port| {
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 600\nLogLevel Info\nMaxClients 100\n\
                     Allow 127.0.0.1\nDisableViaHeader Yes\n"
                ),
            )
            .expect("write tinyproxy.conf");
            let mut cmd = Command::new(TINYPROXY_BIN);
            // -d: stay in the foreground and log to stdout.
            cmd.arg("-d").arg("-c").arg(&config);
            cmd
        });
        ConnectProxy {
            process,
            port,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`, the value for `https_proxy`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request lines tinyproxy received, in order (`CONNECT 127.0.0.1:5000 HTTP/1.1`,
    /// `GET http://… HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.process
            .log()
            .lines()
            .filter_map(|l| {
                l.split_once("): ")
                    .filter(|_| l.contains("Request (file descriptor"))
            })
            .map(|(_, request)| request.trim().to_string())
            .collect()
    }

    /// The `host:port` of every `CONNECT` so far.
    pub fn connect_targets(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r.strip_prefix("CONNECT "))
            .filter_map(|r| r.split(' ').next())
            .map(str::to_string)
            .collect()
    }

    /// tinyproxy's whole log.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

//! A private system bus for tests: Debian's `dbus-daemon` with a configuration of its own
//! (the standard system-bus default policy, our `data/org.freedesktop.import1.conf`, and
//! room for the test services `org.example.*` and a stand-in `org.freedesktop.PolicyKit1`),
//! listening on a socket in a temporary directory. Clients reach it through
//! `DBUS_SYSTEM_BUS_ADDRESS`, which libdbus, sd-bus (machinectl, busctl) and our daemon
//! all honour; nothing of the host's bus is touched.
//!
//! Also: a blocking client connection for the tests' own calls ([`TestBus::connect`]),
//! and `busctl` run against the bus, as root or as `nobody`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use dbus::blocking::Connection;
use dbus::channel::Channel;

/// The `nobody` user and group the unprivileged calls run as.
pub const NOBODY: u32 = 65534;

/// How long a test's own blocking call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TestBus {
    dir: tempfile::TempDir,
    address: String,
    daemon: Child,
}

/// `data/` of this repository.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

impl TestBus {
    /// Start a bus daemon with our policy file and wait until it listens.
    pub fn start() -> TestBus {
        TestBus::start_with_policy(&data_dir().join("org.freedesktop.import1.conf"))
    }

    /// The same with the import1 policy file at `policy` (an installed copy).
    pub fn start_with_policy(policy: &Path) -> TestBus {
        let dir = tempfile::Builder::new()
            .prefix("test-bus-")
            .tempdir()
            .expect("bus directory");
        // nobody must reach the socket (its busctl is the unprivileged caller).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod bus directory");
        let config = dir.path().join("bus.conf");
        std::fs::write(&config, config_text(dir.path(), policy)).expect("write bus.conf");
        // Its complaints (it cannot raise the fd limit in a container) go to a file.
        let log = std::fs::File::create(dir.path().join("dbus-daemon.log")).expect("log");
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon) runs");
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("dbus-daemon prints its address");
        let address = line.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon did not start: {line:?}"
        );
        TestBus {
            dir,
            address,
            daemon,
        }
    }

    /// The address for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new blocking connection (said Hello).
    pub fn connect(&self) -> Connection {
        let mut channel = Channel::open_private(&self.address).expect("connect to the test bus");
        channel.register().expect("Hello");
        Connection::from(channel)
    }

    /// `busctl --system ARGS…` against this bus, as root.
    pub fn busctl(&self, args: &[&str]) -> Output {
        Command::new("busctl")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "cat")
            .arg("--system")
            .arg("--no-pager")
            .args(args)
            .output()
            .expect("busctl runs")
    }

    /// `busctl --system ARGS…` as `nobody` (uid and gid 65534, no groups).
    pub fn busctl_as_nobody(&self, args: &[&str]) -> Output {
        let mut argv = vec!["busctl", "--system", "--no-pager"];
        argv.extend_from_slice(args);
        self.as_nobody(&argv)
    }

    /// `dbus-send --system --print-reply ARGS…` as `nobody`: it prints an error reply's
    /// name and message as they are (busctl words AccessDenied its own way).
    pub fn dbus_send_as_nobody(&self, args: &[&str]) -> Output {
        let mut argv = vec!["dbus-send", "--system", "--print-reply"];
        argv.extend_from_slice(args);
        self.as_nobody(&argv)
    }

    /// `argv` run as `nobody` against this bus.
    fn as_nobody(&self, argv: &[&str]) -> Output {
        Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
            ])
            .args(argv)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "cat")
            .output()
            .expect("setpriv (util-linux) runs")
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// The bus configuration: the system bus's default policy (deny owning names and method
/// calls, allow the rest, allow the bus driver), the test services, and our policy file.
fn config_text(dir: &Path, policy: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={dir}/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow own_prefix="org.example"/>
    <allow send_destination_prefix="org.example"/>
    <allow own="org.freedesktop.PolicyKit1"/>
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
        dir = dir.display(),
        policy = policy.display(),
    )
}

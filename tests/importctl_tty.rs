//! importctl's progress display in a real terminal: `importctl pull-oci` of a three-layer
//! image from a throttled registry, inside a `tmux` session (its own server socket), with
//! the pane captured every 150 ms. The captures must show the transfer's line and one
//! line per layer updated in place (never two of the same, percentages rising), no
//! escape sequence leaking as text, and at the end the relayed messages with no progress
//! line left over. The same pull with stderr on a pipe prints no escape sequence at all.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fault_proxy::FaultProxy;
use common::importd::{Importd, Options};
use common::oci::{Codec, ImageBuilder};
use common::registry::{Registry, RegistryOptions};
use common::tarball::Tarball;

/// Layer blobs come at this rate each (the three download at once).
const BLOB_RATE: u64 = 160 * 1024;
/// Each layer's random payload: about three seconds at that rate.
const LAYER_BYTES: usize = 480 * 1024;

fn layer(i: u64) -> Vec<u8> {
    let mut t = Tarball::new();
    if i == 0 {
        t.dir("etc/").file("etc/os-release", b"ID=tty\n");
    }
    t.file(
        &format!("blob{i}"),
        &common::stage::noise(LAYER_BYTES, i + 1),
    );
    t.finish()
}

/// A tmux server of our own (socket in a temporary directory), killed on drop.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("tmux.sock")
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.arg("-S").arg(self.socket()).env_remove("TMUX");
        cmd
    }

    /// A detached 100×30 session running `script` under sh.
    fn start(script: &str) -> Tmux {
        let t = Tmux {
            dir: tempfile::tempdir().expect("tmux dir"),
        };
        let status = t
            .cmd()
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "100",
                "-y",
                "30",
            ])
            .args(["-s", "pull", script])
            .status()
            .expect("tmux (Debian package tmux) runs");
        assert!(status.success(), "tmux new-session failed");
        t
    }

    /// The visible pane as text (tmux leaves attributes out, so any escape character
    /// here was printed as text); with `history`, everything since the session began.
    fn capture(&self, history: bool) -> String {
        let mut cmd = self.cmd();
        cmd.args(["capture-pane", "-p", "-t", "pull"]);
        if history {
            cmd.args(["-S", "-"]);
        }
        let out = cmd.output().expect("tmux capture-pane");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The percentage of a `Total:  42% …` line.
fn total_percent(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("Total:")?.trim_start();
    rest.split('%').next()?.trim().parse().ok()
}

fn assert_no_escapes(text: &str, what: &str) {
    assert!(
        !text.contains('\x1b') && !text.contains("[1A") && !text.contains("[2K"),
        "escape sequence in {what}:\n{text:?}"
    );
}

#[test]
fn the_live_display_redraws_in_place_and_pipes_get_plain_lines() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = ImageBuilder::oci()
        .layer(layer(0), Codec::None)
        .layer(layer(1), Codec::None)
        .layer(layer(2), Codec::None)
        .build();
    image.push(&reg, "tests/tty", Some("v1"));
    let proxy = FaultProxy::start(&reg, |req, upstream| {
        if req.path.contains("/blobs/") {
            upstream().slow(BLOB_RATE)
        } else {
            upstream()
        }
    });
    let d = Importd::start(Options::trusting(&reg.ca().ca_pem_path()));
    let reference = format!("{}/tests/tty:v1", proxy.host());

    let importctl = env!("CARGO_BIN_EXE_importctl");
    let script = format!(
        "cd / && env -u SYSTEMD_LOG_LEVEL DBUS_SYSTEM_BUS_ADDRESS={} {} -m pull-oci {} live; \
         echo EXIT=$?; sleep 600",
        shell_quote(d.bus.address()),
        shell_quote(importctl),
        shell_quote(&reference),
    );
    let tmux = Tmux::start(&script);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut captures = Vec::new();
    let last = loop {
        let screen = tmux.capture(false);
        if screen.contains("EXIT=") {
            // Everything printed, scrolled off or not.
            break tmux.capture(true);
        }
        captures.push(screen);
        assert!(
            Instant::now() < deadline,
            "importctl did not finish; screen:\n{}",
            captures.last().unwrap()
        );
        std::thread::sleep(Duration::from_millis(150));
    };

    let mut percents = Vec::new();
    let mut with_layers = 0;
    for screen in &captures {
        assert_no_escapes(screen, "a capture");
        let lines: Vec<&str> = screen.lines().collect();
        let totals: Vec<&&str> = lines.iter().filter(|l| l.starts_with("Total:")).collect();
        assert!(totals.len() <= 1, "two progress lines:\n{screen}");
        if let Some(p) = totals.first().and_then(|l| total_percent(l)) {
            percents.push(p);
        }
        let layers: Vec<&&str> = lines.iter().filter(|l| l.starts_with("  Layer ")).collect();
        if !layers.is_empty() {
            with_layers += 1;
            for i in 1..=3 {
                let n = layers
                    .iter()
                    .filter(|l| l.starts_with(&format!("  Layer {i}/3: ")))
                    .count();
                assert_eq!(n, 1, "layer {i} has {n} lines:\n{screen}");
            }
            assert_eq!(layers.len(), 3, "{screen}");
            // The region is the last thing on the screen: the transfer's line, the layers.
            let region_start = lines.iter().rposition(|l| l.starts_with("Total:")).unwrap();
            assert!(
                lines[region_start + 1..]
                    .iter()
                    .take(3)
                    .all(|l| l.starts_with("  Layer ")),
                "{screen}"
            );
        }
        assert!(
            lines.iter().all(|l| l.chars().count() <= 100),
            "a line wider than the terminal:\n{screen}"
        );
    }
    assert!(
        with_layers >= 2,
        "layer lines seen in {with_layers} captures"
    );
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "percentages went down: {percents:?}"
    );
    let mut distinct = percents.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "percentages did not rise: {percents:?}"
    );

    // The end: the relayed lines, no progress line left over (nor in the scrollback:
    // the region is erased before every line written above it).
    assert_no_escapes(&last, "the last screen");
    for want in [
        "Enqueued transfer job 1. Press C-c to continue download in background.",
        "Created new local image 'live'.",
        "Operation completed successfully.",
        "Exiting.",
        "EXIT=0",
    ] {
        assert!(last.lines().any(|l| l == want), "{want:?} not on:\n{last}");
    }
    assert!(
        !last
            .lines()
            .any(|l| l.starts_with("Total:") || l.starts_with("  Layer ")),
        "progress left over:\n{last}"
    );
    let os_release = d.machines.path().join("live/etc/os-release");
    assert_eq!(std::fs::read_to_string(os_release).unwrap(), "ID=tty\n");

    // stderr on a pipe (TERM set all the same): plain lines, no escape at all.
    let mut cmd = d.importctl_cmd(&["-m", "pull-oci", &reference, "piped"]);
    cmd.env("TERM", "xterm-256color");
    let out = common::cli::spawn_watch(&mut cmd).wait();
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_no_escapes(&out.stderr, "piped stderr");
    assert!(
        out.stderr_lines.iter().any(|l| l.starts_with("Total: ")),
        "no plain progress line:\n{}",
        out.stderr
    );
    assert!(Path::new(&d.machines.path().join("piped")).is_dir());
}

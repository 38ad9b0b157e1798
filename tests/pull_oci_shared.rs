//! pull-oci processes sharing an image root (issue 12): a layer is downloaded once on the
//! machine (a second pull waits for it and reuses it, on ext4 and btrfs; on btrfs it also
//! takes the layer chains the first one made instead of applying them again), a partial
//! download another process holds is neither touched nor stolen, two pulls to one local
//! name do not both run, and an orphaned partial is kept only for a while.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::btrfs::{BtrfsMount, Ext4Mount, LoopMount};
use common::cli::CliOutput;
use common::fault_proxy::FaultProxy;
use common::oci::{assert_line, assert_success, base_layer, big_file_layer, read, Codec, Image};
use common::oci::{ImageBuilder, PullEnv};
use common::registry::{Registry, RegistryOptions};
use common::tarball::Tarball;

/// The partial download of a layer blob in `env`'s root.
fn partial_of(env: &PullEnv, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    env.path(&format!(".#oci-blob-sha256-{hex}.partial"))
}

/// A proxy that holds back the answers to blob requests whose path ends in one of
/// `gated` until [`Gate::open`].
struct Gate {
    open: Arc<AtomicBool>,
    proxy: FaultProxy,
}

impl Gate {
    fn start(reg: &Arc<Registry>, gated: Vec<String>) -> Gate {
        let open = Arc::new(AtomicBool::new(false));
        let o = open.clone();
        let proxy = FaultProxy::start(reg, move |req, upstream| {
            if gated
                .iter()
                .any(|g| req.path.ends_with(&format!("/blobs/{g}")))
            {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !o.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            upstream()
        });
        Gate { open, proxy }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// GET requests for blob `digest`.
    fn gets(&self, digest: &str) -> usize {
        self.proxy
            .requests_for(&format!("/blobs/{digest}"))
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    }

    /// Wait until blob `digest` was asked for.
    fn wait_for_request(&self, digest: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.gets(digest) == 0 {
            assert!(Instant::now() < deadline, "{digest} never requested");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn image_with_top(top: &[u8]) -> ImageBuilder {
    ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(Tarball::new().file("top", top).finish(), Codec::Gzip)
}

/// Pull `a` (repo, local name) and, once `a` asks for the gated blobs, `b`; each of `b`'s
/// `waits` must be waited for; then let the blobs through. Both pulls succeed; their
/// outputs are returned.
fn pull_both(
    env: &PullEnv,
    reg: &Registry,
    gate: &Gate,
    a: (&str, &str),
    b: (&str, &str),
    waits: &[&str],
) -> (CliOutput, CliOutput) {
    let host = gate.proxy.host();
    let first = common::cli::spawn_watch(&mut env.cmd(reg, &[&format!("{host}/{}", a.0), a.1]));
    for w in waits {
        gate.wait_for_request(w);
    }
    let second = common::cli::spawn_watch(&mut env.cmd(reg, &[&format!("{host}/{}", b.0), b.1]));
    for w in waits {
        second.wait_for_stderr_line(
            |l| l == format!("Waiting for another process downloading layer {w}."),
            Duration::from_secs(60),
        );
    }
    gate.open();
    let (first, second) = (first.wait(), second.wait());
    assert_eq!(first.status, 0, "{}", first.stderr);
    assert_eq!(second.status, 0, "{}", second.stderr);
    (first, second)
}

/// On btrfs the second pull applies none of the `shared` layers (base first, `count`
/// layers in its image): it takes the chains the first one made. The first applies them.
fn assert_second_takes_the_chains(
    (first, second): &(CliOutput, CliOutput),
    shared: &[&str],
    count: usize,
) {
    for (i, digest) in shared.iter().enumerate() {
        let applied = format!("Applied layer {}/{count} {digest}.", i + 1);
        assert_line(first, &applied);
        assert!(
            !second.stderr_lines.contains(&applied),
            "applied twice: {}",
            second.stderr
        );
        assert_line(
            second,
            &format!("Layer {digest} was applied by another process meanwhile, using it."),
        );
    }
}

/// The image root on `mount`.
fn env_on(mount: &LoopMount) -> PullEnv {
    let root = mount.path().join("machines");
    std::fs::create_dir(&root).unwrap();
    PullEnv::at(&root)
}

/// Two pulls of one image to two names at once, then two images sharing their base: every
/// blob is requested once at the server, every image is complete, nothing is left. With
/// `chains` (btrfs), every shared layer is applied once too.
fn each_layer_is_fetched_once(mount: &LoopMount, chains: bool) {
    let env = env_on(mount);
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let same = image_with_top(b"same\n").build();
    same.push(&reg, "shared/ocit-same", Some("latest"));
    let digests: Vec<String> = same.layers.iter().map(|l| l.digest.clone()).collect();
    let gate = Gate::start(&reg, digests.clone());
    let waits: Vec<&str> = digests.iter().map(String::as_str).collect();
    let outputs = pull_both(
        &env,
        &reg,
        &gate,
        ("shared/ocit-same", "ocit-one"),
        ("shared/ocit-same", "ocit-two"),
        &waits,
    );
    if chains {
        assert_second_takes_the_chains(&outputs, &waits, 2);
    }
    for d in &digests {
        assert_eq!(gate.gets(d), 1, "{d}");
    }
    for name in ["ocit-one", "ocit-two"] {
        assert_eq!(read(&env.path(&format!("{name}/top"))), b"same\n");
        assert_eq!(
            read(&env.path(&format!("{name}/etc/os-release"))),
            b"ID=test\n"
        );
    }
    env.assert_no_temporaries();

    // Two images on one base (new to this root on ext4; on btrfs its chain is there
    // already, so make a new base).
    let base: &Image = &ImageBuilder::oci()
        .layer(big_file_layer("base/noise", 200 << 10), Codec::Gzip)
        .build();
    let a = ImageBuilder::oci()
        .same_layer(&base.layers[0])
        .layer(Tarball::new().file("top", b"a\n").finish(), Codec::Gzip)
        .build();
    let b = ImageBuilder::oci()
        .same_layer(&base.layers[0])
        .layer(Tarball::new().file("top", b"b\n").finish(), Codec::Gzip)
        .build();
    a.push(&reg, "shared/ocit-a", Some("latest"));
    b.push(&reg, "shared/ocit-b", Some("latest"));
    let shared = base.layers[0].digest.clone();
    let gate = Gate::start(&reg, vec![shared.clone()]);
    let outputs = pull_both(
        &env,
        &reg,
        &gate,
        ("shared/ocit-a", "ocit-a"),
        ("shared/ocit-b", "ocit-b"),
        &[&shared],
    );
    if chains {
        assert_second_takes_the_chains(&outputs, &[&shared], 2);
        // Its own layer it applied, on a snapshot of the chain.
        assert_line(
            &outputs.1,
            &format!("Applied layer 2/2 {}.", b.layers[1].digest),
        );
    }
    for d in [&shared, &a.layers[1].digest, &b.layers[1].digest] {
        assert_eq!(gate.gets(d), 1, "{d}");
    }
    for (name, top) in [("ocit-a", b"a\n"), ("ocit-b", b"b\n")] {
        assert_eq!(read(&env.path(&format!("{name}/top"))), top);
        assert_eq!(
            read(&env.path(&format!("{name}/base/noise"))).len(),
            200 << 10
        );
    }
    env.assert_no_temporaries();
}

#[test]
fn two_processes_fetch_each_layer_once_on_ext4() {
    each_layer_is_fetched_once(&Ext4Mount::new(), false);
}

#[test]
fn two_processes_fetch_each_layer_once_on_btrfs() {
    each_layer_is_fetched_once(&BtrfsMount::new(), true);
}

/// A partial download another process holds (this test, with its lock) is waited for:
/// not written, not removed. Once that process let go of it with the whole blob in it,
/// the pull uses it without asking the server.
#[test]
fn a_partial_held_by_a_live_process_is_waited_for_not_stolen() {
    use std::os::fd::AsRawFd;
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = image_with_top(b"held\n").build();
    image.push(&reg, "held/ocit-app", Some("latest"));
    let gate = Gate::start(&reg, Vec::new());
    gate.open();
    let env = PullEnv::new();
    let layer = &image.layers[1];
    let partial = partial_of(&env, &layer.digest);
    let half = &layer.blob[..layer.blob.len() / 2];
    std::fs::write(&partial, half).unwrap();
    let file = std::fs::File::options().write(true).open(&partial).unwrap();
    // SAFETY: a plain flock on an fd we own.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);

    let reference = format!("{}/held/ocit-app", gate.proxy.host());
    let pull = common::cli::spawn_watch(&mut env.cmd(&reg, &[&reference]));
    pull.wait_for_stderr_line(
        |l| {
            l == format!(
                "Waiting for another process downloading layer {}.",
                layer.digest
            )
        },
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&partial), half, "not touched");
    assert_eq!(gate.gets(&layer.digest), 0, "not stolen");
    // The other process completes the blob and goes.
    std::fs::write(&partial, &layer.blob).unwrap();
    drop(file);
    let out = pull.wait();
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stderr_lines.iter().any(|l| l
            == &format!(
                "Layer {} is complete on disk, not downloading it.",
                layer.digest
            )),
        "{}",
        out.stderr
    );
    assert_eq!(gate.gets(&layer.digest), 0);
    assert_eq!(read(&env.path("ocit-app/top")), b"held\n");
    env.assert_no_temporaries();
}

/// A second pull to a local name another pull is writing fails at once, before it asks
/// the registry anything; the first one is not disturbed.
#[test]
fn a_second_pull_to_the_same_local_name_fails_at_once() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = image_with_top(b"one\n").build();
    image.push(&reg, "name/ocit-app", Some("latest"));
    let gate = Gate::start(&reg, vec![image.layers[1].digest.clone()]);
    let env = PullEnv::new();
    let reference = format!("{}/name/ocit-app", gate.proxy.host());
    let first = common::cli::spawn_watch(&mut env.cmd(&reg, &[&reference, "ocit-x"]));
    gate.wait_for_request(&image.layers[1].digest);
    let requests = gate.proxy.requests().len();
    let out = env.pull(&reg, &[&reference, "ocit-x"]);
    common::oci::assert_failed_with(
        &out,
        "Local image 'ocit-x' is being pulled or imported by another process, refusing.",
    );
    assert_eq!(gate.proxy.requests().len(), requests, "nothing asked");
    gate.open();
    let first = first.wait();
    assert_eq!(first.status, 0, "{}", first.stderr);
    assert_eq!(read(&env.path("ocit-x/top")), b"one\n");
    env.assert_no_temporaries();
    // Free again once the first is done.
    assert_success(&env.pull(&reg, &[&reference, "ocit-x", "--force"]));
}

/// A partial nobody holds is kept for the next pull, unless it is older than the
/// retention (7 days): then the start-up sweep removes it.
#[test]
fn an_orphaned_partial_older_than_the_retention_is_removed() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = image_with_top(b"r\n").build();
    image.push(&reg, "retain/ocit-app", Some("latest"));
    let env = PullEnv::new();
    let old = env.path(".#oci-blob-sha256-0000000000000000000000000000000000000000000000000000000000000001.partial");
    let young = env.path(".#oci-blob-sha256-0000000000000000000000000000000000000000000000000000000000000002.partial");
    for p in [&old, &young] {
        std::fs::write(p, b"left by a killed pull").unwrap();
    }
    let eight_days = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(eight_days)
        .unwrap();
    let mut cmd = env.cmd(&reg, &[&format!("{}/retain/ocit-app", reg.host())]);
    let out = common::oci::run_pull(cmd.env("SYSTEMD_LOG_LEVEL", "debug"));
    assert_success(&out);
    assert!(!old.exists() && young.exists());
    assert_line(
        &out,
        &format!(
            "Removing {}, a partial download unused for more than 7 days.",
            old.display()
        ),
    );
}

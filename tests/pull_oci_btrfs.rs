//! pull-oci on btrfs: every applied layer is a read-only subvolume named by its ChainID,
//! shared between images (a second image with the same base downloads only what is new),
//! each a read-only snapshot of the tree the layers are applied into, which becomes the
//! local image (a writable snapshot of the top chain when every layer was cached).

mod common;

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use common::btrfs::BtrfsMount;
use common::fault_proxy::FaultProxy;
use common::oci::{
    assert_layered_tree, assert_line, assert_success, base_layer, layered_image,
    pull_interrupted_mid_layer, read, run_pull, Codec, Image, ImageBuilder, PullEnv,
    LAYERED_NSPAWN,
};
use common::registry::{sha256_digest, Registry, RegistryOptions};
use common::tarball::Tarball;
use nix::sys::signal::Signal;
use systemd_import::util::btrfs::{is_subvolume, subvol_get_read_only};

/// `sha256:…` ChainIDs of `image`'s layers (image-spec: ChainID(n) = sha256(ChainID(n-1) +
/// " " + DiffID(n))).
fn chain_ids(image: &Image) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in &image.layers {
        let next = match out.last() {
            None => l.diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {}", l.diff_id).as_bytes()),
        };
        out.push(next);
    }
    out
}

fn chain_dir(chain: &str) -> String {
    format!(".oci-chain-{}", chain.strip_prefix("sha256:").unwrap())
}

/// (is a subvolume, is read-only)
fn subvolume_state(path: &Path) -> (bool, bool) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let sub = is_subvolume(f.as_fd()).unwrap();
    let ro = sub && subvol_get_read_only(f.as_fd()).unwrap();
    (sub, ro)
}

/// A btrfs mount with an image root directory on it.
fn btrfs_env() -> (BtrfsMount, PullEnv) {
    let mount = BtrfsMount::new();
    let root = mount.path().join("machines");
    std::fs::create_dir(&root).unwrap();
    let env = PullEnv::at(&root);
    (mount, env)
}

#[test]
fn layers_are_read_only_chain_subvolumes_shared_between_images() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let a = layered_image(ImageBuilder::oci(), [Codec::Gzip, Codec::Zstd, Codec::Gzip]);
    a.push(&reg, "shared/ocit-a", Some("latest"));
    let b = ImageBuilder::oci()
        .same_layer(&a.layers[0])
        .same_layer(&a.layers[1])
        .layer(
            Tarball::new().file("only-in-b", b"b\n").finish(),
            Codec::Gzip,
        )
        .build();
    b.push(&reg, "shared/ocit-b", Some("latest"));
    let proxy = FaultProxy::start(&reg, |_, upstream| upstream());
    let (_mount, env) = btrfs_env();

    let out = env.pull(&reg, &[&format!("{}/shared/ocit-a", proxy.host())]);
    assert_success(&out);
    assert_layered_tree(&env.path("ocit-a"));
    assert_eq!(read(&env.path("ocit-a.nspawn")), LAYERED_NSPAWN.as_bytes());
    assert_eq!(
        subvolume_state(&env.path("ocit-a")),
        (true, false),
        "LOCAL is a writable subvolume"
    );
    std::fs::write(env.path("ocit-a/scratch"), b"writable").unwrap();
    let a_chains = chain_ids(&a);
    for chain in &a_chains {
        assert_eq!(
            subvolume_state(&env.path(&chain_dir(chain))),
            (true, true),
            "{chain} is a read-only subvolume"
        );
    }
    // The cached base layer holds exactly the base.
    let base = env.path(&chain_dir(&a_chains[0]));
    assert_eq!(read(&base.join("etc/hostname")), b"base\n");
    assert!(base.join("var/cache/a").exists());
    assert!(std::fs::write(base.join("new"), b"x").is_err(), "read-only");
    // Each chain is a snapshot of the one tree the layers went into, taken after its layer
    // and before the next one wrote anything.
    assert!(!base.join("new-file").exists() && base.join("etc/os-release").exists());
    let middle = env.path(&chain_dir(&a_chains[1]));
    assert_eq!(read(&middle.join("new-file")), b"new\n");
    assert_eq!(read(&middle.join("etc/hostname")), b"upper\n");
    assert!(!middle.join("opt").exists() && middle.join("bin").symlink_metadata().is_ok());
    assert_layered_tree(&env.path(&chain_dir(&a_chains[2])));
    assert!(
        !env.path(&chain_dir(&a_chains[2])).join("scratch").exists(),
        "the local image is not the top chain"
    );

    // B shares two layers with A: only its own top layer is downloaded.
    let before = proxy.requests().len();
    let reference = format!("{}/shared/ocit-b:latest", proxy.host());
    let out = env.pull(&reg, &[&reference]);
    assert_success(&out);
    assert_line(
        &out,
        &format!("Layer {} already exists, skipping.", b.layers[0].digest),
    );
    assert_line(
        &out,
        &format!("Layer {} already exists, skipping.", b.layers[1].digest),
    );
    assert_line(
        &out,
        &format!("Image {reference} has 3 layers, 2 already present."),
    );
    let blobs: Vec<String> = proxy.requests()[before..]
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .map(|r| r.path.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(blobs, [b.config_digest.clone(), b.layers[2].digest.clone()]);
    assert_eq!(read(&env.path("ocit-b/only-in-b")), b"b\n");
    assert_eq!(read(&env.path("ocit-b/etc/hostname")), b"upper\n");
    assert!(
        !env.path("ocit-b/scratch").exists(),
        "A's local changes stay in A"
    );
    assert!(
        !middle.join("only-in-b").exists(),
        "B's tree is a snapshot of the cached chain, not the chain itself"
    );
    assert_eq!(
        subvolume_state(&env.path(&chain_dir(&chain_ids(&b)[2]))),
        (true, true)
    );

    // Pulling A again downloads no layer at all.
    let before = proxy.requests().len();
    let out = env.pull(
        &reg,
        &[&format!("{}/shared/ocit-a", proxy.host()), "ocit-a-again"],
    );
    assert_success(&out);
    assert!(proxy.requests()[before..]
        .iter()
        .all(|r| !r.path.contains(&a.layers[2].digest)));
    assert_layered_tree(&env.path("ocit-a-again"));

    let mut expected: Vec<String> = a_chains.iter().map(|c| chain_dir(c)).collect();
    expected.push(chain_dir(&chain_ids(&b)[2]));
    for name in ["ocit-a", "ocit-a-again", "ocit-b"] {
        expected.push(name.to_string());
        expected.push(format!("{name}.nspawn"));
        expected.push(format!("{name}.oci-config"));
    }
    expected.sort();
    assert_eq!(env.top_level(), expected);
}

#[test]
fn force_replaces_a_local_subvolume_atomically() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push(&reg, "force/ocit-box", Some("latest"));
    let (_mount, env) = btrfs_env();
    let reference = format!("{}/force/ocit-box", reg.host());
    assert_success(&env.pull(&reg, &[&reference]));
    std::fs::write(env.path("ocit-box/marker"), b"old").unwrap();
    let out = env.pull(&reg, &[&reference]);
    assert_eq!(out.status, 1);
    assert_eq!(out.stderr_lines, ["Image 'ocit-box' already exists."]);
    assert!(env.path("ocit-box/marker").exists());

    let out = env.pull(&reg, &["--force", &reference]);
    assert_success(&out);
    assert!(!env.path("ocit-box/marker").exists());
    assert_eq!(subvolume_state(&env.path("ocit-box")), (true, false));
    // "-": the layers are cached, no image is made.
    let out = env.pull(&reg, &[&reference, "-"]);
    assert_success(&out);
    env.assert_no_temporaries();
    let mut expected = vec![
        chain_dir(&chain_ids(&image)[0]),
        "ocit-box".to_string(),
        "ocit-box.nspawn".to_string(),
        "ocit-box.oci-config".to_string(),
    ];
    expected.sort();
    assert_eq!(env.top_level(), expected);
}

#[test]
fn sigint_keeps_completed_layers_and_nothing_else() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let (_mount, env) = btrfs_env();
    let (image, _) =
        pull_interrupted_mid_layer(&reg, &env, "stall/ocit-btrfs", Signal::SIGINT, || {});
    // The verified base layer stays (it is useful); no spool, no partial layer, no image.
    assert_eq!(env.top_level(), [chain_dir(&chain_ids(&image)[0])]);
}

/// While a layer is applied its data goes out and the file system's device is flushed (every
/// 8 MiB of file data), so that the chain snapshot after it finds little to write; the
/// chain and the image hold the layer all the same.
#[test]
fn a_layer_is_written_out_and_the_device_flushed_while_it_is_applied() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let mut tar = Tarball::new();
    let files: Vec<(String, Vec<u8>)> = (0..12u8)
        .map(|i| (format!("data/f{i}"), vec![i; 2 << 20]))
        .collect();
    for (name, data) in &files {
        tar.file(name, data);
    }
    let image = ImageBuilder::oci().layer(tar.finish(), Codec::Gzip).build();
    image.push(&reg, "wb/image", Some("latest"));
    let (_mount, env) = btrfs_env();

    let reference = format!("{}/wb/image", reg.host());
    let out = run_pull(
        env.cmd(&reg, &[&reference, "image"])
            .env("SYSTEMD_LOG_LEVEL", "debug"),
    );
    assert_success(&out);
    let flushes: u32 = out
        .stderr_lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("Writeback started for 12 files; ")?
                .strip_suffix(" device flushes.")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no writeback line for 12 files in:\n{}", out.stderr));
    assert!(
        (1..=3).contains(&flushes),
        "24 MiB of files: 1 to 3 flushes, not {flushes}"
    );
    let chain = env.path(&chain_dir(&chain_ids(&image)[0]));
    assert_eq!(subvolume_state(&chain), (true, true));
    for (name, data) in &files {
        assert_eq!(&read(&env.path("image").join(name)), data, "{name}");
        assert_eq!(&read(&chain.join(name)), data, "{name} in the chain");
    }
}

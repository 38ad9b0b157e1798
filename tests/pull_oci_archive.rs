//! pull-oci from files: `oci:DIR`, `oci-archive:PATH` and `docker-archive:PATH`, made with
//! `skopeo copy` from an image on the test registry, against pull-oci of the same image:
//! the same tree (names, types, modes, owners, xattrs, contents), the same settings file;
//! on ext4 and on btrfs (where the layers pull-oci cached are used, not applied again). A
//! layer blob with one byte changed is refused with the digest message and leaves nothing
//! behind; a multi-platform layout gives our platform's image; a missing blob is one line.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::btrfs::{BtrfsMount, Ext4Mount};
use common::oci::{
    assert_layered_tree, assert_success, foreign_arch, index, layered_image, native_arch, read,
    Codec, Flavor, ImageBuilder, PullEnv, PullOutput, LAYERED_NSPAWN,
};
use common::registry::{Registry, RegistryOptions};
use common::tarball::{self, Tarball};

const TRANSPORTS: [&str; 3] = ["oci", "oci-archive", "docker-archive"];

/// `skopeo copy` of `reference` on `reg` to `dest` (`TRANSPORT:PATH[:REF]`).
fn skopeo_copy(reg: &Registry, reference: &str, dest: &str, all: bool) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--src-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    let out = cmd
        .arg(format!("docker://{}/{reference}", reg.host()))
        .arg(dest)
        .output()
        .expect("skopeo is installed (.ci/run)");
    assert!(
        out.status.success(),
        "skopeo copy to {dest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The three sources of `reference` below `dir`, as (transport, path).
fn sources(reg: &Registry, reference: &str, dir: &Path) -> Vec<(&'static str, PathBuf)> {
    fs::create_dir_all(dir).unwrap();
    TRANSPORTS
        .iter()
        .map(|t| {
            let path = dir.join(format!("{t}-src"));
            let dest = format!("{t}:{}:{reference}", path.display());
            skopeo_copy(reg, reference, &dest, false);
            (*t, path)
        })
        .collect()
}

fn import(env: &PullEnv, reg: &Registry, source: &str, local: &str) -> PullOutput {
    env.pull(reg, &[source, local])
}

fn assert_same_tree(label: &str, expected: &Path, actual: &Path) {
    let differences = tarball::diff(
        &tarball::snapshot_without_dir_mtimes(expected),
        &tarball::snapshot_without_dir_mtimes(actual),
    );
    assert!(
        differences.is_empty(),
        "{label}:\n{}",
        differences.join("\n")
    );
}

/// Push the layered image, pull it as `pulled`, import each source as `<transport>`, and
/// compare. Returns the registry and the sources' directory.
fn archives_match_pull_oci(root: &Path) -> (Arc<Registry>, tempfile::TempDir) {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = layered_image(ImageBuilder::oci(), [Codec::Gzip, Codec::None, Codec::Gzip]);
    image.push(&reg, "arch/layered", Some("v1"));
    let env = PullEnv::at(root);
    assert_success(&env.pull(
        &reg,
        &[&format!("{}/arch/layered:v1", reg.host()), "pulled"],
    ));
    let work = tarball::scratch();
    for (transport, path) in sources(&reg, "arch/layered:v1", work.path()) {
        let local = transport.replace('-', "");
        let source = format!("{transport}:{}", path.display());
        let out = import(&env, &reg, &source, &local);
        assert_success(&out);
        assert_layered_tree(&env.path(&local));
        assert_same_tree(transport, &env.path("pulled"), &env.path(&local));
        assert_eq!(
            read(&env.path(&format!("{local}.nspawn"))),
            LAYERED_NSPAWN.as_bytes(),
            "{transport}"
        );
        assert_eq!(
            read(&env.path(&format!("{local}.oci-config"))),
            read(&env.path("pulled.oci-config")),
            "{transport}"
        );
        env.assert_no_temporaries();
    }
    // A compressed archive (`docker save | gzip`) is decompressed into a spool first.
    let plain = work.path().join("docker-archive-src");
    let status = Command::new("gzip").arg("-k").arg(&plain).status().unwrap();
    assert!(status.success());
    let gz = work.path().join("docker-archive-src.gz");
    let out = import(
        &env,
        &reg,
        &format!("docker-archive:{}", gz.display()),
        "gzipped",
    );
    assert_success(&out);
    assert_same_tree("gzip", &env.path("pulled"), &env.path("gzipped"));
    env.assert_no_temporaries();
    (reg, work)
}

/// Change one byte in the middle of `file`.
fn flip_a_byte(file: &Path) {
    let mut bytes = fs::read(file).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x55;
    fs::write(file, bytes).unwrap();
}

fn tar_dir(dir: &Path, out: &Path) {
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
}

fn untar(file: &Path, dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-xf")
        .arg(file)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Change a byte of the first layer blob of the OCI layout `dir`'s first image.
fn tamper_layout(dir: &Path) {
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    };
    let json = |p: PathBuf| serde_json::from_slice::<serde_json::Value>(&read(&p)).unwrap();
    let index = json(dir.join("index.json"));
    let manifest = json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    flip_a_byte(&blob(manifest["layers"][0]["digest"].as_str().unwrap()));
}

/// Every source with one byte of its first layer's blob changed (the manifest unchanged)
/// is refused with the digest message; nothing is left in the image root.
fn tampered_layers_are_refused(reg: &Registry, work: &Path, root: &Path) {
    let env = PullEnv::at(root);
    let before = env.top_level();
    for (transport, path) in sources(reg, "arch/layered:v1", &work.join("tampered")) {
        let source = match transport {
            "oci" => {
                tamper_layout(&path);
                format!("oci:{}", path.display())
            }
            "oci-archive" => {
                let dir = work.join("tampered/oci-archive-dir");
                untar(&path, &dir);
                tamper_layout(&dir);
                tar_dir(&dir, &path);
                format!("oci-archive:{}", path.display())
            }
            _ => {
                let dir = work.join("tampered/docker-archive-dir");
                untar(&path, &dir);
                let manifest: serde_json::Value =
                    serde_json::from_slice(&read(&dir.join("manifest.json"))).unwrap();
                flip_a_byte(&dir.join(manifest[0]["Layers"][0].as_str().unwrap()));
                tar_dir(&dir, &path);
                format!("docker-archive:{}", path.display())
            }
        };
        let out = import(&env, reg, &source, "tampered");
        assert_eq!(out.status, 1, "{transport}: {}", out.stderr);
        assert_eq!(out.errors.len(), 1, "{transport}: {:?}", out.errors);
        assert!(
            out.errors[0].starts_with("Layer sha256:")
                && out.errors[0].contains(" digest mismatch: the content is sha256:"),
            "{transport}: {:?}",
            out.errors
        );
        assert_eq!(env.top_level(), before, "{transport}: nothing left behind");
    }
}

#[test]
fn archives_import_as_pull_oci_on_ext4_and_tampered_layers_are_refused() {
    let mount = Ext4Mount::new();
    let root = mount.path().join("machines");
    fs::create_dir(&root).unwrap();
    let (reg, work) = archives_match_pull_oci(&root);
    tampered_layers_are_refused(&reg, work.path(), &root);
}

#[test]
fn archives_use_the_layers_pull_oci_cached_on_btrfs() {
    let mount = BtrfsMount::new();
    let root = mount.path().join("machines");
    fs::create_dir(&root).unwrap();
    let (reg, work) = archives_match_pull_oci(&root);
    let env = PullEnv::at(&root);
    let chains = || {
        let mut v: Vec<String> = env
            .top_level()
            .into_iter()
            .filter(|n| n.starts_with(".oci-chain-"))
            .collect();
        v.sort();
        v
    };
    let cached = chains();
    assert_eq!(cached.len(), 3, "{cached:?}");
    // A second import of each source: every layer is there already.
    for t in TRANSPORTS {
        let path = work.path().join(format!("{t}-src"));
        let out = import(&env, &reg, &format!("{t}:{}", path.display()), "again");
        assert_success(&out);
        assert!(
            out.stderr.contains("has 3 layers, 3 already present."),
            "{t}: {}",
            out.stderr
        );
        assert_same_tree(t, &env.path("pulled"), &env.path("again"));
        fs::remove_file(env.path("again.nspawn")).unwrap();
        fs::remove_file(env.path("again.oci-config")).unwrap();
        let status = Command::new("btrfs")
            .args(["subvolume", "delete"])
            .arg(env.path("again"))
            .output()
            .unwrap();
        assert!(status.status.success());
    }
    assert_eq!(chains(), cached, "no layer applied again");
    // (A cached layer is not read at all, as pull-oci does not download it: tampering
    // shows in an image root without the cache.)
    let fresh = mount.path().join("fresh");
    fs::create_dir(&fresh).unwrap();
    tampered_layers_are_refused(&reg, work.path(), &fresh);
}

#[test]
fn a_multi_platform_layout_gives_our_platform() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let ours = ImageBuilder::oci()
        .layer(
            Tarball::new().file("which", b"ours\n").finish(),
            Codec::Gzip,
        )
        .platform("linux", native_arch(), None)
        .build();
    let theirs = ImageBuilder::oci()
        .layer(
            Tarball::new().file("which", b"theirs\n").finish(),
            Codec::Gzip,
        )
        .platform("linux", foreign_arch(), None)
        .build();
    ours.push(&reg, "arch/multi", None);
    theirs.push(&reg, "arch/multi", None);
    let (body, media_type) = index(
        Flavor::Oci,
        &[
            (&theirs, "linux", foreign_arch(), None),
            (&ours, "linux", native_arch(), None),
        ],
    );
    reg.push_manifest("arch/multi", "latest", media_type, &body);
    let work = tarball::scratch();
    let layout = work.path().join("layout");
    skopeo_copy(
        &reg,
        "arch/multi:latest",
        &format!("oci:{}:latest", layout.display()),
        true,
    );
    let env = PullEnv::new();
    for source in [
        format!("oci:{}", layout.display()),
        format!("oci:{}:latest", layout.display()),
    ] {
        let out = import(&env, &reg, &source, "multi");
        assert_success(&out);
        assert_eq!(read(&env.path("multi/which")), b"ours\n");
        fs::remove_dir_all(env.path("multi")).unwrap();
    }
    let out = import(
        &env,
        &reg,
        &format!("oci:{}:nope", layout.display()),
        "multi",
    );
    assert_eq!(out.status, 1);
    assert_eq!(
        out.errors,
        [format!("No image named 'nope' in '{}'.", layout.display())]
    );
}

#[test]
fn a_missing_blob_is_one_line() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = ImageBuilder::oci()
        .layer(Tarball::new().file("a", b"a\n").finish(), Codec::Gzip)
        .layer(Tarball::new().file("b", b"b\n").finish(), Codec::Gzip)
        .build();
    image.push(&reg, "arch/missing", Some("v1"));
    let work = tarball::scratch();
    let layout = work.path().join("layout");
    skopeo_copy(
        &reg,
        "arch/missing:v1",
        &format!("oci:{}", layout.display()),
        false,
    );
    let digest = &image.layers[1].digest;
    let hex = digest.strip_prefix("sha256:").unwrap();
    fs::remove_file(layout.join("blobs/sha256").join(hex)).unwrap();
    let env = PullEnv::new();
    let out = import(&env, &reg, &format!("oci:{}", layout.display()), "missing");
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(
        out.errors,
        [format!(
            "Layer {digest} is missing from '{}' (no file 'blobs/sha256/{hex}').",
            layout.display()
        )]
    );
    assert!(env.top_level().is_empty(), "{:?}", env.top_level());
}

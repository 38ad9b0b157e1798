//! OCI and Docker schema 2 images for the pull-oci tests: layers from [`Tarball`]s
//! (uncompressed, gzip or zstd), a config with DiffIDs and execution settings, a manifest,
//! and indexes; pushed to a [`Registry`] over its HTTP API.
//!
//! ```ignore
//! let image = ImageBuilder::oci()
//!     .layer(Tarball::new().file("etc/hostname", b"box\n").finish(), Codec::Gzip)
//!     .build();
//! image.push(&reg, "demo/app", "latest");
//! ```

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::cli::{run, systemd_import, CliOutput, TempRoot};
use super::registry::{
    sha256_digest, Registry, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST,
};
use super::tarball::Tarball;

/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Zstd,
}

/// Which family of media types an image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Oci,
    Docker,
}

impl Flavor {
    fn manifest_type(self) -> &'static str {
        match self {
            Flavor::Oci => OCI_MANIFEST,
            Flavor::Docker => DOCKER_MANIFEST,
        }
    }

    fn index_type(self) -> &'static str {
        match self {
            Flavor::Oci => OCI_INDEX,
            Flavor::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    fn config_type(self) -> &'static str {
        match self {
            Flavor::Oci => OCI_CONFIG,
            Flavor::Docker => DOCKER_CONFIG,
        }
    }

    fn layer_type(self, codec: Codec) -> &'static str {
        match (self, codec) {
            (Flavor::Oci, Codec::None) => "application/vnd.oci.image.layer.v1.tar",
            (Flavor::Oci, Codec::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (Flavor::Oci, Codec::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (Flavor::Docker, Codec::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (Flavor::Docker, Codec::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (Flavor::Docker, Codec::Zstd) => "application/vnd.docker.image.rootfs.diff.tar.zstd",
        }
    }
}

/// Compress `data` with `codec`.
pub fn compress(data: &[u8], codec: Codec) -> Vec<u8> {
    match codec {
        Codec::None => data.to_vec(),
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        Codec::Zstd => zstd::encode_all(data, 3).expect("zstd"),
    }
}

/// One layer: the tar, its blob as pushed, and their digests.
#[derive(Clone, Debug)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    /// `sha256:…` of `blob`.
    pub digest: String,
    /// `sha256:…` of `tar`.
    pub diff_id: String,
    pub media_type: String,
}

/// Builds an image.
pub struct ImageBuilder {
    flavor: Flavor,
    layers: Vec<Layer>,
    exec: Value,
    os: String,
    architecture: String,
    variant: Option<String>,
    /// Replace DiffID i by this value in the config.
    diff_id_override: Option<(usize, String)>,
    /// Extra descriptor fields per layer (e.g. `urls`).
    layer_extras: Vec<(usize, Value)>,
}

/// The built image: every blob and document, ready to push.
#[derive(Clone, Debug)]
pub struct Image {
    pub flavor: Flavor,
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub media_type: &'static str,
}

/// The architecture of this machine in Go's names (what pull-oci picks by default).
pub fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("tests assume amd64 or arm64, not {other}"),
    }
}

/// The other of amd64 and arm64.
pub fn foreign_arch() -> &'static str {
    if native_arch() == "amd64" {
        "arm64"
    } else {
        "amd64"
    }
}

impl ImageBuilder {
    pub fn new(flavor: Flavor) -> Self {
        ImageBuilder {
            flavor,
            layers: Vec::new(),
            exec: json!({}),
            os: "linux".into(),
            architecture: native_arch().into(),
            variant: None,
            diff_id_override: None,
            layer_extras: Vec::new(),
        }
    }

    pub fn oci() -> Self {
        ImageBuilder::new(Flavor::Oci)
    }

    pub fn docker() -> Self {
        ImageBuilder::new(Flavor::Docker)
    }

    /// Add a layer (base first).
    pub fn layer(mut self, tar: Vec<u8>, codec: Codec) -> Self {
        let blob = compress(&tar, codec);
        self.layers.push(Layer {
            digest: sha256_digest(&blob),
            diff_id: sha256_digest(&tar),
            media_type: self.flavor.layer_type(codec).to_string(),
            tar,
            blob,
        });
        self
    }

    /// Add a layer whose blob was made elsewhere (too large to build in memory), with the
    /// DiffID of what it expands to.
    pub fn raw_layer(mut self, blob: Vec<u8>, diff_id: &str, codec: Codec) -> Self {
        self.layers.push(Layer {
            digest: sha256_digest(&blob),
            diff_id: diff_id.to_string(),
            media_type: self.flavor.layer_type(codec).to_string(),
            tar: Vec::new(),
            blob,
        });
        self
    }

    /// Reuse an already built layer (same blob, as a shared base).
    pub fn same_layer(mut self, layer: &Layer) -> Self {
        self.layers.push(layer.clone());
        self
    }

    /// The `config` object of the image config (`User`, `Env`, `Cmd`, …).
    pub fn exec(mut self, exec: Value) -> Self {
        self.exec = exec;
        self
    }

    pub fn platform(mut self, os: &str, architecture: &str, variant: Option<&str>) -> Self {
        self.os = os.into();
        self.architecture = architecture.into();
        self.variant = variant.map(str::to_string);
        self
    }

    /// Write a wrong DiffID for layer `i` into the config.
    pub fn wrong_diff_id(mut self, i: usize) -> Self {
        self.diff_id_override = Some((i, sha256_digest(b"not the layer")));
        self
    }

    /// Add fields to layer `i`'s descriptor in the manifest.
    pub fn layer_descriptor_extra(mut self, i: usize, extra: Value) -> Self {
        self.layer_extras.push((i, extra));
        self
    }

    pub fn build(&self) -> Image {
        let mut diff_ids: Vec<String> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        if let Some((i, d)) = &self.diff_id_override {
            diff_ids[*i] = d.clone();
        }
        let mut config = json!({
            "architecture": self.architecture,
            "os": self.os,
            "config": self.exec,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "pull-oci tests"}],
        });
        if let Some(v) = &self.variant {
            config["variant"] = json!(v);
        }
        let config = serde_json::to_vec(&config).expect("config JSON");
        let config_digest = sha256_digest(&config);
        let layers: Vec<Value> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut d =
                    json!({"mediaType": l.media_type, "digest": l.digest, "size": l.blob.len()});
                for (_, extra) in self.layer_extras.iter().filter(|(j, _)| *j == i) {
                    for (k, v) in extra.as_object().expect("extra is an object") {
                        d[k] = v.clone();
                    }
                }
                d
            })
            .collect();
        let media_type = self.flavor.manifest_type();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": self.flavor.config_type(), "digest": config_digest, "size": config.len()},
            "layers": layers,
        });
        let manifest = serde_json::to_vec_pretty(&manifest).expect("manifest JSON");
        Image {
            flavor: self.flavor,
            layers: self.layers.clone(),
            manifest_digest: sha256_digest(&manifest),
            config,
            config_digest,
            manifest,
            media_type,
        }
    }
}

impl Image {
    /// Push the blobs (layers, config) and the manifest under `tag` (or under its digest if
    /// `tag` is `None`). Returns the manifest digest.
    pub fn push(&self, reg: &Registry, repo: &str, tag: Option<&str>) -> String {
        self.push_blobs(reg, repo);
        let reference = tag.map_or_else(|| self.manifest_digest.clone(), str::to_string);
        let digest = reg.push_manifest(repo, &reference, self.media_type, &self.manifest);
        assert_eq!(digest, self.manifest_digest);
        digest
    }

    /// Push only the blobs.
    pub fn push_blobs(&self, reg: &Registry, repo: &str) {
        for l in &self.layers {
            reg.push_blob(repo, &l.blob);
        }
        reg.push_blob(repo, &self.config);
    }
}

/// An index (OCI) or manifest list (Docker) of `entries` (image, os, architecture,
/// variant), with the media type to push it as.
pub fn index(
    flavor: Flavor,
    entries: &[(&Image, &str, &str, Option<&str>)],
) -> (Vec<u8>, &'static str) {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(image, os, arch, variant)| {
            let mut platform = json!({"os": os, "architecture": arch});
            if let Some(v) = variant {
                platform["variant"] = json!(v);
            }
            json!({
                "mediaType": image.media_type,
                "digest": image.manifest_digest,
                "size": image.manifest.len(),
                "platform": platform,
            })
        })
        .collect();
    let media_type = flavor.index_type();
    let body = json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests});
    (serde_json::to_vec(&body).expect("index JSON"), media_type)
}

/// A `systemd-import pull-oci` command trusting `ca_pem`, with its image root, an empty
/// home (so no auth file of the machine is read) and short retry delays.
pub fn pull_oci(ca_pem: &Path, root: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = systemd_import();
    cmd.arg("pull-oci")
        .arg(format!("--image-root={}", root.display()))
        .args(args)
        .env("SSL_CERT_FILE", ca_pem)
        .env_remove("CURL_CA_BUNDLE")
        .env("HOME", home)
        .env("SYSTEMD_IMPORT_TEST_RETRY_DELAY_MS", "20")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG")
        .env_remove("NOTIFY_SOCKET");
    cmd
}

/// A proxy in front of `reg` answering requests for `/manifests/<tag>` with `body` (an OCI
/// manifest, its true digest as `Docker-Content-Digest`) and forwarding everything else.
pub fn serve_manifest(
    reg: &std::sync::Arc<Registry>,
    tag: &str,
    body: Vec<u8>,
) -> super::fault_proxy::FaultProxy {
    let suffix = format!("/manifests/{tag}");
    let digest = sha256_digest(&body);
    super::fault_proxy::FaultProxy::start(reg, move |req, upstream| {
        if req.path.ends_with(&suffix) {
            return super::http::Response::ok(body.clone())
                .header("Content-Type", OCI_MANIFEST)
                .header("Docker-Content-Digest", &digest);
        }
        upstream()
    })
}

/// A small base layer: a directory tree with a few files, a symlink and a hard link.
pub fn base_layer() -> Vec<u8> {
    Tarball::new()
        .dir("etc/")
        .file("etc/os-release", b"ID=test\n")
        .file("etc/hostname", b"base\n")
        .dir("usr/")
        .dir("usr/bin/")
        .file("usr/bin/tool", &[0x7f; 3000])
        .symlink("bin", "usr/bin")
        .hardlink("usr/bin/tool-link", "usr/bin/tool")
        .dir("var/")
        .dir("var/cache/")
        .file("var/cache/a", b"a")
        .file("var/cache/b", b"b")
        .finish()
}

/// `HOME/.docker/config.json` with credentials for `host`.
pub fn write_docker_config(home: &Path, host: &str, user: &str, password: &str) {
    let dir = home.join(".docker");
    std::fs::create_dir_all(&dir).expect("mkdir .docker");
    let auth = openssl::base64::encode_block(format!("{user}:{password}").as_bytes());
    let body = json!({"auths": {host: {"auth": auth}}});
    std::fs::write(dir.join("config.json"), body.to_string()).expect("write config.json");
}

// ---------------------------------------------------------------------------------------------
// Running pulls and checking their results

/// A pull's environment: an image root (a [`TempRoot`], or a directory on a test file
/// system) and an empty HOME, so no auth file of the machine is read.
pub struct PullEnv {
    root: PathBuf,
    _temp_root: Option<TempRoot>,
    pub home: tempfile::TempDir,
}

impl PullEnv {
    /// With a fresh temporary image root.
    pub fn new() -> PullEnv {
        let temp = TempRoot::new();
        PullEnv {
            root: temp.path().to_path_buf(),
            _temp_root: Some(temp),
            home: tempfile::tempdir().expect("home"),
        }
    }

    /// With `root` (which must exist) as the image root.
    pub fn at(root: &Path) -> PullEnv {
        PullEnv {
            root: root.to_path_buf(),
            _temp_root: None,
            home: tempfile::tempdir().expect("home"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pull command against a registry (or proxy) trusting `reg`'s CA.
    pub fn cmd(&self, reg: &Registry, args: &[&str]) -> Command {
        pull_oci(&reg.ca().ca_pem_path(), &self.root, self.home.path(), args)
    }

    pub fn pull(&self, reg: &Registry, args: &[&str]) -> PullOutput {
        run_pull(&mut self.cmd(reg, args))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The entries directly in the image root, sorted.
    pub fn top_level(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.root)
            .expect("read image root")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Fail if anything temporary (`.#…`) is left in the image root.
    pub fn assert_no_temporaries(&self) {
        let left: Vec<String> = self
            .top_level()
            .into_iter()
            .filter(|n| n.starts_with(".#"))
            .collect();
        assert!(left.is_empty(), "temporaries left behind: {left:?}");
    }
}

impl Default for PullEnv {
    fn default() -> Self {
        PullEnv::new()
    }
}

/// A pull's output, with the lines it logged at error level picked out.
pub struct PullOutput {
    /// The output with the priority prefixes removed (what a user sees).
    pub out: CliOutput,
    /// The lines logged at priority error or worse, in order.
    pub errors: Vec<String>,
}

impl std::ops::Deref for PullOutput {
    type Target = CliOutput;
    fn deref(&self) -> &CliOutput {
        &self.out
    }
}

/// Run a pull command with `SYSTEMD_LOG_TARGET=console-prefixed`, so that every line says
/// its priority, and split the output into what users see and the error lines.
pub fn run_pull(cmd: &mut Command) -> PullOutput {
    let mut out = run(cmd.env("SYSTEMD_LOG_TARGET", "console-prefixed"));
    let mut errors = Vec::new();
    let mut lines = Vec::new();
    for line in &out.stderr_lines {
        let parsed = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .and_then(|(prio, text)| Some((prio.parse::<u8>().ok()?, text)));
        match parsed {
            Some((prio, text)) => {
                if prio <= 3 {
                    errors.push(text.to_string());
                }
                lines.push(text.to_string());
            }
            None => lines.push(line.clone()),
        }
    }
    out.stderr = lines.iter().map(|l| format!("{l}\n")).collect();
    out.stderr_lines = lines;
    PullOutput { out, errors }
}

/// The pull succeeded, with the usual last lines.
pub fn assert_success(out: &CliOutput) {
    assert_eq!(out.status, 0, "pull failed:\n{}", out.stderr);
    let n = out.stderr_lines.len();
    assert!(
        n >= 2
            && out.stderr_lines[n - 2] == "Operation completed successfully."
            && out.stderr_lines[n - 1] == "Exiting.",
        "{}",
        out.stderr
    );
}

/// The pull failed (exit status 1), and `line` is the one error it logged.
pub fn assert_failed_with(out: &PullOutput, line: &str) {
    assert_eq!(out.status, 1, "expected a failure:\n{}", out.stderr);
    assert_eq!(
        out.errors,
        [line],
        "expected exactly this error in:\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("Operation completed successfully."),
        "{}",
        out.stderr
    );
}

/// The stderr has `line`.
pub fn assert_line(out: &CliOutput, line: &str) {
    assert!(
        out.stderr_lines.iter().any(|l| l == line),
        "expected {line:?} in:\n{}",
        out.stderr
    );
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// A three-layer image exercising whiteouts, opaque directories and replacements, with an
/// execution config.
pub fn layered_image(builder: ImageBuilder, codecs: [Codec; 3]) -> Image {
    let upper = Tarball::new()
        .dir("etc/")
        .file("etc/hostname", b"upper\n")
        .file("etc/.wh.os-release", b"")
        .dir("var/cache/")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/c", b"c")
        .file("new-file", b"new\n")
        .finish();
    let top = Tarball::new()
        .file("new-file", b"replaced\n")
        .file(".wh.bin", b"")
        .dir("opt/")
        .file("opt/run.sh", b"#!/bin/sh\necho hi\n")
        .finish();
    builder
        .layer(base_layer(), codecs[0])
        .layer(upper, codecs[1])
        .layer(top, codecs[2])
        .exec(json!({
            "User": "app",
            "Env": ["PATH=/usr/bin:/bin", "GREETING=hello world"],
            "Entrypoint": ["/opt/run.sh"],
            "Cmd": ["--flag", "it's"],
            "WorkingDir": "/opt",
            "StopSignal": "SIGINT",
        }))
        .build()
}

/// The tree [`layered_image`] must produce.
pub fn assert_layered_tree(image_dir: &Path) {
    let r = |p: &str| image_dir.join(p);
    assert_eq!(read(&r("etc/hostname")), b"upper\n");
    assert!(!r("etc/os-release").exists(), "whiteout applied");
    assert!(!r("etc/.wh.os-release").exists(), "whiteout hidden");
    assert!(
        !r("var/cache/a").exists() && !r("var/cache/b").exists(),
        "opaque directory applied"
    );
    assert_eq!(
        read(&r("var/cache/c")),
        b"c",
        "opaque keeps the layer's own files"
    );
    assert!(!r("var/cache/.wh..wh..opq").exists());
    assert_eq!(read(&r("new-file")), b"replaced\n");
    assert!(r("bin").symlink_metadata().is_err(), "symlink whited out");
    assert_eq!(read(&r("usr/bin/tool")).len(), 3000);
    assert_eq!(
        std::fs::metadata(r("usr/bin/tool")).unwrap().ino(),
        std::fs::metadata(r("usr/bin/tool-link")).unwrap().ino(),
        "hard link kept"
    );
    assert_eq!(read(&r("opt/run.sh")), b"#!/bin/sh\necho hi\n");
}

/// The settings file [`layered_image`]'s config gives.
pub const LAYERED_NSPAWN: &str = "[Exec]\n\
    Boot=no\n\
    KillSignal=SIGINT\n\
    User=app\n\
    WorkingDirectory=/opt\n\
    Environment=PATH=/usr/bin:/bin\n\
    Environment='GREETING=hello world'\n\
    Parameters=/opt/run.sh --flag 'it'\"'\"'s'\n";

/// A layer of `len` bytes of non-repeating data in one file (compresses badly, so a
/// truncation point inside it is well defined).
pub fn big_file_layer(name: &str, len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    let mut x: u32 = 0x1234_5678;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    Tarball::new().file(name, &data).finish()
}

/// Push a two-layer image (small base, 1 MiB noise on top) as `repo:latest`, pull it
/// through a proxy that stalls the top layer after 100 kB, and send `signal` (SIGINT or
/// SIGTERM) once the base layer is applied. `while_stalled` looks at the image root before
/// the signal. Returns the image and the pull's output.
pub fn pull_interrupted_mid_layer(
    reg: &std::sync::Arc<Registry>,
    env: &PullEnv,
    repo: &str,
    signal: nix::sys::signal::Signal,
    while_stalled: impl FnOnce(),
) -> (Image, CliOutput) {
    let image = ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(big_file_layer("data/noise", 1 << 20), Codec::Gzip)
        .build();
    image.push(reg, repo, Some("latest"));
    let path = format!("/blobs/{}", image.layers[1].digest);
    let proxy = super::fault_proxy::FaultProxy::start(reg, move |req, upstream| {
        if req.path.ends_with(&path) {
            return upstream().stall_after(100_000, std::time::Duration::from_secs(120));
        }
        upstream()
    });
    let mut cmd = env.cmd(reg, &[&format!("{}/{repo}", proxy.host())]);
    let watched = super::cli::spawn_watch(&mut cmd);
    watched.wait_for_stderr_line(
        |l| l.starts_with("Applied layer 1/2 "),
        std::time::Duration::from_secs(60),
    );
    while_stalled();
    watched.signal(signal);
    let out = watched.wait();
    assert_aborted(&out);
    (image, out)
}

/// A pull stopped by SIGINT or SIGTERM: exit status 1, its last lines "Transfer aborted."
/// and "Exiting.".
pub fn assert_aborted(out: &CliOutput) {
    assert_eq!(out.status, 1, "{}", out.stderr);
    let n = out.stderr_lines.len();
    assert_eq!(
        &out.stderr_lines[n - 2..],
        ["Transfer aborted.", "Exiting."],
        "{}",
        out.stderr
    );
}

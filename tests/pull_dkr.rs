//! pull-dkr end to end (spec §4): the real binary against a fake v1 index and registry over
//! HTTPS. Every run checks the request log, the whole log output, what is left in the image
//! root, and the exit status.

mod common;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::btrfs::{BtrfsMount, Ext4Mount};
use common::cli::{run, spawn_watch, CliOutput, TempRoot};
use common::dkr_registry::{DkrRegistry, REGISTRY_HOST};
use common::http::{Request, Response};
use common::tarball::{Header, Tarball};
use systemd_import::util::btrfs;
use systemd_import::util::format::format_bytes;

const REPO: &str = "test/one";
/// Local names nobody has under /var/lib/machines (the "already exists" check looks there).
const LOCAL: &str = "dkr-test-one";

// ---------------------------------------------------------------------------------------
// The image: three layers using aufs whiteouts, an opaque directory, aufs meta entries and
// a hard link to a file of a lower layer.

fn base_tar() -> Vec<u8> {
    let mut t = Tarball::new();
    t.dir("./")
        .dir("etc/")
        .file("etc/os-release", b"ID=fake\n")
        .file("etc/hostname", b"base\n")
        .dir("usr/")
        .dir("usr/bin/")
        .entry(&Header::file("usr/bin/tool").mode(0o755), b"tool v1\n")
        .dir("usr/share/")
        .dir("usr/share/doc/")
        .file("usr/share/doc/a", b"a\n")
        .file("usr/share/doc/b", b"b\n")
        .dir("var/")
        .dir("var/cache/")
        .file("var/cache/junk", b"junk\n")
        // aufs bookkeeping that Docker's aufs-era layers carried: never extracted.
        .file(".wh..wh.aufs", b"")
        .dir(".wh..wh.orph/")
        .dir(".wh..wh.plnk/");
    t.finish()
}

fn middle_tar() -> Vec<u8> {
    let mut t = Tarball::new();
    t.file("etc/.wh.hostname", b"")
        .file("usr/share/doc/.wh..wh..opq", b"")
        .file("usr/share/doc/c", b"c\n")
        .entry(&Header::file("usr/bin/tool").mode(0o755), b"tool v2\n")
        .hardlink("usr/bin/tool-os", "etc/os-release")
        .file("var/.wh.cache", b"");
    t.finish()
}

fn top_tar() -> Vec<u8> {
    let mut t = Tarball::new();
    t.file("etc/motd", b"welcome\n")
        // A whiteout of something no lower layer has (decision Q8: ignored).
        .file("etc/.wh.not-there", b"")
        .symlink("bin", "usr/bin");
    t.finish()
}

struct Image {
    base: String,
    middle: String,
    top: String,
}

impl Image {
    /// Base first.
    fn layers(&self) -> [&str; 3] {
        [&self.base, &self.middle, &self.top]
    }
}

/// A registry serving `test/one:latest` = base ← middle ← top.
fn registry_with_image() -> (DkrRegistry, Image) {
    let reg = DkrRegistry::new();
    let base = reg.add_layer("base", None, &base_tar());
    let middle = reg.add_layer("middle", Some(&base), &middle_tar());
    let top = reg.add_layer("top", Some(&middle), &top_tar());
    reg.tag(REPO, "latest", &top);
    (reg, Image { base, middle, top })
}

/// The tree of each layer, as [`tree`] lists it.
fn expected_base_tree() -> BTreeMap<String, String> {
    entries(&[
        ("etc", "dir 755"),
        ("etc/hostname", "file 644 base\n"),
        ("etc/os-release", "file 644 ID=fake\n"),
        ("usr", "dir 755"),
        ("usr/bin", "dir 755"),
        ("usr/bin/tool", "file 755 tool v1\n"),
        ("usr/share", "dir 755"),
        ("usr/share/doc", "dir 755"),
        ("usr/share/doc/a", "file 644 a\n"),
        ("usr/share/doc/b", "file 644 b\n"),
        ("var", "dir 755"),
        ("var/cache", "dir 755"),
        ("var/cache/junk", "file 644 junk\n"),
    ])
}

fn expected_middle_tree() -> BTreeMap<String, String> {
    entries(&[
        ("etc", "dir 755"),
        ("etc/os-release", "file 644 ID=fake\n"),
        ("usr", "dir 755"),
        ("usr/bin", "dir 755"),
        ("usr/bin/tool", "file 755 tool v2\n"),
        ("usr/bin/tool-os", "file 644 ID=fake\n"),
        ("usr/share", "dir 755"),
        ("usr/share/doc", "dir 755"),
        ("usr/share/doc/c", "file 644 c\n"),
        ("var", "dir 755"),
    ])
}

fn expected_top_tree() -> BTreeMap<String, String> {
    let mut t = expected_middle_tree();
    t.extend(entries(&[
        ("bin", "link usr/bin"),
        ("etc/motd", "file 644 welcome\n"),
    ]));
    t
}

fn entries(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(p, d)| (p.to_string(), d.to_string()))
        .collect()
}

/// Everything below `root` (not `root` itself), symlinks not followed: `dir MODE`,
/// `file MODE CONTENT` or `link TARGET`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(root.join(rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            let path = root.join(&rel);
            let md = std::fs::symlink_metadata(&path).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            let desc = if md.is_dir() {
                walk(root, &rel, out);
                format!("dir {mode:o}")
            } else if md.is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else {
                let content = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
                format!("file {mode:o} {content}")
            };
            out.insert(rel.to_str().unwrap().to_string(), desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn layer_dir(root: &Path, id: &str) -> PathBuf {
    root.join(format!(".dkr-{id}"))
}

/// The names directly in `root`, sorted.
fn names_in(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The root holds exactly these layers (and nothing else: no temporaries, no local
/// image), the base layer with its full tree.
fn assert_only_layers(root: &Path, layers: &[&str], base: &str) {
    let mut want: Vec<String> = layers.iter().map(|id| format!(".dkr-{id}")).collect();
    want.sort();
    assert_eq!(names_in(root), want);
    assert_eq!(tree(&layer_dir(root, base)), expected_base_tree());
}

/// No temporary (`.#…`) entry anywhere in the root.
fn assert_no_temporaries(root: &Path) {
    let temps: Vec<String> = names_in(root)
        .into_iter()
        .filter(|n| n.starts_with(".#"))
        .collect();
    assert!(temps.is_empty(), "temporaries left behind: {temps:?}");
}

// ---------------------------------------------------------------------------------------
// Expected output.

/// The log lines a run must print, plus the json job's lines, which may come anywhere after
/// the tag lookup (the json and ancestry jobs run concurrently).
struct ExpectedLog<'a> {
    reg: &'a DkrRegistry,
    lines: Vec<String>,
    json: Vec<String>,
}

impl<'a> ExpectedLog<'a> {
    fn new(reg: &'a DkrRegistry) -> Self {
        ExpectedLog {
            reg,
            lines: Vec::new(),
            json: Vec::new(),
        }
    }

    fn line(&mut self, line: impl Into<String>) -> &mut Self {
        self.lines.push(line.into());
        self
    }

    /// The job's lines for downloading `path` from the index or the registry.
    fn download_lines(&self, path: &str) -> Vec<String> {
        let base = if path.ends_with("/images") {
            self.reg.index_url()
        } else {
            self.reg.registry_url()
        };
        let url = format!("{base}{path}");
        let len = self.reg.body_of(path).len() as u64;
        vec![
            format!("Downloading {} for {url}.", format_bytes(len)),
            format!("Download of {url} complete."),
        ]
    }

    fn download(&mut self, path: &str) -> &mut Self {
        let lines = self.download_lines(path);
        self.lines.extend(lines);
        self
    }

    /// Only the "Downloading …" line: the download of `path` began and then failed.
    fn started(&mut self, path: &str) -> &mut Self {
        let first = self.download_lines(path).swap_remove(0);
        self.line(first)
    }

    fn pulling(&mut self, repo: &str, tag: &str, local: Option<&str>) -> &mut Self {
        match local {
            Some(local) => self.line(format!(
                "Pulling '{repo}' with tag '{tag}', saving as '{local}'."
            )),
            None => self.line(format!("Pulling '{repo}' with tag '{tag}'.")),
        }
    }

    fn index(&mut self, repo: &str) -> &mut Self {
        self.download(&format!("/v1/repositories/{repo}/images"))
            .line(format!(
                "Index lookup succeeded, directed to registry {REGISTRY_HOST}."
            ))
    }

    fn tags(&mut self, repo: &str, tag: &str, id: &str) -> &mut Self {
        self.json = self.download_lines(&format!("/v1/images/{id}/json"));
        self.download(&format!("/v1/repositories/{repo}/tags/{tag}"))
            .line(format!("Tag lookup succeeded, resolved to layer {id}."))
    }

    fn ancestry(&mut self, id: &str, layers: &[&str]) -> &mut Self {
        self.download(&format!("/v1/images/{id}/ancestry"))
            .line("Ancestor lookup succeeded, requires layers:");
        for layer in layers {
            self.line(format!("\t{layer}"));
        }
        self
    }

    fn layer(&mut self, root: &Path, id: &str) -> &mut Self {
        self.line(format!("Pulling layer {id}..."))
            .download(&format!("/v1/images/{id}/layer"))
            .line(format!(
                "Completed writing to layer {}.",
                layer_dir(root, id).display()
            ))
    }

    fn skipped(&mut self, id: &str) -> &mut Self {
        self.line(format!("Layer {id} already exists, skipping."))
    }

    /// Everything up to the layers, for `repo:tag` = `image` saved as `local`.
    fn up_to_layers(
        &mut self,
        repo: &str,
        tag: &str,
        local: Option<&str>,
        image: &Image,
    ) -> &mut Self {
        self.pulling(repo, tag, local)
            .index(repo)
            .tags(repo, tag, &image.top)
            .ancestry(&image.top, &image.layers())
    }

    /// A pull of `test/one` = `image` into an empty `root`, saved as [`LOCAL`].
    fn fresh_pull(&mut self, root: &Path, image: &Image) -> &mut Self {
        self.up_to_layers(REPO, "latest", Some(LOCAL), image);
        for id in image.layers() {
            self.layer(root, id);
        }
        self.success(Some(LOCAL))
    }

    fn success(&mut self, local: Option<&str>) -> &mut Self {
        if let Some(local) = local {
            self.line(format!("Created new local image '{local}'."));
        }
        self.line("Operation completed successfully.")
            .line("Exiting.")
    }

    fn failure(&mut self, messages: &[&str]) -> &mut Self {
        for m in messages {
            self.line(*m);
        }
        self.line("Exiting.")
    }

    /// The output must be exactly the expected lines, with the json lines either in order
    /// somewhere (required on success) or absent (a failure may cancel the json job).
    fn assert_matches(&self, out: &CliOutput, json_required: bool) {
        let mut rest = Vec::new();
        let mut json_seen = 0;
        for line in &out.stderr_lines {
            if self.json.get(json_seen) == Some(line) {
                json_seen += 1;
            } else {
                rest.push(line.clone());
            }
        }
        assert_eq!(
            rest, self.lines,
            "unexpected log; whole stderr:\n{}",
            out.stderr
        );
        if json_required {
            assert_eq!(
                json_seen,
                self.json.len(),
                "json job lines missing:\n{}",
                out.stderr
            );
        }
    }
}

/// Each request carries exactly the dkr headers: `Accept: application/json`, and the token
/// once the index gave one (else `X-Docker-Token: true`).
fn assert_dkr_headers(req: &Request, token: Option<&str>) {
    let what = format!("{} {}", req.method, req.target());
    assert_eq!(req.method, "GET", "{what}");
    assert_eq!(req.header_all("Accept"), ["application/json"], "{what}");
    assert_eq!(
        req.header("User-Agent"),
        Some("systemd-import/219"),
        "{what}"
    );
    match token {
        Some(token) => {
            assert_eq!(
                req.header_all("Authorization"),
                [format!("Token {token}")],
                "{what}"
            );
            assert!(req.header("X-Docker-Token").is_none(), "{what}");
        }
        None => {
            assert_eq!(req.header_all("X-Docker-Token"), ["true"], "{what}");
            assert!(req.header("Authorization").is_none(), "{what}");
        }
    }
}

/// The registry's request paths for a pull of `image`, checked for order and headers:
/// the tag, then the ancestry, then the `pulled` layers in order; the json request (made
/// together with the ancestry one) anywhere after the tag.
fn assert_registry_requests(
    reg: &DkrRegistry,
    repo: &str,
    tag: &str,
    image: &Image,
    pulled: &[&str],
) {
    let requests = reg.registry.requests();
    let token = reg.token();
    for req in &requests {
        assert_dkr_headers(req, token.as_deref());
    }
    let mut targets: Vec<String> = requests.iter().map(Request::target).collect();
    let json = format!("/v1/images/{}/json", image.top);
    let at = targets.iter().position(|t| *t == json);
    assert!(at.is_some_and(|i| i > 0), "{targets:#?}");
    targets.retain(|t| *t != json);
    let mut want = vec![
        format!("/v1/repositories/{repo}/tags/{tag}"),
        format!("/v1/images/{}/ancestry", image.top),
    ];
    want.extend(pulled.iter().map(|id| format!("/v1/images/{id}/layer")));
    assert_eq!(targets, want);
}

fn assert_index_request(reg: &DkrRegistry, repo: &str) {
    let requests = reg.index.requests();
    assert_eq!(requests.len(), 1, "{:#?}", reg.index.targets());
    assert_eq!(
        requests[0].target(),
        format!("/v1/repositories/{repo}/images")
    );
    assert_dkr_headers(&requests[0], None);
}

// ---------------------------------------------------------------------------------------
// Progress (v219's X_IMPORT_PROGRESS, spec §6.6).

struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            _dir: dir,
            path,
            socket,
        }
    }

    /// Wait up to `timeout` for the next progress value.
    fn next(&self, timeout: Duration) -> Option<u32> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 256];
        let n = self.socket.recv(&mut buf).ok()?;
        let msg = std::str::from_utf8(&buf[..n]).unwrap();
        Some(
            msg.strip_prefix("X_IMPORT_PROGRESS=")
                .unwrap_or_else(|| panic!("unexpected notification {msg:?}"))
                .parse()
                .unwrap(),
        )
    }

    /// Every value sent so far (the sender has exited).
    fn drain(&self) -> Vec<u32> {
        std::iter::from_fn(|| self.next(Duration::from_millis(1))).collect()
    }
}

/// The values rise, stay within 0–95 and include the milestones after the index, tag and
/// ancestry lookups and before the local copy.
fn assert_progress(values: &[u32]) {
    assert!(
        values.windows(2).all(|w| w[0] < w[1]) && values.iter().all(|v| *v <= 95),
        "{values:?}"
    );
    for milestone in [5, 10, 20, 95] {
        assert!(
            values.contains(&milestone),
            "{milestone} missing: {values:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Successful pulls.

/// The layer trees, the local image and the cleanliness every successful pull of the
/// three-layer image must show.
fn assert_pulled_image(root: &Path, image: &Image, local: &str) {
    assert_eq!(tree(&layer_dir(root, &image.base)), expected_base_tree());
    assert_eq!(
        tree(&layer_dir(root, &image.middle)),
        expected_middle_tree()
    );
    assert_eq!(tree(&layer_dir(root, &image.top)), expected_top_tree());
    let local = root.join(local);
    assert_eq!(tree(&local), expected_top_tree());
    // The hard link made in the middle layer to a base-layer file is a hard link still.
    let ino = |p: &str| std::fs::symlink_metadata(local.join(p)).unwrap().ino();
    assert_eq!(ino("usr/bin/tool-os"), ino("etc/os-release"));
    assert_no_temporaries(root);
}

#[test]
fn pull_onto_ext4_builds_plain_directory_layers() {
    let fs = Ext4Mount::new();
    // The image root does not exist yet: it is made, private, as the C tool did.
    let root = fs.path().join("machines");
    let (reg, image) = registry_with_image();
    let notify = NotifySocket::new();

    let out = run(reg
        .command(&root, &["pull-dkr", REPO, LOCAL])
        .env("NOTIFY_SOCKET", &notify.path));

    ExpectedLog::new(&reg)
        .fresh_pull(&root, &image)
        .assert_matches(&out, true);
    assert_eq!(out.status, 0);
    assert_index_request(&reg, REPO);
    assert_registry_requests(&reg, REPO, "latest", &image, &image.layers());
    assert_progress(&notify.drain());

    assert_eq!(mode(&root), 0o700);
    assert_pulled_image(&root, &image, LOCAL);
    let mut want: Vec<String> = image
        .layers()
        .iter()
        .map(|id| format!(".dkr-{id}"))
        .collect();
    want.push(LOCAL.to_string());
    want.sort();
    assert_eq!(names_in(&root), want);
    // Off btrfs "read-only" is the top directory without write bits; the local image is
    // an ordinary writable tree.
    for id in image.layers() {
        assert_eq!(mode(&layer_dir(&root, id)), 0o555, "layer {id}");
    }
    assert_eq!(mode(&root.join(LOCAL)), 0o755);
}

#[test]
fn pull_onto_btrfs_makes_read_only_subvolumes() {
    let fs = BtrfsMount::new();
    let root = fs.path().join("machines");
    let (reg, image) = registry_with_image();

    let out = run(&mut reg.command(&root, &["pull-dkr", REPO, LOCAL]));

    ExpectedLog::new(&reg)
        .fresh_pull(&root, &image)
        .assert_matches(&out, true);
    assert_eq!(out.status, 0);
    assert_pulled_image(&root, &image, LOCAL);

    let subvolume = |p: &Path| {
        let dir = std::fs::File::open(p).unwrap();
        assert!(btrfs::is_subvolume(dir.as_fd()).unwrap(), "{}", p.display());
        btrfs::subvol_get_read_only(dir.as_fd()).unwrap()
    };
    for id in image.layers() {
        let layer = layer_dir(&root, id);
        assert!(subvolume(&layer), "layer {id} must be read-only");
        // The flag, not the mode, makes it read-only.
        assert_eq!(mode(&layer), 0o755);
    }
    assert!(
        !subvolume(&root.join(LOCAL)),
        "the local image must be writable"
    );
    std::fs::write(root.join(LOCAL).join("etc/new"), b"x").unwrap();
    assert_eq!(mode(&root), 0o700);
}

#[test]
fn images_sharing_base_layers_reuse_them() {
    let root = TempRoot::new();
    let (reg, first) = registry_with_image();
    let mut extra = Tarball::new();
    extra.file("etc/motd", b"second\n");
    let other_top = reg.add_layer("other-top", Some(&first.middle), &extra.finish());
    reg.tag("test/two", "v2", &other_top);
    let second = Image {
        base: first.base.clone(),
        middle: first.middle.clone(),
        top: other_top.clone(),
    };

    let out = run(&mut reg.command(root.path(), &["pull-dkr", REPO, LOCAL]));
    assert_eq!(out.status, 0, "{}", out.stderr);

    let index_before = reg.index.requests().len();
    assert_eq!(index_before, 1);
    let registry_before = reg.registry.requests().len();
    let out = run(&mut reg.command(root.path(), &["pull-dkr", "test/two:v2", "dkr-test-two"]));

    let mut log = ExpectedLog::new(&reg);
    log.up_to_layers("test/two", "v2", Some("dkr-test-two"), &second)
        .skipped(&first.base)
        .skipped(&first.middle)
        .layer(root.path(), &other_top)
        .success(Some("dkr-test-two"));
    log.assert_matches(&out, true);
    assert_eq!(out.status, 0);

    // Only the new layer was fetched the second time.
    assert_eq!(reg.index.requests().len(), index_before + 1);
    assert_eq!(
        reg.index.targets().last().unwrap(),
        "/v1/repositories/test/two/images"
    );
    let mut second_run: Vec<String> = reg.registry.targets()[registry_before..].to_vec();
    let json = format!("/v1/images/{other_top}/json");
    assert!(second_run.contains(&json), "{second_run:#?}");
    second_run.retain(|t| *t != json);
    assert_eq!(
        second_run,
        [
            "/v1/repositories/test/two/tags/v2".to_string(),
            format!("/v1/images/{other_top}/ancestry"),
            format!("/v1/images/{other_top}/layer"),
        ]
    );

    assert_pulled_image(root.path(), &first, LOCAL);
    let mut want = expected_middle_tree();
    want.insert("etc/motd".into(), "file 644 second\n".into());
    assert_eq!(tree(&root.path().join("dkr-test-two")), want);
    assert_eq!(tree(&layer_dir(root.path(), &other_top)), want);
}

#[test]
fn an_existing_local_image_is_refused_unless_forced() {
    let root = TempRoot::new();
    let (reg, image) = registry_with_image();
    std::fs::create_dir_all(root.path().join(LOCAL).join("mine")).unwrap();

    // Decision Q9: the image root is searched too, and nothing is downloaded.
    let out = run(&mut reg.command(root.path(), &["pull-dkr", REPO, LOCAL]));
    assert_eq!(out.status, 1);
    assert_eq!(out.stderr, format!("Image '{LOCAL}' already exists.\n"));
    assert!(reg.index.requests().is_empty() && reg.registry.requests().is_empty());
    assert!(root.path().join(LOCAL).join("mine").exists());

    let out = run(reg
        .command(root.path(), &["pull-dkr", REPO, LOCAL])
        .arg("--force"));
    ExpectedLog::new(&reg)
        .fresh_pull(root.path(), &image)
        .assert_matches(&out, true);
    assert_eq!(out.status, 0);
    assert_pulled_image(root.path(), &image, LOCAL);
}

#[test]
fn the_local_name_defaults_to_the_repository_and_dash_means_none() {
    let root = TempRoot::new();
    let (reg, image) = registry_with_image();
    reg.tag("test/dkr-test-default", "latest", &image.top);
    // Without a token from the index, every request asks for one.
    reg.set_token(None);

    let out = run(&mut reg.command(root.path(), &["pull-dkr", "test/dkr-test-default"]));
    let mut log = ExpectedLog::new(&reg);
    log.up_to_layers(
        "test/dkr-test-default",
        "latest",
        Some("dkr-test-default"),
        &image,
    );
    for id in image.layers() {
        log.layer(root.path(), id);
    }
    log.success(Some("dkr-test-default"));
    log.assert_matches(&out, true);
    assert_eq!(out.status, 0);
    assert_eq!(
        tree(&root.path().join("dkr-test-default")),
        expected_top_tree()
    );
    for req in reg.registry.requests() {
        assert_dkr_headers(&req, None);
    }

    // "-": the layers only; they all exist by now.
    let out = run(&mut reg.command(root.path(), &["pull-dkr", "test/one:latest", "-"]));
    let mut log = ExpectedLog::new(&reg);
    log.up_to_layers(REPO, "latest", None, &image);
    for id in image.layers() {
        log.skipped(id);
    }
    log.success(None);
    log.assert_matches(&out, true);
    assert_eq!(out.status, 0);
    let mut want: Vec<String> = image
        .layers()
        .iter()
        .map(|id| format!(".dkr-{id}"))
        .collect();
    want.push("dkr-test-default".into());
    want.sort();
    assert_eq!(names_in(root.path()), want);
}

// ---------------------------------------------------------------------------------------
// Failures: exact messages, exit status 1, no temporaries, no local image.

/// Run a pull of `test/one` into `root` that must fail; returns its output.
fn failed_pull(reg: &DkrRegistry, root: &Path) -> CliOutput {
    let out = run(&mut reg.command(root, &["pull-dkr", REPO, LOCAL]));
    assert_eq!(out.status, 1, "{}", out.stderr);
    if root.exists() {
        assert_no_temporaries(root);
        assert!(!root.join(LOCAL).exists(), "a local image appeared");
    }
    out
}

/// A pull of `test/one` that fails before any layer: exactly the log `expect` adds to the
/// "Pulling …" line, exit status 1, and nothing in the image root.
fn assert_early_failure(reg: &DkrRegistry, expect: impl FnOnce(&mut ExpectedLog)) {
    let root = TempRoot::new();
    let out = failed_pull(reg, root.path());
    let mut log = ExpectedLog::new(reg);
    log.pulling(REPO, "latest", Some(LOCAL));
    expect(&mut log);
    log.assert_matches(&out, false);
    assert!(root.list_all().is_empty(), "{}", out.stderr);
}

#[test]
fn an_index_without_endpoints_fails() {
    let (reg, _) = registry_with_image();
    for endpoints in [None, Some(""), Some(",")] {
        reg.set_endpoints(endpoints);
        assert_early_failure(&reg, |log| {
            log.download(&format!("/v1/repositories/{REPO}/images"))
                .failure(&["Didn't get registry information."]);
        });
    }
    assert!(reg.registry.requests().is_empty());
}

#[test]
fn invalid_endpoint_host_names_fail() {
    let (reg, _) = registry_with_image();
    // Pieces keep their spaces; a port is not part of a host name.
    for endpoints in ["127.0.0.1:5000", "127.0.0.1, 127.0.0.2", "reg..example"] {
        reg.set_endpoints(Some(endpoints));
        assert_early_failure(&reg, |log| {
            log.started(&format!("/v1/repositories/{REPO}/images"))
                .failure(&[
                    "Registry hostname is not valid.",
                    "Failed to retrieve images list. (Wrong index URL?)",
                ]);
        });
    }
    assert!(reg.registry.requests().is_empty());
}

#[test]
fn a_bad_tag_body_fails() {
    let (reg, _) = registry_with_image();
    let tags = format!("/v1/repositories/{REPO}/tags/latest");
    let bodies: [&[u8]; 7] = [
        b"",
        b"\"ABCDEF\"",
        b"\"../etc\"",
        b"[\"aa\"]",
        b"\"aa\" \"bb\"",
        b"\"aa\" x",
        b"{\"id\": \"aa\"}",
    ];
    for body in bodies {
        reg.set_response(&tags, Response::ok(body));
        assert_early_failure(&reg, |log| {
            log.index(REPO)
                .download(&tags)
                .failure(&["Failed to parse JSON id."]);
        });
    }
}

#[test]
fn bad_ancestries_fail() {
    let (reg, image) = registry_with_image();
    let ancestry = format!("/v1/images/{}/ancestry", image.top);
    let too_many: Vec<String> = (0..2049).map(|i| format!("{i:x}")).collect();
    let unparsable = [
        b"[]".to_vec(),
        format!("[\"{0}\",\"{0}\"]", image.top).into_bytes(),
        format!("\"{}\"", image.top).into_bytes(),
        b"[\"ABC\"]".to_vec(),
        format!("[\"{}\"] x", image.top).into_bytes(),
        serde_json::to_vec(&too_many).unwrap(),
    ];
    let cases = unparsable
        .into_iter()
        .map(|body| (body, "Failed to parse JSON id."))
        // Well-formed, but not the image's own chain.
        .chain([(
            format!("[\"{}\",\"{}\"]", image.middle, image.base).into_bytes(),
            "Ancestry doesn't end in main layer.",
        )]);
    for (body, message) in cases {
        reg.set_response(&ancestry, Response::ok(body));
        assert_early_failure(&reg, |log| {
            log.index(REPO)
                .tags(REPO, "latest", &image.top)
                .download(&ancestry)
                .failure(&[message]);
        });
    }
    // A trailing comma is fine (the C tokenizer's grammar).
    reg.set_response(
        &ancestry,
        Response::ok(format!(
            "[\"{}\",\"{}\",\"{}\",]",
            image.top, image.middle, image.base
        )),
    );
    let root = TempRoot::new();
    let out = run(&mut reg.command(root.path(), &["pull-dkr", REPO, LOCAL]));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_pulled_image(root.path(), &image, LOCAL);
}

/// `HTTP request to <url> failed with code 404.` for a path of the registry.
fn http_404(reg: &DkrRegistry, path: &str) -> String {
    format!(
        "HTTP request to {}{path} failed with code 404.",
        reg.registry_url()
    )
}

#[test]
fn a_404_on_the_index_fails() {
    let (reg, _) = registry_with_image();
    let images = format!("/v1/repositories/{REPO}/images");
    reg.set_response(&images, Response::not_found());
    let not_found = format!(
        "HTTP request to {}{images} failed with code 404.",
        reg.index_url()
    );
    assert_early_failure(&reg, |log| {
        log.failure(&[
            &not_found,
            "Failed to retrieve images list. (Wrong index URL?)",
        ]);
    });
}

#[test]
fn a_404_on_the_tag_fails() {
    let (reg, _) = registry_with_image();
    let tags = format!("/v1/repositories/{REPO}/tags/latest");
    reg.set_response(&tags, Response::not_found());
    assert_early_failure(&reg, |log| {
        log.index(REPO)
            .failure(&[&http_404(&reg, &tags), "Failed to retrieve tags list."]);
    });
}

#[test]
fn a_404_on_the_ancestry_fails() {
    let (reg, image) = registry_with_image();
    let ancestry = format!("/v1/images/{}/ancestry", image.top);
    reg.set_response(&ancestry, Response::not_found());
    assert_early_failure(&reg, |log| {
        log.index(REPO).tags(REPO, "latest", &image.top).failure(&[
            &http_404(&reg, &ancestry),
            "Failed to retrieve ancestry list.",
        ]);
    });
}

#[test]
fn a_404_on_the_json_fails() {
    let (reg, image) = registry_with_image();
    let json = format!("/v1/images/{}/json", image.top);
    reg.set_response(&json, Response::not_found());
    // The ancestry is held back, so the json job is the one that ends the pull.
    let _held = reg.hold(&format!("/v1/images/{}/ancestry", image.top));
    assert_early_failure(&reg, |log| {
        log.index(REPO).tags(REPO, "latest", &image.top);
        log.json.clear();
        log.failure(&[&http_404(&reg, &json), "Failed to retrieve json data."]);
    });
}

#[test]
fn a_404_on_a_layer_fails_and_keeps_the_layers_below() {
    let (reg, image) = registry_with_image();
    let layer = format!("/v1/images/{}/layer", image.middle);
    reg.set_response(&layer, Response::not_found());
    let root = TempRoot::new();
    let out = failed_pull(&reg, root.path());
    let mut log = ExpectedLog::new(&reg);
    log.up_to_layers(REPO, "latest", Some(LOCAL), &image)
        .layer(root.path(), &image.base)
        .line(format!("Pulling layer {}...", image.middle))
        .failure(&[&http_404(&reg, &layer), "Failed to retrieve layer data."]);
    log.assert_matches(&out, false);
    assert_only_layers(root.path(), &[&image.base], &image.base);
}

#[test]
fn a_truncated_layer_fails_and_leaves_only_complete_layers() {
    let (reg, image) = registry_with_image();
    let layer = format!("/v1/images/{}/layer", image.top);
    let body = reg.layer_body(&image.top);
    reg.set_response(
        &layer,
        Response::ok(body.clone()).truncate_after(body.len() / 2),
    );
    let root = TempRoot::new();
    let out = failed_pull(&reg, root.path());
    let url = format!("{}{layer}", reg.registry_url());
    let mut log = ExpectedLog::new(&reg);
    log.up_to_layers(REPO, "latest", Some(LOCAL), &image)
        .layer(root.path(), &image.base)
        .layer(root.path(), &image.middle)
        .line(format!("Pulling layer {}...", image.top))
        .started(&layer)
        // The first progress report comes at once (no timings yet).
        .line(format!("Got 50% of {url}."))
        // The connection is cut without a TLS close_notify: curl's receive error.
        .failure(&[
            "Transfer failed: Failure when receiving data from the peer",
            "Failed to retrieve layer data.",
        ]);
    log.assert_matches(&out, false);
    assert_only_layers(root.path(), &[&image.base, &image.middle], &image.base);
}

#[test]
fn a_hostile_layer_is_refused_without_touching_anything_outside() {
    let (reg, image) = registry_with_image();
    let root = TempRoot::new();
    let name = |what: &str| format!("dkr-pwned-{}-{what}", std::process::id());
    // Symlinks out of the tree are followed inside it (these two members are applied
    // harmlessly); a `..` member is refused outright and fails the layer.
    let mut evil = Tarball::new();
    evil.symlink("escape", "/")
        .file(
            &format!("escape/{}", name("abs")),
            b"through an absolute symlink\n",
        )
        .symlink("up", "../../../../../../../..")
        .file(
            &format!("up/{}", name("rel")),
            b"through a relative symlink\n",
        )
        .file(&format!("../{}", name("dotdot")), b"up and out\n");
    let hostile = reg.add_layer("hostile", Some(&image.base), &evil.finish());
    reg.tag("test/evil", "latest", &hostile);

    let out = run(&mut reg.command(root.path(), &["pull-dkr", "test/evil", LOCAL]));
    assert_eq!(out.status, 1, "{}", out.stderr);
    let refusal = format!(
        "Refusing to extract '../{}': member name contains '..'.",
        name("dotdot")
    );
    let mut log = ExpectedLog::new(&reg);
    log.pulling("test/evil", "latest", Some(LOCAL))
        .index("test/evil")
        .tags("test/evil", "latest", &hostile)
        .ancestry(&hostile, &[&image.base, &hostile])
        .layer(root.path(), &image.base)
        .line(format!("Pulling layer {hostile}..."))
        .started(&format!("/v1/images/{hostile}/layer"))
        .failure(&[&refusal, "Failed to retrieve layer data."]);
    log.assert_matches(&out, false);

    let parent = root.path().parent().unwrap();
    for what in ["abs", "rel", "dotdot"] {
        for dir in [Path::new("/"), parent] {
            let p = dir.join(name(what));
            assert!(!p.exists(), "{} was written outside the root", p.display());
        }
    }
    // The base layer is intact; the refused layer's temporary tree is gone.
    assert_only_layers(root.path(), &[&image.base], &image.base);
}

#[test]
fn a_layer_that_appears_meanwhile_fails_the_rename() {
    let (reg, image) = registry_with_image();
    let root = TempRoot::new();
    let layer = format!("/v1/images/{}/layer", image.top);
    let gate = reg.hold(&layer);
    let running = spawn_watch(&mut reg.command(root.path(), &["pull-dkr", REPO, LOCAL]));
    reg.registry
        .wait_for_request(|r| r.path == layer, Duration::from_secs(60));
    // Someone else made the layer after we checked for it.
    let top = layer_dir(root.path(), &image.top);
    std::fs::create_dir(&top).unwrap();
    std::fs::write(top.join("theirs"), b"x").unwrap();
    gate.release();
    let out = running.wait();

    // Decision Q7: the C tool reported success here.
    assert_eq!(out.status, 1);
    let mut log = ExpectedLog::new(&reg);
    log.up_to_layers(REPO, "latest", Some(LOCAL), &image)
        .layer(root.path(), &image.base)
        .layer(root.path(), &image.middle)
        .line(format!("Pulling layer {}...", image.top))
        .download(&layer)
        .failure(&["Failed to rename snaphsot: File exists"]);
    log.assert_matches(&out, false);
    assert_no_temporaries(root.path());
    assert!(!root.path().join(LOCAL).exists());
    assert_eq!(names_in(&top), ["theirs"]);
}

#[test]
fn an_image_root_that_is_not_a_directory_fails_the_layer_check() {
    let (reg, image) = registry_with_image();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("file");
    std::fs::write(&root, b"").unwrap();
    let out = run(&mut reg.command(&root, &["pull-dkr", REPO, "-"]));
    assert_eq!(out.status, 1);
    let mut log = ExpectedLog::new(&reg);
    log.up_to_layers(REPO, "latest", None, &image)
        .failure(&["Failed to check for container: Not a directory"]);
    log.assert_matches(&out, false);
}

#[test]
fn invalid_requests_fail_before_any_download() {
    let (reg, _) = registry_with_image();
    let root = TempRoot::new();
    let index = format!("--dkr-index-url={}", reg.index_url());
    let cases: [(&[&str], &str); 6] = [
        (
            &["--verify=no", "pull-dkr", REPO],
            "Please specify an index URL with --dkr-index-url=",
        ),
        (
            &[&index, "pull-dkr", REPO],
            "Imports from dkr do not support image verification, please pass --verify=no.",
        ),
        (
            &[&index, "--verify=no", "pull-dkr", "one"],
            "Remote name 'one' is not valid.",
        ),
        (
            &[&index, "--verify=no", "pull-dkr", "test/one:a/b"],
            "Tag name 'a/b' is not valid.",
        ),
        (
            &[&index, "--verify=no", "pull-dkr", REPO, "no..pe"],
            "Local image name 'no..pe' is not valid.",
        ),
        (
            &[&index, "--verify=no", "pull-dkr", "test/.hidden"],
            "Local image name '.hidden' is not valid.",
        ),
    ];
    for (args, message) in cases {
        let mut cmd = common::cli::systemd_import();
        cmd.arg(format!("--image-root={}", root.path().display()))
            .args(args);
        let out = run(&mut cmd);
        assert_eq!(out.status, 1, "{args:?}");
        assert_eq!(out.stderr, format!("{message}\n"), "{args:?}");
    }
    assert!(reg.index.requests().is_empty());
    assert!(root.list_all().is_empty());
}

/// `len` deterministic bytes that do not compress (so a gzipped layer is as large as its
/// content): a SHA-256 counter stream.
fn incompressible(seed: u64, len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(len + 32);
    for block in 0u64.. {
        if out.len() >= len {
            break;
        }
        out.extend_from_slice(&Sha256::digest(
            [seed.to_le_bytes(), block.to_le_bytes()].concat(),
        ));
    }
    out.truncate(len);
    out
}

/// Poll `cond` until it holds (the file system has no event we could wait on cheaply).
fn wait_for(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigint_in_the_middle_of_a_layer_cleans_up() {
    signal_in_the_middle_of_a_layer(Signal::SIGINT);
}

#[test]
fn sigterm_in_the_middle_of_a_layer_cleans_up() {
    signal_in_the_middle_of_a_layer(Signal::SIGTERM);
}

/// `signal` while a layer is half applied: "Transfer aborted.", exit status 1, the
/// completed layer stays, the temporary tree goes, no local image.
fn signal_in_the_middle_of_a_layer(signal: Signal) {
    let reg = DkrRegistry::new();
    let base = reg.add_layer("base", None, &base_tar());
    let mut big = Tarball::new();
    for i in 0..64 {
        big.file(&format!("data/blob{i:02}"), &incompressible(i, 16 << 10));
    }
    let big_id = reg.add_layer("big", Some(&base), &big.finish());
    reg.tag(REPO, "latest", &big_id);
    let layer = format!("/v1/images/{big_id}/layer");
    let body = reg.layer_body(&big_id);
    let sent = body.len() / 2;
    // Half the layer, then silence until the server is dropped.
    reg.set_response(
        &layer,
        Response::ok(body.clone()).stall_after(sent, Duration::from_secs(600)),
    );
    let root = TempRoot::new();
    let notify = NotifySocket::new();

    let running = spawn_watch(
        reg.command(root.path(), &["pull-dkr", REPO, LOCAL])
            .env("NOTIFY_SOCKET", &notify.path),
    );
    let url = format!("{}{layer}", reg.registry_url());
    // The job reports progress once a second has passed: the bytes went out and arrived.
    let percent = 100 * sent as u64 / body.len() as u64;
    let got = format!("Got {percent}% of {url}. ");
    running.wait_for_stderr_line(|l| l.starts_with(&got), Duration::from_secs(60));
    // The layer was being applied in a temporary tree.
    wait_for("the temporary layer tree", Duration::from_secs(30), || {
        names_in(root.path()).iter().any(|n| {
            n.starts_with(&format!(".#.dkr-{big_id}")) && root.path().join(n).join("data").exists()
        })
    });
    // Progress moved past "first layer done" (20 + 75/2) into the second layer.
    let mut seen = Vec::new();
    loop {
        match notify.next(Duration::from_secs(30)) {
            Some(v) if v > 57 => break,
            Some(v) => seen.push(v),
            None => panic!("no progress within the layer: {seen:?}"),
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    running.signal(signal);
    let out = running.wait();

    assert_eq!(out.status, 1);
    let mut log = ExpectedLog::new(&reg);
    log.pulling(REPO, "latest", Some(LOCAL))
        .index(REPO)
        .tags(REPO, "latest", &big_id)
        .ancestry(&big_id, &[&base, &big_id])
        .layer(root.path(), &base)
        .line(format!("Pulling layer {big_id}..."))
        .started(&layer);
    let mut rest = out.stderr_lines.clone();
    // The job's progress lines carry timings; the one that matters was waited for above.
    rest.retain(|l| !(l.starts_with("Got ") && l.contains(&format!(" of {url}."))));
    let trimmed = CliOutput {
        stderr_lines: rest,
        ..out.clone()
    };
    log.line("Transfer aborted.").line("Exiting.");
    log.assert_matches(&trimmed, true);

    // The completed layer stays; the temporary tree and any local image do not.
    assert_only_layers(root.path(), &[&base], &base);
}

//! A fake Docker registry v1 for pull-dkr: an index and a registry, two HTTPS servers under
//! one test CA, speaking the protocol of registry-protocols.md §1a.
//!
//! ```ignore
//! let reg = DkrRegistry::new();
//! let base = reg.add_layer("base", None, &base_tar);
//! let top = reg.add_layer("top", Some(&base), &top_tar);
//! reg.tag("test/one", "latest", &top);
//! let out = run(reg.command(&root, &["pull-dkr", "test/one", "box"]));
//! ```
//!
//! * index: `GET /v1/repositories/<ns>/<repo>/images` answers the image list with the
//!   `X-Docker-Token` and `X-Docker-Endpoints` headers ([`DkrRegistry::set_token`],
//!   [`DkrRegistry::set_endpoints`]);
//! * registry: `/v1/repositories/<ns>/<repo>/tags/<tag>`, `/v1/images/<id>/ancestry`
//!   (top first), `/v1/images/<id>/json` and `/v1/images/<id>/layer` (gzipped tar). While a
//!   token is set, a request without `Authorization: Token <token>` gets 401.
//!
//! Fault injection: [`DkrRegistry::set_response`] answers a path with a fixed response
//! instead (a 404, a bad body, a truncated or stalled layer…); [`DkrRegistry::hold`] makes
//! a path's requests wait until the test releases them.
//!
//! The binary reaches the registry through the endpoint host `127.0.0.1` plus the port
//! from `SYSTEMD_IMPORT_TEST_DKR_REGISTRY_PORT`, which [`DkrRegistry::command`] sets.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};

use sha2::{Digest, Sha256};

use super::cli::systemd_import;
use super::http::{lock, HttpServer, Request, Response};
use super::tls::TestCa;

/// The endpoint the index names by default: the registry's address.
pub const REGISTRY_HOST: &str = "127.0.0.1";

/// One layer as the registry stores it.
#[derive(Clone)]
struct Layer {
    parent: Option<String>,
    /// The layer body as served (gzipped tar).
    body: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// Repository → tag → image id.
    repos: HashMap<String, HashMap<String, String>>,
    layers: HashMap<String, Layer>,
    /// `X-Docker-Token` of the index's answer; required by the registry while set.
    token: Option<String>,
    /// `X-Docker-Endpoints` of the index's answer; omitted when `None`.
    endpoints: Option<String>,
    /// Path → fixed response, taking precedence over everything else.
    overrides: HashMap<String, Response>,
    /// Path → gate its requests wait at before being answered.
    gates: HashMap<String, Arc<Gate>>,
}

/// Holds requests for a path until released (see [`DkrRegistry::hold`]).
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    /// Let every waiting and later request through.
    pub fn release(&self) {
        *lock(&self.open) = true;
        self.cv.notify_all();
    }

    fn pass(&self) {
        let mut open = lock(&self.open);
        while !*open {
            open = self.cv.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The fake index and registry. See the module documentation.
pub struct DkrRegistry {
    pub ca: TestCa,
    pub index: HttpServer,
    pub registry: HttpServer,
    state: Arc<Mutex<State>>,
}

/// A 64-hex image id derived from a short name (stable across runs, so logs are
/// predictable).
pub fn layer_id(name: &str) -> String {
    format!("{:x}", Sha256::digest(format!("dkr-test-layer {name}")))
}

/// Gzip `data` (layers are served compressed, as Docker's were).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

impl DkrRegistry {
    /// Empty index and registry; the index hands out the token `fake-token` and names
    /// [`REGISTRY_HOST`] as the endpoint.
    #[allow(clippy::new_without_default)]
    pub fn new() -> DkrRegistry {
        let ca = TestCa::new();
        let state = Arc::new(Mutex::new(State {
            token: Some("signature=fake,repository=\"test\",access=read".to_string()),
            endpoints: Some(REGISTRY_HOST.to_string()),
            ..State::default()
        }));
        let s = Arc::clone(&state);
        let index = HttpServer::start(Some(&ca), move |req| {
            wait_at_gate(&s, req);
            answer_index(&lock(&s), req)
        });
        let s = Arc::clone(&state);
        let registry = HttpServer::start(Some(&ca), move |req| {
            wait_at_gate(&s, req);
            answer_registry(&lock(&s), req)
        });
        DkrRegistry {
            ca,
            index,
            registry,
            state,
        }
    }

    /// Store a layer (`tar` uncompressed; it is served gzipped) under the id
    /// [`layer_id`]`(name)`, and return that id.
    pub fn add_layer(&self, name: &str, parent: Option<&str>, tar: &[u8]) -> String {
        let id = layer_id(name);
        lock(&self.state).layers.insert(
            id.clone(),
            Layer {
                parent: parent.map(str::to_string),
                body: gzip(tar),
            },
        );
        id
    }

    /// Point `repo:tag` at the image `id`.
    pub fn tag(&self, repo: &str, tag: &str, id: &str) {
        lock(&self.state)
            .repos
            .entry(repo.to_string())
            .or_default()
            .insert(tag.to_string(), id.to_string());
    }

    /// The token the index hands out (`None`: no `X-Docker-Token` header).
    pub fn set_token(&self, token: Option<&str>) {
        lock(&self.state).token = token.map(str::to_string);
    }

    pub fn token(&self) -> Option<String> {
        lock(&self.state).token.clone()
    }

    /// The `X-Docker-Endpoints` value (`None`: no such header).
    pub fn set_endpoints(&self, endpoints: Option<&str>) {
        lock(&self.state).endpoints = endpoints.map(str::to_string);
    }

    /// Answer `path` (on either server) with `response` from now on.
    pub fn set_response(&self, path: &str, response: Response) {
        lock(&self.state)
            .overrides
            .insert(path.to_string(), response);
    }

    /// Hold requests for `path` (on either server) until the returned gate is released,
    /// or the registry is dropped. The request is logged before it waits, so
    /// `wait_for_request` sees it.
    pub fn hold(&self, path: &str) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        lock(&self.state)
            .gates
            .insert(path.to_string(), Arc::clone(&gate));
        gate
    }

    /// The layer body as served (gzipped).
    pub fn layer_body(&self, id: &str) -> Vec<u8> {
        lock(&self.state).layers[id].body.clone()
    }

    /// The body the index or registry serves at `path` right now, to predict log lines
    /// such as "Downloading 71B for …".
    pub fn body_of(&self, path: &str) -> Vec<u8> {
        let state = lock(&self.state);
        let headers = state
            .token
            .iter()
            .map(|t| ("Authorization".to_string(), format!("Token {t}")))
            .collect();
        let req = Request {
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            version: "HTTP/1.1".into(),
            headers,
            body: Vec::new(),
            connection_id: 0,
            seq: 0,
        };
        let resp = if path.ends_with("/images") {
            answer_index(&state, &req)
        } else {
            answer_registry(&state, &req)
        };
        resp.body
    }

    /// `https://127.0.0.1:<index port>` (no trailing slash).
    pub fn index_url(&self) -> String {
        self.index.base_url()
    }

    /// `https://127.0.0.1:<registry port>`, the prefix of every registry URL the binary
    /// uses.
    pub fn registry_url(&self) -> String {
        format!("https://{REGISTRY_HOST}:{}", self.registry.port())
    }

    /// `systemd-import --image-root=<root> --verify=no --dkr-index-url=<index>/ <args>`,
    /// trusting the test CA and reaching the registry on its port. The index URL carries a
    /// trailing slash, which the binary must remove.
    pub fn command(&self, root: &Path, args: &[&str]) -> Command {
        let mut cmd = systemd_import();
        cmd.env("SSL_CERT_FILE", self.ca.ca_pem_path())
            .env(
                "SYSTEMD_IMPORT_TEST_DKR_REGISTRY_PORT",
                self.registry.port().to_string(),
            )
            .arg(format!("--image-root={}", root.display()))
            .arg("--verify=no")
            .arg(format!("--dkr-index-url={}/", self.index_url()))
            .args(args);
        cmd
    }
}

impl Drop for DkrRegistry {
    /// Open every gate first, so no connection thread is left waiting when the servers
    /// join them.
    fn drop(&mut self) {
        for gate in lock(&self.state).gates.values() {
            gate.release();
        }
    }
}

fn wait_at_gate(state: &Mutex<State>, req: &Request) {
    let gate = lock(state).gates.get(&req.path).cloned();
    if let Some(gate) = gate {
        gate.pass();
    }
}

fn answer_index(state: &State, req: &Request) -> Response {
    if let Some(r) = state.overrides.get(&req.path) {
        return r.clone();
    }
    let Some(repo) = req
        .path
        .strip_prefix("/v1/repositories/")
        .and_then(|p| p.strip_suffix("/images"))
    else {
        return Response::not_found();
    };
    let Some(tags) = state.repos.get(repo) else {
        return Response::not_found();
    };
    let images: Vec<serde_json::Value> = tags
        .values()
        .map(|id| serde_json::json!({ "id": id, "checksum": "" }))
        .collect();
    let mut resp = Response::json(&serde_json::Value::Array(images));
    if let Some(token) = &state.token {
        resp = resp.header("X-Docker-Token", token);
    }
    if let Some(endpoints) = &state.endpoints {
        resp = resp.header("X-Docker-Endpoints", endpoints);
    }
    resp
}

fn answer_registry(state: &State, req: &Request) -> Response {
    if let Some(r) = state.overrides.get(&req.path) {
        return r.clone();
    }
    if let Some(token) = &state.token {
        if req.header("Authorization") != Some(&format!("Token {token}")) {
            return Response::status(401).body("token required\n");
        }
    }
    if let Some(rest) = req.path.strip_prefix("/v1/repositories/") {
        let Some((repo, tag)) = rest.split_once("/tags/") else {
            return Response::not_found();
        };
        return match state.repos.get(repo).and_then(|t| t.get(tag)) {
            Some(id) => Response::json(&serde_json::Value::String(id.clone())),
            None => Response::not_found(),
        };
    }
    let Some((id, what)) = req
        .path
        .strip_prefix("/v1/images/")
        .and_then(|p| p.split_once('/'))
    else {
        return Response::not_found();
    };
    let Some(layer) = state.layers.get(id) else {
        return Response::not_found();
    };
    match what {
        "ancestry" => {
            let mut chain = vec![id.to_string()];
            let mut parent = layer.parent.clone();
            while let Some(p) = parent {
                parent = state.layers.get(&p).and_then(|l| l.parent.clone());
                chain.push(p);
            }
            Response::json(&serde_json::json!(chain))
        }
        "json" => Response::json(&serde_json::json!({
            "id": id,
            "parent": layer.parent,
            "container_config": { "Cmd": ["/bin/sh"] },
        })),
        "layer" => {
            Response::ok(layer.body.clone()).header("Content-Type", "application/octet-stream")
        }
        _ => Response::not_found(),
    }
}

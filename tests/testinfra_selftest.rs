//! Proof that the shared test fixtures in `tests/common/` do what they promise, exercised with
//! the `curl` crate as the client.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use curl::easy::{Easy, List};
use nix::sys::signal::Signal;

use common::cli::{run, spawn_watch, TempRoot};
use common::http::{forward, request, HttpServer, RangeSupport, Request, Response, Router};
use common::registry::{
    sha256_digest, Access, Challenge, Credentials, Registry, RegistryOptions, TokenOptions,
    TokenValidity, OCI_MANIFEST,
};
use common::tls::TestCa;

const SECOND: Duration = Duration::from_secs(1);

/// A curl easy handle with the body collected into `body`, on `url`, trusting `ca`.
fn get_with(easy: &mut Easy, url: &str) -> Result<(u32, Vec<u8>), curl::Error> {
    easy.url(url)?;
    let mut body = Vec::new();
    {
        let mut transfer = easy.transfer();
        transfer.write_function(|data| {
            body.extend_from_slice(data);
            Ok(data.len())
        })?;
        transfer.perform()?;
    }
    Ok((easy.response_code()?, body))
}

fn get(url: &str, ca: Option<&TestCa>) -> Result<(u32, Vec<u8>), curl::Error> {
    let mut easy = Easy::new();
    if let Some(ca) = ca {
        easy.cainfo(ca.ca_pem_path())?;
    }
    get_with(&mut easy, url)
}

fn hello_server(tls: Option<&TestCa>) -> HttpServer {
    HttpServer::start(tls, |req| match req.path.as_str() {
        "/hello" => Response::ok("hello\n"),
        _ => Response::not_found(),
    })
}

// --- TLS -------------------------------------------------------------------------------------

#[test]
fn https_is_verified_against_the_test_ca() {
    let ca = TestCa::new();
    let server = hello_server(Some(&ca));
    assert!(server.base_url().starts_with("https://127.0.0.1:"));

    let (status, body) = get(&server.url("/hello"), Some(&ca)).expect("GET with the test CA");
    assert_eq!((status, body.as_slice()), (200, &b"hello\n"[..]));

    // Without the CA the certificate must not verify: the TLS is real.
    let err = get(&server.url("/hello"), None).expect_err("GET without trusting the test CA");
    assert!(
        err.is_peer_failed_verification() || err.is_ssl_cacert(),
        "{err}"
    );

    // A CA made elsewhere does not vouch for this server either.
    let other = TestCa::new();
    assert!(get(&server.url("/hello"), Some(&other)).is_err());
}

#[test]
fn extra_dns_names_are_in_the_server_certificate() {
    let ca = TestCa::with_names(&["registry.test"]);
    let server = hello_server(Some(&ca));
    let mut easy = Easy::new();
    easy.cainfo(ca.ca_pem_path()).unwrap();
    let mut resolve = List::new();
    resolve
        .append(&format!("registry.test:{}:127.0.0.1", server.port()))
        .unwrap();
    easy.resolve(resolve).unwrap();
    let url = format!("https://registry.test:{}/hello", server.port());
    let (status, _) = get_with(&mut easy, &url).expect("GET by extra DNS name");
    assert_eq!(status, 200);

    // The files are there for out-of-process servers and clients.
    for path in [
        ca.ca_pem_path(),
        ca.server_cert_path(),
        ca.server_key_path(),
    ] {
        let pem = fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN "), "{}", path.display());
    }
}

// --- HTTP server behaviours ------------------------------------------------------------------

#[test]
fn keep_alive_reuses_one_connection_and_honours_connection_close() {
    let server = hello_server(None);
    let mut easy = Easy::new();
    for _ in 0..2 {
        let (status, _) = get_with(&mut easy, &server.url("/hello")).unwrap();
        assert_eq!(status, 200);
    }
    let log = server.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].connection_id, log[1].connection_id);
    assert_eq!((log[0].seq, log[1].seq), (0, 1));
    assert_eq!(server.connections(), 1);

    // A client asking to close gets its connection closed: the next request needs a new one.
    let mut headers = List::new();
    headers.append("Connection: close").unwrap();
    easy.http_headers(headers).unwrap();
    get_with(&mut easy, &server.url("/hello")).unwrap();
    easy.http_headers(List::new()).unwrap();
    get_with(&mut easy, &server.url("/hello")).unwrap();
    let log = server.requests();
    assert_eq!(log[2].connection_id, log[1].connection_id);
    assert_ne!(log[3].connection_id, log[2].connection_id);
    assert_eq!(server.connections(), 2);
}

#[test]
fn fifty_parallel_connections_are_served_at_once() {
    const CLIENTS: usize = 50;
    // Every handler waits until all clients are inside the server: this only finishes if the
    // connections really are served in parallel.
    let barrier = Arc::new(std::sync::Barrier::new(CLIENTS));
    let server_barrier = Arc::clone(&barrier);
    let server = Arc::new(HttpServer::start(None, move |req| {
        server_barrier.wait();
        Response::ok(req.path.clone())
    }));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = server.url(&format!("/{i}"));
            std::thread::spawn(move || get(&url, None).unwrap().1)
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        assert_eq!(client.join().unwrap(), format!("/{i}").into_bytes());
    }
    assert_eq!(server.connections(), CLIENTS as u64);
}

#[test]
fn chunked_and_close_delimited_bodies_arrive_whole() {
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let expected = body.clone();
    let ca = TestCa::new();
    let server = HttpServer::start(Some(&ca), move |req| match req.path.as_str() {
        "/chunked" => Response::ok(body.clone()).chunked(),
        "/until-close" => Response::ok(body.clone()).no_content_length(),
        _ => Response::not_found(),
    });
    let chunked = request("GET", &server.url("/chunked"), &[], b"", Some(&ca)).unwrap();
    assert_eq!(chunked.header("Transfer-Encoding"), Some("chunked"));
    assert_eq!(chunked.header("Content-Length"), None);
    assert_eq!(chunked.body, expected);

    // Over TLS too: the server sends close_notify, so the end is not taken for a truncation.
    let until_close = request("GET", &server.url("/until-close"), &[], b"", Some(&ca)).unwrap();
    assert_eq!(until_close.header("Content-Length"), None);
    assert_eq!(until_close.header("Connection"), Some("close"));
    assert_eq!(until_close.body, expected);
}

#[test]
fn truncated_and_missing_responses_are_client_errors() {
    let server = HttpServer::start(None, |req| match req.path.as_str() {
        "/truncated" => Response::ok(vec![7u8; 10_000]).truncate_after(100),
        "/nothing" => Response::ok("never sent").close_without_response(),
        _ => Response::not_found(),
    });
    let err = get(&server.url("/truncated"), None).expect_err("truncated body");
    assert!(err.is_partial_file(), "{err}");
    let err = get(&server.url("/nothing"), None).expect_err("no response");
    assert!(err.is_got_nothing(), "{err}");
}

#[test]
fn stall_trips_a_low_speed_limit_and_drop_does_not_wait_for_it() {
    let server = HttpServer::start(None, |_| {
        Response::ok(vec![1u8; 1000]).stall_after(10, Duration::from_secs(3600))
    });
    let mut easy = Easy::new();
    // curl averages the speed over its last few seconds: a limit well above 10 bytes per
    // second makes the 10 bytes sent before the stall not keep the transfer alive.
    easy.low_speed_limit(1000).unwrap();
    easy.low_speed_time(SECOND).unwrap();
    let mut received = 0;
    let result = {
        easy.url(&server.url("/stall")).unwrap();
        let mut transfer = easy.transfer();
        transfer
            .write_function(|data| {
                received += data.len();
                Ok(data.len())
            })
            .unwrap();
        transfer.perform()
    };
    let err = result.expect_err("stalled transfer");
    assert!(err.is_operation_timedout(), "{err}");
    assert_eq!(received, 10);
    // The handler thread is still "stalling" for an hour: dropping must cut that short.
    drop(server);
}

#[test]
fn slow_and_delayed_responses_still_deliver_everything() {
    let server = HttpServer::start(None, |req| match req.path.as_str() {
        "/slow" => Response::ok(vec![3u8; 4000]).slow(40_000),
        "/delayed" => Response::ok("late").delay(Duration::from_millis(20)),
        _ => Response::not_found(),
    });
    assert_eq!(get(&server.url("/slow"), None).unwrap().1, vec![3u8; 4000]);
    assert_eq!(get(&server.url("/delayed"), None).unwrap().1, b"late");
}

fn range_request(server: &HttpServer, path: &str, range: Option<&str>) -> common::http::HttpReply {
    let mut headers = Vec::new();
    if let Some(r) = range {
        headers.push(("Range", r));
    }
    request("GET", &server.url(path), &headers, b"", None).unwrap()
}

#[test]
fn ranged_responses_answer_206_or_200() {
    let server = HttpServer::start(None, |req| {
        let full = b"0123456789".to_vec();
        match req.path.as_str() {
            "/ranged" => Response::ranged(req, full),
            "/no-ranges" => Response::ranged_with(req, full, RangeSupport::Ignore),
            _ => Response::not_found(),
        }
    });
    let r = range_request(&server, "/ranged", Some("bytes=4-"));
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 4-9/10"));
    assert_eq!(r.body, b"456789");

    let r = range_request(&server, "/ranged", Some("bytes=2-3"));
    assert_eq!((r.status, r.body.as_slice()), (206, &b"23"[..]));
    assert_eq!(r.header("Content-Range"), Some("bytes 2-3/10"));

    let r = range_request(&server, "/ranged", None);
    assert_eq!((r.status, r.body.len()), (200, 10));

    let r = range_request(&server, "/ranged", Some("bytes=10-"));
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */10"));

    let r = range_request(&server, "/no-ranges", Some("bytes=4-"));
    assert_eq!((r.status, r.body.len()), (200, 10));
    assert_eq!(r.header("Content-Range"), None);
}

#[test]
fn redirects_are_followed_and_logged_in_order() {
    let server = HttpServer::start(None, |req| match req.path.as_str() {
        "/old" => Response::redirect(302, "/new"),
        "/new" => Response::ok("moved here"),
        _ => Response::not_found(),
    });
    let mut easy = Easy::new();
    easy.follow_location(true).unwrap();
    let (status, body) = get_with(&mut easy, &server.url("/old")).unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"moved here"[..]));
    assert_eq!(server.targets(), vec!["/old", "/new"]);
}

#[test]
fn request_log_records_method_target_headers_and_body() {
    let server = HttpServer::start(None, |_| Response::status(201));
    let reply = request(
        "POST",
        &server.url("/upload/x?scope=repository%3Afoo%3Apull&scope=b+c&n=1"),
        &[("X-Test", "yes"), ("Authorization", "Basic dXNlcjpwYXNz")],
        b"payload",
        None,
    )
    .unwrap();
    assert_eq!(reply.status, 201);
    let req = server.wait_for_request(|r| r.path == "/upload/x", SECOND);
    assert_eq!(req.method, "POST");
    assert_eq!(req.version, "HTTP/1.1");
    assert_eq!(req.header("x-test"), Some("yes"));
    assert_eq!(req.body, b"payload");
    assert_eq!(req.query_param("n").as_deref(), Some("1"));
    assert_eq!(
        req.query_params("scope"),
        vec!["repository:foo:pull".to_string(), "b c".to_string()]
    );
    assert_eq!(req.basic_auth(), Some(("user".into(), "pass".into())));
    assert_eq!(req.connection_id, 1);
    // No Accept/Content-Type defaults sneak in from curl.
    assert_eq!(req.header("Accept"), None);
    assert_eq!(req.header("Content-Type"), None);
}

#[test]
fn stateful_handlers_fail_first_then_succeed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let server = HttpServer::start(None, move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            Response::status(500)
        } else {
            Response::ok("second time")
        }
    });
    assert_eq!(get(&server.url("/"), None).unwrap().0, 500);
    assert_eq!(get(&server.url("/"), None).unwrap().0, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_panicking_handler_answers_500_and_fails_the_test_on_drop() {
    let server = HttpServer::start(None, |_| panic!("assertion inside handler"));
    assert_eq!(get(&server.url("/"), None).unwrap().0, 500);
    let msg = panic_message(|| drop(server));
    assert!(msg.contains("assertion inside handler"), "{msg}");
}

#[test]
fn router_dispatches_exact_paths_with_fallback() {
    let router = Router::new()
        .route("/a", |_| Response::ok("A"))
        .serve_bytes("/file", b"0123456789".to_vec());
    let server = HttpServer::start(None, router.into_handler());
    assert_eq!(get(&server.url("/a?x=1"), None).unwrap().1, b"A");
    assert_eq!(get(&server.url("/b"), None).unwrap().0, 404);
    let r = range_request(&server, "/file", Some("bytes=8-"));
    assert_eq!((r.status, r.body.as_slice()), (206, &b"89"[..]));

    let with_fallback = Router::new().fallback(|req: &Request| Response::ok(req.path.clone()));
    let server = HttpServer::start(None, with_fallback.into_handler());
    assert_eq!(get(&server.url("/anything"), None).unwrap().1, b"/anything");
}

#[test]
fn forward_proxies_to_an_https_upstream_and_allows_tampering() {
    let ca = Arc::new(TestCa::new());
    let upstream = HttpServer::start(Some(&ca), |req| match req.path.as_str() {
        "/data" => Response::ok(format!("upstream saw {:?}", req.header("X-Client")))
            .header("X-Upstream", "1"),
        "/blob" => Response::ok(vec![5u8; 1234]),
        _ => Response::not_found(),
    });
    let upstream_base = upstream.base_url();
    let proxy_ca = Arc::clone(&ca);
    let proxy = HttpServer::start(None, move |req| {
        let resp = forward(req, &upstream_base, Some(&proxy_ca));
        if req.path == "/blob" && req.method == "GET" {
            resp.truncate_after(10)
        } else {
            resp
        }
    });
    let r = request("GET", &proxy.url("/data"), &[("X-Client", "c")], b"", None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream saw Some(\"c\")");
    assert_eq!(r.header("X-Upstream"), Some("1"));
    assert_eq!(upstream.requests()[0].path, "/data");

    let head = request("HEAD", &proxy.url("/blob"), &[], b"", None).unwrap();
    assert_eq!(head.header("Content-Length"), Some("1234"));
    let err = get(&proxy.url("/blob"), None).expect_err("tampered blob");
    assert!(err.is_partial_file(), "{err}");
    assert_eq!(
        request("GET", &proxy.url("/nope"), &[], b"", None)
            .unwrap()
            .status,
        404
    );
}

// --- Registry --------------------------------------------------------------------------------

/// Push a tiny OCI image (config + one layer + manifest tagged `tag`) with the push helper.
fn push_tiny_image(reg: &Registry, repo: &str, tag: &str) -> (Vec<u8>, String, String) {
    let layer = b"not really a tarball".to_vec();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer_digest = reg.push_blob(repo, &layer);
    assert_eq!(layer_digest, sha256_digest(&layer));
    let config_digest = reg.push_blob(repo, config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = reg.push_manifest(repo, tag, OCI_MANIFEST, &manifest);
    assert_eq!(digest, sha256_digest(&manifest));
    (manifest, digest, layer_digest)
}

#[test]
fn plain_registry_push_and_get_back() {
    let reg = Registry::start(RegistryOptions::plain());
    assert_eq!(reg.url(), format!("https://{}", reg.host()));

    let ping = request(
        "GET",
        &format!("{}/v2/", reg.url()),
        &[],
        b"",
        Some(reg.ca()),
    )
    .unwrap();
    assert_eq!(ping.status, 200);
    assert_eq!(
        ping.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );

    let (manifest, digest, layer_digest) = push_tiny_image(&reg, "library/tiny", "latest");
    for reference in ["latest", digest.as_str()] {
        let r = reg.get(&format!("/v2/library/tiny/manifests/{reference}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, manifest);
        assert_eq!(r.header("Content-Type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("Docker-Content-Digest"), Some(digest.as_str()));
    }
    let blob = reg.get(&format!("/v2/library/tiny/blobs/{layer_digest}"));
    assert_eq!(
        (blob.status, blob.body.as_slice()),
        (200, &b"not really a tarball"[..])
    );
    assert!(reg.storage_dir().is_dir());
}

#[test]
fn basic_auth_registry_demands_credentials() {
    let reg = Registry::start(RegistryOptions::basic("alice", "s3cret"));
    let url = format!("{}/v2/", reg.url());
    let anonymous = request("GET", &url, &[], b"", Some(reg.ca())).unwrap();
    assert_eq!(anonymous.status, 401);
    let challenge = Challenge::parse(anonymous.header("WWW-Authenticate").unwrap()).unwrap();
    assert_eq!(challenge.scheme, "Basic");

    let ping_as = |creds: &Credentials| {
        let auth = creds.basic_header();
        let headers = [("Authorization", auth.as_str())];
        request("GET", &url, &headers, b"", Some(reg.ca()))
            .unwrap()
            .status
    };
    assert_eq!(ping_as(&Credentials::new("alice", "wrong")), 401);
    assert_eq!(ping_as(reg.credentials().unwrap()), 200);

    // The push helper authenticates by itself.
    let (manifest, _, _) = push_tiny_image(&reg, "private/img", "v1");
    assert_eq!(reg.get("/v2/private/img/manifests/v1").body, manifest);
}

/// Ask the token server for a token as a client would, following `challenge`.
fn fetch_token(
    reg: &Registry,
    challenge: &Challenge,
    basic: Option<&Credentials>,
) -> (u32, String) {
    let realm = challenge.param("realm").unwrap();
    let mut url = format!(
        "{realm}?service={}",
        common::http::percent_encode(challenge.param("service").unwrap())
    );
    if let Some(scope) = challenge.param("scope") {
        url.push_str(&format!("&scope={}", common::http::percent_encode(scope)));
    }
    let auth = basic.map(Credentials::basic_header);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let r = request("GET", &url, &headers, b"", Some(reg.ca())).unwrap();
    if r.status != 200 {
        return (r.status, String::new());
    }
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["token"], json["access_token"]);
    (r.status, json["token"].as_str().unwrap().to_string())
}

fn get_manifest(reg: &Registry, path: &str, token: Option<&str>) -> common::http::HttpReply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Accept", OCI_MANIFEST)];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b));
    }
    request(
        "GET",
        &format!("{}{path}", reg.url()),
        &headers,
        b"",
        Some(reg.ca()),
    )
    .unwrap()
}

#[test]
fn token_auth_registry_accepts_tokens_from_the_token_server() {
    let reg = Registry::start(RegistryOptions::token(TokenOptions::default()));
    let (manifest, _, _) = push_tiny_image(&reg, "library/tok", "latest");
    assert!(
        reg.token_server().requests().is_empty(),
        "the push helper mints in-process"
    );

    let path = "/v2/library/tok/manifests/latest";
    let unauthorized = get_manifest(&reg, path, None);
    assert_eq!(unauthorized.status, 401);
    let challenge = Challenge::parse(unauthorized.header("WWW-Authenticate").unwrap()).unwrap();
    assert_eq!(challenge.scheme, "Bearer");
    assert_eq!(
        challenge.param("realm"),
        Some(reg.token_server().realm().as_str())
    );
    assert_eq!(challenge.param("service"), Some("test-registry"));
    assert_eq!(
        challenge.param("scope"),
        Some("repository:library/tok:pull")
    );

    let (status, token) = fetch_token(&reg, &challenge, None);
    assert_eq!(status, 200);
    let r = get_manifest(&reg, path, Some(&token));
    assert_eq!(r.status, 200, "{}\n{}", r.text(), reg.log());
    assert_eq!(r.body, manifest);

    let log = reg.token_server().requests();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].query_param("service").as_deref(),
        Some("test-registry")
    );
    assert_eq!(
        log[0].query_params("scope"),
        vec!["repository:library/tok:pull".to_string()]
    );
    assert_eq!(log[0].basic_auth(), None);

    // A token expired beyond the registry's leeway is refused; the next one works again.
    reg.token_server().expire_next_tokens(1);
    let (_, expired) = fetch_token(&reg, &challenge, None);
    assert_eq!(get_manifest(&reg, path, Some(&expired)).status, 401);
    let (_, fresh) = fetch_token(&reg, &challenge, None);
    assert_eq!(get_manifest(&reg, path, Some(&fresh)).status, 200);

    // Minted tokens: scoped per repository, and Expired really is.
    let minted = reg.token_server().mint(
        "someone",
        &[Access::repository("library/tok", &["pull"])],
        TokenValidity::Valid,
    );
    assert_eq!(get_manifest(&reg, path, Some(&minted)).status, 200);
    let other_repo = reg.token_server().mint(
        "someone",
        &[Access::repository("library/other", &["pull"])],
        TokenValidity::Valid,
    );
    assert_eq!(get_manifest(&reg, path, Some(&other_repo)).status, 401);
}

#[test]
fn token_server_with_credentials_refuses_anonymous_and_wrong_users() {
    let options = TokenOptions {
        credentials: Some(Credentials::new("bob", "hunter2")),
        anonymous_pull: false,
        ..TokenOptions::default()
    };
    let reg = Registry::start(RegistryOptions::token(options));
    push_tiny_image(&reg, "team/app", "1.0");
    let path = "/v2/team/app/manifests/1.0";
    let challenge = Challenge::parse(
        get_manifest(&reg, path, None)
            .header("WWW-Authenticate")
            .unwrap(),
    )
    .unwrap();

    assert_eq!(fetch_token(&reg, &challenge, None).0, 401);
    let wrong = Credentials::new("bob", "nope");
    assert_eq!(fetch_token(&reg, &challenge, Some(&wrong)).0, 401);
    let (status, token) = fetch_token(&reg, &challenge, reg.credentials());
    assert_eq!(status, 200);
    assert_eq!(get_manifest(&reg, path, Some(&token)).status, 200);

    let log = reg.token_server().requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[2].basic_auth(), Some(("bob".into(), "hunter2".into())));
}

#[test]
fn challenge_and_scope_parsing() {
    let c = Challenge::parse(
        r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push",error="insufficient_scope""#,
    )
    .unwrap();
    assert_eq!(c.scheme, "Bearer");
    assert_eq!(c.param("Realm"), Some("https://auth.example/token"));
    assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
    assert_eq!(c.param("error"), Some("insufficient_scope"));

    let a = Access::parse_scope("repository:host:5000/a/b:pull,push").unwrap();
    assert_eq!(a.name, "host:5000/a/b");
    assert_eq!(a.actions, vec!["pull", "push"]);
    assert_eq!(a.scope(), "repository:host:5000/a/b:pull,push");
    assert!(Access::parse_scope("nonsense").is_none());
}

// --- CLI helpers -----------------------------------------------------------------------------

#[test]
fn run_captures_status_stdout_and_stderr_lines() {
    let out = run(std::process::Command::new("/bin/sh")
        .args(["-c", "echo out; echo err1 >&2; printf 'err2' >&2; exit 3"]));
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr_lines, vec!["err1", "err2"]);
    assert_eq!(out.stderr, "err1\nerr2\n");
}

#[test]
fn spawn_watch_signals_when_a_stderr_line_appears() {
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args([
        "-c",
        "sleep 1000 >/dev/null 2>&1 & child=$!; \
         trap 'kill $child; echo got TERM >&2; exit 7' TERM; \
         echo ready >&2; wait",
    ]);
    let watched = spawn_watch(&mut cmd);
    let line = watched.wait_for_stderr_line(|l| l.starts_with("ready"), Duration::from_secs(30));
    assert_eq!(line, "ready");
    watched.signal(Signal::SIGTERM);
    let out = watched.wait();
    assert_eq!(out.status, 7);
    assert_eq!(out.stderr_lines, vec!["ready", "got TERM"]);

    // Killed by a signal without a handler: 128 + signal number.
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", "echo up >&2; exec sleep 1000"]);
    let watched = spawn_watch(&mut cmd);
    watched.wait_for_stderr_line(|l| l == "up", Duration::from_secs(30));
    watched.signal(Signal::SIGINT);
    assert_eq!(watched.wait().status, 128 + libc::SIGINT);
}

#[test]
fn systemd_import_command_has_a_clean_environment() {
    let cmd = common::cli::systemd_import();
    assert!(std::path::Path::new(cmd.get_program()).is_file());
    let removed: Vec<_> = cmd
        .get_envs()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    assert!(removed.iter().any(|k| k == "https_proxy"), "{removed:?}");
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("expected a panic");
    match payload.downcast::<String>() {
        Ok(msg) => *msg,
        Err(payload) => payload.downcast_ref::<&str>().unwrap().to_string(),
    }
}

#[test]
fn waits_that_cannot_succeed_fail_with_what_was_seen() {
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.args(["-c", "echo only-line >&2"]);
    let watched = spawn_watch(&mut cmd);
    let msg = panic_message(|| {
        watched.wait_for_stderr_line(|l| l == "never", Duration::from_secs(60));
    });
    assert!(
        msg.contains("stderr closed") && msg.contains("only-line"),
        "{msg}"
    );
    assert_eq!(watched.wait().status, 0);

    let server = hello_server(None);
    get(&server.url("/hello"), None).unwrap();
    let msg = panic_message(|| {
        server.wait_for_request(|r| r.path == "/never", Duration::from_millis(1));
    });
    assert!(msg.contains("GET /hello"), "{msg}");
}

#[test]
fn temp_root_lists_everything_left_behind() {
    let root = TempRoot::new();
    assert!(root.list_all().is_empty());
    fs::create_dir_all(root.path().join(".tmp-img/usr")).unwrap();
    fs::write(root.path().join(".tmp-img/usr/.hidden"), b"x").unwrap();
    fs::write(root.path().join("img.raw"), b"x").unwrap();
    symlink("/nonexistent", root.path().join("dangling")).unwrap();
    let expected: Vec<PathBuf> = [
        ".tmp-img",
        ".tmp-img/usr",
        ".tmp-img/usr/.hidden",
        "dangling",
        "img.raw",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    assert_eq!(root.list_all(), expected);
}

//! Proof that the fleet fixtures in `tests/common/` (a pull-through cache, a registry
//! demanding a client certificate, a plain-HTTP registry, nginx under a path prefix, a
//! CONNECT proxy) are the real thing, exercised with the `curl` crate as the client. A
//! missing program fails these tests (the fixtures assert it), it never skips them.

mod common;

use std::path::Path;

use curl::easy::{Easy2, Handler, List, WriteError};

use common::connect_proxy::ConnectProxy;
use common::daemon::eventually;
use common::fleet_registry::{logged_requests, ExtraRegistry, LoggedRequest};
use common::nginx::PathPrefixProxy;
use common::oci::{base_layer, Codec, Image, ImageBuilder};
use common::registry::{sha256_digest, Registry, RegistryOptions, OCI_MANIFEST};

/// How a test request is made.
#[derive(Default)]
struct Get<'a> {
    ca: Option<&'a Path>,
    client_cert: Option<(&'a Path, &'a Path)>,
    proxy: Option<&'a str>,
    headers: Vec<&'a str>,
}

/// Collects a response body.
struct Body(Vec<u8>);

impl Handler for Body {
    fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        self.0.extend_from_slice(data);
        Ok(data.len())
    }
}

/// GET `url` with curl; the status and body.
fn get(url: &str, how: &Get) -> Result<(u32, Vec<u8>), curl::Error> {
    let mut easy = Easy2::new(Body(Vec::new()));
    easy.url(url)?;
    if let Some(ca) = how.ca {
        easy.cainfo(ca)?;
    }
    if let Some((cert, key)) = how.client_cert {
        easy.ssl_cert(cert)?;
        easy.ssl_key(key)?;
    }
    // Never the proxy of the environment the tests run in.
    easy.proxy(how.proxy.unwrap_or(""))?;
    let mut headers = List::new();
    headers.append(&format!("Accept: {OCI_MANIFEST}"))?;
    for h in &how.headers {
        headers.append(h)?;
    }
    easy.http_headers(headers)?;
    easy.perform()?;
    let status = easy.response_code()?;
    Ok((status, std::mem::take(&mut easy.get_mut().0)))
}

/// A small image pushed to `reg` as `library/demo:v1`.
fn push_demo(reg: &Registry) -> Image {
    let image = ImageBuilder::oci().layer(base_layer(), Codec::Gzip).build();
    image.push(reg, "library/demo", Some("v1"));
    image
}

#[test]
fn pull_through_cache_serves_an_htpasswd_origin_and_can_be_stopped() {
    let origin = Registry::start(RegistryOptions::basic("alice", "s3cret"));
    let image = push_demo(&origin);
    let mut cache = ExtraRegistry::pull_through_cache(&origin);
    let ca = cache.ca().expect("the cache has TLS").ca_pem_path();
    let how = Get {
        ca: Some(&ca),
        ..Get::default()
    };
    // Anonymous at the cache; the cache logs in at the origin.
    let (status, body) = get(
        &format!("{}/v2/library/demo/manifests/v1", cache.url()),
        &how,
    )
    .expect("manifest through the cache");
    assert_eq!(
        status,
        200,
        "CACHE:\n{}\nORIGIN:\n{}",
        cache.log(),
        origin.log()
    );
    assert_eq!(sha256_digest(&body), image.manifest_digest);
    let blob_url = format!(
        "{}/v2/library/demo/blobs/{}",
        cache.url(),
        image.layers[0].digest
    );
    let (status, blob) = get(&blob_url, &how).expect("blob through the cache");
    assert_eq!(
        (status, sha256_digest(&blob)),
        (200, image.layers[0].digest.clone())
    );

    // The origin saw the cache (Go's client, with credentials), not us.
    let asked: Vec<LoggedRequest> = eventually("the origin to log the blob request", || {
        let asked: Vec<LoggedRequest> = logged_requests(&origin.log())
            .into_iter()
            .filter(|r| r.uri.starts_with("/v2/library/demo/") && r.status == 200)
            .collect();
        asked
            .iter()
            .any(|r| r.uri.contains("/blobs/"))
            .then_some(asked)
    });
    assert!(
        asked
            .iter()
            .all(|r| r.user_agent.starts_with("Go-http-client/")),
        "{asked:?}"
    );
    // The cache logs the requests it answered.
    eventually("the cache to log the manifest request", || {
        logged_requests(&cache.log())
            .iter()
            .any(|r| r.uri == "/v2/library/demo/manifests/v1" && r.status == 200)
            .then_some(())
    });

    // Once the cache stored the blob (its first fetch streams it from the origin and
    // stores a second copy from the origin in the background), a second fetch is served
    // from its storage.
    eventually("the cache to store the blob", || {
        cache.has_blob(&image.layers[0].digest).then_some(())
    });
    let blob_gets = || {
        logged_requests(&origin.log())
            .iter()
            .filter(|r| r.method == "GET" && r.uri.contains("/blobs/"))
            .count()
    };
    eventually("the origin to log both blob fetches", || {
        (blob_gets() >= 2).then_some(())
    });
    let before = logged_requests(&origin.log()).len();
    assert_eq!(get(&blob_url, &how).expect("blob again").0, 200);
    let blob_again = logged_requests(&origin.log())[before..]
        .iter()
        .any(|r| r.uri.contains("/blobs/"));
    assert!(!blob_again, "the cache asked the origin for the blob again");

    cache.stop();
    let err = get(&blob_url, &how).expect_err("a stopped cache does not answer");
    assert!(err.is_couldnt_connect(), "{err}");
}

#[test]
fn client_certificate_registry_refuses_clients_without_one() {
    let origin = Registry::start(RegistryOptions::plain());
    let image = push_demo(&origin);
    let reg = ExtraRegistry::requiring_client_cert(&origin);
    let ca = reg.ca().expect("TLS").ca_pem_path();
    let url = format!("{}/v2/library/demo/manifests/v1", reg.url());
    let without = Get {
        ca: Some(&ca),
        ..Get::default()
    };
    let err = get(&url, &without).expect_err("no client certificate");
    assert!(
        !err.is_couldnt_connect(),
        "the TLS handshake failed, not the connect: {err}"
    );
    // A certificate from another CA is refused too.
    let stranger = common::tls::TestCa::new();
    let other = stranger.sign_server_cert_for(&["stranger"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), other.cert.to_pem().unwrap()).unwrap();
    std::fs::write(
        dir.path().join("k.pem"),
        other.key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let wrong = Get {
        ca: Some(&ca),
        client_cert: Some((&dir.path().join("c.pem"), &dir.path().join("k.pem"))),
        ..Get::default()
    };
    assert!(get(&url, &wrong).is_err());

    let (cert, key) = (reg.client_cert_path(), reg.client_key_path());
    let with = Get {
        ca: Some(&ca),
        client_cert: Some((&cert, &key)),
        ..Get::default()
    };
    let (status, body) = get(&url, &with).expect("with the client certificate");
    assert_eq!(status, 200, "{}", reg.log());
    assert_eq!(sha256_digest(&body), image.manifest_digest);
}

#[test]
fn plain_http_registry_serves_the_origins_storage() {
    let origin = Registry::start(RegistryOptions::plain());
    let image = push_demo(&origin);
    let reg = ExtraRegistry::plain_http(&origin);
    assert!(reg.url().starts_with("http://127.0.0.1:"));
    let (status, body) = get(
        &format!("{}/v2/library/demo/manifests/v1", reg.url()),
        &Get::default(),
    )
    .expect("plain HTTP");
    assert_eq!(status, 200, "{}", reg.log());
    assert_eq!(sha256_digest(&body), image.manifest_digest);
    // It really is plain HTTP: TLS to it fails.
    let https = reg.url().replace("http://", "https://");
    assert!(get(&format!("{https}/v2/"), &Get::default()).is_err());
}

#[test]
fn nginx_serves_the_registry_under_a_path_prefix_and_logs_headers() {
    let origin = Registry::start(RegistryOptions::plain());
    let image = push_demo(&origin);
    let front = PathPrefixProxy::start(&origin, "/mirror");
    assert_eq!(
        front.api_root(),
        format!("https://{}/mirror/v2", front.host())
    );
    let ca = front.ca().ca_pem_path();
    let how = Get {
        ca: Some(&ca),
        headers: vec!["X-Fleet: hello"],
        ..Get::default()
    };
    let (status, body) = get(
        &format!("{}/library/demo/manifests/v1", front.api_root()),
        &how,
    )
    .expect("through nginx");
    assert_eq!(status, 200, "{}", front.log());
    assert_eq!(sha256_digest(&body), image.manifest_digest);
    // Outside the prefix there is nothing.
    let (status, _) = get(&format!("https://{}/v2/", front.host()), &how).expect("no prefix");
    assert_eq!(status, 404);
    let requests = eventually("nginx to log both requests", || {
        Some(front.requests()).filter(|r| r.len() >= 2)
    });
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].uri, "/mirror/v2/library/demo/manifests/v1");
    assert_eq!(
        (requests[0].status, requests[0].x_fleet.as_str()),
        (200, "hello")
    );
    assert!(requests[0].user_agent.is_empty() || requests[0].user_agent == "-");
    // The registry saw the request without the prefix.
    eventually("the registry to log the request without the prefix", || {
        logged_requests(&origin.log())
            .iter()
            .any(|r| r.uri == "/v2/library/demo/manifests/v1")
            .then_some(())
    });
}

#[test]
fn tinyproxy_tunnels_https_to_loopback_ports_with_connect() {
    let origin = Registry::start(RegistryOptions::plain());
    let proxy = ConnectProxy::start();
    assert!(proxy.url().starts_with("http://127.0.0.1:"));
    let ca = origin.ca().ca_pem_path();
    let how = Get {
        ca: Some(&ca),
        proxy: Some(&proxy.url()),
        ..Get::default()
    };
    let (status, _) = get(&format!("{}/v2/", origin.url()), &how).expect("through the proxy");
    assert_eq!(status, 200, "{}", proxy.log());
    assert_eq!(proxy.connect_targets(), [origin.host()], "{}", proxy.log());
    // Without the proxy nothing more reaches it.
    get(
        &format!("{}/v2/", origin.url()),
        &Get {
            ca: Some(&ca),
            ..Get::default()
        },
    )
    .unwrap();
    assert_eq!(proxy.requests().len(), 1, "{:?}", proxy.requests());
}

#[test]
fn registry_log_lines_are_read() {
    let line = r#"time="2026-01-01T00:00:00Z" level=info msg="response completed" http.request.method=GET http.request.remoteaddr="127.0.0.1:41234" http.request.uri="/v2/a/manifests/1" http.request.useragent="Go-http-client/1.1 \"x\"" http.response.status=200"#;
    assert_eq!(
        logged_requests(line),
        [LoggedRequest {
            method: "GET".into(),
            uri: "/v2/a/manifests/1".into(),
            user_agent: "Go-http-client/1.1 \"x\"".into(),
            status: 200,
            remote_addr: "127.0.0.1:41234".into(),
        }]
    );
}

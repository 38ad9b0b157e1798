//! pull-oci fetches each layer blob on a TCP connection of its own (HTTP/1.1), also after a
//! redirect to blob storage elsewhere, while the small requests before them go over HTTP/2
//! where the server speaks it. Debian's `docker-registry` speaks HTTP/2 over TLS: a client
//! multiplexing the layers would send them all on the one connection the config came
//! over. Its log names each request's client address and port, one per connection.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::daemon::eventually;
use common::fault_proxy::FaultProxy;
use common::fleet_registry::{logged_requests, LoggedRequest};
use common::http::Response;
use common::oci::PullEnv;
use common::oci::{assert_success, base_layer, big_file_layer, Codec, Image, ImageBuilder};
use common::registry::{Registry, RegistryOptions};

/// Bytes of noise in each of the three upper layers (below the ranged fetch's threshold:
/// each layer goes in one request, and the three overlap).
const NOISE: usize = 2 << 20;

/// An image of a small base and three layers of noise, pushed as `repo:latest`.
fn image(reg: &Registry, repo: &str) -> Image {
    let image = ImageBuilder::oci()
        .layer(base_layer(), Codec::Gzip)
        .layer(big_file_layer("data/a", NOISE), Codec::None)
        .layer(big_file_layer("data/b", NOISE), Codec::None)
        .layer(big_file_layer("data/c", NOISE), Codec::None)
        .build();
    image.push(reg, repo, Some("latest"));
    image
}

/// The registry's answers to GETs of `digest`'s blob (waiting for its log to hold `n`).
fn blob_gets(reg: &Registry, digest: &str, n: usize) -> Vec<LoggedRequest> {
    let what = format!("{n} GETs of {digest} in the registry's log");
    eventually(&what, || {
        let gets: Vec<_> = logged_requests(&reg.log())
            .into_iter()
            .filter(|r| r.method == "GET" && r.uri.ends_with(&format!("/blobs/{digest}")))
            .collect();
        (gets.len() >= n).then_some(gets)
    })
}

/// The layers' downloads reached the registry on at least `min_connections` connections
/// (each blob asked for once), none of them the config's.
fn assert_layers_on_connections_of_their_own(
    reg: &Registry,
    image: &Image,
    min_connections: usize,
) {
    let config = blob_gets(reg, &image.config_digest, 1);
    assert_eq!(config.len(), 1, "{config:?}");
    let mut addrs = BTreeSet::new();
    for layer in &image.layers {
        let gets = blob_gets(reg, &layer.digest, 1);
        assert_eq!(gets.len(), 1, "{gets:?}");
        assert!(!gets[0].remote_addr.is_empty(), "{gets:?}");
        addrs.insert(gets[0].remote_addr.clone());
    }
    assert!(
        addrs.len() >= min_connections,
        "layers on {} connections, {min_connections} wanted: {addrs:?}\nregistry log:\n{}",
        addrs.len(),
        reg.log()
    );
    assert!(
        !addrs.contains(&config[0].remote_addr),
        "no layer multiplexed on the config's connection ({})",
        config[0].remote_addr
    );
}

#[test]
fn concurrent_layers_arrive_on_connections_of_their_own() {
    let reg = Registry::start(RegistryOptions::plain());
    let image = image(&reg, "conns/ocit-app");
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/conns/ocit-app", reg.host())]);
    assert_success(&out);
    // The layers' downloads start together: none can take over another's connection.
    assert_layers_on_connections_of_their_own(&reg, &image, image.layers.len());
    env.assert_no_temporaries();
}

#[test]
fn redirected_layers_arrive_on_connections_of_their_own() {
    let reg = Arc::new(Registry::start(RegistryOptions::plain()));
    let image = image(&reg, "redir/ocit-app");
    // Every blob (the config too) is answered with a 307 to the registry itself: the
    // storage host of the redirect, where the version chosen must hold as well.
    let storage = reg.url();
    let proxy = FaultProxy::start(&reg, move |req, upstream| {
        if req.path.contains("/blobs/sha256:") {
            return Response::redirect(307, &format!("{storage}{}", req.path));
        }
        upstream()
    });
    let env = PullEnv::new();
    let out = env.pull(&reg, &[&format!("{}/redir/ocit-app", proxy.host())]);
    assert_success(&out);
    assert_eq!(
        proxy.requests_for("/blobs/").len(),
        image.layers.len() + 1,
        "{}",
        out.stderr
    );
    // Here each download reaches the registry when its redirect has come back, at its own
    // time: a layer may find the connection of one already finished idle and reuse it
    // (HTTP/1.1 keep-alive, one request at a time). Multiplexed, all would share the
    // config's connection.
    assert_layers_on_connections_of_their_own(&reg, &image, 2);
    env.assert_no_temporaries();
}

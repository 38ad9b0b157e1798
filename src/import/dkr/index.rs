//! What the index's answer to `GET /v1/repositories/<name>/images` tells us: an access
//! token and the registries that hold the repository, both in response headers (spec
//! §4.3 step 1). The body (a list of image ids) is not used.

use crate::util::error::{Error, Result};
use crate::util::validate::hostname_is_valid;

/// The token header: sent as `X-Docker-Token: true` to ask for a token, answered with the
/// token itself.
pub const HEADER_TOKEN: &str = "X-Docker-Token";
/// The header listing the registries, comma-separated.
pub const HEADER_REGISTRY: &str = "X-Docker-Endpoints";

/// The index's answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IndexReply {
    /// Sent back to the registries as `Authorization: Token <token>`.
    pub token: Option<String>,
    /// Registry host names; the first one is used.
    pub registries: Vec<String>,
}

/// Read the index's headers (in arrival order, names matched case-insensitively, values
/// already stripped of surrounding whitespace). A later header replaces an earlier one of
/// the same name, as the C header hook did; every endpoint list is checked as it comes.
///
/// The endpoint list is split at commas with empty pieces dropped (systemd's
/// `strv_split`), but pieces are **not** trimmed: `a, b` yields ` b`, which is not a valid
/// host name, exactly as in the C tool. A `host:port` piece is not valid either.
/// An invalid piece gives EBADMSG (logged by the caller as "Registry hostname is not
/// valid.").
pub fn parse_headers(headers: &[(String, String)]) -> Result<IndexReply> {
    let mut reply = IndexReply::default();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(HEADER_TOKEN) {
            reply.token = Some(value.clone());
        } else if name.eq_ignore_ascii_case(HEADER_REGISTRY) {
            let registries: Vec<String> = value
                .split(',')
                .filter(|piece| !piece.is_empty())
                .map(str::to_string)
                .collect();
            if !registries.iter().all(|r| hostname_is_valid(r)) {
                return Err(Error::new(libc::EBADMSG));
            }
            reply.registries = registries;
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn token_and_endpoints_are_read_case_insensitively() {
        let reply = parse_headers(&headers(&[
            ("Content-Type", "application/json"),
            (
                "x-docker-token",
                "signature=abc,repository=\"a/b\",access=read",
            ),
            ("X-DOCKER-ENDPOINTS", "reg1.example,reg2.example"),
        ]))
        .unwrap();
        assert_eq!(
            reply.token.as_deref(),
            Some("signature=abc,repository=\"a/b\",access=read")
        );
        assert_eq!(reply.registries, ["reg1.example", "reg2.example"]);
    }

    #[test]
    fn later_headers_replace_earlier_ones() {
        let reply = parse_headers(&headers(&[
            ("X-Docker-Token", "one"),
            ("X-Docker-Endpoints", "a.example"),
            ("X-Docker-Token", "two"),
            ("X-Docker-Endpoints", "b.example"),
        ]))
        .unwrap();
        assert_eq!(reply.token.as_deref(), Some("two"));
        assert_eq!(reply.registries, ["b.example"]);
    }

    #[test]
    fn empty_pieces_are_dropped_and_nothing_is_nothing() {
        let reply = parse_headers(&headers(&[("X-Docker-Endpoints", ",a,,b,")])).unwrap();
        assert_eq!(reply.registries, ["a", "b"]);
        let reply = parse_headers(&headers(&[("X-Docker-Endpoints", "")])).unwrap();
        assert!(reply.registries.is_empty());
        assert_eq!(parse_headers(&[]).unwrap(), IndexReply::default());
    }

    #[test]
    fn pieces_keep_their_spaces_and_must_be_host_names() {
        for bad in ["a, b", "a ,b", "host:5000", "a..b", ".a", "a/b", "a,-_.x."] {
            let e = parse_headers(&headers(&[("X-Docker-Endpoints", bad)])).unwrap_err();
            assert_eq!(e.errno(), libc::EBADMSG, "{bad}");
        }
        // An invalid list fails even if a valid one follows.
        let e = parse_headers(&headers(&[
            ("X-Docker-Endpoints", "a b"),
            ("X-Docker-Endpoints", "ok"),
        ]))
        .unwrap_err();
        assert_eq!(e.errno(), libc::EBADMSG);
        let reply = parse_headers(&headers(&[("X-Docker-Endpoints", "127.0.0.1,reg_1")])).unwrap();
        assert_eq!(reply.registries, ["127.0.0.1", "reg_1"]);
    }
}

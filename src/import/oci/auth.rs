//! Registry authentication: `WWW-Authenticate` challenges (RFC 7235), the Bearer token
//! request of distribution's token spec, and the `Authorization` header we send.
//!
//! Credentials (from the auth files) go to the registry (Basic) and to its token realm
//! (Basic, on the token request), never anywhere else: blob redirects are followed by curl,
//! which drops a custom `Authorization` header when the host or port changes, and
//! descriptors' `urls` are fetched without any.

use super::encoding::{base64_encode, percent_encode};

/// One challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased (`bearer`, `basic`, …).
    pub scheme: String,
    /// auth-params in order: names lowercased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A user name and password from an auth file.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print a password, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.user)
    }
}

impl Credentials {
    /// `Basic <base64(user:password)>`.
    pub fn basic(&self) -> String {
        format!(
            "Basic {}",
            base64_encode(format!("{}:{}", self.user, self.password).as_bytes())
        )
    }
}

/// How requests to the registry are authorized right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorization {
    /// Nothing sent (the registry did not ask, or the token flow is anonymous… until a
    /// token arrives).
    Anonymous,
    /// `Authorization: Basic …` with the user's credentials.
    Basic(String),
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl Authorization {
    /// The request header line, if any.
    pub fn header(&self) -> Option<String> {
        match self {
            Authorization::Anonymous => None,
            Authorization::Basic(value) => Some(format!("Authorization: {value}")),
            Authorization::Bearer(token) => Some(format!("Authorization: Bearer {token}")),
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A small cursor over the header value.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_spaces_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("")
    }

    /// A quoted-string (backslash escapes any character) or a token (token68 `/` and
    /// `=` included, as some servers send unquoted base64).
    fn value(&mut self) -> Option<String> {
        if self.peek() == Some(b'"') {
            self.pos += 1;
            let mut out = Vec::new();
            loop {
                match self.peek()? {
                    b'"' => {
                        self.pos += 1;
                        return String::from_utf8(out).ok();
                    }
                    b'\\' => {
                        self.pos += 1;
                        out.push(self.peek()?);
                        self.pos += 1;
                    }
                    c => {
                        out.push(c);
                        self.pos += 1;
                    }
                }
            }
        }
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| is_tchar(b) || b == b'/' || b == b'=')
        {
            self.pos += 1;
        }
        Some(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    /// Whether a `name=` auth-param starts here (as opposed to the next challenge's scheme).
    fn at_param(&self) -> bool {
        let mut i = self.pos;
        while self.s.get(i).copied().is_some_and(is_tchar) {
            i += 1;
        }
        if i == self.pos {
            return false;
        }
        while matches!(self.s.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        // `name=` but not a token68's trailing `==`.
        self.s.get(i) == Some(&b'=') && self.s.get(i + 1) != Some(&b'=')
    }
}

/// Parse a `WWW-Authenticate` value, which may hold several challenges
/// (`Bearer realm="…",service="…", Basic realm="…"`). Malformed trailing parts are
/// dropped; what parsed before them is kept.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut c = Cursor {
        s: header.as_bytes(),
        pos: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        c.skip_spaces_and_commas();
        if c.peek().is_none() {
            break;
        }
        if c.at_param() {
            // A parameter without a scheme before it: malformed, stop here.
            break;
        }
        let scheme = c.token().to_ascii_lowercase();
        if scheme.is_empty() {
            break;
        }
        let mut challenge = Challenge {
            scheme,
            params: Vec::new(),
        };
        c.skip_spaces();
        if !c.at_param() && c.peek().is_some_and(|b| b != b',') {
            // token68 (e.g. `Negotiate abc==`): not used by registries; skip it.
            let _ = c.value();
        }
        loop {
            c.skip_spaces_and_commas();
            if !c.at_param() {
                break;
            }
            let name = c.token().to_ascii_lowercase();
            c.skip_spaces();
            c.pos += 1; // '='
            c.skip_spaces();
            let Some(value) = c.value() else {
                out.push(challenge);
                return out;
            };
            challenge.params.push((name, value));
        }
        out.push(challenge);
    }
    out
}

/// `realm?service=…&scope=…` (one `scope=` per scope; the realm may have a query already).
pub fn token_url(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
    let mut url = realm.to_string();
    let mut separator = if realm.contains('?') { '&' } else { '?' };
    let mut add = |key: &str, value: &str| {
        url.push(separator);
        url.push_str(key);
        url.push('=');
        url.push_str(&percent_encode(value));
        separator = '&';
    };
    if let Some(service) = service {
        add("service", service);
    }
    for scope in scopes {
        add("scope", scope);
    }
    url
}

/// The token from a token server's JSON answer: `token`, else `access_token`. Refuses
/// anything that could not be sent as a header value.
pub fn parse_token_response(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
    }
    let r: TokenResponse = serde_json::from_slice(body).ok()?;
    let token = r
        .token
        .filter(|t| !t.is_empty())
        .or(r.access_token.filter(|t| !t.is_empty()))?;
    token.bytes().all(|b| b.is_ascii_graphic()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn bearer_challenge_with_quoted_values() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(
            params(&c[0]),
            [
                ("realm", "https://auth.docker.io/token"),
                ("service", "registry.docker.io"),
                ("scope", "repository:samalba/my-app:pull,push"),
            ]
        );
    }

    #[test]
    fn escapes_spaces_tokens_and_case() {
        let c = parse_challenges(
            r#"BEARER  Realm = "https://a/t?x=\"y\"" , Service=reg.example, error="invalid_token""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some(r#"https://a/t?x="y""#));
        assert_eq!(c[0].param("service"), Some("reg.example"));
        assert_eq!(c[0].param("error"), Some("invalid_token"));
    }

    #[test]
    fn several_challenges_in_one_header() {
        let c = parse_challenges(
            r#"Negotiate abc==, Basic realm="Registry Realm", Bearer realm="https://t/token",service="s""#,
        );
        let schemes: Vec<&str> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["negotiate", "basic", "bearer"]);
        assert_eq!(c[1].param("realm"), Some("Registry Realm"));
        assert_eq!(c[2].param("service"), Some("s"));
        assert!(c[0].params.is_empty());
    }

    #[test]
    fn malformed_headers_do_not_panic() {
        for h in [
            "",
            ",,,",
            "=x",
            "Bearer realm=\"unterminated",
            "Bearer realm=",
            "Basic",
        ] {
            let _ = parse_challenges(h);
        }
        assert_eq!(parse_challenges("Basic")[0].scheme, "basic");
        assert!(parse_challenges("=x").is_empty());
        let c = parse_challenges("Bearer realm=\"unterminated");
        assert_eq!(c.len(), 1);
        assert!(c[0].params.is_empty());
    }

    #[test]
    fn token_urls_and_responses() {
        assert_eq!(
            token_url(
                "https://auth.example/token",
                Some("registry.example"),
                &["repository:library/debian:pull".to_string()]
            ),
            "https://auth.example/token?service=registry.example&scope=repository%3Alibrary%2Fdebian%3Apull"
        );
        assert_eq!(
            token_url("https://a/t?x=1", None, &["s".to_string()]),
            "https://a/t?x=1&scope=s"
        );
        assert_eq!(
            parse_token_response(br#"{"token":"abc","expires_in":60}"#).as_deref(),
            Some("abc")
        );
        assert_eq!(
            parse_token_response(br#"{"access_token":"xyz"}"#).as_deref(),
            Some("xyz")
        );
        assert_eq!(
            parse_token_response(br#"{"token":"","access_token":"xyz"}"#).as_deref(),
            Some("xyz")
        );
        assert_eq!(parse_token_response(br#"{"token":"a\r\nX: y"}"#), None);
        assert_eq!(parse_token_response(br#"{}"#), None);
        assert_eq!(parse_token_response(b"not json"), None);
    }

    #[test]
    fn authorization_headers() {
        let c = Credentials {
            user: "alice".into(),
            password: "s3cret".into(),
        };
        assert_eq!(c.basic(), "Basic YWxpY2U6czNjcmV0");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(Authorization::Anonymous.header(), None);
        assert_eq!(
            Authorization::Bearer("t".into()).header().as_deref(),
            Some("Authorization: Bearer t")
        );
        assert_eq!(
            Authorization::Basic(c.basic()).header().as_deref(),
            Some("Authorization: Basic YWxpY2U6czNjcmV0")
        );
    }
}

//! Registry error responses (`{"errors":[{"code","message","detail"}]}`, distribution
//! spec "Error Codes") as one line for a message.

use serde::Deserialize;

/// Longest description we print, so a hostile server cannot flood the log.
const DESCRIPTION_MAX: usize = 512;

#[derive(Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    code: Option<String>,
    message: Option<String>,
}

/// `CODE: message; CODE2: message2 (HTTP 404)`, or `HTTP 404` when the body is not a
/// registry error document. Control characters are dropped.
pub fn describe(status: u32, body: &[u8]) -> String {
    let parts: Vec<String> = serde_json::from_slice::<ErrorBody>(body)
        .map(|b| {
            b.errors
                .into_iter()
                .map(|e| match (e.code, e.message) {
                    (Some(c), Some(m)) if !m.is_empty() => format!("{c}: {m}"),
                    (Some(c), _) => c,
                    (None, Some(m)) => m,
                    (None, None) => "UNKNOWN".to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        return format!("HTTP {status}");
    }
    let mut text: String = parts
        .join("; ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if text.len() > DESCRIPTION_MAX {
        let mut cut = DESCRIPTION_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    format!("{text} (HTTP {status})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_become_one_line() {
        assert_eq!(
            describe(
                404,
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#
            ),
            "MANIFEST_UNKNOWN: manifest unknown (HTTP 404)"
        );
        assert_eq!(
            describe(
                401,
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"a\nb"},{"code":"DENIED"}]}"#
            ),
            "UNAUTHORIZED: ab; DENIED (HTTP 401)"
        );
        assert_eq!(describe(500, b"<html>oops</html>"), "HTTP 500");
        assert_eq!(describe(404, br#"{"errors":[]}"#), "HTTP 404");
        let long = format!(
            r#"{{"errors":[{{"code":"X","message":"{}"}}]}}"#,
            "é".repeat(600)
        );
        let d = describe(400, long.as_bytes());
        assert!(d.ends_with("… (HTTP 400)") && d.len() < 600, "{d}");
    }
}

//! C-style escaping as systemd does it: `xescape` turns a URL or an ETag into a string
//! that is safe as part of a file name (spec §5.1), `cunescape` reads it back.

use crate::util::error::{Error, Result};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Escape `s`: every byte below 0x20 or from 0x7f up, every `\`, and every byte of `bad`
/// becomes `\xHH` (lowercase hex). All other bytes are copied.
///
/// The cache naming uses `bad = "/.#\"'"`, so `http://x/y.raw` becomes
/// `http:\x2f\x2fx\x2fy\x2eraw`.
pub fn xescape(s: &str, bad: &str) -> String {
    xescape_bytes(s.as_bytes(), bad)
}

/// [`xescape`] for arbitrary bytes (the result is always ASCII).
pub fn xescape_bytes(s: &[u8], bad: &str) -> String {
    let bad = bad.as_bytes();
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if !(0x20..0x7f).contains(&b) || b == b'\\' || bad.contains(&b) {
            out.push('\\');
            out.push('x');
            out.push(HEX_DIGITS[usize::from(b >> 4)] as char);
            out.push(HEX_DIGITS[usize::from(b & 0xf)] as char);
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Undo C escapes: `\xHH`, octal `\NNN`, `\uXXXX`, `\UXXXXXXXX` (encoded as UTF-8),
/// `\a \b \f \n \r \t \v \\ \" \'`. An unknown or incomplete escape, a trailing lone
/// `\`, an escape that yields NUL, and a result that is not UTF-8 are EINVAL.
pub fn cunescape(s: &str) -> Result<String> {
    String::from_utf8(cunescape_bytes(s)?).map_err(|_| Error::new(libc::EINVAL))
}

/// [`cunescape`] without the UTF-8 requirement on the result: `\xHH` can produce any byte
/// but NUL.
pub fn cunescape_bytes(s: &str) -> Result<Vec<u8>> {
    let input = s.as_bytes();
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let consumed = unescape_one(&input[i + 1..], &mut out)?;
        i += 1 + consumed;
    }
    Ok(out)
}

fn einval<T>() -> Result<T> {
    Err(Error::new(libc::EINVAL))
}

/// The value of `n` hex digits at the start of `s` (EINVAL when fewer or not hex).
fn hex_value(s: &[u8], n: usize) -> Result<u32> {
    if s.len() < n {
        return einval();
    }
    s[..n]
        .iter()
        .try_fold(0u32, |acc, &c| match (c as char).to_digit(16) {
            Some(d) => Ok(acc << 4 | d),
            None => einval(),
        })
}

/// Decode the escape whose text (after the backslash) starts `s`, append its bytes to
/// `out`, and return how many bytes of `s` it used.
fn unescape_one(s: &[u8], out: &mut Vec<u8>) -> Result<usize> {
    let Some(&kind) = s.first() else {
        return einval();
    };
    let simple = match kind {
        b'a' => Some(0x07),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        b'v' => Some(0x0b),
        b'\\' | b'"' | b'\'' => Some(kind),
        _ => None,
    };
    if let Some(byte) = simple {
        out.push(byte);
        return Ok(1);
    }
    match kind {
        b'x' => {
            let value = hex_value(&s[1..], 2)?;
            if value == 0 {
                return einval();
            }
            out.push(value as u8);
            Ok(3)
        }
        b'u' | b'U' => {
            let digits = if kind == b'u' { 4 } else { 8 };
            let value = hex_value(&s[1..], digits)?;
            // NUL, surrogates and values past U+10FFFF are refused.
            let c = match char::from_u32(value) {
                Some(c) if value != 0 => c,
                _ => return einval(),
            };
            let mut utf8 = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            Ok(1 + digits)
        }
        b'0'..=b'7' => {
            // Exactly three octal digits, value 1..=255.
            if s.len() < 3 || !s[..3].iter().all(|c| (b'0'..=b'7').contains(c)) {
                return einval();
            }
            let value = s[..3]
                .iter()
                .fold(0u32, |acc, &c| acc << 3 | u32::from(c - b'0'));
            if value == 0 || value > 0xff {
                return einval();
            }
            out.push(value as u8);
            Ok(3)
        }
        _ => einval(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CACHE_BAD: &str = "/.#\"'";

    #[test]
    fn spec_vectors() {
        assert_eq!(
            xescape("http://x/y.raw", CACHE_BAD),
            "http:\\x2f\\x2fx\\x2fy\\x2eraw"
        );
        assert_eq!(xescape("\"abc\"", CACHE_BAD), "\\x22abc\\x22");
        assert_eq!(
            xescape(
                "https://hub.nspawn.org/storage/debian/bullseye/tar/image.tar.xz",
                CACHE_BAD
            ),
            "https:\\x2f\\x2fhub\\x2enspawn\\x2eorg\\x2fstorage\\x2fdebian\\x2fbullseye\\x2ftar\\x2fimage\\x2etar\\x2exz"
        );
        assert_eq!(
            xescape("\"2d9c858-5d07d4127fef9\"", CACHE_BAD),
            "\\x222d9c858-5d07d4127fef9\\x22"
        );
        assert_eq!(cunescape("\\x22abc\\x22").unwrap(), "\"abc\"");
    }

    #[test]
    fn xescape_escapes_controls_high_bytes_backslash_and_the_bad_set() {
        assert_eq!(
            xescape("a\tb\x7f\\c'#", CACHE_BAD),
            "a\\x09b\\x7f\\x5cc\\x27\\x23"
        );
        assert_eq!(xescape("ä", ""), "\\xc3\\xa4");
        assert_eq!(xescape("a.b/c", ""), "a.b/c");
        assert_eq!(xescape("", CACHE_BAD), "");
        assert_eq!(xescape_bytes(&[0, 0xff, b'A'], ""), "\\x00\\xffA");
    }

    #[test]
    fn every_byte_round_trips() {
        for b in 1..=255u8 {
            let escaped = xescape_bytes(&[b, b'z', b], CACHE_BAD);
            assert!(escaped.is_ascii());
            assert_eq!(
                cunescape_bytes(&escaped).unwrap(),
                [b, b'z', b],
                "byte {b:#x}"
            );
        }
        // Unicode text round trips as a whole too.
        let text = "W/\"ünï\\cødé\u{1F600}\t'#./\"";
        assert_eq!(cunescape(&xescape(text, CACHE_BAD)).unwrap(), text);
        // NUL escapes but never unescapes.
        assert_eq!(xescape_bytes(&[0], ""), "\\x00");
        assert_eq!(cunescape("\\x00").unwrap_err().errno(), libc::EINVAL);
    }

    #[test]
    fn cunescape_sequences() {
        let cases: [(&str, &[u8]); 12] = [
            ("plain", b"plain"),
            ("\\n\\t\\r", b"\n\t\r"),
            ("\\a\\b\\f\\v", b"\x07\x08\x0c\x0b"),
            ("\\\\\\\"\\'", b"\\\"'"),
            ("\\x41\\x7E\\x7e", b"A~~"),
            ("\\101\\377", b"A\xff"),
            ("\\u00e4", "ä".as_bytes()),
            ("\\U0001F600", "\u{1F600}".as_bytes()),
            ("\\u20ac!", "€!".as_bytes()),
            ("\\x5cx41", b"\\x41"),
            ("", b""),
            ("a\\x2fb", b"a/b"),
        ];
        for (input, expected) in cases {
            assert_eq!(cunescape_bytes(input).unwrap(), expected, "input {input:?}");
        }
    }

    #[test]
    fn cunescape_rejects_bad_escapes() {
        for input in [
            "\\",
            "abc\\",
            "\\q",
            "\\s",
            "\\x",
            "\\x4",
            "\\xg1",
            "\\x00",
            "\\000",
            "\\12",
            "\\18a",
            "\\400",
            "\\u",
            "\\u12",
            "\\u0000",
            "\\ud800",
            "\\U00110000",
            "\\U0000004",
            "\\UFFFFFFFF",
        ] {
            assert_eq!(
                cunescape_bytes(input).unwrap_err().errno(),
                libc::EINVAL,
                "input {input:?}"
            );
        }
        // Valid escapes, but the bytes are not UTF-8.
        assert_eq!(cunescape("\\xff").unwrap_err().errno(), libc::EINVAL);
        assert_eq!(cunescape_bytes("\\xff").unwrap(), [0xff]);
    }
}

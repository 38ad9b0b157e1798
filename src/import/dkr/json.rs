//! The two JSON documents of the v1 registry protocol we read: a tag's image id (`"<id>"`)
//! and an image's ancestry (`["<id>", "<parent id>", …]`), spec §4.4.
//!
//! This is a port of systemd's 2015 `json_tokenize()` and of the two small parsers the
//! C importer built on it, not a JSON validator: the accepted language is theirs. A
//! trailing comma in the ancestry (`["a",]`) is fine, because the tokenizer only knows
//! "a value is expected" and "a value was just seen", and `]` is allowed in both. A full
//! parser (serde_json) would refuse that and differ in other corners, so the tokenizer is
//! reproduced here for exactly what the parsers need.
//!
//! Errors: `EBADMSG` when a document has the wrong shape or an id is not valid, `EFBIG`
//! for more than [`LAYERS_MAX`] ancestors, `EINVAL` from the tokenizer itself (bad
//! escapes, control characters, invalid UTF-8, unknown characters). The importer logs the
//! same message for all of them, so the distinction only matters to these tests.

use std::collections::HashSet;

use crate::util::error::{Error, Result};
use crate::util::validate::dkr_id_is_valid;

/// The most layers an image may have (the seed's value; v220 lowered it to 127).
pub const LAYERS_MAX: usize = 2048;

/// What the tokenizer returns (systemd's `JSON_*` token types; integers and reals are one
/// kind here because their values are never used).
#[derive(Debug, PartialEq, Eq)]
enum Token {
    End,
    Colon,
    Comma,
    ObjectOpen,
    ObjectClose,
    ArrayOpen,
    ArrayClose,
    String(String),
    Number,
    Boolean,
    Null,
}

/// Where the tokenizer is in the document.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// At the start, after `[`, `{`, `,` or `:`: a value (or a closing bracket).
    Value,
    /// Right after a value or closing bracket: punctuation.
    AfterValue,
}

/// systemd's whitespace set (`WHITESPACE`).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn einval() -> Error {
    Error::new(libc::EINVAL)
}

struct Tokenizer<'a> {
    input: &'a [u8],
    pos: usize,
    expect: Expect,
}

impl<'a> Tokenizer<'a> {
    /// `input` must not contain NUL bytes: the C tokenizer ran on a C string, where the
    /// first NUL is the end of input.
    fn new(input: &'a [u8]) -> Self {
        Tokenizer {
            input,
            pos: 0,
            expect: Expect::Value,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Return `token` after consuming `len` bytes, leaving the tokenizer in `next`.
    fn emit(&mut self, len: usize, next: Expect, token: Token) -> Result<Token> {
        self.pos += len;
        self.expect = next;
        Ok(token)
    }

    fn next(&mut self) -> Result<Token> {
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
        }
        let Some(c) = self.peek() else {
            return Ok(Token::End);
        };
        let rest = &self.input[self.pos..];
        match self.expect {
            Expect::Value => match c {
                b'{' => self.emit(1, Expect::Value, Token::ObjectOpen),
                b'}' => self.emit(1, Expect::AfterValue, Token::ObjectClose),
                b'[' => self.emit(1, Expect::Value, Token::ArrayOpen),
                b']' => self.emit(1, Expect::AfterValue, Token::ArrayClose),
                b'"' => {
                    let s = self.string()?;
                    self.emit(0, Expect::AfterValue, Token::String(s))
                }
                b'-' | b'0'..=b'9' => {
                    self.number()?;
                    self.emit(0, Expect::AfterValue, Token::Number)
                }
                _ if rest.starts_with(b"true") => self.emit(4, Expect::AfterValue, Token::Boolean),
                _ if rest.starts_with(b"false") => self.emit(5, Expect::AfterValue, Token::Boolean),
                _ if rest.starts_with(b"null") => self.emit(4, Expect::AfterValue, Token::Null),
                _ => Err(einval()),
            },
            Expect::AfterValue => match c {
                b':' => self.emit(1, Expect::Value, Token::Colon),
                b',' => self.emit(1, Expect::Value, Token::Comma),
                b'}' => self.emit(1, Expect::AfterValue, Token::ObjectClose),
                b']' => self.emit(1, Expect::AfterValue, Token::ArrayClose),
                _ => Err(einval()),
            },
        }
    }

    /// A string starting at the opening quote; leaves `pos` after the closing one.
    fn string(&mut self) -> Result<String> {
        let mut out = String::new();
        self.pos += 1;
        loop {
            let c = self.peek().ok_or_else(einval)?;
            match c {
                b'"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                0x00..=0x1f | 0x7f => return Err(einval()),
                b'\\' => {
                    self.pos += 1;
                    let e = self.peek().ok_or_else(einval)?;
                    let ch = match e {
                        b'"' | b'\\' | b'/' => e as char,
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            self.pos += 1;
                            out.push(self.unicode_escape()?);
                            continue;
                        }
                        _ => return Err(einval()),
                    };
                    out.push(ch);
                    self.pos += 1;
                }
                _ => {
                    let len = match c {
                        0x00..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        0xf0..=0xf7 => 4,
                        _ => return Err(einval()),
                    };
                    let bytes = self
                        .input
                        .get(self.pos..self.pos + len)
                        .ok_or_else(einval)?;
                    // Rejects overlong forms, surrogates and values past U+10FFFF, as
                    // systemd's `utf8_encoded_valid_unichar()` does.
                    let s = std::str::from_utf8(bytes).map_err(|_| einval())?;
                    out.push_str(s);
                    self.pos += len;
                }
            }
        }
    }

    /// The four hex digits after `\u` (and a second `\uXXXX` for a surrogate pair).
    /// `\u0000` is refused, as in systemd.
    fn unicode_escape(&mut self) -> Result<char> {
        let x = self.hex4()?;
        let code = match x {
            0xdc00..=0xdfff => return Err(einval()),
            0xd800..=0xdbff => {
                if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(einval());
                }
                self.pos += 2;
                let y = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&y) {
                    return Err(einval());
                }
                0x10000 + ((u32::from(x) - 0xd800) << 10) + (u32::from(y) - 0xdc00)
            }
            _ => u32::from(x),
        };
        char::from_u32(code).ok_or_else(einval)
    }

    fn hex4(&mut self) -> Result<u16> {
        let digits = self.input.get(self.pos..self.pos + 4).ok_or_else(einval)?;
        let mut x: u16 = 0;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or_else(einval)?;
            x = (x << 4) | v as u16;
        }
        if x == 0 {
            return Err(einval());
        }
        self.pos += 4;
        Ok(x)
    }

    /// A number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Result<()> {
        let digits = |t: &mut Self| -> Result<()> {
            if !t.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(einval());
            }
            while t.peek().is_some_and(|c| c.is_ascii_digit()) {
                t.pos += 1;
            }
            Ok(())
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        if self.peek() == Some(b'0') {
            self.pos += 1;
        } else if self.peek().is_some_and(|c| matches!(c, b'1'..=b'9')) {
            digits(self)?;
        } else {
            return Err(einval());
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            digits(self)?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            digits(self)?;
        }
        // systemd's 2015 number parser demanded the end of the input right after a
        // number, so a number anywhere but last (`[1]`) is a tokenizer error.
        if self.pos != self.input.len() {
            return Err(einval());
        }
        Ok(())
    }
}

/// The body checks both parsers start with.
fn check_body(body: &[u8]) -> Result<()> {
    if body.is_empty() || body.contains(&0) {
        return Err(Error::new(libc::EBADMSG));
    }
    Ok(())
}

/// The body of `GET /v1/repositories/<name>/tags/<tag>`: one JSON string, a valid image id.
pub fn parse_id(body: &[u8]) -> Result<String> {
    check_body(body)?;
    let mut t = Tokenizer::new(body);
    let Token::String(id) = t.next()? else {
        return Err(Error::new(libc::EBADMSG));
    };
    if t.next()? != Token::End || !dkr_id_is_valid(&id) {
        return Err(Error::new(libc::EBADMSG));
    }
    Ok(id)
}

/// The body of `GET /v1/images/<id>/ancestry`: a non-empty array of distinct valid ids,
/// from the image itself down to its base. Returned base first (the order layers are
/// applied in).
pub fn parse_ancestry(body: &[u8]) -> Result<Vec<String>> {
    /// The C parser's states.
    enum State {
        /// Before `[`.
        Begin,
        /// After `[` or `,`: an id or `]`.
        Item,
        /// After an id: `,` or `]`.
        Comma,
        /// After `]`: only the end of input.
        End,
    }

    check_body(body)?;
    let ebadmsg = || Error::new(libc::EBADMSG);
    let mut t = Tokenizer::new(body);
    let mut ids: Vec<String> = Vec::new();
    let mut state = State::Begin;
    loop {
        let token = t.next()?;
        state = match (state, token) {
            (State::Begin, Token::ArrayOpen) => State::Item,
            (State::Item, Token::String(id)) => {
                if !dkr_id_is_valid(&id) {
                    return Err(ebadmsg());
                }
                if ids.len() + 1 > LAYERS_MAX {
                    return Err(Error::new(libc::EFBIG));
                }
                ids.push(id);
                State::Comma
            }
            (State::Item | State::Comma, Token::ArrayClose) => State::End,
            (State::Comma, Token::Comma) => State::Item,
            (State::End, Token::End) => break,
            _ => return Err(ebadmsg()),
        };
    }
    let mut seen = HashSet::with_capacity(ids.len());
    if ids.is_empty() || !ids.iter().all(|id| seen.insert(id.as_str())) {
        return Err(ebadmsg());
    }
    ids.reverse();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno<T: std::fmt::Debug>(r: Result<T>) -> i32 {
        r.expect_err("must fail").errno()
    }

    fn tokens(input: &str) -> Result<Vec<Token>> {
        let mut t = Tokenizer::new(input.as_bytes());
        let mut out = Vec::new();
        loop {
            let tok = t.next()?;
            if tok == Token::End {
                return Ok(out);
            }
            out.push(tok);
        }
    }

    #[test]
    fn tokenizer_alternates_between_values_and_punctuation() {
        use Token::*;
        assert_eq!(
            tokens(" { \"k\" : [ true , false , null ] } ").unwrap(),
            [
                ObjectOpen,
                String("k".into()),
                Colon,
                ArrayOpen,
                Boolean,
                Comma,
                Boolean,
                Comma,
                Null,
                ArrayClose,
                ObjectClose
            ]
        );
        // A comma or colon where a value belongs, a value where punctuation belongs.
        assert_eq!(errno(tokens("[,")), libc::EINVAL);
        assert_eq!(errno(tokens(":")), libc::EINVAL);
        assert_eq!(errno(tokens("\"a\" \"b\"")), libc::EINVAL);
        assert_eq!(errno(tokens("[] []")), libc::EINVAL);
        // Unknown characters.
        assert_eq!(errno(tokens("x")), libc::EINVAL);
        assert_eq!(errno(tokens("nul")), libc::EINVAL);
        // Only whitespace is the end.
        assert_eq!(tokens(" \t\r\n").unwrap(), []);
    }

    #[test]
    fn strings_decode_escapes_and_utf8() {
        assert_eq!(
            tokens(r#""a\"b\\c\/d\b\f\n\r\t""#).unwrap(),
            [Token::String("a\"b\\c/d\u{8}\u{c}\n\r\t".into())]
        );
        assert_eq!(
            tokens(r#""\u00e9\u20AC\ud83d\ude00""#).unwrap(),
            [Token::String("é€😀".into())]
        );
        assert_eq!(tokens("\"ü\"").unwrap(), [Token::String("ü".into())]);
        assert_eq!(tokens("\"\"").unwrap(), [Token::String("".into())]);
        for bad in [
            &b"\"abc"[..],         // unterminated
            b"\"a\\x\"",           // unknown escape
            b"\"a\\",              // escape at the end
            b"\"\\u12\"",          // short \u
            b"\"\\u00zz\"",        // not hex
            b"\"\\u0000\"",        // NUL is refused
            b"\"\\udc00\"",        // lone trailing surrogate
            b"\"\\ud800x\"",       // leading surrogate without a partner
            b"\"\\ud800\\u0041\"", // partner is not a trailing surrogate
            b"\"a\tb\"",           // control character
            b"\"a\x7fb\"",         // DEL
            b"\"\xff\"",           // not UTF-8
            b"\"\xc3\"",           // truncated UTF-8
            b"\"\xc0\xaf\"",       // overlong
            b"\"\xed\xa0\x80\"",   // encoded surrogate
        ] {
            let mut t = Tokenizer::new(bad);
            assert_eq!(errno(t.next()), libc::EINVAL, "{:?}", bad);
        }
    }

    #[test]
    fn numbers_must_be_well_formed_and_last() {
        for good in ["0", "-0", "12", "-3.25", "1e5", "1E+5", "2.5e-3"] {
            assert_eq!(tokens(good).unwrap(), [Token::Number], "{good}");
        }
        for bad in ["01", "-", "1.", "1e", "1.e3", "+1", "1 ", "[1]", "1,"] {
            assert!(tokens(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parse_id_accepts_one_valid_id_string() {
        let id = "3f1dfa6e1c9cd4ba5e3c0e4ba1ab57b0d2f5f70ef6fa7bb3ce8f09b8da0fbd11";
        assert_eq!(parse_id(format!("\"{id}\"").as_bytes()).unwrap(), id);
        assert_eq!(
            parse_id(format!(" \n\"{id}\"\r\n ").as_bytes()).unwrap(),
            id
        );
        // Escapes are decoded before the id is checked.
        assert_eq!(parse_id(br#""\u0061b""#).unwrap(), "ab");
        for (body, e) in [
            (&b""[..], libc::EBADMSG),
            (b" ", libc::EBADMSG), // END, not a string
            (b"\"ab\"\0", libc::EBADMSG),
            (b"\"AB\"", libc::EBADMSG), // uppercase
            (b"\"\"", libc::EBADMSG),   // empty
            (b"\"a/b\"", libc::EBADMSG),
            (b"\"xyz\"", libc::EBADMSG),
            (b"[\"ab\"]", libc::EBADMSG),
            (b"{\"id\": \"ab\"}", libc::EBADMSG),
            (b"null", libc::EBADMSG),
            (b"\"ab\",", libc::EBADMSG), // a comma is a token, not END
            (b"\"ab\" \"cd\"", libc::EINVAL),
            (b"\"ab\" x", libc::EINVAL),
            (b"ab", libc::EINVAL),
            (b"12", libc::EBADMSG), // a number, not a string
        ] {
            assert_eq!(
                errno(parse_id(body)),
                e,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn parse_ancestry_reverses_to_base_first() {
        assert_eq!(parse_ancestry(br#"["b","a"]"#).unwrap(), ["a", "b"]);
        assert_eq!(
            parse_ancestry(br#" [ "c" , "b" , "a" ] "#).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(parse_ancestry(br#"["a"]"#).unwrap(), ["a"]);
    }

    #[test]
    fn parse_ancestry_accepts_a_trailing_comma() {
        assert_eq!(parse_ancestry(br#"["a",]"#).unwrap(), ["a"]);
        assert_eq!(parse_ancestry(br#"["b", "a" ,]"#).unwrap(), ["a", "b"]);
    }

    #[test]
    fn parse_ancestry_refuses_bad_documents() {
        for (body, e) in [
            (&b""[..], libc::EBADMSG),
            (b"[\"a\"]\0", libc::EBADMSG),
            (b"[]", libc::EBADMSG),            // empty list
            (b"[\"a\",\"a\"]", libc::EBADMSG), // duplicate
            (b"[\"b\",\"a\",\"b\"]", libc::EBADMSG),
            (b"[\"A\"]", libc::EBADMSG), // uppercase
            (b"[\"\"]", libc::EBADMSG),
            (b"[\"a\"] x", libc::EINVAL),     // trailing garbage
            (b"[\"a\"] []", libc::EINVAL),    // a second document
            (b"[\"a\"]]", libc::EBADMSG),     // `]` after the end
            (b"\"a\"", libc::EBADMSG),        // not an array
            (b"{\"a\":1}", libc::EBADMSG),    // not an array
            (b"[[\"a\"]]", libc::EBADMSG),    // nested
            (b"[\"a\" \"b\"]", libc::EINVAL), // missing comma
            (b"[,\"a\"]", libc::EINVAL),
            (b"[\"a\",,]", libc::EINVAL),
            (b"[\"a\", null]", libc::EBADMSG),
            (b"[\"a\"", libc::EBADMSG), // unterminated array: END in the wrong state
            (b"[", libc::EBADMSG),
        ] {
            assert_eq!(
                errno(parse_ancestry(body)),
                e,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn parse_ancestry_allows_2048_layers_and_no_more() {
        let list = |n: usize| {
            let items: Vec<String> = (0..n).map(|i| format!("\"{i:x}\"")).collect();
            format!("[{}]", items.join(","))
        };
        let ok = parse_ancestry(list(LAYERS_MAX).as_bytes()).unwrap();
        assert_eq!(ok.len(), LAYERS_MAX);
        assert_eq!(ok[0], format!("{:x}", LAYERS_MAX - 1));
        assert_eq!(
            errno(parse_ancestry(list(LAYERS_MAX + 1).as_bytes())),
            libc::EFBIG
        );
    }

    /// Mutation campaign (`util::mutate`; `MUTATION_ITERATIONS` for long runs):
    /// mutated tag and ancestry bodies never panic, every accepted id is valid, errors
    /// carry the documented errnos, and wherever serde_json reads the body as the same
    /// document with valid ids, the tokenizer returns the same ids.
    #[test]
    fn mutated_bodies() {
        use crate::util::mutate::{mutate_bytes, note_outcome, Campaign, Sources};
        let seeds: Vec<Vec<u8>> = [
            &br#""3f1dfa6e1c9cd4ba5e3c0e4ba1ab57b0d2f5f70ef6fa7bb3ce8f09b8da0fbd11""#[..],
            br#" "ab" "#,
            br#"["c", "b", "a"]"#,
            br#"["a",]"#,
            br#"["\u0061\u0062", "cd"]"#,
            br#"{"k": [true, false, null]}"#,
            b"-12.5e+3",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        let tokens: [&[u8]; 15] = [
            b"\"",
            b"[",
            b"]",
            b",",
            b"{",
            b"}",
            b":",
            b"\\u00",
            b"\\ud83d\\ude00",
            b"\\",
            b"true",
            b"null",
            b"1e5",
            b"0",
            b"\xc3\xa9",
        ];
        let src = Sources {
            corpus: &seeds,
            dictionary: &tokens,
            max_len: 4096,
        };
        Campaign::new("dkr-json", 20_000).run(
            |rng| {
                let mut body = rng.pick(&seeds).clone();
                mutate_bytes(rng, &mut body, &src, 6);
                body
            },
            |body| {
                let expected_id = serde_json::from_slice::<String>(body)
                    .ok()
                    .filter(|id| dkr_id_is_valid(id) && !body.contains(&0));
                let id = parse_id(body);
                let ancestry = parse_ancestry(body);
                note_outcome(&format!(
                    "id {:?}, ancestry {:?}",
                    id.as_ref().map(|_| ()).map_err(Error::errno),
                    ancestry.as_ref().map(|_| ()).map_err(Error::errno)
                ));
                match (id, expected_id) {
                    (Ok(id), _) if !dkr_id_is_valid(&id) => {
                        return Err(format!("parse_id accepted {id:?}"))
                    }
                    (Ok(id), Some(want)) if id != want => {
                        return Err(format!("parse_id gave {id:?}, serde_json {want:?}"))
                    }
                    (Err(e), Some(want)) => {
                        return Err(format!("parse_id refused {want:?}: {}", e.errno()))
                    }
                    (Err(e), None) if ![libc::EBADMSG, libc::EINVAL].contains(&e.errno()) => {
                        return Err(format!("parse_id: errno {}", e.errno()))
                    }
                    _ => {}
                }
                let expected_ids = serde_json::from_slice::<Vec<String>>(body)
                    .ok()
                    .filter(|ids| {
                        let mut seen = HashSet::new();
                        !ids.is_empty()
                            && ids.len() <= LAYERS_MAX
                            && !body.contains(&0)
                            && ids.iter().all(|i| dkr_id_is_valid(i) && seen.insert(i))
                    });
                match (ancestry, expected_ids) {
                    (Ok(ids), want) => {
                        let mut seen = HashSet::new();
                        if ids.is_empty()
                            || ids.len() > LAYERS_MAX
                            || !ids.iter().all(|i| dkr_id_is_valid(i) && seen.insert(i))
                        {
                            return Err(format!("parse_ancestry accepted {ids:?}"));
                        }
                        if let Some(mut want) = want {
                            want.reverse();
                            if ids != want {
                                return Err(format!("parse_ancestry {ids:?}, serde_json {want:?}"));
                            }
                        }
                        Ok(())
                    }
                    (Err(e), Some(want)) => {
                        Err(format!("parse_ancestry refused {want:?}: {}", e.errno()))
                    }
                    (Err(e), None)
                        if ![libc::EBADMSG, libc::EINVAL, libc::EFBIG].contains(&e.errno()) =>
                    {
                        Err(format!("parse_ancestry: errno {}", e.errno()))
                    }
                    (Err(_), None) => Ok(()),
                }
            },
        );
    }
}

//! One 512-byte tar header block, and the records of a PAX extended header.
//!
//! Pure parsing, no I/O: the stream reader ([`super::reader`]) hands blocks in and gets
//! field values out. Three header dialects share the block layout:
//! * V7 (no magic): name, mode, ids, size, mtime, checksum, type, link name;
//! * POSIX ustar (`"ustar\0"` `"00"`): adds user/group names, device numbers and a
//!   155-byte name prefix;
//! * GNU (`"ustar  \0"`): the prefix area holds atime/ctime and the old sparse map.
//!
//! Numbers are octal text, or GNU base-256 (first byte `0x80` positive, `0xff`
//! negative, two's complement) for values that do not fit.

/// Size of a tar block.
pub const BLOCK: usize = 512;

/// The header dialect, from the magic field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// No magic: pre-POSIX V7 header; no prefix, no device numbers.
    V7,
    /// `"ustar\0"`: POSIX ustar and pax; the name prefix is valid.
    Ustar,
    /// `"ustar  \0"`: GNU and old GNU; atime/ctime and sparse map instead of the prefix.
    Gnu,
}

/// Why a numeric field did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberError {
    /// Not octal digits followed by spaces/NULs, nor base-256.
    Invalid,
    /// A base-256 number with the sign bit set.
    Negative,
    /// More than 63 bits.
    Overflow,
}

impl NumberError {
    /// Human wording for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            NumberError::Invalid => "not a number",
            NumberError::Negative => "negative",
            NumberError::Overflow => "too large",
        }
    }
}

/// Parse a numeric header field that may be negative (mtime): octal text or base-256.
pub fn parse_signed(field: &[u8]) -> Result<i64, NumberError> {
    match field.first() {
        Some(&b) if b & 0x80 != 0 => parse_base256(field),
        _ => parse_octal(field),
    }
}

/// Parse a numeric header field that must not be negative (size, uid, gid, devices).
pub fn parse_unsigned(field: &[u8]) -> Result<u64, NumberError> {
    let v = parse_signed(field)?;
    u64::try_from(v).map_err(|_| NumberError::Negative)
}

/// Octal text: optional leading spaces/NULs, digits, then only spaces/NULs.
/// An empty field (all spaces/NULs) is 0, as GNU tar reads it.
fn parse_octal(field: &[u8]) -> Result<i64, NumberError> {
    let mut i = 0;
    while i < field.len() && (field[i] == b' ' || field[i] == 0) {
        i += 1;
    }
    let mut value: i64 = 0;
    while i < field.len() && (b'0'..=b'7').contains(&field[i]) {
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(field[i] - b'0')))
            .ok_or(NumberError::Overflow)?;
        i += 1;
    }
    if field[i..].iter().all(|&b| b == b' ' || b == 0) {
        Ok(value)
    } else {
        Err(NumberError::Invalid)
    }
}

/// GNU base-256: the high bit of the first byte marks the encoding; the remaining bits
/// of the field are a big-endian two's complement number (bit 6 of the first byte is
/// its sign).
fn parse_base256(field: &[u8]) -> Result<i64, NumberError> {
    if field.len() > 15 {
        return Err(NumberError::Overflow);
    }
    // Sign-extend the 7 low bits of the first byte, then shift the rest in; at most
    // 7 + 14 * 8 = 119 bits, which fits an i128.
    let mut value = i128::from(((field[0] << 1) as i8) >> 1);
    for &b in &field[1..] {
        value = (value << 8) | i128::from(b);
    }
    i64::try_from(value).map_err(|_| NumberError::Overflow)
}

/// A sparse map: (offset, length) of each data segment, in file order.
pub type SparseSegments = Vec<(u64, u64)>;

/// A header block, borrowed.
pub struct Header<'a>(pub &'a [u8; BLOCK]);

impl<'a> Header<'a> {
    /// True for an all-zero block (end-of-archive marker).
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    /// Verify the checksum: the sum of all bytes with the checksum field read as spaces,
    /// as unsigned bytes or (some historic writers) signed bytes.
    pub fn checksum_ok(&self) -> bool {
        let Ok(stored) = parse_octal(&self.0[148..156]) else {
            return false;
        };
        let mut unsigned: i64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in self.0.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += i64::from(b);
            signed += i64::from(b as i8);
        }
        stored == unsigned || stored == signed
    }

    /// The header dialect.
    pub fn dialect(&self) -> Dialect {
        match &self.0[257..265] {
            b"ustar  \0" => Dialect::Gnu,
            m if &m[..6] == b"ustar\0" => Dialect::Ustar,
            _ => Dialect::V7,
        }
    }

    /// The type flag byte.
    pub fn typeflag(&self) -> u8 {
        self.0[156]
    }

    /// The name: `prefix/name` for ustar headers with a prefix, else the name field.
    pub fn name(&self) -> Vec<u8> {
        let name = cstr_field(&self.0[0..100]);
        if self.dialect() != Dialect::Ustar {
            return name.to_vec();
        }
        // star's variant ends the block with "tar\0" and keeps atime/ctime after a
        // 131-byte prefix.
        let prefix_end = if &self.0[508..512] == b"tar\0" {
            345 + 131
        } else {
            500
        };
        let prefix = cstr_field(&self.0[345..prefix_end]);
        if prefix.is_empty() {
            return name.to_vec();
        }
        let mut full = Vec::with_capacity(prefix.len() + 1 + name.len());
        full.extend_from_slice(prefix);
        full.push(b'/');
        full.extend_from_slice(name);
        full
    }

    /// The link name field.
    pub fn link_name(&self) -> &'a [u8] {
        cstr_field(&self.0[157..257])
    }

    pub fn mode(&self) -> Result<u64, NumberError> {
        parse_unsigned(&self.0[100..108])
    }
    pub fn uid(&self) -> Result<u64, NumberError> {
        parse_unsigned(&self.0[108..116])
    }
    pub fn gid(&self) -> Result<u64, NumberError> {
        parse_unsigned(&self.0[116..124])
    }
    pub fn size(&self) -> Result<u64, NumberError> {
        parse_unsigned(&self.0[124..136])
    }
    pub fn mtime(&self) -> Result<i64, NumberError> {
        parse_signed(&self.0[136..148])
    }
    /// Device major number (0 in V7 headers, which have no such field).
    pub fn dev_major(&self) -> Result<u64, NumberError> {
        match self.dialect() {
            Dialect::V7 => Ok(0),
            _ => parse_unsigned(&self.0[329..337]),
        }
    }
    pub fn dev_minor(&self) -> Result<u64, NumberError> {
        match self.dialect() {
            Dialect::V7 => Ok(0),
            _ => parse_unsigned(&self.0[337..345]),
        }
    }

    /// Old GNU sparse header: the four map entries in the header, whether extension
    /// blocks follow, and the real file size.
    pub fn gnu_sparse(&self) -> Result<(SparseSegments, bool, u64), NumberError> {
        let map = parse_sparse_entries(&self.0[386..386 + 4 * 24])?;
        let extended = self.0[482] != 0;
        let real_size = parse_unsigned(&self.0[483..495])?;
        Ok((map, extended, real_size))
    }
}

/// Parse an old GNU sparse extension block: 21 map entries and the "more follow" flag.
pub fn gnu_sparse_extension(block: &[u8; BLOCK]) -> Result<(Vec<(u64, u64)>, bool), NumberError> {
    let map = parse_sparse_entries(&block[..21 * 24])?;
    Ok((map, block[504] != 0))
}

/// Entries of (offset[12], numbytes[12]); the first entry with an empty offset ends the map.
fn parse_sparse_entries(area: &[u8]) -> Result<Vec<(u64, u64)>, NumberError> {
    let mut map = Vec::new();
    for entry in area.chunks_exact(24) {
        if entry[0] == 0 {
            break;
        }
        map.push((parse_unsigned(&entry[..12])?, parse_unsigned(&entry[12..])?));
    }
    Ok(map)
}

/// The bytes of a NUL-terminated (or full-width) string field.
fn cstr_field(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Split a PAX extended header body into `(key, value)` records and hand each to `f`.
///
/// A record is `"<len> <key>=<value>\n"`, where `<len>` is the decimal length of the
/// whole record including itself and the newline. Trailing NUL padding after the last
/// record is tolerated; anything else that is not a well-formed record is an error
/// (returned as a short reason for the caller's message).
pub fn parse_pax_records(
    mut body: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    loop {
        if body.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let space = body
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or("PAX record without a length")?;
        let digits = &body[..space];
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err("PAX record length is not a decimal number".into());
        }
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record length overflows")?;
        if len <= space + 1 || len > body.len() {
            return Err(format!(
                "PAX record length {len} does not fit the header ({} bytes left)",
                body.len()
            ));
        }
        let record = &body[space + 1..len];
        let Some((&b'\n', kv)) = record.split_last() else {
            return Err("PAX record does not end in a newline".into());
        };
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX record without '='")?;
        if eq == 0 {
            return Err("PAX record with an empty keyword".into());
        }
        f(&kv[..eq], &kv[eq + 1..])?;
        body = &body[len..];
    }
}

/// Parse a PAX decimal integer (`size`, `uid`, sparse fields): digits only.
pub fn parse_pax_u64(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Parse a PAX time (`mtime`): `[-]seconds[.fraction]`, the fraction truncated to
/// nanoseconds. Returns (seconds, nanoseconds) with nanoseconds in 0..1e9, so
/// `-1.5` is (-2, 500000000).
pub fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let (negative, rest) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, value),
    };
    let (int, frac) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], &rest[dot + 1..]),
        None => (rest, &b""[..]),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs: i64 = std::str::from_utf8(int).ok()?.parse().ok()?;
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if !negative {
        return Some((secs, nanos));
    }
    if nanos == 0 {
        Some((secs.checked_neg()?, 0))
    } else {
        Some((secs.checked_neg()?.checked_sub(1)?, 1_000_000_000 - nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_with(f: impl FnOnce(&mut [u8; BLOCK])) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        f(&mut b);
        b
    }

    fn set_checksum(b: &mut [u8; BLOCK]) {
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        let s = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(s.as_bytes());
    }

    #[test]
    fn octal_fields() {
        assert_eq!(parse_unsigned(b"0000644\0"), Ok(0o644));
        assert_eq!(parse_unsigned(b"   644 \0"), Ok(0o644));
        assert_eq!(parse_unsigned(b"\0\0\0\0\0\0\0\0"), Ok(0));
        assert_eq!(parse_unsigned(b"        "), Ok(0));
        assert_eq!(parse_unsigned(b"77777777777\0"), Ok(0o77777777777));
        assert_eq!(parse_unsigned(b"0000648\0"), Err(NumberError::Invalid));
        assert_eq!(parse_unsigned(b"12 34\0\0\0"), Err(NumberError::Invalid));
        assert_eq!(parse_unsigned(b"-0000001"), Err(NumberError::Invalid));
        // 22 octal digits exceed 63 bits.
        assert_eq!(
            parse_unsigned(b"7777777777777777777777"),
            Err(NumberError::Overflow)
        );
    }

    #[test]
    fn base256_fields() {
        let mut f = [0u8; 8];
        f[0] = 0x80;
        f[5..8].copy_from_slice(&[0x20, 0x00, 0x00]); // 2097152
        assert_eq!(parse_unsigned(&f), Ok(2_097_152));
        let mut size = [0u8; 12];
        size[0] = 0x80;
        size[4..12].copy_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(parse_unsigned(&size), Ok(1 << 40));
        // -1 as a 12-byte base-256 field: all 0xff.
        let neg = [0xffu8; 12];
        assert_eq!(parse_signed(&neg), Ok(-1));
        assert_eq!(parse_unsigned(&neg), Err(NumberError::Negative));
        // -2^40 for an mtime.
        let mut t = [0xffu8; 12];
        t[4..12].copy_from_slice(&(-(1i64 << 40)).to_be_bytes());
        assert_eq!(parse_signed(&t), Ok(-(1 << 40)));
        // Significant bits beyond 64: overflow.
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[3] = 1;
        assert_eq!(parse_unsigned(&big), Err(NumberError::Overflow));
        // 2^63 does not fit an i64.
        let mut top = [0u8; 12];
        top[0] = 0x80;
        top[4] = 0x80;
        assert_eq!(parse_unsigned(&top), Err(NumberError::Overflow));
        // The low bits of the first byte belong to the number.
        let mut odd = [0u8; 8];
        odd[0] = 0x81;
        assert_eq!(parse_unsigned(&odd), Ok(1 << 56));
    }

    #[test]
    fn checksum_unsigned_and_signed() {
        let mut b = block_with(|b| {
            b[..5].copy_from_slice(b"hello");
            b[156] = b'0';
        });
        set_checksum(&mut b);
        assert!(Header(&b).checksum_ok());
        b[0] = b'j';
        assert!(!Header(&b).checksum_ok());

        // A byte >= 0x80 in the name: a writer that summed signed chars.
        let mut s = block_with(|b| b[0] = 0xe9);
        s[148..156].copy_from_slice(b"        ");
        let signed: i64 = s.iter().map(|&x| i64::from(x as i8)).sum();
        s[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        assert!(Header(&s).checksum_ok());
        // A garbage checksum field.
        let mut g = block_with(|_| {});
        g[148..156].copy_from_slice(b"zzzzzzz\0");
        assert!(!Header(&g).checksum_ok());
    }

    #[test]
    fn ustar_prefix_and_dialects() {
        let b = block_with(|b| {
            b[..4].copy_from_slice(b"name");
            b[257..265].copy_from_slice(b"ustar\x0000");
            b[345..351].copy_from_slice(b"prefix");
        });
        assert_eq!(Header(&b).dialect(), Dialect::Ustar);
        assert_eq!(Header(&b).name(), b"prefix/name");
        let g = block_with(|b| {
            b[..4].copy_from_slice(b"name");
            b[257..265].copy_from_slice(b"ustar  \0");
            b[345..351].copy_from_slice(b"\x01\x02\x03\x04\x05\x06");
        });
        assert_eq!(Header(&g).dialect(), Dialect::Gnu);
        assert_eq!(Header(&g).name(), b"name");
        let full = block_with(|b| b[..100].fill(b'x'));
        assert_eq!(Header(&full).name().len(), 100);
        assert_eq!(Header(&full).dialect(), Dialect::V7);
    }

    type Records = Vec<(Vec<u8>, Vec<u8>)>;

    fn records(body: &[u8]) -> Result<Records, String> {
        let mut out = Vec::new();
        parse_pax_records(body, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn pax_records() {
        let r = records(b"13 path=abcd\n21 SCHILY.xattr.a=\x00b\n\0\0\0").unwrap();
        assert_eq!(r[0], (b"path".to_vec(), b"abcd".to_vec()));
        assert_eq!(r[1], (b"SCHILY.xattr.a".to_vec(), b"\0b".to_vec()));
        // A value may contain '=' and newlines.
        let r = records(b"12 k=a=b\nc\n\n").unwrap();
        assert_eq!(r[0].1, b"a=b\nc\n");
        assert!(records(b"").unwrap().is_empty());
    }

    #[test]
    fn pax_records_malformed() {
        for bad in [
            &b"12 path=abcd\n"[..],           // length one short: no trailing newline
            b"99 path=abcd\n",                // length beyond the body
            b"13 pathxabcd\n",                // no '='
            b"x3 path=abcd\n",                // non-decimal length
            b"pathabcd",                      // no length at all
            b"3 \n",                          // record too short for a keyword
            b"9 =value\n",                    // empty keyword
            b"99999999999999999999999 a=b\n", // length overflows
            b"13 path=abcd\ngarbage",         // trailing garbage
        ] {
            assert!(
                records(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn pax_numbers_and_times() {
        assert_eq!(parse_pax_u64(b"12345"), Some(12345));
        assert_eq!(parse_pax_u64(b""), None);
        assert_eq!(parse_pax_u64(b"-1"), None);
        assert_eq!(parse_pax_u64(b"1e3"), None);
        assert_eq!(parse_pax_u64(b"99999999999999999999999"), None);
        assert_eq!(parse_pax_time(b"1234567890"), Some((1234567890, 0)));
        assert_eq!(
            parse_pax_time(b"1234567890.123456789123"),
            Some((1234567890, 123456789))
        );
        assert_eq!(parse_pax_time(b"1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"-7"), Some((-7, 0)));
        assert_eq!(parse_pax_time(b"1.x"), None);
        assert_eq!(parse_pax_time(b".5"), None);
        assert_eq!(parse_pax_time(b""), None);
    }
}

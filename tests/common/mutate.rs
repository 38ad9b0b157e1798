//! Seeded mutation ("fuzz") testing without extra crates: a splitmix64 PRNG, the classic
//! byte mutations, structure-aware mutations of tar archives and qcow2 images, and a
//! campaign runner with the oracles every mutation test shares (no panic, a watchdog
//! for hangs, per-case memory accounting, saved inputs that can be replayed).
//!
//! Everything is a pure function of the seed, so a CI run is deterministic and a failure
//! is reproduced from the seed it prints or from the input file it writes.
//!
//! Environment of a campaign (all optional):
//! * `MUTATION_ITERATIONS`: cases per campaign (default: each test's CI-sized count);
//! * `MUTATION_SEED`: base seed (default: derived from the campaign's name), to explore
//!   new inputs in long local runs;
//! * `MUTATION_CASE_SEED`: run only the case with this seed (as printed on failure);
//! * `MUTATION_REPLAY`: run only this saved input file (written on failure; the file
//!   name starts with the campaign's name, other campaigns ignore it);
//! * `MUTATION_TIMEOUT`: seconds one case may take before the watchdog fails the run
//!   (default 5);
//! * `MUTATION_KEEP_GOING=1`: record failures and go on, report them all at the end;
//! * `MUTATION_FAILURES`: directory for failing inputs (default `target/tmp/mutation-failures`
//!   for integration tests, `$TMPDIR/systemd-import-mutation-failures` for unit tests);
//! * `MUTATION_STATS=1`: print how the cases ended (error messages with names and
//!   numbers blanked), to see which code the mutations reach (needs `--nocapture`).
//!
//! A long local run, for example: `MUTATION_ITERATIONS=200000 MUTATION_KEEP_GOING=1
//! cargo test --release --test mutation_tar -- --nocapture`.
//!
//! This file is also compiled into the library's own unit tests (for parsers that are
//! private to the crate), so it uses nothing but `std`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// The PRNG
// ---------------------------------------------------------------------------------------

/// splitmix64: tiny, fast, and good enough to drive mutations.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

/// splitmix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One splitmix64 step from `z`: used to derive case seeds from a base seed.
pub fn mix(z: u64) -> u64 {
    finalize(z.wrapping_add(GAMMA))
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        finalize(self.state)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// A length biased towards small values (most mutations should be local).
    pub fn small_len(&mut self, max: usize) -> usize {
        let max = max.max(1);
        match self.below(4) {
            0 => 1,
            1 => self.between(1, max.min(8)),
            2 => self.between(1, max.min(64)),
            _ => self.between(1, max),
        }
    }

    /// A number that is often on or next to a boundary.
    pub fn interesting_u64(&mut self) -> u64 {
        const VALUES: [u64; 16] = [
            0,
            1,
            7,
            8,
            511,
            512,
            513,
            4095,
            4096,
            65535,
            65536,
            u32::MAX as u64,
            1 << 32,
            i64::MAX as u64,
            1 << 63,
            u64::MAX,
        ];
        match self.below(3) {
            0 => *self.pick(&VALUES),
            1 => self.next_u64() >> self.below(64),
            _ => self
                .pick(&VALUES)
                .wrapping_add(self.below(5) as u64)
                .wrapping_sub(2),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Byte mutations
// ---------------------------------------------------------------------------------------

/// Byte values that tend to matter to parsers of text and tar headers.
pub const INTERESTING_BYTES: [u8; 16] = [
    0, 0xff, 0x7f, 0x80, b'/', b'.', b'0', b'1', b'2', b'3', b'4', b'5', b'6', b'7', b' ', b'\n',
];

/// What the byte mutations may use besides random bytes.
pub struct Sources<'a> {
    /// Other inputs, for splicing.
    pub corpus: &'a [Vec<u8>],
    /// Tokens worth inserting (keywords, magic numbers, path fragments).
    pub dictionary: &'a [&'a [u8]],
    /// Inputs never grow beyond this.
    pub max_len: usize,
}

/// Apply one classic mutation to `data`.
pub fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, src: &Sources<'_>) {
    let len = data.len();
    match rng.below(13) {
        // Bit flip.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // An interesting byte.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(&INTERESTING_BYTES);
        }
        // A random byte.
        2 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.byte();
        }
        // Insert random or interesting bytes.
        3 => {
            let n = rng.small_len(64).min(src.max_len.saturating_sub(len));
            let at = rng.below(len + 1);
            let fill: Vec<u8> = if rng.chance(1, 2) {
                rng.bytes(n)
            } else {
                vec![*rng.pick(&INTERESTING_BYTES); n]
            };
            data.splice(at..at, fill);
        }
        // Delete a range.
        4 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len(len - at);
            data.drain(at..at + n);
        }
        // Duplicate a range in place.
        5 if len > 0 => {
            let at = rng.below(len);
            let n = rng.small_len(len - at).min(src.max_len.saturating_sub(len));
            let copy = data[at..at + n].to_vec();
            data.splice(at..at, copy);
        }
        // Copy a range over another place.
        6 if len > 1 => {
            let from = rng.below(len);
            let n = rng.small_len(len - from);
            let to = rng.below(len);
            let n = n.min(len - to);
            let copy = data[from..from + n].to_vec();
            data[to..to + n].copy_from_slice(&copy);
        }
        // Truncate.
        7 if len > 0 => data.truncate(rng.below(len)),
        // Splice: a prefix of this input and a suffix of another.
        8 if !src.corpus.is_empty() => {
            let other = rng.pick(src.corpus);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
            data.truncate(src.max_len);
        }
        // A dictionary token, inserted or written over.
        9 | 10 if !src.dictionary.is_empty() => {
            let token = *rng.pick(src.dictionary);
            let at = rng.below(len + 1);
            if rng.chance(1, 2) && at + token.len() <= len {
                data[at..at + token.len()].copy_from_slice(token);
            } else if len + token.len() <= src.max_len {
                data.splice(at..at, token.iter().copied());
            }
        }
        // Arithmetic on a byte.
        11 if len > 0 => {
            let i = rng.below(len);
            let delta = rng.between(1, 35) as u8;
            data[i] = if rng.chance(1, 2) {
                data[i].wrapping_add(delta)
            } else {
                data[i].wrapping_sub(delta)
            };
        }
        // Repeat a byte run (long runs find length handling bugs).
        12 if len > 0 => {
            let i = rng.below(len);
            let n = rng.small_len(4096).min(src.max_len.saturating_sub(len));
            let b = data[i];
            data.splice(i..i, std::iter::repeat_n(b, n));
        }
        // The chosen mutation does not apply to this input: append a random byte.
        _ => {
            if len < src.max_len {
                data.push(rng.byte());
            }
        }
    }
}

/// Apply 1 to `max_rounds` classic mutations (fewer more often).
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, src: &Sources<'_>, max_rounds: usize) {
    for _ in 0..rng.small_len(max_rounds) {
        mutate_once(rng, data, src);
    }
}

/// Arbitrary (mostly short) UTF-8 text mixed from a dictionary, random code points and
/// random ASCII.
pub fn random_text(rng: &mut Rng, dictionary: &[&str], max_len: usize) -> String {
    let mut s = String::new();
    let parts = rng.small_len(12);
    for _ in 0..parts {
        match rng.below(4) {
            0 if !dictionary.is_empty() => s.push_str(rng.pick::<&str>(dictionary)),
            1 => {
                let c = char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('\u{fffd}');
                s.push(c);
            }
            2 => s.push(*rng.pick(&['\\', '"', '\'', '/', '.', ' ', '\t', '\n', '\0', '%'])),
            _ => {
                for _ in 0..rng.small_len(8) {
                    s.push((0x20 + rng.below(0x5f)) as u8 as char);
                }
            }
        }
        if s.len() > max_len {
            break;
        }
    }
    s
}

/// Mutate text as bytes and return it if the result is still UTF-8, else a lossy copy.
pub fn mutate_text(rng: &mut Rng, text: &str, src: &Sources<'_>, rounds: usize) -> String {
    let mut b = text.as_bytes().to_vec();
    mutate_bytes(rng, &mut b, src, rounds);
    match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Tar
// ---------------------------------------------------------------------------------------

/// Structure-aware mutations of tar archives: header fields are rewritten and the
/// checksum recomputed, so the change gets past the header check and reaches the code
/// behind it; whole members (PAX headers, GNU long names, sparse headers, hostile links)
/// are inserted at member boundaries.
pub mod tar {
    use super::{mutate_bytes, Rng, Sources};

    pub const BLOCK: usize = 512;

    /// Field offsets and widths of the ustar header.
    pub const NAME: (usize, usize) = (0, 100);
    pub const MODE: (usize, usize) = (100, 8);
    pub const UID: (usize, usize) = (108, 8);
    pub const GID: (usize, usize) = (116, 8);
    pub const SIZE: (usize, usize) = (124, 12);
    pub const MTIME: (usize, usize) = (136, 12);
    pub const CHKSUM: (usize, usize) = (148, 8);
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: (usize, usize) = (157, 100);
    pub const MAGIC: (usize, usize) = (257, 8);
    pub const DEVMAJOR: (usize, usize) = (329, 8);
    pub const DEVMINOR: (usize, usize) = (337, 8);
    pub const PREFIX: (usize, usize) = (345, 155);
    /// Old GNU sparse header: four (offset, numbytes) pairs, "extended", real size.
    pub const GNU_SPARSE: usize = 386;
    pub const GNU_EXTENDED: usize = 482;
    pub const GNU_REALSIZE: (usize, usize) = (483, 12);

    /// Type flags worth trying: every known one, plus a few that are not.
    pub const TYPEFLAGS: &[u8] = b"0123456 7DKLMNSVgxXAZ\0\xff";

    /// Path components that try to get out, or hit the layer rules.
    pub const COMPONENTS: &[&str] = &[
        "..",
        ".",
        "",
        "a",
        "b",
        "dir",
        "file",
        "up",
        "slash",
        "abs",
        "rel",
        "hard",
        "outside",
        "sentinel",
        "sentinel-dir",
        "inner",
        ".wh.a",
        ".wh.file",
        ".wh.dir",
        ".wh.up",
        ".wh.outside",
        ".wh..wh..opq",
        ".wh..wh.plnk",
        ".wh..wh.aufs",
        ".wh.",
        ".wh..",
        ".wh...",
        "x\u{e9}",
        "\u{1}ctl",
    ];

    /// Checksum of a header block with the checksum field read as spaces.
    pub fn checksum(block: &[u8]) -> u32 {
        block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (CHKSUM.0..CHKSUM.0 + CHKSUM.1).contains(&i) {
                    u32::from(b' ')
                } else {
                    u32::from(b)
                }
            })
            .sum()
    }

    /// Write the checksum the way GNU tar does.
    pub fn fix_checksum(block: &mut [u8]) {
        let sum = checksum(block);
        block[CHKSUM.0..CHKSUM.0 + CHKSUM.1].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    /// Whether a block is a header with a correct (unsigned) checksum.
    pub fn is_header(block: &[u8]) -> bool {
        if block.len() < BLOCK || block.iter().all(|&b| b == 0) {
            return false;
        }
        let field = &block[CHKSUM.0..CHKSUM.0 + CHKSUM.1];
        let digits: String = field
            .iter()
            .map(|&b| b as char)
            .filter(|c| c.is_digit(8))
            .collect();
        u32::from_str_radix(&digits, 8).is_ok_and(|v| v == checksum(block))
    }

    /// Offsets of the blocks that are headers (checksum correct, 512-aligned).
    pub fn headers(data: &[u8]) -> Vec<usize> {
        (0..data.len() / BLOCK)
            .map(|i| i * BLOCK)
            .filter(|&o| is_header(&data[o..o + BLOCK]))
            .collect()
    }

    /// Octal or base-256 numeric field value (None if neither parses).
    pub fn read_number(field: &[u8]) -> Option<u64> {
        if field.first().is_some_and(|b| b & 0x80 != 0) {
            let mut v: u64 = u64::from(field[0] & 0x3f);
            for &b in &field[1..] {
                v = v.checked_mul(256)?.checked_add(u64::from(b))?;
            }
            return Some(v);
        }
        let s: String = field
            .iter()
            .map(|&b| b as char)
            .skip_while(|c| *c == ' ')
            .take_while(|c| c.is_digit(8))
            .collect();
        if s.is_empty() {
            return Some(0);
        }
        u64::from_str_radix(&s, 8).ok()
    }

    /// Octal text filling `width` bytes (digits, then NUL), if it fits.
    pub fn octal(value: u64, width: usize) -> Option<Vec<u8>> {
        let s = format!("{value:0w$o}\0", w = width - 1);
        (s.len() == width).then(|| s.into_bytes())
    }

    /// GNU base-256 of `width` bytes (two's complement; negative values start with 0xff).
    pub fn base256(value: i128, width: usize) -> Vec<u8> {
        let mut out = vec![if value < 0 { 0xff } else { 0 }; width];
        let be = value.to_be_bytes();
        let n = width.min(16);
        out[width - n..].copy_from_slice(&be[16 - n..]);
        out[0] |= 0x80;
        out
    }

    /// A hostile value for a numeric field of `width` bytes.
    pub fn number_field(rng: &mut Rng, width: usize, near: u64) -> Vec<u8> {
        match rng.below(9) {
            0 => octal(near, width).unwrap_or_else(|| base256(i128::from(near), width)),
            1 => {
                let v = near.wrapping_add(rng.between(1, 1024) as u64);
                octal(v, width).unwrap_or_else(|| base256(i128::from(v), width))
            }
            2 => {
                let v = near.saturating_sub(rng.between(1, 1024) as u64);
                octal(v, width).unwrap_or_else(|| base256(i128::from(v), width))
            }
            3 => vec![b'7'; width - 1].into_iter().chain([0]).collect(),
            4 => base256(i128::from(rng.interesting_u64()), width),
            5 => base256(-(rng.between(1, 1 << 20) as i128), width),
            6 => {
                // Garbage: spaces, a sign, non-octal digits, a missing terminator.
                let mut f = vec![b' '; width];
                for b in f.iter_mut() {
                    *b = *rng.pick(b" 0123456789-+x\0\xff");
                }
                f
            }
            7 => vec![0; width],
            _ => {
                let v = rng.interesting_u64();
                octal(v, width).unwrap_or_else(|| base256(i128::from(v), width))
            }
        }
    }

    /// A member name or link target that tries to leave the root or confuse the layer
    /// rules. `absolute` is the sandbox's absolute path (for host-absolute names).
    pub fn hostile_path(rng: &mut Rng, absolute: &[&str]) -> Vec<u8> {
        let mut p = Vec::new();
        match rng.below(6) {
            0 => p.push(b'/'),
            1 => p.extend_from_slice(b"./"),
            2 if !absolute.is_empty() => {
                p.extend_from_slice(rng.pick(absolute).as_bytes());
                p.push(b'/');
            }
            _ => {}
        }
        let n = rng.between(1, 4);
        for i in 0..n {
            if i > 0 {
                p.extend(std::iter::repeat_n(b'/', 1 + usize::from(rng.chance(1, 8))));
            }
            p.extend_from_slice(rng.pick(COMPONENTS).as_bytes());
        }
        match rng.below(12) {
            0 => p.push(b'/'),
            1 => p.extend_from_slice(b"/."),
            2 => p.extend_from_slice(&vec![b'x'; rng.between(90, 300)]),
            _ => {}
        }
        p
    }

    /// Write `value` into a string field (NUL-padded, cut at the width).
    pub fn set_str(block: &mut [u8], (at, width): (usize, usize), value: &[u8]) {
        let field = &mut block[at..at + width];
        field.fill(0);
        let n = value.len().min(width);
        field[..n].copy_from_slice(&value[..n]);
    }

    /// A fresh ustar (or GNU) header block with the checksum set.
    pub fn header(name: &[u8], typeflag: u8, size: u64, link: &[u8], gnu: bool) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        set_str(&mut b, NAME, name);
        b[MODE.0..MODE.0 + 8].copy_from_slice(b"0000755\0");
        b[UID.0..UID.0 + 8].copy_from_slice(b"0000000\0");
        b[GID.0..GID.0 + 8].copy_from_slice(b"0000000\0");
        let size_field = octal(size, 12).unwrap_or_else(|| base256(i128::from(size), 12));
        b[SIZE.0..SIZE.0 + 12].copy_from_slice(&size_field);
        b[MTIME.0..MTIME.0 + 12].copy_from_slice(b"14000000000\0");
        b[TYPEFLAG] = typeflag;
        set_str(&mut b, LINKNAME, link);
        if gnu {
            b[MAGIC.0..MAGIC.0 + 8].copy_from_slice(b"ustar  \0");
        } else {
            b[MAGIC.0..MAGIC.0 + 8].copy_from_slice(b"ustar\x0000");
        }
        fix_checksum(&mut b);
        b
    }

    /// A member (header, content, padding) as bytes.
    pub fn member(header: &[u8; BLOCK], content: &[u8]) -> Vec<u8> {
        let mut m = header.to_vec();
        m.extend_from_slice(content);
        m.resize(m.len().div_ceil(BLOCK) * BLOCK, 0);
        m
    }

    /// One PAX record with a correct length prefix.
    pub fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len.to_string().len() + body != len {
            len = len.to_string().len() + body;
        }
        let mut r = format!("{len} ").into_bytes();
        r.extend_from_slice(key);
        r.push(b'=');
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    }

    pub const PAX_KEYS: &[&str] = &[
        "path",
        "linkpath",
        "size",
        "uid",
        "gid",
        "mtime",
        "atime",
        "ctime",
        "uname",
        "comment",
        "SCHILY.devmajor",
        "SCHILY.devminor",
        "SCHILY.xattr.user.x",
        "SCHILY.xattr.user.",
        "SCHILY.xattr.",
        "SCHILY.xattr.security.capability",
        "SCHILY.xattr.trusted.overlay.opaque",
        "SCHILY.xattr.system.posix_acl_access",
        "GNU.sparse.major",
        "GNU.sparse.minor",
        "GNU.sparse.name",
        "GNU.sparse.realsize",
        "GNU.sparse.size",
        "GNU.sparse.numblocks",
        "GNU.sparse.offset",
        "GNU.sparse.numbytes",
        "GNU.sparse.map",
        "LIBARCHIVE.xattr.user.x",
    ];

    /// A value for a PAX key: usually of the right kind, sometimes hostile.
    pub fn pax_value(rng: &mut Rng, key: &str, absolute: &[&str]) -> Vec<u8> {
        let number = |rng: &mut Rng| -> Vec<u8> {
            match rng.below(6) {
                0 => rng.interesting_u64().to_string().into_bytes(),
                1 => b"99999999999999999999999".to_vec(),
                2 => b"-1".to_vec(),
                3 => b"".to_vec(),
                4 => format!("{}.{}", rng.below(100), rng.below(1000)).into_bytes(),
                _ => rng.below(4096).to_string().into_bytes(),
            }
        };
        if rng.chance(1, 10) {
            let n = rng.small_len(200);
            return rng.bytes(n);
        }
        match key {
            "path" | "linkpath" | "GNU.sparse.name" => hostile_path(rng, absolute),
            "mtime" | "atime" | "ctime" => match rng.below(5) {
                0 => b"-1.5".to_vec(),
                1 => b"1700000000.123456789123".to_vec(),
                2 => b"-9223372036854775808".to_vec(),
                3 => b"9223372036854775807.999999999".to_vec(),
                _ => number(rng),
            },
            "GNU.sparse.map" => {
                let n = rng.below(8);
                let fields: Vec<String> = (0..n)
                    .map(|_| {
                        if rng.chance(1, 6) {
                            rng.interesting_u64().to_string()
                        } else {
                            (rng.below(64) * 512).to_string()
                        }
                    })
                    .collect();
                fields.join(",").into_bytes()
            }
            "GNU.sparse.major" | "GNU.sparse.minor" => {
                if rng.chance(3, 4) {
                    rng.below(3).to_string().into_bytes()
                } else {
                    number(rng)
                }
            }
            k if k.contains("xattr") => {
                let n = rng.small_len(128);
                rng.bytes(n)
            }
            _ => number(rng),
        }
    }

    /// A PAX extended header body: records, some of them malformed.
    pub fn pax_body(rng: &mut Rng, absolute: &[&str]) -> Vec<u8> {
        let mut body = Vec::new();
        for _ in 0..rng.between(1, 5) {
            let key = *rng.pick(PAX_KEYS);
            let value = pax_value(rng, key, absolute);
            let mut record = pax_record(key.as_bytes(), &value);
            match rng.below(12) {
                // Length off by one or a few.
                0 => {
                    let space = record.iter().position(|&b| b == b' ').unwrap();
                    let len: usize = std::str::from_utf8(&record[..space])
                        .unwrap()
                        .parse()
                        .unwrap();
                    let odd = if rng.chance(1, 2) {
                        len + rng.between(1, 3)
                    } else {
                        len.saturating_sub(rng.between(1, 3))
                    };
                    record.splice(..space, odd.to_string().into_bytes());
                }
                // Huge length, or none.
                1 => {
                    let space = record.iter().position(|&b| b == b' ').unwrap();
                    let bad: &[u8] =
                        rng.pick::<&[u8]>(&[b"99999999999999999999999", b"", b"0", b"x"]);
                    record.splice(..space, bad.iter().copied());
                }
                // No newline, or no '='.
                2 => {
                    record.pop();
                }
                3 => {
                    if let Some(eq) = record.iter().position(|&b| b == b'=') {
                        record[eq] = b'_';
                    }
                }
                // Empty keyword.
                4 => record = pax_record(b"", &value),
                _ => {}
            }
            body.extend_from_slice(&record);
        }
        if rng.chance(1, 6) {
            body.extend_from_slice(&vec![0; rng.below(16)]);
        }
        body
    }

    /// Member boundaries: header offsets, plus the end of the data.
    fn boundaries(data: &[u8]) -> Vec<usize> {
        let mut b = headers(data);
        b.push(data.len() / BLOCK * BLOCK);
        b
    }

    /// Insert a member at a random member boundary.
    fn insert_member(rng: &mut Rng, data: &mut Vec<u8>, member: Vec<u8>) {
        let b = boundaries(data);
        let at = *rng.pick(&b);
        data.splice(at..at, member);
    }

    /// The end of the member that starts at header offset `h` (by its size field).
    fn member_end(data: &[u8], h: usize) -> usize {
        let size = read_number(&data[h + SIZE.0..h + SIZE.0 + SIZE.1])
            .unwrap_or(0)
            .min(data.len() as u64);
        let end = (h + BLOCK) as u64 + size.div_ceil(BLOCK as u64) * BLOCK as u64;
        end.min(data.len() as u64) as usize
    }

    /// Rewrite one field of one header (checksum recomputed unless asked not to).
    fn mutate_header(rng: &mut Rng, block: &mut [u8], corpus: &[Vec<u8>], absolute: &[&str]) {
        let current = |b: &[u8], (at, w): (usize, usize)| read_number(&b[at..at + w]).unwrap_or(0);
        match rng.below(16) {
            0 | 1 => {
                let near = current(block, SIZE);
                let v = number_field(rng, SIZE.1, near);
                block[SIZE.0..SIZE.0 + SIZE.1].copy_from_slice(&v);
            }
            2 => {
                let v = match rng.below(3) {
                    0 => octal(rng.below(0o10000) as u64, MODE.1).unwrap(),
                    1 => octal(0o7777, MODE.1).unwrap(),
                    _ => number_field(rng, MODE.1, 0o644),
                };
                block[MODE.0..MODE.0 + MODE.1].copy_from_slice(&v);
            }
            3 => {
                let field = *rng.pick(&[UID, GID]);
                let v = number_field(rng, field.1, 65534);
                block[field.0..field.0 + field.1].copy_from_slice(&v);
            }
            4 => {
                let v = number_field(rng, MTIME.1, 1_600_000_000);
                block[MTIME.0..MTIME.0 + MTIME.1].copy_from_slice(&v);
            }
            5 | 6 => block[TYPEFLAG] = *rng.pick(TYPEFLAGS),
            7 | 8 => {
                let p = hostile_path(rng, absolute);
                set_str(block, NAME, &p);
            }
            9 | 10 => {
                let p = hostile_path(rng, absolute);
                set_str(block, LINKNAME, &p);
            }
            11 => {
                let magic: &[u8] = rng.pick::<&[u8]>(&[
                    b"ustar\x0000",
                    b"ustar  \0",
                    b"\0\0\0\0\0\0\0\0",
                    b"ustar\0xx",
                ]);
                block[MAGIC.0..MAGIC.0 + 8].copy_from_slice(magic);
            }
            12 => {
                let p = hostile_path(rng, absolute);
                set_str(block, PREFIX, &p);
                if rng.chance(1, 4) {
                    block[508..512].copy_from_slice(b"tar\0");
                }
            }
            13 => {
                let field = *rng.pick(&[DEVMAJOR, DEVMINOR]);
                let v = number_field(rng, field.1, 1);
                block[field.0..field.0 + field.1].copy_from_slice(&v);
            }
            14 => {
                // Old GNU sparse map entries, the extended flag, the real size.
                match rng.below(3) {
                    0 => {
                        let i = rng.below(4);
                        let at = GNU_SPARSE + i * 24 + 12 * rng.below(2);
                        let near = (rng.below(8) * 512) as u64;
                        let v = number_field(rng, 12, near);
                        block[at..at + 12].copy_from_slice(&v);
                    }
                    1 => block[GNU_EXTENDED] = *rng.pick(&[0, 1, 0xff]),
                    _ => {
                        let v = number_field(rng, 12, current(block, SIZE));
                        block[GNU_REALSIZE.0..GNU_REALSIZE.0 + 12].copy_from_slice(&v);
                    }
                }
            }
            _ => {
                // The header of another archive (a different dialect, size, type).
                if let Some(other) = corpus.get(rng.below(corpus.len().max(1))) {
                    let hs = headers(other);
                    if !hs.is_empty() {
                        let h = *rng.pick(&hs);
                        block.copy_from_slice(&other[h..h + BLOCK]);
                    }
                }
            }
        }
        if !rng.chance(1, 50) {
            fix_checksum(block);
        }
    }

    /// A member built to reach a particular part of the reader or the applier.
    fn hostile_member(rng: &mut Rng, absolute: &[&str]) -> Vec<u8> {
        let gnu = rng.chance(1, 3);
        let name = hostile_path(rng, absolute);
        match rng.below(11) {
            // PAX local or global header, in front of a small file.
            0 | 1 => {
                let body = pax_body(rng, absolute);
                let flag = *rng.pick(b"xxxgX");
                let mut m = member(
                    &header(b"././@PaxHeader", flag, body.len() as u64, b"", false),
                    &body,
                );
                let n = rng.below(700);
                let content = rng.bytes(n);
                m.extend(member(
                    &header(&name, b'0', content.len() as u64, b"", false),
                    &content,
                ));
                m
            }
            // GNU long name or link, sometimes without the NUL, sometimes huge.
            2 => {
                let flag = *rng.pick(b"LK");
                let mut long = hostile_path(rng, absolute);
                if rng.chance(1, 3) {
                    long.extend(std::iter::repeat_n(b'y', rng.between(100, 5000)));
                }
                if rng.chance(3, 4) {
                    long.push(0);
                }
                let mut m = member(
                    &header(b"././@LongLink", flag, long.len() as u64, b"", true),
                    &long,
                );
                let link = hostile_path(rng, absolute);
                let typeflag = *rng.pick(b"0125");
                m.extend(member(&header(&name, typeflag, 0, &link, true), b""));
                m
            }
            // Symlink with a target that points out.
            3 | 4 => {
                let target = hostile_path(rng, absolute);
                member(&header(&name, b'2', 0, &target, gnu), b"")
            }
            // Hard link (size sometimes set: links have no data on tape).
            5 => {
                let target = hostile_path(rng, absolute);
                let size = if rng.chance(1, 3) { 512 } else { 0 };
                let mut m = member(&header(&name, b'1', size, &target, gnu), b"");
                m.extend(vec![0x41; size as usize]);
                m
            }
            // Old GNU sparse file with a map in the header (and maybe extension blocks).
            6 => {
                let mut h = header(&name, b'S', 0, b"", true);
                let segments = rng.between(0, 4);
                let mut stored = 0u64;
                for i in 0..segments {
                    let off = (i as u64) * 4096 + (rng.below(3) as u64) * 512;
                    let len = (rng.below(3) as u64) * 512 + rng.below(2) as u64;
                    let at = GNU_SPARSE + i * 24;
                    h[at..at + 12].copy_from_slice(&octal(off, 12).unwrap());
                    h[at + 12..at + 24].copy_from_slice(&octal(len, 12).unwrap());
                    stored += len;
                }
                let real = stored + (rng.below(4) as u64) * 4096;
                h[GNU_REALSIZE.0..GNU_REALSIZE.0 + 12].copy_from_slice(&octal(real, 12).unwrap());
                h[SIZE.0..SIZE.0 + 12].copy_from_slice(&octal(stored, 12).unwrap());
                let extended = rng.chance(1, 4);
                if extended {
                    h[GNU_EXTENDED] = 1;
                }
                fix_checksum(&mut h);
                let mut m = h.to_vec();
                if extended {
                    let mut ext = [0u8; BLOCK];
                    for i in 0..rng.between(0, 21) {
                        let at = i * 24;
                        let v = number_field(rng, 12, (i * 8192) as u64);
                        ext[at..at + 12].copy_from_slice(&v);
                        let v = number_field(rng, 12, 512);
                        ext[at + 12..at + 24].copy_from_slice(&v);
                    }
                    ext[504] = u8::from(rng.chance(1, 8));
                    m.extend_from_slice(&ext);
                }
                let content = rng.bytes(stored as usize);
                m.extend_from_slice(&content);
                m.resize(m.len().div_ceil(BLOCK) * BLOCK, 0);
                m
            }
            // PAX 1.0 sparse: the map is text at the start of the content.
            7 => {
                let records = [
                    pax_record(b"GNU.sparse.major", b"1"),
                    pax_record(b"GNU.sparse.minor", b"0"),
                    pax_record(b"GNU.sparse.name", &name),
                    pax_record(
                        b"GNU.sparse.realsize",
                        (rng.below(5) * 4096).to_string().as_bytes(),
                    ),
                ]
                .concat();
                let mut m = member(
                    &header(b"././@PaxHeader", b'x', records.len() as u64, b"", false),
                    &records,
                );
                let n = rng.below(4);
                let mut map = format!("{n}\n");
                for i in 0..n {
                    map.push_str(&format!("{}\n{}\n", i * 4096, rng.below(3) * 512));
                }
                let mut content = map.into_bytes();
                if rng.chance(1, 3) {
                    let n = rng.below(40);
                    content = rng.bytes(n);
                }
                content.resize(content.len().div_ceil(BLOCK) * BLOCK, 0);
                let n = rng.below(3) * 512;
                content.extend(rng.bytes(n));
                m.extend(member(
                    &header(b"GNUSparseFile.0/x", b'0', content.len() as u64, b"", false),
                    &content,
                ));
                m
            }
            // Depth through symlinks: a chain of directories, a symlink to its bottom, a
            // chain below the symlink, … (each symlink adds a chain's depth).
            10 if rng.chance(1, 4) => {
                let levels = *rng.pick(&[3usize, 100, 1000, 2047]);
                let chain = vec!["c"; levels].join("/");
                let mut m = Vec::new();
                let mut bottom = chain.clone();
                let long_dir = |m: &mut Vec<u8>, path: &str| {
                    let record = pax_record(b"path", path.as_bytes());
                    m.extend(member(
                        &header(b"././@PaxHeader", b'x', record.len() as u64, b"", false),
                        &record,
                    ));
                    m.extend(member(&header(b"dir", b'5', 0, b"", false), b""));
                };
                long_dir(&mut m, &chain);
                for k in 0..rng.between(1, 3) {
                    let link = format!("deep{k}");
                    let record = pax_record(b"linkpath", bottom.as_bytes());
                    m.extend(member(
                        &header(b"././@PaxHeader", b'x', record.len() as u64, b"", false),
                        &record,
                    ));
                    m.extend(member(&header(link.as_bytes(), b'2', 0, b"x", false), b""));
                    bottom = format!("{link}/{chain}");
                    long_dir(&mut m, &bottom);
                }
                // Replace the top of it all (a walk of the whole depth).
                m.extend(member(&header(b"c", b'0', 0, b"", false), b""));
                m
            }
            // Whiteouts and opaque markers, directories, devices, FIFOs.
            _ => {
                let typeflag = *rng.pick(b"035346");
                let mut h = header(&name, typeflag, 0, b"", gnu);
                if typeflag == b'3' || typeflag == b'4' {
                    let v = number_field(rng, 8, 1);
                    h[DEVMAJOR.0..DEVMAJOR.0 + 8].copy_from_slice(&v);
                    fix_checksum(&mut h);
                }
                member(&h, b"")
            }
        }
    }

    /// Mutate a PAX body in place (one record's length, key or value) and fix the header
    /// size to the new body length.
    fn mutate_pax(rng: &mut Rng, data: &mut Vec<u8>, absolute: &[&str]) -> bool {
        let pax: Vec<usize> = headers(data)
            .into_iter()
            .filter(|&h| matches!(data[h + TYPEFLAG], b'x' | b'g' | b'X'))
            .collect();
        if pax.is_empty() {
            return false;
        }
        let h = *rng.pick(&pax);
        let size = read_number(&data[h + SIZE.0..h + SIZE.0 + SIZE.1])
            .unwrap_or(0)
            .min(data.len() as u64) as usize;
        let start = h + BLOCK;
        let end = (start + size).min(data.len());
        let padded_end = (start + size.div_ceil(BLOCK) * BLOCK).min(data.len());
        let mut body = data[start..end].to_vec();
        match rng.below(3) {
            0 => body = pax_body(rng, absolute),
            1 => {
                let extra = pax_body(rng, absolute);
                let at = if rng.chance(1, 2) { 0 } else { body.len() };
                body.splice(at..at, extra);
            }
            _ => {
                let src = Sources {
                    corpus: &[],
                    dictionary: &[b"path=", b"size=", b" ", b"\n", b"=", b"GNU.sparse."],
                    max_len: 8192,
                };
                mutate_bytes(rng, &mut body, &src, 3);
            }
        }
        let mut new = body.clone();
        new.resize(body.len().div_ceil(BLOCK) * BLOCK, 0);
        data.splice(start..padded_end, new);
        let size_field = octal(body.len() as u64, 12).unwrap();
        data[h + SIZE.0..h + SIZE.0 + SIZE.1].copy_from_slice(&size_field);
        fix_checksum(&mut data[h..h + BLOCK]);
        true
    }

    /// One structure-aware mutation (falls back to byte mutations when the archive has
    /// no header left to work on).
    pub fn mutate_structure(
        rng: &mut Rng,
        data: &mut Vec<u8>,
        corpus: &[Vec<u8>],
        absolute: &[&str],
        max_len: usize,
    ) {
        let hs = headers(data);
        match rng.below(10) {
            0..=3 if !hs.is_empty() => {
                let h = *rng.pick(&hs);
                mutate_header(rng, &mut data[h..h + BLOCK], corpus, absolute);
            }
            4 | 5 => {
                let m = hostile_member(rng, absolute);
                insert_member(rng, data, m);
            }
            6 if mutate_pax(rng, data, absolute) => {}
            // Duplicate a member elsewhere (duplicates replace earlier members).
            7 if !hs.is_empty() => {
                let h = *rng.pick(&hs);
                let m = data[h..member_end(data, h)].to_vec();
                insert_member(rng, data, m);
            }
            // Drop a member.
            8 if !hs.is_empty() => {
                let h = *rng.pick(&hs);
                let end = member_end(data, h);
                data.drain(h..end);
            }
            // Cut at a block boundary or in the middle of one.
            9 if data.len() > BLOCK => {
                let at = if rng.chance(1, 2) {
                    rng.below(data.len() / BLOCK) * BLOCK
                } else {
                    rng.below(data.len())
                };
                data.truncate(at);
            }
            _ => {
                let src = Sources {
                    corpus,
                    dictionary: &[b"ustar\x0000", b"ustar  \0", b"././@LongLink", b"../"],
                    max_len,
                };
                mutate_bytes(rng, data, &src, 4);
            }
        }
        data.truncate(max_len);
    }

    /// A mutated archive: one corpus archive, then 1–6 structure-aware mutations, then
    /// (sometimes) a few raw byte mutations, which usually break a checksum on purpose.
    pub fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], absolute: &[&str], max_len: usize) -> Vec<u8> {
        let mut data = rng.pick(corpus).clone();
        for _ in 0..rng.small_len(6) {
            mutate_structure(rng, &mut data, corpus, absolute, max_len);
        }
        if rng.chance(1, 8) {
            let src = Sources {
                corpus,
                dictionary: &[],
                max_len,
            };
            mutate_bytes(rng, &mut data, &src, 3);
        }
        data
    }
}

// ---------------------------------------------------------------------------------------
// qcow2
// ---------------------------------------------------------------------------------------

/// Structure-aware mutations of qcow2 images: header fields, L1 and L2 entries (offsets,
/// the compressed/zero/copied bits, compressed sizes), and compressed data.
pub mod qcow2 {
    use super::{mutate_bytes, Rng, Sources};

    pub const COPIED: u64 = 1 << 63;
    pub const COMPRESSED: u64 = 1 << 62;
    pub const ZERO: u64 = 1;

    pub fn be32(d: &[u8], at: usize) -> u32 {
        d.get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
    }
    pub fn be64(d: &[u8], at: usize) -> u64 {
        d.get(at..at + 8)
            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()))
    }
    fn put32(d: &mut [u8], at: usize, v: u32) {
        if let Some(b) = d.get_mut(at..at + 4) {
            b.copy_from_slice(&v.to_be_bytes());
        }
    }
    fn put64(d: &mut [u8], at: usize, v: u64) {
        if let Some(b) = d.get_mut(at..at + 8) {
            b.copy_from_slice(&v.to_be_bytes());
        }
    }

    /// The header fields the converter reads.
    #[derive(Debug, Clone, Copy)]
    pub struct Fields {
        pub version: u32,
        pub cluster_bits: u32,
        pub size: u64,
        pub l1_size: u32,
        pub l1_offset: u64,
    }

    pub fn fields(d: &[u8]) -> Fields {
        Fields {
            version: be32(d, 4),
            cluster_bits: be32(d, 20),
            size: be64(d, 24),
            l1_size: be32(d, 36),
            l1_offset: be64(d, 40),
        }
    }

    /// Byte offsets of the L1 entries that lie inside the image.
    fn l1_slots(d: &[u8]) -> Vec<usize> {
        let f = fields(d);
        (0..u64::from(f.l1_size).min(1 << 16))
            .filter_map(|i| f.l1_offset.checked_add(i * 8))
            .filter(|&o| o + 8 <= d.len() as u64)
            .map(|o| o as usize)
            .collect()
    }

    /// Byte offsets of the L2 entries of every L2 table inside the image.
    fn l2_slots(d: &[u8]) -> Vec<usize> {
        let f = fields(d);
        if !(9..=21).contains(&f.cluster_bits) {
            return Vec::new();
        }
        let cluster = 1usize << f.cluster_bits;
        let mut out = Vec::new();
        for slot in l1_slots(d) {
            let table = (be64(d, slot) & !COPIED & !COMPRESSED) as usize;
            if table != 0 && table.checked_add(cluster).is_some_and(|e| e <= d.len()) {
                out.extend((0..cluster / 8).map(|j| table + j * 8));
            }
        }
        out
    }

    /// A hostile offset into (or just out of) an image of `len` bytes.
    fn offset(rng: &mut Rng, len: usize, cluster: u64) -> u64 {
        let len = len as u64;
        match rng.below(8) {
            0 => 0,
            1 => len,
            2 => len.saturating_sub(cluster),
            3 => len.saturating_sub(rng.between(1, 600) as u64),
            4 => (rng.below((len / cluster.max(1)).max(1) as usize) as u64) * cluster,
            5 => rng.below(len.max(1) as usize) as u64,
            6 => (1u64 << 56) - cluster,
            _ => rng.interesting_u64() & ((1 << 62) - 1),
        }
    }

    /// One structure-aware mutation.
    pub fn mutate_structure(rng: &mut Rng, d: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
        let f = fields(d);
        let cluster = if (9..=21).contains(&f.cluster_bits) {
            1u64 << f.cluster_bits
        } else {
            65536
        };
        match rng.below(12) {
            // Header fields.
            0..=2 => match rng.below(9) {
                0 => put32(d, 4, *rng.pick(&[0, 1, 2, 3, 4, u32::MAX])),
                1 => put32(
                    d,
                    20,
                    *rng.pick(&[0, 8, 9, 12, 16, 20, 21, 22, 31, 32, 63, 64, 255]),
                ),
                2 => {
                    let v = match rng.below(6) {
                        0 => f.size.wrapping_add(rng.between(1, 4096) as u64),
                        1 => f.size.saturating_sub(rng.between(1, 4096) as u64),
                        2 => f.size.wrapping_mul(1 << rng.below(20)),
                        3 => (rng.below(64) as u64) * cluster,
                        _ => rng.interesting_u64(),
                    };
                    put64(d, 24, v);
                }
                3 => put32(d, 32, *rng.pick(&[0, 1, 2])),
                4 => {
                    let v = *rng.pick(&[
                        0,
                        1,
                        f.l1_size.wrapping_add(1),
                        f.l1_size.saturating_sub(1),
                        f.l1_size.wrapping_mul(64),
                        32 << 20,
                        (32 << 20) + 1,
                        u32::MAX,
                    ]);
                    put32(d, 36, v);
                }
                5 => {
                    let v = offset(rng, d.len(), cluster);
                    put64(d, 40, v);
                }
                6 => put64(d, 72, *rng.pick(&[0, 1, 2, 4, 8, 16, 1 << 63])),
                7 => put32(d, 100, *rng.pick(&[0, 72, 103, 104, 105, 112, u32::MAX])),
                _ => {
                    // Fields the converter ignores (backing file, refcounts, snapshots).
                    let at = *rng.pick(&[8usize, 16, 48, 56, 60, 64, 80, 88, 96]);
                    let v = rng.interesting_u64();
                    put64(d, at, v);
                }
            },
            // L1 entries.
            3..=4 => {
                let slots = l1_slots(d);
                if slots.is_empty() {
                    return mutate_structure(rng, d, corpus, max_len);
                }
                let slot = *rng.pick(&slots);
                let other = be64(d, *rng.pick(&slots));
                let v = match rng.below(6) {
                    0 => 0,
                    1 => other,
                    2 => offset(rng, d.len(), cluster) | if rng.chance(1, 2) { COPIED } else { 0 },
                    3 => be64(d, slot) | COMPRESSED,
                    4 => be64(d, slot) | ZERO,
                    _ => rng.next_u64(),
                };
                put64(d, slot, v);
            }
            // L2 entries.
            5..=8 => {
                let slots = l2_slots(d);
                if slots.is_empty() {
                    return mutate_structure(rng, d, corpus, max_len);
                }
                let slot = *rng.pick(&slots);
                let current = be64(d, slot);
                let bits = f.cluster_bits.clamp(9, 21);
                let size_shift = 62 - (bits - 8);
                let v = match rng.below(9) {
                    0 => 0,
                    1 => be64(d, *rng.pick(&slots)),
                    2 => offset(rng, d.len(), cluster) | COPIED,
                    3 => current | ZERO,
                    4 => current ^ COMPRESSED,
                    // Compressed: a sector count and an offset of our choosing.
                    5 | 6 => {
                        let sectors = rng.below(1 << (bits - 8)) as u64;
                        let host = offset(rng, d.len(), 512) & ((1u64 << size_shift) - 1);
                        COMPRESSED | (sectors << size_shift) | host
                    }
                    7 if current & COMPRESSED != 0 => {
                        // Shift the compressed data start a little.
                        let host = current & ((1u64 << size_shift) - 1);
                        let moved = host
                            .wrapping_add(rng.between(1, 64) as u64)
                            .wrapping_sub(32);
                        (current & !((1u64 << size_shift) - 1))
                            | (moved & ((1u64 << size_shift) - 1))
                    }
                    _ => rng.next_u64(),
                };
                put64(d, slot, v);
            }
            // Corrupt the data a compressed cluster points at.
            9 => {
                let compressed: Vec<u64> = l2_slots(d)
                    .into_iter()
                    .map(|s| be64(d, s))
                    .filter(|e| e & COMPRESSED != 0)
                    .collect();
                if compressed.is_empty() {
                    return mutate_structure(rng, d, corpus, max_len);
                }
                let e = *rng.pick(&compressed);
                let bits = f.cluster_bits.clamp(9, 21);
                let host = (e & ((1u64 << (62 - (bits - 8))) - 1)) as usize;
                for _ in 0..rng.small_len(8) {
                    let at = host + rng.below(64);
                    if at < d.len() {
                        d[at] ^= 1 << rng.below(8);
                    }
                }
            }
            // Truncate at a cluster boundary (often where the data starts).
            10 => {
                let n = (d.len() as u64 / cluster).max(1);
                d.truncate((rng.below(n as usize) as u64 * cluster) as usize);
            }
            _ => {
                let src = Sources {
                    corpus,
                    dictionary: &[b"QFI\xfb"],
                    max_len,
                };
                mutate_bytes(rng, d, &src, 4);
            }
        }
        d.truncate(max_len);
    }

    /// A mutated image: one corpus image and 1–5 structure-aware mutations.
    pub fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], max_len: usize) -> Vec<u8> {
        let mut d = rng.pick(corpus).clone();
        for _ in 0..rng.small_len(5) {
            mutate_structure(rng, &mut d, corpus, max_len);
        }
        d
    }
}

// ---------------------------------------------------------------------------------------
// Memory accounting
// ---------------------------------------------------------------------------------------

/// A global allocator that counts, per thread, the bytes allocated during a case, so a
/// campaign can fail a case that allocates absurdly. A test binary opts in with
/// `#[global_allocator] static A: mutate::CountingAlloc = mutate::CountingAlloc;`.
///
/// While a case is running on a thread, a single request above the hard limit (or live
/// bytes above it) ends the process with the case's seed, before the allocation could
/// take the machine down.
pub struct CountingAlloc;

thread_local! {
    /// Bytes allocated minus bytes freed on this thread since the case began.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// Hard limit of the running case (0: no case running).
    static HARD_LIMIT: Cell<usize> = const { Cell::new(0) };
    /// Set while reporting, so the report's own allocations are not checked.
    static REPORTING: Cell<bool> = const { Cell::new(false) };
}

/// Whether a [`CountingAlloc`] is installed (set by its first allocation).
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn account(delta: isize, request: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        let limit = HARD_LIMIT.try_with(Cell::get).unwrap_or(0);
        if limit > 0 && (request > limit || now > limit as isize) {
            let reporting = REPORTING.try_with(|r| r.replace(true)).unwrap_or(true);
            if !reporting {
                watchdog_fail(&format!(
                    "allocated {request} bytes ({now} live) during one case, beyond the limit of {limit}"
                ));
            }
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are thread-local
// `Cell`s with constant initializers and no destructors, which need no allocation.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNTING.store(true, std::sync::atomic::Ordering::Relaxed);
        account(layout.size() as isize, layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize, layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize), 0);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize, new_size);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn memory_begin(hard_limit: usize) {
    let _ = LIVE.try_with(|l| l.set(0));
    let _ = PEAK.try_with(|p| p.set(0));
    let _ = HARD_LIMIT.try_with(|h| h.set(hard_limit));
}

/// Peak bytes of the case (allocated on this thread and still live at the peak).
fn memory_end() -> usize {
    let _ = HARD_LIMIT.try_with(|h| h.set(0));
    PEAK.try_with(Cell::get).unwrap_or(0).max(0) as usize
}

// ---------------------------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------------------------

/// The case a thread is running.
struct Running {
    campaign: String,
    seed: u64,
    input: Arc<Vec<u8>>,
    deadline: Instant,
}

struct Watchdog {
    running: Mutex<HashMap<ThreadId, Running>>,
    changed: Condvar,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let w: &'static Watchdog = Box::leak(Box::new(Watchdog {
            running: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("mutation-watchdog".into())
            .spawn(move || watch(w))
            .expect("spawn the watchdog thread");
        w
    })
}

/// The watchdog thread: waits until the earliest deadline of the running cases; a case
/// still running then fails the whole run (a hung case cannot be stopped from outside).
fn watch(w: &'static Watchdog) {
    let mut running = w.running.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let late = running
            .values()
            .find(|r| r.deadline <= now)
            .map(|r| (r.campaign.clone(), r.seed, r.input.clone()));
        if let Some((campaign, seed, input)) = late {
            let path = save_failure(&campaign, seed, &input);
            eprintln!(
                "\nmutation campaign {campaign}: case seed {seed:#018x} did not finish within {}s (a hang).\n\
                 Input saved to {}; replay with MUTATION_REPLAY={} or MUTATION_CASE_SEED={seed:#x}.",
                case_timeout().as_secs(),
                path.display(),
                path.display()
            );
            std::process::exit(101);
        }
        let wait = running
            .values()
            .map(|r| r.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        running = w
            .changed
            .wait_timeout(running, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Fail the run from inside an allocation: report the case this thread is running.
fn watchdog_fail(what: &str) -> ! {
    let me = std::thread::current().id();
    let running = watchdog().running.lock().unwrap_or_else(|e| e.into_inner());
    match running.get(&me) {
        Some(r) => {
            let path = save_failure(&r.campaign, r.seed, &r.input);
            eprintln!(
                "\nmutation campaign {}: case seed {:#018x} {what}.\nInput saved to {}; replay with MUTATION_REPLAY={}.",
                r.campaign,
                r.seed,
                path.display(),
                path.display()
            );
        }
        None => eprintln!("\nmutation: {what} (no case registered for this thread)."),
    }
    std::process::exit(101);
}

fn case_timeout() -> Duration {
    let secs = std::env::var("MUTATION_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

fn failures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MUTATION_FAILURES") {
        return PathBuf::from(dir);
    }
    match option_env!("CARGO_TARGET_TMPDIR") {
        Some(tmp) => PathBuf::from(tmp).join("mutation-failures"),
        None => std::env::temp_dir().join("systemd-import-mutation-failures"),
    }
}

/// Write a failing input where it can be replayed from; returns its path.
fn save_failure(campaign: &str, seed: u64, input: &[u8]) -> PathBuf {
    let dir = failures_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{campaign}-{seed:016x}.bin"));
    if let Err(e) = std::fs::write(&path, input) {
        eprintln!("cannot save the failing input to {}: {e}", path.display());
    }
    path
}

// ---------------------------------------------------------------------------------------
// Campaigns
// ---------------------------------------------------------------------------------------

thread_local! {
    /// Outcome labels of this thread's campaign, for `MUTATION_STATS=1`.
    static OUTCOMES: std::cell::RefCell<std::collections::BTreeMap<String, u64>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// Record how a case ended (an error message, "ok"), so `MUTATION_STATS=1` can show
/// which code the mutations reach. Quoted names and numbers are blanked out first.
pub fn note_outcome(what: &str) {
    if std::env::var_os("MUTATION_STATS").is_none() {
        return;
    }
    let mut label = String::new();
    let mut quoted = false;
    let mut word = String::new();
    let flush = |word: &mut String, label: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            label.push('N');
        } else {
            label.push_str(word);
        }
        word.clear();
    };
    for c in what.chars() {
        if c == '\'' {
            flush(&mut word, &mut label);
            quoted = !quoted;
            label.push_str(if quoted { "'…" } else { "'" });
        } else if quoted {
        } else if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut label);
            label.push(c);
        }
    }
    flush(&mut word, &mut label);
    OUTCOMES.with(|o| *o.borrow_mut().entry(label).or_default() += 1);
}

fn print_outcomes(campaign: &str) {
    if std::env::var_os("MUTATION_STATS").is_none() {
        return;
    }
    let outcomes = OUTCOMES.with(|o| std::mem::take(&mut *o.borrow_mut()));
    let mut sorted: Vec<_> = outcomes.into_iter().collect();
    sorted.sort_by_key(|o| std::cmp::Reverse(o.1));
    let mut text = format!("mutation campaign {campaign}: outcomes\n");
    for (label, n) in sorted {
        text.push_str(&format!("{n:>8}  {label}\n"));
    }
    eprint!("{text}");
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A fixed number of mutated cases from fixed seeds, checked by the caller's oracle.
pub struct Campaign {
    pub name: String,
    pub iterations: u64,
    pub base_seed: u64,
    /// Peak bytes one case may allocate on its thread (soft: checked after the case).
    pub memory_limit: Option<usize>,
    /// A single allocation or live total above this ends the run at once.
    pub hard_memory_limit: usize,
}

impl Campaign {
    /// A campaign named `name` (also the prefix of its saved inputs) with the CI-sized
    /// `iterations`, unless the environment asks for more.
    pub fn new(name: &str, iterations: u64) -> Campaign {
        let base_seed = env_u64("MUTATION_SEED").unwrap_or_else(|| {
            name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        });
        Campaign {
            name: name.to_string(),
            iterations: env_u64("MUTATION_ITERATIONS").unwrap_or(iterations),
            base_seed,
            memory_limit: None,
            hard_memory_limit: 1 << 30,
        }
    }

    /// Check the peak memory of each case (needs [`CountingAlloc`] as global allocator).
    pub fn memory_limit(mut self, bytes: usize) -> Campaign {
        self.memory_limit = Some(bytes);
        self.hard_memory_limit = self.hard_memory_limit.max(bytes * 4);
        self
    }

    /// The seed of case `i`.
    pub fn case_seed(&self, i: u64) -> u64 {
        mix(self.base_seed ^ mix(i))
    }

    /// Run every case: `generate` makes an input from the case's PRNG, `check` runs the
    /// code under test on it and returns what is wrong. A panic in `check`, an error it
    /// returns, a case that outlives the watchdog or allocates beyond the limits fails
    /// the run with the case's seed and a saved copy of its input.
    pub fn run(
        &self,
        mut generate: impl FnMut(&mut Rng) -> Vec<u8>,
        mut check: impl FnMut(&[u8]) -> Result<(), String>,
    ) {
        if self.memory_limit.is_some() {
            assert!(
                COUNTING.load(std::sync::atomic::Ordering::Relaxed),
                "campaign {} checks memory but the test binary has no CountingAlloc as its global allocator",
                self.name
            );
        }
        let keep_going = std::env::var("MUTATION_KEEP_GOING").is_ok_and(|v| v == "1");
        let mut failures: Vec<String> = Vec::new();

        let cases: Vec<(u64, Option<Vec<u8>>)> = if let Ok(path) = std::env::var("MUTATION_REPLAY")
        {
            let path = PathBuf::from(path);
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !file.starts_with(&format!("{}-", self.name)) {
                return;
            }
            let input = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            // `<campaign>-<seed in hex>.bin`, as save_failure names it.
            let seed = file
                .strip_prefix(&format!("{}-", self.name))
                .and_then(|rest| rest.strip_suffix(".bin"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .unwrap_or(0);
            vec![(seed, Some(input))]
        } else if let Some(seed) = env_u64("MUTATION_CASE_SEED") {
            vec![(seed, None)]
        } else {
            Vec::new()
        };
        let single = !cases.is_empty();
        let total = if single {
            cases.len() as u64
        } else {
            self.iterations
        };
        let started = Instant::now();
        let mut cases = cases.into_iter();

        for i in 0..total {
            let (seed, input) = if single {
                cases.next().expect("counted")
            } else {
                (self.case_seed(i), None)
            };
            let input = match input {
                Some(input) => input,
                None => std::panic::catch_unwind(AssertUnwindSafe(|| generate(&mut Rng::new(seed))))
                    .unwrap_or_else(|_| {
                        panic!("mutation campaign {}: the mutator panicked on case seed {seed:#x} (a bug of the test)", self.name)
                    }),
            };
            let input = Arc::new(input);
            let me = std::thread::current().id();
            {
                let w = watchdog();
                let mut running = w.running.lock().unwrap_or_else(|e| e.into_inner());
                running.insert(
                    me,
                    Running {
                        campaign: self.name.clone(),
                        seed,
                        input: input.clone(),
                        deadline: Instant::now() + case_timeout(),
                    },
                );
                w.changed.notify_all();
            }
            let hard = if self.memory_limit.is_some() {
                self.hard_memory_limit
            } else {
                0
            };
            memory_begin(hard);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(&input)));
            let peak = memory_end();
            watchdog()
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&me);

            let problem = match outcome {
                Ok(Ok(())) => match self.memory_limit {
                    Some(limit) if peak > limit => Some(format!(
                        "allocated {peak} bytes at its peak, more than the limit of {limit}"
                    )),
                    _ => None,
                },
                Ok(Err(what)) => Some(what),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "(non-string panic)".into());
                    Some(format!("panicked: {what}"))
                }
            };
            if let Some(mut what) = problem {
                if what.len() > 4000 {
                    let mut cut = 4000;
                    while !what.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    what.truncate(cut);
                    what.push_str(" …");
                }
                let path = save_failure(&self.name, seed, &input);
                let line = format!(
                    "mutation campaign {}: case {i} (seed {seed:#018x}) failed: {what}\n  input: {} ({} bytes); replay with MUTATION_REPLAY={} or MUTATION_CASE_SEED={seed:#x}",
                    self.name,
                    path.display(),
                    input.len(),
                    path.display()
                );
                if !keep_going {
                    panic!("{line}");
                }
                eprintln!("{line}");
                failures.push(line);
            }
            if total >= 20_000 && (i + 1) % (total / 10) == 0 {
                eprintln!(
                    "mutation campaign {}: {}/{} cases, {:.0}s, {} failures",
                    self.name,
                    i + 1,
                    total,
                    started.elapsed().as_secs_f64(),
                    failures.len()
                );
            }
        }
        print_outcomes(&self.name);
        assert!(
            failures.is_empty(),
            "{} of {total} cases failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

//! Structure-aware mutations of tar archives: header fields are rewritten and the
//! checksum recomputed, so the change gets past the header check and reaches the code
//! behind it; whole members (PAX headers, GNU long names, sparse headers, hostile links)
//! are inserted at member boundaries.

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
                let bad: &[u8] = rng.pick::<&[u8]>(&[b"99999999999999999999999", b"", b"0", b"x"]);
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

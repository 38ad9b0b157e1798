//! The header blocks of the archives we write: one ustar header per member, preceded by
//! a PAX extended header (`x`) when a value does not fit the ustar fields or has no field
//! (xattrs, sub-second times, the sparse map's description).
//!
//! Choices (each one GNU tar makes too, so that `tar -x` reads what it expects):
//! * numbers are octal, zero-padded and NUL-terminated; a number that does not fit goes
//!   to its PAX record (`size`, `uid`, `gid`, `mtime`, `SCHILY.devmajor/devminor`) and
//!   the field holds 0;
//! * a name longer than 100 bytes is split into prefix and name at a `/` when it can be,
//!   else it goes to a PAX `path` record; a link target longer than 100 bytes goes to
//!   `linkpath`;
//! * `mtime` is a PAX record whenever it has nanoseconds (`sec.nnnnnnnnn`);
//! * no user or group names: owners are numeric only (as `--numeric-owner`);
//! * xattrs are `SCHILY.xattr.NAME` records with the raw value, sorted by name;
//! * a sparse file is written in GNU's PAX sparse format 1.0: records
//!   `GNU.sparse.major=1`, `GNU.sparse.minor=0`, `GNU.sparse.name` (the real name) and
//!   `GNU.sparse.realsize`; the ustar name is a placeholder `DIR/GNUSparseFile.0/BASE`;
//!   the map itself opens the member's data ([`sparse_map_block`]).
//!
//! Everything here is deterministic: the same member gives the same bytes.

/// The tar block size.
pub const BLOCK: usize = 512;

/// Largest value of a 12-byte octal field (11 digits): 8 GiB - 1.
const MAX_OCTAL_11: u64 = (1 << 33) - 1;

/// The kinds of members we write, with their typeflags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl Kind {
    fn typeflag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::Char => b'3',
            Kind::Block => b'4',
            Kind::Dir => b'5',
            Kind::Fifo => b'6',
        }
    }
}

/// One member's metadata, as it goes into its headers.
#[derive(Clone, Debug)]
pub struct Member<'a> {
    /// The archive name: `./` for the root, `./a/b` below it, directories ending in `/`.
    pub path: &'a [u8],
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`st_mode & 07777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds and nanoseconds since the epoch.
    pub mtime: (i64, u32),
    /// Bytes of content that follow the headers (for a sparse file: map and data).
    pub size: u64,
    /// Symlink target, or the archive name a hard link points to.
    pub link: &'a [u8],
    /// Major and minor of a device node.
    pub dev: (u64, u64),
    /// Extended attributes (name without NUL, value), sorted by name.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
    /// For a sparse file: its real size (the map and data are the content).
    pub sparse_size: Option<u64>,
}

/// One PAX record: `LEN KEY=VALUE\n`, where LEN counts the whole record, itself included.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
    let mut len = rest + 1;
    // Adding the length's own digits can add a digit; two rounds settle it.
    while len != rest + digits(len) {
        len = rest + digits(len);
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

/// A time as PAX writes it: `sec.nnnnnnnnn`, negative times as `-S.F` meaning
/// `-(S + F)`.
fn pax_time((sec, nsec): (i64, u32)) -> String {
    if nsec == 0 {
        sec.to_string()
    } else if sec >= 0 {
        format!("{sec}.{nsec:09}")
    } else {
        // sec + nsec/1e9 = -((-sec - 1) + (1e9 - nsec)/1e9)
        let whole = -(sec + 1);
        format!("-{whole}.{:09}", 1_000_000_000 - nsec)
    }
}

/// Write `value` as zero-padded octal with a NUL into `field`; false if it does not fit.
fn octal(field: &mut [u8], value: u64) -> bool {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    if text.len() > width {
        return false;
    }
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
    true
}

/// Split a name into ustar's prefix (≤ 155 bytes) and name (1..=100 bytes) at a `/`.
fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((b"", path));
    }
    // The name part must be ≤ 100 bytes: the split '/' lies at len-101 or later.
    let earliest = path.len() - 101;
    let slash = path[earliest..path.len() - 1]
        .iter()
        .position(|&b| b == b'/')?
        + earliest;
    (slash <= 155).then(|| (&path[..slash], &path[slash + 1..]))
}

/// `DIR/TAG/BASE` for a member named `DIR/BASE` (a trailing `/` is dropped first), cut to
/// the 100 bytes of the name field: the names GNU tar gives PAX headers
/// (`PaxHeaders`) and sparse placeholders (`GNUSparseFile.0`).
fn aside(path: &[u8], tag: &[u8]) -> Vec<u8> {
    let trimmed = match path {
        [rest @ .., b'/'] if !rest.is_empty() => rest,
        _ => path,
    };
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&b"."[..], trimmed),
    };
    let mut name = [dir, b"/", tag, b"/", base].concat();
    name.truncate(100);
    name
}

/// One ustar block. `name` must fit (see [`split_ustar`]) or be cut by the caller.
struct Ustar {
    block: [u8; BLOCK],
}

impl Ustar {
    fn new() -> Self {
        let mut block = [0u8; BLOCK];
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        Ustar { block }
    }

    fn name(&mut self, prefix: &[u8], name: &[u8]) {
        self.block[..name.len()].copy_from_slice(name);
        self.block[345..345 + prefix.len()].copy_from_slice(prefix);
    }

    /// Set a numeric field; a value that does not fit leaves 0 there and returns false.
    fn number(&mut self, range: std::ops::Range<usize>, value: u64) -> bool {
        let fits = octal(&mut self.block[range.clone()], value);
        if !fits {
            octal(&mut self.block[range], 0);
        }
        fits
    }

    fn finish(mut self, typeflag: u8, out: &mut Vec<u8>) {
        self.block[156] = typeflag;
        self.block[148..156].fill(b' ');
        let sum: u32 = self.block.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        self.block[148..156].copy_from_slice(text.as_bytes());
        out.extend_from_slice(&self.block);
    }
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % BLOCK;
    if rem != 0 {
        out.resize(out.len() + BLOCK - rem, 0);
    }
}

/// Append `member`'s header blocks to `out`: a PAX extended header if one is needed,
/// then the ustar header. The member's content follows them.
pub fn encode(member: &Member<'_>, out: &mut Vec<u8>) {
    let mut records = Vec::new();
    let mut ustar = Ustar::new();

    match member.sparse_size {
        Some(real_size) => {
            // The real name lives in GNU.sparse.name; the header carries a placeholder.
            let placeholder = aside(member.path, b"GNUSparseFile.0");
            ustar.name(b"", &placeholder);
            pax_record(&mut records, b"GNU.sparse.major", b"1");
            pax_record(&mut records, b"GNU.sparse.minor", b"0");
            pax_record(&mut records, b"GNU.sparse.name", member.path);
            let real = real_size.to_string();
            pax_record(&mut records, b"GNU.sparse.realsize", real.as_bytes());
        }
        None => match split_ustar(member.path) {
            Some((prefix, name)) => ustar.name(prefix, name),
            None => {
                pax_record(&mut records, b"path", member.path);
                ustar.name(b"", &member.path[..100]);
            }
        },
    }
    if member.link.len() > 100 {
        pax_record(&mut records, b"linkpath", member.link);
        ustar.block[157..257].copy_from_slice(&member.link[..100]);
    } else {
        ustar.block[157..157 + member.link.len()].copy_from_slice(member.link);
    }

    ustar.number(100..108, u64::from(member.mode & 0o7777));
    for (range, value, key) in [
        (108..116, member.uid, &b"uid"[..]),
        (116..124, member.gid, b"gid"),
        (124..136, member.size, b"size"),
    ] {
        if !ustar.number(range, value) {
            pax_record(&mut records, key, value.to_string().as_bytes());
        }
    }
    let (sec, nsec) = member.mtime;
    let header_mtime = u64::try_from(sec).ok().filter(|&s| s <= MAX_OCTAL_11);
    ustar.number(136..148, header_mtime.unwrap_or(0));
    if header_mtime.is_none() || nsec != 0 {
        pax_record(&mut records, b"mtime", pax_time(member.mtime).as_bytes());
    }
    if matches!(member.kind, Kind::Char | Kind::Block) {
        let (major, minor) = member.dev;
        if !ustar.number(329..337, major) {
            pax_record(
                &mut records,
                b"SCHILY.devmajor",
                major.to_string().as_bytes(),
            );
        }
        if !ustar.number(337..345, minor) {
            pax_record(
                &mut records,
                b"SCHILY.devminor",
                minor.to_string().as_bytes(),
            );
        }
    } else {
        ustar.number(329..337, 0);
        ustar.number(337..345, 0);
    }
    for (name, value) in member.xattrs {
        pax_record(&mut records, &[&b"SCHILY.xattr."[..], name].concat(), value);
    }

    if !records.is_empty() {
        let mut pax = Ustar::new();
        pax.name(b"", &aside(member.path, b"PaxHeaders"));
        pax.number(100..108, 0o644);
        pax.number(108..116, 0);
        pax.number(116..124, 0);
        pax.number(124..136, records.len() as u64);
        pax.number(136..148, header_mtime.unwrap_or(0));
        pax.number(329..337, 0);
        pax.number(337..345, 0);
        pax.finish(b'x', out);
        out.extend_from_slice(&records);
        pad(out);
    }
    ustar.finish(member.kind.typeflag(), out);
}

/// The opening of a sparse member's data in format 1.0: the number of segments, then
/// each segment's offset and length, one decimal number per line, padded with NULs to
/// a block boundary. The map must end with a segment reaching the real size (a
/// zero-length one at the real size when the file ends in a hole): GNU tar truncates
/// the file there.
pub fn sparse_map_block(map: &[(u64, u64)], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(format!("{}\n", map.len()).as_bytes());
    for (offset, len) in map {
        out.extend_from_slice(format!("{offset}\n{len}\n").as_bytes());
    }
    let rem = (out.len() - start) % BLOCK;
    if rem != 0 {
        out.resize(out.len() + BLOCK - rem, 0);
    }
}

/// The size of [`sparse_map_block`]'s output for `map`.
pub fn sparse_map_len(map: &[(u64, u64)]) -> u64 {
    let text: usize = digits(map.len())
        + 1
        + map
            .iter()
            .map(|&(o, l)| o.to_string().len() + l.to_string().len() + 2)
            .sum::<usize>();
    text.div_ceil(BLOCK) as u64 * BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(path: &[u8]) -> Member<'_> {
        Member {
            path,
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: (1_600_000_000, 0),
            size: 5,
            link: b"",
            dev: (0, 0),
            xattrs: &[],
            sparse_size: None,
        }
    }

    /// The PAX records of an encoded member (empty without a PAX header).
    fn records(blocks: &[u8]) -> Vec<(String, Vec<u8>)> {
        if blocks[156] != b'x' {
            return Vec::new();
        }
        let size = usize::from_str_radix(
            std::str::from_utf8(&blocks[124..135])
                .unwrap()
                .trim_start_matches('0'),
            8,
        )
        .unwrap_or(0);
        let mut body = &blocks[BLOCK..BLOCK + size];
        let mut out = Vec::new();
        while !body.is_empty() {
            let sp = body.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&body[..sp]).unwrap().parse().unwrap();
            let record = &body[sp + 1..len - 1];
            assert_eq!(body[len - 1], b'\n');
            let eq = record.iter().position(|&b| b == b'=').unwrap();
            out.push((
                String::from_utf8(record[..eq].to_vec()).unwrap(),
                record[eq + 1..].to_vec(),
            ));
            body = &body[len..];
        }
        out
    }

    fn checksum_ok(block: &[u8]) -> bool {
        let stored = u32::from_str_radix(std::str::from_utf8(&block[148..154]).unwrap(), 8);
        let sum: u32 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        stored == Ok(sum)
    }

    #[test]
    fn record_lengths_count_their_own_digits() {
        // Lengths around the points where the length gains a digit.
        for value_len in 0..1200 {
            let mut out = Vec::new();
            let value = vec![b'v'; value_len];
            pax_record(&mut out, b"path", &value);
            let sp = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value of {value_len} bytes");
        }
    }

    #[test]
    fn short_members_need_no_pax_header() {
        let mut out = Vec::new();
        encode(&member(b"./etc/hostname"), &mut out);
        assert_eq!(out.len(), BLOCK);
        assert_eq!(&out[..14], b"./etc/hostname");
        assert_eq!(&out[100..108], b"0000644\0");
        assert_eq!(&out[124..136], b"00000000005\0");
        assert_eq!(&out[257..265], b"ustar\x0000");
        assert_eq!(&out[265..329], &[0u8; 64][..], "no owner names");
        assert!(checksum_ok(&out));
    }

    #[test]
    fn long_names_split_or_go_to_pax() {
        let splittable = [&b"./"[..], &[b'd'; 120], b"/", &[b'f'; 90]].concat();
        let mut out = Vec::new();
        encode(&member(&splittable), &mut out);
        assert_eq!(out.len(), BLOCK, "prefix and name hold it");
        assert_eq!(&out[..90], &[b'f'; 90][..]);
        assert_eq!(&out[345..345 + 122], &splittable[..122]);

        let unsplittable = [&b"./"[..], &[b'n'; 298]].concat();
        let mut out = Vec::new();
        encode(&member(&unsplittable), &mut out);
        assert_eq!(records(&out), vec![("path".into(), unsplittable.clone())]);
        assert!(checksum_ok(&out[..BLOCK]), "PAX header");
        assert!(checksum_ok(&out[out.len() - BLOCK..]), "ustar header");
        // A directory's trailing '/' is not a place to split.
        assert_eq!(split_ustar(&[&[b'x'; 100][..], b"/"].concat()), None);
    }

    #[test]
    fn values_beyond_the_fields_go_to_pax() {
        let mut m = member(b"./big");
        m.size = 9 << 30;
        m.uid = 3_000_000;
        m.gid = 70_000;
        m.mtime = (-86_400, 250_000_000);
        m.link = &[b'l'; 120];
        let xattrs = [(b"security.capability".to_vec(), vec![1, 0, 0, 2])];
        m.xattrs = &xattrs;
        let mut out = Vec::new();
        encode(&m, &mut out);
        let r = records(&out);
        let get = |k: &str| r.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("size").unwrap(), b"9663676416");
        assert_eq!(get("uid").unwrap(), b"3000000");
        assert_eq!(get("gid"), None, "70000 fits in octal");
        assert_eq!(get("mtime").unwrap(), b"-86399.750000000");
        assert_eq!(get("linkpath").unwrap(), vec![b'l'; 120]);
        assert_eq!(
            get("SCHILY.xattr.security.capability").unwrap(),
            vec![1, 0, 0, 2]
        );
        let ustar = &out[out.len() - BLOCK..];
        assert_eq!(&ustar[124..136], b"00000000000\0");
        assert!(checksum_ok(ustar));
    }

    #[test]
    fn times_print_as_pax_expects() {
        assert_eq!(pax_time((5, 0)), "5");
        assert_eq!(pax_time((5, 1)), "5.000000001");
        assert_eq!(pax_time((-1, 500_000_000)), "-0.500000000");
        assert_eq!(pax_time((-10, 0)), "-10");
    }

    #[test]
    fn sparse_members_name_a_placeholder_and_describe_the_map() {
        let mut m = member(b"./var/lib/holes");
        m.sparse_size = Some(1 << 40);
        let mut out = Vec::new();
        encode(&m, &mut out);
        let r = records(&out);
        let keys: Vec<&str> = r.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "GNU.sparse.major",
                "GNU.sparse.minor",
                "GNU.sparse.name",
                "GNU.sparse.realsize"
            ]
        );
        assert_eq!(r[2].1, b"./var/lib/holes");
        assert_eq!(r[3].1, b"1099511627776");
        let ustar = &out[out.len() - BLOCK..];
        assert!(ustar.starts_with(b"./var/lib/GNUSparseFile.0/holes\0"));

        let map = [(0, 4096), (1 << 20, 8192), (1 << 40, 0)];
        let mut block = Vec::new();
        sparse_map_block(&map, &mut block);
        assert_eq!(block.len() as u64, sparse_map_len(&map));
        assert!(block.starts_with(b"3\n0\n4096\n1048576\n8192\n1099511627776\n0\n\0"));
    }

    #[test]
    fn pax_header_names_follow_gnu_tar() {
        assert_eq!(aside(b"./", b"PaxHeaders"), b"./PaxHeaders/.");
        assert_eq!(aside(b"./a/b/", b"PaxHeaders"), b"./a/PaxHeaders/b");
        assert_eq!(aside(&[b'x'; 300], b"PaxHeaders").len(), 100);
    }
}

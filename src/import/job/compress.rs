//! Compression detection by magic bytes, and streaming decoders.
//!
//! The C job looks at the first six bytes of every body (the longest magic) and picks xz,
//! gzip or bzip2, else passes the bytes through; we add zstd. Decision Q5: never hang on
//! trailing data, and decode concatenated members/streams as one stream (as `gzip -d`,
//! `xz -d`, `bzip2 -d` and `zstd -d` do).

use std::io::Read;

/// The longest magic we look for.
pub const MAGIC_MAX: usize = 6;

const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const BZIP2_MAGIC: &[u8] = b"BZh";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// How a body is compressed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Compression {
    Uncompressed,
    Xz,
    Gzip,
    Bzip2,
    Zstd,
}

impl Compression {
    /// Detect from the first bytes of the body (fewer than [`MAGIC_MAX`] only at EOF).
    pub fn detect(head: &[u8]) -> Compression {
        // Checked in the C tool's order, zstd last.
        if head.starts_with(XZ_MAGIC) {
            Compression::Xz
        } else if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(BZIP2_MAGIC) {
            Compression::Bzip2
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::Uncompressed
        }
    }

    /// Log the C tool's debug lines (`Stream is XZ compressed: yes|no`, …).
    pub fn log_detection(self) {
        let yes = |c| if self == c { "yes" } else { "no" };
        log::debug!("Stream is XZ compressed: {}", yes(Compression::Xz));
        log::debug!("Stream is GZIP compressed: {}", yes(Compression::Gzip));
        log::debug!("Stream is BZIP2 compressed: {}", yes(Compression::Bzip2));
        log::debug!("Stream is ZSTD compressed: {}", yes(Compression::Zstd));
    }

    /// A decoder reading compressed bytes from `input` and yielding the plain stream.
    pub fn decoder<'a>(
        self,
        input: Box<dyn Read + Send + 'a>,
    ) -> std::io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::Uncompressed => input,
            Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
            // zstd decodes consecutive frames by default.
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(c: Compression, compressed: Vec<u8>, expected: &[u8]) {
        assert_eq!(
            Compression::detect(&compressed[..MAGIC_MAX.min(compressed.len())]),
            c
        );
        let mut out = Vec::new();
        c.decoder(Box::new(std::io::Cursor::new(compressed)))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, expected);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn bz2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn detects_and_decodes_every_format() {
        let data = b"hello world, hello world, hello world".repeat(100);
        roundtrip(Compression::Gzip, gzip(&data), &data);
        roundtrip(Compression::Xz, xz(&data), &data);
        roundtrip(Compression::Bzip2, bz2(&data), &data);
        roundtrip(
            Compression::Zstd,
            zstd::encode_all(&data[..], 1).unwrap(),
            &data,
        );
        roundtrip(Compression::Uncompressed, data.clone(), &data);
    }

    #[test]
    fn concatenated_members_decode_as_one_stream() {
        // Q5: the C tool spun forever on a second gzip member and failed on a second
        // bzip2 stream.
        let (a, b) = (b"first part ".to_vec(), b"second part".to_vec());
        let whole = [a.clone(), b.clone()].concat();
        roundtrip(Compression::Gzip, [gzip(&a), gzip(&b)].concat(), &whole);
        roundtrip(Compression::Xz, [xz(&a), xz(&b)].concat(), &whole);
        roundtrip(Compression::Bzip2, [bz2(&a), bz2(&b)].concat(), &whole);
        let z = [
            zstd::encode_all(&a[..], 1).unwrap(),
            zstd::encode_all(&b[..], 1).unwrap(),
        ]
        .concat();
        roundtrip(Compression::Zstd, z, &whole);
    }

    #[test]
    fn short_bodies_are_uncompressed() {
        assert_eq!(Compression::detect(b""), Compression::Uncompressed);
        assert_eq!(Compression::detect(b"ok"), Compression::Uncompressed);
        assert_eq!(Compression::detect(&[0x1f]), Compression::Uncompressed);
    }

    #[test]
    fn trailing_garbage_is_an_error_not_a_hang() {
        let mut body = gzip(b"payload");
        body.extend_from_slice(b"garbage after the member");
        let mut out = Vec::new();
        let r = Compression::Gzip
            .decoder(Box::new(std::io::Cursor::new(body)))
            .unwrap()
            .read_to_end(&mut out);
        assert!(r.is_err());
    }
}

//! Compression detection by magic bytes, and the streaming decoders.
//!
//! The C job looks at the first six bytes of every body (the longest magic) and picks xz,
//! gzip or bzip2, else passes the bytes through; we add zstd. Decision Q5: never hang on
//! trailing data, and decode concatenated members/streams as one stream (as `gzip -d`,
//! `xz -d`, `bzip2 -d` and `zstd -d` do); data after the last member is an error.
//!
//! Errors of the input pass through a decoder unchanged; [`is_codec_error`] tells them
//! from the codec's own (damaged data), which each caller reports in its own words.

use std::io::{self, Read};

use crate::util::error::Error;

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

    /// The decoder's name in messages.
    pub fn label(self) -> &'static str {
        match self {
            Compression::Xz => "XZ",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
            Compression::Uncompressed => "plain",
        }
    }

    /// A decoder reading compressed bytes from `input` and yielding the plain stream.
    pub fn decoder<'a, R: Read + Send + 'a>(self, input: R) -> io::Result<Decoder<'a>> {
        let inner: Box<dyn Read + Send + 'a> = match self {
            Compression::Uncompressed => Box::new(input),
            Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
            // zstd decodes consecutive frames by default.
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        };
        Ok(Decoder { inner })
    }
}

/// The decompressed stream of one input (see [`Compression::decoder`]).
pub struct Decoder<'a> {
    inner: Box<dyn Read + Send + 'a>,
}

impl Read for Decoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

/// A stream whose first bytes were read to detect its compression, yielding them again.
pub type Sniffed<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Read the first bytes of `input` (up to [`MAGIC_MAX`]; fewer only where it ends) and
/// detect the compression. Returns it with the whole stream, those bytes included.
pub fn sniff<R: Read>(mut input: R) -> io::Result<(Compression, Sniffed<R>)> {
    let mut head = [0u8; MAGIC_MAX];
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let compression = Compression::detect(&head[..n]);
    Ok((
        compression,
        io::Cursor::new(head[..n].to_vec()).chain(input),
    ))
}

/// Whether a decoder's read error is the codec's (the data is damaged) rather than its
/// input's. Input errors pass through unchanged: our own [`Error`] carried inside (a
/// failed or cancelled download, already reported) or an OS error.
pub fn is_codec_error(e: &io::Error) -> bool {
    !(e.get_ref().is_some_and(|inner| inner.is::<Error>()) || e.raw_os_error().is_some())
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
        c.decoder(std::io::Cursor::new(compressed.clone()))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, expected);
        // The same through sniff, from an input that hands out one byte per read.
        let (sniffed, input) = sniff(OneByte(&compressed)).unwrap();
        assert_eq!(sniffed, c);
        let mut out = Vec::new();
        c.decoder(input).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, expected);
    }

    /// A reader that returns at most one byte per call (a download just begun).
    struct OneByte<'a>(&'a [u8]);

    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
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
            .decoder(std::io::Cursor::new(body))
            .unwrap()
            .read_to_end(&mut out);
        assert!(is_codec_error(&r.unwrap_err()));
    }

    #[test]
    fn input_errors_are_not_codec_errors() {
        let ours = std::io::Error::from(Error::with_message(libc::EIO, "Download truncated."));
        assert!(!is_codec_error(&ours));
        assert!(!is_codec_error(&std::io::Error::from_raw_os_error(
            libc::EIO
        )));
        assert!(is_codec_error(&std::io::Error::other(
            "corrupt deflate stream"
        )));
    }
}

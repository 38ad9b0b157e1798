//! SHA-256 of a stream while it is read: of the bytes as served (SHA256SUMS, registry
//! digests) or of the decompressed stream (DiffIDs), whichever reader it wraps.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// What a [`HashingReader`] feeds: a hasher, or `Option<Sha256>` to hash only when a
/// checksum was asked for.
pub trait Update {
    fn update(&mut self, data: &[u8]);
}

impl Update for Sha256 {
    fn update(&mut self, data: &[u8]) {
        Digest::update(self, data);
    }
}

impl<H: Update> Update for Option<H> {
    fn update(&mut self, data: &[u8]) {
        if let Some(hasher) = self {
            hasher.update(data);
        }
    }
}

/// Hands out what `inner` reads and hashes it on the way.
pub struct HashingReader<R, H = Sha256> {
    inner: R,
    hasher: H,
}

impl<R, H> HashingReader<R, H> {
    /// Hash into `hasher`: a fresh one, or one seeded with what came before (a resumed
    /// download).
    pub fn new(inner: R, hasher: H) -> Self {
        HashingReader { inner, hasher }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The reader and the hasher, which has seen every byte handed out.
    pub fn into_parts(self) -> (R, H) {
        (self.inner, self.hasher)
    }
}

impl<R: Read, H: Update> Read for HashingReader<R, H> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The lowercase hex digest of a finished hasher.
pub fn hex(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn hashes_what_it_hands_out() {
        let mut r = HashingReader::new(&b"abc"[..], Sha256::new());
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(hex(r.into_parts().1), ABC);
    }

    #[test]
    fn a_seeded_hasher_continues_and_none_hashes_nothing() {
        let mut r = HashingReader::new(&b"bc"[..], Some(Sha256::new_with_prefix(b"a")));
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        assert_eq!(r.into_parts().1.map(hex).as_deref(), Some(ABC));
        let mut r = HashingReader::new(&b"abc"[..], None::<Sha256>);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        assert!(r.into_parts().1.is_none());
        assert_eq!(hex(Sha256::new()), EMPTY);
    }
}

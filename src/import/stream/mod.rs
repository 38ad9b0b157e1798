//! The one byte pipeline of every download: compression detection, decoders and SHA-256.
//!
//! Both consumers build their pipeline from these pieces and keep their own threading:
//! the download job's worker (`job/worker.rs`: curl → bounded queue → hash as served →
//! [`sniff`] → [`Decoder`] → limit → hash decompressed → sink) and the OCI layer
//! application (`oci/apply.rs`: spool file → [`sniff`] → [`Decoder`] on one thread →
//! bounded channel → [`HashingReader`] (the DiffID) → unpacker on the calling thread).
//!
//! * `codec.rs`: [`Compression`] detection by magic bytes, [`sniff`], the [`Decoder`]s
//!   (xz, gzip, bzip2, zstd; concatenated streams decode as one) and
//!   [`is_codec_error`];
//! * `hash.rs`: [`HashingReader`] and [`hex`].
//!
//! Nothing here blocks on anything but the reader it is given, logs, or knows who reads.

mod codec;
mod hash;

pub use codec::{is_codec_error, sniff, Compression, Decoder, Sniffed, MAGIC_MAX};
pub use hash::{hex, HashingReader, Update};

//! The one byte pipeline of every download and export: compression detection, decoders,
//! encoders and SHA-256.
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
//! * `hash.rs`: [`HashingReader`] and [`hex`];
//! * `encode.rs`: the other direction, for exports: the [`Encoder`]s, the `--format=`
//!   names and the default from the output file's name, and [`encode_on_worker`] (a
//!   producer on the calling thread, the encoder on a worker, a bounded queue between).
//!
//! Nothing here blocks on anything but the reader or writer it is given or knows who
//! reads; only `encode_on_worker` logs (the two failures it alone can tell apart).

mod codec;
mod encode;
mod hash;

pub use codec::{is_codec_error, sniff, Compression, Decoder, Sniffed, MAGIC_MAX};
pub use encode::{encode_on_worker, Encoder, Encoding};
pub use hash::{hex, HashingReader, Update};

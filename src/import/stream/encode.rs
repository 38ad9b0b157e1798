//! The compressing side of the byte pipeline, for exports: [`Encoder`] (one writer per
//! format), the names of the formats, and [`encode_on_worker`], which runs an encoder on
//! a thread of its own fed through a bounded queue.
//!
//! # Format names and the default
//! `--format=` (and importd's `format` argument) takes `uncompressed`, `xz`, `gzip`,
//! `bzip2` or `zstd` ([`Compression::from_format_name`]). Without it, the format follows
//! the output file's name ([`Compression::from_file_name`]), as `systemd-export` does it:
//! a name ending in `.xz` means xz, `.gz` gzip, `.bz2` bzip2 and `.zst` zstd (upstream
//! knows `.zst` since v258; Debian 12's v252 knows only the first three); any other name,
//! and no file at all (the archive goes to standard output), means uncompressed. Only
//! the very end of the name counts (`image.tar.gz` is gzip, `image.gz.tar` uncompressed),
//! and it is case-sensitive.
//!
//! # Levels (upstream's `import-compress.c`)
//! * xz: preset 6 (`LZMA_PRESET_DEFAULT`), CRC64 integrity check;
//! * gzip: zlib's default level (6), gzip wrapper;
//! * bzip2: block size 9 (900 kB), default work factor;
//! * zstd: level 3 (`ZSTD_CLEVEL_DEFAULT`) with the frame checksum on. Upstream (v258+)
//!   lets `$SYSTEMD_IMPORT_COMPRESS_LEVEL_ZSTD` choose another level; the command line
//!   reads it and passes it in [`Encoding::zstd_level`] (nothing below the command line
//!   reads the environment). Upstream also gives zstd one worker per CPU; our zstd is
//!   built without its multi-threading, so it compresses on the one encoder thread.
//!
//! Memory: xz at preset 6 needs about 94 MiB for its dictionary and match finder, the
//! others a few MiB at most; the queue in front of the encoder holds at most
//! `QUEUE_CHUNKS` chunks of `CHUNK_SIZE` bytes, whatever the size of the export.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use super::codec::Compression;
use crate::log_error_errno;
use crate::util::error::{Error, Result};

/// Bytes handed to the encoder thread at once.
const CHUNK_SIZE: usize = 256 * 1024;

/// Chunks that may wait for the encoder thread; the producer blocks when they are full.
const QUEUE_CHUNKS: usize = 4;

impl Compression {
    /// Every format, in the order of `--format=`'s list.
    pub const ALL: [Compression; 5] = [
        Compression::Uncompressed,
        Compression::Xz,
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Zstd,
    ];

    /// The format named on the command line (`--format=`) or in importd's `format`
    /// argument; `None` for anything else (an empty string included: the caller decides
    /// what an empty format means).
    pub fn from_format_name(name: &str) -> Option<Compression> {
        Some(match name {
            "uncompressed" => Compression::Uncompressed,
            "xz" => Compression::Xz,
            "gzip" => Compression::Gzip,
            "bzip2" => Compression::Bzip2,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }

    /// The name [`Compression::from_format_name`] takes, as messages print it.
    pub fn format_name(self) -> &'static str {
        match self {
            Compression::Uncompressed => "uncompressed",
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        }
    }

    /// The default format for an output file of this name; `None` (standard output)
    /// means uncompressed. See the module comment for the rules.
    pub fn from_file_name(name: Option<&OsStr>) -> Compression {
        let Some(name) = name else {
            return Compression::Uncompressed;
        };
        let name = name.as_bytes();
        [
            (&b".xz"[..], Compression::Xz),
            (b".gz", Compression::Gzip),
            (b".bz2", Compression::Bzip2),
            (b".zst", Compression::Zstd),
        ]
        .into_iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map_or(Compression::Uncompressed, |(_, c)| c)
    }
}

/// What to encode with: the format and the one level upstream lets the user change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub compression: Compression,
    /// zstd's level instead of 3 (`$SYSTEMD_IMPORT_COMPRESS_LEVEL_ZSTD`, read and checked
    /// by the command line). Ignored by the other formats.
    pub zstd_level: Option<i32>,
}

impl From<Compression> for Encoding {
    fn from(compression: Compression) -> Self {
        Encoding {
            compression,
            zstd_level: None,
        }
    }
}

/// zstd's default level (`ZSTD_CLEVEL_DEFAULT`).
const ZSTD_DEFAULT_LEVEL: i32 = 3;

enum Inner<W: Write> {
    Plain(W),
    Xz(xz2::write::XzEncoder<W>),
    Gzip(flate2::write::GzEncoder<W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// A writer that compresses what is written to it into `W`. [`Encoder::finish`] writes
/// the end of the compressed stream; an encoder dropped without it leaves a truncated
/// stream (what a failed export should leave).
pub struct Encoder<W: Write> {
    inner: Inner<W>,
}

impl<W: Write> Encoder<W> {
    pub fn new(encoding: Encoding, out: W) -> io::Result<Self> {
        let inner = match encoding.compression {
            Compression::Uncompressed => Inner::Plain(out),
            Compression::Xz => Inner::Xz(xz2::write::XzEncoder::new(out, 6)),
            Compression::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
            Compression::Bzip2 => Inner::Bzip2(bzip2::write::BzEncoder::new(
                out,
                bzip2::Compression::best(),
            )),
            Compression::Zstd => {
                let level = encoding.zstd_level.unwrap_or(ZSTD_DEFAULT_LEVEL);
                let mut z = zstd::stream::write::Encoder::new(out, level)?;
                z.include_checksum(true)?;
                Inner::Zstd(z)
            }
        };
        Ok(Encoder { inner })
    }

    /// End the compressed stream and return the output writer (flushed).
    pub fn finish(self) -> io::Result<W> {
        let mut out = match self.inner {
            Inner::Plain(w) => w,
            Inner::Xz(e) => e.finish()?,
            Inner::Gzip(e) => e.finish()?,
            Inner::Bzip2(e) => e.finish()?,
            Inner::Zstd(e) => e.finish()?,
        };
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(w) => w.write(buf),
            Inner::Xz(e) => e.write(buf),
            Inner::Gzip(e) => e.write(buf),
            Inner::Bzip2(e) => e.write(buf),
            Inner::Zstd(e) => e.write(buf),
        }
    }

    // Only the output's own flush: a codec flush would end a block early and cost
    // compression, and nothing needs the compressed bytes before `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The output writer as the encoder thread sees it: counts what reaches it and notes
/// whether it failed, so that failures of the output are told from the codec's. Once
/// the producer abandoned the stream it takes nothing more: the codecs end their
/// streams when dropped, and an abandoned stream must stay unfinished.
struct Counted<'a, O: Write + ?Sized> {
    out: &'a mut O,
    bytes: u64,
    failed: bool,
    abandoned: &'a AtomicBool,
}

impl<O: Write + ?Sized> Write for Counted<'_, O> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.abandoned.load(Ordering::Acquire) {
            return Err(io::Error::from_raw_os_error(libc::ECANCELED));
        }
        let r = self.out.write(buf);
        match &r {
            Ok(n) => self.bytes += *n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.failed = true,
        }
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().inspect_err(|_| self.failed = true)
    }
}

/// The producer's end of the queue: collects writes into chunks and hands full chunks
/// to the encoder thread, blocking while the queue is full.
struct QueueWriter<'a> {
    tx: mpsc::SyncSender<Vec<u8>>,
    /// Chunks the encoder thread is done with, for reuse.
    spare: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    /// Set when the encoder thread went away (it failed); its error is the one to report.
    broken: bool,
    /// Set by [`QueueWriter::complete`]; until then, closing the queue (dropping this,
    /// also while unwinding) tells the encoder thread not to end the stream.
    completed: bool,
    abandoned: &'a AtomicBool,
}

impl QueueWriter<'_> {
    /// Send the last chunk; the stream may now be ended.
    fn complete(&mut self) -> io::Result<()> {
        self.send_chunk()?;
        self.completed = true;
        Ok(())
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let next = match self.spare.try_recv() {
            Ok(mut used) => {
                used.clear();
                used
            }
            Err(_) => Vec::with_capacity(CHUNK_SIZE),
        };
        let full = std::mem::replace(&mut self.chunk, next);
        if self.tx.send(full).is_err() {
            self.broken = true;
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        Ok(())
    }
}

impl Drop for QueueWriter<'_> {
    fn drop(&mut self) {
        if !self.completed {
            self.abandoned.store(true, Ordering::Release);
        }
    }
}

impl Write for QueueWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.broken {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        let n = buf.len().min(CHUNK_SIZE - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK_SIZE {
            self.send_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_chunk()
    }
}

/// Run `produce` on the calling thread, giving it a writer whose bytes are compressed
/// by `encoding` into `out` on a worker thread; the two are joined by a bounded queue,
/// so memory stays bounded whatever `produce` writes. Returns what `produce` returned
/// and the number of bytes written to `out`.
///
/// When `produce` fails, the stream is left unfinished (no end marker) and its error
/// is returned; when the encoder or `out` fails, `produce` sees a broken pipe and the
/// encoder's error is returned, logged as `Failed to encode: …` or `Failed to write
/// output file: …` (the C tool's messages). `out` is flushed on success, not synced.
pub fn encode_on_worker<O, T>(
    encoding: Encoding,
    out: &mut O,
    produce: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<(T, u64)>
where
    O: Write + Send + ?Sized,
{
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE_CHUNKS);
    let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
    // Set when the producer closes the queue without completing it: do not end the stream.
    let abandoned = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let abandoned = &abandoned;
        let worker = std::thread::Builder::new()
            .name("export-encode".into())
            .spawn_scoped(scope, move || -> Result<u64> {
                let mut counted = Counted {
                    out,
                    bytes: 0,
                    failed: false,
                    abandoned,
                };
                let result = (|| -> io::Result<()> {
                    let mut encoder = Encoder::new(encoding, &mut counted)?;
                    for chunk in rx {
                        encoder.write_all(&chunk)?;
                        // The producer may be gone already; then the chunk is dropped.
                        let _ = spare_tx.send(chunk);
                    }
                    if abandoned.load(Ordering::Acquire) {
                        return Ok(()); // dropped unfinished (see `Counted`)
                    }
                    encoder.finish().map(drop)
                })();
                // The producer's error is the one to report, not what abandoning did here.
                if abandoned.load(Ordering::Acquire) {
                    return Err(Error::new(libc::ECANCELED));
                }
                match result {
                    Ok(()) => Ok(counted.bytes),
                    Err(e) => {
                        let e = Error::from(e);
                        Err(if counted.failed {
                            log_error_errno!(e.clone(), "Failed to write output file: {}", e)
                        } else {
                            log_error_errno!(e.clone(), "Failed to encode: {}", e)
                        })
                    }
                }
            })
            .map_err(|e| log_error_errno!(e, "Failed to start the encoder thread."))?;

        let mut queue = QueueWriter {
            tx,
            spare: spare_rx,
            chunk: Vec::with_capacity(CHUNK_SIZE),
            broken: false,
            completed: false,
            abandoned,
        };
        let produced = produce(&mut queue).and_then(|value| {
            queue.complete()?;
            Ok(value)
        });
        let broken = queue.broken;
        drop(queue);
        let encoded = match worker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (produced, encoded) {
            (Ok(value), Ok(bytes)) => Ok((value, bytes)),
            // The producer only failed because the encoder went away: the encoder's
            // error is the real one.
            (Err(_), Err(e)) if broken => Err(e),
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn format_names_round_trip() {
        for c in Compression::ALL {
            assert_eq!(Compression::from_format_name(c.format_name()), Some(c));
        }
        for bad in ["", "gz", "XZ", "zst", "bz2", "none", "lz4"] {
            assert_eq!(Compression::from_format_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn default_format_follows_the_file_name_suffix() {
        let cases = [
            ("image.tar.xz", Compression::Xz),
            ("image.raw.gz", Compression::Gzip),
            ("image.tar.bz2", Compression::Bzip2),
            ("image.tar.zst", Compression::Zstd),
            ("image.tar", Compression::Uncompressed),
            ("image.tgz", Compression::Uncompressed),
            ("image.gz.tar", Compression::Uncompressed),
            ("image.tar.XZ", Compression::Uncompressed),
            ("image.tar.zstd", Compression::Uncompressed),
            ("xz", Compression::Uncompressed),
            (".xz", Compression::Xz),
            ("/var/tmp/dir.gz/image", Compression::Uncompressed),
        ];
        for (name, expected) in cases {
            assert_eq!(
                Compression::from_file_name(Some(OsStr::new(name))),
                expected,
                "{name}"
            );
        }
        assert_eq!(Compression::from_file_name(None), Compression::Uncompressed);
    }

    fn sample() -> Vec<u8> {
        let mut x = 7u32;
        (0..3 * CHUNK_SIZE + 1234)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 3 == 0 {
                    (x >> 24) as u8
                } else {
                    b'a'
                }
            })
            .collect()
    }

    #[test]
    fn every_format_decodes_back_through_the_worker() {
        let data = sample();
        for c in Compression::ALL {
            let mut out = Vec::new();
            let ((), written) = encode_on_worker(c.into(), &mut out, |w| {
                // Odd-sized writes across chunk boundaries.
                for piece in data.chunks(100_003) {
                    w.write_all(piece)?;
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(written, out.len() as u64, "{c:?}");
            assert_eq!(
                Compression::detect(&out[..out.len().min(super::super::MAGIC_MAX)]),
                c
            );
            let mut back = Vec::new();
            c.decoder(&out[..]).unwrap().read_to_end(&mut back).unwrap();
            assert!(back == data, "{c:?}: round trip differs");
        }
    }

    #[test]
    fn zstd_level_is_applied_and_frames_carry_a_checksum() {
        let data = sample();
        let encode = |level| {
            let mut out = Vec::new();
            let encoding = Encoding {
                compression: Compression::Zstd,
                zstd_level: level,
            };
            encode_on_worker(encoding, &mut out, |w| Ok(w.write_all(&data)?)).unwrap();
            out
        };
        let default = encode(None);
        assert_eq!(default, encode(Some(ZSTD_DEFAULT_LEVEL)));
        assert_ne!(default, encode(Some(19)));
        // Frame header descriptor: bit 2 is the content checksum flag.
        assert_eq!(default[4] & 0x04, 0x04);
    }

    #[test]
    fn a_failing_producer_leaves_the_stream_unfinished() {
        let mut out = Vec::new();
        let err = encode_on_worker(Compression::Gzip.into(), &mut out, |w| {
            w.write_all(&sample())?;
            Err::<(), _>(Error::new(libc::ECANCELED))
        })
        .unwrap_err();
        assert_eq!(err.errno(), libc::ECANCELED);
        let mut back = Vec::new();
        let r = Compression::Gzip
            .decoder(&out[..])
            .unwrap()
            .read_to_end(&mut back);
        // Whatever reached the output (perhaps nothing) is not a whole stream: the
        // codec's own end (which it writes when dropped) must not get there.
        assert!(
            out.is_empty() || r.is_err(),
            "an abandoned stream must not decode as complete"
        );
    }

    /// An output that accepts `room` bytes and then fails like a full disk.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_output_error_reaches_the_caller_not_a_broken_pipe() {
        let mut out = Full { room: 1000 };
        let err = encode_on_worker(Compression::Uncompressed.into(), &mut out, |w| {
            for _ in 0..100 {
                w.write_all(&[1u8; CHUNK_SIZE])?;
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.errno(), libc::ENOSPC);
        assert_eq!(
            err.msg(),
            Some("Failed to write output file: No space left on device")
        );
    }
}

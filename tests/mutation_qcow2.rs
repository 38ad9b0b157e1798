//! Mutation tests of the qcow2 → raw converter (`import::url::qcow2`).
//!
//! Seeds: images qemu-img makes from a small patterned disk: version 2 and 3, cluster
//! sizes 512 B, 4 KiB and 64 KiB, compressed and not, v3 zero clusters, an empty image.
//! Mutations rewrite header fields, L1 and L2 entries (offsets, the compressed, zero
//! and copied bits, compressed sizes), corrupt compressed data and cut the file.
//!
//! Oracles for every case: no panic, no hang (watchdog), peak memory of the case below
//! 24 MiB; on success the output is exactly the header's virtual size; nothing is ever
//! written past the virtual size (each conversion runs under `RLIMIT_FSIZE` set to it,
//! so such a write fails instead of being hidden by a final truncate); a failure is an
//! `Error` with a positive errno and a message. The unmutated seeds must convert to the disk they were made
//! from, so the harness is known to reach the real conversion.
//!
//! CI size: a few thousand cases. Long runs: `MUTATION_ITERATIONS=500000 cargo test
//! --release --test mutation_qcow2`. Needs `qemu-img` and `qemu-io` (Debian package
//! `qemu-utils`) and tmpfs on /dev/shm.

mod common;

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Once, OnceLock};

use common::isolate::in_own_process;
use common::mutate::{self, Campaign, CountingAlloc, Sources};
use common::qemu::qemu;
use systemd_import::import::url::qcow2::{qcow2_convert, qcow2_detect};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Largest mutated image.
const MAX_LEN: usize = 1 << 20;
/// Peak bytes one case may allocate: with 2 MiB clusters the converter holds one L2
/// table, a copy buffer, two clusters of compressed input and one inflated cluster.
const MEMORY_LIMIT: usize = 24 << 20;
/// Virtual size of the seed disks.
const DISK_SIZE: usize = 1 << 20;

/// The seed disk: text, random bytes and zeros in a few places, holes elsewhere.
fn disk() -> Vec<u8> {
    let mut d = vec![0u8; DISK_SIZE];
    let mut rng = mutate::Rng::new(7);
    for (at, len) in [
        (0usize, 3000usize),
        (70_000, 5000),
        (300_000, 512),
        (DISK_SIZE - 4096, 4096),
    ] {
        for (i, b) in d[at..at + len].iter_mut().enumerate() {
            // Half text (compresses well), half random (does not).
            *b = if (i / 700) % 2 == 0 {
                b"the quick brown fox "[i % 20]
            } else {
                rng.byte()
            };
        }
    }
    d
}

/// `qemu-img convert` of the raw disk at `raw` into the qcow2 image `image`.
fn qcow2_of(raw: &Path, image: &Path, options: &str, compressed: bool) {
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2", "-o", options];
    if compressed {
        args.push("-c");
    }
    args.extend([raw.to_str().unwrap(), image.to_str().unwrap()]);
    qemu("qemu-img", &args);
}

/// (image bytes, the disk it holds) for every seed.
fn corpus() -> &'static [(Vec<u8>, Vec<u8>)] {
    static CORPUS: OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let disk = disk();
        std::fs::write(&raw, &disk).unwrap();
        let mut out = Vec::new();
        for (i, (compat, cluster, compressed)) in [
            ("0.10", 65536, false),
            ("0.10", 4096, true),
            ("1.1", 4096, false),
            ("1.1", 512, false),
            ("1.1", 65536, true),
            ("1.1", 512, true),
        ]
        .into_iter()
        .enumerate()
        {
            let image = dir.path().join(format!("{i}.qcow2"));
            qcow2_of(
                &raw,
                &image,
                &format!("compat={compat},cluster_size={cluster}"),
                compressed,
            );
            out.push((std::fs::read(&image).unwrap(), disk.clone()));
        }
        // v3 zero clusters (the zero flag on allocated and unallocated entries).
        let zeroed = dir.path().join("zero.qcow2");
        qcow2_of(&raw, &zeroed, "compat=1.1,cluster_size=4096", false);
        for command in ["write -z 0 8k", "write -z -u 65536 8k"] {
            qemu(
                "qemu-io",
                &["-f", "qcow2", "-c", command, zeroed.to_str().unwrap()],
            );
        }
        let mut zero_disk = disk.clone();
        zero_disk[..8192].fill(0);
        zero_disk[65536..65536 + 8192].fill(0);
        out.push((std::fs::read(&zeroed).unwrap(), zero_disk));
        // An image without any data.
        let empty = dir.path().join("empty.qcow2");
        let empty_s = empty.to_str().unwrap();
        qemu(
            "qemu-img",
            &[
                "create",
                "-f",
                "qcow2",
                "-o",
                "cluster_size=4096",
                empty_s,
                "1M",
            ],
        );
        out.push((std::fs::read(&empty).unwrap(), vec![0; DISK_SIZE]));
        for (image, _) in &out {
            assert!(
                image.len() <= MAX_LEN,
                "seed image of {} bytes",
                image.len()
            );
        }
        out
    })
}

/// Scratch files of one campaign: the image and the output.
struct Files {
    _dir: tempfile::TempDir,
    src: File,
    dst: File,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::Builder::new()
            .prefix("mutation-qcow2.")
            .tempdir_in("/dev/shm")
            .unwrap();
        let open = |name: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.path().join(name))
                .unwrap()
        };
        let (src, dst) = (open("image.qcow2"), open("out.raw"));
        Files {
            _dir: dir,
            src,
            dst,
        }
    }

    fn load(&mut self, image: &[u8]) {
        self.src.set_len(0).unwrap();
        self.src.write_all_at(image, 0).unwrap();
        self.dst.set_len(0).unwrap();
    }

    fn dst_size(&self) -> u64 {
        self.dst.metadata().unwrap().len()
    }
}

/// Each conversion runs under a file size limit (`RLIMIT_FSIZE`) equal to the image's
/// virtual size, so a write past the end fails with EFBIG instead of going unseen when a
/// final truncate hides it. The limit is process-wide: every test that sets it runs in a
/// process of its own ([`in_own_process`]).
fn set_file_size_limit(limit: u64) {
    static IGNORE_SIGXFSZ: Once = Once::new();
    IGNORE_SIGXFSZ.call_once(|| {
        // SAFETY: ignoring a signal; writes past the limit then fail with EFBIG.
        unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    });
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) }, 0);
}

/// Convert under a file size limit of `limit` bytes.
fn convert_limited(files: &Files, limit: u64) -> Result<(), systemd_import::util::error::Error> {
    set_file_size_limit(limit);
    let result = qcow2_convert(files.src.as_fd(), files.dst.as_fd(), None);
    set_file_size_limit(libc::RLIM_INFINITY);
    result
}

fn check_case(files: &mut Files, image: &[u8]) -> Result<(), String> {
    files.load(image);
    let detected = qcow2_detect(files.src.as_fd());
    if image.len() < 4 && detected.is_ok() {
        return Err(format!("qcow2_detect accepted {} bytes", image.len()));
    }
    let virtual_size = (image.len() >= 32).then(|| mutate::qcow2::fields(image).size);
    let result = convert_limited(files, virtual_size.unwrap_or(0));
    if let Err(e) = &result {
        if e.errno() == libc::EFBIG && e.msg().is_some_and(|m| m.contains("Failed to write")) {
            return Err(format!(
                "wrote past the virtual size {virtual_size:?}: {:?}",
                e.msg()
            ));
        }
    }
    let size = files.dst_size();
    if size > virtual_size.unwrap_or(0) {
        return Err(format!(
            "output of {size} bytes is larger than the virtual size {virtual_size:?} (result {result:?})"
        ));
    }
    match &result {
        Ok(()) => mutate::note_outcome("ok"),
        Err(e) => mutate::note_outcome(e.msg().unwrap_or("(no message)")),
    }
    match result {
        Ok(()) if Some(size) == virtual_size => Ok(()),
        Ok(()) => Err(format!(
            "succeeded with an output of {size} bytes for a virtual size of {virtual_size:?}"
        )),
        Err(e) if e.errno() <= 0 => Err(format!("errno {} is not positive", e.errno())),
        Err(e) if e.msg().is_none() => Err(format!("error {} carries no message", e.errno())),
        Err(_) => Ok(()),
    }
}

/// The seeds convert to the disks they were made from.
#[test]
fn seed_images_convert_to_their_disks() {
    in_own_process("seed_images_convert_to_their_disks", || {
        let mut files = Files::new();
        for (i, (image, disk)) in corpus().iter().enumerate() {
            files.load(image);
            convert_limited(&files, disk.len() as u64)
                .unwrap_or_else(|e| panic!("seed {i}: {e} ({:?})", e.msg()));
            let mut out = vec![0u8; disk.len()];
            files.dst.read_exact_at(&mut out, 0).unwrap();
            assert_eq!(files.dst_size(), disk.len() as u64, "seed {i}");
            assert!(out == *disk, "seed {i} converts to other bytes");
        }
    });
}

fn images() -> Vec<Vec<u8>> {
    corpus().iter().map(|(image, _)| image.clone()).collect()
}

#[test]
fn mutated_images_structure() {
    in_own_process("mutated_images_structure", || {
        let images = images();
        let mut files = Files::new();
        Campaign::new("qcow2", 3000).memory_limit(MEMORY_LIMIT).run(
            |rng| mutate::qcow2::mutate(rng, &images, MAX_LEN),
            |input| check_case(&mut files, input),
        );
    });
}

#[test]
fn mutated_images_bytes() {
    in_own_process("mutated_images_bytes", || {
        let images = images();
        let mut files = Files::new();
        let dictionary: [&[u8]; 4] = [
            b"QFI\xfb",
            &[0, 0, 0, 3],
            &[0x80, 0, 0, 0, 0, 0, 0, 0],
            &[0x40, 0, 0, 0, 0, 0, 0, 0],
        ];
        Campaign::new("qcow2-bytes", 2000)
            .memory_limit(MEMORY_LIMIT)
            .run(
                |rng| {
                    let mut d = rng.pick(&images).clone();
                    let src = Sources {
                        corpus: &images,
                        dictionary: &dictionary,
                        max_len: MAX_LEN,
                    };
                    mutate::mutate_bytes(rng, &mut d, &src, 8);
                    d
                },
                |input| check_case(&mut files, input),
            );
    });
}

/// Short files (the header read) and the magic check.
#[test]
fn truncated_headers() {
    in_own_process("truncated_headers", || {
        let mut files = Files::new();
        let image = &corpus()[0].0;
        for n in 0..200 {
            check_case(&mut files, &image[..n]).unwrap_or_else(|e| panic!("{n} bytes: {e}"));
        }
        files.load(b"QFI");
        assert_eq!(
            qcow2_detect(files.src.as_fd()).unwrap_err().errno(),
            libc::EIO
        );
    });
}
